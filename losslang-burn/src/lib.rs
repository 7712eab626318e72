//! # losslang-burn
//!
//! A losslang loss called with [burn](https://burn.dev) tensors: the result is a one-element
//! `Tensor<1>` whose backward (burn's `backward()`) is the loss's symbolic gradient, computed
//! by the fused engine in the same call as the value.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use losslang_burn::BurnLoss;
//!
//! let device = Device::flex().autodiff();
//! let dice = BurnLoss::standard("softmax_dice")?.set("reduction", "image")?;
//! let logits = Tensor::<4>::zeros([2, 3, 8, 8], &device).require_grad();
//! let labels = Tensor::<3, Int>::zeros([2, 8, 8], &device);
//! let loss = dice.forward(logits.clone(), labels)?;
//! let grads = loss.backward();
//! assert_eq!(logits.grad(&grads).unwrap().dims(), [2, 3, 8, 8]);
//! # Ok::<(), losslang_burn::Error>(())
//! ```
//!
//! In: the loss's differentiable input (the model's logits, `f32` or `f64`, on any device) and
//! its other inputs (targets as float tensors or as class-index `Int` tensors, masks). Out: a
//! one-element tensor of the logits' dtype, on their device. Shapes may change between calls (a
//! smaller last batch): each new shape gets its own plan, kept (`losslang::Plan` keeps them).
//! Errors stay typed ([`Error`]).
//!
//! On the Flex backend under autodiff (`Device::flex().autodiff()`) the result is an autodiff
//! node of its own (`burn::backend::autodiff::ops::Backward`): its backward is the gradient the
//! plan computed with the value, times the incoming gradient, and nothing else is run. On any
//! other device the same gradient reaches the logits through `sum(logits · g)` with its value
//! replaced by the loss's (one product and one sum in burn ops).
//!
//! Never here: any loss arithmetic — every number comes from the losslang plan.

use burn::tensor::{DType, Tensor, TensorData};
use losslang::ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};
use losslang::{Loss, Real, TrainingLoss};

/// What can go wrong: the loss (typed, as losslang gives it), reading a burn tensor, or an
/// input the adapter cannot take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Loss(#[from] losslang::Error),
    /// A tensor could not be read to the host (burn's message).
    #[error("input `{input}`: {detail}")]
    Read { input: String, detail: String },
    /// A dtype the adapter does not take.
    #[error("input `{input}`: {detail}")]
    Input { input: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Any burn tensor passed as one of a loss's other inputs (a target, a mask): its elements are
/// read to the host in the loss's dtype.
pub trait LossInput {
    /// The tensor's elements (row-major) and shape.
    fn host_data(&self) -> std::result::Result<TensorData, String>;
}

impl<const D: usize, K> LossInput for Tensor<D, K>
where
    K: burn::tensor::kind::Basic,
{
    fn host_data(&self) -> std::result::Result<TensorData, String> {
        self.clone().try_into_data().map_err(|e| format!("{e:?}"))
    }
}

impl LossInput for TensorData {
    fn host_data(&self) -> std::result::Result<TensorData, String> {
        Ok(self.clone())
    }
}

/// A loss compiled once and called with burn tensors. Cheap to clone (the plans are shared).
#[derive(Clone)]
pub struct BurnLoss {
    inner: TrainingLoss,
}

impl BurnLoss {
    /// The adapter for `loss`, which must have exactly one differentiable input.
    pub fn new(loss: Loss) -> Result<BurnLoss> {
        Ok(BurnLoss {
            inner: TrainingLoss::new(loss)?,
        })
    }

    /// A loss of the standard library by name (`dice`, `softmax_ce`, ...).
    pub fn standard(name: &str) -> Result<BurnLoss> {
        Ok(BurnLoss {
            inner: TrainingLoss::standard(name)?,
        })
    }

    /// The same loss with a parameter set (`losslang::Loss::set`); the plans start afresh.
    pub fn set(self, name: &str, value: impl Into<losslang::ParamValue>) -> Result<BurnLoss> {
        Ok(BurnLoss {
            inner: self.inner.set(name, value)?,
        })
    }

    /// The loss this adapter runs.
    pub fn loss(&self) -> &Loss {
        self.inner.loss()
    }

    /// The loss of `logits` against `target` (the loss's first other input; a float tensor or
    /// class indices as an `Int` tensor); see [`BurnLoss::forward_with`].
    pub fn forward<const D: usize>(
        &self,
        logits: Tensor<D>,
        target: impl LossInput,
    ) -> Result<Tensor<1>> {
        let name = self.inner.target_input().ok_or_else(|| Error::Input {
            input: "target".into(),
            detail: format!(
                "`{}` takes no input beside `{}`",
                self.loss().name(),
                self.inner.diff_input()
            ),
        })?;
        self.forward_with(logits, &[(name, &target)])
    }

    /// The loss of `logits` (its differentiable input) with the other inputs by name (`target`,
    /// `mask`, ...): a one-element tensor of `logits`' dtype whose backward gives `logits` the
    /// loss's gradient.
    pub fn forward_with<const D: usize>(
        &self,
        logits: Tensor<D>,
        others: &[(&str, &dyn LossInput)],
    ) -> Result<Tensor<1>> {
        match logits.dtype() {
            DType::F32 => self.run::<f32, D>(logits, others),
            DType::F64 => self.run::<f64, D>(logits, others),
            d => Err(Error::Input {
                input: self.inner.diff_input().to_string(),
                detail: format!("dtype {d:?}: the burn adapter takes f32 or f64 logits"),
            }),
        }
    }

    fn run<T: Real + 'static + burn::tensor::Element, const D: usize>(
        &self,
        logits: Tensor<D>,
        others: &[(&str, &dyn LossInput)],
    ) -> Result<Tensor<1>> {
        let read = |name: &str, data: std::result::Result<TensorData, String>| {
            let data = data.map_err(|detail| Error::Read {
                input: name.to_string(),
                detail,
            })?;
            host_values::<T>(name, data)
        };
        let logits_data = read(self.inner.diff_input(), LossInput::host_data(&logits))?;
        let other_data: Vec<(&str, Host<T>)> = others
            .iter()
            .map(|(name, t)| Ok((*name, read(name, t.host_data())?)))
            .collect::<Result<_>>()?;
        let mut views: Vec<(&str, ArrayViewD<T>)> =
            vec![(self.inner.diff_input(), view(&logits_data))];
        views.extend(other_data.iter().map(|(n, d)| (*n, view(d))));
        let shape = logits_data.0.clone();
        let mut grad = vec![T::default(); logits_data.1.len()];
        let value = {
            let g = ArrayViewMutD::from_shape(IxDyn(&shape), &mut grad[..])
                .expect("the buffer has the logits' element count");
            self.inner.value_and_grad_into(&views, g)?
        };
        let dtype = logits.dtype();
        let device = logits.device();
        let value = TensorData::new(vec![value], [1]);
        let grad = TensorData::new(grad, shape);
        Ok(attach(logits, value, grad, dtype, &device))
    }
}

/// A tensor read to the host: its shape and its elements, row-major.
type Host<T> = (Vec<usize>, Vec<T>);

fn view<T>((shape, v): &Host<T>) -> ArrayViewD<'_, T> {
    ArrayViewD::from_shape(IxDyn(shape), &v[..]).expect("element count matches the shape")
}

/// A tensor's elements as `T` with its shape (class indices and masks of other dtypes
/// converted exactly for the values they hold).
fn host_values<T: Real + burn::tensor::Element>(name: &str, data: TensorData) -> Result<Host<T>> {
    let shape = data.shape().to_vec();
    let data = if data.dtype() == <T as burn::tensor::Element>::dtype() {
        data
    } else {
        data.convert::<T>()
    };
    let values = data.try_into_vec::<T>().map_err(|e| Error::Input {
        input: name.to_string(),
        detail: format!("{e:?}"),
    })?;
    Ok((shape, values))
}

/// The loss value as a tensor whose backward gives `logits` the gradient `grad`.
fn attach<const D: usize>(
    logits: Tensor<D>,
    value: TensorData,
    grad: TensorData,
    dtype: DType,
    device: &burn::tensor::Device,
) -> Tensor<1> {
    if let Some(out) = flex::attach(&logits, &value, &grad) {
        return out;
    }
    if !logits.is_tracked() {
        return Tensor::from_data(value, (device, dtype));
    }
    // Any other device: d/dz sum(z · g) = g, and the value replaced exactly (s - s is 0).
    let g = Tensor::<D>::from_data(grad, (device, dtype));
    let s = (logits * g).sum();
    let v = Tensor::<1>::from_data(value, (device, dtype));
    s.clone() - s.detach() + v
}

/// The loss as an autodiff node of its own on the Flex backend.
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::{Backend, Flex};
    use burn::tensor::{Tensor, TensorData};

    /// The step of the backward pass: the plan's gradient times the incoming one (a scalar).
    #[derive(Debug)]
    struct LossBackward;

    impl<B: Backend> Backward<B, 1> for LossBackward {
        type State = B::FloatTensorPrimitive;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let incoming = grads.consume::<B>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                let g = B::float_mul(ops.state, incoming);
                grads.register::<B>(node.id, g);
            }
        }
    }

    /// The loss tensor, if `logits` is a Flex tensor under autodiff without checkpointing.
    pub(super) fn attach<const D: usize>(
        logits: &Tensor<D>,
        value: &TensorData,
        grad: &TensorData,
    ) -> Option<Tensor<1>> {
        let z = logits
            .clone()
            .try_into_primitive::<Autodiff<Flex, NoCheckpointing>>()
            .ok()?;
        Some(Tensor::from_primitive::<Autodiff<Flex, NoCheckpointing>>(
            node::<Flex, NoCheckpointing>(z, value, grad),
        ))
    }

    fn node<B: Backend, C: CheckpointStrategy>(
        z: <Autodiff<B, C> as burn::backend::BackendTypes>::FloatTensorPrimitive,
        value: &TensorData,
        grad: &TensorData,
    ) -> <Autodiff<B, C> as burn::backend::BackendTypes>::FloatTensorPrimitive {
        let device = burn::backend::TensorMetadata::device(z.primitive());
        let out = B::float_from_data(value.clone(), &device);
        match LossBackward
            .prepare::<C>([z.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let g = B::float_from_data(grad.clone(), &device);
                prep.finish(g, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}
