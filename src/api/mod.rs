//! The embedding API. In: `.loss` sources (the standard library compiled into the crate, a file,
//! or a string), parameter values and tensor shapes. Out: compiled [`Plan`]s that evaluate the
//! loss and its gradients on ndarray views, with typed [`Error`]s.
//!
//! The pipeline behind [`Loss::compile`]: lower (check) → stabilise/simplify → reverse-mode
//! autodiff → simplify/stabilise → bind axis sizes → executor. Never here: op semantics or
//! evaluation loops.

mod deep;
pub mod gradcheck;
pub mod library;
mod loss;
#[doc(hidden)]
pub mod memory;
mod plan;
mod render;
mod session;
mod shape;
mod split;

pub use crate::exec::{ExecutorKind, Isa, Kernel, PassInfo};
pub use deep::{DeepSupervision, DeepValue, DeepWeights, Resize};
pub use loss::{Loss, Stage};
pub use plan::{Finished, Output, Plan, Term, MAX_OTHER_SHAPES};
#[cfg(feature = "half")]
pub use session::HalfFloat;
pub use session::{TermValue, TrainingLoss};
pub use shape::{Binding, InputForm};

use crate::error::Error;
use crate::ir::program::Program;
use crate::syntax::diag::Diagnostics;

pub use gradcheck::{GradcheckOptions, GradcheckReport, Trial};
pub use library::Library;

fn compile_error(d: &Diagnostics, prog: &Program) -> Error {
    Error::Compile {
        rendered: d.render(&prog.sources),
        short: d.short(&prog.sources),
        codes: d.items.iter().map(|x| x.code.as_str()).collect(),
        diagnostics: d
            .items
            .iter()
            .map(|x| {
                let (line, column) = prog.sources.line_col(x.span.file, x.span.start);
                crate::error::CompileDiagnostic {
                    code: x.code.as_str(),
                    file: prog.sources.name(x.span.file).to_string(),
                    line,
                    column,
                    message: x.message.clone(),
                    label: x.label.clone(),
                    help: x.help.clone(),
                }
            })
            .collect(),
    }
}

/// The largest `.loss` file read (bytes).
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// Reads a `.loss` source: a regular file of at most [`MAX_SOURCE_BYTES`] (a FIFO, a device or
/// a directory is refused at once instead of blocking or reading without end).
pub(crate) fn read_source(path: &std::path::Path) -> crate::error::Result<String> {
    let io = |message: String| Error::Io {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| io(e.to_string()))?;
    if !meta.is_file() {
        return Err(io("not a regular file".into()));
    }
    if meta.len() > MAX_SOURCE_BYTES {
        return Err(io(format!(
            "{} bytes, more than the {MAX_SOURCE_BYTES} a .loss file may have",
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| io(e.to_string()))
}

pub use crate::exec::MAX_INPUTS;
/// Most differentiable inputs a loss may declare.
pub const MAX_GRADS: usize = 8;
