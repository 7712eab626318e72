//! After the first call, `value_and_grad` and `value_and_grad_into` allocate nothing: a
//! counting global allocator watches every standard loss at a multi-chunk size, on 2 threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Library;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_after_the_first_call() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
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
            let loss = Library::standard().get(name).unwrap();
            let mut plan = loss
                .compile::<f32>(&[("logits", &shape[..]), ("target", &shape[..])])
                .unwrap();
            let inputs = [("logits", z.view()), ("target", y.view())];
            plan.value_and_grad(&inputs).unwrap();
            plan.value_and_grad_into(&inputs, &mut [("logits", g.view_mut())])
                .unwrap();
            let before = ALLOCS.load(Ordering::SeqCst);
            for _ in 0..5 {
                let v = plan.value_and_grad(&inputs).unwrap().value;
                assert!(v.is_finite());
                plan.value_and_grad_into(&inputs, &mut [("logits", g.view_mut())])
                    .unwrap();
            }
            let after = ALLOCS.load(Ordering::SeqCst);
            assert_eq!(
                after - before,
                0,
                "{name}: {} allocations in 10 calls",
                after - before
            );
        }
    });
}
