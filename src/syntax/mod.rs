//! Surface syntax: the [`ast`], the pest-based [`parse`]r and [`diag`]nostics.
//! In: source text. Out: an AST with spans, and diagnostics. Never here: names, types, graphs.

pub mod ast;
pub mod diag;
pub mod parse;

/// Runs `f`, first moving to a fresh 1 MiB heap segment of stack if less than 64 KiB is left.
/// Wraps each level of the front end's recursion over expressions (whose depth the parser and
/// the checker bound), so that even unoptimised builds with large frames, on threads with small
/// stacks, answer with a diagnostic instead of overflowing. pest guards its own recursion alike.
pub(crate) fn grow_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(64 * 1024, 1024 * 1024, f)
}
