//! Synthetic segmentation data and the IoU, shared by the framework examples
//! (`train_candle`, `train_burn`): bright discs and dark squares on noise, drawn here.

pub const SIDE: usize = 32;
pub const BATCH: usize = 16;

/// Deterministic uniform numbers in [0, 1) (splitmix64).
pub struct Rng(pub u64);
impl Rng {
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A batch of images `[B, 1, S, S]` and their labels per pixel (0 background, 1 disc,
/// 2 square; 255 on the border, which no class claims).
pub fn batch(rng: &mut Rng) -> (Vec<f32>, Vec<u8>) {
    let mut img = vec![0f32; BATCH * SIDE * SIDE];
    let mut lab = vec![0u8; BATCH * SIDE * SIDE];
    for b in 0..BATCH {
        let (cx, cy, r) = (
            8.0 + 16.0 * rng.uniform(),
            8.0 + 16.0 * rng.uniform(),
            3.0 + 4.0 * rng.uniform(),
        );
        let (sx, sy, h) = (
            (4.0 + 20.0 * rng.uniform()) as usize,
            (4.0 + 20.0 * rng.uniform()) as usize,
            3 + (4.0 * rng.uniform()) as usize,
        );
        for y in 0..SIDE {
            for x in 0..SIDE {
                let k = b * SIDE * SIDE + y * SIDE + x;
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let class = if dx * dx + dy * dy <= r * r {
                    1
                } else if (sx..sx + h).contains(&x) && (sy..sy + h).contains(&y) {
                    2
                } else {
                    0
                };
                let level = [0.0, 1.0, -1.0][class as usize];
                img[k] = level + 0.6 * (rng.uniform() - 0.5);
                let border = x == 0 || y == 0 || x == SIDE - 1 || y == SIDE - 1;
                lab[k] = if border { 255 } else { class };
            }
        }
    }
    (img, lab)
}

/// Mean IoU over the foreground classes of predicted against true labels (255 not counted).
pub fn iou(pred: &[u8], truth: &[u8], classes: usize) -> f64 {
    let mut total = 0.0;
    for c in 1..classes as u8 {
        let (mut inter, mut union) = (0usize, 0usize);
        for (&p, &t) in pred.iter().zip(truth).filter(|(_, &t)| t != 255) {
            inter += usize::from(p == c && t == c);
            union += usize::from(p == c || t == c);
        }
        total += inter as f64 / union.max(1) as f64;
    }
    total / (classes - 1) as f64
}

/// The binary task's float target: 1 on the disc, 0 elsewhere (the border as background).
pub fn disc_target(labels: &[u8]) -> Vec<f32> {
    labels.iter().map(|&l| f32::from(l == 1)).collect()
}

/// The labels the IoU is taken against: for 2 classes, disc (1) or not (0), the border still
/// 255 (not counted); for more, the labels as drawn.
pub fn truth(labels: &[u8], classes: usize) -> Vec<u8> {
    if classes == 2 {
        labels
            .iter()
            .map(|&l| if l == 255 { 255 } else { u8::from(l == 1) })
            .collect()
    } else {
        labels.to_vec()
    }
}
