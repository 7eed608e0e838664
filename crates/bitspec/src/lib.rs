//! # Bitspec — Ben's intent language
//!
//! Users declare schemas, contracts, policy packs, playbooks, migrations and
//! tests in `.bspec` files. This crate turns that text into a checked
//! [`ir::Program`] and evaluates it:
//!
//! ```text
//! source ──lexer──▶ tokens ──parser──▶ AST ──checker──▶ Program ──▶ CompiledPack
//!                                                          └──────▶ interp (reference)
//! ```
//!
//! ```
//! use ben_bitspec::{compile, Source};
//! let src = r#"
//! schema http.request v1 { path: string  status: int }
//! pack guard on http.request v1 {
//!   flag admin = path starts_with "/admin"
//!   flag error = status >= 500
//! }"#;
//! let out = compile(&[Source::new("guard.bspec", src)], &Default::default(), Default::default()).unwrap();
//! assert_eq!(out.program.packs[0].flags.len(), 2);
//! ```
//!
//! Guarantees (DESIGN.md §4):
//! * evaluation is deterministic, side-effect free and terminates: there are
//!   no loops or recursion in the language, flags and metas form a checked
//!   DAG, and each pack's cost is computed at build time and bounded
//!   ([`check::CheckOptions::max_pack_cost`]) — invariant 6;
//! * a flag's bit comes from the [`lock::BitTable`] and never changes or is
//!   reused — invariant 7;
//! * bad input never panics: every error is a [`Diagnostic`] with
//!   file:line:col, a caret, what was expected and a suggestion.
//!
//! Two evaluators share one semantics: [`interp`] (the reference, simple and
//! dynamically checked) and [`compile::CompiledPack`] (closures specialised
//! by type, slots resolved at build time, no allocation per record for the
//! common shapes). Property tests hold them equal.

pub mod ast;
pub mod canon;
pub mod check;
pub mod codec;
pub mod compile;
pub mod diag;
pub mod interp;
pub mod ir;
pub mod json;
pub mod lexer;
pub mod lock;
pub mod parser;
pub mod value;

pub use diag::{Diagnostic, Source as SourceFile, SourceMap, Span};
pub use value::{Type, Value};

/// One input file: display name and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// A successful compilation.
#[derive(Debug)]
pub struct Compiled {
    pub program: ir::Program,
    pub lock: lock::BitTable,
    pub changes: lock::LockChanges,
    pub map: SourceMap,
    /// Warnings (errors make compilation fail).
    pub warnings: Vec<Diagnostic>,
}

/// A failed compilation: every diagnostic, and the sources to render them.
#[derive(Debug)]
pub struct Failed {
    pub diagnostics: Vec<Diagnostic>,
    pub map: SourceMap,
}

impl Failed {
    pub fn render(&self) -> String {
        diag::render_all(&self.diagnostics, &self.map)
    }
}

/// Parses and checks all sources together and assigns flag bits from
/// `lock`. Parse errors in one file do not stop checking of the others.
pub fn compile(
    sources: &[Source],
    lock: &lock::BitTable,
    opts: check::CheckOptions,
) -> Result<Compiled, Failed> {
    let mut map = SourceMap::new();
    let mut files = Vec::new();
    let mut diags = Vec::new();
    for s in sources {
        let id = map.add(s.name.clone(), s.text.clone());
        let (f, d) = parser::parse(id, &s.text);
        files.push(f);
        diags.extend(d);
    }
    let parse_failed = diags.iter().any(Diagnostic::is_error);
    let (mut program, cd) = check::check(&files, opts);
    // After parse errors, checker messages about half-parsed items would
    // mostly be noise; keep only the parse errors then.
    if !parse_failed {
        diags.extend(cd);
    }
    if let Err(errs) = lock.validate() {
        for e in errs {
            diags.push(
                Diagnostic::error(
                    diag::codes::LOCK,
                    Span::default(),
                    format!("ben.lock is inconsistent: {e}"),
                )
                .help("restore ben.lock from version control; never edit bit positions by hand"),
            );
        }
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(Failed {
            diagnostics: diags,
            map,
        });
    }
    let (lock, changes) = lock.assign(&mut program);
    Ok(Compiled {
        program,
        lock,
        changes,
        map,
        warnings: diags,
    })
}
