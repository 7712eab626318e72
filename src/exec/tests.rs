//! Generated from the op table: every map op and every reduction runs on the block VM and on the
//! reference interpreter over buffers of several chunks (so several blocks, a ragged last block
//! and a ragged last chunk), and the two agree — the map's stored output elementwise, the
//! reductions per group and in total. A table entry whose VM kernel or combiner disagrees with
//! its own f64 definition fails here, whatever its name.

use std::sync::Arc;

use crate::exec::reference::Interpreter;
use crate::exec::vm::{Vm, BLOCK, CHUNK_BLOCKS};
use crate::exec::{Bound, Executor};
use crate::ir::graph::{Attr, AxisSpace, Graph, NodeId};
use crate::ops::{Class, Op, OPS};

/// Axes `[P, S]`: 3 planes of 2 chunks and a ragged part of a block each.
fn space() -> (AxisSpace, Vec<usize>) {
    let space = AxisSpace {
        names: vec!["P".into(), "S".into()],
        packs: vec![false, false],
    };
    (space, vec![3, 2 * CHUNK_BLOCKS * BLOCK + BLOCK / 2 + 37])
}

/// Input `k`'s data: the op's test grid (its domain), perturbed per element so that blocks
/// differ, and so that ties and exact grid values also occur.
fn data(grid: &[f64], k: usize, n: usize) -> Vec<f64> {
    let grid = if grid.is_empty() {
        &[-0.7, 0.3, 1.9][..]
    } else {
        grid
    };
    (0..n)
        .map(|i| {
            let g = grid[(i * 7 + k * 3) % grid.len()];
            if i % 5 == 0 {
                g
            } else {
                g * (1.0 + 0.013 * ((i % 17) as f64))
            }
        })
        .collect()
}

/// Runs `bound` on both executors; returns (value, stored output) of each.
fn both(bound: Bound, inputs: &[Vec<f64>], n: usize) -> ((f64, Vec<f64>), (f64, Vec<f64>)) {
    let bound = Arc::new(bound);
    let refs: Vec<&[f64]> = inputs.iter().map(|v| v.as_slice()).collect();
    let mut vm = Vm::<f64>::new(bound.clone(), true, true).expect("fusable");
    let mut interp = Interpreter::new(bound);
    let mut a = vec![0.0; n];
    let mut b = vec![0.0; n];
    let va = Executor::<f64>::run(&mut vm, &refs, &mut [&mut a[..]], false).expect("runs");
    let vb = Executor::<f64>::run(&mut interp, &refs, &mut [&mut b[..]], false).expect("runs");
    ((va, a), (vb, b))
}

fn close(x: f64, y: f64) -> bool {
    // The VM's vectorised exp/ln are within 2 ulp of libm's; sums are reassociated in blocks.
    x.to_bits() == y.to_bits()
        || (x.is_finite() && y.is_finite() && (x - y).abs() <= 1e-12 * x.abs().max(y.abs()))
        || (x.is_nan() && y.is_nan())
}

#[test]
fn every_map_op_agrees_with_the_interpreter_on_multi_chunk_buffers() {
    let (space, sizes) = space();
    let n: usize = sizes.iter().product();
    let mut tested = 0;
    for def in OPS.iter().filter(|d| d.class == Class::Map && d.arity > 0) {
        let mut g = Graph::new(space.clone());
        let all = space.all();
        let ins: Vec<NodeId> = (0..def.arity).map(|k| g.input(k, all)).collect();
        let out = g.add(def.op, ins, Attr::None);
        let total = g.reduce(Op::Sum, out, all);
        let inputs: Vec<Vec<f64>> = (0..def.arity).map(|k| data(def.grid, k, n)).collect();
        let bound = Bound {
            graph: g,
            roots: vec![total, out],
            sizes: sizes.clone(),
            grad_axes: vec![all],
            spatial: Vec::new(),
        };
        let ((va, a), (vb, b)) = both(bound, &inputs, n);
        let bad = (0..n).find(|&i| !close(a[i], b[i]));
        assert!(
            bad.is_none(),
            "{}: element {:?}: VM {} vs interpreter {}",
            def.name,
            bad,
            a[bad.unwrap_or(0)],
            b[bad.unwrap_or(0)]
        );
        let scale: f64 = b.iter().map(|v| v.abs()).sum();
        assert!(
            close(va, vb) || (va - vb).abs() <= 1e-9 * scale,
            "{}: sum {va} vs {vb}",
            def.name
        );
        tested += 1;
    }
    assert!(tested >= 30, "only {tested} map ops");
}

#[test]
fn every_reduction_agrees_with_the_interpreter_on_multi_chunk_buffers() {
    let (space, sizes) = space();
    let n: usize = sizes.iter().product();
    let (p, s) = (1u16, 2u16);
    let mut tested = 0;
    for def in OPS
        .iter()
        .filter(|d| matches!(d.class, Class::Reduce { .. }))
    {
        // Per plane (over S) and over everything, both consumed by the value; the stored output
        // is the input scaled by the per-plane result, so every group's value is compared.
        let mut g = Graph::new(space.clone());
        let x = g.input(0, p | s);
        let per_plane = g.reduce(def.op, x, s);
        let whole = g.reduce(def.op, x, p | s);
        let sum_planes = g.reduce(Op::Sum, per_plane, p);
        let value = g.op2(Op::Add, sum_planes, whole);
        let out = g.op2(Op::Mul, x, per_plane);
        let inputs = vec![data(&[-2.5, -0.7, 0.3, 1.9], 0, n)];
        let bound = Bound {
            graph: g,
            roots: vec![value, out],
            sizes: sizes.clone(),
            grad_axes: vec![p | s],
            spatial: Vec::new(),
        };
        let ((va, a), (vb, b)) = both(bound, &inputs, n);
        assert!(close(va, vb), "{}: value {va} vs {vb}", def.name);
        let bad = (0..n).find(|&i| !close(a[i], b[i]));
        assert!(bad.is_none(), "{}: element {:?}", def.name, bad);
        tested += 1;
    }
    assert!(tested >= 3, "only {tested} reductions");
}
