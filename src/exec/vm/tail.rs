//! The tail: small nodes (per-image, per-class, scalar values between passes) evaluated in f64
//! with the op table's reference kernels, through index maps built with the VM.
//!
//! In: the VM's small-node lists and values. Out: those values. Never here: per-element work.

use super::*;

/// Index maps of a small node over its arguments, for the f64 tail.
#[derive(Clone, Debug)]
pub(super) struct SmallNode {
    pub(super) id: NodeId,
    /// Per argument, per output element: the argument's flat index (Map, Broadcast); for a
    /// small-to-small reduction, per *input* element the output index.
    pub(super) maps: Vec<Vec<usize>>,
}

impl<T: Real> Vm<T> {
    /// Evaluates the tail nodes of stage `p` in f64.
    pub(super) fn run_tail(&mut self, p: usize, inputs: &[&[T]]) {
        let g = &self.bound.graph;
        for sn in &self.small[p] {
            let node = g.node(sn.id);
            let mut out = std::mem::take(&mut self.vals[sn.id as usize]);
            match (node.op, node.op.def().class) {
                (Op::Const, _) => out.fill(const_value(node).unwrap_or(f64::NAN)),
                (Op::Input, _) => {
                    if let Attr::Input(i) = node.attr {
                        for (o, x) in out.iter_mut().zip(inputs[self.real_in(i as usize)]) {
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
                // A small node over its one axis: element i is coordinate i.
                (Op::AxisIndex, _) => {
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = i as f64;
                    }
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
                (_, Class::Window { .. } | Class::Order { .. }) => {
                    unreachable!("the schedule refuses window and order ops")
                }
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
