//! Every case of the golden files (tests/golden/, computed by independent implementations) for
//! the standard losses, value and gradient, in f64 and f32, with the tolerances of
//! tests/golden/README.md.

use crate::common;
use common::*;

use losslang::api::{ExecutorKind, Isa};
use losslang::Real;

/// Tolerances of tests/golden/README.md: (value abs, value rel, gradient abs, gradient rel to max|g|).
fn tolerances<T: Real>() -> (f64, f64, f64, f64) {
    if T::NAME == "f64" {
        (1e-12, 1e-9, 1e-15, 1e-9)
    } else {
        (1e-6, 1e-4, 1e-9, 1e-3)
    }
}

/// Every case of `name`, through the given executor at precision T; returns the failures.
fn check<T: Real>(name: &str, kind: ExecutorKind) -> Vec<String> {
    check_isa::<T>(name, kind, None)
}

/// As [`check`], with the fused kernels capped to an instruction set.
fn check_isa<T: Real>(name: &str, kind: ExecutorKind, isa: Option<Isa>) -> Vec<String> {
    let (va, vr, ga, gr) = tolerances::<T>();
    let g = golden(name);
    let mut failures = Vec::new();
    for case in g["cases"].as_array().unwrap() {
        let cname = case["name"].as_str().unwrap();
        let loss = loss_for(name, case);
        let ins: Vec<(String, losslang::ndarray::ArrayD<T>)> = inputs(case)
            .into_iter()
            .map(|(k, a)| (k, a.mapv(T::from_f64)))
            .collect();
        let shapes: Vec<(&str, &[usize])> =
            ins.iter().map(|(k, a)| (k.as_str(), a.shape())).collect();
        let mut plan = loss
            .compile_with::<T>(&shapes, kind)
            .unwrap_or_else(|e| panic!("{name}/{cname}: {e}"));
        if let Some(isa) = isa {
            plan.cap_instruction_set(isa);
        }
        let views: Vec<(&str, _)> = ins.iter().map(|(k, a)| (k.as_str(), a.view())).collect();
        let out = plan.value_and_grad(&views).unwrap();
        let want = case["value"].as_f64().unwrap();
        let got = out.value.to_f64();
        if (got - want).abs() > va + vr * want.abs() {
            failures.push(format!(
                "{name}/{cname} {} {kind:?} value {got} vs {want}",
                T::NAME
            ));
        }
        let gw = array(&case["grad"]["logits"]);
        let gmax = gw.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let worst = out
            .grad("logits")
            .iter()
            .zip(gw.iter())
            .map(|(a, b)| (a.to_f64() - b).abs())
            .fold(0.0f64, f64::max);
        if worst > ga + gr * gmax {
            failures.push(format!(
                "{name}/{cname} {} {kind:?} grad max err {worst:e} (max|g| {gmax:e})",
                T::NAME
            ));
        }
    }
    failures
}

macro_rules! golden_tests {
    ($($name:ident),*) => {
        mod f64_cases { use super::*; $( #[test] fn $name() { let f = check::<f64>(stringify!($name), ExecutorKind::Fused); assert!(f.is_empty(), "{}", f.join("\n")); } )* }
        mod f32_cases { use super::*; $( #[test] fn $name() { let f = check::<f32>(stringify!($name), ExecutorKind::Fused); assert!(f.is_empty(), "{}", f.join("\n")); } )* }
        mod reference_f64_cases { use super::*; $( #[test] fn $name() { let f = check::<f64>(stringify!($name), ExecutorKind::Reference); assert!(f.is_empty(), "{}", f.join("\n")); } )* }
        // Every instruction-set path of the kernels on this machine (the widest is the default).
        mod baseline_isa_cases { use super::*; $( #[test] fn $name() { let mut f = check_isa::<f32>(stringify!($name), ExecutorKind::Fused, Some(Isa::Baseline)); f.extend(check_isa::<f64>(stringify!($name), ExecutorKind::Fused, Some(Isa::Baseline))); assert!(f.is_empty(), "{}", f.join("\n")); } )* }
        mod avx2_isa_cases { use super::*; $( #[test] fn $name() { let mut f = check_isa::<f32>(stringify!($name), ExecutorKind::Fused, Some(Isa::Avx2)); f.extend(check_isa::<f64>(stringify!($name), ExecutorKind::Fused, Some(Isa::Avx2))); assert!(f.is_empty(), "{}", f.join("\n")); } )* }
    };
}

golden_tests!(
    bce,
    weighted_bce,
    balanced_bce,
    focal,
    dice,
    jaccard,
    tversky,
    focal_tversky,
    log_cosh_dice,
    sensitivity_specificity,
    combo,
    exp_log,
    bce_dice,
    distance_bce,
    hausdorff_dt,
    shape_aware,
    cmss,
    ssim,
    unet3p_hybrid,
    basnet_hybrid,
    dice_ce,
    dice_focal,
    mcc,
    asym_similarity,
    unified_focal,
    boundary,
    softmax_ce,
    softmax_dice,
    generalized_dice,
    lovasz_hinge,
    lovasz_softmax,
    topk_ce,
    cldice,
    hausdorff_er,
    ms_ssim
);

#[test]
fn every_library_loss_is_compared_with_golden_values() {
    for name in losslang::Library::standard().names() {
        assert!(
            LOSSES.contains(&name),
            "{name} ships in losses/ but has no golden test here"
        );
        assert!(
            !golden(name)["cases"].as_array().unwrap().is_empty(),
            "{name}"
        );
    }
}
