//! Native kernels: the fused passes of the standard library as generated Rust, run in place of
//! their bytecode. A pass's bytecode (before superinstructions) is its *key*; `generated.rs`
//! holds one function per key, written by [`emit`] from that bytecode and checked in (the test
//! `native_kernels_are_fresh` fails when a loss, the optimiser or code generation changes a key
//! or its code; `LOSSLANG_BLESS=1` rewrites the file).
//!
//! A native kernel computes exactly what the bytecode computes, lane by lane, with the op table's
//! lane kernels ([`Real::lane_kernel`], the body every block kernel loops over) and the same
//! family element, and sums each reduction's block in the same 16 f64 lanes and tree as
//! `block_sum`: the bits are the VM's (tests compare them). What it saves is the register file:
//! a block's values stay in CPU registers, 16 lanes at a time, instead of making a round trip
//! through L1 per instruction, and small values are read once per block instead of splatted.
//!
//! In: [`Io`] (one block of one pass: inputs, splat values, outputs, partial slots). Out: the
//! block's outputs and its reductions' partials. Never here: choosing blocks or threads (the
//! chunk loop does), passes with reductions other than sums (they run as bytecode).

use super::*;

/// Most reductions a native pass accumulates.
pub(super) const MAX_REDUCTIONS: usize = 16;

/// One block of one pass, as a native kernel sees it.
pub(crate) struct Io<'a, T: Real> {
    /// Elements in the block, and its first element's index in every big buffer.
    pub(super) len: usize,
    pub(super) start: usize,
    pub(super) inputs: &'a [&'a [T]],
    /// The pinned registers: register `r`'s value is `regs[r * BLOCK]`.
    pub(super) regs: &'a [T],
    /// The rest of the register file: a block per streamed output.
    pub(super) scratch: &'a mut [T],
    pub(super) outs: &'a [OutPtr<T>],
    /// Write outputs with non-temporal stores.
    pub(super) stream: bool,
    pub(super) part: &'a mut [f64],
    /// The partial slot that flags a NaN or infinity in an input the kernel reads, when this pass
    /// checks them.
    pub(super) probe_slot: Option<usize>,
    /// Per reduction: its partial slot for this block's group.
    pub(super) slots: [usize; MAX_REDUCTIONS],
}

impl<'a, T: Real> Io<'a, T> {
    /// The block of big input `i`.
    #[inline(always)]
    pub(super) fn input(&self, i: usize) -> &'a [T] {
        let x: &'a [T] = self.inputs[i];
        &x[self.start..self.start + self.len]
    }

    /// The value of pinned register `r`.
    #[inline(always)]
    pub(super) fn splat(&self, r: usize) -> T {
        self.regs[r * BLOCK]
    }

    /// The `N` lanes of `x` from `at`.
    #[inline(always)]
    pub(super) fn step<const N: usize>(x: &[T], at: usize) -> &[T; N] {
        x[at..at + N].try_into().expect("N lanes")
    }

    /// Up to 16 lanes of `x` from `q`, zero beyond `m`.
    #[inline(always)]
    pub(super) fn lanes(x: &[T], q: usize, m: usize) -> [T; LANES] {
        if m == LANES {
            x[q..q + LANES].try_into().expect("16 lanes")
        } else {
            let mut v = [T::from_f64(0.0); LANES];
            v[..m].copy_from_slice(&x[q..q + m]);
            v
        }
    }

    /// This block's range of output `out` (checked against the buffer once per block).
    #[inline(always)]
    fn out_range(&self, out: usize) -> &'a mut [T] {
        let o = self.outs[out];
        // Checked in every build: the raw slice below relies on it.
        assert!(
            !o.0.is_null() && self.start + self.len <= o.1,
            "output block outside its buffer"
        );
        // SAFETY: [start, start + len) is this block's range of the buffer, inside this chunk's
        // disjoint range (as the chunk loop's `out_block`); the kernel is its only writer while
        // the slice lives (one slice per output per block: `out_block` hands out the range, or
        // `finish` takes it once at the end).
        unsafe { std::slice::from_raw_parts_mut(o.0.add(self.start), self.len) }
    }

    /// Where the kernel writes output `out` for this block: the output buffer itself, or, when
    /// outputs are streamed, a block of scratch that [`Io::finish`] streams out whole (streaming
    /// stores a few lanes at a time between computations leave lines half written, which costs
    /// more than the copy).
    #[inline(always)]
    pub(super) fn out_block(&mut self, out: usize) -> &'a mut [T] {
        if self.stream {
            let scratch = std::mem::take(&mut self.scratch);
            assert!(
                scratch.len() >= BLOCK,
                "a scratch block per streamed output"
            );
            let (block, rest) = scratch.split_at_mut(BLOCK);
            self.scratch = rest;
            &mut block[..self.len]
        } else {
            self.out_range(out)
        }
    }

    /// Ends output `out`'s block: streams the scratch block out (nothing to do otherwise).
    #[inline(always)]
    pub(super) fn finish(&mut self, out: usize, y: &[T]) {
        if self.stream {
            stream_copy(self.out_range(out), y);
        }
    }

    /// Writes lanes `..m` of `v` to `dst` at `q`.
    #[inline(always)]
    pub(super) fn store(dst: &mut [T], q: usize, m: usize, v: &[T; LANES]) {
        dst[q..q + m].copy_from_slice(&v[..m]);
    }

    /// Adds the block's finiteness probe (0, or NaN if an input read held a NaN or infinity).
    #[inline(always)]
    pub(super) fn probe(&mut self, lanes: &[T; LANES]) {
        if let Some(slot) = self.probe_slot {
            self.part[slot] += lanes_total(lanes);
        }
    }

    /// Adds a reduction's block total (its lanes by `block_sum`'s tree) to its partial.
    #[inline(always)]
    pub(super) fn reduce(&mut self, red: usize, acc: &[T; LANES]) {
        self.part[self.slots[red]] += lanes_total(acc);
    }
}

/// A native kernel for each instruction set, indexed by [`isa_index`].
pub(super) type Variants<T> = [unsafe fn(&mut Io<T>); 3];

/// The position of an instruction set's variant in [`Variants`].
pub(super) fn isa_index(isa: Isa) -> usize {
    match isa {
        Isa::Base => 0,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => 1,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => 2,
    }
}

/// The three variants of a generated kernel `$k::<T, FMA, PROBE>`: AVX-512, AVX2+FMA (with
/// the target features the chunk loop's variants have, so the same bits) and baseline. With
/// `probe`, the kernel reads inputs that a call's first pass checks for NaN and infinity: each
/// variant then chooses, once per block, the instance with the probe or the one without (in a
/// later pass the probe's arithmetic would be dead, which the compiler cannot see).
macro_rules! variants {
    ($k:ident) => {
        variants!(@ $k, false);
    };
    ($k:ident, probe) => {
        variants!(@ $k, true);
    };
    (@ $k:ident, $probe:tt) => {
        pub(super) mod $k {
            use super::*;
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
            pub(super) unsafe fn avx512<T: Real>(io: &mut Io<T>) {
                probed!($probe, $k, io, T, true)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub(super) unsafe fn avx2<T: Real>(io: &mut Io<T>) {
                probed!($probe, $k, io, T, true)
            }
            // `unsafe` only to have the other variants' type.
            pub(super) unsafe fn base<T: Real>(io: &mut Io<T>) {
                probed!($probe, $k, io, T, false)
            }
            #[cfg(not(target_arch = "x86_64"))]
            pub(super) use base as avx2;
            #[cfg(not(target_arch = "x86_64"))]
            pub(super) use base as avx512;
        }
    };
}

/// A call of kernel `$k`: without its probe, or (`true`) with it when this pass probes.
macro_rules! probed {
    (false, $k:ident, $io:ident, $t:ident, $fma:literal) => {
        super::$k::<$t, $fma, false>($io)
    };
    (true, $k:ident, $io:ident, $t:ident, $fma:literal) => {
        if $io.probe_slot.is_some() {
            super::$k::<$t, $fma, true>($io)
        } else {
            super::$k::<$t, $fma, false>($io)
        }
    };
}

/// The native kernel of a pass, if the standard library has one for its key.
pub(super) fn lookup<T: Real>(key: &str) -> Option<Variants<T>> {
    generated::lookup::<T>(key)
}

#[rustfmt::skip]
mod generated;

/// An operand in a key.
fn src_text(s: Src) -> String {
    match s {
        Src::Reg(r) => format!("r{r}"),
        Src::Input(i) => format!("i{i}"),
    }
}

/// A pass's key: its bytecode before superinstructions and the number of pinned registers, as
/// text. `None` when native kernels do not handle the pass (a reduction other than a sum, or
/// more than [`MAX_REDUCTIONS`]).
pub(super) fn key(pc: &PassCode) -> Option<String> {
    let reds = &pc.reductions;
    if reds.len() > MAX_REDUCTIONS || reds.iter().any(|r| r.op != Op::Sum) {
        return None;
    }
    let mut k = format!("p{}", pc.splats.len());
    for ins in &pc.code {
        let s = match *ins {
            Instr::Map { op, dst, a, b, c } => format!(
                "M{op:?} r{dst} {} {} {}",
                src_text(a),
                src_text(b),
                src_text(c)
            ),
            Instr::Family { x, kind, dst } => format!("F{kind:?} {} {dst:?}", src_text(x)),
            Instr::Reduce { src, red } => format!("R{red} {}", src_text(src)),
            Instr::Store { src, out } => format!("S{out} {}", src_text(src)),
            // Keys are made before superinstructions.
            Instr::DotSum { .. } | Instr::MapStore { .. } => return None,
        };
        k.push(';');
        k.push_str(&s);
    }
    Some(k)
}

#[cfg(test)]
pub(super) mod emit;
#[cfg(test)]
mod tests;
