//! Data-parallel loss evaluation across MPI processes:
//!
//! ```sh
//! cargo build --release -p losslang-mpi --example data_parallel
//! mpirun -np 2 target/release/examples/data_parallel
//! ```
//!
//! A batch of 8 images is split across the ranks. Each rank holds only its own images' logits
//! (here free parameters, moved by gradient descent) and computes `dice_ce`, whose dice (at
//! its default `reduction = batch`) is one overlap over the whole batch, which no rank can
//! compute alone. `losslang_mpi::value_and_grad` all-reduces the statistics, so every rank gets
//! the batch's loss and its own images' gradient, the same bits as one process on the whole
//! batch.

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, Axis, IxDyn};
use losslang::Library;
use losslang_mpi::mpi::traits::Communicator;
use losslang_mpi::{shard, value_and_grad};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let universe = losslang_mpi::mpi::initialize().ok_or("MPI was initialised already")?;
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);

    let (batch, shape) = (8, [1usize, 32, 32]);
    let mine = shard(batch, size, rank);
    // Every rank draws the same batch and keeps its own images (a data loader would read
    // only those).
    let full: Vec<usize> = std::iter::once(batch).chain(shape).collect();
    let target = discs(&full)
        .slice_axis(Axis(0), mine.clone().into())
        .to_owned();
    let mut logits = ArrayD::<f64>::zeros(target.raw_dim());

    let loss = Library::standard().get("dice_ce")?;
    let mut plan =
        loss.compile::<f64>(&[("logits", logits.shape()), ("target", target.shape())])?;
    for step in 0..5 {
        let out = value_and_grad(
            &world,
            &mut plan,
            &[("logits", logits.view()), ("target", target.view())],
            mine.start,
            batch,
        )?;
        let grad = out.grad("logits").ok_or("logits are differentiable")?;
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        println!(
            "rank {rank} of {size}, images {mine:?}, step {step}: batch loss {:.6}, \
             |grad of my images| {norm:.3e}",
            out.value
        );
        logits.scaled_add(-400.0, grad);
    }
    Ok(())
}

/// A disc of random centre and radius per image, the same on every rank (fixed seed).
fn discs(shape: &[usize]) -> ArrayD<f64> {
    let (h, w) = (shape[2], shape[3]);
    let mut rng = Rng::new(7);
    let mut t = ArrayD::zeros(IxDyn(shape));
    for mut img in t.axis_iter_mut(Axis(0)) {
        let (cy, cx) = (rng.uniform() * h as f64, rng.uniform() * w as f64);
        let r = 4.0 + 8.0 * rng.uniform();
        for ((_, y, x), v) in img
            .view_mut()
            .into_dimensionality::<losslang::ndarray::Ix3>()
            .expect("[C, H, W]")
            .indexed_iter_mut()
        {
            *v = f64::from((y as f64 - cy).hypot(x as f64 - cx) < r);
        }
    }
    t
}
