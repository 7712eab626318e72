//! What a framework adapter wraps: a loss with one differentiable input, compiled per dtype on
//! its first call and per shape as shapes come (a [`Plan`] keeps its other shapes), shared
//! between clones and threads.
//!
//! In: a [`Loss`] and, per call, the inputs as host views of `f32` or `f64`. Out: the value,
//! with the gradient of the differentiable input written into the caller's buffer. Never here:
//! any framework's tensor type — the adapters (`losslang-burn`, `losslang-candle`) convert.

use std::any::Any;
use std::sync::{Arc, Mutex};

use ndarray::{ArrayViewD, ArrayViewMutD};

use super::{Library, Loss, Plan};
use crate::error::{Error, Result};
use crate::ir::lower::ParamValue;
use crate::ops::math::Real;

/// A compiled plan of either dtype (a `Plan<f32>` or `Plan<f64>`), or none yet.
type Slot = Option<Box<dyn Any + Send>>;

/// A loss called from a training loop: one differentiable input (the logits), plans compiled
/// on first use for each dtype. Cheap to clone (the plans are shared).
#[derive(Clone)]
pub struct TrainingLoss {
    loss: Loss,
    diff: String,
    target: Option<String>,
    /// One plan per dtype, `f32` then `f64` (each a `Plan<T>` once compiled), and the live
    /// parameters' values set since the loss was given.
    plans: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    plans: [Slot; 2],
    live: Vec<(String, f64)>,
    /// The named terms of the last call.
    terms: Vec<TermValue>,
    /// Half-precision calls' inputs widened to f32, then the f32 gradient.
    #[cfg(feature = "half")]
    wide: Vec<Vec<f32>>,
}

/// A half-precision element type (`half::f16`, `half::bf16`), widened to `f32` for the plan.
#[cfg(feature = "half")]
pub trait HalfFloat: Copy + sealed::Sealed + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

#[cfg(feature = "half")]
mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

#[cfg(feature = "half")]
impl HalfFloat for half::f16 {
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

#[cfg(feature = "half")]
impl HalfFloat for half::bf16 {
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

/// A named term of a loss after a training step (`term(name, x)` in its source): what a
/// training loop logs beside the total.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TermValue {
    pub name: String,
    /// The term's own value.
    pub value: f64,
    /// Its share of the loss (`w · x` in a weighted sum `Σ w x`).
    pub weighted: f64,
}

impl TrainingLoss {
    /// `loss`, which must have exactly one differentiable input (else [`Error::DiffInputs`]).
    pub fn new(loss: Loss) -> Result<TrainingLoss> {
        let sig = loss.signature();
        let diff: Vec<&str> = sig
            .inputs
            .iter()
            .filter(|i| i.diff)
            .map(|i| i.name.as_str())
            .collect();
        let [diff] = diff[..] else {
            return Err(Error::DiffInputs {
                loss: sig.name.clone(),
                count: diff.len(),
            });
        };
        let diff = diff.to_string();
        let target = sig
            .inputs
            .iter()
            .find(|i| i.name != diff)
            .map(|i| i.name.clone());
        Ok(TrainingLoss {
            loss,
            diff,
            target,
            plans: Arc::default(),
        })
    }

    /// A loss of the standard library by name (`dice`, `softmax_ce`, ...).
    pub fn standard(name: &str) -> Result<TrainingLoss> {
        TrainingLoss::new(Library::standard().get(name)?)
    }

    /// The same loss with a parameter set ([`Loss::set`]); the plans start afresh.
    pub fn set(self, name: &str, value: impl Into<ParamValue>) -> Result<TrainingLoss> {
        TrainingLoss::new(self.loss.set(name, value)?)
    }

    /// The same loss with the named parameters live ([`Loss::live`]), so that
    /// [`TrainingLoss::set_param`] changes them between steps without compiling.
    pub fn live(self, names: &[&str]) -> Result<TrainingLoss> {
        TrainingLoss::new(self.loss.live(names)?)
    }

    /// Sets a live parameter for the next calls (a loss weight's schedule), in every plan this
    /// loss and its clones hold and the ones they compile later ([`Plan::set_param`]).
    pub fn set_param(&self, name: &str, value: f64) -> Result<()> {
        self.loss.check_live_value(name, value)?;
        let mut shared = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        for slot in shared.plans.iter_mut().flatten() {
            if let Some(p) = slot.downcast_mut::<Plan<f32>>() {
                p.set_param(name, value)?;
            } else if let Some(p) = slot.downcast_mut::<Plan<f64>>() {
                p.set_param(name, value)?;
            }
        }
        shared.live.retain(|(k, _)| k != name);
        shared.live.push((name.to_string(), value));
        Ok(())
    }

    /// The loss.
    pub fn loss(&self) -> &Loss {
        &self.loss
    }

    /// The differentiable input's name (the logits).
    pub fn diff_input(&self) -> &str {
        &self.diff
    }

    /// The first input that is not the differentiable one (the target), if the loss has one.
    pub fn target_input(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// The value for `inputs` (every input by name, the differentiable one included), the
    /// differentiable input's gradient written into `grad`. The first call for a dtype compiles
    /// the plan; a new shape compiles on first use and is kept.
    pub fn value_and_grad_into<T: Real + 'static>(
        &self,
        inputs: &[(&str, ArrayViewD<T>)],
        grad: ArrayViewMutD<T>,
    ) -> Result<T> {
        let mut shared = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        self.call(&mut shared, inputs, grad)
    }

    /// `value_and_grad_into` with the lock held.
    fn call<T: Real + 'static>(
        &self,
        shared: &mut Shared,
        inputs: &[(&str, ArrayViewD<T>)],
        grad: ArrayViewMutD<T>,
    ) -> Result<T> {
        let Shared {
            plans, live, terms, ..
        } = shared;
        let slot = &mut plans[usize::from(std::mem::size_of::<T>() == 8)];
        if slot.as_ref().is_none_or(|p| !p.is::<Plan<T>>()) {
            let shapes: Vec<(&str, &[usize])> =
                inputs.iter().map(|(n, v)| (*n, v.shape())).collect();
            let mut plan = self.loss.compile::<T>(&shapes)?;
            for (name, x) in live.iter() {
                plan.set_param(name, *x)?;
            }
            *slot = Some(Box::new(plan));
        }
        let plan = slot
            .as_mut()
            .and_then(|p| p.downcast_mut::<Plan<T>>())
            .expect("compiled above");
        let value = plan.value_and_grad_into(inputs, &mut [(self.diff.as_str(), grad)])?;
        terms.clear();
        terms.extend(plan.terms().map(|t| TermValue {
            name: t.name.to_string(),
            value: t.value.to_f64(),
            weighted: t.weighted.to_f64(),
        }));
        Ok(value)
    }

    /// The value for half-precision inputs (`half::f16` or `half::bf16`, every input), the
    /// gradient written into `grad` in the same type: the inputs are widened to `f32` (in
    /// buffers kept between calls), the `f32` plan runs — every transcendental in `f32`, every
    /// reduction in `f64` lanes, so that sums of millions of elements cannot overflow f16's
    /// 65504 — and the gradient is rounded to `H` once, at the end. Returns the value in `f32`.
    /// Class labels up to 2048 (f16) or 256 (bf16) are exact.
    #[cfg(feature = "half")]
    pub fn value_and_grad_into_half<H: HalfFloat>(
        &self,
        inputs: &[(&str, ArrayViewD<H>)],
        mut grad: ArrayViewMutD<H>,
    ) -> Result<f32> {
        let mut shared = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let mut wide = std::mem::take(&mut shared.wide);
        wide.resize_with(inputs.len() + 1, Vec::new);
        for ((_, v), buf) in inputs.iter().zip(wide.iter_mut()) {
            buf.clear();
            buf.extend(v.iter().map(|x| x.to_f32()));
        }
        let (bufs, out) = wide.split_at_mut(inputs.len());
        out[0].clear();
        out[0].resize(grad.len(), 0.0);
        let views: Vec<(&str, ArrayViewD<f32>)> = inputs
            .iter()
            .zip(bufs.iter())
            .map(|((name, v), b)| {
                let view = ArrayViewD::from_shape(v.raw_dim(), &b[..]).expect("same element count");
                (*name, view)
            })
            .collect();
        let g =
            ArrayViewMutD::from_shape(grad.raw_dim(), &mut out[0][..]).expect("same element count");
        let value = self.call(&mut shared, &views, g);
        if value.is_ok() {
            for (h, &x) in grad.iter_mut().zip(out[0].iter()) {
                *h = H::from_f32(x);
            }
        }
        drop(views);
        shared.wide = wide;
        value
    }

    /// The named terms of the last call (of this loss or a clone): each one's value and
    /// weighted share of the total; empty for a loss without terms.
    pub fn terms(&self) -> Vec<TermValue> {
        let shared = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        shared.terms.clone()
    }
}
