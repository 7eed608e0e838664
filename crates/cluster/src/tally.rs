//! Record accounting across processes (pure: inputs in, figures out).
//!
//! Core NATS delivers at most once, and a process that dies takes what it
//! had buffered with it. Loss must not be silent, so the supervisor keeps
//! the books: every record a sidecar accepted must end at a last hop — a
//! detector or Lucius processed it — or as a data-path dead letter.
//! Counters come from each process's signed metrics; a restarted process
//! starts its counters again at zero, so they are summed over incarnations
//! (keyed by id and start time). What is accepted but not accounted for is
//! *in flight* while the counters move, and *lost* once they have not
//! moved for the settle time.
//!
//! Conservative by construction: a last hop's work after its final metrics
//! report (≤ 500 ms before it died) is counted as lost, not delivered.

use ben_runtime::Hop;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use ben_runtime::metrics::ComponentMetrics;

/// The books, as of one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// Records the entry hop (the sidecars) accepted from apps.
    pub accepted: u64,
    /// Per last hop of the component table, records it processed, under
    /// `to_<plural>` (`to_detectors`, `to_lucius`).
    #[serde(flatten)]
    pub delivered: BTreeMap<String, u64>,
    pub dead_letters: u64,
    /// Accepted, not yet accounted for, counters still moving.
    pub in_flight: u64,
    /// Accepted and never accounted for (counters settled).
    pub lost: u64,
    pub settled: bool,
    pub signals: u64,
    /// Records the last hops took in and dropped (a full Lucius queue),
    /// counted, not lost.
    pub dropped: u64,
}

impl Records {
    /// Records processed by last hops, all together.
    pub fn at_last_hops(&self) -> u64 {
        self.delivered.values().sum()
    }

    /// Records processed by the last hop `role` (`detector`, `lucius`).
    pub fn to(&self, role: &str) -> u64 {
        ben_runtime::kind(role)
            .and_then(|k| self.delivered.get(&format!("to_{}", k.plural)))
            .copied()
            .unwrap_or(0)
    }
}

/// Where a role stands on the data path (unknown roles: off it).
fn hop(role: &str) -> Hop {
    ben_runtime::kind(role).map_or(Hop::Off, |k| k.hop)
}

/// The supervisor's books.
#[derive(Debug, Default)]
pub struct Tally {
    latest: BTreeMap<(String, i64), ComponentMetrics>,
    dead_letters: u64,
    other_dead_letters: u64,
    last: Option<(u64, u64, u64)>,
    since_ns: i64,
    lost: u64,
}

impl Tally {
    /// Keeps `m` if it is the newest report of its incarnation.
    pub fn observe(&mut self, m: ComponentMetrics) {
        let key = (m.id.clone(), m.started_ns);
        match self.latest.get(&key) {
            Some(p) if p.seq >= m.seq => {}
            _ => {
                self.latest.insert(key, m);
            }
        }
    }

    /// Counts a dead letter. Data-path ones (`ben.data.*`) from anything
    /// but a sidecar are records that ended there; a sidecar's are records
    /// it refused (never accepted, the app was told).
    pub fn dead_letter(&mut self, subject: &str, sender: &str) {
        let entry = ben_runtime::kind_of_id(sender).is_some_and(|k| k.hop == Hop::Entry);
        if subject.starts_with("ben.data.") && !entry {
            self.dead_letters += 1;
        } else {
            self.other_dead_letters += 1;
        }
    }

    /// Dead letters that are not data-path records (control-plane ones,
    /// refused records).
    pub fn other_dead_letters(&self) -> u64 {
        self.other_dead_letters
    }

    fn sum(&self, keep: impl Fn(&str) -> bool, f: impl Fn(&ComponentMetrics) -> u64) -> u64 {
        self.latest.values().filter(|m| keep(&m.role)).map(f).sum()
    }

    /// The latest report of each id's newest incarnation.
    pub fn current(&self) -> BTreeMap<String, ComponentMetrics> {
        let mut out: BTreeMap<String, ComponentMetrics> = BTreeMap::new();
        for ((id, _), m) in &self.latest {
            if out.get(id).is_none_or(|o| o.started_ns <= m.started_ns) {
                out.insert(id.clone(), m.clone());
            }
        }
        out
    }

    /// The books at `now_ns`; counters unchanged for `settle_ns` settle
    /// what is unaccounted for as lost.
    pub fn records(&mut self, now_ns: i64, settle_ns: i64) -> Records {
        let accepted = self.sum(|r| hop(r) == Hop::Entry, |m| m.accepted);
        let mut delivered = BTreeMap::new();
        for k in ben_runtime::KINDS.iter().filter(|k| k.hop == Hop::Last) {
            let n = self.sum(|r| r == k.role, |m| m.processed);
            delivered.insert(format!("to_{}", k.plural), n);
        }
        let done: u64 = delivered.values().sum();
        let now = (accepted, done, self.dead_letters);
        if self.last != Some(now) {
            self.last = Some(now);
            self.since_ns = now_ns;
        }
        let unaccounted = accepted.saturating_sub(done + self.dead_letters);
        let settled = now_ns.saturating_sub(self.since_ns) >= settle_ns;
        if settled {
            self.lost = unaccounted;
        }
        Records {
            accepted,
            delivered,
            dead_letters: self.dead_letters,
            in_flight: if settled { 0 } else { unaccounted },
            lost: self.lost,
            settled,
            signals: self.sum(|_| true, |m| m.signals),
            dropped: self.sum(|r| hop(r) == Hop::Last, |m| m.dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(
        id: &str,
        role: &str,
        started: i64,
        seq: u64,
        f: impl Fn(&mut ComponentMetrics),
    ) -> ComponentMetrics {
        let mut c = ComponentMetrics {
            id: id.into(),
            role: role.into(),
            started_ns: started,
            seq,
            ..Default::default()
        };
        f(&mut c);
        c
    }

    #[test]
    fn counts_survive_restarts_and_settle_into_lost() {
        let mut t = Tally::default();
        t.observe(m("sidecar-1", "sidecar", 1, 1, |c| c.accepted = 100));
        t.observe(m("detector-1", "detector", 1, 1, |c| c.processed = 40));
        t.observe(m("lucius-1", "lucius", 1, 1, |c| c.processed = 30));
        t.dead_letter("ben.data.spine", "spine-1");
        t.dead_letter("ben.data.proxy", "sidecar-1");
        t.dead_letter("ben.intent.activate", "spine-2");
        let r = t.records(0, 10);
        assert_eq!((r.in_flight, r.lost, r.settled), (29, 0, false));
        assert_eq!(r.dead_letters, 1);
        assert_eq!(t.other_dead_letters(), 2);
        // The detector restarts: its new incarnation counts from zero; an
        // old report arriving late changes nothing.
        t.observe(m("detector-1", "detector", 5, 1, |c| c.processed = 20));
        t.observe(m("detector-1", "detector", 1, 0, |c| c.processed = 1));
        let r = t.records(5, 10);
        assert_eq!(r.to("detector"), 60);
        assert_eq!((r.in_flight, r.settled), (9, false));
        assert_eq!(t.current()["detector-1"].started_ns, 5);
        // Nothing moves for the settle time: the 9 are lost.
        let r = t.records(15, 10);
        assert_eq!((r.in_flight, r.lost, r.settled), (0, 9, true));
        assert_eq!(r.accepted, r.at_last_hops() + r.dead_letters + r.lost);
        assert_eq!(r.to("detector") + r.to("lucius"), r.at_last_hops());
        // The status keeps its keys.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["to_detectors"], 60);
        assert_eq!(json["to_lucius"], 30);
        // A late delivery moves the counters again.
        t.observe(m("lucius-1", "lucius", 1, 2, |c| c.processed = 39));
        let r = t.records(16, 10);
        assert_eq!((r.in_flight, r.settled), (0, false));
        assert_eq!(t.records(30, 10).lost, 0);
    }
}
