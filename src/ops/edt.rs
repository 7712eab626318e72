//! The exact Euclidean distance transform, the kernel of the `edt` data op:
//! `scipy.ndimage.distance_transform_edt` semantics — every true (nonzero) element gets the
//! Euclidean distance, in units of an optional per-axis `spacing`, to the nearest false element;
//! false elements get 0 — with the standard library's rule for a mask without any false element:
//! 0 everywhere (scipy's output is meaningless there).
//!
//! Algorithm: squared distances along axis 0 by a forward and a backward scan of the mask, then
//! along each further axis Felzenszwalb and Huttenlocher's linear-time lower envelope of parabolas
//! rooted at the previous axis's squared distances (at positions `spacing[a] * i`), or an outward
//! search on lines whose values are all near; then a square root. Any number of axes. Every
//! image, and every line, is computed the same way whatever the thread count, so the result is
//! bitwise deterministic.
//!
//! In: masks in row-major order with their dimensions and spacing. Out: distances. Never here:
//! thresholding, gradients (the op is data: it has none).

use rayon::prelude::*;

/// The transform of every image of a batch: `mask` holds `out.len() / Π dims` images of `dims`
/// back to back; images run in parallel, each on one thread.
pub fn edt_images(mask: &[f64], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    let size: usize = dims.iter().product::<usize>().max(1);
    assert!(mask.len() == out.len() && out.len().is_multiple_of(size));
    out.par_chunks_mut(size)
        .zip(mask.par_chunks(size))
        .for_each(|(o, m)| transform(m, dims, spacing, o, false));
}

/// Distances of one image `mask` (row-major, `dims`) written into `out`; `spacing` has one
/// positive entry per axis. Panics if the lengths disagree (callers check shapes first). Lines
/// run in parallel (the op runs images in parallel instead, through [`edt_images`]; the tests
/// use this to check that line order does not matter).
#[cfg(test)]
pub fn edt(mask: &[f64], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    transform(mask, dims, spacing, out, true)
}

fn transform(mask: &[f64], dims: &[usize], spacing: &[f64], out: &mut [f64], parallel: bool) {
    let n: usize = dims.iter().product();
    assert!(mask.len() == n && out.len() == n && spacing.len() == dims.len());
    if n == 0 || mask.iter().all(|&m| m != 0.0) {
        out.fill(0.0); // no false element: 0 everywhere (the standard library's rule)
        return;
    }
    if dims.is_empty() {
        out[0] = 0.0; // a single element, and it is false
        return;
    }
    // Squared distance to a false element, axis by axis: along the outermost axis straight from
    // the mask (a forward and a backward scan, row by row, so every step is one contiguous
    // vectorised loop), then the parabola envelope along each further axis, the innermost last
    // (its lines are contiguous).
    scan_axis0(mask, dims, spacing[0], out);
    for (axis, &step) in spacing.iter().enumerate().skip(1) {
        transform_axis(out, dims, axis, step, parallel);
    }
    for o in out.iter_mut() {
        *o = o.sqrt();
    }
}

/// The squared distance along axis 0 to the nearest false element, `(step * Δi)^2` (infinite
/// where a line has none): the first axis of the transform, straight from the mask. A forward
/// and a backward scan over the rows of `inner = Π dims[1..]` elements: each row step is an
/// elementwise loop over contiguous memory.
fn scan_axis0(mask: &[f64], dims: &[usize], step: f64, out: &mut [f64]) {
    let inner: usize = dims[1..].iter().product();
    let len = dims[0];
    // Selects as bit masks and `min` as a comparison, so each loop vectorises (branches on
    // random masks mispredict half the time).
    let keep =
        |mv: f64, v: f64| f64::from_bits(v.to_bits() & 0u64.wrapping_sub(u64::from(mv != 0.0)));
    for i in 0..len {
        let (done, rest) = out.split_at_mut(i * inner);
        let row = &mut rest[..inner];
        let m = &mask[i * inner..(i + 1) * inner];
        if i == 0 {
            for (o, &mv) in row.iter_mut().zip(m) {
                *o = keep(mv, f64::INFINITY);
            }
        } else {
            let prev = &done[(i - 1) * inner..];
            for ((o, &mv), &p) in row.iter_mut().zip(m).zip(prev) {
                *o = keep(mv, p + 1.0);
            }
        }
    }
    for i in (0..len.saturating_sub(1)).rev() {
        let (head, tail) = out.split_at_mut((i + 1) * inner);
        let row = &mut head[i * inner..];
        for (o, &nx) in row.iter_mut().zip(&tail[..inner]) {
            let v = nx + 1.0;
            *o = if v < *o { v } else { *o };
        }
    }
    for o in out.iter_mut() {
        let d = step * *o;
        *o = d * d;
    }
}

/// One axis of the separable transform: every line along `axis` is replaced by its 1-D squared
/// distance transform with sample spacing `step`.
fn transform_axis(values: &mut [f64], dims: &[usize], axis: usize, step: f64, parallel: bool) {
    let len = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    if len <= 1 {
        return;
    }
    if inner == 1 {
        // Contiguous lines, transformed in place through one scratch line; work splits into
        // runs of `LINES` lines, each with its own scratch.
        let run = |lines: &mut [f64]| {
            let mut s = Scratch::new(len);
            for l in lines.chunks_mut(len) {
                s.f.copy_from_slice(l);
                s.line(step);
                l.copy_from_slice(&s.d);
            }
        };
        if parallel {
            values.par_chunks_mut(len * LINES).for_each(run);
        } else {
            run(values);
        }
        return;
    }
    // Lines of one outer index are interleaved with stride `inner`: gather each into a buffer,
    // transform, scatter back. Work splits over outer indices (blocks of `len * inner`).
    // Columns go in groups of up to `GROUP` neighbours, so that the gather and scatter read
    // and write whole cache lines instead of one element per line.
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
                sc.line(step);
            }
            for i in 0..len {
                let row = &mut block[i * inner + j0..i * inner + j0 + width];
                for (c, v) in row.iter_mut().enumerate() {
                    *v = s[c].d[i];
                }
            }
        }
    };
    let scratch = || (0..GROUP).map(|_| Scratch::new(len)).collect::<Vec<_>>();
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

/// Most steps of [`Scratch::line_local`]'s search per element.
const LOCAL: usize = 8;

/// Contiguous lines per parallel task.
const LINES: usize = 64;

/// Columns transformed together along a non-innermost axis (one cache line of f64).
const GROUP: usize = 32;

/// Buffers of the 1-D transform of one line.
struct Scratch {
    f: Vec<f64>,
    d: Vec<f64>,
    /// The lower envelope: its parabolas' roots (position, f + x^2, f) and the boundaries
    /// between them as fractions `zn / zd` (see [`Scratch::line`]).
    xv: Vec<f64>,
    hv: Vec<f64>,
    fv: Vec<f64>,
    zn: Vec<f64>,
    zd: Vec<f64>,
}

impl Scratch {
    fn new(len: usize) -> Scratch {
        Scratch {
            f: vec![0.0; len],
            d: vec![0.0; len],
            xv: vec![0.0; len],
            hv: vec![0.0; len],
            fv: vec![0.0; len],
            zn: vec![0.0; len],
            zd: vec![0.0; len],
        }
    }

    /// [`Scratch::line`] by an outward search from each element (every `f` finite and at most
    /// `(LOCAL * step)^2`, so the search ends within `LOCAL` steps).
    fn line_local(&mut self, step: f64) {
        let n = self.f.len();
        let (f, d) = (&self.f[..n], &mut self.d[..n]);
        for (p, dp) in d.iter_mut().enumerate() {
            let xp = step * p as f64;
            let mut best = f[p];
            for k in 1..n {
                let dk = step * k as f64;
                if dk * dk >= best {
                    break;
                }
                if p >= k {
                    let dx = xp - step * (p - k) as f64;
                    let v = dx * dx + f[p - k];
                    best = if v < best { v } else { best };
                }
                if p + k < n {
                    let dx = xp - step * (p + k) as f64;
                    let v = dx * dx + f[p + k];
                    best = if v < best { v } else { best };
                }
            }
            *dp = best;
        }
    }

    /// `d[p] = min_q (step*(p - q))^2 + f[q]` over the finite `f[q]` (infinite if none).
    ///
    /// The lower envelope's parabolas are kept by their root's position `xv`, `hv = f + x^2` and
    /// `fv = f`; the boundary between parabolas k - 1 and k is the fraction `zn[k] / zd[k]`
    /// (positive denominator), so comparisons multiply instead of dividing — exact for unit
    /// spacing, where every term is an integer below 2^53. `z[0] = -inf` and the last boundary
    /// `+inf` are implied by the indices.
    fn line(&mut self, step: f64) {
        // Lines whose every value is near (as on noisy masks, where the envelope's pops
        // mispredict) are searched outward from each element instead: the nearest candidates
        // first, stopping where the squared offset alone exceeds the best — at most `LOCAL`
        // steps each. Both compute `(xp - xq)^2 + f[q]` alike, so both give the same bits.
        let top = self
            .f
            .iter()
            .fold(0.0f64, |m, &v| if v > m { v } else { m });
        let reach = LOCAL as f64 * step;
        if top <= reach * reach {
            self.line_local(step);
            return;
        }
        let n = self.f.len();
        let Scratch {
            f,
            d,
            xv,
            hv,
            fv,
            zn,
            zd,
        } = self;
        let (f, d) = (&f[..n], &mut d[..n]);
        let (xv, hv, fv, zn, zd) = (
            &mut xv[..n],
            &mut hv[..n],
            &mut fv[..n],
            &mut zn[..n],
            &mut zd[..n],
        );
        let mut top: Option<usize> = None;
        for (q, &fq) in f.iter().enumerate() {
            if fq.is_infinite() {
                continue;
            }
            let xq = step * q as f64;
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
        for (p, dp) in d.iter_mut().enumerate() {
            let xp = step * p as f64;
            // z[k + 1] < xp
            while k < top && zn[k + 1] < xp * zd[k + 1] {
                k += 1;
            }
            let dx = xp - xv[k];
            *dp = dx * dx + fv[k];
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

    fn case(dims: Vec<usize>, bits: Vec<bool>, spacing: Vec<f64>) -> Result<(), TestCaseError> {
        let n: usize = dims.iter().product();
        let mask: Vec<f64> = bits
            .iter()
            .take(n)
            .map(|&b| f64::from(u8::from(b)))
            .collect();
        let mut out = vec![0.0; n];
        edt(&mask, &dims, &spacing, &mut out);
        let want = brute(&mask, &dims, &spacing);
        for i in 0..n {
            prop_assert!(
                (out[i] - want[i]).abs() <= 1e-12 * want[i].max(1.0),
                "dims {dims:?} spacing {spacing:?} element {i}: {} vs {}",
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn equals_brute_force_in_2d((dims, bits, spacing) in masks(2, 12)) {
            case(dims, bits, spacing)?;
        }

        #[test]
        fn equals_brute_force_in_3d((dims, bits, spacing) in masks(3, 7)) {
            case(dims, bits, spacing)?;
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
