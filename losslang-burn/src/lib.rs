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
//! Never here: any loss arithmetic — every number comes from the losslang plan (the comparison
//! losses written in burn ops live apart, in [`burn_ops`]).

pub mod burn_ops;

/// The burn this crate is built against (its tensors are what the adapter takes).
pub use burn;

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
/// read in the loss's dtype — in place, with no copy, from a contiguous Flex tensor of that
/// dtype, else read to the host (and converted).
pub trait LossInput {
    /// The tensor's elements (row-major) and shape.
    fn host_data(&self) -> std::result::Result<TensorData, String>;
    /// The Flex storage the elements can be read from in place, if the tensor has one.
    #[doc(hidden)]
    fn flex_storage(&self) -> Option<flex::Storage> {
        None
    }
}

impl<const D: usize> LossInput for Tensor<D> {
    fn host_data(&self) -> std::result::Result<TensorData, String> {
        self.clone().try_into_data().map_err(|e| format!("{e:?}"))
    }
    fn flex_storage(&self) -> Option<flex::Storage> {
        flex::float_storage(self)
    }
}

impl<const D: usize> LossInput for Tensor<D, burn::tensor::Int> {
    fn host_data(&self) -> std::result::Result<TensorData, String> {
        self.clone().try_into_data().map_err(|e| format!("{e:?}"))
    }
    fn flex_storage(&self) -> Option<flex::Storage> {
        flex::int_storage(self)
    }
}

impl<const D: usize> LossInput for Tensor<D, burn::tensor::Bool> {
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

    /// The same loss with the named parameters live (`losslang::Loss::live`): changed by
    /// [`BurnLoss::set_param`] between steps without compiling (a loss weight's schedule).
    pub fn live(self, names: &[&str]) -> Result<BurnLoss> {
        Ok(BurnLoss {
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
            // Half precision: read widened to f32, the f32 plan (transcendentals in f32,
            // reductions in f64 lanes), value and gradient rounded to the logits' dtype.
            DType::F16 | DType::BF16 => self.run::<f32, D>(logits, others),
            d => Err(Error::Input {
                input: self.inner.diff_input().to_string(),
                detail: format!("dtype {d:?}: the burn adapter takes f16, bf16, f32 or f64 logits"),
            }),
        }
    }

    fn run<T: Real + 'static + burn::tensor::Element + bytemuck::Pod, const D: usize>(
        &self,
        logits: Tensor<D>,
        others: &[(&str, &dyn LossInput)],
    ) -> Result<Tensor<1>> {
        let logits_data = host::<T>(self.inner.diff_input(), &logits)?;
        let other_data: Vec<(&str, Host<T>)> = others
            .iter()
            .map(|(name, t)| Ok((*name, host::<T>(name, *t)?)))
            .collect::<Result<_>>()?;
        let mut views: Vec<(&str, ArrayViewD<T>)> =
            vec![(self.inner.diff_input(), logits_data.view())];
        views.extend(other_data.iter().map(|(n, d)| (*n, d.view())));
        let shape = logits_data.shape().to_vec();
        // A fresh buffer: it becomes the gradient tensor's storage, with no copy.
        let mut grad = vec![T::default(); shape.iter().product()];
        let value = {
            let g = ArrayViewMutD::from_shape(IxDyn(&shape), &mut grad[..])
                .expect("the buffer has the logits' element count");
            self.inner.value_and_grad_into(&views, g)?
        };
        drop(views);
        let dtype = logits.dtype();
        let device = logits.device();
        let value = TensorData::new(vec![value], [1]).convert_dtype(dtype);
        let grad = TensorData::new(grad, shape).convert_dtype(dtype);
        Ok(attach(logits, value, grad, dtype, &device))
    }
}

/// Deep supervision with burn tensors (`losslang::DeepSupervision`): one loss at several
/// decoder depths, each output at its own spatial size, against one target resized per depth
/// (nearest for class labels, average pooling for soft maps), weighted as MONAI's
/// `DeepSupervisionLoss` (`exp`, `same`, `two`, or given weights).
pub struct BurnDeepLoss {
    inner: losslang::DeepSupervision,
}

impl BurnDeepLoss {
    /// `loss` (one differentiable input) at every depth with `weights`.
    pub fn new(loss: Loss, weights: losslang::DeepWeights) -> Result<BurnDeepLoss> {
        Ok(BurnDeepLoss {
            inner: losslang::DeepSupervision::new(loss, weights)?,
        })
    }

    /// A loss of the standard library by name at every depth with `weights`.
    pub fn standard(name: &str, weights: losslang::DeepWeights) -> Result<BurnDeepLoss> {
        BurnDeepLoss::new(losslang::Library::standard().get(name)?, weights)
    }

    /// The same with another way of resizing the target (`losslang::Resize`).
    pub fn resize(self, resize: losslang::Resize) -> BurnDeepLoss {
        BurnDeepLoss {
            inner: self.inner.resize(resize),
        }
    }

    /// The weighted total over `outputs` (depth 0, at the target's size, first; all of one
    /// float dtype) against `target` (float, or class indices as an `Int` tensor): a
    /// one-element tensor whose backward gives each output its depth's gradient times its
    /// weight, and the per-depth values and weights to log.
    pub fn forward<const D: usize>(
        &self,
        outputs: &[Tensor<D>],
        target: impl LossInput,
    ) -> Result<(Tensor<1>, losslang::DeepValue)> {
        let dtype = outputs.first().map(|o| o.dtype());
        match dtype {
            Some(DType::F32) => self.run::<f32, D>(outputs, &target),
            Some(DType::F64) => self.run::<f64, D>(outputs, &target),
            d => Err(Error::Input {
                input: self.inner.diff_input().to_string(),
                detail: format!(
                    "dtype {d:?}: deep supervision takes one or more f32 or f64 outputs"
                ),
            }),
        }
    }

    fn run<T: Real + 'static + burn::tensor::Element + bytemuck::Pod, const D: usize>(
        &self,
        outputs: &[Tensor<D>],
        target: &dyn LossInput,
    ) -> Result<(Tensor<1>, losslang::DeepValue)> {
        let outs: Vec<Host<T>> = outputs
            .iter()
            .enumerate()
            .map(|(l, o)| {
                if o.dtype() != outputs[0].dtype() {
                    return Err(Error::Input {
                        input: format!("outputs[{l}]"),
                        detail: "every output has the dtype of outputs[0]".into(),
                    });
                }
                host::<T>(&format!("outputs[{l}]"), o)
            })
            .collect::<Result<_>>()?;
        let target = host::<T>("target", target)?;
        let shapes: Vec<Vec<usize>> = outs.iter().map(|o| o.shape().to_vec()).collect();
        let mut grads: Vec<Vec<T>> = shapes
            .iter()
            .map(|s| vec![T::default(); s.iter().product()])
            .collect();
        let r = {
            let views: Vec<ArrayViewD<T>> = outs.iter().map(Host::view).collect();
            let mut gviews: Vec<ArrayViewMutD<T>> = grads
                .iter_mut()
                .zip(&shapes)
                .map(|(g, s)| {
                    ArrayViewMutD::from_shape(IxDyn(s), &mut g[..])
                        .expect("the buffer has the output's element count")
                })
                .collect();
            self.inner
                .value_and_grads_into(&views, target.view(), &mut gviews)?
        };
        drop(outs);
        let mut total: Option<Tensor<1>> = None;
        for (l, (o, g)) in outputs.iter().zip(grads).enumerate() {
            let value = TensorData::new(vec![T::from_f64(r.weights[l] * r.values[l])], [1]);
            let part = attach(
                o.clone(),
                value,
                TensorData::new(g, shapes[l].clone()),
                o.dtype(),
                &o.device(),
            );
            total = Some(match total {
                Some(t) => t + part,
                None => part,
            });
        }
        Ok((
            total.expect("at least one output (checked by the engine)"),
            r,
        ))
    }
}

/// A tensor's elements as the loss reads them: the Flex storage itself (no copy), or a copy on
/// the host in the loss's dtype.
enum Host<T> {
    InPlace(flex::Storage, Vec<usize>, std::marker::PhantomData<T>),
    Copied(Vec<usize>, Vec<T>),
}

impl<T: Real + burn::tensor::Element + bytemuck::Pod> Host<T> {
    fn shape(&self) -> &[usize] {
        match self {
            Host::InPlace(_, shape, _) | Host::Copied(shape, _) => shape,
        }
    }
    fn view(&self) -> ArrayViewD<'_, T> {
        let data = match self {
            Host::InPlace(storage, ..) => storage
                .slice::<T>()
                .expect("checked when the storage was taken"),
            Host::Copied(_, v) => &v[..],
        };
        ArrayViewD::from_shape(IxDyn(self.shape()), data).expect("element count matches the shape")
    }
}

/// `input` as the loss reads it: in place when it is a contiguous Flex tensor of the loss's
/// dtype, else read to the host and converted.
fn host<T: Real + burn::tensor::Element + bytemuck::Pod>(
    name: &str,
    input: &dyn LossInput,
) -> Result<Host<T>> {
    if let Some(storage) = input.flex_storage() {
        if storage.slice::<T>().is_some() {
            let shape = storage.shape();
            return Ok(Host::InPlace(storage, shape, std::marker::PhantomData));
        }
        // Class indices (burn's `Int` is i64 by default): one conversion loop, exact for the
        // values labels hold.
        if let Some(values) = storage.widen::<T>() {
            return Ok(Host::Copied(storage.shape(), values));
        }
    }
    let data = input.host_data().map_err(|detail| Error::Read {
        input: name.to_string(),
        detail,
    })?;
    let (shape, values) = host_values::<T>(name, data)?;
    Ok(Host::Copied(shape, values))
}

/// A tensor's elements as `T` with its shape (class indices and masks of other dtypes
/// converted exactly for the values they hold).
fn host_values<T: Real + burn::tensor::Element>(
    name: &str,
    data: TensorData,
) -> Result<(Vec<usize>, Vec<T>)> {
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
    let (value, grad) = match flex::attach(&logits, value, grad) {
        Ok(out) => return out,
        Err(back) => *back,
    };
    if !logits.is_tracked() {
        return Tensor::from_data(value, (device, dtype));
    }
    // Any other device: d/dz sum(z · g) = g, and the value replaced exactly (s - s is 0).
    let g = Tensor::<D>::from_data(grad, (device, dtype));
    let s = (logits * g).sum();
    let v = Tensor::<1>::from_data(value, (device, dtype));
    s.clone() - s.detach() + v
}

/// The loss as an autodiff node of its own on the Flex backend, and Flex storage read in place.
#[doc(hidden)]
pub mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::{BackendTypes, Flex};
    use burn::tensor::{Int, Tensor, TensorData};

    /// Flex's tensor (float and integer alike).
    type FlexTensor = <Flex as BackendTypes>::FloatTensorPrimitive;

    /// The step of the backward pass: the plan's gradient times the incoming one (a scalar).
    #[derive(Debug)]
    struct LossBackward;

    impl Backward<Flex, 1> for LossBackward {
        type State = FlexTensor;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let incoming = grads.consume::<Flex>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                // `loss.backward()` seeds 1: the plan's gradient is the gradient, as it is (a
                // product with 1 is exact, so this only skips a pass over the logits).
                let one = incoming.layout().num_elements() == 1
                    && incoming.clone().into_data().iter::<f64>().next() == Some(1.0);
                let g = if one {
                    ops.state
                } else {
                    Flex::float_mul(ops.state, incoming)
                };
                grads.register::<Flex>(node.id, g);
            }
        }
    }

    /// The loss tensor, if `logits` is a Flex tensor under autodiff without checkpointing;
    /// else the value and gradient back.
    pub(super) fn attach<const D: usize>(
        logits: &Tensor<D>,
        value: TensorData,
        grad: TensorData,
    ) -> Result<Tensor<1>, Box<(TensorData, TensorData)>> {
        match logits
            .clone()
            .try_into_primitive::<Autodiff<Flex, NoCheckpointing>>()
        {
            Ok(z) => Ok(Tensor::from_primitive::<Autodiff<Flex, NoCheckpointing>>(
                node::<NoCheckpointing>(z, value, grad),
            )),
            Err(_) => Err(Box::new((value, grad))),
        }
    }

    fn node<C: CheckpointStrategy>(
        z: <Autodiff<Flex, C> as BackendTypes>::FloatTensorPrimitive,
        value: TensorData,
        grad: TensorData,
    ) -> <Autodiff<Flex, C> as BackendTypes>::FloatTensorPrimitive {
        let device = burn::backend::TensorMetadata::device(z.primitive());
        let out = Flex::float_from_data(value, &device);
        match LossBackward
            .prepare::<C>([z.node()])
            .compute_bound()
            .stateful()
        {
            // The gradient's buffer becomes the state tensor's storage (no copy).
            OpsKind::Tracked(prep) => prep.finish(Flex::float_from_data(grad, &device), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    /// A Flex tensor's storage, held (shared, not copied) while the loss reads it.
    pub struct Storage(FlexTensor);

    impl Storage {
        /// The elements as `T`, if the storage holds `T` contiguously.
        pub(super) fn slice<T: burn::tensor::Element + bytemuck::Pod>(&self) -> Option<&[T]> {
            self.0.as_slice::<T>()
        }
        /// Integer elements converted to `T`, if the storage holds a contiguous integer dtype.
        pub(super) fn widen<T: losslang::Real>(&self) -> Option<Vec<T>> {
            fn conv<E: Copy, T>(s: Option<&[E]>, f: impl Fn(E) -> T) -> Option<Vec<T>> {
                s.map(|s| s.iter().map(|&x| f(x)).collect())
            }
            let t = &self.0;
            conv(t.as_slice::<i64>(), |x| T::from_f64(x as f64))
                .or_else(|| conv(t.as_slice::<i32>(), |x| T::from_f64(f64::from(x))))
                .or_else(|| conv(t.as_slice::<u8>(), |x| T::from_f64(f64::from(x))))
                .or_else(|| conv(t.as_slice::<u32>(), |x| T::from_f64(f64::from(x))))
                .or_else(|| conv(t.as_slice::<i16>(), |x| T::from_f64(f64::from(x))))
                .or_else(|| conv(t.as_slice::<i8>(), |x| T::from_f64(f64::from(x))))
        }
        pub(super) fn shape(&self) -> Vec<usize> {
            self.0.layout().shape().to_vec()
        }
    }

    /// A float tensor's Flex storage, under autodiff or not.
    pub(super) fn float_storage<const D: usize>(t: &Tensor<D>) -> Option<Storage> {
        if let Ok(z) = t
            .clone()
            .try_into_primitive::<Autodiff<Flex, NoCheckpointing>>()
        {
            return Some(Storage(z.primitive().clone()));
        }
        t.clone().try_into_primitive::<Flex>().ok().map(Storage)
    }

    /// An integer tensor's Flex storage, under autodiff or not.
    pub(super) fn int_storage<const D: usize>(t: &Tensor<D, Int>) -> Option<Storage> {
        if let Ok(z) = t
            .clone()
            .try_into_primitive::<Autodiff<Flex, NoCheckpointing>>()
        {
            return Some(Storage(z));
        }
        t.clone().try_into_primitive::<Flex>().ok().map(Storage)
    }
}
