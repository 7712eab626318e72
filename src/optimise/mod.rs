//! Graph rewrites. In: a graph and its root nodes. Out: a new graph holding only what the roots
//! reach (dead-node removal), rebuilt bottom-up through an ordered list of named [`Rule`]s, each
//! stated as an identity with the reason it is applied. Hash-consing in the rebuilt graph is the
//! CSE pass; constant folding happens as nodes are built.
//!
//! Invariant: a rewrite never changes a value (up to rounding), and never changes a node's axes
//! (a result with fewer axes is broadcast back). Never here: evaluation or autodiff.

pub mod fuse;

use crate::ir::graph::{Attr, Graph, Node, NodeId};
use crate::ops::{const_value, Op};

pub struct Rule {
    pub name: &'static str,
    /// The identity, and why it is applied.
    pub identity: &'static str,
    pub apply: fn(&mut Graph, &Node) -> Option<NodeId>,
}

/// The constant value of a node, looking through a broadcast of a constant.
fn constant(g: &Graph, id: NodeId) -> Option<f64> {
    let n = g.node(id);
    match n.op {
        Op::Broadcast => const_value(g.node(n.args[0])),
        _ => const_value(n),
    }
}

fn is_const(g: &Graph, id: NodeId, v: f64) -> bool {
    constant(g, id) == Some(v)
}

fn un(g: &Graph, id: NodeId, op: Op) -> Option<NodeId> {
    let n = g.node(id);
    (n.op == op).then(|| n.args[0])
}

/// Singular ops: a discarded `where` branch through one of these can poison gradients with NaN.
const SINGULAR: &[Op] = &[Op::Log, Op::Sqrt, Op::Div, Op::Pow, Op::Log1p];

/// Algebraic simplification: removes the identities that autodiff leaves behind.
pub const SIMPLIFY: &[Rule] = &[
    Rule { name: "add_zero", identity: "x + 0 -> x, 0 + x -> x: adjoint seeds and sums leave these",
        apply: |g, n| match n.op { Op::Add if is_const(g, n.args[1], 0.0) => Some(n.args[0]), Op::Add if is_const(g, n.args[0], 0.0) => Some(n.args[1]), _ => None } },
    Rule { name: "sub_zero", identity: "x - 0 -> x; 0 - x -> -x",
        apply: |g, n| match n.op { Op::Sub if is_const(g, n.args[1], 0.0) => Some(n.args[0]), Op::Sub if is_const(g, n.args[0], 0.0) => Some(g.op1(Op::Neg, n.args[1])), _ => None } },
    Rule { name: "mul_one", identity: "x * 1 -> x, 1 * x -> x: the adjoint seed is 1",
        apply: |g, n| match n.op { Op::Mul if is_const(g, n.args[1], 1.0) => Some(n.args[0]), Op::Mul if is_const(g, n.args[0], 1.0) => Some(n.args[1]), _ => None } },
    Rule { name: "mul_minus_one", identity: "x * -1 -> -x, -1 * x -> -x",
        apply: |g, n| match n.op { Op::Mul if is_const(g, n.args[1], -1.0) => Some(g.op1(Op::Neg, n.args[0])), Op::Mul if is_const(g, n.args[0], -1.0) => Some(g.op1(Op::Neg, n.args[1])), _ => None } },
    Rule { name: "sum_of_broadcast", identity: "sum(broadcast(x, A), over = R) -> sum(x, over = R - A) * axis_size(R & A): counts without materialising (the default mask)",
        apply: |g, n| {
            if n.op != Op::Sum { return None; }
            let b = g.node(n.args[0]).clone();
            let (Op::Broadcast, Attr::Axes(added), Attr::Axes(over)) = (b.op, b.attr, n.attr) else { return None };
            let x = b.args[0];
            let rest = over & !added;
            let inner = if rest != 0 { g.reduce(Op::Sum, x, rest) } else { x };
            let both = over & added;
            if both == 0 { return Some(inner); }
            let k = g.axis_size(both);
            Some(g.op2(Op::Mul, inner, k))
        } },
    Rule { name: "safe_div_nonzero", identity: "safe_div(a, c) -> a / c for a constant c != 0: the guard is dead",
        apply: |g, n| if n.op == Op::SafeDiv { constant(g, n.args[1]).filter(|&c| c != 0.0).map(|_| g.op2(Op::Div, n.args[0], n.args[1])) } else { None } },
    Rule { name: "div_one", identity: "x / 1 -> x",
        apply: |g, n| (n.op == Op::Div && is_const(g, n.args[1], 1.0)).then(|| n.args[0]) },
    Rule { name: "neg_neg", identity: "-(-x) -> x",
        apply: |g, n| if n.op == Op::Neg { un(g, n.args[0], Op::Neg) } else { None } },
    Rule { name: "add_neg", identity: "a + (-b) -> a - b; (-a) + b -> b - a: one op fewer",
        apply: |g, n| if n.op != Op::Add { None } else if let Some(b) = un(g, n.args[1], Op::Neg) { Some(g.op2(Op::Sub, n.args[0], b)) } else { un(g, n.args[0], Op::Neg).map(|a| g.op2(Op::Sub, n.args[1], a)) } },
    Rule { name: "sub_neg", identity: "a - (-b) -> a + b",
        apply: |g, n| if n.op == Op::Sub { un(g, n.args[1], Op::Neg).map(|b| g.op2(Op::Add, n.args[0], b)) } else { None } },
    Rule { name: "mul_neg", identity: "(-a) * (-b) -> a * b",
        apply: |g, n| if n.op == Op::Mul { match (un(g, n.args[0], Op::Neg), un(g, n.args[1], Op::Neg)) { (Some(a), Some(b)) => Some(g.op2(Op::Mul, a, b)), _ => None } } else { None } },
    Rule { name: "where_same", identity: "where(c, x, x) -> x",
        apply: |_, n| (n.op == Op::Where && n.args[1] == n.args[2]).then(|| n.args[1]) },
    Rule { name: "where_const", identity: "where(1, a, b) -> a; where(0, a, b) -> b",
        apply: |g, n| if n.op != Op::Where { None } else { const_value(g.node(n.args[0])).map(|c| if c != 0.0 { n.args[1] } else { n.args[2] }) } },
    Rule { name: "pow_one", identity: "x ^ 1 -> x",
        apply: |g, n| (n.op == Op::Pow && is_const(g, n.args[1], 1.0)).then(|| n.args[0]) },
    Rule { name: "pow_zero", identity: "x ^ 0 -> 1: also drops the 0 * x^-1 derivative, NaN at x = 0",
        apply: |g, n| (n.op == Op::Pow && is_const(g, n.args[1], 0.0)).then(|| g.c(1.0)) },
];

/// Numerical stabilisation: each rule replaces a form that loses precision or overflows.
pub const STABILISE: &[Rule] = &[
    Rule { name: "pow_two", identity: "x^2 -> x*x: exact to rounding, no exp/log, and a finite derivative everywhere",
        apply: |g, n| (n.op == Op::Pow && is_const(g, n.args[1], 2.0)).then(|| g.op2(Op::Mul, n.args[0], n.args[0])) },
    Rule { name: "one_minus_sigmoid", identity: "1 - sigmoid(x) -> sigmoid(-x): no cancellation when sigmoid(x) is near 1",
        apply: |g, n| if n.op == Op::Sub && is_const(g, n.args[0], 1.0) { un(g, n.args[1], Op::Sigmoid).map(|x| { let nx = g.op1(Op::Neg, x); g.op1(Op::Sigmoid, nx) }) } else { None } },
    Rule { name: "sigmoid_neg_neg", identity: "sigmoid(-(-x)) -> sigmoid(x)",
        apply: |g, n| if n.op == Op::Sigmoid { un(g, n.args[0], Op::Neg).and_then(|y| un(g, y, Op::Neg)).map(|x| g.op1(Op::Sigmoid, x)) } else { None } },
    Rule { name: "log_sigmoid", identity: "log(sigmoid(x)) -> log_sigmoid(x) = -softplus(-x): finite for large |x|",
        apply: |g, n| if n.op == Op::Log { un(g, n.args[0], Op::Sigmoid).map(|x| g.op1(Op::LogSigmoid, x)) } else { None } },
    Rule { name: "log1p_neg_sigmoid", identity: "log1p(-sigmoid(x)) -> log_sigmoid(-x) = -softplus(x): finite for large x",
        apply: |g, n| if n.op == Op::Log1p { un(g, n.args[0], Op::Neg).and_then(|y| un(g, y, Op::Sigmoid)).map(|x| { let nx = g.op1(Op::Neg, x); g.op1(Op::LogSigmoid, nx) }) } else { None } },
    Rule { name: "log1p_exp", identity: "log1p(exp(x)) -> softplus(x): exp overflows for x > 709",
        apply: |g, n| if n.op == Op::Log1p { un(g, n.args[0], Op::Exp).map(|x| g.op1(Op::Softplus, x)) } else { None } },
    Rule { name: "neg_softplus_neg", identity: "-softplus(-x) -> log_sigmoid(x): one op, same value",
        apply: |g, n| if n.op == Op::Neg { un(g, n.args[0], Op::Softplus).and_then(|y| un(g, y, Op::Neg)).map(|x| g.op1(Op::LogSigmoid, x)) } else { None } },
    Rule { name: "pow_sigmoid", identity: "sigmoid(x)^c -> exp(c * log_sigmoid(x)): the chain rule through pow is 0 * inf at sigmoid(x) -> 0",
        apply: |g, n| if n.op == Op::Pow && const_value(g.node(n.args[1])).is_some() { un(g, n.args[0], Op::Sigmoid).map(|x| { let l = g.op1(Op::LogSigmoid, x); let m = g.op2(Op::Mul, n.args[1], l); g.op1(Op::Exp, m) }) } else { None } },
    Rule { name: "where_guard", identity: "where(c, f(x), y) -> where(c, f(where(c, x, 1)), y) for singular f: the discarded branch can no longer poison gradients with NaN",
        apply: |g, n| {
            if n.op != Op::Where { return None; }
            let c = n.args[0];
            for (slot, keep) in [(1usize, true), (2usize, false)] {
                let b = g.node(n.args[slot]).clone();
                if !SINGULAR.contains(&b.op) { continue; }
                let guarded = |g: &Graph, a: NodeId| { let an = g.node(a); an.op == Op::Where && an.args[0] == c || const_value(an).is_some() };
                if b.args.iter().all(|&a| guarded(g, a)) { continue; }
                let one = g.c(1.0);
                let args: Vec<NodeId> = b.args.iter().map(|&a| if guarded(g, a) { a } else if keep { g.op3(Op::Where, c, a, one) } else { g.op3(Op::Where, c, one, a) }).collect();
                let nb = g.add(b.op, args, b.attr);
                let mut new_args = n.args.clone();
                new_args[slot] = nb;
                return Some(g.add(Op::Where, new_args, Attr::None));
            }
            None
        } },
];

/// Rebuilds the part of `src` that `roots` reach, applying `rules` (in order, first match wins)
/// to every node, until nothing changes (at most a few rounds).
pub fn rewrite(src: &Graph, roots: &[NodeId], rules: &[&[Rule]]) -> (Graph, Vec<NodeId>) {
    let (mut g, mut r) = rewrite_once(src, roots, rules);
    for _ in 0..8 {
        let (g2, r2) = rewrite_once(&g, &r, rules);
        let same = g2.len() == g.len();
        g = g2;
        r = r2;
        if same {
            break;
        }
    }
    (g, r)
}

fn rewrite_once(src: &Graph, roots: &[NodeId], rules: &[&[Rule]]) -> (Graph, Vec<NodeId>) {
    let live = src.reachable(roots);
    let mut g = Graph::new(src.space.clone());
    let mut map: Vec<NodeId> = vec![NodeId::MAX; src.len()];
    for id in 0..src.len() {
        if !live[id] {
            continue;
        }
        let old = src.node(id as NodeId);
        let args: Vec<NodeId> = old.args.iter().map(|&a| map[a as usize]).collect();
        let new_id = match old.op {
            Op::Const => g.c(const_value(old).unwrap_or(f64::NAN)),
            Op::Input => match old.attr {
                Attr::Input(i) => g.input(i as usize, old.axes),
                _ => g.c(f64::NAN),
            },
            _ => {
                let base = g.add(old.op, args, old.attr);
                apply_rules(&mut g, base, rules)
            }
        };
        map[id] = new_id;
    }
    let r = roots.iter().map(|&x| map[x as usize]).collect();
    (g, r)
}

fn apply_rules(g: &mut Graph, id: NodeId, rules: &[&[Rule]]) -> NodeId {
    let n = g.node(id).clone();
    for set in rules {
        for rule in set.iter() {
            if let Some(r) = (rule.apply)(g, &n) {
                if r == id {
                    continue;
                }
                let ra = g.axes(r);
                if ra & !n.axes != 0 {
                    continue; // would add axes: not a valid rewrite here
                }
                return g.broadcast(r, n.axes);
            }
        }
    }
    id
}

/// Passes before autodiff: stabilise and simplify the forward graph.
pub fn before_autodiff(g: &Graph, roots: &[NodeId]) -> (Graph, Vec<NodeId>) {
    rewrite(g, roots, &[STABILISE, SIMPLIFY])
}

/// Passes after autodiff: simplify and stabilise the joint forward + backward graph.
pub fn after_autodiff(g: &Graph, roots: &[NodeId]) -> (Graph, Vec<NodeId>) {
    rewrite(g, roots, &[SIMPLIFY, STABILISE])
}

/// Shape specialisation: replaces every `axis_size` by its value for the bound sizes, then
/// simplifies again (guards on counts, `where` on constant conditions, ... fold away).
pub fn bind_sizes(src: &Graph, roots: &[NodeId], sizes: &[usize]) -> (Graph, Vec<NodeId>) {
    let mut g = Graph::new(src.space.clone());
    let mut map: Vec<NodeId> = vec![NodeId::MAX; src.len()];
    let live = src.reachable(roots);
    for id in 0..src.len() {
        if !live[id] {
            continue;
        }
        let n = src.node(id as NodeId);
        map[id] = match (n.op, n.attr) {
            (Op::Const, _) => g.c(const_value(n).unwrap_or(f64::NAN)),
            (Op::Input, Attr::Input(i)) => g.input(i as usize, n.axes),
            (Op::AxisSize, Attr::Axes(a)) => {
                let count: usize = sizes
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| a & (1 << k) != 0)
                    .map(|(_, &s)| s)
                    .product();
                g.c(count as f64)
            }
            _ => g.add(
                n.op,
                n.args.iter().map(|&a| map[a as usize]).collect(),
                n.attr,
            ),
        };
    }
    let r: Vec<NodeId> = roots.iter().map(|&x| map[x as usize]).collect();
    rewrite(&g, &r, &[SIMPLIFY, STABILISE])
}

/// Kernel preparation after size binding. The stable primitives of one `x` are grouped into one
/// instruction by the VM's code generator, so nothing is expanded here.
pub fn for_kernels(g: &Graph, roots: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let (g, r) = rewrite(g, roots, &[SIMPLIFY]);
    fuse_products(&g, &r)
}

/// Product fusion, for kernels: a product used once is folded into its user —
/// `a*b + c -> mul_add(a, b, c)`, `c + a*b -> mul_add(a, b, c)`, `a*b - c -> mul_sub(a, b, c)`,
/// `(a*b)*c -> mul3(a, b, c)`, `c*(a*b) -> mul3(a, b, c)`. Same roundings in the same order
/// (IEEE + and * commute exactly), one instruction and one memory round trip fewer.
pub fn fuse_products(src: &Graph, roots: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let live = src.reachable(roots);
    let mut uses = vec![0usize; src.len()];
    for (id, &l) in live.iter().enumerate() {
        if l {
            for &a in &src.node(id as NodeId).args {
                uses[a as usize] += 1;
            }
        }
    }
    for &r in roots {
        uses[r as usize] += 1;
    }
    let mut g = Graph::new(src.space.clone());
    let mut map: Vec<NodeId> = vec![NodeId::MAX; src.len()];
    for (id, &l) in live.iter().enumerate() {
        if !l {
            continue;
        }
        let n = src.node(id as NodeId);
        let single_mul = |x: NodeId| src.node(x).op == Op::Mul && uses[x as usize] == 1;
        let m = |x: NodeId| map[x as usize];
        map[id] = match (n.op, n.attr) {
            (Op::Const, _) => g.c(const_value(n).unwrap_or(f64::NAN)),
            (Op::Input, Attr::Input(i)) => g.input(i as usize, n.axes),
            (Op::Add, _) | (Op::Sub, _) | (Op::Mul, _) => {
                let (x, y) = (n.args[0], n.args[1]);
                let parts = |p: NodeId| {
                    let pn = src.node(p);
                    (m(pn.args[0]), m(pn.args[1]))
                };
                match n.op {
                    Op::Add if single_mul(x) => {
                        let (a, b) = parts(x);
                        g.op3(Op::MulAdd, a, b, m(y))
                    }
                    Op::Add if single_mul(y) => {
                        let (a, b) = parts(y);
                        g.op3(Op::MulAdd, a, b, m(x))
                    }
                    Op::Sub if single_mul(x) => {
                        let (a, b) = parts(x);
                        g.op3(Op::MulSub, a, b, m(y))
                    }
                    Op::Mul if single_mul(x) => {
                        let (a, b) = parts(x);
                        g.op3(Op::Mul3, a, b, m(y))
                    }
                    Op::Mul if single_mul(y) => {
                        let (a, b) = parts(y);
                        g.op3(Op::Mul3, a, b, m(x))
                    }
                    _ => g.add(n.op, n.args.iter().map(|&a| m(a)).collect(), n.attr),
                }
            }
            _ => g.add(n.op, n.args.iter().map(|&a| m(a)).collect(), n.attr),
        };
    }
    let r = roots.iter().map(|&x| map[x as usize]).collect();
    (g, r)
}
