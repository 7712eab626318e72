//! Execution. In: a [`Bound`] graph (optimised, with its roots and every axis size fixed) and
//! input buffers in the internal layout (one dimension per axis of the loss). Out: the root
//! values. Executors implement [`Executor`]; the plan does not care which one runs.
//!
//! Invariant 7: nothing here knows about the language — only about graphs of table ops.

pub mod reference;

use ndarray::{ArrayD, ArrayViewD};

use crate::ir::graph::{Graph, NodeId};
use crate::ops::math::Real;

/// A graph specialised to concrete axis sizes, ready to run.
#[derive(Clone, Debug)]
pub struct Bound {
    pub graph: Graph,
    /// The loss value first, then one node per differentiable input.
    pub roots: Vec<NodeId>,
    /// Size of each axis of the graph's axis space (packs flattened).
    pub sizes: Vec<usize>,
}

/// Runs a bound graph. Implementations must be deterministic: the same inputs give bitwise the
/// same outputs whatever the thread count.
pub trait Executor<T: Real>: Send {
    /// `inputs[i]` has the internal shape of input `i`; returns one array per root, each with
    /// size 1 along the axes the root lacks.
    fn run(&mut self, inputs: &[ArrayViewD<T>]) -> Vec<ArrayD<T>>;
    /// Memory passes over N-sized data the executor makes per call.
    fn passes(&self) -> usize;
}
