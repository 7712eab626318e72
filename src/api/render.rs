//! Text and Graphviz renderings of a loss's graph at a stage (`lossc graph`). In: a graph, its
//! named roots, the input names (and a fused schedule). Out: a string. Never here: rewriting or
//! evaluation.

use crate::ir::graph::{Attr, Graph};
use crate::ops::Op;
use crate::optimise::fuse::Schedule;

fn live_nodes(g: &Graph, roots: &[(String, u32)]) -> Vec<u32> {
    let r: Vec<u32> = roots.iter().map(|x| x.1).collect();
    let live = g.reachable(&r);
    (0..g.len() as u32).filter(|&i| live[i as usize]).collect()
}

fn input_name(g: &Graph, id: u32, names: &[String]) -> Option<String> {
    match g.node(id).attr {
        Attr::Input(i) if g.node(id).op == Op::Input => names.get(i as usize).cloned(),
        _ => None,
    }
}

/// One node as text: `%7 = mul(%3, %5) : [B, C, S]`, with the input's name for inputs.
fn text_line(g: &Graph, id: u32, names: &[String]) -> String {
    let mut l = g.describe(id);
    if let Some(n) = input_name(g, id, names) {
        l.push_str(&format!("  # {n}"));
    }
    l
}

/// One node as a Graphviz label (quotes replaced), with the input's name for inputs.
fn dot_label(g: &Graph, id: u32, names: &[String]) -> String {
    let d = g.describe(id);
    let l = d
        .split_once(" = ")
        .map(|x| x.1.to_string())
        .unwrap_or(d)
        .replace('"', "'");
    match input_name(g, id, names) {
        Some(n) => format!("{n}\\n{l}"),
        None => l,
    }
}

/// The root ellipses and the closing brace of a Graphviz graph.
fn dot_roots(roots: &[(String, u32)]) -> String {
    let mut s = String::new();
    for (n, r) in roots {
        s.push_str(&format!("  \"{n}\" [shape=ellipse];\n  n{r} -> \"{n}\";\n"));
    }
    s.push_str("}\n");
    s
}

pub(crate) fn to_text(g: &Graph, roots: &[(String, u32)], names: &[String], loss: &str) -> String {
    let nodes = live_nodes(g, roots);
    let mut s = format!(
        "# {loss}: {} nodes, axes {}\n",
        nodes.len(),
        g.space.fmt(g.space.all())
    );
    for id in nodes {
        s.push_str(&text_line(g, id, names));
        s.push('\n');
    }
    for (n, r) in roots {
        s.push_str(&format!("{n} = %{r}\n"));
    }
    s
}

pub(crate) fn to_dot(g: &Graph, roots: &[(String, u32)], names: &[String], loss: &str) -> String {
    let mut s = format!(
        "digraph \"{loss}\" {{\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n"
    );
    for id in live_nodes(g, roots) {
        s.push_str(&format!(
            "  n{id} [label=\"%{id}: {}\"];\n",
            dot_label(g, id, names)
        ));
        for a in &g.node(id).args {
            s.push_str(&format!("  n{a} -> n{id};\n"));
        }
    }
    s.push_str(&dot_roots(roots));
    s
}

pub(crate) fn fused_text(
    g: &Graph,
    roots: &[(String, u32)],
    sched: &Schedule,
    names: &[String],
    loss: &str,
) -> String {
    let mut s = format!("# {loss}: {} memory pass(es)\n", sched.passes());
    let line = |id: u32| format!("    {}\n", text_line(g, id, names));
    for (p, k) in sched.kernels.iter().enumerate() {
        if !sched.tails[p].is_empty() {
            s.push_str(&format!("tail before pass {p}:\n"));
            for &id in &sched.tails[p] {
                s.push_str(&line(id));
            }
        }
        s.push_str(&format!(
            "pass {p}: {:?} kernel, {} nodes per element\n",
            k.kind,
            k.nodes.len()
        ));
        for &id in &k.nodes {
            s.push_str(&line(id));
        }
        for &r in &k.reductions {
            s.push_str(&format!(
                "  accumulate{}",
                line(r).trim_start_matches("   ")
            ));
        }
        for (root, id) in &k.stores {
            s.push_str(&format!("  store {} = %{id}\n", roots[*root].0));
        }
    }
    let last = sched.tails.len() - 1;
    if !sched.tails[last].is_empty() {
        s.push_str("tail after the last pass:\n");
        for &id in &sched.tails[last] {
            s.push_str(&line(id));
        }
    }
    for (n, r) in roots {
        s.push_str(&format!("{n} = %{r}\n"));
    }
    s
}

pub(crate) fn fused_dot(
    g: &Graph,
    roots: &[(String, u32)],
    sched: &Schedule,
    names: &[String],
    loss: &str,
) -> String {
    let mut s = format!("digraph \"{loss}\" {{\n  rankdir=BT;\n  compound=true;\n  node [shape=box, fontname=\"monospace\"];\n");
    let label = |id: u32| dot_label(g, id, names);
    let mut placed = std::collections::BTreeSet::new();
    for (p, k) in sched.kernels.iter().enumerate() {
        s.push_str(&format!("  subgraph cluster_pass{p} {{\n    label=\"pass {p}: {:?}\";\n    style=filled; color=lightgrey;\n", k.kind));
        for &id in k.nodes.iter().chain(&k.reductions) {
            // A node recomputed in a later pass is drawn in the first one.
            if placed.insert(id) {
                s.push_str(&format!("    n{id} [label=\"%{id}: {}\"];\n", label(id)));
            }
        }
        s.push_str("  }\n");
    }
    for (p, t) in sched.tails.iter().enumerate() {
        if t.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "  subgraph cluster_tail{p} {{\n    label=\"tail {p}\";\n    style=dashed;\n"
        ));
        for &id in t {
            if placed.insert(id) {
                s.push_str(&format!("    n{id} [label=\"%{id}: {}\"];\n", label(id)));
            }
        }
        s.push_str("  }\n");
    }
    for &id in &placed {
        for a in &g.node(id).args {
            if placed.contains(a) {
                s.push_str(&format!("  n{a} -> n{id};\n"));
            }
        }
    }
    s.push_str(&dot_roots(roots));
    s
}
