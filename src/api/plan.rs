//! [`Plan`]: a loss compiled for fixed shapes — binding, the checks of bind time (vector
//! parameters, window constants, memory), evaluation into the plan's or the caller's buffers,
//! the value-only plan, split-phase evaluation, the NaN/Inf input check. The executor is chosen
//! in `exec::choose`.
//!
//! In: a [`Loss`] and shapes, then input views. Out: values and gradients. Never here: parsing
//! or rewriting.

use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

use crate::error::{Error, Result};
use crate::exec::choose::{bind_and_choose, choose};
#[cfg(test)]
use crate::exec::Kernel;
use crate::exec::{Bound, Executor, ExecutorKind, Isa, PassInfo};
use crate::ir::lower::Signature;
use crate::ops::math::Real;
use crate::ParamValue;

use super::shape::bind_shapes;
use super::*;

/// The error for a non-finite value in input `i` (found by the executor while it read the data).
fn non_finite<T: Real>(sig: &Signature, slices: &[&[T]], i: usize) -> Error {
    non_finite_in(sig.inputs[i].name.clone(), slices[i])
}

/// The error for the first non-finite value of `data`, which the caller names `input`.
fn non_finite_in<T: Real>(input: String, data: &[T]) -> Error {
    let (index, value) = data
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite())
        .map(|(k, x)| (k, x.to_f64()))
        .unwrap_or((0, f64::NAN));
    Error::NonFinite {
        input,
        index,
        value,
    }
}

/// A loss compiled for shapes: call [`Plan::value_and_grad`] repeatedly. After the first call,
/// evaluation allocates nothing. A call with other shapes (a smaller last batch) runs a plan
/// compiled for them on its first call and kept for the next ones (at most
/// [`MAX_OTHER_SHAPES`], the least recently used dropped); [`Plan::binding`] and the buffers
/// keep the first shapes.
pub struct Plan<T: Real> {
    sig: Signature,
    diff: Vec<usize>,
    binding: Binding,
    bound: Arc<Bound>,
    exec: Box<dyn Executor<T>>,
    /// The value-only executor behind [`Plan::value`], built on its first call.
    value_exec: Option<Box<dyn Executor<T>>>,
    /// The `kernel` of each pass of the value-only executor, once built (for the tests).
    #[cfg(test)]
    value_kernels: Vec<Kernel>,
    executor: ExecutorKind,
    /// The executor asked for at compile time (the value-only plan is built alike).
    kind: ExecutorKind,
    isa: Isa,
    /// The cap of [`Plan::cap_instruction_set`], applied to the executors built later too.
    cap: Option<Isa>,
    pass_info: Vec<PassInfo>,
    /// Why the fused executor was not used, when it was asked for.
    fallback: Option<String>,
    buffer_bytes: usize,
    check_finite: bool,
    grads: Vec<(String, ArrayD<T>)>,
    /// An unreduced loss's per-group values (`return unreduced(...)`, `reduction = none`),
    /// written beside the gradients.
    values: Option<ArrayD<T>>,
    /// Inputs given as class labels: (input, axis, classes, ignore value), checked per call.
    labels: Vec<(usize, usize, usize, f64)>,
    /// The loss this plan was compiled from (split-phase evaluation recompiles parts of it).
    loss: Loss,
    /// Split-phase evaluation, built on the first call of [`Plan::statistics`].
    split: Option<Box<SplitState<T>>>,
    /// Plans for the other shapes calls gave (a smaller last batch), most recently used last:
    /// (each input's shape, absent ones `None`; the plan).
    others: Vec<(InputShapes, Plan<T>)>,
    /// The value of each live parameter (`loss.live`, same order), read as an input.
    live_vals: Vec<T>,
    /// The named terms, and the last call's value and weighted value of each (two slots per
    /// term, outputs after the gradients and per-group values).
    term_names: Vec<String>,
    term_vals: Vec<T>,
    /// Whether the last call ran on a plan kept for other shapes (the last of `others`).
    last_other: bool,
    /// How many input slots the executors read: the inputs, then the live parameters'.
    n_slots: usize,
}

/// Each input's shape in declaration order, `None` for an absent one.
type InputShapes = Vec<Option<Vec<usize>>>;

/// The most plans for other shapes one plan keeps ([`Plan::value_and_grad`]).
pub const MAX_OTHER_SHAPES: usize = 4;

/// The executors of a split plan ([`super::split`]): statistics and backward for this plan's
/// shapes, finish for the last batch size it saw.
struct SplitState<T: Real> {
    graphs: super::split::SplitGraphs,
    stats: Box<dyn Executor<T>>,
    backward: Box<dyn Executor<T>>,
    finish: Option<(usize, Box<dyn Executor<T>>)>,
    /// Each statistic's shape for this plan's images (batch axis first).
    shapes: Vec<Vec<usize>>,
}

/// The loss value from the statistics of the whole batch, and the adjoint (seed) of each
/// statistic, which [`Plan::backward`] turns into a shard's gradient.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Finished<T> {
    pub value: T,
    pub seeds: Vec<ArrayD<T>>,
}

/// The loss value and the gradient of each differentiable input (in the input's own shape),
/// borrowed from the plan's buffers.
#[derive(Debug)]
pub struct Output<'a, T> {
    /// The loss value; for an unreduced loss `Σ seed · values` (the sum of the values when the
    /// `seed` input is not given), whose gradient the gradients are.
    pub value: T,
    grads: &'a [(String, ArrayD<T>)],
    values: Option<&'a ArrayD<T>>,
    terms: Terms<'a, T>,
}

/// The loss's named terms after a call: their names, and per term its value and weighted
/// value side by side.
#[derive(Debug, Clone, Copy)]
struct Terms<'a, T> {
    names: &'a [String],
    values: &'a [T],
}

/// One named term of a loss (`term(name, x)` in its source) after a call.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Term<'a, T> {
    pub name: &'a str,
    /// The term's own value `x`.
    pub value: T,
    /// Its share of the loss, `x · ∂loss/∂x`: `w · x` in a weighted sum `Σ w x`.
    pub weighted: T,
}

impl<'a, T: Copy> Terms<'a, T> {
    fn iter(self) -> impl Iterator<Item = Term<'a, T>> {
        self.names.iter().enumerate().map(move |(k, name)| Term {
            name,
            value: self.values[2 * k],
            weighted: self.values[2 * k + 1],
        })
    }
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
    /// An unreduced loss's per-group values over the result's axes (`[B, C]` for a region loss
    /// at `reduction = none`); `None` for a scalar loss.
    pub fn values(&self) -> Option<&'a ArrayD<T>> {
        self.values
    }
    /// The loss's named terms (`term(name, x)`: `dice_ce`'s `dice` and `ce`), in source
    /// order, each with its value and weighted value; none for a loss without terms.
    pub fn terms(&self) -> impl Iterator<Item = Term<'a, T>>
    where
        T: Copy,
    {
        self.terms.iter()
    }
}

/// The dimensions of the loss's innermost axis when it is a pack (the spatial axes window ops
/// work over), else none.
fn spatial_dims(sig: &Signature, binding: &Binding) -> Vec<usize> {
    match sig.space.names.len().checked_sub(1) {
        Some(last) if sig.space.packs[last] => binding.dims[last].clone(),
        _ => Vec::new(),
    }
}

/// Every window and order op's constants, by the meanings its table entry gives them, and
/// against the bound spatial sides: a constant out of its range is an [`Error::OpArgument`]
/// (with the parameters set away from their defaults), a side smaller than a window or shapes
/// without spatial axes a shape error naming the input that binds them.
fn check_windows(
    loss: &Loss,
    binding: &Binding,
    graph: &crate::ir::graph::Graph,
    spatial: &[usize],
) -> Result<()> {
    let sig = &loss.sig;
    for id in 0..graph.len() {
        let n = graph.node(id as crate::ir::graph::NodeId);
        let Some((_, consts)) = crate::ops::window::window_args(graph, n) else {
            continue;
        };
        use crate::ops::window::{validate, validate_consts};
        if let Err(detail) = validate_consts(n.op, &consts, Some(spatial.len())) {
            return Err(Error::OpArgument {
                loss: sig.name.clone(),
                op: n.op.name().to_string(),
                detail,
                params: loss.params_set(),
            });
        }
        if let Err(detail) = validate(n.op, &consts, spatial) {
            let last = sig.space.names.len().saturating_sub(1);
            let (input, shape) = sig
                .inputs
                .iter()
                .zip(&binding.shapes)
                .find_map(|(inp, s)| {
                    s.as_ref()
                        .filter(|_| inp.axes.contains(&last))
                        .map(|s| (inp, s.clone()))
                })
                .map(|(inp, s)| (inp.name.clone(), s))
                .unwrap_or_default();
            return Err(Error::Shape {
                input,
                expected: format!(
                    "spatial sides of at least {} for `{}`",
                    crate::ops::window::min_side(n.op, &consts),
                    n.op.name()
                ),
                received: shape,
                detail,
            });
        }
    }
    Ok(())
}

impl Loss {
    /// Every vector parameter set to a list has one number per element of its axis.
    fn check_vectors(&self, binding: &Binding) -> Result<()> {
        for (name, axis, ws) in self.vector_lists() {
            let size = binding.sizes[axis];
            if ws.len() != size {
                return Err(Error::ParamValue {
                    name,
                    loss: self.sig.name.clone(),
                    expected: format!(
                        "takes one number per element of axis {} ({size} for these shapes)",
                        self.sig.space.names[axis]
                    ),
                    got: format!("{} numbers", ws.len()),
                });
            }
        }
        Ok(())
    }

    /// Compiles with a chosen executor ([`Loss::compile`] uses the fused one).
    pub fn compile_with<T: Real>(
        &self,
        shapes: &[(&str, &[usize])],
        kind: ExecutorKind,
    ) -> Result<Plan<T>> {
        let binding = bind_shapes(&self.sig, shapes)?;
        self.check_vectors(&binding)?;
        if self.sig.inputs.len() > MAX_INPUTS {
            return Err(Error::Limit {
                loss: self.sig.name.clone(),
                what: "inputs",
                count: self.sig.inputs.len(),
                max: MAX_INPUTS,
            });
        }
        let absent = binding.lowering_key();
        let sg = self.bound_stage(&binding, &absent)?;
        let diff: Vec<usize> = (0..self.sig.inputs.len())
            .filter(|&i| self.sig.inputs[i].diff && !absent.contains(&i))
            .collect();
        // An unreduced loss's values are one more output, over the result's axes.
        let values_axes = sg
            .roots
            .iter()
            .find(|r| r.0 == "values")
            .map(|r| sg.graph.axes(r.1));
        let term_names: Vec<String> = sg
            .roots
            .iter()
            .filter_map(|r| r.0.strip_prefix("term.").map(str::to_string))
            .collect();
        let outputs = diff.len() + usize::from(values_axes.is_some()) + 2 * term_names.len();
        if outputs > MAX_GRADS {
            return Err(Error::Limit {
                loss: self.sig.name.clone(),
                what: "outputs (differentiable inputs, per-group values, two per named term)",
                count: outputs,
                max: MAX_GRADS,
            });
        }
        // The plan's own buffers are the gradients, one per differentiable input.
        let needed = diff.iter().try_fold(0u64, |acc, &i| {
            memory::bytes(
                binding.shapes[i].as_deref().unwrap_or(&[]),
                std::mem::size_of::<T>(),
            )
            .and_then(|b| acc.checked_add(b))
        });
        memory::ensure_fits(
            &format!("a plan of `{}` (its gradient buffers)", self.sig.name),
            needed,
        )?;
        let (graph, roots) = (sg.graph, sg.roots.into_iter().map(|r| r.1).collect());
        let grad_axes = diff
            .iter()
            .map(|&i| self.sig.inputs[i].mask)
            .chain(values_axes)
            .chain(std::iter::repeat_n(0, 2 * term_names.len()))
            .collect();
        let spatial = spatial_dims(&self.sig, &binding);
        check_windows(self, &binding, &graph, &spatial)?;
        let bound = Arc::new(Bound {
            graph,
            roots,
            sizes: binding.sizes.clone(),
            grad_axes,
            spatial,
        });
        let built = choose::<T>(bound.clone(), kind);
        if built.buffer_bytes > 0 {
            memory::ensure_fits(
                &format!("a plan of `{}` (its window-op buffers)", self.sig.name),
                Some(built.buffer_bytes as u64),
            )?;
        }
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
        let values = values_axes.map(|ax| {
            let shape: Vec<usize> = (0..binding.sizes.len())
                .filter(|a| ax & (1 << a) != 0)
                .flat_map(|a| binding.dims[a].iter().copied())
                .collect();
            ArrayD::from_elem(IxDyn(&shape), T::default())
        });
        let params = self.param_values();
        let labels = (0..self.sig.inputs.len())
            .filter(|&i| binding.labels[i])
            .filter_map(|i| {
                let (axis, ignore) = self.sig.inputs[i].labels.as_ref()?;
                let ignore = params.iter().find_map(|(k, v)| match v {
                    ParamValue::Number(x) if k == ignore => Some(*x),
                    _ => None,
                })?;
                Some((i, *axis, binding.sizes[*axis], ignore))
            })
            .collect();
        Ok(Plan {
            sig: self.sig.clone(),
            diff,
            binding,
            bound,
            executor: built.kind,
            kind,
            exec: built.exec,
            value_exec: None,
            #[cfg(test)]
            value_kernels: Vec::new(),
            isa: built.isa,
            cap: None,
            pass_info: built.info,
            fallback: built.fallback,
            buffer_bytes: built.buffer_bytes,
            check_finite: true,
            grads,
            values,
            labels,
            live_vals: self
                .live
                .iter()
                .map(|lp| {
                    let x = params.iter().find_map(|(k, v)| match v {
                        ParamValue::Number(x) if *k == lp.name => Some(*x),
                        _ => None,
                    });
                    T::from_f64(x.unwrap_or(f64::NAN))
                })
                .collect(),
            n_slots: self
                .live
                .iter()
                .map(|lp| lp.index + 1)
                .fold(self.sig.inputs.len(), usize::max),
            term_vals: vec![T::default(); 2 * term_names.len()],
            term_names,
            last_other: false,
            loss: self.clone(),
            split: None,
            others: Vec::new(),
        })
    }
}

impl<T: Real> Plan<T> {
    /// Turns the NaN/Inf input check off (it is on by default); non-finite values then propagate.
    pub fn set_check_finite(&mut self, on: bool) {
        self.check_finite = on;
        for (_, p) in &mut self.others {
            p.set_check_finite(on);
        }
    }
    /// Memory passes over N-sized data per call.
    pub fn passes(&self) -> usize {
        self.exec.passes()
    }
    /// The instruction set the fused kernels run with (the widest this CPU has unless capped),
    /// or [`Isa::Scalar`] on the reference interpreter.
    pub fn instruction_set(&self) -> Isa {
        self.isa
    }
    /// Runs the fused kernels with at most the instruction set `isa`: to test each code path on
    /// one machine, or to reproduce another machine's bits (`lossc` does this for the
    /// `LOSSLANG_ISA` environment variable). Never widens what the CPU has; `Scalar` caps like
    /// `Baseline`. Returns the instruction set now in use.
    pub fn cap_instruction_set(&mut self, isa: Isa) -> Isa {
        let now = self.exec.cap_isa(isa);
        if let Some(v) = self.value_exec.as_mut() {
            v.cap_isa(isa);
        }
        if let Some(s) = self.split.as_mut() {
            s.stats.cap_isa(isa);
            s.backward.cap_isa(isa);
            if let Some((_, f)) = s.finish.as_mut() {
                f.cap_isa(isa);
            }
        }
        self.isa = now;
        self.cap = Some(isa);
        for (_, p) in &mut self.others {
            p.cap_instruction_set(isa);
        }
        now
    }

    /// `exec` with this plan's instruction-set cap, if one was set.
    fn capped(&self, mut exec: Box<dyn Executor<T>>) -> Box<dyn Executor<T>> {
        if let Some(cap) = self.cap {
            exec.cap_isa(cap);
        }
        exec
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
    /// Bytes of the buffers the plan keeps between passes beside its gradients: the image
    /// arguments and outputs of window ops (0 for a plan without window ops).
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }
    /// [`ExecutorKind::Fused`], [`ExecutorKind::Staged`] (fused passes with window ops between
    /// them) or [`ExecutorKind::Reference`].
    pub fn executor(&self) -> ExecutorKind {
        self.executor
    }
    pub fn binding(&self) -> &Binding {
        &self.binding
    }
    /// The bound graph and roots (value first) before kernel preparation.
    pub(crate) fn bound(&self) -> &Arc<Bound> {
        &self.bound
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

    /// The named terms of the last [`Plan::value_and_grad`] (or `_into`) call, whatever its
    /// shapes: each one's value and weighted value ([`Output::terms`]).
    pub fn terms(&self) -> impl Iterator<Item = Term<'_, T>> {
        let plan = match self.others.last() {
            Some((_, p)) if self.last_other => p,
            _ => self,
        };
        Terms {
            names: &plan.term_names,
            values: &plan.term_vals,
        }
        .iter()
    }

    /// Sets a live parameter ([`Loss::live`]) for the next calls, without compiling: the same
    /// result as a plan compiled with the loss `.set(name, value)`, to the last bits only where
    /// constant folding would have rounded differently (`x * 1` is kept). The plans kept for
    /// other shapes follow, as do the ones compiled later. A parameter that was not made live
    /// is [`Error::NotLive`]; a value outside its range (or the range of a called loss it is
    /// passed to) is [`Error::ParamValue`]. Split-phase evaluation ([`Plan::statistics`])
    /// compiles its graphs again on its next call.
    pub fn set_param(&mut self, name: &str, value: f64) -> Result<()> {
        let k = self.loss.check_live_value(name, value)?;
        self.live_vals[k] = T::from_f64(value);
        self.loss.set_live_value(name, value);
        self.split = None;
        for (_, p) in &mut self.others {
            p.set_param(name, value)?;
        }
        Ok(())
    }

    /// The current value of each live parameter ([`Plan::set_param`]).
    pub fn live_params(&self) -> impl Iterator<Item = (&str, f64)> {
        self.loss
            .live
            .iter()
            .zip(&self.live_vals)
            .map(|(p, v)| (p.name.as_str(), v.to_f64()))
    }

    /// The input shapes (declaration order, `None` for an absent input) of the plans this plan
    /// keeps for other shapes, least recently used first.
    pub fn kept_shapes(&self) -> impl Iterator<Item = &[Option<Vec<usize>>]> {
        self.others.iter().map(|(s, _)| s.as_slice())
    }

    /// Where a call with `inputs` runs: `None` here (their shapes are this plan's, or something
    /// other than shapes is wrong, which [`Plan::prepare`] reports), else the index in
    /// `others` of the plan for their shapes — compiled now if no call had them, keeping at
    /// most [`MAX_OTHER_SHAPES`] (the least recently used goes).
    fn plan_for(&mut self, inputs: &[(&str, ArrayViewD<T>)]) -> Result<Option<usize>> {
        let index = |name: &str| self.sig.inputs.iter().position(|x| x.name == name);
        // Without allocating: every input given once and with the shape `shapes` gives it.
        let same = |shapes: &[Option<Vec<usize>>]| {
            inputs.len() == shapes.iter().filter(|s| s.is_some()).count()
                && inputs.iter().all(|(name, v)| {
                    index(name).is_some_and(|i| shapes[i].as_deref() == Some(v.shape()))
                })
        };
        if same(&self.binding.shapes) {
            return Ok(None);
        }
        if let Some(k) = self.others.iter().position(|(s, _)| same(s)) {
            let hit = self.others.remove(k);
            self.others.push(hit);
            return Ok(Some(self.others.len() - 1));
        }
        // A new shape for the same inputs (anything else is `prepare`'s to report).
        let mut shapes: InputShapes = vec![None; self.sig.inputs.len()];
        for (name, v) in inputs {
            match index(name) {
                Some(i) if shapes[i].is_none() => shapes[i] = Some(v.shape().to_vec()),
                _ => return Ok(None),
            }
        }
        if (0..shapes.len()).any(|i| shapes[i].is_none() != self.binding.shapes[i].is_none()) {
            return Ok(None);
        }
        let named: Vec<(&str, &[usize])> = self
            .sig
            .inputs
            .iter()
            .zip(&shapes)
            .filter_map(|(inp, s)| Some((inp.name.as_str(), s.as_deref()?)))
            .collect();
        let mut plan = self.loss.compile_with::<T>(&named, self.kind)?;
        plan.check_finite = self.check_finite;
        if let Some(cap) = self.cap {
            plan.cap_instruction_set(cap);
        }
        if self.others.len() == MAX_OTHER_SHAPES {
            self.others.remove(0);
        }
        self.others.push((shapes, plan));
        Ok(Some(self.others.len() - 1))
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
                let row_major: Vec<isize> = {
                    let mut st = vec![1isize; v.ndim()];
                    for k in (0..v.ndim().saturating_sub(1)).rev() {
                        st[k] = st[k + 1] * v.shape()[k + 1] as isize;
                    }
                    st
                };
                return Err(Error::Shape {
                    input: inp.name.clone(),
                    expected: format!("{:?} with row-major strides {row_major:?}", v.shape()),
                    received: v.shape().to_vec(),
                    detail: format!(
                        "the shape is right but the layout is not: its strides are {:?} (a transposed, sliced or column-major view); pass `.as_standard_layout()`",
                        v.strides()
                    ),
                });
            };
            slices[i] = data;
        }
        for &(i, axis, classes, ignore) in &self.labels {
            // Whole: adding and taking away 2^52 rounds x in [0, 2^52) to an integer, so it
            // returns x exactly when x is one (float adds only, so the check vectorises; a
            // float-to-int cast does not). Branch-free per block; the position is looked for
            // only on failure.
            const ROUND: f64 = 4_503_599_627_370_496.0;
            let ok = |x: f64| {
                x == ignore || (x >= 0.0 && x < classes as f64 && (x + ROUND) - ROUND == x)
            };
            let bad = slices[i]
                .chunks(1024)
                .any(|c| c.iter().fold(false, |b, x| b | !ok(x.to_f64())));
            let first = bad.then(|| slices[i].iter().position(|x| !ok(x.to_f64())));
            if let Some(k) = first.flatten() {
                let shape = self.binding.shapes[i].as_deref().unwrap_or(&[]);
                let mut index = vec![0; shape.len()];
                let mut rem = k;
                for (d, &s) in index.iter_mut().zip(shape).rev() {
                    *d = rem % s;
                    rem /= s;
                }
                return Err(Error::Label {
                    input: self.sig.inputs[i].name.clone(),
                    index,
                    value: slices[i][k].to_f64(),
                    axis: self.sig.space.names[axis].clone(),
                    classes: self.binding.sizes[axis],
                    ignore,
                });
            }
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
        self.last_other = false;
        if let Some(k) = self.plan_for(inputs)? {
            self.last_other = true;
            return self.others[k].1.value_and_grad(inputs);
        }
        // Every gradient into the plan's own buffers.
        let value = self.value_and_grad_into(inputs, &mut [])?;
        Ok(Output {
            value,
            grads: &self.grads,
            values: self.values.as_ref(),
            terms: Terms {
                names: &self.term_names,
                values: &self.term_vals,
            },
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
        self.last_other = false;
        if let Some(k) = self.plan_for(inputs)? {
            self.last_other = true;
            return self.others[k].1.value_and_grad_into(inputs, grads);
        }
        let mut slices = self.prepare(inputs)?;
        for (lp, v) in self.loss.live.iter().zip(&self.live_vals) {
            slices[lp.index] = std::slice::from_ref(v);
        }
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
        let n = self.diff.len() + usize::from(self.values.is_some()) + self.term_vals.len();
        let mut own = self
            .grads
            .iter_mut()
            .map(|(_, a)| a.as_slice_mut().expect("plan buffers are contiguous"))
            .chain(
                self.values
                    .iter_mut()
                    .map(|a| a.as_slice_mut().expect("plan buffers are contiguous")),
            )
            .chain(self.term_vals.chunks_mut(1));
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
                (None, Some(a)) => a,
                (None, None) => &mut [],
            }
        });
        let value = self
            .exec
            .run(&slices[..self.n_slots], &mut bufs[..n], self.check_finite)
            .map_err(|i| non_finite(&self.sig, &slices, i))?;
        self.finite_result(value)
    }

    /// `value`, or with the finiteness check on, an error if it is not finite (the inputs were).
    fn finite_result(&self, value: T) -> Result<T> {
        if !self.check_finite || value.to_f64().is_finite() {
            return Ok(value);
        }
        Err(self.non_finite_result("value".into(), value.to_f64()))
    }

    fn non_finite_result(&self, what: String, value: f64) -> Error {
        Error::NonFiniteResult {
            loss: self.sig.name.clone(),
            what,
            value,
            params: self.loss.params_set(),
        }
    }

    /// Checks the gradients (and per-group values) of the last call held in the plan's own
    /// buffers: an error naming the first non-finite one and the parameters set away from
    /// their defaults. A read of every gradient element, so opt-in (`lossc eval` calls it);
    /// the value itself is always checked.
    pub fn check_grads_finite(&self) -> Result<()> {
        for (name, g) in &self.grads {
            if let Some(x) = g.iter().find(|x| !x.to_f64().is_finite()) {
                return Err(self.non_finite_result(format!("gradient of `{name}`"), x.to_f64()));
            }
        }
        if let Some(x) = self
            .values
            .iter()
            .flatten()
            .find(|x| !x.to_f64().is_finite())
        {
            return Err(self.non_finite_result("per-group values".into(), x.to_f64()));
        }
        Ok(())
    }

    /// The loss value alone, from a value-only plan (built on the first call: the gradient's
    /// nodes are left out, so a region loss takes one memory pass instead of two). Its value
    /// may differ from `value_and_grad`'s in the last bits: kernels are prepared for the nodes
    /// each plan has.
    pub fn value(&mut self, inputs: &[(&str, ArrayViewD<T>)]) -> Result<T> {
        if let Some(k) = self.plan_for(inputs)? {
            return self.others[k].1.value(inputs);
        }
        let mut slices = self.prepare(inputs)?;
        self.build_value_exec();
        for (lp, v) in self.loss.live.iter().zip(&self.live_vals) {
            slices[lp.index] = std::slice::from_ref(v);
        }
        let exec = self.value_exec.as_mut().expect("built above");
        let value = exec
            .run(&slices[..self.n_slots], &mut [], self.check_finite)
            .map_err(|i| non_finite(&self.sig, &slices, i))?;
        self.finite_result(value)
    }

    /// Builds the value-only executor unless it exists.
    fn build_value_exec(&mut self) {
        if self.value_exec.is_none() {
            // The same executor as the full plan (interpreter if it fell back), on the value
            // root alone, with the same instruction-set cap.
            let b = &self.bound;
            let value_only = Arc::new(Bound {
                roots: vec![b.roots[0]],
                grad_axes: vec![],
                ..(**b).clone()
            });
            let kind = match self.executor {
                ExecutorKind::Reference => ExecutorKind::Reference,
                _ => self.kind,
            };
            let built = choose::<T>(value_only, kind);
            #[cfg(test)]
            {
                self.value_kernels = built.info.iter().map(|p| p.kernel).collect();
            }
            self.value_exec = Some(self.capped(built.exec));
        }
    }

    /// Builds the split plan unless it exists.
    fn build_split(&mut self) -> Result<()> {
        if self.split.is_some() {
            return Ok(());
        }
        let absent = self.binding.lowering_key();
        // Live parameters as constants at their current values (`set_param` drops this state).
        let sg = self
            .loss
            .without_live()
            .stage(super::Stage::Optimised, &absent)?;
        let not = |reason: String| Error::NotSplittable {
            loss: self.sig.name.clone(),
            reason,
        };
        if self.sig.space.names.is_empty() {
            return Err(not("the loss has no axes".into()));
        }
        if self.values.is_some() {
            return Err(not(
                "its result is unreduced (one value per group): its values are per image already"
                    .into(),
            ));
        }
        let graphs = super::split::split(
            &sg.graph,
            sg.roots[0].1,
            &self.diff,
            self.sig.inputs.len(),
            0,
        )
        .map_err(not)?;
        let sizes = &self.binding.sizes;
        let spatial = spatial_dims(&self.sig, &self.binding);
        let stats = self.capped(bind_and_choose(
            &graphs.stats,
            sizes,
            graphs.stat_axes.clone(),
            spatial.clone(),
            self.kind,
        ));
        let grad_axes = self.diff.iter().map(|&i| self.sig.inputs[i].mask).collect();
        let backward = self.capped(bind_and_choose(
            &graphs.backward,
            sizes,
            grad_axes,
            spatial,
            self.kind,
        ));
        let shapes = graphs
            .stat_axes
            .iter()
            .map(|&a| {
                (0..sizes.len())
                    .filter(|k| a & (1 << k) != 0)
                    .map(|k| sizes[k])
                    .collect()
            })
            .collect();
        self.split = Some(Box::new(SplitState {
            graphs,
            stats,
            backward,
            finish: None,
            shapes,
        }));
        Ok(())
    }

    /// Split-phase evaluation for data-parallel training, step 1 of 3: this shard's sufficient
    /// statistics. The plan's inputs are images `first_image ..` of a batch of `batch` images
    /// (the loss's first axis). Each statistic comes back over its axes with the batch axis
    /// first and of size `batch`: this shard's rows filled, zero elsewhere — so summing the
    /// arrays of all shards (any all-reduce) assembles the whole batch's statistics exactly.
    /// Then [`Plan::finish`] gives the value and the seeds, [`Plan::backward`] each shard's
    /// gradient; both equal the unsharded ones bit for bit. A loss whose per-image values
    /// depend on batch-wide ones, or that sorts across the batch, is [`Error::NotSplittable`].
    pub fn statistics(
        &mut self,
        inputs: &[(&str, ArrayViewD<T>)],
        first_image: usize,
        batch: usize,
    ) -> Result<Vec<ArrayD<T>>> {
        self.build_split()?;
        let mine = self.binding.sizes[0];
        if first_image.checked_add(mine).is_none_or(|end| end > batch) {
            return Err(Error::Shape {
                input: self.sig.inputs[0].name.clone(),
                expected: format!(
                    "images {first_image}..{} of a batch of {batch}",
                    first_image.saturating_add(mine)
                ),
                received: self.binding.shapes[0].clone().unwrap_or_default(),
                detail: "the shard does not fit in the batch".into(),
            });
        }
        let slices = self.prepare(inputs)?;
        let split = self.split.as_mut().expect("built above");
        let mut local: Vec<Vec<T>> = split
            .shapes
            .iter()
            .map(|s| vec![T::default(); s.iter().product()])
            .collect();
        let mut bufs: Vec<&mut [T]> = local.iter_mut().map(|b| b.as_mut_slice()).collect();
        split
            .stats
            .run(
                &slices[..self.sig.inputs.len()],
                &mut bufs,
                self.check_finite,
            )
            .map_err(|i| non_finite(&self.sig, &slices, i))?;
        Ok(split
            .shapes
            .iter()
            .zip(local)
            .map(|(shape, part)| {
                let mut full = shape.clone();
                full[0] = batch;
                let row = part.len() / mine.max(1);
                let mut a = ArrayD::from_elem(IxDyn(&full), T::default());
                let data = a.as_slice_mut().expect("fresh arrays are contiguous");
                data[first_image * row..first_image * row + part.len()].copy_from_slice(&part);
                a
            })
            .collect())
    }

    /// Step 2 of 3: the loss value and the seeds from the summed statistics of every shard (the
    /// arrays [`Plan::statistics`] returns, summed elementwise across shards). Any shard's plan
    /// gives the same bits.
    pub fn finish(&mut self, stats: &[ArrayD<T>]) -> Result<Finished<T>> {
        self.build_split()?;
        let cap = self.cap;
        let split = self.split.as_mut().expect("built above");
        let batch = stats
            .first()
            .map_or(0, |s| s.shape().first().copied().unwrap_or(0));
        if stats.len() != split.shapes.len() {
            return Err(Error::Shape {
                input: "statistics".into(),
                expected: format!("{} arrays", split.shapes.len()),
                received: vec![stats.len()],
                detail: "finish takes the arrays statistics returned, summed across shards".into(),
            });
        }
        for (k, (s, shape)) in stats.iter().zip(&split.shapes).enumerate() {
            let mut want = shape.clone();
            want[0] = batch;
            if s.shape() != want.as_slice() || !s.is_standard_layout() {
                return Err(Error::Shape {
                    input: format!("statistics[{k}]"),
                    expected: format!("{want:?}, row-major"),
                    received: s.shape().to_vec(),
                    detail: "a statistic differs from the shape statistics returned".into(),
                });
            }
        }
        if split.finish.as_ref().is_none_or(|(b, _)| *b != batch) {
            let mut sizes = self.binding.sizes.clone();
            sizes[0] = batch;
            let mut exec = bind_and_choose(
                &split.graphs.finish,
                &sizes,
                split.graphs.stat_axes.clone(),
                spatial_dims(&self.sig, &self.binding),
                self.kind,
            );
            if let Some(cap) = cap {
                exec.cap_isa(cap);
            }
            split.finish = Some((batch, exec));
        }
        let exec = &mut split.finish.as_mut().expect("built above").1;
        let mut seeds: Vec<ArrayD<T>> = stats
            .iter()
            .map(|s| ArrayD::from_elem(s.raw_dim(), T::default()))
            .collect();
        let slices: Vec<&[T]> = stats
            .iter()
            .map(|s| s.as_slice().expect("checked"))
            .collect();
        let mut bufs: Vec<&mut [T]> = seeds
            .iter_mut()
            .map(|s| s.as_slice_mut().expect("fresh arrays are contiguous"))
            .collect();
        let value = exec
            .run(&slices, &mut bufs, self.check_finite)
            .map_err(|k| non_finite_in(format!("statistics[{k}]"), slices[k]))?;
        Ok(Finished { value, seeds })
    }

    /// Step 3 of 3: the gradient of this shard's differentiable inputs (images `first_image ..`
    /// of the batch), from the seeds [`Plan::finish`] gave — the unsharded gradient's rows for
    /// these images, bit for bit. The output's `value` is 0: the loss is [`Finished::value`].
    pub fn backward(
        &mut self,
        inputs: &[(&str, ArrayViewD<T>)],
        finished: &Finished<T>,
        first_image: usize,
    ) -> Result<Output<'_, T>> {
        self.build_split()?;
        let slices = self.prepare(inputs)?;
        let split = self.split.as_mut().expect("built above");
        let mine = self.binding.sizes[0];
        let mut all: [&[T]; MAX_INPUTS] = [&[]; MAX_INPUTS];
        all[..self.sig.inputs.len()].copy_from_slice(&slices[..self.sig.inputs.len()]);
        for (k, (seed, shape)) in finished.seeds.iter().zip(&split.shapes).enumerate() {
            let row: usize = shape[1..].iter().product();
            let data = seed.as_slice().unwrap_or(&[]);
            let rows = first_image * row..(first_image + mine) * row;
            if seed.shape().get(1..) != shape.get(1..) || rows.end > data.len() {
                return Err(Error::Shape {
                    input: format!("seeds[{k}]"),
                    expected: format!(
                        "[batch, {:?}] with images {first_image}..{} in it",
                        &shape[1..],
                        first_image + mine
                    ),
                    received: seed.shape().to_vec(),
                    detail: "backward takes the seeds finish returned".into(),
                });
            }
            all[split.graphs.seed_base + k] = &data[rows];
        }
        let n_in = split.graphs.seed_base + split.shapes.len();
        let mut it = self.grads.iter_mut();
        let mut bufs: [&mut [T]; MAX_GRADS] = std::array::from_fn(|_| match it.next() {
            Some((_, a)) => a.as_slice_mut().expect("plan buffers are contiguous"),
            None => &mut [],
        });
        let n = self.diff.len();
        let base = split.graphs.seed_base;
        split
            .backward
            .run(&all[..n_in], &mut bufs[..n], self.check_finite)
            .map_err(|i| match i.checked_sub(base) {
                Some(k) => non_finite_in(format!("seeds[{k}]"), all[i]),
                None => non_finite(&self.sig, &slices, i),
            })?;
        Ok(Output {
            value: T::default(),
            grads: &self.grads,
            values: None,
            terms: Terms {
                names: &[],
                values: &[],
            },
        })
    }

    /// The `kernel` of each pass of the value-only plan (built if it was not).
    #[cfg(test)]
    pub(crate) fn value_pass_kernels(&mut self) -> Vec<Kernel> {
        self.build_value_exec();
        self.value_kernels.clone()
    }

    /// The native-kernel listing of every pass of this plan and of its value-only plan:
    /// (plan, pass, entry), plan `"value and gradient"` or `"value"`.
    #[cfg(test)]
    pub(crate) fn native_listing(
        &mut self,
    ) -> Vec<(&'static str, usize, Option<crate::exec::NativeEntry>)> {
        self.build_value_exec();
        let full = self.exec.native_listing().into_iter().enumerate();
        let value = self
            .value_exec
            .as_ref()
            .map(|e| e.native_listing())
            .unwrap_or_default();
        full.map(|(p, e)| ("value and gradient", p, e))
            .chain(value.into_iter().enumerate().map(|(p, e)| ("value", p, e)))
            .collect()
    }
}
