//! The chunk loop: runs one pass's bytecode over one chunk of blocks, compiled three times
//! (AVX-512, AVX2+FMA, baseline) and dispatched by run-time CPU detection. All of the VM's
//! `unsafe` that touches memory is here, each block with its SAFETY argument.
//!
//! In: a pass's [`Ctx`], a chunk index, its partials and a register file. Out: partials and the
//! output blocks it owns. Never here: deciding what to compute.

use super::*;

/// Shared, read-only state of one pass for the chunk loop.
pub(super) struct Ctx<'a, T: Real> {
    pub(super) pass: &'a PassCode,
    pub(super) vals: &'a [Vec<f64>],
    pub(super) inputs: &'a [&'a [T]],
    pub(super) outs: &'a [OutPtr<T>],
    pub(super) inner: usize,
    pub(super) bpp: usize,
    pub(super) total_blocks: usize,
    pub(super) outer: &'a [usize],
    /// Big inputs whose finiteness this pass checks (slots after the reductions').
    pub(super) checks: &'a [u16],
    /// The pass's native kernel for the instruction set being run, if it has one.
    pub(super) native: Option<unsafe fn(&mut Io<T>)>,
    /// Input and output addresses in the caller's buffers (empty: identity; see [`Addr`]).
    pub(super) in_addr: &'a [Addr],
    pub(super) out_addr: &'a [Addr],
}

#[derive(Clone, Copy)]
pub(super) struct OutPtr<T>(pub(super) *mut T, pub(super) usize);
// SAFETY: an OutPtr is a (pointer, length) of an output buffer that `run` borrows mutably for
// the whole call; chunks write disjoint element ranges of it (`out_block` checks each range
// against the length), so sending or sharing it between the pool's threads races on nothing.
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as for Send: shared only to write disjoint ranges.
unsafe impl<T: Sync> Sync for OutPtr<T> {}

#[inline(always)]
pub(super) fn run_chunk<T: Real, const FMA: bool>(
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
    // Per mapped input / output: where the current plane starts in its buffer.
    let mut in_base = [0usize; MAX_ADDRS];
    let mut out_base = [0usize; MAX_ADDRS];
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
                // A native kernel reads a pinned register's first lane only.
                let lanes = if ctx.native.is_some() { 1 } else { BLOCK };
                regs[s.reg as usize * BLOCK..s.reg as usize * BLOCK + lanes].fill(v);
            }
            for (b, a) in in_base.iter_mut().zip(ctx.in_addr) {
                *b = a.start(&coords[..ctx.outer.len()], 0);
            }
            for (b, a) in out_base.iter_mut().zip(ctx.out_addr) {
                *b = a.start(&coords[..ctx.outer.len()], 0);
            }
            last_plane = plane;
        }
        // Ask for the next block of every streamed input (into L1) and for the block FAR beyond it
        // (into L2), a share of their cache lines before each instruction: the compute of this
        // block hides the latency of the next one, and the requests never queue up all at once (a
        // burst of them stalls the core on full fill buffers).
        // Input or output `i`: its buffer and this block's start there.
        let at = |map: &[Addr], base: &[usize; MAX_ADDRS], i: usize| -> (usize, usize) {
            match map.get(i) {
                None => (i, start),
                Some(a) => (a.real, base[i] + k * BLOCK),
            }
        };
        let input_at = |i: usize| at(ctx.in_addr, &in_base, i);
        let output_at = |i: usize| at(ctx.out_addr, &out_base, i);
        let step = 64 / std::mem::size_of::<T>();
        let n_lines = BLOCK.div_ceil(step);
        let n_ins = pass.code.len();
        // With many streams (class planes), the (stream, line) requests are spread over the
        // instructions instead: one range per instruction, not one per stream.
        let spread = pass.streams.len() * n_lines;
        #[allow(unused_variables)]
        let prefetch = |j: usize| {
            #[cfg(target_arch = "x86_64")]
            if !ctx.in_addr.is_empty() {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
                for q in j * spread / n_ins..(j + 1) * spread / n_ins {
                    let (r, s) = input_at(pass.streams[q / n_lines] as usize);
                    let data = ctx.inputs[r];
                    let near = s + len + (q % n_lines) * step;
                    if near + FAR < data.len() {
                        // SAFETY: prefetching is a hint that never faults; the index is below
                        // `data.len()`, so `add` stays in bounds.
                        unsafe {
                            _mm_prefetch::<{ _MM_HINT_T1 }>(
                                data.as_ptr().add(near + FAR) as *const i8
                            )
                        };
                    }
                    if near < data.len() {
                        // SAFETY: as above.
                        unsafe {
                            _mm_prefetch::<{ _MM_HINT_T0 }>(data.as_ptr().add(near) as *const i8)
                        };
                    }
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            for &i in &pass.streams {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
                let (r, s) = input_at(i as usize);
                let (data, ahead) = (ctx.inputs[r], s + len);
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
                Src::Input(i) => {
                    let (r, s) = input_at(i as usize);
                    &ctx.inputs[r][s..s + len]
                }
            }
        };
        for (k, &i) in ctx.checks.iter().enumerate() {
            // A native kernel probes the inputs it reads as it reads them (into the first check
            // slot; `run` finds which input it was).
            if ctx.native.is_some() && pass.streams.contains(&i) {
                continue;
            }
            // x - x is 0 for finite x and NaN otherwise: the sum flags any NaN or infinity.
            let (r, s) = input_at(i as usize);
            let x = &ctx.inputs[r][s..s + len];
            part[pass.slots + k] += nan_probe(x);
        }
        // This block's range of output buffer `out`.
        let out_block = |out: u16| -> &mut [T] {
            let (r, s) = output_at(out as usize);
            let o = ctx.outs[r];
            // Checked in every build: the raw write below relies on it.
            assert!(
                !o.0.is_null() && s + len <= o.1,
                "output block outside its buffer"
            );
            // SAFETY: [s, s + len) lies in this chunk's disjoint range of the buffer (blocks of
            // distinct planes, or of distinct class planes, never overlap), and one instruction
            // writes it at a time.
            unsafe { std::slice::from_raw_parts_mut(o.0.add(s), len) }
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
        if let Some(kernel) = ctx.native {
            let mut slots = [0; MAX_REDUCTIONS];
            for (red, s) in slots.iter_mut().enumerate().take(pass.reductions.len()) {
                *s = slot_of(red as u16);
            }
            let (pinned, scratch) = regs.split_at_mut(pass.splats.len() * BLOCK);
            let mut io = Io {
                len,
                start,
                inputs: ctx.inputs,
                regs: pinned,
                scratch,
                outs: ctx.outs,
                stream: pass.stream_stores,
                probe_slot: (!ctx.checks.is_empty()).then_some(pass.slots),
                part,
                slots,
            };
            // SAFETY: `ctx.native` is the variant for the instruction set `dispatch` chose after
            // detecting its features; the kernel's memory accesses are bounds-checked (`Io`).
            unsafe { kernel(&mut io) };
            continue;
        }
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
pub(super) unsafe fn run_chunk_avx512<T: Real>(
    ctx: &Ctx<T>,
    chunk: usize,
    part: &mut [f64],
    regs: &mut [T],
) {
    run_chunk::<T, true>(ctx, chunk, part, regs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run_chunk_avx2<T: Real>(
    ctx: &Ctx<T>,
    chunk: usize,
    part: &mut [f64],
    regs: &mut [T],
) {
    run_chunk::<T, true>(ctx, chunk, part, regs)
}

pub(super) fn run_chunk_base<T: Real>(
    ctx: &Ctx<T>,
    chunk: usize,
    part: &mut [f64],
    regs: &mut [T],
) {
    run_chunk::<T, false>(ctx, chunk, part, regs)
}

pub(super) fn dispatch<T: Real>(
    isa: Isa,
    ctx: &Ctx<T>,
    chunk: usize,
    part: &mut [f64],
    regs: &mut [T],
) {
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
