//! Window kernels of the planned spatial ops (issue 10): the separable normalised Gaussian
//! filter with VALID or zero-"same" padding and its adjoint (the gradient of a filtered value
//! with respect to the filter's input), and binary erosion with a full structuring element
//! (outside the image counts as false) with the contour `m & !erode(m)`.
//!
//! Arrays are row-major over `dims` (the spatial axes of one image); the caller runs one call per
//! image. Every output element is a fixed-order sum, so results do not depend on threads.
//!
//! In: an image, its dims, the window parameters. Out: the filtered image and its dims. Never
//! here: which axes are spatial, batching, graph nodes.

#![cfg_attr(not(test), allow(dead_code))]

/// How a window treats the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Only windows that fit: each side shrinks by `window - 1`.
    Valid,
    /// Zero padding, same size out as in (odd windows only, centred).
    Same,
}

/// The normalised 1-D Gaussian of `window` taps and standard deviation `sigma`, centred.
pub fn gaussian_weights(window: usize, sigma: f64) -> Vec<f64> {
    let c = (window as f64 - 1.0) / 2.0;
    let w: Vec<f64> = (0..window)
        .map(|k| (-((k as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|v| v / total).collect()
}

/// The output dims of a window of `taps` over `dims` with `padding` (None if a side is smaller
/// than the window under VALID padding, or the window is even under SAME).
pub fn out_dims(dims: &[usize], taps: usize, padding: Padding) -> Option<Vec<usize>> {
    match padding {
        Padding::Valid => dims
            .iter()
            .map(|&d| d.checked_sub(taps - 1).filter(|&o| o > 0))
            .collect(),
        Padding::Same => (taps % 2 == 1).then(|| dims.to_vec()),
    }
}

/// Offset of tap 0 relative to the output position along an axis.
fn origin(taps: usize, padding: Padding) -> isize {
    match padding {
        Padding::Valid => 0,
        Padding::Same => -((taps as isize - 1) / 2),
    }
}

/// `y = x` correlated with `w` along `axis` (`y[i] = Σ_k w[k] x[i + k + origin]`, zero outside).
fn filter_axis(
    x: &[f64],
    dims: &[usize],
    axis: usize,
    w: &[f64],
    padding: Padding,
) -> (Vec<f64>, Vec<usize>) {
    let mut od = dims.to_vec();
    od[axis] = out_dims(&dims[axis..=axis], w.len(), padding).expect("window fits")[0];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let (n_in, n_out) = (dims[axis], od[axis]);
    let o = origin(w.len(), padding);
    let mut y = vec![0.0; outer * n_out * inner];
    for a in 0..outer {
        for i in 0..n_out {
            for (k, &wk) in w.iter().enumerate() {
                let src = i as isize + k as isize + o;
                if src < 0 || src >= n_in as isize {
                    continue;
                }
                let (yb, xb) = ((a * n_out + i) * inner, (a * n_in + src as usize) * inner);
                for j in 0..inner {
                    y[yb + j] += wk * x[xb + j];
                }
            }
        }
    }
    (y, od)
}

/// The adjoint of [`filter_axis`]: `x̄[i + k + origin] += w[k] ȳ[i]`, back to `dims`.
fn filter_axis_adjoint(
    ybar: &[f64],
    dims: &[usize],
    axis: usize,
    w: &[f64],
    padding: Padding,
) -> Vec<f64> {
    let od = out_dims(&dims[axis..=axis], w.len(), padding).expect("window fits")[0];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let n_in = dims[axis];
    let o = origin(w.len(), padding);
    let mut x = vec![0.0; outer * n_in * inner];
    for a in 0..outer {
        for i in 0..od {
            for (k, &wk) in w.iter().enumerate() {
                let dst = i as isize + k as isize + o;
                if dst < 0 || dst >= n_in as isize {
                    continue;
                }
                let (yb, xb) = ((a * od + i) * inner, (a * n_in + dst as usize) * inner);
                for j in 0..inner {
                    x[xb + j] += wk * ybar[yb + j];
                }
            }
        }
    }
    x
}

/// The separable filter with `w` along every axis of `dims`; returns the output and its dims.
pub fn filter(x: &[f64], dims: &[usize], w: &[f64], padding: Padding) -> (Vec<f64>, Vec<usize>) {
    let (mut v, mut d) = (x.to_vec(), dims.to_vec());
    for axis in 0..dims.len() {
        let (nv, nd) = filter_axis(&v, &d, axis, w, padding);
        v = nv;
        d = nd;
    }
    (v, d)
}

/// The adjoint of [`filter`]: the gradient with respect to its input of `Σ ȳ · filter(x)`.
pub fn filter_adjoint(ybar: &[f64], dims: &[usize], w: &[f64], padding: Padding) -> Vec<f64> {
    // The forward applies the axes in order 0, 1, ...; the adjoint undoes them in reverse, each
    // from the dims it was applied at.
    let mut stages = vec![dims.to_vec()];
    for axis in 0..dims.len() {
        let mut d = stages[axis].clone();
        d[axis] = out_dims(&d[axis..=axis], w.len(), padding).expect("window fits")[0];
        stages.push(d);
    }
    let mut g = ybar.to_vec();
    for axis in (0..dims.len()).rev() {
        g = filter_axis_adjoint(&g, &stages[axis], axis, w, padding);
    }
    g
}

/// Binary erosion of `mask` (nonzero is true) by the full 3^k structuring element, elements
/// outside the image counting as false: true where the element and all its neighbours are true.
pub fn erode(mask: &[f64], dims: &[usize]) -> Vec<f64> {
    let n: usize = dims.iter().product();
    let mut strides = vec![1usize; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1];
    }
    (0..n)
        .map(|i| {
            let coord = |a: usize| (i / strides[a]) % dims[a];
            // On the border a neighbour lies outside: false.
            let inside = (0..dims.len()).all(|a| coord(a) > 0 && coord(a) + 1 < dims[a]);
            if !inside || mask[i] == 0.0 {
                return 0.0;
            }
            let mut all = true;
            let mut offsets = vec![-1isize; dims.len()];
            'outer: loop {
                let j = (0..dims.len())
                    .fold(i as isize, |acc, a| acc + offsets[a] * strides[a] as isize);
                if mask[j as usize] == 0.0 {
                    all = false;
                    break;
                }
                for a in (0..dims.len()).rev() {
                    if offsets[a] < 1 {
                        offsets[a] += 1;
                        continue 'outer;
                    }
                    offsets[a] = -1;
                }
                break;
            }
            f64::from(u8::from(all))
        })
        .collect()
}

/// The contour of a mask: its true elements that erosion removes (`m & !erode(m)`).
pub fn contour(mask: &[f64], dims: &[usize]) -> Vec<f64> {
    let e = erode(mask, dims);
    mask.iter()
        .zip(&e)
        .map(|(&m, &er)| f64::from(u8::from(m != 0.0 && er == 0.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The n-D filter by its definition: the outer-product kernel applied directly.
    fn direct(x: &[f64], dims: &[usize], w: &[f64], padding: Padding) -> (Vec<f64>, Vec<usize>) {
        let od = out_dims(dims, w.len(), padding).unwrap();
        let o = origin(w.len(), padding);
        let n_out: usize = od.iter().product();
        let k = dims.len();
        let unflat = |mut i: usize, d: &[usize]| {
            let mut c = vec![0usize; d.len()];
            for a in (0..d.len()).rev() {
                c[a] = i % d[a];
                i /= d[a];
            }
            c
        };
        let taps = w.len().pow(k as u32);
        let y = (0..n_out)
            .map(|f| {
                let p = unflat(f, &od);
                (0..taps)
                    .map(|t| {
                        let tk = unflat(t, &vec![w.len(); k]);
                        let mut idx = 0usize;
                        let mut weight = 1.0;
                        for a in 0..k {
                            let s = p[a] as isize + tk[a] as isize + o;
                            if s < 0 || s >= dims[a] as isize {
                                return 0.0;
                            }
                            idx = idx * dims[a] + s as usize;
                            weight *= w[tk[a]];
                        }
                        weight * x[idx]
                    })
                    .sum()
            })
            .collect();
        (y, od)
    }

    fn images() -> impl Strategy<Value = (Vec<usize>, Vec<f64>, usize, f64, bool)> {
        (
            2usize..=3,
            prop::sample::select(vec![1usize, 3, 5]),
            0.5f64..2.0,
            any::<bool>(),
        )
            .prop_flat_map(|(k, taps, sigma, same)| {
                (
                    prop::collection::vec(taps..taps + 5, k),
                    Just(taps),
                    Just(sigma),
                    Just(same),
                )
            })
            .prop_flat_map(|(dims, taps, sigma, same)| {
                let n: usize = dims.iter().product();
                (
                    Just(dims),
                    prop::collection::vec(-2.0f64..2.0, n),
                    Just(taps),
                    Just(sigma),
                    Just(same),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]
        /// The separable filter equals the direct n-D definition, VALID and SAME, 2-D and 3-D.
        #[test]
        fn separable_filter_equals_its_definition((dims, x, taps, sigma, same) in images()) {
            let w = gaussian_weights(taps, sigma);
            let pad = if same { Padding::Same } else { Padding::Valid };
            let (y, od) = filter(&x, &dims, &w, pad);
            let (z, zd) = direct(&x, &dims, &w, pad);
            prop_assert_eq!(&od, &zd);
            for (a, b) in y.iter().zip(&z) {
                prop_assert!((a - b).abs() <= 1e-13, "{a} vs {b}");
            }
        }

        /// The adjoint: <filter(x), ȳ> = <x, filter_adjoint(ȳ)> for random x and ȳ.
        #[test]
        fn adjoint_satisfies_the_inner_product_identity((dims, x, taps, sigma, same) in images(), seed in any::<u64>()) {
            let w = gaussian_weights(taps, sigma);
            let pad = if same { Padding::Same } else { Padding::Valid };
            let (y, od) = filter(&x, &dims, &w, pad);
            let m: usize = od.iter().product();
            let ybar: Vec<f64> = (0..m).map(|i| (((i as u64 ^ seed) % 97) as f64 / 48.0) - 1.0).collect();
            let lhs: f64 = y.iter().zip(&ybar).map(|(a, b)| a * b).sum();
            let g = filter_adjoint(&ybar, &dims, &w, pad);
            let rhs: f64 = x.iter().zip(&g).map(|(a, b)| a * b).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn gaussian_weights_are_normalised_and_symmetric() {
        let w = gaussian_weights(11, 1.5);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for k in 0..11 {
            assert_eq!(w[k].to_bits(), w[10 - k].to_bits());
        }
        assert!(
            out_dims(&[10, 12], 11, Padding::Valid).is_none(),
            "a side smaller than the window"
        );
        assert!(
            out_dims(&[10, 12], 4, Padding::Same).is_none(),
            "even window under SAME"
        );
    }

    #[test]
    fn erosion_and_contour_of_a_square() {
        // A 4 x 4 square of true in a 6 x 7 image: erosion keeps its 2 x 2 inside; the contour
        // is the 12 border elements of the square.
        let dims = [6usize, 7];
        let mut m = vec![0.0; 42];
        for i in 1..5 {
            for j in 2..6 {
                m[i * 7 + j] = 1.0;
            }
        }
        let e = erode(&m, &dims);
        let inside: Vec<usize> = (0..42).filter(|&i| e[i] == 1.0).collect();
        assert_eq!(inside, vec![2 * 7 + 3, 2 * 7 + 4, 3 * 7 + 3, 3 * 7 + 4]);
        let c = contour(&m, &dims);
        assert_eq!(c.iter().filter(|&&v| v == 1.0).count(), 12);
        // Outside counts as false: a full image erodes to its interior only.
        let full = erode(&[1.0; 27], &[3, 3, 3]);
        assert_eq!(full.iter().filter(|&&v| v == 1.0).count(), 1);
        assert_eq!(full[13], 1.0);
    }
}
