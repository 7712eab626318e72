//! Surface syntax: the [`ast`], the pest-based [`parse`]r and [`diag`]nostics.
//! In: source text. Out: an AST with spans, and diagnostics. Never here: names, types, graphs.

pub mod ast;
pub mod diag;
pub mod parse;
