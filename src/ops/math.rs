//! Scalar numerics shared by the op table's kernels: the [`Real`] trait over `f32`/`f64` and the
//! numerically stable primitives (`softplus`, `sigmoid`, `log_sigmoid`). Pure functions only.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::ops::OpDef;

/// The element types the engine evaluates in: `f32` and `f64`, and no others (the trait is
/// sealed: its kernel hooks live in the crate-private [`Element`]).
#[allow(private_bounds)]
pub trait Real:
    Element
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + Send
    + Sync
    + Debug
    + Default
    + std::fmt::Display
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn is_finite(self) -> bool;
}

/// A typed window kernel at both precisions (`SpatialKernel::Typed`'s pair).
pub(crate) type TypedPair = (
    fn(&[f64], &[usize], &mut [f64]),
    fn(&[f32], &[usize], &mut [f32]),
);

/// The kernel hooks of an element type: the math the executors and the op table's kernels
/// call. Crate-private (not reachable from outside, so [`Real`] cannot be implemented or its
/// hooks called by another crate).
pub(crate) trait Element: Copy + 'static {
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn exp_m1(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn cosh(self) -> Self;
    fn sinh(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn abs(self) -> Self;
    /// Vectorisable polynomial versions (src/ops/fast.rs); `FMA` fuses their multiply-adds.
    fn fast_exp<const FMA: bool>(self) -> Self;
    /// e^x for x <= 0, results below the smallest normal flushed to 0 (cheaper).
    fn fast_exp_nonpos<const FMA: bool>(self) -> Self;
    fn fast_ln<const FMA: bool>(self) -> Self;
    fn fast_ln_1p<const FMA: bool>(self) -> Self;
    /// ln(1 + self) for self in [0, 1] only, given r = 1/(1 + self) (no special cases).
    fn fast_ln_1p_unit<const FMA: bool>(self, r: Self) -> Self;
    fn maxr(self, o: Self) -> Self;
    /// Round half away from zero, branch-free (no libm call without SSE4.1).
    fn round_(self) -> Self;
    /// The op's elementwise kernel at this precision.
    fn kernel(def: &OpDef) -> fn(&[Self]) -> Self;
    /// The op's block kernel at this precision (vectorisable math; `FMA` as for `fast_exp`).
    fn block_kernel<const FMA: bool>(
        op: crate::ops::Op,
        out: &mut [Self],
        a: &[Self],
        b: &[Self],
        c: &[Self],
    );
    /// The op's kernel for one lane (the body the block kernel loops over).
    fn lane_kernel<const FMA: bool>(op: crate::ops::Op, a: Self, b: Self, c: Self) -> Self;
    /// Runs a typed window kernel (the distance transforms) at this precision: the `f64` or
    /// the `f32` one of its table entry's pair.
    fn typed_kernel(k: TypedPair, x: &[Self], dims: &[usize], out: &mut [Self]);
}

/// The f64 or the f32 one of two expressions, by the type's name.
macro_rules! pick {
    (f64, $a:expr, $b:expr) => {
        $a
    };
    (f32, $a:expr, $b:expr) => {
        $b
    };
}

macro_rules! impl_real {
    ($t:ty, $field:ident, $name:literal, $fexp:ident, $fexpn:ident, $fln:ident, $fln1p:ident, $fln1pu:ident, $blk:ident, $lane:ident) => {
        impl Real for $t {
            const NAME: &'static str = $name;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
        impl Element for $t {
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn exp_m1(self) -> Self {
                <$t>::exp_m1(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn cosh(self) -> Self {
                <$t>::cosh(self)
            }
            #[inline]
            fn sinh(self) -> Self {
                <$t>::sinh(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn fast_exp<const FMA: bool>(self) -> Self {
                crate::ops::fast::$fexp::<FMA>(self)
            }
            #[inline(always)]
            fn fast_exp_nonpos<const FMA: bool>(self) -> Self {
                crate::ops::fast::$fexpn::<FMA>(self)
            }
            #[inline(always)]
            fn fast_ln<const FMA: bool>(self) -> Self {
                crate::ops::fast::$fln::<FMA>(self)
            }
            #[inline(always)]
            fn fast_ln_1p<const FMA: bool>(self) -> Self {
                crate::ops::fast::$fln1p::<FMA>(self)
            }
            #[inline(always)]
            fn fast_ln_1p_unit<const FMA: bool>(self, r: Self) -> Self {
                crate::ops::fast::$fln1pu::<FMA>(self, r)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn maxr(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline(always)]
            fn round_(self) -> Self {
                // Values beyond 2^(mantissa bits) are already integral.
                let big: $t = 1.0 / <$t>::EPSILON;
                let a = self.abs();
                let r = (a + big) - big;
                let r = if r - a > 0.5 {
                    r - 1.0
                } else if a - r >= 0.5 {
                    r + 1.0
                } else {
                    r
                };
                let r = if a >= big { a } else { r };
                if self < 0.0 {
                    -r
                } else {
                    r
                }
            }
            fn kernel(def: &OpDef) -> fn(&[Self]) -> Self {
                def.$field
            }
            #[inline(always)]
            fn block_kernel<const FMA: bool>(
                op: crate::ops::Op,
                out: &mut [Self],
                a: &[Self],
                b: &[Self],
                c: &[Self],
            ) {
                crate::ops::$blk::<FMA>(op, out, a, b, c)
            }
            #[inline(always)]
            fn lane_kernel<const FMA: bool>(op: crate::ops::Op, a: Self, b: Self, c: Self) -> Self {
                crate::ops::$lane::<FMA>(op, a, b, c)
            }
            fn typed_kernel(k: TypedPair, x: &[Self], dims: &[usize], out: &mut [Self]) {
                pick!($field, k.0, k.1)(x, dims, out)
            }
        }
    };
}
impl_real!(
    f64,
    f64,
    "f64",
    exp_f64_v,
    exp_nonpos_f64_v,
    ln_f64_v,
    ln_1p_f64_v,
    ln_1p_unit_f64_v,
    block_kernel_f64,
    lane_kernel_f64
);
impl_real!(
    f32,
    f32,
    "f32",
    exp_f32_v,
    exp_nonpos_f32_v,
    ln_f32_v,
    ln_1p_f32_v,
    ln_1p_unit_f32_v,
    block_kernel_f32,
    lane_kernel_f32
);

/// The stable compound primitives, written once over a module's `exp`/`log1p`.
macro_rules! stable_primitives {
    () => {
        /// `log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))`, exact for every x.
        #[inline(always)]
        pub fn softplus<T: Real>(x: T) -> T {
            x.maxr(T::from_f64(0.0)) + log1p(exp(-x.abs()))
        }
        /// `1/(1 + exp(-x))` from `e = exp(-|x|)`: never overflows, no branch.
        #[inline(always)]
        pub fn sigmoid<T: Real>(x: T) -> T {
            let e = exp(-x.abs());
            let one = T::from_f64(1.0);
            let num = if x >= T::from_f64(0.0) { one } else { e };
            num / (one + e)
        }
        /// `log(sigmoid(x)) = -softplus(-x)`.
        #[inline(always)]
        pub fn log_sigmoid<T: Real>(x: T) -> T {
            -softplus(-x)
        }
        /// 1 where the condition value is nonzero (true), else 0.
        #[inline(always)]
        pub fn truth<T: Real>(b: bool) -> T {
            T::from_f64(if b { 1.0 } else { 0.0 })
        }
        #[inline(always)]
        pub fn nonzero<T: Real>(x: T) -> bool {
            x != T::from_f64(0.0)
        }
        #[inline(always)]
        pub fn sqrt<T: Real>(x: T) -> T {
            x.sqrt()
        }
        #[inline(always)]
        pub fn abs<T: Real>(x: T) -> T {
            x.abs()
        }
        #[inline(always)]
        pub fn tanh<T: Real>(x: T) -> T {
            x.tanh()
        }
        #[inline(always)]
        pub fn cosh<T: Real>(x: T) -> T {
            x.cosh()
        }
        #[inline(always)]
        pub fn sinh<T: Real>(x: T) -> T {
            x.sinh()
        }
        #[inline(always)]
        pub fn expm1<T: Real>(x: T) -> T {
            x.exp_m1()
        }
    };
}

/// The f64/f32 reference semantics: libm. The oracle for every kernel.
pub mod reference {
    use super::Real;
    #[inline(always)]
    pub fn exp<T: Real>(x: T) -> T {
        x.exp()
    }
    #[inline(always)]
    pub fn ln<T: Real>(x: T) -> T {
        x.ln()
    }
    #[inline(always)]
    pub fn log1p<T: Real>(x: T) -> T {
        x.ln_1p()
    }
    #[inline(always)]
    pub fn powf<T: Real>(a: T, b: T) -> T {
        a.powf(b)
    }
    stable_primitives!();
}

/// The block-kernel math of one module: the vectorisable polynomials of `fast.rs` (≤ 2 ulp from
/// the reference), with (`fast_fma`) or without (`fast`) fused multiply-adds.
macro_rules! fast_math_module {
    ($m:ident, $fma:literal, $doc:literal) => {
        #[doc = $doc]
        pub mod $m {
            use super::Real;
            #[inline(always)]
            pub fn exp<T: Real>(x: T) -> T {
                x.fast_exp::<$fma>()
            }
            #[inline(always)]
            pub fn ln<T: Real>(x: T) -> T {
                x.fast_ln::<$fma>()
            }
            #[inline(always)]
            pub fn log1p<T: Real>(x: T) -> T {
                x.fast_ln_1p::<$fma>()
            }
            /// a^b = exp(b ln|a|), with the sign of a negative base for integral b, NaN for a
            /// non-integral b, and a^0 = 1^b = 1.
            #[inline(always)]
            pub fn powf<T: Real>(a: T, b: T) -> T {
                let zero = T::from_f64(0.0);
                let r = exp(b * ln(a.abs()));
                let half = b * T::from_f64(0.5);
                let integral = b == b.round_();
                let odd = integral && half != half.round_();
                let r = if a < zero {
                    if !integral {
                        T::from_f64(f64::NAN)
                    } else if odd {
                        -r
                    } else {
                        r
                    }
                } else {
                    r
                };
                // IEEE: a^0 = 1 and 1^b = 1 for every b (even inf and NaN, where b ln a is NaN).
                if b == zero || a == T::from_f64(1.0) {
                    T::from_f64(1.0)
                } else {
                    r
                }
            }
            stable_primitives!();
        }
    };
}
fast_math_module!(
    fast,
    false,
    "Block-kernel math without FMA: the same bits on every ISA."
);
fast_math_module!(
    fast_fma,
    true,
    "Block-kernel math with fused multiply-adds (for code compiled with the `fma` feature)."
);
