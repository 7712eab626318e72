//! The hash-consed expression graph. A node is an op from the op table, its argument ids, an
//! attribute (constant, input index or axis set) and its named axes. Structurally equal nodes
//! are stored once, so common subexpressions are shared for free (forward values are reused by
//! the backward pass). Node ids are in topological order: arguments always precede users.
//!
//! In: ops and arguments. Out: node ids. Never here: parsing, rewriting, evaluation.

use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write;

use crate::ops::{Class, Op};

pub type NodeId = u32;

/// A set of named axes, as a bit mask over the loss's [`AxisSpace`].
pub type Axes = u16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attr {
    None,
    /// `f64::to_bits` of the constant.
    Const(u64),
    /// Index into the loss's inputs.
    Input(u16),
    /// Axes folded away (reductions), added (broadcast) or counted (axis_size).
    Axes(Axes),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub op: Op,
    pub args: Vec<NodeId>,
    pub attr: Attr,
    pub axes: Axes,
}

/// The named axes of a loss, in order. A pack axis (`..S`) stands for any number of trailing
/// dimensions, flattened when the loss runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AxisSpace {
    pub names: Vec<String>,
    pub packs: Vec<bool>,
}

impl AxisSpace {
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
    /// The pack axes (the spatial dimensions window ops work over).
    pub fn pack_axes(&self) -> Axes {
        (0..self.names.len())
            .filter(|&i| self.packs.get(i).copied().unwrap_or(false))
            .fold(0, |acc, i| acc | (1 << i))
    }
    pub fn all(&self) -> Axes {
        ((1u32 << self.names.len()) - 1) as Axes
    }
    pub fn list(&self, axes: Axes) -> Vec<&str> {
        (0..self.names.len())
            .filter(|i| axes & (1 << i) != 0)
            .map(|i| self.names[i].as_str())
            .collect()
    }
    pub fn fmt(&self, axes: Axes) -> String {
        format!("[{}]", self.list(axes).join(", "))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub space: AxisSpace,
    nodes: Vec<Node>,
    memo: HashMap<Node, NodeId>,
}

impl Graph {
    pub fn new(space: AxisSpace) -> Self {
        Graph {
            space,
            nodes: Vec::new(),
            memo: HashMap::default(),
        }
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    #[allow(dead_code)] // beside `len`, as clippy's len_without_is_empty asks
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }
    pub fn axes(&self, id: NodeId) -> Axes {
        self.nodes[id as usize].axes
    }

    /// Adds (or finds) a node. Elementwise ops on constants fold to a constant here, so
    /// parameter arithmetic such as `1/3` is a constant by construction; the arguments of a
    /// commutative op are put in id order.
    pub fn add(&mut self, op: Op, mut args: Vec<NodeId>, attr: Attr) -> NodeId {
        let def = op.def();
        if def.commutative && args.len() == 2 && args[0] > args[1] {
            args.swap(0, 1); // one canonical order: `b*a` is found as `a*b`
        }
        let axes = self.result_axes(op, &args, attr);
        if def.class == Class::Map && op != Op::StopGrad && !args.is_empty() {
            let vals: Option<Vec<f64>> = args
                .iter()
                .map(|&a| crate::ops::const_value(self.node(a)))
                .collect();
            if let Some(v) = vals {
                return self.c((def.f64)(&v));
            }
        }
        self.intern(Node {
            op,
            args,
            attr,
            axes,
        })
    }

    /// The node `op(args)` if the graph already holds it (arguments in canonical order).
    pub fn find(&self, op: Op, args: Vec<NodeId>) -> Option<NodeId> {
        self.find_with(op, args, Attr::None)
    }

    /// The node `op(args)` with attribute `attr` (a reduction's axes) if the graph holds it.
    pub fn find_with(&self, op: Op, mut args: Vec<NodeId>, attr: Attr) -> Option<NodeId> {
        let def = op.def();
        if def.commutative && args.len() == 2 && args[0] > args[1] {
            args.swap(0, 1);
        }
        let axes = self.result_axes(op, &args, attr);
        let n = Node {
            op,
            args,
            attr,
            axes,
        };
        self.memo.get(&n).copied()
    }

    /// The axes of `op(args)` with attribute `attr`.
    fn result_axes(&self, op: Op, args: &[NodeId], attr: Attr) -> Axes {
        let arg_axes = args.iter().fold(0, |acc, &a| acc | self.axes(a));
        let named = match attr {
            Attr::Axes(r) => r,
            Attr::None | Attr::Const(_) | Attr::Input(_) => 0,
        };
        match op.def().class {
            Class::Map => arg_axes,
            Class::Reduce { .. } => arg_axes & !named,
            Class::Broadcast => arg_axes | named,
            // Per image over the spatial axes, whatever axes the image argument lacks.
            Class::Window { .. } => arg_axes | self.space.pack_axes(),
            // Per group of its `over` axes: the arguments' axes.
            Class::Order { .. } => arg_axes,
            // An axis index has the axis it counts along; inputs carry their axes on the node
            // (set by `Graph::input`), not from arguments.
            Class::Leaf if op == Op::AxisIndex => named,
            Class::Leaf => 0,
        }
    }

    fn intern(&mut self, n: Node) -> NodeId {
        if let Some(&id) = self.memo.get(&n) {
            return id;
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(n.clone());
        self.memo.insert(n, id);
        id
    }

    pub fn c(&mut self, v: f64) -> NodeId {
        // One canonical zero: -0.0 and 0.0 behave alike in every op we have but would hash apart.
        let v = if v == 0.0 { 0.0 } else { v };
        self.intern(Node {
            op: Op::Const,
            args: vec![],
            attr: Attr::Const(v.to_bits()),
            axes: 0,
        })
    }
    pub fn input(&mut self, index: usize, axes: Axes) -> NodeId {
        self.intern(Node {
            op: Op::Input,
            args: vec![],
            attr: Attr::Input(index as u16),
            axes,
        })
    }
    pub fn axis_size(&mut self, axes: Axes) -> NodeId {
        self.intern(Node {
            op: Op::AxisSize,
            args: vec![],
            attr: Attr::Axes(axes),
            axes: 0,
        })
    }
    pub fn op1(&mut self, op: Op, a: NodeId) -> NodeId {
        self.add(op, vec![a], Attr::None)
    }
    pub fn op2(&mut self, op: Op, a: NodeId, b: NodeId) -> NodeId {
        self.add(op, vec![a, b], Attr::None)
    }
    pub fn op3(&mut self, op: Op, a: NodeId, b: NodeId, c: NodeId) -> NodeId {
        self.add(op, vec![a, b, c], Attr::None)
    }
    pub fn reduce(&mut self, op: Op, a: NodeId, over: Axes) -> NodeId {
        self.add(op, vec![a], Attr::Axes(over))
    }
    pub fn broadcast(&mut self, a: NodeId, to: Axes) -> NodeId {
        let extra = to & !self.axes(a);
        if extra == 0 {
            a
        } else {
            self.add(Op::Broadcast, vec![a], Attr::Axes(extra))
        }
    }

    /// The nodes reachable from `roots`, in topological (id) order.
    pub fn reachable(&self, roots: &[NodeId]) -> Vec<bool> {
        let mut live = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if !live[n as usize] {
                live[n as usize] = true;
                stack.extend(self.nodes[n as usize].args.iter().copied());
            }
        }
        live
    }

    /// A one-line description of a node: `%7 = mul(%3, %5) : [B, C, S]`.
    pub fn describe(&self, id: NodeId) -> String {
        let n = self.node(id);
        let mut s = format!("%{id} = ");
        match (n.op, n.attr) {
            (Op::Const, Attr::Const(b)) => {
                let _ = write!(s, "{}", f64::from_bits(b));
            }
            (Op::Input, Attr::Input(i)) => {
                let _ = write!(s, "input #{i}");
            }
            (Op::AxisSize, Attr::Axes(a)) => {
                let _ = write!(s, "axis_size({})", self.space.fmt(a));
            }
            (Op::AxisIndex, Attr::Axes(a)) => {
                let _ = write!(s, "axis_index({})", self.space.fmt(a));
            }
            _ => {
                let args: Vec<String> = n.args.iter().map(|a| format!("%{a}")).collect();
                let _ = write!(s, "{}({}", n.op.name(), args.join(", "));
                if let Attr::Axes(a) = n.attr {
                    let kw = if n.op == Op::Broadcast { "to" } else { "over" };
                    let _ = write!(s, ", {kw} = {}", self.space.fmt(a));
                }
                s.push(')');
            }
        }
        if n.axes != 0 {
            let _ = write!(s, " : {}", self.space.fmt(n.axes));
        }
        s
    }
}
