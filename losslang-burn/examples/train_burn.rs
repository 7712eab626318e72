//! Trains a small convolutional segmenter with losslang losses in burn (Flex backend under
//! autodiff, burn's own layers and Adam), on synthetic images drawn here: bright discs and dark
//! squares on noise.
//!
//! 1. Two classes (disc or not) with `dice_ce` against a float target `[B, 1, H, W]`, its
//!    `lambda_dice` live and ramped from 1/15 to 1 over the epochs (`set_param`, no compile).
//! 2. Three classes (background, disc, square) with `softmax_ce` against an `Int` class-index
//!    target `[B, H, W]` whose border pixels are 255, ignored (`ignore_index = 255`).
//!
//! Prints the loss and the IoU (foreground classes, on a held-out batch) per epoch.
//! Run with `cargo run --release --example train_burn`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use losslang_burn::BurnLoss;

#[path = "../../examples/common/synthetic.rs"]
mod synthetic;
use synthetic::{batch, disc_target, iou, truth, Rng, BATCH, SIDE};

/// conv3x3(1 → 8) → relu → conv3x3(8 → classes), padding 1.
#[derive(Module, Debug)]
struct Net {
    conv1: Conv2d,
    relu: Relu,
    conv2: Conv2d,
}

impl Net {
    fn new(classes: usize, device: &Device) -> Net {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Net {
            conv1: conv(1, 8),
            relu: Relu::new(),
            conv2: conv(8, classes),
        }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv2.forward(self.relu.forward(self.conv1.forward(x)))
    }
}

fn run(
    name: &str,
    classes: usize,
    loss: &BurnLoss,
    epochs: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let device = Device::flex().autodiff();
    let mut rng = Rng(17);
    let mut net = Net::new(classes, &device);
    let mut adam = AdamConfig::new().init();
    let (test_img, test_lab) = batch(&mut Rng(99));
    let test_truth = truth(&test_lab, classes);
    let images = |img: Vec<f32>| {
        Tensor::<4>::from_data(
            TensorData::new(img, [BATCH, 1, SIDE, SIDE]),
            (&device, DType::F32),
        )
    };
    let test_x = images(test_img);
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
            let z = net.forward(images(img));
            let l = if classes == 2 {
                // Binary: one logit per pixel, the disc as a float target (border as background).
                let y = disc_target(&lab);
                let y = Tensor::<4>::from_data(
                    TensorData::new(y, [BATCH, 1, SIDE, SIDE]),
                    (&device, DType::F32),
                );
                loss.forward(z.narrow(1, 1, 1), y)?
            } else {
                let labels = TensorData::new(lab, [BATCH, SIDE, SIDE]);
                loss.forward(z, Tensor::<3, Int>::from_data(labels, &device))?
            };
            sum += l.clone().into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_grads(l.backward(), &net);
            net = adam.step(0.05, net, grads);
        }
        let z = net.forward(test_x.clone());
        let pred: Vec<u8> = if classes == 2 {
            let v = z
                .narrow(1, 1, 1)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()?;
            v.iter().map(|&v| u8::from(v > 0.0)).collect()
        } else {
            let v = z
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()?;
            v.iter().map(|&v| v as u8).collect()
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
        &BurnLoss::standard("dice_ce")?.live(&["lambda_dice"])?,
        15,
    )?;
    let multi = run(
        "3 classes, softmax_ce, Int labels with ignore_index = 255",
        3,
        &BurnLoss::standard("softmax_ce")?.set("ignore_index", 255.0)?,
        15,
    )?;
    println!(
        "final IoU: {binary:.3} (2 classes), {multi:.3} (3 classes) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
