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
        let mut last: Option<usize> = None;
        let mut packs = 0;
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
            if let Some(l) = last {
                if idx < l {
                    diags.push(
                        Diagnostic::new(Code::E0017, a.name.span, format!("axis `{}` comes before `{}` in an earlier input, but after it here", a.name.name, space.names[l]))
                            .label("out of order")
                            .help(format!("declare the axes of `{}` in the loss's axis order: {}", inp.name.name, space.names.join(", "))),
                    );
                }
            }
            if a.pack {
                packs += 1;
            }
            last = Some(idx);
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
    (space, inputs)
}
