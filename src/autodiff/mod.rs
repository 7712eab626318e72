//! Symbolic reverse mode. In: a graph, an output node and the nodes to differentiate with
//! respect to. Out: for each, the node of its gradient (or `None` where no differentiable path
//! exists), built as more nodes of the same graph from the op table's derivative rules, so the
//! backward pass is optimised like the forward pass and shares its values through hash-consing.
//!
//! Never here: evaluation, or knowledge of any particular op beyond its table entry.

use std::collections::HashMap;

use crate::ir::graph::{Axes, Graph, NodeId};
use crate::ops::Op;

/// Reverse-mode gradient of scalar `out` with respect to each node in `wrt`.
///
/// A gradient may have fewer axes than its input: it is then constant along the missing axes
/// (named broadcasting); the executor materialises it at the input's full shape.
pub fn grad(g: &mut Graph, out: NodeId, wrt: &[NodeId]) -> Vec<Option<NodeId>> {
    let n = out as usize + 1;
    // active[i]: node i depends on some `wrt` node through differentiable argument positions.
    let mut active = vec![false; n];
    for &w in wrt {
        if (w as usize) < n {
            active[w as usize] = true;
        }
    }
    for id in 0..n {
        if active[id] {
            continue;
        }
        let node = g.node(id as NodeId);
        active[id] = node
            .args
            .iter()
            .enumerate()
            .any(|(k, &a)| active[a as usize] && node.op.differentiable_arg(k));
    }
    let mut adj: HashMap<NodeId, NodeId> = HashMap::new();
    if !active[out as usize] {
        return vec![None; wrt.len()];
    }
    let one = g.c(1.0);
    adj.insert(out, one);
    for id in (0..n as NodeId).rev() {
        if !active[id as usize] {
            continue;
        }
        let Some(&gid) = adj.get(&id) else { continue };
        let node = g.node(id).clone();
        if node.args.is_empty() {
            continue;
        }
        let need: Vec<bool> = node
            .args
            .iter()
            .enumerate()
            .map(|(k, &a)| active[a as usize] && node.op.differentiable_arg(k))
            .collect();
        if !need.iter().any(|&b| b) {
            continue;
        }
        let contribs = (node.op.def().grad)(g, &node, id, gid, &need);
        for (k, c) in contribs.into_iter().enumerate() {
            let (Some(c), true) = (c, need[k]) else {
                continue;
            };
            let arg = node.args[k];
            let c = unbroadcast(g, c, node.axes, g.axes(arg));
            let acc = match adj.get(&arg) {
                Some(&prev) => g.op2(Op::Add, prev, c),
                None => c,
            };
            adj.insert(arg, acc);
        }
    }
    wrt.iter().map(|w| adj.get(w).copied()).collect()
}

/// The adjoint contribution `c` of an argument with axes `arg_axes` to a node with axes
/// `node_axes`, summed over the axes the node broadcast the argument along.
///
/// The node's adjoint conceptually has every axis of the node, but the graph keeps it with only
/// the axes it varies along (a constant `1`, or the adjoint of a reduction, has fewer). Summing
/// over a broadcast axis the contribution lacks is a multiplication by that axis's size:
/// `sum_j c = n_j * c` when `c` is constant along `j`. Deciding by the *node's* axes, not by
/// those `c` happens to carry, is what makes `sum(sum(p) + t)` give `n` per element, not 1.
/// This is the one place where reverse mode unbroadcasts, for every op class.
fn unbroadcast(g: &mut Graph, c: NodeId, node_axes: Axes, arg_axes: Axes) -> NodeId {
    // Every axis the argument lacks is summed: those `c` carries by a reduction, those it is
    // constant along by a product with their size.
    let summed = (node_axes | g.axes(c)) & !arg_axes;
    let present = summed & g.axes(c);
    let missing = summed & !g.axes(c);
    let c = if present != 0 {
        g.reduce(Op::Sum, c, present)
    } else {
        c
    };
    if missing != 0 {
        let n = g.axis_size(missing);
        g.op2(Op::Mul, c, n)
    } else {
        c
    }
}
