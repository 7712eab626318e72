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
    /// One plan per dtype, `f32` then `f64` (each a `Plan<T>` once compiled).
    plans: Arc<Mutex<[Slot; 2]>>,
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
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut plans[usize::from(std::mem::size_of::<T>() == 8)];
        if slot.as_ref().is_none_or(|p| !p.is::<Plan<T>>()) {
            let shapes: Vec<(&str, &[usize])> =
                inputs.iter().map(|(n, v)| (*n, v.shape())).collect();
            *slot = Some(Box::new(self.loss.compile::<T>(&shapes)?));
        }
        let plan = slot
            .as_mut()
            .and_then(|p| p.downcast_mut::<Plan<T>>())
            .expect("compiled above");
        plan.value_and_grad_into(inputs, &mut [(self.diff.as_str(), grad)])
    }
}
