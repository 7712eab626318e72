//! Calls while lowering: ops of the table (elementwise and reductions, with `over`), `mean`,
//! helper functions and losses called like functions — arity, keyword arguments, argument kinds
//! and axes checked, bodies inlined.
//!
//! In: a call expression and its environment. Out: a value of the graph being built. Never here:
//! the other expression forms (see `lower`).

use std::collections::HashMap;

use crate::ir::graph::Axes;
use crate::ir::program::Def;
use crate::ops::{self, Class, Op};
use crate::syntax::ast::*;
use crate::syntax::diag::{suggest, Code, Diagnostic};

use super::lower::*;

impl<'a> Cx<'a> {
    /// The one tensor argument of the builtin `name` (E0004 naming `usage` otherwise).
    fn one_tensor(
        &mut self,
        name: &Ident,
        args: &[Expr],
        kwargs: &[(Ident, Expr)],
        env: &Env,
        usage: &str,
    ) -> Option<crate::ir::graph::NodeId> {
        if args.len() != 1 || !kwargs.is_empty() {
            self.err(
                Diagnostic::new(
                    Code::E0004,
                    name.span,
                    format!("`{}` takes one value", name.name),
                )
                .label("wrong arguments")
                .help(format!("write `{usage}`")),
            );
            return None;
        }
        let v = self.expr(&args[0], env);
        self.tensor(v, args[0].span, &format!("the argument of `{}`", name.name))
    }

    pub(super) fn call(
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
        if name.name == "index" {
            return self.axis_index(name, args, kwargs, span, env);
        }
        if name.name == "size" {
            // `size([A, ..])`: the number of elements along the axes, bound at call time.
            let axes = match args {
                [a] if kwargs.is_empty() => self.expr(a, env),
                _ => Val::Err,
            };
            return match axes {
                Val::Axes(m) => {
                    let id = self.g.axis_size(m);
                    self.note(id, span)
                }
                _ => self.err(
                    Diagnostic::new(Code::E0012, name.span, "`size` takes one axis list")
                        .label("not an axis list")
                        .help("write e.g. `size([C])`"),
                ),
            };
        }
        if name.name == "unreduced" {
            // `unreduced(x)`: x itself; a loss returning it keeps x's axes (one value per
            // group, e.g. `reduction = none`), its value then seeded by an extra input.
            let Some(x) = self.one_tensor(name, args, kwargs, env, "unreduced(per_group)") else {
                return Val::Err;
            };
            self.unreduced.insert(x);
            return Val::T(x);
        }
        if name.name == "term" {
            return self.term(name, args, kwargs, span, env);
        }
        if name.name == "labelled" {
            // `labelled(x)`: 0 where x is an input given as labels and the label is the ignore
            // value, else 1 (also for an input given one-hot).
            let Some(x) = self.one_tensor(name, args, kwargs, env, "labelled(target)") else {
                return Val::Err;
            };
            let id = match self.labelled.get(&x) {
                Some(&keep) => keep,
                None => self.g.c(1.0),
            };
            return self.note(id, span);
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
                let order = matches!(op.def().class, Class::Order { .. });
                if let Some((k, _)) = kwargs.iter().find(|(k, _)| !(order && k.name == "over")) {
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
                if let Some(image_args) = op.def().class.image_args() {
                    let last = self.g.space.names.len().checked_sub(1);
                    let window = matches!(op.def().class, Class::Window { .. });
                    if window && !last.is_some_and(|a| self.g.space.packs[a]) {
                        return self.err(
                            Diagnostic::new(
                                Code::E0027,
                                name.span,
                                format!("`{}` needs the loss's spatial axes", name.name),
                            )
                            .label("window op")
                            .help(
                                "declare the spatial axes as the last axis, a pack: `[B, C, ..S]`",
                            ),
                        );
                    }
                    for (k, a) in args.iter().enumerate().skip(image_args) {
                        if ops::const_value(self.g.node(ids[k])).is_none() {
                            return self.err(
                                Diagnostic::new(
                                    Code::E0026,
                                    a.span,
                                    format!(
                                        "argument {} of `{}` must be known when the loss compiles",
                                        k + 1,
                                        name.name
                                    ),
                                )
                                .label("not a constant")
                                .help("use a number, a parameter, or arithmetic on them"),
                            );
                        }
                    }
                    // The constants' own ranges (odd windows, positive sigmas), at the call;
                    // against the sides when shapes bind.
                    let consts: Vec<f64> = ids[image_args..]
                        .iter()
                        .map(|&c| ops::const_value(self.g.node(c)).unwrap_or(f64::NAN))
                        .collect();
                    if let Err(why) = ops::window::validate_consts(op, &consts, None) {
                        return self.err(
                            Diagnostic::new(Code::E0030, span, format!("`{}`: {why}", name.name))
                                .label("invalid constant argument"),
                        );
                    }
                }
                let mut attr = crate::ir::graph::Attr::None;
                if order {
                    // The group: every axis of the arguments unless `over` names fewer.
                    let xa = ids.iter().fold(0, |m, &a| m | self.g.axes(a));
                    let mut over = xa;
                    if let Some((_, e)) = kwargs.first() {
                        match self.expr(e, env) {
                            Val::Axes(m) if m & !xa == 0 && m != 0 => over = m,
                            Val::Err => return Val::Err,
                            _ => {
                                return self.err(
                                    Diagnostic::new(
                                        Code::E0012,
                                        e.span,
                                        format!(
                                        "`over` takes a non-empty list of the arguments' axes {}",
                                        self.g.space.fmt(xa)
                                    ),
                                    )
                                    .label("not an axis list of the arguments"),
                                )
                            }
                        }
                    }
                    attr = crate::ir::graph::Attr::Axes(over);
                }
                let id = self.g.add(op, ids, attr);
                self.note(id, span)
            }
            None => {
                let ar = ops::arities(&name.name);
                if !ar.is_empty() {
                    return self.err(wrong_arity(name, &ar, nargs));
                }
                let d = unknown_function(self.prog, env.file, name);
                self.err(d)
            }
        }
    }

    /// `index([A])`: the coordinate 0, 1, .. along one named (non-pack) axis, as data; e.g.
    /// `labels == index([C])` one-hot encodes class indices, `index([C]) >= 1` drops channel 0.
    pub(super) fn axis_index(
        &mut self,
        name: &Ident,
        args: &[Expr],
        kwargs: &[(Ident, Expr)],
        span: Span,
        env: &Env,
    ) -> Val {
        if let Some((k, _)) = kwargs.first() {
            return self.err(
                Diagnostic::new(
                    Code::E0005,
                    k.span,
                    format!("`index` takes no keyword argument `{}`", k.name),
                )
                .label("unknown keyword"),
            );
        }
        if args.len() != 1 {
            return self.err(
                Diagnostic::new(
                    Code::E0004,
                    name.span,
                    format!("`index` takes one axis list, got {} arguments", args.len()),
                )
                .label("wrong number of arguments")
                .help("write `index([C])`"),
            );
        }
        let axis = match self.expr(&args[0], env) {
            Val::Axes(m) if m.count_ones() == 1 => m,
            Val::Err => return Val::Err,
            _ => {
                return self.err(
                    Diagnostic::new(
                        Code::E0012,
                        args[0].span,
                        "`index` takes a list of one axis such as `[C]`",
                    )
                    .label("not one axis"),
                )
            }
        };
        if self.g.space.packs[axis.trailing_zeros() as usize] {
            return self.err(
                Diagnostic::new(
                    Code::E0012,
                    args[0].span,
                    format!(
                        "`index` counts along a plain axis; {} is a pack of several dimensions",
                        self.g.space.fmt(axis)
                    ),
                )
                .label("pack axis"),
            );
        }
        let id = self
            .g
            .add(Op::AxisIndex, vec![], crate::ir::graph::Attr::Axes(axis));
        self.note(id, span)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn reduction(
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

    pub(super) fn call_fn(
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
        let mut keys = Vec::with_capacity(args.len());
        for (p, a) in f.params.iter().zip(args) {
            let v = self.expr(a, env);
            keys.push(v.key());
            inner.vars.insert(p.name.clone(), v);
        }
        let Def::Fn(_, index) = def else {
            return Val::Err;
        };
        let key = keys
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|k| (file, index, k));
        if let Some(v) = key.as_ref().and_then(|k| self.calls.get(k)) {
            return v.clone();
        }
        if self.g.len() > super::lower::MAX_NODES {
            return self.err(
                Diagnostic::new(
                    Code::E0031,
                    name.span,
                    format!(
                        "inlining `{}` here takes the graph past {} nodes",
                        name.name,
                        super::lower::MAX_NODES
                    ),
                )
                .label("too large once inlined")
                .help("helpers that call others several times with different arguments grow exponentially; compute shared values once with `let`"),
            );
        }
        self.stack.push(name.name.clone());
        let r = self.body(&f.body, inner);
        self.stack.pop();
        if let (Some(k), false) = (key, matches!(r, Val::Err)) {
            self.calls.insert(k, r.clone());
        }
        r
    }

    pub(super) fn call_loss(
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
        self.loss_depth += 1;
        let r = self.body(&loss.body, inner);
        self.loss_depth -= 1;
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

impl Cx<'_> {
    /// `term(name, x)`: x itself, recorded as a term of the loss (its value, and its weighted
    /// value `x · ∂loss/∂x`, come out beside the total) when written in the compiled loss's
    /// own body or its helpers; in a called loss, x alone (that loss's terms are its own).
    fn term(
        &mut self,
        name: &Ident,
        args: &[Expr],
        kwargs: &[(Ident, Expr)],
        span: Span,
        env: &Env,
    ) -> Val {
        let (label, x) = match (args, kwargs.is_empty()) {
            ([l, x], true) => (l, x),
            _ => {
                return self.err(
                    Diagnostic::new(Code::E0004, name.span, "`term` takes a name and a value")
                        .label("wrong arguments")
                        .help("write e.g. `lambda_dice * term(dice, dice(logits, target))`"),
                )
            }
        };
        let ExprKind::Name(label) = &label.kind else {
            return self.err(
                Diagnostic::new(Code::E0012, label.span, "a term's name is a bare name")
                    .label("not a name")
                    .help("write e.g. `term(dice, ...)`"),
            );
        };
        let v = self.expr(x, env);
        let Some(id) = self.tensor(v, x.span, "the value of a term") else {
            return Val::Err;
        };
        if self.g.axes(id) != 0 {
            return self.err(
                Diagnostic::new(
                    Code::E0016,
                    x.span,
                    format!(
                        "term `{label}` has axes {}; a term is a scalar",
                        self.g.space.fmt(self.g.axes(id))
                    ),
                )
                .label("not a scalar"),
            );
        }
        if self.loss_depth == 0 {
            match self.terms.iter().find(|t| t.0 == *label) {
                Some(&(_, other, _)) if other != id => {
                    return self.err(
                        Diagnostic::new(
                            Code::E0011,
                            span,
                            format!("term `{label}` is named twice with different values"),
                        )
                        .label("second term of this name"),
                    )
                }
                Some(_) => {}
                None => self.terms.push((label.clone(), id, span)),
            }
        }
        Val::T(id)
    }
}

/// E0003 for a call of `name` in `file`, with the closest op, builtin, helper or loss in scope.
pub(super) fn unknown_function(
    prog: &crate::ir::program::Program,
    file: crate::syntax::diag::FileId,
    name: &Ident,
) -> Diagnostic {
    let mut cands: Vec<&str> = ops::callable_names().collect();
    cands.extend(BUILTINS.iter().copied());
    let scope: Vec<String> = prog
        .scopes
        .get(file)
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    cands.extend(scope.iter().map(|s| s.as_str()));
    let d = Diagnostic::new(
        Code::E0003,
        name.span,
        format!("unknown function `{}`", name.name),
    )
    .label("not an op, function or loss in scope");
    match suggest(&name.name, cands) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d.help("`use other` brings in the functions and losses of other.loss"),
    }
}

/// E0004 for a call of `name` with `got` positional arguments where it accepts `accepted`.
pub(super) fn wrong_arity(name: &Ident, accepted: &[usize], got: usize) -> Diagnostic {
    let list: Vec<String> = accepted.iter().map(|a| a.to_string()).collect();
    Diagnostic::new(
        Code::E0004,
        name.span,
        format!(
            "`{}` takes {} argument(s), got {got}",
            name.name,
            list.join(" or ")
        ),
    )
    .label("wrong number of arguments")
}
