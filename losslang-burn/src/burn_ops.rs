//! Standard losses written in burn's own tensor ops, at their default parameters: what a burn
//! user writes without this crate, and what `lossc bench --via burn` and the `loss_step` bench
//! time the adapter against (same run, same inputs).
//!
//! In: burn tensors (logits `[B, C, ..S]`, a float target of the same shape). Out: the loss as a
//! burn scalar, differentiated by burn's autodiff op by op. Never here: the adapter itself.

use burn::tensor::{activation, Int, Tensor};

/// The standard losses written here, by their `.loss` name.
pub const NAMES: &[&str] = &["bce", "dice", "softmax_ce"];

/// The loss `name` in burn ops, for a float target of the logits' shape.
pub fn by_name<const D: usize>(name: &str) -> Option<fn(Tensor<D>, Tensor<D>) -> Tensor<1>> {
    match name {
        "bce" => Some(bce::<D>),
        "dice" => Some(dice::<D>),
        "softmax_ce" => Some(softmax_ce::<D>),
        _ => None,
    }
}

/// `bce`: the mean of -(y log σ(z) + (1 - y) log σ(-z)).
pub fn bce<const D: usize>(z: Tensor<D>, y: Tensor<D>) -> Tensor<1> {
    let pos = activation::log_sigmoid(z.clone());
    let neg = activation::log_sigmoid(z.neg());
    (y.clone() * pos + (y.neg() + 1.0) * neg).mean().neg()
}

/// `dice` at `reduction = batch`, `smooth = 1`: 1 - (2 Σ p y + 1) / (Σ p + Σ y + 1), p = σ(z).
pub fn dice<const D: usize>(z: Tensor<D>, y: Tensor<D>) -> Tensor<1> {
    let p = activation::sigmoid(z);
    let i = (p.clone() * y.clone()).sum();
    let d = (i * 2.0 + 1.0) / (p.sum() + y.sum() + 1.0);
    d.neg() + 1.0
}

/// `softmax_ce` against a one-hot target over axis 1: the mean over pixels of
/// -Σ_c y_c log_softmax(z)_c.
pub fn softmax_ce<const D: usize>(z: Tensor<D>, y: Tensor<D>) -> Tensor<1> {
    (y * activation::log_softmax(z, 1)).sum_dim(1).mean().neg()
}

/// `softmax_ce` against class indices `[B, 1, ..S]`: the mean of -log_softmax(z) at each label.
pub fn softmax_ce_labels<const D: usize>(z: Tensor<D>, labels: Tensor<D, Int>) -> Tensor<1> {
    activation::log_softmax(z, 1).gather(1, labels).mean().neg()
}
