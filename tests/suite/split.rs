//! Split-phase statistics for data-parallel training (`Plan::statistics`, `finish`, `backward`):
//! a batch cut into shards, each shard's statistics summed as an all-reduce would, gives the
//! unsharded value and gradient bit for bit — and those equal the ordinary plan's to rounding.

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, Axis, IxDyn};
use losslang::{Error, Library, Loss, Real};

fn batch(shape: &[usize], seed: u64) -> Vec<(&'static str, ArrayD<f64>)> {
    crate::common::logits_target_mask(shape, seed)
}

/// Images `lo..hi` of every input.
fn shard(
    all: &[(&'static str, ArrayD<f64>)],
    lo: usize,
    hi: usize,
) -> Vec<(&'static str, ArrayD<f64>)> {
    all.iter()
        .map(|(k, a)| (*k, a.slice_axis(Axis(0), (lo..hi).into()).to_owned()))
        .collect()
}

/// (value bits, gradient bits) through statistics on the given shards (image ranges) of `all`,
/// in precision `T`.
fn sharded<T: Real>(
    loss: &Loss,
    all: &[(&'static str, ArrayD<f64>)],
    cuts: &[(usize, usize)],
) -> (f64, ArrayD<f64>) {
    let b = all[0].1.shape()[0];
    let mut plans = Vec::new();
    let mut summed: Option<Vec<ArrayD<T>>> = None;
    for &(lo, hi) in cuts {
        let part: Vec<(&str, ArrayD<T>)> = shard(all, lo, hi)
            .into_iter()
            .map(|(k, a)| (k, a.mapv(T::from_f64)))
            .collect();
        let shapes: Vec<(&str, &[usize])> = part.iter().map(|(k, a)| (*k, a.shape())).collect();
        let mut plan = loss.compile::<T>(&shapes).unwrap();
        let views: Vec<_> = part.iter().map(|(k, a)| (*k, a.view())).collect();
        let stats = plan.statistics(&views, lo, b).unwrap();
        // The all-reduce: an elementwise sum over shards.
        summed = Some(match summed {
            None => stats,
            Some(acc) => acc
                .iter()
                .zip(&stats)
                .map(|(a, s)| {
                    let mut t = a.clone();
                    t.zip_mut_with(s, |x, &y| *x = T::from_f64(x.to_f64() + y.to_f64()));
                    t
                })
                .collect(),
        });
        plans.push((plan, part, lo));
    }
    let summed = summed.unwrap();
    let mut value: Option<f64> = None;
    let mut rows = Vec::new();
    for (plan, part, lo) in &mut plans {
        // Every shard finishes on its own: all must agree.
        let fin = plan.finish(&summed).unwrap();
        let v = fin.value.to_f64();
        assert!(value.is_none_or(|w| w.to_bits() == v.to_bits()));
        value = Some(v);
        let views: Vec<_> = part.iter().map(|(k, a)| (*k, a.view())).collect();
        let out = plan.backward(&views, &fin, *lo).unwrap();
        rows.push(out.grad("logits").mapv(|x| x.to_f64()));
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    (
        value.unwrap(),
        losslang::ndarray::concatenate(Axis(0), &views).unwrap(),
    )
}

fn bits(a: &ArrayD<f64>) -> Vec<u64> {
    a.iter().map(|x| x.to_bits()).collect()
}

/// The region losses (and the pixel losses, whose mean is a batch sum too) that split.
const SPLITTABLE: &[(&str, &[(&str, &str)])] = &[
    ("bce", &[]),
    ("focal", &[]),
    ("dice", &[("reduction", "batch")]),
    ("dice", &[("reduction", "image")]),
    ("dice", &[("reduction", "class")]),
    ("tversky", &[("reduction", "image")]),
    ("jaccard", &[]),
    ("combo", &[]),
    ("mcc", &[]),
    ("generalized_dice", &[]),
    ("softmax_dice", &[]),
    ("softmax_ce", &[]),
    ("cldice", &[]),
    ("hausdorff_dt", &[]),
];

#[test]
fn sharded_statistics_give_the_unsharded_value_and_gradient_bitwise() {
    for (k, (name, params)) in SPLITTABLE.iter().enumerate() {
        let mut loss = Library::standard().get(name).unwrap();
        for (p, v) in *params {
            loss = loss.set(p, *v).unwrap();
        }
        let all = batch(&[5, 3, 9, 11], 40 + k as u64);
        let whole = sharded::<f64>(&loss, &all, &[(0, 5)]);
        let whole32 = sharded::<f32>(&loss, &all, &[(0, 5)]);
        for cuts in [&[(0, 2), (2, 5)][..], &[(0, 1), (1, 4), (4, 5)][..]] {
            let parts32 = sharded::<f32>(&loss, &all, cuts);
            assert_eq!(
                whole32.0.to_bits(),
                parts32.0.to_bits(),
                "{name} {params:?} {cuts:?} f32: value"
            );
            assert!(
                bits(&whole32.1) == bits(&parts32.1),
                "{name} {params:?} {cuts:?} f32: gradients differ"
            );
            let parts = sharded::<f64>(&loss, &all, cuts);
            assert_eq!(
                whole.0.to_bits(),
                parts.0.to_bits(),
                "{name} {params:?} {cuts:?}: value {} vs {}",
                whole.0,
                parts.0
            );
            assert!(
                bits(&whole.1) == bits(&parts.1),
                "{name} {params:?} {cuts:?}: gradients differ"
            );
        }
        // And the statistics path computes the loss: the ordinary plan's value and gradient.
        let shapes: Vec<(&str, &[usize])> = all.iter().map(|(k, a)| (*k, a.shape())).collect();
        let mut plan = loss.compile::<f64>(&shapes).unwrap();
        let views: Vec<_> = all.iter().map(|(k, a)| (*k, a.view())).collect();
        let out = plan.value_and_grad(&views).unwrap();
        assert!(
            (out.value - whole.0).abs() <= 1e-12 * (1.0 + out.value.abs()),
            "{name}: {} vs {}",
            out.value,
            whole.0
        );
        let g = out.grad("logits");
        let gmax = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let worst = g
            .iter()
            .zip(whole.1.iter())
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-15 + 1e-10 * gmax,
            "{name} {params:?}: gradient differs by {worst:e} (max {gmax:e})"
        );
        assert!(gmax > 0.0, "{name}: a zero gradient exercises nothing");
    }
}

#[test]
fn losses_that_are_not_sums_of_per_image_parts_say_why() {
    // topk_ce ranks every element of the batch; lovasz_softmax (per_image = 0) sorts across it.
    for (name, why) in [
        ("topk_ce", "orders elements across the batch"),
        ("lovasz_softmax", "orders elements across the batch"),
    ] {
        let loss = Library::standard().get(name).unwrap();
        let all = batch(&[2, 3, 4, 4], 7);
        let shapes: Vec<(&str, &[usize])> = all.iter().map(|(k, a)| (*k, a.shape())).collect();
        let mut plan = loss.compile::<f64>(&shapes).unwrap();
        let views: Vec<_> = all.iter().map(|(k, a)| (*k, a.view())).collect();
        match plan.statistics(&views, 0, 2) {
            Err(Error::NotSplittable { loss, reason }) => {
                assert_eq!(loss, name);
                assert!(reason.contains(why), "{name}: {reason}");
            }
            other => panic!("{name}: expected NotSplittable, got {other:?}"),
        }
    }
    // A shard that does not fit in the batch is a shape error.
    let loss = Library::standard().get("dice").unwrap();
    let all = batch(&[2, 1, 4, 4], 8);
    let shapes: Vec<(&str, &[usize])> = all.iter().map(|(k, a)| (*k, a.shape())).collect();
    let mut plan = loss.compile::<f64>(&shapes).unwrap();
    let views: Vec<_> = all.iter().map(|(k, a)| (*k, a.view())).collect();
    assert!(matches!(
        plan.statistics(&views, 3, 4),
        Err(Error::Shape { .. })
    ));
}

/// (value, values, gradient of logits) of `loss` on `inputs` in precision `T`.
fn run<T: Real>(
    loss: &Loss,
    inputs: &[(&'static str, ArrayD<f64>)],
) -> (f64, Option<ArrayD<f64>>, ArrayD<f64>) {
    let typed: Vec<(&str, ArrayD<T>)> = inputs
        .iter()
        .map(|(k, a)| (*k, a.mapv(T::from_f64)))
        .collect();
    let shapes: Vec<(&str, &[usize])> = typed.iter().map(|(k, a)| (*k, a.shape())).collect();
    let mut plan = loss.compile::<T>(&shapes).unwrap();
    let views: Vec<_> = typed.iter().map(|(k, a)| (*k, a.view())).collect();
    let out = plan.value_and_grad(&views).unwrap();
    (
        out.value.to_f64(),
        out.values().map(|v| v.mapv(|x| x.to_f64())),
        out.grad("logits").mapv(|x| x.to_f64()),
    )
}

/// `reduction = none` (issue 11, point 5): every region loss returns one value per (b, c),
/// each equal to the loss of that image and class alone at `reduction = image`; the value is
/// `Σ seed · values` and the gradient that sum's — the per-slice gradients scaled by the seed.
#[test]
fn reduction_none_gives_each_image_and_class_its_own_loss() {
    let (b, c) = (3, 2);
    let all = batch(&[b, c, 7, 6], 21);
    let mut rng = Rng::new(5);
    let seed = ArrayD::from_shape_fn(IxDyn(&[b, c]), |_| rng.normal());
    for name in [
        "dice",
        "jaccard",
        "tversky",
        "focal_tversky",
        "log_cosh_dice",
        "sensitivity_specificity",
        "asym_similarity",
    ] {
        let lib = Library::standard().get(name).unwrap();
        let none = lib.clone().set("reduction", "none").unwrap();
        assert!(
            none.inputs()
                .iter()
                .any(|i| i.name == "seed" && i.default == Some(1.0)),
            "{name}: no optional seed input"
        );
        let image = lib.set("reduction", "image").unwrap();
        let mut seeded = all.clone();
        seeded.push(("seed", seed.clone()));
        for f32_path in [false, true] {
            let (value, values, grad) = if f32_path {
                run::<f32>(&none, &seeded)
            } else {
                run::<f64>(&none, &seeded)
            };
            let tol = if f32_path { 2e-6 } else { 1e-13 };
            let values = values.unwrap_or_else(|| panic!("{name}: no values"));
            assert_eq!(values.shape(), &[b, c], "{name}");
            let mut want_value = 0.0;
            let gmax = grad.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            for bi in 0..b {
                for ci in 0..c {
                    // The slice (bi, ci) alone, through the scalar `image` path.
                    let one: Vec<(&'static str, ArrayD<f64>)> = all
                        .iter()
                        .map(|(k, a)| {
                            let s = a
                                .slice_axis(Axis(0), (bi..bi + 1).into())
                                .slice_axis(Axis(1), (ci..ci + 1).into())
                                .to_owned();
                            (*k, s)
                        })
                        .collect();
                    let (v, _, g) = run::<f64>(&image, &one);
                    let got = values[[bi, ci]];
                    assert!(
                        (got - v).abs() <= tol * (1.0 + v.abs()),
                        "{name} f32 {f32_path} values[{bi}, {ci}]: {got} vs {v}"
                    );
                    want_value += seed[[bi, ci]] * v;
                    let mine = grad
                        .slice_axis(Axis(0), (bi..bi + 1).into())
                        .slice_axis(Axis(1), (ci..ci + 1).into())
                        .to_owned();
                    for (x, y) in mine.iter().zip(g.iter()) {
                        let y = seed[[bi, ci]] * y;
                        assert!(
                            (x - y).abs() <= tol * gmax.max(1e-300),
                            "{name} f32 {f32_path} gradient in ({bi}, {ci}): {x} vs {y}"
                        );
                    }
                }
            }
            assert!(
                (value - want_value).abs() <= tol * (1.0 + want_value.abs()),
                "{name} f32 {f32_path} value: {value} vs {want_value}"
            );
        }
        // Without a seed: the plain sum of the values.
        let (value, values, _) = run::<f64>(&none, &all);
        let sum: f64 = values.unwrap().iter().sum();
        assert!((value - sum).abs() <= 1e-13 * (1.0 + sum.abs()), "{name}");
    }
}

/// `softmax_dice` couples the classes through the softmax: its `none` values average to the
/// `image` loss (no group masked), and a seed of 1/(B·C) gives the `image` gradient.
#[test]
fn reduction_none_of_softmax_dice_averages_to_the_image_loss() {
    let all: Vec<_> = batch(&[2, 3, 5, 6], 22)
        .into_iter()
        .filter(|(k, _)| *k != "mask")
        .collect();
    let lib = Library::standard().get("softmax_dice").unwrap();
    let (v_image, _, g_image) = run::<f64>(&lib.clone().set("reduction", "image").unwrap(), &all);
    let mut seeded = all.clone();
    seeded.push(("seed", ArrayD::from_elem(IxDyn(&[2, 3]), 1.0 / 6.0)));
    let (v, values, g) = run::<f64>(&lib.set("reduction", "none").unwrap(), &seeded);
    let mean = values.unwrap().iter().sum::<f64>() / 6.0;
    assert!((mean - v_image).abs() <= 1e-14, "{mean} vs {v_image}");
    assert!((v - v_image).abs() <= 1e-14, "{v} vs {v_image}");
    let gmax = g_image.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (x, y) in g.iter().zip(g_image.iter()) {
        assert!((x - y).abs() <= 1e-14 * gmax, "{x} vs {y}");
    }
}

/// A user's loss may return `unreduced(x)`: it compiles, its gradient checks against finite
/// differences (the seed drawn like any optional input), and split statistics refuse it.
#[test]
fn a_user_loss_may_return_unreduced_values() {
    let src = "loss per_image {\n    input z: [B, C, ..S] diff\n    input y: [B, C, ..S]\n    return unreduced(mean(softplus(z) - z * y, over = [C, S]))\n}\n";
    let loss = Loss::from_source(src).unwrap();
    let report = loss.gradcheck(&Default::default()).unwrap();
    assert!(
        report.passed && report.not_exercised.is_empty(),
        "{:?} {}",
        report.trials,
        report.worst_rel_err
    );
    let all: Vec<_> = batch(&[2, 1, 4, 4], 23)
        .into_iter()
        .filter(|(k, _)| *k != "mask")
        .map(|(k, a)| (if k == "logits" { "z" } else { "y" }, a))
        .collect();
    let shapes: Vec<(&str, &[usize])> = all.iter().map(|(k, a)| (*k, a.shape())).collect();
    let mut plan = loss.compile::<f64>(&shapes).unwrap();
    let views: Vec<_> = all.iter().map(|(k, a)| (*k, a.view())).collect();
    assert!(matches!(
        plan.statistics(&views, 0, 2),
        Err(Error::NotSplittable { .. })
    ));
    // Without `unreduced` the same result is E0016, which now names the way out.
    let plain = src.replace("unreduced(", "(");
    let err = match Loss::from_source(&plain) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a non-scalar result compiled"),
    };
    assert!(
        err.contains("E0016") && err.contains("unreduced(...)"),
        "{err}"
    );
}
