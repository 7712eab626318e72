//! The exact Euclidean distance transform, the kernel of the planned `edt` data op (issue 10):
//! `scipy.ndimage.distance_transform_edt` semantics — every true (nonzero) element gets the
//! Euclidean distance, in units of an optional per-axis `spacing`, to the nearest false element;
//! false elements get 0 — with the standard library's rule for a mask without any false element:
//! 0 everywhere (scipy's output is meaningless there).
//!
//! Algorithm: Felzenszwalb and Huttenlocher's linear-time squared distance transform, applied
//! along each axis in turn (the lower envelope of parabolas rooted at the previous axis's squared
//! distances, at positions `spacing[a] * i`), then a square root. Any number of axes; lines along
//! an axis are independent and run in parallel, each computed the same way whatever the thread
//! count, so the result is bitwise deterministic.
//!
//! In: a mask in row-major order with its dimensions and spacing. Out: distances. Never here:
//! thresholding, batching over images (the caller runs one call per image), gradients (the op is
//! data: it has none).

// Wired into the op table as the `edt` data op with the spatial losses (issue 10).
#![cfg_attr(not(test), allow(dead_code))]

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

/// Distances of `mask` (row-major, `dims`) written into `out`; `spacing` has one positive entry
/// per axis. Panics if the lengths disagree (callers check shapes first). Lines run in parallel.
pub fn edt(mask: &[f64], dims: &[usize], spacing: &[f64], out: &mut [f64]) {
    transform(mask, dims, spacing, out, true)
}

fn transform(mask: &[f64], dims: &[usize], spacing: &[f64], out: &mut [f64], parallel: bool) {
    let n: usize = dims.iter().product();
    assert!(mask.len() == n && out.len() == n && spacing.len() == dims.len());
    // Squared distance to a false element: 0 there, infinite elsewhere, refined axis by axis.
    for (o, &m) in out.iter_mut().zip(mask) {
        *o = if m != 0.0 { f64::INFINITY } else { 0.0 };
    }
    if n == 0 || out.iter().all(|v| v.is_infinite()) {
        out.fill(0.0); // no false element: 0 everywhere (the standard library's rule)
        return;
    }
    for axis in (0..dims.len()).rev() {
        transform_axis(out, dims, axis, spacing[axis], parallel);
    }
    for o in out.iter_mut() {
        *o = o.sqrt();
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

/// Columns transformed together along a non-innermost axis (one cache line of f64).
const GROUP: usize = 8;

/// Buffers of the 1-D transform of one line.
struct Scratch {
    f: Vec<f64>,
    d: Vec<f64>,
    /// Roots of the parabolas of the lower envelope, and the boundaries between them.
    v: Vec<usize>,
    z: Vec<f64>,
}

impl Scratch {
    fn new(len: usize) -> Scratch {
        Scratch {
            f: vec![0.0; len],
            d: vec![0.0; len],
            v: vec![0; len],
            z: vec![0.0; len + 1],
        }
    }

    /// The abscissa where the parabola rooted at `q` (at `xq`) meets the one rooted at `v[k]`.
    fn meet(&self, q: usize, xq: f64, k: usize, step: f64) -> f64 {
        let r = self.v[k];
        let xr = step * r as f64;
        ((self.f[q] + xq * xq) - (self.f[r] + xr * xr)) / (2.0 * (xq - xr))
    }

    /// `d[p] = min_q (step*(p - q))^2 + f[q]` over the finite `f[q]` (infinite if none).
    fn line(&mut self, step: f64) {
        let n = self.f.len();
        let x = |i: usize| step * i as f64;
        let mut k = 0usize;
        let mut any = false;
        for q in 0..n {
            let fq = self.f[q];
            if fq.is_infinite() {
                continue;
            }
            if !any {
                any = true;
                self.v[0] = q;
                self.z[0] = f64::NEG_INFINITY;
                self.z[1] = f64::INFINITY;
                continue;
            }
            let xq = x(q);
            // Where the parabola rooted at q overtakes the one rooted at v[k]; pop the envelope's
            // parabolas it hides (z[0] = -inf ends the loop).
            let mut s = self.meet(q, xq, k, step);
            while s <= self.z[k] {
                k -= 1;
                s = self.meet(q, xq, k, step);
            }
            k += 1;
            self.v[k] = q;
            self.z[k] = s;
            self.z[k + 1] = f64::INFINITY;
        }
        if !any {
            self.d.fill(f64::INFINITY);
            return;
        }
        let mut k = 0usize;
        for p in 0..n {
            let xp = x(p);
            while self.z[k + 1] < xp {
                k += 1;
            }
            let r = self.v[k];
            let dx = xp - x(r);
            self.d[p] = dx * dx + self.f[r];
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
