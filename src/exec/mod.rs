//! Execution. In: a [`Bound`] graph (optimised, with its roots and every axis size fixed) and
//! input buffers in the internal layout (one dimension per axis of the loss). Out: the root
//! values. Executors implement [`Executor`]; the plan does not care which one runs.
//!
//! Invariant 7: nothing here knows about the language — only about graphs of table ops.

pub mod choose;
pub mod reference;
pub mod staged;
pub mod vm;

use crate::ir::graph::{Graph, NodeId};
use crate::ops::math::Real;

pub use choose::{ExecutorKind, Isa, Kernel, PassInfo};

/// Most inputs a loss may declare.
pub const MAX_INPUTS: usize = 16;

/// A graph specialised to concrete axis sizes, ready to run.
#[derive(Clone, Debug)]
pub struct Bound {
    pub graph: Graph,
    /// The loss value first, then one node per differentiable input.
    pub roots: Vec<NodeId>,
    /// Size of each axis of the graph's axis space (packs flattened).
    pub sizes: Vec<usize>,
    /// Per gradient root (roots 1..): the axes of the input it belongs to.
    pub grad_axes: Vec<crate::ir::graph::Axes>,
    /// The dimensions of the spatial (pack) axis, which window ops work over (empty without one).
    pub spatial: Vec<usize>,
}

impl Bound {
    /// Per input index: the axes of the graph's node for it, or `None` if the graph does not
    /// read that input (an absent optional input, or one the result does not depend on).
    pub fn input_axes(&self) -> Vec<Option<crate::ir::graph::Axes>> {
        let g = &self.graph;
        let mut axes = Vec::new();
        for id in 0..g.len() {
            let n = g.node(id as NodeId);
            if let (crate::ops::Op::Input, crate::ir::graph::Attr::Input(i)) = (n.op, n.attr) {
                let i = i as usize;
                if axes.len() <= i {
                    axes.resize(i + 1, None);
                }
                axes[i] = Some(n.axes);
            }
        }
        axes
    }
}

/// Runs a bound graph. Implementations must be deterministic: the same inputs give bitwise the
/// same outputs whatever the thread count.
pub trait Executor<T: Real>: Send {
    /// `inputs[i]`: the contiguous row-major data of input `i` in its internal shape (empty
    /// for an absent optional input). `grads[k]`: the buffer of root `k + 1`, with the full
    /// internal shape of the input it is the gradient of. Returns the value (root 0), or with
    /// `check_finite`, `Err(i)` if input `i` holds a NaN or an infinity (the outputs are then
    /// unspecified).
    fn run(
        &mut self,
        inputs: &[&[T]],
        grads: &mut [&mut [T]],
        check_finite: bool,
    ) -> Result<T, usize>;
    /// Memory passes over N-sized data the executor makes per call.
    fn passes(&self) -> usize;
    /// Lowers the instruction set to at most `isa`; returns the one now in use. Executors
    /// without variants ignore it.
    fn cap_isa(&mut self, _isa: Isa) -> Isa {
        Isa::Scalar
    }
    /// Per pass: its native-kernel key and generated source, where native kernels apply (the
    /// generator's input; empty for executors without native kernels).
    #[cfg(test)]
    fn native_listing(&self) -> Vec<Option<NativeEntry>> {
        Vec::new()
    }
}

/// A pass's native-kernel key and generated source.
#[cfg(test)]
pub type NativeEntry = (String, String);

/// Whether a buffer holds a NaN or an infinity (the input check of every executor).
pub fn has_non_finite<T: Real>(x: &[T]) -> bool {
    x.iter().any(|v| !v.is_finite())
}

/// `Err(i)` for the first input holding a NaN or an infinity (executors that check every input
/// before they start).
pub fn check_inputs<T: Real>(inputs: &[&[T]]) -> Result<(), usize> {
    match inputs.iter().position(|x| has_non_finite(x)) {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
