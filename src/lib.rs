//! # losslang
//!
//! Segmentation losses written as small declarative `.loss` files, checked at compile time
//! (syntax, named-axis shapes, differentiability), differentiated symbolically in reverse mode,
//! optimised, and evaluated on CPU buffers.
//!
//! ```
//! use losslang::{Library, ndarray::ArrayD};
//!
//! let loss = Library::standard().get("dice")?.set("reduction", "image")?;
//! let shape = [2usize, 1, 4, 4];
//! let mut plan = loss.compile::<f64>(&[("logits", &shape[..]), ("target", &shape[..])])?;
//! let logits = ArrayD::from_elem(shape.to_vec(), 0.5);
//! let target = ArrayD::from_elem(shape.to_vec(), 1.0);
//! let out = plan.value_and_grad(&[("logits", logits.view()), ("target", target.view())])?;
//! assert!(out.value > 0.0 && out.value < 1.0);
//! assert_eq!(out.grad("logits").shape(), &shape[..]);
//! # Ok::<(), losslang::Error>(())
//! ```
//!
//! A loss of your own, from source:
//!
//! ```
//! let src = r#"
//! loss l2 {
//!     input logits: [B, C, ..S] diff
//!     input target: [B, C, ..S]
//!     return mean((sigmoid(logits) - target)^2)
//! }"#;
//! let loss = losslang::Loss::from_source(src)?;
//! let report = loss.gradcheck(&Default::default())?;
//! assert!(report.passed);
//! # Ok::<(), losslang::Error>(())
//! ```
//!
//! The pipeline (see ARCHITECTURE.md): `syntax` → `ir` → `autodiff` → `optimise` → `exec` →
//! [`api`]. Only [`api`], [`error`] and the re-exports below are public: the stages are the
//! crate's own business.

#![deny(clippy::undocumented_unsafe_blocks)]

/// The README's code blocks, compiled and run as doc-tests (its Rust example is a complete
/// program: `cargo test` keeps it true).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod api;
pub(crate) mod autodiff;
pub mod error;
pub(crate) mod exec;
pub(crate) mod ir;
pub(crate) mod ops;
pub(crate) mod optimise;
pub(crate) mod syntax;

#[cfg(feature = "half")]
pub use api::HalfFloat;
pub use api::{
    DeepSupervision, DeepValue, DeepWeights, ExecutorKind, Finished, GradcheckOptions,
    GradcheckReport, Isa, Kernel, Library, Loss, Output, PassInfo, Plan, Resize, Stage, Term,
    TermValue, TrainingLoss,
};
pub use error::{CompileDiagnostic, Error, Result};
/// The `half` crate, for [`TrainingLoss::value_and_grad_into_half`]'s element types.
#[cfg(feature = "half")]
pub use half;
pub use ir::graph::AxisSpace;
pub use ir::lower::{InputSpec, ParamKind, ParamSpec, ParamValue, Signature};
pub use ndarray;
pub use ops::math::Real;
pub use syntax::ast::{Span, ValueRange};

/// The diagnostic codes of the front end and the limits it enforces on source text.
pub mod diagnostics {
    pub use crate::syntax::diag::Code;
    pub use crate::syntax::parse::MAX_NESTING;
}

/// Not API: constants the crate's integration tests use to size their problems (the VM's block
/// and chunk lengths, the fusion cap). They may change without notice.
#[doc(hidden)]
pub mod internals {
    /// The deterministic generator the gradient check draws its inputs from (`lossc bench` and
    /// the tests draw theirs from it too).
    pub use crate::api::gradcheck::Rng;
    /// The memory guard (`lossc bench` sizes its inputs with it before allocating them).
    pub use crate::api::memory;
    /// How the native kernels' loops were compiled: `interleaved` when the build had the flag of
    /// `.cargo/config.toml`, `plain` when a RUSTFLAGS variable replaced it (`build.rs`).
    pub const KERNEL_LOOPS: &str = env!("LOSSLANG_KERNEL_LOOPS");
    pub use crate::exec::vm::{BLOCK, CHUNK_BLOCKS};
    /// The distance-transform kernels with explicit spacing, for `benches/spatial.rs` (the `edt`
    /// op uses unit spacing).
    pub use crate::ops::edt::{edt_images, field_images};
    pub use crate::optimise::fuse::MAX_KERNEL_NODES;
}
