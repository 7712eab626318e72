//! Fusion: partitions a size-bound graph into memory passes. In: a graph and its roots (value,
//! gradients). Out: a [`Schedule`] — per pass one fused kernel (a `Map` when it only writes
//! gradients, a `MapReduce` when it also accumulates sums), and the `Tail` of small nodes
//! evaluated between passes. Never here: bytecode or buffers.
//!
//! Nodes are *big* (they have every axis of the loss: one value per element) or *small* (they
//! lack the innermost axis: per-image, per-class or scalar values, broadcast per block). A
//! reduction of a big node ends a pass: its result is available from the next pass on. Big nodes
//! are recomputed in every pass that needs them, so no N-sized temporary is ever stored: a
//! pixel-wise loss runs in one pass, a region loss in two. Each reduction goes in the earliest
//! pass its arguments allow, or — when that computes fewer big nodes over all passes without
//! adding one — in the latest pass that still gives its result in time (a sum only the value
//! needs joins the pass that writes the gradient).
//!
//! Kernels are size-capped: a pass whose kernel would hold more than [`MAX_KERNEL_NODES`] big
//! nodes is split by its outputs (reductions and stores, in order) into several kernels, each its
//! own memory pass recomputing what it needs, so one kernel's registers stay within the caches.
//! An output that alone needs more nodes is kept whole. The standard losses are far below the cap.

use crate::ir::graph::{Graph, NodeId};
use crate::ops::Class;

/// Most big nodes (inputs included) one kernel holds before its pass is split by outputs.
pub const MAX_KERNEL_NODES: usize = 64;
/// The cap for a graph unrolled over a class axis (`optimise::unroll`).
pub const UNROLLED_KERNEL_NODES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// Writes gradients only.
    Map,
    /// Accumulates reductions (and possibly writes gradients).
    MapReduce,
}

/// One fused kernel: a single pass over memory.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub kind: KernelKind,
    /// The big nodes computed per block, in topological order.
    pub nodes: Vec<NodeId>,
    /// Reductions of big nodes accumulated in this pass.
    pub reductions: Vec<NodeId>,
    /// Big roots written to memory in this pass: (root index, node).
    pub stores: Vec<(usize, NodeId)>,
}

#[derive(Clone, Debug)]
pub struct Schedule {
    pub big: Vec<bool>,
    pub kernels: Vec<Kernel>,
    /// `tails[p]`: small nodes evaluated before pass `p`; `tails[passes]` after the last one.
    pub tails: Vec<Vec<NodeId>>,
}

impl Schedule {
    pub fn passes(&self) -> usize {
        self.kernels.len()
    }
}

/// Why a graph cannot be fused (it then runs on the reference interpreter).
#[derive(Clone, Debug)]
pub struct NotFusable(pub String);

pub fn schedule(g: &Graph, roots: &[NodeId]) -> Result<Schedule, NotFusable> {
    schedule_capped(g, roots, MAX_KERNEL_NODES, false)
}

/// [`schedule`] with another cap on a kernel's big nodes (a graph unrolled over `n` classes
/// holds about `n` times the nodes of one class, and splitting it would re-read every class
/// plane once per kernel), and with `depth_first`, each kernel's nodes in depth-first order
/// from its outputs instead of id order: a class's chain (`z_c - m`, `exp`, `+`) is computed
/// right before its use, so few registers are live at once.
pub fn schedule_capped(
    g: &Graph,
    roots: &[NodeId],
    cap: usize,
    depth_first: bool,
) -> Result<Schedule, NotFusable> {
    let n = g.len();
    let full = g.space.all();
    let n_axes = g.space.names.len();
    if n_axes == 0 {
        return Err(NotFusable("the loss has no axes".into()));
    }
    let inner = 1u16 << (n_axes - 1);
    let live = g.reachable(roots);
    let mut big = vec![false; n];
    let mut stage = vec![0usize; n];
    for id in 0..n {
        if !live[id] {
            continue;
        }
        let node = g.node(id as NodeId);
        big[id] = node.axes == full;
        if !big[id] && node.axes & inner != 0 {
            return Err(NotFusable(format!(
                "%{id} has the innermost axis but not every axis ({})",
                g.space.fmt(node.axes)
            )));
        }
        let from_args = node
            .args
            .iter()
            .map(|&a| stage[a as usize])
            .max()
            .unwrap_or(0);
        stage[id] = match node.op.def().class {
            Class::Reduce { .. } if big[node.args[0] as usize] => from_args + 1,
            Class::Reduce { .. } | Class::Map | Class::Broadcast | Class::Leaf => from_args,
            Class::Window { .. } | Class::Order { .. } => {
                return Err(NotFusable(format!(
                    "%{id} = {} looks at neighbours; window ops run on the reference interpreter",
                    node.op.name()
                )))
            }
        };
    }
    let is_big_reduction = |id: usize| big_reduction(g, &big, id);
    let mut passes = 0;
    for id in 0..n {
        if live[id] && is_big_reduction(id) {
            passes = passes.max(stage[id]);
        }
    }
    for &r in roots {
        if big[r as usize] {
            passes = passes.max(stage[r as usize] + 1);
        }
    }
    let asap = build(g, roots, &live, &big, &stage, passes, cap, depth_first);
    defer_reductions(g, roots, &live, &big, &mut stage, passes);
    let late = build(g, roots, &live, &big, &stage, passes, cap, depth_first);
    // Deferred where it saves work (fewer big nodes computed over all passes) without a pass
    // more (a kernel grown past the cap splits).
    let work = |s: &Schedule| s.kernels.iter().map(|k| k.nodes.len()).sum::<usize>();
    Ok(
        if late.kernels.len() <= asap.kernels.len() && work(&late) < work(&asap) {
            late
        } else {
            asap
        },
    )
}

/// The kernels and tails of a schedule whose nodes are staged by `stage`.
#[allow(clippy::too_many_arguments)]
fn build(
    g: &Graph,
    roots: &[NodeId],
    live: &[bool],
    big: &[bool],
    stage: &[usize],
    passes: usize,
    cap: usize,
    depth_first: bool,
) -> Schedule {
    let n = g.len();
    let is_big_reduction = |id: usize| big_reduction(g, big, id);
    let mut kernels = Vec::new();
    // `first_kernel[p]`: index of the first kernel of stage `p` (a stage is split when its kernel
    // would exceed the cap).
    let mut first_kernel = Vec::with_capacity(passes + 1);
    for p in 0..passes {
        first_kernel.push(kernels.len());
        let reductions: Vec<NodeId> = (0..n)
            .filter(|&id| live[id] && is_big_reduction(id) && stage[id] == p + 1)
            .map(|id| id as NodeId)
            .collect();
        let stores: Vec<(usize, NodeId)> = roots
            .iter()
            .enumerate()
            .filter(|(_, &r)| big[r as usize] && stage[r as usize] == p)
            .map(|(k, &r)| (k, r))
            .collect();
        // The big nodes an output needs (recomputed here rather than stored by an earlier pass).
        let needs = |from: NodeId| {
            let mut need = vec![false; n];
            let mut stack = vec![from];
            while let Some(x) = stack.pop() {
                if big[x as usize] && !need[x as usize] {
                    need[x as usize] = true;
                    stack.extend(g.node(x).args.iter().copied());
                }
            }
            need
        };
        // Outputs in order, each with what it needs; grouped greedily under the cap.
        let outputs: Vec<(Output, Vec<bool>)> = reductions
            .iter()
            .map(|&r| (Output::Reduce(r), needs(g.node(r).args[0])))
            .chain(stores.iter().map(|&s| (Output::Store(s), needs(s.1))))
            .collect();
        let mut group: Option<Kernel> = None;
        let mut need = vec![false; n];
        for (out, own) in outputs {
            let merged = need.iter().zip(&own).filter(|(a, b)| **a || **b).count();
            if merged > cap {
                if let Some(k) = group.take() {
                    kernels.push(finish(g, k, &need, depth_first));
                }
                need = vec![false; n];
            }
            for (a, b) in need.iter_mut().zip(&own) {
                *a |= *b;
            }
            let k = group.get_or_insert_with(|| Kernel {
                kind: KernelKind::Map,
                nodes: Vec::new(),
                reductions: Vec::new(),
                stores: Vec::new(),
            });
            match out {
                Output::Reduce(r) => k.reductions.push(r),
                Output::Store(st) => k.stores.push(st),
            }
        }
        if let Some(k) = group {
            kernels.push(finish(g, k, &need, depth_first));
        }
    }
    first_kernel.push(kernels.len());
    let mut tails = vec![Vec::new(); kernels.len() + 1];
    for id in 0..n {
        if live[id] && !big[id] && !is_big_reduction(id) {
            tails[first_kernel[stage[id].min(passes)]].push(id as NodeId);
        }
    }
    Schedule {
        big: big.to_vec(),
        kernels,
        tails,
    }
}

/// Moves each big reduction to the last pass that still gives its result in time (`stage` is
/// as early as possible on entry, and keeps the pass count `passes`): a reduction only the value
/// needs — `softmax_ce`'s sum of CE against class labels, whose gradient needs only the count
/// of labelled pixels — is accumulated in the pass that writes the gradient and reads those
/// inputs anyway, so the first pass reads the labels alone instead of recomputing every
/// `log_softmax`. Each sum is accumulated as before, in another pass: its bits are unchanged.
fn defer_reductions(
    g: &Graph,
    roots: &[NodeId],
    live: &[bool],
    big: &[bool],
    stage: &mut [usize],
    passes: usize,
) {
    let n = g.len();
    let is_big_reduction = |id: usize| big_reduction(g, big, id);
    // `due[id]`: the stage by which the node must be available (a big node: the pass that
    // computes it), from its consumers; roots after the last pass, big roots where they are
    // stored.
    let mut due = vec![passes; n];
    for &r in roots {
        if big[r as usize] {
            due[r as usize] = due[r as usize].min(stage[r as usize]);
        }
    }
    for id in (0..n).rev() {
        if !live[id] {
            continue;
        }
        let need = if is_big_reduction(id) {
            // Accumulated in pass `due - 1`: its argument is computed there.
            stage[id] = stage[id].max(due[id]);
            stage[id] - 1
        } else {
            due[id]
        };
        for &a in &g.node(id as NodeId).args {
            due[a as usize] = due[a as usize].min(need);
        }
    }
    // Everything else as early as its (possibly later) arguments allow.
    for id in 0..n {
        if !live[id] || is_big_reduction(id) {
            continue;
        }
        let node = g.node(id as NodeId);
        stage[id] = node
            .args
            .iter()
            .map(|&a| stage[a as usize])
            .max()
            .unwrap_or(0);
    }
}

/// Whether `id` reduces a big node (its result is available from the next pass on).
fn big_reduction(g: &Graph, big: &[bool], id: usize) -> bool {
    let node = g.node(id as NodeId);
    matches!(node.op.def().class, Class::Reduce { .. }) && big[node.args[0] as usize]
}

/// An output of a pass: a reduction it accumulates, or a root it stores (root index, node).
#[derive(Clone, Copy)]
enum Output {
    Reduce(NodeId),
    Store((usize, NodeId)),
}

/// A kernel's nodes (what its outputs need, in topological order) and kind.
fn finish(g: &Graph, mut k: Kernel, need: &[bool], depth_first: bool) -> Kernel {
    k.nodes = if depth_first {
        // Post-order from the outputs, arguments left to right (iterative: chains are long).
        let mut seen = vec![false; need.len()];
        let mut order = Vec::new();
        let outs = k
            .reductions
            .iter()
            .map(|&r| g.node(r).args[0])
            .chain(k.stores.iter().map(|s| s.1));
        for out in outs {
            let mut stack = vec![(out, false)];
            while let Some((x, expanded)) = stack.pop() {
                let i = x as usize;
                if !need[i] || seen[i] {
                    continue;
                }
                if expanded {
                    seen[i] = true;
                    order.push(x);
                } else {
                    stack.push((x, true));
                    for &a in g.node(x).args.iter().rev() {
                        stack.push((a, false));
                    }
                }
            }
        }
        order
    } else {
        (0..need.len())
            .filter(|&i| need[i])
            .map(|i| i as NodeId)
            .collect()
    };
    k.kind = if k.reductions.is_empty() {
        KernelKind::Map
    } else {
        KernelKind::MapReduce
    };
    k
}
