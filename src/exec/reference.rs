//! The reference interpreter: evaluates a graph node by node over whole ndarray buffers, in f64
//! (the oracle for every later optimisation and kernel) or f32 (elementwise ops in f32,
//! reductions accumulated in f64 in a fixed order). Each value has one dimension per axis of the
//! loss, of size 1 where the value lacks that axis, so named broadcasting is ndarray
//! broadcasting.
//!
//! Never here: language knowledge (invariant 7) or parallelism. Straightforward by design: the
//! fused block VM replaces it on the hot path.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};

use crate::exec::{check_inputs, Bound, Executor};
use crate::ir::graph::{Attr, NodeId};
use crate::ops::math::Real;
use crate::ops::{const_value, window, Class, Op};

pub struct Interpreter {
    bound: std::sync::Arc<Bound>,
    last_use: Vec<usize>,
    live: Vec<bool>,
    /// Axes of each input the graph reads (0 for inputs it does not have).
    input_axes: Vec<u16>,
}

impl Interpreter {
    #[allow(clippy::needless_range_loop)]
    pub fn new(bound: std::sync::Arc<Bound>) -> Self {
        let g = &bound.graph;
        let live = g.reachable(&bound.roots);
        let mut last_use = vec![0usize; g.len()];
        for id in 0..g.len() {
            if live[id] {
                for &a in &g.node(id as NodeId).args {
                    last_use[a as usize] = id;
                }
            }
        }
        for &r in &bound.roots {
            last_use[r as usize] = usize::MAX;
        }
        let input_axes = bound
            .input_axes()
            .into_iter()
            .map(|a| a.unwrap_or(0))
            .collect();
        Interpreter {
            bound,
            last_use,
            live,
            input_axes,
        }
    }

    /// Each input's data (contiguous, row-major) as the array [`Interpreter::evaluate`] reads:
    /// one dimension per axis of the loss, size 1 along the axes the input lacks; an empty
    /// buffer (an absent optional input) stays empty.
    pub fn views<'a, T>(&self, inputs: &[&'a [T]]) -> Vec<ArrayViewD<'a, T>> {
        inputs
            .iter()
            .zip(&self.input_axes)
            .map(|(x, &a)| {
                let shape = if x.is_empty() {
                    vec![0]
                } else {
                    self.shape_of(a)
                };
                ArrayViewD::from_shape(IxDyn(&shape), x).expect("input matches its internal shape")
            })
            .collect()
    }

    fn shape_of(&self, axes: u16) -> Vec<usize> {
        self.bound
            .sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| if axes & (1 << i) != 0 { s } else { 1 })
            .collect()
    }
}

impl<T: Real> Executor<T> for Interpreter {
    fn run(
        &mut self,
        inputs: &[&[T]],
        grads: &mut [&mut [T]],
        check_finite: bool,
    ) -> Result<T, usize> {
        if check_finite {
            check_inputs(inputs)?;
        }
        let outs = self.evaluate(&self.views(inputs));
        for (k, buf) in grads.iter_mut().enumerate() {
            let shape = self.shape_of(self.bound.grad_axes[k]);
            let full = outs[k + 1]
                .broadcast(IxDyn(&shape))
                .expect("gradient broadcasts to its input");
            for (d, s) in buf.iter_mut().zip(full.iter()) {
                *d = *s;
            }
        }
        Ok(outs[0].iter().next().copied().unwrap_or_default())
    }

    fn passes(&self) -> usize {
        let g = &self.bound.graph;
        let full = self.bound.graph.space.all();
        (0..g.len())
            .filter(|&i| {
                self.live[i]
                    && g.node(i as NodeId).axes == full
                    && g.node(i as NodeId).op != Op::Input
            })
            .count()
    }
}

impl Interpreter {
    /// Evaluates every root over whole arrays (`inputs[i]` in its internal shape); each result
    /// has size 1 along the axes the root lacks.
    pub fn evaluate<T: Real>(&self, inputs: &[ArrayViewD<T>]) -> Vec<ArrayD<T>> {
        self.evaluate_with(inputs, &[], &[]).0
    }

    /// As [`Interpreter::evaluate`], with the nodes of `fixed` taking the given values instead of
    /// being computed (a finite-difference check holds `stop_grad` values at the base point this
    /// way), and the values of the nodes in `record` returned beside the roots.
    #[allow(clippy::type_complexity)]
    pub fn evaluate_with<T: Real>(
        &self,
        inputs: &[ArrayViewD<T>],
        fixed: &[(NodeId, ArrayD<T>)],
        record: &[NodeId],
    ) -> (Vec<ArrayD<T>>, Vec<Option<ArrayD<T>>>) {
        let g = &self.bound.graph;
        let mut vals: Vec<Option<ArrayD<T>>> = vec![None; g.len()];
        let mut recorded: Vec<Option<ArrayD<T>>> = vec![None; record.len()];
        for id in 0..g.len() {
            if !self.live[id] {
                continue;
            }
            let n = g.node(id as NodeId);
            let shape = self.shape_of(n.axes);
            let out: ArrayD<T> = match (n.op, n.op.def().class) {
                _ if let Some((_, v)) = fixed.iter().find(|(f, _)| *f as usize == id) => v.clone(),
                (Op::Const, _) => ArrayD::from_elem(
                    IxDyn(&shape),
                    T::from_f64(const_value(n).unwrap_or(f64::NAN)),
                ),
                (Op::Input, _) => match n.attr {
                    Attr::Input(i) => inputs[i as usize].to_owned(),
                    _ => unreachable!("input node without index"),
                },
                (Op::AxisSize, _) => {
                    let Attr::Axes(a) = n.attr else {
                        unreachable!("axis_size without axes")
                    };
                    let count: usize = self
                        .bound
                        .sizes
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| a & (1 << i) != 0)
                        .map(|(_, &s)| s)
                        .product();
                    ArrayD::from_elem(IxDyn(&shape), T::from_f64(count as f64))
                }
                (Op::AxisIndex, _) => {
                    let Attr::Axes(a) = n.attr else {
                        unreachable!("axis_index without axes")
                    };
                    let ax = a.trailing_zeros() as usize;
                    ArrayD::from_shape_fn(IxDyn(&shape), |ix| T::from_f64(ix[ax] as f64))
                }
                (_, Class::Broadcast) => {
                    let a = vals[n.args[0] as usize]
                        .as_ref()
                        .expect("argument evaluated");
                    a.broadcast(IxDyn(&shape))
                        .expect("broadcast to declared axes")
                        .to_owned()
                }
                (_, Class::Reduce { init }) => {
                    let Attr::Axes(over) = n.attr else {
                        unreachable!("reduction without axes")
                    };
                    let a = vals[n.args[0] as usize]
                        .as_ref()
                        .expect("argument evaluated");
                    let combine = n.op.def().f64;
                    let mut acc: ArrayD<f64> = a.mapv(|x| x.to_f64());
                    for ax in 0..self.bound.sizes.len() {
                        if over & (1 << ax) != 0 {
                            acc = acc
                                .fold_axis(Axis(ax), init, |&s, &x| combine(&[s, x]))
                                .insert_axis(Axis(ax));
                        }
                    }
                    acc.mapv(T::from_f64)
                }
                (_, Class::Map) => {
                    let f = T::kernel(n.op.def());
                    let mut out = ArrayD::from_elem(IxDyn(&shape), T::default());
                    let arg = |k: usize| {
                        vals[n.args[k] as usize]
                            .as_ref()
                            .expect("argument evaluated")
                    };
                    match n.args.len() {
                        1 => Zip::from(&mut out)
                            .and_broadcast(arg(0))
                            .for_each(|o, &a| *o = f(&[a])),
                        2 => Zip::from(&mut out)
                            .and_broadcast(arg(0))
                            .and_broadcast(arg(1))
                            .for_each(|o, &a, &b| *o = f(&[a, b])),
                        3 => Zip::from(&mut out)
                            .and_broadcast(arg(0))
                            .and_broadcast(arg(1))
                            .and_broadcast(arg(2))
                            .for_each(|o, &a, &b, &c| *o = f(&[a, b, c])),
                        _ => unreachable!("map ops have 1 to 3 arguments"),
                    }
                    out
                }
                (_, Class::Leaf) => unreachable!("unknown leaf"),
                (op, Class::Window { image_args } | Class::Order { image_args }) => {
                    let consts = window::window_args(g, n).map(|w| w.1).unwrap_or_default();
                    // Each image argument in the output's shape, row-major, in f64.
                    let images: Vec<Vec<f64>> = n.args[..image_args]
                        .iter()
                        .map(|&a| {
                            let v = vals[a as usize].as_ref().expect("argument evaluated");
                            let full = v.broadcast(IxDyn(&shape)).expect("image broadcasts");
                            full.iter().map(|x| x.to_f64()).collect()
                        })
                        .collect();
                    let imgs: Vec<&[f64]> = images.iter().map(|x| x.as_slice()).collect();
                    let mut out = vec![0.0f64; images[0].len()];
                    // The constants were checked against the spatial sides at bind time; the
                    // sizes are the node's own (1 for an axis it lacks).
                    let sizes: Vec<usize> = (0..self.bound.sizes.len())
                        .map(|a| {
                            if n.axes & (1 << a) != 0 {
                                self.bound.sizes[a]
                            } else {
                                1
                            }
                        })
                        .collect();
                    window::run(
                        op,
                        window::group_axes(n),
                        &imgs,
                        &sizes,
                        &self.bound.spatial,
                        &consts,
                        &mut out,
                    );
                    ArrayD::from_shape_vec(
                        IxDyn(&shape),
                        out.into_iter().map(T::from_f64).collect(),
                    )
                    .expect("window output has the node's shape")
                }
            };
            // Free arguments whose last use this was.
            for &a in &n.args {
                if self.last_use[a as usize] == id {
                    vals[a as usize] = None;
                }
            }
            for (k, &r) in record.iter().enumerate() {
                if r as usize == id {
                    recorded[k] = Some(out.clone());
                }
            }
            vals[id] = Some(out);
        }
        let roots = self
            .bound
            .roots
            .iter()
            .map(|&r| vals[r as usize].clone().expect("root evaluated"))
            .collect();
        (roots, recorded)
    }
}
