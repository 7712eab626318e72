//! Loading: a root `.loss` file and every file it `use`s (transitively), parsed, with a name
//! scope per file (its own `fn`s and `loss`es plus those of the files it uses). Files are found
//! by a [`Resolver`]: the directory of the file that uses them first, then the standard library
//! compiled into the crate.
//!
//! In: a root source and a resolver. Out: a [`Program`] and diagnostics. Never here: types,
//! shapes or graphs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::syntax::ast::{self, Span};
use crate::syntax::diag::{Code, Diagnostic, Diagnostics, FileId, SourceMap};
use crate::syntax::parse::parse_file;

/// A named definition visible in a file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Def {
    Fn(FileId, usize),
    Loss(FileId, usize),
}

/// Finds the source of `use name` from a file: returns a display name and the text.
pub trait Resolver {
    fn resolve(
        &self,
        name: &str,
        from_dir: Option<&Path>,
    ) -> Option<(String, String, Option<PathBuf>)>;
}

#[derive(Clone, Default)]
pub struct Program {
    pub sources: SourceMap,
    pub files: Vec<ast::File>,
    /// The directory each file was read from (None for built-in sources).
    pub dirs: Vec<Option<PathBuf>>,
    pub scopes: Vec<HashMap<String, Def>>,
}

impl Program {
    /// Parses `root` and everything it uses. Errors (syntax, missing files, duplicate
    /// definitions) are collected in `diags`; the program holds whatever did parse.
    pub fn load(
        root_name: &str,
        root_src: &str,
        root_dir: Option<PathBuf>,
        resolver: &dyn Resolver,
        diags: &mut Diagnostics,
    ) -> Program {
        let mut p = Program::default();
        let mut by_name: HashMap<String, FileId> = HashMap::new();
        let root = p.add_file(root_name, root_src, root_dir, diags);
        by_name.insert(root_name.to_string(), root);
        let mut queue = vec![root];
        // Per file: the files it uses, each with the `use` that names it.
        let mut uses: Vec<Vec<(FileId, Span)>> = vec![vec![]];
        while let Some(f) = queue.pop() {
            let wanted: Vec<ast::Ident> = p.files[f].uses.clone();
            for u in wanted {
                let dir = p.dirs[f].clone();
                match resolver.resolve(&u.name, dir.as_deref()) {
                    Some((name, src, d)) => {
                        let id = match by_name.get(&name) {
                            Some(&id) => id,
                            None => {
                                let id = p.add_file(&name, &src, d, diags);
                                by_name.insert(name, id);
                                uses.push(vec![]);
                                queue.push(id);
                                id
                            }
                        };
                        uses[f].push((id, u.span));
                    }
                    None => diags.push(
                        Diagnostic::new(Code::E0014, u.span, format!("cannot find `{}.loss`", u.name))
                            .label("no such file")
                            .help(format!(
                                "`use {}` looks for `{}.loss` beside this file, then in the standard library",
                                u.name, u.name
                            )),
                    ),
                }
            }
        }
        // Scopes: own definitions first, then those of used files (own ones win). Two used
        // files defining one name the file does not define itself is an error at the second
        // `use`, naming both definitions: never a silent pick.
        for (f, used) in uses.iter().enumerate() {
            let own = p.own_defs(f, diags);
            let mut scope = own.clone();
            let mut from: HashMap<String, FileId> = HashMap::new();
            for &(u, span) in used {
                let mut theirs: Vec<(String, Def)> = p
                    .own_defs(u, &mut Diagnostics::default())
                    .into_iter()
                    .collect();
                theirs.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, def) in theirs {
                    if own.contains_key(&name) {
                        continue;
                    }
                    match from.get(&name) {
                        Some(&first) if first != u => diags.push(
                            Diagnostic::new(
                                Code::E0011,
                                span,
                                format!(
                                    "`{name}` is defined by both `{}` and `{}`",
                                    p.sources.name(first),
                                    p.sources.name(u)
                                ),
                            )
                            .label("second definition of the name comes from here")
                            .help(format!(
                                "define `{name}` in this file (its own definition wins), or rename one of them"
                            )),
                        ),
                        Some(_) => {}
                        None => {
                            from.insert(name.clone(), u);
                            scope.insert(name, def);
                        }
                    }
                }
            }
            p.scopes.push(scope);
        }
        p
    }

    fn add_file(
        &mut self,
        name: &str,
        src: &str,
        dir: Option<PathBuf>,
        diags: &mut Diagnostics,
    ) -> FileId {
        let id = self.sources.add(name, src);
        let file = parse_file(id, src, diags);
        self.files.push(file);
        self.dirs.push(dir);
        id
    }

    fn own_defs(&self, f: FileId, diags: &mut Diagnostics) -> HashMap<String, Def> {
        let mut m: HashMap<String, (Def, Span)> = HashMap::new();
        let file = &self.files[f];
        let items = file
            .fns
            .iter()
            .enumerate()
            .map(|(i, d)| (&d.name, Def::Fn(f, i)))
            .chain(
                file.losses
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (&d.name, Def::Loss(f, i))),
            );
        for (name, def) in items {
            if let Some((_, first)) = m.get(&name.name) {
                let (l, c) = self.sources.line_col(first.file, first.start);
                diags.push(
                    Diagnostic::new(
                        Code::E0011,
                        name.span,
                        format!("`{}` is defined twice", name.name),
                    )
                    .label("second definition")
                    .help(format!(
                        "the first definition is at line {l}, column {c}; rename one of them"
                    )),
                );
            } else {
                m.insert(name.name.clone(), (def, name.span));
            }
        }
        m.into_iter().map(|(k, (d, _))| (k, d)).collect()
    }

    pub fn loss(&self, def: Def) -> Option<&ast::LossDef> {
        match def {
            Def::Loss(f, i) => self.files.get(f).and_then(|x| x.losses.get(i)),
            Def::Fn(..) => None,
        }
    }
    pub fn func(&self, def: Def) -> Option<&ast::FnDef> {
        match def {
            Def::Fn(f, i) => self.files.get(f).and_then(|x| x.fns.get(i)),
            Def::Loss(..) => None,
        }
    }

    /// The losses defined in the root file (file 0), in order.
    pub fn root_losses(&self) -> Vec<Def> {
        (0..self.files.first().map_or(0, |f| f.losses.len()))
            .map(|i| Def::Loss(0, i))
            .collect()
    }
}
