//! Canonical artifacts: the checked program as deterministic JSON, one
//! artifact per item, so each component fetches only what its role needs
//! and the bundle digest is identical on every machine for the same
//! sources (independent of file names, file order, whitespace, comments).
//!
//! Items refer to schemas by id (`http.request v2`), never by position, so
//! an artifact means the same thing whichever other artifacts travel with
//! it. [`program_from_artifacts`] is the inverse: a component rebuilds the
//! part of the program its artifacts describe (regexes are compiled again,
//! with the checker's limits).

use crate::ir::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize)]
struct Placed<T> {
    schema: String,
    item: T,
}

#[derive(Serialize, Deserialize)]
struct PlacedMigration {
    from: String,
    to: String,
    item: Migration,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain data types cannot fail (no maps with
    // non-string keys, no NaN constants: literals are finite).
    serde_json::to_vec(v).unwrap_or_default()
}

/// One schema-bound item as an artifact.
fn placed<T: Serialize>(kind: &str, name: &str, schema: String, item: T) -> (String, Vec<u8>) {
    (format!("{kind}/{name}"), json(&Placed { schema, item }))
}

/// `(artifact name, canonical bytes)` for every part of the program, sorted
/// by name.
pub fn artifacts(p: &Program) -> Vec<(String, Vec<u8>)> {
    let sid = |i: usize| p.schemas.get(i).map(Schema::id).unwrap_or_default();
    let mut out = Vec::new();
    for s in &p.schemas {
        out.push((format!("schema/{}@v{}", s.name, s.version), json(s)));
    }
    // Contracts, packs and playbooks travel with their schema's id; their
    // own schema index is zeroed (positions are not part of the meaning).
    for c in &p.contracts {
        out.push(placed(
            "contract",
            &c.name,
            sid(c.schema),
            Contract {
                schema: 0,
                ..c.clone()
            },
        ));
    }
    for pk in &p.packs {
        out.push(placed(
            "pack",
            &pk.name,
            sid(pk.schema),
            Pack {
                schema: 0,
                ..pk.clone()
            },
        ));
    }
    for pb in &p.playbooks {
        out.push(placed(
            "playbook",
            &pb.name,
            sid(pb.schema),
            Playbook {
                schema: 0,
                ..pb.clone()
            },
        ));
    }
    for m in &p.migrations {
        let mut item = m.clone();
        item.from = 0;
        item.to = 0;
        out.push((
            format!("migration/{}->{}", sid(m.from), sid(m.to)),
            json(&PlacedMigration {
                from: sid(m.from),
                to: sid(m.to),
                item,
            }),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Why artifacts could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("artifact {name} is not valid: {reason}")]
    Invalid { name: String, reason: String },
    #[error("artifact {name} refers to schema `{schema}`, which is not among the artifacts")]
    MissingSchema { name: String, schema: String },
}

fn parse<'a, T: Deserialize<'a>>(name: &str, bytes: &'a [u8]) -> Result<T, LoadError> {
    serde_json::from_slice(bytes).map_err(|e| LoadError::Invalid {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// Rebuilds a program from artifacts (name → bytes). Unknown artifact
/// kinds (e.g. `settings`) are ignored; tests are not artifacts.
pub fn program_from_artifacts(arts: &BTreeMap<String, Vec<u8>>) -> Result<Program, LoadError> {
    let mut p = Program::default();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for (name, bytes) in arts.iter().filter(|(n, _)| n.starts_with("schema/")) {
        let s: Schema = parse(name, bytes)?;
        ids.insert(s.id(), p.schemas.len());
        p.schemas.push(s);
    }
    let idx = |name: &str, schema: &str| {
        ids.get(schema)
            .copied()
            .ok_or_else(|| LoadError::MissingSchema {
                name: name.to_string(),
                schema: schema.to_string(),
            })
    };
    for (name, bytes) in arts {
        if name.starts_with("contract/") {
            let pl: Placed<Contract> = parse(name, bytes)?;
            let mut c = pl.item;
            c.schema = idx(name, &pl.schema)?;
            check_slots(
                name,
                c.assigns.iter().map(|(s, _)| *s),
                p.schemas[c.schema].fields.len(),
            )?;
            p.contracts.push(c);
        } else if name.starts_with("pack/") {
            let pl: Placed<Pack> = parse(name, bytes)?;
            let mut pk = pl.item;
            pk.schema = idx(name, &pl.schema)?;
            check_slots(
                name,
                pk.redactions.iter().map(|(s, _)| *s),
                p.schemas[pk.schema].fields.len(),
            )?;
            p.packs.push(pk);
        } else if name.starts_with("playbook/") {
            let pl: Placed<Playbook> = parse(name, bytes)?;
            let mut pb = pl.item;
            pb.schema = idx(name, &pl.schema)?;
            check_slots(
                name,
                pb.by.iter().copied(),
                p.schemas[pb.schema].fields.len(),
            )?;
            p.playbooks.push(pb);
        } else if name.starts_with("migration/") {
            let pm: PlacedMigration = parse(name, bytes)?;
            let mut m = pm.item;
            m.from = idx(name, &pm.from)?;
            m.to = idx(name, &pm.to)?;
            check_slots(
                name,
                m.assigns.iter().map(|(s, _)| *s),
                p.schemas[m.to].fields.len(),
            )?;
            p.migrations.push(m);
        }
    }
    Ok(p)
}

/// Slots must exist in their schema: a tampered or mismatched artifact is
/// refused at load, not discovered as a wrong read at run time.
fn check_slots(name: &str, slots: impl Iterator<Item = usize>, n: usize) -> Result<(), LoadError> {
    for s in slots {
        if s >= n {
            return Err(LoadError::Invalid {
                name: name.to_string(),
                reason: format!("field slot {s} is outside its schema ({n} fields)"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, compile::CompiledPack, lock::BitTable, Source, Value};

    #[test]
    fn round_trip_evaluates_the_same() {
        let src = r#"
schema a v1 { x: int  s: string  ip: ip }
schema b v1 { y: int }
pack p on a v1 {
  flag big = x > 10
  flag api = s matches /^\/api/
  flag lan = ip in 10.0.0.0/8
  meta m = if big then "B" else "s"
  route lucius when not big
}
"#;
        let c = compile(
            &[Source::new("t.bspec", src)],
            &BitTable::default(),
            Default::default(),
        )
        .unwrap();
        let arts: BTreeMap<String, Vec<u8>> = artifacts(&c.program).into_iter().collect();
        // Only the pack and its schema: what a spine would fetch.
        let spine: BTreeMap<String, Vec<u8>> = arts
            .iter()
            .filter(|(n, _)| n.starts_with("pack/") || n.as_str() == "schema/a@v1")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let p = program_from_artifacts(&spine).unwrap();
        assert_eq!(p.schemas.len(), 1);
        let rec = vec![
            Value::Int(11),
            Value::Str("/api/x".into()),
            Value::Ip("10.1.1.1".parse().unwrap()),
        ];
        let (a, b) = (
            CompiledPack::new(&c.program.packs[0]),
            CompiledPack::new(&p.packs[0]),
        );
        let (mut sa, mut sb) = (a.scratch(), b.scratch());
        assert_eq!(a.eval(&rec, &mut sa), b.eval(&rec, &mut sb));
        assert_eq!(sa.bits, sb.bits);
        assert_eq!(sa.metas, sb.metas);
        assert_eq!(sa.bits, vec![0b111]);
        // Re-encoding gives the same bytes.
        let again: BTreeMap<String, Vec<u8>> = artifacts(&p).into_iter().collect();
        assert_eq!(again["pack/p"], arts["pack/p"]);
    }

    #[test]
    fn missing_schema_and_bad_slots_are_refused() {
        let src = "schema a v1 { x: int }\npack p on a v1 { flag f = x > 1 }";
        let c = compile(
            &[Source::new("t.bspec", src)],
            &BitTable::default(),
            Default::default(),
        )
        .unwrap();
        let arts: BTreeMap<String, Vec<u8>> = artifacts(&c.program).into_iter().collect();
        let only_pack: BTreeMap<String, Vec<u8>> = arts
            .iter()
            .filter(|(n, _)| n.starts_with("pack/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert!(matches!(
            program_from_artifacts(&only_pack),
            Err(LoadError::MissingSchema { .. })
        ));
        let mut garbled = arts.clone();
        garbled.insert("pack/p".into(), b"{not json".to_vec());
        assert!(matches!(
            program_from_artifacts(&garbled),
            Err(LoadError::Invalid { .. })
        ));
    }
}
