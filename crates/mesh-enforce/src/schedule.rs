//! The scheduler: verified policies in, the host's desired state and the
//! batches that reach it out (pure: time is an argument).
//!
//! * **Idempotent**: the same policy again (another validator's copy, a
//!   replay) changes nothing; a later height for the same target extends
//!   it; an older one (a slower validator's copy, a replay) changes
//!   nothing either, and is counted apart. A replay after its TTL is
//!   refused as expired before it gets here.
//! * **Batches** by time and count: a change waits at most `batch_ms`, and
//!   `batch_max` changes go at once.
//! * **Guards**: an allowlisted target is skipped with the reason, as is
//!   one past `max_entries` (or `max_rules` for rules: policies with a
//!   port, a protocol or a rate limit); the **circuit breaker** opens when more than
//!   `max_blocks_per_s` distinct block heights arrive within a second and
//!   holds what arrives (nothing is applied) until the rate has stayed
//!   under the limit for `breaker_cooldown_ms`.
//! * **TTL**: an entry leaves the desired state when its time is up.

use crate::model::{Action, Allowlist, Direction, Net, Policy, Protocol, Spec};
use std::collections::{BTreeMap, VecDeque};

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Longest a change waits for its batch.
    pub batch_ms: u64,
    /// Changes per batch.
    pub batch_max: usize,
    /// Entries the host holds at most.
    pub max_entries: usize,
    /// Of them, rules at most (a rule is checked against every packet
    /// that reaches it; set entries are one lookup).
    pub max_rules: usize,
    /// Distinct block heights per second above which the breaker opens.
    pub max_blocks_per_s: usize,
    /// How long the rate stays under the limit before the breaker closes.
    pub breaker_cooldown_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            batch_ms: 50,
            batch_max: 10_000,
            max_entries: 100_000,
            max_rules: 1_000,
            max_blocks_per_s: 50,
            breaker_cooldown_ms: 5_000,
        }
    }
}

/// Where an entry lives: a whole-address drop or reject in one of the
/// agent's sets (one lookup, 100k entries), or any other policy (a port,
/// a protocol, a rate limit) as a rule of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetKey {
    /// What it does.
    pub spec: Spec,
    /// IPv6 or IPv4.
    pub v6: bool,
    /// Networks (an interval set) or single hosts (a hash set: hosts are
    /// most entries, and a hash set takes 100k of them in a fraction of
    /// the time an interval set does).
    pub net: bool,
}

impl SetKey {
    /// The set (or rule) of `p`.
    pub fn of(p: &Policy) -> SetKey {
        SetKey {
            spec: p.spec,
            v6: p.target.is_v6(),
            net: !p.target.is_host(),
        }
    }

    /// A whole-address set.
    pub fn set(action: Action, direction: Direction, v6: bool, net: bool) -> SetKey {
        SetKey {
            spec: Spec {
                action,
                direction,
                ..Spec::BLOCK
            },
            v6,
            net,
        }
    }

    /// Its action.
    pub fn action(&self) -> Action {
        self.spec.action
    }

    /// Its direction.
    pub fn direction(&self) -> Direction {
        self.spec.direction
    }

    /// Whether it is a rule (not a set entry).
    pub fn is_rule(&self) -> bool {
        !self.spec.is_whole()
    }

    /// `drop4_in`, `reject6_out_net`… for sets; `rl50_in_tcp_22`,
    /// `drop_out_udp_53`, `reject_in_icmp`… for rules (the family is the
    /// target's).
    pub fn name(&self) -> String {
        let dir = match self.direction() {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        };
        if self.is_rule() {
            let mut n = match self.action() {
                Action::RateLimit(r) => format!("rl{r}_{dir}"),
                a => format!("{}_{dir}", a.name()),
            };
            if self.spec.protocol != Protocol::Any {
                n += "_";
                n += self.spec.protocol.name();
            }
            if let Some(p) = self.spec.ports {
                n += &format!("_{p}");
            }
            return n;
        }
        format!(
            "{}{}_{dir}{}",
            self.action().name(),
            if self.v6 { 6 } else { 4 },
            if self.net { "_net" } else { "" }
        )
    }

    /// Every set an agent keeps.
    pub fn all() -> Vec<SetKey> {
        let mut v = vec![];
        for action in [Action::Drop, Action::Reject] {
            for direction in [Direction::Ingress, Direction::Egress] {
                for v6 in [false, true] {
                    for net in [false, true] {
                        v.push(SetKey::set(action, direction, v6, net));
                    }
                }
            }
        }
        v
    }
}

/// One target held on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The policy.
    pub policy: Policy,
    /// When this agent first applied (or queued) it.
    pub since_ms: u64,
}

/// What [`Scheduler::offer`] decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Offer {
    /// Queued for the next batch (new, or extended).
    Queued,
    /// Already held as it is: nothing to do.
    Duplicate,
    /// Not enforced: acked `skipped` with the reason.
    Skipped(String),
    /// Older than what is held (a slower validator's copy, or a replay):
    /// nothing to do.
    Older,
}

/// One change for the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The set.
    pub set: SetKey,
    /// The target.
    pub target: Net,
    /// Until when (ms since the epoch).
    pub expires_at_ms: u64,
    /// The policy id and height (for the ack).
    pub policy: String,
    /// See `policy`.
    pub height: u64,
    /// The host may hold it already (an extension, a drifted timeout):
    /// it is deleted and added again, as re-adding does not extend a
    /// timeout on older kernels.
    pub replace: bool,
}

/// The breaker's state, for status lines.
#[derive(Clone, Debug, PartialEq)]
pub enum Breaker {
    /// Applying.
    Closed,
    /// Holding changes since this time, at this rate.
    Open { since_ms: u64, rate: usize },
}

/// See the module documentation.
pub struct Scheduler {
    cfg: Config,
    allow: Allowlist,
    desired: BTreeMap<(SetKey, Net), Entry>,
    pending: Vec<Change>,
    oldest_pending_ms: Option<u64>,
    heights: VecDeque<(u64, u64)>,
    breaker: Breaker,
    calm_since_ms: u64,
    /// Entries that are networks, not hosts (overlaps are possible only
    /// then).
    networks: usize,
    /// Entries that are rules.
    rules: usize,
}

impl Scheduler {
    /// An empty host.
    pub fn new(cfg: Config, allow: Allowlist) -> Scheduler {
        Scheduler {
            cfg,
            allow,
            desired: BTreeMap::new(),
            pending: vec![],
            oldest_pending_ms: None,
            heights: VecDeque::new(),
            breaker: Breaker::Closed,
            calm_since_ms: 0,
            networks: 0,
            rules: 0,
        }
    }

    /// Takes a verified policy.
    pub fn offer(&mut self, p: Policy, now_ms: u64) -> Offer {
        if let Some((net, why)) = self.allow.hit(&p.target) {
            return Offer::Skipped(format!(
                "target {} touches allowlisted {net} ({why})",
                p.target
            ));
        }
        self.note_height(p.height, now_ms);
        let key = (SetKey::of(&p), p.target);
        let mut replace = false;
        match self.desired.get_mut(&key) {
            Some(e) if p.height < e.policy.height => return Offer::Older,
            Some(e) if p.expires_at_ms <= e.policy.expires_at_ms => {
                // A copy from another validator, or nothing new.
                if p.height > e.policy.height {
                    e.policy.height = p.height;
                    e.policy.anomalies = p.anomalies;
                }
                return Offer::Duplicate;
            }
            Some(e) => {
                e.policy = p.clone();
                replace = true;
            }
            None => {
                // An interval set holds no overlapping elements: of two
                // overlapping networks the first one held stays (hosts
                // live in their own set).
                let scan = self.networks > 0 && key.0.net && !key.0.is_rule();
                let overlap = if scan {
                    self.desired
                        .keys()
                        .filter(|(s, _)| *s == key.0)
                        .find(|(_, n)| n.overlaps(&p.target))
                        .map(|(_, n)| *n)
                } else {
                    None
                };
                if let Some(held) = overlap {
                    return Offer::Skipped(format!(
                        "target {} overlaps {held}, already held in the same set",
                        p.target
                    ));
                }
                if self.desired.len() >= self.cfg.max_entries {
                    return Offer::Skipped(format!(
                        "the host holds its maximum of {} entries",
                        self.cfg.max_entries
                    ));
                }
                if key.0.is_rule() && self.rules >= self.cfg.max_rules {
                    return Offer::Skipped(format!(
                        "the host holds its maximum of {} rules (policies with a port, protocol or rate)",
                        self.cfg.max_rules
                    ));
                }
                self.networks += usize::from(!p.target.is_host() && !key.0.is_rule());
                self.rules += usize::from(key.0.is_rule());
                self.desired.insert(
                    key,
                    Entry {
                        policy: p.clone(),
                        since_ms: now_ms,
                    },
                );
            }
        }
        self.pending.push(Change {
            set: key.0,
            target: p.target,
            expires_at_ms: p.expires_at_ms,
            policy: p.id,
            height: p.height,
            replace,
        });
        self.oldest_pending_ms.get_or_insert(now_ms);
        Offer::Queued
    }

    fn note_height(&mut self, h: u64, now_ms: u64) {
        if !self.heights.iter().any(|(x, _)| *x == h) {
            self.heights.push_back((h, now_ms));
        }
        while self
            .heights
            .front()
            .is_some_and(|(_, t)| *t + 1_000 <= now_ms)
        {
            self.heights.pop_front();
        }
        let rate = self.heights.len();
        if rate > self.cfg.max_blocks_per_s {
            if self.breaker == Breaker::Closed {
                self.breaker = Breaker::Open {
                    since_ms: now_ms,
                    rate,
                };
            }
            self.calm_since_ms = now_ms;
        }
    }

    /// The breaker, updated to `now_ms`.
    pub fn breaker(&mut self, now_ms: u64) -> &Breaker {
        while self
            .heights
            .front()
            .is_some_and(|(_, t)| *t + 1_000 <= now_ms)
        {
            self.heights.pop_front();
        }
        if matches!(self.breaker, Breaker::Open { .. })
            && self.heights.len() <= self.cfg.max_blocks_per_s
            && now_ms >= self.calm_since_ms + self.cfg.breaker_cooldown_ms
        {
            self.breaker = Breaker::Closed;
        }
        &self.breaker
    }

    /// The next batch, when one is due at `now_ms` and the breaker is
    /// closed (changes whose entry expired meanwhile are left out).
    pub fn batch(&mut self, now_ms: u64) -> Option<Vec<Change>> {
        let due = self.pending.len() >= self.cfg.batch_max
            || self
                .oldest_pending_ms
                .is_some_and(|t| now_ms >= t + self.cfg.batch_ms);
        if !due || *self.breaker(now_ms) != Breaker::Closed {
            return None;
        }
        let n = self.pending.len().min(self.cfg.batch_max);
        let mut out: Vec<Change> = self.pending.drain(..n).collect();
        out.retain(|c| c.expires_at_ms > now_ms);
        self.oldest_pending_ms = (!self.pending.is_empty()).then_some(now_ms);
        Some(out)
    }

    /// Entries whose time is up, removed from the desired state.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Entry> {
        let gone: Vec<_> = self
            .desired
            .iter()
            .filter(|(_, e)| e.policy.expires_at_ms <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        self.networks -= gone
            .iter()
            .filter(|(s, n)| !n.is_host() && !s.is_rule())
            .count();
        self.rules -= gone.iter().filter(|(s, _)| s.is_rule()).count();
        gone.into_iter()
            .filter_map(|k| self.desired.remove(&k))
            .collect()
    }

    /// What the host should hold now (not what is still pending while the
    /// breaker is open).
    pub fn desired(&self) -> impl Iterator<Item = (&SetKey, &Net, &Entry)> {
        let pending: std::collections::BTreeSet<(SetKey, Net)> =
            self.pending.iter().map(|c| (c.set, c.target)).collect();
        self.desired
            .iter()
            .filter(move |(k, _)| !pending.contains(k))
            .map(|((s, n), e)| (s, n, e))
    }

    /// The rules the host should hold now, as changes (what a backend
    /// writes whole).
    pub fn rules(&self) -> Vec<Change> {
        self.desired()
            .filter(|(s, _, _)| s.is_rule())
            .map(|(s, n, e)| Change {
                set: *s,
                target: *n,
                expires_at_ms: e.policy.expires_at_ms,
                policy: e.policy.id.clone(),
                height: e.policy.height,
                replace: false,
            })
            .collect()
    }

    /// Changes waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.desired.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.desired.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(target: &str, height: u64, expires: u64) -> Policy {
        Policy {
            id: format!("block-{target}"),
            spec: Spec::BLOCK,
            target: Net::parse(target).unwrap(),
            expires_at_ms: expires,
            anomalies: vec![format!("an-{height}")],
            height,
            block_time_ms: 0,
            scope: vec![],
        }
    }

    fn allow() -> Allowlist {
        let mut a = Allowlist::default();
        a.add(Net::parse("10.0.0.1").unwrap(), "validator");
        a
    }

    #[test]
    fn copies_are_one_change_later_heights_extend_older_are_replays() {
        let mut s = Scheduler::new(Config::default(), allow());
        assert_eq!(s.offer(policy("192.0.2.1", 5, 10_000), 0), Offer::Queued);
        for _ in 0..3 {
            assert_eq!(s.offer(policy("192.0.2.1", 5, 10_000), 1), Offer::Duplicate);
        }
        assert_eq!(s.batch(10), None, "not due before batch_ms");
        let b = s.batch(50).unwrap();
        assert_eq!(b.len(), 1);
        assert!(!b[0].replace);
        assert_eq!(s.offer(policy("192.0.2.1", 7, 20_000), 60), Offer::Queued);
        assert_eq!(s.offer(policy("192.0.2.1", 4, 30_000), 61), Offer::Older);
        let b = s.batch(200).unwrap();
        assert_eq!((b[0].expires_at_ms, b[0].replace), (20_000, true));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn allowlist_and_limit_skip_with_a_reason() {
        let cfg = Config {
            max_entries: 2,
            ..Config::default()
        };
        let mut s = Scheduler::new(cfg, allow());
        assert!(
            matches!(s.offer(policy("10.0.0.0/24", 1, 9_000), 0), Offer::Skipped(r) if r.contains("validator"))
        );
        assert_eq!(s.offer(policy("192.0.2.1", 1, 9_000), 0), Offer::Queued);
        assert_eq!(s.offer(policy("192.0.2.2", 1, 9_000), 0), Offer::Queued);
        assert!(
            matches!(s.offer(policy("192.0.2.3", 1, 9_000), 0), Offer::Skipped(r) if r.contains("maximum"))
        );
    }

    #[test]
    fn ports_protocols_and_rates_are_rules_of_their_own_and_bounded() {
        let cfg = Config {
            max_rules: 2,
            ..Config::default()
        };
        let mut s = Scheduler::new(cfg, allow());
        let rule = |t: &str, spec: &str| Policy {
            spec: Spec::parse(
                spec,
                if spec == "rate-limit" { 50 } else { 0 },
                "",
                "tcp",
                "22",
            )
            .unwrap(),
            ..policy(t, 1, 9_000)
        };
        // A whole-address drop and a port drop of one network are two
        // entries: no overlap between a rule and a set.
        assert_eq!(s.offer(policy("192.0.2.0/24", 1, 9_000), 0), Offer::Queued);
        assert_eq!(s.offer(rule("192.0.2.0/24", "drop"), 0), Offer::Queued);
        assert_eq!(
            s.offer(rule("192.0.2.0/25", "rate-limit"), 0),
            Offer::Queued
        );
        assert!(
            matches!(s.offer(rule("198.51.100.1", "drop"), 0), Offer::Skipped(r) if r.contains("rules"))
        );
        let b = s.batch(50).unwrap();
        let names: Vec<String> = b.iter().map(|c| c.set.name()).collect();
        assert_eq!(names, ["drop4_in_net", "drop_in_tcp_22", "rl50_in_tcp_22"]);
        assert_eq!(s.rules().len(), 2);
        assert_eq!(s.expire(9_000).len(), 3);
        assert!(s.rules().is_empty());
        assert_eq!(
            s.offer(rule("198.51.100.1", "drop"), 9_001),
            Offer::Queued,
            "room again"
        );
    }

    #[test]
    fn batches_by_count_and_entries_expire() {
        let cfg = Config {
            batch_max: 3,
            ..Config::default()
        };
        let mut s = Scheduler::new(cfg, allow());
        for i in 0..7 {
            s.offer(policy(&format!("192.0.2.{i}"), 1, 1_000 + i), 0);
        }
        assert_eq!(s.batch(0).unwrap().len(), 3);
        assert_eq!(s.batch(0).unwrap().len(), 3);
        assert_eq!(s.batch(0), None, "one left, not due yet");
        assert_eq!(s.batch(50).unwrap().len(), 1);
        assert_eq!(s.expire(1_003).len(), 4);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn the_breaker_holds_a_flood_and_lets_it_through_after_calm() {
        let cfg = Config {
            max_blocks_per_s: 5,
            breaker_cooldown_ms: 2_000,
            ..Config::default()
        };
        let mut s = Scheduler::new(cfg, allow());
        for h in 1..=10 {
            s.offer(policy(&format!("192.0.2.{h}"), h, 60_000), h * 10);
        }
        assert!(matches!(s.breaker(200), Breaker::Open { .. }));
        assert_eq!(s.batch(200), None, "nothing applied while open");
        assert_eq!(s.desired().count(), 0, "held, not on the host");
        assert_eq!(s.batch(1_500), None, "calm, but not for long enough");
        let b = s.batch(2_200).unwrap();
        assert_eq!(b.len(), 10, "held changes go once it closes");
    }
}
