//! The adapter against the same losses written in candle's own ops: the gradient candle's
//! backprop gives the logits, and the parameters after training steps.

use candle_core::{DType, Device, Tensor, Var};
use losslang_candle::{CandleLoss, Error};

const DEV: Device = Device::Cpu;

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = losslang::internals::Rng::new(seed);
    (0..n).map(|_| 4.0 * rng.uniform() - 2.0).collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &DEV).unwrap()
}

/// Dice at `reduction = image` in candle ops: mean over (b, c) of
/// 1 - (2 Σ p y + 1) / (Σ p + Σ y + 1), sums over the spatial axes, p = sigmoid(z).
fn candle_dice(z: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let p = (z.neg()?.exp()? + 1.0)?.recip()?;
    let i = (&p * y)?.sum((2, 3))?;
    let ps = p.sum((2, 3))?;
    let ys = y.sum((2, 3))?;
    let d = ((i * 2.0)? + 1.0)?.div(&((ps + ys)? + 1.0)?)?;
    (d.neg()? + 1.0)?.mean_all()
}

/// Softmax cross-entropy in candle ops: mean over the labelled pixels of
/// -Σ_c onehot · log_softmax(z) (pixels labelled `ignore` count nowhere).
fn candle_softmax_ce(z: &Tensor, labels: &[i64], ignore: i64) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = z.dims4()?;
    let mut onehot = vec![0f64; b * c * h * w];
    let mut counted = 0.0;
    for bi in 0..b {
        for k in 0..h * w {
            let l = labels[bi * h * w + k];
            if l != ignore {
                onehot[(bi * c + l as usize) * h * w + k] = 1.0;
                counted += 1.0;
            }
        }
    }
    let onehot = Tensor::from_vec(onehot, (b, c, h, w), &DEV)?;
    let m = z.max_keepdim(1)?.detach();
    let shifted = z.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    let log_softmax = shifted.broadcast_sub(&lse)?;
    (onehot * log_softmax)?.sum_all()?.neg()? / counted
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn dice_gradient_equals_candles_own() {
    let dice = CandleLoss::standard("dice")
        .unwrap()
        .set("reduction", "image")
        .unwrap();
    let shape = [3, 2, 6, 5];
    let z = Var::from_tensor(&tensor(&shape, 1)).unwrap();
    let y = tensor(&shape, 2)
        .ge(0.5)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let ours = dice.forward(z.as_tensor(), &y).unwrap();
    let theirs = candle_dice(z.as_tensor(), &y).unwrap();
    let (a, b) = (
        ours.to_scalar::<f64>().unwrap(),
        theirs.to_scalar::<f64>().unwrap(),
    );
    assert!((a - b).abs() <= 1e-14, "value {a} vs {b}");
    let ga = ours.backward().unwrap().remove(z.as_tensor()).unwrap();
    let gb = theirs.backward().unwrap().remove(z.as_tensor()).unwrap();
    let scale = gb
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(scale > 1e-4, "a gradient that exercises nothing");
    assert!(
        max_abs_diff(&ga, &gb) <= 1e-12 * scale.max(1.0),
        "{}",
        max_abs_diff(&ga, &gb)
    );
    // The incoming gradient scales ours as it scales theirs.
    let g2 = (ours * 3.0)
        .unwrap()
        .backward()
        .unwrap()
        .remove(z.as_tensor())
        .unwrap();
    assert!(max_abs_diff(&g2, &(gb * 3.0).unwrap()) <= 1e-12);
}

#[test]
fn softmax_ce_takes_class_index_tensors_with_ignore_index() {
    let ce = CandleLoss::standard("softmax_ce")
        .unwrap()
        .set("ignore_index", 255.0)
        .unwrap();
    let (b, c, h, w) = (2, 4, 5, 3);
    let z = Var::from_tensor(&tensor(&[b, c, h, w], 3)).unwrap();
    let labels: Vec<i64> = values(b * h * w, 4)
        .iter()
        .enumerate()
        .map(|(k, v)| {
            if k % 7 == 3 {
                255
            } else {
                ((v + 2.0) as i64).min(3)
            }
        })
        .collect();
    let theirs = candle_softmax_ce(z.as_tensor(), &labels, 255).unwrap();
    let gb = theirs.backward().unwrap().remove(z.as_tensor()).unwrap();
    for dtype in [DType::U8, DType::U32, DType::I64] {
        let t = Tensor::from_vec(labels.clone(), (b, h, w), &DEV)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let ours = ce.forward(z.as_tensor(), &t).unwrap();
        let (x, y) = (
            ours.to_scalar::<f64>().unwrap(),
            theirs.to_scalar::<f64>().unwrap(),
        );
        assert!((x - y).abs() <= 1e-14, "{dtype:?}: value {x} vs {y}");
        let ga = ours.backward().unwrap().remove(z.as_tensor()).unwrap();
        assert!(
            max_abs_diff(&ga, &gb) <= 1e-12,
            "{dtype:?}: {}",
            max_abs_diff(&ga, &gb)
        );
    }
}

/// A one-layer convolutional segmenter: logits = conv3x3(x, w) + bias, SGD on (w, bias).
fn train(steps: usize, loss: &dyn Fn(&Tensor, &Tensor) -> Tensor) -> Vec<f64> {
    let x = tensor(&[4, 3, 8, 8], 5);
    let y = x
        .sum_keepdim(1)
        .unwrap()
        .ge(0.0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let w = Var::from_tensor(&(tensor(&[1, 3, 3, 3], 6) * 0.1).unwrap()).unwrap();
    let bias = Var::from_tensor(&Tensor::zeros((1, 1, 1, 1), DType::F64, &DEV).unwrap()).unwrap();
    for _ in 0..steps {
        let z = x
            .conv2d(w.as_tensor(), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(bias.as_tensor())
            .unwrap();
        let l = loss(&z, &y);
        let g = l.backward().unwrap();
        for v in [&w, &bias] {
            let step = (g.get(v.as_tensor()).unwrap() * 0.5).unwrap();
            v.set(&(v.as_tensor() - step).unwrap()).unwrap();
        }
    }
    let mut p = w
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    p.extend(
        bias.as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap(),
    );
    p
}

#[test]
fn three_training_steps_give_candles_parameters() {
    let dice = CandleLoss::standard("dice")
        .unwrap()
        .set("reduction", "image")
        .unwrap();
    let ours = train(3, &|z, y| dice.forward(z, y).unwrap());
    let theirs = train(3, &|z, y| candle_dice(z, y).unwrap());
    let start = train(0, &|_, _| unreachable!());
    let moved = ours
        .iter()
        .zip(&start)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-3, "the steps moved nothing: {moved}");
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() <= 1e-9, "{a} vs {b}");
    }
}

#[test]
fn a_smaller_last_batch_and_f32_just_work() {
    let bce = CandleLoss::standard("bce").unwrap();
    for b in [4, 3, 4] {
        let z = tensor(&[b, 1, 4, 4], 7).to_dtype(DType::F32).unwrap();
        let y = Tensor::zeros((b, 1, 4, 4), DType::F32, &DEV).unwrap();
        let l = bce.forward(&z, &y).unwrap();
        assert_eq!(l.dtype(), DType::F32);
        // bce with target 0 is mean(softplus(z)).
        let want = z
            .to_dtype(DType::F64)
            .unwrap()
            .exp()
            .unwrap()
            .affine(1.0, 1.0)
            .unwrap()
            .log()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let got = l.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "batch {b}: {got} vs {want}"
        );
    }
}

#[test]
fn errors_stay_typed() {
    let dice = CandleLoss::standard("dice").unwrap();
    let z = tensor(&[2, 1, 4, 4], 8);
    let y = tensor(&[2, 1, 4, 5], 9);
    match dice.forward(&z, &y) {
        Err(Error::Loss(losslang::Error::Shape { input, .. })) => assert!(!input.is_empty()),
        other => panic!(
            "expected a typed shape error, got {:?}",
            other.map(|t| t.dims().to_vec())
        ),
    }
    // Integer logits are refused (f16 and bf16 are taken: `f16_and_bf16_logits_*`).
    let bytes = z.to_dtype(DType::U8).unwrap();
    assert!(matches!(dice.forward(&bytes, &y), Err(Error::Input { .. })));
    // And into candle's error for `?` in a candle training loop.
    let e: candle_core::Error = dice.forward(&z, &y).unwrap_err().into();
    assert!(
        e.to_string().contains("shape") || e.to_string().contains("axis"),
        "{e}"
    );
}

#[test]
fn f16_and_bf16_logits_give_the_f32_loss_and_a_gradient_of_their_dtype() {
    let dice = CandleLoss::standard("dice").unwrap();
    let ones = Tensor::ones((4, 1, 512, 512), DType::F32, &DEV).unwrap();
    let z = Var::from_tensor(&ones).unwrap();
    let want = dice.forward(z.as_tensor(), &ones).unwrap();
    let g32 = want.backward().unwrap().get(z.as_tensor()).unwrap().clone();
    let want = want.to_scalar::<f32>().unwrap() as f64;
    for dtype in [DType::F16, DType::BF16] {
        let h = ones.to_dtype(dtype).unwrap();
        let z = Var::from_tensor(&h).unwrap();
        let l = dice.forward(z.as_tensor(), &h).unwrap();
        assert_eq!(l.dtype(), dtype);
        let g = l.backward().unwrap().get(z.as_tensor()).unwrap().clone();
        assert_eq!(g.dtype(), dtype);
        let v = l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        assert!(
            (v - want).abs() <= 1e-3 * want.abs(),
            "{dtype:?}: {v} vs f32 {want}"
        );
        let g = g.to_dtype(DType::F64).unwrap();
        let worst = max_abs_diff(&g, &g32.to_dtype(DType::F64).unwrap());
        let scale = g32
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        // The f32 gradient rounded once: 1/128 relative (bf16), or a step of f16's subnormals.
        let step = if dtype == DType::F16 {
            2f64.powi(-24)
        } else {
            0.0
        };
        assert!(
            worst.is_finite() && worst <= 1e-2 * scale + step,
            "{dtype:?}: {worst:e} of {scale:e}"
        );
    }
}

#[test]
fn deep_supervision_equals_candles_own_weighted_sum_over_depths() {
    use losslang_candle::CandleDeepLoss;
    let z0 = Var::from_tensor(&tensor(&[2, 1, 8, 8], 41)).unwrap();
    let z1 = Var::from_tensor(&tensor(&[2, 1, 4, 4], 42)).unwrap();
    let y: Vec<f64> = values(128, 43)
        .iter()
        .map(|&v| f64::from(v > 0.5))
        .collect();
    let y = Tensor::from_vec(y, (2, 1, 8, 8), &DEV).unwrap();
    let dice = losslang::Library::standard()
        .get("dice")
        .unwrap()
        .set("reduction", "image")
        .unwrap();
    // MONAI's `exp` weights, 1 and 0.5; the soft target of depth 1 by candle's 2 × 2 pooling.
    let deep = CandleDeepLoss::new(dice, losslang::DeepWeights::Exp)
        .unwrap()
        .resize(losslang::Resize::AvgPool);
    let (ours, r) = deep.forward(&[z0.as_tensor(), z1.as_tensor()], &y).unwrap();
    assert_eq!(r.weights, [1.0, 0.5]);
    let g = ours.backward().unwrap();
    let y1 = y.avg_pool2d(2).unwrap();
    let theirs = (candle_dice(z0.as_tensor(), &y).unwrap()
        + (candle_dice(z1.as_tensor(), &y1).unwrap() * 0.5).unwrap())
    .unwrap();
    let h = theirs.backward().unwrap();
    for z in [&z0, &z1] {
        let d = max_abs_diff(g.get(z.as_tensor()).unwrap(), h.get(z.as_tensor()).unwrap());
        assert!(d <= 1e-12, "gradient off by {d:e}");
    }
    let (v, t) = (
        ours.to_scalar::<f64>().unwrap(),
        theirs.to_scalar::<f64>().unwrap(),
    );
    assert!(
        (v - t).abs() <= 1e-12 && (r.total - t).abs() <= 1e-12,
        "{v} {} vs {t}",
        r.total
    );
}
