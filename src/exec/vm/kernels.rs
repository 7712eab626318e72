//! Block helpers of the chunk loop: NaN probes, streamed (non-temporal) copies, block sums and
//! dot products widened to f64 in a fixed lane order, register-file and partial layout.
//!
//! In: blocks. Out: numbers or written blocks. Never here: bytecode dispatch.

use super::*;

/// Partial slots per chunk: the slots used, rounded up to a cache line and one line more, so
/// that no cache line holds partials of two chunks (which two threads might be updating).
pub(super) fn partial_stride(used: usize) -> usize {
    used.max(1).next_multiple_of(8) + 8
}

/// The registers inside a register file's allocation: cache-line aligned (no vector load or store
/// of a register straddles two lines) with at least a line of padding on either side (no line
/// shared with another thread's registers: false sharing would bounce it between the cores).
pub(super) fn register_file<T: Real>(v: &mut [T]) -> &mut [T] {
    let size = std::mem::size_of::<T>();
    let skip = v.as_ptr().align_offset(64).min(64 / size) + 64 / size;
    let len = v.len() - REGFILE_PAD / size;
    &mut v[skip..skip + len]
}

/// 0 if every element is finite, NaN otherwise (x - x is 0 for finite x, NaN for NaN and ±inf);
/// summed in T lanes since only the NaN matters.
#[inline(always)]
#[allow(clippy::eq_op)]
pub(super) fn nan_probe<T: Real>(x: &[T]) -> f64 {
    let zero = T::from_f64(0.0);
    let mut acc = [zero; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        let c: &[T; 16] = c.try_into().expect("chunk of 16");
        for j in 0..16 {
            acc[j] = acc[j] + (c[j] - c[j]);
        }
    }
    for (j, v) in rest.iter().enumerate() {
        acc[j] = acc[j] + (*v - *v);
    }
    acc.iter().fold(0.0, |s, v| s + v.to_f64())
}

/// `dst.copy_from_slice(src)` with non-temporal stores for the 16-byte-aligned middle; the
/// caller fences before another thread reads the data.
#[inline(always)]
pub(super) fn stream_copy<T: Real>(dst: &mut [T], src: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let size = std::mem::size_of::<T>();
        let head = dst.as_ptr().align_offset(16);
        if head <= dst.len() {
            let per = 16 / size;
            let body = (dst.len() - head) / per * per;
            dst[..head].copy_from_slice(&src[..head]);
            for k in (head..head + body).step_by(per) {
                // SAFETY: dst[k..k + per] is in bounds and 16-byte aligned; src[k..k + per] is in
                // bounds (loaded unaligned).
                unsafe {
                    let v = _mm_loadu_si128(src.as_ptr().add(k) as *const __m128i);
                    _mm_stream_si128(dst.as_mut_ptr().add(k) as *mut __m128i, v);
                }
            }
            dst[head + body..].copy_from_slice(&src[head + body..]);
            return;
        }
    }
    dst.copy_from_slice(src);
}

/// `block_sum` of the products `a[i] * b[i]` (rounded to T, as a `Map` would store them).
#[inline(always)]
pub(super) fn block_dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    let b = &b[..a.len()];
    let mut acc = [T::from_f64(0.0); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let x: &[T; LANES] = x.try_into().expect("16 lanes");
        let y: &[T; LANES] = y.try_into().expect("16 lanes");
        for j in 0..LANES {
            acc[j] = acc[j] + x[j] * y[j];
        }
    }
    for (j, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[j] = acc[j] + *x * *y;
    }
    lanes_total(&acc)
}

/// The sum of a block: 16 lanes in T, element `i` into lane `i % 16` in order (the remainder
/// of fewer than 16 into lanes 0..), then the lanes widened to f64 and added by a fixed tree —
/// the same bits on every ISA. The lanes stay in T so the loop runs at T's full vector width
/// (a block has at most `BLOCK / 16` = 32 values per lane, so f32 lanes lose nothing that
/// matters); native kernels accumulate alike.
#[inline(always)]
pub(super) fn block_sum<T: Real>(x: &[T]) -> f64 {
    let mut acc = [T::from_f64(0.0); LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        let c: &[T; LANES] = c.try_into().expect("16 lanes");
        for j in 0..LANES {
            acc[j] = acc[j] + c[j];
        }
    }
    for (j, v) in rest.iter().enumerate() {
        acc[j] = acc[j] + *v;
    }
    lanes_total(&acc)
}

/// The end of `block_sum`/`block_dot`: the 16 lanes widened to f64 and added by a fixed tree.
#[inline(always)]
pub(super) fn lanes_total<T: Real>(lanes: &[T; LANES]) -> f64 {
    let mut acc: [f64; LANES] = std::array::from_fn(|j| lanes[j].to_f64());
    for w in [8, 4, 2, 1] {
        for j in 0..w {
            acc[j] += acc[j + w];
        }
    }
    acc[0]
}
