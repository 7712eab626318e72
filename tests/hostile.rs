//! No parameter value panics, aborts or gives a silent non-finite result: every standard loss ×
//! every parameter × hostile values (0, negative, NaN, ±inf, 1e300, 1e-300, huge integers, a
//! wrong option, an empty list) goes through `set`, `compile` and `value_and_grad` in f32 and
//! f64 and must answer with a typed error or a finite value and gradient (`catch_unwind` turns a
//! panic into a failure that names the case). A rejected value must be rejected by name: the
//! error names the parameter.

use std::panic::{catch_unwind, AssertUnwindSafe};

use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::{Error, Library, Loss, ParamKind, ParamSpec, ParamValue, Real};

mod common;
use common::{library_loss, LOSSES};

/// The hostile values tried on every numeric parameter.
const NUMBERS: &[f64] = &[
    0.0,
    -1.0,
    -0.5,
    0.5,
    3.0,
    150.0,
    1e9,
    -1e9,
    1e300,
    -1e300,
    1e-300,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    9007199254740993.0,
    1e6,
];

fn hostile_values(p: &ParamSpec) -> Vec<ParamValue> {
    let mut v: Vec<ParamValue> = NUMBERS.iter().map(|&x| ParamValue::Number(x)).collect();
    // A declared range's ends and middle are accepted, so they must give finite results too;
    // just past either end is refused (by name, as every refusal here).
    if let Some(r) = p.range {
        for x in [r.lo, r.hi, (r.lo + r.hi) / 2.0] {
            v.push(ParamValue::Number(if p.ty == ParamKind::Int {
                x.round()
            } else {
                x
            }));
        }
    }
    v.extend(past_ends(p).into_iter().map(ParamValue::Number));
    v.push(ParamValue::Text("bogus".into()));
    v.push(ParamValue::Text(String::new()));
    v.push(ParamValue::List(vec![]));
    v.push(ParamValue::List(vec![1.0, f64::NAN]));
    v.push(ParamValue::List(vec![1.0, -2.0]));
    v.push(ParamValue::List(vec![1e300, 1e300]));
    v.push(ParamValue::List(vec![1.0, 2.0, 3.0]));
    if let ParamKind::Options(opts) = &p.ty {
        v.extend(opts.iter().map(|o| ParamValue::Text(o.clone())));
    }
    v
}

/// Values just past either end of a parameter's declared range (none without one).
fn past_ends(p: &ParamSpec) -> Vec<f64> {
    let Some(r) = p.range else { return vec![] };
    let step = if p.ty == ParamKind::Int {
        1.0
    } else {
        1e-6 * (r.hi - r.lo).max(1.0)
    };
    vec![r.lo - step, r.hi + step]
}

fn shape_for(name: &str) -> [usize; 4] {
    if name == "ms_ssim" {
        [2, 2, 34, 33]
    } else {
        [2, 2, 12, 11]
    }
}

/// What one case did: Ok(()) for a typed error or a finite result, Err(text) otherwise.
fn run_case<T: Real>(loss: &Loss, shape: &[usize], rng: &mut Rng) -> Result<(), String> {
    let n: usize = shape.iter().product();
    let mut plan = match loss.compile::<T>(&[("logits", shape), ("target", shape)]) {
        Ok(p) => p,
        Err(e) => return typed(e),
    };
    let z: Vec<T> = (0..n).map(|_| T::from_f64(3.0 * rng.normal())).collect();
    let t: Vec<T> = (0..n)
        .map(|_| T::from_f64(if rng.uniform() < 0.3 { 1.0 } else { 0.0 }))
        .collect();
    let logits = ArrayD::from_shape_vec(IxDyn(shape), z).unwrap();
    let target = ArrayD::from_shape_vec(IxDyn(shape), t).unwrap();
    match plan.value_and_grad(&[("logits", logits.view()), ("target", target.view())]) {
        Err(e) => typed(e),
        Ok(out) => {
            if !out.value.to_f64().is_finite() {
                return Err(format!("value {} with no error", out.value.to_f64()));
            }
            for (g, a) in out.grads() {
                if let Some(x) = a.iter().find(|x| !x.to_f64().is_finite()) {
                    return Err(format!(
                        "gradient of `{g}` holds {} with no error",
                        x.to_f64()
                    ));
                }
            }
            if let Some(v) = out.values() {
                if v.iter().any(|x| !x.to_f64().is_finite()) {
                    return Err("a non-finite per-group value with no error".into());
                }
            }
            Ok(())
        }
    }
}

/// Every error is typed; an `Io` or `Compile` error at this stage would be a bug in the case,
/// not an answer.
fn typed(e: Error) -> Result<(), String> {
    match e {
        Error::Io { .. } => Err(format!("unexpected error: {e}")),
        _ => Ok(()),
    }
}

#[test]
fn no_parameter_value_panics_or_gives_a_silent_non_finite_result() {
    // Panics are caught and reported; keep the default hook from printing each one.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut rng = Rng::new(5);
    for &name in LOSSES {
        let base = library_loss(name);
        let shape = shape_for(name);
        for p in Library::standard().get(name).unwrap().params().to_vec() {
            for x in past_ends(&p) {
                if !matches!(base.clone().set(&p.name, x), Err(Error::ParamValue { .. })) {
                    failures.push(format!(
                        "{name} --set {}={x}: accepted past its range",
                        p.name
                    ));
                }
            }
            for value in hostile_values(&p) {
                cases += 1;
                let label = format!("{name} --set {}={value}", p.name);
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let loss = match base.clone().set(&p.name, value.clone()) {
                        Ok(l) => l,
                        Err(Error::ParamValue { name: ref n, .. }) if *n == p.name => return Ok(()),
                        Err(e) => return Err(format!("set: {e} (does not name the parameter)")),
                    };
                    let started = std::time::Instant::now();
                    run_case::<f64>(&loss, &shape, &mut rng)?;
                    run_case::<f32>(&loss, &shape, &mut rng)?;
                    let took = started.elapsed().as_secs_f64();
                    if took > 10.0 {
                        return Err(format!("took {took:.1} s"));
                    }
                    Ok(())
                }));
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => failures.push(format!("{label}: {why}")),
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.push(format!("{label}: PANIC {msg}"))
                    }
                }
            }
        }
    }
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
