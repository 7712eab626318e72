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
use crate::ops::math::Real;
use crate::ops::family::{family_both, family_sig, family_sig_softplus, family_softplus};
use crate::ops::{const_value, Class, Op};
use crate::optimise::fuse::{schedule, NotFusable, Schedule};

/// Lanes per block (register length).
pub const BLOCK: usize = 512;
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

#[derive(Clone, Copy, Debug)]
enum Src {
    Reg(u16),
    Input(u16),
}

#[derive(Clone, Copy, Debug)]
enum Instr {
    Map {
        op: Op,
        dst: u16,
        a: Src,
        b: Src,
        c: Src,
    },
    /// The stable primitives of one `x` in one loop sharing `exp(-|x|)`: writes
    /// [sigmoid(x), sigmoid(-x), softplus(x), softplus(-x), log_sigmoid(x), log_sigmoid(-x)]
    /// (slots 0-1 only for `Sig`, 2-5 only for `Softplus`; unused slots go to scratch registers).
    Family {
        x: Src,
        kind: FamilyKind,
        dst: [u16; 6],
    },
    Reduce {
        src: Src,
        red: u16,
    },
    /// `Map(mul, a, b) -> r; Reduce(sum, r)` where nothing else reads `r`: the products are summed
    /// as they are made (the same roundings, no register round trip).
    DotSum {
        a: Src,
        b: Src,
        red: u16,
    },
    Store {
        src: Src,
        out: u16,
    },
    /// A `Map` whose only reader was a `Store`: writes the output buffer directly.
    MapStore {
        op: Op,
        out: u16,
        a: Src,
        b: Src,
        c: Src,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FamilyKind {
    /// slots 0-1
    Sig,
    /// slots 2-5
    Softplus,
    /// slots 0-3 (no log_sigmoid member)
    SigSoftplus,
    /// slots 0-5
    Both,
}

/// The family slot of a stable primitive (the op table's `family` field).
fn family_slot(op: Op) -> Option<usize> {
    op.def().family
}

/// Bytecode for one fused kernel: family grouping of the stable primitives, dead-node
/// skipping, register allocation by liveness (an instruction's destinations are allocated
/// before its operands are freed, so they never alias).
fn codegen(
    g: &crate::ir::graph::Graph,
    sched: &Schedule,
    k: &crate::optimise::fuse::Kernel,
    sizes: &[usize],
    superinstructions: bool,
) -> PassCode {
    use std::collections::HashMap;
    let n_axes = sizes.len();
    let big = |id: NodeId| sched.big[id as usize];
    // Families: members (sigmoid/softplus/log_sigmoid of x or -x) grouped by x.
    let mut family_of: HashMap<NodeId, (NodeId, usize)> = HashMap::new(); // member -> (x, slot)
    let mut members: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &id in &k.nodes {
        let n = g.node(id);
        if let Some(slot) = family_slot(n.op) {
            let a = n.args[0];
            let (x, neg) = match g.node(a).op {
                Op::Neg if big(g.node(a).args[0]) => (g.node(a).args[0], 1),
                _ => (a, 0),
            };
            family_of.insert(id, (x, slot + neg));
            members.entry(x).or_default().push(id);
        }
    }
    family_of.retain(|_, (x, _)| members.get(x).is_some_and(|m| m.len() >= 2));
    // Which nodes must be computed: consumers first (reverse topological order).
    let mut needed: HashMap<NodeId, bool> = HashMap::new();
    for &r in &k.reductions {
        needed.insert(g.node(r).args[0], true);
    }
    for &(_, s) in &k.stores {
        needed.insert(s, true);
    }
    for &id in k.nodes.iter().rev() {
        if !needed.get(&id).copied().unwrap_or(false) {
            continue;
        }
        match family_of.get(&id) {
            Some(&(x, _)) => {
                needed.insert(x, true);
            }
            None => {
                for &a in &g.node(id).args {
                    needed.insert(a, true);
                }
            }
        }
    }
    let is_needed = |id: NodeId| needed.get(&id).copied().unwrap_or(false);
    // Uses (position in the emitted order) for liveness.
    let order: Vec<NodeId> = k
        .nodes
        .iter()
        .copied()
        .filter(|&id| is_needed(id))
        .collect();
    let mut last_use: HashMap<NodeId, usize> = HashMap::new();
    let mut small_used: Vec<NodeId> = Vec::new();
    let mut note_use = |a: NodeId, pos: usize, last_use: &mut HashMap<NodeId, usize>| {
        let e = last_use.entry(a).or_insert(pos);
        *e = (*e).max(pos);
        if !big(a) && !small_used.contains(&a) {
            small_used.push(a);
        }
    };
    for (pos, &id) in order.iter().enumerate() {
        match family_of.get(&id) {
            Some(&(x, _)) => note_use(x, pos, &mut last_use),
            None => {
                for &a in &g.node(id).args {
                    note_use(a, pos, &mut last_use);
                }
            }
        }
    }
    let end = order.len();
    for &r in &k.reductions {
        note_use(g.node(r).args[0], end, &mut last_use);
    }
    for &(_, s) in &k.stores {
        note_use(s, end, &mut last_use);
    }
    // Small values read by this pass: pinned registers.
    let mut reg_of: HashMap<NodeId, u16> = HashMap::new();
    let mut splats = Vec::new();
    for &a in &small_used {
        let r = splats.len() as u16;
        reg_of.insert(a, r);
        let node = g.node(a);
        splats.push(Splat {
            reg: r,
            node: a,
            strides: strides_for(node.axes, sizes, n_axes - 1),
            constant: const_value(node),
        });
    }
    let pinned = splats.len();
    let mut n_regs = pinned;
    let mut free: Vec<u16> = Vec::new();
    let alloc = |free: &mut Vec<u16>, n_regs: &mut usize| match free.pop() {
        Some(r) => r,
        None => {
            *n_regs += 1;
            (*n_regs - 1) as u16
        }
    };
    let src_of = |id: NodeId, reg_of: &HashMap<NodeId, u16>| -> Src {
        let node = g.node(id);
        match (node.op, node.attr) {
            (Op::Input, Attr::Input(i)) if big(id) => Src::Input(i),
            _ => Src::Reg(reg_of[&id]),
        }
    };
    let mut code = Vec::new();
    let mut family_done: HashMap<NodeId, bool> = HashMap::new();
    for (pos, &id) in order.iter().enumerate() {
        let node = g.node(id);
        if node.op == Op::Input {
            continue;
        }
        let mut read: Vec<NodeId> = node.args.clone();
        read.sort_unstable();
        read.dedup(); // mul(x, x) must free x once
        if let Some(&(x, _)) = family_of.get(&id) {
            read = vec![x];
            if family_done.contains_key(&x) {
                continue; // emitted with the first member
            }
            family_done.insert(x, true);
            let ms: Vec<NodeId> = members[&x]
                .iter()
                .copied()
                .filter(|&m| is_needed(m) && family_of.contains_key(&m))
                .collect();
            let has_sig = ms.iter().any(|m| family_of[m].1 < 2);
            let has_sp = ms.iter().any(|m| family_of[m].1 >= 2);
            let has_ls = ms.iter().any(|m| family_of[m].1 >= 4);
            let kind = match (has_sig, has_sp, has_ls) {
                (true, false, _) => FamilyKind::Sig,
                (false, true, _) => FamilyKind::Softplus,
                (true, true, false) => FamilyKind::SigSoftplus,
                _ => FamilyKind::Both,
            };
            let mut dst = [0u16; 6];
            let mut scratch = Vec::new();
            for (slot, d) in dst.iter_mut().enumerate() {
                let used_by_kind = match kind {
                    FamilyKind::Sig => slot < 2,
                    FamilyKind::Softplus => slot >= 2,
                    FamilyKind::SigSoftplus => slot < 4,
                    FamilyKind::Both => true,
                };
                if !used_by_kind {
                    continue;
                }
                match ms.iter().find(|m| family_of[*m].1 == slot) {
                    Some(&m) => {
                        let r = alloc(&mut free, &mut n_regs);
                        reg_of.insert(m, r);
                        *d = r;
                    }
                    None => {
                        let r = alloc(&mut free, &mut n_regs);
                        scratch.push(r);
                        *d = r;
                    }
                }
            }
            code.push(Instr::Family {
                x: src_of(x, &reg_of),
                kind,
                dst,
            });
            free.extend(scratch);
        } else {
            let dst = alloc(&mut free, &mut n_regs);
            let args: Vec<Src> = node.args.iter().map(|&a| src_of(a, &reg_of)).collect();
            // A broadcast of a small value copies its pinned register: the table's kernel of
            // `broadcast` is that copy.
            let op = node.op;
            let a = args[0];
            let b = *args.get(1).unwrap_or(&a);
            let c = *args.get(2).unwrap_or(&a);
            code.push(Instr::Map { op, dst, a, b, c });
            reg_of.insert(id, dst);
        }
        for x in read {
            if big(x) && last_use.get(&x) == Some(&pos) && g.node(x).op != Op::Input {
                if let Some(&r) = reg_of.get(&x) {
                    if r as usize >= pinned {
                        free.push(r);
                    }
                }
            }
        }
    }
    let mut reductions = Vec::new();
    let mut slots = 0;
    for (i, &r) in k.reductions.iter().enumerate() {
        let node = g.node(r);
        let Class::Reduce { init } = node.op.def().class else {
            unreachable!("reduction")
        };
        code.push(Instr::Reduce {
            src: src_of(node.args[0], &reg_of),
            red: i as u16,
        });
        reductions.push(Reduction {
            node: r,
            op: node.op,
            init,
            combine: node.op.def().f64,
            strides: strides_for(node.axes, sizes, n_axes - 1),
            base: slots,
        });
        slots += numel(node.axes, sizes);
    }
    for &(root, s) in &k.stores {
        code.push(Instr::Store {
            src: src_of(s, &reg_of),
            out: (root - 1) as u16,
        });
    }
    let stream_stores = sizes.iter().product::<usize>() >= STREAM_MIN;
    if superinstructions {
        if !stream_stores {
            store_in_place(&mut code);
        }
        dot_sums(&mut code, &reductions);
    }
    let mut streams: Vec<u16> = Vec::new();
    for ins in &code {
        let srcs = reads(ins);
        for s in srcs {
            if let Src::Input(i) = s {
                if !streams.contains(&i) {
                    streams.push(i);
                }
            }
        }
    }
    PassCode {
        code,
        n_regs: n_regs.max(1),
        splats,
        reductions,
        slots,
        streams,
        stream_stores,
    }
}

/// The operands an instruction reads.
fn reads(ins: &Instr) -> Vec<Src> {
    match *ins {
        Instr::Map { a, b, c, .. } | Instr::MapStore { a, b, c, .. } => vec![a, b, c],
        Instr::Family { x, .. } => vec![x],
        Instr::Reduce { src, .. } | Instr::Store { src, .. } => vec![src],
        Instr::DotSum { a, b, .. } => vec![a, b],
    }
}

/// Superinstructions: where instruction `i` (a store or a reduction) reads register `r`, `r` was
/// last written by instruction `p` and nothing after `p` but `i` reads it, `merge(code[p],
/// code[i])` may replace the pair by one instruction in `p`'s place (its operands are live there;
/// a store's place in the block and a reduction's slot do not depend on when they happen).
fn merge_pairs(code: &mut Vec<Instr>, merge: impl Fn(Instr, Instr) -> Option<Instr>) {
    let mut i = 0;
    while i < code.len() {
        let (Instr::Reduce {
            src: Src::Reg(r), ..
        }
        | Instr::Store {
            src: Src::Reg(r), ..
        }) = code[i]
        else {
            i += 1;
            continue;
        };
        let reads_r = |ins: &Instr| {
            reads(ins)
                .iter()
                .any(|s| matches!(s, Src::Reg(q) if *q == r))
        };
        let producer = code[..i].iter().rposition(|ins| match *ins {
            Instr::Map { dst, .. } => dst == r,
            Instr::Family { dst, .. } => dst.contains(&r),
            _ => false,
        });
        let sole = producer.filter(|&p| (p + 1..code.len()).all(|k| k == i || !reads_r(&code[k])));
        match sole.and_then(|p| merge(code[p], code[i]).map(|m| (p, m))) {
            Some((p, m)) => {
                code[p] = m;
                code.remove(i);
            }
            None => i += 1,
        }
    }
}

/// `Map -> r; ...; Store r` becomes one `MapStore`: the result goes to the output buffer without
/// a register round trip and a copy.
fn store_in_place(code: &mut Vec<Instr>) {
    merge_pairs(code, |p, i| match (p, i) {
        (Instr::Map { op, a, b, c, .. }, Instr::Store { out, .. }) => {
            Some(Instr::MapStore { op, out, a, b, c })
        }
        _ => None,
    });
}

/// `Map(mul, a, b) -> r; ...; Reduce(sum, r)` becomes one `DotSum`: the products are summed as
/// they are made.
fn dot_sums(code: &mut Vec<Instr>, reductions: &[Reduction]) {
    merge_pairs(code, |p, i| match (p, i) {
        (
            Instr::Map {
                op: Op::Mul, a, b, ..
            },
            Instr::Reduce { red, .. },
        ) if reductions[red as usize].op == Op::Sum => Some(Instr::DotSum { a, b, red }),
        _ => None,
    });
}

#[derive(Clone, Debug)]
struct Reduction {
    node: NodeId,
    op: Op,
    /// The table's identity and combiner (its f64 kernel): `Sum` also has a vectorised block
    /// path, every other reduction folds with the combiner.
    init: f64,
    combine: fn(&[f64]) -> f64,
    /// Per outer axis: the stride of the group index (0 for axes the result lacks).
    strides: Vec<usize>,
    /// First partial slot of this reduction; it has `groups` slots.
    base: usize,
}

#[derive(Clone, Debug)]
struct Splat {
    reg: u16,
    node: NodeId,
    strides: Vec<usize>,
    constant: Option<f64>,
}

#[derive(Clone, Debug)]
struct PassCode {
    code: Vec<Instr>,
    n_regs: usize,
    splats: Vec<Splat>,
    reductions: Vec<Reduction>,
    slots: usize,
    /// Inputs the pass streams through (prefetched a block ahead).
    streams: Vec<u16>,
    /// Outputs are written with non-temporal stores (the problem is too big to stay cached).
    stream_stores: bool,
}

/// Index maps of a small node over its arguments, for the f64 tail.
#[derive(Clone, Debug)]
struct SmallNode {
    id: NodeId,
    /// Per argument, per output element: the argument's flat index (Map, Broadcast); for a
    /// small-to-small reduction, per *input* element the output index.
    maps: Vec<Vec<usize>>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Isa {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    fn name(self) -> &'static str {
        match self {
            Isa::Base => "baseline",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
        }
    }

    /// This instruction set, or a narrower one named by `cap` (`avx2`, `baseline`/`base`).
    fn capped(self, cap: &str) -> Isa {
        match (self, cap) {
            (_, "base" | "baseline") => Isa::Base,
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx512, "avx2") => Isa::Avx2,
            _ => self,
        }
    }

    /// The widest instruction set this CPU has, capped by `LOSSLANG_ISA` (`avx512`, `avx2` or
    /// `base`; for comparisons and for reproducing another machine's bits).
    fn detect() -> Isa {
        let cap = std::env::var("LOSSLANG_ISA").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            if cap != "base"
                && cap != "avx2"
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if cap != "base" && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        let _ = cap;
        Isa::Base
    }
}

pub struct Vm<T: Real> {
    bound: Arc<Bound>,
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
}

fn strides_for(axes: Axes, sizes: &[usize], n_outer: usize) -> Vec<usize> {
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

fn numel(axes: Axes, sizes: &[usize]) -> usize {
    sizes
        .iter()
        .enumerate()
        .filter(|(a, _)| axes & (1 << a) != 0)
        .map(|(_, &s)| s)
        .product()
}

impl<T: Real> Vm<T> {
    pub fn new(bound: Arc<Bound>) -> Result<Vm<T>, NotFusable> {
        Self::with_superinstructions(bound, true)
    }

    /// As [`Vm::new`]; without superinstructions (`MapStore`, `DotSum`) when `merge` is false,
    /// which must change nothing but speed (tests compare the bits).
    pub fn with_superinstructions(bound: Arc<Bound>, merge: bool) -> Result<Vm<T>, NotFusable> {
        let g = &bound.graph;
        let sizes = &bound.sizes;
        let sched = schedule(g, &bound.roots)?;
        if bound.roots.len() > 9 {
            return Err(NotFusable("more than 8 gradient outputs".into()));
        }
        let n_axes = sizes.len();
        let inner = sizes[n_axes - 1];
        let outer: Vec<usize> = sizes[..n_axes - 1].to_vec();
        let planes: usize = outer.iter().product();
        let bpp = inner.div_ceil(BLOCK);
        let n_chunks = (planes * bpp).div_ceil(CHUNK_BLOCKS);
        // Bytecode per pass.
        let mut passes = Vec::new();
        let mut max_slots = 0;
        for k in &sched.kernels {
            let pc = codegen(g, &sched, k, sizes, merge);
            max_slots = max_slots.max(pc.slots);
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
        Ok(Vm {
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
            bound,
        })
    }

    /// Evaluates the tail nodes of stage `p` in f64.
    fn run_tail(&mut self, p: usize, inputs: &[&[T]]) {
        let g = &self.bound.graph;
        for sn in &self.small[p] {
            let node = g.node(sn.id);
            let mut out = std::mem::take(&mut self.vals[sn.id as usize]);
            match (node.op, node.op.def().class) {
                (Op::Const, _) => out.fill(const_value(node).unwrap_or(f64::NAN)),
                (Op::Input, _) => {
                    if let Attr::Input(i) = node.attr {
                        for (o, x) in out.iter_mut().zip(inputs[i as usize]) {
                            *o = x.to_f64();
                        }
                    }
                }
                (Op::AxisSize, _) => {
                    let Attr::Axes(a) = node.attr else {
                        unreachable!("axes")
                    };
                    out.fill(numel(a, &self.bound.sizes) as f64);
                }
                (_, Class::Reduce { init }) => {
                    out.fill(init);
                    let f = node.op.def().f64;
                    let src = &self.vals[node.args[0] as usize];
                    for (i, &o) in sn.maps[0].iter().enumerate() {
                        out[o] = f(&[out[o], src[i]]);
                    }
                }
                (_, Class::Leaf) => unreachable!("every leaf op is matched above"),
                (_, Class::Map | Class::Broadcast) => {
                    let f = node.op.def().f64;
                    let na = node.args.len();
                    let mut buf = [0.0f64; 3];
                    for (i, o) in out.iter_mut().enumerate() {
                        for (k, b) in buf.iter_mut().enumerate().take(na) {
                            *b = self.vals[node.args[k] as usize][sn.maps[k][i]];
                        }
                        *o = f(&buf[..na]);
                    }
                }
            }
            self.vals[sn.id as usize] = out;
        }
    }
}

/// Shared, read-only state of one pass for the chunk loop.
struct Ctx<'a, T: Real> {
    pass: &'a PassCode,
    vals: &'a [Vec<f64>],
    inputs: &'a [&'a [T]],
    outs: &'a [OutPtr<T>],
    inner: usize,
    bpp: usize,
    total_blocks: usize,
    outer: &'a [usize],
    /// Big inputs whose finiteness this pass checks (slots after the reductions').
    checks: &'a [u16],
}

/// Partial slots per chunk: the slots used, rounded up to a cache line and one line more, so
/// that no cache line holds partials of two chunks (which two threads might be updating).
fn partial_stride(used: usize) -> usize {
    used.max(1).next_multiple_of(8) + 8
}

/// The registers inside a register file's allocation: cache-line aligned (no vector load or store
/// of a register straddles two lines) with at least a line of padding on either side (no line
/// shared with another thread's registers: false sharing would bounce it between the cores).
fn register_file<T: Real>(v: &mut [T]) -> &mut [T] {
    let size = std::mem::size_of::<T>();
    let skip = v.as_ptr().align_offset(64).min(64 / size) + 64 / size;
    let len = v.len() - REGFILE_PAD / size;
    &mut v[skip..skip + len]
}

#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T, usize);
// SAFETY: an OutPtr is a (pointer, length) of an output buffer that `run` borrows mutably for
// the whole call; chunks write disjoint element ranges of it (`out_block` checks each range
// against the length), so sending or sharing it between the pool's threads races on nothing.
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as for Send: shared only to write disjoint ranges.
unsafe impl<T: Sync> Sync for OutPtr<T> {}

/// 0 if every element is finite, NaN otherwise (x - x is 0 for finite x, NaN for NaN and ±inf);
/// summed in T lanes since only the NaN matters.
#[inline(always)]
#[allow(clippy::eq_op)]
fn nan_probe<T: Real>(x: &[T]) -> f64 {
    let zero = T::from_f64(0.0);
    let mut acc = [zero; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        let c: &[T; 16] = c.try_into().expect("chunk of 16");
        for j in 0..16 {
            acc[j] = acc[j] + (c[j] - c[j]);
        }
    }
    for (j, v) in rest.iter().enumerate() {
        acc[j] = acc[j] + (*v - *v);
    }
    acc.iter().fold(0.0, |s, v| s + v.to_f64())
}

/// `dst.copy_from_slice(src)` with non-temporal stores for the 16-byte-aligned middle; the
/// caller fences before another thread reads the data.
#[inline(always)]
fn stream_copy<T: Real>(dst: &mut [T], src: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let size = std::mem::size_of::<T>();
        let head = dst.as_ptr().align_offset(16);
        if head <= dst.len() {
            let per = 16 / size;
            let body = (dst.len() - head) / per * per;
            dst[..head].copy_from_slice(&src[..head]);
            for k in (head..head + body).step_by(per) {
                // SAFETY: dst[k..k + per] is in bounds and 16-byte aligned; src[k..k + per] is in
                // bounds (loaded unaligned).
                unsafe {
                    let v = _mm_loadu_si128(src.as_ptr().add(k) as *const __m128i);
                    _mm_stream_si128(dst.as_mut_ptr().add(k) as *mut __m128i, v);
                }
            }
            dst[head + body..].copy_from_slice(&src[head + body..]);
            return;
        }
    }
    dst.copy_from_slice(src);
}

/// `block_sum` of the products `a[i] * b[i]` (rounded to T, as a `Map` would store them).
#[inline(always)]
fn block_dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    let b = &b[..a.len()];
    let (mut lo, mut hi) = ([0.0f64; 8], [0.0f64; 8]);
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let x: &[T; 16] = x.try_into().expect("chunk of 16");
        let y: &[T; 16] = y.try_into().expect("chunk of 16");
        let p: [f64; 8] = std::array::from_fn(|j| (x[j] * y[j]).to_f64());
        let q: [f64; 8] = std::array::from_fn(|j| (x[8 + j] * y[8 + j]).to_f64());
        for j in 0..8 {
            lo[j] += p[j];
            hi[j] += q[j];
        }
    }
    lane_total(lo, hi, ra.iter().zip(rb).map(|(x, y)| (*x * *y).to_f64()))
}

/// The sum of a block in f64: 16 independent lanes in a fixed order, then a fixed tree — the same
/// bits on every ISA. The lanes are two 8-lane halves, each widened as a whole, so the widening
/// vectorises at full width.
#[inline(always)]
fn block_sum<T: Real>(x: &[T]) -> f64 {
    let (mut lo, mut hi) = ([0.0f64; 8], [0.0f64; 8]);
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        let a: [f64; 8] = std::array::from_fn(|j| c[j].to_f64());
        let b: [f64; 8] = std::array::from_fn(|j| c[8 + j].to_f64());
        for j in 0..8 {
            lo[j] += a[j];
            hi[j] += b[j];
        }
    }
    lane_total(lo, hi, rest.iter().map(|v| v.to_f64()))
}

/// The end of `block_sum`/`block_dot`: the remainder (fewer than 16 values) into lanes 0.., then
/// the 16 lanes by a fixed tree.
#[inline(always)]
fn lane_total(lo: [f64; 8], hi: [f64; 8], rest: impl Iterator<Item = f64>) -> f64 {
    let mut acc = [0.0f64; 16];
    acc[..8].copy_from_slice(&lo);
    acc[8..].copy_from_slice(&hi);
    for (j, v) in rest.enumerate() {
        acc[j] += v;
    }
    for w in [8, 4, 2, 1] {
        for j in 0..w {
            acc[j] += acc[j + w];
        }
    }
    acc[0]
}

#[inline(always)]
fn run_chunk<T: Real, const FMA: bool>(
    ctx: &Ctx<T>,
    chunk: usize,
    part: &mut [f64],
    regs: &mut [T],
) {
    let pass = ctx.pass;
    part[pass.slots..].fill(0.0);
    for r in &pass.reductions {
        let groups = r
            .strides
            .iter()
            .zip(ctx.outer)
            .map(|(s, n)| if *s != 0 { *n } else { 1 })
            .product::<usize>();
        part[r.base..r.base + groups].fill(r.init);
    }
    let mut coords = [0usize; 16];
    let mut last_plane = usize::MAX;
    let first = chunk * CHUNK_BLOCKS;
    let last = (first + CHUNK_BLOCKS).min(ctx.total_blocks);
    for blk in first..last {
        let plane = blk / ctx.bpp;
        let k = blk % ctx.bpp;
        let start = plane * ctx.inner + k * BLOCK;
        let len = BLOCK.min(ctx.inner - k * BLOCK);
        if plane != last_plane {
            let mut rem = plane;
            for a in (0..ctx.outer.len()).rev() {
                coords[a] = rem % ctx.outer[a];
                rem /= ctx.outer[a];
            }
            for s in &pass.splats {
                if s.constant.is_some() && last_plane != usize::MAX {
                    continue;
                }
                let idx: usize = s.strides.iter().zip(&coords).map(|(st, c)| st * c).sum();
                let v = T::from_f64(s.constant.unwrap_or_else(|| ctx.vals[s.node as usize][idx]));
                regs[s.reg as usize * BLOCK..(s.reg as usize + 1) * BLOCK].fill(v);
            }
            last_plane = plane;
        }
        // Ask for the next block of every streamed input (into L1) and for the block FAR beyond it
        // (into L2), a share of their cache lines before each instruction: the compute of this
        // block hides the latency of the next one, and the requests never queue up all at once (a
        // burst of them stalls the core on full fill buffers).
        let step = 64 / std::mem::size_of::<T>();
        let ahead = start + len;
        let n_lines = BLOCK.div_ceil(step);
        let n_ins = pass.code.len();
        #[allow(unused_variables)]
        let prefetch = |j: usize| {
            #[cfg(target_arch = "x86_64")]
            for &i in &pass.streams {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
                let data = ctx.inputs[i as usize];
                let from = j * n_lines / n_ins * step;
                let to = (j + 1) * n_lines / n_ins * step;
                let near = (ahead + from)..(ahead + to).min(data.len());
                let far = (ahead + FAR + from)..(ahead + FAR + to).min(data.len());
                for k in far.step_by(step) {
                    // SAFETY: prefetching is a hint that never faults; `k < data.len()`, so the
                    // pointer stays inside the buffer and `add` is in bounds.
                    unsafe { _mm_prefetch::<{ _MM_HINT_T1 }>(data.as_ptr().add(k) as *const i8) };
                }
                for k in near.step_by(step) {
                    // SAFETY: as above.
                    unsafe { _mm_prefetch::<{ _MM_HINT_T0 }>(data.as_ptr().add(k) as *const i8) };
                }
            }
        };
        let base = regs.as_mut_ptr();
        let src = |s: Src| -> &[T] {
            match s {
                // SAFETY: registers are disjoint BLOCK-sized ranges of `regs`; an instruction's
                // destination register is never one of its operands (allocated before they are freed).
                Src::Reg(r) => unsafe {
                    std::slice::from_raw_parts(base.add(r as usize * BLOCK), len)
                },
                Src::Input(i) => &ctx.inputs[i as usize][start..start + len],
            }
        };
        for (k, &i) in ctx.checks.iter().enumerate() {
            // x - x is 0 for finite x and NaN otherwise: the sum flags any NaN or infinity.
            let x = &ctx.inputs[i as usize][start..start + len];
            part[pass.slots + k] += nan_probe(x);
        }
        // This block's range of output buffer `out`.
        let out_block = |out: u16| -> &mut [T] {
            let o = ctx.outs[out as usize];
            // Checked in every build: the raw write below relies on it.
            assert!(!o.0.is_null() && start + len <= o.1, "output block outside its buffer");
            // SAFETY: [start, start + len) lies in this chunk's disjoint range of the buffer, and
            // one instruction writes it at a time.
            unsafe { std::slice::from_raw_parts_mut(o.0.add(start), len) }
        };
        // The partial slot of reduction `red` for this block's group.
        let slot_of = |red: u16| {
            let r = &pass.reductions[red as usize];
            r.base
                + r.strides
                    .iter()
                    .zip(&coords)
                    .map(|(st, c)| st * c)
                    .sum::<usize>()
        };
        for (j, ins) in pass.code.iter().enumerate() {
            prefetch(j);
            match *ins {
                Instr::Map { op, dst, a, b, c } => {
                    // SAFETY: see above; `dst` differs from every operand register.
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(base.add(dst as usize * BLOCK), len)
                    };
                    T::block_kernel::<FMA>(op, out, src(a), src(b), src(c));
                }
                Instr::Family { x, kind, dst } => {
                    // SAFETY: the six destination registers are distinct from each other and
                    // from `x` (allocated together, before `x` is freed).
                    let o = |k: usize| unsafe {
                        std::slice::from_raw_parts_mut(base.add(dst[k] as usize * BLOCK), len)
                    };
                    match kind {
                        FamilyKind::Sig => family_sig::<T, FMA>(src(x), o(0), o(1)),
                        FamilyKind::Softplus => {
                            family_softplus::<T, FMA>(src(x), [o(2), o(3), o(4), o(5)])
                        }
                        FamilyKind::SigSoftplus => {
                            family_sig_softplus::<T, FMA>(src(x), [o(0), o(1), o(2), o(3)])
                        }
                        FamilyKind::Both => {
                            family_both::<T, FMA>(src(x), [o(0), o(1), o(2), o(3), o(4), o(5)])
                        }
                    }
                }
                Instr::DotSum { a, b, red } => {
                    let slot = slot_of(red);
                    part[slot] += block_dot(src(a), src(b));
                }
                Instr::Reduce { src: s, red } => {
                    let r = &pass.reductions[red as usize];
                    let slot = slot_of(red);
                    let x = src(s);
                    part[slot] = if r.op == Op::Sum {
                        part[slot] + block_sum(x)
                    } else {
                        let f = r.combine;
                        x.iter().fold(part[slot], |m, v| f(&[m, v.to_f64()]))
                    };
                }
                Instr::MapStore { op, out, a, b, c } => {
                    T::block_kernel::<FMA>(op, out_block(out), src(a), src(b), src(c));
                }
                Instr::Store { src: s, out } => {
                    let dst = out_block(out);
                    if pass.stream_stores {
                        stream_copy(dst, src(s));
                    } else {
                        dst.copy_from_slice(src(s));
                    }
                }
            }
        }
    }
    if pass.stream_stores {
        // Order this chunk's non-temporal stores before anyone reads the buffer.
        // SAFETY: sfence has no preconditions (SSE, part of x86_64).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
unsafe fn run_chunk_avx512<T: Real>(ctx: &Ctx<T>, chunk: usize, part: &mut [f64], regs: &mut [T]) {
    run_chunk::<T, true>(ctx, chunk, part, regs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_chunk_avx2<T: Real>(ctx: &Ctx<T>, chunk: usize, part: &mut [f64], regs: &mut [T]) {
    run_chunk::<T, true>(ctx, chunk, part, regs)
}

fn run_chunk_base<T: Real>(ctx: &Ctx<T>, chunk: usize, part: &mut [f64], regs: &mut [T]) {
    run_chunk::<T, false>(ctx, chunk, part, regs)
}

fn dispatch<T: Real>(isa: Isa, ctx: &Ctx<T>, chunk: usize, part: &mut [f64], regs: &mut [T]) {
    match isa {
        // SAFETY: `Isa::detect` chose Avx512 only after detecting every feature it enables.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { run_chunk_avx512(ctx, chunk, part, regs) },
        // SAFETY: `Isa::detect` chose Avx2 only after detecting avx2 and fma.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { run_chunk_avx2(ctx, chunk, part, regs) },
        Isa::Base => run_chunk_base(ctx, chunk, part, regs),
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
            let in_pass =
                |i: usize| !self.passes.is_empty() && self.big_inputs.contains(&(i as u16));
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
            for (k, &i) in checks.iter().enumerate() {
                if (0..self.n_chunks).any(|c| self.partials[c * slots + pass.slots + k] != 0.0) {
                    return Err(i as usize);
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
                        && has_non_finite(inputs[i as usize])
                    {
                        return Err(i as usize);
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
            let st = strides_for(node.axes, &self.bound.sizes, self.bound.sizes.len());
            let v = &self.vals[root as usize];
            let buf = &mut grads[k - 1];
            let sizes = &self.bound.sizes;
            for (flat, o) in buf.iter_mut().enumerate() {
                let mut rem = flat;
                let mut idx = 0;
                for a in (0..sizes.len()).rev() {
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
    fn cap_isa(&mut self, isa: &str) -> &'static str {
        self.isa = self.isa.capped(isa);
        self.isa.name()
    }
}

impl<T: Real> Vm<T> {
    /// The instruction set the kernels run with (`avx512`, `avx2` or `baseline`).
    pub fn isa(&self) -> &'static str {
        self.isa.name()
    }

    /// Panics (in every build) unless each buffer has the length the bound graph gives it: an
    /// input its node's element count (or 0 when an absent optional input is never read), each
    /// gradient its input's full element count. The kernels index and write through these
    /// lengths, so `run` is safe for any arguments.
    fn check_buffers(&self, inputs: &[&[T]], grads: &[&mut [T]]) {
        let b = &self.bound;
        let g = &b.graph;
        for id in 0..g.len() {
            let n = g.node(id as NodeId);
            if let (Op::Input, Attr::Input(i)) = (n.op, n.attr) {
                let want = numel(n.axes, &b.sizes);
                let got = inputs.get(i as usize).map(|x| x.len());
                assert_eq!(got, Some(want), "input {i}: buffer of {got:?} elements, the plan needs {want}");
            }
        }
        assert_eq!(grads.len(), b.roots.len() - 1, "one gradient buffer per differentiable input");
        for (k, gr) in grads.iter().enumerate() {
            let want = numel(b.grad_axes[k], &b.sizes);
            assert_eq!(gr.len(), want, "gradient {k}: buffer of {} elements, the plan needs {want}", gr.len());
        }
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
