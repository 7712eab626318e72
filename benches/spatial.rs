//! `cargo bench --bench spatial`: the exact distance transform on a batch of images, the cost
//! that `hausdorff_dt` will pay four times per image (issue 10: `[8, 1, 512, 512]` against
//! MONAI's scipy-based `HausdorffDTLoss`). Prints the median of 10 runs beside a copy of the
//! same buffer (a bandwidth reference measured in the same run).

use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (b, h, w) = (8usize, 512usize, 512usize);
    let n = b * h * w;
    // A disc per image (the typical foreground) plus speckle.
    let mask: Vec<f64> = (0..n)
        .map(|i| {
            let (y, x) = ((i / w) % h, i % w);
            let (dy, dx) = (y as f64 - 256.0, x as f64 - 200.0);
            let disc = dy * dy + dx * dx < 120.0 * 120.0;
            f64::from(u8::from(disc ^ (i * 2654435761 % 997 == 0)))
        })
        .collect();
    let mut out = vec![0.0; n];
    let mut t_edt = Vec::new();
    let mut t_copy = Vec::new();
    for _ in 0..10 {
        let s = Instant::now();
        losslang::internals::edt_images(&mask, &[h, w], &[1.0, 1.0], &mut out);
        t_edt.push(s.elapsed().as_secs_f64() * 1e3);
        let s = Instant::now();
        out.copy_from_slice(&mask);
        t_copy.push(s.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&out);
    }
    let (e, c) = (median(t_edt), median(t_copy));
    println!(
        "edt [{b}, {h}, {w}] f64, {} threads: {e:.2} ms (copy of the same buffer: {c:.2} ms, ratio {:.1})",
        rayon::current_num_threads(),
        e / c
    );
}
