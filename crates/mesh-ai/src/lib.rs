//! # CyberMesh AI service
//!
//! The CyberMesh detection loop in the runtime: flow records arrive on
//! `ben.mesh.flows` in [`FlowBatch`]es signed by a sensor's key (CIC CSV
//! rows, as `ben flows` writes them; anything else is dead-lettered) and go
//! into a [`detect::Stream`]: each batch is judged as it arrives (at most
//! one step per `every`, 200 ms by default; the seed's 5 s cycle is this
//! setting, not the mechanism), against windows kept open across batches,
//! so an anomaly is out within a step of the flow that makes it and a
//! window split over many batches is still one window. Anomalies are sealed
//! (`ben/v1/anomaly`) and published on `ai.anomalies.v1` with their
//! evidence so far on `ai.evidence.v1`; when a window closes, the complete
//! evidence follows. Open windows hold at most `max_buffer` flows; flows
//! over it, flows filed late and rate-limited anomalies are counted.
//!
//! The feedback loop runs here too (the seed: "the AI service adjusts
//! thresholds based on validator acceptance rates"): every published
//! anomaly enters a [`ben_mesh_feedback::Feedback`] core, which the
//! validators' commits (`control.commits.v1`), block policies
//! (`control.policy.v1`) and the enforcement agents' acks
//! (`control.policy.ack.v1`), each verified, move along its lifecycle; its
//! threshold changes are applied to the detector at once and logged, and
//! the whole state is kept in a file so a restart resumes it. It answers
//! `ben.mesh.feedback.query` (`benctl mesh thresholds`, and an anomaly's
//! lifecycle for `benctl mesh anomaly ID`).
//!
//! When attacks come from many addresses of one network, it may ask the
//! validators to block the network ([`networks`]; off unless configured):
//! a signed `PolicyRequest` on `ai.policy.v1` citing the anomalies.

pub mod networks;

use ben_component::{Deps, Publish};
use ben_mesh_detect as detect;
use ben_mesh_feedback::{Ack, Feedback};
use ben_mesh_wire::{BatchOrder, CommitEvent, FlowBatch, Order, PolicyAck, PolicyEvent};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use ben_mesh_wire::FEEDBACK_QUERY;

/// The feedback loop's settings in a running AI service.
#[derive(Clone, Debug)]
pub struct FeedbackSettings {
    pub cfg: ben_mesh_feedback::Config,
    /// f of the validator set (f + 1 announcements prove a commit).
    pub f: usize,
    /// Where lifecycles and thresholds are kept across restarts (none:
    /// memory only).
    pub state: Option<PathBuf>,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            cfg: ben_mesh_feedback::Config::default(),
            f: 1,
            state: None,
        }
    }
}

/// The feedback core as kept in `s.state`, or a new one. A file that
/// cannot be read is an error naming it: starting over silently would
/// throw the calibration away.
pub fn load_feedback(s: &FeedbackSettings) -> Result<Feedback, String> {
    s.cfg.check()?;
    let Some(path) = s.state.as_ref().filter(|p| p.exists()) else {
        return Ok(Feedback::new(s.cfg.clone(), s.f));
    };
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let snap = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}: not a feedback state ({e}); move it away to start the calibration over",
            path.display()
        )
    })?;
    Ok(Feedback::restore(s.cfg.clone(), s.f, snap))
}

fn save_feedback(fb: &Feedback, path: &std::path::Path) -> Result<(), String> {
    let bytes = serde_json::to_vec(&fb.snapshot()).map_err(|e| e.to_string())?;
    ben_control::private::replace(path, &bytes)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// What the feedback loop answers to `query` (empty: the summary).
pub fn feedback_answer(fb: &Feedback, query: &[u8]) -> serde_json::Value {
    let id = String::from_utf8_lossy(query).trim().to_string();
    if id.is_empty() {
        let changes: Vec<_> = fb.changes().collect();
        let skip = changes.len().saturating_sub(100);
        return serde_json::json!({
            "threshold": fb.threshold(),
            "counts": fb.counts(),
            "unknown": fb.unknown,
            "changes": &changes[skip..],
        });
    }
    match fb.lifecycle(&id) {
        Some(l) => serde_json::json!({ "lifecycle": l }),
        None => {
            serde_json::json!({ "error": format!("anomaly {id:?} is not among those this AI service published (or kept)") })
        }
    }
}

pub const FLOWS: &str = ben_mesh_wire::FLOWS_SUBJECT;
pub const ANOMALIES: &str = "ai.anomalies.v1";
pub const EVIDENCE: &str = "ai.evidence.v1";

/// Counters.
#[derive(Debug, Default)]
pub struct MeshStats {
    pub flows: AtomicU64,
    /// Flows refused because the open windows held the most allowed.
    pub dropped_flows: AtomicU64,
    /// Flows that arrived after their window had closed (judged in a later
    /// one).
    pub late_flows: AtomicU64,
    /// Sensors' batches that never arrived (gaps in their numbers).
    pub missing_batches: AtomicU64,
    pub bad_rows: AtomicU64,
    /// Flow batches not signed by a sensor's key, or taken before (a
    /// replay): dead-lettered.
    pub refused_flows: AtomicU64,
    pub published: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Anomalies and evidence the bus did not take (counted, not lost
    /// silently).
    pub publish_errors: AtomicU64,
    /// Times the feedback state could not be stored.
    pub feedback_write_errors: AtomicU64,
    /// Policy requests for a network published.
    pub network_requests: AtomicU64,
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
    feedback: FeedbackSettings,
    networks: networks::NetworkConfig,
) -> Result<(), String> {
    networks.check()?;
    let mut networks = networks::Networks::new(networks);
    let header = csv_header();
    let names = detect::FlowTable::parse(&header)
        .map_err(|e| e.to_string())?
        .feature_names;
    let model = detect::LgbmModel::parse(detect::defaults::MODEL).map_err(|e| e.to_string())?;
    let baseline =
        detect::Baseline::parse(detect::defaults::BASELINE).map_err(|e| e.to_string())?;
    let detector = detect::Detector::new(
        detect::Config::default(),
        model,
        detect::defaults::MODEL_VERSION.to_owned(),
        &baseline,
        detect::defaults::RULES,
        &names,
    )
    .map_err(|e| e.to_string())?;
    let mut stream = detect::Stream::new(
        detector,
        detect::StreamConfig {
            max_open_flows: max_buffer,
            ..detect::StreamConfig::default()
        },
    );
    let mut fb = load_feedback(&feedback)?;
    stream.detector_mut().set_threshold(fb.threshold());
    let sub = |s: &'static str, q: Option<&'static str>| {
        let bus = deps.bus.clone();
        async move {
            bus.subscribe(s, q)
                .await
                .map_err(|e| format!("subscribing to {s}: {e}"))
        }
    };
    let mut flows = sub(FLOWS, Some("mesh")).await?;
    let mut commits = sub(ben_mesh_wire::COMMITS_SUBJECT, None).await?;
    let mut policies = sub(ben_mesh_wire::POLICY_SUBJECT, None).await?;
    let mut acks = sub(ben_mesh_wire::ACK_SUBJECT, None).await?;
    let mut queries = sub(FEEDBACK_QUERY, None).await?;
    let every = every.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_step = tokio::time::Instant::now();
    let mut counted = (0u64, 0u64, 0u64);
    let mut order = BatchOrder::default();
    let now_us = || deps.clock.now_ns() / 1_000;
    let mut fb_tick = tokio::time::interval(Duration::from_secs(1));
    let now_ms = || (deps.clock.now_ns() / 1_000_000).max(0) as u64;
    let mut dirty = false;
    let mut saved_at = 0u64;
    // Refused requests already said (bounded: cleared when large).
    let mut refused_requests = std::collections::HashSet::new();
    loop {
        tokio::select! {
            m = flows.next() => {
                let Some(m) = m else { break };
                // Only a sensor's key: flows decide which addresses get
                // named, and blocked.
                let batch = match ben_wire::open_bytes::<FlowBatch>(&m.payload, &deps.keyring) {
                    Ok(b) => b.into_inner(),
                    Err(e) => {
                        stats.refused_flows.fetch_add(1, Ordering::Relaxed);
                        deps.dead_letter(
                            FLOWS,
                            format!("flows refused: not a batch signed by a sensor's key ({e})"),
                            m.payload.len(),
                        )
                        .await;
                        continue;
                    }
                };
                // A signed batch taken before is refused: a replay would
                // count its flows again and name their sources again.
                match order.take(&batch) {
                    Order::Next { missing } => {
                        stats.missing_batches.fetch_add(missing, Ordering::Relaxed);
                        if missing > 0 {
                            tracing::warn!(
                                service = %deps.id, sensor = %batch.sensor, missing,
                                "batches of flows never arrived"
                            );
                        }
                    }
                    o @ (Order::Replayed | Order::OldRun) => {
                        stats.refused_flows.fetch_add(1, Ordering::Relaxed);
                        let why = if o == Order::Replayed {
                            "taken before"
                        } else {
                            // A sensor restarted on a clock set back is refused too:
                            // the reason says how to let it in.
                            "from an earlier run of the sensor (or its clock went back: restarting the AI service forgets the runs)"
                        };
                        deps.dead_letter(
                            FLOWS,
                            format!(
                                "flows refused: batch {} of {}'s run {} was {why} (a replay)",
                                batch.seq, batch.sensor, batch.incarnation
                            ),
                            m.payload.len(),
                        )
                        .await;
                        continue;
                    }
                }
                let text = batch.rows.iter().fold(header.clone(), |mut t, row| {
                    t.push('\n');
                    t.push_str(String::from_utf8_lossy(row).trim());
                    t
                });
                let (table, errors) = detect::FlowTable::parse_lenient(&text);
                stats.bad_rows.fetch_add(errors.len() as u64, Ordering::Relaxed);
                for e in errors.iter().take(3) {
                    deps.dead_letter(FLOWS, format!("bad flow record: {e}"), 0).await;
                }
                stats.flows.fetch_add(table.flows.len() as u64, Ordering::Relaxed);
                stream.push(table.flows, now_us());
                // Judged at once unless a step ran less than `every` ago
                // (then the tick takes them).
                if last_step.elapsed() >= every {
                    last_step = tokio::time::Instant::now();
                    let step = stream.step(now_us());
                    publish_step(&deps, &stats, &mut stream, step, Published { fb: &mut fb, dirty: &mut dirty, counted: &mut counted, networks: &mut networks }).await;
                }
            }
            _ = tick.tick() => {
                last_step = tokio::time::Instant::now();
                let step = stream.step(now_us());
                publish_step(&deps, &stats, &mut stream, step, Published { fb: &mut fb, dirty: &mut dirty, counted: &mut counted, networks: &mut networks }).await;
            }
            m = commits.next() => {
                let Some(m) = m else { break };
                match ben_wire::open_bytes::<CommitEvent>(&m.payload, &deps.keyring) {
                    Ok(v) => {
                        let c = v.into_inner();
                        // Its own requests refused: said, with the reason
                        // (once, by the validator that announces first).
                        if refused_requests.len() > 10_000 {
                            refused_requests.clear();
                        }
                        for r in &c.rejected_requests {
                            if r.id.starts_with(&format!("{}-", deps.id)) && refused_requests.insert(r.id.clone()) {
                                tracing::warn!(service = %deps.id, request = %r.id, reason = %r.reason,
                                    "the validators refused a policy request");
                            }
                        }
                        let rejected: Vec<(String, String)> =
                            c.rejected.into_iter().map(|r| (r.id, r.reason)).collect();
                        fb.commit(&c.validator, c.height, &c.anomalies, &rejected, now_ms());
                        dirty |= !c.anomalies.is_empty() || !rejected.is_empty();
                    }
                    Err(e) => refused(&deps, ben_mesh_wire::COMMITS_SUBJECT, e, &m.payload).await,
                }
            }
            m = policies.next() => {
                let Some(m) = m else { break };
                match ben_wire::open_bytes::<PolicyEvent>(&m.payload, &deps.keyring) {
                    Ok(v) => {
                        for p in v.into_inner().policies {
                            fb.policy(&p.id, &p.anomalies);
                        }
                        dirty = true;
                    }
                    Err(e) => refused(&deps, ben_mesh_wire::POLICY_SUBJECT, e, &m.payload).await,
                }
            }
            m = acks.next() => {
                let Some(m) = m else { break };
                match ben_wire::open_bytes::<PolicyAck>(&m.payload, &deps.keyring) {
                    Ok(v) => {
                        let a = v.into_inner();
                        fb.ack(Ack {
                            agent: a.agent,
                            policy: a.policy,
                            target: a.target,
                            status: a.status,
                            at_ms: now_ms(),
                        });
                        dirty = true;
                    }
                    Err(e) => refused(&deps, ben_mesh_wire::ACK_SUBJECT, e, &m.payload).await,
                }
            }
            q = queries.next() => {
                let Some(q) = q else { break };
                let answer = serde_json::to_vec(&feedback_answer(&fb, &q.payload)).unwrap_or_default();
                if let Err(e) = deps.bus.reply(&q, answer).await {
                    tracing::warn!(service = %deps.id, error = %e, "feedback query not answered");
                }
            }
            _ = fb_tick.tick() => {
                let now = now_ms();
                if let Some(c) = fb.tick(now) {
                    stream.detector_mut().set_threshold(c.to);
                    tracing::info!(
                        service = %deps.id, from = c.from, to = c.to, rate = c.rate,
                        committed = c.committed, decided = c.decided, reason = %c.reason,
                        "publish threshold changed"
                    );
                    dirty = true;
                    saved_at = 0; // a change is stored at once
                }
                if let Some(path) = feedback.state.as_ref() {
                    if dirty && now >= saved_at + 5_000 {
                        match save_feedback(&fb, path) {
                            Ok(()) => {
                                dirty = false;
                                saved_at = now;
                            }
                            Err(e) => {
                                stats.feedback_write_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(service = %deps.id, error = %e, "feedback state not stored");
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(path) = feedback.state.as_ref().filter(|_| dirty) {
        save_feedback(&fb, path)?;
    }
    Ok(())
}

/// What a step's publishing updates.
struct Published<'a> {
    fb: &'a mut Feedback,
    dirty: &'a mut bool,
    /// The stream's counts already added to the stats.
    counted: &'a mut (u64, u64, u64),
    networks: &'a mut networks::Networks,
}

/// Publishes what a step of the stream produced: new anomalies (sealed, on
/// `ai.anomalies.v1`, into the feedback loop) with their evidence so far,
/// a network's policy request when one is due, and the complete evidence
/// of anomalies whose window closed. Counts what the stream refused or
/// filed late.
async fn publish_step(
    deps: &Deps,
    stats: &MeshStats,
    stream: &mut detect::Stream,
    step: detect::Step,
    out: Published<'_>,
) {
    let Published {
        fb,
        dirty,
        counted,
        networks,
    } = out;
    // The stream's totals since this run began, added as they grow (a
    // restarted service starts a new stream).
    let c = stream.counts();
    stats
        .dropped_flows
        .fetch_add(c.dropped - counted.0, Ordering::Relaxed);
    stats
        .late_flows
        .fetch_add(c.late - counted.1, Ordering::Relaxed);
    if c.clock_refused > counted.2 {
        tracing::warn!(
            service = %deps.id, flows = c.clock_refused - counted.2,
            "flows ending more than ten minutes ahead of the flow clock (a sensor's clock wrong?): judged, the clock did not follow them"
        );
    }
    *counted = (c.dropped, c.late, c.clock_refused);
    let now_ms = (deps.clock.now_ns() / 1_000_000).max(0) as u64;
    let detected_ms = stream
        .flow_now(deps.clock.now_ns() / 1_000)
        .map_or(now_ms, |t| (t / 1_000).max(0) as u64);
    for d in &step.detections {
        if !d.published {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.published.fetch_add(1, Ordering::Relaxed);
        // Keyed by source: one source's anomalies in order; evidence by
        // anomaly, so a window's later, complete evidence follows the first.
        let sent = Publish::new(ANOMALIES, deps.signer.seal_bytes(&d.event))
            .keyed(source_key(&d.event))
            .send(deps.bus.as_ref(), &stats.publish_errors)
            .await;
        if sent {
            let e = &d.event;
            fb.published(&e.id, &e.class, e.confidence, detected_ms, now_ms);
            *dirty = true;
            let source = e.source.as_ref().and_then(|s| s.ip.parse().ok());
            if let Some(ask) = source.and_then(|s| networks.observe(&e.id, s, now_ms)) {
                request_network(deps, stats, ask, networks.ttl_ms(), now_ms).await;
            }
        }
        Publish::new(EVIDENCE, deps.signer.seal_bytes(&d.evidence))
            .keyed(d.event.id.clone())
            .send(deps.bus.as_ref(), &stats.publish_errors)
            .await;
    }
    for e in &step.evidence {
        Publish::new(EVIDENCE, deps.signer.seal_bytes(e))
            .keyed(e.anomaly_id.clone())
            .send(deps.bus.as_ref(), &stats.publish_errors)
            .await;
    }
}

/// The key of an anomaly's messages: its source address.
fn source_key(e: &detect::wire::AnomalyEvent) -> Vec<u8> {
    e.source
        .as_ref()
        .map(|s| s.ip.clone().into_bytes())
        .unwrap_or_default()
}

/// Asks the validators to block a network many of whose addresses attack.
async fn request_network(
    deps: &Deps,
    stats: &MeshStats,
    ask: networks::Ask,
    ttl_ms: u64,
    now_ms: u64,
) {
    let r = ben_mesh_wire::PolicyRequest {
        service: deps.id.clone(),
        id: format!("{}-net-{}-{now_ms}", deps.id, ask.target),
        anomalies: ask.anomalies,
        action: "drop".into(),
        target: ask.target.to_string(),
        ttl_ms,
        requested_at_ms: now_ms,
        ..Default::default()
    };
    tracing::warn!(service = %deps.id, network = %ask.target, sources = ask.sources, request = %r.id,
        "attacks from {} addresses of one network: asking the validators to block it", ask.sources);
    if Publish::new(
        ben_mesh_wire::POLICY_REQUEST_SUBJECT,
        deps.signer.seal_bytes(&r),
    )
    .keyed(r.target.clone())
    .send(deps.bus.as_ref(), &stats.publish_errors)
    .await
    {
        stats.network_requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// A message on one of the validators' or agents' subjects that does not
/// verify: dead-lettered with the reason, never used.
async fn refused(deps: &Deps, subject: &str, e: ben_wire::WireError, payload: &[u8]) {
    deps.dead_letter_to(
        ben_mesh_wire::DLQ_SUBJECT,
        subject,
        format!("refused by the AI service's feedback loop: {e}"),
        payload.len(),
        payload,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shell's store: what it saved comes back after a restart
    /// (threshold, lifecycles, changes); a file it cannot read stops the
    /// start with the file's name instead of starting the calibration over.
    #[test]
    fn feedback_state_survives_a_restart_and_a_bad_file_is_named() {
        let dir = std::env::temp_dir().join(format!(
            "ben-feedback-{}-{}",
            std::process::id(),
            ben_time::now_ns()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = FeedbackSettings {
            cfg: ben_mesh_feedback::Config {
                min_decided: 5,
                ..Default::default()
            },
            f: 1,
            state: Some(dir.join("mesh-1-feedback.json")),
        };
        let mut fb = load_feedback(&settings).unwrap();
        for k in 0..10 {
            let id = format!("a{k}");
            fb.published(&id, "portscan", 0.8, 1_000, 2_000);
            for v in ["validator-1", "validator-2"] {
                fb.commit(v, 3, &[], &[(id.clone(), "stale".into())], 3_000);
            }
        }
        let change = fb
            .tick(120_000)
            .expect("10 of 10 refused: the threshold rises");
        save_feedback(&fb, settings.state.as_ref().unwrap()).unwrap();
        let back = load_feedback(&settings).unwrap();
        assert_eq!(back.threshold(), change.to);
        assert_eq!(back.changes().count(), 1);
        assert_eq!(
            back.lifecycle("a3").map(|l| l.state),
            Some(ben_mesh_feedback::State::Rejected)
        );
        let answer = feedback_answer(&back, b"");
        assert_eq!(answer["threshold"].as_f64(), Some(change.to));
        assert_eq!(answer["counts"]["REJECTED"], 10);
        assert_eq!(
            feedback_answer(&back, b"a3")["lifecycle"]["reason"],
            "stale"
        );
        std::fs::write(settings.state.as_ref().unwrap(), b"{not json").unwrap();
        let e = load_feedback(&settings).err().unwrap();
        assert!(
            e.contains("mesh-1-feedback.json") && e.contains("move it away"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
