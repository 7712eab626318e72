//! Embedding losslang: a standard loss with parameters, a plan compiled once and reused, the
//! allocation-free variant writing into a caller's buffer, and a user-defined loss with its
//! gradient check. Run with `cargo run --release --example embed`.

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Library, Loss};

fn main() -> Result<(), losslang::Error> {
    let lib = Library::standard();
    let loss = lib
        .get("dice")?
        .set("smooth", 1.0)?
        .set("reduction", "image")?;
    let shape = [2usize, 3, 64, 64];
    let mut plan = loss.compile::<f32>(&[("logits", &shape[..]), ("target", &shape[..])])?;

    let n: usize = shape.iter().product();
    let logits = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n)
            .map(|i| ((i * 7919) % 200) as f32 / 50.0 - 2.0)
            .collect(),
    )
    .unwrap();
    let target = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n).map(|i| ((i / 64) % 2) as f32).collect(),
    )
    .unwrap();

    let out = plan.value_and_grad(&[("logits", logits.view()), ("target", target.view())])?;
    println!(
        "dice (image reduction) = {:.6}, grad shape {:?}",
        out.value,
        out.grad("logits").shape()
    );

    // Reuse the plan and write the gradient into our own buffer.
    let mut grad = ArrayD::<f32>::zeros(IxDyn(&shape));
    let v = plan.value_and_grad_into(
        &[("logits", logits.view()), ("target", target.view())],
        &mut [("logits", grad.view_mut())],
    )?;
    println!(
        "again: {v:.6}, |grad|_1 = {:.6}",
        grad.iter().map(|g| g.abs()).sum::<f32>()
    );

    // A loss of our own, calling two standard ones.
    let user = Loss::from_source(
        r#"
        use dice, focal
        loss dice_plus_focal {
            input logits: [B, C, ..S] diff
            input target: [B, C, ..S]
            param w = 0.5
            return dice(logits, target, reduction = image) + w * focal(logits, target, gamma = 2)
        }"#,
    )?;
    let report = user.gradcheck(&Default::default())?;
    println!(
        "{}: gradcheck {} (worst relative error {:.1e})",
        report.loss,
        if report.passed { "passed" } else { "FAILED" },
        report.worst_rel_err
    );
    Ok(())
}
