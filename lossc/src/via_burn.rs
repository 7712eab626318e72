//! `lossc bench --via burn`: one training step's loss call through the burn adapter — the loss
//! of logits under burn's autodiff (Flex backend) and its backward down to the logits — beside
//! the same loss written in burn ops (`losslang_burn::burn_ops`, where one is written), same
//! inputs, same run.
//!
//! In: a loss, a shape, a dtype, the timed call count. Out: the JSON object `bench` prints.
//! Never here: the loss's arithmetic (the adapter and burn compute every number).

use losslang::internals::Rng;
use losslang::Loss;
use losslang_burn::burn::tensor::{DType, Device, Tensor, TensorData};
use losslang_burn::{burn_ops, BurnLoss, LossInput};
use serde_json::{json, Value};

use crate::{time_calls as time, CliError};

pub(crate) fn bench(
    loss: &Loss,
    shape: &[usize],
    f64_: bool,
    iters: usize,
) -> Result<Value, CliError> {
    match shape.len() {
        2 => run::<2>(loss, shape, f64_, iters),
        3 => run::<3>(loss, shape, f64_, iters),
        4 => run::<4>(loss, shape, f64_, iters),
        5 => run::<5>(loss, shape, f64_, iters),
        6 => run::<6>(loss, shape, f64_, iters),
        r => Err(CliError::Usage(format!(
            "--via burn takes a shape of rank 2 to 6 (burn tensors have a fixed rank); --shape has rank {r}"
        ))),
    }
}

fn adapter(e: losslang_burn::Error) -> CliError {
    CliError::Adapter(format!("the burn adapter: {e}"))
}

fn run<const D: usize>(
    loss: &Loss,
    shape: &[usize],
    f64_: bool,
    iters: usize,
) -> Result<Value, CliError> {
    let dims: [usize; D] = shape.try_into().expect("the rank was matched");
    let n: usize = shape.iter().product();
    let device = Device::flex().autodiff();
    let dtype = if f64_ { DType::F64 } else { DType::F32 };
    let mut rng = Rng::new(7);
    // The inputs `lossc bench` makes: logits ~ N(0, 2²), every other input 0/1 with P(1) = 0.3.
    let mut tensors: Vec<(String, bool, Tensor<D>)> = Vec::new();
    for inp in loss.inputs() {
        if inp.default.is_some() {
            continue;
        }
        let data: Vec<f64> = if inp.diff {
            (0..n).map(|_| 2.0 * rng.normal()).collect()
        } else {
            (0..n)
                .map(|_| if rng.uniform() < 0.3 { 1.0 } else { 0.0 })
                .collect()
        };
        let t = Tensor::<D>::from_data(TensorData::new(data, dims), (&device, dtype));
        tensors.push((inp.name.clone(), inp.diff, t));
    }
    let Some(logits) = tensors.iter().find(|t| t.1).map(|t| t.2.clone()) else {
        return Err(CliError::Usage(format!(
            "`{}` has no differentiable input",
            loss.name()
        )));
    };
    let others: Vec<(&str, &dyn LossInput)> = tensors
        .iter()
        .filter(|t| !t.1)
        .map(|(name, _, t)| (name.as_str(), t as &dyn LossInput))
        .collect();
    let ours = BurnLoss::new(loss.clone()).map_err(adapter)?;
    let scalar = |l: &Tensor<1>| -> f64 {
        l.clone()
            .into_data()
            .iter::<f64>()
            .next()
            .unwrap_or(f64::NAN)
    };
    let (median, min, value) = time(iters, || {
        let z = logits.clone().require_grad();
        let l = ours.forward_with(z.clone(), &others).map_err(adapter)?;
        let g = z.grad(&l.backward());
        if g.is_none() {
            return Err(CliError::Adapter(
                "the burn adapter gave the logits no gradient".into(),
            ));
        }
        Ok(scalar(&l))
    })?;
    let mut out = json!({
        "loss": loss.name(),
        "via": "burn",
        "backend": "flex (autodiff)",
        "dtype": if f64_ { "f64" } else { "f32" },
        "shape": shape,
        "elements": n,
        "iters": iters,
        "median_ms": median,
        "min_ms": min,
        "value": value,
    });
    // The burn-ops version is the standard loss at its defaults: a `--set` makes another loss
    // (and a user's loss of the same name shows as values that differ).
    let defaults = loss
        .param_values()
        .iter()
        .zip(loss.params())
        .all(|((_, v), p)| *v == p.default);
    let written = burn_ops::by_name::<D>(loss.name()).filter(|_| defaults && others.len() == 1);
    match written {
        Some(f) => {
            let target = tensors
                .iter()
                .find(|t| !t.1)
                .map(|t| t.2.clone())
                .expect("one other input");
            let (b_median, b_min, b_value) = time(iters, || {
                let z = logits.clone().require_grad();
                let l = f(z.clone(), target.clone());
                let _ = z.grad(&l.backward());
                Ok(scalar(&l))
            })?;
            out["burn_ops_median_ms"] = json!(b_median);
            out["burn_ops_min_ms"] = json!(b_min);
            out["burn_ops_value"] = json!(b_value);
            out["speedup"] = json!(b_median / median);
            let agree = (b_value - value).abs() <= 1e-4 * value.abs().max(1e-3);
            out["values_agree"] = json!(agree);
        }
        None => {
            out["burn_ops"] = json!(format!(
                "none for this loss (burn_ops has {}, at their defaults)",
                burn_ops::NAMES.join(", ")
            ));
        }
    }
    Ok(out)
}
