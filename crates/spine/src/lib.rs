//! # Spine
//!
//! Takes records the proxy routed to it (`ben.data.spine`, queue group
//! `spines`), and for each, against one snapshot of the active intent:
//! checks the envelope (schema and version known), evaluates every policy
//! pack on the schema (flags, bitmask, metadata), applies Blot redaction,
//! and forwards the enriched, redacted record to the detectors
//! (`ben.data.detector`). The record then names the intent version that
//! processed it (invariant 4).
//!
//! Fails closed (invariant 5): a record that cannot be decoded, whose
//! schema is unknown, that arrives before any intent is active, or whose
//! redaction fails goes to the dead-letter subject with the reason — never
//! forward, never with its raw values.

use ben_bitspec::canon::program_from_artifacts;
use ben_component::{subjects, Deps, IntentAgent, Load, Role};
use ben_intent::{Evaluator, Settings};
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
        let program = program_from_artifacts(arts).map_err(|e| e.to_string())?;
        let settings =
            Settings::from_artifact(arts.get("settings").ok_or("no settings artifact")?)?;
        Ok(Evaluator::from_program(
            Arc::new(program),
            &settings.blot,
            version.to_string(),
            self.key.clone(),
        ))
    }
}

/// Bitmask words as little-endian bytes, pack by pack.
fn bits_bytes(bits: &[(String, Vec<u64>)]) -> Vec<u8> {
    bits.iter()
        .flat_map(|(_, w)| w.iter().flat_map(|x| x.to_le_bytes()))
        .collect()
}

/// Processes one record; `Err` is the dead-letter reason.
pub fn process(ev: &Evaluator, rec: pb::Record) -> Result<pb::Record, String> {
    let schema = ev
        .program()
        .schema(&rec.schema, Some(rec.schema_version))
        .ok_or_else(|| {
            format!(
                "unknown schema {} v{} in intent {}",
                rec.schema,
                rec.schema_version,
                ev.version()
            )
        })?;
    let (schema, values) = ev
        .translate_encoded(schema, &rec.values, &rec.body)
        .map_err(|e| e.to_string())?;
    let out = ev
        .evaluate_to_json(schema, &values)
        .map_err(|e| e.to_string())?;
    let s = &ev.program().schemas[schema];
    Ok(pb::Record {
        id: rec.id,
        schema: s.name.clone(),
        schema_version: s.version,
        intent_version: ev.version().to_string(),
        bee_subject: rec.bee_subject,
        app: rec.app,
        received_ns: rec.received_ns,
        body: out.body,
        flags: out.flags.into_iter().map(|(_, n)| n).collect(),
        bits: bits_bytes(&out.bits),
        meta: out.meta,
        // The raw values never leave a spine: only the redacted body does.
        values: Vec::new(),
    })
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
            out.record(subjects::DETECTOR, process(&loaded.compiled, rec)?);
            Ok(())
        },
    )
    .await
}
