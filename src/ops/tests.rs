//! Tests generated from the op table: adding an op adds its tests with no new test code.
//! - every smooth elementwise op's derivative rule against central differences of its f64
//!   reference, at every point of its grid (all argument combinations);
//! - every f32 kernel against the f64 reference at the same points;
//! - every reduction's derivative rule against central differences on a small random vector.

use std::sync::Arc;

use crate::autodiff;
use crate::exec::reference::Interpreter;
use crate::exec::Bound;
use crate::ir::graph::{AxisSpace, Graph, NodeId};
use crate::ops::{Class, Diff, Op, OPS};
use ndarray::{ArrayD, IxDyn};

fn points(grid: &[f64], arity: usize) -> Vec<Vec<f64>> {
    let mut out = vec![vec![]];
    for _ in 0..arity {
        out = out
            .into_iter()
            .flat_map(|p| {
                grid.iter().map(move |&x| {
                    let mut q = p.clone();
                    q.push(x);
                    q
                })
            })
            .collect();
    }
    out
}

/// Evaluates `op` and its symbolic gradients at a point (scalar inputs).
fn symbolic(op: Op, at: &[f64]) -> (f64, Vec<Option<f64>>) {
    let mut g = Graph::new(AxisSpace::default());
    let ins: Vec<NodeId> = (0..at.len()).map(|i| g.input(i, 0)).collect();
    let out = g.add(op, ins.clone(), crate::ir::graph::Attr::None);
    let grads = autodiff::grad(&mut g, out, &ins);
    let mut roots = vec![out];
    roots.extend(grads.iter().map(|x| x.unwrap_or(out)));
    let exec = Interpreter::new(Arc::new(Bound {
        graph: g,
        roots,
        sizes: vec![],
        grad_axes: vec![],
        spatial: Vec::new(),
    }));
    let arrays: Vec<ArrayD<f64>> = at
        .iter()
        .map(|&x| ArrayD::from_elem(IxDyn(&[]), x))
        .collect();
    let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
    let res = exec.evaluate(&views);
    let v = res[0].iter().next().copied().unwrap();
    let gs = grads
        .iter()
        .enumerate()
        .map(|(k, x)| x.map(|_| res[k + 1].iter().next().copied().unwrap()))
        .collect();
    (v, gs)
}

#[test]
fn derivative_rules_match_finite_differences_at_grid_points() {
    let mut checked = 0;
    for def in OPS
        .iter()
        .filter(|d| d.class == Class::Map && d.diff == Diff::Smooth && !d.grid.is_empty())
    {
        for at in points(def.grid, def.arity) {
            // Documented kink of max/min: at a tie the adjoint goes to the first argument.
            if matches!(def.op, Op::Max | Op::Min) && at[0] == at[1] {
                continue;
            }
            let (v, grads) = symbolic(def.op, &at);
            assert!(
                (v - (def.f64)(&at)).abs() <= 1e-15 * v.abs().max(1.0),
                "{} value at {at:?}",
                def.name
            );
            for (k, gk) in grads.iter().enumerate() {
                if !def.op.differentiable_arg(k) {
                    assert!(
                        gk.is_none(),
                        "{}: argument {k} is data but got a gradient",
                        def.name
                    );
                    continue;
                }
                let gk = gk.unwrap_or_else(|| panic!("{}: no gradient for argument {k}", def.name));
                let f = |d: f64| {
                    let mut p = at.clone();
                    p[k] += d;
                    (def.f64)(&p)
                };
                let h = 1e-5 * at[k].abs().max(1.0);
                let d1 = (f(h) - f(-h)) / (2.0 * h);
                let d2 = (f(h / 2.0) - f(-h / 2.0)) / h;
                let fd = (4.0 * d2 - d1) / 3.0;
                assert!(
                    (fd - gk).abs() <= 1e-7 * fd.abs().max(1.0),
                    "{} d/darg{k} at {at:?}: rule {gk}, fd {fd}",
                    def.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} derivative checks ran");
}

/// Error scale of an op at a point: its value, its arguments and the product of the first two
/// (the intermediate of the fused arithmetic ops).
fn scale(want: f64, at: &[f64]) -> f64 {
    let mut m = want.abs();
    for x in at {
        m = m.max(x.abs());
    }
    if at.len() >= 2 {
        m = m.max((at[0] * at[1]).abs());
    }
    m.max(1e-30)
}

/// A block kernel: op, output, three arguments.
type Kernel<T> = fn(Op, &mut [T], &[T], &[T], &[T]);

#[test]
fn every_kernel_matches_the_f64_reference() {
    use crate::ops::{block_kernel_f32, block_kernel_f64};
    for def in OPS
        .iter()
        .filter(|d| d.class == Class::Map && !d.grid.is_empty())
    {
        for at in points(def.grid, def.arity) {
            // f32 kernels see the inputs rounded to f32: compare with the f64 value there.
            let at32: Vec<f32> = at.iter().map(|&x| x as f32).collect();
            let at_r: Vec<f64> = at32.iter().map(|&x| x as f64).collect();
            let want_r = (def.f64)(&at_r);
            let tol32 = 4.0 * f32::EPSILON as f64 * scale(want_r, &at_r) + 1e-37;
            let reference32 = (def.f32)(&at32) as f64;
            assert!(
                (reference32 - want_r).abs() <= tol32,
                "{} f32 reference at {at:?}: {reference32} vs {want_r}",
                def.name
            );
            let pad = |v: &[f32], k: usize| vec![v.get(k).copied().unwrap_or(v[0]); 1];
            let want = (def.f64)(&at);
            let pad64 = |k: usize| vec![at.get(k).copied().unwrap_or(at[0]); 1];
            let tol64 = 8.0 * f64::EPSILON * scale(want, &at);
            // Both variants: plain, and with fused multiply-adds.
            let k32: [Kernel<f32>; 2] = [block_kernel_f32::<false>, block_kernel_f32::<true>];
            let k64: [Kernel<f64>; 2] = [block_kernel_f64::<false>, block_kernel_f64::<true>];
            for (kernel32, kernel64) in k32.iter().zip(&k64) {
                let mut out32 = [0.0f32];
                kernel32(
                    def.op,
                    &mut out32,
                    &pad(&at32, 0),
                    &pad(&at32, 1),
                    &pad(&at32, 2),
                );
                assert!(
                    (out32[0] as f64 - want_r).abs() <= tol32,
                    "{} f32 block kernel at {at:?}: {} vs {want_r}",
                    def.name,
                    out32[0]
                );
                // f64 block kernels: the vectorised math is within 2 ulp per call.
                let mut out64 = [0.0f64];
                kernel64(def.op, &mut out64, &pad64(0), &pad64(1), &pad64(2));
                assert!(
                    (out64[0] - want).abs() <= tol64,
                    "{} f64 block kernel at {at:?}: {} vs {want}",
                    def.name,
                    out64[0]
                );
            }
        }
    }
}

#[test]
fn reduction_rules_match_finite_differences() {
    let space = AxisSpace {
        names: vec!["N".into()],
        packs: vec![false],
    };
    let x = [0.3, -1.2, 2.5, 0.9, -0.4];
    for def in OPS
        .iter()
        .filter(|d| matches!(d.class, Class::Reduce { .. }))
    {
        let mut g = Graph::new(space.clone());
        let inp = g.input(0, 1);
        let out = g.reduce(def.op, inp, 1);
        let gr = autodiff::grad(&mut g, out, &[inp])[0].expect("reductions are differentiable");
        let exec = Interpreter::new(Arc::new(Bound {
            graph: g,
            roots: vec![out, gr],
            sizes: vec![x.len()],
            grad_axes: vec![],
            spatial: Vec::new(),
        }));
        let a = ArrayD::from_shape_vec(IxDyn(&[x.len()]), x.to_vec()).unwrap();
        let res = exec.evaluate(&[a.view()]);
        let grad = res[1].broadcast(IxDyn(&[x.len()])).unwrap().to_owned();
        for i in 0..x.len() {
            let f = |d: f64| {
                let mut p = x.to_vec();
                p[i] += d;
                p.iter().fold(
                    match def.class {
                        Class::Reduce { init } => init,
                        _ => 0.0,
                    },
                    |s, &v| (def.f64)(&[s, v]),
                )
            };
            let fd = (f(1e-6) - f(-1e-6)) / 2e-6;
            assert!(
                (fd - grad[i]).abs() < 1e-6,
                "{} element {i}: rule {} fd {fd}",
                def.name,
                grad[i]
            );
        }
    }
}

#[test]
fn table_is_consistent() {
    for (i, def) in OPS.iter().enumerate() {
        assert_eq!(def.op as usize, i, "{} is out of order", def.name);
        if def.callable {
            assert!(
                crate::ops::lookup(def.name, def.arity) == Some(def.op),
                "{} does not resolve",
                def.name
            );
        }
        assert!(!def.doc.is_empty(), "{} has no doc", def.name);
    }
}

/// IEEE special cases of `pow` the vectorised `exp(b ln|a|)` does not give by itself
/// (found by the table-program proptest): 1^b = 1 for every b, a^0 = 1 for every a.
#[test]
fn pow_kernels_keep_ieee_special_cases() {
    use crate::ops::{block_kernel_f32, block_kernel_f64};
    let cases = [
        (1.0, f64::NEG_INFINITY),
        (1.0, f64::INFINITY),
        (1.0, f64::NAN),
        (f64::NAN, 0.0),
        (0.0, 0.0),
    ];
    for (a, b) in cases {
        assert_eq!(a.powf(b), 1.0, "libm pow({a}, {b})");
        for fma in [false, true] {
            let (mut o32, mut o64) = ([0.0f32], [0.0f64]);
            let (a32, b32) = ([a as f32], [b as f32]);
            if fma {
                block_kernel_f32::<true>(Op::Pow, &mut o32, &a32, &b32, &a32);
                block_kernel_f64::<true>(Op::Pow, &mut o64, &[a], &[b], &[a]);
            } else {
                block_kernel_f32::<false>(Op::Pow, &mut o32, &a32, &b32, &a32);
                block_kernel_f64::<false>(Op::Pow, &mut o64, &[a], &[b], &[a]);
            }
            assert_eq!((o32[0], o64[0]), (1.0, 1.0), "pow({a}, {b}), fma {fma}");
        }
    }
}

/// Every operator the grammar has resolves to exactly one table entry by symbol and arity, and
/// the table writes it with that symbol (the lowering's `expect` relies on this).
#[test]
fn every_operator_symbol_has_one_table_entry() {
    use crate::syntax::ast::{BinOp, UnOp};
    let binary = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Pow,
        BinOp::Gt,
        BinOp::Lt,
        BinOp::Ge,
        BinOp::Le,
        BinOp::Eq,
        BinOp::Ne,
        BinOp::And,
        BinOp::Or,
    ];
    for op in binary {
        let hits = OPS
            .iter()
            .filter(|d| d.symbol == Some(op.symbol()) && d.arity == 2)
            .count();
        assert_eq!(hits, 1, "`{}`", op.symbol());
        assert!(crate::ops::by_symbol(op.symbol(), 2).is_some());
    }
    for op in [UnOp::Neg, UnOp::Not] {
        let hits = OPS
            .iter()
            .filter(|d| d.symbol == Some(op.symbol()) && d.arity == 1)
            .count();
        assert_eq!(hits, 1, "`{}`", op.symbol());
    }
}

/// One image for the window-op tests: 2-D, sides that fit every sample window at its scale.
const WINDOW_DIMS: &[usize] = &[7, 6];

fn random_image(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = crate::api::gradcheck::Rng::new(seed);
    (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

/// Every window and order op of the table: its sample constants pass `validate` at the test
/// sides, and a bad constant of each kind is refused.
#[test]
fn window_ops_validate_their_sample_constants() {
    use crate::ops::window::validate;
    use crate::ops::ConstArg;
    let mut checked = 0;
    for def in OPS.iter().filter(|d| d.class.image_args().is_some()) {
        let sp = def
            .spatial
            .unwrap_or_else(|| panic!("{}: a window or order op without a Spatial part", def.name));
        assert_eq!(sp.consts.len(), sp.sample.len(), "{}", def.name);
        let image_args = def.class.image_args().unwrap();
        assert_eq!(
            def.arity,
            image_args + sp.consts.len(),
            "{}: arity",
            def.name
        );
        validate(def.op, sp.sample, WINDOW_DIMS)
            .unwrap_or_else(|e| panic!("{}: sample {:?}: {e}", def.name, sp.sample));
        for (k, kind) in sp.consts.iter().enumerate() {
            let bad = match kind {
                ConstArg::Window => 4.0,
                ConstArg::Sigma => 0.0,
                ConstArg::Scale => 0.5,
                ConstArg::Percent => 101.0,
                ConstArg::Axis => 2.0,
                ConstArg::Offset => 0.5,
            };
            let mut c = sp.sample.to_vec();
            c[k] = bad;
            assert!(
                validate(def.op, &c, WINDOW_DIMS).is_err(),
                "{}: {kind:?} = {bad}",
                def.name
            );
            c[k] = f64::NAN;
            assert!(
                validate(def.op, &c, WINDOW_DIMS).is_err(),
                "{}: {kind:?} = NaN",
                def.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} constant checks ran");
}

/// Every differentiable window op: its derivative rule (the adjoint op its entry names, with
/// the node's constants) against central differences of `f(x) = <op(x), y>` on a random image:
/// for a linear op this is the inner-product identity `<K x, y> = <x, K^T y>`; for the pools it
/// checks the scatter of the adjoint to each window's extremum (random values: no ties).
#[test]
fn window_op_derivatives_match_finite_differences() {
    use crate::ir::graph::Attr;
    use crate::ops::window::run;
    let dims = WINDOW_DIMS;
    let n: usize = dims.iter().product();
    let sizes = [n];
    let mut checked = 0;
    for def in OPS
        .iter()
        .filter(|d| matches!(d.class, Class::Window { .. }) && d.diff == Diff::Smooth)
    {
        let sp = def.spatial.expect("a Spatial part");
        let image_args = def.class.image_args().unwrap();
        assert_eq!(
            image_args, 1,
            "{}: smooth window ops take one image",
            def.name
        );
        let eval = |op: Op, images: &[&[f64]], consts: &[f64]| {
            let mut out = vec![0.0; n];
            run(op, 0, images, &sizes, dims, consts, &mut out);
            out
        };
        // The rule's node: which op, reading which of (adjoint, x), with which constants.
        let mut g = Graph::new(AxisSpace::default());
        let x_id = g.input(0, 0);
        let mut args = vec![x_id];
        args.extend(sp.sample.iter().map(|&c| g.c(c)));
        let out = g.add(def.op, args, Attr::None);
        let adj = g.input(1, 0);
        let node = g.node(out).clone();
        let need = vec![true; def.arity];
        let d = (def.grad)(&mut g, &node, out, adj, &need);
        assert!(
            d[1..].iter().all(|x| x.is_none()),
            "{}: constants get no gradient",
            def.name
        );
        let dn = g.node(d[0].expect("a gradient for the image")).clone();
        let dsp = dn.op.def().spatial.expect("the adjoint is a window op");
        let dimg = dn.op.def().class.image_args().unwrap();
        let dconsts: Vec<f64> = dn.args[dimg..]
            .iter()
            .map(|&a| crate::ops::const_value(g.node(a)).expect("constant"))
            .collect();
        assert_eq!(dconsts.len(), dsp.consts.len());
        for seed in 1..4 {
            let x = random_image(n, seed);
            let y = random_image(n, seed + 100);
            let images: Vec<&[f64]> = dn.args[..dimg]
                .iter()
                .map(|&a| if a == adj { &y[..] } else { &x[..] })
                .collect();
            let rule = eval(dn.op, &images, &dconsts);
            let f = |x: &[f64]| -> f64 {
                eval(def.op, &[x], sp.sample)
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            for i in 0..n {
                let h = 1e-6;
                let mut xp = x.clone();
                xp[i] += h;
                let mut xm = x.clone();
                xm[i] -= h;
                let fd = (f(&xp) - f(&xm)) / (2.0 * h);
                assert!(
                    (fd - rule[i]).abs() <= 1e-6 * fd.abs().max(1.0),
                    "{} d/dx[{i}]: rule {}, fd {fd}",
                    def.name,
                    rule[i]
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 1000,
        "only {checked} window derivative checks ran"
    );
}
