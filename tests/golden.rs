//! Every case of the golden files (tests/golden/, computed by independent implementations) for
//! the standard losses, value and gradient, in f64 and f32, with the tolerances of
//! tests/golden/README.md.

mod common;
use common::*;

const LOSSES: &[&str] = &[
    "bce",
    "weighted_bce",
    "balanced_bce",
    "focal",
    "dice",
    "jaccard",
    "tversky",
    "focal_tversky",
    "log_cosh_dice",
    "sensitivity_specificity",
    "combo",
    "exp_log",
    "bce_dice",
];

fn check_f64(name: &str) -> Vec<String> {
    let g = golden(name);
    let mut failures = Vec::new();
    for case in g["cases"].as_array().unwrap() {
        let cname = case["name"].as_str().unwrap();
        let loss = loss_for(name, case);
        let ins = inputs(case);
        let shapes: Vec<(&str, &[usize])> =
            ins.iter().map(|(k, a)| (k.as_str(), a.shape())).collect();
        let mut plan = loss
            .compile::<f64>(&shapes)
            .unwrap_or_else(|e| panic!("{name}/{cname}: {e}"));
        let views: Vec<(&str, _)> = ins.iter().map(|(k, a)| (k.as_str(), a.view())).collect();
        let out = plan.value_and_grad(&views).unwrap();
        let want = case["value"].as_f64().unwrap();
        if (out.value - want).abs() > 1e-12 + 1e-9 * want.abs() {
            failures.push(format!("{name}/{cname} f64 value {} vs {want}", out.value));
        }
        let gw = array(&case["grad"]["logits"]);
        let gmax = gw.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let got = out.grad("logits");
        let worst = got
            .iter()
            .zip(gw.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, f64::max);
        if worst > 1e-15 + 1e-9 * gmax {
            failures.push(format!(
                "{name}/{cname} f64 grad max err {worst:e} (max|g| {gmax:e})"
            ));
        }
    }
    failures
}

fn check_f32(name: &str) -> Vec<String> {
    let g = golden(name);
    let mut failures = Vec::new();
    for case in g["cases"].as_array().unwrap() {
        let cname = case["name"].as_str().unwrap();
        let loss = loss_for(name, case);
        let ins: Vec<(String, losslang::ndarray::ArrayD<f32>)> = inputs(case)
            .into_iter()
            .map(|(k, a)| (k, a.mapv(|x| x as f32)))
            .collect();
        let shapes: Vec<(&str, &[usize])> =
            ins.iter().map(|(k, a)| (k.as_str(), a.shape())).collect();
        let mut plan = loss.compile::<f32>(&shapes).unwrap();
        let views: Vec<(&str, _)> = ins.iter().map(|(k, a)| (k.as_str(), a.view())).collect();
        let out = plan.value_and_grad(&views).unwrap();
        let want = case["value"].as_f64().unwrap();
        if (out.value as f64 - want).abs() > 1e-6 + 1e-4 * want.abs() {
            failures.push(format!("{name}/{cname} f32 value {} vs {want}", out.value));
        }
        let gw = array(&case["grad"]["logits"]);
        let gmax = gw.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let got = out.grad("logits");
        let worst = got
            .iter()
            .zip(gw.iter())
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0f64, f64::max);
        if worst > 1e-9 + 1e-3 * gmax {
            failures.push(format!(
                "{name}/{cname} f32 grad max err {worst:e} (max|g| {gmax:e})"
            ));
        }
    }
    failures
}

macro_rules! golden_tests {
    ($($name:ident),*) => {
        mod f64_cases { use super::*; $( #[test] fn $name() { let f = check_f64(stringify!($name)); assert!(f.is_empty(), "{}", f.join("\n")); } )* }
        mod f32_cases { use super::*; $( #[test] fn $name() { let f = check_f32(stringify!($name)); assert!(f.is_empty(), "{}", f.join("\n")); } )* }
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
    bce_dice
);

#[test]
fn every_listed_loss_has_golden_cases() {
    for name in LOSSES {
        assert!(
            !golden(name)["cases"].as_array().unwrap().is_empty(),
            "{name}"
        );
    }
}
