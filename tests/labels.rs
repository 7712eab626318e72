//! Class-index targets (issue 11, point 2): a `[B, ..S]` integer target given where the softmax
//! losses declare `target: [B, C, ..S] labels(C, ignore_index)` equals the one-hot computation
//! with the ignored pixels masked; labels outside the classes are errors naming the input, the
//! value and its index.

use losslang::api::gradcheck::Rng;
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
