//! Diagnostics: a code, a message, a primary span with a label, and an optional help line.
//! Sources live in a [`SourceMap`]; rendering uses `codespan-reporting` so every message shows
//! `file:line:col` and the source line with the span marked. Stages push diagnostics into a
//! [`Diagnostics`] list and keep going: nothing here stops at the first error.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::{Files, SimpleFiles};
use codespan_reporting::term;

use crate::syntax::ast::Span;

pub type FileId = usize;

macro_rules! codes {
    ($($c:ident: $summary:literal, $explain:literal;)*) => {
        /// Every error code the front end emits: one meaning each (`lossc explain CODE`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code { $($c),* }

        impl Code {
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$(Code::$c),*];
            /// `"E0009"`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$c => stringify!($c)),* }
            }
            /// One line: what the code means.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$c => $summary),* }
            }
            /// A few lines: when it is reported and how to fix it.
            pub fn explanation(self) -> &'static str {
                match self { $(Code::$c => $explain),* }
            }
            /// The code named `text` (`E0009`, `e0009` or `9`).
            pub fn parse(text: &str) -> Option<Code> {
                let t = text.trim().to_ascii_uppercase();
                let digits = t.strip_prefix('E').unwrap_or(&t);
                let t = format!("E{digits:0>4}");
                Code::ALL.iter().copied().find(|c| c.as_str() == t)
            }
        }
    };
}

codes! {
    E0001: "syntax error",
        "The text is not valid losslang at the marked token; the label lists what would be. Each `loss`, `fn` and `use` item is parsed on its own, so every broken item is reported.";
    E0002: "unknown name",
        "A name that is not an input, a parameter, a `let` binding or a helper's parameter. Axis names are written as lists: `sum(x, over = [S])`.";
    E0003: "unknown function",
        "A call to a name that is not an op of the op table, `mean`, or a `fn`/`loss` in scope. `use other` brings in the functions and losses of other.loss.";
    E0004: "wrong number of arguments",
        "An op, helper or loss called with a number of positional arguments it does not take (`max(a, b)` is elementwise; `max(x, over = [..])` reduces).";
    E0005: "unknown keyword argument",
        "A keyword argument the callee does not take: reductions take only `over`, ops none, losses their declared parameters.";
    E0006: "an argument lacks an axis the callee declares",
        "A loss called as a function receives a tensor without one of the axes its input declares.";
    E0007: "unknown axis name",
        "An axis list names an axis no input of the loss declares.";
    E0008: "reduction over an axis the value does not have",
        "`sum(x, over = [A])` where `x` has no axis `A`: reduce over axes the value has.";
    E0009: "a differentiable input does not reach the result through differentiable operations",
        "An input marked `diff` reaches the result only through comparisons, `sign`, `stop_grad` or `where`'s condition, which have no derivative, or not at all. Use smooth ops, or drop `diff`.";
    E0010: "a loss declares no differentiable input",
        "Mark the input the gradient is taken with respect to: `input logits: [B, C, ..S] diff`.";
    E0011: "duplicate definition",
        "The same name defined twice in one scope: two inputs, parameters, functions or losses, or an axis repeated in one shape or axis list.";
    E0012: "wrong kind of value",
        "A tensor, an axis list and an option are different kinds: e.g. an axis list where an operand is expected, or `over =` given a tensor.";
    E0013: "invalid parameter value",
        "A parameter set to a value its declaration does not allow: not one of its options, not an integer for `int`, not finite, or not a compile-time number.";
    E0014: "a `use` names a file that cannot be found",
        "`use name` looks for name.loss beside the file that uses it, then in the standard library.";
    E0015: "recursive function or loss call",
        "Helpers and losses are inlined where they are called, so a function cannot call itself, directly or through others.";
    E0016: "the result of a loss is not a scalar",
        "A loss returns one number: reduce what is left, e.g. `mean(x)` or `sum(x, over = [B, C, S])`.";
    E0017: "an input's axes are not in the loss's axis order",
        "Every input lists its axes in the same relative order as the inputs before it (the loss's axis order), e.g. `[B, C, ..S]` and `[B, ..S]`, never `[C, B]`.";
    E0018: "brackets nest too deeply",
        "Brackets `(`, `[` and `{` together nest at most 128 deep (`diagnostics::MAX_NESTING`); the text is refused before parsing. Split the expression with `let` bindings.";
    E0019: "a number literal is out of range",
        "A literal beyond the largest finite f64 (about 1.8e308), which would silently become infinity.";
    E0020: "an input's value range is invalid",
        "`in [lo, hi]` needs finite lo < hi; `in int [lo, hi]` integers lo <= hi.";
    E0021: "expressions nest too deeply through inlined helpers",
        "Lowering inlines helpers into one another; the nesting of expressions across them is bounded (512 levels). Bind intermediate values with `let`.";
    E0022: "an axis is declared as a pack in one input and as a single axis in another",
        "Write each axis the same way in every input: `..S` everywhere or `S` everywhere.";
    E0023: "a loss uses more than 15 axes",
        "A loss's inputs may declare at most 15 distinct axes.";
    E0024: "an input has more than one pack axis",
        "At most one `..` axis per input: it stands for every trailing spatial dimension.";
    E0025: "calls nest too deeply",
        "Helpers and losses calling one another more than 64 levels deep.";
    E0026: "a window argument is not a compile-time constant",
        "Window sizes and sigmas of window ops (`gaussian_filter(x, window, sigma)`, `valid_window(x, window)`) are numbers known when the loss compiles: literals, parameters, or arithmetic on them.";
    E0027: "a window op in a loss without spatial axes",
        "Window ops (`gaussian_filter`, `max_pool3`, `edt`, `erode`, ...) work per image over the loss's spatial axes: its last axis must be a pack, as in `input logits: [B, C, ..S] diff`.";
    E0028: "a loop bound is not a compile-time whole number",
        "`for i in lo..hi { ... }` is unrolled when the loss compiles: lo and hi are literals, `int` parameters, or arithmetic on them, and whole numbers.";
    E0029: "compile-time loops repeat their bodies too often",
        "Every iteration of a `for` loop is copied into the graph; one loss may make at most 10 000 copies in all (nested loops multiply).";
    E0031: "the loss's graph grows too large",
        "Helpers and losses are inlined; one loss may build at most 1 000 000 graph nodes (helpers calling others several times with different arguments grow exponentially).";
    E0030: "a constant argument of a window or order op is out of its range",
        "Windows are odd whole numbers (1 to 4095), sigmas finite and positive, scales whole numbers from 0 to 16, percentages in [0, 100], axes spatial axes (README: window ops).";
}

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            span,
            label: String::new(),
            help: None,
        }
    }
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The sources a compilation has read, addressed by [`FileId`].
#[derive(Clone, Default)]
pub struct SourceMap {
    files: SimpleFiles<String, String>,
    names: Vec<String>,
}

impl SourceMap {
    pub fn add(&mut self, name: &str, source: &str) -> FileId {
        self.names.push(name.to_string());
        self.files.add(name.to_string(), source.to_string())
    }
    pub fn name(&self, id: FileId) -> &str {
        &self.names[id]
    }
    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> (usize, usize) {
        let line = self.files.line_index(file, offset).unwrap_or(0);
        let col = self.files.column_number(file, line, offset).unwrap_or(1);
        (line + 1, col)
    }
}

/// A list of diagnostics with the sources needed to render them.
#[derive(Clone, Default)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
    /// Diagnostics past [`MAX_DIAGNOSTICS`], counted and not kept.
    pub more: usize,
}

/// The most diagnostics one compile keeps: a file with ten thousand unknown names gets the
/// first of them and a count of the rest, not a gigabyte of messages.
pub const MAX_DIAGNOSTICS: usize = 100;

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        if self.items.len() >= MAX_DIAGNOSTICS {
            self.more += 1;
            return;
        }
        // The same error reached twice (e.g. a helper inlined at two call sites) is shown once.
        if !self
            .items
            .iter()
            .any(|e| e.code == d.code && e.span == d.span && e.message == d.message)
        {
            self.items.push(d);
        }
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Renders every diagnostic as text: `error[E0003]: ...`, `┌─ file:line:col`, the source
    /// line with the span underlined, and `= help: ...`.
    pub fn render(&self, sources: &SourceMap) -> String {
        let config = term::Config::default();
        let mut out = String::new();
        for d in &self.items {
            let mut cs = CsDiagnostic::error()
                .with_code(d.code.as_str())
                .with_message(&d.message)
                .with_labels(vec![
                    Label::primary(d.span.file, d.span.start..d.span.end).with_message(&d.label)
                ]);
            if let Some(h) = &d.help {
                cs = cs.with_notes(vec![format!("help: {h}")]);
            }
            match term::emit_into_string(&config, &sources.files, &cs) {
                Ok(s) => out.push_str(&s),
                Err(_) => {
                    let (l, c) = sources.line_col(d.span.file, d.span.start);
                    out.push_str(&format!(
                        "error[{}]: {}\n --> {}:{}:{}\n",
                        d.code.as_str(),
                        d.message,
                        sources.name(d.span.file),
                        l,
                        c
                    ));
                }
            }
        }
        if self.more > 0 {
            out.push_str(&format!("... and {} more errors\n", self.more));
        }
        out
    }

    /// One line per diagnostic: `file:line:col: error[CODE]: message`.
    pub fn short(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        for d in &self.items {
            let (l, c) = sources.line_col(d.span.file, d.span.start);
            out.push_str(&format!(
                "{}:{}:{}: error[{}]: {}\n",
                sources.name(d.span.file),
                l,
                c,
                d.code.as_str(),
                d.message
            ));
        }
        out
    }
}

/// The closest name within an edit distance of about a third of its length, for "did you mean".
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        if d <= (name.len().max(c.len()) / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}
