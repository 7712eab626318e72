//! `cargo bench`: times value_and_grad of five standard losses beside a STREAM-like triad probe
//! measured in the same run, and reports each loss as a fraction of the probe's bandwidth.
//! Size: 2^LOSSLANG_BENCH_LOGN elements (default 20), f32, all cores of the rayon pool.

use std::time::Instant;

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Library;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// a[i] = b[i] + s*c[i] over f32 arrays: 3 arrays of traffic; returns GB/s.
fn triad(n: usize, iters: usize) -> f64 {
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let mut t = Vec::new();
    for _ in 0..iters {
        let s = Instant::now();
        use rayon::prelude::*;
        a.par_chunks_mut(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .zip(c.par_chunks(1 << 16))
            .for_each(|((a, b), c)| {
                for i in 0..a.len() {
                    a[i] = b[i] + 3.0 * c[i];
                }
            });
        t.push(s.elapsed().as_secs_f64());
        std::hint::black_box(&a);
    }
    (3 * n * 4) as f64 / median(t) / 1e9
}

fn main() {
    let logn: u32 = std::env::var("LOSSLANG_BENCH_LOGN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let n = 1usize << logn;
    let shape = [4usize, 1, n / 4 / 512, 512];
    let iters = 10;
    let gbs = triad(n, iters);
    println!("triad probe: {gbs:.1} GB/s at N = 2^{logn}");
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
    for name in ["bce", "focal", "dice", "tversky", "combo"] {
        let loss = Library::standard().get(name).unwrap();
        let mut plan = loss
            .compile::<f32>(&[("logits", &shape[..]), ("target", &shape[..])])
            .unwrap();
        let inputs = [("logits", logits.view()), ("target", target.view())];
        let mut grad = ArrayD::<f32>::zeros(IxDyn(&shape));
        plan.value_and_grad_into(&inputs, &mut [("logits", grad.view_mut())])
            .unwrap();
        let mut t = Vec::new();
        for _ in 0..iters {
            let s = Instant::now();
            plan.value_and_grad_into(&inputs, &mut [("logits", grad.view_mut())])
                .unwrap();
            t.push(s.elapsed().as_secs_f64());
        }
        let ms = median(t) * 1e3;
        // Minimum traffic: read logits and target, write the gradient.
        let eff = (3 * n * 4) as f64 / (ms * 1e-3) / 1e9;
        println!(
            "{name:<8} {ms:9.3} ms  {eff:6.1} GB/s effective  = {:.3} of triad",
            eff / gbs
        );
    }
}
