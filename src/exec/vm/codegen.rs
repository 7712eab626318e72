//! Code generation: one fused kernel of a [`Schedule`] becomes bytecode — family grouping of the
//! stable primitives, register allocation by liveness, pinned splat registers for small values,
//! and superinstructions (`MapStore`, `DotSum`) made after allocation.
//!
//! In: a bound graph, its schedule, one kernel, the axis sizes. Out: a [`PassCode`]. Never here:
//! running it.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) enum Src {
    Reg(u16),
    Input(u16),
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Instr {
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
pub(super) enum FamilyKind {
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
pub(super) fn family_slot(op: Op) -> Option<usize> {
    op.def().family
}

/// Bytecode for one fused kernel: family grouping of the stable primitives, dead-node
/// skipping, register allocation by liveness (an instruction's destinations are allocated
/// before its operands are freed, so they never alias). No superinstructions yet: this code is
/// also a native kernel's key; [`superinstructions`] merges pairs afterwards.
pub(super) fn codegen(
    g: &crate::ir::graph::Graph,
    sched: &Schedule,
    k: &crate::optimise::fuse::Kernel,
    sizes: &[usize],
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
    // Merging never changes which inputs are read, nor the order they are first read in.
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

/// Merges instruction pairs of a pass into superinstructions (`MapStore` unless outputs are
/// streamed, `DotSum`): the same bits with less traffic through L1.
pub(super) fn superinstructions(pc: &mut PassCode) {
    if !pc.stream_stores {
        store_in_place(&mut pc.code);
    }
    dot_sums(&mut pc.code, &pc.reductions);
}

/// The operands an instruction reads.
pub(super) fn reads(ins: &Instr) -> Vec<Src> {
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
pub(super) fn merge_pairs(code: &mut Vec<Instr>, merge: impl Fn(Instr, Instr) -> Option<Instr>) {
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
pub(super) fn store_in_place(code: &mut Vec<Instr>) {
    merge_pairs(code, |p, i| match (p, i) {
        (Instr::Map { op, a, b, c, .. }, Instr::Store { out, .. }) => {
            Some(Instr::MapStore { op, out, a, b, c })
        }
        _ => None,
    });
}

/// `Map(mul, a, b) -> r; ...; Reduce(sum, r)` becomes one `DotSum`: the products are summed as
/// they are made.
pub(super) fn dot_sums(code: &mut Vec<Instr>, reductions: &[Reduction]) {
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
pub(super) struct Reduction {
    pub(super) node: NodeId,
    pub(super) op: Op,
    /// The table's identity and combiner (its f64 kernel): `Sum` also has a vectorised block
    /// path, every other reduction folds with the combiner.
    pub(super) init: f64,
    pub(super) combine: fn(&[f64]) -> f64,
    /// Per outer axis: the stride of the group index (0 for axes the result lacks).
    pub(super) strides: Vec<usize>,
    /// First partial slot of this reduction; it has `groups` slots.
    pub(super) base: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Splat {
    pub(super) reg: u16,
    pub(super) node: NodeId,
    pub(super) strides: Vec<usize>,
    pub(super) constant: Option<f64>,
}

#[derive(Clone, Debug)]
pub(super) struct PassCode {
    pub(super) code: Vec<Instr>,
    pub(super) n_regs: usize,
    pub(super) splats: Vec<Splat>,
    pub(super) reductions: Vec<Reduction>,
    pub(super) slots: usize,
    /// Inputs the pass streams through (prefetched a block ahead).
    pub(super) streams: Vec<u16>,
    /// Outputs are written with non-temporal stores (the problem is too big to stay cached).
    pub(super) stream_stores: bool,
}
