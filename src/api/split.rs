//! Split-phase evaluation for data-parallel training. A loss whose value depends on the batch
//! only through reductions over the batch axis (the loss's first axis) is cut at those
//! reductions into three graphs:
//!
//! - **statistics**: per image, the partial reduction of each of them (`sum(x, over = [B, S])`
//!   becomes `sum(x, over = [S])`, one row per image) — its sufficient statistics;
//! - **finish**: the rest of the loss from the statistics of the whole batch (reduced over the
//!   batch in one fixed order), and the adjoint of every statistic (its *seed*);
//! - **backward**: the gradient of one shard's inputs, `Σ_k seed_k · ∂stat_k/∂input`, the
//!   reverse pass through that shard's statistics alone.
//!
//! Exactness (the reason for rows rather than sums): a shard writes its images' rows into a
//! zero-filled array of the whole batch, so a sum across processes — adding zeros is exact —
//! assembles the unsharded statistics bit for bit, and every later step runs on the same bits.
//!
//! In: the loss's optimised graph before sizes bind. Out: the three graphs (sizes unbound), or
//! why the loss cannot be split (a per-image value that depends on a batch-wide one needs two
//! rounds; a sort over the batch is not a sum). Never here: collectives, executors, shapes.

use crate::autodiff;
use crate::ir::graph::{Attr, Axes, Graph, NodeId};
use crate::ops::{window, Class, Op};
use crate::optimise;

/// The three graphs of a split loss.
pub(crate) struct SplitGraphs {
    /// Roots: a constant 0, then each statistic. Inputs: the loss's.
    pub stats: (Graph, Vec<NodeId>),
    /// The axes of each statistic (each has the batch axis).
    pub stat_axes: Vec<Axes>,
    /// Roots: the value, then each statistic's seed. Inputs: the statistics, `0..k`.
    pub finish: (Graph, Vec<NodeId>),
    /// Roots: `Σ_k sum(seed_k · stat_k)`, then the gradient of each input of `diff`. Inputs: the
    /// loss's, then the seeds at `seed_base + k`.
    pub backward: (Graph, Vec<NodeId>),
    pub seed_base: usize,
}

/// Splits the loss `g` with value `value` at its reductions over axis `batch`; `diff` are the
/// input indices whose gradients `backward` returns, `n_inputs` how many inputs the loss has.
pub(crate) fn split(
    g: &Graph,
    value: NodeId,
    diff: &[usize],
    n_inputs: usize,
    batch: usize,
) -> Result<SplitGraphs, String> {
    let b: Axes = 1 << batch;
    let live = g.reachable(&[value]);
    let n = g.len();
    // data: depends on an input; frontier: a reduction over the batch of per-image data;
    // global: depends on a frontier node.
    let (mut data, mut frontier, mut global) = (vec![false; n], vec![false; n], vec![false; n]);
    for id in 0..n {
        if !live[id] {
            continue;
        }
        let node = g.node(id as NodeId);
        let name = node.op.name();
        data[id] = node.op == Op::Input || node.args.iter().any(|&a| data[a as usize]);
        global[id] = node.args.iter().any(|&a| global[a as usize]);
        if node.op == Op::Input && node.axes & b == 0 {
            return Err(format!(
                "input #{} has no batch axis: every input must be split along the batch",
                match node.attr {
                    Attr::Input(i) => i as usize,
                    _ => 0,
                }
            ));
        }
        let over = match node.attr {
            Attr::Axes(a) => a,
            _ => 0,
        };
        if window::group_axes(node) & b != 0 {
            return Err(format!(
                "`{name}` orders elements across the batch: an order is not a sum of per-image parts"
            ));
        }
        let reduce = matches!(node.op.def().class, Class::Reduce { .. });
        if reduce && over & b != 0 && data[id] {
            let arg = node.args[0] as usize;
            if global[arg] {
                return Err(format!(
                    "`{name}` over the batch reads a batch-wide statistic: the loss needs more than one round of statistics"
                ));
            }
            frontier[id] = true;
            global[id] = true;
        } else if data[id] && global[id] && node.axes & b != 0 {
            return Err(format!(
                "`{name}` computes per image from a batch-wide statistic: the loss needs more than one round of statistics"
            ));
        }
    }
    let fronts: Vec<NodeId> = (0..n)
        .filter(|&i| frontier[i])
        .map(|i| i as NodeId)
        .collect();
    if fronts.is_empty() {
        return Err("the value does not reduce over the batch".into());
    }
    if n_inputs + fronts.len() > crate::api::MAX_INPUTS {
        return Err(format!(
            "{} statistics and {n_inputs} inputs exceed the {} inputs a plan reads",
            fronts.len(),
            crate::api::MAX_INPUTS
        ));
    }

    // Statistics: the forward graph below the frontier, each frontier node's reduction without
    // the batch axis.
    let mut sg = Graph::new(g.space.clone());
    let mut map = vec![NodeId::MAX; n];
    let below = g.reachable(
        &fronts
            .iter()
            .map(|&f| g.node(f).args[0])
            .collect::<Vec<_>>(),
    );
    for id in 0..n {
        if below[id] {
            map[id] = optimise::copy_node(&mut sg, g.node(id as NodeId), &map);
        }
    }
    let mut stats = Vec::new();
    let mut stat_axes = Vec::new();
    for &f in &fronts {
        let node = g.node(f);
        let Attr::Axes(over) = node.attr else {
            unreachable!("a reduction has axes")
        };
        let arg = map[node.args[0] as usize];
        let rest = over & !b;
        let partial = if rest == 0 {
            arg
        } else {
            sg.reduce(node.op, arg, rest)
        };
        stat_axes.push(sg.axes(partial));
        stats.push(partial);
    }

    // Finish: the graph above the frontier, each frontier node reducing its statistic over the
    // batch; seeds by reverse mode with respect to the statistics.
    let mut fg = Graph::new(g.space.clone());
    let mut fmap = vec![NodeId::MAX; n];
    let mut inputs = Vec::new();
    for (k, &f) in fronts.iter().enumerate() {
        let input = fg.input(k, stat_axes[k]);
        inputs.push(input);
        fmap[f as usize] = fg.reduce(g.node(f).op, input, b);
    }
    let above = reachable_above(g, value, &frontier);
    for id in 0..n {
        if above[id] && !frontier[id] {
            fmap[id] = optimise::copy_node(&mut fg, g.node(id as NodeId), &fmap);
        }
    }
    let fv = fmap[value as usize];
    let seeds = autodiff::grad(&mut fg, fv, &inputs);
    let mut froots = vec![fv];
    for s in seeds {
        froots.push(s.unwrap_or_else(|| fg.c(0.0)));
    }
    let finish = optimise::after_autodiff(&fg, &froots);

    // Backward: Σ_k sum(seed_k · stat_k), differentiated with respect to the inputs of `diff`.
    let mut bg = sg.clone();
    let mut total = bg.c(0.0);
    for (k, &s) in stats.iter().enumerate() {
        let seed = bg.input(n_inputs + k, stat_axes[k]);
        let prod = bg.op2(Op::Mul, seed, s);
        let all = bg.axes(prod);
        let term = bg.reduce(Op::Sum, prod, all);
        total = bg.op2(Op::Add, total, term);
    }
    let wrt: Vec<NodeId> = diff
        .iter()
        .map(|&i| {
            // The input node as the loss reads it (its axes from the forward graph).
            let axes = (0..n)
                .map(|id| g.node(id as NodeId))
                .find(|nd| nd.op == Op::Input && nd.attr == Attr::Input(i as u16))
                .map_or(0, |nd| nd.axes);
            bg.input(i, axes)
        })
        .collect();
    let grads = autodiff::grad(&mut bg, total, &wrt);
    let mut broots = vec![total];
    for gr in grads {
        broots.push(gr.unwrap_or_else(|| bg.c(0.0)));
    }
    let backward = optimise::after_autodiff(&bg, &broots);

    let mut sroots = vec![sg.c(0.0)];
    sroots.extend(stats);
    Ok(SplitGraphs {
        stats: (sg, sroots),
        stat_axes,
        finish,
        backward,
        seed_base: n_inputs,
    })
}

/// The nodes `value` reaches without descending below a node of `stop` (which is included).
fn reachable_above(g: &Graph, value: NodeId, stop: &[bool]) -> Vec<bool> {
    let mut seen = vec![false; g.len()];
    seen[value as usize] = true;
    for id in (0..=value as usize).rev() {
        if seen[id] && !stop[id] {
            for &a in &g.node(id as NodeId).args {
                seen[a as usize] = true;
            }
        }
    }
    seen
}
