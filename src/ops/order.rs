//! Order-statistic kernels of the planned sorting ops (issue 11): a deterministic descending
//! argsort (parallel, O(n log n), ties broken by index so every thread count gives the same
//! permutation), cumulative sums in a fixed order, and the Lovász weights of labels taken in a
//! given order (Berman et al.; the gradient of the Lovász extension of the Jaccard loss).
//!
//! In: values or labels of one problem. Out: a permutation or weights. Never here: gathering,
//! scattering gradients through the permutation (the op will do that), graphs.

#![cfg_attr(not(test), allow(dead_code))]

use rayon::prelude::*;

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
