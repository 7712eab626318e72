//! Resolution, type checking and lowering: one loss of a [`Program`] with its parameter values
//! in, a typed [`Lowered`] graph (named axes, constants folded, helper functions and called
//! losses inlined) out. Checks names, arities, keyword arguments, parameter values, axis names,
//! reductions, the scalar result and differentiability, collecting every error it finds.
//!
//! Never here: rewrites, derivatives, evaluation. Axis sizes are unknown here (they bind when a
//! plan is compiled for shapes).

use std::collections::HashMap;

use crate::ir::graph::{Axes, AxisSpace, Graph, NodeId};
use crate::ir::program::{Def, Program};
use crate::ops::{self, Class, Op};
use crate::syntax::ast::*;
use crate::syntax::diag::{suggest, Code, Diagnostic, Diagnostics, FileId};

/// A parameter value set by a caller.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Number(f64),
    Text(String),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Number(v) => write!(f, "{v}"),
            ParamValue::Text(s) => write!(f, "{s}"),
        }
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Number(v)
    }
}
impl From<i32> for ParamValue {
    fn from(v: i32) -> Self {
        ParamValue::Number(v as f64)
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Text(v.to_string())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Text(v)
    }
}

#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: String,
    /// Axis indices (into the loss's [`AxisSpace`]) in declared order.
    pub axes: Vec<usize>,
    pub mask: Axes,
    pub diff: bool,
    pub default: Option<f64>,
    /// The declared values (`in [lo, hi]`), if any.
    pub range: Option<ValueRange>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamType,
    pub default: ParamValue,
    pub span: Span,
}

/// What a caller needs to know about a loss: its inputs, parameters and axes.
#[derive(Clone, Debug)]
pub struct Signature {
    pub name: String,
    pub inputs: Vec<InputSpec>,
    pub params: Vec<ParamSpec>,
    pub space: AxisSpace,
}

impl Signature {
    pub fn shape_text(&self, i: &InputSpec) -> String {
        let parts: Vec<String> = i
            .axes
            .iter()
            .map(|&a| {
                let n = &self.space.names[a];
                if self.space.packs[a] {
                    format!("..{n}")
                } else {
                    n.clone()
                }
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }
}

/// A lowered loss: the forward graph, its result node and the node of each input.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub sig: Signature,
    pub graph: Graph,
    pub result: NodeId,
    pub input_nodes: Vec<NodeId>,
    /// The source span that first produced each node (for diagnostics).
    pub origins: HashMap<NodeId, Span>,
}

#[derive(Clone, Debug)]
enum Val {
    T(NodeId),
    Axes(Axes),
    /// An option of an enumerated parameter, with the options it was declared with.
    Opt(String, Vec<String>),
    Err,
}

#[derive(Clone)]
struct Env {
    file: FileId,
    vars: HashMap<String, Val>,
}

struct Cx<'a> {
    prog: &'a Program,
    g: Graph,
    diags: &'a mut Diagnostics,
    origins: HashMap<NodeId, Span>,
    stack: Vec<String>,
    depth: usize,
}

const BUILTINS: &[&str] = &["mean"];
const MAX_DEPTH: usize = 64;
/// Deepest nesting of expressions while lowering, counted across inlined helpers and losses
/// (a file's own nesting is bounded by `syntax::parse::MAX_NESTING`).
const MAX_EXPR_DEPTH: usize = 512;

/// The signature of a loss (parameters at their defaults).
pub fn signature(prog: &Program, def: Def, diags: &mut Diagnostics) -> Option<Signature> {
    let loss = prog.loss(def)?;
    let Def::Loss(file, _) = def else { return None };
    let before = diags.len();
    let (space, inputs) = root_inputs(loss, diags);
    let mut cx = Cx {
        prog,
        g: Graph::new(space.clone()),
        diags,
        origins: HashMap::new(),
        stack: vec![],
        depth: 0,
    };
    let vals = cx.bind_params(loss, file, HashMap::new());
    let params = loss
        .params
        .iter()
        .map(|p| ParamSpec {
            name: p.name.name.clone(),
            ty: p.ty.clone(),
            default: match vals.get(&p.name.name) {
                Some(Val::Opt(s, _)) => ParamValue::Text(s.clone()),
                Some(Val::T(id)) => {
                    ParamValue::Number(ops::const_value(cx.g.node(*id)).unwrap_or(f64::NAN))
                }
                _ => ParamValue::Number(f64::NAN),
            },
            span: p.name.span,
        })
        .collect();
    if diags.len() > before {
        return None;
    }
    Some(Signature {
        name: loss.name.name.clone(),
        inputs,
        params,
        space,
    })
}

/// Builds the axis space from the root loss's input declarations.
fn root_inputs(loss: &LossDef, diags: &mut Diagnostics) -> (AxisSpace, Vec<InputSpec>) {
    let mut space = AxisSpace::default();
    let mut inputs = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for inp in &loss.inputs {
        if let Some(first) = seen.get(inp.name.name.as_str()) {
            let _ = first;
            diags.push(
                Diagnostic::new(
                    Code::E0011,
                    inp.name.span,
                    format!("input `{}` is declared twice", inp.name.name),
                )
                .label("second declaration"),
            );
            continue;
        }
        seen.insert(&inp.name.name, inp.name.span);
        let mut axes = Vec::new();
        let mut mask: Axes = 0;
        let mut last: Option<usize> = None;
        let mut packs = 0;
        for a in &inp.shape {
            let idx = match space.index(&a.name.name) {
                Some(i) => {
                    if space.packs[i] != a.pack {
                        let what = if space.packs[i] {
                            "a pack (`..` axes)"
                        } else {
                            "a single axis"
                        };
                        diags.push(
                            Diagnostic::new(
                                Code::E0022,
                                a.name.span,
                                format!(
                                    "axis `{}` was declared as {what} by an earlier input",
                                    a.name.name
                                ),
                            )
                            .label("declared differently here")
                            .help(
                                "write the axis the same way in every input, e.g. `..S` everywhere",
                            ),
                        );
                    }
                    i
                }
                None => {
                    if space.names.len() >= 15 {
                        diags.push(
                            Diagnostic::new(
                                Code::E0023,
                                a.name.span,
                                "a loss may use at most 15 axes",
                            )
                            .label("one too many"),
                        );
                        continue;
                    }
                    space.names.push(a.name.name.clone());
                    space.packs.push(a.pack);
                    space.names.len() - 1
                }
            };
            if mask & (1 << idx) != 0 {
                diags.push(
                    Diagnostic::new(
                        Code::E0011,
                        a.name.span,
                        format!(
                            "axis `{}` appears twice in `{}`",
                            a.name.name, inp.name.name
                        ),
                    )
                    .label("repeated axis"),
                );
                continue;
            }
            if let Some(l) = last {
                if idx < l {
                    diags.push(
                        Diagnostic::new(Code::E0017, a.name.span, format!("axis `{}` comes before `{}` in an earlier input, but after it here", a.name.name, space.names[l]))
                            .label("out of order")
                            .help(format!("declare the axes of `{}` in the loss's axis order: {}", inp.name.name, space.names.join(", "))),
                    );
                }
            }
            if a.pack {
                packs += 1;
            }
            last = Some(idx);
            mask |= 1 << idx;
            axes.push(idx);
        }
        if let Some(r) = inp.range {
            let bad = if !(r.lo.is_finite() && r.hi.is_finite()) {
                Some("its bounds must be finite numbers".to_string())
            } else if r.int && (r.lo.fract() != 0.0 || r.hi.fract() != 0.0) {
                Some(format!(
                    "`in int` takes integer bounds, got [{}, {}]",
                    r.lo, r.hi
                ))
            } else if r.lo > r.hi || (!r.int && r.lo == r.hi) {
                Some(format!(
                    "the lower bound {} is not below the upper bound {}",
                    r.lo, r.hi
                ))
            } else {
                None
            };
            if let Some(why) = bad {
                diags.push(
                    Diagnostic::new(Code::E0020, r.span, format!("invalid value range of input `{}`", inp.name.name))
                        .label(why)
                        .help("write `in [lo, hi]` with lo < hi, or `in int [lo, hi]` with integers lo <= hi"),
                );
            }
        }
        if inp.default.is_some_and(|d| !d.is_finite()) {
            diags.push(
                Diagnostic::new(
                    Code::E0019,
                    inp.name.span,
                    format!("the default of input `{}` is out of range", inp.name.name),
                )
                .label("larger than the largest finite f64 (about 1.8e308)")
                .help("write a finite number"),
            );
        }
        if packs > 1 {
            diags.push(
                Diagnostic::new(
                    Code::E0024,
                    inp.name.span,
                    format!("input `{}` has more than one `..` axis", inp.name.name),
                )
                .label("at most one pack axis per input"),
            );
        }
        inputs.push(InputSpec {
            name: inp.name.name.clone(),
            axes,
            mask,
            diff: inp.diff,
            default: inp.default,
            range: inp.range,
            span: inp.name.span,
        });
    }
    (space, inputs)
}

/// Lowers `def` with the given parameter values (defaults for the rest), the optional inputs at positions `absent` replaced by their defaults.
pub fn lower_with(
    prog: &Program,
    def: Def,
    params: &[(String, ParamValue)],
    absent: &[usize],
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
    };
    let mut given = HashMap::new();
    for (k, v) in params {
        let val = match v {
            ParamValue::Number(x) => Val::T(cx.g.c(*x)),
            ParamValue::Text(s) => Val::Opt(s.clone(), vec![]),
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
            _ => cx.g.input(i, inp.mask),
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
    let result = match result {
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
                    .help(format!(
                        "reduce it, e.g. `mean(...)` or `sum(..., over = {})`",
                        cx.g.space.fmt(ax)
                    )),
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
        input_nodes,
        origins: cx.origins,
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

/// E0009: every `diff` input must reach the result through differentiable argument positions.
fn check_differentiable(
    l: &Lowered,
    diags: &mut Diagnostics,
    sources: &crate::syntax::diag::SourceMap,
) {
    let g = &l.graph;
    for (i, inp) in l.sig.inputs.iter().enumerate() {
        if !inp.diff {
            continue;
        }
        let src = l.input_nodes[i];
        let n = l.result as usize + 1;
        let mut dep = vec![false; n.max(src as usize + 1)]; // depends at all
        let mut act = vec![false; n.max(src as usize + 1)]; // depends differentiably
        dep[src as usize] = true;
        act[src as usize] = true;
        let mut blocker: Option<NodeId> = None;
        for id in 0..n {
            let node = g.node(id as NodeId);
            for (k, &a) in node.args.iter().enumerate() {
                if dep[a as usize] {
                    dep[id] = true;
                }
                if act[a as usize] {
                    if node.op.differentiable_arg(k) {
                        act[id] = true;
                    } else if blocker.is_none() {
                        blocker = Some(id as NodeId);
                    }
                }
            }
        }
        if !act[l.result as usize] {
            let mut d = Diagnostic::new(
                Code::E0009,
                inp.span,
                format!(
                    "`{}` does not reach the result through differentiable operations",
                    inp.name
                ),
            )
            .label("declared `diff` here");
            let why = match blocker.and_then(|b| l.origins.get(&b).map(|s| (b, s))) {
                Some((b, s)) => {
                    let (line, col) = sources.line_col(s.file, s.start);
                    format!("it only flows through `{}` (line {line}, column {col}), which has no derivative; use a smooth op, or wrap the path in `stop_grad` and drop `diff` if this is intended", op_symbol(g.node(b).op))
                }
                None if !dep[l.result as usize] => "the result does not use it at all".to_string(),
                None => {
                    "every path to the result passes through a non-differentiable op".to_string()
                }
            };
            d = d.help(why);
            diags.push(d);
        }
    }
}

/// How an op is written in source (operators by their symbol).
fn op_symbol(op: Op) -> &'static str {
    op.def().symbol.unwrap_or(op.name())
}

impl<'a> Cx<'a> {
    fn err(&mut self, d: Diagnostic) -> Val {
        self.diags.push(d);
        Val::Err
    }

    fn tensor(&mut self, v: Val, span: Span, what: &str) -> Option<NodeId> {
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

    fn note(&mut self, id: NodeId, span: Span) -> Val {
        self.origins.entry(id).or_insert(span);
        Val::T(id)
    }

    /// Evaluates parameter values: given ones are validated, the rest come from defaults
    /// (which may use earlier parameters).
    fn bind_params(
        &mut self,
        loss: &LossDef,
        file: FileId,
        mut given: HashMap<String, (Val, Span)>,
    ) -> HashMap<String, Val> {
        let mut env = Env {
            file,
            vars: HashMap::new(),
        };
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
                None => {
                    let v = self.param_arg(&p.default, &env);
                    (v, p.default.span)
                }
            };
            let v = self.check_param(&loss.name.name, p, v, span);
            env.vars.insert(p.name.name.clone(), v);
        }
        env.vars
    }

    fn check_param(&mut self, loss: &str, p: &ParamDecl, v: Val, span: Span) -> Val {
        let name = &p.name.name;
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
                Some(_) => Val::T(id),
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
    fn param_arg(&mut self, e: &Expr, env: &Env) -> Val {
        if let ExprKind::Name(n) = &e.kind {
            if !env.vars.contains_key(n) {
                return Val::Opt(n.clone(), vec![]);
            }
        }
        self.expr(e, env)
    }

    fn body(&mut self, b: &Body, mut env: Env) -> Val {
        for (name, e) in &b.lets {
            let v = self.expr(e, &env);
            env.vars.insert(name.name.clone(), v);
        }
        self.expr(&b.result, &env)
    }

    fn axes_of(&mut self, list: &[Ident]) -> Option<Axes> {
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
    fn expr(&mut self, e: &Expr, env: &Env) -> Val {
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

    fn expr_at(&mut self, e: &Expr, env: &Env) -> Val {
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
                            if !opts.is_empty() && !opts.contains(&arm.name) {
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
                    Val::Err => Val::Err,
                    _ => self.err(
                        Diagnostic::new(
                            Code::E0012,
                            scrutinee.span,
                            format!(
                                "`match` needs an option-valued parameter; `{}` is not one",
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
    fn prefix(&mut self, op: UnOp, x: Val, xs: Span, span: Span) -> Val {
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
    fn binary(&mut self, op: BinOp, (a, sa): (Val, Span), (b, sb): (Val, Span), span: Span) -> Val {
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

    fn call(
        &mut self,
        name: &Ident,
        args: &[Expr],
        kwargs: &[(Ident, Expr)],
        span: Span,
        env: &Env,
    ) -> Val {
        if self.stack.len() > MAX_DEPTH {
            return self.err(
                Diagnostic::new(Code::E0025, name.span, "calls nest too deeply").label("here"),
            );
        }
        if name.name == "mean" {
            return self.reduction(Op::Sum, true, name, args, kwargs, span, env);
        }
        if let Some(&def) = self
            .prog
            .scopes
            .get(env.file)
            .and_then(|s| s.get(&name.name))
        {
            if self.stack.iter().any(|s| s == &name.name) {
                return self.err(
                    Diagnostic::new(
                        Code::E0015,
                        name.span,
                        format!("`{}` calls itself", name.name),
                    )
                    .label("recursive call")
                    .help("functions and losses are inlined, so they cannot recurse"),
                );
            }
            return match def {
                Def::Fn(..) => self.call_fn(def, name, args, kwargs, span, env),
                Def::Loss(..) => self.call_loss(def, name, args, kwargs, span, env),
            };
        }
        let nargs = args.len();
        match ops::lookup(&name.name, nargs) {
            Some(op) if matches!(op.def().class, Class::Reduce { .. }) => {
                self.reduction(op, false, name, args, kwargs, span, env)
            }
            Some(op) => {
                if let Some((k, _)) = kwargs.first() {
                    return self.err(
                        Diagnostic::new(
                            Code::E0005,
                            k.span,
                            format!("`{}` takes no keyword argument `{}`", name.name, k.name),
                        )
                        .label("unknown keyword"),
                    );
                }
                let mut ids = Vec::new();
                for (i, a) in args.iter().enumerate() {
                    let v = self.expr(a, env);
                    if let Some(id) =
                        self.tensor(v, a.span, &format!("argument {} of `{}`", i + 1, name.name))
                    {
                        ids.push(id);
                    }
                }
                if ids.len() != nargs {
                    return Val::Err;
                }
                let id = self.g.add(op, ids, crate::ir::graph::Attr::None);
                self.note(id, span)
            }
            None => {
                let ar = ops::arities(&name.name);
                if !ar.is_empty() {
                    let list: Vec<String> = ar.iter().map(|a| a.to_string()).collect();
                    return self.err(
                        Diagnostic::new(
                            Code::E0004,
                            name.span,
                            format!(
                                "`{}` takes {} argument(s), got {nargs}",
                                name.name,
                                list.join(" or ")
                            ),
                        )
                        .label("wrong number of arguments"),
                    );
                }
                let mut cands: Vec<&str> = ops::callable_names().collect();
                cands.extend(BUILTINS.iter().copied());
                let scope_names: Vec<String> = self
                    .prog
                    .scopes
                    .get(env.file)
                    .map(|s| s.keys().cloned().collect())
                    .unwrap_or_default();
                cands.extend(scope_names.iter().map(|s| s.as_str()));
                let mut d = Diagnostic::new(
                    Code::E0003,
                    name.span,
                    format!("unknown function `{}`", name.name),
                )
                .label("not an op, function or loss in scope");
                d = match suggest(&name.name, cands) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help("`use other` brings in the functions and losses of other.loss"),
                };
                self.err(d)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reduction(
        &mut self,
        op: Op,
        mean: bool,
        name: &Ident,
        args: &[Expr],
        kwargs: &[(Ident, Expr)],
        span: Span,
        env: &Env,
    ) -> Val {
        if args.len() != 1 {
            return self.err(
                Diagnostic::new(
                    Code::E0004,
                    name.span,
                    format!(
                        "`{}` reduces one tensor, got {} arguments",
                        name.name,
                        args.len()
                    ),
                )
                .label("wrong number of arguments")
                .help(format!("write `{}(x, over = [..])`", name.name)),
            );
        }
        let v = self.expr(&args[0], env);
        let Some(x) = self.tensor(v, args[0].span, &format!("the argument of `{}`", name.name))
        else {
            return Val::Err;
        };
        let xa = self.g.axes(x);
        let mut over = xa;
        for (k, e) in kwargs {
            if k.name != "over" {
                return self.err(
                    Diagnostic::new(
                        Code::E0005,
                        k.span,
                        format!("`{}` takes no keyword argument `{}`", name.name, k.name),
                    )
                    .label("unknown keyword")
                    .help("the only keyword of a reduction is `over = [axes]`"),
                );
            }
            match self.expr(e, env) {
                Val::Axes(m) => over = m,
                Val::Err => return Val::Err,
                _ => {
                    return self.err(
                        Diagnostic::new(
                            Code::E0012,
                            e.span,
                            "`over` takes an axis list such as `[B, S]`",
                        )
                        .label("not an axis list"),
                    )
                }
            }
            let missing = over & !xa;
            if missing != 0 {
                return self.err(
                    Diagnostic::new(
                        Code::E0008,
                        e.span,
                        format!(
                            "cannot reduce over {}: the value has axes {}",
                            self.g.space.fmt(missing),
                            self.g.space.fmt(xa)
                        ),
                    )
                    .label("axis not present")
                    .help(format!(
                        "reduce over axes the value has, e.g. `over = {}`",
                        self.g.space.fmt(xa)
                    )),
                );
            }
        }
        if over == 0 {
            return Val::T(x);
        }
        let mut id = self.g.reduce(op, x, over);
        if mean {
            let n = self.g.axis_size(over);
            id = self.g.op2(Op::Div, id, n);
        }
        self.note(id, span)
    }

    fn call_fn(
        &mut self,
        def: Def,
        name: &Ident,
        args: &[Expr],
        kwargs: &[(Ident, Expr)],
        _span: Span,
        env: &Env,
    ) -> Val {
        let Some(f) = self.prog.func(def) else {
            return Val::Err;
        };
        let Def::Fn(file, _) = def else {
            return Val::Err;
        };
        if let Some((k, _)) = kwargs.first() {
            return self.err(
                Diagnostic::new(
                    Code::E0005,
                    k.span,
                    format!("function `{}` takes positional arguments only", name.name),
                )
                .label("keyword argument"),
            );
        }
        if args.len() != f.params.len() {
            let ps: Vec<&str> = f.params.iter().map(|p| p.name.as_str()).collect();
            return self.err(
                Diagnostic::new(
                    Code::E0004,
                    name.span,
                    format!(
                        "`{}` takes {} argument(s) ({}), got {}",
                        name.name,
                        ps.len(),
                        ps.join(", "),
                        args.len()
                    ),
                )
                .label("wrong number of arguments"),
            );
        }
        let mut inner = Env {
            file,
            vars: HashMap::new(),
        };
        for (p, a) in f.params.iter().zip(args) {
            let v = self.expr(a, env);
            inner.vars.insert(p.name.clone(), v);
        }
        self.stack.push(name.name.clone());
        let r = self.body(&f.body, inner);
        self.stack.pop();
        r
    }

    fn call_loss(
        &mut self,
        def: Def,
        name: &Ident,
        args: &[Expr],
        kwargs: &[(Ident, Expr)],
        span: Span,
        env: &Env,
    ) -> Val {
        let Some(loss) = self.prog.loss(def) else {
            return Val::Err;
        };
        let Def::Loss(file, _) = def else {
            return Val::Err;
        };
        let n_in = loss.inputs.len();
        if args.len() > n_in {
            return self.err(
                Diagnostic::new(
                    Code::E0004,
                    name.span,
                    format!(
                        "`{}` takes at most {n_in} positional input(s), got {}",
                        name.name,
                        args.len()
                    ),
                )
                .label("too many arguments")
                .help("parameters are passed by name: `name = value`"),
            );
        }
        let mut bound: Vec<Option<(Val, Span)>> = vec![None; n_in];
        for (i, a) in args.iter().enumerate() {
            bound[i] = Some((self.expr(a, env), a.span));
        }
        let mut given = HashMap::new();
        let mut bad = false;
        for (k, e) in kwargs {
            if let Some(i) = loss.inputs.iter().position(|x| x.name.name == k.name) {
                if bound[i].is_some() {
                    self.err(
                        Diagnostic::new(
                            Code::E0011,
                            k.span,
                            format!("input `{}` is given twice", k.name),
                        )
                        .label("already passed by position"),
                    );
                    bad = true;
                }
                bound[i] = Some((self.expr(e, env), e.span));
            } else if loss.params.iter().any(|p| p.name.name == k.name) {
                let v = self.param_arg(e, env);
                given.insert(k.name.clone(), (v, e.span));
            } else {
                let ps: Vec<&str> = loss.params.iter().map(|p| p.name.name.as_str()).collect();
                let ins: Vec<&str> = loss.inputs.iter().map(|p| p.name.name.as_str()).collect();
                let mut d = Diagnostic::new(
                    Code::E0005,
                    k.span,
                    format!(
                        "parameter `{}` is not declared by `{}`; it declares {}",
                        k.name,
                        name.name,
                        if ps.is_empty() {
                            "no parameters".to_string()
                        } else {
                            ps.iter()
                                .map(|p| format!("`{p}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                )
                .label("unknown parameter");
                if let Some(s) = suggest(&k.name, ps.iter().chain(ins.iter()).copied()) {
                    d = d.help(format!("did you mean `{s}`?"));
                } else {
                    d = d.help(format!("its inputs are {}", ins.join(", ")));
                }
                self.err(d);
                bad = true;
            }
        }
        let pvals = self.bind_params(loss, file, given);
        let mut inner = Env { file, vars: pvals };
        for (i, decl) in loss.inputs.iter().enumerate() {
            let mut want: Axes = 0;
            for a in &decl.shape {
                match self.g.space.index(&a.name.name) {
                    Some(ix) => want |= 1 << ix,
                    None => {
                        self.err(
                            Diagnostic::new(Code::E0007, span, format!("`{}` declares axis `{}` for `{}`, which the calling loss does not have", name.name, a.name.name, decl.name.name))
                                .label("called here")
                                .help(format!("the calling loss's axes are {}", self.g.space.names.join(", "))),
                        );
                        bad = true;
                    }
                }
            }
            let val = match bound[i].take() {
                Some((v, s)) => {
                    match self.tensor(
                        v,
                        s,
                        &format!("input `{}` of `{}`", decl.name.name, name.name),
                    ) {
                        Some(id) => {
                            let have = self.g.axes(id);
                            let is_const = ops::const_value(self.g.node(id)).is_some();
                            let missing = want & !have;
                            let extra = have & !want;
                            if extra != 0 {
                                bad = true;
                                self.err(
                                Diagnostic::new(Code::E0006, s, format!("axis {} of this argument is not declared by `{}` for `{}`", self.g.space.fmt(extra), name.name, decl.name.name))
                                    .label(format!("has axes {}", self.g.space.fmt(have)))
                                    .help(format!("`{}` expects `{}` with axes {}", name.name, decl.name.name, self.g.space.fmt(want))),
                            );
                                Val::Err
                            } else if missing != 0 && !is_const {
                                bad = true;
                                let miss = self.g.space.list(missing).join("`, `");
                                self.err(
                                    Diagnostic::new(
                                        Code::E0006,
                                        s,
                                        format!(
                                            "axis `{miss}` is missing from `{}`",
                                            decl.name.name
                                        ),
                                    )
                                    .label(format!("has axes {}", self.g.space.fmt(have)))
                                    .help(format!(
                                        "`{}` declares `{}` with axes {}",
                                        name.name,
                                        decl.name.name,
                                        self.g.space.fmt(want)
                                    )),
                                );
                                Val::Err
                            } else {
                                Val::T(self.g.broadcast(id, want))
                            }
                        }
                        None => Val::Err,
                    }
                }
                None => match decl.default {
                    Some(c) => {
                        let k = self.g.c(c);
                        Val::T(self.g.broadcast(k, want))
                    }
                    None => {
                        bad = true;
                        self.err(
                            Diagnostic::new(
                                Code::E0004,
                                name.span,
                                format!("missing input `{}` of `{}`", decl.name.name, name.name),
                            )
                            .label("not passed")
                            .help("pass it by position or as `name = value`"),
                        )
                    }
                },
            };
            inner.vars.insert(decl.name.name.clone(), val);
        }
        if bad {
            return Val::Err;
        }
        self.stack.push(name.name.clone());
        let r = self.body(&loss.body, inner);
        self.stack.pop();
        if let Val::T(id) = r {
            if self.g.axes(id) != 0 {
                return self.err(
                    Diagnostic::new(
                        Code::E0016,
                        span,
                        format!("`{}` does not return a scalar", name.name),
                    )
                    .label("called here"),
                );
            }
        }
        r
    }
}
