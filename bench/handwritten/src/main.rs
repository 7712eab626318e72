//! The yardstick of issue 3: each of the five peer losses (bench/peers/README.md) written by
//! hand as a single-purpose f32 kernel — one fused loop per pass, rayon over fixed chunks, f64
//! partial sums, the gradient written into a reused buffer, vectorised exp/ln (losslang's own
//! `ops::fast`, so both sides use the same polynomials), built with `-C target-cpu=native`
//! (`.cargo/config.toml`). Prints one JSON line per loss in the shape of `lossc bench`'s.
//!
//! `cargo run --release -- --loss bce --shape 16,1,1024,1024 --threads 2 --iters 20`
//! (or `scripts/vs-handwritten.sh`, which alternates it with `lossc bench`).

use std::time::Instant;

use losslang::api::gradcheck::Rng;
use losslang::ops::fast::{exp_f32_fma as exp, ln_1_2_f32_fma as ln_1_2};
use rayon::prelude::*;

const CHUNK: usize = 16 * 1024;
const LANES: usize = 16;

/// sigmoid(x) and log1p(exp(-|x|)) from one exp, one division and one ln on [1, 2].
#[inline(always)]
fn sig_l(x: f32) -> (f32, f32) {
    let e = exp(-x.abs());
    let u = 1.0 + e;
    let r = 1.0 / u;
    let l = ln_1_2(u) + (e - (u - 1.0)) * r;
    (if x >= 0.0 { r } else { e * r }, l)
}

/// Runs `f(x, y, g, acc)` over 16-lane groups of every chunk in parallel; `acc` holds `K` f32
/// lane accumulators, flushed to f64 every 512 elements; the chunk sums are added in order.
fn map_reduce<const K: usize>(
    x: &[f32],
    y: &[f32],
    g: &mut [f32],
    f: impl Fn(&[f32; LANES], &[f32; LANES], &mut [f32; LANES], &mut [[f32; LANES]; K]) + Sync,
) -> [f64; K] {
    let parts: Vec<[f64; K]> = x
        .par_chunks(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .zip(g.par_chunks_mut(CHUNK))
        .map(|((x, y), g)| {
            let mut tot = [0.0f64; K];
            for ((x, y), g) in x.chunks(512).zip(y.chunks(512)).zip(g.chunks_mut(512)) {
                let mut acc = [[0.0f32; LANES]; K];
                let mut xs = x.chunks_exact(LANES);
                let mut ys = y.chunks_exact(LANES);
                let mut gs = g.chunks_exact_mut(LANES);
                for ((x, y), g) in (&mut xs).zip(&mut ys).zip(&mut gs) {
                    f(
                        x.try_into().unwrap(),
                        y.try_into().unwrap(),
                        g.try_into().unwrap(),
                        &mut acc,
                    );
                }
                // The tail, padded with x = 0, y = 0 and its extra lanes' contributions removed.
                let (xr, yr, gr) = (xs.remainder(), ys.remainder(), gs.into_remainder());
                if !xr.is_empty() {
                    let (mut xp, mut yp, mut gp) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
                    xp[..xr.len()].copy_from_slice(xr);
                    yp[..yr.len()].copy_from_slice(yr);
                    let mut a2 = [[0.0f32; LANES]; K];
                    f(&xp, &yp, &mut gp, &mut a2);
                    for (a, b) in acc.iter_mut().zip(&a2) {
                        for j in 0..xr.len() {
                            a[j] += b[j];
                        }
                    }
                    gr.copy_from_slice(&gp[..gr.len()]);
                }
                for (t, a) in tot.iter_mut().zip(&acc) {
                    *t += a.iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            tot
        })
        .collect();
    let mut tot = [0.0f64; K];
    for p in parts {
        for (t, v) in tot.iter_mut().zip(p) {
            *t += v;
        }
    }
    tot
}

/// Second pass of the region losses: g = h(x, y) per element, no reduction (16 lanes at a time
/// like `map_reduce`, which LLVM vectorises where a plain element loop stays scalar).
fn map(x: &[f32], y: &[f32], g: &mut [f32], h: impl Fn(f32, f32) -> f32 + Sync) {
    map_reduce::<0>(x, y, g, |x, y, g, _| {
        for j in 0..LANES {
            g[j] = h(x[j], y[j]);
        }
    });
}

fn bce(x: &[f32], y: &[f32], g: &mut [f32]) -> f64 {
    let inv_n = 1.0 / x.len() as f32;
    let [s] = map_reduce::<1>(x, y, g, |x, y, g, [acc]| {
        for j in 0..LANES {
            let (s, l) = sig_l(x[j]);
            acc[j] += x[j].max(0.0) - x[j] * y[j] + l;
            g[j] = (s - y[j]) * inv_n;
        }
    });
    s / x.len() as f64
}

fn focal(x: &[f32], y: &[f32], g: &mut [f32]) -> f64 {
    let (a, inv_n) = (0.25f32, 1.0 / x.len() as f32);
    let [s] = map_reduce::<1>(x, y, g, |x, y, g, [acc]| {
        for j in 0..LANES {
            let (p, l) = sig_l(x[j]);
            let ce = x[j].max(0.0) - x[j] * y[j] + l;
            let pt = p * y[j] + (1.0 - p) * (1.0 - y[j]);
            let at = a * y[j] + (1.0 - a) * (1.0 - y[j]);
            let q = 1.0 - pt;
            let dpt = (2.0 * y[j] - 1.0) * p * (1.0 - p);
            acc[j] += at * q * q * ce;
            g[j] = at * (q * q * (p - y[j]) - 2.0 * q * dpt * ce) * inv_n;
        }
    });
    s / x.len() as f64
}

/// Pass 1 of the region losses: [Σ p y, Σ p, Σ y].
fn region_sums(x: &[f32], y: &[f32], g: &mut [f32]) -> [f64; 3] {
    map_reduce::<3>(x, y, g, |x, y, _, [i, p, t]| {
        for j in 0..LANES {
            let (s, _) = sig_l(x[j]);
            i[j] += s * y[j];
            p[j] += s;
            t[j] += y[j];
        }
    })
}

fn dice(x: &[f32], y: &[f32], g: &mut [f32]) -> f64 {
    let [i, p, t] = region_sums(x, y, g);
    let (num, den) = (2.0 * i + 1.0, p + t + 1.0);
    let (a, b) = ((-2.0 / den) as f32, (num / (den * den)) as f32);
    map(x, y, g, |x, y| {
        let (s, _) = sig_l(x);
        (a * y + b) * s * (1.0 - s)
    });
    1.0 - num / den
}

fn tversky(x: &[f32], y: &[f32], g: &mut [f32]) -> f64 {
    let (al, be) = (0.3, 0.7);
    let [tp, p, t] = region_sums(x, y, g);
    let num = tp + 1.0;
    let den = (1.0 - al - be) * tp + al * p + be * t + 1.0;
    // dL/dp = -(y den - num ((1 - al - be) y + al)) / den^2
    let a = (-(den - num * (1.0 - al - be)) / (den * den)) as f32;
    let b = (num * al / (den * den)) as f32;
    map(x, y, g, |x, y| {
        let (s, _) = sig_l(x);
        (a * y + b) * s * (1.0 - s)
    });
    1.0 - num / den
}

fn combo(x: &[f32], y: &[f32], g: &mut [f32]) -> f64 {
    let (al, be, n) = (0.5f64, 0.5f64, x.len() as f64);
    let [ce, i, p, t] = map_reduce::<4>(x, y, g, |x, y, _, [ce, i, p, t]| {
        for j in 0..LANES {
            let (s, l) = sig_l(x[j]);
            let sp = x[j].max(0.0) + l;
            ce[j] += be as f32 * y[j] * (sp - x[j]) + (1.0 - be as f32) * (1.0 - y[j]) * sp;
            i[j] += s * y[j];
            p[j] += s;
            t[j] += y[j];
        }
    });
    let (num, den) = (2.0 * i + 1.0, p + t + 1.0);
    let (a, b) = (
        ((1.0 - al) * -2.0 / den) as f32,
        ((1.0 - al) * num / (den * den)) as f32,
    );
    let (wp, wn) = ((al * be / n) as f32, (al * (1.0 - be) / n) as f32);
    map(x, y, g, |x, y| {
        let (s, _) = sig_l(x);
        wp * y * (s - 1.0) + wn * (1.0 - y) * s + (a * y + b) * s * (1.0 - s)
    });
    al * ce / n + (1.0 - al) * (1.0 - num / den)
}

fn main() {
    let mut loss = String::from("bce");
    let mut shape = vec![16usize, 1, 1024, 1024];
    let (mut threads, mut iters) = (2usize, 20usize);
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v = w.get(1).map(String::as_str).unwrap_or("");
        match w[0].as_str() {
            "--loss" => loss = v.to_string(),
            "--shape" => shape = v.split(',').map(|s| s.parse().expect("shape")).collect(),
            "--threads" => threads = v.parse().expect("threads"),
            "--iters" => iters = v.parse().expect("iters"),
            o => panic!("unknown argument {o}"),
        }
    }
    let f: fn(&[f32], &[f32], &mut [f32]) -> f64 = match loss.as_str() {
        "bce" => bce,
        "focal" => focal,
        "dice" => dice,
        "tversky" => tversky,
        "combo" => combo,
        o => panic!("no hand-written kernel for {o}"),
    };
    // The same inputs as `lossc bench`: logits 2·N(0,1), then targets Bernoulli(0.3).
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..n).map(|_| (2.0 * rng.normal()) as f32).collect();
    let y: Vec<f32> = (0..n)
        .map(|_| if rng.uniform() < 0.3 { 1.0 } else { 0.0 })
        .collect();
    let mut g = vec![0.0f32; n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let (times, value) = pool.install(|| {
        for _ in 0..2 {
            f(&x, &y, &mut g);
        }
        let mut times = Vec::new();
        let mut value = 0.0;
        for _ in 0..iters.max(1) {
            let t = Instant::now();
            value = f(&x, &y, &mut g);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        (times, value)
    });
    println!(
        "{{\"impl\":\"handwritten\",\"loss\":\"{loss}\",\"elements\":{n},\"threads\":{threads},\"median_ms\":{},\"min_ms\":{},\"value\":{value},\"grad_sum\":{}}}",
        times[times.len() / 2],
        times[0],
        g.iter().map(|&v| v as f64).sum::<f64>()
    );
}
