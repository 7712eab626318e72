//! Signatures: what a caller needs to know about a loss — its named axes (the loss's axis order,
//! from its input declarations), its inputs (axes, `diff`, defaults, value ranges) and its
//! parameters with their default values — checked as they are read.
//!
//! In: a loss of a [`Program`]. Out: a [`Signature`] and diagnostics. Never here: the body.

use std::collections::HashMap;

use crate::ir::graph::{Axes, AxisSpace, Graph};
use crate::ir::program::{Def, Program};
use crate::ops::{self};
use crate::syntax::ast::*;
use crate::syntax::diag::{Code, Diagnostic, Diagnostics};

use super::lower::{Cx, Val};

/// A parameter value set by a caller.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ParamValue {
    Number(f64),
    Text(String),
    /// One number per element of a vector parameter's axis (`param weight: [C] = 1`).
    List(Vec<f64>),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Number(v) => write!(f, "{v}"),
            ParamValue::Text(s) => write!(f, "{s}"),
            ParamValue::List(v) => {
                let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
        }
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Number(v)
    }
}
impl From<i32> for ParamValue {
    fn from(v: i32) -> Self {
        ParamValue::Number(v as f64)
    }
}
impl From<Vec<f64>> for ParamValue {
    fn from(v: Vec<f64>) -> Self {
        ParamValue::List(v)
    }
}
impl From<&[f64]> for ParamValue {
    fn from(v: &[f64]) -> Self {
        ParamValue::List(v.to_vec())
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Text(v.to_string())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Text(v)
    }
}

#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InputSpec {
    pub name: String,
    /// Axis indices (into the loss's [`AxisSpace`]) in declared order.
    pub axes: Vec<usize>,
    pub mask: Axes,
    pub diff: bool,
    pub default: Option<f64>,
    /// The declared values (`in [lo, hi]`), if any.
    pub range: Option<ValueRange>,
    /// `labels(axis, ignore)`: the input may be bound as class indices without this axis (an
    /// index into the loss's axes), pixels equal to the parameter named `ignore` ignored.
    pub labels: Option<(usize, String)>,
    pub span: Span,
}

/// What values a parameter takes.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ParamKind {
    /// A finite number.
    Number,
    /// A whole number.
    Int,
    /// One of the named options (`batch | image | class`).
    Options(Vec<String>),
    /// One number per element of the named (non-pack) axis, or a single number for all.
    Vector { axis: String },
}

impl ParamKind {
    pub(crate) fn of(ty: &ParamType) -> ParamKind {
        match ty {
            ParamType::Number => ParamKind::Number,
            ParamType::Int => ParamKind::Int,
            ParamType::Enum(o) => ParamKind::Options(o.clone()),
            ParamType::Vector(a) => ParamKind::Vector {
                axis: a.name.clone(),
            },
        }
    }
}

#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamKind,
    pub default: ParamValue,
    /// `in [lo, hi]`: the values it may be set to (every element of a list), if declared.
    pub range: Option<ValueRange>,
    pub span: Span,
}

/// What a caller needs to know about a loss: its inputs, parameters and axes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Signature {
    pub name: String,
    pub inputs: Vec<InputSpec>,
    pub params: Vec<ParamSpec>,
    pub space: AxisSpace,
}

impl Signature {
    pub fn shape_text(&self, i: &InputSpec) -> String {
        let parts: Vec<String> = i
            .axes
            .iter()
            .map(|&a| {
                let n = &self.space.names[a];
                if self.space.packs[a] {
                    format!("..{n}")
                } else {
                    n.clone()
                }
            })
            .collect();
        format!("[{}]", parts.join(", "))
    }
}

/// The signature of a loss (parameters at their defaults).
pub fn signature(prog: &Program, def: Def, diags: &mut Diagnostics) -> Option<Signature> {
    let loss = prog.loss(def)?;
    let Def::Loss(file, _) = def else { return None };
    let before = diags.len();
    let (space, inputs) = root_inputs(loss, diags);
    let mut cx = Cx {
        prog,
        g: Graph::new(space.clone()),
        diags,
        origins: HashMap::new(),
        stack: vec![],
        depth: 0,
        labelled: HashMap::new(),
        unreduced: Default::default(),
        iterations: 0,
        calls: HashMap::new(),
        root_live: Default::default(),
        live: Vec::new(),
        live_nodes: HashMap::new(),
        loss_depth: 0,
        terms: Vec::new(),
    };
    let vals = cx.bind_params(loss, file, HashMap::new());
    let params = loss
        .params
        .iter()
        .map(|p| ParamSpec {
            name: p.name.name.clone(),
            ty: ParamKind::of(&p.ty),
            range: p.range,
            default: match vals.get(&p.name.name) {
                _ if p.list_default.is_some() => {
                    ParamValue::List(p.list_default.clone().unwrap_or_default())
                }
                Some(Val::Opt(s, _)) => ParamValue::Text(s.clone()),
                Some(Val::T(id)) => {
                    ParamValue::Number(ops::const_value(cx.g.node(*id)).unwrap_or(f64::NAN))
                }
                _ => ParamValue::Number(f64::NAN),
            },
            span: p.name.span,
        })
        .collect();
    if diags.len() > before {
        return None;
    }
    Some(Signature {
        name: loss.name.name.clone(),
        inputs,
        params,
        space,
    })
}

/// Builds the axis space from the root loss's input declarations.
pub(crate) fn root_inputs(loss: &LossDef, diags: &mut Diagnostics) -> (AxisSpace, Vec<InputSpec>) {
    let mut space = AxisSpace::default();
    let mut inputs = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    // Per input, the spans of its axes (for E0017 once the order is known).
    let mut axis_spans: Vec<Vec<Span>> = Vec::new();
    for inp in &loss.inputs {
        if let Some(first) = seen.get(inp.name.name.as_str()) {
            let _ = first;
            diags.push(
                Diagnostic::new(
                    Code::E0011,
                    inp.name.span,
                    format!("input `{}` is declared twice", inp.name.name),
                )
                .label("second declaration"),
            );
            continue;
        }
        seen.insert(&inp.name.name, inp.name.span);
        let mut axes = Vec::new();
        let mut mask: Axes = 0;
        let mut packs = 0;
        let mut spans = Vec::new();
        for a in &inp.shape {
            let idx = match space.index(&a.name.name) {
                Some(i) => {
                    if space.packs[i] != a.pack {
                        let what = if space.packs[i] {
                            "a pack (`..` axes)"
                        } else {
                            "a single axis"
                        };
                        diags.push(
                            Diagnostic::new(
                                Code::E0022,
                                a.name.span,
                                format!(
                                    "axis `{}` was declared as {what} by an earlier input",
                                    a.name.name
                                ),
                            )
                            .label("declared differently here")
                            .help(
                                "write the axis the same way in every input, e.g. `..S` everywhere",
                            ),
                        );
                    }
                    i
                }
                None => {
                    if space.names.len() >= 15 {
                        diags.push(
                            Diagnostic::new(
                                Code::E0023,
                                a.name.span,
                                "a loss may use at most 15 axes",
                            )
                            .label("one too many"),
                        );
                        continue;
                    }
                    space.names.push(a.name.name.clone());
                    space.packs.push(a.pack);
                    space.names.len() - 1
                }
            };
            if mask & (1 << idx) != 0 {
                diags.push(
                    Diagnostic::new(
                        Code::E0011,
                        a.name.span,
                        format!(
                            "axis `{}` appears twice in `{}`",
                            a.name.name, inp.name.name
                        ),
                    )
                    .label("repeated axis"),
                );
                continue;
            }
            if a.pack {
                packs += 1;
            }
            spans.push(a.name.span);
            mask |= 1 << idx;
            axes.push(idx);
        }
        if let Some(r) = inp.range {
            let bad = if !(r.lo.is_finite() && r.hi.is_finite()) {
                Some("its bounds must be finite numbers".to_string())
            } else if r.int && (r.lo.fract() != 0.0 || r.hi.fract() != 0.0) {
                Some(format!(
                    "`in int` takes integer bounds, got [{}, {}]",
                    r.lo, r.hi
                ))
            } else if r.lo > r.hi || (!r.int && r.lo == r.hi) {
                Some(format!(
                    "the lower bound {} is not below the upper bound {}",
                    r.lo, r.hi
                ))
            } else {
                None
            };
            if let Some(why) = bad {
                diags.push(
                    Diagnostic::new(Code::E0020, r.span, format!("invalid value range of input `{}`", inp.name.name))
                        .label(why)
                        .help("write `in [lo, hi]` with lo < hi, or `in int [lo, hi]` with integers lo <= hi"),
                );
            }
        }
        if inp.default.is_some_and(|d| !d.is_finite()) {
            diags.push(
                Diagnostic::new(
                    Code::E0019,
                    inp.name.span,
                    format!("the default of input `{}` is out of range", inp.name.name),
                )
                .label("larger than the largest finite f64 (about 1.8e308)")
                .help("write a finite number"),
            );
        }
        if packs > 1 {
            diags.push(
                Diagnostic::new(
                    Code::E0024,
                    inp.name.span,
                    format!("input `{}` has more than one `..` axis", inp.name.name),
                )
                .label("at most one pack axis per input"),
            );
        }
        let mut labels = None;
        if let Some((axis, ignore)) = &inp.labels {
            match space.index(&axis.name) {
                Some(a) if mask & (1 << a) != 0 && !space.packs[a] && !inp.diff => {
                    labels = Some((a, ignore.name.clone()));
                }
                _ => diags.push(
                    Diagnostic::new(
                        Code::E0012,
                        axis.span,
                        format!("`labels` of input `{}` needs one of its plain axes", inp.name.name),
                    )
                    .label("not a plain (non-pack) axis of this input")
                    .help("write e.g. `input target: [B, C, ..S] labels(C, ignore_index)`; a differentiable input cannot be labels"),
                ),
            }
            if !loss.params.iter().any(|p| p.name.name == ignore.name) {
                diags.push(
                    Diagnostic::new(
                        Code::E0002,
                        ignore.span,
                        format!("unknown parameter `{}`", ignore.name),
                    )
                    .label("the ignore value must be a parameter of the loss")
                    .help("declare it, e.g. `param ignore_index: int = -100`"),
                );
            }
        }
        axis_spans.push(spans);
        inputs.push(InputSpec {
            name: inp.name.name.clone(),
            axes,
            mask,
            diff: inp.diff,
            default: inp.default,
            range: inp.range,
            labels,
            span: inp.name.span,
        });
    }
    let space = order_axes(space, &mut inputs, &axis_spans, diags);
    (space, inputs)
}

/// The loss's axis order: one in which every input lists its axes, found by a topological sort
/// of the orders the inputs write (ties go to the axis seen first), so `[B, X]` beside
/// `[B, Y, X]` gives `B, Y, X`. The inputs' axis indices, masks and label axes are renumbered
/// to it. Where no such order exists (`[B, C]` beside `[C, B]`), E0017 names the axis of the
/// later input that breaks it and the pair that conflicts.
fn order_axes(
    space: AxisSpace,
    inputs: &mut [InputSpec],
    axis_spans: &[Vec<Span>],
    diags: &mut Diagnostics,
) -> AxisSpace {
    let n = space.names.len();
    // before[a] has bit b when some input writes a right before b.
    let mut before: Vec<Axes> = vec![0; n];
    for inp in inputs.iter() {
        for w in inp.axes.windows(2) {
            before[w[0]] |= 1 << w[1];
        }
    }
    let (mut rank, mut placed) = (vec![usize::MAX; n], 0 as Axes);
    for r in 0..n {
        // The first-seen axis with no unplaced predecessor.
        let next = (0..n).find(|&a| {
            placed & (1 << a) == 0
                && (0..n).all(|p| placed & (1 << p) != 0 || before[p] & (1 << a) == 0)
        });
        match next {
            Some(a) => {
                rank[a] = r;
                placed |= 1 << a;
            }
            None => break,
        }
    }
    if rank.contains(&usize::MAX) {
        // A cycle: keep the order of first appearance and report each input that breaks it.
        for (inp, spans) in inputs.iter().zip(axis_spans) {
            for (k, w) in inp.axes.windows(2).enumerate() {
                if w[1] < w[0] {
                    let earlier = inputs
                        .iter()
                        .find(|o| {
                            let (i, j) = (
                                o.axes.iter().position(|&x| x == w[1]),
                                o.axes.iter().position(|&x| x == w[0]),
                            );
                            matches!((i, j), (Some(i), Some(j)) if i < j)
                        })
                        .map_or_else(
                            || "an earlier input".to_string(),
                            |o| format!("`{}`", o.name),
                        );
                    diags.push(
                        Diagnostic::new(
                            Code::E0017,
                            spans[k + 1],
                            format!(
                                "axis `{}` comes before `{}` in {earlier}, but after it here",
                                space.names[w[1]], space.names[w[0]]
                            ),
                        )
                        .label("out of order")
                        .help(format!(
                            "no axis order fits every input: declare the axes of `{}` in the order {earlier} uses",
                            inp.name
                        )),
                    );
                }
            }
        }
        return space;
    }
    let renumber = |m: Axes| {
        (0..n)
            .filter(|&a| m & (1 << a) != 0)
            .fold(0, |acc, a| acc | (1 << rank[a]))
    };
    for inp in inputs.iter_mut() {
        for a in inp.axes.iter_mut() {
            *a = rank[*a];
        }
        inp.mask = renumber(inp.mask);
        if let Some((a, _)) = inp.labels.as_mut() {
            *a = rank[*a];
        }
    }
    let mut ordered = AxisSpace::default();
    let mut by_rank: Vec<usize> = (0..n).collect();
    by_rank.sort_by_key(|&a| rank[a]);
    for a in by_rank {
        ordered.names.push(space.names[a].clone());
        ordered.packs.push(space.packs[a]);
    }
    ordered
}
