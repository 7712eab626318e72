//! Trains a small convolutional segmenter with losslang losses in candle, on synthetic images
//! drawn here: bright discs and dark squares on noise.
//!
//! 1. Two classes (disc or not) with `dice_ce` against a float target `[B, 1, H, W]`, its
//!    `lambda_dice` live and ramped from 1/15 to 1 over the epochs (`set_param`, no compile).
//! 2. Three classes (background, disc, square) with `softmax_ce` against a `u8` class-index
//!    target `[B, H, W]` whose border pixels are 255, ignored (`ignore_index = 255`).
//!
//! Prints the loss and the IoU (foreground classes, on a held-out batch) per epoch.
//! Run with `cargo run --release --example train_candle`.

use candle_core::{Device, Tensor, Var};
use losslang_candle::CandleLoss;

#[path = "../../examples/common/synthetic.rs"]
mod synthetic;
use synthetic::{batch, disc_target, iou, truth, Rng, BATCH, SIDE};

/// conv3x3(1 → 8) → relu → conv3x3(8 → classes), padding 1.
struct Net {
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

impl Net {
    fn new(classes: usize, rng: &mut Rng, dev: &Device) -> candle_core::Result<Net> {
        let mut init = |shape: &[usize], scale: f32| -> candle_core::Result<Var> {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| scale * (2.0 * rng.uniform() - 1.0))
                .collect();
            Var::from_tensor(&Tensor::from_vec(v, shape, dev)?)
        };
        Ok(Net {
            w1: init(&[8, 1, 3, 3], 0.5)?,
            b1: init(&[1, 8, 1, 1], 0.0)?,
            w2: init(&[classes, 8, 3, 3], 0.2)?,
            b2: init(&[1, classes, 1, 1], 0.0)?,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = x
            .conv2d(self.w1.as_tensor(), 1, 1, 1, 1)?
            .broadcast_add(self.b1.as_tensor())?
            .relu()?;
        h.conv2d(self.w2.as_tensor(), 1, 1, 1, 1)?
            .broadcast_add(self.b2.as_tensor())
    }
    fn vars(&self) -> [&Var; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }
}

/// Adam (β = 0.9, 0.999), written out: candle-core has no optimiser.
struct Adam {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

impl Adam {
    fn new(vars: &[&Var]) -> candle_core::Result<Adam> {
        let z = |v: &&Var| v.as_tensor().zeros_like();
        Ok(Adam {
            m: vars.iter().map(z).collect::<Result<_, _>>()?,
            v: vars.iter().map(z).collect::<Result<_, _>>()?,
            t: 0,
        })
    }
    fn step(&mut self, vars: &[&Var], loss: &Tensor, lr: f64) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        self.t += 1;
        let (c1, c2) = (1.0 - 0.9f64.powi(self.t), 1.0 - 0.999f64.powi(self.t));
        for (k, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            self.m[k] = ((&self.m[k] * 0.9)? + (g * 0.1)?)?;
            self.v[k] = ((&self.v[k] * 0.999)? + (g.sqr()? * 0.001)?)?;
            let update = ((&self.m[k] / c1)? / ((&self.v[k] / c2)?.sqrt()? + 1e-8)?)?;
            var.set(&(var.as_tensor() - (update * lr)?)?)?;
        }
        Ok(())
    }
}

fn run(
    name: &str,
    classes: usize,
    loss: &CandleLoss,
    epochs: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let mut rng = Rng(17);
    let net = Net::new(classes, &mut rng, &dev)?;
    let mut adam = Adam::new(&net.vars())?;
    let (test_img, test_lab) = batch(&mut Rng(99));
    let test_truth = truth(&test_lab, classes);
    let test_x = Tensor::from_vec(test_img, (BATCH, 1, SIDE, SIDE), &dev)?;
    let mut last = 0.0;
    println!("{name}");
    for epoch in 1..=epochs {
        if classes == 2 {
            // The dice term's weight schedule: a call on the loss, not a new compile.
            loss.set_param("lambda_dice", epoch as f64 / epochs as f64)?;
        }
        let mut sum = 0.0;
        let steps = 10;
        for _ in 0..steps {
            let (img, lab) = batch(&mut rng);
            let x = Tensor::from_vec(img, (BATCH, 1, SIDE, SIDE), &dev)?;
            let z = net.forward(&x)?;
            let l = if classes == 2 {
                // Binary: one logit per pixel, the disc as a float target (border as background).
                let y = disc_target(&lab);
                let y = Tensor::from_vec(y, (BATCH, 1, SIDE, SIDE), &dev)?;
                loss.forward(&z.narrow(1, 1, 1)?, &y)?
            } else {
                loss.forward(&z, &Tensor::from_vec(lab, (BATCH, SIDE, SIDE), &dev)?)?
            };
            sum += l.to_scalar::<f32>()? as f64;
            adam.step(&net.vars(), &l, 0.05)?;
        }
        let z = net.forward(&test_x)?;
        let pred: Vec<u8> = if classes == 2 {
            z.narrow(1, 1, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|&v| u8::from(v > 0.0))
                .collect()
        } else {
            z.argmax(1)?
                .flatten_all()?
                .to_vec1::<u32>()?
                .iter()
                .map(|&v| v as u8)
                .collect()
        };
        last = iou(&pred, &test_truth, classes);
        println!(
            "  epoch {epoch:2}  loss {:.4}  IoU {last:.3}",
            sum / steps as f64
        );
    }
    Ok(last)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = std::time::Instant::now();
    let binary = run(
        "2 classes, dice_ce",
        2,
        &CandleLoss::standard("dice_ce")?.live(&["lambda_dice"])?,
        15,
    )?;
    let multi = run(
        "3 classes, softmax_ce, u8 labels with ignore_index = 255",
        3,
        &CandleLoss::standard("softmax_ce")?.set("ignore_index", 255.0)?,
        15,
    )?;
    println!(
        "final IoU: {binary:.3} (2 classes), {multi:.3} (3 classes) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
