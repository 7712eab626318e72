//! Graph rewrites. In: a graph and its root nodes. Out: a new graph holding only what the roots
//! reach (dead-node removal), rebuilt bottom-up through an ordered list of named [`Rule`]s, each
//! stated as an identity with the reason it is applied. Hash-consing in the rebuilt graph is the
//! CSE pass; constant folding happens as nodes are built.
//!
//! Invariant: a rewrite never changes a value (up to rounding), and never changes a node's axes
//! (a result with fewer axes is broadcast back). Never here: evaluation or autodiff.

pub mod fuse;
pub mod unroll;

use crate::ir::graph::{Attr, Axes, Graph, Node, NodeId};
use crate::ops::{const_value, Class, Op};

/// A named rewrite. `name` and `identity` document the rule where it is defined (and name it in
/// the tests); the optimiser itself only applies it.
pub struct Rule {
    #[allow(dead_code)] // documentation, read by people
    pub name: &'static str,
    /// The identity, and why it is applied.
    #[allow(dead_code)] // documentation, read by people
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

/// The value a broadcast repeats (the node itself otherwise).
fn unbroadcast(g: &Graph, id: NodeId) -> NodeId {
    un(g, id, Op::Broadcast).unwrap_or(id)
}

fn un(g: &Graph, id: NodeId, op: Op) -> Option<NodeId> {
    let n = g.node(id);
    (n.op == op).then(|| n.args[0])
}

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
    Rule { name: "map_of_broadcast", identity: "f(broadcast(a, A), b) -> broadcast(f(a, b), A') when the arguments without their broadcasts lack axes the result has: f runs on the smaller value (broadcast(C) / C is the constant 1 it is, so a default mask's count folds)",
        apply: |g, n| {
            if n.op.def().class != Class::Map || n.op == Op::StopGrad || !n.args.iter().any(|&a| g.node(a).op == Op::Broadcast) { return None; }
            let inner: Vec<NodeId> = n.args.iter().map(|&a| { let m = g.node(a); if m.op == Op::Broadcast { m.args[0] } else { a } }).collect();
            let axes = inner.iter().fold(0, |m, &a| m | g.axes(a));
            if axes == n.axes { return None; }
            let x = g.add(n.op, inner, n.attr);
            Some(g.broadcast(x, n.axes))
        } },
    Rule { name: "exp_minus_log", identity: "exp(a - (b + log(c))) -> exp(a - b) / c: a softmax from its logsumexp reuses the exponentials the sum already made (one exp per class fewer; exp(a - b) <= 1 stays finite)",
        apply: |g, n| {
            if n.op != Op::Exp { return None; }
            let d = g.node(n.args[0]).clone();
            if d.op != Op::Sub { return None; }
            let s = g.node(d.args[1]).clone();
            if s.op != Op::Add { return None; }
            let (b, l) = if g.node(s.args[1]).op == Op::Log { (s.args[0], s.args[1]) } else if g.node(s.args[0]).op == Op::Log { (s.args[1], s.args[0]) } else { return None };
            let c = g.node(l).args[0];
            let e = g.op2(Op::Sub, d.args[0], b);
            let e = g.op1(Op::Exp, e);
            Some(g.op2(Op::Div, e, c))
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
                if !b.op.def().singular { continue; }
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

/// Factoring, for kernels (after autodiff and size binding): fewer elementwise ops on big values.
pub const COLLECT: &[Rule] = &[
    Rule { name: "small_factors_first", identity: "(p*q)*y -> (p*y)*q when p and y lack axes q has: the product of the small factors is computed once per group, not per element",
        apply: |g, n| {
            if n.op != Op::Mul { return None; }
            for (xi, y) in [(0usize, n.args[1]), (1, n.args[0])] {
                let x = g.node(n.args[xi]).clone();
                if x.op != Op::Mul { continue; }
                // Elementwise ops broadcast by axis name: a broadcast operand can be unwrapped.
                let (y, x0, x1) = (unbroadcast(g, y), unbroadcast(g, x.args[0]), unbroadcast(g, x.args[1]));
                for (p, q) in [(x0, x1), (x1, x0)] {
                    let (small, qa) = (g.axes(p) | g.axes(y), g.axes(q));
                    if small != qa && small & !qa == 0 {
                        let py = g.op2(Op::Mul, p, y);
                        return Some(g.op2(Op::Mul, py, q));
                    }
                }
            }
            None
        } },
    Rule { name: "add_self", identity: "x + x -> 2*x: exact, and a product by a constant the linear collection can merge",
        apply: |g, n| (n.op == Op::Add && n.args[0] == n.args[1]).then(|| { let two = g.c(2.0); g.op2(Op::Mul, two, n.args[0]) }) },
    Rule { name: "sum_of_difference", identity: "sum(a - b) -> sum(a) - sum(b) when one of the two sums is already computed: one elementwise op fewer, the difference taken once on f64 totals",
        apply: |g, n| {
            if n.op != Op::Sum { return None; }
            let d = g.node(n.args[0]).clone();
            if d.op != Op::Sub || g.axes(d.args[0]) != d.axes || g.axes(d.args[1]) != d.axes { return None; }
            let known = |g: &Graph, x: NodeId| g.find_with(Op::Sum, vec![x], n.attr).is_some();
            if !known(g, d.args[0]) && !known(g, d.args[1]) { return None; }
            let (sa, sb) = (g.add(Op::Sum, vec![d.args[0]], n.attr), g.add(Op::Sum, vec![d.args[1]], n.attr));
            Some(g.op2(Op::Sub, sa, sb))
        } },
    Rule { name: "distribute_known_product", identity: "a*(1 - b) -> a - a*b when a*b is already computed: CSE shares the product, one op fewer",
        apply: |g, n| {
            if n.op != Op::Mul { return None; }
            for (a, s) in [(n.args[0], n.args[1]), (n.args[1], n.args[0])] {
                let sn = g.node(s).clone();
                if sn.op == Op::Sub && is_const(g, sn.args[0], 1.0) {
                    if let Some(ab) = g.find(Op::Mul, vec![a, sn.args[1]]) {
                        return Some(g.op2(Op::Sub, a, ab));
                    }
                }
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
    rebuild(src, roots, |g, map, id| {
        let old = src.node(id);
        let base = copy_node(g, old, map);
        match old.op {
            Op::Const | Op::Input => base,
            _ => apply_rules(g, base, rules),
        }
    })
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
    let (g, r) = rebuild(src, roots, |g, map, id| {
        let n = src.node(id);
        match (n.op, n.attr) {
            (Op::AxisSize, Attr::Axes(a)) => {
                let count: usize = sizes
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| a & (1 << k) != 0)
                    .map(|(_, &s)| s)
                    .product();
                g.c(count as f64)
            }
            _ => copy_node(g, n, map),
        }
    });
    rewrite(&g, &r, &[SIMPLIFY, STABILISE])
}

/// Kernel preparation after size binding: simplification and the factoring rules (`COLLECT`),
/// polynomial collection, dead-node removal, then product fusion. The stable primitives of one
/// `x` are grouped into one instruction by the VM's code generator, so nothing is expanded here.
pub fn for_kernels(g: &Graph, roots: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let (g, r) = rewrite(g, roots, &[SIMPLIFY, COLLECT]);
    let (g, r) = collect_polynomial(&g, &r);
    let (g, r) = rewrite(&g, &r, &[SIMPLIFY]);
    fuse_products(&g, &r)
}

/// Rebuilds the part of `src` that `roots` reach, bottom-up: `node(g, map, id)` builds old node
/// `id` in `g` given `map` (old id -> new id) for the nodes before it, and returns its new id.
fn rebuild(
    src: &Graph,
    roots: &[NodeId],
    mut node: impl FnMut(&mut Graph, &[NodeId], NodeId) -> NodeId,
) -> (Graph, Vec<NodeId>) {
    let live = src.reachable(roots);
    let mut g = Graph::new(src.space.clone());
    let mut map: Vec<NodeId> = vec![NodeId::MAX; src.len()];
    for id in 0..src.len() {
        if live[id] {
            map[id] = node(&mut g, &map, id as NodeId);
        }
    }
    let r = roots.iter().map(|&x| map[x as usize]).collect();
    (g, r)
}

/// `n` rebuilt in `g`, its arguments renamed by `map` (old id -> new id).
pub(crate) fn copy_node(g: &mut Graph, n: &Node, map: &[NodeId]) -> NodeId {
    match (n.op, n.attr) {
        (Op::Const, _) => g.c(const_value(n).unwrap_or(f64::NAN)),
        (Op::Input, Attr::Input(i)) => g.input(i as usize, n.axes),
        _ => g.add(
            n.op,
            n.args.iter().map(|&a| map[a as usize]).collect(),
            n.attr,
        ),
    }
}

/// Use counts of the nodes `roots` reach (a root counts as one use).
fn use_counts(src: &Graph, roots: &[NodeId]) -> Vec<usize> {
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
    uses
}

/// One monomial of a polynomial form: `sign * product(factors) * product(atoms)`. Factors are
/// smaller than the form (per group or scalar); atoms (sorted, repeats allowed) are as big as it.
#[derive(Clone)]
struct Term {
    atoms: Vec<NodeId>,
    sign: f64,
    factors: Vec<NodeId>,
}

/// Most monomials one expansion may produce (products of sums multiply their lengths).
const MAX_TERMS: usize = 16;

/// Most nodes one expansion visits: deeper or wider trees are cut into atoms there. This keeps
/// polynomial collection linear in the graph size (every node is the top of one expansion) and
/// its recursion shallow, whatever the length of a source's `a + b + ...` chain.
const EXPAND_BUDGET: usize = 64;

/// Expands the single-use tree of `+`, `-`, negation and `*` under `id` (all as big as `axes`)
/// into monomials, visiting at most `budget` nodes. Returns them with the number of big
/// elementwise ops the tree holds.
fn expand(
    src: &Graph,
    uses: &[usize],
    id: NodeId,
    top: bool,
    axes: Axes,
    budget: &mut usize,
) -> (Vec<Term>, usize) {
    let n = src.node(id);
    let x = unbroadcast(src, id);
    if src.axes(x) != axes {
        return (
            vec![Term {
                atoms: vec![],
                sign: 1.0,
                factors: vec![x],
            }],
            0,
        );
    }
    let atom = || {
        (
            vec![Term {
                atoms: vec![id],
                sign: 1.0,
                factors: vec![],
            }],
            0,
        )
    };
    if !(top || uses[id as usize] == 1) || *budget == 0 {
        return atom();
    }
    *budget -= 1;
    match n.op {
        Op::Add | Op::Sub => {
            let (mut a, ka) = expand(src, uses, n.args[0], false, axes, budget);
            let (mut b, kb) = expand(src, uses, n.args[1], false, axes, budget);
            if n.op == Op::Sub {
                b.iter_mut().for_each(|t| t.sign = -t.sign);
            }
            a.append(&mut b);
            (a, ka + kb + 1)
        }
        Op::Neg => {
            let (mut a, k) = expand(src, uses, n.args[0], false, axes, budget);
            a.iter_mut().for_each(|t| t.sign = -t.sign);
            (a, k + 1)
        }
        Op::Mul => {
            let (a, ka) = expand(src, uses, n.args[0], false, axes, budget);
            let (b, kb) = expand(src, uses, n.args[1], false, axes, budget);
            if a.len() * b.len() > MAX_TERMS {
                return atom();
            }
            let mut out = Vec::new();
            for s in &a {
                for t in &b {
                    let mut atoms = [s.atoms.clone(), t.atoms.clone()].concat();
                    atoms.sort_unstable();
                    out.push(Term {
                        atoms,
                        sign: s.sign * t.sign,
                        factors: [s.factors.clone(), t.factors.clone()].concat(),
                    });
                }
            }
            (out, ka + kb + 1)
        }
        _ => atom(),
    }
}

/// Builds nodes for [`collect_polynomial`], counting the new big elementwise ops.
struct Emit<'a> {
    g: &'a mut Graph,
    axes: Axes,
    ops: usize,
}

impl Emit<'_> {
    fn op(&mut self, op: Op, args: Vec<NodeId>) -> NodeId {
        let existed = self.g.find(op, args.clone()).is_some();
        let id = self.g.add(op, args, Attr::None);
        if !existed && self.g.axes(id) == self.axes {
            self.ops += 1;
        }
        id
    }

    /// `sum_k coef_k * atoms_k`, factoring out the atoms all monomials share, then greedily
    /// the atom most of them share (Horner's scheme over several variables).
    fn sum(&mut self, mut list: Vec<(Vec<NodeId>, NodeId)>) -> Option<NodeId> {
        if list.is_empty() {
            return None;
        }
        let mut common: Vec<NodeId> = Vec::new();
        let first = list[0].0.clone();
        for a in first {
            if list.iter().all(|(m, _)| m.contains(&a)) {
                for (m, _) in &mut list {
                    let k = m.iter().position(|x| *x == a).expect("shared atom");
                    m.remove(k);
                }
                common.push(a);
            }
        }
        let mut best: Option<(NodeId, usize)> = None;
        for (m, _) in &list {
            for &a in m {
                let k = list.iter().filter(|(m2, _)| m2.contains(&a)).count();
                if k >= 2 && best.is_none_or(|(_, kb)| k > kb) {
                    best = Some((a, k));
                }
            }
        }
        let mut r = match best {
            Some((a, _)) => {
                let (mut with, rest): (Vec<_>, Vec<_>) =
                    list.into_iter().partition(|(m, _)| m.contains(&a));
                for (m, _) in &mut with {
                    let k = m.iter().position(|x| *x == a).expect("chosen atom");
                    m.remove(k);
                }
                let inner = self.sum(with).expect("terms");
                let prod = self.op(Op::Mul, vec![inner, a]);
                match self.sum(rest) {
                    Some(x) => self.op(Op::Add, vec![prod, x]),
                    None => prod,
                }
            }
            None => {
                // Plain sum: positive coefficients first, -1 folded into a subtraction.
                let unit = |g: &Graph, c: NodeId| const_value(g.node(c)).filter(|v| v.abs() == 1.0);
                list.sort_by_key(|(m, c)| (unit(self.g, *c) == Some(-1.0), m.is_empty()));
                let mut acc: Option<NodeId> = None;
                for (m, c) in list {
                    let mut t: Option<NodeId> = None;
                    for a in m {
                        t = Some(match t {
                            None => a,
                            Some(x) => self.op(Op::Mul, vec![x, a]),
                        });
                    }
                    let u = unit(self.g, c);
                    acc = Some(match (acc, t, u) {
                        (None, None, _) => c,
                        (None, Some(t), Some(v)) if v > 0.0 => t,
                        (None, Some(t), Some(_)) => self.op(Op::Neg, vec![t]),
                        (Some(x), Some(t), Some(v)) if v > 0.0 => self.op(Op::Add, vec![x, t]),
                        (Some(x), Some(t), Some(_)) => self.op(Op::Sub, vec![x, t]),
                        (acc, Some(t), None) => {
                            let ct = self.op(Op::Mul, vec![c, t]);
                            match acc {
                                None => ct,
                                Some(x) => self.op(Op::Add, vec![x, ct]),
                            }
                        }
                        (Some(x), None, _) => self.op(Op::Add, vec![x, c]),
                    });
                }
                acc.expect("terms")
            }
        };
        for a in common {
            r = self.op(Op::Mul, vec![r, a]);
        }
        Some(r)
    }
}

/// Polynomial collection, for kernels: a single-use tree of `+`, `-`, negation and `*` is
/// expanded into monomials over its big leaves (atoms) with per-group coefficients, equal
/// monomials are merged (their coefficients summed once per group), and the sum is rebuilt
/// with shared atoms factored out — `c*(1-y)*m + d*y*m - e*y*m -> (c + (d - c - e)*y)*m` — when
/// that takes fewer elementwise ops on big values. Values equal up to rounding (sums are
/// reassociated); atoms are never combined, so no identity such as
/// `sigmoid(-x) = 1 - sigmoid(x)` is used.
pub fn collect_polynomial(src: &Graph, roots: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let uses = use_counts(src, roots);
    let polynomial = |op: Op| matches!(op, Op::Add | Op::Sub | Op::Mul | Op::Neg);
    // A node inside a larger tree (used once, by a polynomial op as big as it) is expanded as
    // part of its user's tree; expanding it again on its own would make the pass quadratic
    // in a chain's length.
    let live = src.reachable(roots);
    let mut inner = vec![false; src.len()];
    for (id, &l) in live.iter().enumerate() {
        let n = src.node(id as NodeId);
        if l && polynomial(n.op) {
            for &a in &n.args {
                let x = unbroadcast(src, a);
                if uses[x as usize] == 1 && polynomial(src.node(x).op) && src.axes(x) == n.axes {
                    inner[x as usize] = true;
                }
            }
        }
    }
    rebuild(src, roots, |g, map, id| {
        let n = src.node(id);
        let copy = copy_node(g, n, map);
        if !polynomial(n.op) || inner[id as usize] {
            return copy;
        }
        let mut budget = EXPAND_BUDGET;
        let (terms, old_ops) = expand(src, &uses, id, true, n.axes, &mut budget);
        if old_ops < 2 {
            return copy;
        }
        // Merge equal monomials: one coefficient per atom multiset, in order of appearance.
        let mut list: Vec<(Vec<NodeId>, NodeId)> = Vec::new();
        for t in &terms {
            let atoms: Vec<NodeId> = t.atoms.iter().map(|&a| map[a as usize]).collect();
            let mut p = g.c(t.sign.abs());
            for &f in &t.factors {
                p = g.op2(Op::Mul, p, map[f as usize]);
            }
            match list.iter_mut().find(|(m, _)| *m == atoms) {
                Some((_, c)) if t.sign < 0.0 => *c = g.op2(Op::Sub, *c, p),
                Some((_, c)) => *c = g.op2(Op::Add, *c, p),
                None if t.sign < 0.0 => list.push((atoms, g.op1(Op::Neg, p))),
                None => list.push((atoms, p)),
            }
        }
        // Terms that cancel (`a - a`) are kept as written: dropping them would turn an
        // infinite or NaN atom's NaN into 0.
        if list.iter().all(|(m, _)| m.is_empty())
            || list
                .iter()
                .any(|(_, c)| const_value(g.node(*c)) == Some(0.0))
        {
            return copy;
        }
        let mut e = Emit {
            g: &mut *g,
            axes: n.axes,
            ops: 0,
        };
        let r = e.sum(list).expect("terms");
        if e.ops < old_ops {
            g.broadcast(r, n.axes)
        } else {
            copy
        }
    })
}

/// Product fusion, for kernels: a product used once is folded into its user —
/// `a*b + c -> mul_add(a, b, c)`, `c + a*b -> mul_add(a, b, c)`, `a*b - c -> mul_sub(a, b, c)`,
/// `(a*b)*c -> mul3(a, b, c)`, `c*(a*b) -> mul3(a, b, c)`. Same roundings in the same order
/// (IEEE + and * commute exactly), one instruction and one memory round trip fewer.
pub fn fuse_products(src: &Graph, roots: &[NodeId]) -> (Graph, Vec<NodeId>) {
    let uses = use_counts(src, roots);
    rebuild(src, roots, |g, map, id| {
        let n = src.node(id);
        // Only a product as big as its user is folded into it: a smaller one (per group) is
        // computed once per group, not per element.
        let single_mul =
            |x: NodeId| src.node(x).op == Op::Mul && uses[x as usize] == 1 && src.axes(x) == n.axes;
        let m = |x: NodeId| map[x as usize];
        match n.op {
            Op::Add | Op::Sub | Op::Mul => {
                let (x, y) = (n.args[0], n.args[1]);
                let parts = |p: NodeId| {
                    let pn = src.node(p);
                    (m(pn.args[0]), m(pn.args[1]))
                };
                // (fused op, the single-use product, the other operand)
                let fused = match n.op {
                    Op::Add if single_mul(x) => Some((Op::MulAdd, x, y)),
                    Op::Add if single_mul(y) => Some((Op::MulAdd, y, x)),
                    Op::Sub if single_mul(x) => Some((Op::MulSub, x, y)),
                    Op::Mul if single_mul(x) => Some((Op::Mul3, x, y)),
                    Op::Mul if single_mul(y) => Some((Op::Mul3, y, x)),
                    _ => None,
                };
                match fused {
                    Some((op, p, other)) => {
                        let (a, b) = parts(p);
                        g.op3(op, a, b, m(other))
                    }
                    None => copy_node(g, n, map),
                }
            }
            _ => copy_node(g, n, map),
        }
    })
}

#[cfg(test)]
mod tests;
