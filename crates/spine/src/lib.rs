//! # Spine
//!
//! Takes records the proxy routed to it (`ben.data.spine`, queue group
//! `spines`), and for each, against one snapshot of the active intent:
//! checks the envelope (schema and version known), evaluates every policy
//! pack on the schema (flags, bitmask, metadata), applies Blot redaction,
//! and forwards the enriched, redacted record to the detectors. The record
//! then names the intent version that processed it (invariant 4).
//!
//! Detector traffic is partitioned by the playbooks' group keys
//! ([`ben_playbook::Partitions`]): a record goes to
//! `ben.data.detector.<home>` once (the copy that counts), and to
//! `ben.data.detector.<k>.copy` for each other partition a playbook's
//! group of it lives in, so every group's window is kept by the one
//! detector serving its partition, however many detectors run.
//!
//! Fails closed (invariant 5): a record that cannot be decoded, whose
//! schema is unknown, that arrives before any intent is active, or whose
//! redaction fails goes to the dead-letter subject with the reason — never
//! forward, never with its raw values.

use ben_component::{subjects, Deps, IntentAgent, Load, Role};
use ben_intent::Evaluator;
use ben_wire::pb;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Spine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The hmac key Blot uses (same epoch across spines, so pseudonyms join).
    pub blot_key: Option<ben_blot::BlotKey>,
}

/// The spine's role: compile schemas + packs + migrations + settings into
/// an evaluator.
pub struct SpineRole {
    key: Option<ben_blot::BlotKey>,
}

impl SpineRole {
    pub fn new(key: Option<ben_blot::BlotKey>) -> Self {
        SpineRole { key }
    }
}

impl Role for SpineRole {
    const NAME: &'static str = "spine";
    type Compiled = Evaluator;
    fn compile(
        &self,
        arts: &BTreeMap<String, Vec<u8>>,
        version: &str,
    ) -> Result<Evaluator, String> {
        Evaluator::from_artifacts(arts, version, self.key.clone())
    }
}

/// Processes one record ([`Evaluator::process_record`]); `Err` is the
/// dead-letter reason.
pub fn process(ev: &Evaluator, rec: pb::Record) -> Result<pb::Record, String> {
    ev.process_record(rec)
}

/// Where a processed record goes among the detector partitions: by the
/// group keys of the playbooks on its schema, read from its redacted body
/// exactly as detectors read it.
pub fn partitions(ev: &Evaluator, rec: &pb::Record) -> ben_playbook::Partitions {
    let p = ev.program();
    let n = subjects::DETECTOR_PARTITIONS;
    let schema = p
        .schema(&rec.schema, Some(rec.schema_version))
        .filter(|s| p.playbooks.iter().any(|pb| pb.schema == *s));
    let Some(schema) = schema else {
        return ben_playbook::Partitions {
            home: ben_playbook::partition_of_id(&rec.id, n),
            copies: vec![],
        };
    };
    let body: serde_json::Value =
        serde_json::from_slice(&rec.body).unwrap_or(serde_json::Value::Null);
    let values = ben_playbook::record_from_json(&p.schemas[schema], &body);
    ben_playbook::Partitions::of(&p.playbooks, schema, &values, &rec.id, n)
}

/// Runs a spine until the bus closes.
pub async fn run(cfg: Config, deps: Deps, load: Arc<Load>) -> Result<(), String> {
    let agent = IntentAgent::new(deps.clone(), SpineRole { key: cfg.blot_key });
    let active = agent.active.clone();
    tokio::spawn(agent.clone().run());
    agent.ready().await;
    let _heartbeats = ben_component::start_heartbeats(&deps, "spine", active.clone(), load.clone());
    ben_component::consume(
        &deps,
        subjects::SPINE,
        "spines",
        &active,
        &load,
        |loaded, rec, out| {
            let rec = process(&loaded.compiled, rec)?;
            let parts = partitions(&loaded.compiled, &rec);
            for k in &parts.copies {
                out.record(subjects::detector_copy(*k), rec.clone());
            }
            out.record(subjects::detector_partition(parts.home), rec);
            Ok(())
        },
    )
    .await
}
