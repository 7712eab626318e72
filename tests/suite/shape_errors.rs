//! Shape and layout errors name the input that is wrong and hint at the usual cause: binding
//! takes each axis from the majority of inputs (a tie goes to the input with more dimensions,
//! then to the differentiable one), so a 3-D `logits` beside 4-D targets is blamed, not the
//! targets; class indices passed where one-hot is expected, channels-last arrays and missing
//! axes are named as such. Plus: window ops on shapes without spatial axes, non-contiguous
//! views, unknown instruction-set names, order ops on values without the class axis.

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Error, Library, Loss};

fn shape_error(loss: &str, shapes: &[(&str, &[usize])]) -> (String, String) {
    match Library::standard()
        .get(loss)
        .unwrap()
        .compile::<f64>(shapes)
    {
        Err(Error::Shape { input, detail, .. }) => (input, detail),
        Err(e) => panic!("{loss}: expected a shape error, got {e}"),
        Ok(_) => panic!("{loss}: expected a shape error, it compiled"),
    }
}

#[test]
fn class_indices_where_one_hot_is_expected_are_named() {
    let (input, detail) = shape_error(
        "dice",
        &[("logits", &[2, 8, 16, 16]), ("target", &[2, 16, 16])],
    );
    assert_eq!(input, "target");
    assert!(
        detail.contains("class indices") && detail.contains("one-hot"),
        "{detail}"
    );
}

#[test]
fn the_input_missing_an_axis_is_blamed_not_the_others() {
    let (input, detail) = shape_error(
        "dice",
        &[("logits", &[3, 16, 16]), ("target", &[2, 3, 16, 16])],
    );
    assert_eq!(input, "logits", "{detail}");
    assert!(detail.contains("one dimension fewer"), "{detail}");
    // With a mask beside the target, the majority decides even against the diff input.
    let (input, _) = shape_error(
        "dice",
        &[
            ("logits", &[2, 3, 16, 15]),
            ("target", &[2, 3, 16, 16]),
            ("mask", &[2, 3, 16, 16]),
        ],
    );
    assert_eq!(input, "logits");
}

#[test]
fn channels_last_is_recognised() {
    let (input, detail) = shape_error(
        "dice",
        &[("logits", &[2, 3, 16, 16]), ("target", &[2, 16, 16, 3])],
    );
    assert_eq!(input, "target");
    assert!(detail.contains("channels-last"), "{detail}");
}

#[test]
fn window_ops_need_spatial_axes() {
    for loss in ["ssim", "hausdorff_dt", "boundary"] {
        let (input, detail) = shape_error(loss, &[("logits", &[2, 3]), ("target", &[2, 3])]);
        assert!(!input.is_empty(), "{loss}");
        assert!(detail.contains("spatial axes"), "{loss}: {detail}");
    }
}

/// `bce` compiled for logits and target of shape [2, 1, 4, 4].
fn bce_plan<T: losslang::Real>() -> losslang::Plan<T> {
    let shape = [2usize, 1, 4, 4];
    Library::standard()
        .get("bce")
        .unwrap()
        .compile::<T>(&[("logits", &shape[..]), ("target", &shape[..])])
        .unwrap()
}

#[test]
fn a_non_contiguous_view_is_told_what_differs() {
    let mut plan = bce_plan::<f64>();
    let base = ArrayD::<f64>::zeros(IxDyn(&[2, 1, 4, 4]));
    let mut t = base.clone();
    t.swap_axes(2, 3);
    match plan.value_and_grad(&[("logits", base.view()), ("target", t.view())]) {
        Err(Error::Shape {
            input,
            detail,
            expected,
            ..
        }) => {
            assert_eq!(input, "target");
            assert!(detail.contains("strides are [16, 16, 1, 4]"), "{detail}");
            assert!(expected.contains("[16, 16, 4, 1]"), "{expected}");
        }
        other => panic!("expected a layout error, got {:?}", other.map(|o| o.value)),
    }
}

#[test]
fn unknown_instruction_sets_are_errors() {
    assert!(matches!(
        "sse".parse::<losslang::Isa>(),
        Err(Error::InstructionSet { name }) if name == "sse"
    ));
    let mut plan = bce_plan::<f32>();
    let isa = "baseline".parse().unwrap();
    assert_eq!(plan.cap_instruction_set(isa), losslang::Isa::Baseline);
    assert_eq!(plan.instruction_set(), losslang::Isa::Baseline);
}

#[test]
fn order_ops_on_values_without_the_class_axis_run() {
    let src = r#"
loss ohem {
    input logits: [B, C, ..S] diff
    input target: [B, C, ..S]
    let e = sum(softplus(logits) - target * logits, over = [C])
    let hard = top_k(e, 1, 25, over = [S])
    let w = lovasz_weights(e, hard, over = [S])
    return sum(hard * e + w * e) / sum(hard)
}"#;
    let loss = Loss::from_source(src).unwrap();
    let shape = [2usize, 3, 5, 4];
    let n: usize = shape.iter().product();
    let mut plan = loss
        .compile::<f64>(&[("logits", &shape[..]), ("target", &shape[..])])
        .unwrap();
    let z = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n).map(|i| ((i * 37) % 11) as f64 / 5.0 - 1.0).collect(),
    )
    .unwrap();
    let y = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n).map(|i| (i % 3 == 0) as u8 as f64).collect(),
    )
    .unwrap();
    let out = plan
        .value_and_grad(&[("logits", z.view()), ("target", y.view())])
        .unwrap();
    assert!(out.value.is_finite());
    let report = loss.gradcheck(&Default::default()).unwrap();
    assert!(report.passed, "{report:?}");
}
