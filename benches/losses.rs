//! `cargo bench`: times value_and_grad of five standard losses beside a STREAM-like triad probe
//! measured in the same run, and reports each loss as a fraction of the probe's bandwidth.
//! Size: 2^LOSSLANG_BENCH_LOGN elements (default 20), f32, all cores of the rayon pool.

mod common;

use std::time::Instant;

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Library;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// GB/s of the triad (3 arrays of traffic), median of `iters` runs.
fn triad(n: usize, iters: usize) -> f64 {
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let mut t = Vec::new();
    for _ in 0..iters {
        let s = Instant::now();
        common::triad(&mut a, &b, &c);
        t.push(s.elapsed().as_secs_f64());
        std::hint::black_box(&a);
    }
    (3 * n * 4) as f64 / median(t) / 1e9
}

fn main() {
    let logn = common::logn();
    let n = 1usize << logn;
    let iters = 10;
    let gbs = triad(n, iters);
    println!("triad probe: {gbs:.1} GB/s at N = 2^{logn}");
    let (shape, logits, target) = common::inputs(n);
    for name in common::LOSSES {
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
