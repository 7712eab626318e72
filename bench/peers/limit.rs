//! The speed yardstick: each of five losses (forward value + gradient w.r.t. logits) written by
//! hand as a single-purpose f32 kernel. Build and run it with `build-limit.sh` beside this file:
//!   bench/peers/build-limit.sh            # prints the binary's path
//!   $(bench/peers/build-limit.sh) --logn 20,24 --threads 2 --losses bce,focal,dice,tversky,combo
//! It is built with `-C target-cpu=native`, fat LTO and one codegen unit.
//!
//! Minimal passes over memory, f32 everywhere, chunked rayon work (2 threads by default),
//! branch-free inner loops over [f32; 16] blocks so LLVM auto-vectorises them, and
//! polynomial exp/log (Cephes-style, ~1-2 ulp) because libm calls do not vectorise.
//!   BCE / focal      : 1 pass  : read x, t; write grad; reduce loss       -> 3 arrays = 12 N bytes
//!   dice / tversky   : 2 passes: (read x,t; reduce 3 sums) + (read x,t; write grad) -> 5 arrays = 20 N bytes
//!   combo (BCE+dice) : 2 passes, BCE sum fused into pass 1               -> 5 arrays = 20 N bytes
//! Also: a STREAM-like bandwidth probe (read2 = sum(a)+sum(b), copy, triad) with the same
//! rayon/chunking machinery and ordinary (write-allocate) stores, at the same N.
//!
//! Usage: limit [--logn 20,24] [--threads 2] [--reps R] [--math fast|libm|both] [--alloc]
//!              [--losses bce,focal,dice,tversky,combo] [--stream] [--no-loss] [--check]
//! Output: one JSON object per line on stdout.

use rayon::prelude::*;
use std::time::Instant;

const L: usize = 16; // lanes per block (one AVX-512 register of f32, 2 AVX2, 4 SSE)
const CHUNK: usize = 1 << 14; // elements per rayon task (64 KiB per array)

// ---------------------------------------------------------------------------------------------
// math
// ---------------------------------------------------------------------------------------------

trait Math: Sync + Send + 'static {
    #[allow(dead_code)]
    const NAME: &'static str;
    /// exp(x) for x <= 0
    fn exp_neg(x: f32) -> f32;
    /// log1p(e) for e in [0, 1]
    fn log1p01(e: f32) -> f32;
}

/// a*b+c: a fused FMA when the target has it (mul_add would be a libm call otherwise).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") { a.mul_add(b, c) } else { a * b + c }
}

/// Vectorisable polynomial math (pure arithmetic + bit tricks, no libm calls, no `round`).
struct Fast;
/// Scalar libm calls (what a naive `x.exp()` / `x.ln_1p()` loop gives).
struct Libm;

impl Math for Fast {
    const NAME: &'static str = "fast";
    #[inline(always)]
    fn exp_neg(x: f32) -> f32 {
        let x = if x < -87.0 { -87.0 } else { x };
        // k = round(x / ln2) via the 1.5*2^23 magic constant (works with plain SSE2)
        const MAGIC: f32 = 12582912.0;
        let kf_m = fma(x, std::f32::consts::LOG2_E, MAGIC);
        let ki = (kf_m.to_bits() as i32).wrapping_sub(0x4B40_0000);
        let k = kf_m - MAGIC;
        let r = fma(k, 2.121_944_4e-4, fma(k, -0.693_359_375, x));
        let r2 = r * r;
        let mut p = fma(1.987_569_15e-4, r, 1.398_199_95e-3);
        p = fma(p, r, 8.333_451_9e-3);
        p = fma(p, r, 4.166_579_6e-2);
        p = fma(p, r, 1.666_666_5e-1);
        p = fma(p, r, 5.000_000_1e-1);
        let y = fma(p, r2, r + 1.0);
        let scale = f32::from_bits((ki.wrapping_add(127) << 23) as u32);
        y * scale
    }
    #[inline(always)]
    fn log1p01(e: f32) -> f32 {
        // log(u), u = 1+e in [1,2]; Cephes logf
        let u = 1.0 + e;
        let bits = u.to_bits();
        let ex = ((bits >> 23) & 0xff) as i32 - 127;
        let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1,2)
        let big = m > std::f32::consts::SQRT_2;
        let m = if big { m * 0.5 } else { m };
        let ef = (ex + big as i32) as f32;
        let f = m - 1.0;
        let z = f * f;
        let mut y = fma(7.037_683_6e-2, f, -1.151_461e-1);
        y = fma(y, f, 1.167_699_9e-1);
        y = fma(y, f, -1.242_014_1e-1);
        y = fma(y, f, 1.424_932_3e-1);
        y = fma(y, f, -1.666_805_8e-1);
        y = fma(y, f, 2.000_071_4e-1);
        y = fma(y, f, -2.499_999_4e-1);
        y = fma(y, f, 3.333_333_1e-1);
        y = y * f * z;
        y = fma(-2.121_944_4e-4, ef, y);
        y = fma(-0.5, z, y);
        fma(0.693_359_375, ef, f + y)
    }
}

impl Math for Libm {
    const NAME: &'static str = "libm";
    #[inline(always)]
    fn exp_neg(x: f32) -> f32 {
        x.exp()
    }
    #[inline(always)]
    fn log1p01(e: f32) -> f32 {
        e.ln_1p()
    }
}

/// (sigmoid(x), e = exp(-|x|))
#[inline(always)]
fn sig<M: Math>(x: f32) -> (f32, f32) {
    let e = M::exp_neg(-x.abs());
    let inv = 1.0 / (1.0 + e);
    let p = if x >= 0.0 { inv } else { e * inv };
    (p, e)
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}

#[inline(always)]
fn sum_lanes(a: &[f32; L]) -> f64 {
    a.iter().map(|&v| v as f64).sum()
}

// ---------------------------------------------------------------------------------------------
// losses (all return the scalar loss and write d loss / d x into g)
// ---------------------------------------------------------------------------------------------

const FOCAL_ALPHA: f32 = 0.25;
const TV_ALPHA: f32 = 0.3; // weight of FP
const TV_BETA: f32 = 0.7; // weight of FN
const SMOOTH: f32 = 1.0;

#[inline(always)]
fn bce_elem<M: Math>(x: f32, t: f32, inv_n: f32) -> (f32, f32) {
    let (p, e) = sig::<M>(x);
    let l = relu(x) - x * t + M::log1p01(e);
    (l, (p - t) * inv_n)
}

#[inline(always)]
fn focal_elem<M: Math>(x: f32, t: f32, inv_n: f32) -> (f32, f32) {
    let (p, e) = sig::<M>(x);
    let ce = relu(x) - x * t + M::log1p01(e);
    let pt = p * t + (1.0 - p) * (1.0 - t);
    let omp = 1.0 - pt;
    let at = FOCAL_ALPHA * t + (1.0 - FOCAL_ALPHA) * (1.0 - t);
    let l = at * omp * omp * ce;
    let dpt = (2.0 * t - 1.0) * p * (1.0 - p);
    let g = at * (omp * omp * (p - t) - 2.0 * omp * dpt * ce) * inv_n;
    (l, g)
}

/// one fused pass: read x, t; write g; reduce per-element loss
fn onepass<M: Math>(
    x: &[f32],
    t: &[f32],
    g: &mut [f32],
    f: impl Fn(f32, f32, f32) -> (f32, f32) + Sync + Send + Copy,
) -> f64 {
    let n = x.len();
    let inv_n = 1.0 / n as f32;
    let s: f64 = g
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(t.par_chunks(CHUNK))
        .map(|((g, x), t)| {
            let mut acc = [0f32; L];
            let (gb, gr) = g.as_chunks_mut::<L>();
            let (xb, xr) = x.as_chunks::<L>();
            let (tb, tr) = t.as_chunks::<L>();
            for ((gb, xb), tb) in gb.iter_mut().zip(xb).zip(tb) {
                for j in 0..L {
                    let (l, gg) = f(xb[j], tb[j], inv_n);
                    acc[j] += l;
                    gb[j] = gg;
                }
            }
            let mut s = sum_lanes(&acc);
            for ((g, &x), &t) in gr.iter_mut().zip(xr).zip(tr) {
                let (l, gg) = f(x, t, inv_n);
                s += l as f64;
                *g = gg;
            }
            s
        })
        .sum();
    s / n as f64
}

fn bce<M: Math>(x: &[f32], t: &[f32], g: &mut [f32]) -> f64 {
    onepass::<M>(x, t, g, bce_elem::<M>)
}

fn focal<M: Math>(x: &[f32], t: &[f32], g: &mut [f32]) -> f64 {
    onepass::<M>(x, t, g, focal_elem::<M>)
}

/// pass 1 for the overlap losses: sum(p*t), sum(p), sum(t) and optionally sum(bce)
fn sums<M: Math, const WITH_BCE: bool>(x: &[f32], t: &[f32]) -> [f64; 4] {
    x.par_chunks(CHUNK)
        .zip(t.par_chunks(CHUNK))
        .map(|(x, t)| {
            let mut a_pt = [0f32; L];
            let mut a_p = [0f32; L];
            let mut a_t = [0f32; L];
            let mut a_l = [0f32; L];
            let (xb, xr) = x.as_chunks::<L>();
            let (tb, tr) = t.as_chunks::<L>();
            for (xb, tb) in xb.iter().zip(tb) {
                for j in 0..L {
                    let (xv, tv) = (xb[j], tb[j]);
                    let (p, e) = sig::<M>(xv);
                    a_pt[j] += p * tv;
                    a_p[j] += p;
                    a_t[j] += tv;
                    if WITH_BCE {
                        a_l[j] += relu(xv) - xv * tv + M::log1p01(e);
                    }
                }
            }
            let mut s = [sum_lanes(&a_pt), sum_lanes(&a_p), sum_lanes(&a_t), sum_lanes(&a_l)];
            for (&xv, &tv) in xr.iter().zip(tr) {
                let (p, e) = sig::<M>(xv);
                s[0] += (p * tv) as f64;
                s[1] += p as f64;
                s[2] += tv as f64;
                if WITH_BCE {
                    s[3] += (relu(xv) - xv * tv + M::log1p01(e)) as f64;
                }
            }
            s
        })
        .reduce(|| [0.0; 4], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]])
}

/// pass 2 for the overlap losses: g = (a*t + b) * p(1-p) + c*(p - t)
fn overlap_grad<M: Math>(x: &[f32], t: &[f32], g: &mut [f32], a: f32, b: f32, c: f32) {
    g.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(t.par_chunks(CHUNK))
        .for_each(|((g, x), t)| {
            let f = |xv: f32, tv: f32| {
                let (p, _) = sig::<M>(xv);
                (a * tv + b) * (p * (1.0 - p)) + c * (p - tv)
            };
            let (gb, gr) = g.as_chunks_mut::<L>();
            let (xb, xr) = x.as_chunks::<L>();
            let (tb, tr) = t.as_chunks::<L>();
            for ((gb, xb), tb) in gb.iter_mut().zip(xb).zip(tb) {
                for j in 0..L {
                    gb[j] = f(xb[j], tb[j]);
                }
            }
            for ((g, &xv), &tv) in gr.iter_mut().zip(xr).zip(tr) {
                *g = f(xv, tv);
            }
        });
}

fn dice<M: Math>(x: &[f32], t: &[f32], g: &mut [f32]) -> f64 {
    let [i, p, tt, _] = sums::<M, false>(x, t);
    let s = SMOOTH as f64;
    let num = 2.0 * i + s;
    let den = p + tt + s;
    // dL/dp_i = -2 t_i / den + num / den^2
    overlap_grad::<M>(x, t, g, (-2.0 / den) as f32, (num / (den * den)) as f32, 0.0);
    1.0 - num / den
}

fn tversky<M: Math>(x: &[f32], t: &[f32], g: &mut [f32]) -> f64 {
    let [tp, p, tt, _] = sums::<M, false>(x, t);
    let (al, be, s) = (TV_ALPHA as f64, TV_BETA as f64, SMOOTH as f64);
    let fp = p - tp;
    let fn_ = tt - tp;
    let num = tp + s;
    let den = tp + al * fp + be * fn_ + s;
    // dden/dp_i = (1-al-be) t_i + al ; dL/dp_i = -t_i/den + num*dden/dp_i/den^2
    let a = -1.0 / den + num * (1.0 - al - be) / (den * den);
    let b = num * al / (den * den);
    overlap_grad::<M>(x, t, g, a as f32, b as f32, 0.0);
    1.0 - num / den
}

fn combo<M: Math>(x: &[f32], t: &[f32], g: &mut [f32]) -> f64 {
    let n = x.len() as f64;
    let [i, p, tt, l] = sums::<M, true>(x, t);
    let s = SMOOTH as f64;
    let num = 2.0 * i + s;
    let den = p + tt + s;
    overlap_grad::<M>(
        x,
        t,
        g,
        (0.5 * -2.0 / den) as f32,
        (0.5 * num / (den * den)) as f32,
        (0.5 / n) as f32,
    );
    0.5 * (l / n) + 0.5 * (1.0 - num / den)
}

// ---------------------------------------------------------------------------------------------
// f64 scalar reference (for --check)
// ---------------------------------------------------------------------------------------------

fn reference(loss: &str, x: &[f32], t: &[f32]) -> (f64, Vec<f64>) {
    let n = x.len() as f64;
    let sg = |x: f64| 1.0 / (1.0 + (-x).exp());
    let bce_e = |x: f64, t: f64| x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
    let mut g = vec![0.0; x.len()];
    match loss {
        "bce" => {
            let mut s = 0.0;
            for i in 0..x.len() {
                let (xv, tv) = (x[i] as f64, t[i] as f64);
                s += bce_e(xv, tv);
                g[i] = (sg(xv) - tv) / n;
            }
            (s / n, g)
        }
        "focal" => {
            let a = FOCAL_ALPHA as f64;
            let mut s = 0.0;
            for i in 0..x.len() {
                let (xv, tv) = (x[i] as f64, t[i] as f64);
                let p = sg(xv);
                let ce = bce_e(xv, tv);
                let pt = p * tv + (1.0 - p) * (1.0 - tv);
                let at = a * tv + (1.0 - a) * (1.0 - tv);
                s += at * (1.0 - pt).powi(2) * ce;
                let dpt = (2.0 * tv - 1.0) * p * (1.0 - p);
                g[i] = at * ((1.0 - pt).powi(2) * (p - tv) - 2.0 * (1.0 - pt) * dpt * ce) / n;
            }
            (s / n, g)
        }
        "dice" | "tversky" | "combo" => {
            let (mut i_, mut p_, mut t_, mut l_) = (0.0, 0.0, 0.0, 0.0);
            for i in 0..x.len() {
                let (xv, tv) = (x[i] as f64, t[i] as f64);
                let p = sg(xv);
                i_ += p * tv;
                p_ += p;
                t_ += tv;
                l_ += bce_e(xv, tv);
            }
            let s = SMOOTH as f64;
            let (val, a, b, c) = if loss == "tversky" {
                let (al, be) = (TV_ALPHA as f64, TV_BETA as f64);
                let num = i_ + s;
                let den = i_ + al * (p_ - i_) + be * (t_ - i_) + s;
                (
                    1.0 - num / den,
                    -1.0 / den + num * (1.0 - al - be) / (den * den),
                    num * al / (den * den),
                    0.0,
                )
            } else {
                let num = 2.0 * i_ + s;
                let den = p_ + t_ + s;
                let w = if loss == "combo" { 0.5 } else { 1.0 };
                let c = if loss == "combo" { 0.5 / n } else { 0.0 };
                let v = if loss == "combo" { 0.5 * l_ / n + 0.5 * (1.0 - num / den) } else { 1.0 - num / den };
                (v, w * -2.0 / den, w * num / (den * den), c)
            };
            for i in 0..x.len() {
                let (xv, tv) = (x[i] as f64, t[i] as f64);
                let p = sg(xv);
                g[i] = (a * tv + b) * p * (1.0 - p) + c * (p - tv);
            }
            (val, g)
        }
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// STREAM-like bandwidth kernels (same chunking / rayon as the losses)
// ---------------------------------------------------------------------------------------------

fn k_read2(a: &[f32], b: &[f32]) -> f64 {
    a.par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(a, b)| {
            let mut acc = [0f32; L];
            let (ab, _) = a.as_chunks::<L>();
            let (bb, _) = b.as_chunks::<L>();
            for (ab, bb) in ab.iter().zip(bb) {
                for j in 0..L {
                    acc[j] += ab[j] + bb[j];
                }
            }
            sum_lanes(&acc)
        })
        .sum()
}

fn k_copy(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).for_each(|(a, b)| {
        for (a, b) in a.iter_mut().zip(b) {
            *a = *b;
        }
    });
}

fn k_triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .zip(c.par_chunks(CHUNK))
        .for_each(|((a, b), c)| {
            for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                *a = *b + s * *c;
            }
        });
}

// ---------------------------------------------------------------------------------------------
// harness
// ---------------------------------------------------------------------------------------------

fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 // [0,1)
    };
    let mut x = Vec::with_capacity(n);
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        // approx N(0, 2^2) via sum of 4 uniforms; targets ~ Bernoulli(0.3)
        let u = next() + next() + next() + next() - 2.0;
        x.push(u * 2.0 * 1.732);
        t.push(if next() < 0.3 { 1.0 } else { 0.0 });
    }
    (x, t)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = if v.len() % 2 == 1 { v[v.len() / 2] } else { 0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2]) };
    (med, v[0], v[(v.len() * 9) / 10])
}

fn time_it(reps: usize, warm: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..warm {
        f();
    }
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        f();
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    stats(ts)
}

type LossFn = fn(&[f32], &[f32], &mut [f32]) -> f64;

fn loss_fn<M: Math>(name: &str) -> LossFn {
    match name {
        "bce" => bce::<M>,
        "focal" => focal::<M>,
        "dice" => dice::<M>,
        "tversky" => tversky::<M>,
        "combo" => combo::<M>,
        _ => panic!("unknown loss {name}"),
    }
}

fn arrays_moved(loss: &str) -> usize {
    match loss {
        "bce" | "focal" => 3,
        _ => 5,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| args.iter().position(|a| a == k).map(|i| args[i + 1].clone());
    let has = |k: &str| args.iter().any(|a| a == k);
    let logns: Vec<u32> = get("--logn").unwrap_or("20,24".into()).split(',').map(|s| s.parse().unwrap()).collect();
    let threads: usize = get("--threads").map(|s| s.parse().unwrap()).unwrap_or(2);
    let reps_arg: Option<usize> = get("--reps").map(|s| s.parse().unwrap());
    let math = get("--math").unwrap_or("fast".into());
    let losses: Vec<String> =
        get("--losses").unwrap_or("bce,focal,dice,tversky,combo".into()).split(',').map(String::from).collect();
    let alloc = has("--alloc");
    let tag = get("--tag").unwrap_or_else(|| {
        if cfg!(target_feature = "avx512f") {
            "native".into()
        } else if cfg!(target_feature = "avx2") {
            "avx2".into()
        } else {
            "x86-64".into()
        }
    });

    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        for &logn in &logns {
            let n = 1usize << logn;
            let reps = reps_arg.unwrap_or(if logn <= 20 { 300 } else { 40 });
            let (x, t) = inputs(n);
            let mut g = vec![0f32; n];

            if has("--stream") {
                let mut a = vec![1f32; n];
                let b = vec![2f32; n];
                let c = vec![3f32; n];
                let mut sink = 0.0;
                let r = time_it(reps, 5, || sink += k_read2(&b, &c));
                let r2 = time_it(reps, 5, || k_copy(&mut a, &b));
                let r3 = time_it(reps, 5, || k_triad(&mut a, &b, &c, 3.0));
                std::hint::black_box(sink);
                for (name, (med, min, p90), arrays) in [("read2", r, 2), ("copy", r2, 2), ("triad", r3, 3)] {
                    let gbs = (arrays * 4 * n) as f64 / (med * 1e-3) / 1e9;
                    println!(
                        "{{\"impl\":\"stream\",\"kernel\":\"{name}\",\"logn\":{logn},\"threads\":{threads},\"build\":\"{tag}\",\"median_ms\":{med:.4},\"min_ms\":{min:.4},\"p90_ms\":{p90:.4},\"reps\":{reps},\"gbs\":{gbs:.2}}}"
                    );
                }
            }
            if has("--no-loss") {
                continue;
            }
            let maths: Vec<&str> = if math == "both" { vec!["fast", "libm"] } else { vec![math.as_str()] };
            for m in &maths {
                for loss in &losses {
                    let f = if *m == "fast" { loss_fn::<Fast>(loss) } else { loss_fn::<Libm>(loss) };
                    let mut val = 0.0;
                    let (med, min, p90) = if alloc {
                        time_it(reps, 3, || {
                            let mut g2 = vec![0f32; n];
                            val = f(&x, &t, &mut g2);
                            std::hint::black_box(&g2);
                        })
                    } else {
                        time_it(reps, 3, || {
                            val = f(&x, &t, &mut g);
                        })
                    };
                    let mut extra = String::new();
                    if has("--check") {
                        let mut gc = vec![0f32; n];
                        let v = f(&x, &t, &mut gc);
                        let (rv, rg) = reference(loss, &x, &t);
                        let gmax = rg.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
                        let gerr = gc.iter().zip(&rg).fold(0.0f64, |a, (&c, &r)| a.max((c as f64 - r).abs()));
                        extra = format!(
                            ",\"ref_value\":{rv:.8},\"value_relerr\":{:.3e},\"grad_maxabs_err_rel_to_max\":{:.3e}",
                            ((v - rv) / rv).abs(),
                            gerr / gmax
                        );
                    }
                    let name = if alloc { format!("rust-limit-{m}-alloc") } else { format!("rust-limit-{m}") };
                    let gbs = (arrays_moved(loss) * 4 * n) as f64 / (med * 1e-3) / 1e9;
                    println!(
                        "{{\"impl\":\"{name}\",\"loss\":\"{loss}\",\"logn\":{logn},\"threads\":{threads},\"build\":\"{tag}\",\"median_ms\":{med:.4},\"min_ms\":{min:.4},\"p90_ms\":{p90:.4},\"reps\":{reps},\"value\":{val:.8},\"arrays\":{},\"eff_gbs\":{gbs:.2}{extra}}}",
                        arrays_moved(loss)
                    );
                }
            }
        }
    });
}
