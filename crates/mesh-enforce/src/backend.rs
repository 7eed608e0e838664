//! The one trait every backend implements, what it reads back, and the
//! reconciler's diff between what should be held and what is (pure).

use crate::model::{Allowlist, Net};
use crate::schedule::{Change, Entry, SetKey};
use std::collections::{BTreeMap, BTreeSet};

/// One entry as the host holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// Its set's name.
    pub set: String,
    /// Its target.
    pub target: Net,
    /// Seconds it has left (none: no timeout).
    pub expires_s: Option<u64>,
}

/// Where entries are enforced. Calls are synchronous (they run commands);
/// the agent runs them off its event loop.
pub trait Backend: Send + Sync {
    /// `nftables`, `dry-run`…
    fn name(&self) -> &'static str;
    /// Makes the table, chains, sets and rules as they must be, with the
    /// allowlist ahead of everything.
    fn setup(&mut self, allow: &Allowlist) -> Result<(), String>;
    /// Adds (or refreshes) `changes` and deletes `remove`, atomically per
    /// transaction.
    fn apply(
        &mut self,
        changes: &[Change],
        remove: &[(SetKey, Net)],
        now_ms: u64,
    ) -> Result<(), String>;
    /// What the host holds.
    fn read(&mut self) -> Result<Vec<Held>, String>;
}

/// Logs what it would do and holds it in memory.
#[derive(Default)]
pub struct DryRun {
    held: BTreeMap<(String, Net), u64>,
}

impl Backend for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn setup(&mut self, allow: &Allowlist) -> Result<(), String> {
        tracing::info!(
            allowlist = allow.nets().count(),
            "enforcement dry run: would create table inet ben"
        );
        Ok(())
    }

    fn apply(
        &mut self,
        changes: &[Change],
        remove: &[(SetKey, Net)],
        now_ms: u64,
    ) -> Result<(), String> {
        for (s, n) in remove {
            tracing::info!(set = %s.name(), target = %n, "enforcement dry run: would delete");
            self.held.remove(&(s.name(), *n));
        }
        for c in changes {
            tracing::info!(set = %c.set.name(), target = %c.target, policy = %c.policy, height = c.height,
                timeout_s = crate::nft::timeout_s(c.expires_at_ms, now_ms), "enforcement dry run: would block");
            self.held.insert((c.set.name(), c.target), c.expires_at_ms);
        }
        self.held.retain(|_, exp| *exp > now_ms);
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<Held>, String> {
        Ok(self
            .held
            .iter()
            .map(|((set, target), _)| Held {
                set: set.clone(),
                target: *target,
                expires_s: None,
            })
            .collect())
    }
}

/// How far a held timeout may drift from the desired one before the
/// reconciler re-asserts it.
pub const DRIFT_S: u64 = 2;

/// What the reconciler does: entries missing or with the wrong time left
/// (re-added, each with its own remaining time, so entries never all
/// expire together after a restart), and entries held in the agent's sets
/// that nothing wants (removed).
pub fn diff<'a>(
    desired: impl Iterator<Item = (&'a SetKey, &'a Net, &'a Entry)>,
    held: &[Held],
    now_ms: u64,
) -> (Vec<Change>, Vec<(SetKey, Net)>) {
    let by_name: BTreeMap<String, SetKey> =
        SetKey::all().into_iter().map(|s| (s.name(), s)).collect();
    let held_map: BTreeMap<(String, Net), Option<u64>> = held
        .iter()
        .map(|h| ((h.set.clone(), h.target), h.expires_s))
        .collect();
    let mut wanted = BTreeSet::new();
    let mut add = vec![];
    for (s, n, e) in desired {
        if e.policy.expires_at_ms <= now_ms {
            continue;
        }
        wanted.insert((s.name(), *n));
        let want_s = crate::nft::timeout_s(e.policy.expires_at_ms, now_ms);
        let ok = match held_map.get(&(s.name(), *n)) {
            None => false,
            Some(None) => true,
            Some(Some(left)) => left.abs_diff(want_s) <= DRIFT_S,
        };
        if !ok {
            add.push(Change {
                set: *s,
                target: *n,
                expires_at_ms: e.policy.expires_at_ms,
                policy: e.policy.id.clone(),
                height: e.policy.height,
                replace: held_map.contains_key(&(s.name(), *n)),
            });
        }
    }
    let remove = held
        .iter()
        .filter(|h| !wanted.contains(&(h.set.clone(), h.target)))
        .filter_map(|h| by_name.get(&h.set).map(|s| (*s, h.target)))
        .collect();
    (add, remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Direction, Policy};

    #[test]
    fn the_diff_restores_missing_reasserts_drifted_and_removes_unwanted() {
        let set = SetKey {
            action: Action::Drop,
            direction: Direction::Ingress,
            v6: false,
            net: false,
        };
        let entry = |t: &str, exp: u64| {
            (
                set,
                Net::parse(t).unwrap(),
                Entry {
                    policy: Policy {
                        id: format!("block-{t}"),
                        action: Action::Drop,
                        target: Net::parse(t).unwrap(),
                        direction: Direction::Ingress,
                        expires_at_ms: exp,
                        anomalies: vec![],
                        height: 1,
                        block_time_ms: 0,
                    },
                    since_ms: 0,
                },
            )
        };
        let desired = [
            entry("192.0.2.1", 100_000), // held, right time
            entry("192.0.2.2", 100_000), // missing
            entry("192.0.2.3", 100_000), // held with 10 s left
            entry("192.0.2.4", 500),     // its time is up
        ];
        let held = |t: &str, s: u64| Held {
            set: "drop4_in".into(),
            target: Net::parse(t).unwrap(),
            expires_s: Some(s),
        };
        let h = [
            held("192.0.2.1", 99),
            held("192.0.2.3", 10),
            held("203.0.113.9", 50),
        ];
        let (add, remove) = diff(desired.iter().map(|(s, n, e)| (s, n, e)), &h, 1_000);
        let added: Vec<(String, bool)> = add
            .iter()
            .map(|c| (c.target.to_string(), c.replace))
            .collect();
        assert_eq!(
            added,
            [("192.0.2.2".into(), false), ("192.0.2.3".into(), true)]
        );
        assert_eq!(remove, [(set, Net::parse("203.0.113.9").unwrap())]);
    }
}
