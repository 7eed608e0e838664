//! The spine pipeline on the data path's wire records, shared by every
//! component that redacts (the spine, and Lucius on ingest): an
//! [`Evaluator`] built from a role's artifacts, and one `pb::Record` in
//! (values in slot order, or a JSON body) → the evaluated, redacted record
//! out, naming the intent version that processed it (invariant 4) and
//! carrying only the redacted body, never the raw values (invariant 5).

use crate::{Evaluator, Settings};
use ben_bitspec::canon::program_from_artifacts;
use ben_wire::pb;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Evaluator {
    /// Compiles a role's artifacts (schemas, packs, migrations, settings)
    /// into an evaluator for intent `version`, redacting with `key`.
    pub fn from_artifacts(
        arts: &BTreeMap<String, Vec<u8>>,
        version: &str,
        key: Option<ben_blot::BlotKey>,
    ) -> Result<Evaluator, String> {
        let program = program_from_artifacts(arts).map_err(|e| e.to_string())?;
        let settings =
            Settings::from_artifact(arts.get("settings").ok_or("no settings artifact")?)?;
        Ok(Evaluator::from_program(
            Arc::new(program),
            &settings.blot,
            version.to_string(),
            key,
        ))
    }

    /// Evaluates and redacts one record; `Err` is the dead-letter reason.
    pub fn process_record(&self, rec: pb::Record) -> Result<pb::Record, String> {
        let schema = self
            .program()
            .schema(&rec.schema, Some(rec.schema_version))
            .ok_or_else(|| {
                format!(
                    "unknown schema {} v{} in intent {}",
                    rec.schema,
                    rec.schema_version,
                    self.version()
                )
            })?;
        let (schema, values) = self
            .translate_encoded(schema, &rec.values, &rec.body)
            .map_err(|e| e.to_string())?;
        let out = self
            .evaluate_to_json(schema, &values)
            .map_err(|e| e.to_string())?;
        let s = &self.program().schemas[schema];
        Ok(pb::Record {
            id: rec.id,
            schema: s.name.clone(),
            schema_version: s.version,
            intent_version: self.version().to_string(),
            bee_subject: rec.bee_subject,
            app: rec.app,
            received_ns: rec.received_ns,
            body: out.body,
            flags: out.flags.into_iter().map(|(_, n)| n).collect(),
            bits: bits_bytes(&out.bits),
            meta: out.meta,
            // The raw values never leave: only the redacted body does.
            values: Vec::new(),
        })
    }
}

/// Bitmask words as little-endian bytes, pack by pack.
fn bits_bytes(bits: &[(String, Vec<u64>)]) -> Vec<u8> {
    bits.iter()
        .flat_map(|(_, w)| w.iter().flat_map(|x| x.to_le_bytes()))
        .collect()
}
