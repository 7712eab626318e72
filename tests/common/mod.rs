//! Shared test helpers: reading golden files and building calls from them.
#![allow(dead_code)]

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Library, Loss};
use serde_json::Value;

pub fn golden(name: &str) -> Value {
    // The root package's tests, or the `lossc` package's (one directory down).
    let root = env!("CARGO_MANIFEST_DIR");
    let path = [
        format!("{root}/tests/golden/{name}.json"),
        format!("{root}/../tests/golden/{name}.json"),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or_else(|| format!("{root}/tests/golden/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("golden JSON")
}

pub fn array(v: &Value) -> ArrayD<f64> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
}

/// The standard loss with a case's parameters applied.
pub fn loss_for(name: &str, case: &Value) -> Loss {
    let mut loss = Library::standard()
        .get(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(params) = case["params"].as_object() {
        for (k, v) in params {
            loss = match v {
                Value::String(s) => loss.set(k, s.as_str()),
                _ => loss.set(k, v.as_f64().unwrap()),
            }
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    loss
}

pub fn inputs(case: &Value) -> Vec<(String, ArrayD<f64>)> {
    case["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), array(v)))
        .collect()
}

/// Losses that run on the reference interpreter: `lovasz_softmax` sorts (a staged op) after a
/// softmax over C (an unrolled fused pass), and the two executors do not combine yet (issue 11).
/// Every other loss must run fused or staged.
#[allow(dead_code)]
pub const NOT_FUSED_YET: &[&str] = &["lovasz_softmax"];

/// The standard loss `name` as the suite's whole-library tests run it: `ms_ssim` with a window of
/// 3, so that its five scales fit sides of 33 (the default window of 11 needs 161, which the
/// golden cases cover).
#[allow(dead_code)]
pub fn library_loss(name: &str) -> losslang::Loss {
    let loss = losslang::Library::standard().get(name).unwrap();
    if name == "ms_ssim" {
        loss.set("window", 3.0).unwrap()
    } else {
        loss
    }
}

/// The standard losses built so far (stdlib.md Parts 1 and 2).
pub const LOSSES: &[&str] = &[
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
    "distance_bce",
    "hausdorff_dt",
    "shape_aware",
    "cmss",
    "ssim",
    "unet3p_hybrid",
    "basnet_hybrid",
    "dice_ce",
    "dice_focal",
    "mcc",
    "asym_similarity",
    "unified_focal",
    "boundary",
    "softmax_ce",
    "softmax_dice",
    "generalized_dice",
    "lovasz_hinge",
    "lovasz_softmax",
    "topk_ce",
    "cldice",
    "hausdorff_er",
    "ms_ssim",
];

/// `n` helpers `f0 .. f{n-1}`, each wrapping the next in `nest` calls of `sigmoid` (the last
/// wraps its argument): `f0` inlines all of them.
pub fn helper_chain(n: usize, nest: usize) -> String {
    let mut src = String::new();
    for i in 0..n {
        let inner = if i + 1 == n {
            "x".to_string()
        } else {
            format!("f{}(x)", i + 1)
        };
        src.push_str(&format!(
            "fn f{i}(x) = {}{inner}{}\n",
            "sigmoid(".repeat(nest),
            ")".repeat(nest)
        ));
    }
    src
}

/// Logits (2·N(0, 1)), a binary target (40 % ones) and a mask (85 % ones) of `shape`, drawn
/// from `seed`.
pub fn logits_target_mask(shape: &[usize], seed: u64) -> Vec<(&'static str, ArrayD<f64>)> {
    let n: usize = shape.iter().product();
    let mut rng = losslang::internals::Rng::new(seed);
    let z = (0..n).map(|_| 2.0 * rng.normal()).collect();
    let y = (0..n).map(|_| f64::from(rng.uniform() < 0.4)).collect();
    let m = (0..n).map(|_| f64::from(rng.uniform() < 0.85)).collect();
    vec![
        ("logits", ArrayD::from_shape_vec(IxDyn(shape), z).unwrap()),
        ("target", ArrayD::from_shape_vec(IxDyn(shape), y).unwrap()),
        ("mask", ArrayD::from_shape_vec(IxDyn(shape), m).unwrap()),
    ]
}
