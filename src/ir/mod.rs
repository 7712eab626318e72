//! The typed intermediate representation: the hash-consed [`graph`], program loading
//! ([`program`]: files and `use`), and [`lower`]ing (name resolution, type and shape checking,
//! inlining) from the AST to the graph.

pub mod graph;
pub mod helpers;
pub mod lower;
pub mod program;
