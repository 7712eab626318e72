//! The adapter against the same losses written in burn's own ops: the gradient burn's autodiff
//! gives the logits (to 1e-12 in f64), and the parameters after 3 training steps (to 1e-9).

use burn::module::{Module, Param};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use losslang_burn::{BurnLoss, Error};

fn device() -> Device {
    Device::flex().autodiff()
}

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = losslang::internals::Rng::new(seed);
    (0..n).map(|_| 4.0 * rng.uniform() - 2.0).collect()
}

fn tensor<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(values(n, seed), shape),
        (&device(), DType::F64),
    )
}

fn host<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
    t.clone()
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Dice at `reduction = image` in burn ops: mean over (b, c) of
/// 1 - (2 Σ p y + 1) / (Σ p + Σ y + 1), sums over the spatial axes, p = sigmoid(z).
fn burn_dice(z: Tensor<4>, y: Tensor<4>) -> Tensor<1> {
    let p = burn::tensor::activation::sigmoid(z);
    let i = (p.clone() * y.clone()).sum_dim(3).sum_dim(2);
    let ps = p.sum_dim(3).sum_dim(2);
    let ys = y.sum_dim(3).sum_dim(2);
    let d = (i * 2.0 + 1.0) / (ps + ys + 1.0);
    (d.neg() + 1.0).mean()
}

/// Softmax cross-entropy in burn ops: mean over the labelled pixels of -Σ_c onehot ·
/// log_softmax(z) (pixels labelled `ignore` count nowhere).
fn burn_softmax_ce(z: Tensor<4>, labels: &[i64], ignore: i64) -> Tensor<1> {
    let [b, c, h, w] = z.dims();
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
    let onehot = Tensor::<4>::from_data(
        TensorData::new(onehot, [b, c, h, w]),
        (&device(), DType::F64),
    );
    // log_softmax written out (burn's own differs from the exact gradient by ~1e-9 in f64).
    let m = z.clone().max_dim(1).detach();
    let shifted = z - m;
    let lse = shifted.clone().exp().sum_dim(1).log();
    let log_softmax = shifted - lse;
    // Divided by a tensor: burn's scalar division scales the gradient by 1/counted rounded to
    // f32 (a relative 4e-8 off in f64).
    let counted =
        Tensor::<1>::from_data(TensorData::new(vec![counted], [1]), (&device(), DType::F64));
    (onehot * log_softmax).sum().neg() / counted
}

#[test]
fn dice_gradient_equals_burns_own() {
    let dice = BurnLoss::standard("dice")
        .unwrap()
        .set("reduction", "image")
        .unwrap();
    let shape = [3, 2, 6, 5];
    let z = tensor(shape, 1).require_grad();
    let y = tensor(shape, 2)
        .greater_equal_elem(0.5)
        .float()
        .cast(DType::F64);
    let ours = dice.forward(z.clone(), y.clone()).unwrap();
    let theirs = burn_dice(z.clone(), y);
    let (a, b) = (host(&ours)[0], host(&theirs)[0]);
    assert!((a - b).abs() <= 1e-14, "value {a} vs {b}");
    let ga = host(&z.grad(&ours.backward()).unwrap());
    let gb = host(&z.grad(&theirs.clone().backward()).unwrap());
    let scale = gb.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(scale > 1e-4, "a gradient that exercises nothing");
    assert!(
        max_abs_diff(&ga, &gb) <= 1e-12 * scale.max(1.0),
        "{}",
        max_abs_diff(&ga, &gb)
    );
    // The incoming gradient scales ours as it scales theirs.
    let ours = dice
        .forward(
            z.clone(),
            tensor(shape, 2)
                .greater_equal_elem(0.5)
                .float()
                .cast(DType::F64),
        )
        .unwrap();
    let g3 = host(&z.grad(&(ours * 3.0).backward()).unwrap());
    let gb3: Vec<f64> = gb.iter().map(|g| 3.0 * g).collect();
    assert!(
        max_abs_diff(&g3, &gb3) <= 1e-12,
        "{}",
        max_abs_diff(&g3, &gb3)
    );
}

#[test]
fn softmax_ce_takes_int_class_indices_with_ignore_index() {
    let ce = BurnLoss::standard("softmax_ce")
        .unwrap()
        .set("ignore_index", 255.0)
        .unwrap();
    let (b, c, h, w) = (2, 4, 5, 3);
    let z = tensor([b, c, h, w], 3).require_grad();
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
    let theirs = burn_softmax_ce(z.clone(), &labels, 255);
    let gb = host(&z.grad(&theirs.clone().backward()).unwrap());
    for dtype in [DType::I64, DType::I32, DType::U8] {
        let t = Tensor::<3, Int>::from_data(
            TensorData::new(labels.clone(), [b, h, w]),
            (&device(), dtype),
        );
        let ours = ce.forward(z.clone(), t).unwrap();
        let (x, y) = (host(&ours)[0], host(&theirs)[0]);
        assert!((x - y).abs() <= 1e-14, "{dtype:?}: value {x} vs {y}");
        let ga = host(&z.grad(&ours.backward()).unwrap());
        assert!(
            max_abs_diff(&ga, &gb) <= 1e-12,
            "{dtype:?}: {}",
            max_abs_diff(&ga, &gb)
        );
    }
}

/// A one-layer convolutional segmenter: logits = conv3x3(x, w) + bias.
#[derive(Module, Debug)]
struct Segmenter {
    conv: burn::nn::conv::Conv2d,
}

fn train(steps: usize, loss: &dyn Fn(Tensor<4>, Tensor<4>) -> Tensor<1>) -> Vec<f64> {
    let dev = device();
    let x = tensor([4, 3, 8, 8], 5);
    let y = x
        .clone()
        .sum_dim(1)
        .greater_equal_elem(0.0)
        .float()
        .cast(DType::F64);
    let mut model = Segmenter {
        conv: burn::nn::conv::Conv2dConfig::new([3, 1], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&dev),
    };
    // The same start for both runs, in f64.
    model.conv.weight = Param::from_tensor(tensor([1, 3, 3, 3], 6) * 0.1);
    model.conv.bias = Some(Param::from_tensor(Tensor::<1>::zeros(
        [1],
        (&dev, DType::F64),
    )));
    let mut opt = SgdConfig::new().init();
    for _ in 0..steps {
        let z = model.forward_logits(x.clone());
        let l = loss(z, y.clone());
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = opt.step(0.5, model, grads);
    }
    let mut p = host(&model.conv.weight.val());
    p.extend(host(&model.conv.bias.as_ref().unwrap().val()));
    p
}

impl Segmenter {
    fn forward_logits(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

#[test]
fn three_sgd_steps_give_the_same_parameters() {
    let dice = BurnLoss::standard("dice")
        .unwrap()
        .set("reduction", "image")
        .unwrap();
    let ours = train(3, &|z, y| dice.forward(z, y).unwrap());
    let theirs = train(3, &|z, y| burn_dice(z, y));
    let start = train(0, &|z, y| burn_dice(z, y));
    assert!(
        max_abs_diff(&start, &theirs) > 1e-3,
        "training moved nothing"
    );
    assert!(
        max_abs_diff(&ours, &theirs) <= 1e-9,
        "{}",
        max_abs_diff(&ours, &theirs)
    );
}

#[test]
fn a_smaller_last_batch_and_f32_just_work() {
    let ce = BurnLoss::standard("softmax_ce").unwrap();
    let dev = device();
    for b in [4, 3, 4] {
        let z = Tensor::<4>::from_data(
            TensorData::new(
                values(b * 3 * 16, 7)[..]
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<f32>>(),
                [b, 3, 4, 4],
            ),
            (&dev, DType::F32),
        )
        .require_grad();
        let labels = Tensor::<3, Int>::zeros([b, 4, 4], &dev);
        let l = ce.forward(z.clone(), labels).unwrap();
        assert_eq!(l.dtype(), DType::F32);
        let g = z.grad(&l.backward()).unwrap();
        assert_eq!(g.dims(), [b, 3, 4, 4]);
        assert!(host(&g).iter().all(|v| v.is_finite()));
    }
    // Without autodiff: the value alone.
    let plain = Device::flex();
    let z = Tensor::<4>::zeros([2, 3, 4, 4], (&plain, DType::F32));
    let v = ce
        .forward(z, Tensor::<3, Int>::zeros([2, 4, 4], &plain))
        .unwrap();
    assert!((host(&v)[0] - 3f64.ln()).abs() < 1e-6);
}

#[test]
fn errors_stay_typed() {
    let ce = BurnLoss::standard("softmax_ce").unwrap();
    let dev = device();
    let z = Tensor::<4>::zeros([2, 3, 4, 4], &dev).require_grad();
    match ce.forward(z.clone(), Tensor::<3, Int>::zeros([2, 5, 4], &dev)) {
        Err(Error::Loss(losslang::Error::Shape { input, .. })) => assert_eq!(input, "target"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    match BurnLoss::standard("no_such_loss") {
        Err(Error::Loss(_)) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    // (f16 and bf16 logits are taken: `f16_and_bf16_logits_give_the_f32_loss_*`.)
}

#[test]
fn deep_supervision_equals_burns_own_weighted_sum_over_depths() {
    use burn::tensor::module::avg_pool2d;
    use burn::tensor::ops::AvgPoolOptions;
    use losslang_burn::BurnDeepLoss;
    let z0 = tensor([2, 1, 8, 8], 41).require_grad();
    let z1 = tensor([2, 1, 4, 4], 42).require_grad();
    let y: Vec<f64> = values(128, 43)
        .iter()
        .map(|&v| f64::from(v > 0.5))
        .collect();
    let y = Tensor::<4>::from_data(TensorData::new(y, [2, 1, 8, 8]), (&device(), DType::F64));
    // MONAI's `exp` weights, 1 and 0.5; the soft target of depth 1 by burn's 2 × 2 pooling.
    let dice = losslang::Library::standard()
        .get("dice")
        .unwrap()
        .set("reduction", "image")
        .unwrap();
    let deep = BurnDeepLoss::new(dice, losslang::DeepWeights::Exp)
        .unwrap()
        .resize(losslang::Resize::AvgPool);
    let (ours, r) = deep.forward(&[z0.clone(), z1.clone()], y.clone()).unwrap();
    assert_eq!(r.weights, [1.0, 0.5]);
    let g = ours.backward();
    let (a0, a1) = (host(&z0.grad(&g).unwrap()), host(&z1.grad(&g).unwrap()));
    let w0 = z0.clone().detach().require_grad();
    let w1 = z1.clone().detach().require_grad();
    let y1 = avg_pool2d(y.clone(), AvgPoolOptions::new([2, 2]));
    let theirs = burn_dice(w0.clone(), y) + burn_dice(w1.clone(), y1) * 0.5;
    let g = theirs.backward();
    let (b0, b1) = (host(&w0.grad(&g).unwrap()), host(&w1.grad(&g).unwrap()));
    assert!(
        max_abs_diff(&a0, &b0) <= 1e-12,
        "depth 0: {}",
        max_abs_diff(&a0, &b0)
    );
    assert!(
        max_abs_diff(&a1, &b1) <= 1e-12,
        "depth 1: {}",
        max_abs_diff(&a1, &b1)
    );
    let (v, t) = (host(&ours)[0], host(&theirs)[0]);
    assert!(
        (v - t).abs() <= 1e-12 && (r.total - t).abs() <= 1e-12,
        "{v} {} vs {t}",
        r.total
    );
}

#[test]
fn f16_and_bf16_logits_give_the_f32_loss_and_a_gradient_of_their_dtype() {
    let ones = |dtype| {
        Tensor::<4>::ones([4, 1, 512, 512], (&device(), DType::F32))
            .cast(dtype)
            .require_grad()
    };
    let dice = BurnLoss::standard("dice").unwrap();
    let z = ones(DType::F32);
    let want = dice.forward(z.clone(), z.clone().detach()).unwrap();
    let g32 = host(&z.grad(&want.backward()).unwrap());
    let want = host(&want)[0];
    for dtype in [DType::F16, DType::BF16] {
        let z = ones(dtype);
        let l = dice.forward(z.clone(), z.clone().detach()).unwrap();
        assert_eq!(l.dtype(), dtype);
        let g = z.grad(&l.backward()).unwrap();
        assert_eq!(g.dtype(), dtype);
        let v = host(&l)[0];
        assert!(
            (v - want).abs() <= 1e-3 * want.abs(),
            "{dtype:?}: {v} vs f32 {want}"
        );
        let g = host(&g);
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{dtype:?}: a non-finite gradient"
        );
        let worst = max_abs_diff(&g, &g32);
        let scale = g32.iter().fold(0f64, |m, x| m.max(x.abs()));
        // The f32 gradient rounded once: 1/128 relative (bf16), or a step of f16's subnormals.
        let step = if dtype == DType::F16 {
            2f64.powi(-24)
        } else {
            0.0
        };
        assert!(
            worst <= 1e-2 * scale + step,
            "{dtype:?}: gradient off by {worst:e} of {scale:e}"
        );
    }
}
