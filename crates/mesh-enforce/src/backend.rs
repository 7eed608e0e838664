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
    /// For a rule: the time it holds until, as written (ms since the
    /// epoch).
    pub until_ms: Option<u64>,
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
    /// Why this backend cannot enforce policies shaped `spec`, if it
    /// cannot (they are skipped with that reason, never half-applied).
    fn refuses(&self, _spec: &crate::model::Spec) -> Option<String> {
        None
    }
    /// Makes the host's rules (policies with a port, protocol or rate
    /// limit) exactly `rules`, in one transaction where the backend has
    /// them; each stops matching at its time even if no agent is left to
    /// remove it.
    fn rules(&mut self, rules: &[Change], now_ms: u64) -> Result<(), String>;
    /// What the host holds: set entries and rules.
    fn read(&mut self) -> Result<Vec<Held>, String>;
}

/// Logs what it would do and holds it in memory.
#[derive(Default)]
pub struct DryRun {
    held: BTreeMap<(String, Net), u64>,
    rules: BTreeMap<(String, Net), u64>,
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

    fn rules(&mut self, rules: &[Change], now_ms: u64) -> Result<(), String> {
        self.rules.clear();
        for c in rules {
            tracing::info!(rule = %c.set.spec.describe(), target = %c.target, policy = %c.policy, height = c.height,
                timeout_s = crate::nft::timeout_s(c.expires_at_ms, now_ms), "enforcement dry run: would hold rule");
            self.rules.insert((c.set.name(), c.target), c.expires_at_ms);
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<Held>, String> {
        let sets = self.held.iter().map(|((set, target), _)| Held {
            set: set.clone(),
            target: *target,
            expires_s: None,
            until_ms: None,
        });
        let rules = self.rules.iter().map(|((set, target), until)| Held {
            set: set.clone(),
            target: *target,
            expires_s: None,
            until_ms: Some(*until),
        });
        Ok(sets.chain(rules).collect())
    }
}

/// How far a held timeout may drift from the desired one before the
/// reconciler re-asserts it.
pub const DRIFT_S: u64 = 2;

/// What the reconciler does to the host.
#[derive(Debug, Default, PartialEq)]
pub struct Repair {
    /// Set entries missing or with the wrong time left: re-added, each
    /// with its own remaining time, so entries never all expire together
    /// after a restart.
    pub add: Vec<Change>,
    /// Set entries nothing wants: removed.
    pub remove: Vec<(SetKey, Net)>,
    /// Rules missing, with another time, or unwanted: the rules are
    /// written again whole.
    pub rules: bool,
}

impl Repair {
    /// Whether the host is as it should be.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && !self.rules
    }
}

/// The reconciler's diff between what should be held and what is.
pub fn diff<'a>(
    desired: impl Iterator<Item = (&'a SetKey, &'a Net, &'a Entry)>,
    held: &[Held],
    now_ms: u64,
) -> Repair {
    let by_name: BTreeMap<String, SetKey> =
        SetKey::all().into_iter().map(|s| (s.name(), s)).collect();
    let held_map: BTreeMap<(String, Net), &Held> = held
        .iter()
        .map(|h| ((h.set.clone(), h.target), h))
        .collect();
    let mut wanted = BTreeSet::new();
    let mut out = Repair::default();
    for (s, n, e) in desired {
        if e.policy.expires_at_ms <= now_ms {
            continue;
        }
        wanted.insert((s.name(), *n));
        let there = held_map.get(&(s.name(), *n));
        if s.is_rule() {
            out.rules |= there.and_then(|h| h.until_ms) != Some(e.policy.expires_at_ms);
            continue;
        }
        let want_s = crate::nft::timeout_s(e.policy.expires_at_ms, now_ms);
        let ok = match there.map(|h| h.expires_s) {
            None => false,
            Some(None) => true,
            Some(Some(left)) => left.abs_diff(want_s) <= DRIFT_S,
        };
        if !ok {
            out.add.push(Change {
                set: *s,
                target: *n,
                expires_at_ms: e.policy.expires_at_ms,
                policy: e.policy.id.clone(),
                height: e.policy.height,
                replace: there.is_some(),
            });
        }
    }
    for h in held {
        if wanted.contains(&(h.set.clone(), h.target)) {
            continue;
        }
        match by_name.get(&h.set) {
            Some(s) => out.remove.push((*s, h.target)),
            None => out.rules = true,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Direction, Policy, Spec};

    #[test]
    fn the_diff_restores_missing_reasserts_drifted_and_removes_unwanted() {
        let set = SetKey::set(Action::Drop, Direction::Ingress, false, false);
        let entry = |t: &str, exp: u64| {
            (
                set,
                Net::parse(t).unwrap(),
                Entry {
                    policy: Policy {
                        id: format!("block-{t}"),
                        spec: Spec::BLOCK,
                        target: Net::parse(t).unwrap(),
                        expires_at_ms: exp,
                        anomalies: vec![],
                        height: 1,
                        block_time_ms: 0,
                        scope: vec![],
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
            until_ms: None,
        };
        let h = [
            held("192.0.2.1", 99),
            held("192.0.2.3", 10),
            held("203.0.113.9", 50),
        ];
        let r = diff(desired.iter().map(|(s, n, e)| (s, n, e)), &h, 1_000);
        assert!(!r.rules);
        let added: Vec<(String, bool)> = r
            .add
            .iter()
            .map(|c| (c.target.to_string(), c.replace))
            .collect();
        assert_eq!(
            added,
            [("192.0.2.2".into(), false), ("192.0.2.3".into(), true)]
        );
        assert_eq!(r.remove, [(set, Net::parse("203.0.113.9").unwrap())]);
    }

    #[test]
    fn rules_are_rewritten_when_one_is_missing_retimed_or_unwanted() {
        let spec = Spec::parse("rate-limit", 50, "", "udp", "53").unwrap();
        let key = SetKey {
            spec,
            v6: false,
            net: false,
        };
        let target = Net::parse("192.0.2.1").unwrap();
        let e = Entry {
            policy: Policy {
                id: "req-1".into(),
                spec,
                target,
                expires_at_ms: 90_000,
                anomalies: vec![],
                height: 1,
                block_time_ms: 0,
                scope: vec![],
            },
            since_ms: 0,
        };
        let rule = |until: u64, t: &str| Held {
            set: key.name(),
            target: Net::parse(t).unwrap(),
            expires_s: None,
            until_ms: Some(until),
        };
        let d = [(key, target, e)];
        let run = |h: &[Held]| diff(d.iter().map(|(s, n, e)| (s, n, e)), h, 1_000);
        assert!(run(&[rule(90_000, "192.0.2.1")]).is_empty());
        assert!(run(&[]).rules, "missing");
        assert!(run(&[rule(80_000, "192.0.2.1")]).rules, "another time");
        let extra = run(&[rule(90_000, "192.0.2.1"), rule(90_000, "192.0.2.2")]);
        assert!(extra.rules && extra.remove.is_empty(), "unwanted");
    }
}
