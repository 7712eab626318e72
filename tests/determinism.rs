//! Results are bitwise identical whatever the number of threads: every standard loss, f32 and
//! f64, on sizes around the block and chunk boundaries (`BLOCK`, `BLOCK * CHUNK_BLOCKS`).

use losslang::api::gradcheck::Rng;
use losslang::internals::{BLOCK, CHUNK_BLOCKS};
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Real;
use losslang::Library;

fn shapes() -> Vec<Vec<usize>> {
    let chunk = BLOCK * CHUNK_BLOCKS;
    vec![
        vec![1, 1, 1, 1],
        vec![1, 1, 1, BLOCK],
        vec![1, 1, 1, BLOCK - 1],
        vec![1, 1, 1, BLOCK + 1],
        vec![2, 3, 10, 100],
        vec![1, 1, 1, chunk],
        vec![1, 1, 1, chunk - 1],
        vec![1, 1, 1, chunk + 1],
        vec![2, 2, 3, chunk / 3 + 7],
        vec![3, 1, 4, 5, 6],
    ]
}

fn run<T: Real>(
    threads: usize,
    name: &str,
    reduction: Option<&str>,
    shape: &[usize],
) -> (u64, Vec<u64>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut loss = Library::standard().get(name).unwrap();
        if let Some(r) = reduction {
            loss = loss.set("reduction", r).unwrap();
        }
        let n: usize = shape.iter().product();
        let mut rng = Rng::new(n as u64);
        let z = ArrayD::from_shape_vec(
            IxDyn(shape),
            (0..n).map(|_| T::from_f64(2.0 * rng.normal())).collect(),
        )
        .unwrap();
        let y = ArrayD::from_shape_vec(
            IxDyn(shape),
            (0..n)
                .map(|_| T::from_f64(if rng.uniform() < 0.3 { 1.0 } else { 0.0 }))
                .collect(),
        )
        .unwrap();
        let mut plan = loss
            .compile::<T>(&[("logits", shape), ("target", shape)])
            .unwrap();
        assert_eq!(plan.executor(), "fused", "{name}");
        let out = plan
            .value_and_grad(&[("logits", z.view()), ("target", y.view())])
            .unwrap();
        (
            out.value.to_f64().to_bits(),
            out.grad("logits")
                .iter()
                .map(|g| g.to_f64().to_bits())
                .collect(),
        )
    })
}

fn check<T: Real>() {
    for name in Library::standard().names() {
        let has_reduction = Library::standard()
            .get(name)
            .unwrap()
            .params()
            .iter()
            .any(|p| p.name == "reduction");
        let reductions: Vec<Option<&str>> = if has_reduction {
            vec![Some("batch"), Some("image"), Some("class")]
        } else {
            vec![None]
        };
        for red in reductions {
            for shape in shapes() {
                let base = run::<T>(1, name, red, &shape);
                for threads in [2, 3, 7] {
                    let other = run::<T>(threads, name, red, &shape);
                    assert!(
                        base == other,
                        "{name} {red:?} {shape:?} {}: {threads} threads differ from 1",
                        T::NAME
                    );
                }
            }
        }
    }
}

#[test]
fn bitwise_equal_across_thread_counts_f32() {
    check::<f32>();
}

#[test]
fn bitwise_equal_across_thread_counts_f64() {
    check::<f64>();
}
