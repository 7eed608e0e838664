//! The bit table (`ben.lock`): which bit each flag owns, forever.
//!
//! Rules (DESIGN.md §4, invariant 7): a flag keeps its bit for as long as it
//! exists; a removed flag's bit is retired and never handed out again, not
//! even to a flag re-added under the same name; a removed pack keeps its
//! table, all retired. `validate` refuses a table that breaks these rules,
//! which is what a hand edit or a bad merge usually does.

use crate::ir::Program;
use std::collections::{BTreeMap, BTreeSet};

/// One pack's bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackBits {
    /// Flags in use: name → bit.
    pub live: BTreeMap<String, u32>,
    /// Bits of removed flags: (name it had, bit). Never reused.
    pub retired: Vec<(String, u32)>,
    /// The next bit to hand out; every used or retired bit is below it.
    pub next: u32,
}

/// Every pack's bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitTable {
    pub packs: BTreeMap<String, PackBits>,
}

/// What changed between two tables (for `benctl build`'s summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockChanges {
    pub added: Vec<(String, String, u32)>,
    pub retired: Vec<(String, String, u32)>,
}

impl BitTable {
    /// Checks the table's own consistency; each problem is one message.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        for (pack, pb) in &self.packs {
            let mut seen: BTreeMap<u32, String> = BTreeMap::new();
            let all = pb.live.iter().map(|(n, b)| (n.as_str(), *b, "flag")).chain(
                pb.retired
                    .iter()
                    .map(|(n, b)| (n.as_str(), *b, "retired flag")),
            );
            for (name, bit, what) in all {
                if bit >= pb.next {
                    errs.push(format!("pack `{pack}`: {what} `{name}` has bit {bit}, but next = {} (every bit must be below next)", pb.next));
                }
                if let Some(other) = seen.insert(bit, format!("{what} `{name}`")) {
                    errs.push(format!("pack `{pack}`: bit {bit} is claimed by both {other} and {what} `{name}`; a bit is never shared or reused"));
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Assigns bits to the program's flags, extending this table. Returns the
    /// new table and what changed. The program's `FlagDef::bit`s are set.
    pub fn assign(&self, prog: &mut Program) -> (BitTable, LockChanges) {
        let mut next = self.clone();
        let mut changes = LockChanges::default();
        let present: BTreeSet<String> = prog.packs.iter().map(|p| p.name.clone()).collect();
        for pack in &mut prog.packs {
            let pb = next.packs.entry(pack.name.clone()).or_default();
            let names: BTreeSet<&str> = pack.flags.iter().map(|f| f.name.as_str()).collect();
            let gone: Vec<String> = pb
                .live
                .keys()
                .filter(|n| !names.contains(n.as_str()))
                .cloned()
                .collect();
            for n in gone {
                if let Some(bit) = pb.live.remove(&n) {
                    changes.retired.push((pack.name.clone(), n.clone(), bit));
                    pb.retired.push((n, bit));
                }
            }
            for f in &mut pack.flags {
                match pb.live.get(&f.name) {
                    Some(&bit) => f.bit = bit,
                    None => {
                        let bit = pb.next;
                        pb.next += 1;
                        pb.live.insert(f.name.clone(), bit);
                        changes.added.push((pack.name.clone(), f.name.clone(), bit));
                        f.bit = bit;
                    }
                }
            }
        }
        for (name, pb) in next.packs.iter_mut() {
            if present.contains(name) {
                continue;
            }
            let live = std::mem::take(&mut pb.live);
            for (n, bit) in live {
                changes.retired.push((name.clone(), n.clone(), bit));
                pb.retired.push((n, bit));
            }
        }
        for pb in next.packs.values_mut() {
            pb.retired.sort_by_key(|(_, b)| *b);
        }
        (next, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{FlagDef, Pack, TExpr};
    use crate::value::{Type, Value};

    fn prog(flags: &[&str]) -> Program {
        Program {
            packs: vec![Pack {
                name: "p".into(),
                schema: 0,
                flags: flags
                    .iter()
                    .map(|n| FlagDef {
                        name: n.to_string(),
                        expr: TExpr::constant(Value::Bool(true), Type::Bool),
                        bit: 0,
                    })
                    .collect(),
                metas: vec![],
                order: vec![],
                redactions: vec![],
                routes: vec![],
                cost: 0,
            }],
            ..Program::default()
        }
    }

    #[test]
    fn bits_are_stable_and_never_reused() {
        let mut p1 = prog(&["a", "b", "c"]);
        let (t1, ch) = BitTable::default().assign(&mut p1);
        assert_eq!(ch.added.len(), 3);
        assert_eq!(t1.packs["p"].live["c"], 2);
        // Remove b, add d: d gets 3, not 1.
        let mut p2 = prog(&["a", "c", "d"]);
        let (t2, ch) = t1.assign(&mut p2);
        assert_eq!(
            p2.packs[0].flags.iter().map(|f| f.bit).collect::<Vec<_>>(),
            vec![0, 2, 3]
        );
        assert_eq!(ch.retired, vec![("p".into(), "b".into(), 1)]);
        // Re-adding b gives it a fresh bit.
        let mut p3 = prog(&["a", "b", "c", "d"]);
        let (t3, _) = t2.assign(&mut p3);
        assert_eq!(t3.packs["p"].live["b"], 4);
        assert!(t3.validate().is_ok());
    }

    #[test]
    fn inconsistent_tables_are_refused() {
        let mut t = BitTable::default();
        let pb = t.packs.entry("p".into()).or_default();
        pb.live.insert("a".into(), 0);
        pb.live.insert("b".into(), 0);
        pb.retired.push(("c".into(), 5));
        pb.next = 2;
        let errs = t.validate().unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }
}
