//! Criterion benches: value_and_grad_into of five standard losses (f32, N = 2^20 by default,
//! 2^LOSSLANG_BENCH_LOGN otherwise) beside a STREAM-like triad probe in the same run. Each loss
//! reports throughput as the bytes it must move (logits + target read, gradient written), so its
//! GB/s compares directly with the triad's; `benches/losses.rs` prints the ratios.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Library;
use rayon::prelude::*;

fn logn() -> u32 {
    std::env::var("LOSSLANG_BENCH_LOGN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn bench(c: &mut Criterion) {
    let n = 1usize << logn();
    let mut group = c.benchmark_group(format!("2^{}", logn()));
    group.sample_size(20);
    group.throughput(Throughput::Bytes((3 * n * 4) as u64));
    let b = vec![1.0f32; n];
    let cc = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    group.bench_function("triad", |bch| {
        bch.iter(|| {
            a.par_chunks_mut(1 << 16)
                .zip(b.par_chunks(1 << 16))
                .zip(cc.par_chunks(1 << 16))
                .for_each(|((a, b), c)| {
                    for i in 0..a.len() {
                        a[i] = b[i] + 3.0 * c[i];
                    }
                });
        })
    });
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
    let mut grad = ArrayD::<f32>::zeros(IxDyn(&shape));
    for name in ["bce", "focal", "dice", "tversky", "combo"] {
        let loss = Library::standard().get(name).unwrap();
        let mut plan = loss
            .compile::<f32>(&[("logits", &shape[..]), ("target", &shape[..])])
            .unwrap();
        let inputs = [("logits", logits.view()), ("target", target.view())];
        group.bench_function(name, |bch| {
            bch.iter(|| {
                plan.value_and_grad_into(&inputs, &mut [("logits", grad.view_mut())])
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
