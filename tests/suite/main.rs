//! The library's test suite as one test binary: each file below was a test crate of its own,
//! and each crate compiled and linked its own copy of the engine (release builds share no
//! generic code between crates), 13 links of the same code. `tests/alloc.rs` (a counting global
//! allocator) and `tests/hostile.rs` (a silent panic hook) stay binaries of their own: each
//! changes process-wide state.

#[path = "../common/mod.rs"]
mod common;

mod broadcast_grad;
mod deep;
mod determinism;
mod diagnostics;
mod executors;
mod golden;
mod half;
mod labels;
mod limits;
mod live_params;
mod operators;
mod plan_shapes;
mod shape_errors;
mod split;
mod stress;
mod terms;
mod user_files;
