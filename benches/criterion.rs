//! Criterion benches: value_and_grad_into of five standard losses (f32, N = 2^20 by default,
//! 2^LOSSLANG_BENCH_LOGN otherwise) beside a STREAM-like triad probe in the same run. Each loss
//! reports throughput as the bytes it must move (logits + target read, gradient written), so its
//! GB/s compares directly with the triad's; `benches/losses.rs` prints the ratios.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Library;

fn bench(c: &mut Criterion) {
    let n = 1usize << common::logn();
    let mut group = c.benchmark_group(format!("2^{}", common::logn()));
    group.sample_size(20);
    group.throughput(Throughput::Bytes((3 * n * 4) as u64));
    let b = vec![1.0f32; n];
    let cc = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    group.bench_function("triad", |bch| bch.iter(|| common::triad(&mut a, &b, &cc)));
    let (shape, logits, target) = common::inputs(n);
    let mut grad = ArrayD::<f32>::zeros(IxDyn(&shape));
    for name in common::LOSSES {
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
