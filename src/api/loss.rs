//! [`Loss`]: a loss of a loaded program with its parameter values — loading (from the standard
//! library, a file or a string), parameters, the IR stages, rendering, and gradient checks.
//!
//! In: sources and parameter values. Out: checked losses and their graphs. Never here: shapes or
//! buffers (see `shape` and `plan`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::autodiff;
use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::lower::{self, in_range, InputSpec, Lowered, ParamSpec, ParamValue, Signature};
use crate::ir::program::{Def, Program};
use crate::ir::signature::ParamKind;
use crate::ops::math::Real;
use crate::optimise;
use crate::syntax::ast::ValueRange;
use crate::syntax::diag::suggest;

use super::*;

/// A loss with its parameter values: cheap to clone, compiled per shape with [`Loss::compile`].
#[derive(Clone)]
pub struct Loss {
    pub(super) program: Arc<Program>,
    pub(super) def: Def,
    pub(super) sig: Signature,
    pub(super) params: Vec<(String, ParamValue)>,
    /// The parameters compiled as values read per call ([`Loss::live`]): each one's input
    /// index and ranges.
    pub(super) live: Vec<lower::LiveParam>,
    /// The `Optimised` stage per set of absent optional inputs, computed once for all the plans
    /// compiled from this loss with these parameters (shapes only bind after it).
    pub(super) optimised: StageCache,
}

/// The pipeline's stages, in order — the one list that `compile` (which binds sizes before
/// `Fused`: [`Loss::render_for_shapes`] shows exactly that), `lossc graph` and the tests run a
/// prefix of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// The checked forward graph as written (helpers and called losses inlined).
    Parsed,
    /// After stabilisation and reverse-mode autodiff, before simplification.
    Autodiff,
    /// Forward and backward graph after every rewrite.
    Optimised,
    /// The optimised graph prepared for kernels and partitioned into memory passes and tails.
    Fused,
}

/// Optimised stages by absent optional inputs, shared by the clones of a loss.
pub(super) type StageCache = Arc<Mutex<Vec<(Vec<usize>, Arc<StageGraph>)>>>;

/// The graph of one stage, with its roots named (`value`, `grad.<input>`).
#[derive(Clone)]
pub(crate) struct StageGraph {
    pub graph: Graph,
    pub roots: Vec<(String, NodeId)>,
}

impl Loss {
    /// Compiles the loss defined in `source` (the one named like `name`'s file stem, else the
    /// first). `use` looks in `dir` (if given) and then the standard library.
    pub fn from_source_in(name: &str, source: &str, dir: Option<&Path>) -> Result<Loss> {
        let mut diags = Diagnostics::default();
        let lib = Library::standard();
        let prog = Program::load(name, source, dir.map(|d| d.to_path_buf()), &lib, &mut diags);
        if !diags.is_empty() {
            return Err(compile_error(&diags, &prog));
        }
        let stem = Path::new(name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("");
        let losses = prog.root_losses();
        let def = losses
            .iter()
            .copied()
            .find(|d| prog.loss(*d).is_some_and(|l| l.name.name == stem))
            .or_else(|| losses.first().copied())
            .ok_or_else(|| Error::UnknownLoss {
                name: stem.to_string(),
                hint: format!(": `{name}` defines no `loss`"),
            })?;
        Self::from_program(Arc::new(prog), def)
    }

    /// Compiles the loss defined in a source string.
    pub fn from_source(source: &str) -> Result<Loss> {
        Self::from_source_in("<source>.loss", source, None)
    }

    /// Reads and compiles a `.loss` file; `use` finds files beside it, then in the standard library.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Loss> {
        let path = path.as_ref();
        let src = super::read_source(path)?;
        Self::from_source_in(&path.display().to_string(), &src, path.parent())
    }

    /// Every loss defined in a file (for `lossc check`). The file's helper functions are checked
    /// too (names, arities, axis lists), whether or not a loss calls them.
    pub fn all_in_file(path: &Path) -> Result<Vec<Loss>> {
        let src = super::read_source(path)?;
        let mut diags = Diagnostics::default();
        let prog = Program::load(
            &path.display().to_string(),
            &src,
            path.parent().map(|p| p.to_path_buf()),
            &Library::standard(),
            &mut diags,
        );
        if diags.is_empty() {
            // Helpers no loss calls are checked here, or never.
            crate::ir::helpers::check_root_helpers(&prog, &mut diags);
        }
        if !diags.is_empty() {
            return Err(compile_error(&diags, &prog));
        }
        let prog = Arc::new(prog);
        prog.root_losses()
            .into_iter()
            .map(|d| Self::from_program(prog.clone(), d))
            .collect()
    }

    pub(crate) fn from_program(program: Arc<Program>, def: Def) -> Result<Loss> {
        let mut diags = Diagnostics::default();
        let sig = lower::signature(&program, def, &mut diags);
        let sig = match sig {
            Some(s) if diags.is_empty() => s,
            _ => return Err(compile_error(&diags, &program)),
        };
        let loss = Loss {
            program,
            def,
            sig,
            params: vec![],
            live: vec![],
            optimised: Arc::default(),
        };
        // Check the body once with default parameters, so errors surface at load time.
        let mut loss = loss;
        loss.sig.inputs = loss.lowered(&[])?.sig.inputs;
        Ok(loss)
    }

    pub fn name(&self) -> &str {
        &self.sig.name
    }
    pub fn signature(&self) -> &Signature {
        &self.sig
    }
    pub fn inputs(&self) -> &[InputSpec] {
        &self.sig.inputs
    }
    pub fn params(&self) -> &[ParamSpec] {
        &self.sig.params
    }
    /// The current value of every parameter (defaults unless set).
    pub fn param_values(&self) -> Vec<(String, ParamValue)> {
        self.sig
            .params
            .iter()
            .map(|p| {
                let v = self
                    .params
                    .iter()
                    .find(|(k, _)| k == &p.name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| p.default.clone());
                (p.name.clone(), v)
            })
            .collect()
    }

    /// The parameters set away from their defaults, with their values as text.
    pub(crate) fn params_set(&self) -> Vec<(String, String)> {
        self.sig
            .params
            .iter()
            .filter_map(|p| {
                let (_, v) = self.params.iter().find(|(k, _)| *k == p.name)?;
                (*v != p.default).then(|| (p.name.clone(), v.to_string()))
            })
            .collect()
    }

    /// Each vector parameter set to a list: (name, its axis, the list).
    pub(crate) fn vector_lists(&self) -> Vec<(String, usize, Vec<f64>)> {
        self.param_values()
            .into_iter()
            .filter_map(|(name, v)| {
                let ParamValue::List(ws) = v else { return None };
                let axis = self.sig.params.iter().find_map(|p| match &p.ty {
                    ParamKind::Vector { axis } if p.name == name => self.sig.space.index(axis),
                    _ => None,
                })?;
                Some((name, axis, ws))
            })
            .collect()
    }

    /// Sets a parameter, checking its name and type: numbers for numeric parameters, one of the
    /// declared options for enumerated ones (`"batch"`, `"image"`, `"class"`).
    pub fn set(mut self, name: &str, value: impl Into<ParamValue>) -> Result<Loss> {
        let value = value.into();
        let Some(p) = self.sig.params.iter().find(|p| p.name == name) else {
            return Err(self.unknown_param(name));
        };
        let value = match (&p.ty, value) {
            (ParamKind::Options(opts), ParamValue::Text(s)) if opts.contains(&s) => {
                ParamValue::Text(s)
            }
            (ParamKind::Options(opts), v) => {
                return Err(self.param_error(
                    name,
                    format!("is one of {}", opts.join(" | ")),
                    format!("`{v}`"),
                ))
            }
            (ParamKind::Vector { axis }, ParamValue::List(ws)) => {
                if ws.is_empty() {
                    return Err(self.param_error(
                        name,
                        format!("takes one number per element of axis {axis}"),
                        "an empty list".into(),
                    ));
                }
                if let Some(x) = ws.iter().find(|x| !in_range(p.range.as_ref(), **x)) {
                    return Err(self.range_error(name, p.range.as_ref(), *x));
                }
                ParamValue::List(ws)
            }
            (ParamKind::Vector { .. }, ParamValue::Text(s))
                if s.contains(',') || s.contains('[') =>
            {
                // `1, 2, 3` or `[1, 2, 3]` (command lines).
                let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
                let ws: std::result::Result<Vec<f64>, _> =
                    inner.split(',').map(|x| x.trim().parse::<f64>()).collect();
                match ws {
                    Ok(ws) => return self.set(name, ws),
                    Err(_) => {
                        return Err(self.param_error(
                            name,
                            "is a list of numbers (`1, 0.5, 2`)".into(),
                            format!("`{s}`"),
                        ))
                    }
                }
            }
            (_, ParamValue::List(ws)) => {
                return Err(self.param_error(
                    name,
                    "is a single value (declare it `param name: [C] = ...` for one per class)"
                        .into(),
                    format!("a list of {}", ws.len()),
                ))
            }
            (_, ParamValue::Number(x)) if x.is_finite() && !in_range(p.range.as_ref(), x) => {
                return Err(self.range_error(name, p.range.as_ref(), x))
            }
            (ParamKind::Int, ParamValue::Number(x)) if x.fract() == 0.0 => ParamValue::Number(x),
            (ParamKind::Vector { .. } | ParamKind::Number, ParamValue::Number(x))
                if x.is_finite() =>
            {
                ParamValue::Number(x)
            }
            (ParamKind::Int, ParamValue::Number(x)) => {
                return Err(self.param_error(name, "is an integer".into(), x.to_string()))
            }
            (_, ParamValue::Text(s)) => {
                // Accept numbers given as text (command lines, JSON strings).
                match s.trim().parse::<f64>() {
                    Ok(x) => return self.set(name, x),
                    Err(_) => {
                        return Err(self.param_error(name, "is a number".into(), format!("`{s}`")))
                    }
                }
            }
            (_, ParamValue::Number(x)) => {
                return Err(self.param_error(name, "must be finite".into(), x.to_string()))
            }
        };
        let shown = value.to_string();
        self.params.retain(|(k, _)| k != name);
        self.params.push((name.to_string(), value));
        // Other parameters, other graphs; and the inputs follow the parameters (an unreduced
        // result, `reduction = none`, adds its seed input).
        self.optimised = Arc::default();
        match self.lowered(&[]) {
            Ok(l) => self.sig.inputs = l.sig.inputs,
            // The loss compiled before (it was loaded), so this value is what breaks it: an
            // error about the parameter, with the first diagnostic as the reason (it may point
            // into a helper of the standard library, which the user did not write).
            Err(Error::Compile { short, .. }) => {
                let reason = short.lines().next().unwrap_or("").to_string();
                return Err(self.param_error(
                    name,
                    format!("must give a loss that compiles ({reason})"),
                    shown,
                ));
            }
            Err(e) => return Err(e),
        }
        Ok(self)
    }

    /// Compiles the named parameters *live*: as values that every call reads instead of
    /// constants folded into the graph, so that [`Plan::set_param`] changes them between calls
    /// without compiling again (a loss weight's schedule). A parameter can be live when it is a
    /// plain number (not `int`, an option or a vector) and nothing in the loss needs its value
    /// to build the graph: a `match` on it, another parameter's default computed from it, an
    /// expression of it passed to a called loss's parameter, or a window op's size or sigma
    /// refuse it with [`Error::NotLive`]. Passed on as it is to a called loss, it keeps that
    /// loss's range too. The current values stay the compiled-in values' until set; the graph
    /// is the same for every value (no rewrite specialises on a live value: `x * 1` is kept).
    /// An empty list makes every parameter constant again.
    ///
    /// [`Plan::set_param`]: crate::Plan::set_param
    pub fn live(mut self, names: &[&str]) -> Result<Loss> {
        for &name in names {
            let Some(p) = self.sig.params.iter().find(|p| p.name == name) else {
                // The same error as `set`'s for an unknown name.
                return Err(self.unknown_param(name));
            };
            let why = match &p.ty {
                ParamKind::Number => None,
                ParamKind::Int => Some("it is an `int` parameter, which shapes the graph"),
                ParamKind::Options(_) => Some("it is an option, which chooses the graph"),
                ParamKind::Vector { .. } => Some("it is a vector parameter"),
            };
            if let Some(why) = why {
                return Err(self.not_live(name, why.to_string()));
            }
        }
        let limit = MAX_INPUTS.saturating_sub(lower::live_base(self.sig.inputs.len()));
        if names.len() > limit {
            return Err(Error::Limit {
                loss: self.sig.name.clone(),
                what: "live parameters",
                count: names.len(),
                max: limit,
            });
        }
        let placeholder = |name: &str| lower::LiveParam {
            name: name.to_string(),
            index: 0,
            ranges: vec![],
        };
        // One at a time first, so that an error names the parameter that causes it.
        let mut live: Vec<&str> = Vec::new();
        for &name in names {
            if live.contains(&name) {
                continue;
            }
            let mut one = self.clone();
            one.live = vec![placeholder(name)];
            one.optimised = Arc::default();
            one.check_live(name)?;
            live.push(name);
        }
        self.live = live.iter().map(|n| placeholder(n)).collect();
        self.optimised = Arc::default();
        if !live.is_empty() {
            // Each one's input index and the ranges of the losses it is passed to.
            self.live = self.check_live(live[0])?;
        }
        Ok(self)
    }

    /// The names of the live parameters ([`Loss::live`]).
    pub fn live_params(&self) -> Vec<&str> {
        self.live.iter().map(|p| p.name.as_str()).collect()
    }

    /// Lowers with `self.live` (which holds `name`): an error about `name` if the loss needs
    /// its value as a constant, else the live parameters as lowered.
    fn check_live(&self, name: &str) -> Result<Vec<lower::LiveParam>> {
        let l = match self.lowered(&[]) {
            Ok(l) => l,
            Err(Error::Compile { short, .. }) => {
                let reason = short.lines().next().unwrap_or("").to_string();
                return Err(
                    self.not_live(name, format!("the loss needs it as a constant ({reason})"))
                );
            }
            Err(e) => return Err(e),
        };
        let g = &l.graph;
        for id in 0..g.len() {
            let n = g.node(id as NodeId);
            if let Some((_, consts)) = crate::ops::window::window_args(g, n) {
                if consts.iter().any(|c| c.is_nan()) {
                    return Err(self.not_live(
                        name,
                        format!("it sets a constant of `{}` (a window op's sizes are fixed when it compiles)", n.op.name()),
                    ));
                }
            }
        }
        Ok(l.live)
    }

    fn not_live(&self, name: &str, reason: String) -> Error {
        Error::NotLive {
            name: name.to_string(),
            loss: self.sig.name.clone(),
            reason,
        }
    }

    /// Checks a value for live parameter `name` (its index in `self.live`): [`Error::NotLive`]
    /// if it is not live, [`Error::ParamValue`] outside its ranges.
    pub(super) fn check_live_value(&self, name: &str, value: f64) -> Result<usize> {
        let Some(k) = self.live.iter().position(|p| p.name == name) else {
            let known = self.sig.params.iter().any(|p| p.name == name);
            let reason = if known {
                format!("it was compiled as a constant; make it live before compiling (`Loss::live(&[\"{name}\"])`)")
            } else {
                let names: Vec<String> = self
                    .sig
                    .params
                    .iter()
                    .map(|p| format!("`{}`", p.name))
                    .collect();
                format!(
                    "`{}` declares no such parameter (it declares {})",
                    self.sig.name,
                    names.join(", ")
                )
            };
            return Err(Error::NotLive {
                name: name.to_string(),
                loss: self.sig.name.clone(),
                reason,
            });
        };
        for (loss, param, r) in &self.live[k].ranges {
            if !value.is_finite() || !in_range(Some(r), value) {
                let whose = if *loss == self.sig.name && param == name {
                    String::new()
                } else {
                    format!(" (it is passed to parameter `{param}` of `{loss}`)")
                };
                return Err(self.param_error(
                    name,
                    format!("takes values in [{}, {}]{whose}", r.lo, r.hi),
                    value.to_string(),
                ));
            }
        }
        if !value.is_finite() {
            return Err(self.param_error(name, "must be finite".into(), value.to_string()));
        }
        Ok(k)
    }

    /// Records a live parameter's new value (checked by the caller) without touching the
    /// compiled stages: the graph does not depend on it.
    pub(super) fn set_live_value(&mut self, name: &str, x: f64) {
        self.params.retain(|(k, _)| k != name);
        self.params.push((name.to_string(), ParamValue::Number(x)));
    }

    /// The same loss with its live parameters constant again at their current values (for
    /// split-phase evaluation, whose graphs read no parameter input).
    pub(super) fn without_live(&self) -> Loss {
        let mut l = self.clone();
        if !l.live.is_empty() {
            l.live.clear();
            l.optimised = Arc::default();
        }
        l
    }

    /// The error for a parameter this loss does not declare.
    fn unknown_param(&self, name: &str) -> Error {
        let names: Vec<&str> = self.sig.params.iter().map(|p| p.name.as_str()).collect();
        let declares = if names.is_empty() {
            "it has no parameters".to_string()
        } else {
            format!(
                "it declares {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let hint = suggest(name, names.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Error::UnknownParam {
            name: name.to_string(),
            loss: self.sig.name.clone(),
            declares,
            hint,
        }
    }

    /// A value outside a parameter's declared range (or not finite).
    fn range_error(&self, name: &str, range: Option<&ValueRange>, x: f64) -> Error {
        let expected = match range {
            Some(r) => format!("takes values in [{}, {}]", r.lo, r.hi),
            None => "must be finite".to_string(),
        };
        self.param_error(name, expected, x.to_string())
    }

    fn param_error(&self, name: &str, expected: String, got: String) -> Error {
        Error::ParamValue {
            name: name.to_string(),
            loss: self.sig.name.clone(),
            expected,
            got,
        }
    }

    fn lowered(&self, absent: &[usize]) -> Result<Lowered> {
        let mut diags = Diagnostics::default();
        let l = lower::lower_with(
            &self.program,
            self.def,
            &self.params,
            absent,
            &self.live.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            &mut diags,
        );
        match l {
            Some(l) if diags.is_empty() => Ok(l),
            _ => Err(compile_error(&diags, &self.program)),
        }
    }

    /// The graph at a stage, for the given absent optional inputs.
    pub(crate) fn stage(&self, stage: Stage, absent: &[usize]) -> Result<StageGraph> {
        let l = self.lowered(absent)?;
        let diff: Vec<usize> = (0..l.sig.inputs.len())
            .filter(|&i| l.sig.inputs[i].diff && !absent.contains(&i))
            .collect();
        // Roots: the value, each gradient, and an unreduced loss's per-group values.
        let names: Vec<String> = std::iter::once("value".to_string())
            .chain(
                diff.iter()
                    .map(|&i| format!("grad.{}", l.sig.inputs[i].name)),
            )
            .chain(l.values.map(|_| "values".to_string()))
            .chain(
                l.terms
                    .iter()
                    .flat_map(|(t, _)| [format!("term.{t}"), format!("weighted.{t}")]),
            )
            .collect();
        if stage == Stage::Parsed {
            let mut roots = vec![("value".into(), l.result)];
            roots.extend(l.values.map(|v| ("values".to_string(), v)));
            roots.extend(l.terms.iter().map(|(t, id)| (format!("term.{t}"), *id)));
            return Ok(StageGraph {
                roots,
                graph: l.graph,
            });
        }
        let mut roots = vec![l.result];
        roots.extend(diff.iter().map(|&i| l.input_nodes[i]));
        roots.extend(l.values);
        let n_values = roots.len();
        roots.extend(l.terms.iter().map(|t| t.1));
        let (mut g, r) = optimise::before_autodiff(&l.graph, &roots);
        let wrt: Vec<NodeId> = r[1..1 + diff.len()].to_vec();
        let grads = autodiff::grad(&mut g, r[0], &wrt);
        let mut out = vec![r[0]];
        for gr in grads {
            out.push(match gr {
                Some(x) => x,
                None => g.c(0.0),
            });
        }
        out.extend(&r[1 + diff.len()..n_values]);
        // Each term's value t and weighted value t · ∂loss/∂t (its share of a weighted sum), the
        // adjoints taken apart from the inputs' so that the gradient graph is the same.
        let terms = &r[n_values..];
        let adjoints = autodiff::grad(&mut g, r[0], terms);
        for (&t, a) in terms.iter().zip(adjoints) {
            let weighted = match a {
                Some(a) => g.op2(crate::ops::Op::Mul, t, a),
                None => g.c(0.0),
            };
            out.extend([t, weighted]);
        }
        if stage == Stage::Autodiff {
            return Ok(StageGraph {
                roots: names.into_iter().zip(out).collect(),
                graph: g,
            });
        }
        let (g2, r2) = optimise::after_autodiff(&g, &out);
        Ok(StageGraph {
            roots: names.into_iter().zip(r2).collect(),
            graph: g2,
        })
    }

    /// The graph at `stage` as text (`%7 = mul(%3, %5) : [B, C, S]` lines, roots last) or as
    /// Graphviz (`dot`), with the optional inputs at positions `absent` left out.
    pub fn render(&self, stage: Stage, absent: &[usize], dot: bool) -> Result<String> {
        let names: Vec<String> = self.sig.inputs.iter().map(|i| i.name.clone()).collect();
        let name = self.sig.name.as_str();
        if stage == Stage::Fused {
            // Not size-bound: `render_for_shapes` shows the schedule a plan runs.
            let (sg, sched) = self.fused(absent)?;
            return Ok(if dot {
                render::fused_dot(&sg.graph, &sg.roots, &sched, &names, name)
            } else {
                render::fused_text(&sg.graph, &sg.roots, &sched, &names, name)
            });
        }
        let sg = self.stage(stage, absent)?;
        Ok(if dot {
            render::to_dot(&sg.graph, &sg.roots, &names, name)
        } else {
            render::to_text(&sg.graph, &sg.roots, &names, name)
        })
    }

    /// The optimised graph partitioned into fused kernels (memory passes) and tails, without
    /// sizes (`lossc graph --stage fused`).
    pub(crate) fn fused(&self, absent: &[usize]) -> Result<(StageGraph, optimise::fuse::Schedule)> {
        self.kernels(self.stage(Stage::Optimised, absent)?)
    }

    /// The pipeline as `compile` runs it up to the executors: the optimised graph (stage
    /// `Optimised`) with every axis size of `binding` folded in.
    /// The largest window any window op of the loss uses, as a side of scale 0 (1 without
    /// window ops): the smallest spatial side its plans accept.
    pub(crate) fn largest_window(&self) -> usize {
        let Ok(sg) = self.stage(Stage::Parsed, &[]) else {
            return 1;
        };
        let g = &sg.graph;
        (0..g.len())
            .filter_map(|id| {
                let n = g.node(id as NodeId);
                let (_, consts) = crate::ops::window::window_args(g, n)?;
                Some(crate::ops::window::min_side(n.op, &consts))
            })
            .max()
            .unwrap_or(1)
    }

    pub(crate) fn bound_stage(&self, binding: &Binding, absent: &[usize]) -> Result<StageGraph> {
        let cached = {
            let cache = self.optimised.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .iter()
                .find(|(a, _)| a == absent)
                .map(|(_, sg)| sg.clone())
        };
        let sg = match cached {
            Some(sg) => sg,
            None => {
                let sg = Arc::new(self.stage(Stage::Optimised, absent)?);
                let mut cache = self.optimised.lock().unwrap_or_else(|e| e.into_inner());
                cache.push((absent.to_vec(), sg.clone()));
                sg
            }
        };
        let roots: Vec<NodeId> = sg.roots.iter().map(|r| r.1).collect();
        let (graph, roots) = optimise::bind_sizes(&sg.graph, &roots, &binding.sizes);
        Ok(StageGraph {
            roots: sg.roots.iter().map(|r| r.0.clone()).zip(roots).collect(),
            graph,
        })
    }

    /// The last stage, `Fused`: kernel preparation and the partition into passes and tails.
    fn kernels(&self, sg: StageGraph) -> Result<(StageGraph, optimise::fuse::Schedule)> {
        let roots: Vec<NodeId> = sg.roots.iter().map(|r| r.1).collect();
        let (graph, roots) = optimise::for_kernels(&sg.graph, &roots);
        let sched = optimise::fuse::schedule(&graph, &roots).map_err(|e| Error::NotFusable {
            loss: self.sig.name.clone(),
            reason: e.0,
        })?;
        let roots = sg.roots.into_iter().map(|r| r.0).zip(roots).collect();
        Ok((StageGraph { graph, roots }, sched))
    }

    /// The fused schedule a plan for `shapes` runs — sizes bound, kernels prepared, passes and
    /// tails — as text or Graphviz (`lossc graph --stage fused --shape ...`).
    pub fn render_for_shapes(&self, shapes: &[(&str, &[usize])], dot: bool) -> Result<String> {
        let binding = super::shape::bind_shapes(&self.sig, shapes)?;
        let absent = binding.lowering_key();
        let bound = self.bound_stage(&binding, &absent)?;
        let mut names: Vec<String> = self.sig.inputs.iter().map(|i| i.name.clone()).collect();
        let mut name = format!("{} at sizes {:?}", self.sig.name, binding.sizes);
        let copy = StageGraph {
            graph: bound.graph.clone(),
            roots: bound.roots.clone(),
        };
        let (sg, sched) = match self.kernels(copy) {
            Ok(k) => k,
            // What a plan runs then: the graph unrolled over its class axis (as `Plan` does).
            Err(e) => {
                use optimise::unroll;
                let roots: Vec<NodeId> = bound.roots.iter().map(|r| r.1).collect();
                let grad_axes: Vec<_> = (0..self.sig.inputs.len())
                    .filter(|&i| self.sig.inputs[i].diff && !absent.contains(&i))
                    .map(|i| self.sig.inputs[i].mask)
                    .collect();
                let Some(ax) = unroll::class_axis(&bound.graph, &roots) else {
                    return Err(e);
                };
                let Some(u) =
                    unroll::unroll(&bound.graph, &roots, &grad_axes, ax, binding.sizes[ax])
                else {
                    return Err(e);
                };
                let axis = &self.sig.space.names[ax];
                let plane = |n: &str, c: Option<usize>| match c {
                    Some(c) => format!("{n}[{axis}={c}]"),
                    None => n.to_string(),
                };
                names = u
                    .inputs
                    .iter()
                    .map(|&(i, c)| plane(&self.sig.inputs[i as usize].name, c))
                    .collect();
                let (graph, r) = optimise::for_kernels(&u.graph, &u.roots);
                let sched = optimise::fuse::schedule_capped(
                    &graph,
                    &r,
                    optimise::fuse::UNROLLED_KERNEL_NODES,
                    true,
                )
                .map_err(|e| Error::NotFusable {
                    loss: self.sig.name.clone(),
                    reason: e.0,
                })?;
                let mut labels = vec![bound.roots[0].0.clone()];
                labels.extend(
                    u.grads
                        .iter()
                        .map(|&(k, c)| plane(&bound.roots[k + 1].0, c)),
                );
                name = format!("{name}, unrolled over {axis}");
                (
                    StageGraph {
                        graph,
                        roots: labels.into_iter().zip(r).collect(),
                    },
                    sched,
                )
            }
        };
        Ok(if dot {
            super::render::fused_dot(&sg.graph, &sg.roots, &sched, &names, &name)
        } else {
            super::render::fused_text(&sg.graph, &sg.roots, &sched, &names, &name)
        })
    }

    /// Compiles the loss for the given input shapes. Optional inputs (declared with a default)
    /// may be left out; the others must all be given.
    pub fn compile<T: Real>(&self, shapes: &[(&str, &[usize])]) -> Result<Plan<T>> {
        self.compile_with(shapes, ExecutorKind::Fused)
    }

    /// Finite-difference check of the symbolic gradient in f64 on random inputs and stress points.
    pub fn gradcheck(&self, opts: &GradcheckOptions) -> Result<GradcheckReport> {
        gradcheck::run(self, opts)
    }
}
