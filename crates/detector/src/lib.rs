//! # Detector
//!
//! Consumes the spines' enriched, redacted records (`ben.data.detector`,
//! queue group `detectors`), runs the bundle's playbooks over their flags
//! and fields, and emits signed signals on `ben.signal.<app>`, addressed to
//! the app whose records triggered them. It never reinterprets raw input:
//! it sees only what the spine let out (redacted values, flags).
//!
//! Window state lives with the playbooks of one intent version; a new
//! version starts fresh windows (stated here, not hidden).

use ben_bitspec::canon::program_from_artifacts;
use ben_bitspec::interp;
use ben_bitspec::ir::Program;
use ben_bitspec::Value;
use ben_component::{subjects, Deps, IntentAgent, Load, Publish, Role};
use ben_playbook::{Detector, Limits, Observed, Signal};
use ben_wire::pb;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct DetectorRole;

impl Role for DetectorRole {
    const NAME: &'static str = "detector";
    type Compiled = Arc<Program>;
    fn compile(
        &self,
        arts: &BTreeMap<String, Vec<u8>>,
        _version: &str,
    ) -> Result<Arc<Program>, String> {
        program_from_artifacts(arts)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

/// A record's fields as the detector sees them: the redacted JSON, read
/// without type coercion (a pseudonymised IP is a string here).
pub fn fields(program: &Program, schema: usize, body: &serde_json::Value) -> Vec<Value> {
    program.schemas[schema]
        .fields
        .iter()
        .map(|f| {
            let mut cur = Some(body);
            for seg in f.path.split('.') {
                cur = cur.and_then(|j| j.get(seg));
            }
            cur.and_then(|j| interp::json_to_value(j).ok())
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// Playbook state for one intent version.
pub struct Watch {
    pub version: String,
    program: Arc<Program>,
    detector: Detector,
}

impl Watch {
    pub fn new(version: String, program: Arc<Program>) -> Self {
        let detector = Detector::new(&program.playbooks, Limits::default());
        Watch {
            version,
            program,
            detector,
        }
    }

    /// Feeds one enriched record; returns the signals it triggers.
    pub fn observe(&mut self, rec: &pb::Record) -> Result<Vec<Signal>, String> {
        let schema = self
            .program
            .schema(&rec.schema, Some(rec.schema_version))
            .ok_or_else(|| format!("unknown schema {} v{}", rec.schema, rec.schema_version))?;
        let body: serde_json::Value = serde_json::from_slice(&rec.body)
            .map_err(|e| format!("record body is not JSON: {e}"))?;
        let values = fields(&self.program, schema, &body);
        let flags: Vec<&str> = rec.flags.iter().map(String::as_str).collect();
        Ok(self.detector.observe(&Observed {
            schema,
            at_ns: rec.received_ns,
            record: &values,
            flags: &flags,
        }))
    }
}

/// Counts for status lines and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub signals: AtomicU64,
    /// Flags set on the records this detector saw.
    pub flags: AtomicU64,
}

/// Runs a detector until the bus closes.
pub async fn run(deps: Deps, load: Arc<Load>, stats: Arc<Stats>) -> Result<(), String> {
    let agent = IntentAgent::new(deps.clone(), DetectorRole);
    let active = agent.active.clone();
    tokio::spawn(agent.clone().run());
    agent.ready().await;
    let _heartbeats =
        ben_component::start_heartbeats(&deps, "detector", active.clone(), load.clone());
    let mut watch: Option<Watch> = None;
    let mut seq = 0u64;
    let (id, signer) = (deps.id.clone(), deps.signer.clone());
    ben_component::consume(
        &deps,
        subjects::DETECTOR,
        "detectors",
        &active,
        &load,
        |loaded, rec: pb::Record, outbox| {
            if watch.as_ref().is_none_or(|w| w.version != loaded.version) {
                watch = Some(Watch::new(loaded.version.clone(), loaded.compiled.clone()));
            }
            let Some(w) = watch.as_mut() else {
                return Ok(());
            };
            stats
                .flags
                .fetch_add(rec.flags.len() as u64, Ordering::Relaxed);
            for s in w.observe(&rec)? {
                seq += 1;
                stats.signals.fetch_add(1, Ordering::Relaxed);
                let sig = pb::Signal {
                    id: format!("{id}-{seq}"),
                    playbook: s.playbook,
                    name: s.name,
                    severity: s.severity.name().to_string(),
                    key: s.key.iter().map(Value::to_text).collect(),
                    value: s.value,
                    at_ns: s.at_ns,
                    app: rec.app.clone(),
                    intent_version: w.version.clone(),
                };
                outbox.publish(Publish::new(
                    subjects::signal(&rec.app),
                    signer.seal_bytes(&sig),
                ));
            }
            Ok(())
        },
    )
    .await
}
