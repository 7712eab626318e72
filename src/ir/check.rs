//! Whole-graph checks after lowering: every `diff` input must reach the result through
//! differentiable argument positions (E0009), with the operation that blocks it named.
//!
//! In: a [`Lowered`] loss. Out: diagnostics. Never here: building the graph.

use crate::ir::graph::NodeId;
use crate::ops::Op;
use crate::syntax::diag::{Code, Diagnostic, Diagnostics};

use super::lower::Lowered;

/// E0009: every `diff` input must reach the result through differentiable argument positions.
pub(crate) fn check_differentiable(
    l: &Lowered,
    diags: &mut Diagnostics,
    sources: &crate::syntax::diag::SourceMap,
) {
    let g = &l.graph;
    for (i, inp) in l.sig.inputs.iter().enumerate() {
        if !inp.diff {
            continue;
        }
        let src = l.input_nodes[i];
        let n = l.result as usize + 1;
        let mut dep = vec![false; n.max(src as usize + 1)]; // depends at all
        let mut act = vec![false; n.max(src as usize + 1)]; // depends differentiably
        dep[src as usize] = true;
        act[src as usize] = true;
        let mut blocker: Option<NodeId> = None;
        for id in 0..n {
            let node = g.node(id as NodeId);
            for (k, &a) in node.args.iter().enumerate() {
                if dep[a as usize] {
                    dep[id] = true;
                }
                if act[a as usize] {
                    if node.op.differentiable_arg(k) {
                        act[id] = true;
                    } else if blocker.is_none() {
                        blocker = Some(id as NodeId);
                    }
                }
            }
        }
        if !act[l.result as usize] {
            let mut d = Diagnostic::new(
                Code::E0009,
                inp.span,
                format!(
                    "`{}` does not reach the result through differentiable operations",
                    inp.name
                ),
            )
            .label("declared `diff` here");
            let why = match blocker.and_then(|b| l.origins.get(&b).map(|s| (b, s))) {
                Some((b, s)) => {
                    let (line, col) = sources.line_col(s.file, s.start);
                    format!("it only flows through `{}` (line {line}, column {col}), which has no derivative; use a smooth op, or wrap the path in `stop_grad` and drop `diff` if this is intended", op_symbol(g.node(b).op))
                }
                None if !dep[l.result as usize] => "the result does not use it at all".to_string(),
                None => {
                    "every path to the result passes through a non-differentiable op".to_string()
                }
            };
            d = d.help(why);
            diags.push(d);
        }
    }
}

/// How an op is written in source (operators by their symbol).
fn op_symbol(op: Op) -> &'static str {
    op.def().symbol.unwrap_or(op.name())
}
