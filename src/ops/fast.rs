#![allow(clippy::excessive_precision)]
//! Branch-free polynomial `exp`, `ln` and `ln_1p` for f32 and f64, written so LLVM vectorises
//! them inside block kernels (no libm calls, no data-dependent branches: selects only; no
//! `mul_add`, which is a libm call without FMA; rounding by the 1.5·2^p magic constant).
//! Special values follow IEEE: NaN propagates, exp(+inf) = inf, exp(-inf) = 0, ln(0) = -inf,
//! ln(x < 0) = NaN, ln(inf) = inf; denormal inputs and results are handled.
//! Error bounds are tested in `fast_tests.rs` against the f64/libm reference.

/// `a*b + c`: two roundings, or one fused multiply-add where `FMA` (the caller is compiled
/// with the `fma` target feature; elsewhere `mul_add` would be a slow library call).
pub trait MulAdd: Sized {
    fn mad<const FMA: bool>(self, b: Self, c: Self) -> Self;
}
impl MulAdd for f32 {
    #[inline(always)]
    fn mad<const FMA: bool>(self, b: f32, c: f32) -> f32 {
        if FMA {
            self.mul_add(b, c)
        } else {
            self * b + c
        }
    }
}
impl MulAdd for f64 {
    #[inline(always)]
    fn mad<const FMA: bool>(self, b: f64, c: f64) -> f64 {
        if FMA {
            self.mul_add(b, c)
        } else {
            self * b + c
        }
    }
}

// ---- f32 ------------------------------------------------------------------------------------

const LOG2E_F32: f32 = std::f32::consts::LOG2_E;
const LN2_HI_F32: f32 = 0.693_359_4; // ln 2 split: hi has few mantissa bits, so n*hi is exact
const LN2_LO_F32: f32 = -2.121_944_4e-4;
const MAGIC_F32: f32 = 12_582_912.0; // 1.5 * 2^23

/// e^x = p·2^n for f32 (Cephes coefficients on [-ln2/2, ln2/2]): (p, n) for a clamped `xc`.
#[inline(always)]
fn exp_core_f32<const FMA: bool>(xc: f32) -> (f32, i32) {
    let t = xc.mad::<FMA>(LOG2E_F32, MAGIC_F32);
    let n = t - MAGIC_F32;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = (-n).mad::<FMA>(LN2_LO_F32, (-n).mad::<FMA>(LN2_HI_F32, xc));
    let mut p = 1.987_569_1e-4f32;
    p = p.mad::<FMA>(r, 1.398_199_9e-3);
    p = p.mad::<FMA>(r, 8.333_452e-3);
    p = p.mad::<FMA>(r, 4.166_579_6e-2);
    p = p.mad::<FMA>(r, 1.666_666_5e-1);
    p = p.mad::<FMA>(r, 5.000_000_1e-1);
    // (p r² + r) + 1 as Cephes sums it, the first sum fused.
    ((p * r).mad::<FMA>(r, r) + 1.0, ni)
}

/// e^x for f32.
#[inline(always)]
pub fn exp_f32_v<const FMA: bool>(x: f32) -> f32 {
    let xc = x.clamp(-104.0, 89.0); // NaN stays NaN
    let (p, ni) = exp_core_f32::<FMA>(xc);
    // 2^n as two normal factors, so results in the denormal range round once.
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    p * s1 * s2
}

/// ln(f32::MIN_POSITIVE) = -126 ln 2.
const EXP_NONPOS_LO_F32: f32 = -87.336_544;

/// e^x for x <= 0 (or NaN), with results below the smallest normal flushed to 0: the
/// `exp(-|x|)` of the stable primitives, where a denormal `e` changes nothing that is kept
/// (1 + e = 1, e/(1 + e) is below every f32 gradient scale). No upper clamp and one scale
/// factor: cheaper than [`exp_f32_v`].
#[inline(always)]
pub fn exp_nonpos_f32_v<const FMA: bool>(x: f32) -> f32 {
    let xc = if x < EXP_NONPOS_LO_F32 {
        EXP_NONPOS_LO_F32
    } else {
        x
    }; // NaN stays NaN
    let (p, ni) = exp_core_f32::<FMA>(xc);
    let y = p * f32::from_bits(((ni + 127) as u32) << 23); // ni >= -126
                                                           // The flush by a bit mask, not a select: LLVM would otherwise move the polynomial into a
                                                           // branch and leave the loop unvectorised.
                                                           // `!(x < lo)` on purpose: true for NaN, which must pass through.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let keep = 0u32.wrapping_sub(u32::from(!(x < EXP_NONPOS_LO_F32))); // all ones, or 0
    f32::from_bits(y.to_bits() & keep)
}

/// Natural log for f32 (Cephes logf).
#[inline(always)]
pub fn ln_f32_v<const FMA: bool>(x: f32) -> f32 {
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x }; // 2^23: denormals become normal
    let bits = xs.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126 - if tiny { 23 } else { 0 };
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000); // [0.5, 1)
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    e -= i32::from(small);
    let f = if small { m + m - 1.0 } else { m - 1.0 };
    let r = ln_poly_f32_v::<FMA>(f, e as f32);
    let r = if x == f32::INFINITY { x } else { r };
    let r = if x == 0.0 { f32::NEG_INFINITY } else { r };
    if x < 0.0 || x.is_nan() {
        f32::NAN
    } else {
        r
    }
}

/// ln(1 + e) for e in [0, 1] (or NaN), the `log1p(exp(-|x|))` of the stable primitives: the
/// reduced argument comes from `e` itself — `e` when 1 + e <= √2, (e - 1)/2 (with exponent 1)
/// otherwise — so 1 + e is never rounded and a small `e` keeps every bit (no correction term,
/// no division). `_r` (= 1/(1 + e)) is for the f64 form's correction.
#[inline(always)]
pub fn ln_1p_unit_f32_v<const FMA: bool>(e: f32, _r: f32) -> f32 {
    // By bit arithmetic, not a select: LLVM would otherwise sink the select below the
    // polynomial and evaluate it twice.
    let big = 0u32.wrapping_sub(u32::from(e > std::f32::consts::SQRT_2 - 1.0)); // all ones if big
    let scale = f32::from_bits(0x3f80_0000 - (big & 0x0080_0000)); // 1 or 1/2
    let shift = f32::from_bits(big & 0xbf00_0000); // 0 or -1/2
    let ef = f32::from_bits(big & 0x3f80_0000); // 0 or 1
    ln_poly_f32_v::<FMA>(e.mad::<FMA>(scale, shift), ef)
}

/// ln((1 + f)·2^e) for f in [√½ - 1, √2 - 1] (Cephes logf polynomial).
#[inline(always)]
pub fn ln_poly_f32_v<const FMA: bool>(f: f32, e: f32) -> f32 {
    let z = f * f;
    let mut y = 7.037_683_6e-2f32;
    y = y.mad::<FMA>(f, -1.151_461e-1);
    y = y.mad::<FMA>(f, 1.167_699_9e-1);
    y = y.mad::<FMA>(f, -1.242_014_1e-1);
    y = y.mad::<FMA>(f, 1.424_932_3e-1);
    y = y.mad::<FMA>(f, -1.666_805_8e-1);
    y = y.mad::<FMA>(f, 2.000_071_4e-1);
    y = y.mad::<FMA>(f, -2.499_999_4e-1);
    y = y.mad::<FMA>(f, 3.333_333_1e-1);
    // Cephes' sums in its order, each product fused into its sum.
    let y = z.mad::<FMA>(-0.5, e.mad::<FMA>(LN2_LO_F32, y * f * z));
    e.mad::<FMA>(LN2_HI_F32, f + y)
}

/// ln(1 + e) for e in [0, 1] (or NaN) given r = 1/(1 + e): ln(u) of u = 1 + e in [1, 2] plus the
/// exact correction (e - (u - 1))/u of u's rounding (a NaN `e` propagates through both).
#[inline(always)]
pub fn ln_1p_unit_f64_v<const FMA: bool>(e: f64, r: f64) -> f64 {
    let u = 1.0 + e;
    // Bit arithmetic instead of a select, as in `ln_1p_unit_f32_v`.
    let big = 0u64.wrapping_sub(u64::from(u > std::f64::consts::SQRT_2));
    let scale = f64::from_bits(0x3ff0_0000_0000_0000 - (big & 0x0010_0000_0000_0000));
    let ef = f64::from_bits(big & 0x3ff0_0000_0000_0000);
    ln_series_f64_v::<FMA>(u * scale, ef) + (e - (u - 1.0)) * r
}

/// ln(m·2^e) for m in [√½, √2): 2 atanh(s), s = (m - 1)/(m + 1), |s²| <= 0.0295.
#[inline(always)]
pub fn ln_series_f64_v<const FMA: bool>(m: f64, ef: f64) -> f64 {
    let f = m - 1.0;
    let s = f / (m + 1.0);
    let z = s * s;
    let mut p = 2.0 / 25.0;
    p = p.mad::<FMA>(z, 2.0 / 23.0);
    p = p.mad::<FMA>(z, 2.0 / 21.0);
    p = p.mad::<FMA>(z, 2.0 / 19.0);
    p = p.mad::<FMA>(z, 2.0 / 17.0);
    p = p.mad::<FMA>(z, 2.0 / 15.0);
    p = p.mad::<FMA>(z, 2.0 / 13.0);
    p = p.mad::<FMA>(z, 2.0 / 11.0);
    p = p.mad::<FMA>(z, 2.0 / 9.0);
    p = p.mad::<FMA>(z, 2.0 / 7.0);
    p = p.mad::<FMA>(z, 2.0 / 5.0);
    p = p.mad::<FMA>(z, 2.0 / 3.0);
    // ln m = f - (f²/2 - s(f²/2 + z p)): the leading term stays exact
    let hfsq = 0.5 * f * f;
    let rr = s * (hfsq + z * p);
    ef * LN2_HI_F64 - ((hfsq - (rr + ef * LN2_LO_F64)) - f)
}

/// ln(1 + x) for f32: x·ln(u)/(u - 1) with u = 1 + x (exact correction of the rounding of u).
#[inline(always)]
pub fn ln_1p_f32_v<const FMA: bool>(x: f32) -> f32 {
    let u = 1.0 + x;
    let d = u - 1.0;
    let l = ln_f32_v::<FMA>(u);
    let r = if d == 0.0 { x } else { l * (x / d) };
    // u = inf: the ratio is inf/inf; ln(u) is right.
    if u == f32::INFINITY {
        l
    } else {
        r
    }
}

// ---- f64 ------------------------------------------------------------------------------------

const LOG2E_F64: f64 = std::f64::consts::LOG2_E;
const LN2_HI_F64: f64 = 6.931_471_803_691_238_2e-1;
const LN2_LO_F64: f64 = 1.908_214_929_270_587_7e-10;
const MAGIC_F64: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52

/// e^x for f64 (degree-13 Taylor polynomial on [-ln2/2, ln2/2], error below 1e-17 relative).
#[inline(always)]
pub fn exp_f64_v<const FMA: bool>(x: f64) -> f64 {
    let xc = x.clamp(-746.0, 710.0);
    let (p, ni) = exp_core_f64::<FMA>(xc);
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f64::from_bits(((n1 + 1023) as u64) << 52);
    let s2 = f64::from_bits(((n2 + 1023) as u64) << 52);
    p * s1 * s2
}

/// e^x = p·2^n for f64: (p, n) for a clamped `xc`.
#[inline(always)]
fn exp_core_f64<const FMA: bool>(xc: f64) -> (f64, i32) {
    let t = xc * LOG2E_F64 + MAGIC_F64;
    let n = t - MAGIC_F64;
    let ni = (t.to_bits() as i64).wrapping_sub(0x4338_0000_0000_0000) as i32;
    let r = (-n).mad::<FMA>(LN2_LO_F64, (-n).mad::<FMA>(LN2_HI_F64, xc));
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    p = p.mad::<FMA>(r, 1.0 / 479_001_600.0);
    p = p.mad::<FMA>(r, 1.0 / 39_916_800.0);
    p = p.mad::<FMA>(r, 1.0 / 3_628_800.0);
    p = p.mad::<FMA>(r, 1.0 / 362_880.0);
    p = p.mad::<FMA>(r, 1.0 / 40_320.0);
    p = p.mad::<FMA>(r, 1.0 / 5_040.0);
    p = p.mad::<FMA>(r, 1.0 / 720.0);
    p = p.mad::<FMA>(r, 1.0 / 120.0);
    p = p.mad::<FMA>(r, 1.0 / 24.0);
    p = p.mad::<FMA>(r, 1.0 / 6.0);
    p = p.mad::<FMA>(r, 0.5);
    (p * r * r + r + 1.0, ni)
}

/// ln(f64::MIN_POSITIVE) = -1022 ln 2.
const EXP_NONPOS_LO_F64: f64 = -708.396_418_532_264_1;

/// e^x for x <= 0 (or NaN), results below the smallest normal flushed to 0 (as
/// [`exp_nonpos_f32_v`]).
#[inline(always)]
pub fn exp_nonpos_f64_v<const FMA: bool>(x: f64) -> f64 {
    let xc = if x < EXP_NONPOS_LO_F64 {
        EXP_NONPOS_LO_F64
    } else {
        x
    }; // NaN stays NaN
    let (p, ni) = exp_core_f64::<FMA>(xc);
    let y = p * f64::from_bits(((ni + 1023) as u64) << 52); // ni >= -1022
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let keep = 0u64.wrapping_sub(u64::from(!(x < EXP_NONPOS_LO_F64))); // as in the f32 form
    f64::from_bits(y.to_bits() & keep)
}

/// Natural log for f64: ln(m) = 2 atanh(s), s = (m - 1)/(m + 1), m in [√½, √2).
#[inline(always)]
pub fn ln_f64_v<const FMA: bool>(x: f64) -> f64 {
    let tiny = x < f64::MIN_POSITIVE;
    let xs = if tiny {
        x * 18_014_398_509_481_984.0
    } else {
        x
    }; // 2^54
    let bits = xs.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023 - if tiny { 54 } else { 0 };
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000); // [1, 2)
    let big = m > std::f64::consts::SQRT_2;
    e += i64::from(big);
    let m = if big { m * 0.5 } else { m };
    let r = ln_series_f64_v::<FMA>(m, e as f64);
    let r = if x == f64::INFINITY { x } else { r };
    let r = if x == 0.0 { f64::NEG_INFINITY } else { r };
    if x < 0.0 || x.is_nan() {
        f64::NAN
    } else {
        r
    }
}

/// ln(1 + x) for f64, as [`ln_1p_f32`].
#[inline(always)]
pub fn ln_1p_f64_v<const FMA: bool>(x: f64) -> f64 {
    let u = 1.0 + x;
    let d = u - 1.0;
    let l = ln_f64_v::<FMA>(u);
    let r = if d == 0.0 { x } else { l * (x / d) };
    if u == f64::INFINITY {
        l
    } else {
        r
    }
}

// ---- plain entry points (no FMA: identical bits on every ISA) and FMA ones -----------------
// Scalar wrappers for the accuracy tests (`fast_tests.rs`); the kernels call the `_v` forms.

#[cfg(test)]
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    exp_f32_v::<false>(x)
}
#[cfg(test)]
#[inline(always)]
pub fn exp_f32_fma(x: f32) -> f32 {
    exp_f32_v::<true>(x)
}

#[cfg(test)]
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    ln_f32_v::<false>(x)
}
#[cfg(test)]
#[inline(always)]
pub fn ln_f32_fma(x: f32) -> f32 {
    ln_f32_v::<true>(x)
}

#[cfg(test)]
#[inline(always)]
pub fn ln_1p_unit_f32(e: f32) -> f32 {
    ln_1p_unit_f32_v::<false>(e, 1.0 / (1.0 + e))
}
#[cfg(test)]
#[inline(always)]
pub fn ln_1p_unit_f32_fma(e: f32) -> f32 {
    ln_1p_unit_f32_v::<true>(e, 1.0 / (1.0 + e))
}

#[cfg(test)]
#[inline(always)]
pub fn ln_1p_f32(x: f32) -> f32 {
    ln_1p_f32_v::<false>(x)
}
#[cfg(test)]
#[inline(always)]
pub fn ln_1p_f32_fma(x: f32) -> f32 {
    ln_1p_f32_v::<true>(x)
}

#[cfg(test)]
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    exp_f64_v::<false>(x)
}
#[cfg(test)]
#[inline(always)]
pub fn exp_f64_fma(x: f64) -> f64 {
    exp_f64_v::<true>(x)
}

#[cfg(test)]
#[inline(always)]
pub fn ln_f64(x: f64) -> f64 {
    ln_f64_v::<false>(x)
}
#[cfg(test)]
#[inline(always)]
pub fn ln_f64_fma(x: f64) -> f64 {
    ln_f64_v::<true>(x)
}

#[cfg(test)]
#[inline(always)]
pub fn ln_1p_unit_f64(e: f64) -> f64 {
    ln_1p_unit_f64_v::<false>(e, 1.0 / (1.0 + e))
}
#[cfg(test)]
#[inline(always)]
pub fn ln_1p_unit_f64_fma(e: f64) -> f64 {
    ln_1p_unit_f64_v::<true>(e, 1.0 / (1.0 + e))
}

#[cfg(test)]
#[inline(always)]
pub fn ln_1p_f64(x: f64) -> f64 {
    ln_1p_f64_v::<false>(x)
}
#[cfg(test)]
#[inline(always)]
pub fn ln_1p_f64_fma(x: f64) -> f64 {
    ln_1p_f64_v::<true>(x)
}
