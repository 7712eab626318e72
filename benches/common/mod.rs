//! Shared by the benches: problem size, the triad kernel and the inputs.

use losslang::ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// The five losses the peers time too.
pub const LOSSES: [&str; 5] = ["bce", "focal", "dice", "tversky", "combo"];

/// log2 of the element count: `LOSSLANG_BENCH_LOGN`, default 20.
pub fn logn() -> u32 {
    std::env::var("LOSSLANG_BENCH_LOGN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// One STREAM-like triad over f32 buffers, `a = b + 3c` (3 arrays of traffic).
pub fn triad(a: &mut [f32], b: &[f32], c: &[f32]) {
    a.par_chunks_mut(1 << 16)
        .zip(b.par_chunks(1 << 16))
        .zip(c.par_chunks(1 << 16))
        .for_each(|((a, b), c)| {
            for i in 0..a.len() {
                a[i] = b[i] + 3.0 * c[i];
            }
        });
}

/// Shape `[4, 1, n/2048, 512]`, logits spread over [-2, 2), targets 30% ones.
pub fn inputs(n: usize) -> ([usize; 4], ArrayD<f32>, ArrayD<f32>) {
    let shape = [4usize, 1, n / 4 / 512, 512];
    let logits = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n)
            .map(|i| ((i * 2654435761) % 1000) as f32 / 250.0 - 2.0)
            .collect(),
    )
    .unwrap();
    let target = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n).map(|i| f32::from(((i * 40503) % 10) < 3)).collect(),
    )
    .unwrap();
    (shape, logits, target)
}
