//! Diagnostics: a code, a message, a primary span with a label, and an optional help line.
//! Sources live in a [`SourceMap`]; rendering uses `codespan-reporting` so every message shows
//! `file:line:col` and the source line with the span marked. Stages push diagnostics into a
//! [`Diagnostics`] list and keep going: nothing here stops at the first error.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::{Files, SimpleFiles};
use codespan_reporting::term;

use crate::syntax::ast::Span;

pub type FileId = usize;

/// Every error code the front end emits, with a one-line meaning (`lossc check --explain` lists them).
pub const CODES: &[(&str, &str)] = &[
    ("E0001", "syntax error"),
    ("E0002", "unknown name"),
    ("E0003", "unknown function"),
    ("E0004", "wrong number of arguments"),
    ("E0005", "unknown parameter or keyword argument"),
    ("E0006", "an argument lacks an axis the callee declares"),
    ("E0007", "unknown axis name"),
    ("E0008", "reduction over an axis the value does not have"),
    (
        "E0009",
        "a differentiable input does not reach the result through differentiable operations",
    ),
    ("E0010", "a loss declares no differentiable input"),
    ("E0011", "duplicate definition"),
    ("E0012", "wrong kind of value (tensor, axis list or option)"),
    ("E0013", "invalid parameter value"),
    ("E0014", "a `use` names a file that cannot be found"),
    ("E0015", "recursive function or loss call"),
    ("E0016", "the result of a loss is not a scalar"),
    ("E0017", "an input's axes are not in the loss's axis order"),
    ("E0018", "brackets nest too deeply"),
    ("E0019", "a number literal is out of range"),
    ("E0020", "an input's value range is invalid"),
    ("E0021", "expressions nest too deeply through inlined helpers"),
];

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: &'static str, span: Span, message: impl Into<String>) -> Self {
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
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
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
                .with_code(d.code)
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
                        d.code,
                        d.message,
                        sources.name(d.span.file),
                        l,
                        c
                    ));
                }
            }
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
                d.code,
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
