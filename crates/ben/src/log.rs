//! Where `ben`'s logs go: one `tracing` subscriber for every subcommand,
//! writing to stderr. `RUST_LOG` chooses what is shown (default: warnings
//! from everything, information from Ben's own crates); `--log-format
//! json` writes one JSON object per event for a log collector, `human`
//! (the default) one line per event.
//!
//! `ben up` redraws a status line in place on a terminal. A log line that
//! arrived in the middle of it would be glued to its end, so the writer
//! first erases a status line still on screen ([`status_line_shown`]);
//! the status line comes back at its next redraw.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// What shows unless `RUST_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "warn,ben=info";

/// The log format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

static STATUS_ON_SCREEN: AtomicBool = AtomicBool::new(false);

/// Tells the log writer a status line was drawn on the terminal without a
/// newline (it erases it before the next log line).
pub fn status_line_shown() {
    STATUS_ON_SCREEN.store(true, Ordering::Relaxed);
}

/// Installs the subscriber. A bad `RUST_LOG` is reported and the default
/// used, not fatal.
pub fn init(format: Format) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("ben: RUST_LOG={spec:?} is not a filter ({e}); using {DEFAULT_FILTER:?}");
                EnvFilter::new(DEFAULT_FILTER)
            }
        },
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr { tty });
    let installed = match format {
        Format::Human => builder.with_ansi(tty).try_init(),
        Format::Json => builder.json().with_ansi(false).try_init(),
    };
    if let Err(e) = installed {
        eprintln!("ben: logging not set up: {e}");
    }
}

/// Stderr, erasing a status line left on the terminal first.
#[derive(Clone, Copy)]
struct Stderr {
    tty: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrLine;

    fn make_writer(&'a self) -> StderrLine {
        StderrLine { tty: self.tty }
    }
}

struct StderrLine {
    tty: bool,
}

impl Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if self.tty && STATUS_ON_SCREEN.swap(false, Ordering::Relaxed) {
            // Erase the line the status is on; it is redrawn next second.
            err.write_all(b"\r\x1b[2K")?;
        }
        err.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
