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
//! The pipeline (see ARCHITECTURE.md): [`syntax`] → [`ir`] → [`autodiff`] → [`optimise`] →
//! [`exec`] → [`api`].

pub mod api;
pub mod autodiff;
pub mod error;
pub mod exec;
pub mod ir;
pub mod ops;
pub mod optimise;
pub mod syntax;

pub use api::{
    ExecutorKind, GradcheckOptions, GradcheckReport, Library, Loss, Output, Plan, Stage,
};
pub use error::{Error, Result};
pub use ir::lower::ParamValue;
pub use ndarray;
