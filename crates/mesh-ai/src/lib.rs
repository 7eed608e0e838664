//! # CyberMesh AI service
//!
//! The CyberMesh detection loop in the runtime: flow records arrive on
//! `ben.mesh.flows` (one CIC CSV row each, as `ben flows` writes them), and
//! every `every` (5 s by default) the buffered flows go through the three
//! engines; anomalies are sealed (`ben/v1/anomaly`) and published on
//! `ai.anomalies.v1`, their evidence on `ai.evidence.v1`. The buffer is
//! bounded; flows that do not fit and rate-limited anomalies are counted.

use ben_component::{Deps, Publish};
use ben_mesh_detect as detect;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const FLOWS: &str = "ben.mesh.flows";
pub const ANOMALIES: &str = "ai.anomalies.v1";
pub const EVIDENCE: &str = "ai.evidence.v1";

/// Counters.
#[derive(Debug, Default)]
pub struct MeshStats {
    pub flows: AtomicU64,
    pub dropped_flows: AtomicU64,
    pub bad_rows: AtomicU64,
    pub published: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Anomalies and evidence the bus did not take (counted, not lost
    /// silently).
    pub publish_errors: AtomicU64,
}

/// The CSV header of the sensor's rows.
pub fn csv_header() -> String {
    let mut h = Vec::new();
    let _ = ben_mesh_flows::output::write_csv_header(&mut h);
    String::from_utf8_lossy(&h).trim_end().to_string()
}

/// Runs the loop until the bus closes.
pub async fn run(
    deps: Deps,
    every: Duration,
    max_buffer: usize,
    stats: Arc<MeshStats>,
) -> Result<(), String> {
    let header = csv_header();
    let names = detect::FlowTable::parse(&header)
        .map_err(|e| e.to_string())?
        .feature_names;
    let model = detect::LgbmModel::parse(detect::defaults::MODEL).map_err(|e| e.to_string())?;
    let baseline =
        detect::Baseline::parse(detect::defaults::BASELINE).map_err(|e| e.to_string())?;
    let mut detector = detect::Detector::new(
        detect::Config::default(),
        model,
        detect::defaults::MODEL_VERSION.to_owned(),
        &baseline,
        detect::defaults::RULES,
        &names,
    )
    .map_err(|e| e.to_string())?;
    let mut sub = deps
        .bus
        .subscribe(FLOWS, Some("mesh"))
        .await
        .map_err(|e| e.to_string())?;
    let mut rows: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else { break };
                if rows.len() >= max_buffer {
                    stats.dropped_flows.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                rows.push(String::from_utf8_lossy(&m.payload).trim().to_string());
            }
            _ = tick.tick() => {
                if rows.is_empty() {
                    continue;
                }
                let text = format!("{header}\n{}", rows.join("\n"));
                rows.clear();
                let (table, errors) = detect::FlowTable::parse_lenient(&text);
                stats.bad_rows.fetch_add(errors.len() as u64, Ordering::Relaxed);
                for e in errors.iter().take(3) {
                    deps.dead_letter(FLOWS, format!("bad flow record: {e}"), 0).await;
                }
                stats.flows.fetch_add(table.flows.len() as u64, Ordering::Relaxed);
                let report = detector.run(&table);
                for d in &report.detections {
                    if !d.published {
                        stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    stats.published.fetch_add(1, Ordering::Relaxed);
                    for (subject, sealed) in [
                        (ANOMALIES, deps.signer.seal_bytes(&d.event)),
                        (EVIDENCE, deps.signer.seal_bytes(&d.evidence)),
                    ] {
                        Publish::new(subject, sealed)
                            .send(deps.bus.as_ref(), &stats.publish_errors)
                            .await;
                    }
                }
            }
        }
    }
    Ok(())
}
