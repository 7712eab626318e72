//! Gradient checking as a feature: f64 central differences (Richardson-extrapolated) against the
//! symbolic gradient, on random inputs in 2-D and 3-D, with the optional inputs present, and on
//! stress points (empty, full and single-pixel targets, soft targets, logits at ±30 and ±100
//! where the check is that value and gradient are finite).
//!
//! In: a [`Loss`]. Out: a [`GradcheckReport`]. Inputs are generated from the signature alone:
//! an input with a declared range (`in [lo, hi]`, `in int [lo, hi]`) draws from it (its ends in
//! the large-logit trials); otherwise differentiable inputs are N(0, 2²) scores, required data
//! inputs are 0/1 maps (or soft values), optional inputs are 0/1 masks. A differentiable input
//! whose symbolic and finite-difference gradients are zero on every trial is reported as not
//! exercised, and the check fails: a check that tested nothing does not pass.
//!
//! Losses whose value reads data computed from a differentiable input (thresholds such as
//! `p > 0.5`, distance transforms and contours of them, `stop_grad`) are differenced on the
//! reference interpreter with that data watched: `stop_grad` values are held at the base point
//! (the contract takes them as constants), and a probe whose step changes any other such value
//! (a threshold flips) is skipped and counted — the loss is not differentiable there. Window ops
//! get spatial sides of at least their largest window; where that side exceeds 33, the plain
//! axes (batch, classes) get one element and each trial probes per input the element of the
//! largest gradient and one direction over all elements (random signs: its difference tests
//! the sum of every element's gradient), so one check of the widest windows stays within
//! seconds.

use ndarray::{ArrayD, IxDyn};

use crate::api::Loss;
use crate::error::{Error, Result};
use crate::exec::reference::Interpreter;
use crate::exec::Bound;
use crate::ir::graph::NodeId;
use crate::ops::{Class, Diff, Op};

/// The data a finite difference must watch (see the module doc): the value-only graph on the
/// reference interpreter, the `stop_grad` nodes fed by a differentiable input with their values
/// at the base point, the other such data nodes with theirs, and the inputs (every input of the
/// signature in declaration order, absent ones empty), which probes perturb in place.
struct Watch {
    interp: Interpreter,
    held: Vec<(NodeId, ArrayD<f64>)>,
    watched: Vec<NodeId>,
    base: Vec<Option<ArrayD<f64>>>,
    inputs: Vec<ArrayD<f64>>,
}

impl Watch {
    /// `None` when the value reads no data computed from a differentiable input.
    fn new(bound: &Bound, diff: &[usize], inputs: Vec<ArrayD<f64>>) -> Option<Watch> {
        let g = &bound.graph;
        let vb = std::sync::Arc::new(Bound {
            graph: g.clone(),
            roots: vec![bound.roots[0]],
            sizes: bound.sizes.clone(),
            grad_axes: Vec::new(),
            spatial: bound.spatial.clone(),
        });
        let live = g.reachable(&vb.roots);
        let mut dep = vec![false; g.len()];
        let (mut held_ids, mut watched) = (Vec::new(), Vec::new());
        for id in 0..g.len() {
            let n = g.node(id as NodeId);
            dep[id] = match (n.op, n.attr) {
                (Op::Input, crate::ir::graph::Attr::Input(i)) => diff.contains(&(i as usize)),
                _ if n.op.def().shape_only => false,
                _ => n.args.iter().any(|&a| dep[a as usize]),
            };
            let data = n.op.def().diff != Diff::Smooth && n.op.def().class != Class::Leaf;
            if live[id] && dep[id] && data {
                if n.op == Op::StopGrad {
                    held_ids.push(id as NodeId);
                } else {
                    watched.push(id as NodeId);
                }
            }
        }
        if held_ids.is_empty() && watched.is_empty() {
            return None;
        }
        let mut w = Watch {
            interp: Interpreter::new(vb),
            held: Vec::new(),
            watched: held_ids,
            base: Vec::new(),
            inputs,
        };
        // The held values are the base point's: recorded once with nothing held.
        let held = w.eval().1;
        w.held = std::mem::replace(&mut w.watched, watched)
            .into_iter()
            .zip(held)
            .map(|(id, v)| (id, v.expect("held node evaluated")))
            .collect();
        w.base = w.eval().1;
        Some(w)
    }

    /// The value at the current inputs with the held data fixed, and the watched data's values.
    fn eval(&self) -> (f64, Vec<Option<ArrayD<f64>>>) {
        let data: Vec<&[f64]> = self
            .inputs
            .iter()
            .map(|a| a.as_slice().expect("standard layout"))
            .collect();
        let (roots, rec) =
            self.interp
                .evaluate_with(&self.interp.views(&data), &self.held, &self.watched);
        (roots[0].iter().next().copied().unwrap_or(f64::NAN), rec)
    }

    /// The value with the elements `at` of input `i` set (element, value), and whether a watched
    /// data value then differs from the base point's.
    fn value_at(&mut self, i: usize, at: &[(usize, f64)]) -> (f64, bool) {
        let a = self.inputs[i].as_slice_mut().expect("standard layout");
        let x0: Vec<f64> = at
            .iter()
            .map(|&(p, x)| std::mem::replace(&mut a[p], x))
            .collect();
        let (v, rec) = self.eval();
        let a = self.inputs[i].as_slice_mut().expect("standard layout");
        for (&(p, _), x) in at.iter().zip(x0) {
            a[p] = x;
        }
        (v, rec != self.base)
    }
}

#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    pub seed: u64,
    /// Elements probed per differentiable input and trial (the largest gradients, then random ones).
    pub probes: usize,
    /// Largest accepted `max|fd - grad| / max|grad|`.
    pub tolerance: f64,
    /// Run the checked plans with at most this instruction set (`Plan::cap_instruction_set`).
    pub instruction_set: Option<crate::exec::Isa>,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            seed: 0x5EED,
            probes: 8,
            tolerance: 1e-6,
            instruction_set: None,
        }
    }
}

#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Trial {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: f64,
    /// Worst relative error of the finite differences (None where not checked). A trial passes
    /// when what exceeds the value's rounding noise (64 ε |value| / h per probe) is within the
    /// tolerance, so this may exceed it where the value cannot resolve the difference.
    pub max_rel_err: Option<f64>,
    pub finite: bool,
    pub passed: bool,
    /// Probes left out because their step changed a data value computed from a differentiable
    /// input (a threshold flipped, so a distance map or contour changed): the value is not
    /// differentiable there.
    pub skipped: usize,
}

#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GradcheckReport {
    pub loss: String,
    /// The inputs that receive gradients.
    pub grad_inputs: Vec<String>,
    pub trials: Vec<Trial>,
    pub worst_rel_err: f64,
    /// Probes skipped over all trials (see [`Trial::skipped`]).
    pub skipped: usize,
    /// Differentiable inputs whose symbolic and finite-difference gradients were both zero on
    /// every trial: nothing about their gradient was tested, and the check fails.
    pub not_exercised: Vec<String>,
    /// The executor of the compiled plans (`fused`, with how many passes run native kernels, or
    /// `reference`) and, for `reference`, why.
    pub executor: String,
    pub fallback: Option<String>,
    pub passed: bool,
}

/// Deterministic generator (splitmix64) for test inputs. Not API (re-exported, hidden, from
/// `losslang::internals`).
#[doc(hidden)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Random,
    Empty,
    Full,
    Single,
    Soft,
}

struct Spec {
    name: &'static str,
    three_d: bool,
    target: Target,
    logits: Option<f64>,
    with_optional: bool,
}

const TRIALS: &[Spec] = &[
    Spec {
        name: "random 2-D",
        three_d: false,
        target: Target::Random,
        logits: None,
        with_optional: false,
    },
    Spec {
        name: "random 3-D",
        three_d: true,
        target: Target::Random,
        logits: None,
        with_optional: false,
    },
    Spec {
        name: "masked",
        three_d: false,
        target: Target::Random,
        logits: None,
        with_optional: true,
    },
    Spec {
        name: "empty target",
        three_d: false,
        target: Target::Empty,
        logits: None,
        with_optional: false,
    },
    Spec {
        name: "full target",
        three_d: false,
        target: Target::Full,
        logits: None,
        with_optional: false,
    },
    Spec {
        name: "single foreground",
        three_d: false,
        target: Target::Single,
        logits: None,
        with_optional: false,
    },
    Spec {
        name: "soft target",
        three_d: false,
        target: Target::Soft,
        logits: None,
        with_optional: false,
    },
    Spec {
        name: "logits ±30",
        three_d: false,
        target: Target::Random,
        logits: Some(30.0),
        with_optional: false,
    },
    Spec {
        name: "logits ±100",
        three_d: false,
        target: Target::Random,
        logits: Some(100.0),
        with_optional: false,
    },
    Spec {
        name: "logits ±1e4",
        three_d: false,
        target: Target::Random,
        logits: Some(1e4),
        with_optional: true,
    },
];

/// The largest smallest-side (see `Loss::largest_window`) for which the 3-D trial runs.
const MAX_3D_SIDE: usize = 33;
/// The largest smallest-side a gradient check runs at (its windows at their scales): larger
/// windows make every finite-difference evaluation cost seconds, so such a loss is refused with
/// [`Error::Limit`] at once instead.
pub const MAX_CHECK_SIDE: usize = 512;

pub(crate) fn run(loss: &Loss, opts: &GradcheckOptions) -> Result<GradcheckReport> {
    let sig = loss.signature().clone();
    let mut rng = Rng::new(opts.seed);
    let mut trials = Vec::new();
    let mut grad_inputs = Vec::new();
    let has_optional = sig.inputs.iter().any(|i| i.default.is_some());
    // Inputs whose gradient some trial compared with nonzero values.
    let mut exercised: Vec<String> = Vec::new();
    let (mut executor, mut fallback) = (String::new(), None);
    let (mut native_passes, mut all_passes) = (0, 0);
    let w = loss.largest_window();
    if w > MAX_CHECK_SIDE {
        return Err(Error::Limit {
            loss: sig.name.clone(),
            what: "elements per spatial side needed by its windows for a gradient check",
            count: w,
            max: MAX_CHECK_SIDE,
        });
    }
    let vectors = loss.vector_lists();
    let mut skipped_total = 0;
    for spec in TRIALS {
        if spec.with_optional && !has_optional && spec.logits.is_none() {
            continue;
        }
        if spec.three_d && w > MAX_3D_SIDE {
            // A 3-D image of sides >= w would take millions of elements per trial (ms_ssim's
            // five scales of an 11-wide window need sides of 161): its trials run in 2-D only.
            continue;
        }
        // Axis dimensions for this trial (an axis a vector parameter was set over: its length).
        let vector_len = |a: usize| {
            vectors
                .iter()
                .find(|(_, axis, _)| *axis == a)
                .map(|(_, _, ws)| ws.len())
        };
        // Large windows (a side above MAX_3D_SIDE): one image per plain axis and fewer probes,
        // so each difference evaluates a single image (ms_ssim's widest window: 496 x 497).
        let large = w > MAX_3D_SIDE;
        let probes = opts.probes;
        let mut first_plain = true;
        let dims: Vec<Vec<usize>> = (0..sig.space.names.len())
            .map(|a| {
                if sig.space.packs[a] {
                    if spec.three_d {
                        vec![w.max(3), w.max(3) + 1, w.max(3)]
                    } else {
                        vec![w.max(5), w.max(5) + 1]
                    }
                } else {
                    let d = if (first_plain && spec.three_d) || large {
                        1
                    } else {
                        2
                    };
                    first_plain = false;
                    vec![vector_len(a).unwrap_or(d)]
                }
            })
            .collect();
        let mut names = Vec::new();
        let mut shapes = Vec::new();
        let mut arrays: Vec<ArrayD<f64>> = Vec::new();
        for inp in &sig.inputs {
            if inp.default.is_some() && !spec.with_optional {
                continue;
            }
            let shape: Vec<usize> = inp
                .axes
                .iter()
                .flat_map(|&a| dims[a].iter().copied())
                .collect();
            let n: usize = shape.iter().product();
            let data: Vec<f64> = match (inp.range, inp.diff) {
                // A declared range is what the input takes, in every trial; stress trials
                // (large logits) take its ends.
                (Some(r), _) if r.int => (0..n)
                    .map(|_| r.lo + rng.below((r.hi - r.lo) as usize + 1) as f64)
                    .collect(),
                (Some(r), true) if spec.logits.is_some() => (0..n)
                    .map(|_| if rng.uniform() < 0.5 { r.lo } else { r.hi })
                    .collect(),
                (Some(r), _) => (0..n)
                    .map(|_| r.lo + (r.hi - r.lo) * (0.05 + 0.9 * rng.uniform()))
                    .collect(),
                (None, true) => match spec.logits {
                    Some(m) => (0..n)
                        .map(|_| if rng.uniform() < 0.5 { -m } else { m } + 0.05 * rng.normal())
                        .collect(),
                    None => (0..n).map(|_| 2.0 * rng.normal()).collect(),
                },
                (None, false) if inp.default.is_some() => (0..n)
                    .map(|_| if rng.uniform() < 0.8 { 1.0 } else { 0.0 })
                    .collect(),
                (None, false) => match spec.target {
                    Target::Random => (0..n)
                        .map(|_| if rng.uniform() < 0.4 { 1.0 } else { 0.0 })
                        .collect(),
                    Target::Empty => vec![0.0; n],
                    Target::Full => vec![1.0; n],
                    Target::Single => {
                        let mut v = vec![0.0; n];
                        v[rng.below(n)] = 1.0;
                        v
                    }
                    Target::Soft => (0..n).map(|_| 0.02 + 0.96 * rng.uniform()).collect(),
                },
            };
            names.push(inp.name.clone());
            arrays.push(ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape matches data"));
            shapes.push(shape);
        }
        let shape_refs: Vec<(&str, &[usize])> = names
            .iter()
            .map(|s| s.as_str())
            .zip(shapes.iter().map(|s| s.as_slice()))
            .collect();
        let mut plan = loss.compile::<f64>(&shape_refs)?;
        if let Some(isa) = opts.instruction_set {
            plan.cap_instruction_set(isa);
        }
        grad_inputs = plan.grad_inputs().iter().map(|s| s.to_string()).collect();
        let info = plan.pass_info();
        native_passes += info
            .iter()
            .filter(|p| p.kernel == crate::exec::Kernel::Native)
            .count();
        all_passes += info.len();
        executor = match plan.executor() {
            crate::exec::ExecutorKind::Fused => {
                format!("fused (native kernels in {native_passes} of {all_passes} passes)")
            }
            other => other.to_string(),
        };
        fallback = plan.fallback_reason().map(str::to_string);
        let views: Vec<(&str, ndarray::ArrayViewD<f64>)> = names
            .iter()
            .map(|s| s.as_str())
            .zip(arrays.iter().map(|a| a.view()))
            .collect();
        let out = plan.value_and_grad(&views)?;
        let value = out.value;
        let out_grads: Vec<(String, ArrayD<f64>)> = out
            .grads()
            .map(|(n, g)| (n.to_string(), g.clone()))
            .collect();
        #[cfg(test)]
        let out_grads: Vec<(String, ArrayD<f64>)> = out_grads
            .into_iter()
            .map(|(n, g)| (n, g * tests::SKEW.with(|s| s.get())))
            .collect();
        let finite = value.is_finite()
            && out_grads
                .iter()
                .all(|(_, g)| g.iter().all(|x| x.is_finite()));
        let mut max_rel: Option<f64> = None;
        let mut max_beyond = 0.0f64;
        let mut skipped = 0;
        let mut watch = if finite && spec.logits.is_none() {
            let all_inputs: Vec<ArrayD<f64>> = sig
                .inputs
                .iter()
                .map(|inp| match names.iter().position(|n| n == &inp.name) {
                    Some(k) => arrays[k].clone(),
                    None => ArrayD::zeros(IxDyn(&[0])),
                })
                .collect();
            let diff_idx: Vec<usize> = sig
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, i)| grad_inputs.contains(&i.name))
                .map(|(k, _)| k)
                .collect();
            Watch::new(plan.bound(), &diff_idx, all_inputs)
        } else {
            None
        };
        if finite && spec.logits.is_none() {
            for (gname, grad) in &out_grads {
                let k = names
                    .iter()
                    .position(|n| n == gname)
                    .expect("gradient of a given input");
                let width = sig
                    .inputs
                    .iter()
                    .find(|i| &i.name == gname)
                    .and_then(|i| i.range)
                    .map(|r| r.hi - r.lo);
                let gmax = grad.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let flat: Vec<f64> = grad.iter().copied().collect();
                let mut order: Vec<usize> = (0..flat.len()).collect();
                order.sort_by(|&a, &b| flat[b].abs().total_cmp(&flat[a].abs()));
                // A probe is a direction: one element (the largest gradients, then random
                // ones), or for large images all elements at once with random signs, whose
                // difference tests every element's gradient in one sum.
                let want = if large { 1 } else { probes };
                let mut elems: Vec<usize> = order.iter().take(3.min(want)).copied().collect();
                while elems.len() < want.min(flat.len()) {
                    let p = rng.below(flat.len());
                    if !elems.contains(&p) {
                        elems.push(p);
                    }
                }
                let mut dirs: Vec<Vec<(usize, f64)>> =
                    elems.into_iter().map(|p| vec![(p, 1.0)]).collect();
                if large {
                    dirs.push(
                        (0..flat.len())
                            .map(|p| (p, if rng.uniform() < 0.5 { -1.0 } else { 1.0 }))
                            .collect(),
                    );
                }
                let mut pairs = Vec::with_capacity(dirs.len());
                let ki = sig
                    .inputs
                    .iter()
                    .position(|i| &i.name == gname)
                    .expect("a declared input");
                for dir in &dirs {
                    let x0: Vec<f64> = {
                        let a = arrays[k].as_slice().expect("standard layout");
                        dir.iter().map(|&(p, _)| a[p]).collect()
                    };
                    // Small enough to stay inside a declared range.
                    let xmax = x0.iter().fold(1.0f64, |m, x| m.max(x.abs()));
                    let h = (1e-4 * xmax).min(width.map_or(f64::INFINITY, |w| 0.01 * w));
                    let mut crossed = false;
                    let mut f = |dx: f64| -> Result<f64> {
                        let at: Vec<(usize, f64)> = dir
                            .iter()
                            .zip(&x0)
                            .map(|(&(p, v), &x)| (p, x + dx * v))
                            .collect();
                        if let Some(w) = watch.as_mut() {
                            let (v, c) = w.value_at(ki, &at);
                            crossed |= c;
                            return Ok(v);
                        }
                        let a = arrays[k].as_slice_mut().expect("standard layout");
                        for &(p, x) in &at {
                            a[p] = x;
                        }
                        let views: Vec<(&str, ndarray::ArrayViewD<f64>)> = names
                            .iter()
                            .map(|s| s.as_str())
                            .zip(arrays.iter().map(|a| a.view()))
                            .collect();
                        let v = plan.value(&views);
                        let a = arrays[k].as_slice_mut().expect("standard layout");
                        for (&(p, _), &x) in dir.iter().zip(&x0) {
                            a[p] = x;
                        }
                        v
                    };
                    let d1 = (f(h)? - f(-h)?) / (2.0 * h);
                    let d2 = (f(h / 2.0)? - f(-h / 2.0)?) / h;
                    if crossed {
                        skipped += 1;
                        continue;
                    }
                    // What differences of this value can resolve: rounding of the value (relative
                    // ε) over steps h, amplified by the extrapolation.
                    let noise = 64.0 * f64::EPSILON * value.abs() / h;
                    let symbolic: f64 = dir.iter().map(|&(p, v)| flat[p] * v).sum();
                    pairs.push(((4.0 * d2 - d1) / 3.0, symbolic, noise));
                }
                // Both gradients zero (to what differences of this value resolve): this trial
                // tested nothing for this input. Otherwise the error is relative to the larger,
                // so a zero symbolic gradient against a nonzero difference fails.
                let fdmax = pairs.iter().fold(0.0f64, |m, (fd, _, _)| m.max(fd.abs()));
                let scale = gmax.max(fdmax);
                if scale <= 1e-9 * value.abs().max(1.0) {
                    continue;
                }
                if !exercised.contains(gname) {
                    exercised.push(gname.clone());
                }
                // Reported: the plain error; judged: what exceeds the value's rounding noise.
                let raw = pairs
                    .iter()
                    .fold(0.0f64, |m, (fd, g, _)| m.max((fd - g).abs() / scale));
                let beyond = pairs.iter().fold(0.0f64, |m, (fd, g, noise)| {
                    m.max(((fd - g).abs() - noise).max(0.0) / scale)
                });
                max_rel = Some(max_rel.unwrap_or(0.0).max(raw));
                max_beyond = max_beyond.max(beyond);
            }
        }
        let passed = finite && max_beyond <= opts.tolerance;
        let shape = shapes.first().cloned().unwrap_or_default();
        skipped_total += skipped;
        trials.push(Trial {
            name: spec.name.to_string(),
            shape,
            value,
            max_rel_err: max_rel,
            finite,
            passed,
            skipped,
        });
    }
    let worst = trials
        .iter()
        .filter_map(|t| t.max_rel_err)
        .fold(0.0, f64::max);
    let not_exercised: Vec<String> = grad_inputs
        .iter()
        .filter(|g| !exercised.contains(g))
        .cloned()
        .collect();
    let passed = trials.iter().all(|t| t.passed) && not_exercised.is_empty();
    Ok(GradcheckReport {
        loss: sig.name.clone(),
        grad_inputs,
        trials,
        worst_rel_err: worst,
        skipped: skipped_total,
        not_exercised,
        executor,
        fallback,
        passed,
    })
}

#[cfg(test)]
mod tests {
    use crate::Library;

    thread_local! {
        /// Test-only: a factor the symbolic gradients are multiplied by before the comparison.
        pub(super) static SKEW: std::cell::Cell<f64> = const { std::cell::Cell::new(1.0) };
    }

    /// The check fails when the symbolic gradient is off by 0.1%, on a fused loss and on the
    /// window losses whose differences go through the watched reference evaluation (thresholds,
    /// distance maps, held `stop_grad` values), and passes when it is not.
    #[test]
    fn a_gradient_off_by_a_thousandth_fails() {
        for name in ["dice", "hausdorff_dt", "cmss", "ssim"] {
            let loss = Library::standard().get(name).unwrap();
            SKEW.with(|s| s.set(1.0));
            assert!(
                loss.gradcheck(&Default::default()).unwrap().passed,
                "{name}"
            );
            SKEW.with(|s| s.set(1.001));
            let rep = loss.gradcheck(&Default::default()).unwrap();
            SKEW.with(|s| s.set(1.0));
            assert!(!rep.passed, "{name}: a skewed gradient passed");
        }
    }
}
