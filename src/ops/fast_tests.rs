//! Error bounds of the vectorisable exp/ln/ln_1p (src/ops/fast.rs) against the reference: for
//! f32 the correctly rounded value (computed in f64 with libm, then rounded), for f64 libm itself.
//! Sweeps the whole range (denormals, huge values), plus inf, NaN, zeros and negatives; each
//! function in both variants (plain, and with fused multiply-adds).

use crate::ops::fast::*;

fn ulps32(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() || a == b {
        return 0;
    }
    let o = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    (o(a) - o(b)).unsigned_abs()
}

fn ulps64(a: f64, b: f64) -> u64 {
    if a.is_nan() && b.is_nan() || a == b {
        return 0;
    }
    let o = |x: f64| {
        let i = x.to_bits() as i64;
        if i < 0 {
            i128::from(i64::MIN) - i128::from(i)
        } else {
            i128::from(i)
        }
    };
    (o(a) - o(b)).unsigned_abs() as u64
}

/// Every 97th f32 bit pattern in [lo, hi] (positive patterns), both signs.
fn sweep32() -> impl Iterator<Item = f32> {
    (0u32..0x7f80_0000)
        .step_by(97)
        .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
}

fn sweep64() -> impl Iterator<Item = f64> {
    (0u64..0x7ff0_0000_0000_0000)
        .step_by(0x0000_1357_9bdf_0001)
        .flat_map(|b| [f64::from_bits(b), -f64::from_bits(b)])
}

const SPECIALS32: &[f32] = &[
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    f32::MIN_POSITIVE,
    1e-45,
    f32::MAX,
    1.0,
    -1.0,
    88.72,
    88.73,
    -87.3,
    -103.9,
    -104.0,
    1e-8,
    -1e-8,
];
const SPECIALS64: &[f64] = &[
    0.0,
    -0.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    f64::MIN_POSITIVE,
    5e-324,
    f64::MAX,
    1.0,
    -1.0,
    709.78,
    709.79,
    -708.4,
    -745.1,
    -746.0,
    1e-17,
    -1e-17,
];

#[test]
fn exp_f32_within_2_ulp() {
    let mut worst = 0;
    for x in sweep32().chain(SPECIALS32.iter().copied()) {
        let want = ((x as f64).exp()) as f32;
        for (variant, got) in [("", exp_f32(x)), ("_fma", exp_f32_fma(x))] {
            let u = ulps32(got, want);
            assert!(
                u <= 2,
                "exp_f32{variant}({x:e}) = {got:e}, want {want:e} ({u} ulp)"
            );
            worst = worst.max(u);
        }
    }
    println!("exp_f32 worst {worst} ulp");
}

#[test]
fn ln_f32_within_2_ulp() {
    for x in sweep32().chain(SPECIALS32.iter().copied()) {
        let want = ((x as f64).ln()) as f32;
        for got in [ln_f32(x), ln_f32_fma(x)] {
            assert!(
                ulps32(got, want) <= 2,
                "ln_f32({x:e}) = {got:e}, want {want:e}"
            );
        }
    }
}

#[test]
fn ln_1p_f32_within_2_ulp() {
    for x in sweep32().chain(SPECIALS32.iter().copied()) {
        let want = ((x as f64).ln_1p()) as f32;
        for got in [ln_1p_f32(x), ln_1p_f32_fma(x)] {
            assert!(
                ulps32(got, want) <= 2,
                "ln_1p_f32({x:e}) = {got:e}, want {want:e}"
            );
        }
    }
}

#[test]
fn exp_f64_within_2_ulp_of_libm() {
    for x in sweep64().chain(SPECIALS64.iter().copied()) {
        let want = x.exp();
        for got in [exp_f64(x), exp_f64_fma(x)] {
            assert!(
                ulps64(got, want) <= 2,
                "exp_f64({x:e}) = {got:e}, want {want:e}"
            );
        }
    }
}

#[test]
fn ln_f64_within_2_ulp_of_libm() {
    for x in sweep64().chain(SPECIALS64.iter().copied()) {
        let want = x.ln();
        for got in [ln_f64(x), ln_f64_fma(x)] {
            assert!(
                ulps64(got, want) <= 2,
                "ln_f64({x:e}) = {got:e}, want {want:e}"
            );
        }
    }
}

#[test]
fn ln_1p_f64_within_2_ulp_of_libm() {
    for x in sweep64().chain(SPECIALS64.iter().copied()) {
        let want = x.ln_1p();
        for got in [ln_1p_f64(x), ln_1p_f64_fma(x)] {
            assert!(
                ulps64(got, want) <= 2,
                "ln_1p_f64({x:e}) = {got:e}, want {want:e}"
            );
        }
    }
}

/// `ln(1 + e)` on [0, 1] (the stable primitives' log1p(exp(-|x|))): within 2 ulp of the correctly
/// rounded value across the interval, at the √2 - 1 switch of the reduced argument, and for small
/// `e` down to the smallest normal (where a rounded 1 + e would lose every bit).
#[test]
fn ln_1p_on_0_1_within_2_ulp() {
    let grid = (0..=1_000_000u32).map(|k| k as f64 / 1_000_000.0);
    let switch = (0..2000).map(|k| std::f64::consts::SQRT_2 - 1.0 + (k as f64 - 1000.0) * 1e-9);
    let small = (0..2000).map(|k| 2f64.powf(-(k as f64) * 126.0 / 2000.0) * 1.234_567);
    let mut checked = 0;
    for e in grid
        .chain(switch)
        .chain(small)
        .filter(|e| (0.0..=1.0).contains(e))
    {
        let e32 = e as f32;
        let want = ((e32 as f64).ln_1p()) as f32;
        for got in [ln_1p_unit_f32(e32), ln_1p_unit_f32_fma(e32)] {
            assert!(
                ulps32(got, want) <= 2,
                "ln_1p_unit_f32({e32:e}) = {got:e}, want {want:e}"
            );
        }
        for got in [ln_1p_unit_f64(e), ln_1p_unit_f64_fma(e)] {
            assert!(
                ulps64(got, e.ln_1p()) <= 2,
                "ln_1p_unit_f64({e:e}) = {got:e}, want {:e}",
                e.ln_1p()
            );
        }
        checked += 1;
    }
    assert!(checked > 1_003_000, "{checked} points");
    assert!(ln_1p_unit_f32(f32::NAN).is_nan() && ln_1p_unit_f64(f64::NAN).is_nan());
}

/// `exp_nonpos`: within 2 ulp of the correctly rounded e^x wherever that is normal (x ≥
/// ln(MIN_POSITIVE)), 0 below, NaN for NaN, 1 at zero; plain and fused variants, f32 and f64.
#[test]
fn exp_nonpos_within_2_ulp_and_flushes_below_the_smallest_normal() {
    let mut checked = 0;
    for x in sweep32().chain(SPECIALS32.iter().copied()) {
        if x > 0.0 {
            continue;
        }
        let exact = (x as f64).exp();
        for got in [exp_nonpos_f32_v::<false>(x), exp_nonpos_f32_v::<true>(x)] {
            if x.is_nan() {
                assert!(got.is_nan(), "exp_nonpos_f32(NaN) = {got:e}");
            } else if exact < f32::MIN_POSITIVE as f64 {
                assert!(
                    got == 0.0,
                    "exp_nonpos_f32({x:e}) = {got:e}, want 0 (flushed)"
                );
            } else {
                let u = ulps32(got, exact as f32);
                assert!(
                    u <= 2,
                    "exp_nonpos_f32({x:e}) = {got:e}, want {exact:e} ({u} ulp)"
                );
                checked += 1;
            }
        }
    }
    for x in sweep64().chain(SPECIALS64.iter().copied()) {
        if x > 0.0 {
            continue;
        }
        let want = x.exp();
        for got in [exp_nonpos_f64_v::<false>(x), exp_nonpos_f64_v::<true>(x)] {
            if x.is_nan() {
                assert!(got.is_nan(), "exp_nonpos_f64(NaN) = {got:e}");
            } else if want < f64::MIN_POSITIVE {
                assert!(
                    got == 0.0,
                    "exp_nonpos_f64({x:e}) = {got:e}, want 0 (flushed)"
                );
            } else {
                let u = ulps64(got, want);
                assert!(
                    u <= 2,
                    "exp_nonpos_f64({x:e}) = {got:e}, want {want:e} ({u} ulp)"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(exp_nonpos_f32_v::<true>(0.0), 1.0);
    assert_eq!(exp_nonpos_f32_v::<true>(f32::NEG_INFINITY), 0.0);
    assert!(checked > 1_000_000, "checked {checked}");
}
