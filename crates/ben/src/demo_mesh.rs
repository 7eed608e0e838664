//! The security path of `ben up --demo`: a bundled capture of a port scan
//! (`examples/mesh/portscan.pcap`, made by `cargo run -p ben-mesh-flows
//! --features test-support --example write-demo-scan`) replayed through
//! the sensor's flow extraction onto `ben.mesh.flows`, its timestamps
//! moved to now; then each stage as it happens, with its time since the
//! replay: the AI service's signed anomaly, the four validators' commit,
//! the policy with its QC, the enforcement agent's ack, and the feedback
//! loop's record of it (lifecycle COMMITTED, ack seen, the threshold). A
//! stage that does not come within its time is said, not left out.

use anyhow::Result;
use ben_bus::Bus;
use ben_mesh_detect::wire::AnomalyEvent;
use ben_mesh_sensor::lab::Lan;
use ben_mesh_wire::{CommitEvent, PolicyAck, PolicyEvent};
use ben_wire::pb;
use prost::Message as _;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The capture.
pub const CAPTURE: &[u8] = include_bytes!("../../../examples/mesh/portscan.pcap");
/// Its scanner.
pub const SCANNER: &str = "203.0.113.66";
/// The id the demo's replay signs its flows as: a sensor key made for
/// the run and trusted by `ben up` (the AI service takes flows only from
/// sensors' keys).
pub const SENSOR_ID: &str = "sensor-demo";
/// How long each stage may take (the AI service judges flows as they
/// arrive; validators, agent and feedback each take well under a second).
const WITHIN: Duration = Duration::from_secs(15);

/// The capture's flows as CSV rows, timestamps moved so its last packet
/// is `now_ns` (see [`ben_mesh_flows::replay_rows`]).
pub fn flows(now_ns: u64) -> Result<(usize, Vec<Vec<u8>>)> {
    Ok(ben_mesh_flows::replay_rows(CAPTURE, now_ns)?)
}

fn say(t0: Instant, tty: bool, what: String) {
    if tty {
        print!("\r\x1b[2K");
    }
    println!("security path +{:.2} s  {what}", t0.elapsed().as_secs_f64());
}

/// The next message on `sub` (a signed `T`) for which `want` holds, or
/// none by `deadline`.
pub(crate) async fn next<T: prost::Message + Default>(
    sub: &mut ben_bus::Subscription,
    deadline: tokio::time::Instant,
    want: impl Fn(&T) -> bool,
) -> Option<T> {
    loop {
        let m = tokio::time::timeout_at(deadline, sub.next()).await.ok()??;
        let Ok(env) = pb::SignedEnvelope::decode(&m.payload[..]) else {
            continue;
        };
        match T::decode(&env.payload[..]) {
            Ok(t) if want(&t) => return Some(t),
            _ => continue,
        }
    }
}

/// A sensor key for the replay, to be trusted as [`SENSOR_ID`].
pub fn sensor_key() -> Result<ben_wire::Signer> {
    Ok(ben_wire::Signer::from_secret(
        ben_runtime::random32().map_err(anyhow::Error::msg)?,
    ))
}

/// The rows as signed batches for `ben.mesh.flows`, a new run of the
/// demo's sensor each time (the AI service refuses a batch it has taken).
pub fn sealed(bus: &dyn Bus, sensor: &ben_wire::Signer, rows: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut seq = ben_mesh_sensor::Numbering::starting_at(ben_time::now_ns().max(0) as u64);
    ben_mesh_sensor::seal_batches(
        sensor,
        SENSOR_ID,
        &mut seq,
        rows,
        ben_mesh_sensor::batch_bytes(bus.max_payload()),
    )
}

/// The subscriptions the security path follows.
struct Stages {
    anomalies: ben_bus::Subscription,
    commits: ben_bus::Subscription,
    policies: ben_bus::Subscription,
    acks: ben_bus::Subscription,
}

impl Stages {
    async fn new(bus: &Arc<dyn Bus>) -> Result<Stages> {
        Ok(Stages {
            anomalies: bus
                .subscribe(ben_mesh_detect::wire::ANOMALIES_SUBJECT, None)
                .await?,
            commits: bus.subscribe(ben_mesh_wire::COMMITS_SUBJECT, None).await?,
            policies: bus.subscribe(ben_mesh_wire::POLICY_SUBJECT, None).await?,
            acks: bus.subscribe(ben_mesh_wire::ACK_SUBJECT, None).await?,
        })
    }
}

/// Replays the scan, signed by `sensor` (trusted as [`SENSOR_ID`]), and
/// follows it to the enforcement agent's ack.
pub async fn run(bus: Arc<dyn Bus>, tty: bool, sensor: ben_wire::Signer) -> Result<()> {
    let stages = Stages::new(&bus).await?;
    let t0 = Instant::now();
    let (packets, rows) = flows(ben_time::now_ns().max(0) as u64)?;
    let n = rows.len();
    for batch in sealed(bus.as_ref(), &sensor, rows) {
        bus.publish(ben_mesh_ai::FLOWS, batch).await?;
    }
    say(
        t0,
        tty,
        format!(
            "port scan from {SCANNER} replayed: {packets} packets → {n} flows on ben.mesh.flows"
        ),
    );
    follow(&bus, stages, t0, tty, SCANNER).await
}

/// `ben up` on `lan`: its sensor on the victim's interface (flows ending
/// 2 s after their last packet), its enforcement agent holding the
/// victim's nftables, the AI service every `every`. What `ben up --demo
/// --netns` and `ben bench block` run.
pub fn live_config(cfg: &mut ben_embedded::Config, lan: &Lan, every: Duration) {
    cfg.counts.insert("sensor", 1);
    cfg.sensor = ben_runtime::table::SensorEnv {
        iface: Some("evictim".into()),
        filter: None,
        netns: Some(lan.ns("victim")),
        idle_timeout_ms: 2_000,
        flow_timeout_ms: 0,
    };
    cfg.enforce_backend = Some("nftables".into());
    cfg.enforce_netns = Some(lan.ns("victim"));
    cfg.mesh_every = every;
}

/// Waits (up to 10 s) until `sys`'s sensor has its ring bound: a scan
/// sent before would not be seen.
pub async fn sensor_ready(sys: &ben_embedded::System) -> Result<()> {
    let sensor = &sys.stats.shared.sensor;
    let until = Instant::now() + Duration::from_secs(10);
    while !sensor.capturing.load(std::sync::atomic::Ordering::Acquire) {
        if Instant::now() >= until {
            anyhow::bail!("the sensor is not capturing after 10 s (see the log for why)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Whether the scanner, from `.host`, connects to the victim's web server.
pub async fn connects(lan: &Arc<Lan>, host: u8) -> Result<bool> {
    let lan = lan.clone();
    tokio::task::spawn_blocking(move || lan.scanner_connects(host))
        .await?
        .map_err(anyhow::Error::msg)
}

/// `ben up --demo --netns`: the same path on live traffic. A LAN of
/// network namespaces; the sensor on the victim's interface and the agent
/// in the victim's nftables (set up by the caller); a benign client loads
/// pages throughout; the scanner scans, is followed to its block, and its
/// next connection is shown to fail.
pub async fn live(bus: Arc<dyn Bus>, tty: bool, lan: Arc<Lan>) -> Result<()> {
    let stages = Stages::new(&bus).await?;
    let t0 = Instant::now();
    let (scanner, victim) = (lan.ip(2), lan.ip(1));
    let reach = |lan: Arc<Lan>| async move {
        match connects(&lan, 2).await {
            Ok(true) => "connects",
            Ok(false) => "cannot connect (its packets are dropped)",
            Err(_) => "could not be tried",
        }
    };
    say(
        t0,
        tty,
        format!(
            "live in network namespaces: sensor on the victim's interface ({victim}), agent in the victim's nftables; {scanner} {} to the victim's web server",
            reach(lan.clone()).await
        ),
    );
    let user = lan.browse();
    let l = lan.clone();
    let how = tokio::task::spawn_blocking(move || l.scan(2))
        .await?
        .map_err(anyhow::Error::msg)?;
    say(
        t0,
        tty,
        format!("{scanner} scanned ports 1–300 of {victim} (a TCP connect scan: {how})"),
    );
    follow(&bus, stages, t0, tty, &scanner).await?;
    say(
        t0,
        tty,
        format!(
            "{scanner} now {} to the victim's web server",
            reach(lan.clone()).await
        ),
    );
    let pages = tokio::task::spawn_blocking(move || user.join())
        .await
        .ok()
        .and_then(|r| r.ok());
    say(
        t0,
        tty,
        match pages {
            Some(Ok(_)) => "the benign client loaded all its 30 pages throughout".to_string(),
            Some(Err(e)) => format!("the benign client failed: {e}"),
            None => "the benign client's thread did not finish".to_string(),
        },
    );
    Ok(())
}

/// Follows the scan from `scanner` through its stages: anomaly, commit,
/// policy, the agent's ack, the feedback loop's record.
async fn follow(
    bus: &Arc<dyn Bus>,
    stages: Stages,
    t0: Instant,
    tty: bool,
    scanner: &str,
) -> Result<()> {
    let Stages {
        mut anomalies,
        mut commits,
        mut policies,
        mut acks,
    } = stages;
    let deadline = tokio::time::Instant::now() + WITHIN;
    let late = |stage: &str| {
        say(
            t0,
            tty,
            format!(
                "no {stage} within {} s: see the status line and dead letters",
                WITHIN.as_secs()
            ),
        )
    };
    // The anomaly.
    let scanned = |a: &AnomalyEvent| a.source.as_ref().is_some_and(|s| s.ip == scanner);
    let Some(a) = next(&mut anomalies, deadline, scanned).await else {
        late("anomaly");
        return Ok(());
    };
    say(
        t0,
        tty,
        format!(
            "anomaly {} from {scanner}: {} (confidence {:.2}, {} flows, {} targets), signed by the AI service",
            &a.id[..a.id.len().min(8)], a.class, a.confidence, a.flow_count, a.distinct_targets
        ),
    );
    // Committed by every validator.
    let mut committed = BTreeSet::new();
    while committed.len() < ben_runtime::table::VALIDATORS {
        let carries = |c: &CommitEvent| c.anomalies.contains(&a.id);
        let Some(c) = next(&mut commits, deadline, carries).await else {
            late("commit by every validator");
            return Ok(());
        };
        if committed.insert(c.validator.clone()) && committed.len() == 1 {
            say(
                t0,
                tty,
                format!(
                    "committed at height {} (state root {}…)",
                    c.height,
                    &c.state_root[..c.state_root.len().min(12)]
                ),
            );
        }
    }
    say(
        t0,
        tty,
        format!("all {} validators committed it", committed.len()),
    );
    // The policy, with its QC.
    let blocks = |e: &PolicyEvent| e.policies.iter().any(|p| p.target == scanner);
    let Some(ev) = next(&mut policies, deadline, blocks).await else {
        late("policy");
        return Ok(());
    };
    if let Some(pol) = ev.policies.iter().find(|p| p.target == scanner) {
        say(
            t0,
            tty,
            format!(
                "policy {}: {} {scanner} until {} (block {}, with its QC)",
                pol.id,
                pol.action,
                ben_time::format_rfc3339(pol.expires_at_ms as i64 * 1_000_000),
                ev.height
            ),
        );
    }
    // The agent's ack.
    let Some(ack) = next(&mut acks, deadline, |a: &PolicyAck| a.target == scanner).await else {
        late("enforcement ack");
        return Ok(());
    };
    say(
        t0,
        tty,
        format!(
            "{} {} it ({}{}): QC checked against the validator set",
            ack.agent,
            ack.status,
            ack.backend,
            if ack.backend == "dry-run" {
                "; as root with BEN_ENFORCE=nftables it drops the packets"
            } else {
                ""
            }
        ),
    );
    // The feedback loop: the anomaly's lifecycle ends COMMITTED with the
    // ack, and the threshold the AI service publishes above.
    loop {
        // No answer yet is "not yet" until the deadline (then said below).
        let wait = Duration::from_secs(2);
        let life = ben_control::mesh::ask_feedback(bus.as_ref(), &a.id, wait)
            .await
            .map(|v| v["lifecycle"].clone())
            .unwrap_or_default();
        let acked = life["acks"].as_array().is_some_and(|x| !x.is_empty());
        if life["state"] == "COMMITTED" && acked {
            let summary = ben_control::mesh::ask_feedback(bus.as_ref(), "", wait)
                .await
                .unwrap_or_default();
            let ms = |k: &str| life[k].as_u64().unwrap_or(0);
            say(
                t0,
                tty,
                format!(
                    "feedback: anomaly COMMITTED {:.2} s after it was published, ack recorded; publish threshold {:.2} (benctl mesh anomaly {}, benctl mesh thresholds)",
                    ms("committed_ms").saturating_sub(ms("published_ms")) as f64 / 1000.0,
                    summary["threshold"].as_f64().unwrap_or(f64::NAN),
                    a.id
                ),
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            late("feedback lifecycle COMMITTED with the ack");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
