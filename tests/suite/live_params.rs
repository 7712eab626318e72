//! Live parameters (`Loss::live`, `Plan::set_param`): a loss weight changed between calls
//! without compiling gives what a plan compiled with that value gives; parameters whose value
//! shapes the graph are refused with a typed error, as are values outside a range.

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Error, ExecutorKind, Library, Loss, Plan, TrainingLoss};

fn batch(shape: &[usize], seed: u64) -> Vec<(&'static str, ArrayD<f64>)> {
    crate::common::logits_target_mask(shape, seed)
}

fn compile(loss: &Loss, inputs: &[(&'static str, ArrayD<f64>)]) -> Plan<f64> {
    let shapes: Vec<(&str, &[usize])> = inputs.iter().map(|(k, a)| (*k, a.shape())).collect();
    loss.compile::<f64>(&shapes).unwrap()
}

/// (value, gradient of `logits`).
fn run(plan: &mut Plan<f64>, inputs: &[(&'static str, ArrayD<f64>)]) -> (f64, ArrayD<f64>) {
    let views: Vec<_> = inputs.iter().map(|(k, a)| (*k, a.view())).collect();
    let out = plan.value_and_grad(&views).unwrap();
    (out.value, out.grad("logits").clone())
}

fn assert_close(what: &str, a: (f64, ArrayD<f64>), b: (f64, ArrayD<f64>)) {
    let scale = b.1.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-300);
    assert!(
        (a.0 - b.0).abs() <= 1e-12 * b.0.abs().max(1e-12),
        "{what}: value {} vs {}",
        a.0,
        b.0
    );
    let worst =
        a.1.iter()
            .zip(&b.1)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-12 * scale,
        "{what}: gradient off by {worst:e} (scale {scale:e})"
    );
}

#[test]
fn a_live_weight_gives_the_plan_compiled_with_its_value() {
    let lib = Library::standard();
    let inputs = batch(&[3, 2, 9, 11], 7);
    let live = lib
        .get("dice_ce")
        .unwrap()
        .live(&["lambda_dice", "lambda_ce"])
        .unwrap();
    let mut plan = compile(&live, &inputs);
    assert_eq!(plan.executor(), ExecutorKind::Fused);
    // The compiled-in values are the defaults until set.
    let defaults = compile(&lib.get("dice_ce").unwrap(), &inputs);
    assert_close(
        "defaults",
        run(&mut plan, &inputs),
        run(&mut { defaults }, &inputs),
    );
    for (ld, lc) in [(0.0, 1.0), (0.25, 0.5), (3.0, 0.0), (1.0, 1e-3)] {
        plan.set_param("lambda_dice", ld).unwrap();
        plan.set_param("lambda_ce", lc).unwrap();
        let fixed = lib
            .get("dice_ce")
            .unwrap()
            .set("lambda_dice", ld)
            .unwrap()
            .set("lambda_ce", lc)
            .unwrap();
        let want = run(&mut compile(&fixed, &inputs), &inputs);
        assert_close(
            &format!("lambda_dice={ld} lambda_ce={lc}"),
            run(&mut plan, &inputs),
            want,
        );
    }
    // By hand: with lambda_ce = 0 the loss is 3 × dice, with lambda_dice = 0 it is bce.
    plan.set_param("lambda_dice", 3.0).unwrap();
    plan.set_param("lambda_ce", 0.0).unwrap();
    let (v, g) = run(&mut plan, &inputs);
    let (dv, dg) = run(&mut compile(&lib.get("dice").unwrap(), &inputs), &inputs);
    assert_close("3 dice", (v, g), (3.0 * dv, dg.mapv(|x| 3.0 * x)));
    plan.set_param("lambda_dice", 0.0).unwrap();
    plan.set_param("lambda_ce", 1.0).unwrap();
    let want = run(&mut compile(&lib.get("bce").unwrap(), &inputs), &inputs);
    assert_close("bce", run(&mut plan, &inputs), want);
    let now: Vec<(&str, f64)> = plan.live_params().collect();
    assert_eq!(now, [("lambda_dice", 0.0), ("lambda_ce", 1.0)]);
}

#[test]
fn other_shapes_the_value_only_plan_and_split_phase_follow_a_live_weight() {
    let lib = Library::standard();
    let full = batch(&[4, 1, 8, 8], 11);
    let small: Vec<_> = full
        .iter()
        .map(|(k, a)| {
            (
                *k,
                a.slice_axis(losslang::ndarray::Axis(0), (0..3).into())
                    .to_owned(),
            )
        })
        .collect();
    let live = lib
        .get("dice_focal")
        .unwrap()
        .live(&["lambda_focal"])
        .unwrap();
    let mut plan = compile(&live, &full);
    // A smaller last batch before and after the change: its kept plan follows.
    run(&mut plan, &small);
    plan.set_param("lambda_focal", 0.3).unwrap();
    let fixed = lib
        .get("dice_focal")
        .unwrap()
        .set("lambda_focal", 0.3)
        .unwrap();
    for inputs in [&small, &full] {
        let want = run(&mut compile(&fixed, inputs), inputs);
        assert_close("dice_focal", run(&mut plan, inputs), want);
    }
    let views: Vec<_> = full.iter().map(|(k, a)| (*k, a.view())).collect();
    let v = plan.value(&views).unwrap();
    let want = compile(&fixed, &full).value(&views).unwrap();
    assert!(
        (v - want).abs() <= 1e-12 * want.abs(),
        "value-only {v} vs {want}"
    );
    // Split phase: the statistics of the whole batch, finished.
    let stats = plan.statistics(&views, 0, 4).unwrap();
    let fin = plan.finish(&stats).unwrap();
    assert!(
        (fin.value - want).abs() <= 1e-12 * want.abs(),
        "split {} vs {want}",
        fin.value
    );
    plan.set_param("lambda_focal", 2.0).unwrap();
    let stats = plan.statistics(&views, 0, 4).unwrap();
    let fin = plan.finish(&stats).unwrap();
    let fixed = lib
        .get("dice_focal")
        .unwrap()
        .set("lambda_focal", 2.0)
        .unwrap();
    let want = compile(&fixed, &full).value(&views).unwrap();
    assert!(
        (fin.value - want).abs() <= 1e-12 * want.abs(),
        "split after set {} vs {want}",
        fin.value
    );
}

#[test]
fn a_training_loss_sets_a_live_weight_in_each_dtype_and_later_plans() {
    let inputs = batch(&[2, 1, 6, 7], 3);
    let tl = TrainingLoss::standard("dice_ce")
        .unwrap()
        .live(&["lambda_ce"])
        .unwrap();
    let call = |tl: &TrainingLoss| {
        let views: Vec<_> = inputs.iter().map(|(k, a)| (*k, a.view())).collect();
        let mut g = ArrayD::zeros(IxDyn(&[2, 1, 6, 7]));
        let v = tl.value_and_grad_into::<f64>(&views, g.view_mut()).unwrap();
        let v32: Vec<(&str, ArrayD<f32>)> = inputs
            .iter()
            .map(|(k, a)| (*k, a.mapv(|x| x as f32)))
            .collect();
        let views: Vec<_> = v32.iter().map(|(k, a)| (*k, a.view())).collect();
        let mut g32 = ArrayD::zeros(IxDyn(&[2, 1, 6, 7]));
        let w = tl
            .value_and_grad_into::<f32>(&views, g32.view_mut())
            .unwrap();
        (v, w, g)
    };
    call(&tl); // both dtypes compiled at the default
    let clone = tl.clone();
    clone.set_param("lambda_ce", 0.0).unwrap();
    let (v, w, g) = call(&tl);
    let dice = TrainingLoss::standard("dice").unwrap();
    let (dv, dw, dg) = call(&dice);
    assert_close("f64 through a clone", (v, g), (dv, dg));
    assert!((w - dw).abs() <= 1e-6 * dw.abs(), "f32 {w} vs {dw}");
    // A loss whose plans are compiled after the change gets the value too.
    let fresh = TrainingLoss::standard("dice_ce")
        .unwrap()
        .live(&["lambda_ce"])
        .unwrap();
    fresh.set_param("lambda_ce", 0.0).unwrap();
    let (v, _, _) = call(&fresh);
    assert!(
        (v - dv).abs() <= 1e-12 * dv.abs(),
        "set before compiling: {v} vs {dv}"
    );
}

fn not_live(r: Result<Loss, Error>, name: &str, reason: &str) {
    match r {
        Err(Error::NotLive {
            name: n,
            reason: why,
            ..
        }) => {
            assert_eq!(n, name);
            assert!(why.contains(reason), "reason `{why}` lacks `{reason}`");
        }
        Err(e) => panic!("{name}: expected NotLive, got {e}"),
        Ok(_) => panic!("{name}: expected NotLive, got a loss"),
    }
}

#[test]
fn parameters_that_shape_the_graph_are_refused() {
    let lib = Library::standard();
    not_live(
        lib.get("dice").unwrap().live(&["reduction"]),
        "reduction",
        "an option",
    );
    not_live(
        lib.get("ssim").unwrap().live(&["window"]),
        "window",
        "`int`",
    );
    not_live(
        lib.get("ssim").unwrap().live(&["sigma"]),
        "sigma",
        "gaussian_filter",
    );
    let src = |extra: &str, body: &str| {
        format!(
            "use focal\nloss outer {{\n    input logits: [B, C, ..S] diff\n    input target: [B, C, ..S]\n    param g in [0, 100] = 2\n{extra}    return {body}\n}}\n"
        )
    };
    let expr = Loss::from_source(&src("", "focal(logits, target, gamma = 2 * g)")).unwrap();
    not_live(expr.live(&["g"]), "g", "compile-time number");
    let dependent =
        Loss::from_source(&src("    param h = g + 1\n", "h * focal(logits, target)")).unwrap();
    not_live(dependent.live(&["g"]), "g", "compile-time number");
    match lib.get("dice").unwrap().live(&["lambda"]) {
        Err(Error::UnknownParam { name, .. }) => assert_eq!(name, "lambda"),
        other => panic!("expected UnknownParam, got {:?}", other.err()),
    }
    // Passed on as it is, it keeps the called loss's range: focal's gamma is in [0, 50].
    let passed = Loss::from_source(&src("", "focal(logits, target, gamma = g)")).unwrap();
    let inputs = &batch(&[2, 1, 5, 5], 1)[..2];
    let mut plan = compile(&passed.live(&["g"]).unwrap(), inputs);
    plan.set_param("g", 49.0).unwrap();
    match plan.set_param("g", 60.0) {
        Err(Error::ParamValue { expected, .. }) => {
            assert!(expected.contains("`gamma` of `focal`"), "{expected}")
        }
        other => panic!("expected ParamValue, got {other:?}"),
    }
    let mut p = compile(&lib.get("dice_ce").unwrap(), &batch(&[1, 1, 4, 4], 2));
    match p.set_param("lambda_ce", 0.5) {
        Err(Error::NotLive { reason, .. }) => assert!(reason.contains("Loss::live"), "{reason}"),
        other => panic!("expected NotLive, got {other:?}"),
    }
    let mut p = compile(
        &lib.get("dice_ce").unwrap().live(&["lambda_ce"]).unwrap(),
        &batch(&[1, 1, 4, 4], 2),
    );
    for bad in [-1.0, 2e6, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(p.set_param("lambda_ce", bad), Err(Error::ParamValue { .. })),
            "{bad} accepted"
        );
    }
}
