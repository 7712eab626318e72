//! The generator of `generated.rs` (run by the test `native_kernels_are_fresh`): a pass's
//! un-merged bytecode becomes one Rust function, instruction by instruction.
//!
//! In: bytecode. Out: source text. Never here: deciding which passes get kernels (the test
//! collects them from the standard library).

use std::fmt::Write as _;

use super::super::*;

/// The member of family slot `slot` from `family_element`'s `f` (= [sigmoid(x), sigmoid(-x),
/// softplus(x), softplus(-x)]; log_sigmoid(±x) = -softplus(∓x)).
fn family_member(slot: usize) -> &'static str {
    ["f[0]", "f[1]", "f[2]", "f[3]", "-f[3]", "-f[2]"][slot]
}

/// The slots a family instruction of `kind` writes.
fn family_slots(kind: FamilyKind) -> std::ops::Range<usize> {
    match kind {
        FamilyKind::Sig => 0..2,
        FamilyKind::Softplus => 2..6,
        FamilyKind::SigSoftplus => 0..4,
        FamilyKind::Both => 0..6,
    }
}

/// The generated function `name` for a pass's un-merged bytecode (see [`key`]): a loop over the
/// block's full steps of [`LANES`] lanes, then the ragged rest, zero-padded, with the same body.
pub(in crate::exec::vm) fn emit(name: &str, pc: &PassCode) -> String {
    let code = &pc.code;
    let inputs = &pc.streams;
    let mut outs: Vec<u16> = Vec::new();
    let mut reds: Vec<u16> = Vec::new();
    for ins in code {
        match *ins {
            Instr::Store { out, .. } => outs.push(out),
            Instr::Reduce { red, .. } => reds.push(red),
            _ => {}
        }
    }
    // One step's lane loop: full steps add to the lanes directly, the ragged rest through `t`.
    let body = |full: bool, pad: &str| -> String {
        let rd = |s: Src| -> String {
            match s {
                Src::Reg(r) => format!("r{r}"),
                Src::Input(i) => format!("a{i}[j]"),
            }
        };
        let mut b = String::new();
        for ins in code {
            let _ = match *ins {
                Instr::Map {
                    op,
                    dst,
                    a,
                    b: y,
                    c,
                } => writeln!(
                    b,
                    "{pad}let r{dst} = T::lane_kernel::<FMA>(Op::{op:?}, {}, {}, {});",
                    rd(a),
                    rd(y),
                    rd(c)
                ),
                Instr::Family { x, kind, dst } => {
                    let _ = writeln!(b, "{pad}let f = family_element::<T, FMA>({});", rd(x));
                    for slot in family_slots(kind) {
                        let _ = writeln!(b, "{pad}let r{} = {};", dst[slot], family_member(slot));
                    }
                    Ok(())
                }
                Instr::Reduce { src, red } if full => {
                    writeln!(b, "{pad}acc{red}[j] = acc{red}[j] + {};", rd(src))
                }
                Instr::Reduce { src, red } => writeln!(b, "{pad}t{red}[j] = {};", rd(src)),
                Instr::Store { src, out } => writeln!(b, "{pad}o{out}[j] = {};", rd(src)),
                Instr::DotSum { .. } | Instr::MapStore { .. } => {
                    unreachable!("native kernels are emitted from un-merged bytecode")
                }
            };
        }
        b
    };
    let mut f = String::new();
    let w = &mut f;
    let _ = writeln!(w, "#[inline(always)]");
    let _ = writeln!(
        w,
        "fn {name}<T: Real, const FMA: bool, const PROBE: bool>(io: &mut Io<T>) {{"
    );
    let _ = writeln!(w, "    let zero = T::from_f64(0.0);");
    for r in 0..pc.splats.len() {
        let _ = writeln!(w, "    let r{r} = io.splat({r});");
    }
    for &i in inputs {
        let _ = writeln!(w, "    let x{i} = io.input({i});");
    }
    for &o in &outs {
        let _ = writeln!(w, "    let y{o} = io.out_block({o});");
    }
    for &r in &reds {
        let _ = writeln!(w, "    let mut acc{r} = [zero; LANES];");
    }
    // x * 0 is (±)0 for finite x, NaN otherwise: the finiteness probe of the inputs as they are
    // read (an input this pass sums is checked through its total instead, as in bytecode).
    let probed: Vec<u16> = inputs
        .iter()
        .copied()
        .filter(|&i| {
            !code
                .iter()
                .any(|ins| matches!(ins, Instr::Reduce { src: Src::Input(k), .. } if *k == i))
        })
        .collect();
    // One multiply-add per input and vector (x - x would take a subtraction and an addition).
    let probe = |indent: &str| -> String {
        probed
            .iter()
            .map(|i| {
                format!(
                    "{indent}nan[j] = T::lane_kernel::<FMA>(Op::MulAdd, a{i}[j], zero, nan[j]);\n"
                )
            })
            .collect()
    };
    if !probed.is_empty() {
        let _ = writeln!(w, "    let mut nan = [zero; LANES];");
    }
    let _ = writeln!(w, "    let n = io.len;");
    let _ = writeln!(w, "    let full = n / LANES * LANES;");
    let _ = writeln!(w, "    let mut q = 0;");
    let _ = writeln!(w, "    while q < full {{");
    for &i in inputs {
        let _ = writeln!(w, "        let a{i}: &[T; LANES] = Io::step(x{i}, q);");
    }
    for &o in &outs {
        let _ = writeln!(w, "        let mut o{o} = [zero; LANES];");
    }
    // All 16 lanes in one loop: LLVM vectorises it as one vector of 16, or two of 8 whose
    // instructions it interleaves in pairs when the build asks for it (`.cargo/config.toml`:
    // independent chains, so their latencies overlap).
    let _ = writeln!(w, "        for j in 0..LANES {{");
    if !probed.is_empty() {
        let _ = writeln!(w, "            if PROBE {{");
        let _ = write!(w, "{}", probe("                "));
        let _ = writeln!(w, "            }}");
    }
    let _ = write!(w, "{}", body(true, "            "));
    let _ = writeln!(w, "        }}");
    for &o in &outs {
        let _ = writeln!(w, "        Io::store(y{o}, q, LANES, &o{o});");
    }
    let _ = writeln!(w, "        q += LANES;");
    let _ = writeln!(w, "    }}");
    let _ = writeln!(w, "    let q = full;");
    let _ = writeln!(w, "    let m = n - full;");
    let _ = writeln!(w, "    if m > 0 {{");
    for &i in inputs {
        let _ = writeln!(w, "        let a{i} = Io::lanes(x{i}, q, m);");
    }
    for &o in &outs {
        let _ = writeln!(w, "        let mut o{o} = [zero; LANES];");
    }
    for &r in &reds {
        let _ = writeln!(w, "        let mut t{r} = [zero; LANES];");
    }
    let _ = writeln!(w, "        for j in 0..LANES {{");
    let _ = write!(w, "{}", body(false, "            "));
    let _ = writeln!(w, "        }}");
    for &o in &outs {
        let _ = writeln!(w, "        Io::store(y{o}, q, m, &o{o});");
    }
    for &r in &reds {
        let _ = writeln!(w, "        for j in 0..m {{");
        let _ = writeln!(w, "            acc{r}[j] = acc{r}[j] + t{r}[j];");
        let _ = writeln!(w, "        }}");
    }
    if !probed.is_empty() {
        let _ = writeln!(w, "        for j in 0..m {{");
        let _ = writeln!(w, "            if PROBE {{");
        let _ = write!(w, "{}", probe("                "));
        let _ = writeln!(w, "            }}");
        let _ = writeln!(w, "        }}");
    }
    let _ = writeln!(w, "    }}");
    for &o in &outs {
        let _ = writeln!(w, "    io.finish({o}, y{o});");
    }
    if !probed.is_empty() {
        let _ = writeln!(w, "    if PROBE {{");
        let _ = writeln!(w, "        io.probe(&nan);");
        let _ = writeln!(w, "    }}");
    }
    for &r in &reds {
        let _ = writeln!(w, "    io.reduce({r}, &acc{r});");
    }
    let _ = writeln!(w, "}}");
    // A kernel that probes inputs is made twice: with the probe for a call's first pass (when
    // inputs are checked), without it for the rest.
    let probes = if probed.is_empty() { "" } else { ", probe" };
    let _ = writeln!(w, "variants!({name}{probes});");
    f
}

/// The whole generated module for `kernels` = (key, where it is used, emitted function), in
/// order; kernels are named `k0`, `k1`, ... by position.
pub(in crate::exec::vm) fn module(kernels: &[(String, Vec<String>, String)]) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "//! @generated by `scripts/regen-native.sh` (`LOSSLANG_BLESS=1 cargo test --release --lib native_kernels_are_fresh`)"
    );
    let _ = writeln!(
        m,
        "//! from the fused passes of `losses/` (see `native.rs`). Do not edit by hand."
    );
    let _ = writeln!(m);
    let _ = writeln!(m, "#![allow(unused_variables, clippy::all)]");
    let _ = writeln!(m);
    let _ = writeln!(m, "use super::*;");
    let _ = writeln!(m, "use crate::ops::family::family_element;");
    for (k, (_, uses, body)) in kernels.iter().enumerate() {
        let _ = writeln!(m);
        for u in uses {
            let _ = writeln!(m, "// {u}");
        }
        let _ = write!(m, "{}", body.replace("__NAME__", &format!("k{k}")));
    }
    let _ = writeln!(m);
    let _ = writeln!(m, "/// The kernel for a pass key.");
    let _ = writeln!(
        m,
        "pub(super) fn lookup<T: Real>(key: &str) -> Option<Variants<T>> {{"
    );
    let _ = writeln!(m, "    Some(match key {{");
    for (k, (key, _, _)) in kernels.iter().enumerate() {
        let _ = writeln!(
            m,
            "        {key:?} => [k{k}::base, k{k}::avx2, k{k}::avx512],"
        );
    }
    let _ = writeln!(m, "        _ => return None,");
    let _ = writeln!(m, "    }})");
    let _ = writeln!(m, "}}");
    m
}
