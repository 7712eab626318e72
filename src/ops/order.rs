//! Order-statistic kernels of the sorting ops `lovasz_weights` and `top_k` (issue 11): a
//! deterministic descending argsort (O(n log n), ties broken by index so every thread count gives
//! the same permutation), cumulative sums in a fixed order, the Lovász weights of labels taken in
//! a given order (Berman et al.; the gradient of the Lovász extension of the Jaccard loss), and
//! [`per_group`], which runs an op's group kernel per group of a tensor (groups in parallel).
//!
//! In: whole tensors in f64 (row-major over the loss's axes) and the axes a group spans. Out:
//! per-element data (weights put back at each element's position, or 0/1 marks), so the gradient
//! flows through the other factor of `relu(e) * lovasz_weights(e, y)` exactly as it would
//! scattered back through the permutation. Never here: graphs, buffers kept between calls.

use rayon::prelude::*;

use crate::ops::GroupKernel;

/// Runs an order op's group kernel `k` per group: `images[k]` and `out` are whole tensors of
/// the axis `sizes` (row-major; 1 for an axis the tensor lacks), a group is the elements sharing
/// every coordinate outside `over` (a bit mask of axes), in row-major order. Groups run in
/// parallel, each on one thread.
pub fn per_group(
    k: GroupKernel,
    images: &[&[f64]],
    sizes: &[usize],
    over: u16,
    consts: &[f64],
    out: &mut [f64],
) {
    let n_axes = sizes.len();
    // Flat index -> (group, position in group), by mixed radix over the two axis sets.
    let mut groups = 1usize;
    let mut members = 1usize;
    for (a, &s) in sizes.iter().enumerate() {
        if over & (1 << a) != 0 {
            members *= s;
        } else {
            groups *= s;
        }
    }
    let mut index = vec![Vec::with_capacity(members); groups];
    let total: usize = sizes.iter().product::<usize>().min(out.len());
    let mut coord = vec![0usize; n_axes];
    for flat in 0..total {
        let mut gid = 0;
        for (a, &c) in coord.iter().enumerate() {
            if over & (1 << a) == 0 {
                gid = gid * sizes[a] + c;
            }
        }
        index[gid].push(flat);
        for a in (0..n_axes).rev() {
            coord[a] += 1;
            if coord[a] < sizes[a] {
                break;
            }
            coord[a] = 0;
        }
    }
    let results: Vec<Vec<f64>> = index
        .par_iter()
        .map(|ix| {
            let members: Vec<Vec<f64>> = images
                .iter()
                .map(|im| ix.iter().map(|&i| im[i]).collect())
                .collect();
            let views: Vec<&[f64]> = members.iter().map(|m| m.as_slice()).collect();
            let mut v = vec![0.0; ix.len()];
            k(&views, consts, &mut v);
            v
        })
        .collect();
    for (ix, v) in index.iter().zip(results) {
        for (&i, x) in ix.iter().zip(v) {
            out[i] = x;
        }
    }
}

/// The kernel of `lovasz_weights(e, y)` on one group: the Lovász weights of `y` in the order
/// of `e` descending, put back at each element's position.
pub fn lovasz_weights_group(x: &[&[f64]], _: &[f64], out: &mut [f64]) {
    let order = argsort_desc(x[0]);
    let y: Vec<f64> = order.iter().map(|&k| x[1][k]).collect();
    for (&k, w) in order.iter().zip(lovasz_weights(&y)) {
        out[k] = w;
    }
}

/// The kernel of `top_k(x, m, percent)` on one group: 1 at the `max(1, floor(n percent /
/// 100))` largest `x` among the `n` elements where `m` is nonzero (ties by position).
pub fn top_k_group(x: &[&[f64]], c: &[f64], out: &mut [f64]) {
    let order = argsort_desc(x[0]);
    let m = |k: usize| x[1][k] != 0.0;
    let n = (0..x[0].len()).filter(|&k| m(k)).count();
    let keep = ((n as f64 * c[0] / 100.0).floor() as usize).clamp(1, n.max(1));
    for &k in order.iter().filter(|&&k| m(k)).take(keep.min(n)) {
        out[k] = 1.0;
    }
}

/// The permutation that sorts `x` in descending order: `x[p[0]] >= x[p[1]] >= ...`, equal values
/// in increasing index order, NaN first (largest under `f64::total_cmp` for positive NaN).
pub fn argsort_desc(x: &[f64]) -> Vec<usize> {
    let mut p: Vec<usize> = (0..x.len()).collect();
    // A total order (value descending, then index) makes the unstable parallel sort's result
    // unique, hence the same at any thread count.
    p.par_sort_unstable_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    p
}

/// Inclusive cumulative sums, summed left to right in f64.
pub fn cumsum(x: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    x.iter()
        .map(|&v| {
            acc += v;
            acc
        })
        .collect()
}

/// The Lovász weights of 0/1 labels `y` in the order the errors were sorted: with
/// `G = Σ y`, `J_k = 1 - (G - cumsum(y)_k) / (G + cumsum(1 - y)_k)`, `g_1 = J_1`,
/// `g_k = J_k - J_(k-1)`. Never divides by zero (`G = 0` makes every denominator `k`).
pub fn lovasz_weights(y: &[f64]) -> Vec<f64> {
    let g: f64 = y.iter().sum();
    let cy = cumsum(y);
    let cn = cumsum(&y.iter().map(|v| 1.0 - v).collect::<Vec<_>>());
    let j: Vec<f64> = cy
        .iter()
        .zip(&cn)
        .map(|(a, b)| 1.0 - (g - a) / (g + b))
        .collect();
    (0..j.len())
        .map(|k| if k == 0 { j[0] } else { j[k] - j[k - 1] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Jaccard loss of the error set made of the first `k` elements, by counting sets:
    /// `1 - |Y \ M| / |Y ∪ M|` (0 when both are empty).
    fn jaccard_of_prefix(y: &[f64], k: usize) -> f64 {
        let in_m = |i: usize| i < k;
        let in_y = |i: usize| y[i] == 1.0;
        let kept = (0..y.len()).filter(|&i| in_y(i) && !in_m(i)).count() as f64;
        let union = (0..y.len()).filter(|&i| in_y(i) || in_m(i)).count() as f64;
        if union == 0.0 {
            0.0
        } else {
            1.0 - kept / union
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]
        /// The weights are the increments of the Jaccard loss of growing prefixes.
        #[test]
        fn lovasz_weights_are_increments_of_the_jaccard_loss(bits in prop::collection::vec(any::<bool>(), 1..40)) {
            let y: Vec<f64> = bits.iter().map(|&b| f64::from(u8::from(b))).collect();
            let g = lovasz_weights(&y);
            for (k, gk) in g.iter().enumerate() {
                let want = jaccard_of_prefix(&y, k + 1) - jaccard_of_prefix(&y, k);
                prop_assert!((gk - want).abs() < 1e-12, "k = {k}: {gk} vs {want}");
            }
        }

        /// The argsort orders values descending with ties by index, as a sequential stable sort.
        #[test]
        fn argsort_is_a_descending_stable_order(v in prop::collection::vec(-3i32..3, 0..200)) {
            let x: Vec<f64> = v.iter().map(|&a| f64::from(a) * 0.5).collect();
            let p = argsort_desc(&x);
            let mut q: Vec<usize> = (0..x.len()).collect();
            q.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).unwrap());
            prop_assert_eq!(p, q);
        }
    }

    #[test]
    fn argsort_is_the_same_at_any_thread_count() {
        let x: Vec<f64> = (0..200_000).map(|i| ((i * 7919) % 1013) as f64).collect();
        let run = |t: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| argsort_desc(&x))
        };
        assert_eq!(run(1), run(3));
    }
}
