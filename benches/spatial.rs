//! `cargo bench --bench spatial`: the exact distance transform and the distance field (both
//! sides' transforms) on a batch of images, the cost that `hausdorff_dt` pays twice per image
//! (issue 10: `[8, 1, 512, 512]` against MONAI's scipy-based `HausdorffDTLoss`), on a disc mask,
//! its complement and noisy masks.
//! Prints the median of 10 runs beside a copy of the same buffer (a bandwidth reference measured
//! in the same run).

use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (b, h, w) = (8usize, 512usize, 512usize);
    let n = b * h * w;
    // A disc per image (the typical foreground) plus speckle.
    let disc: Vec<f64> = (0..n)
        .map(|i| {
            let (y, x) = ((i / w) % h, i % w);
            let (dy, dx) = (y as f64 - 256.0, x as f64 - 200.0);
            let disc = dy * dy + dx * dx < 120.0 * 120.0;
            f64::from(u8::from(disc ^ (i * 2654435761 % 997 == 0)))
        })
        .collect();
    // Its complement, and noisy masks: a threshold of random logits, half the pixels true,
    // and of a random target that is 30% foreground, true at 70% (what `lossc bench` feeds
    // `hausdorff_dt`: it transforms both each mask and its complement).
    let outside: Vec<f64> = disc.iter().map(|&m| 1.0 - m).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |p: f64| -> Vec<f64> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                f64::from(u8::from(((state >> 11) as f64) < p * (1u64 << 53) as f64))
            })
            .collect()
    };
    let (half, most) = (noise(0.5), noise(0.7));
    // `cargo bench --bench spatial -- WORD` times only the masks whose name has WORD.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let masks = [
        ("disc", disc),
        ("outside of the disc", outside),
        ("noisy 50%", half),
        ("noisy 70%", most),
    ];
    for (name, mask) in masks {
        if only.is_empty() || only.iter().any(|w| name.contains(w.as_str())) {
            time(name, &mask, b, h, w);
        }
    }
}

fn time(name: &str, mask: &[f64], b: usize, h: usize, w: usize) {
    // f32, as `lossc bench --dtype f32` runs the ops.
    let mask: Vec<f32> = mask.iter().map(|&m| m as f32).collect();
    let mut out = vec![0.0f32; mask.len()];
    let (mut t_edt, mut t_field, mut t_copy) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        let s = Instant::now();
        losslang::internals::edt_images(&mask, &[h, w], &[1.0, 1.0], &mut out);
        t_edt.push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        losslang::internals::field_images(&mask, &[h, w], &[1.0, 1.0], &mut out);
        t_field.push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        out.copy_from_slice(&mask);
        t_copy.push(s.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&out);
    }
    let (e, f, c) = (median(t_edt), median(t_field), median(t_copy));
    println!(
        "[{b}, {h}, {w}] f32, {name} mask, {} threads: edt {e:.2} ms, distance_field {f:.2} ms \
         (copy of the same buffer: {c:.2} ms; ratios {:.1}, {:.1})",
        rayon::current_num_threads(),
        e / c,
        f / c
    );
}
