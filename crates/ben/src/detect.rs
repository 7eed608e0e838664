//! `ben detect`: run the CyberMesh detector over flow records or a capture
//! and print anomalies as JSON lines (summary on stderr).

use anyhow::{bail, Context, Result};
use ben_mesh_detect as detect;
use ben_mesh_flows as flows;
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `ben detect`.
#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Flow records (CSV or JSONL, as `ben flows` writes them).
    #[arg(long, conflicts_with = "pcap", required_unless_present = "pcap")]
    pub flows: Option<PathBuf>,
    /// A pcap/pcapng capture (flows are extracted first).
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// LightGBM text model; `mesh-baseline.json` and `rules.toml` next to it
    /// are used when present (default: the built-in model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Baseline JSON (classes + benign medians) overriding the default.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Rule file overriding the default.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Publication threshold on the ensemble confidence.
    #[arg(long, default_value_t = 0.70)]
    pub threshold: f64,
    /// Ed25519 secret seed file (32 bytes raw or 64 hex chars); a fresh
    /// random key when absent.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Also print anomalies held back by the rate limiter (marked
    /// `"published": false`).
    #[arg(long)]
    pub all: bool,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn load_key(path: Option<&Path>) -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    match path {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading key {}", p.display()))?;
            let text = String::from_utf8_lossy(&bytes);
            let hex = text.trim();
            if bytes.len() == 32 {
                seed.copy_from_slice(&bytes);
            } else if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                for (i, s) in seed.iter_mut().enumerate() {
                    *s = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
                }
            } else {
                bail!(
                    "key {}: expected 32 raw bytes or 64 hex characters",
                    p.display()
                );
            }
        }
        None => {
            seed = ben_runtime::random32()
                .map_err(anyhow::Error::msg)
                .context("a new signing key (or pass --key)")?;
        }
    }
    Ok(seed)
}

/// Extracts flows from a capture into the detector's table.
fn flows_from_pcap(path: &Path) -> Result<detect::FlowTable> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut table = flows::FlowTable::new(flows::Config::default());
    let mut out = detect::FlowTable {
        feature_names: flows::FEATURE_NAMES
            .iter()
            .map(|n| detect::flow::normalize_name(n))
            .collect(),
        flows: Vec::new(),
    };
    // `Destination Port` is an identity column for the detector, not a feature.
    let dst_port_col = out
        .feature_names
        .iter()
        .position(|n| n == "destination_port");
    let convert = |r: flows::FlowRecord, out: &mut detect::FlowTable| {
        let mut features = r.features.as_array().to_vec();
        if let Some(i) = dst_port_col {
            features.remove(i);
        }
        out.flows.push(detect::FlowRecord {
            id: r.id.to_string(),
            endpoints: detect::flow::Endpoints {
                src_ip: r.src.to_ip(),
                src_port: r.src_port,
                dst_ip: r.dst.to_ip(),
                dst_port: r.dst_port,
                protocol: r.protocol,
            },
            start_us: (r.start_ns / 1000) as i64,
            features,
            label: None,
        });
    };
    if let Some(i) = dst_port_col {
        out.feature_names.remove(i);
    }
    let mut decode_errors = 0u64;
    flows::read_capture(file, |ts, link, frame| {
        if table.push(ts, link, frame).is_err() {
            decode_errors += 1;
        }
        for r in table.drain_finished() {
            convert(r, &mut out);
        }
    })
    .with_context(|| format!("reading capture {}", path.display()))?;
    table.finish_all();
    for r in table.drain_finished() {
        convert(r, &mut out);
    }
    if decode_errors > 0 {
        eprintln!("ben detect: {decode_errors} packets could not be decoded (counted, skipped)");
    }
    Ok(out)
}

/// Runs `ben detect`.
pub fn run(args: DetectArgs) -> Result<()> {
    let table = match (&args.flows, &args.pcap) {
        (Some(p), _) => {
            // A damaged record costs only itself: it is reported and
            // counted, the rest is still examined (invariant 11).
            let (table, errors) = detect::FlowTable::parse_lenient(&read(p)?);
            for e in errors.iter().take(5) {
                eprintln!("ben detect: {}: {e}", p.display());
            }
            if !errors.is_empty() {
                eprintln!(
                    "ben detect: {} bad record(s) in {} skipped",
                    errors.len(),
                    p.display()
                );
            }
            if table.flows.is_empty() && !errors.is_empty() {
                bail!("no readable flow record in {}", p.display());
            }
            table
        }
        (None, Some(p)) => flows_from_pcap(p)?,
        (None, None) => bail!("give --flows FILE or --pcap FILE"),
    };
    let dir = args
        .model
        .as_ref()
        .and_then(|m| m.parent().map(Path::to_path_buf));
    let beside = |name: &str| dir.as_ref().map(|d| d.join(name)).filter(|p| p.exists());
    let (model_text, model_version) = match &args.model {
        Some(p) => (
            read(p)?,
            p.file_name()
                .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
        ),
        None => (
            detect::defaults::MODEL.to_owned(),
            detect::defaults::MODEL_VERSION.to_owned(),
        ),
    };
    let baseline_text = match args
        .baseline
        .clone()
        .or_else(|| beside("mesh-baseline.json"))
    {
        Some(p) => read(&p)?,
        None => detect::defaults::BASELINE.to_owned(),
    };
    let rules_text = match args.rules.clone().or_else(|| beside("rules.toml")) {
        Some(p) => read(&p)?,
        None => detect::defaults::RULES.to_owned(),
    };
    let model = detect::LgbmModel::parse(&model_text).context("loading the LightGBM model")?;
    let baseline = detect::Baseline::parse(&baseline_text).context("loading the baseline")?;
    let cfg = detect::Config {
        threshold: args.threshold,
        ..detect::Config::default()
    };
    let mut detector = detect::Detector::new(
        cfg,
        model,
        model_version,
        &baseline,
        &rules_text,
        &table.feature_names,
    )
    .context("building the detector")?;
    let signer = ben_wire::Signer::from_secret(load_key(args.key.as_deref())?);
    let report = detector.run(&table);
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for d in &report.detections {
        if !d.published && !args.all {
            continue;
        }
        let mut json = detect::anomaly_json(d);
        if d.published {
            // The envelope a bus would carry on ai.anomalies.v1.
            let env = signer.seal(&d.event);
            json["signature"] = hex::encode(&env.signature).into();
            json["key_id"] = env.key_id.into();
        }
        writeln!(out, "{json}").context("writing anomalies")?;
    }
    out.flush().context("writing anomalies")?;
    let s = &report.summary;
    eprintln!(
        "ben detect: {} flows, {} flagged, {} anomalies ({} published, {} rate-limited)",
        s.flows, s.flagged_flows, s.anomalies, s.published, s.rate_limited
    );
    Ok(())
}
