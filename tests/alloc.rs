//! After the first call, `value_and_grad` and `value_and_grad_into` allocate nothing: a
//! counting global allocator watches every standard loss at a multi-chunk size, on 2 threads.
//! Plans with window ops (the staged executor) keep every batch-sized buffer between calls too;
//! their window kernels still allocate per-image scratch, so for them the check is that no
//! allocation after the first call is larger than one image in f64.
//!
//! Only the threads that run the plan count — the calling thread and the pool's workers, each
//! switched on after a warm-up — so libtest's own threads, other tests and thread start-up
//! cannot make the count flaky on a loaded machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;
use common::NOT_FUSED_YET;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Library;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// The largest counted allocation, in bytes.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations count (const-initialised, no destructor: safe to read
    /// inside the allocator).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(bytes: usize) {
    if COUNTED.with(|c| c.get()) {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        LARGEST.fetch_max(bytes, Ordering::SeqCst);
    }
}

// SAFETY: every method forwards to `System` with the same arguments; counting touches only an
// atomic and a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` with layout `l` (every allocation goes there).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n);
        // SAFETY: as `dealloc`; the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Losses with order ops (`lovasz_weights`, `top_k`): each call builds its groups' index and
/// sorts them, O(n) scratch per call.
const SORTS_PER_CALL: &[&str] = &["lovasz_hinge", "topk_ce"];

#[test]
fn no_allocation_after_the_first_call() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // The workers count from now on (they have started: broadcast runs on each of them).
    pool.broadcast(|_| COUNTED.with(|c| c.set(true)));
    pool.install(|| {
        let shape = [2usize, 2, 64, 300]; // several chunks, planes not a multiple of the block
        let n: usize = shape.iter().product();
        let z = ArrayD::from_shape_vec(
            IxDyn(&shape),
            (0..n)
                .map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0)
                .collect(),
        )
        .unwrap();
        let y = ArrayD::from_shape_vec(
            IxDyn(&shape),
            (0..n).map(|i| f32::from(i % 7 < 2)).collect(),
        )
        .unwrap();
        let mut g = ArrayD::<f32>::zeros(IxDyn(&shape));
        for name in Library::standard().names() {
            // ms_ssim with a window of 3: five scales of 64 rows (64 .. 4) fit it.
            let loss = common::library_loss(name);
            let mut plan = loss
                .compile::<f32>(&[("logits", &shape[..]), ("target", &shape[..])])
                .unwrap();
            let inputs = [("logits", z.view()), ("target", y.view())];
            plan.value_and_grad(&inputs).unwrap();
            plan.value_and_grad_into(&inputs, &mut [("logits", g.view_mut())])
                .unwrap();
            LARGEST.store(0, Ordering::SeqCst);
            COUNTED.with(|c| c.set(true));
            let before = ALLOCS.load(Ordering::SeqCst);
            for _ in 0..5 {
                let v = plan.value_and_grad(&inputs).unwrap().value;
                assert!(v.is_finite());
                plan.value_and_grad_into(&inputs, &mut [("logits", g.view_mut())])
                    .unwrap();
            }
            let after = ALLOCS.load(Ordering::SeqCst);
            COUNTED.with(|c| c.set(false));
            if plan.executor() == losslang::ExecutorKind::Reference {
                // Class-axis reductions (softmax over C) are not fused yet (issue 11): these run
                // on the reference interpreter, which allocates every node. Any other loss there
                // is a regression.
                assert!(
                    NOT_FUSED_YET.contains(&name),
                    "{name} runs on the reference interpreter"
                );
                continue;
            }
            if SORTS_PER_CALL.contains(&name) {
                continue;
            }
            if plan.executor() == losslang::ExecutorKind::Staged {
                let image = shape[2] * shape[3] * std::mem::size_of::<f64>();
                let largest = LARGEST.load(Ordering::SeqCst);
                assert!(
                    largest <= image,
                    "{name}: an allocation of {largest} bytes after the first call (one image in \
                     f64 is {image}): a batch-sized buffer is not kept between calls"
                );
                continue;
            }
            assert_eq!(
                after - before,
                0,
                "{name}: {} allocations in 10 calls",
                after - before
            );
        }
    });
}
