//! # losslang-mpi: one batch's loss across MPI processes
//!
//! Data-parallel training splits a batch's images across ranks. A loss whose value is a mean
//! over images could be averaged afterwards, but a batch-wide dice (one overlap over every
//! image) or a loss normalised by the batch's class counts cannot: each rank needs the whole
//! batch's sums. losslang's split-phase evaluation ([`Plan::statistics`], [`Plan::finish`],
//! [`Plan::backward`]) gives those sums as arrays that add up across shards; this crate adds
//! them with one MPI all-reduce.
//!
//! - **What goes in:** a communicator, a plan compiled for this rank's images, the inputs of
//!   those images, and where they sit in the batch ([`shard`] cuts a batch evenly).
//! - **What comes out:** on every rank, the whole batch's loss and the gradient of this rank's
//!   images.
//! - **Exactness:** each statistic's row belongs to one rank and is zero on all others, so the
//!   all-reduce's sum is exact whatever order MPI adds in: the value and the gradient equal a
//!   single process's on the whole batch bit for bit. (One caveat: a statistic equal to `-0.0`
//!   arrives as `+0.0`. No loss of the standard library is sensitive to that sign.)
//! - **Errors:** before the statistics are exchanged, every rank learns whether another failed,
//!   so a bad input on one rank is an [`Error::OtherRank`] on the others instead of a hang in
//!   the collective.
//! - **Never done here:** compiling, evaluating or differentiating a loss — all of that is the
//!   core crate's; this crate only moves and adds arrays.

use losslang::ndarray::{ArrayD, ArrayViewD};
use losslang::{Plan, Real};
use mpi::collective::SystemOperation;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence};
use std::ops::Range;

pub use mpi;

/// What a data-parallel step can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This rank's loss call failed (bad shapes, non-finite inputs, a loss that cannot be
    /// split).
    #[error(transparent)]
    Loss(#[from] losslang::Error),
    /// Another rank's call failed; its own error is reported there.
    #[error("rank {rank} failed before the statistics were exchanged (its error is on that rank)")]
    OtherRank { rank: i32 },
    /// The ranks computed statistics of different sizes: they run different losses or
    /// batches.
    #[error(
        "the ranks' statistics differ in size ({sizes:?} elements by rank): every rank must run \
         the same loss on shards of the same batch"
    )]
    Mismatch { sizes: Vec<u64> },
}

/// The images `rank` of `size` ranks takes from a batch of `batch`: contiguous, in rank order,
/// with sizes differing by at most one (the first `batch % size` ranks take one more).
pub fn shard(batch: usize, size: usize, rank: usize) -> Range<usize> {
    let size = size.max(1);
    let (per, extra) = (batch / size, batch % size);
    let start = rank * per + rank.min(extra);
    start..start + per + usize::from(rank < extra)
}

/// The whole batch's loss and this rank's gradient.
#[derive(Debug, Clone)]
pub struct Step<T> {
    /// The loss of the whole batch: the same bits on every rank.
    pub value: T,
    /// (input name, gradient) for each differentiable input, over this rank's images.
    pub grads: Vec<(String, ArrayD<T>)>,
}

impl<T> Step<T> {
    /// The gradient of a differentiable input, if it has one.
    pub fn grad(&self, name: &str) -> Option<&ArrayD<T>> {
        self.grads.iter().find(|(n, _)| n == name).map(|(_, g)| g)
    }
}

/// One data-parallel loss evaluation. Every rank of `comm` calls it with the same loss, its own
/// images `first_image ..` of a batch of `batch` (the plan compiled for that many images), and
/// gets the batch's value and its images' gradient: statistics, one all-reduce, finish,
/// backward. Collective: every rank of `comm` must call it.
pub fn value_and_grad<T, C>(
    comm: &C,
    plan: &mut Plan<T>,
    inputs: &[(&str, ArrayViewD<T>)],
    first_image: usize,
    batch: usize,
) -> Result<Step<T>, Error>
where
    T: Real + Equivalence,
    C: Communicator,
{
    let local = plan.statistics(inputs, first_image, batch);
    let count = local
        .as_ref()
        .map_or(0, |s| s.iter().map(|a| a.len() as u64).sum());
    agree(comm, local.is_err(), count)?;
    let mut stats = local?;
    all_reduce_sum(comm, &mut stats);
    let finished = plan.finish(&stats)?;
    let out = plan.backward(inputs, &finished, first_image)?;
    Ok(Step {
        value: finished.value,
        grads: out
            .grads()
            .map(|(name, g)| (name.to_string(), g.clone()))
            .collect(),
    })
}

/// Every rank tells the others whether it failed and how many statistics it has; an error
/// unless all succeeded with the same count.
fn agree<C: Communicator>(comm: &C, failed: bool, count: u64) -> Result<(), Error> {
    let mine = [u64::from(failed), count];
    let mut all = vec![0u64; 2 * comm.size() as usize];
    comm.all_gather_into(&mine[..], &mut all[..]);
    if failed {
        // This rank's own error is the one to report.
        return Ok(());
    }
    if let Some(rank) = all.chunks(2).position(|r| r[0] != 0) {
        return Err(Error::OtherRank { rank: rank as i32 });
    }
    let sizes: Vec<u64> = all.chunks(2).map(|r| r[1]).collect();
    if sizes.iter().any(|&s| s != count) {
        return Err(Error::Mismatch { sizes });
    }
    Ok(())
}

/// Sums each array elementwise across the ranks of `comm`, in place (an `MPI_Allreduce` with
/// `MPI_SUM` per array). Collective; the arrays must have the same shapes on every rank.
pub fn all_reduce_sum<T, C>(comm: &C, arrays: &mut [ArrayD<T>])
where
    T: Equivalence + Copy + Default,
    C: Communicator,
{
    for a in arrays {
        let send: Vec<T> = a.iter().copied().collect();
        let mut recv = vec![T::default(); send.len()];
        comm.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
        // `iter` above and `iter_mut` here walk the array in the same (logical) order.
        for (x, y) in a.iter_mut().zip(recv) {
            *x = y;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn shards_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for batch in 0..12 {
            for size in 1..6 {
                let parts: Vec<_> = (0..size).map(|r| shard(batch, size, r)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, batch);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<_> = parts.iter().map(|p| p.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "{batch} over {size}: {lens:?}");
            }
        }
    }
}
