//! The staged executor: a graph with window ops ([`Class::Window`]: filters, pooling, distance
//! transforms, contours) runs as fused segments of the block VM with the window ops between them.
//!
//! In: a bound graph and its roots. Out: value and gradients, like the VM, bitwise the same at
//! any thread count. Window ops are levelled: a window op of level k reads (through elementwise
//! work) the output of one of level k - 1, level 1 reads none. Per level, one fused segment
//! computes every image argument its window ops read and stores it (an argument that already is
//! a loss input or an earlier window's output is read in place); then each window op runs per
//! image, images in parallel, into its own buffer. Later segments read those buffers as extra
//! inputs; the last segment computes the value and the gradients (elementwise work before and
//! after a window op is fused into the segments that feed and read it). Memory: one N-element
//! buffer per stored argument and one per window output ([`Staged::buffer_bytes`]).
//!
//! Never here: the window kernels (`ops::window`, `ops::edt`), code generation (the VM).

use std::sync::Arc;

use rayon::prelude::*;

use crate::exec::vm::Vm;
use crate::exec::{check_inputs, Bound, Executor};
use crate::ir::graph::{Attr, Axes, Graph, NodeId};
use crate::ops::math::Real;
use crate::ops::{const_value, window, Op};
use crate::optimise::fuse::NotFusable;

/// Input index of the first window output in the segments' graphs (beyond any loss input).
const WINDOW_BASE: usize = crate::exec::MAX_INPUTS;
/// Most outputs one VM segment stores (the VM's limit on gradient roots).
const MAX_STORES: usize = 8;

/// Where a window op reads an image argument from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// A loss input, read in place.
    Input(usize),
    /// An earlier window op's output.
    Window(usize),
    /// A buffer its level's segment stored.
    Stored(usize),
    /// A buffer an earlier level stored (numbered across levels).
    Earlier(usize),
}

struct WindowOp {
    op: Op,
    /// Its output buffer (index into `Staged::outs`).
    out: usize,
    images: Vec<Src>,
    consts: Vec<f64>,
    /// The axes a group spans (order ops).
    over: u16,
}

struct Level<T: Real> {
    /// The VM segments storing this level's arguments, each with the stored buffers it fills.
    segments: Vec<(Vm<T>, std::ops::Range<usize>)>,
    stored: Vec<Vec<T>>,
    ops: Vec<WindowOp>,
}

pub struct Staged<T: Real> {
    levels: Vec<Level<T>>,
    last: Vm<T>,
    outs: Vec<Vec<T>>,
    /// The window kernels work in f64: their image arguments and output, converted (kept
    /// between calls, so later calls allocate nothing).
    wide_in: [Vec<f64>; 2],
    wide_out: Vec<f64>,
    spatial: Vec<usize>,
    /// Per axis of the loss, its size (the pack flattened): what order ops group by.
    sizes: Vec<usize>,
    n: usize,
}

/// A copy of the live part of `g` for `roots` in which each node of `done` reads as input
/// `WINDOW_BASE + k` (k: its buffer's number among the window outputs and then the stored
/// arguments); returns the copy and the roots' new ids.
fn substitute(g: &Graph, roots: &[NodeId], done: &[(NodeId, usize)]) -> (Graph, Vec<NodeId>) {
    let live = g.reachable(roots);
    let mut out = Graph::new(g.space.clone());
    let mut map = vec![0 as NodeId; g.len()];
    for id in 0..g.len() {
        if !live[id] {
            continue;
        }
        let n = g.node(id as NodeId);
        map[id] = if let Some(&(_, k)) = done.iter().find(|(w, _)| *w as usize == id) {
            out.input(WINDOW_BASE + k, n.axes)
        } else {
            match (n.op, n.attr) {
                (Op::Const, _) => out.c(const_value(n).unwrap_or(f64::NAN)),
                (Op::Input, Attr::Input(i)) => out.input(i as usize, n.axes),
                (Op::AxisSize, Attr::Axes(a)) => out.axis_size(a),
                _ => {
                    let args = n.args.iter().map(|&a| map[a as usize]).collect();
                    out.add(n.op, args, n.attr)
                }
            }
        };
    }
    let roots = roots.iter().map(|&r| map[r as usize]).collect();
    (out, roots)
}

/// A VM over `g` with `roots` (value first), kernel-prepared, storing each gradient root with the
/// axes in `grad_axes`; `kernels` is the VM's (superinstructions, native kernels).
fn segment<T: Real>(
    bound: &Bound,
    (g, roots): (Graph, Vec<NodeId>),
    grad_axes: Vec<Axes>,
    (merge, native): (bool, bool),
) -> Result<Vm<T>, NotFusable> {
    let (graph, roots) = crate::optimise::for_kernels(&g, &roots);
    let sub = Bound {
        graph,
        roots,
        sizes: bound.sizes.clone(),
        grad_axes,
        spatial: bound.spatial.clone(),
    };
    Vm::new(Arc::new(sub), merge, native)
}

impl<T: Real> Staged<T> {
    /// The staged plan of `bound`; `kernels` = (superinstructions, native kernels) for its VM
    /// segments, as [`Vm::new`] takes them.
    pub fn new(bound: Arc<Bound>, kernels: (bool, bool)) -> Result<Staged<T>, NotFusable> {
        let g = &bound.graph;
        let full = g.space.all();
        let live = g.reachable(&bound.roots);
        // Window level of every node: the highest level among the window ops it reads.
        let mut level = vec![0usize; g.len()];
        let mut windows: Vec<NodeId> = Vec::new();
        for id in 0..g.len() {
            if !live[id] {
                continue;
            }
            let n = g.node(id as NodeId);
            let from = n.args.iter().map(|&a| level[a as usize]).max().unwrap_or(0);
            level[id] = from;
            if n.op.def().class.image_args().is_some() {
                if n.axes != full {
                    return Err(NotFusable(format!(
                        "%{id} = {} lacks an axis of the loss",
                        n.op.name()
                    )));
                }
                level[id] = from + 1;
                windows.push(id as NodeId);
            }
        }
        if windows.is_empty() {
            return Err(NotFusable("no window op".into()));
        }
        let n_levels = windows
            .iter()
            .map(|&w| level[w as usize])
            .max()
            .unwrap_or(0);
        let number = |w: NodeId| windows.iter().position(|&x| x == w).expect("a window op");
        let mut levels = Vec::new();
        // Stored arguments of the levels so far, each with its buffer's number after the window
        // outputs: later segments read them rather than compute them again, so a value has the
        // same bits wherever it is used (`x - max_pool3(x)` is exactly 0 at a maximum).
        let mut stored_before: Vec<(NodeId, usize)> = Vec::new();
        for l in 1..=n_levels {
            let done: Vec<(NodeId, usize)> = windows
                .iter()
                .filter(|&&w| level[w as usize] < l)
                .map(|&w| (w, number(w)))
                .chain(stored_before.iter().copied())
                .collect();
            let mut to_store: Vec<NodeId> = Vec::new();
            let mut ops = Vec::new();
            for &w in windows.iter().filter(|&&w| level[w as usize] == l) {
                let n = g.node(w);
                let Some((image_args, consts)) = window::window_args(g, n) else {
                    continue;
                };
                let images = n.args[..image_args]
                    .iter()
                    .map(|&a| {
                        let an = g.node(a);
                        match (an.op, an.attr) {
                            (Op::Input, Attr::Input(i)) if an.axes == full => {
                                Src::Input(i as usize)
                            }
                            _ if windows.contains(&a) => Src::Window(number(a)),
                            _ if let Some(&(_, k)) =
                                stored_before.iter().find(|(d, _)| *d == a) =>
                            {
                                Src::Earlier(k - windows.len())
                            }
                            _ => {
                                let k =
                                    to_store.iter().position(|&s| s == a).unwrap_or_else(|| {
                                        to_store.push(a);
                                        to_store.len() - 1
                                    });
                                Src::Stored(k)
                            }
                        }
                    })
                    .collect();
                ops.push(WindowOp {
                    op: n.op,
                    out: number(w),
                    images,
                    consts,
                    over: window::group_axes(n),
                });
            }
            let mut segments = Vec::new();
            for (c, group) in to_store.chunks(MAX_STORES).enumerate() {
                // Value root 0; each stored argument broadcast to the full shape.
                let mut roots = Vec::with_capacity(group.len() + 1);
                let mut gg = g.clone();
                roots.push(gg.c(0.0));
                for &a in group {
                    let missing = full & !gg.axes(a);
                    roots.push(if missing == 0 {
                        a
                    } else {
                        gg.add(Op::Broadcast, vec![a], Attr::Axes(missing))
                    });
                }
                let filled = c * MAX_STORES..c * MAX_STORES + group.len();
                let grad_axes = vec![full; group.len()];
                let vm = segment::<T>(&bound, substitute(&gg, &roots, &done), grad_axes, kernels)?;
                segments.push((vm, filled));
            }
            let first = windows.len()
                + levels
                    .iter()
                    .map(|l: &Level<T>| l.stored.len())
                    .sum::<usize>();
            stored_before.extend(
                to_store
                    .iter()
                    .enumerate()
                    .filter(|&(_, &a)| g.axes(a) == full)
                    .map(|(k, &a)| (a, first + k)),
            );
            levels.push(Level {
                segments,
                // Sized on the first call.
                stored: vec![Vec::new(); to_store.len()],
                ops,
            });
        }
        let all: Vec<(NodeId, usize)> = windows
            .iter()
            .map(|&w| (w, number(w)))
            .chain(stored_before.iter().copied())
            .collect();
        let last_graph = substitute(g, &bound.roots, &all);
        let last = segment::<T>(&bound, last_graph, bound.grad_axes.clone(), kernels)?;
        let n = bound.sizes.iter().product();
        Ok(Staged {
            levels,
            last,
            outs: vec![Vec::new(); windows.len()],
            wide_in: [Vec::new(), Vec::new()],
            wide_out: Vec::new(),
            spatial: bound.spatial.clone(),
            sizes: bound.sizes.clone(),
            n,
        })
    }

    /// The instruction set the fused segments run with.
    pub fn isa(&self) -> crate::exec::Isa {
        self.last.isa()
    }

    /// Bytes of the buffers between segments (stored arguments and window outputs).
    pub fn buffer_bytes(&self) -> usize {
        let count = self.outs.len() + self.levels.iter().map(|l| l.stored.len()).sum::<usize>();
        count * self.n * std::mem::size_of::<T>() + 3 * self.n * std::mem::size_of::<f64>()
    }

    /// The kernel of each fused pass and window op in execution order, for `Plan::pass_info`.
    pub fn steps(&self) -> Vec<crate::exec::Kernel> {
        use crate::exec::Kernel;
        let fused = |vm: &Vm<T>| {
            vm.native_passes()
                .into_iter()
                .map(|n| if n { Kernel::Native } else { Kernel::Bytecode })
                .collect::<Vec<_>>()
        };
        let mut s = Vec::new();
        for l in &self.levels {
            for (vm, _) in &l.segments {
                s.extend(fused(vm));
            }
            s.extend(l.ops.iter().map(|o| Kernel::Window(o.op.name())));
        }
        s.extend(fused(&self.last));
        s
    }
}

impl<T: Real> Executor<T> for Staged<T> {
    fn run(
        &mut self,
        inputs: &[&[T]],
        grads: &mut [&mut [T]],
        check_finite: bool,
    ) -> Result<T, usize> {
        if check_finite {
            check_inputs(inputs)?;
        }
        let n = self.n;
        for o in self.outs.iter_mut().filter(|o| o.len() != n) {
            *o = vec![T::default(); n];
        }
        for w in self.wide_in.iter_mut().chain([&mut self.wide_out]) {
            if w.len() != n {
                *w = vec![0.0; n];
            }
        }
        let per: usize = self.spatial.iter().product::<usize>().max(1);
        for l in 0..self.levels.len() {
            let (before, rest) = self.levels.split_at_mut(l);
            let level = &mut rest[0];
            for s in level.stored.iter_mut().filter(|s| s.len() != n) {
                *s = vec![T::default(); n];
            }
            // This level's outputs are written below; every other window output is readable.
            let mut mine: Vec<(usize, Vec<T>)> = level
                .ops
                .iter()
                .map(|o| (o.out, std::mem::take(&mut self.outs[o.out])))
                .collect();
            {
                let ext = extended(inputs, &self.outs, before);
                for (vm, filled) in &mut level.segments {
                    let mut bufs: Vec<&mut [T]> = level.stored[filled.clone()]
                        .iter_mut()
                        .map(|b| b.as_mut_slice())
                        .collect();
                    let _ = vm.run(&ext, &mut bufs, false);
                }
                for (op, (_, out)) in level.ops.iter().zip(mine.iter_mut()) {
                    let images: Vec<&[T]> = op
                        .images
                        .iter()
                        .map(|s| match *s {
                            Src::Input(i) => inputs[i],
                            Src::Window(k) => &self.outs[k][..],
                            Src::Stored(k) => &level.stored[k][..],
                            Src::Earlier(k) => before
                                .iter()
                                .flat_map(|l| &l.stored)
                                .nth(k)
                                .expect("stored"),
                        })
                        .collect();
                    if window::run_typed(op.op, &images, &self.spatial, out) {
                        continue;
                    }
                    // Images in parallel, in f64.
                    for (w, x) in self.wide_in.iter_mut().zip(&images) {
                        w.par_chunks_mut(per)
                            .zip(x.par_chunks(per))
                            .for_each(|(w, x)| {
                                w.iter_mut().zip(x).for_each(|(d, v)| *d = v.to_f64())
                            });
                    }
                    let wide: Vec<&[f64]> = self.wide_in[..images.len()]
                        .iter()
                        .map(|w| w.as_slice())
                        .collect();
                    window::run(
                        op.op,
                        op.over,
                        &wide,
                        &self.sizes,
                        &self.spatial,
                        &op.consts,
                        &mut self.wide_out,
                    );
                    out.par_chunks_mut(per)
                        .zip(self.wide_out.par_chunks(per))
                        .for_each(|(o, y)| {
                            o.iter_mut().zip(y).for_each(|(d, &v)| *d = T::from_f64(v))
                        });
                }
            }
            for (k, buf) in mine.drain(..) {
                self.outs[k] = buf;
            }
        }
        let ext = extended(inputs, &self.outs, &self.levels);
        self.last.run(&ext, grads, false)
    }

    fn passes(&self) -> usize {
        self.steps().len()
    }

    fn cap_isa(&mut self, isa: crate::exec::Isa) -> crate::exec::Isa {
        for l in &mut self.levels {
            for (vm, _) in &mut l.segments {
                vm.cap_isa(isa);
            }
        }
        self.last.cap_isa(isa)
    }
}

/// The loss inputs, padded to `WINDOW_BASE`, then the window outputs, then the arguments the
/// `levels` stored (a level's own are empty slices until it has run).
fn extended<'a, T: Real>(
    inputs: &[&'a [T]],
    outs: &'a [Vec<T>],
    levels: &'a [Level<T>],
) -> Vec<&'a [T]> {
    let mut ext: Vec<&[T]> = inputs.to_vec();
    ext.resize(WINDOW_BASE, &[]);
    ext.extend(outs.iter().map(|o| o.as_slice()));
    ext.extend(
        levels
            .iter()
            .flat_map(|l| l.stored.iter().map(|s| s.as_slice())),
    );
    ext
}
