//! Resolution, type checking and lowering: one loss of a [`Program`] with its parameter values
//! in, a typed [`Lowered`] graph (named axes, constants folded, helper functions and called
//! losses inlined) out. Checks names, arities, keyword arguments, parameter values, axis names,
//! reductions, the scalar result and differentiability, collecting every error it finds.
//!
//! Never here: rewrites, derivatives, evaluation. Axis sizes are unknown here (they bind when a
//! plan is compiled for shapes).

use std::collections::{HashMap, HashSet};

use crate::ir::graph::{Attr, Axes, Graph, NodeId};
use crate::ir::program::{Def, Program};
use crate::ops::{self};
use crate::syntax::ast::*;
use crate::syntax::diag::{suggest, Code, Diagnostic, Diagnostics, FileId};

use super::check::check_differentiable;
use super::signature::root_inputs;
pub use super::signature::signature;
pub use super::signature::{InputSpec, ParamKind, ParamSpec, ParamValue, Signature};

/// A lowered loss: the forward graph, its result node and the node of each input.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub sig: Signature,
    pub graph: Graph,
    /// The scalar value: the loss's result, or for an unreduced result `Σ seed · result`.
    pub result: NodeId,
    /// An unreduced result (`return unreduced(x)`), whose axes the value's seed input has.
    pub values: Option<NodeId>,
    pub input_nodes: Vec<NodeId>,
    /// The source span that first produced each node (for diagnostics).
    pub origins: HashMap<NodeId, Span>,
    /// The live parameters, in the order they were asked for.
    pub live: Vec<LiveParam>,
    /// The loss's named terms (`term(name, x)`), in the order written.
    pub terms: Vec<(String, NodeId)>,
}

/// A parameter lowered as a scalar input read per call instead of a constant (`Loss::live`),
/// so that a plan changes it without compiling again.
#[derive(Clone, Debug)]
pub struct LiveParam {
    pub name: String,
    /// The input index it is read from ([`live_base`] onwards).
    pub index: usize,
    /// The ranges its value must lie in: its own, then those of the parameters of called
    /// losses it is passed to, as (loss, parameter, range).
    pub ranges: Vec<(String, String, ValueRange)>,
}

/// The input index of the first live parameter of a loss that declares `inputs` inputs: one
/// past the seed input an unreduced result adds.
pub fn live_base(inputs: usize) -> usize {
    inputs + 1
}

#[derive(Clone, Debug)]
pub(super) enum Val {
    T(NodeId),
    Axes(Axes),
    /// An option of an enumerated parameter, with the options it was declared with.
    Opt(String, Vec<String>),
    Err,
}

#[derive(Clone)]
pub(super) struct Env {
    pub(super) file: FileId,
    pub(super) vars: HashMap<String, Val>,
}

pub(super) struct Cx<'a> {
    pub(super) prog: &'a Program,
    pub(super) g: Graph,
    pub(super) diags: &'a mut Diagnostics,
    pub(super) origins: HashMap<NodeId, Span>,
    pub(super) stack: Vec<String>,
    pub(super) depth: usize,
    /// One-hot encodings of inputs given as labels, each with its 0/1 "not ignored" node
    /// (what `labelled(x)` returns).
    pub(super) labelled: HashMap<NodeId, NodeId>,
    /// Nodes marked `unreduced(x)`: a loss may return them with their axes.
    pub(super) unreduced: HashSet<NodeId>,
    /// Loop-body copies made so far (bounded by [`MAX_ITERATIONS`]).
    pub(super) iterations: usize,
    /// Helper calls already lowered, by (file, function, arguments): a helper is a pure
    /// function of its arguments and the graph is hash-consed, so a second call with the same
    /// arguments is the first one's value. Without it, helpers calling each other twice per
    /// level inline exponentially (24 levels took 18 s).
    pub(super) calls: HashMap<(FileId, usize, Vec<ArgKey>), Val>,
    /// The root loss's parameters to lower live (taken by the first `bind_params`, the
    /// root's), with the input index of the first.
    pub(super) root_live: (Vec<String>, usize),
    /// The live parameters lowered so far, and the node of each.
    pub(super) live: Vec<LiveParam>,
    pub(super) live_nodes: HashMap<NodeId, usize>,
    /// Losses being inlined below the compiled one (terms are recorded at depth 0 only).
    pub(super) loss_depth: usize,
    /// The compiled loss's terms (`term(name, x)`): name, node, span.
    pub(super) terms: Vec<(String, NodeId, Span)>,
}

/// A helper argument as a memo key (`None` for an erroneous one: not memoised).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum ArgKey {
    T(NodeId),
    Axes(Axes),
    Opt(String, Vec<String>),
}

impl Val {
    pub(super) fn key(&self) -> Option<ArgKey> {
        match self {
            Val::T(id) => Some(ArgKey::T(*id)),
            Val::Axes(a) => Some(ArgKey::Axes(*a)),
            Val::Opt(s, o) => Some(ArgKey::Opt(s.clone(), o.clone())),
            Val::Err => None,
        }
    }
}

pub(super) const BUILTINS: &[&str] = &["mean", "index", "labelled", "size", "term", "unreduced"];
/// The name of the input an unreduced loss adds for the adjoint of its result (the first of
/// these its declared inputs leave free).
const SEED_NAMES: &[&str] = &["seed", "result_seed", "unreduced_seed"];
/// An entry `AS_LABELS + i` among a lowering's absent inputs: input `i` (declared
/// `labels(axis, ignore)`) is given as class indices without `axis`.
pub const AS_LABELS: usize = 1 << 20;
/// An entry `AS_BROADCAST + i * 64 + axis` among a lowering's absent inputs: optional input
/// `i` is given without `axis` (the same for every index of it).
pub const AS_BROADCAST: usize = 1 << 21;
pub(super) const MAX_DEPTH: usize = 64;
/// Most loop-body copies one lowering makes (each copy adds its nodes to the graph).
pub(super) const MAX_ITERATIONS: usize = 10_000;
/// Most graph nodes one lowering may build (E0031).
pub(super) const MAX_NODES: usize = 1_000_000;
/// Deepest nesting of expressions while lowering, counted across inlined helpers and losses
/// (a file's own nesting is bounded by `syntax::parse::MAX_NESTING`).
pub(super) const MAX_EXPR_DEPTH: usize = 512;

/// Lowers `def` with the given parameter values (defaults for the rest), the optional inputs at
/// positions `absent` replaced by their defaults, and the parameters named in `live` as scalar
/// inputs from [`live_base`] on (their values still checked as given).
pub fn lower_with(
    prog: &Program,
    def: Def,
    params: &[(String, ParamValue)],
    absent: &[usize],
    live: &[String],
    diags: &mut Diagnostics,
) -> Option<Lowered> {
    let loss = prog.loss(def)?;
    let Def::Loss(file, _) = def else { return None };
    let before = diags.len();
    let (space, inputs) = root_inputs(loss, diags);
    let mut cx = Cx {
        prog,
        g: Graph::new(space.clone()),
        diags,
        origins: HashMap::new(),
        stack: vec![loss.name.name.clone()],
        depth: 0,
        labelled: HashMap::new(),
        unreduced: HashSet::new(),
        iterations: 0,
        calls: HashMap::new(),
        root_live: (live.to_vec(), live_base(inputs.len())),
        live: Vec::new(),
        live_nodes: HashMap::new(),
        loss_depth: 0,
        terms: Vec::new(),
    };
    let mut given = HashMap::new();
    for (k, v) in params {
        let val = match v {
            ParamValue::Number(x) => Val::T(cx.g.c(*x)),
            ParamValue::Text(s) => Val::Opt(s.clone(), vec![]),
            ParamValue::List(ws) => {
                // A vector parameter's axis (the caller checked the type; NaN is reported as
                // "not finite" if it was not a vector).
                let axis = loss.params.iter().find_map(|p| match &p.ty {
                    ParamType::Vector(a) if p.name.name == *k => space.index(&a.name),
                    _ => None,
                });
                Val::T(match axis {
                    Some(a) => cx.table(ws, a),
                    None => cx.g.c(f64::NAN),
                })
            }
        };
        given.insert(k.clone(), (val, loss.name.span));
    }
    let pvals = cx.bind_params(loss, file, given);
    let mut env = Env { file, vars: pvals };
    let mut input_nodes = Vec::new();
    for (i, inp) in inputs.iter().enumerate() {
        let id = match inp.default {
            Some(d) if absent.contains(&i) => {
                let k = cx.g.c(d);
                cx.g.broadcast(k, inp.mask)
            }
            _ => match &inp.labels {
                // Class indices: one-hot over the axis, an ignored pixel all zeros.
                Some((axis, ignore)) if absent.contains(&(AS_LABELS + i)) => {
                    let labels = cx.g.input(i, inp.mask & !(1 << axis));
                    let ignore = match env.vars.get(ignore) {
                        Some(Val::T(k)) => *k,
                        _ => cx.g.c(f64::NAN),
                    };
                    let keep = cx.g.op2(ops::Op::Ne, labels, ignore);
                    let index = cx.g.add(ops::Op::AxisIndex, vec![], Attr::Axes(1 << axis));
                    let hot = cx.g.op2(ops::Op::Eq, labels, index);
                    let id = cx.g.op2(ops::Op::Mul, hot, keep);
                    cx.labelled.insert(id, keep);
                    id
                }
                _ => match (0..64).find(|a| absent.contains(&(AS_BROADCAST + i * 64 + a))) {
                    Some(axis) => {
                        let given = cx.g.input(i, inp.mask & !(1 << axis));
                        cx.g.broadcast(given, inp.mask)
                    }
                    None => cx.g.input(i, inp.mask),
                },
            },
        };
        cx.origins.insert(id, inp.span);
        input_nodes.push(id);
        env.vars.insert(inp.name.clone(), Val::T(id));
    }
    if !inputs.iter().any(|i| i.diff) {
        cx.diags.push(
            Diagnostic::new(Code::E0010, loss.name.span, format!("loss `{}` declares no differentiable input", loss.name.name))
                .label("nothing to differentiate")
                .help("mark the input the gradient is taken with respect to, e.g. `input logits: [B, C, ..S] diff`"),
        );
    }
    let result = cx.body(&loss.body, env);
    let mut inputs = inputs;
    let mut values = None;
    let result = match result {
        Val::T(id) if cx.unreduced.contains(&id) && cx.g.axes(id) != 0 => {
            // An unreduced result: the value is Σ seed · result for an optional input `seed`
            // with the result's axes (default 1: the sum), the result itself a second output.
            let ax = cx.g.axes(id);
            let name = SEED_NAMES
                .iter()
                .find(|n| !inputs.iter().any(|i| i.name == **n))
                .copied()
                .unwrap_or("seed");
            let n = inputs.len();
            let seed = if absent.contains(&n) {
                let one = cx.g.c(1.0);
                cx.g.broadcast(one, ax)
            } else {
                cx.g.input(n, ax)
            };
            inputs.push(InputSpec {
                name: name.to_string(),
                axes: (0..space.names.len())
                    .filter(|a| ax & (1 << a) != 0)
                    .collect(),
                mask: ax,
                diff: false,
                default: Some(1.0),
                range: None,
                labels: None,
                span: loss.body.result.span,
            });
            input_nodes.push(seed);
            values = Some(id);
            let weighted = cx.g.op2(ops::Op::Mul, seed, id);
            Some(cx.g.reduce(ops::Op::Sum, weighted, ax))
        }
        Val::T(id) => {
            let ax = cx.g.axes(id);
            if ax != 0 {
                cx.diags.push(
                    Diagnostic::new(
                        Code::E0016,
                        loss.body.result.span,
                        format!(
                            "the result of `{}` has axes {}, but a loss must be a scalar",
                            loss.name.name,
                            cx.g.space.fmt(ax)
                        ),
                    )
                    .label("not a scalar")
                    .help({
                        let axes = cx.g.space.fmt(ax);
                        format!("reduce it, e.g. `mean(...)` or `sum(..., over = {axes})`, or return `unreduced(...)` for one value per element of {axes}")
                    }),
                );
            }
            Some(id)
        }
        Val::Err => None,
        _ => {
            cx.diags.push(
                Diagnostic::new(
                    Code::E0012,
                    loss.body.result.span,
                    "the result of a loss must be a tensor",
                )
                .label("not a tensor"),
            );
            None
        }
    };
    let result = result?;
    let mut lowered = Lowered {
        sig: Signature {
            name: loss.name.name.clone(),
            inputs,
            params: vec![],
            space,
        },
        graph: cx.g,
        result,
        values,
        input_nodes,
        origins: cx.origins,
        live: cx.live,
        terms: cx.terms.iter().map(|t| (t.0.clone(), t.1)).collect(),
    };
    check_differentiable(&lowered, cx.diags, &prog.sources);
    if cx.diags.len() > before {
        return None;
    }
    lowered.sig.params = signature(prog, def, &mut Diagnostics::default())
        .map(|s| s.params)
        .unwrap_or_default();
    Some(lowered)
}

impl<'a> Cx<'a> {
    pub(super) fn err(&mut self, d: Diagnostic) -> Val {
        self.diags.push(d);
        Val::Err
    }

    pub(super) fn tensor(&mut self, v: Val, span: Span, what: &str) -> Option<NodeId> {
        match v {
            Val::T(id) => Some(id),
            Val::Err => None,
            Val::Axes(_) => {
                self.err(
                    Diagnostic::new(
                        Code::E0012,
                        span,
                        format!("{what} must be a tensor, not an axis list"),
                    )
                    .label("axis list"),
                );
                None
            }
            Val::Opt(s, _) => {
                self.err(
                    Diagnostic::new(
                        Code::E0012,
                        span,
                        format!("{what} must be a tensor, not the option `{s}`"),
                    )
                    .label("option"),
                );
                None
            }
        }
    }

    pub(super) fn note(&mut self, id: NodeId, span: Span) -> Val {
        self.origins.entry(id).or_insert(span);
        Val::T(id)
    }

    /// Evaluates parameter values: given ones are validated, the rest come from defaults
    /// (which may use earlier parameters).
    pub(super) fn bind_params(
        &mut self,
        loss: &LossDef,
        file: FileId,
        mut given: HashMap<String, (Val, Span)>,
    ) -> HashMap<String, Val> {
        let mut env = Env {
            file,
            vars: HashMap::new(),
        };
        let (live, base) = std::mem::take(&mut self.root_live);
        for p in &loss.params {
            if env.vars.contains_key(&p.name.name) {
                self.err(
                    Diagnostic::new(
                        Code::E0011,
                        p.name.span,
                        format!("parameter `{}` is declared twice", p.name.name),
                    )
                    .label("second declaration"),
                );
                continue;
            }
            let (v, span) = match given.remove(&p.name.name) {
                Some(v) => v,
                None => match (&p.list_default, &p.ty) {
                    // `param w: [C] = [1, 2, 5]`: the list along its axis (checked below and,
                    // for its length, when shapes bind).
                    (Some(ws), ParamType::Vector(a)) => {
                        let v = match self.g.space.index(&a.name) {
                            Some(ax) if !self.g.space.packs[ax] => Val::T(self.table(ws, ax)),
                            _ => Val::T(self.g.c(f64::NAN)),
                        };
                        if let Some(x) = ws.iter().find(|x| !in_range(p.range.as_ref(), **x)) {
                            self.err(param_range_error(&loss.name.name, p, *x, p.default.span));
                        }
                        (v, p.default.span)
                    }
                    (Some(_), _) => {
                        self.err(
                            Diagnostic::new(Code::E0013, p.default.span, format!("parameter `{}` of `{}` takes one number; a list default is for a vector parameter (`param {}: [C] = [..]`)", p.name.name, loss.name.name, p.name.name))
                                .label("a list"),
                        );
                        (Val::Err, p.default.span)
                    }
                    _ => {
                        let v = self.param_arg(&p.default, &env);
                        (v, p.default.span)
                    }
                },
            };
            let mut v = self.check_param(&loss.name.name, p, v, span);
            if let (Some(j), Val::T(_)) = (live.iter().position(|n| *n == p.name.name), &v) {
                // Checked as a constant; read per call from here on.
                let id = self.g.input(base + j, 0);
                self.live_nodes.insert(id, self.live.len());
                self.live.push(LiveParam {
                    name: p.name.name.clone(),
                    index: base + j,
                    ranges: p
                        .range
                        .iter()
                        .map(|r| (loss.name.name.clone(), p.name.name.clone(), *r))
                        .collect(),
                });
                v = Val::T(id);
            }
            env.vars.insert(p.name.name.clone(), v);
        }
        env.vars
    }

    /// The values `ws` along `axis`: `ws[i]` at coordinate `i` of the axis — a select chain on
    /// the axis index, a small node (one value per element of the axis) that the executors
    /// compute once per call, and constants per class once the class axis is unrolled.
    pub(super) fn table(&mut self, ws: &[f64], axis: usize) -> NodeId {
        let Some((&last, rest)) = ws.split_last() else {
            return self.g.c(f64::NAN);
        };
        let index = self
            .g
            .add(ops::Op::AxisIndex, vec![], Attr::Axes(1 << axis));
        let mut acc = self.g.c(last);
        for (i, &w) in rest.iter().enumerate().rev() {
            let k = self.g.c(i as f64);
            let at = self.g.op2(ops::Op::Eq, index, k);
            let w = self.g.c(w);
            acc = self.g.op3(ops::Op::Where, at, w, acc);
        }
        acc
    }

    pub(super) fn check_param(&mut self, loss: &str, p: &ParamDecl, v: Val, span: Span) -> Val {
        let name = &p.name.name;
        if let (ParamType::Vector(axis), Val::T(id)) = (&p.ty, &v) {
            let space = &self.g.space;
            let bad = if axis.name.is_empty() {
                Some((
                    Code::E0012,
                    axis.span,
                    "a vector parameter is declared over exactly one axis".to_string(),
                    "not one axis",
                ))
            } else {
                match space.index(&axis.name) {
                    None => Some((Code::E0007, axis.span, format!("parameter `{name}` of `{loss}` is declared over `{}`, which no input of `{loss}` has", axis.name), "unknown axis")),
                    Some(a) if space.packs[a] => Some((Code::E0012, axis.span, format!("parameter `{name}` of `{loss}` is declared over the pack axis `..{}`", axis.name), "a pack axis")),
                    Some(a) if self.g.axes(*id) & !(1 << a) != 0 => Some((Code::E0013, span, format!("the value of parameter `{name}` of `{loss}` has axes {}", space.fmt(self.g.axes(*id))), "more axes than the parameter's")),
                    Some(_) => None,
                }
            };
            if let Some((code, span, msg, label)) = bad {
                return self.err(Diagnostic::new(code, span, msg).label(label));
            }
            if self.g.axes(*id) != 0 {
                return v; // a list set by the caller (checked there) or a default over the axis
            }
        }
        match (&p.ty, v) {
            (_, Val::Err) => Val::Err,
            (ParamType::Enum(opts), Val::Opt(s, _)) => {
                if opts.contains(&s) {
                    Val::Opt(s, opts.clone())
                } else {
                    let mut d = Diagnostic::new(Code::E0013, span, format!("`{s}` is not an option of `{loss}`'s parameter `{name}`"))
                        .label(format!("expected one of {}", opts.join(" | ")));
                    if let Some(sug) = suggest(&s, opts.iter().map(|x| x.as_str())) {
                        d = d.help(format!("did you mean `{sug}`?"));
                    }
                    self.err(d)
                }
            }
            (ParamType::Enum(opts), _) => self.err(
                Diagnostic::new(Code::E0013, span, format!("parameter `{name}` of `{loss}` takes one of {}", opts.join(" | ")))
                    .label("not an option"),
            ),
            (ty, Val::T(id)) => match ops::const_value(self.g.node(id)) {
                Some(x) if *ty == ParamType::Int && x.fract() != 0.0 => self.err(
                    Diagnostic::new(Code::E0013, span, format!("parameter `{name}` of `{loss}` is an integer, got {x}")).label("not an integer"),
                ),
                Some(x) if !x.is_finite() => self.err(
                    Diagnostic::new(Code::E0013, span, format!("parameter `{name}` of `{loss}` must be finite, got {x}")).label("not finite"),
                ),
                Some(x) if !in_range(p.range.as_ref(), x) => self.err(param_range_error(loss, p, x, span)),
                Some(_) => Val::T(id),
                // A live parameter passed on as it is: the called loss's range holds it too.
                None if *ty == ParamType::Number && self.live_nodes.contains_key(&id) => {
                    let k = self.live_nodes[&id];
                    if let Some(r) = p.range {
                        self.live[k].ranges.push((loss.to_string(), name.clone(), r));
                    }
                    Val::T(id)
                }
                None => self.err(
                    Diagnostic::new(Code::E0013, span, format!("parameter `{name}` of `{loss}` must be a compile-time number"))
                        .label("depends on an input")
                        .help("parameters are fixed when the loss is compiled; pass data through an input instead"),
                ),
            },
            (_, Val::Opt(s, _)) => self.err(
                Diagnostic::new(Code::E0013, span, format!("parameter `{name}` of `{loss}` is a number, not the option `{s}`")).label("expected a number"),
            ),
            (_, Val::Axes(_)) => self.err(
                Diagnostic::new(Code::E0013, span, format!("parameter `{name}` of `{loss}` is a number, not an axis list")).label("expected a number"),
            ),
        }
    }

    /// A parameter argument: a bare unknown name is an option (`reduction = image`).
    pub(super) fn param_arg(&mut self, e: &Expr, env: &Env) -> Val {
        if let ExprKind::Name(n) = &e.kind {
            if !env.vars.contains_key(n) {
                return Val::Opt(n.clone(), vec![]);
            }
        }
        self.expr(e, env)
    }

    pub(super) fn body(&mut self, b: &Body, mut env: Env) -> Val {
        self.stmts(&b.stmts, &mut env, None);
        self.expr(&b.result, &env)
    }

    /// Runs statements into `env`. In a loop body, `outer` holds the names bound outside it:
    /// a `let` may not rebind one of those (an assignment does, and the value carries).
    fn stmts(&mut self, stmts: &[Stmt], env: &mut Env, outer: Option<&HashSet<String>>) {
        for s in stmts {
            match s {
                Stmt::Let(name, e) => {
                    let v = self.expr(e, env);
                    if outer.is_some_and(|o| o.contains(&name.name)) {
                        self.err(
                            Diagnostic::new(
                                Code::E0011,
                                name.span,
                                format!("`{}` is already bound outside this loop", name.name),
                            )
                            .label("a `let` here would hide it from the next iteration")
                            .help(format!(
                                "assign it (`{} = ...`) to carry the value on, or pick another name",
                                name.name
                            )),
                        );
                    }
                    env.vars.insert(name.name.clone(), v);
                }
                Stmt::Assign(name, e) => {
                    let v = self.expr(e, env);
                    if env.vars.contains_key(&name.name) {
                        env.vars.insert(name.name.clone(), v);
                    } else {
                        let d = unbound_assignment(name);
                        self.err(d);
                    }
                }
                Stmt::For(l) => self.repeat(l, env),
            }
        }
    }

    /// A `for` loop, unrolled: the body once per value of the variable (a constant), each copy
    /// seeing the values the previous one assigned.
    fn repeat(&mut self, l: &Loop, env: &mut Env) {
        let bound = |cx: &mut Self, e: &Expr| match cx.expr(e, env) {
            Val::T(id) => match ops::const_value(cx.g.node(id)) {
                Some(x) if x.fract() == 0.0 && x.abs() <= 1e9 => Some(x as i64),
                _ => {
                    cx.err(
                        Diagnostic::new(
                            Code::E0028,
                            e.span,
                            "a loop bound must be a whole number known when the loss compiles",
                        )
                        .label("not a compile-time whole number")
                        .help("use literals, `int` parameters, or arithmetic on them"),
                    );
                    None
                }
            },
            Val::Err => None,
            _ => {
                cx.err(
                    Diagnostic::new(Code::E0012, e.span, "a loop bound must be a number")
                        .label("not a number"),
                );
                None
            }
        };
        let (Some(lo), Some(hi)) = (bound(self, &l.lo), bound(self, &l.hi)) else {
            return;
        };
        let hi = if l.inclusive { hi } else { hi - 1 };
        let count = (hi - lo + 1).max(0) as usize;
        if self.iterations + count > MAX_ITERATIONS {
            self.err(
                Diagnostic::new(
                    Code::E0029,
                    l.span,
                    format!(
                        "compile-time loops repeat their bodies more than {MAX_ITERATIONS} times in all"
                    ),
                )
                .label(format!("this loop alone runs {count} times"))
                .help("each iteration is copied into the graph: use a smaller count"),
            );
            return;
        }
        self.iterations += count;
        let outer: HashSet<String> = env.vars.keys().cloned().collect();
        for i in lo..=hi {
            let mut inner = env.clone();
            let k = self.g.c(i as f64);
            inner.vars.insert(l.var.name.clone(), Val::T(k));
            self.stmts(&l.body, &mut inner, Some(&outer));
            for (name, v) in env.vars.iter_mut() {
                if name != &l.var.name {
                    if let Some(nv) = inner.vars.get(name) {
                        *v = nv.clone();
                    }
                }
            }
        }
    }

    pub(super) fn axes_of(&mut self, list: &[Ident]) -> Option<Axes> {
        let mut m: Axes = 0;
        let mut ok = true;
        for a in list {
            match self.g.space.index(&a.name) {
                Some(i) => m |= 1 << i,
                None => {
                    let names: Vec<&str> = self.g.space.names.iter().map(|s| s.as_str()).collect();
                    let mut d =
                        Diagnostic::new(Code::E0007, a.span, format!("unknown axis `{}`", a.name))
                            .label("not an axis of this loss")
                            .help(format!("the loss's axes are {}", names.join(", ")));
                    if let Some(s) = suggest(&a.name, names.iter().copied()) {
                        d = d.help(format!(
                            "did you mean `{s}`? (the loss's axes are {})",
                            names.join(", ")
                        ));
                    }
                    self.err(d);
                    ok = false;
                }
            }
        }
        ok.then_some(m)
    }

    /// Lowers an expression. Recursion follows brackets and calls only (chains are flat), and
    /// its depth through inlined helpers is bounded by [`MAX_EXPR_DEPTH`] (E0021).
    pub(super) fn expr(&mut self, e: &Expr, env: &Env) -> Val {
        if self.depth >= MAX_EXPR_DEPTH {
            return self.err(
                Diagnostic::new(
                    Code::E0021,
                    e.span,
                    format!(
                        "expressions nest more than {MAX_EXPR_DEPTH} deep through inlined calls"
                    ),
                )
                .label("too deep here")
                .help("split the expression with `let` bindings"),
            );
        }
        self.depth += 1;
        // Unoptimised builds have large frames: the stack grows on the heap rather than
        // overflow near the depth bound (stacker is pest's own guard too).
        let v = crate::syntax::grow_stack(|| self.expr_at(e, env));
        self.depth -= 1;
        v
    }

    pub(super) fn expr_at(&mut self, e: &Expr, env: &Env) -> Val {
        match &e.kind {
            ExprKind::Number(v) if !v.is_finite() => self.err(
                Diagnostic::new(Code::E0019, e.span, "number literal out of range")
                    .label("larger than the largest finite f64 (about 1.8e308)")
                    .help("write a finite number"),
            ),
            ExprKind::Number(v) => {
                let id = self.g.c(*v);
                self.note(id, e.span)
            }
            ExprKind::Name(n) => match env.vars.get(n) {
                Some(v) => v.clone(),
                None => {
                    let mut d = Diagnostic::new(Code::E0002, e.span, format!("unknown name `{n}`"))
                        .label("not defined here");
                    if let Some(s) = suggest(n, env.vars.keys().map(|k| k.as_str())) {
                        d = d.help(format!("did you mean `{s}`?"));
                    } else if self.g.space.index(n).is_some() {
                        d = d.help(format!("`{n}` is an axis; axis lists are written `[{n}]`, e.g. `sum(x, over = [{n}])`"));
                    } else {
                        d = d.help(
                            "names are inputs, parameters, `let` bindings and function parameters",
                        );
                    }
                    self.err(d)
                }
            },
            ExprKind::AxisList(list) => match self.axes_of(list) {
                Some(m) => Val::Axes(m),
                None => Val::Err,
            },
            ExprKind::Prefix(ops, x) => {
                let mut v = self.expr(x, env);
                let mut vspan = x.span;
                for (op, at) in ops.iter().rev() {
                    let s = Span {
                        end: x.span.end,
                        ..*at
                    };
                    v = self.prefix(*op, v, vspan, s);
                    vspan = s;
                }
                v
            }
            ExprKind::Chain(first, links) => {
                let mut acc = self.expr(first, env);
                let mut acc_span = first.span;
                for (k, l) in links.iter().enumerate() {
                    let rhs = self.expr(&l.rhs, env);
                    // The whole chain's span (brackets included) for its last link.
                    let span = if k + 1 == links.len() { e.span } else { l.span };
                    acc = self.binary(l.op, (acc, acc_span), (rhs, l.rhs.span), span);
                    acc_span = span;
                }
                acc
            }
            ExprKind::Power(base, exps) => {
                // Operands are checked left to right; the chain folds from the right:
                // `b ^ u1 x1 ^ u2 x2` = `b ^ u1(x1 ^ u2(x2))`.
                let b = self.expr(base, env);
                let vals: Vec<Val> = exps.iter().map(|x| self.expr(&x.operand, env)).collect();
                let mut acc: Option<(Val, Span)> = None;
                for (x, v) in exps.iter().zip(vals).rev() {
                    let mut v = (v, x.operand.span);
                    if let Some(a) = acc.take() {
                        let s = Span {
                            end: e.span.end,
                            ..x.operand.span
                        };
                        v = (self.binary(BinOp::Pow, v, a, s), s);
                    }
                    for (op, at) in x.prefix.iter().rev() {
                        let s = Span {
                            end: e.span.end,
                            ..*at
                        };
                        v = (self.prefix(*op, v.0, v.1, s), s);
                    }
                    acc = Some(v);
                }
                match acc {
                    Some(a) => self.binary(BinOp::Pow, (b, base.span), a, e.span),
                    None => b,
                }
            }
            ExprKind::Match { scrutinee, arms } => {
                let Some(v) = env.vars.get(&scrutinee.name).cloned() else {
                    return self.err(
                        Diagnostic::new(
                            Code::E0002,
                            scrutinee.span,
                            format!("unknown name `{}`", scrutinee.name),
                        )
                        .label("not defined here"),
                    );
                };
                match v {
                    Val::Opt(s, opts) => {
                        let mut bad = false;
                        for (arm, _) in arms {
                            // Arms for options the parameter lacks are unreachable: an error in
                            // the loss's own file, ignored in a helper from a used file (a
                            // library helper serves parameters with fewer options).
                            if !opts.is_empty() && !opts.contains(&arm.name) && env.file == 0 {
                                bad = true;
                                self.err(
                                    Diagnostic::new(
                                        Code::E0013,
                                        arm.span,
                                        format!(
                                            "`{}` is not an option of `{}`",
                                            arm.name, scrutinee.name
                                        ),
                                    )
                                    .label(format!("options are {}", opts.join(" | "))),
                                );
                            }
                        }
                        if bad {
                            return Val::Err;
                        }
                        match arms.iter().find(|(a, _)| a.name == s) {
                            Some((_, body)) => self.expr(body, env),
                            None => self.err(
                                Diagnostic::new(
                                    Code::E0013,
                                    e.span,
                                    format!("no arm for `{} = {s}`", scrutinee.name),
                                )
                                .label("incomplete match")
                                .help(format!("add an arm `{s} => ...`")),
                            ),
                        }
                    }
                    // A number known at compile time (an `int` parameter): arms are numbers.
                    Val::T(id) if let Some(x) = ops::const_value(self.g.node(id)) => {
                        if let Some((arm, _)) =
                            arms.iter().find(|(a, _)| a.name.parse::<f64>().is_err())
                        {
                            return self.err(
                                Diagnostic::new(
                                    Code::E0013,
                                    arm.span,
                                    format!(
                                        "`{}` is a number: its arms are numbers, not `{}`",
                                        scrutinee.name, arm.name
                                    ),
                                )
                                .label("not a number"),
                            );
                        }
                        match arms.iter().find(|(a, _)| a.name.parse::<f64>() == Ok(x)) {
                            Some((_, body)) => self.expr(body, env),
                            None => self.err(
                                Diagnostic::new(
                                    Code::E0013,
                                    e.span,
                                    format!("no arm for `{} = {x}`", scrutinee.name),
                                )
                                .label("incomplete match")
                                .help(format!("add an arm `{x} => ...`")),
                            ),
                        }
                    }
                    Val::Err => Val::Err,
                    _ => self.err(
                        Diagnostic::new(
                            Code::E0012,
                            scrutinee.span,
                            format!(
                                "`match` needs an option-valued or constant parameter; `{}` is not one",
                                scrutinee.name
                            ),
                        )
                        .label("not an option"),
                    ),
                }
            }
            ExprKind::Call { name, args, kwargs } => self.call(name, args, kwargs, e.span, env),
        }
    }

    /// `op x` for a prefix operator, `x` already evaluated (its span `xs`).
    pub(super) fn prefix(&mut self, op: UnOp, x: Val, xs: Span, span: Span) -> Val {
        let what = format!("the operand of `{}`", op.symbol());
        match self.tensor(x, xs, &what) {
            Some(id) => {
                let op = ops::by_symbol(op.symbol(), 1)
                    .expect("every prefix operator has a table entry (ops::tests)");
                let r = self.g.op1(op, id);
                self.note(r, span)
            }
            None => Val::Err,
        }
    }

    /// `a op b` for an infix operator, both operands already evaluated (with their spans).
    pub(super) fn binary(
        &mut self,
        op: BinOp,
        (a, sa): (Val, Span),
        (b, sb): (Val, Span),
        span: Span,
    ) -> Val {
        let what = format!("an operand of `{}`", op.symbol());
        let ia = self.tensor(a, sa, &what);
        let ib = self.tensor(b, sb, &what);
        match (ia, ib) {
            (Some(x), Some(y)) => {
                let op = ops::by_symbol(op.symbol(), 2)
                    .expect("every infix operator has a table entry (ops::tests)");
                let id = self.g.op2(op, x, y);
                self.note(id, span)
            }
            _ => Val::Err,
        }
    }
}

/// E0002 for `name = ...` where nothing called `name` is bound.
pub(super) fn unbound_assignment(name: &Ident) -> Diagnostic {
    Diagnostic::new(
        Code::E0002,
        name.span,
        format!("assignment to unknown name `{}`", name.name),
    )
    .label("not bound before")
    .help(format!("bind it first: `let {} = ...`", name.name))
}

/// Whether `x` lies in a parameter's declared range (any finite value without one).
pub(crate) fn in_range(range: Option<&ValueRange>, x: f64) -> bool {
    x.is_finite() && range.is_none_or(|r| r.lo <= x && x <= r.hi)
}

/// E0013 for a parameter value outside its declared range.
fn param_range_error(loss: &str, p: &ParamDecl, x: f64, span: Span) -> Diagnostic {
    let takes = match p.range {
        Some(r) => format!("takes values in [{}, {}]", r.lo, r.hi),
        None => "must be finite".to_string(),
    };
    Diagnostic::new(
        Code::E0013,
        span,
        format!("parameter `{}` of `{loss}` {takes}, got {x}", p.name.name),
    )
    .label("outside the declared range")
}
