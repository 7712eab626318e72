//! A plan called with other shapes than it was compiled for (the smaller last batch of an
//! epoch): it runs a plan for those shapes, compiled on the first such call and kept, with the
//! same bits as a plan compiled for them directly.

use losslang::api::MAX_OTHER_SHAPES;
use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Error, Library, Loss};

fn data(rng: &mut Rng, shape: &[usize], labels: bool) -> ArrayD<f64> {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            if labels {
                if rng.uniform() < 0.4 {
                    1.0
                } else {
                    0.0
                }
            } else {
                4.0 * rng.uniform() - 2.0
            }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// Value and gradient bits of a plan compiled for exactly these shapes.
fn fresh(loss: &Loss, z: &ArrayD<f64>, y: &ArrayD<f64>) -> Vec<u64> {
    let mut p = loss
        .compile::<f64>(&[("logits", z.shape()), ("target", y.shape())])
        .unwrap();
    let out = p
        .value_and_grad(&[("logits", z.view()), ("target", y.view())])
        .unwrap();
    std::iter::once(out.value.to_bits())
        .chain(out.grad("logits").iter().map(|g| g.to_bits()))
        .collect()
}

#[test]
fn a_smaller_last_batch_just_works() {
    let loss = Library::standard()
        .get("dice")
        .unwrap()
        .set("reduction", "image")
        .unwrap();
    let mut rng = Rng::new(11);
    let full = [4usize, 1, 8, 8];
    let mut plan = loss
        .compile::<f64>(&[("logits", &full[..]), ("target", &full[..])])
        .unwrap();
    // Batches 4, 3, 4, then more sizes than the plan keeps, then 3 again (recompiled).
    let batches = [4usize, 3, 4, 1, 2, 5, 6, 7, 3, 4];
    assert!(batches.len() > MAX_OTHER_SHAPES + 2);
    for b in batches {
        let shape = [b, 1, 8, 8];
        let z = data(&mut rng, &shape, false);
        let y = data(&mut rng, &shape, true);
        let want = fresh(&loss, &z, &y);
        let out = plan
            .value_and_grad(&[("logits", z.view()), ("target", y.view())])
            .unwrap();
        assert_eq!(out.grad("logits").shape(), &shape[..]);
        let got: Vec<u64> = std::iter::once(out.value.to_bits())
            .chain(out.grad("logits").iter().map(|g| g.to_bits()))
            .collect();
        assert_eq!(got, want, "batch {b}");
        let v = plan
            .value(&[("logits", z.view()), ("target", y.view())])
            .unwrap();
        assert!((v - f64::from_bits(want[0])).abs() <= 1e-12, "batch {b}");
        // Into the caller's buffer, too.
        let mut g = ArrayD::<f64>::zeros(IxDyn(&shape));
        let v = plan
            .value_and_grad_into(
                &[("logits", z.view()), ("target", y.view())],
                &mut [("logits", g.view_mut())],
            )
            .unwrap();
        assert_eq!(v.to_bits(), want[0], "batch {b}");
        assert!(g.iter().map(|x| x.to_bits()).eq(want[1..].iter().copied()));
    }
    // The plan still describes its first shapes, and keeps the last MAX_OTHER_SHAPES others
    // (least recently used first): 7 and 6 went, 3 came back.
    assert_eq!(plan.binding().shapes[0].as_deref(), Some(&full[..]));
    let kept: Vec<usize> = plan
        .kept_shapes()
        .map(|s| s[0].as_ref().unwrap()[0])
        .collect();
    assert_eq!(kept, [2, 5, 6, 7, 3][5 - MAX_OTHER_SHAPES..]);
}

/// A shape seen before runs the plan kept for it, in least-recently-used order.
#[test]
fn kept_plans_are_reused_most_recent_last() {
    let loss = Library::standard().get("bce").unwrap();
    let s = |b: usize| [b, 1, 4, 4];
    let mut plan = loss
        .compile::<f64>(&[("logits", &s(2)[..]), ("target", &s(2)[..])])
        .unwrap();
    let mut run = |b: usize| {
        let z = ArrayD::<f64>::zeros(IxDyn(&s(b)));
        plan.value_and_grad(&[("logits", z.view()), ("target", z.view())])
            .unwrap()
            .value
    };
    for b in [3, 1, 3, 2, 1] {
        assert!((run(b) - std::f64::consts::LN_2).abs() < 1e-15);
    }
    let kept: Vec<usize> = plan
        .kept_shapes()
        .map(|s| s[1].as_ref().unwrap()[0])
        .collect();
    assert_eq!(kept, [3, 1], "batch 2 is the plan's own; 1 was used last");
}

#[test]
fn shapes_that_disagree_are_still_a_shape_error() {
    let loss = Library::standard().get("bce").unwrap();
    let s = [2usize, 1, 4, 4];
    let mut plan = loss
        .compile::<f64>(&[("logits", &s[..]), ("target", &s[..])])
        .unwrap();
    let z = ArrayD::<f64>::zeros(IxDyn(&[3, 1, 4, 4]));
    let y = ArrayD::<f64>::zeros(IxDyn(&[2, 1, 4, 4]));
    match plan.value_and_grad(&[("logits", z.view()), ("target", y.view())]) {
        Err(Error::Shape { .. }) => {}
        other => panic!("expected a shape error, got {:?}", other.map(|o| o.value)),
    }
    // A missing input is still reported as missing, not compiled for.
    match plan.value_and_grad(&[("logits", y.view())]) {
        Err(Error::MissingInput { name, .. }) => assert_eq!(name, "target"),
        other => panic!("expected a missing input, got {:?}", other.map(|o| o.value)),
    }
}
