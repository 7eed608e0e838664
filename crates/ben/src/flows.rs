//! `ben flows FILE`: the CyberMesh sensor over a capture file. Flows go to
//! stdout (CSV or JSON Lines), the packet summary to stderr.

use anyhow::{Context, Result};
use ben_mesh_flows::output::{write_csv_header, write_row};
use ben_mesh_flows::{read_capture, CaptureStats, Config, Counters, FlowTable, Format, Labeler};
use clap::{Args, ValueEnum};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

/// Output format of `ben flows`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// CSV with a header row (CICIDS2017 columns + ids + Label).
    Csv,
    /// One JSON object per flow.
    Jsonl,
}

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// pcap or pcapng file (`-` reads standard input).
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: FormatArg,
    /// Label for every flow no rule in --labels matches.
    #[arg(long, default_value = ben_mesh_flows::DEFAULT_LABEL)]
    pub label: String,
    /// CSV of label rules: host column (src_ip|ip), class|label, optional
    /// start,end in epoch seconds (the format scripts/mesh/gen-data.sh writes).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Cut a flow this many seconds after its first packet.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub flow_timeout: f64,
    /// End a flow after this many seconds without packets.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub idle_timeout: f64,
    /// Gap (seconds) that separates active periods from idle ones.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub activity_timeout: f64,
    /// Most flows open at once (least recently seen are evicted, counted).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_flows: usize,
}

fn secs(name: &str, s: f64) -> Result<u64> {
    anyhow::ensure!(
        s.is_finite() && s > 0.0 && s < 1e9,
        "--{name} must be a positive number of seconds, got {s}"
    );
    Ok((s * 1e9) as u64)
}

fn summary(c: &Counters, cap: &CaptureStats) -> String {
    let mut s = format!(
        "ben flows: {} packets, {} in {} flows",
        c.packets, c.in_flows, c.flows
    );
    if c.evicted > 0 {
        s += &format!(" ({} evicted: table full, raise --max-flows)", c.evicted);
    }
    s += &format!(
        "; skipped {} (non-IP {}, non-first fragments {}, unsupported link type {})",
        c.skipped(),
        c.non_ip,
        c.fragments,
        c.unsupported_link
    );
    s += &format!(
        "; corrupt {} (truncated {}, malformed {})",
        c.corrupt(),
        c.truncated,
        c.malformed
    );
    if c.out_of_order > 0 {
        s += &format!("; {} out-of-order timestamps", c.out_of_order);
    }
    if cap.snapped > 0 {
        s += &format!("; {} records cut by the snap length", cap.snapped);
    }
    if cap.bad_interface > 0 {
        s += &format!(
            "; {} pcapng packets with an undescribed interface",
            cap.bad_interface
        );
    }
    if cap.truncated_tail {
        s += "; the file ends inside a record (capture cut off?)";
    }
    s
}

/// A progress-wrapped reader whose bar is cleared when reading ends.
struct ClearOnDrop<R>(indicatif::ProgressBarIter<R>);

impl<R: Read> Read for ClearOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R> Drop for ClearOnDrop<R> {
    fn drop(&mut self) {
        self.0.progress.finish_and_clear();
    }
}

pub fn run(args: FlowsArgs) -> Result<()> {
    let cfg = Config {
        flow_timeout_ns: secs("flow-timeout", args.flow_timeout)?,
        idle_timeout_ns: secs("idle-timeout", args.idle_timeout)?,
        activity_timeout_ns: secs("activity-timeout", args.activity_timeout)?,
        max_flows: args.max_flows.max(1),
        // The shell injects the randomness; the core only takes a seed.
        hash_seed: std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
        ..Config::default()
    };
    let labeler = match &args.labels {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading label file {}", path.display()))?;
            Labeler::from_csv(&text, &args.label)
                .with_context(|| format!("in label file {}", path.display()))?
        }
        None => Labeler::constant(&args.label),
    };
    let format = match args.format {
        FormatArg::Csv => Format::Csv,
        FormatArg::Jsonl => Format::Jsonl,
    };
    let input: Box<dyn Read + Send> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("opening capture {}", args.file.display()))?;
        // How far through the capture, on a terminal only (indicatif
        // hides it otherwise); cleared before the summary.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(len),
            indicatif::ProgressDrawTarget::stderr(),
        )
        .with_style(
            indicatif::ProgressStyle::with_template(
                "reading {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Box::new(ClearOnDrop(bar.wrap_read(file)))
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut table = FlowTable::new(cfg);
    let mut write_err: Option<io::Error> = None;
    // The CSV header goes out with the first flow (or at the end), so a
    // file that is not a capture prints nothing on stdout.
    let mut header_due = matches!(format, Format::Csv);
    let mut flush = |table: &mut FlowTable, out: &mut BufWriter<_>, force_header: bool| {
        if header_due && (force_header || table.finished_len() > 0) {
            header_due = false;
            if let Err(e) = write_csv_header(out) {
                write_err = Some(e);
            }
        }
        for r in table.drain_finished() {
            if write_err.is_none() {
                if let Err(e) = write_row(out, format, &r, labeler.label(&r)) {
                    write_err = Some(e);
                }
            }
        }
    };
    let read = read_capture(input, |ts, link, frame| {
        let _ = table.push(ts, link, frame);
        if table.finished_len() > 0 {
            flush(&mut table, &mut out, false);
        }
    });
    table.finish_all();
    let read_ok = read.is_ok() || table.counters().packets > 0;
    flush(&mut table, &mut out, read_ok);
    let flushed = out.flush();
    match write_err.map_or(flushed, Err) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        r => r.context("writing flows to stdout")?,
    }
    let cap = read.as_ref().copied().unwrap_or_default();
    if read_ok {
        eprintln!("{}", summary(table.counters(), &cap));
    }
    let packets = table.counters().packets;
    read.with_context(|| {
        if packets > 0 {
            format!(
                "reading capture {} (the flows above come from the {packets} packets before the error)",
                args.file.display()
            )
        } else {
            format!("reading capture {}", args.file.display())
        }
    })?;
    Ok(())
}
