//! # losslang-candle
//!
//! A losslang loss called with [candle](https://github.com/huggingface/candle) tensors: the
//! result is a scalar [`Tensor`] whose backward (candle's `backward()`) is the loss's symbolic
//! gradient, computed by the fused engine in the same call as the value.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use losslang_candle::CandleLoss;
//!
//! let dice = CandleLoss::standard("dice")?.set("reduction", "image")?;
//! let logits = Var::from_tensor(&Tensor::zeros((2, 1, 8, 8), candle_core::DType::F32, &Device::Cpu)?)?;
//! let target = Tensor::ones((2, 1, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
//! let loss = dice.forward(logits.as_tensor(), &target)?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(logits.as_tensor()).unwrap().dims(), &[2, 1, 8, 8]);
//! # Ok::<(), losslang_candle::Error>(())
//! ```
//!
//! Class-index targets as candle integer tensors, with the loss's parameters set by name (this
//! is the README's example):
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use losslang_candle::CandleLoss;
//!
//! fn main() -> candle_core::Result<()> {
//!     let loss_fn = CandleLoss::standard("softmax_ce")?.set("ignore_index", 255)?;
//!     let logits = Var::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu)?;
//!     let labels = Tensor::zeros((4, 32, 32), candle_core::DType::U8, &Device::Cpu)?;
//!     let loss = loss_fn.forward(logits.as_tensor(), &labels)?;
//!     let grads = loss.backward()?;
//!     assert_eq!(grads.get(logits.as_tensor()).unwrap().dims(), &[4, 3, 32, 32]);
//!     Ok(())
//! }
//! ```
//!
//! In: the loss's differentiable input (the model's logits, `f32` or `f64`, CPU, any layout)
//! and its other inputs (targets as float tensors or as class-index tensors of any integer
//! dtype, masks). Out: a scalar tensor of the logits' dtype. Shapes may change between calls
//! (a smaller last batch): each new shape gets its own plan, kept (`losslang::Plan` keeps
//! them). Errors stay typed ([`Error`]), and convert into `candle_core::Error` for `?` in a
//! candle training loop.
//!
//! Never here: any loss arithmetic — every number comes from the losslang plan.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use losslang::ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use losslang::{Loss, Real, TrainingLoss};

/// What can go wrong: the loss (typed, as losslang gives it), candle, or an input the adapter
/// cannot take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Loss(#[from] losslang::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A dtype or device the adapter does not take.
    #[error("input `{input}`: {detail}")]
    Input { input: String, detail: String },
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A loss compiled once and called with candle tensors. Cheap to clone (the plans are shared).
#[derive(Clone)]
pub struct CandleLoss {
    inner: TrainingLoss,
}

impl CandleLoss {
    /// The adapter for `loss`, which must have exactly one differentiable input.
    pub fn new(loss: Loss) -> Result<CandleLoss> {
        Ok(CandleLoss {
            inner: TrainingLoss::new(loss)?,
        })
    }

    /// A loss of the standard library by name (`dice`, `softmax_ce`, ...).
    pub fn standard(name: &str) -> Result<CandleLoss> {
        Ok(CandleLoss {
            inner: TrainingLoss::standard(name)?,
        })
    }

    /// The same loss with a parameter set (`losslang::Loss::set`); the plans start afresh.
    pub fn set(self, name: &str, value: impl Into<losslang::ParamValue>) -> Result<CandleLoss> {
        Ok(CandleLoss {
            inner: self.inner.set(name, value)?,
        })
    }

    /// The same loss with the named parameters live (`losslang::Loss::live`): changed by
    /// [`CandleLoss::set_param`] between steps without compiling (a loss weight's schedule).
    pub fn live(self, names: &[&str]) -> Result<CandleLoss> {
        Ok(CandleLoss {
            inner: self.inner.live(names)?,
        })
    }

    /// Sets a live parameter for the next steps (`losslang::TrainingLoss::set_param`): no
    /// compile; clones of this loss see it too.
    pub fn set_param(&self, name: &str, value: f64) -> Result<()> {
        Ok(self.inner.set_param(name, value)?)
    }

    /// The named terms of the last call (`dice_ce`'s `dice` and `ce`, or a user's
    /// `term(name, x)`): each one's value and weighted share of the total, to log per step.
    pub fn terms(&self) -> Vec<losslang::TermValue> {
        self.inner.terms()
    }

    /// The loss this adapter runs.
    pub fn loss(&self) -> &Loss {
        self.inner.loss()
    }

    /// The loss of `logits` against `target` (the loss's first other input); see
    /// [`CandleLoss::forward_with`].
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        let name = self.inner.target_input().ok_or_else(|| Error::Input {
            input: "target".into(),
            detail: format!(
                "`{}` takes no input beside `{}`",
                self.loss().name(),
                self.inner.diff_input()
            ),
        })?;
        self.forward_with(logits, &[(name, target)])
    }

    /// The loss of `logits` (its differentiable input) with the other inputs by name (`target`,
    /// `mask`, ...): a scalar tensor of `logits`' dtype whose backward gives `logits` the loss's
    /// gradient. Class-index targets come as integer tensors (`u8`, `u32`, `i64`, ...).
    pub fn forward_with(&self, logits: &Tensor, others: &[(&str, &Tensor)]) -> Result<Tensor> {
        match logits.dtype() {
            DType::F32 => self.run::<f32>(logits, others),
            DType::F64 => self.run::<f64>(logits, others),
            // Half precision: read widened to f32, the f32 plan (transcendentals in f32,
            // reductions in f64 lanes), value and gradient rounded to the logits' dtype.
            DType::F16 | DType::BF16 => self.run::<f32>(logits, others),
            d => Err(Error::Input {
                input: self.inner.diff_input().to_string(),
                detail: format!(
                    "dtype {d:?}: the candle adapter takes f16, bf16, f32 or f64 logits"
                ),
            }),
        }
    }

    fn run<T: Real + 'static + candle_core::WithDType>(
        &self,
        logits: &Tensor,
        others: &[(&str, &Tensor)],
    ) -> Result<Tensor> {
        let dtype = T::DTYPE;
        let logits_data = host_data::<T>(self.inner.diff_input(), logits, dtype)?;
        let other_data: Vec<(&str, ArrayD<T>)> = others
            .iter()
            .map(|(name, t)| Ok((*name, host_data::<T>(name, t, dtype)?)))
            .collect::<Result<_>>()?;
        let mut views: Vec<(&str, ArrayViewD<T>)> =
            vec![(self.inner.diff_input(), logits_data.view())];
        views.extend(other_data.iter().map(|(n, a)| (*n, a.view())));
        let mut grad = vec![T::default(); logits.elem_count()];
        let value = {
            let g = ArrayViewMutD::from_shape(IxDyn(logits.dims()), &mut grad[..])
                .expect("the buffer has the logits' element count");
            self.inner.value_and_grad_into(&views, g)?
        };
        let op = LossOp {
            value: Real::to_f64(value),
            grad: Mutex::new(Some(
                Tensor::from_vec(grad, logits.dims(), logits.device())?.to_dtype(logits.dtype())?,
            )),
        };
        Ok(logits.apply_op1(op)?)
    }
}

/// Deep supervision with candle tensors (`losslang::DeepSupervision`): one loss at several
/// decoder depths, each output at its own spatial size, against one target resized per depth
/// (nearest for class labels, average pooling for soft maps), weighted as MONAI's
/// `DeepSupervisionLoss` (`exp`, `same`, `two`, or given weights).
pub struct CandleDeepLoss {
    inner: losslang::DeepSupervision,
}

impl CandleDeepLoss {
    /// `loss` (one differentiable input) at every depth with `weights`.
    pub fn new(loss: Loss, weights: losslang::DeepWeights) -> Result<CandleDeepLoss> {
        Ok(CandleDeepLoss {
            inner: losslang::DeepSupervision::new(loss, weights)?,
        })
    }

    /// A loss of the standard library by name at every depth with `weights`.
    pub fn standard(name: &str, weights: losslang::DeepWeights) -> Result<CandleDeepLoss> {
        CandleDeepLoss::new(losslang::Library::standard().get(name)?, weights)
    }

    /// The same with another way of resizing the target (`losslang::Resize`).
    pub fn resize(self, resize: losslang::Resize) -> CandleDeepLoss {
        CandleDeepLoss {
            inner: self.inner.resize(resize),
        }
    }

    /// The weighted total over `outputs` (depth 0, at the target's size, first; f32 or f64,
    /// one dtype) against `target`: a scalar tensor whose backward gives each output its
    /// depth's gradient times its weight, and the per-depth values and weights to log.
    pub fn forward(
        &self,
        outputs: &[&Tensor],
        target: &Tensor,
    ) -> Result<(Tensor, losslang::DeepValue)> {
        match outputs.first().map(|o| o.dtype()) {
            Some(DType::F32) => self.run::<f32>(outputs, target),
            Some(DType::F64) => self.run::<f64>(outputs, target),
            d => Err(Error::Input {
                input: self.inner.diff_input().to_string(),
                detail: format!(
                    "dtype {d:?}: deep supervision takes one or more f32 or f64 outputs"
                ),
            }),
        }
    }

    fn run<T: Real + 'static + candle_core::WithDType>(
        &self,
        outputs: &[&Tensor],
        target: &Tensor,
    ) -> Result<(Tensor, losslang::DeepValue)> {
        let outs: Vec<ArrayD<T>> = outputs
            .iter()
            .enumerate()
            .map(|(l, o)| host_data::<T>(&format!("outputs[{l}]"), o, T::DTYPE))
            .collect::<Result<_>>()?;
        let y = host_data::<T>("target", target, T::DTYPE)?;
        let mut grads: Vec<ArrayD<T>> = outs
            .iter()
            .map(|o| ArrayD::from_elem(o.raw_dim(), T::default()))
            .collect();
        let r = {
            let views: Vec<ArrayViewD<T>> = outs.iter().map(|o| o.view()).collect();
            let mut gviews: Vec<ArrayViewMutD<T>> =
                grads.iter_mut().map(|g| g.view_mut()).collect();
            self.inner
                .value_and_grads_into(&views, y.view(), &mut gviews)?
        };
        let mut total: Option<Tensor> = None;
        for (l, (o, g)) in outputs.iter().zip(grads).enumerate() {
            let op = LossOp {
                value: r.weights[l] * r.values[l],
                grad: Mutex::new(Some(Tensor::from_vec(
                    g.into_raw_vec_and_offset().0,
                    o.dims(),
                    o.device(),
                )?)),
            };
            let part = o.apply_op1(op)?;
            total = Some(match total {
                Some(t) => (t + part)?,
                None => part,
            });
        }
        Ok((
            total.expect("at least one output (checked by the engine)"),
            r,
        ))
    }
}

/// A tensor's elements as a row-major array of `T` on the host (class indices and masks of
/// other dtypes converted exactly for the values they hold).
fn host_data<T: Real + candle_core::WithDType>(
    name: &str,
    t: &Tensor,
    dtype: DType,
) -> Result<ArrayD<T>> {
    if !t.device().is_cpu() {
        return Err(Error::Input {
            input: name.to_string(),
            detail: format!(
                "on {:?}: the candle adapter runs on the CPU",
                t.device().location()
            ),
        });
    }
    let t = if t.dtype() == dtype {
        t.clone()
    } else {
        t.to_dtype(dtype)?
    };
    let data = t.flatten_all()?.to_vec1::<T>()?;
    Ok(ArrayD::from_shape_vec(IxDyn(t.dims()), data).expect("element count matches the dims"))
}

/// The loss as a candle op of the logits: the value computed already, the gradient kept for
/// the backward pass (scaled by the incoming gradient there).
struct LossOp {
    value: f64,
    grad: Mutex<Option<Tensor>>,
}

impl CustomOp1 for LossOp {
    fn name(&self) -> &'static str {
        "losslang"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        _layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(_) => CpuStorage::F32(vec![self.value as f32]),
            CpuStorage::F64(_) => CpuStorage::F64(vec![self.value]),
            CpuStorage::F16(_) => CpuStorage::F16(vec![losslang::half::f16::from_f64(self.value)]),
            CpuStorage::BF16(_) => {
                CpuStorage::BF16(vec![losslang::half::bf16::from_f64(self.value)])
            }
            _ => candle_core::bail!("losslang: logits must be f16, bf16, f32 or f64"),
        };
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = self.grad.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(g) => Ok(Some(g.broadcast_mul(grad_res)?)),
            None => Ok(None),
        }
    }
}
