//! The typed errors of the embedding API. Compile errors carry rendered diagnostics (with
//! `file:line:col` and the marked source line); tensor errors name the input, the expected and
//! the received shape.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Syntax, name, type, shape or differentiability errors in `.loss` source.
    #[error("{rendered}")]
    Compile {
        /// Every diagnostic, rendered with source excerpts.
        rendered: String,
        /// One `file:line:col: error[CODE]: message` line per diagnostic.
        short: String,
        /// The error codes, in order.
        codes: Vec<&'static str>,
        /// Every diagnostic as data, in order (at most `MAX_DIAGNOSTICS`; `rendered` counts
        /// the rest).
        diagnostics: Vec<CompileDiagnostic>,
    },
    #[error("unknown loss `{name}`{hint}")]
    UnknownLoss { name: String, hint: String },
    #[error("unknown input `{name}`: `{loss}` takes {expected}")]
    UnknownInput {
        name: String,
        loss: String,
        expected: String,
    },
    #[error("missing input `{name}` of `{loss}` (shape {expected})")]
    MissingInput {
        name: String,
        loss: String,
        expected: String,
    },
    #[error("input `{input}` is given twice")]
    DuplicateInput { input: String },
    /// A training loss (an adapter's) needs exactly one differentiable input.
    #[error("`{loss}` has {count} differentiable inputs; a training loss takes losses with one")]
    DiffInputs { loss: String, count: usize },
    #[error("input `{input}`: {detail} (expected shape {expected}, received {received:?})")]
    Shape {
        input: String,
        expected: String,
        received: Vec<usize>,
        detail: String,
    },
    #[error("parameter `{name}` is not declared by `{loss}`; {declares}{hint}")]
    UnknownParam {
        name: String,
        loss: String,
        /// What the loss declares, as a sentence.
        declares: String,
        /// ` (did you mean `x`?)` or empty.
        hint: String,
    },
    #[error("parameter `{name}` of `{loss}` {expected}; got {got}")]
    ParamValue {
        name: String,
        loss: String,
        /// What it takes, e.g. `is one of batch | image | class`.
        expected: String,
        got: String,
    },
    /// A parameter that cannot change without compiling again ([`crate::Loss::live`],
    /// [`crate::Plan::set_param`]).
    #[error("parameter `{name}` of `{loss}` cannot change without compiling again: {reason}")]
    NotLive {
        name: String,
        loss: String,
        reason: String,
    },
    #[error("axis `{axis}` of `{loss}` is not bound by any given input")]
    UnboundAxis { axis: String, loss: String },
    #[error("`{loss}` has {count} {what}; at most {max} are supported")]
    Limit {
        loss: String,
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("`{loss}` cannot be fused: {reason}")]
    NotFusable { loss: String, reason: String },
    /// Split-phase evaluation (`Plan::statistics`) of a loss that is not a function of
    /// per-image sums.
    #[error("`{loss}` cannot be split into per-image statistics: {reason}")]
    NotSplittable { loss: String, reason: String },
    #[error("input `{input}` holds a non-finite value ({value}) at flat index {index}; losses reject NaN and Inf inputs")]
    NonFinite {
        input: String,
        index: usize,
        value: f64,
    },
    /// The loss value came out NaN or infinite although every input was finite: a parameter
    /// (named here when it was set away from its default) or the inputs' values put the loss
    /// outside the range where it is defined. Reported instead of returning the value.
    #[error("the {what} of `{loss}` is {value} for finite inputs{}; check the parameters' ranges (`lossc list`)", if params.is_empty() { " with every parameter at its default".to_string() } else { format!(" with {}", params.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")) })]
    NonFiniteResult {
        loss: String,
        /// `value`, or `gradient of `logits`` (from [`crate::Plan::check_grads_finite`]).
        what: String,
        value: f64,
        /// The parameters set away from their defaults, by name, with their values.
        params: Vec<(String, String)>,
    },
    /// A window or order op's constant argument (a window size, sigma, scale, percentage) is
    /// out of its range; `params` are the parameters set away from their defaults.
    #[error("`{loss}`: `{op}` {detail}{}", if params.is_empty() { String::new() } else { format!(" (parameters set: {})", params.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")) })]
    OpArgument {
        loss: String,
        op: String,
        detail: String,
        params: Vec<(String, String)>,
    },
    /// An instruction-set name (parsed as an [`Isa`](crate::Isa)) that is none of the known ones.
    #[error(
        "unknown instruction set `{name}`: the known ones are avx512, avx2 and baseline (or base)"
    )]
    InstructionSet { name: String },
    /// An input given as class labels holds a value that is neither a class index of its axis
    /// nor the ignore value.
    #[error("input `{input}` holds the label {value} at index {index:?}, but its classes are 0..{classes} (axis `{axis}`) and the ignore value is {ignore}")]
    Label {
        input: String,
        /// The element's index in the input's own shape.
        index: Vec<usize>,
        value: f64,
        axis: String,
        classes: usize,
        ignore: f64,
    },
    /// The buffers a request needs exceed the memory available (estimated before allocating).
    #[error("{what} needs {} of memory, but only {} is available", needed.map_or("more than 16 EiB".to_string(), |n| format!("{n} bytes ({})", crate::api::memory::human(n))), available.map_or("an unknown amount".to_string(), |a| format!("{a} bytes ({})", crate::api::memory::human(a))))]
    OutOfMemory {
        what: String,
        /// Bytes needed (None: more than 2^64).
        needed: Option<u64>,
        available: Option<u64>,
    },
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One diagnostic of [`Error::Compile`], for tools that place it themselves (an editor, a
/// language server): where it points and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompileDiagnostic {
    /// `E0001` ... (`lossc explain CODE` describes it).
    pub code: &'static str,
    /// The source's name: its path, or the loss name for source given as text.
    pub file: String,
    /// 1-based line and column (in characters) of the first byte it points at.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What the marked span is (may be empty).
    pub label: String,
    pub help: Option<String>,
}
