//! The fused executor against the reference interpreter (itself checked against the golden
//! files) on shapes the golden files do not have: random B, C and one to three spatial axes,
//! every standard loss, every reduction, with and without a mask, soft and hard targets.

use crate::common;
use common::NOT_FUSED_YET;
use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{ExecutorKind, Kernel, Library};

/// The fused result `(value, gradient)` against the reference interpreter's: value to 1e-10
/// relative, gradient to 1e-9 of the reference's largest entry.
fn assert_close<'a>(
    what: &str,
    (value, grad): (f64, impl IntoIterator<Item = &'a f64>),
    (want, want_grad): (f64, &ArrayD<f64>),
) {
    assert!(
        (value - want).abs() <= 1e-12 + 1e-10 * want.abs(),
        "{what}: value {value} vs {want}"
    );
    let gmax = want_grad.iter().fold(0.0f64, |s, v| s.max(v.abs()));
    let worst = grad
        .into_iter()
        .zip(want_grad.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= 1e-15 + 1e-9 * gmax,
        "{what}: gradient differs by {worst:e} (max |g| {gmax:e})"
    );
}

#[test]
fn fused_equals_reference_on_random_shapes() {
    let mut rng = Rng::new(2026);
    let mut checked = 0;
    for name in Library::standard().names() {
        if NOT_FUSED_YET.contains(&name) {
            continue; // both sides would be the reference interpreter
        }
        let base = common::library_loss(name);
        // Losses with window ops run staged; their sides start at 11 (ssim's window), and
        // ms_ssim's (window 3 here) at 33, so that its fifth scale keeps 3.
        let (small, pad): (&[usize], usize) = if name == "ms_ssim" {
            (&[1, 1, 40, 40], 32)
        } else {
            (&[1, 1, 12, 12], 10)
        };
        let windowed = base
            .compile::<f64>(&[("logits", small), ("target", small)])
            .unwrap()
            .executor()
            == ExecutorKind::Staged;
        let reductions: Vec<Option<&str>> = if base.params().iter().any(|p| p.name == "reduction") {
            vec![Some("batch"), Some("image"), Some("class")]
        } else {
            vec![None]
        };
        for red in reductions {
            for trial in 0..4 {
                let nd = 1 + rng.below(3);
                let mut shape = vec![1 + rng.below(3), 1 + rng.below(4)];
                for _ in 0..nd {
                    let side = 1 + rng.below(if nd == 1 { 3000 } else { 20 });
                    shape.push(if windowed { side + pad } else { side });
                }
                let n: usize = shape.iter().product();
                let soft = trial % 2 == 1;
                let with_mask = trial >= 2;
                let z: Vec<f64> = (0..n).map(|_| 3.0 * rng.normal()).collect();
                let y: Vec<f64> = (0..n)
                    .map(|_| {
                        if soft {
                            rng.uniform()
                        } else if rng.uniform() < 0.3 {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let m: Vec<f64> = (0..n)
                    .map(|_| if rng.uniform() < 0.8 { 1.0 } else { 0.0 })
                    .collect();
                let mut loss = base.clone();
                if let Some(r) = red {
                    loss = loss.set("reduction", r).unwrap();
                }
                let arrays: Vec<(&str, ArrayD<f64>)> = [("logits", z), ("target", y), ("mask", m)]
                    .into_iter()
                    .filter(|(k, _)| with_mask || *k != "mask")
                    .map(|(k, v)| (k, ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()))
                    .collect();
                let shapes: Vec<(&str, &[usize])> =
                    arrays.iter().map(|(k, _)| (*k, &shape[..])).collect();
                let views: Vec<(&str, _)> = arrays.iter().map(|(k, a)| (*k, a.view())).collect();
                let mut fused = loss
                    .compile_with::<f64>(&shapes, ExecutorKind::Fused)
                    .unwrap();
                let mut reference = loss
                    .compile_with::<f64>(&shapes, ExecutorKind::Reference)
                    .unwrap();
                assert_eq!(
                    fused.executor(),
                    if windowed {
                        ExecutorKind::Staged
                    } else {
                        ExecutorKind::Fused
                    }
                );
                let a = fused.value_and_grad(&views).unwrap();
                let b = reference.value_and_grad(&views).unwrap();
                let what = format!("{name} {red:?} {shape:?} soft={soft} mask={with_mask}");
                assert_close(
                    &what,
                    (a.value, a.grad("logits")),
                    (b.value, b.grad("logits")),
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20 * 4);
}

/// Problems of at least 2^21 elements write their gradient with non-temporal stores (whole cache
/// lines streamed, partial ones at the ends of each block stored normally): into a buffer that is
/// not 16-byte aligned, at 1 and 3 threads, the result must equal the reference interpreter's
/// and be bitwise the same at both thread counts.
#[test]
fn streamed_gradient_equals_reference() {
    let shape = [1usize, 1, (1 << 21) + 37];
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(99);
    let z = ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|_| 3.0 * rng.normal()).collect())
        .unwrap();
    let y = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n)
            .map(|_| if rng.uniform() < 0.3 { 1.0 } else { 0.0 })
            .collect(),
    )
    .unwrap();
    let shapes: [(&str, &[usize]); 2] = [("logits", &shape), ("target", &shape)];
    let views = [("logits", z.view()), ("target", y.view())];
    for name in ["bce", "focal", "dice", "combo"] {
        let loss = Library::standard().get(name).unwrap();
        let mut fused = loss
            .compile_with::<f64>(&shapes, ExecutorKind::Fused)
            .unwrap();
        let mut reference = loss
            .compile_with::<f64>(&shapes, ExecutorKind::Reference)
            .unwrap();
        let b = reference.value_and_grad(&views).unwrap();
        let gb = b.grad("logits").clone();
        let vb = b.value;
        let mut bufs = Vec::new();
        for threads in [1, 3] {
            // One element of offset: the gradient view starts 8 bytes into its allocation.
            let mut buf = vec![0.0f64; n + 1];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let v = pool.install(|| {
                let view =
                    losslang::ndarray::ArrayViewMutD::from_shape(IxDyn(&shape), &mut buf[1..])
                        .unwrap();
                fused
                    .value_and_grad_into(&views, &mut [("logits", view)])
                    .unwrap()
            });
            assert_close(
                &format!("{name} at {threads} threads"),
                (v, &buf[1..]),
                (vb, &gb),
            );
            bufs.push((v.to_bits(), buf));
        }
        assert!(bufs[0] == bufs[1], "{name}: 1 and 3 threads differ");
    }
}

/// A pass whose kernel would hold more than `MAX_KERNEL_NODES` big nodes is split by its outputs
/// into several passes (each recomputing what it needs): a loss with 40 different means of
/// `exp(k p)` needs three passes instead of two (its sums are split in two kernels), and still
/// equals the reference interpreter.
#[test]
fn oversized_kernels_are_split_by_outputs() {
    let terms: Vec<String> = (1..=40)
        .map(|k| format!("mean(exp(p * {}))", k as f64 / 100.0))
        .collect();
    let src = format!(
        "loss wide {{\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n    let p = sigmoid(logits) * target\n    return {}\n}}\n",
        terms.join(" + ")
    );
    let loss = losslang::Loss::from_source(&src).unwrap();
    let shape = [2usize, 3, 41, 29];
    let shapes: [(&str, &[usize]); 2] = [("logits", &shape), ("target", &shape)];
    let plan = loss
        .compile_with::<f64>(&shapes, ExecutorKind::Fused)
        .unwrap();
    // The forward sums are split under the cap; the gradient (one output that alone needs more)
    // is kept whole.
    let cap = losslang::internals::MAX_KERNEL_NODES;
    let info = plan.pass_info();
    assert!(
        info.iter()
            .all(|p| p.nodes <= cap || p.reductions + p.stores == 1),
        "{info:?}"
    );
    assert_eq!(info.len(), 3, "{info:?}");
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(5);
    let z = ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|_| 2.0 * rng.normal()).collect())
        .unwrap();
    let y = ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|_| rng.uniform()).collect()).unwrap();
    let views = [("logits", z.view()), ("target", y.view())];
    let mut fused = loss
        .compile_with::<f64>(&shapes, ExecutorKind::Fused)
        .unwrap();
    assert_eq!((fused.executor(), fused.passes()), (ExecutorKind::Fused, 3));
    let mut reference = loss
        .compile_with::<f64>(&shapes, ExecutorKind::Reference)
        .unwrap();
    let a = fused.value_and_grad(&views).unwrap();
    let b = reference.value_and_grad(&views).unwrap();
    assert!(
        (a.value - b.value).abs() <= 1e-12 * b.value.abs(),
        "{} vs {}",
        a.value,
        b.value
    );
    let (ga, gb) = (a.grad("logits"), b.grad("logits"));
    let gmax = gb.iter().fold(0.0f64, |s, v| s.max(v.abs()));
    let worst = ga
        .iter()
        .zip(gb.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst <= 1e-9 * gmax, "gradient differs by {worst:e}");
}

/// Native kernels are keyed by a pass's bytecode, not by a loss's name: a user's copy of a
/// standard loss, loaded at run time under another name with its own parameter value, runs them;
/// a pass the standard library does not have (a max reduction, an op no standard pass uses) runs
/// as bytecode — and `pass_info` says which, per pass.
#[test]
fn native_kernels_serve_any_loss_whose_pass_matches() {
    let shape: &[usize] = &[2, 1, 8, 40];
    let shapes = [("logits", shape), ("target", shape)];
    let kernels = |src: &str| -> Vec<Kernel> {
        let loss = losslang::Loss::from_source(src).unwrap();
        let plan = loss.compile::<f32>(&shapes).unwrap();
        plan.pass_info().iter().map(|p| p.kernel).collect()
    };
    let copy = r#"
        loss my_dice {
            input logits: [B, C, ..S] diff
            input target: [B, C, ..S]
            param smooth = 3
            let p = sigmoid(logits)
            let I = sum(p * target, over = [C, S])
            let D = (2 * I + smooth) / (sum(p, over = [C, S]) + sum(target, over = [C, S]) + smooth)
            return mean(1 - D)
        }"#;
    let other = r#"
        loss peak {
            input logits: [B, C, ..S] diff
            input target: [B, C, ..S]
            return max(cosh(logits) * target) + mean(logits * target)
        }"#;
    assert_eq!(kernels(copy), [Kernel::Native; 2], "a copy of dice");
    assert!(
        kernels(other).iter().all(|k| *k == Kernel::Bytecode),
        "{:?}",
        kernels(other)
    );
}

/// A differentiable input without every axis gets a gradient over its own axes from the fused
/// VM too: `d/dw Σ w² x = 2 w Σ_S x` for `w: [B, C]`, and `d/dv Σ v x = Σ_{B,S} x` for `v: [C]`.
/// (The VM once spread a small gradient root over the buffer by the loss's full strides:
/// `[12, 12, 12, 60]` for `[12, 60, 144, 264]`.)
#[test]
fn gradients_of_inputs_without_every_axis_are_per_element() {
    let src = "loss w {\n    input w: [B, C] diff\n    input v: [C] diff\n    input x: [B, C, ..S]\n    return sum(w * w * x) + sum(v * x)\n}\n";
    let loss = losslang::Loss::from_source(src).unwrap();
    let (b, c, s) = (2usize, 3usize, 5usize);
    let w = ArrayD::from_shape_vec(IxDyn(&[b, c]), (0..b * c).map(|i| 1.0 + i as f64).collect())
        .unwrap();
    let v = ArrayD::from_shape_vec(IxDyn(&[c]), vec![0.5, -1.0, 2.0]).unwrap();
    let x = ArrayD::from_shape_vec(
        IxDyn(&[b, c, s]),
        (0..b * c * s).map(|i| (i as f64 * 0.7).sin()).collect(),
    )
    .unwrap();
    for kind in [ExecutorKind::Fused, ExecutorKind::Reference] {
        let mut plan = loss
            .compile_with::<f64>(
                &[("w", &[b, c][..]), ("v", &[c][..]), ("x", &[b, c, s][..])],
                kind,
            )
            .unwrap();
        let out = plan
            .value_and_grad(&[("w", w.view()), ("v", v.view()), ("x", x.view())])
            .unwrap();
        for bi in 0..b {
            for ci in 0..c {
                let sx: f64 = (0..s).map(|k| x[[bi, ci, k]]).sum();
                let want = 2.0 * w[[bi, ci]] * sx;
                let got = out.grad("w")[[bi, ci]];
                assert!(
                    (got - want).abs() < 1e-12,
                    "{kind:?} w[{bi}, {ci}]: {got} vs {want}"
                );
            }
        }
        for ci in 0..c {
            let want: f64 = (0..b)
                .flat_map(|bi| (0..s).map(move |k| (bi, k)))
                .map(|(bi, k)| x[[bi, ci, k]])
                .sum();
            let got = out.grad("v")[[ci]];
            assert!(
                (got - want).abs() < 1e-12,
                "{kind:?} v[{ci}]: {got} vs {want}"
            );
        }
    }
}
