//! # Bundles: intent as a directory
//!
//! A bundle is a directory with `ben.toml`, any number of `*.bspec` files
//! (all compiled together, found recursively, hidden folders skipped) and
//! `ben.lock` (the flag bit table, written by `benctl build`).
//!
//! [`Bundle::load`] reads it (the only I/O here); [`Bundle::build`]
//! compiles, checks the lock, and produces content-addressed artifacts
//! whose BLAKE3 digest is the bundle's identity; [`Evaluator`] runs the
//! spine pipeline (translate → flags/meta/route → redact) on JSON records,
//! and on the data path's wire records ([`Evaluator::from_artifacts`],
//! [`Evaluator::process_record`], shared by the spine and Lucius);
//! [`run_tests`] runs the bundle's `test` blocks.

pub mod eval;
pub mod keys;
pub mod lockfile;
pub mod manifest;
mod record;

pub use eval::{Evaluator, InputKind};

use ben_bitspec::{check::CheckOptions, ir::Program, lock::BitTable, Compiled, Failed, Source};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a bundle: it has no ben.toml (create one with `[bundle]` and `name = \"…\"`)")]
    NoManifest { path: PathBuf },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: {message}\n  = help: restore ben.lock from version control, or delete it to start a new bit table (this renumbers every flag)")]
    Lock { path: PathBuf, message: String },
    #[error(
        "{path} has no .bspec files: write schemas, contracts and packs in files ending in .bspec"
    )]
    NoSources { path: PathBuf },
}

/// A bundle as read from disk.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: manifest::Manifest,
    pub sources: Vec<Source>,
    /// The lock as found (empty when there is none yet).
    pub lock: BitTable,
    pub lock_text: Option<String>,
}

fn read(path: &Path) -> Result<String, BundleError> {
    std::fs::read_to_string(path).map_err(|source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn collect_bspec(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BundleError> {
    let rd = std::fs::read_dir(dir).map_err(|source| BundleError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in rd {
        let entry = entry.map_err(|source| BundleError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if p.is_dir() {
            collect_bspec(&p, out)?;
        } else if name.ends_with(".bspec") {
            out.push(p);
        }
    }
    Ok(())
}

impl Bundle {
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle, BundleError> {
        let dir = dir.as_ref().to_path_buf();
        let mpath = dir.join("ben.toml");
        if !mpath.is_file() {
            return Err(BundleError::NoManifest { path: dir });
        }
        let manifest =
            manifest::parse(&read(&mpath)?).map_err(|message| BundleError::Manifest {
                path: mpath.clone(),
                message,
            })?;
        let mut files = Vec::new();
        collect_bspec(&dir, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(BundleError::NoSources { path: dir });
        }
        let mut sources = Vec::new();
        for f in &files {
            let name = f.strip_prefix(&dir).unwrap_or(f);
            let shown = Path::new(&dir).join(name);
            sources.push(Source::new(shown.display().to_string(), read(f)?));
        }
        let lpath = dir.join("ben.lock");
        let (lock, lock_text) = if lpath.is_file() {
            let text = read(&lpath)?;
            let t = lockfile::parse(&text).map_err(|message| BundleError::Lock {
                path: lpath.clone(),
                message,
            })?;
            (t, Some(text))
        } else {
            (BitTable::default(), None)
        };
        Ok(Bundle {
            dir,
            manifest,
            sources,
            lock,
            lock_text,
        })
    }

    /// Compiles, validates the lock and the manifest's references, and
    /// makes the artifacts. Pure: writes nothing.
    pub fn build(&self) -> Result<Built, Failed> {
        let opts = CheckOptions {
            max_pack_cost: self.manifest.limits.max_pack_cost,
        };
        let compiled = ben_bitspec::compile(&self.sources, &self.lock, opts)?;
        let mut errs = Vec::new();
        for app in &self.manifest.apps {
            if compiled.program.contract(&app.contract).is_none() {
                let names: Vec<&str> = compiled
                    .program
                    .contracts
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                errs.push(
                    ben_bitspec::Diagnostic::error(
                        ben_bitspec::diag::codes::UNKNOWN_CONTRACT,
                        ben_bitspec::Span::default(),
                        format!(
                            "ben.toml: app `{}` names contract `{}`, which no .bspec file declares",
                            app.name, app.contract
                        ),
                    )
                    .help_opt(ben_bitspec::diag::did_you_mean(&app.contract, names)),
                );
            }
        }
        if !errs.is_empty() {
            return Err(Failed {
                diagnostics: errs,
                map: compiled.map,
            });
        }
        let mut built = Built::new(self, compiled);
        for app in self.manifest.apps.iter().filter(|a| a.selector.any) {
            built.warnings.push(
                ben_bitspec::Diagnostic::warning(
                    ben_bitspec::diag::codes::ANY_SELECTOR,
                    ben_bitspec::Span::default(),
                    format!(
                        "ben.toml: app `{}` has selector = \"any\": every process that reaches the sidecar's socket can attest as it",
                        app.name
                    ),
                )
                .help_opt(Some(
                    "name the app's processes instead: selector = { uid = …, exe = \"…\" }".into(),
                )),
            );
        }
        Ok(built)
    }
}

/// One content-addressed artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub bytes: Vec<u8>,
    pub hash: blake3::Hash,
}

/// A built bundle.
#[derive(Debug)]
pub struct Built {
    pub name: String,
    pub program: Program,
    pub lock: BitTable,
    pub lock_text: String,
    pub lock_changed: bool,
    pub changes: ben_bitspec::lock::LockChanges,
    pub artifacts: Vec<Artifact>,
    pub digest: blake3::Hash,
    /// The intent version every processed record names.
    pub version: String,
    pub manifest: manifest::Manifest,
    pub warnings: Vec<ben_bitspec::Diagnostic>,
    pub map: ben_bitspec::SourceMap,
}

impl Built {
    fn new(bundle: &Bundle, c: Compiled) -> Built {
        let mut artifacts: Vec<Artifact> = ben_bitspec::canon::artifacts(&c.program)
            .into_iter()
            .map(|(name, bytes)| {
                let hash = blake3::hash(&bytes);
                Artifact { name, bytes, hash }
            })
            .collect();
        let m = &bundle.manifest;
        let settings = serde_json::json!({
            "bundle": m.bundle.name,
            "targets": m.bundle.targets,
            "blot": {
                "scan_undeclared": m.blot.scan_undeclared,
                "key": m.blot.key,
                "max_field_bytes": m.blot.max_field_bytes,
                "max_record_bytes": m.blot.max_record_bytes,
            },
            "apps": m.apps,
        });
        let bytes = serde_json::to_vec(&settings).unwrap_or_default();
        artifacts.push(Artifact {
            name: "settings".into(),
            hash: blake3::hash(&bytes),
            bytes,
        });
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        let mut h = blake3::Hasher::new();
        h.update(b"ben/v1/bundle\n");
        for a in &artifacts {
            h.update(a.name.as_bytes());
            h.update(b"\n");
            h.update(a.hash.to_hex().as_bytes());
            h.update(b"\n");
        }
        let digest = h.finalize();
        let version = if m.bundle.version == "auto" {
            digest.to_hex()[..16].to_string()
        } else {
            m.bundle.version.clone()
        };
        let lock_text = lockfile::render(&c.lock);
        let lock_changed = bundle.lock_text.as_deref() != Some(lock_text.as_str());
        Built {
            name: m.bundle.name.clone(),
            program: c.program,
            lock: c.lock,
            lock_text,
            lock_changed,
            changes: c.changes,
            artifacts,
            digest,
            version,
            manifest: m.clone(),
            warnings: c.warnings,
            map: c.map,
        }
    }
}

/// Outcome of one `test` block.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub failures: Vec<String>,
    /// `file:line` of the test.
    pub location: String,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every `test` block with a fixed, non-secret test key (so hmac
/// outputs are reproducible in tests).
pub fn run_tests(built: &Built) -> Vec<TestResult> {
    let key =
        ben_blot::BlotKey::from_material(b"ben test key: not a secret, only for bundle tests").ok();
    let ev = Evaluator::new(built, key);
    built
        .program
        .tests
        .iter()
        .map(|t| {
            let location = built
                .map
                .get(t.span.file)
                .map(|s| {
                    let (l, _) = s.line_col(t.span.start as usize);
                    format!("{}:{l}", s.name)
                })
                .unwrap_or_default();
            TestResult {
                name: t.name.clone(),
                failures: ev.check_test(t),
                location,
            }
        })
        .collect()
}

/// The `settings` artifact: what components need from `ben.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Settings {
    pub bundle: String,
    #[serde(default)]
    pub targets: Vec<String>,
    pub blot: manifest::BlotSection,
    #[serde(default)]
    pub apps: Vec<manifest::AppSection>,
}

impl Settings {
    pub fn from_artifact(bytes: &[u8]) -> Result<Settings, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("settings artifact: {e}"))
    }
}
