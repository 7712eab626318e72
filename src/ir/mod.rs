//! The typed intermediate representation: the hash-consed [`graph`], program loading
//! ([`program`]: files and `use`), [`signature`]s (axes, inputs, parameters), [`lower`]ing
//! (name resolution, type and shape checking, inlining of [`call`]s) from the AST to the graph,
//! the whole-graph [`check`]s (differentiability), and the checks of uncalled [`helpers`].

pub mod call;
pub mod check;
pub mod graph;
pub mod helpers;
pub mod lower;
pub mod program;
pub mod signature;
