//! The standard library: every `losses/*.loss` file, embedded at build time (see `build.rs`),
//! and the [`Resolver`] that finds `use`d files beside the using file first, then here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{compile_error, Loss};
use crate::error::{Error, Result};
use crate::ir::program::{Program, Resolver};
use crate::syntax::diag::{suggest, Diagnostics};

include!(concat!(env!("OUT_DIR"), "/stdlib.rs"));

/// The standard loss library compiled into the crate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Library;

impl Library {
    pub fn standard() -> Library {
        Library
    }

    /// The source of a library file by name (`"dice"`).
    pub fn source(&self, name: &str) -> Option<&'static str> {
        STDLIB.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// Names of the library files that define a loss of the same name (helper files excluded).
    pub fn names(&self) -> Vec<&'static str> {
        STDLIB
            .iter()
            .filter(|(n, s)| {
                s.lines().any(|l| {
                    l.trim_start()
                        .strip_prefix("loss ")
                        .is_some_and(|r| r.trim_start().starts_with(n))
                })
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// A standard loss by name, with default parameters.
    pub fn get(&self, name: &str) -> Result<Loss> {
        let Some(src) = self.source(name) else {
            let hint = suggest(name, self.names())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!("; the library has {}", self.names().join(", ")));
            return Err(Error::UnknownLoss {
                name: name.to_string(),
                hint,
            });
        };
        let file = format!("losses/{name}.loss");
        let mut diags = Diagnostics::default();
        let prog = Program::load(&file, src, None, self, &mut diags);
        if !diags.is_empty() {
            return Err(compile_error(&diags, &prog));
        }
        let def = prog
            .root_losses()
            .into_iter()
            .find(|d| prog.loss(*d).is_some_and(|l| l.name.name == name))
            .ok_or_else(|| Error::UnknownLoss {
                name: name.to_string(),
                hint: format!(": losses/{name}.loss defines no loss `{name}`"),
            })?;
        Loss::from_program(Arc::new(prog), def)
    }
}

impl Resolver for Library {
    fn resolve(
        &self,
        name: &str,
        from_dir: Option<&Path>,
    ) -> Option<(String, String, Option<PathBuf>)> {
        if let Some(dir) = from_dir {
            let p = dir.join(format!("{name}.loss"));
            if let Ok(src) = super::read_source(&p) {
                return Some((p.display().to_string(), src, Some(dir.to_path_buf())));
            }
        }
        self.source(name)
            .map(|s| (format!("losses/{name}.loss"), s.to_string(), None))
    }
}
