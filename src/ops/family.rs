//! The family kernels of the stable primitives: `sigmoid`, `softplus` and `log_sigmoid` of one
//! `x` (and of `-x`) computed together from one `exp(-|x|)`, one division and a short `ln`. The
//! op table names each member's slot (`OpDef::family`); the VM's `Family` instruction runs one
//! of these kernels per block. Slots: 0 sigmoid(x), 1 sigmoid(-x), 2 softplus(x),
//! 3 softplus(-x), 4 log_sigmoid(x), 5 log_sigmoid(-x).
//!
//! In: a block of `x`. Out: the members' blocks. Never here: choosing which members a pass needs.

use crate::ops::math::Real;

/// sigmoid(x), sigmoid(-x) from one `e = exp(-|x|)` and one division ([`family_element`]'s
/// first two members; the softplus members it does not store are never computed).
#[inline(always)]
pub fn family_sig<T: Real, const FMA: bool>(x: &[T], sp: &mut [T], sn: &mut [T]) {
    let n = x.len();
    let (sp, sn) = (&mut sp[..n], &mut sn[..n]);
    for i in 0..n {
        [sp[i], sn[i], _, _] = family_element::<T, FMA>(x[i]);
    }
}

/// The family members of one element: [sigmoid(x), sigmoid(-x), softplus(x), softplus(-x)],
/// from one `exp(-|x|)`, one division and a short `ln` (log_sigmoid(±x) = -softplus(∓x)).
#[inline(always)]
pub fn family_element<T: Real, const FMA: bool>(x: T) -> [T; 4] {
    let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
    let e = (-x.abs()).fast_exp_nonpos::<FMA>();
    let r = one / (one + e);
    let er = e * r;
    let l = e.fast_ln_1p_unit::<FMA>(r);
    [
        if x >= zero { r } else { er },
        if x <= zero { r } else { er },
        x.maxr(zero) + l,
        (-x).maxr(zero) + l,
    ]
}

/// softplus(±x), log_sigmoid(±x).
#[inline(always)]
pub fn family_softplus<T: Real, const FMA: bool>(x: &[T], o: [&mut [T]; 4]) {
    let n = x.len();
    let [a, b, c, d] = o;
    let (a, b, c, d) = (&mut a[..n], &mut b[..n], &mut c[..n], &mut d[..n]);
    for i in 0..n {
        let [_, _, pos, neg] = family_element::<T, FMA>(x[i]);
        a[i] = pos;
        b[i] = neg;
        c[i] = -neg;
        d[i] = -pos;
    }
}

/// sigmoid(±x), softplus(±x).
#[inline(always)]
pub fn family_sig_softplus<T: Real, const FMA: bool>(x: &[T], o: [&mut [T]; 4]) {
    let n = x.len();
    let [s0, s1, s2, s3] = o;
    let (s0, s1, s2, s3) = (&mut s0[..n], &mut s1[..n], &mut s2[..n], &mut s3[..n]);
    for i in 0..n {
        [s0[i], s1[i], s2[i], s3[i]] = family_element::<T, FMA>(x[i]);
    }
}

/// All six family members.
#[inline(always)]
pub fn family_both<T: Real, const FMA: bool>(x: &[T], o: [&mut [T]; 6]) {
    let n = x.len();
    let [s0, s1, s2, s3, s4, s5] = o;
    let (s0, s1, s2, s3, s4, s5) = (
        &mut s0[..n],
        &mut s1[..n],
        &mut s2[..n],
        &mut s3[..n],
        &mut s4[..n],
        &mut s5[..n],
    );
    for i in 0..n {
        let [a, b, pos, neg] = family_element::<T, FMA>(x[i]);
        [s0[i], s1[i], s2[i], s3[i], s4[i], s5[i]] = [a, b, pos, neg, -neg, -pos];
    }
}
