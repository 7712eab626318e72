//! Deep supervision: one loss applied to the outputs of several decoder depths, each at its own
//! spatial size, against one target resized to each (MONAI's `DeepSupervisionLoss`).
//!
//! In: a [`Loss`] with one differentiable input, per call the outputs (`[B, C, ..S_l]`), the
//! target at full size and a gradient buffer per output. Out: the weighted total, each depth's
//! value and weight, each output's gradient (its depth's gradient times its weight). Never here:
//! loss arithmetic — each depth runs a plan of its own ([`TrainingLoss`]), compiled on first use.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, IxDyn, Zip};

use super::{Loss, TrainingLoss};
use crate::error::{Error, Result};
use crate::ops::math::Real;

/// The weight of each depth (depth 0 is the full-size output).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DeepWeights {
    /// `max(0.5^l, 0.0625)`: 1, 0.5, 0.25, 0.125, 0.0625, 0.0625, ... (MONAI's default `exp`).
    Exp,
    /// 1 for every depth (`same`).
    Same,
    /// 1 for depth 0, 0.5 for the others (`two`).
    Two,
    /// One finite, non-negative weight per depth, used as given (not normalised).
    Given(Vec<f64>),
}

impl DeepWeights {
    /// The weights of `levels` depths.
    pub fn weights(&self, levels: usize) -> Result<Vec<f64>> {
        Ok(match self {
            DeepWeights::Exp => (0..levels)
                .map(|l| 0.5f64.powi(l.min(64) as i32).max(0.0625))
                .collect(),
            DeepWeights::Same => vec![1.0; levels],
            DeepWeights::Two => (0..levels)
                .map(|l| if l == 0 { 1.0 } else { 0.5 })
                .collect(),
            DeepWeights::Given(w) => {
                let bad = w.iter().find(|x| !x.is_finite() || **x < 0.0);
                if w.len() != levels || bad.is_some() {
                    return Err(Error::ParamValue {
                        name: "weights".into(),
                        loss: "deep supervision".into(),
                        expected: format!(
                            "takes {levels} finite, non-negative weights, one per output"
                        ),
                        got: format!("{w:?}"),
                    });
                }
                w.clone()
            }
        })
    }
}

/// How the target is brought to each depth's spatial size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resize {
    /// Nearest for class labels, average pooling for a one-hot or soft target.
    Auto,
    /// Nearest neighbour, centre-aligned: source `floor((i + 0.5) · in / out)` (PyTorch's
    /// `nearest-exact`, which MONAI's `DeepSupervisionLoss` uses for every target).
    Nearest,
    /// The mean over source `floor(i · in / out) .. ceil((i + 1) · in / out)` per axis
    /// (PyTorch's adaptive average pooling, `interpolate(mode = "area")`): soft maps stay
    /// fractions of the pixels they cover. Not for class labels.
    AvgPool,
}

/// The result of a deep-supervision call.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeepValue {
    /// `Σ_l weight_l · value_l`.
    pub total: f64,
    /// Each depth's loss value, unweighted.
    pub values: Vec<f64>,
    /// Each depth's weight.
    pub weights: Vec<f64>,
}

/// A loss applied at several decoder depths against one target.
pub struct DeepSupervision {
    loss: Loss,
    /// The loss's differentiable input and its target (as [`TrainingLoss`] names them).
    diff: String,
    target: Option<String>,
    weights: DeepWeights,
    resize: Resize,
    /// One training loss per depth (each with its own plans), made on first use.
    depths: std::sync::Mutex<Vec<TrainingLoss>>,
}

impl DeepSupervision {
    /// `loss` (one differentiable input, else [`Error::DiffInputs`]) at every depth, weighted
    /// by `weights`, the target resized by [`Resize::Auto`].
    pub fn new(loss: Loss, weights: DeepWeights) -> Result<DeepSupervision> {
        let tl = TrainingLoss::new(loss.clone())?;
        Ok(DeepSupervision {
            diff: tl.diff_input().to_string(),
            target: tl.target_input().map(str::to_string),
            loss,
            weights,
            resize: Resize::Auto,
            depths: Default::default(),
        })
    }

    /// The differentiable input's name (the logits of every depth).
    pub fn diff_input(&self) -> &str {
        &self.diff
    }

    /// The same with another way of resizing the target.
    pub fn resize(mut self, resize: Resize) -> DeepSupervision {
        self.resize = resize;
        self
    }

    /// The total, per-depth values and weights for `outputs` (depth 0 first; each
    /// `[B, C, ..S_l]` with the same B, C and number of spatial axes) against `target` (the
    /// loss's target input at full size: `[B, C, ..S]`, or class labels `[B, ..S]` or
    /// `[B, 1, ..S]`), each output's gradient written into `grads` (same order and shapes).
    /// The loss's other inputs take their defaults.
    pub fn value_and_grads_into<T: Real + 'static>(
        &self,
        outputs: &[ArrayViewD<T>],
        target: ArrayViewD<T>,
        grads: &mut [ArrayViewMutD<T>],
    ) -> Result<DeepValue> {
        let weights = self.weights.weights(outputs.len())?;
        let Some(first) = outputs.first() else {
            return Err(shape_error(
                "outputs",
                "at least one output",
                &[0],
                "no outputs",
            ));
        };
        if grads.len() != outputs.len() {
            return Err(shape_error(
                "grads",
                &format!("{} gradient buffers", outputs.len()),
                &[grads.len()],
                "one gradient buffer per output",
            ));
        }
        let nd = first.ndim();
        if nd < 3 {
            return Err(shape_error(
                "outputs[0]",
                "[B, C, ..S] with at least one spatial axis",
                first.shape(),
                "a deep-supervision output has spatial axes",
            ));
        }
        for (l, o) in outputs.iter().enumerate() {
            if o.ndim() != nd || o.shape()[..2] != first.shape()[..2] {
                return Err(shape_error(
                    &format!("outputs[{l}]"),
                    &format!(
                        "[{}, {}, ..S] with {} spatial axes",
                        first.shape()[0],
                        first.shape()[1],
                        nd - 2
                    ),
                    o.shape(),
                    "every depth has the batch and classes of depth 0",
                ));
            }
        }
        // The target's leading (non-spatial) axes, and whether it holds class labels.
        let (lead, labels) = match target.ndim() {
            n if n == nd - 1 => (1, true),
            n if n == nd => (2, target.shape()[1] == 1 && first.shape()[1] != 1),
            _ => {
                return Err(shape_error(
                    "target",
                    &format!(
                        "[B, C, ..S] or labels [B, ..S] with {} spatial axes",
                        nd - 2
                    ),
                    target.shape(),
                    "the target has the outputs' spatial axes",
                ))
            }
        };
        let mode = match (self.resize, labels) {
            (Resize::AvgPool, true) => {
                return Err(shape_error(
                    "target",
                    "a one-hot or soft target for average pooling",
                    target.shape(),
                    "class labels are resized by nearest neighbour (`Resize::Nearest`)",
                ))
            }
            (Resize::Auto, true) | (Resize::Nearest, _) => Resize::Nearest,
            _ => Resize::AvgPool,
        };
        let Some(tname) = &self.target else {
            return Err(shape_error(
                "target",
                "a loss with a target input",
                target.shape(),
                &format!(
                    "`{}` has no input besides the differentiable one",
                    self.loss.name()
                ),
            ));
        };
        let mut depths = self.depths.lock().unwrap_or_else(|p| p.into_inner());
        while depths.len() < outputs.len() {
            depths.push(TrainingLoss::new(self.loss.clone())?);
        }
        let mut values = Vec::with_capacity(outputs.len());
        let mut total = 0.0;
        for (l, (o, g)) in outputs.iter().zip(grads.iter_mut()).enumerate() {
            let want = &o.shape()[2..];
            let resized;
            let t = if &target.shape()[lead..] == want {
                target.view()
            } else {
                resized = resize(&target, lead, want, mode);
                resized.view()
            };
            let v = depths[l].value_and_grad_into(
                &[(self.diff.as_str(), o.view()), (tname.as_str(), t)],
                g.view_mut(),
            )?;
            let w = weights[l];
            if w != 1.0 {
                let wt = T::from_f64(w);
                g.mapv_inplace(|x| x * wt);
            }
            values.push(v.to_f64());
            total += w * v.to_f64();
        }
        Ok(DeepValue {
            total,
            values,
            weights,
        })
    }
}

fn shape_error(input: &str, expected: &str, received: &[usize], detail: &str) -> Error {
    Error::Shape {
        input: input.to_string(),
        expected: expected.to_string(),
        received: received.to_vec(),
        detail: detail.to_string(),
    }
}

/// `src` with its axes from `lead` on resized to `to`, one axis at a time (nearest gathers;
/// the box mean of average pooling is the product of per-axis means).
pub(crate) fn resize<T: Real>(
    src: &ArrayViewD<T>,
    lead: usize,
    to: &[usize],
    mode: Resize,
) -> ArrayD<T> {
    let mut cur = src.to_owned();
    for (k, &out) in to.iter().enumerate() {
        let ax = lead + k;
        let n = cur.shape()[ax];
        if n == out {
            continue;
        }
        let mut shape = cur.shape().to_vec();
        shape[ax] = out;
        let mut next = ArrayD::from_elem(IxDyn(&shape), T::default());
        Zip::from(next.lanes_mut(Axis(ax)))
            .and(cur.lanes(Axis(ax)))
            .for_each(|mut o, s| {
                for i in 0..out {
                    o[i] = match mode {
                        Resize::AvgPool => {
                            let (lo, hi) = (i * n / out, ((i + 1) * n).div_ceil(out));
                            let sum: f64 = (lo..hi).map(|j| s[j].to_f64()).sum();
                            T::from_f64(sum / (hi - lo) as f64)
                        }
                        _ => s[(((i as f64 + 0.5) * n as f64 / out as f64) as usize).min(n - 1)],
                    };
                }
            });
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_is_centre_aligned_and_avg_pool_averages_the_covered_pixels() {
        // 1 × 4 × 4 with values 0..16, to 2 × 2: nearest takes rows/columns 1 and 3.
        let a =
            ArrayD::from_shape_vec(IxDyn(&[1, 4, 4]), (0..16).map(f64::from).collect()).unwrap();
        let n = resize(&a.view(), 1, &[2, 2], Resize::Nearest);
        assert_eq!(
            n.iter().copied().collect::<Vec<_>>(),
            [5.0, 7.0, 13.0, 15.0]
        );
        // Box means: (0+1+4+5)/4 = 2.5, (2+3+6+7)/4 = 4.5, 10.5, 12.5.
        let p = resize(&a.view(), 1, &[2, 2], Resize::AvgPool);
        assert_eq!(
            p.iter().copied().collect::<Vec<_>>(),
            [2.5, 4.5, 10.5, 12.5]
        );
        // 5 → 2 along the last axis of [0, 1, 2, 3, 4]: boxes 0..3 and 2..5 (adaptive pooling),
        // nearest at floor(0.5 · 2.5) = 1 and floor(1.5 · 2.5) = 3.
        let b = ArrayD::from_shape_vec(IxDyn(&[1, 1, 5]), (0..5).map(f64::from).collect()).unwrap();
        let p = resize(&b.view(), 2, &[2], Resize::AvgPool);
        assert_eq!(p.iter().copied().collect::<Vec<_>>(), [1.0, 3.0]);
        let n = resize(&b.view(), 2, &[2], Resize::Nearest);
        assert_eq!(n.iter().copied().collect::<Vec<_>>(), [1.0, 3.0]);
    }

    #[test]
    fn monai_weight_modes() {
        assert_eq!(
            DeepWeights::Exp.weights(6).unwrap(),
            [1.0, 0.5, 0.25, 0.125, 0.0625, 0.0625]
        );
        assert_eq!(DeepWeights::Two.weights(3).unwrap(), [1.0, 0.5, 0.5]);
        assert_eq!(DeepWeights::Same.weights(2).unwrap(), [1.0, 1.0]);
        assert!(DeepWeights::Given(vec![1.0]).weights(2).is_err());
        assert!(DeepWeights::Given(vec![1.0, -1.0]).weights(2).is_err());
    }
}
