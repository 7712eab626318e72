//! Checking helper functions on their own. A `fn` is inlined and fully checked where a loss
//! calls it; one that no loss calls (a file of helpers only, like `common.loss`) would otherwise
//! never be looked at. This walks every `fn` of the root file without a caller: names must be
//! parameters or earlier `let`s (E0002), calls must reach an op, helper or loss in scope (E0003)
//! with an arity it accepts (E0004), and axis lists may not repeat an axis (E0011) and, when the
//! program's losses declare axes, must name them (E0007).
//!
//! In: a [`Program`]. Out: diagnostics. Never here: types or shapes of values (a helper's
//! arguments have none until it is called), graphs.

use std::collections::HashSet;

use crate::ir::program::{Def, Program};
use crate::ops;
use crate::syntax::ast::*;
use crate::syntax::diag::{suggest, Code, Diagnostic, Diagnostics, FileId};

/// Checks every `fn` of the root file (file 0); returns how many were checked.
pub fn check_root_helpers(prog: &Program, diags: &mut Diagnostics) -> usize {
    let Some(file) = prog.files.first() else {
        return 0;
    };
    let axes: HashSet<&str> = prog
        .files
        .iter()
        .flat_map(|f| f.losses.iter())
        .flat_map(|l| l.inputs.iter())
        .flat_map(|i| i.shape.iter())
        .map(|a| a.name.name.as_str())
        .collect();
    for f in &file.fns {
        let mut w = Walker {
            prog,
            file: 0,
            axes: &axes,
            scope: f.params.iter().map(|p| p.name.clone()).collect(),
            diags,
        };
        w.stmts(&f.body.stmts);
        w.expr(&f.body.result, false);
    }
    file.fns.len()
}

struct Walker<'a> {
    prog: &'a Program,
    file: FileId,
    axes: &'a HashSet<&'a str>,
    scope: Vec<String>,
    diags: &'a mut Diagnostics,
}

impl Walker<'_> {
    fn stmts(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            match s {
                Stmt::Let(name, e) => {
                    self.expr(e, false);
                    self.scope.push(name.name.clone());
                }
                Stmt::Assign(name, e) => {
                    self.expr(e, false);
                    if !self.scope.contains(&name.name) {
                        self.diags.push(super::lower::unbound_assignment(name));
                    }
                }
                Stmt::For(l) => {
                    self.expr(&l.lo, false);
                    self.expr(&l.hi, false);
                    let outer = self.scope.len();
                    self.scope.push(l.var.name.clone());
                    self.stmts(&l.body);
                    self.scope.truncate(outer);
                }
            }
        }
    }

    /// `option_ok`: a bare unknown name is an option value here (`reduction = image` passed
    /// to a loss), not an error.
    fn expr(&mut self, e: &Expr, option_ok: bool) {
        crate::syntax::grow_stack(|| self.expr_at(e, option_ok))
    }

    fn expr_at(&mut self, e: &Expr, option_ok: bool) {
        match &e.kind {
            ExprKind::Number(_) => {}
            ExprKind::Name(n) => {
                if !option_ok && !self.scope.iter().any(|s| s == n) {
                    let mut d = Diagnostic::new(Code::E0002, e.span, format!("unknown name `{n}`"))
                        .label("not defined here");
                    d = match suggest(n, self.scope.iter().map(|s| s.as_str())) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => {
                            d.help("names in a helper are its parameters and its `let` bindings")
                        }
                    };
                    self.diags.push(d);
                }
            }
            ExprKind::AxisList(list) => {
                let mut seen = HashSet::new();
                for a in list {
                    if !seen.insert(a.name.as_str()) {
                        self.diags.push(
                            Diagnostic::new(
                                Code::E0011,
                                a.span,
                                format!("axis `{}` appears twice", a.name),
                            )
                            .label("repeated axis"),
                        );
                    } else if !self.axes.is_empty() && !self.axes.contains(a.name.as_str()) {
                        let mut names: Vec<&str> = self.axes.iter().copied().collect();
                        names.sort_unstable();
                        let mut d = Diagnostic::new(
                            Code::E0007,
                            a.span,
                            format!("unknown axis `{}`", a.name),
                        )
                        .label("no loss of this program declares it")
                        .help(format!("the declared axes are {}", names.join(", ")));
                        if let Some(s) = suggest(&a.name, names.iter().copied()) {
                            d = d.help(format!(
                                "did you mean `{s}`? (the declared axes are {})",
                                names.join(", ")
                            ));
                        }
                        self.diags.push(d);
                    }
                }
            }
            ExprKind::Prefix(_, x) => self.expr(x, false),
            ExprKind::Chain(first, links) => {
                self.expr(first, false);
                for l in links {
                    self.expr(&l.rhs, false);
                }
            }
            ExprKind::Power(base, exps) => {
                self.expr(base, false);
                for x in exps {
                    self.expr(&x.operand, false);
                }
            }
            ExprKind::Match { scrutinee, arms } => {
                if !self.scope.iter().any(|s| s == &scrutinee.name) {
                    self.diags.push(
                        Diagnostic::new(
                            Code::E0002,
                            scrutinee.span,
                            format!("unknown name `{}`", scrutinee.name),
                        )
                        .label("not a parameter of this helper"),
                    );
                }
                for (_, body) in arms {
                    self.expr(body, false);
                }
            }
            ExprKind::Call { name, args, kwargs } => self.call(name, args, kwargs),
        }
    }

    fn call(&mut self, name: &Ident, args: &[Expr], kwargs: &[(Ident, Expr)]) {
        let n = args.len();
        let def = self
            .prog
            .scopes
            .get(self.file)
            .and_then(|s| s.get(&name.name))
            .copied();
        let (accepted, loss_call): (Vec<usize>, bool) = match def {
            Some(d @ Def::Fn(..)) => {
                let p = self.prog.func(d).map_or(0, |f| f.params.len());
                (vec![p], false)
            }
            // Inputs may also be passed by name, so any number of positional ones up to the
            // loss's inputs is accepted (as lowering does).
            Some(d @ Def::Loss(..)) => {
                let max = self.prog.loss(d).map_or(0, |l| l.inputs.len());
                ((0..=max).collect(), true)
            }
            // `mean`, `index`, `labelled`, `size`, `unreduced`: one positional argument each.
            None if super::lower::BUILTINS.contains(&name.name.as_str()) => (vec![1], false),
            None => (ops::arities(&name.name), false),
        };
        if accepted.is_empty() {
            let d = super::call::unknown_function(self.prog, self.file, name);
            self.diags.push(d);
        } else if !accepted.contains(&n) {
            self.diags
                .push(super::call::wrong_arity(name, &accepted, n));
        }
        for a in args {
            self.expr(a, false);
        }
        for (_, v) in kwargs {
            self.expr(v, loss_call && matches!(v.kind, ExprKind::Name(_)));
        }
    }
}
