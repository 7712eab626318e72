//! Property tests: random well-typed programs drawn from the op table keep their values and
//! gradients through the optimiser's rewrites (stabilise, simplify, CSE, dead-node removal),
//! and the f32 path stays within a stated bound of the f64 reference.

use std::sync::Arc;

use crate::autodiff;
use crate::exec::reference::Interpreter;
use crate::exec::vm::Vm;
use crate::exec::{Bound, Executor};
use crate::ir::graph::{AxisSpace, Graph, NodeId};
use crate::ops::Op;
use crate::optimise;
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum E {
    X,
    Y,
    C(f64),
    Un(Op, Box<E>),
    Bin(Op, Box<E>, Box<E>),
    OneMinus(Box<E>),
    Where(Box<E>, Box<E>),
    PowC(Box<E>, f64),
    SumTimes(Box<E>),
    Square(Box<E>),
}

fn expr() -> impl Strategy<Value = E> {
    let leaf = prop_oneof![
        Just(E::X),
        Just(E::Y),
        prop::sample::select(vec![0.0, 1.0, -1.0, 0.5, 2.0]).prop_map(E::C)
    ];
    leaf.prop_recursive(5, 24, 2, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec![
                    Op::Neg,
                    Op::Sigmoid,
                    Op::Softplus,
                    Op::LogSigmoid,
                    Op::Tanh
                ]),
                inner.clone()
            )
                .prop_map(|(o, a)| E::Un(o, Box::new(a))),
            (
                prop::sample::select(vec![Op::Add, Op::Sub, Op::Mul, Op::Max]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(o, a, b)| E::Bin(o, Box::new(a), Box::new(b))),
            inner
                .clone()
                .prop_map(|a| E::OneMinus(Box::new(E::Un(Op::Sigmoid, Box::new(a))))),
            inner
                .clone()
                .prop_map(|a| E::Un(Op::Log, Box::new(E::Un(Op::Sigmoid, Box::new(a))))),
            (
                inner.clone(),
                prop::sample::select(vec![0.0, 1.0, 1.5, 2.0])
            )
                .prop_map(|(a, c)| E::PowC(Box::new(E::Un(Op::Sigmoid, Box::new(a))), c)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| E::Where(Box::new(a), Box::new(b))),
            inner.clone().prop_map(|a| E::SumTimes(Box::new(a))),
            inner.prop_map(|a| E::Square(Box::new(a))),
        ]
    })
}

fn build(g: &mut Graph, e: &E, x: NodeId, y: NodeId) -> NodeId {
    match e {
        E::X => x,
        E::Y => y,
        E::C(c) => g.c(*c),
        E::Un(o, a) => {
            let a = build(g, a, x, y);
            g.op1(*o, a)
        }
        E::Bin(o, a, b) => {
            let a = build(g, a, x, y);
            let b = build(g, b, x, y);
            g.op2(*o, a, b)
        }
        E::OneMinus(a) => {
            let a = build(g, a, x, y);
            let one = g.c(1.0);
            g.op2(Op::Sub, one, a)
        }
        E::Where(a, b) => {
            let a = build(g, a, x, y);
            let b = build(g, b, x, y);
            let h = g.c(0.5);
            let c = g.op2(Op::Gt, y, h);
            g.op3(Op::Where, c, a, b)
        }
        E::PowC(a, c) => {
            let a = build(g, a, x, y);
            let k = g.c(*c);
            g.op2(Op::Pow, a, k)
        }
        E::Square(a) => {
            let a = build(g, a, x, y);
            let two = g.c(2.0);
            let sq = g.op2(Op::Pow, a, two);
            let t = g.op2(Op::Mul, a, a);
            g.op2(Op::Add, sq, t)
        }
        E::SumTimes(a) => {
            let a = build(g, a, x, y);
            let s = g.reduce(Op::Sum, a, g.axes(a));
            let t = g.c(0.1);
            let s = g.op2(Op::Mul, s, t);
            g.op2(Op::Mul, s, x)
        }
    }
}

fn run<T: crate::ops::math::Real>(
    g: Graph,
    roots: Vec<NodeId>,
    xs: &[f64],
    ys: &[f64],
) -> Vec<Vec<f64>> {
    let n = xs.len();
    let exec = Interpreter::new(Arc::new(Bound {
        graph: g,
        roots,
        sizes: vec![n],
        grad_axes: vec![1],
        spatial: Vec::new(),
    }));
    let a =
        ArrayD::from_shape_vec(IxDyn(&[n]), xs.iter().map(|&v| T::from_f64(v)).collect()).unwrap();
    let b =
        ArrayD::from_shape_vec(IxDyn(&[n]), ys.iter().map(|&v| T::from_f64(v)).collect()).unwrap();
    exec.evaluate(&[a.view(), b.view()])
        .into_iter()
        .map(|r| {
            r.broadcast(IxDyn(&[n]))
                .unwrap()
                .iter()
                .map(|v| v.to_f64())
                .collect()
        })
        .collect()
}

/// The same roots (value, gradient) through the fused block VM.
fn run_fused<T: crate::ops::math::Real>(
    g: Graph,
    roots: Vec<NodeId>,
    xs: &[f64],
    ys: &[f64],
) -> Vec<Vec<f64>> {
    let n = xs.len();
    // The kernel preparation the engine applies (polynomial collection, product fusion).
    let (g, roots) = optimise::for_kernels(&g, &roots);
    let mut vm = Vm::<T>::new(
        Arc::new(Bound {
            graph: g,
            roots,
            sizes: vec![n],
            grad_axes: vec![1],
            spatial: Vec::new(),
        }),
        true,
        true,
    )
    .expect("fusable");
    let a: Vec<T> = xs.iter().map(|&v| T::from_f64(v)).collect();
    let b: Vec<T> = ys.iter().map(|&v| T::from_f64(v)).collect();
    let mut grad = vec![T::default(); n];
    let value = vm.run(&[&a, &b], &mut [&mut grad], false).unwrap();
    vec![
        vec![value.to_f64()],
        grad.iter().map(|v| v.to_f64()).collect(),
    ]
}

/// A fixed seed, so CI runs the same cases every time; set PROPTEST_RNG_SEED to explore others.
fn config(cases: u32) -> ProptestConfig {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1055_1A96);
    ProptestConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (!a.is_finite() && !b.is_finite()) || (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rewrites_preserve_value_and_gradient(e in expr(), xs in prop::collection::vec(-4.0f64..4.0, 6), ys in prop::collection::vec(0.0f64..1.0, 6)) {
        let space = AxisSpace { names: vec!["N".into()], packs: vec![false] };
        let mut g = Graph::new(space);
        let x = g.input(0, 1);
        let y = g.input(1, 1);
        let body = build(&mut g, &e, x, y);
        let out = g.reduce(Op::Sum, body, g.axes(body));
        // Unoptimised reference: autodiff on the raw graph.
        let mut raw = g.clone();
        let gr = autodiff::grad(&mut raw, out, &[x])[0].unwrap_or(out);
        let want = run::<f64>(raw, vec![out, gr], &xs, &ys);
        // Optimised path: stabilise, autodiff, simplify.
        let (mut g1, r1) = optimise::before_autodiff(&g, &[out, x]);
        let gr1 = autodiff::grad(&mut g1, r1[0], &[r1[1]])[0];
        let has_grad = gr1.is_some();
        let roots = vec![r1[0], gr1.unwrap_or(r1[0])];
        let (g2, r2) = optimise::after_autodiff(&g1, &roots);
        let got = run::<f64>(g2.clone(), r2.clone(), &xs, &ys);
        prop_assert!(close(got[0][0], want[0][0], 1e-9, 1e-12), "value {} vs {}", got[0][0], want[0][0]);
        if has_grad {
            for i in 0..xs.len() {
                // The raw gradient may be NaN where the rewritten one is finite (that is the point
                // of stabilisation); compare where the raw one is finite.
                if want[1][i].is_finite() {
                    prop_assert!(close(got[1][i], want[1][i], 1e-8, 1e-10), "grad[{i}] {} vs {}", got[1][i], want[1][i]);
                }
            }
        }
        // The fused VM (f64) equals the reference interpreter to 1e-12 relative.
        if has_grad {
            let fused = run_fused::<f64>(g2.clone(), r2.clone(), &xs, &ys);
            prop_assert!(close(fused[0][0], got[0][0], 1e-12, 1e-13), "fused value {} vs {}", fused[0][0], got[0][0]);
            for i in 0..xs.len() {
                prop_assert!(close(fused[1][i], got[1][i], 1e-12, 1e-13), "fused grad[{i}] {} vs {}", fused[1][i], got[1][i]);
            }
            let fused32 = run_fused::<f32>(g2.clone(), r2.clone(), &xs, &ys);
            let gscale = got[1].iter().fold(1.0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
            for i in 0..xs.len() {
                prop_assert!(close(fused32[1][i], got[1][i], 1e-3, 1e-3 * gscale), "fused f32 grad[{i}] {} vs {}", fused32[1][i], got[1][i]);
            }
        }
        // f32 against the f64 reference on the optimised graph.
        let got32 = run::<f32>(g2, r2, &xs, &ys);
        let scale = got[0][0].abs().max(1.0);
        prop_assert!(close(got32[0][0], got[0][0], 1e-4, 1e-4 * scale), "f32 value {} vs {}", got32[0][0], got[0][0]);
    }
}

/// A program drawn from the op table itself: every elementwise op of the table may appear, with
/// its own arity, so a new op is covered without new test code. `PlaneSum` reduces over the
/// innermost axis (one group per plane) and multiplies the per-plane sums back onto `x`.
#[derive(Clone, Debug)]
enum P {
    X,
    Y,
    C(f64),
    Op(usize, Vec<P>),
    PlaneSum(Box<P>),
}

fn table_ops() -> Vec<usize> {
    crate::ops::OPS
        .iter()
        .enumerate()
        .filter(|(_, d)| d.class == crate::ops::Class::Map && d.arity > 0 && d.op != Op::Broadcast)
        .map(|(i, _)| i)
        .collect()
}

fn program() -> impl Strategy<Value = P> {
    let leaf = prop_oneof![
        Just(P::X),
        Just(P::Y),
        prop::sample::select(vec![0.0, 1.0, -1.0, 0.5, 2.0, 3.0]).prop_map(P::C)
    ];
    leaf.prop_recursive(6, 40, 3, |inner| {
        prop_oneof![
            4 => (prop::sample::select(table_ops()), prop::collection::vec(inner.clone(), 3)).prop_map(|(i, mut args)| {
                args.truncate(crate::ops::OPS[i].arity);
                P::Op(i, args)
            }),
            1 => inner.prop_map(|a| P::PlaneSum(Box::new(a))),
        ]
    })
}

fn discontinuous(p: &P) -> bool {
    match p {
        P::Op(i, args) => {
            crate::ops::OPS[*i].diff != crate::ops::Diff::Smooth || args.iter().any(discontinuous)
        }
        P::PlaneSum(a) => discontinuous(a),
        _ => false,
    }
}

fn build_p(g: &mut Graph, p: &P, x: NodeId, y: NodeId) -> NodeId {
    match p {
        P::X => x,
        P::Y => y,
        P::C(c) => g.c(*c),
        P::Op(i, args) => {
            let ids: Vec<NodeId> = args.iter().map(|a| build_p(g, a, x, y)).collect();
            g.add(crate::ops::OPS[*i].op, ids, crate::ir::graph::Attr::None)
        }
        P::PlaneSum(a) => {
            let a = build_p(g, a, x, y);
            let a = g.broadcast(a, 3);
            let s = g.reduce(Op::Sum, a, 2);
            let k = g.c(0.1);
            let s = g.op2(Op::Mul, s, k);
            g.op2(Op::Mul, s, x)
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// The fused VM (f64 and f32) against the reference interpreter on the same optimised graph,
    /// over two axes (3 planes of 5), with per-plane reductions.
    #[test]
    fn table_programs_fused_equal_reference(p in program(), xs in prop::collection::vec(-3.0f64..3.0, 15), ys in prop::collection::vec(0.0f64..1.0, 15)) {
        let space = AxisSpace { names: vec!["P".into(), "N".into()], packs: vec![false, false] };
        let mut g = Graph::new(space);
        let x = g.input(0, 3);
        let y = g.input(1, 3);
        let body = build_p(&mut g, &p, x, y);
        let body = g.op2(Op::Mul, body, x); // every program depends on x
        let body = g.broadcast(body, 3);
        let out = g.reduce(Op::Sum, body, 3);
        let (mut g1, r1) = optimise::before_autodiff(&g, &[out, x]);
        let Some(gr) = autodiff::grad(&mut g1, r1[0], &[r1[1]])[0] else { return Ok(()) };
        let (g2, r2) = optimise::after_autodiff(&g1, &[r1[0], gr]);
        let bound = Bound { graph: g2.clone(), roots: r2.clone(), sizes: vec![3, 5], grad_axes: vec![3], spatial: Vec::new() };
        let a = ArrayD::from_shape_vec(IxDyn(&[3, 5]), xs.clone()).unwrap();
        let b = ArrayD::from_shape_vec(IxDyn(&[3, 5]), ys.clone()).unwrap();
        let want = Interpreter::new(Arc::new(bound.clone())).evaluate(&[a.view(), b.view()]);
        let want_v = want[0].iter().next().copied().unwrap();
        let want_g: Vec<f64> = want[1].broadcast(IxDyn(&[3, 5])).unwrap().iter().copied().collect();
        let (kg, kr) = optimise::for_kernels(&g2, &r2);
        let kb = Arc::new(Bound { graph: kg, roots: kr, sizes: vec![3, 5], grad_axes: vec![3], spatial: Vec::new() });
        let mut vm = Vm::<f64>::new(kb.clone(), true, true).expect("fusable");
        let mut grad = vec![0.0; 15];
        let v = vm.run(&[&xs, &ys], &mut [&mut grad], false).unwrap();
        // Reductions sum in another order than the reference (16 lanes, chunks), so a gradient
        // that cancels to 0 there may keep ~1e-13 here: the absolute term scales with max|g|.
        let gscale = want_g.iter().fold(0.0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
        prop_assert!(close(v, want_v, 1e-12, 1e-13), "fused f64 value {v} vs {want_v}");
        for i in 0..15 {
            prop_assert!(close(grad[i], want_g[i], 1e-12, 1e-12 * gscale.max(1.0)), "fused f64 grad[{i}] {} vs {}", grad[i], want_g[i]);
        }
        // f32: within 1e-3 relative of the f64 reference where the f64 result is well conditioned.
        let mut vm32 = Vm::<f32>::new(kb, true, true).expect("fusable");
        let x32: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
        let y32: Vec<f32> = ys.iter().map(|&v| v as f32).collect();
        let mut g32 = vec![0.0f32; 15];
        let v32 = vm32.run(&[&x32, &y32], &mut [&mut g32], false).unwrap() as f64;
        // (Programs with comparisons or `sign` can flip a branch when the inputs round to f32.)
        if !discontinuous(&p) && want_v.is_finite() && want_v.abs() < 1e6 && gscale < 1e6 {
            prop_assert!(close(v32, want_v, 1e-3, 1e-3), "fused f32 value {v32} vs {want_v}");
        }
    }
}
