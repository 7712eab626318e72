//! One training step's loss call in burn (Flex backend under autodiff, f32): the loss of the
//! model's logits and its backward down to the logits, through the adapter and as the same loss
//! written in burn ops, same run. `cargo bench -p losslang-burn` (shape [8, 1, 256, 256] dice and
//! bce, [8, 4, 128, 128] softmax_ce; BENCHMARKS.md has the ratios).

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use losslang_burn::{burn_ops, BurnLoss};

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| ((k * 7919) % 1000) as f32 / 250.0 - 2.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let dev = Device::flex().autodiff();
    let mut group = c.benchmark_group("burn loss step");
    group.sample_size(10);

    let shape = [8, 1, 256, 256];
    let n: usize = shape.iter().product();
    let z = Tensor::<4>::from_data(TensorData::new(values(n), shape), (&dev, DType::F32));
    let y = z.clone().greater_elem(0.3).float();
    let dice = BurnLoss::standard("dice").unwrap();
    let step = |l: Tensor<1>, z: &Tensor<4>| z.grad(&l.backward()).unwrap();
    group.bench_function("dice [8,1,256,256] losslang-burn", |b| {
        b.iter(|| {
            let z = z.clone().require_grad();
            step(dice.forward(z.clone(), y.clone()).unwrap(), &z)
        })
    });
    group.bench_function("dice [8,1,256,256] burn ops", |b| {
        b.iter(|| {
            let z = z.clone().require_grad();
            step(burn_ops::dice(z.clone(), y.clone()), &z)
        })
    });
    let bce = BurnLoss::standard("bce").unwrap();
    group.bench_function("bce [8,1,256,256] losslang-burn", |b| {
        b.iter(|| {
            let z = z.clone().require_grad();
            step(bce.forward(z.clone(), y.clone()).unwrap(), &z)
        })
    });
    group.bench_function("bce [8,1,256,256] burn ops", |b| {
        b.iter(|| {
            let z = z.clone().require_grad();
            step(burn_ops::bce(z.clone(), y.clone()), &z)
        })
    });

    let shape = [8, 4, 128, 128];
    let n: usize = shape.iter().product();
    let z = Tensor::<4>::from_data(TensorData::new(values(n), shape), (&dev, DType::F32));
    let labels: Vec<i64> = (0..8 * 128 * 128).map(|k| ((k * 31) % 4) as i64).collect();
    let labels = Tensor::<3, Int>::from_data(TensorData::new(labels, [8, 128, 128]), &dev);
    let ce = BurnLoss::standard("softmax_ce").unwrap();
    group.bench_function("softmax_ce [8,4,128,128] losslang-burn", |b| {
        b.iter(|| {
            let z = z.clone().require_grad();
            step(ce.forward(z.clone(), labels.clone()).unwrap(), &z)
        })
    });
    group.bench_function("softmax_ce [8,4,128,128] burn ops", |b| {
        b.iter(|| {
            let z = z.clone().require_grad();
            step(
                burn_ops::softmax_ce_labels(z.clone(), labels.clone().unsqueeze_dim(1)),
                &z,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
