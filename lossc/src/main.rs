//! `lossc`: the command line. A client of the embedding API only (no access to internals beyond
//! what `losslang` exports). Subcommands: `check`, `eval`, `graph`, `bench`, `list`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

#[cfg(feature = "burn")]
mod via_burn;
use losslang::internals::Rng;
use losslang::ndarray::{ArrayD, IxDyn};
use losslang::Real;
use losslang::{
    Error, ExecutorKind, GradcheckOptions, Isa, Library, Loss, ParamValue, Plan, Stage,
};

/// What `lossc` reports: an error of the library, or one of the command line's own.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Lib(#[from] Error),
    /// A malformed flag value.
    #[error("{0}")]
    Usage(String),
    /// A malformed `--inputs` JSON file.
    #[error("{0}")]
    Json(String),
    /// A framework adapter's error (`bench --via burn`).
    #[cfg_attr(not(feature = "burn"), allow(dead_code))]
    #[error("{0}")]
    Adapter(String),
}

/// The instruction-set cap of the `LOSSLANG_ISA` environment variable (`avx512`, `avx2`,
/// `baseline`), applied to every plan `lossc` compiles.
fn isa_cap() -> Result<Option<Isa>, CliError> {
    match std::env::var("LOSSLANG_ISA") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map(Some)
            .map_err(|e| CliError::Usage(format!("the LOSSLANG_ISA environment variable: {e}"))),
        _ => Ok(None),
    }
}

/// `loss` compiled for `shapes` as the environment asks: every pass as bytecode when
/// `LOSSLANG_NATIVE=0` (for comparisons), instruction sets capped by `LOSSLANG_ISA`.
fn compile<T: Real>(loss: &Loss, shapes: &[(&str, &[usize])]) -> Result<Plan<T>, CliError> {
    let kind = match std::env::var("LOSSLANG_NATIVE") {
        Ok(v) if v == "0" => ExecutorKind::FusedBytecode,
        _ => ExecutorKind::Fused,
    };
    let mut plan = loss.compile_with::<T>(shapes, kind)?;
    if let Some(isa) = isa_cap()? {
        plan.cap_instruction_set(isa);
    }
    Ok(plan)
}
use serde_json::{json, Map, Value};

/// `println!` that ends the process with a message, not a panic, when standard output cannot
/// be written (`lossc list > /dev/full`, a closed pipe).
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            eprintln!("lossc: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }};
}

#[derive(Parser)]
#[command(
    name = "lossc",
    version,
    about = "Check, evaluate, inspect and time segmentation losses written in the losslang language"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Dtype {
    F32,
    F64,
}

/// What `bench` times.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Via {
    /// The plan alone, on host buffers.
    Plan,
    /// One training step's loss call through losslang-burn (burn's Flex backend under
    /// autodiff: the loss and its backward to the logits), beside the same loss in burn ops
    /// where one is written (bce, dice, softmax_ce). Needs `lossc` built with `--features burn`.
    Burn,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum StageArg {
    Parsed,
    Autodiff,
    Optimised,
    Fused,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse, type-check, differentiate and finite-difference-check .loss files (directories recurse).
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Seed of the random inputs.
        #[arg(long, default_value_t = 0x5EED)]
        seed: u64,
        /// Largest accepted max|fd - grad| / max|grad|.
        #[arg(long, default_value_t = 1e-6)]
        tolerance: f64,
        /// Print every trial, not only failures.
        #[arg(long, short)]
        verbose: bool,
        /// NAME=VALUE parameter (repeatable), for every loss that declares it (e.g.
        /// `--set reduction=none`, `--set weight=0.5,2`).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
    /// Evaluate a loss (a .loss file or a standard-library name) on inputs; prints JSON.
    Eval {
        file: String,
        /// JSON object mapping input names to {"shape": [...], "data": [...]} (a golden case object also works).
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// NAME=FILE.npy (repeatable), in place of or in addition to --inputs.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        npy: Vec<String>,
        /// NAME=VALUE parameter (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        #[arg(long, value_enum, default_value = "f64")]
        dtype: Dtype,
        /// Include the gradient of every differentiable input.
        #[arg(long)]
        grad: bool,
        /// Let NaN/Inf inputs through instead of rejecting them.
        #[arg(long)]
        no_check_finite: bool,
    },
    /// Print the IR of a loss at a stage (text, or Graphviz with --dot).
    Graph {
        file: String,
        #[arg(long, value_enum, default_value = "optimised")]
        stage: StageArg,
        #[arg(long)]
        dot: bool,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Treat these optional inputs as given (by default they take their declared constant).
        #[arg(long = "with", value_name = "INPUT")]
        with: Vec<String>,
        /// With `--stage fused`: bind every given input to this shape and show the schedule a
        /// plan runs (sizes folded, kernels prepared), not the size-independent one.
        #[arg(long, value_delimiter = ',')]
        shape: Option<Vec<usize>>,
    },
    /// Time value_and_grad on random inputs; prints JSON (one object per file).
    /// Several files print one JSON object per line, in order.
    Bench {
        #[arg(required = true)]
        files: Vec<String>,
        /// B,C,D1,...,Dn
        #[arg(long, value_delimiter = ',', required = true)]
        shape: Vec<usize>,
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed calls, 1 to 1 000 000.
        #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        iters: usize,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Compile these parameters live (read per call, changeable without compiling:
        /// `Loss::live`), e.g. `--live lambda_dice,lambda_ce`.
        #[arg(long, value_delimiter = ',', value_name = "NAME")]
        live: Vec<String>,
        /// What to time: the plan, or a training step through a framework adapter.
        #[arg(long, value_enum, default_value = "plan")]
        via: Via,
    },
    /// List the standard library's losses with their inputs and parameters.
    List,
    /// Explain a diagnostic code (`lossc explain E0009`), or list every code without one.
    Explain {
        /// The code, e.g. E0009.
        code: Option<String>,
    },
}

/// Output into a closed pipe (`lossc list | head -1`) ends the process quietly, as it does for
/// other Unix tools, instead of panicking in `println!`: Rust ignores SIGPIPE by default.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first in `main`, before any other thread exists; setting the default
    // disposition of SIGPIPE has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Check {
            paths,
            seed,
            tolerance,
            verbose,
            set,
        } => check(&paths, seed, tolerance, verbose, &set),
        Cmd::Eval {
            file,
            inputs,
            npy,
            set,
            dtype,
            grad,
            no_check_finite,
        } => eval(
            &file,
            inputs.as_deref(),
            &npy,
            &set,
            dtype,
            grad,
            !no_check_finite,
        ),
        Cmd::Graph {
            file,
            stage,
            dot,
            set,
            with,
            shape,
        } => graph(&file, stage, dot, &set, &with, shape.as_deref()),
        Cmd::Bench {
            files,
            shape,
            dtype,
            threads,
            iters,
            set,
            live,
            via,
        } => files.iter().try_fold(ExitCode::SUCCESS, |_, file| {
            bench(file, &shape, dtype, threads, iters, &set, &live, via)
        }),
        Cmd::List => list(),
        Cmd::Explain { code } => explain(code.as_deref()),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", e.to_string().trim_end());
            ExitCode::from(2)
        }
    }
}

/// A `.loss` path, or the name of a standard loss.
fn load(file: &str) -> Result<Loss, CliError> {
    let p = Path::new(file);
    if p.exists() || file.ends_with(".loss") {
        Ok(Loss::from_file(p)?)
    } else {
        Ok(Library::standard().get(file)?)
    }
}

fn parse_value(v: &str) -> ParamValue {
    match v.trim().parse::<f64>() {
        Ok(x) => ParamValue::Number(x),
        Err(_) => ParamValue::Text(v.trim().to_string()),
    }
}

fn apply_sets(mut loss: Loss, sets: &[String]) -> Result<Loss, CliError> {
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--set takes NAME=VALUE, got `{s}`"
            )));
        };
        loss = loss.set(k.trim(), parse_value(v))?;
    }
    Ok(loss)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().and_then(|x| x.to_str()) == Some("loss") {
                collect(&e, out)?;
            }
        }
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(CliError::Lib(Error::Io {
            path: path.display().to_string(),
            message: "no such file or directory".into(),
        }))
    }
}

fn check(
    paths: &[PathBuf],
    seed: u64,
    tolerance: f64,
    verbose: bool,
    sets: &[String],
) -> Result<ExitCode, CliError> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        eprintln!("error: no `.loss` file found in {}", list.join(", "));
        return Ok(ExitCode::from(1));
    }
    let set_name = |s: &str| s.split_once('=').map(|(k, _)| k.trim().to_string());
    if let Some(bad) = sets.iter().find(|s| set_name(s).is_none()) {
        return Err(CliError::Usage(format!(
            "--set takes NAME=VALUE, got `{bad}`"
        )));
    }
    let mut used = vec![false; sets.len()];
    let opts = GradcheckOptions {
        seed,
        tolerance,
        instruction_set: isa_cap()?,
        ..Default::default()
    };
    let (mut ok, mut failed) = (0, 0);
    for f in &files {
        let losses = match Loss::all_in_file(f) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}", e.to_string().trim_end());
                println!("FAIL  {}: does not compile", f.display());
                failed += 1;
                continue;
            }
        };
        if losses.is_empty() {
            println!(
                "ok    {}: helpers only (no loss): names, arities and axis lists checked",
                f.display()
            );
            ok += 1;
            continue;
        }
        for loss in losses {
            // Each `--set` that this loss declares.
            let mut mine = Vec::new();
            for (k, s) in sets.iter().enumerate() {
                if loss
                    .params()
                    .iter()
                    .any(|p| Some(&p.name) == set_name(s).as_ref())
                {
                    used[k] = true;
                    mine.push(s.clone());
                }
            }
            let loss = match apply_sets(loss, &mine) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("{}", e.to_string().trim_end());
                    println!("FAIL  {}: a parameter does not apply", f.display());
                    failed += 1;
                    continue;
                }
            };
            match loss.gradcheck(&opts) {
                Ok(rep) => {
                    let status = if rep.passed { "ok  " } else { "FAIL" };
                    println!(
                        "{status}  {}: `{}`  gradients: {}  worst rel. gradient error {:.1e} over {} trials{}  executor {}",
                        f.display(),
                        rep.loss,
                        rep.grad_inputs.join(", "),
                        rep.worst_rel_err,
                        rep.trials.len(),
                        if rep.skipped > 0 {
                            format!(" ({} probes skipped: a threshold flips there)", rep.skipped)
                        } else {
                            String::new()
                        },
                        match &rep.fallback {
                            Some(why) => format!("reference (not fusable: {why})"),
                            None => rep.executor.clone(),
                        }
                    );
                    if !rep.not_exercised.is_empty() {
                        println!(
                            "        not exercised: {} (symbolic and finite-difference gradients zero on every trial; declare the data's range, e.g. `input target: [B, C, ..S] in [0, 4]`)",
                            rep.not_exercised.join(", ")
                        );
                    }
                    for t in &rep.trials {
                        if verbose || !t.passed {
                            let err = match t.max_rel_err {
                                Some(e) if t.skipped > 0 => {
                                    format!("fd rel. err {e:.1e} ({} skipped)", t.skipped)
                                }
                                Some(e) => format!("fd rel. err {e:.1e}"),
                                None => "finite check".to_string(),
                            };
                            println!(
                                "        {:<18} {:<16} value {:<12.6e} {err}{}",
                                t.name,
                                format!("{:?}", t.shape),
                                t.value,
                                if t.passed {
                                    ""
                                } else if !t.finite {
                                    "  NON-FINITE"
                                } else {
                                    "  TOO LARGE"
                                }
                            );
                        }
                    }
                    if rep.passed {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                Err(e) => {
                    eprintln!("{}", e.to_string().trim_end());
                    println!(
                        "FAIL  {}: `{}` could not be evaluated",
                        f.display(),
                        loss.name()
                    );
                    failed += 1;
                }
            }
        }
    }
    println!("{ok} passed, {failed} failed");
    for (s, _) in sets.iter().zip(&used).filter(|(_, u)| !**u) {
        eprintln!("error: no checked loss declares the parameter of `--set {s}`");
        failed += 1;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn json_array(v: &Value, name: &str) -> Result<ArrayD<f64>, CliError> {
    let bad = |m: &str| CliError::Json(format!("input `{name}`: {m}"));
    // The array under `key`, each entry converted by `conv` (`what` names a bad entry).
    fn list<U>(
        v: &Value,
        key: &str,
        what: &str,
        conv: fn(&Value) -> Option<U>,
        bad: &dyn Fn(&str) -> CliError,
    ) -> Result<Vec<U>, CliError> {
        v.get(key)
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad(&format!("needs a \"{key}\" array")))?
            .iter()
            .map(|x| conv(x).ok_or_else(|| bad(&format!("\"{key}\" holds {what}"))))
            .collect()
    }
    let shape: Vec<usize> = list(
        v,
        "shape",
        "a non-integer",
        |x| x.as_u64().map(|u| u as usize),
        &bad,
    )?;
    let data: Vec<f64> = list(
        v,
        "data",
        "a non-number (NaN and Inf cannot be written in JSON)",
        Value::as_f64,
        &bad,
    )?;
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(bad(&format!(
            "shape {shape:?} has {n} elements but \"data\" has {}",
            data.len()
        )));
    }
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| bad(&e.to_string()))
}

/// An input from a `.npy` file: float64 or float32, or a mask or label array stored as bool,
/// uint8, int32 or int64 (converted exactly; an integer beyond ±2^53, which f64 cannot hold, is
/// an error naming its index).
fn read_npy(name: &str, path: &str) -> Result<ArrayD<f64>, CliError> {
    let err = |e: String| {
        CliError::Lib(Error::Io {
            path: path.to_string(),
            message: format!("input `{name}`: {e}"),
        })
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if let Some(claimed) = npy_claimed_elements(&bytes) {
        // Every element takes at least one byte: a header claiming more than the file holds
        // is refused before anything is allocated for it.
        if claimed > bytes.len() as u128 {
            return Err(err(format!(
                "the header claims {claimed} elements, but the file holds {} bytes",
                bytes.len()
            )));
        }
    }
    // A Fortran-order file is read in its own layout; the engine takes row-major arrays.
    read_npy_data(&bytes, &err).map(|a| a.as_standard_layout().into_owned())
}

/// The element count a `.npy` header's `shape` claims (None if the header cannot be read: the
/// reader then reports it).
fn npy_claimed_elements(bytes: &[u8]) -> Option<u128> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return None;
    }
    let (len, start): (usize, usize) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        let b = bytes.get(8..12)?;
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
    };
    let header = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
    let shape = header.split("'shape'").nth(1)?;
    let inner = shape.split('(').nth(1)?.split(')').next()?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .try_fold(1u128, |acc, d| acc.checked_mul(d.parse::<u128>().ok()?))
}

fn read_npy_data(bytes: &[u8], err: &dyn Fn(String) -> CliError) -> Result<ArrayD<f64>, CliError> {
    use losslang::ndarray::ArrayD as A;
    use ndarray_npy::ReadNpyExt;
    let read = || std::io::Cursor::new(bytes);
    if let Ok(a) = A::<f64>::read_npy(read()) {
        return Ok(a);
    }
    if let Ok(a) = A::<f32>::read_npy(read()) {
        return Ok(a.mapv(f64::from));
    }
    if let Ok(a) = A::<bool>::read_npy(read()) {
        return Ok(a.mapv(|b| if b { 1.0 } else { 0.0 }));
    }
    if let Ok(a) = A::<u8>::read_npy(read()) {
        return Ok(a.mapv(f64::from));
    }
    if let Ok(a) = A::<i32>::read_npy(read()) {
        return Ok(a.mapv(f64::from));
    }
    match A::<i64>::read_npy(read()) {
        Ok(a) => {
            const EXACT: i64 = 1 << 53;
            if let Some((i, v)) = a.iter().enumerate().find(|(_, v)| v.abs() > EXACT) {
                return Err(err(format!(
                    "int64 value {v} at flat index {i} is beyond ±2^53 and has no exact float value"
                )));
            }
            Ok(a.mapv(|v| v as f64))
        }
        Err(e) => Err(err(format!(
            "{e} (expected a float64, float32, bool, uint8, int32 or int64 .npy array)"
        ))),
    }
}

fn eval(
    file: &str,
    inputs: Option<&Path>,
    npy: &[String],
    sets: &[String],
    dtype: Dtype,
    grad: bool,
    check_finite: bool,
) -> Result<ExitCode, CliError> {
    let mut loss = load(file)?;
    let mut arrays: BTreeMap<String, ArrayD<f64>> = BTreeMap::new();
    if let Some(p) = inputs {
        let text = std::fs::read_to_string(p).map_err(|e| Error::Io {
            path: p.display().to_string(),
            message: e.to_string(),
        })?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| CliError::Json(format!("{}: {e}", p.display())))?;
        let obj = v.as_object().ok_or_else(|| {
            CliError::Json(format!(
                "{}: expected a JSON object mapping input names to arrays",
                p.display()
            ))
        })?;
        // A golden case object ({"inputs": {...}, "params": {...}, ...}) is accepted as well.
        let ins = match obj.get("inputs").and_then(|x| x.as_object()) {
            Some(inner) => {
                if let Some(params) = obj.get("params").and_then(|x| x.as_object()) {
                    for (k, pv) in params {
                        let val = match pv {
                            Value::String(s) => ParamValue::Text(s.clone()),
                            Value::Array(xs) => ParamValue::List(
                                xs.iter()
                                    .map(|x| {
                                        x.as_f64().ok_or_else(|| {
                                            CliError::Json(format!(
                                                "parameter `{k}` is a list with a non-number in it"
                                            ))
                                        })
                                    })
                                    .collect::<Result<_, _>>()?,
                            ),
                            other => ParamValue::Number(other.as_f64().ok_or_else(|| {
                                CliError::Json(format!(
                                    "parameter `{k}` is neither a number nor a string"
                                ))
                            })?),
                        };
                        loss = loss.set(k, val)?;
                    }
                }
                inner
            }
            None => obj,
        };
        for (k, a) in ins {
            arrays.insert(k.clone(), json_array(a, k)?);
        }
    }
    for s in npy {
        let Some((k, path)) = s.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--input takes NAME=FILE.npy, got `{s}`"
            )));
        };
        arrays.insert(k.to_string(), read_npy(k, path)?);
    }
    if arrays.is_empty() {
        return Err(CliError::Usage(
            "no inputs: pass --inputs CASE.json or --input NAME=FILE.npy".into(),
        ));
    }
    let loss = apply_sets(loss, sets)?;
    let out = match dtype {
        Dtype::F64 => run_eval::<f64>(&loss, &arrays, grad, check_finite)?,
        Dtype::F32 => run_eval::<f32>(&loss, &arrays, grad, check_finite)?,
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn run_eval<T: Real>(
    loss: &Loss,
    arrays: &BTreeMap<String, ArrayD<f64>>,
    grad: bool,
    check_finite: bool,
) -> Result<Value, CliError> {
    let typed: Vec<(&str, ArrayD<T>)> = arrays
        .iter()
        .map(|(k, a)| (k.as_str(), a.mapv(T::from_f64)))
        .collect();
    let shapes: Vec<(&str, &[usize])> = typed.iter().map(|(k, a)| (*k, a.shape())).collect();
    let mut plan = compile::<T>(loss, &shapes)?;
    plan.set_check_finite(check_finite);
    let views: Vec<(&str, _)> = typed.iter().map(|(k, a)| (*k, a.view())).collect();
    let out = plan.value_and_grad(&views)?;
    let mut res = Map::new();
    res.insert("value".into(), json!(out.value.to_f64()));
    if let Some(v) = out.values() {
        // An unreduced loss (`reduction = none`): one value per group; `value` is their sum
        // weighted by the `seed` input (plain sum without it), the gradient that sum's.
        let data: Vec<f64> = v.iter().map(|x| x.to_f64()).collect();
        res.insert("values".into(), json!({"shape": v.shape(), "data": data}));
    }
    // A composite's named terms: each one's value and its weighted share of `value`.
    let terms: Map<String, Value> = out
        .terms()
        .map(|t| {
            let v = json!({"value": t.value.to_f64(), "weighted": t.weighted.to_f64()});
            (t.name.to_string(), v)
        })
        .collect();
    if !terms.is_empty() {
        res.insert("terms".into(), Value::Object(terms));
    }
    if grad {
        let mut g = Map::new();
        for (name, arr) in out.grads() {
            let data: Vec<f64> = arr.iter().map(|x| x.to_f64()).collect();
            g.insert(
                name.to_string(),
                json!({"shape": arr.shape(), "data": data}),
            );
        }
        res.insert("grad".into(), Value::Object(g));
    }
    if check_finite {
        // A non-finite value is already an error; the gradients are checked here (a read the
        // library leaves to its caller), on the same call's buffers.
        plan.check_grads_finite()?;
    }
    Ok(Value::Object(res))
}

fn graph(
    file: &str,
    stage: StageArg,
    dot: bool,
    sets: &[String],
    with: &[String],
    shape: Option<&[usize]>,
) -> Result<ExitCode, CliError> {
    let loss = apply_sets(load(file)?, sets)?;
    let stage = match stage {
        StageArg::Parsed => Stage::Parsed,
        StageArg::Autodiff => Stage::Autodiff,
        StageArg::Optimised => Stage::Optimised,
        StageArg::Fused => Stage::Fused,
    };
    for w in with {
        if !loss
            .inputs()
            .iter()
            .any(|i| &i.name == w && i.default.is_some())
        {
            return Err(CliError::Usage(format!(
                "--with `{w}`: `{}` has no optional input of that name",
                loss.name()
            )));
        }
    }
    let absent: Vec<usize> = loss
        .inputs()
        .iter()
        .enumerate()
        .filter(|(_, i)| i.default.is_some() && !with.contains(&i.name))
        .map(|(k, _)| k)
        .collect();
    match (shape, stage) {
        (Some(shape), Stage::Fused) => {
            let given: Vec<(&str, &[usize])> = loss
                .inputs()
                .iter()
                .enumerate()
                .filter(|(k, _)| !absent.contains(k))
                .map(|(_, i)| (i.name.as_str(), shape))
                .collect();
            println!("{}", loss.render_for_shapes(&given, dot)?.trim_end());
        }
        (Some(_), _) => {
            return Err(CliError::Usage(
                "--shape goes with --stage fused (the other stages do not depend on sizes)".into(),
            ))
        }
        (None, _) => println!("{}", loss.render(stage, &absent, dot)?.trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn bench(
    file: &str,
    shape: &[usize],
    dtype: Dtype,
    threads: usize,
    iters: usize,
    sets: &[String],
    live: &[String],
    via: Via,
) -> Result<ExitCode, CliError> {
    let live: Vec<&str> = live.iter().map(|s| s.trim()).collect();
    let loss = apply_sets(load(file)?, sets)?.live(&live)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| CliError::Usage(format!("--threads {threads}: {e}")))?;
    let out = pool.install(|| match (via, dtype) {
        (Via::Plan, Dtype::F32) => run_bench::<f32>(&loss, shape, threads, iters),
        (Via::Plan, Dtype::F64) => run_bench::<f64>(&loss, shape, threads, iters),
        (Via::Burn, _) => via_burn(&loss, shape, dtype == Dtype::F64, iters),
    })?;
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "burn")]
fn via_burn(loss: &Loss, shape: &[usize], f64_: bool, iters: usize) -> Result<Value, CliError> {
    let mut out = via_burn::bench(loss, shape, f64_, iters)?;
    out["threads"] = json!(rayon::current_num_threads());
    Ok(out)
}

#[cfg(not(feature = "burn"))]
fn via_burn(_: &Loss, _: &[usize], _: bool, _: usize) -> Result<Value, CliError> {
    Err(CliError::Usage(
        "`--via burn` needs lossc built with the burn adapter: `cargo run --release -p lossc --features burn -- bench ...`".into(),
    ))
}

/// The median and minimum milliseconds of `iters` calls of `step` after two untimed ones, and
/// the value the last call returned.
fn time_calls(
    iters: usize,
    mut step: impl FnMut() -> Result<f64, CliError>,
) -> Result<(f64, f64, f64), CliError> {
    for _ in 0..2 {
        step()?;
    }
    let mut times = Vec::with_capacity(iters);
    let mut value = 0.0;
    for _ in 0..iters {
        let t = Instant::now();
        value = step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0], value))
}

fn run_bench<T: Real>(
    loss: &Loss,
    shape: &[usize],
    threads: usize,
    iters: usize,
) -> Result<Value, CliError> {
    let mut rng = Rng::new(7);
    // Inputs it makes plus the plan's gradients, estimated before anything is allocated.
    let buffers = loss.inputs().iter().filter(|i| i.default.is_none()).count()
        + loss.inputs().iter().filter(|i| i.diff).count();
    let needed = losslang::internals::memory::bytes(shape, std::mem::size_of::<T>())
        .and_then(|b| b.checked_mul(buffers as u64));
    losslang::internals::memory::ensure_fits(
        &format!(
            "`lossc bench` of `{}` at shape {shape:?} ({buffers} buffers)",
            loss.name()
        ),
        needed,
    )?;
    let n: usize = shape.iter().product();
    let mut arrays: Vec<(String, ArrayD<T>)> = Vec::new();
    for inp in loss.inputs() {
        if inp.default.is_some() {
            continue;
        }
        let data: Vec<T> = if inp.diff {
            (0..n).map(|_| T::from_f64(2.0 * rng.normal())).collect()
        } else {
            (0..n)
                .map(|_| T::from_f64(if rng.uniform() < 0.3 { 1.0 } else { 0.0 }))
                .collect()
        };
        arrays.push((
            inp.name.clone(),
            ArrayD::from_shape_vec(IxDyn(shape), data)
                .map_err(|e| CliError::Usage(format!("--shape {shape:?}: {e}")))?,
        ));
    }
    let shapes: Vec<(&str, &[usize])> = arrays.iter().map(|(k, _)| (k.as_str(), shape)).collect();
    let t0 = Instant::now();
    let mut plan = compile::<T>(loss, &shapes)?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let views: Vec<(&str, _)> = arrays.iter().map(|(k, a)| (k.as_str(), a.view())).collect();
    let (median, min, value) = time_calls(iters.max(1), || {
        Ok(plan.value_and_grad(&views)?.value.to_f64())
    })?;
    let bytes = ((arrays.len() + plan.grad_inputs().len()) * n * std::mem::size_of::<T>()) as f64;
    Ok(json!({
        "loss": loss.name(),
        "dtype": T::NAME,
        "shape": shape,
        "elements": n,
        "threads": threads,
        "iters": iters.max(1),
        "median_ms": median,
        "min_ms": min,
        "passes": plan.passes(),
        "effective_gb_per_s": bytes / (median * 1e-3) / 1e9,
        "compile_ms": compile_ms,
        "executor": plan.executor().name(),
        "instruction_set": plan.instruction_set().name(),
        "kernel_loops": losslang::internals::KERNEL_LOOPS,
        "pass_executors": plan.pass_info().iter().map(|p| p.executor.name()).collect::<Vec<_>>(),
        "pass_unrolled": plan.pass_info().iter().map(|p| p.unrolled).collect::<Vec<_>>(),
        "pass_kernels": plan.pass_info().iter().map(|p| p.kernel.name()).collect::<Vec<_>>(),
        "fallback": plan.fallback_reason(),
        "buffer_bytes": plan.buffer_bytes(),
        "value": value,
    }))
}

fn explain(code: Option<&str>) -> Result<ExitCode, CliError> {
    use losslang::diagnostics::Code;
    match code {
        None => {
            for c in Code::ALL {
                println!("{}  {}", c.as_str(), c.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(text) => match Code::parse(text) {
            Some(c) => {
                println!("{}: {}\n\n{}", c.as_str(), c.summary(), c.explanation());
                Ok(ExitCode::SUCCESS)
            }
            None => Err(CliError::Usage(format!(
                "no diagnostic code `{text}`; `lossc explain` lists them (E0001 to {})",
                Code::ALL.last().map_or("", |c| c.as_str())
            ))),
        },
    }
}

fn list() -> Result<ExitCode, CliError> {
    let lib = Library::standard();
    for name in lib.names() {
        let loss = lib.get(name)?;
        let sig = loss.signature();
        let ins: Vec<String> = sig
            .inputs
            .iter()
            .map(|i| {
                let mut s = format!("{}: {}", i.name, sig.shape_text(i));
                if i.diff {
                    s.push_str(" diff");
                }
                if let Some(d) = i.default {
                    s.push_str(&format!(" = {d}"));
                }
                s
            })
            .collect();
        let ps: Vec<String> = sig
            .params
            .iter()
            .map(|p| {
                let range = p
                    .range
                    .map(|r| format!(" in [{}, {}]", r.lo, r.hi))
                    .unwrap_or_default();
                match &p.ty {
                    // One value per element of an axis: `weight: [C] = 1`.
                    losslang::ParamKind::Vector { axis } => {
                        format!("{}: [{axis}]{range} = {}", p.name, p.default)
                    }
                    _ => format!("{}{range} = {}", p.name, p.default),
                }
            })
            .collect();
        println!("{name}({})  {}", ins.join(", "), ps.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
