//! Scalar numerics shared by the op table's kernels: the [`Real`] trait over `f32`/`f64` and the
//! numerically stable primitives (`softplus`, `sigmoid`, `log_sigmoid`). Pure functions only.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::ops::OpDef;

/// The element types the engine evaluates in.
pub trait Real:
    Copy
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
    + 'static
{
    const NAME: &'static str;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln_1p(self) -> Self;
    fn abs(self) -> Self;
    fn maxr(self, o: Self) -> Self;
    fn is_finite(self) -> bool;
    /// The op's elementwise kernel at this precision.
    fn kernel(def: &OpDef) -> fn(&[Self]) -> Self;
}

macro_rules! impl_real {
    ($t:ty, $field:ident, $name:literal) => {
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
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn maxr(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn kernel(def: &OpDef) -> fn(&[Self]) -> Self {
                def.$field
            }
        }
    };
}
impl_real!(f64, f64, "f64");
impl_real!(f32, f32, "f32");

/// `log(1 + exp(x))`, exact for all x (no linear cut-over).
#[inline]
pub fn softplus<T: Real>(x: T) -> T {
    x.maxr(T::from_f64(0.0)) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + exp(-x))`, never forming `exp` of a large positive number.
#[inline]
pub fn sigmoid<T: Real>(x: T) -> T {
    let one = T::from_f64(1.0);
    if x >= T::from_f64(0.0) {
        one / (one + (-x).exp())
    } else {
        let e = x.exp();
        e / (one + e)
    }
}

/// `log(sigmoid(x)) = -softplus(-x)`.
#[inline]
pub fn log_sigmoid<T: Real>(x: T) -> T {
    -softplus(-x)
}

/// 1 where the condition value is nonzero (true), else 0.
#[inline]
pub fn truth<T: Real>(b: bool) -> T {
    T::from_f64(if b { 1.0 } else { 0.0 })
}

#[inline]
pub fn nonzero<T: Real>(x: T) -> bool {
    x != T::from_f64(0.0)
}
