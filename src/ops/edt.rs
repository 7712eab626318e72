//! The exact Euclidean distance transform, the kernel of the `edt` data op:
//! `scipy.ndimage.distance_transform_edt` semantics — every true (nonzero) element gets the
//! Euclidean distance, in units of an optional per-axis `spacing`, to the nearest false element;
//! false elements get 0 — with the standard library's rule for a mask without any false element:
//! 0 everywhere (scipy's output is meaningless there).
//!
//! Algorithm: squared distances along axis 0 by a forward and a backward scan of the mask (in
//! strips of columns), then along each further axis Felzenszwalb and
//! Huttenlocher's linear-time lower envelope of parabolas rooted at the previous axis's squared
//! distances (at positions `spacing[a] * i`), or, on lines whose values are all near, a
//! vectorised search of the few nearest offsets; the last axis writes the square roots straight
//! into the output. Any number of axes. Every image, and every line, is computed the same way
//! whatever the thread count and instruction set (only `+`, `*`, `min` and `sqrt`, each
//! correctly rounded; no fused multiply-add), so the result is bitwise deterministic.
//!
//! In: masks of any element type (nonzero is true) in row-major order with their dimensions and
//! spacing. Out: distances in the same element type (computed in f64, rounded once). Never here:
//! thresholding, gradients (the op is data: it has none).

use rayon::prelude::*;

use crate::ops::math::Real;

/// The transform of every image of a batch: `mask` holds `out.len() / Π dims` images of `dims`
/// back to back; images run in parallel, each on one thread.
pub fn edt_images<T: Real>(mask: &[T], dims: &[usize], spacing: &[f64], out: &mut [T]) {
    images::<T, false>(mask, dims, spacing, out)
}

/// [`edt_images`] with unit spacing: the kernel of the `edt` op.
pub fn edt_unit<T: Real>(mask: &[T], dims: &[usize], out: &mut [T]) {
    edt_images(mask, dims, &vec![1.0; dims.len()], out)
}

/// [`field_images`] with unit spacing: the kernel of the `distance_field` op.
pub fn field_unit<T: Real>(mask: &[T], dims: &[usize], out: &mut [T]) {
    field_images(mask, dims, &vec![1.0; dims.len()], out)
}

/// The distance field of every image of a batch (as [`edt_images`]): `edt(m) + edt(!m)`, each
/// element's distance to the nearest element of the other side (0 for an image that is all true
/// or all false). One transform computes both sides: the first axis's scan measures every
/// element's distance to the other side at once, and each further axis transforms the two
/// sides' lines and keeps, per element, its own side's.
pub fn field_images<T: Real>(mask: &[T], dims: &[usize], spacing: &[f64], out: &mut [T]) {
    images::<T, true>(mask, dims, spacing, out)
}

fn images<T: Real, const FIELD: bool>(mask: &[T], dims: &[usize], spacing: &[f64], out: &mut [T]) {
    let size: usize = dims.iter().product::<usize>().max(1);
    assert!(mask.len() == out.len() && out.len().is_multiple_of(size));
    out.par_chunks_mut(size)
        .zip(mask.par_chunks(size))
        .for_each(|(o, m)| {
            WORK.with_borrow_mut(|w| transform::<T, FIELD>(m, dims, spacing, o, w, false))
        });
}

thread_local! {
    /// Each thread's buffers, kept from one image (and one call) to the next: a fresh image-sized
    /// buffer per image costs more in page faults than the transform's arithmetic. Holds one
    /// image of f64 per thread that has run a transform.
    static WORK: std::cell::RefCell<Work> = std::cell::RefCell::default();
}

/// Distances of one image `mask` (row-major, `dims`) written into `out`; `spacing` has one
/// positive entry per axis. Panics if the lengths disagree (callers check shapes first). Lines
/// run in parallel (the op runs images in parallel instead, through [`edt_images`]; the tests
/// use this to check that line order does not matter).
#[cfg(test)]
pub fn edt(mask: &[f64], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    transform::<f64, false>(mask, dims, spacing, out, &mut Work::default(), true)
}

/// [`field_images`] of one image, lines in parallel (as [`edt`]).
#[cfg(test)]
pub fn field(mask: &[f64], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    transform::<f64, true>(mask, dims, spacing, out, &mut Work::default(), true)
}

/// Buffers of one image's transform, kept across the images a thread takes.
#[derive(Default)]
struct Work {
    /// Squared distances along the axes done so far (one image, f64).
    g: Vec<f64>,
    /// The innermost axis's line buffers, for the length and spacing they were made for.
    line: Option<Scratch>,
}

/// One image, on the widest instruction set the CPU has (the same bits on each: see the module
/// doc).
fn transform<T: Real, const FIELD: bool>(
    mask: &[T],
    dims: &[usize],
    spacing: &[f64],
    out: &mut [T],
    w: &mut Work,
    parallel: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { transform_avx2::<T, FIELD>(mask, dims, spacing, out, w, parallel) };
        return;
    }
    transform_body::<T, FIELD>(mask, dims, spacing, out, w, parallel)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transform_avx2<T: Real, const FIELD: bool>(
    mask: &[T],
    dims: &[usize],
    spacing: &[f64],
    out: &mut [T],
    w: &mut Work,
    parallel: bool,
) {
    transform_body::<T, FIELD>(mask, dims, spacing, out, w, parallel)
}

#[inline(always)]
fn transform_body<T: Real, const FIELD: bool>(
    mask: &[T],
    dims: &[usize],
    spacing: &[f64],
    out: &mut [T],
    w: &mut Work,
    parallel: bool,
) {
    let n: usize = dims.iter().product();
    assert!(mask.len() == n && out.len() == n && spacing.len() == dims.len());
    if n == 0 {
        return;
    }
    if dims.is_empty() {
        out[0] = T::default(); // a single element: 0 whether it is false or (no false) true
        return;
    }
    w.g.resize(n, 0.0);
    let g = &mut w.g[..n];
    // Squared distance to a false element, axis by axis: along the outermost axis straight from
    // the mask, then the parabola envelope along each further axis, the innermost last (its
    // lines are contiguous, and it writes the output).
    // A field keeps each element's value for its own side, signed by the side (+ true, -
    // false; never 0: an element is at least one step from the other side).
    let found = if FIELD {
        scan_axis0_field(mask, dims, spacing[0], g)
    } else {
        scan_axis0(mask, dims, spacing[0], g)
    };
    if !found {
        // No false element (or, for a field, one side empty): 0 everywhere (the standard
        // library's rule).
        out.fill(T::default());
        return;
    }
    let last = dims.len() - 1;
    for (axis, &step) in spacing.iter().enumerate().take(last).skip(1) {
        transform_axis::<FIELD>(g, dims, axis, step, parallel);
    }
    // With unit spacing and Σ (side - 1)^2 < 2^24 every squared distance is an integer below
    // 2^24, exact in f32 too, and the square root in the output's precision of that rounds as
    // the f64 root rounded to it (double rounding through a precision of at least 2p + 2 bits
    // is innocuous for square roots): the same bits, with the narrower, cheaper root.
    let narrow = spacing.iter().all(|&s| s == 1.0)
        && dims.iter().map(|&d| ((d - 1) as f64).powi(2)).sum::<f64>() < 16_777_216.0;
    if last == 0 {
        roots(g, out, narrow);
        return;
    }
    // The innermost axis: contiguous lines, each transformed from `g` into one scratch line and
    // written out as square roots; in parallel, work splits into runs of `LINES` lines.
    let (len, step) = (dims[last], spacing[last]);
    if parallel {
        g.par_chunks(len * LINES)
            .zip(out.par_chunks_mut(len * LINES))
            .for_each(|(g, out)| {
                innermost::<T, FIELD>(g, out, &mut Scratch::new(len, step), step, narrow)
            });
    } else {
        let s = match &mut w.line {
            Some(s) if s.d.len() == len && s.step.to_bits() == step.to_bits() => s,
            line => line.insert(Scratch::new(len, step)),
        };
        innermost::<T, FIELD>(g, out, s, step, narrow);
    }
}

/// The innermost axis's lines of `s.d.len()` elements: `out` = square roots of their transforms.
#[inline(always)]
fn innermost<T: Real, const FIELD: bool>(
    g: &[f64],
    out: &mut [T],
    s: &mut Scratch,
    step: f64,
    narrow: bool,
) {
    let len = s.d.len();
    for (f, o) in g.chunks(len).zip(out.chunks_mut(len)) {
        s.line_any::<FIELD>(f, step);
        roots(&s.d, o, narrow);
    }
}

/// `out = sqrt(|g|)`, the root taken in f64 or, where `narrow` says that gives the same bits,
/// in the output's precision.
#[inline(always)]
fn roots<T: Real>(g: &[f64], out: &mut [T], narrow: bool) {
    if narrow {
        for (o, &v) in out.iter_mut().zip(g) {
            *o = T::from_f64(v.abs()).sqrt();
        }
    } else {
        for (o, &v) in out.iter_mut().zip(g) {
            *o = T::from_f64(v.abs().sqrt());
        }
    }
}

/// Columns of one strip of [`scan_axis0`] (its carried values, one row of the strip, stay in the
/// first-level cache; not tuned).
const STRIP: usize = 256;

/// The squared distance along axis 0 to the nearest false element, `(step * Δi)^2` (infinite
/// where a line has none), into `g`: the first axis of the transform, straight from the mask.
/// Returns whether the mask has a false element at all. Works on strips of `STRIP` columns
/// (the `Π dims[1..]` elements of a row): a forward scan down the strip, then a backward scan up
/// it that also squares; each row step is an elementwise loop over contiguous memory.
#[inline(always)]
fn scan_axis0<T: Real>(mask: &[T], dims: &[usize], step: f64, g: &mut [f64]) -> bool {
    let inner: usize = dims[1..].iter().product();
    let len = dims[0];
    let zero = T::default();
    let mut falses = 0usize;
    let mut carry = [0.0f64; STRIP];
    for j0 in (0..inner).step_by(STRIP) {
        let width = STRIP.min(inner - j0);
        // Forward: distance to the nearest false element at or above (selects, not branches:
        // random masks would mispredict half the time).
        let c = &mut carry[..width];
        c.fill(f64::INFINITY);
        for i in 0..len {
            let row = &mut g[i * inner + j0..i * inner + j0 + width];
            let m = &mask[i * inner + j0..i * inner + j0 + width];
            for ((o, &mv), c) in row.iter_mut().zip(m).zip(c.iter_mut()) {
                let t = mv != zero;
                falses += usize::from(!t);
                let v = if t { *c + 1.0 } else { 0.0 };
                *c = v;
                *o = v;
            }
        }
        // Backward: the nearer of that and the nearest false element below, squared.
        c.fill(f64::INFINITY);
        for i in (0..len).rev() {
            let row = &mut g[i * inner + j0..i * inner + j0 + width];
            for (o, c) in row.iter_mut().zip(c.iter_mut()) {
                let below = *c + 1.0;
                let v = if below < *o { below } else { *o };
                *c = v;
                let d = step * v;
                *o = d * d;
            }
        }
    }
    falses > 0
}

/// [`scan_axis0`] for a field: every element's squared distance along axis 0 to the nearest
/// element of the other side, `+` for a true element, `-` for a false one (infinite where the
/// line has no element of the other side). Returns whether the mask has both sides. The
/// forward scan stores each element's distance signed by its side; the backward scan reads the
/// sides back from the signs.
#[inline(always)]
fn scan_axis0_field<T: Real>(mask: &[T], dims: &[usize], step: f64, g: &mut [f64]) -> bool {
    let inner: usize = dims[1..].iter().product();
    let len = dims[0];
    let zero = T::default();
    let mut trues = 0usize;
    let mut carry = [0.0f64; STRIP];
    let mut side = [false; STRIP];
    for j0 in (0..inner).step_by(STRIP) {
        let width = STRIP.min(inner - j0);
        let (c, sd) = (&mut carry[..width], &mut side[..width]);
        c.fill(f64::INFINITY);
        for (s, &mv) in sd.iter_mut().zip(&mask[j0..j0 + width]) {
            *s = mv != zero;
        }
        for i in 0..len {
            let row = &mut g[i * inner + j0..i * inner + j0 + width];
            let m = &mask[i * inner + j0..i * inner + j0 + width];
            for (((o, &mv), c), s) in row.iter_mut().zip(m).zip(c.iter_mut()).zip(sd.iter_mut()) {
                let t = mv != zero;
                trues += usize::from(t);
                let v = if t == *s { *c + 1.0 } else { 1.0 };
                (*c, *s) = (v, t);
                *o = if t { v } else { -v };
            }
        }
        c.fill(f64::INFINITY);
        let tail = (len - 1) * inner + j0;
        for (s, &o) in sd.iter_mut().zip(&g[tail..tail + width]) {
            *s = o > 0.0;
        }
        for i in (0..len).rev() {
            let row = &mut g[i * inner + j0..i * inner + j0 + width];
            for ((o, c), s) in row.iter_mut().zip(c.iter_mut()).zip(sd.iter_mut()) {
                let t = *o > 0.0;
                let here = if t { *o } else { -*o };
                let below = if t == *s { *c + 1.0 } else { 1.0 };
                let v = if below < here { below } else { here };
                (*c, *s) = (v, t);
                let d = step * v;
                *o = if t { d * d } else { -(d * d) };
            }
        }
    }
    trues > 0 && trues < mask.len()
}

/// One axis of the separable transform other than the first and the innermost: every line along
/// `axis` (interleaved with stride `Π dims[axis + 1..]`) is replaced by its 1-D squared distance
/// transform with sample spacing `step`.
#[inline(always)]
fn transform_axis<const FIELD: bool>(
    values: &mut [f64],
    dims: &[usize],
    axis: usize,
    step: f64,
    parallel: bool,
) {
    let len = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    if len <= 1 {
        return;
    }
    // Gather each line into a buffer, transform, scatter back. Work splits over outer indices
    // (blocks of `len * inner`). Columns go in groups of up to `GROUP` neighbours, so that the
    // gather and scatter read and write whole cache lines instead of one element per line.
    let block = |s: &mut Vec<Scratch>, block: &mut [f64]| {
        for j0 in (0..inner).step_by(GROUP) {
            let width = GROUP.min(inner - j0);
            for i in 0..len {
                let row = &block[i * inner + j0..i * inner + j0 + width];
                for (c, &v) in row.iter().enumerate() {
                    s[c].f[i] = v;
                }
            }
            for sc in s.iter_mut().take(width) {
                let f = std::mem::take(&mut sc.f);
                sc.line_any::<FIELD>(&f, step);
                sc.f = f;
            }
            for i in 0..len {
                let row = &mut block[i * inner + j0..i * inner + j0 + width];
                for (c, v) in row.iter_mut().enumerate() {
                    *v = s[c].d[i];
                }
            }
        }
    };
    let scratch = || {
        (0..GROUP)
            .map(|_| Scratch::new(len, step))
            .collect::<Vec<_>>()
    };
    if parallel {
        values
            .par_chunks_mut(len * inner)
            .take(outer)
            .for_each_init(scratch, block);
    } else {
        let mut s = scratch();
        for b in values.chunks_mut(len * inner).take(outer) {
            block(&mut s, b);
        }
    }
}

/// Lines whose every squared distance is at most `(LOCAL * step)^2` are searched outward
/// ([`line_local`], offsets below `LOCAL`) instead of building their envelope.
const LOCAL: usize = 32;

/// Elements searched together by [`line_local`].
const LANES: usize = 32;

/// Contiguous lines per parallel task.
const LINES: usize = 64;

/// Columns transformed together along a non-innermost axis (one cache line of f64).
const GROUP: usize = 32;

/// Buffers of the 1-D transform of one line.
struct Scratch {
    /// The spacing the positions below were made for.
    step: f64,
    /// A gathered input line (for axes whose lines are not contiguous).
    f: Vec<f64>,
    /// The result of [`Scratch::line`].
    d: Vec<f64>,
    /// A field's transform of its true side.
    e: Vec<f64>,
    /// The input line (see [`Scratch::input`]) with `LOCAL` infinities before it and
    /// `LOCAL + LANES` after, for [`line_local`]; and the sample positions `step * i` of the
    /// same indices (`xp[LOCAL + i]` is exactly `step * i`, also read by the envelope).
    fp: Vec<f64>,
    xp: Vec<f64>,
    /// The lower envelope: its parabolas' roots (position, f + x^2, f) and the boundaries
    /// between them as fractions `zn / zd` (see [`Scratch::line`]).
    xv: Vec<f64>,
    hv: Vec<f64>,
    fv: Vec<f64>,
    zn: Vec<f64>,
    zd: Vec<f64>,
}

impl Scratch {
    fn new(len: usize, step: f64) -> Scratch {
        Scratch {
            step,
            f: vec![0.0; len],
            d: vec![0.0; len],
            e: vec![0.0; len],
            fp: vec![f64::INFINITY; len + 2 * LOCAL + LANES],
            xp: (0..len + 2 * LOCAL + LANES)
                .map(|i| step * (i as f64 - LOCAL as f64))
                .collect(),
            xv: vec![0.0; len],
            hv: vec![0.0; len],
            fv: vec![0.0; len],
            zn: vec![0.0; len],
            zd: vec![0.0; len],
        }
    }

    /// [`Scratch::line`] of `f`, or for a field (`f` signed by side) the transforms of the true
    /// side's values (`max(f, 0)`: the other side's elements are its zeros) and of the false
    /// side's (`max(-f, 0)`), each element keeping its own side's, signed.
    #[inline(always)]
    fn line_any<const FIELD: bool>(&mut self, f: &[f64], step: f64) {
        if !FIELD {
            self.input().copy_from_slice(f);
            return self.line(step);
        }
        for (u, &v) in self.input().iter_mut().zip(f) {
            *u = if v > 0.0 { v } else { 0.0 };
        }
        self.line(step);
        std::mem::swap(&mut self.d, &mut self.e);
        for (u, &v) in self.input().iter_mut().zip(f) {
            *u = if v < 0.0 { -v } else { 0.0 };
        }
        self.line(step);
        for ((d, &e), &v) in self.d.iter_mut().zip(&self.e).zip(f) {
            *d = if v > 0.0 { e } else { -*d };
        }
    }

    /// The input line of [`Scratch::line`] (inside the padding of `fp`).
    #[inline(always)]
    fn input(&mut self) -> &mut [f64] {
        let n = self.d.len();
        &mut self.fp[LOCAL..LOCAL + n]
    }

    /// `d[p] = min_q (x[p] - x[q])^2 + f[q]`, `f` the [`Scratch::input`], over the finite `f[q]` (infinite if none), with
    /// `x[q] = step * q`.
    ///
    /// Lines whose every value is near (as on noisy masks, where the envelope's pops
    /// mispredict) are searched outward from each element instead ([`line_local`]), vectorised
    /// across neighbouring elements. Both compute `(x[p] - x[q])^2 + f[q]` alike and `min` is
    /// exact, so with unit spacing (every term an integer) both give the same bits; otherwise
    /// they agree to rounding.
    ///
    /// The lower envelope's parabolas are kept by their root's position `xv`, `hv = f + x^2` and
    /// `fv = f`; the boundary between parabolas k - 1 and k is the fraction `zn[k] / zd[k]`
    /// (positive denominator), so comparisons multiply instead of dividing — exact for unit
    /// spacing, where every term is an integer below 2^53. `z[0] = -inf` and the last boundary
    /// `+inf` are implied by the indices.
    #[inline(always)]
    fn line(&mut self, step: f64) {
        let n = self.d.len();
        let Scratch {
            d,
            fp,
            xp,
            xv,
            hv,
            fv,
            zn,
            zd,
            ..
        } = self;
        let f = &fp[LOCAL..LOCAL + n];
        let top = f.iter().fold(0.0f64, |m, &v| if v > m { v } else { m });
        let reach = LOCAL as f64 * step;
        if top <= reach * reach {
            line_local(fp, xp, d, step, step == 1.0);
            return;
        }
        let (d, x) = (&mut d[..n], &xp[LOCAL..LOCAL + n]);
        let (xv, hv, fv, zn, zd) = (
            &mut xv[..n],
            &mut hv[..n],
            &mut fv[..n],
            &mut zn[..n],
            &mut zd[..n],
        );
        let mut top: Option<usize> = None;
        for (&fq, &xq) in f.iter().zip(x) {
            if fq.is_infinite() {
                continue;
            }
            let hq = fq + xq * xq;
            let Some(mut k) = top else {
                (xv[0], hv[0], fv[0]) = (xq, hq, fq);
                top = Some(0);
                continue;
            };
            // Where the parabola rooted at q overtakes parabola k; pop those it hides
            // (s <= z[k]; z[0] = -inf stops the loop).
            loop {
                let (sn, sd) = (hq - hv[k], 2.0 * (xq - xv[k]));
                if k > 0 && sn * zd[k] <= zn[k] * sd {
                    k -= 1;
                    continue;
                }
                k += 1;
                (xv[k], hv[k], fv[k], zn[k], zd[k]) = (xq, hq, fq, sn, sd);
                break;
            }
            top = Some(k);
        }
        let Some(top) = top else {
            d.fill(f64::INFINITY);
            return;
        };
        let mut k = 0usize;
        for (dp, &xp) in d.iter_mut().zip(x) {
            // z[k + 1] < xp
            while k < top && zn[k + 1] < xp * zd[k + 1] {
                k += 1;
            }
            let dx = xp - xv[k];
            *dp = dx * dx + fv[k];
        }
    }
}

/// [`Scratch::line`] by a search outward from each element (every `f` at most
/// `(LOCAL * step)^2`), from `fp`, the line padded with `LOCAL` infinities on each side, and
/// `xp`, the positions padded alike (finite). `LANES` elements at a time keep their running
/// minima in registers (the compiler vectorises across them; an in-place `d = min(d, v)` per
/// offset would become masked stores) and stop at the first offset `k` with `(step * k)^2` at
/// least the largest of them (no further element can be nearer). With unit spacing every
/// `(x[p] - x[q])^2` is exactly `k^2`, so that case skips the positions.
#[inline(always)]
fn line_local(fp: &[f64], xp: &[f64], d: &mut [f64], step: f64, unit: bool) {
    for (p, out) in (0..d.len()).step_by(LANES).zip(d.chunks_mut(LANES)) {
        let mut lanes = [0.0f64; LANES];
        let mut next = [0.0f64; LANES];
        let w = out.len();
        lanes.copy_from_slice(&fp[LOCAL + p..LOCAL + p + LANES]);
        if w < LANES {
            lanes[w..].fill(0.0); // past the end: 0 stays 0 and never holds the search up
        }
        for k in 1..LOCAL {
            let dk = step * k as f64;
            // The largest lane, by its bits: nonnegative doubles order as their bit patterns,
            // and an integer maximum vectorises (a float one may not be reassociated).
            let worst = f64::from_bits(lanes.iter().map(|v| v.to_bits()).max().unwrap_or(0));
            if dk * dk >= worst {
                break;
            }
            let (c, before, after) = (LOCAL + p, LOCAL + p - k, LOCAL + p + k);
            if unit {
                // (x[p] - x[p -+ k])^2 = k^2 exactly, and k^2 + min(a, b) = min(k^2 + a, k^2 + b)
                // (rounding is monotonic).
                let kk = (k * k) as f64;
                let near = fp[before..before + LANES]
                    .iter()
                    .zip(&fp[after..after + LANES]);
                for ((n, &b), (&a, &z)) in next.iter_mut().zip(&lanes).zip(near) {
                    let v = kk + if a < z { a } else { z };
                    *n = if v < b { v } else { b };
                }
            } else {
                let xs = xp[c..c + LANES].iter().zip(&xp[before..before + LANES]);
                let xs = xs.zip(&xp[after..after + LANES]);
                let fs = fp[before..before + LANES]
                    .iter()
                    .zip(&fp[after..after + LANES]);
                for ((n, &b), (((&x, &xb), &xa), (&a, &z))) in
                    next.iter_mut().zip(&lanes).zip(xs.zip(fs))
                {
                    let (da, dz) = (x - xb, x - xa);
                    let (u, v) = (da * da + a, dz * dz + z);
                    let v = if u < v { u } else { v };
                    *n = if v < b { v } else { b };
                }
            }
            std::mem::swap(&mut lanes, &mut next);
        }
        if w == LANES {
            out.copy_from_slice(&lanes);
        } else {
            out.copy_from_slice(&lanes[..w]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::edt;
    use proptest::prelude::*;

    /// The definition, by brute force: the smallest distance to any false element.
    fn brute(mask: &[f64], dims: &[usize], spacing: &[f64]) -> Vec<f64> {
        let n: usize = dims.iter().product();
        let coords = |mut i: usize| -> Vec<usize> {
            let mut c = vec![0; dims.len()];
            for a in (0..dims.len()).rev() {
                c[a] = i % dims[a];
                i /= dims[a];
            }
            c
        };
        let background: Vec<Vec<usize>> = (0..n).filter(|&i| mask[i] == 0.0).map(coords).collect();
        (0..n)
            .map(|i| {
                if mask[i] == 0.0 || background.is_empty() {
                    return 0.0;
                }
                let p = coords(i);
                background
                    .iter()
                    .map(|q| {
                        p.iter()
                            .zip(q)
                            .zip(spacing)
                            .map(|((&a, &b), s)| (s * (a as f64 - b as f64)).powi(2))
                            .sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min)
                    .sqrt()
            })
            .collect()
    }

    /// `edt` (or, for `field`, `field`) against the brute-force definition (a field: the
    /// transforms of the mask and of its complement, added; each 0 without a false element).
    fn case(
        dims: Vec<usize>,
        bits: Vec<bool>,
        spacing: Vec<f64>,
        field: bool,
    ) -> Result<(), TestCaseError> {
        let n: usize = dims.iter().product();
        let mask: Vec<f64> = bits
            .iter()
            .take(n)
            .map(|&b| f64::from(u8::from(b)))
            .collect();
        let mut out = vec![0.0; n];
        let mut want = brute(&mask, &dims, &spacing);
        if field {
            super::field(&mask, &dims, &spacing, &mut out);
            let not: Vec<f64> = mask.iter().map(|&m| 1.0 - m).collect();
            for (w, o) in want.iter_mut().zip(brute(&not, &dims, &spacing)) {
                *w += o;
            }
        } else {
            edt(&mask, &dims, &spacing, &mut out);
        }
        for i in 0..n {
            prop_assert!(
                (out[i] - want[i]).abs() <= 1e-12 * want[i].max(1.0),
                "dims {dims:?} spacing {spacing:?} field {field} element {i}: {} vs {}",
                out[i],
                want[i]
            );
        }
        Ok(())
    }

    /// Masks mostly true with a few false elements (the hard case: long distances), and mostly
    /// false ones; 1-D to 3-D; unit and random anisotropic spacing.
    fn masks(
        max_axes: usize,
        max_side: usize,
    ) -> impl Strategy<Value = (Vec<usize>, Vec<bool>, Vec<f64>)> {
        (1..=max_axes)
            .prop_flat_map(move |k| prop::collection::vec(1..=max_side, k))
            .prop_flat_map(|dims| {
                let n: usize = dims.iter().product();
                let k = dims.len();
                (
                    Just(dims),
                    prop::sample::select(vec![0.05, 0.5, 0.95])
                        .prop_flat_map(move |p| prop::collection::vec(prop::bool::weighted(p), n)),
                    prop_oneof![Just(vec![1.0; k]), prop::collection::vec(0.3f64..3.0, k),],
                )
            })
    }

    // Each case checks the transform and the field of the same mask.
    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn equals_brute_force_in_2d((dims, bits, spacing) in masks(2, 12)) {
            case(dims.clone(), bits.clone(), spacing.clone(), false)?;
            case(dims, bits, spacing, true)?;
        }

        #[test]
        fn equals_brute_force_in_3d((dims, bits, spacing) in masks(3, 7)) {
            case(dims.clone(), bits.clone(), spacing.clone(), false)?;
            case(dims, bits, spacing, true)?;
        }
    }

    /// The f32 transform (its square root taken in f32 where that is exact) equals the f64 one
    /// rounded to f32, bit for bit, up to the largest distances that rule allows, and past it.
    #[test]
    fn f32_output_is_the_f64_result_rounded() {
        for dims in [[1500usize, 2500], [4000, 3000]] {
            let n = dims[0] * dims[1];
            // Mostly true: a few false elements (in the larger image only its first), so
            // distances run far: squared up to 2.5e7 > 2^24 there.
            let mask: Vec<f64> = (0..n)
                .map(|i| f64::from(u8::from(i != 0 && (n > 1e7 as usize || i % 999_983 != 7))))
                .collect();
            let narrow: Vec<f32> = mask.iter().map(|&m| m as f32).collect();
            for field in [false, true] {
                let (mut wide, mut got) = (vec![0.0f64; n], vec![0.0f32; n]);
                if field {
                    super::field_images(&mask, &dims, &[1.0, 1.0], &mut wide);
                    super::field_images(&narrow, &dims, &[1.0, 1.0], &mut got);
                } else {
                    super::edt_images(&mask, &dims, &[1.0, 1.0], &mut wide);
                    super::edt_images(&narrow, &dims, &[1.0, 1.0], &mut got);
                }
                for i in 0..n {
                    assert_eq!(
                        got[i].to_bits(),
                        (wide[i] as f32).to_bits(),
                        "dims {dims:?} field {field} element {i}: {} vs {}",
                        got[i],
                        wide[i]
                    );
                }
            }
        }
    }

    /// Sides past the outward search's reach (`LOCAL`) with few false elements: lines whose
    /// squared distances are large take the parabola envelope, unit and anisotropic spacing.
    fn wide() -> impl Strategy<Value = (Vec<usize>, Vec<bool>, Vec<f64>)> {
        (prop::collection::vec(40usize..=90, 2), 0.97f64..0.999).prop_flat_map(|(dims, p)| {
            let n: usize = dims.iter().product();
            (
                Just(dims),
                prop::collection::vec(prop::bool::weighted(p), n),
                prop_oneof![Just(vec![1.0; 2]), prop::collection::vec(0.3f64..3.0, 2)],
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn equals_brute_force_on_wide_images((dims, bits, spacing) in wide()) {
            case(dims.clone(), bits.clone(), spacing.clone(), false)?;
            case(dims, bits, spacing, true)?;
        }
    }

    #[test]
    fn empty_and_full_masks() {
        let dims = [4usize, 5];
        let mut out = vec![1.0; 20];
        edt(&[0.0; 20], &dims, &[1.0, 1.0], &mut out);
        assert!(out.iter().all(|&v| v == 0.0), "all false: distances 0");
        edt(&[1.0; 20], &dims, &[1.0, 1.0], &mut out);
        assert!(
            out.iter().all(|&v| v == 0.0),
            "no false element: 0 everywhere"
        );
    }

    #[test]
    fn a_known_case() {
        // One false element in the corner of a 3 x 4 image, spacing (2, 1):
        // distance of (i, j) = sqrt((2 i)^2 + j^2).
        let mut mask = vec![1.0; 12];
        mask[0] = 0.0;
        let mut out = vec![0.0; 12];
        edt(&mask, &[3, 4], &[2.0, 1.0], &mut out);
        for i in 0..3 {
            for j in 0..4 {
                let want = ((2.0 * i as f64).powi(2) + (j as f64).powi(2)).sqrt();
                assert!((out[i * 4 + j] - want).abs() < 1e-15, "({i}, {j})");
            }
        }
    }

    #[test]
    fn images_of_a_batch_equal_one_image_at_a_time() {
        let dims = [7usize, 9];
        let n = 63;
        let mask: Vec<f64> = (0..4 * n)
            .map(|i| f64::from(u8::from((i * 31) % 7 != 0)))
            .collect();
        let mut batch = vec![0.0; 4 * n];
        super::edt_images(&mask, &dims, &[1.0, 2.0], &mut batch);
        for b in 0..4 {
            let mut one = vec![0.0; n];
            edt(&mask[b * n..(b + 1) * n], &dims, &[1.0, 2.0], &mut one);
            assert_eq!(one, batch[b * n..(b + 1) * n]);
        }
    }

    #[test]
    fn bitwise_equal_at_any_thread_count() {
        let dims = [9usize, 33, 17];
        let n: usize = dims.iter().product();
        let mask: Vec<f64> = (0..n)
            .map(|i| f64::from(u8::from((i * 7919) % 23 != 0)))
            .collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0.0; n];
            pool.install(|| edt(&mask, &dims, &[1.0, 0.7, 1.3], &mut out));
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(3));
    }
}
