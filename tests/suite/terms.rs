//! Named terms (`term(name, x)`): each term's value and weighted share `x · ∂loss/∂x` come out
//! beside the total, for the standard composites and a user's loss.

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Error, Library, Loss, Plan, TrainingLoss};

fn batch(shape: &[usize], seed: u64) -> Vec<(&'static str, ArrayD<f64>)> {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed);
    let z = (0..n).map(|_| 1.5 * rng.normal()).collect();
    let y = (0..n).map(|_| f64::from(rng.uniform() < 0.4)).collect();
    vec![
        ("logits", ArrayD::from_shape_vec(IxDyn(shape), z).unwrap()),
        ("target", ArrayD::from_shape_vec(IxDyn(shape), y).unwrap()),
    ]
}

fn plan(loss: &Loss, inputs: &[(&'static str, ArrayD<f64>)]) -> Plan<f64> {
    let shapes: Vec<(&str, &[usize])> = inputs.iter().map(|(k, a)| (*k, a.shape())).collect();
    loss.compile::<f64>(&shapes).unwrap()
}

/// The value and the terms (name, value, weighted) of one call.
fn terms(loss: &Loss, inputs: &[(&'static str, ArrayD<f64>)]) -> (f64, Vec<(String, f64, f64)>) {
    let mut p = plan(loss, inputs);
    let views: Vec<_> = inputs.iter().map(|(k, a)| (*k, a.view())).collect();
    let out = p.value_and_grad(&views).unwrap();
    let t = out
        .terms()
        .map(|t| (t.name.to_string(), t.value, t.weighted))
        .collect();
    (out.value, t)
}

fn value(name: &str, inputs: &[(&'static str, ArrayD<f64>)]) -> f64 {
    terms(&Library::standard().get(name).unwrap(), inputs).0
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
}

#[test]
fn a_composite_reports_each_part_and_its_weighted_share() {
    let inputs = batch(&[2, 2, 7, 9], 5);
    let loss = Library::standard()
        .get("dice_ce")
        .unwrap()
        .set("lambda_dice", 0.3)
        .unwrap()
        .set("lambda_ce", 2.5)
        .unwrap();
    let (total, t) = terms(&loss, &inputs);
    let names: Vec<&str> = t.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["dice", "ce"]);
    let (dice, bce) = (value("dice", &inputs), value("bce", &inputs));
    assert!(
        close(t[0].1, dice) && close(t[1].1, bce),
        "{t:?} vs dice {dice}, bce {bce}"
    );
    // The weighted shares of a weighted sum are w · x, and they add up to the total.
    assert!(
        close(t[0].2, 0.3 * dice) && close(t[1].2, 2.5 * bce),
        "{t:?}"
    );
    assert!(close(t[0].2 + t[1].2, total), "{t:?} vs {total}");
}

#[test]
fn a_staged_composite_reports_its_three_parts() {
    let inputs = batch(&[2, 1, 16, 16], 9);
    let (total, t) = terms(&Library::standard().get("unet3p_hybrid").unwrap(), &inputs);
    for (k, name) in ["focal", "ssim", "jaccard"].into_iter().enumerate() {
        assert_eq!(t[k].0, name);
        let want = value(name, &inputs);
        assert!(
            close(t[k].1, want) && close(t[k].2, want),
            "{name}: {:?} vs {want}",
            t[k]
        );
    }
    assert!(close(t.iter().map(|t| t.2).sum(), total));
}

#[test]
fn a_users_terms_by_hand() {
    let src = "use dice, bce\nloss mine {\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n    param a = 0.7\n    return a * term(overlap, dice(logits, target)) + term(squared, bce(logits, target)) ^ 2\n}\n";
    let inputs = batch(&[3, 1, 5, 6], 2);
    let (total, t) = terms(&Loss::from_source(src).unwrap(), &inputs);
    let (d, b) = (value("dice", &inputs), value("bce", &inputs));
    assert_eq!(t[0].0, "overlap");
    assert!(close(t[0].1, d) && close(t[0].2, 0.7 * d), "{t:?}");
    // x · ∂(x²)/∂x = 2 x²: the share of a nonlinear use is its first-order one.
    assert_eq!(t[1].0, "squared");
    assert!(close(t[1].1, b) && close(t[1].2, 2.0 * b * b), "{t:?}");
    assert!(close(total, 0.7 * d + b * b));
    // A called loss's terms are its own: a loss calling dice_ce reports none.
    let caller = "use dice_ce\nloss outer {\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n    return 2 * dice_ce(logits, target)\n}\n";
    let (_, t) = terms(&Loss::from_source(caller).unwrap(), &inputs);
    assert!(t.is_empty(), "{t:?}");
}

#[test]
fn a_training_loss_logs_the_terms_of_its_last_step() {
    let inputs = batch(&[2, 1, 6, 6], 4);
    let tl = TrainingLoss::standard("dice_focal").unwrap();
    assert!(tl.terms().is_empty());
    let views: Vec<_> = inputs.iter().map(|(k, a)| (*k, a.view())).collect();
    let mut g = ArrayD::zeros(IxDyn(&[2, 1, 6, 6]));
    let v = tl.value_and_grad_into::<f64>(&views, g.view_mut()).unwrap();
    let t = tl.terms();
    assert_eq!((t[0].name.as_str(), t[1].name.as_str()), ("dice", "focal"));
    assert!(close(t[0].value, value("dice", &inputs)));
    assert!(close(t[1].value, value("focal", &inputs)));
    assert!(close(t[0].weighted + t[1].weighted, v));
}

fn compile_error(src: &str, code: &str) {
    match Loss::from_source(src) {
        Err(Error::Compile { diagnostics, .. }) => {
            assert!(
                diagnostics.iter().any(|d| d.code == code),
                "{diagnostics:?}"
            )
        }
        Err(e) => panic!("expected {code}, got {e}"),
        Ok(_) => panic!("expected {code}, got a loss"),
    }
}

#[test]
fn bad_terms_are_compile_errors() {
    let wrap = |body: &str| {
        format!("use dice, bce\nloss bad {{\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n    return {body}\n}}\n")
    };
    compile_error(
        &wrap("term(a, dice(logits, target)) + term(a, bce(logits, target))"),
        "E0011",
    );
    compile_error(&wrap("mean(term(a, logits))"), "E0016");
    compile_error(&wrap("term(2, dice(logits, target))"), "E0012");
    compile_error(&wrap("term(dice(logits, target))"), "E0004");
}
