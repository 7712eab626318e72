//! Class-axis unrolling: makes a graph with reductions over a plain axis (softmax over `C`)
//! fusable. In: a size-bound graph, its roots, an axis `ax` and its size `n`. Out: a graph over
//! the axis space without `ax` in which every node that had `ax` is `n` nodes, one per index
//! (class); reductions over `ax` become fixed-order chains (`c = 0, 1, ..`) of `add`, `max` or
//! `min`; `index([ax])` becomes the constants `0 .. n-1`; each input with `ax` becomes `n`
//! inputs, one per class plane, and each gradient root `n` roots. The block VM then visits all
//! classes of a spatial block in one pass (every class plane of the block is read together), so
//! `softmax`, `logsumexp` and sums over `C` fuse with no `N·C` temporary.
//!
//! Never here: buffers. How a class input is addressed in the caller's `[.., C, ..]` buffer is
//! the [`Unrolled::inputs`] / [`Unrolled::grads`] map (input or gradient, class); the executor
//! turns it into strides.

use crate::ir::graph::{Attr, Axes, AxisSpace, Graph, NodeId};
use crate::ops::{const_value, Class, Op};

/// Most nodes an unrolled graph may have (beyond, the interpreter is the better choice).
pub const MAX_UNROLLED_NODES: usize = 20_000;

/// An unrolled graph and where its inputs and gradient roots come from.
pub struct Unrolled {
    pub graph: Graph,
    /// Value root, then the gradient roots (per original gradient, its classes in order).
    pub roots: Vec<NodeId>,
    /// Per input index of `graph`: (original input, class if the original has the axis).
    pub inputs: Vec<(u16, Option<usize>)>,
    /// Per gradient root of `graph` (roots 1..): (original gradient, class if it has the axis).
    pub grads: Vec<(usize, Option<usize>)>,
}

/// `mask` without bit `ax` (the bits above it move down one).
pub fn drop_axis(mask: Axes, ax: usize) -> Axes {
    let low = mask & ((1 << ax) - 1);
    let high = (mask >> (ax + 1)) << ax;
    low | high
}

/// The axis the graph's partial big nodes lack, if it is one plain (non-innermost) axis every
/// such node lacks alike: what [`unroll`] needs. `None` if no node needs it or it does not fit.
pub fn class_axis(g: &Graph, roots: &[NodeId]) -> Option<usize> {
    let n_axes = g.space.names.len();
    if n_axes < 2 {
        return None;
    }
    let full = g.space.all();
    let inner = 1 << (n_axes - 1);
    let live = g.reachable(roots);
    let mut missing: Option<Axes> = None;
    for (id, &l) in live.iter().enumerate() {
        let a = g.node(id as NodeId).axes;
        if l && a & inner != 0 && a != full {
            let m = full & !a;
            if missing.is_some_and(|x| x != m) || m.count_ones() != 1 {
                return None;
            }
            missing = Some(m);
        }
    }
    let ax = missing?.trailing_zeros() as usize;
    (!g.space.packs[ax]).then_some(ax)
}

/// Unrolls axis `ax` of size `n` (see the module doc); `grad_axes[k]` are the axes of gradient
/// root `k + 1`'s buffer. `None` where the graph holds what this does not handle (window ops,
/// axis sizes left unbound) or it would exceed [`MAX_UNROLLED_NODES`].
pub fn unroll(
    g: &Graph,
    roots: &[NodeId],
    grad_axes: &[Axes],
    ax: usize,
    n: usize,
) -> Option<Unrolled> {
    let mut space = AxisSpace {
        names: g.space.names.clone(),
        packs: g.space.packs.clone(),
    };
    space.names.remove(ax);
    space.packs.remove(ax);
    let bit: Axes = 1 << ax;
    let mut out = Graph::new(space);
    let live = g.reachable(roots);
    let mut copies: Vec<Vec<NodeId>> = vec![Vec::new(); g.len()];
    let mut inputs: Vec<(u16, Option<usize>)> = Vec::new();
    for id in 0..g.len() {
        if !live[id] {
            continue;
        }
        if out.len() > MAX_UNROLLED_NODES {
            return None;
        }
        let node = g.node(id as NodeId);
        let has = node.axes & bit != 0;
        let classes = if has { n } else { 1 };
        // Argument k of copy c: the arg's copy for class c, or its only copy.
        let arg = |copies: &Vec<Vec<NodeId>>, a: NodeId, c: usize| -> NodeId {
            let v = &copies[a as usize];
            if v.len() == 1 {
                v[0]
            } else {
                v[c]
            }
        };
        let mut mine = Vec::with_capacity(classes);
        for c in 0..classes {
            let id2 = match (node.op, node.op.def().class, node.attr) {
                (Op::Const, _, _) => out.c(const_value(node).unwrap_or(f64::NAN)),
                (Op::Input, _, Attr::Input(i)) => {
                    let v = inputs.len();
                    inputs.push((i, has.then_some(c)));
                    out.input(v, drop_axis(node.axes, ax))
                }
                (Op::AxisIndex, _, Attr::Axes(a)) if a == bit => out.c(c as f64),
                (Op::AxisIndex, _, Attr::Axes(a)) => {
                    out.add(Op::AxisIndex, vec![], Attr::Axes(drop_axis(a, ax)))
                }
                // A count over the axis: n times the count over the others.
                (Op::AxisSize, _, Attr::Axes(a)) => {
                    let rest = drop_axis(a & !bit, ax);
                    let k = out.c(if a & bit != 0 { n as f64 } else { 1.0 });
                    if rest == 0 {
                        k
                    } else {
                        let size = out.axis_size(rest);
                        out.add(Op::Mul, vec![size, k], Attr::None)
                    }
                }
                (_, Class::Leaf, _) | (_, Class::Window { .. } | Class::Order { .. }, _) => {
                    return None
                }
                (_, Class::Map, _) => {
                    let args = node.args.iter().map(|&a| arg(&copies, a, c)).collect();
                    out.add(node.op, args, node.attr)
                }
                (_, Class::Broadcast, Attr::Axes(to)) => {
                    let x = arg(&copies, node.args[0], c);
                    let rest = drop_axis(to & !bit, ax);
                    let target = out.axes(x) | rest;
                    out.broadcast(x, target)
                }
                (_, Class::Reduce { .. }, Attr::Axes(over)) => {
                    let rest = drop_axis(over & !bit, ax);
                    let part = |out: &mut Graph, x: NodeId| {
                        if rest == 0 {
                            x
                        } else {
                            out.reduce(node.op, x, rest)
                        }
                    };
                    if over & bit != 0 {
                        // Fold the classes in order: (((x_0 . x_1) . x_2) ..).
                        let combine = match node.op {
                            Op::Sum => Op::Add,
                            Op::MaxOver => Op::Max,
                            Op::MinOver => Op::Min,
                            _ => return None,
                        };
                        let src = &copies[node.args[0] as usize];
                        let mut acc = part(&mut out, src[0]);
                        for &x in &src[1..] {
                            let p = part(&mut out, x);
                            acc = out.add(combine, vec![acc, p], Attr::None);
                        }
                        acc
                    } else {
                        let x = arg(&copies, node.args[0], c);
                        part(&mut out, x)
                    }
                }
                _ => return None,
            };
            mine.push(id2);
        }
        copies[id] = mine;
    }
    let mut new_roots = vec![copies[roots[0] as usize][0]];
    let mut grads = Vec::new();
    for (k, &r) in roots.iter().enumerate().skip(1) {
        let v = &copies[r as usize];
        // A gradient buffer with the axis gets one root per class (the same node where the
        // gradient does not depend on the class).
        let has = grad_axes.get(k - 1).is_some_and(|a| a & bit != 0);
        for c in 0..if has { n } else { 1 } {
            new_roots.push(if v.len() == 1 { v[0] } else { v[c] });
            grads.push((k - 1, has.then_some(c)));
        }
    }
    Some(Unrolled {
        graph: out,
        roots: new_roots,
        inputs,
        grads,
    })
}
