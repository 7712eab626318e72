//! Class-index targets (issue 11, point 2): a `[B, ..S]` integer target given where the softmax
//! losses declare `target: [B, C, ..S] labels(C, ignore_index)` equals the one-hot computation
//! with the ignored pixels masked; labels outside the classes are errors naming the input, the
//! value and its index.

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Error, Library, Loss};

const SOFTMAX_LOSSES: &[&str] = &[
    "softmax_ce",
    "softmax_dice",
    "generalized_dice",
    "lovasz_softmax",
];

/// Random logits [b, c, h, w], labels [b, h, w] in 0..c with about a fifth set to `ignore`.
fn case(shape: [usize; 4], ignore: f64, seed: u64) -> (ArrayD<f64>, ArrayD<f64>) {
    let [b, c, h, w] = shape;
    let mut rng = Rng::new(seed);
    let z = ArrayD::from_shape_fn(IxDyn(&shape), |_| 2.0 * rng.normal());
    let labels = ArrayD::from_shape_fn(IxDyn(&[b, h, w]), |_| {
        if rng.uniform() < 0.2 {
            ignore
        } else {
            ((rng.uniform() * c as f64) as usize).min(c - 1) as f64
        }
    });
    (z, labels)
}

/// The same target one-hot over C (ignored pixels: all zeros) and a mask zero at ignored pixels.
fn one_hot(labels: &ArrayD<f64>, c: usize, ignore: f64) -> (ArrayD<f64>, ArrayD<f64>) {
    let s = labels.shape();
    let shape = [s[0], c, s[1], s[2]];
    let y = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
        let l = labels[[ix[0], ix[2], ix[3]]];
        f64::from(l != ignore && l == ix[1] as f64)
    });
    let m = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
        f64::from(labels[[ix[0], ix[2], ix[3]]] != ignore)
    });
    (y, m)
}

fn eval(loss: &Loss, inputs: &[(&str, &ArrayD<f64>)]) -> Result<(f64, Vec<f64>), Error> {
    let shapes: Vec<(&str, &[usize])> = inputs.iter().map(|(k, a)| (*k, a.shape())).collect();
    let mut plan = loss.compile::<f64>(&shapes)?;
    let views: Vec<(&str, _)> = inputs.iter().map(|(k, a)| (*k, a.view())).collect();
    let out = plan.value_and_grad(&views)?;
    Ok((out.value, out.grad("logits").iter().copied().collect()))
}

fn assert_close(what: &str, a: &(f64, Vec<f64>), b: &(f64, Vec<f64>)) {
    let scale = b.1.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(
        (a.0 - b.0).abs() <= 1e-13 * (1.0 + b.0.abs()),
        "{what}: value {} vs {}",
        a.0,
        b.0
    );
    for (x, y) in a.1.iter().zip(&b.1) {
        assert!(
            (x - y).abs() <= 1e-13 * scale,
            "{what}: gradient {x} vs {y}"
        );
    }
}

#[test]
fn labels_equal_the_one_hot_computation_with_ignored_pixels_masked() {
    for &name in SOFTMAX_LOSSES {
        // 255 as in Cityscapes, a negative sentinel, and ignoring a real class (background).
        for (ignore, seed) in [(255.0, 1), (-1.0, 2), (0.0, 3)] {
            let (z, labels) = case([2, 4, 6, 5], ignore, seed);
            let (y, m) = one_hot(&labels, 4, ignore);
            let loss = Library::standard()
                .get(name)
                .unwrap()
                .set("ignore_index", ignore)
                .unwrap();
            let got = eval(&loss, &[("logits", &z), ("target", &labels)]).unwrap();
            let want = eval(&loss, &[("logits", &z), ("target", &y), ("mask", &m)]).unwrap();
            assert_close(&format!("{name} ignore {ignore}"), &got, &want);
            // The ignored pixels matter: without the mask the one-hot result differs.
            let unmasked = eval(&loss, &[("logits", &z), ("target", &y)]).unwrap();
            assert!(
                (unmasked.0 - want.0).abs() > 1e-9,
                "{name}: ignoring changed nothing"
            );
        }
    }
}

#[test]
fn a_label_outside_the_classes_names_input_value_and_index() {
    let (z, mut labels) = case([2, 3, 4, 4], 255.0, 4);
    labels[[1, 2, 3]] = 3.0; // C = 3: classes are 0, 1, 2
    labels[[1, 3, 0]] = 7.0;
    let loss = Library::standard()
        .get("softmax_ce")
        .unwrap()
        .set("ignore_index", 255.0)
        .unwrap();
    match eval(&loss, &[("logits", &z), ("target", &labels)]) {
        Err(Error::Label {
            input,
            index,
            value,
            classes,
            ..
        }) => {
            assert_eq!(
                (input.as_str(), index, value, classes),
                ("target", vec![1, 2, 3], 3.0, 3)
            );
        }
        other => panic!("expected a label error, got {other:?}"),
    }
    // A fractional label, and the default ignore value (-100) not matching 255.
    let (_, mut frac) = case([2, 3, 4, 4], 1.0, 5);
    frac[[0, 0, 1]] = 0.5;
    let e = eval(
        &Library::standard().get("softmax_ce").unwrap(),
        &[("logits", &z), ("target", &frac)],
    );
    assert!(
        matches!(e, Err(Error::Label { value, .. }) if value == 0.5),
        "{e:?}"
    );
    let e = eval(
        &Library::standard().get("softmax_ce").unwrap(),
        &[("logits", &z), ("target", &case([2, 3, 4, 4], 255.0, 6).1)],
    );
    let msg = e.unwrap_err().to_string();
    assert!(
        msg.contains("`target`") && msg.contains("255") && msg.contains("-100"),
        "{msg}"
    );
}

#[test]
fn a_target_of_neither_shape_says_both() {
    let (z, _) = case([2, 3, 4, 4], 255.0, 7);
    let bad = ArrayD::<f64>::zeros(IxDyn(&[2, 4, 4, 1]));
    let e = eval(
        &Library::standard().get("softmax_ce").unwrap(),
        &[("logits", &z), ("target", &bad)],
    );
    let msg = e.unwrap_err().to_string();
    assert!(msg.contains("or class labels"), "{msg}");
}

/// Weighted softmax cross-entropy by hand (f64, log-sum-exp per pixel): per pixel `i` with label
/// `l` not ignored, `ce_i = -Σ_c w_c t_c log q_c` with `t = (1 - ls) onehot(l) + ls / C`;
/// `pixels` divides Σ ce_i by the count of labelled pixels, `weights` by Σ w_l (PyTorch's
/// `cross_entropy(weight = w)` mean).
fn weighted_ce_by_hand(
    z: &ArrayD<f64>,
    labels: &ArrayD<f64>,
    w: &[f64],
    ls: f64,
    ignore: f64,
    by_weights: bool,
) -> f64 {
    let s = z.shape();
    let (b, c, h, wd) = (s[0], s[1], s[2], s[3]);
    let (mut num, mut den) = (0.0, 0.0);
    for bi in 0..b {
        for y in 0..h {
            for x in 0..wd {
                let l = labels[[bi, y, x]];
                if l == ignore {
                    continue;
                }
                let m = (0..c).map(|k| z[[bi, k, y, x]]).fold(f64::MIN, f64::max);
                let lse = m
                    + (0..c)
                        .map(|k| (z[[bi, k, y, x]] - m).exp())
                        .sum::<f64>()
                        .ln();
                for (k, wk) in w.iter().enumerate() {
                    let t = (1.0 - ls) * f64::from(l == k as f64) + ls / c as f64;
                    num -= wk * t * (z[[bi, k, y, x]] - lse);
                }
                den += if by_weights { w[l as usize] } else { 1.0 };
            }
        }
    }
    num / den
}

/// Per-class parameters (issue 11, point 3): `softmax_ce`'s `weight: [C]` set as a list gives the
/// hand-computed weighted cross-entropy under both normalisations, with labels, an ignore value
/// and label smoothing; the gradient agrees with finite differences.
#[test]
fn class_weights_give_the_weighted_cross_entropy() {
    let w = [0.5, 2.0, 1.0, 3.0];
    let (z, labels) = case([2, 4, 5, 6], 255.0, 11);
    for norm in ["pixels", "weights"] {
        for ls in [0.0, 0.1] {
            let loss = Library::standard()
                .get("softmax_ce")
                .unwrap()
                .set("ignore_index", 255.0)
                .unwrap()
                .set("weight", w.to_vec())
                .unwrap()
                .set("weight_norm", norm)
                .unwrap()
                .set("label_smoothing", ls)
                .unwrap();
            let (value, grad) = eval(&loss, &[("logits", &z), ("target", &labels)]).unwrap();
            let want = weighted_ce_by_hand(&z, &labels, &w, ls, 255.0, norm == "weights");
            assert!(
                (value - want).abs() <= 1e-13 * want.abs(),
                "{norm} ls {ls}: {value} vs {want}"
            );
            // Central differences of the hand computation at a few logits.
            for flat in [0, 17, 63, 150, 239] {
                let mut zp = z.clone();
                let mut zm = z.clone();
                let h = 1e-6;
                zp.as_slice_mut().unwrap()[flat] += h;
                zm.as_slice_mut().unwrap()[flat] -= h;
                let fd = (weighted_ce_by_hand(&zp, &labels, &w, ls, 255.0, norm == "weights")
                    - weighted_ce_by_hand(&zm, &labels, &w, ls, 255.0, norm == "weights"))
                    / (2.0 * h);
                assert!(
                    (grad[flat] - fd).abs() <= 1e-8,
                    "{norm} ls {ls} grad[{flat}]: {} vs {fd}",
                    grad[flat]
                );
            }
        }
    }
    // All-ones weights are the unweighted loss under either normalisation.
    let plain = Library::standard()
        .get("softmax_ce")
        .unwrap()
        .set("ignore_index", 255.0)
        .unwrap();
    let base = eval(&plain, &[("logits", &z), ("target", &labels)]).unwrap();
    for norm in ["pixels", "weights"] {
        let ones = plain
            .clone()
            .set("weight", vec![1.0; 4])
            .unwrap()
            .set("weight_norm", norm)
            .unwrap();
        let got = eval(&ones, &[("logits", &z), ("target", &labels)]).unwrap();
        assert_close(&format!("ones, {norm}"), &got, &base);
    }
}

/// A vector parameter's list is checked against its axis when shapes bind, and its values when
/// set; a single number sets every element; the fused and reference executors agree.
#[test]
fn vector_parameters_are_checked_against_their_axis() {
    let (z, labels) = case([1, 4, 3, 3], 255.0, 12);
    let ce = Library::standard()
        .get("softmax_ce")
        .unwrap()
        .set("ignore_index", 255.0)
        .unwrap();
    let three = ce.clone().set("weight", vec![1.0, 2.0, 3.0]).unwrap();
    match eval(&three, &[("logits", &z), ("target", &labels)]) {
        Err(e @ Error::ParamValue { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("axis C (4 for these shapes)") && text.contains("got 3 numbers"),
                "{text}"
            );
        }
        other => panic!("expected a parameter error, got {other:?}"),
    }
    for bad in [vec![], vec![1.0, f64::NAN, 1.0, 1.0]] {
        assert!(matches!(
            ce.clone().set("weight", bad),
            Err(Error::ParamValue { .. })
        ));
    }
    // Lists only where a vector is declared; text lists as a command line gives them.
    assert!(matches!(
        ce.clone().set("label_smoothing", vec![0.1, 0.2]),
        Err(Error::ParamValue { .. })
    ));
    let from_text = ce.clone().set("weight", "[0.5, 2, 1, 3]").unwrap();
    let from_list = ce.clone().set("weight", vec![0.5, 2.0, 1.0, 3.0]).unwrap();
    let a = eval(&from_text, &[("logits", &z), ("target", &labels)]).unwrap();
    let b = eval(&from_list, &[("logits", &z), ("target", &labels)]).unwrap();
    assert_eq!(a, b);
    // A number is every class's weight: 2 doubles the pixel-normalised loss.
    let two = ce.clone().set("weight", 2.0).unwrap();
    let one = eval(&ce, &[("logits", &z), ("target", &labels)]).unwrap();
    let doubled = eval(&two, &[("logits", &z), ("target", &labels)]).unwrap();
    assert!((doubled.0 - 2.0 * one.0).abs() <= 1e-14 * one.0.abs());
    // The reference interpreter reads the same table.
    let shapes = [("logits", z.shape()), ("target", labels.shape())];
    let mut reference = from_list
        .compile_with::<f64>(&shapes, losslang::ExecutorKind::Reference)
        .unwrap();
    let r = reference
        .value_and_grad(&[("logits", z.view()), ("target", labels.view())])
        .unwrap()
        .value;
    assert!((r - b.0).abs() <= 1e-14 * b.0.abs(), "{r} vs {}", b.0);
}

/// A per-pixel mask `[B, ..S]` (or `[B, 1, ..S]`) beside class-index labels (issue 24, point 1)
/// equals the same mask repeated over C; labels as MONAI's `[B, 1, ..S]` equal `[B, ..S]`.
#[test]
fn a_per_pixel_mask_and_monai_labels_broadcast_over_the_classes() {
    for &name in SOFTMAX_LOSSES {
        let (z, labels) = case([2, 3, 5, 4], 255.0, 11);
        let mut rng = Rng::new(12);
        let pixel = ArrayD::from_shape_fn(IxDyn(&[2, 5, 4]), |_| f64::from(rng.uniform() < 0.7));
        let full = ArrayD::from_shape_fn(IxDyn(&[2, 3, 5, 4]), |ix| pixel[[ix[0], ix[2], ix[3]]]);
        let one = pixel
            .clone()
            .into_shape_with_order(IxDyn(&[2, 1, 5, 4]))
            .unwrap();
        let labels1 = labels
            .clone()
            .into_shape_with_order(IxDyn(&[2, 1, 5, 4]))
            .unwrap();
        let loss = Library::standard()
            .get(name)
            .unwrap()
            .set("ignore_index", 255.0)
            .unwrap();
        let want = eval(
            &loss,
            &[("logits", &z), ("target", &labels), ("mask", &full)],
        )
        .unwrap();
        for (what, t, m) in [
            ("[B, ..S] mask", &labels, &pixel),
            ("[B, 1, ..S] mask", &labels, &one),
            ("[B, 1, ..S] labels", &labels1, &full),
            ("[B, 1, ..S] labels and mask", &labels1, &one),
        ] {
            let got = eval(&loss, &[("logits", &z), ("target", t), ("mask", m)])
                .unwrap_or_else(|e| panic!("{name} {what}: {e}"));
            assert_close(&format!("{name} {what}"), &got, &want);
        }
        // The mask matters: without it the value differs.
        let unmasked = eval(&loss, &[("logits", &z), ("target", &labels)]).unwrap();
        assert!(
            (unmasked.0 - want.0).abs() > 1e-9,
            "{name}: the mask changed nothing"
        );
    }
}

/// Against class labels, `softmax_ce`'s gradient needs only the count of labelled pixels before
/// its pass: the CE sum joins the gradient's pass (`defer_reductions`), so the first pass reads
/// the labels alone instead of recomputing every `log_softmax` — same value and gradient as the
/// one-hot target.
#[test]
fn softmax_ce_against_labels_first_counts_them_alone() {
    let (z, labels) = case([2, 4, 8, 8], -100.0, 9);
    let loss = Library::standard().get("softmax_ce").unwrap();
    let plan = loss
        .compile::<f64>(&[("logits", z.shape()), ("target", labels.shape())])
        .unwrap();
    let info = plan.pass_info();
    assert_eq!(info.len(), 2, "{info:?}");
    assert!(
        info[0].nodes <= 3,
        "the first pass computes more than the count: {info:?}"
    );
    let (y, m) = one_hot(&labels, 4, -100.0);
    let (v_labels, g_labels) = eval(&loss, &[("logits", &z), ("target", &labels)]).unwrap();
    let (v_hot, g_hot) = eval(&loss, &[("logits", &z), ("target", &y), ("mask", &m)]).unwrap();
    assert!((v_labels - v_hot).abs() < 1e-12, "{v_labels} vs {v_hot}");
    let d = g_labels
        .iter()
        .zip(&g_hot)
        .fold(0f64, |a, (x, y)| a.max((x - y).abs()));
    assert!(d < 1e-12, "gradients differ by {d}");
}
