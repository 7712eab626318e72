//! Executor choice. In: a [`Bound`] graph and the [`ExecutorKind`] asked for. Out: the executor
//! that runs it, with typed information about what it chose ([`Chosen`]: the kind that runs,
//! its [`Isa`], one [`PassInfo`] per memory pass, the reason of a fallback).
//!
//! The order of preference: a graph with window ops runs staged (fused segments between the
//! window kernels); otherwise the block VM on the kernel-prepared graph, or — when a node lacks
//! a plain axis (sums over classes) — the VM on the graph unrolled over its class axis; the
//! reference interpreter only when asked for or when none of these applies (the reason kept).
//!
//! Never here: binding shapes, checking inputs, or anything about the language.

use std::sync::Arc;

use crate::exec::reference::Interpreter;
use crate::exec::{Bound, Executor};
use crate::ops::math::Real;
use crate::optimise;

/// Which executor runs a plan: asked for at compile time ([`Fused`](ExecutorKind::Fused) or
/// [`Reference`](ExecutorKind::Reference)) and reported by `Plan::executor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExecutorKind {
    /// The fused block VM (falls back to the reference interpreter for graphs it cannot fuse).
    Fused,
    /// Fused passes with window-op kernels between them (chosen, when `Fused` is asked for, for
    /// a graph with window ops; asking for it is asking for `Fused`).
    Staged,
    /// The f64/f32 reference interpreter: whole-buffer, node by node.
    Reference,
    /// Not API: the fused VM without superinstructions or native kernels (plain bytecode), for
    /// the tests that check they change no bits.
    #[doc(hidden)]
    FusedPlain,
    /// Not API: the fused VM with superinstructions but no native kernels, for the tests that
    /// check native kernels change no bits.
    #[doc(hidden)]
    FusedBytecode,
}

impl ExecutorKind {
    /// `fused`, `staged` or `reference` (the hidden test kinds report as `fused`).
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Staged => "staged",
            ExecutorKind::Reference => "reference",
            ExecutorKind::Fused | ExecutorKind::FusedPlain | ExecutorKind::FusedBytecode => "fused",
        }
    }
}

impl std::fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction set a plan's kernels run with, narrowest first (so `min` caps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// The reference interpreter (plain scalar Rust); as a cap, the same as `Baseline`.
    Scalar,
    /// The fused kernels compiled for the build's target without runtime-detected features.
    Baseline,
    /// x86-64 AVX2 with FMA.
    Avx2,
    /// x86-64 AVX-512 (F, DQ, BW, VL) with FMA.
    Avx512,
}

impl Isa {
    /// `scalar`, `baseline`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = crate::error::Error;
    /// `avx512`, `avx2`, `baseline` (or `base`); anything else is
    /// [`Error::InstructionSet`](crate::error::Error::InstructionSet).
    fn from_str(s: &str) -> Result<Isa, Self::Err> {
        match s {
            "avx512" => Ok(Isa::Avx512),
            "avx2" => Ok(Isa::Avx2),
            "baseline" | "base" => Ok(Isa::Baseline),
            _ => Err(crate::error::Error::InstructionSet {
                name: s.to_string(),
            }),
        }
    }
}

/// How one pass's per-element work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// Generated Rust for a standard-library pass (`exec/vm/native`).
    Native,
    /// The VM's block interpreter over the pass's bytecode.
    Bytecode,
    /// The reference interpreter, node by node.
    Reference,
    /// A window or order op's own kernel (its op name), between fused passes.
    Window(&'static str),
}

impl Kernel {
    /// `native`, `bytecode`, `reference`, or the window op's name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Native => "native",
            Kernel::Bytecode => "bytecode",
            Kernel::Reference => "reference",
            Kernel::Window(op) => op,
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One memory pass of a plan: which executor runs it, and what it computes per element.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassInfo {
    /// The plan's executor (`Fused`, `Staged` or `Reference`).
    pub executor: ExecutorKind,
    /// The graph was unrolled over its class axis (a fused pass reading the class planes of the
    /// caller's buffers in place).
    pub unrolled: bool,
    /// How the pass's kernel runs.
    pub kernel: Kernel,
    /// Elementwise nodes computed per element (0 for the reference interpreter and for the
    /// passes of a staged plan).
    pub nodes: usize,
    /// Reductions accumulated in this pass.
    pub reductions: usize,
    /// Output buffers (gradients) written in this pass.
    pub stores: usize,
}

impl PassInfo {
    fn bare(executor: ExecutorKind, kernel: Kernel) -> PassInfo {
        PassInfo {
            executor,
            unrolled: false,
            kernel,
            nodes: 0,
            reductions: 0,
            stores: 0,
        }
    }
}

/// An executor for a bound graph, with what a plan reports about it.
pub(crate) struct Chosen<T: Real> {
    pub exec: Box<dyn Executor<T>>,
    /// `Fused`, `Staged` or `Reference`.
    pub kind: ExecutorKind,
    /// The instruction set of the kernels (`Scalar` on the interpreter).
    pub isa: Isa,
    pub info: Vec<PassInfo>,
    /// Why the interpreter runs although the fused executor was asked for.
    pub fallback: Option<String>,
    /// Bytes of the buffers kept between passes (window ops' arguments and outputs).
    pub buffer_bytes: usize,
}

/// The executor of `kind` for the graph `(g, roots)` with its sizes bound to `sizes`.
pub(crate) fn bind_and_choose<T: Real>(
    (g, roots): &(crate::ir::graph::Graph, Vec<crate::ir::graph::NodeId>),
    sizes: &[usize],
    grad_axes: Vec<crate::ir::graph::Axes>,
    spatial: Vec<usize>,
    kind: ExecutorKind,
) -> Box<dyn Executor<T>> {
    let (graph, roots) = optimise::bind_sizes(g, roots, sizes);
    let bound = Bound {
        graph,
        roots,
        sizes: sizes.to_vec(),
        grad_axes,
        spatial,
    };
    choose::<T>(Arc::new(bound), kind).exec
}

/// The fused VM of `bound`'s graph unrolled over its class axis (`optimise::unroll`), reading
/// and writing the class planes of the caller's buffers in place; `None` where unrolling does
/// not apply.
fn unrolled<T: Real>(
    bound: &Bound,
    merge: bool,
    native: bool,
) -> Option<std::result::Result<crate::exec::vm::Vm<T>, crate::optimise::fuse::NotFusable>> {
    use crate::optimise::unroll;
    let g = &bound.graph;
    let ax = unroll::class_axis(g, &bound.roots)?;
    let sizes = &bound.sizes;
    let u = unroll::unroll(g, &bound.roots, &bound.grad_axes, ax, sizes[ax])?;
    let n_axes = sizes.len();
    let input_axes = bound.input_axes();
    // Outer axes of the unrolled graph, as axes of the original one.
    let outer: Vec<usize> = (0..n_axes - 1).filter(|&a| a != ax).collect();
    let addr = |real: usize, axes: crate::ir::graph::Axes, class: Option<usize>| {
        // Row-major strides of a buffer with `axes` (0 where it lacks one).
        let st = crate::exec::vm::strides_for(axes, sizes, n_axes);
        crate::exec::vm::Addr {
            real,
            strides: outer.iter().map(|&a| st[a]).collect(),
            offset: class.map_or(0, |c| c * st[ax]),
            len: crate::exec::vm::numel(axes, sizes),
        }
    };
    let in_addr = u
        .inputs
        .iter()
        .map(|&(i, c)| Some(addr(i as usize, (*input_axes.get(i as usize)?)?, c)))
        .collect::<Option<Vec<_>>>()?;
    let out_addr = u
        .grads
        .iter()
        .map(|&(k, c)| addr(k, bound.grad_axes[k], c))
        .collect();
    let (graph, roots) = optimise::for_kernels(&u.graph, &u.roots);
    let kb = Arc::new(Bound {
        graph,
        roots,
        sizes: (0..n_axes).filter(|&a| a != ax).map(|a| sizes[a]).collect(),
        grad_axes: u
            .grads
            .iter()
            .map(|&(k, _)| unroll::drop_axis(bound.grad_axes[k], ax))
            .collect(),
        spatial: bound.spatial.clone(),
    });
    Some(crate::exec::vm::Vm::with_addresses(
        kb,
        merge,
        native,
        Some((in_addr, out_addr)),
    ))
}

/// The executor of `kind` for `bound`: staged for a graph with window ops, else the block VM on
/// its kernel-prepared graph (unrolled over the class axis where it must be), or the reference
/// interpreter — asked for, or because nothing fuses the graph (the reason kept).
pub(crate) fn choose<T: Real>(bound: Arc<Bound>, kind: ExecutorKind) -> Chosen<T> {
    let reference = |bound: Arc<Bound>, fallback: Option<String>| {
        let exec: Box<dyn Executor<T>> = Box::new(Interpreter::new(bound));
        let info = (0..exec.passes().max(1))
            .map(|_| PassInfo::bare(ExecutorKind::Reference, Kernel::Reference))
            .collect();
        Chosen {
            exec,
            kind: ExecutorKind::Reference,
            isa: Isa::Scalar,
            info,
            fallback,
            buffer_bytes: 0,
        }
    };
    let (superinstructions, native) = match kind {
        ExecutorKind::Reference => return reference(bound, None),
        ExecutorKind::Fused | ExecutorKind::Staged => (true, true),
        ExecutorKind::FusedBytecode => (true, false),
        ExecutorKind::FusedPlain => (false, false),
    };
    let g = &bound.graph;
    let has_windows = (0..g.len()).any(|id| {
        let n = g.node(id as crate::ir::graph::NodeId);
        crate::ops::window::window_args(g, n).is_some()
    });
    if has_windows {
        return match crate::exec::staged::Staged::<T>::new(
            bound.clone(),
            (superinstructions, native),
        ) {
            Ok(st) => Chosen {
                info: st
                    .steps()
                    .into_iter()
                    .map(|kernel| PassInfo::bare(ExecutorKind::Staged, kernel))
                    .collect(),
                isa: st.isa(),
                buffer_bytes: st.buffer_bytes(),
                exec: Box::new(st),
                kind: ExecutorKind::Staged,
                fallback: None,
            },
            Err(e) => reference(bound, Some(e.0)),
        };
    }
    let (kg, kr) = optimise::for_kernels(&bound.graph, &bound.roots);
    let kb = Arc::new(Bound {
        graph: kg,
        roots: kr,
        sizes: bound.sizes.clone(),
        grad_axes: bound.grad_axes.clone(),
        spatial: bound.spatial.clone(),
    });
    let (vm, unrolled) = match crate::exec::vm::Vm::<T>::new(kb, superinstructions, native) {
        // Nodes lacking a plain axis (sums over classes): the graph unrolled over that axis.
        Err(e) => match unrolled::<T>(&bound, superinstructions, native) {
            Some(vm) => (vm, true),
            None => (Err(e), false),
        },
        ok => (ok, false),
    };
    match vm {
        Ok(vm) => Chosen {
            info: vm
                .pass_shapes()
                .into_iter()
                .zip(vm.native_passes())
                .map(|((nodes, reductions, stores), native)| PassInfo {
                    executor: ExecutorKind::Fused,
                    unrolled,
                    kernel: if native {
                        Kernel::Native
                    } else {
                        Kernel::Bytecode
                    },
                    nodes,
                    reductions,
                    stores,
                })
                .collect(),
            isa: vm.isa(),
            exec: Box::new(vm),
            kind: ExecutorKind::Fused,
            fallback: None,
            buffer_bytes: 0,
        },
        Err(e) => reference(bound, Some(e.0)),
    }
}
