//! Half-precision inputs (`TrainingLoss::value_and_grad_into_half`, feature `half`): f16 and
//! bf16 logits and targets give the f32 loss — the 2^20-element sums of a 512 × 512 × 4 input,
//! which overflow f16's 65504 when accumulated in f16, stay finite — and the gradient in the
//! input's type, the f32 gradient rounded once.
#![cfg(feature = "half")]

use losslang::half::{bf16, f16};
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{HalfFloat, TrainingLoss};

const SHAPE: [usize; 4] = [4, 1, 512, 512];

/// (value, gradient) in f32 and through half type `H`, for all-ones logits and target.
fn both<H: HalfFloat>(name: &str) -> (f32, ArrayD<f32>, f32, ArrayD<H>) {
    let tl = TrainingLoss::standard(name).unwrap();
    let ones = ArrayD::from_elem(IxDyn(&SHAPE), 1.0f32);
    let mut g = ArrayD::zeros(IxDyn(&SHAPE));
    let v = tl
        .value_and_grad_into::<f32>(
            &[("logits", ones.view()), ("target", ones.view())],
            g.view_mut(),
        )
        .unwrap();
    let h = ones.mapv(H::from_f32);
    let mut gh = ArrayD::from_elem(IxDyn(&SHAPE), H::from_f32(0.0));
    let vh = tl
        .value_and_grad_into_half(&[("logits", h.view()), ("target", h.view())], gh.view_mut())
        .unwrap();
    (v, g, vh, gh)
}

fn check<H: HalfFloat>(name: &str, ulp: f32, step: f32) {
    let (v, g, vh, gh) = both::<H>(name);
    assert!(
        vh.is_finite() && (vh - v).abs() <= 1e-3 * v.abs(),
        "{name}: {vh} vs f32 {v}"
    );
    let scale = g.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (a, b) in gh.iter().zip(&g) {
        let a = a.to_f32();
        assert!(a.is_finite(), "{name}: a non-finite gradient");
        assert!(
            (a - b).abs() <= ulp * b.abs() + step + 1e-7 * scale,
            "{name}: gradient {a} vs f32 {b}"
        );
    }
}

#[test]
fn all_ones_512x512x4_in_f16_and_bf16_give_the_f32_loss() {
    // What naive code meets: the sum 2^20 is past f16's 65504, and a running f16 sum stalls
    // at 2048 (2048 + 1 rounds back to 2048).
    assert!(f16::from_f32((1u32 << 20) as f32).to_f32().is_infinite());
    let naive = (0..1 << 20).fold(f16::from_f32(0.0), |s, _| f16::from_f32(s.to_f32() + 1.0));
    assert_eq!(naive.to_f32(), 2048.0);
    for name in ["dice", "bce", "tversky", "focal"] {
        // Relative half an ulp, or one step of f16's subnormals (2^-24).
        check::<f16>(name, 1.0 / 1024.0, 2f32.powi(-24));
        check::<bf16>(name, 1.0 / 128.0, 0.0);
    }
}
