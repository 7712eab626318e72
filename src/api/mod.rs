//! The embedding API. In: `.loss` sources (the standard library compiled into the crate, a file,
//! or a string), parameter values and tensor shapes. Out: compiled [`Plan`]s that evaluate the
//! loss and its gradients on ndarray views, with typed [`Error`]s.
//!
//! The pipeline behind [`Loss::compile`]: lower (check) → stabilise/simplify → reverse-mode
//! autodiff → simplify/stabilise → bind axis sizes → executor. Never here: op semantics or
//! evaluation loops.

pub mod gradcheck;
pub mod library;
pub mod memory;
mod render;

use std::path::Path;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

use crate::autodiff;
use crate::error::{Error, Result};
use crate::exec::reference::Interpreter;
use crate::exec::{Bound, Executor};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::lower::{self, InputSpec, Lowered, ParamSpec, ParamValue, Signature};
use crate::ir::program::{Def, Program};
use crate::ops::math::Real;
use crate::optimise;
use crate::syntax::ast::ParamType;
use crate::syntax::diag::{suggest, Diagnostics};

pub use gradcheck::{GradcheckOptions, GradcheckReport, Trial};
pub use library::Library;

fn compile_error(d: &Diagnostics, prog: &Program) -> Error {
    Error::Compile {
        rendered: d.render(&prog.sources),
        short: d.short(&prog.sources),
        codes: d.items.iter().map(|x| x.code.as_str()).collect(),
    }
}

/// A loss with its parameter values: cheap to clone, compiled per shape with [`Loss::compile`].
#[derive(Clone)]
pub struct Loss {
    program: Arc<Program>,
    def: Def,
    sig: Signature,
    params: Vec<(String, ParamValue)>,
}

/// The IR stages `lossc graph` can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The graph of one stage, with its roots named (`value`, `grad.<input>`).
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
        let src = std::fs::read_to_string(path)
            .map_err(|e| Error::Io { path: path.display().to_string(), message: e.to_string() })?;
        Self::from_source_in(&path.display().to_string(), &src, path.parent())
    }

    /// Every loss defined in a file (for `lossc check`). The file's helper functions are checked
    /// too (names, arities, axis lists), whether or not a loss calls them.
    pub fn all_in_file(path: &Path) -> Result<Vec<Loss>> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| Error::Io { path: path.display().to_string(), message: e.to_string() })?;
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
        };
        // Check the body once with default parameters, so errors surface at load time.
        loss.lowered(&[])?;
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

    /// Sets a parameter, checking its name and type: numbers for numeric parameters, one of the
    /// declared options for enumerated ones (`"batch"`, `"image"`, `"class"`).
    pub fn set(mut self, name: &str, value: impl Into<ParamValue>) -> Result<Loss> {
        let value = value.into();
        let Some(p) = self.sig.params.iter().find(|p| p.name == name) else {
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
            return Err(Error::UnknownParam {
                name: name.to_string(),
                loss: self.sig.name.clone(),
                declares,
                hint,
            });
        };
        let value = match (&p.ty, value) {
            (ParamType::Enum(opts), ParamValue::Text(s)) if opts.contains(&s) => {
                ParamValue::Text(s)
            }
            (ParamType::Enum(opts), v) => {
                return Err(self.param_error(name, format!("is one of {}", opts.join(" | ")), format!("`{v}`")))
            }
            (ParamType::Int, ParamValue::Number(x)) if x.fract() == 0.0 => ParamValue::Number(x),
            (ParamType::Number, ParamValue::Number(x)) if x.is_finite() => ParamValue::Number(x),
            (ParamType::Int, ParamValue::Number(x)) => {
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
        self.params.retain(|(k, _)| k != name);
        self.params.push((name.to_string(), value));
        Ok(self)
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
        let l = lower::lower_with(&self.program, self.def, &self.params, absent, &mut diags);
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
        let names: Vec<String> = std::iter::once("value".to_string())
            .chain(
                diff.iter()
                    .map(|&i| format!("grad.{}", l.sig.inputs[i].name)),
            )
            .collect();
        if stage == Stage::Parsed {
            return Ok(StageGraph {
                roots: vec![("value".into(), l.result)],
                graph: l.graph,
            });
        }
        let mut roots = vec![l.result];
        roots.extend(diff.iter().map(|&i| l.input_nodes[i]));
        let (mut g, r) = optimise::before_autodiff(&l.graph, &roots);
        let wrt: Vec<NodeId> = r[1..].to_vec();
        let grads = autodiff::grad(&mut g, r[0], &wrt);
        let mut out = vec![r[0]];
        for gr in grads {
            out.push(match gr {
                Some(x) => x,
                None => g.c(0.0),
            });
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

    /// The optimised graph partitioned into fused kernels (memory passes) and tails.
    pub(crate) fn fused(&self, absent: &[usize]) -> Result<(StageGraph, optimise::fuse::Schedule)> {
        let sg = self.stage(Stage::Optimised, absent)?;
        let roots: Vec<NodeId> = sg.roots.iter().map(|r| r.1).collect();
        let (graph, roots) = optimise::for_kernels(&sg.graph, &roots);
        let sg = StageGraph {
            roots: sg
                .roots
                .iter()
                .map(|r| r.0.clone())
                .zip(roots.iter().copied())
                .collect(),
            graph,
        };
        let sched = optimise::fuse::schedule(&sg.graph, &roots)
            .map_err(|e| Error::NotFusable { loss: self.sig.name.clone(), reason: e.0 })?;
        Ok((sg, sched))
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

/// Shapes bound to the loss's axes.
#[derive(Clone, Debug)]
pub struct Binding {
    /// Per input: the shape given (None if an optional input was left out).
    pub shapes: Vec<Option<Vec<usize>>>,
    /// Per input: the internal shape (one dimension per axis of the loss).
    pub internal: Vec<Vec<usize>>,
    /// Per axis: its size (packs flattened).
    pub sizes: Vec<usize>,
    /// Per axis: its dimensions (one for plain axes, any number for packs).
    pub dims: Vec<Vec<usize>>,
}

fn expected_text(sig: &Signature, inp: &InputSpec, dims: &[Option<Vec<usize>>]) -> String {
    let parts: Vec<String> = inp
        .axes
        .iter()
        .map(|&a| {
            let n = &sig.space.names[a];
            let pre = if sig.space.packs[a] { ".." } else { "" };
            match &dims[a] {
                Some(d) if sig.space.packs[a] => format!("{pre}{n}={d:?}"),
                Some(d) => format!("{n}={}", d.first().copied().unwrap_or(0)),
                None => format!("{pre}{n}"),
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn bind_shapes(sig: &Signature, shapes: &[(&str, &[usize])]) -> Result<Binding> {
    let n_axes = sig.space.names.len();
    let mut given: Vec<Option<Vec<usize>>> = vec![None; sig.inputs.len()];
    for (name, shape) in shapes {
        let Some(i) = sig.inputs.iter().position(|x| x.name == *name) else {
            let names: Vec<String> = sig.inputs.iter().map(|x| format!("`{}`", x.name)).collect();
            return Err(Error::UnknownInput {
                name: name.to_string(),
                loss: sig.name.clone(),
                expected: names.join(", "),
            });
        };
        if given[i].is_some() {
            return Err(Error::DuplicateInput {
                input: name.to_string(),
            });
        }
        given[i] = Some(shape.to_vec());
    }
    let mut dims: Vec<Option<Vec<usize>>> = vec![None; n_axes];
    let mut bound_by: Vec<String> = vec![String::new(); n_axes];
    for (i, inp) in sig.inputs.iter().enumerate() {
        let Some(shape) = &given[i] else {
            if inp.default.is_none() {
                return Err(Error::MissingInput {
                    name: inp.name.clone(),
                    loss: sig.name.clone(),
                    expected: sig.shape_text(inp),
                });
            }
            continue;
        };
        let has_pack = inp.axes.iter().any(|&a| sig.space.packs[a]);
        let fixed = inp.axes.len() - usize::from(has_pack);
        let rank_ok = if has_pack {
            shape.len() >= fixed
        } else {
            shape.len() == fixed
        };
        if !rank_ok {
            let want = if has_pack {
                format!("at least {fixed} dimensions")
            } else {
                format!("{fixed} dimensions")
            };
            return Err(Error::Shape {
                input: inp.name.clone(),
                expected: expected_text(sig, inp, &dims),
                received: shape.clone(),
                detail: format!("expected {want}, got {}", shape.len()),
            });
        }
        let pack_len = shape.len() - fixed;
        let mut pos = 0;
        for &a in &inp.axes {
            let d: Vec<usize> = if sig.space.packs[a] {
                shape[pos..pos + pack_len].to_vec()
            } else {
                vec![shape[pos]]
            };
            pos += d.len();
            if d.contains(&0) {
                return Err(Error::Shape {
                    input: inp.name.clone(),
                    expected: expected_text(sig, inp, &dims),
                    received: shape.clone(),
                    detail: format!("axis `{}` is empty", sig.space.names[a]),
                });
            }
            match &dims[a] {
                Some(prev) if prev != &d => {
                    return Err(Error::Shape {
                        input: inp.name.clone(),
                        expected: expected_text(sig, inp, &dims),
                        received: shape.clone(),
                        detail: format!(
                            "axis `{}` is {:?} here but {:?} in `{}`",
                            sig.space.names[a], d, prev, bound_by[a]
                        ),
                    })
                }
                Some(_) => {}
                None => {
                    dims[a] = Some(d);
                    bound_by[a] = inp.name.clone();
                }
            }
        }
    }
    let mut sizes = Vec::with_capacity(n_axes);
    let mut all_dims = Vec::with_capacity(n_axes);
    for (a, d) in dims.iter().enumerate() {
        match d {
            Some(d) => {
                sizes.push(d.iter().product());
                all_dims.push(d.clone());
            }
            None => {
                return Err(Error::UnboundAxis {
                    axis: sig.space.names[a].clone(),
                    loss: sig.name.clone(),
                })
            }
        }
    }
    let internal = sig
        .inputs
        .iter()
        .map(|inp| {
            (0..n_axes)
                .map(|a| {
                    if inp.mask & (1 << a) != 0 {
                        sizes[a]
                    } else {
                        1
                    }
                })
                .collect()
        })
        .collect();
    Ok(Binding {
        shapes: given,
        internal,
        sizes,
        dims: all_dims,
    })
}

/// The error for a non-finite value in input `i` (found by the executor while it read the data).
fn non_finite<T: Real>(sig: &Signature, slices: &[&[T]], i: usize) -> Error {
    let (index, value) = slices[i]
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite())
        .map(|(k, x)| (k, x.to_f64()))
        .unwrap_or((0, f64::NAN));
    Error::NonFinite {
        input: sig.inputs[i].name.clone(),
        index,
        value,
    }
}

/// Most inputs a loss may declare.
pub const MAX_INPUTS: usize = 16;
/// Most differentiable inputs a loss may declare.
pub const MAX_GRADS: usize = 8;

/// Which executor runs a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecutorKind {
    /// The fused block VM (falls back to the reference interpreter for graphs it cannot fuse).
    Fused,
    /// The f64/f32 reference interpreter: whole-buffer, node by node.
    Reference,
    /// Not API: the fused VM without superinstructions, for the tests that check they change
    /// no bits.
    #[doc(hidden)]
    FusedPlain,
}

/// One memory pass of a plan: which executor runs it, and what it computes per element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassInfo {
    /// `"fused"` (the block VM) or `"reference"` (the interpreter).
    pub executor: &'static str,
    /// Elementwise nodes computed per element (0 for the reference interpreter).
    pub nodes: usize,
    /// Reductions accumulated in this pass.
    pub reductions: usize,
    /// Output buffers (gradients) written in this pass.
    pub stores: usize,
}

/// A loss compiled for fixed shapes: call [`Plan::value_and_grad`] repeatedly. After the first
/// call, evaluation allocates nothing.
pub struct Plan<T: Real> {
    sig: Signature,
    diff: Vec<usize>,
    binding: Binding,
    bound: Arc<Bound>,
    exec: Box<dyn Executor<T>>,
    /// The value-only executor behind [`Plan::value`], built on its first call.
    value_exec: Option<Box<dyn Executor<T>>>,
    executor: &'static str,
    isa: &'static str,
    pass_info: Vec<PassInfo>,
    /// Why the fused executor was not used, when it was asked for.
    fallback: Option<String>,
    check_finite: bool,
    grads: Vec<(String, ArrayD<T>)>,
}

/// The loss value and the gradient of each differentiable input (in the input's own shape),
/// borrowed from the plan's buffers.
#[derive(Debug)]
pub struct Output<'a, T> {
    pub value: T,
    grads: &'a [(String, ArrayD<T>)],
}

impl<'a, T> Output<'a, T> {
    /// The gradient with respect to an input. Panics if the input is not differentiable; see
    /// [`Output::try_grad`].
    pub fn grad(&self, name: &str) -> &'a ArrayD<T> {
        self.try_grad(name)
            .unwrap_or_else(|| panic!("no gradient for `{name}`"))
    }
    pub fn try_grad(&self, name: &str) -> Option<&'a ArrayD<T>> {
        self.grads.iter().find(|(n, _)| n == name).map(|(_, g)| g)
    }
    /// (input name, gradient) for every differentiable input.
    pub fn grads(&self) -> impl Iterator<Item = (&'a str, &'a ArrayD<T>)> {
        self.grads.iter().map(|(n, g)| (n.as_str(), g))
    }
}

impl Loss {
    /// Compiles with a chosen executor ([`Loss::compile`] uses the fused one).
    pub fn compile_with<T: Real>(
        &self,
        shapes: &[(&str, &[usize])],
        kind: ExecutorKind,
    ) -> Result<Plan<T>> {
        let binding = bind_shapes(&self.sig, shapes)?;
        if self.sig.inputs.len() > MAX_INPUTS {
            return Err(Error::Limit {
                loss: self.sig.name.clone(),
                what: "inputs",
                count: self.sig.inputs.len(),
                max: MAX_INPUTS,
            });
        }
        let absent: Vec<usize> = (0..self.sig.inputs.len())
            .filter(|&i| binding.shapes[i].is_none())
            .collect();
        let sg = self.stage(Stage::Optimised, &absent)?;
        let diff: Vec<usize> = (0..self.sig.inputs.len())
            .filter(|&i| self.sig.inputs[i].diff && !absent.contains(&i))
            .collect();
        if diff.len() > MAX_GRADS {
            return Err(Error::Limit {
                loss: self.sig.name.clone(),
                what: "differentiable inputs",
                count: diff.len(),
                max: MAX_GRADS,
            });
        }
        // The plan's own buffers are the gradients, one per differentiable input.
        let needed = diff.iter().try_fold(0u64, |acc, &i| {
            memory::bytes(binding.shapes[i].as_deref().unwrap_or(&[]), std::mem::size_of::<T>())
                .and_then(|b| acc.checked_add(b))
        });
        memory::ensure_fits(&format!("a plan of `{}` (its gradient buffers)", self.sig.name), needed)?;
        let roots: Vec<NodeId> = sg.roots.iter().map(|r| r.1).collect();
        let (graph, roots) = optimise::bind_sizes(&sg.graph, &roots, &binding.sizes);
        let grad_axes = diff.iter().map(|&i| self.sig.inputs[i].mask).collect();
        let bound = Arc::new(Bound {
            graph,
            roots,
            sizes: binding.sizes.clone(),
            grad_axes,
        });
        let reference = |why: Option<String>| {
            let exec: Box<dyn Executor<T>> = Box::new(Interpreter::new(bound.clone()));
            let n = exec.passes();
            let info = (0..n.max(1))
                .map(|_| PassInfo { executor: "reference", nodes: 0, reductions: 0, stores: 0 })
                .collect();
            (exec, "scalar", info, why)
        };
        // `isa`: the instruction set the kernels run with.
        let (exec, isa, pass_info, fallback) = match kind {
            ExecutorKind::Reference => reference(None),
            ExecutorKind::Fused | ExecutorKind::FusedPlain => {
                let (kg, kr) = optimise::for_kernels(&bound.graph, &bound.roots);
                let kb = Arc::new(Bound {
                    graph: kg,
                    roots: kr,
                    sizes: bound.sizes.clone(),
                    grad_axes: bound.grad_axes.clone(),
                });
                match crate::exec::vm::Vm::<T>::with_superinstructions(kb, kind == ExecutorKind::Fused) {
                    Ok(vm) => {
                        let info = vm
                            .pass_shapes()
                            .into_iter()
                            .map(|(nodes, reductions, stores)| PassInfo {
                                executor: "fused",
                                nodes,
                                reductions,
                                stores,
                            })
                            .collect();
                        let isa = vm.isa();
                        let exec: Box<dyn Executor<T>> = Box::new(vm);
                        (exec, isa, info, None)
                    }
                    Err(e) => reference(Some(e.0)),
                }
            }
        };
        let grads = diff
            .iter()
            .map(|&i| {
                (
                    self.sig.inputs[i].name.clone(),
                    ArrayD::from_elem(
                        IxDyn(binding.shapes[i].as_deref().unwrap_or(&[])),
                        T::default(),
                    ),
                )
            })
            .collect();
        Ok(Plan {
            sig: self.sig.clone(),
            diff,
            binding,
            bound,
            executor: if fallback.is_none() && kind != ExecutorKind::Reference { "fused" } else { "reference" },
            exec,
            value_exec: None,
            isa,
            pass_info,
            fallback,
            check_finite: true,
            grads,
        })
    }
}

impl<T: Real> Plan<T> {
    /// Turns the NaN/Inf input check off (it is on by default); non-finite values then propagate.
    pub fn set_check_finite(&mut self, on: bool) {
        self.check_finite = on;
    }
    /// Memory passes over N-sized data per call.
    pub fn passes(&self) -> usize {
        self.exec.passes()
    }
    /// The instruction set the fused kernels run with: `avx512`, `avx2` or `baseline` (capped by
    /// the `LOSSLANG_ISA` environment variable), or `scalar` on the reference interpreter.
    pub fn instruction_set(&self) -> &'static str {
        self.isa
    }
    /// Runs the fused kernels with at most the instruction set `isa` (`avx2`, `baseline`), as
    /// the `LOSSLANG_ISA` environment variable does for every plan: to test each code path on
    /// one machine, or to reproduce another machine's bits. Never widens what the CPU has.
    /// Returns the instruction set now in use.
    pub fn cap_instruction_set(&mut self, isa: &str) -> &'static str {
        let now = self.exec.cap_isa(isa);
        if let Some(v) = self.value_exec.as_mut() {
            v.cap_isa(isa);
        }
        self.isa = now;
        now
    }
    /// Each memory pass with the executor that runs it.
    pub fn pass_info(&self) -> &[PassInfo] {
        &self.pass_info
    }
    /// Why the plan runs on the reference interpreter although the fused executor was asked for
    /// (`None` when it runs fused, or the interpreter was chosen).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
    /// `"fused"` or `"reference"`.
    pub fn executor(&self) -> &'static str {
        self.executor
    }
    pub fn binding(&self) -> &Binding {
        &self.binding
    }
    pub fn graph_len(&self) -> usize {
        self.bound.graph.len()
    }

    /// The differentiable inputs that get gradients, in declaration order.
    pub fn grad_inputs(&self) -> Vec<&str> {
        self.diff
            .iter()
            .map(|&i| self.sig.inputs[i].name.as_str())
            .collect()
    }

    /// Checks the inputs and returns their data in declaration order (empty for absent ones).
    fn prepare<'a>(
        &self,
        inputs: &'a [(&str, ArrayViewD<'a, T>)],
    ) -> Result<[&'a [T]; MAX_INPUTS]> {
        let mut slices: [&'a [T]; MAX_INPUTS] = [&[]; MAX_INPUTS];
        let mut seen = [false; MAX_INPUTS];
        for (name, v) in inputs {
            let Some(i) = self.sig.inputs.iter().position(|x| x.name == *name) else {
                let names: Vec<String> = self
                    .sig
                    .inputs
                    .iter()
                    .map(|x| format!("`{}`", x.name))
                    .collect();
                return Err(Error::UnknownInput {
                    name: name.to_string(),
                    loss: self.sig.name.clone(),
                    expected: names.join(", "),
                });
            };
            if seen[i] {
                return Err(Error::DuplicateInput {
                    input: name.to_string(),
                });
            }
            seen[i] = true;
            let inp = &self.sig.inputs[i];
            match &self.binding.shapes[i] {
                None => {
                    return Err(Error::Shape {
                        input: inp.name.clone(),
                        expected: "absent (the plan was compiled without it)".into(),
                        received: v.shape().to_vec(),
                        detail: "this optional input was not given to compile()".into(),
                    })
                }
                Some(s) if s.as_slice() != v.shape() => {
                    return Err(Error::Shape {
                        input: inp.name.clone(),
                        expected: format!("{s:?}"),
                        received: v.shape().to_vec(),
                        detail: "the shape differs from the one the plan was compiled for".into(),
                    })
                }
                Some(_) => {}
            }
            let Some(data) = v.as_slice() else {
                return Err(Error::Shape {
                    input: inp.name.clone(),
                    expected: format!("{:?} in row-major (C) order", v.shape()),
                    received: v.shape().to_vec(),
                    detail: "the view is not contiguous in row-major order; pass `.as_standard_layout()`".into(),
                });
            };
            slices[i] = data;
        }
        for (i, inp) in self.sig.inputs.iter().enumerate() {
            if !seen[i] && self.binding.shapes[i].is_some() {
                return Err(Error::MissingInput {
                    name: inp.name.clone(),
                    loss: self.sig.name.clone(),
                    expected: format!("{:?}", self.binding.shapes[i].as_deref().unwrap_or(&[])),
                });
            }
        }
        Ok(slices)
    }

    /// The loss value and the gradient of every differentiable input (borrowed from the plan).
    pub fn value_and_grad(&mut self, inputs: &[(&str, ArrayViewD<T>)]) -> Result<Output<'_, T>> {
        let slices = self.prepare(inputs)?;
        let mut it = self.grads.iter_mut();
        let mut bufs: [&mut [T]; MAX_GRADS] = std::array::from_fn(|_| match it.next() {
            Some((_, a)) => a.as_slice_mut().expect("plan buffers are contiguous"),
            None => &mut [],
        });
        let n = self.diff.len();
        let value = self
            .exec
            .run(
                &slices[..self.sig.inputs.len()],
                &mut bufs[..n],
                self.check_finite,
            )
            .map_err(|i| non_finite(&self.sig, &slices, i))?;
        Ok(Output {
            value,
            grads: &self.grads,
        })
    }

    /// Like [`Plan::value_and_grad`], writing the gradients into caller-provided buffers of the
    /// inputs' shapes (row-major); a differentiable input without a buffer here goes to the
    /// plan's own. Returns the value.
    pub fn value_and_grad_into(
        &mut self,
        inputs: &[(&str, ArrayViewD<T>)],
        grads: &mut [(&str, ArrayViewMutD<T>)],
    ) -> Result<T> {
        let slices = self.prepare(inputs)?;
        let mut user: [Option<usize>; MAX_GRADS] = [None; MAX_GRADS];
        for (j, (name, buf)) in grads.iter().enumerate() {
            let Some(k) = self
                .diff
                .iter()
                .position(|&i| self.sig.inputs[i].name == *name)
            else {
                return Err(Error::UnknownInput {
                    name: name.to_string(),
                    loss: self.sig.name.clone(),
                    expected: format!("a differentiable input: {}", self.grad_inputs().join(", ")),
                });
            };
            let shape = self.binding.shapes[self.diff[k]].as_deref().unwrap_or(&[]);
            if buf.shape() != shape || !buf.is_standard_layout() {
                return Err(Error::Shape {
                    input: name.to_string(),
                    expected: format!("{shape:?}, row-major"),
                    received: buf.shape().to_vec(),
                    detail: "the gradient buffer has the wrong shape or layout".into(),
                });
            }
            user[k] = Some(j);
        }
        let mut own = self.grads.iter_mut();
        let mut theirs: [Option<&mut [T]>; MAX_GRADS] = std::array::from_fn(|_| None);
        for (j, (_, buf)) in grads.iter_mut().enumerate() {
            if let Some(k) = user.iter().position(|u| *u == Some(j)) {
                theirs[k] = buf.as_slice_mut();
            }
        }
        let mut bufs: [&mut [T]; MAX_GRADS] = std::array::from_fn(|k| {
            let mine = own.next();
            match (theirs[k].take(), mine) {
                (Some(t), _) => t,
                (None, Some((_, a))) => a.as_slice_mut().expect("plan buffers are contiguous"),
                (None, None) => &mut [],
            }
        });
        let n = self.diff.len();
        self.exec
            .run(
                &slices[..self.sig.inputs.len()],
                &mut bufs[..n],
                self.check_finite,
            )
            .map_err(|i| non_finite(&self.sig, &slices, i))
    }

    /// The loss value alone, from a value-only plan (built on the first call: the gradient's
    /// nodes are left out, so a region loss takes one memory pass instead of two). Its value
    /// may differ from `value_and_grad`'s in the last bits: kernels are prepared for the nodes
    /// each plan has.
    pub fn value(&mut self, inputs: &[(&str, ArrayViewD<T>)]) -> Result<T> {
        let slices = self.prepare(inputs)?;
        if self.value_exec.is_none() {
            let b = &self.bound;
            let roots = vec![b.roots[0]];
            let exec: Box<dyn Executor<T>> = if self.executor == "fused" {
                let (kg, kr) = optimise::for_kernels(&b.graph, &roots);
                let kb = Arc::new(Bound { graph: kg, roots: kr, sizes: b.sizes.clone(), grad_axes: vec![] });
                match crate::exec::vm::Vm::<T>::new(kb) {
                    Ok(vm) => Box::new(vm),
                    Err(_) => Box::new(Interpreter::new(Arc::new(Bound { roots, grad_axes: vec![], ..(**b).clone() }))),
                }
            } else {
                Box::new(Interpreter::new(Arc::new(Bound { roots, grad_axes: vec![], ..(**b).clone() })))
            };
            self.value_exec = Some(exec);
        }
        let exec = self.value_exec.as_mut().expect("built above");
        exec.run(&slices[..self.sig.inputs.len()], &mut [], self.check_finite)
            .map_err(|i| non_finite(&self.sig, &slices, i))
    }
}
