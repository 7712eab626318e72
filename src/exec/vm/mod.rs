//! The block VM: runs a fused [`Schedule`] as bytecode whose every instruction loops over one
//! block of up to [`BLOCK`] lanes held in a small register file (numexpr's design), so each
//! instruction is one vectorised loop and dispatch is paid once per block.
//!
//! - Registers are reused by liveness; the small values a pass reads (per-image, per-class,
//!   scalar) sit in pinned registers, splatted once per chunk (constants) or when the block's
//!   plane changes (everything else). Blocks never straddle a plane (all axes but the innermost).
//! - Work is split into chunks of [`CHUNK_BLOCKS`] blocks that depend only on the problem size;
//!   each chunk accumulates its reductions in f64 in block order into its own partials, and the
//!   partials are combined in chunk order: results are bitwise identical at any thread count.
//! - The chunk loop is compiled three times — AVX-512, AVX2+FMA and baseline — and chosen by
//!   run-time CPU detection. The AVX variants evaluate the exp/ln polynomials with fused
//!   multiply-adds (the AVX2 and AVX-512 paths give the same bits; the baseline one may differ in
//!   the last place). Elementwise arithmetic is never contracted.
//! - After register allocation, instruction pairs become superinstructions that compute the same
//!   bits with less traffic through L1: `MapStore` (a map whose only reader is a store writes the
//!   output buffer) and `DotSum` (a product whose only reader is a sum is summed as it is made).
//! - Memory: each thread's register file starts on a cache line and shares none with another
//!   thread's, and so do chunk partials (false sharing cost 2-thread runs ~18%); the next block of
//!   every streamed input is prefetched into L1 and the one `FAR` beyond into L2, a share before
//!   each instruction; from [`STREAM_MIN`] elements on, gradients are written with non-temporal
//!   stores (no read of every line before it is overwritten).
//! - Inputs are checked for NaN/inf in the first pass as it reads them: by a per-block probe, or,
//!   for an input the pass sums as it is, through its totals.
//! - Everything is allocated when the executor is built or on its first call; later calls
//!   allocate nothing.
//!
//! Never here: language knowledge (invariant 7). Small nodes (the tail) are evaluated in f64 with
//! the op table's reference kernels.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::exec::{has_non_finite, Bound, Executor};
use crate::ir::graph::{Attr, Axes, NodeId};
use crate::ops::family::{family_both, family_sig, family_sig_softplus, family_softplus};
use crate::ops::math::Real;
use crate::ops::{const_value, Class, Op};
use crate::optimise::fuse::{
    schedule, schedule_capped, NotFusable, Schedule, UNROLLED_KERNEL_NODES,
};

/// Most inputs (and gradient roots) of a graph unrolled over a class axis: each is one class
/// plane of a caller's buffer.
const MAX_ADDRS: usize = 256;

/// Lanes per block (register length).
pub const BLOCK: usize = 512;
/// Lanes of a block sum (and of a native kernel's step): element `i` of a block is summed into
/// lane `i % LANES`.
pub(crate) const LANES: usize = 16;
/// Blocks per chunk (the unit of parallel work).
pub const CHUNK_BLOCKS: usize = 32;
/// Bytes a register file is allocated beyond its registers: room to start them on a cache line
/// and to keep a line of distance from whatever the allocator put next to it (another thread's
/// register file).
const REGFILE_PAD: usize = 192;
/// Distance (elements) of the second, L2-only prefetch ahead of the next block: requests for
/// L2 do not hold the core's few L1 fill buffers for a whole memory latency, so a pass that
/// streams faster than it computes keeps more lines in flight.
const FAR: usize = 4 * BLOCK;
/// From this many elements on, outputs are written with non-temporal stores: the buffer will not
/// stay in cache anyway, and streaming it skips reading every line before writing it.
pub const STREAM_MIN: usize = 1 << 21;

mod chunk;
mod codegen;
mod kernels;
mod native;
mod tail;

use chunk::*;
use codegen::*;
use kernels::*;
use native::*;
use tail::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Isa {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The public name of this instruction set.
    fn public(self) -> crate::exec::Isa {
        match self {
            Isa::Base => crate::exec::Isa::Baseline,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::exec::Isa::Avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::exec::Isa::Avx512,
        }
    }

    /// This instruction set, or the narrower `cap`.
    fn capped(self, cap: crate::exec::Isa) -> Isa {
        use crate::exec::Isa as Public;
        match cap {
            Public::Scalar | Public::Baseline => Isa::Base,
            #[cfg(target_arch = "x86_64")]
            Public::Avx2 if self == Isa::Avx512 => Isa::Avx2,
            _ => self,
        }
    }

    /// The widest instruction set this CPU has (a plan narrows it with
    /// `Plan::cap_instruction_set`, for comparisons and for reproducing another machine's bits).
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Base
    }
}

/// Where one input or gradient of the VM's graph lives in the caller's buffers, for a graph
/// unrolled over a class axis (`optimise::unroll`): buffer `real`, and a block of plane
/// `coords` starting at `offset + Σ coords[a] * strides[a]` (plus its place in the plane).
#[derive(Clone, Debug)]
pub struct Addr {
    pub real: usize,
    /// Per outer axis of the VM's graph (all but the innermost).
    pub strides: Vec<usize>,
    pub offset: usize,
    /// The real buffer's length.
    pub len: usize,
}

impl Addr {
    #[inline(always)]
    fn start(&self, coords: &[usize], local: usize) -> usize {
        self.offset
            + self
                .strides
                .iter()
                .zip(coords)
                .map(|(s, c)| s * c)
                .sum::<usize>()
            + local
    }
}

pub struct Vm<T: Real> {
    bound: Arc<Bound>,
    /// Input and gradient addresses (empty: each is its own buffer, laid out as its node).
    in_addr: Vec<Addr>,
    out_addr: Vec<Addr>,
    sched: Schedule,
    passes: Vec<PassCode>,
    /// Per tail (stage): its small nodes with their index maps, in topological order.
    small: Vec<Vec<SmallNode>>,
    /// Values of small nodes (f64), indexed by node id (empty for big nodes).
    vals: Vec<Vec<f64>>,
    partials: Vec<f64>,
    regfiles: Vec<Mutex<Vec<T>>>,
    /// Elements along the innermost axis; planes; blocks per plane; total blocks; chunks.
    inner: usize,
    planes: usize,
    bpp: usize,
    n_chunks: usize,
    /// Sizes of the outer axes (all but the innermost).
    outer: Vec<usize>,
    /// Inputs read per element (checked for NaN/Inf in the first pass).
    big_inputs: Vec<u16>,
    /// Big inputs the first pass probes for NaN/inf block by block...
    probed: Vec<u16>,
    /// ...and those it sums as they are (input, reduction): a non-finite element makes its
    /// group's total non-finite, so the totals are checked instead (and a non-finite total is
    /// confirmed on the input, since finite f64 inputs can overflow a sum).
    summed: Vec<(u16, u16)>,
    isa: Isa,
    /// Per input index: the length its buffer must have (`None`: the graph does not read it).
    input_lens: Vec<Option<usize>>,
    /// Per pass: its native kernel (generated Rust), if the standard library has one.
    natives: Vec<Option<Variants<T>>>,
    /// Per pass: its key and generated source (`None` where native kernels do not apply), for
    /// the generator (`native::tests`).
    #[cfg(test)]
    listing: Vec<Option<crate::exec::NativeEntry>>,
}

pub(crate) fn strides_for(axes: Axes, sizes: &[usize], n_outer: usize) -> Vec<usize> {
    // Row-major strides of a value with `axes` over the loss's axes; 0 where it lacks an axis.
    let n = sizes.len();
    let mut st = vec![0usize; n];
    let mut s = 1;
    for a in (0..n).rev() {
        if axes & (1 << a) != 0 {
            st[a] = s;
            s *= sizes[a];
        }
    }
    st.truncate(n_outer);
    st
}

pub(crate) fn numel(axes: Axes, sizes: &[usize]) -> usize {
    sizes
        .iter()
        .enumerate()
        .filter(|(a, _)| axes & (1 << a) != 0)
        .map(|(_, &s)| s)
        .product()
}

impl<T: Real> Vm<T> {
    /// The VM for a bound graph; with `merge`, instruction pairs become superinstructions
    /// (`MapStore`, `DotSum`), and with `native`, passes the standard library has native kernels
    /// for run them: both must change nothing but speed (tests compare the bits).
    pub fn new(bound: Arc<Bound>, merge: bool, native: bool) -> Result<Vm<T>, NotFusable> {
        Self::with_addresses(bound, merge, native, None)
    }

    /// As [`Vm::new`], with each input and gradient root of the graph read from / written to
    /// the caller's buffers through an [`Addr`] (a graph unrolled over a class axis: its inputs
    /// are class planes of the caller's inputs). Native kernels do not apply then.
    pub fn with_addresses(
        bound: Arc<Bound>,
        merge: bool,
        native: bool,
        addr: Option<(Vec<Addr>, Vec<Addr>)>,
    ) -> Result<Vm<T>, NotFusable> {
        let g = &bound.graph;
        let sizes = &bound.sizes;
        let (in_addr, out_addr) = addr.unwrap_or_default();
        let sched = if in_addr.is_empty() {
            schedule(g, &bound.roots)?
        } else {
            schedule_capped(g, &bound.roots, UNROLLED_KERNEL_NODES, true)?
        };
        let real_grads = out_addr
            .iter()
            .map(|a| a.real + 1)
            .max()
            .unwrap_or(bound.roots.len() - 1);
        if real_grads > 8 {
            return Err(NotFusable("more than 8 gradient outputs".into()));
        }
        if !in_addr.is_empty() {
            // The tail reads small inputs whole, as laid out by their node: class planes of a
            // caller's input are not.
            let planes = (0..g.len()).any(|id| {
                let n = g.node(id as NodeId);
                matches!((n.op, n.attr), (Op::Input, Attr::Input(i))
                    if !sched.big[id] && in_addr[i as usize].offset != 0)
            });
            if planes {
                return Err(NotFusable(
                    "a per-class input without the innermost axis".into(),
                ));
            }
        }
        if in_addr.len() > MAX_ADDRS || out_addr.len() > MAX_ADDRS {
            return Err(NotFusable(format!(
                "more than {MAX_ADDRS} class planes of inputs or gradients"
            )));
        }
        // Native kernels address inputs by position: not for class planes.
        let native_ok = in_addr.is_empty();
        let native = native && native_ok;
        let n_axes = sizes.len();
        let inner = sizes[n_axes - 1];
        let outer: Vec<usize> = sizes[..n_axes - 1].to_vec();
        let planes: usize = outer.iter().product();
        let bpp = inner.div_ceil(BLOCK);
        let n_chunks = (planes * bpp).div_ceil(CHUNK_BLOCKS);
        // Bytecode per pass.
        let mut passes = Vec::new();
        let mut natives = Vec::new();
        #[cfg(test)]
        let mut listing = Vec::new();
        let mut max_slots = 0;
        for k in &sched.kernels {
            let mut pc = codegen(g, &sched, k, sizes);
            max_slots = max_slots.max(pc.slots);
            let key = if native_ok { native::key(&pc) } else { None };
            natives.push(match &key {
                Some(key) if native => native::lookup::<T>(key),
                _ => None,
            });
            if natives.last().is_some_and(Option::is_some) {
                // A scratch block per output beyond the pinned registers (`Io::out_block`).
                let outs = k.stores.len();
                pc.n_regs = pc.n_regs.max(pc.splats.len() + outs);
            }
            #[cfg(test)]
            listing.push(key.map(|key| (key, native::emit::emit("__NAME__", &pc))));
            if merge {
                superinstructions(&mut pc);
            }
            passes.push(pc);
        }
        let mut big_inputs: Vec<u16> = (0..g.len())
            .filter_map(
                |id| match (g.node(id as NodeId).op, g.node(id as NodeId).attr) {
                    (Op::Input, Attr::Input(i)) if sched.big[id] => Some(i),
                    _ => None,
                },
            )
            .collect();
        big_inputs.sort_unstable();
        let mut summed: Vec<(u16, u16)> = Vec::new();
        if let Some(first) = passes.first() {
            for ins in &first.code {
                if let Instr::Reduce {
                    src: Src::Input(i),
                    red,
                } = *ins
                {
                    if first.reductions[red as usize].op == Op::Sum
                        && !summed.iter().any(|&(j, _)| j == i)
                    {
                        summed.push((i, red));
                    }
                }
            }
        }
        let probed: Vec<u16> = big_inputs
            .iter()
            .copied()
            .filter(|i| !summed.iter().any(|&(j, _)| j == *i))
            .collect();
        // Tail index maps.
        let mut small: Vec<Vec<SmallNode>> = vec![Vec::new(); sched.tails.len()];
        let mut vals: Vec<Vec<f64>> = vec![Vec::new(); g.len()];
        for (stage, tail) in sched.tails.iter().enumerate() {
            for &id in tail {
                let node = g.node(id);
                let out_n = numel(node.axes, sizes);
                vals[id as usize] = vec![0.0; out_n];
                let out_strides = strides_for(node.axes, sizes, n_axes);
                let coords_of = |flat: usize| -> Vec<usize> {
                    let mut c = vec![0; n_axes];
                    let mut rem = flat;
                    for a in 0..n_axes {
                        if let Some(q) = rem.checked_div(out_strides[a]) {
                            c[a] = q;
                            rem %= out_strides[a];
                        }
                    }
                    c
                };
                let maps = match node.op.def().class {
                    // Leaves read no argument (constants, inputs and axis sizes are filled by
                    // `run_tail` directly).
                    Class::Leaf => Vec::new(),
                    Class::Window { .. } | Class::Order { .. } => {
                        unreachable!("the schedule refuses window and order ops")
                    }
                    Class::Reduce { .. } => {
                        let arg = node.args[0];
                        let an = g.node(arg);
                        let in_strides = strides_for(an.axes, sizes, n_axes);
                        let in_n = numel(an.axes, sizes);
                        let map: Vec<usize> = (0..in_n)
                            .map(|flat| {
                                let mut rem = flat;
                                let mut o = 0;
                                for a in 0..n_axes {
                                    if let Some(c) = rem.checked_div(in_strides[a]) {
                                        rem %= in_strides[a];
                                        o += c * out_strides[a];
                                    }
                                }
                                o
                            })
                            .collect();
                        vec![map]
                    }
                    Class::Map | Class::Broadcast => node
                        .args
                        .iter()
                        .map(|&a| {
                            let st = strides_for(g.node(a).axes, sizes, n_axes);
                            (0..out_n)
                                .map(|f| coords_of(f).iter().zip(&st).map(|(c, s)| c * s).sum())
                                .collect()
                        })
                        .collect(),
                };
                small[stage].push(SmallNode { id, maps });
            }
        }
        for k in &sched.kernels {
            for &r in &k.reductions {
                vals[r as usize] = vec![0.0; numel(g.node(r).axes, sizes)];
            }
        }
        if std::env::var_os("LOSSLANG_DUMP_VM").is_some() {
            for (p, pc) in passes.iter().enumerate() {
                eprintln!(
                    "pass {p}: {} registers, {} splats",
                    pc.n_regs,
                    pc.splats.len()
                );
                for i in &pc.code {
                    eprintln!("  {i:?}");
                }
            }
        }
        let input_lens = if in_addr.is_empty() {
            bound
                .input_axes()
                .into_iter()
                .map(|a| a.map(|a| numel(a, &bound.sizes)))
                .collect()
        } else {
            in_addr.iter().map(|a| Some(a.len)).collect()
        };
        Ok(Vm {
            in_addr,
            out_addr,
            sched,
            passes,
            small,
            vals,
            partials: vec![0.0; partial_stride(max_slots + big_inputs.len()) * n_chunks],
            probed,
            summed,
            big_inputs,
            regfiles: Vec::new(),
            inner,
            planes,
            bpp,
            n_chunks,
            outer,
            isa: Isa::detect(),
            natives,
            #[cfg(test)]
            listing,
            input_lens,
            bound,
        })
    }
}

impl<T: Real> Executor<T> for Vm<T> {
    fn run(
        &mut self,
        inputs: &[&[T]],
        grads: &mut [&mut [T]],
        check_finite: bool,
    ) -> Result<T, usize> {
        self.check_buffers(inputs, grads);
        let nt = rayon::current_num_threads() + 1;
        let max_regs = self.passes.iter().map(|p| p.n_regs).max().unwrap_or(1);
        let file_len = max_regs * BLOCK + REGFILE_PAD / std::mem::size_of::<T>();
        if self.regfiles.len() < nt
            || self
                .regfiles
                .first()
                .is_some_and(|r| r.lock().map(|v| v.len()).unwrap_or(0) < file_len)
        {
            self.regfiles = (0..nt)
                .map(|_| Mutex::new(vec![T::default(); file_len]))
                .collect();
        }
        let outs: [OutPtr<T>; 8] = std::array::from_fn(|k| match grads.get_mut(k) {
            Some(g) => OutPtr(g.as_mut_ptr(), g.len()),
            None => OutPtr(std::ptr::null_mut(), 0),
        });
        let total_blocks = self.planes * self.bpp;
        if check_finite {
            // Big inputs are checked inside the first pass, while it reads them; the rest here.
            let in_pass = |i: usize| {
                !self.passes.is_empty()
                    && self
                        .big_inputs
                        .iter()
                        .any(|&v| self.real_in(v as usize) == i)
            };
            if let Some(i) = (0..inputs.len()).find(|&i| !in_pass(i) && has_non_finite(inputs[i])) {
                return Err(i);
            }
        }
        for p in 0..self.passes.len() {
            self.run_tail(p, inputs);
            let pass = &self.passes[p];
            let checks: &[u16] = if check_finite && p == 0 {
                &self.probed
            } else {
                &[]
            };
            let slots = partial_stride(pass.slots + checks.len());
            let parts = &mut self.partials[..slots * self.n_chunks];
            let ctx = Ctx {
                pass,
                vals: &self.vals,
                inputs,
                outs: &outs,
                inner: self.inner,
                bpp: self.bpp,
                total_blocks,
                outer: &self.outer,
                checks,
                native: self.natives[p].map(|v| v[isa_index(self.isa)]),
                in_addr: &self.in_addr,
                out_addr: &self.out_addr,
            };
            let isa = self.isa;
            let regfiles = &self.regfiles;
            if self.n_chunks < 2 {
                let mut regs = regfiles[nt - 1].lock().expect("register file");
                for (c, part) in parts.chunks_mut(slots).enumerate() {
                    dispatch(isa, &ctx, c, part, register_file(&mut regs));
                }
            } else {
                parts
                    .par_chunks_mut(slots)
                    .enumerate()
                    .for_each(|(c, part)| {
                        let t = rayon::current_thread_index().unwrap_or(nt - 1).min(nt - 1);
                        let mut regs = regfiles[t].lock().expect("register file");
                        dispatch(isa, &ctx, c, part, register_file(&mut regs));
                    });
            }
            // A nonzero probe flags a NaN or infinity; the input it is in is found by a scan (the
            // first, in `checks` order, that holds one: a native kernel's probe covers several).
            let flagged = (0..self.n_chunks).any(|c| {
                let at = c * slots + pass.slots;
                self.partials[at..at + checks.len()]
                    .iter()
                    .any(|&v| v != 0.0)
            });
            if flagged {
                if let Some(&i) = checks
                    .iter()
                    .find(|&&i| has_non_finite(inputs[self.real_in(i as usize)]))
                {
                    return Err(self.real_in(i as usize));
                }
            }
            // Combine partials in chunk order.
            for r in &pass.reductions {
                let out = &mut self.vals[r.node as usize];
                out.fill(r.init);
                for c in 0..self.n_chunks {
                    let part = &self.partials[c * slots + r.base..c * slots + r.base + out.len()];
                    for (o, &v) in out.iter_mut().zip(part) {
                        *o = (r.combine)(&[*o, v]);
                    }
                }
            }
            if check_finite && p == 0 {
                for &(i, red) in &self.summed {
                    let node = pass.reductions[red as usize].node as usize;
                    if self.vals[node].iter().any(|v| !v.is_finite())
                        && has_non_finite(inputs[self.real_in(i as usize)])
                    {
                        return Err(self.real_in(i as usize));
                    }
                }
            }
        }
        let last = self.passes.len();
        self.run_tail(last, inputs);
        // Small gradient roots: broadcast into the buffer.
        let g = &self.bound.graph;
        for (k, &root) in self.bound.roots.iter().enumerate().skip(1) {
            if self.sched.big[root as usize] {
                continue;
            }
            let node = g.node(root);
            let sizes = &self.bound.sizes;
            // Row-major strides of the root over the loss's axes (0 where it lacks one), on
            // the stack: a call allocates nothing.
            let mut st = [0usize; 16];
            let mut s = 1;
            for a in (0..sizes.len()).rev() {
                if node.axes & (1 << a) != 0 {
                    st[a] = s;
                    s *= sizes[a];
                }
            }
            let st = &st[..sizes.len()];
            let v = &self.vals[root as usize];
            if let Some(a) = self.out_addr.get(k - 1) {
                // A class plane of the caller's buffer: element (plane coords, i) of the graph.
                let buf = &mut grads[a.real];
                // A buffer without the innermost axis holds one element per plane.
                let last = sizes.len() - 1;
                let inner = if self.bound.grad_axes[k - 1] & (1 << last) != 0 {
                    self.inner
                } else {
                    1
                };
                let mut coords = [0usize; 16];
                let coords = &mut coords[..self.outer.len()];
                for plane in 0..self.planes {
                    let mut rem = plane;
                    for d in (0..self.outer.len()).rev() {
                        coords[d] = rem % self.outer[d];
                        rem /= self.outer[d];
                    }
                    let base: usize = coords.iter().zip(st).map(|(c, s)| c * s).sum();
                    let at = a.start(coords, 0);
                    for i in 0..inner {
                        buf[at + i] = T::from_f64(v[base + i * st[last]]);
                    }
                }
                continue;
            }
            // The buffer spans the input's axes (`grad_axes`), not necessarily every axis.
            let buf = &mut grads[k - 1];
            let axes = self.bound.grad_axes[k - 1];
            for (flat, o) in buf.iter_mut().enumerate() {
                let mut rem = flat;
                let mut idx = 0;
                for a in (0..sizes.len()).rev().filter(|a| axes & (1 << a) != 0) {
                    idx += (rem % sizes[a]) * st[a];
                    rem /= sizes[a];
                }
                *o = T::from_f64(v[idx]);
            }
        }
        Ok(T::from_f64(
            self.vals[self.bound.roots[0] as usize]
                .first()
                .copied()
                .unwrap_or(f64::NAN),
        ))
    }

    fn passes(&self) -> usize {
        self.passes.len()
    }
    fn cap_isa(&mut self, isa: crate::exec::Isa) -> crate::exec::Isa {
        self.isa = self.isa.capped(isa);
        self.isa.public()
    }
    #[cfg(test)]
    fn native_listing(&self) -> Vec<Option<crate::exec::NativeEntry>> {
        self.listing.clone()
    }
}

impl<T: Real> Vm<T> {
    /// The instruction set the kernels run with.
    pub fn isa(&self) -> crate::exec::Isa {
        self.isa.public()
    }

    /// Panics (in every build) unless each buffer has the length the bound graph gives it: an
    /// input its node's element count (or 0 when an absent optional input is never read), each
    /// gradient its input's full element count. The kernels index and write through these
    /// lengths, so `run` is safe for any arguments.
    fn check_buffers(&self, inputs: &[&[T]], grads: &[&mut [T]]) {
        let b = &self.bound;
        for (i, want) in self.input_lens.iter().enumerate() {
            if let Some(want) = *want {
                let got = inputs.get(self.real_in(i)).map(|x| x.len());
                assert_eq!(
                    got,
                    Some(want),
                    "input {i}: buffer of {got:?} elements, the plan needs {want}"
                );
            }
        }
        if !self.out_addr.is_empty() {
            for a in &self.out_addr {
                let got = grads.get(a.real).map(|g| g.len());
                assert_eq!(
                    got,
                    Some(a.len),
                    "gradient {}: buffer of {got:?} elements",
                    a.real
                );
            }
            return;
        }
        assert_eq!(
            grads.len(),
            b.roots.len() - 1,
            "one gradient buffer per differentiable input"
        );
        for (k, gr) in grads.iter().enumerate() {
            let want = numel(b.grad_axes[k], &b.sizes);
            assert_eq!(
                gr.len(),
                want,
                "gradient {k}: buffer of {} elements, the plan needs {want}",
                gr.len()
            );
        }
    }

    /// The caller's input buffer behind input `v` of the graph.
    fn real_in(&self, v: usize) -> usize {
        self.in_addr.get(v).map_or(v, |a| a.real)
    }

    /// Per pass: whether it runs a native kernel (else bytecode).
    pub fn native_passes(&self) -> Vec<bool> {
        self.natives.iter().map(Option::is_some).collect()
    }

    /// Per memory pass: (big nodes computed per element, reductions accumulated, buffers stored).
    pub fn pass_shapes(&self) -> Vec<(usize, usize, usize)> {
        self.sched
            .kernels
            .iter()
            .map(|k| (k.nodes.len(), k.reductions.len(), k.stores.len()))
            .collect()
    }
}
