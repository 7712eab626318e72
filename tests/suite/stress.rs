//! The edge-case promise of stdlib.md: for logits with |z| <= 1e4 and any target in [0, 1]
//! (empty, full, single pixel, soft), value and gradient are finite, in f64 and f32; NaN and Inf
//! inputs are rejected with an error naming the input. Plus `lossc check`'s own gradcheck.

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Real;
use losslang::{Error, Library};

use crate::common;
use common::{library_loss, LOSSES};

fn targets(n: usize, rng: &mut Rng) -> Vec<(&'static str, Vec<f64>)> {
    let mut single = vec![0.0; n];
    single[n / 3] = 1.0;
    vec![
        ("empty", vec![0.0; n]),
        ("full", vec![1.0; n]),
        ("single", single),
        (
            "random",
            (0..n)
                .map(|_| if rng.uniform() < 0.3 { 1.0 } else { 0.0 })
                .collect(),
        ),
        ("soft", (0..n).map(|_| rng.uniform()).collect()),
    ]
}

fn finite_everywhere<T: Real>() {
    let mut rng = Rng::new(11);
    for name in LOSSES {
        // Sides fit the largest window (ssim's 11; ms_ssim's 3 at its fifth scale).
        let shape = if *name == "ms_ssim" {
            [2usize, 2, 34, 33]
        } else {
            [2, 2, 12, 11]
        };
        let n: usize = shape.iter().product();
        let reductions: &[&str] = if Library::standard()
            .get(name)
            .unwrap()
            .params()
            .iter()
            .any(|p| p.name == "reduction")
        {
            &["batch", "image", "class"]
        } else {
            &[""]
        };
        for red in reductions {
            let mut loss = library_loss(name);
            if !red.is_empty() {
                loss = loss.set("reduction", *red).unwrap();
            }
            let mut plan = loss
                .compile::<T>(&[("logits", &shape[..]), ("target", &shape[..])])
                .unwrap();
            for scale in [0.0, 30.0, 100.0, 1e4] {
                for (tname, t) in targets(n, &mut rng) {
                    let z: Vec<T> = (0..n)
                        .map(|_| {
                            T::from_f64(if scale == 0.0 {
                                2.0 * rng.normal()
                            } else if rng.uniform() < 0.5 {
                                -scale
                            } else {
                                scale
                            })
                        })
                        .collect();
                    let logits = ArrayD::from_shape_vec(IxDyn(&shape), z).unwrap();
                    let target = ArrayD::from_shape_vec(
                        IxDyn(&shape),
                        t.iter().map(|&v| T::from_f64(v)).collect(),
                    )
                    .unwrap();
                    let out = plan
                        .value_and_grad(&[("logits", logits.view()), ("target", target.view())])
                        .unwrap();
                    assert!(
                        out.value.is_finite(),
                        "{name} {red} |z|={scale} {tname} {}: value {}",
                        T::NAME,
                        out.value
                    );
                    assert!(
                        out.grad("logits").iter().all(|g| g.is_finite()),
                        "{name} {red} |z|={scale} {tname} {}: non-finite gradient",
                        T::NAME
                    );
                }
            }
        }
    }
}

#[test]
fn finite_on_stress_points_f64() {
    finite_everywhere::<f64>();
}

#[test]
fn finite_on_stress_points_f32() {
    finite_everywhere::<f32>();
}

#[test]
fn non_finite_inputs_are_rejected_by_name() {
    let loss = Library::standard().get("dice").unwrap();
    let shape = [1usize, 1, 2, 2];
    let mut plan = loss
        .compile::<f64>(&[("logits", &shape[..]), ("target", &shape[..])])
        .unwrap();
    let mut logits = ArrayD::<f64>::zeros(IxDyn(&shape));
    let target = ArrayD::<f64>::zeros(IxDyn(&shape));
    logits[[0, 0, 1, 0]] = f64::NAN;
    match plan.value_and_grad(&[("logits", logits.view()), ("target", target.view())]) {
        Err(Error::NonFinite { input, index, .. }) => {
            assert_eq!(input, "logits");
            assert_eq!(index, 2);
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    // With checking off, NaN propagates (never silently replaced).
    plan.set_check_finite(false);
    let out = plan
        .value_and_grad(&[("logits", logits.view()), ("target", target.view())])
        .unwrap();
    assert!(out.value.is_nan());
}

#[test]
fn gradcheck_passes_for_every_standard_loss() {
    for name in Library::standard().names() {
        let rep = library_loss(name).gradcheck(&Default::default()).unwrap();
        assert!(rep.passed, "{name}: {:#?}", rep.trials);
        assert_eq!(rep.grad_inputs, vec!["logits".to_string()], "{name}");
        assert!(
            rep.trials.iter().any(|t| t.max_rel_err.is_some()),
            "{name}: no finite-difference trial ran"
        );
    }
}

#[test]
fn gradcheck_holds_stop_grad_values_and_skips_threshold_flips() {
    // `stop_grad` values are constants (as cmss's `e`): the differences hold them at the base
    // point, so the symbolic gradient, which treats them as constants, agrees.
    let src = "loss held {\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n    return mean(sigmoid(logits) * stop_grad(logits) * target)\n}\n";
    let rep = losslang::Loss::from_source(src)
        .unwrap()
        .gradcheck(&Default::default())
        .unwrap();
    assert!(rep.passed, "{rep:#?}");
    assert_eq!(rep.skipped, 0);
    // `logits > stop_grad(logits)` is false at every base point and flips to true under every
    // positive step: each probe crosses a threshold, is skipped and counted, and a check with
    // nothing left to compare fails.
    let src = "loss flips {\n    input logits: [B, C, ..S] diff\n    return mean(logits * logits * (logits > stop_grad(logits)))\n}\n";
    let rep = losslang::Loss::from_source(src)
        .unwrap()
        .gradcheck(&Default::default())
        .unwrap();
    assert!(!rep.passed);
    assert_eq!(rep.not_exercised, vec!["logits".to_string()]);
    assert!(rep.skipped >= 8, "{rep:#?}");
}

#[test]
fn shape_errors_name_the_input_and_both_shapes() {
    let loss = Library::standard().get("dice").unwrap();
    let e = loss
        .compile::<f32>(&[
            ("logits", &[2, 3, 16, 16][..]),
            ("target", &[2, 1, 16, 16][..]),
        ])
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("input `target`")
            && msg.contains("axis `C` is [1] here but [3] in `logits`")
            && msg.contains("[2, 1, 16, 16]"),
        "{msg}"
    );
    let e = loss
        .compile::<f32>(&[("logits", &[2, 3][..])])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("at least 2 dimensions") || e.contains("missing input `target`"),
        "{e}"
    );
    let e = loss
        .compile::<f32>(&[("logit", &[2, 3, 4][..])])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown input `logit`") && e.contains("`logits`"),
        "{e}"
    );
    let e = loss.clone().set("smoth", 1.0).err().unwrap().to_string();
    assert!(
        e.contains(
            "parameter `smoth` is not declared by `dice`; it declares `smooth`, `reduction`"
        ),
        "{e}"
    );
    let e = loss.set("reduction", "pixel").err().unwrap().to_string();
    assert!(e.contains("one of batch | image | class"), "{e}");
}

/// dice sums `target` as it is (sum(y)), so the first pass checks that input through its total
/// instead of probing it element by element: a NaN or infinity anywhere in it is still reported
/// by name and index, in f32 and f64, while finite values whose f64 sum overflows are not.
#[test]
fn non_finite_summed_inputs_are_rejected_by_name() {
    fn case<T: losslang::Real>(bad: f64) -> Option<(String, usize)> {
        let loss = Library::standard().get("dice").unwrap();
        let shape = [2usize, 1, 3, 700];
        let mut plan = loss
            .compile::<T>(&[("logits", &shape[..]), ("target", &shape[..])])
            .unwrap();
        let logits = ArrayD::<T>::from_elem(IxDyn(&shape), T::from_f64(0.5));
        let mut target = ArrayD::<T>::from_elem(IxDyn(&shape), T::from_f64(1.0));
        target[[1, 0, 2, 699]] = T::from_f64(bad);
        target[[1, 0, 1, 5]] = T::from_f64(bad);
        match plan.value_and_grad(&[("logits", logits.view()), ("target", target.view())]) {
            Err(Error::NonFinite { input, index, .. }) => Some((input, index)),
            Err(Error::NonFiniteResult { what, .. }) => Some((what, usize::MAX)),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => None,
        }
    }
    let first = 3 * 700 + 700 + 5;
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(
            case::<f32>(bad),
            Some(("target".into(), first)),
            "f32 {bad}"
        );
        assert_eq!(
            case::<f64>(bad),
            Some(("target".into(), first)),
            "f64 {bad}"
        );
    }
    // 1e308 + 1e308 overflows the f64 total, but every element is finite: not an input's
    // fault, but the value is not finite, so it is an error about the value.
    assert_eq!(case::<f64>(1e308), Some(("value".into(), usize::MAX)));
}

/// bce's one pass runs a native kernel that probes both inputs into one flag as it reads them;
/// the error still names the input that holds the NaN or infinity (the first in input order when
/// both do) and its first index, in f32 and f64.
#[test]
fn non_finite_inputs_of_a_native_pass_are_named() {
    fn case<T: losslang::Real>(
        bad_logit: Option<usize>,
        bad_target: Option<usize>,
    ) -> (String, usize) {
        let loss = Library::standard().get("bce").unwrap();
        let shape = [2usize, 1, 3, 45];
        let mut plan = loss
            .compile::<T>(&[("logits", &shape[..]), ("target", &shape[..])])
            .unwrap();
        assert!(plan
            .pass_info()
            .iter()
            .all(|p| p.kernel == losslang::Kernel::Native));
        let mut logits = ArrayD::<T>::from_elem(IxDyn(&shape), T::from_f64(0.5));
        let mut target = ArrayD::<T>::from_elem(IxDyn(&shape), T::from_f64(1.0));
        if let Some(i) = bad_logit {
            logits.as_slice_mut().unwrap()[i] = T::from_f64(f64::INFINITY);
        }
        if let Some(i) = bad_target {
            target.as_slice_mut().unwrap()[i] = T::from_f64(f64::NAN);
        }
        match plan.value_and_grad(&[("logits", logits.view()), ("target", target.view())]) {
            Err(Error::NonFinite { input, index, .. }) => (input, index),
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
    // 200 is in a full step of 16 lanes, 269 in the ragged rest of the last row.
    for (l, t, want) in [
        (None, Some(200), ("target", 200)),
        (None, Some(269), ("target", 269)),
        (Some(131), None, ("logits", 131)),
        (Some(200), Some(7), ("logits", 200)),
    ] {
        let want = (want.0.to_string(), want.1);
        assert_eq!(case::<f32>(l, t), want, "f32 {l:?} {t:?}");
        assert_eq!(case::<f64>(l, t), want, "f64 {l:?} {t:?}");
    }
}
