//! Shape binding: the shapes a caller gives, checked against a loss's named axes, become the
//! size of every axis (a pack axis's dimensions flattened) and each input's internal shape.
//!
//! In: a signature and `(input, shape)` pairs. Out: a [`Binding`] or a typed shape error naming
//! the input, the expected and the received shape. Never here: data.

use crate::error::{Error, Result};
use crate::ir::lower::{InputSpec, Signature};

/// How one input was given to a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputForm {
    /// With every declared axis.
    Full,
    /// As class labels: without the axis of its `labels(axis, ..)` declaration (one-hot
    /// encoded in the graph).
    Labels,
    /// Left out: an optional input at its default.
    Absent,
    /// An optional data input given without a labels axis of the loss (or with 1 there): the
    /// same for every class.
    Broadcast,
}

/// Shapes bound to the loss's axes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Binding {
    /// Per input: the shape given (None if an optional input was left out).
    pub shapes: Vec<Option<Vec<usize>>>,
    /// Per input: the internal shape (one dimension per axis of the loss).
    pub internal: Vec<Vec<usize>>,
    /// Per axis: its size (packs flattened).
    pub sizes: Vec<usize>,
    /// Per axis: its dimensions (one for plain axes, any number for packs).
    pub dims: Vec<Vec<usize>>,
    /// Per input: given as class labels (an input declared `labels(axis, ..)` whose shape lacks
    /// that axis, or with 1 there).
    pub labels: Vec<bool>,
    /// Per input: the axis an optional data input was given without (or with 1 there), the
    /// same for every index of it — a per-pixel mask `[B, ..S]` beside class-index labels.
    pub broadcast: Vec<Option<usize>>,
}

impl Binding {
    /// How each input (in declaration order) was given.
    pub fn forms(&self) -> Vec<InputForm> {
        (0..self.shapes.len())
            .map(|i| {
                if self.shapes[i].is_none() {
                    InputForm::Absent
                } else if self.labels.get(i).copied().unwrap_or(false) {
                    InputForm::Labels
                } else if self.broadcast.get(i).is_some_and(Option::is_some) {
                    InputForm::Broadcast
                } else {
                    InputForm::Full
                }
            })
            .collect()
    }

    /// The lowering's key for these forms: the positions of absent optional inputs, and
    /// `AS_LABELS + i` for an input `i` given as class labels, `AS_BROADCAST + i·64 + axis`
    /// for an input given without `axis`.
    pub(crate) fn lowering_key(&self) -> Vec<usize> {
        use crate::ir::lower::{AS_BROADCAST, AS_LABELS};
        let absent = (0..self.shapes.len()).filter(|&i| self.shapes[i].is_none());
        let labels = (0..self.labels.len())
            .filter(|&i| self.labels[i])
            .map(|i| AS_LABELS + i);
        let broadcast = self
            .broadcast
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| AS_BROADCAST + i * 64 + a));
        absent.chain(labels).chain(broadcast).collect()
    }
}

/// The axis dimensions a given input proposes (one entry per axis it has), read from its shape
/// alone; `None` if its rank does not fit its declaration.
/// Per axis an input has: (axis, the dimensions it gives it).
type Proposal = Vec<(usize, Vec<usize>)>;

fn proposal(sig: &Signature, inp: &InputSpec, shape: &[usize]) -> Option<Proposal> {
    let has_pack = inp.axes.iter().any(|&a| sig.space.packs[a]);
    let fixed = inp.axes.len() - usize::from(has_pack);
    if shape.len() < fixed || (!has_pack && shape.len() != fixed) {
        return None;
    }
    let pack_len = shape.len() - fixed;
    let mut pos = 0;
    let mut out = Vec::new();
    for &a in &inp.axes {
        let n = if sig.space.packs[a] { pack_len } else { 1 };
        out.push((a, shape[pos..pos + n].to_vec()));
        pos += n;
    }
    Some(out)
}

/// On a disagreement between inputs, the input to blame: each axis takes the dimensions most
/// inputs give it (a tie goes to the input with the most dimensions, then to a differentiable
/// one), and the first input that disagrees is named, with a hint at the usual causes (class
/// indices where one-hot is expected, a missing axis, channels-last). `None` when fewer than
/// two inputs can be read this way (the caller's message stands).
fn blame(sig: &Signature, given: &[Option<Vec<usize>>]) -> Option<Error> {
    let readable: Vec<(usize, &Vec<usize>, Proposal)> = given
        .iter()
        .enumerate()
        .filter(|(i, _)| sig.inputs[*i].labels.is_none())
        .filter_map(|(i, s)| {
            let s = s.as_ref()?;
            Some((i, s, proposal(sig, &sig.inputs[i], s)?))
        })
        .collect();
    if readable.len() < 2 {
        return None;
    }
    let n_axes = sig.space.names.len();
    let mut chosen: Vec<Option<Vec<usize>>> = vec![None; n_axes];
    for (a, slot) in chosen.iter_mut().enumerate() {
        let mut best: Option<(usize, usize, bool, Vec<usize>)> = None;
        for (i, s, p) in &readable {
            let Some((_, d)) = p.iter().find(|(x, _)| *x == a) else {
                continue;
            };
            let votes = readable
                .iter()
                .filter(|(_, _, q)| q.iter().any(|(x, e)| *x == a && e == d))
                .count();
            let key = (votes, s.len(), sig.inputs[*i].diff, d.clone());
            if best
                .as_ref()
                .is_none_or(|b| (key.0, key.1, key.2) > (b.0, b.1, b.2))
            {
                best = Some(key);
            }
        }
        *slot = best.map(|b| b.3);
    }
    let (ci, cshape, cp) = readable
        .iter()
        .find(|(_, _, p)| p.iter().any(|(a, d)| chosen[*a].as_ref() != Some(d)))?;
    let (axis, mine) = cp.iter().find(|(a, d)| chosen[*a].as_ref() != Some(d))?;
    // The inputs that give `axis` the chosen dimensions, with their shapes.
    let (agree, shapes): (Vec<&str>, Vec<&[usize]>) = readable
        .iter()
        .filter(|(_, _, q)| {
            q.iter()
                .any(|(x, e)| x == axis && chosen[*x].as_ref() == Some(e))
        })
        .map(|(i, s, _)| (sig.inputs[*i].name.as_str(), s.as_slice()))
        .unzip();
    let reference = shapes.first().copied().unwrap_or(&[]);
    let inp = &sig.inputs[*ci];
    let mut detail = format!(
        "axis `{}` is {:?} here but {:?} in {}",
        sig.space.names[*axis],
        mine,
        chosen[*axis].clone().unwrap_or_default(),
        agree
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    if let Some(h) = hint(
        sig,
        inp,
        cshape,
        reference,
        agree.first().copied().unwrap_or(""),
    ) {
        detail.push_str("; ");
        detail.push_str(&h);
    }
    Some(Error::Shape {
        input: inp.name.clone(),
        expected: expected_text(sig, inp, &chosen),
        received: cshape.to_vec(),
        detail,
    })
}

/// The usual reason an input's `shape` disagrees with `reference` (the shape of input `other`).
fn hint(
    sig: &Signature,
    inp: &InputSpec,
    shape: &[usize],
    reference: &[usize],
    other: &str,
) -> Option<String> {
    let without_channel = |r: &[usize]| -> Vec<usize> {
        r.iter()
            .enumerate()
            .filter(|(k, _)| *k != 1)
            .map(|(_, &d)| d)
            .collect()
    };
    if reference.len() >= 2 && shape.len() + 1 == reference.len() {
        if !inp.diff && shape == without_channel(reference).as_slice() {
            return Some(format!(
                "it looks like class indices [B, ..S] while `{}` takes `{}` as {} (one-hot): one-hot encode it, or use a loss that takes class indices (softmax_ce, softmax_dice, generalized_dice, lovasz_softmax)",
                sig.name,
                inp.name,
                sig.shape_text(inp)
            ));
        }
        return Some(format!(
            "it has one dimension fewer than `{other}` {reference:?}: a missing batch or channel axis? (one image is [1, C, ..S], one channel [B, 1, ..S])"
        ));
    }
    if shape.len() == reference.len() + 1 {
        return Some(format!(
            "it has one dimension more than `{other}` {reference:?}"
        ));
    }
    if shape.len() == reference.len() && shape.len() >= 3 {
        let mut last = reference.to_vec();
        let c = last.remove(1);
        last.push(c);
        if shape == last.as_slice() {
            return Some(format!(
                "channels-last? `{}` takes the channel axis second ({}): permute it to {reference:?}",
                sig.name,
                sig.shape_text(inp)
            ));
        }
    }
    None
}

fn expected_text(sig: &Signature, inp: &InputSpec, dims: &[Option<Vec<usize>>]) -> String {
    let one_hot = axes_text(sig, &inp.axes, dims);
    match &inp.labels {
        Some((axis, _)) => {
            let rest: Vec<usize> = inp.axes.iter().copied().filter(|a| a != axis).collect();
            format!("{one_hot} or class labels {}", axes_text(sig, &rest, dims))
        }
        None => one_hot,
    }
}

fn axes_text(sig: &Signature, axes: &[usize], dims: &[Option<Vec<usize>>]) -> String {
    let parts: Vec<String> = axes
        .iter()
        .map(|&a| {
            let n = &sig.space.names[a];
            let pre = if sig.space.packs[a] { ".." } else { "" };
            match &dims[a] {
                Some(d) if sig.space.packs[a] => format!("{pre}{n}={d:?}"),
                Some(d) => format!("{n}={}", d.first().copied().unwrap_or(0)),
                None => format!("{pre}{n}"),
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

pub(super) fn bind_shapes(sig: &Signature, shapes: &[(&str, &[usize])]) -> Result<Binding> {
    let n_axes = sig.space.names.len();
    let mut given: Vec<Option<Vec<usize>>> = vec![None; sig.inputs.len()];
    for (name, shape) in shapes {
        let Some(i) = sig.inputs.iter().position(|x| x.name == *name) else {
            let names: Vec<String> = sig.inputs.iter().map(|x| format!("`{}`", x.name)).collect();
            return Err(Error::UnknownInput {
                name: name.to_string(),
                loss: sig.name.clone(),
                expected: names.join(", "),
            });
        };
        if given[i].is_some() {
            return Err(Error::DuplicateInput {
                input: name.to_string(),
            });
        }
        given[i] = Some(shape.to_vec());
    }
    let mut dims: Vec<Option<Vec<usize>>> = vec![None; n_axes];
    let mut bound_by: Vec<String> = vec![String::new(); n_axes];
    let mut labels = vec![false; sig.inputs.len()];
    let mut broadcast: Vec<Option<usize>> = vec![None; sig.inputs.len()];
    let label_axes: Vec<usize> = sig
        .inputs
        .iter()
        .filter_map(|x| x.labels.as_ref().map(|l| l.0))
        .collect();
    // Inputs that may lack an axis (labels, optional data) come last, so the axes they could
    // lack are bound by then.
    let mut order: Vec<usize> = (0..sig.inputs.len()).collect();
    order.sort_by_key(|&i| {
        let inp = &sig.inputs[i];
        inp.labels.is_some() || (inp.default.is_some() && !inp.diff)
    });
    for i in order {
        let inp = &sig.inputs[i];
        let Some(shape) = &given[i] else {
            if inp.default.is_none() {
                return Err(Error::MissingInput {
                    name: inp.name.clone(),
                    loss: sig.name.clone(),
                    expected: sig.shape_text(inp),
                });
            }
            continue;
        };
        // Given without its labels axis, or with 1 there (MONAI's [B, 1, ..S]), every other
        // axis bound already: class indices.
        if let Some((axis, _)) = &inp.labels {
            if lacks_axis(inp, &dims, *axis, shape) {
                labels[i] = true;
                continue;
            }
        }
        // An optional data input (a mask) given without a labels axis of the loss, or with 1
        // there: the same for every class (a per-pixel mask beside class-index labels).
        if inp.default.is_some() && !inp.diff && inp.labels.is_none() {
            if let Some(&axis) = label_axes
                .iter()
                .find(|&&a| inp.axes.contains(&a) && lacks_axis(inp, &dims, a, shape))
            {
                broadcast[i] = Some(axis);
                continue;
            }
        }
        let has_pack = inp.axes.iter().any(|&a| sig.space.packs[a]);
        let fixed = inp.axes.len() - usize::from(has_pack);
        let rank_ok = if has_pack {
            shape.len() >= fixed
        } else {
            shape.len() == fixed
        };
        if !rank_ok {
            let want = if has_pack {
                format!("at least {fixed} dimensions")
            } else {
                format!("{fixed} dimensions")
            };
            return Err(Error::Shape {
                input: inp.name.clone(),
                expected: expected_text(sig, inp, &dims),
                received: shape.clone(),
                detail: format!("expected {want}, got {}", shape.len()),
            });
        }
        let pack_len = shape.len() - fixed;
        let mut pos = 0;
        for &a in &inp.axes {
            let d: Vec<usize> = if sig.space.packs[a] {
                shape[pos..pos + pack_len].to_vec()
            } else {
                vec![shape[pos]]
            };
            pos += d.len();
            if d.contains(&0) {
                return Err(Error::Shape {
                    input: inp.name.clone(),
                    expected: expected_text(sig, inp, &dims),
                    received: shape.clone(),
                    detail: format!("axis `{}` is empty", sig.space.names[a]),
                });
            }
            match &dims[a] {
                Some(prev) if prev != &d => {
                    if let Some(e) = blame(sig, &given) {
                        return Err(e);
                    }
                    return Err(Error::Shape {
                        input: inp.name.clone(),
                        expected: expected_text(sig, inp, &dims),
                        received: shape.clone(),
                        detail: format!(
                            "axis `{}` is {:?} here but {:?} in `{}`",
                            sig.space.names[a], d, prev, bound_by[a]
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    dims[a] = Some(d);
                    bound_by[a] = inp.name.clone();
                }
            }
        }
    }
    let mut sizes = Vec::with_capacity(n_axes);
    let mut all_dims = Vec::with_capacity(n_axes);
    for (a, d) in dims.iter().enumerate() {
        match d {
            Some(d) => {
                sizes.push(d.iter().product());
                all_dims.push(d.clone());
            }
            None => {
                return Err(Error::UnboundAxis {
                    axis: sig.space.names[a].clone(),
                    loss: sig.name.clone(),
                })
            }
        }
    }
    let internal = sig
        .inputs
        .iter()
        .zip(labels.iter().zip(&broadcast))
        .map(|(inp, (&is_labels, without))| {
            let lacks = match (&inp.labels, without) {
                (Some((axis, _)), _) if is_labels => 1 << axis,
                (_, Some(axis)) => 1 << axis,
                _ => 0,
            };
            (0..n_axes)
                .map(|a| {
                    if (inp.mask & !lacks) & (1 << a) != 0 {
                        sizes[a]
                    } else {
                        1
                    }
                })
                .collect()
        })
        .collect();
    Ok(Binding {
        shapes: given,
        internal,
        sizes,
        dims: all_dims,
        labels,
        broadcast,
    })
}

/// Whether `shape` is input `inp`'s bound shape without `axis`, or with 1 there (and not its
/// full bound shape): every axis of `inp` but `axis` must be bound already.
fn lacks_axis(inp: &InputSpec, dims: &[Option<Vec<usize>>], axis: usize, shape: &[usize]) -> bool {
    let bound = |at_axis: Option<Vec<usize>>| -> Option<Vec<usize>> {
        let d: Option<Vec<Vec<usize>>> = inp
            .axes
            .iter()
            .filter_map(|&a| {
                if a == axis {
                    at_axis.clone().map(Some)
                } else {
                    Some(dims[a].clone())
                }
            })
            .collect();
        d.map(|d| d.concat())
    };
    let Some(full) = dims[axis].as_ref().and_then(|d| bound(Some(d.clone()))) else {
        return false;
    };
    let one = vec![1; dims[axis].as_ref().map_or(1, Vec::len)];
    full != shape
        && (bound(None).as_deref() == Some(shape) || bound(Some(one)).as_deref() == Some(shape))
}
