//! Results are bitwise identical whatever the number of threads: every standard loss, f32 and
//! f64, on sizes around the block and chunk boundaries (`BLOCK`, `BLOCK * CHUNK_BLOCKS`), and
//! for the losses with window ops (which refuse sides smaller than their window) on images of
//! several sizes, 2-D and 3-D, one of them spanning several chunks.

use crate::common;
use common::NOT_FUSED_YET;
use losslang::internals::Rng;
use losslang::internals::{BLOCK, CHUNK_BLOCKS};
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Real;
use losslang::{ExecutorKind, Isa, Library};

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
        vec![2, 2, 13, 17],
        vec![1, 2, 11, 12, 13],
        vec![1, 2, 40, 37],     // ms_ssim's five scales of a window of 3
        vec![1, 1, 33, 34, 35], // and in 3-D
        vec![2, 1, 64, chunk / 64 + 3],
    ]
}

fn run<T: Real>(
    threads: usize,
    name: &str,
    reduction: Option<&str>,
    shape: &[usize],
) -> Option<(u64, Vec<u64>)> {
    run_with::<T>(threads, name, reduction, shape, ExecutorKind::Fused, None)
}

/// One evaluation's bits: the value and the gradient, on `threads` threads, with the given
/// executor and instruction-set cap.
fn run_with<T: Real>(
    threads: usize,
    name: &str,
    reduction: Option<&str>,
    shape: &[usize],
    kind: ExecutorKind,
    isa: Option<Isa>,
) -> Option<(u64, Vec<u64>)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut loss = common::library_loss(name);
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
        let mut plan = match loss.compile_with::<T>(&[("logits", shape), ("target", shape)], kind) {
            Err(losslang::Error::Shape { .. }) => return None, // a side smaller than a window
            r => r.unwrap(),
        };
        assert!(
            [ExecutorKind::Fused, ExecutorKind::Staged].contains(&plan.executor())
                || NOT_FUSED_YET.contains(&name),
            "{name}"
        );
        if let Some(isa) = isa {
            plan.cap_instruction_set(isa);
        }
        let out = plan
            .value_and_grad(&[("logits", z.view()), ("target", y.view())])
            .unwrap();
        Some((
            out.value.to_f64().to_bits(),
            out.grad("logits")
                .iter()
                .map(|g| g.to_f64().to_bits())
                .collect(),
        ))
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
            let mut ran = 0;
            for shape in shapes() {
                let Some(base) = run::<T>(1, name, red, &shape) else {
                    continue;
                };
                ran += 1;
                for threads in [2, 3, 7] {
                    let other = run::<T>(threads, name, red, &shape).expect("compiled before");
                    assert!(
                        base == other,
                        "{name} {red:?} {shape:?} {}: {threads} threads differ from 1",
                        T::NAME
                    );
                }
            }
            // Shapes smaller than a window are skipped; every loss must fit some.
            assert!(ran >= 3, "{name}: only {ran} shapes fit its windows");
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

/// Superinstructions (`MapStore`, `DotSum`) change speed, never bits (ARCHITECTURE invariant):
/// every standard loss, on 2 threads, with and without them — including a size whose gradient
/// is streamed (2^21 elements).
#[test]
fn superinstructions_change_no_bits() {
    let mut shapes = shapes();
    shapes.push(vec![2, 1, 1024, 1024 + 3]);
    for name in Library::standard().names() {
        for shape in &shapes {
            for f32_path in [true, false] {
                let (a, b) = if f32_path {
                    (
                        run_with::<f32>(2, name, None, shape, ExecutorKind::Fused, None),
                        run_with::<f32>(2, name, None, shape, ExecutorKind::FusedPlain, None),
                    )
                } else {
                    (
                        run_with::<f64>(2, name, None, shape, ExecutorKind::Fused, None),
                        run_with::<f64>(2, name, None, shape, ExecutorKind::FusedPlain, None),
                    )
                };
                assert!(
                    a == b,
                    "{name} {shape:?} (f32: {f32_path}): superinstructions changed bits"
                );
            }
        }
    }
}

/// The AVX2 and AVX-512 paths share their FMA polynomials and agree bitwise (on a machine
/// without AVX-512 both runs take the AVX2 path and the test compares it with itself).
#[test]
fn avx2_and_avx512_paths_agree_bitwise() {
    for name in Library::standard().names() {
        for shape in shapes() {
            let wide = run_with::<f32>(2, name, None, &shape, ExecutorKind::Fused, None);
            let avx2 = run_with::<f32>(2, name, None, &shape, ExecutorKind::Fused, Some(Isa::Avx2));
            assert!(
                wide == avx2,
                "{name} {shape:?}: the widest path and AVX2 differ"
            );
        }
    }
}
