//! `benctl`: the operator's CLI. Offline: `build`, `test`, `eval` (no
//! server). Against a running Ben (`ben up`, see `remote.rs`): `stage`,
//! `deploy`, `status`, `history`, `rollback`.
//!
//! Exit codes: 0 success, 1 the bundle or its tests failed (or Ben refused,
//! or a deploy aborted), 2 usage or I/O error (or Ben unreachable).

mod remote;

use anyhow::{Context, Result};
use ben_intent::{Bundle, Evaluator};
use clap::{Parser, Subcommand};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "benctl",
    version,
    about = "Build, test, evaluate, stage and deploy Ben intent bundles",
    after_help = "Examples:
  benctl build examples/shop            compile and check a bundle, write ben.lock
  benctl test examples/shop             run its test blocks
  benctl stage examples/shop            upload and stage it on the running Ben
  benctl deploy VERSION --wait          deploy; wait until every component proved it switched
  benctl status --json                  the active version and the deploy, as JSON
  benctl dashboard                      a one-time link that logs a browser in
  benctl mesh anomaly ID                one anomaly from detection to the agents' acks
  benctl completions zsh > ~/.zfunc/_benctl

Against a Ben: --api URL (or $BEN_API), the token from --token, $BEN_API_TOKEN or api.token
in --data-dir / $BEN_DATA_DIR. Commands that show state take --json (one spelling everywhere)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How `build` reports (`--json` on every command that prints).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile and validate a bundle, write ben.lock, print its digest.
    Build {
        /// The bundle directory (holds ben.toml).
        dir: PathBuf,
        /// Print JSON (the diagnostics, or the summary) instead of text.
        #[arg(long)]
        json: bool,
        /// Fail instead of writing ben.lock when it would change (for CI).
        #[arg(long)]
        locked: bool,
    },
    /// Run the bundle's `test` blocks.
    Test { dir: PathBuf },
    /// Evaluate JSON records (one per line) through the spine pipeline.
    Eval {
        dir: PathBuf,
        /// A JSONL file, or - for standard input.
        #[arg(long)]
        input: String,
        /// Records are app records translated by this contract.
        #[arg(long, conflicts_with = "schema")]
        contract: Option<String>,
        /// Records are already in this schema's form (NAME or NAME@vN).
        #[arg(long)]
        schema: Option<String>,
        /// Data directory (holds blot.key when BEN_BLOT_KEY is unset).
        #[arg(long, default_value = ".ben")]
        data_dir: PathBuf,
    },
    #[command(flatten)]
    Remote(remote::Cmd),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) to standard output.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Build { dir, json, locked } => build(
            &dir,
            if json { Format::Json } else { Format::Human },
            locked,
        ),
        Cmd::Test { dir } => test(&dir),
        Cmd::Eval {
            dir,
            input,
            contract,
            schema,
            data_dir,
        } => eval(
            &dir,
            &input,
            contract.as_deref(),
            schema.as_deref(),
            &data_dir,
        ),
        Cmd::Remote(c) => remote::run(c),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "benctl", &mut script);
            // A closed pipe (`| head`) is no error worth reporting; any
            // other (a full disk under `> file`) is.
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("benctl completions: writing the script: {e}");
                    Ok(ExitCode::from(2))
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Loads and builds; on diagnostics prints them and returns `None`.
fn load_built(dir: &Path, format: Format) -> Result<Option<ben_intent::Built>> {
    let bundle = Bundle::load(dir).with_context(|| format!("reading bundle {}", dir.display()))?;
    match bundle.build() {
        Ok(b) => {
            if !b.warnings.is_empty() {
                eprint!("{}", ben_bitspec::diag::render_all(&b.warnings, &b.map));
            }
            Ok(Some(b))
        }
        Err(failed) => {
            match format {
                Format::Human => {
                    eprint!("{}", failed.render());
                    let n = failed.diagnostics.iter().filter(|d| d.is_error()).count();
                    eprintln!(
                        "error: bundle {} has {n} error{}",
                        dir.display(),
                        if n == 1 { "" } else { "s" }
                    );
                }
                Format::Json => {
                    let all: Vec<_> = failed
                        .diagnostics
                        .iter()
                        .map(|d| d.to_json(&failed.map))
                        .collect();
                    println!("{}", serde_json::json!({ "ok": false, "diagnostics": all }));
                }
            }
            Ok(None)
        }
    }
}

fn build(dir: &Path, format: Format, locked: bool) -> Result<ExitCode> {
    let Some(b) = load_built(dir, format)? else {
        return Ok(ExitCode::from(1));
    };
    let lock_path = dir.join("ben.lock");
    if b.lock_changed {
        if locked {
            eprintln!("error: ben.lock is out of date (flags were added or removed); run `benctl build {}` and commit ben.lock", dir.display());
            return Ok(ExitCode::from(1));
        }
        std::fs::write(&lock_path, &b.lock_text)
            .with_context(|| format!("writing {}", lock_path.display()))?;
    }
    let p = &b.program;
    match format {
        Format::Json => {
            println!(
                "{}",
                serde_json::json!({
                    "ok": true,
                    "bundle": b.name,
                    "version": b.version,
                    "digest": b.digest.to_hex().to_string(),
                    "artifacts": b.artifacts.iter().map(|a| serde_json::json!({"name": a.name, "blake3": a.hash.to_hex().to_string(), "bytes": a.bytes.len()})).collect::<Vec<_>>(),
                    "lock_written": b.lock_changed,
                })
            );
        }
        Format::Human => {
            println!("bundle   {}", b.name);
            println!("version  {}", b.version);
            println!("digest   blake3:{}", b.digest.to_hex());
            println!(
                "contents {} schema(s), {} contract(s), {} pack(s), {} playbook(s), {} migration(s), {} test(s)",
                p.schemas.len(),
                p.contracts.len(),
                p.packs.len(),
                p.playbooks.len(),
                p.migrations.len(),
                p.tests.len()
            );
            for pk in &p.packs {
                println!(
                    "pack     {} on {}: {} flag(s), {} meta, {} redaction(s), {} route(s), cost {} per record",
                    pk.name,
                    p.schemas[pk.schema].id(),
                    pk.flags.len(),
                    pk.metas.len(),
                    pk.redactions.len(),
                    pk.routes.len(),
                    pk.cost
                );
            }
            for (pack, flag, bit) in &b.changes.added {
                println!("lock     + {pack}.{flag} = bit {bit}");
            }
            for (pack, flag, bit) in &b.changes.retired {
                println!("lock     - {pack}.{flag} retires bit {bit}");
            }
            println!("artifacts {}", b.artifacts.len());
            if b.lock_changed {
                println!("wrote    {}", lock_path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn test(dir: &Path) -> Result<ExitCode> {
    let Some(b) = load_built(dir, Format::Human)? else {
        return Ok(ExitCode::from(1));
    };
    let results = ben_intent::run_tests(&b);
    let mut failed = 0;
    for r in &results {
        if r.passed() {
            println!("test {} ... ok", r.name);
        } else {
            failed += 1;
            println!("test {} ... FAILED ({})", r.name, r.location);
            for f in &r.failures {
                println!("    {f}");
            }
        }
    }
    println!("\n{} passed, {} failed", results.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn eval(
    dir: &Path,
    input: &str,
    contract: Option<&str>,
    schema: Option<&str>,
    data_dir: &Path,
) -> Result<ExitCode> {
    let Some(b) = load_built(dir, Format::Human)? else {
        return Ok(ExitCode::from(1));
    };
    let key = ben_intent::keys::load_blot_key(&b.manifest.blot.key, Some(dir), data_dir)
        .map_err(|e| anyhow::anyhow!(e))?;
    let ev = Evaluator::new(&b, Some(key));
    let kind = ev
        .input_kind(contract, schema)
        .map_err(|e| anyhow::anyhow!(e))?;
    let reader: Box<dyn BufRead> = if input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).with_context(|| format!("opening {input}"))?,
        ))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut ok, mut bad) = (0usize, 0usize);
    for (i, line) in reader.split(b'\n').enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading {input}"))?;
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let res = match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => Err(format!("line is not JSON: {e}")),
            Ok(j) => ev.eval_line(kind, &j).map_err(|e| e.to_string()),
        };
        match res {
            Ok(j) => {
                ok += 1;
                writeln!(out, "{j}")?;
            }
            Err(e) => {
                bad += 1;
                writeln!(out, "{}", serde_json::json!({ "error": e, "line": n }))?;
            }
        }
    }
    out.flush()?;
    eprintln!(
        "evaluated {ok} record(s), {bad} error(s), intent {}",
        b.version
    );
    Ok(ExitCode::SUCCESS)
}
