//! # CyberMesh feedback (pure core)
//!
//! What happened to each anomaly the AI service published, and what that
//! says about its publish threshold (DESIGN.md: feedback; seed 002 §5).
//!
//! * **Lifecycle**, seven states: DETECTED (the engines' window), PUBLISHED
//!   (signed and sent), ADMITTED (a validator's committed block admitted
//!   it), COMMITTED (f + 1 validators announced that block, so at least one
//!   honest one committed it), REJECTED (f + 1 validators announced a
//!   block whose state machine refused it, with the reason), TIMEOUT (no decision within
//!   [`Config::timeout_ms`], 5 min), EXPIRED (admitted, never committed
//!   within [`Config::ttl_ms`], 30 days). The policies made from it and the
//!   enforcement agents' acks are kept beside its state.
//! * **Acceptance** = committed ÷ decided, over the anomalies published in
//!   the last [`Config::window_ms`] that reached a terminal state (pending
//!   ones would count as failures right after a burst).
//! * **Calibration**, every [`Config::every_ms`] once
//!   [`Config::min_decided`] outcomes are in: below [`Config::low`] (70 %)
//!   the threshold rises, above [`Config::high`] (85 %) it falls, by 2 % to
//!   5 % of itself (more the further the rate is outside the band), never
//!   outside [`Config::min`]..[`Config::max`]. Every change is kept with its
//!   inputs and reason ([`Change`]).
//!
//! Time is an argument (ms since the epoch); nothing here reads a clock,
//! a file or the network. [`Snapshot`] is what a shell stores so that a
//! restart keeps states and thresholds.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Milliseconds since the epoch.
pub type Ms = u64;

/// Settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The threshold before any change (the detector's default).
    pub initial: f64,
    /// Acceptance below this raises the threshold.
    pub low: f64,
    /// Acceptance above this lowers it.
    pub high: f64,
    /// The smallest change, as a fraction of the threshold.
    pub step_min: f64,
    /// The largest change, as a fraction of the threshold.
    pub step_max: f64,
    /// Bounds the threshold never leaves.
    pub min: f64,
    pub max: f64,
    /// Anomalies published this long ago or less are the window.
    pub window_ms: Ms,
    /// How often acceptance is judged.
    pub every_ms: Ms,
    /// Outcomes the window needs before the threshold moves.
    pub min_decided: usize,
    /// PUBLISHED with no decision this long: TIMEOUT.
    pub timeout_ms: Ms,
    /// ADMITTED, not committed, this long after publishing: EXPIRED.
    pub ttl_ms: Ms,
    /// Lifecycles kept (the oldest go first).
    pub keep: usize,
    /// Changes kept.
    pub keep_changes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            initial: 0.70,
            low: 0.70,
            high: 0.85,
            step_min: 0.02,
            step_max: 0.05,
            min: 0.50,
            max: 0.95,
            window_ms: 10 * 60_000,
            every_ms: 60_000,
            min_decided: 20,
            timeout_ms: 5 * 60_000,
            ttl_ms: 30 * 24 * 3_600_000,
            keep: 100_000,
            keep_changes: 1_000,
        }
    }
}

impl Config {
    /// Refuses settings that cannot work, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let unit = |k: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("feedback {k} = {v}: between 0 and 1"))
            }
        };
        for (k, v) in [
            ("initial", self.initial),
            ("low", self.low),
            ("high", self.high),
            ("step_min", self.step_min),
            ("step_max", self.step_max),
            ("min", self.min),
            ("max", self.max),
        ] {
            unit(k, v)?;
        }
        if self.low > self.high {
            return Err(format!(
                "feedback low = {} is above high = {}",
                self.low, self.high
            ));
        }
        if self.step_min > self.step_max {
            return Err(format!(
                "feedback step_min = {} is above step_max = {}",
                self.step_min, self.step_max
            ));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(format!(
                "feedback initial = {} is outside min..max = {}..{}",
                self.initial, self.min, self.max
            ));
        }
        if self.window_ms == 0 || self.every_ms == 0 || self.keep == 0 {
            return Err("feedback window_ms, every_ms and keep must be positive".into());
        }
        Ok(())
    }
}

/// Where an anomaly stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Detected,
    Published,
    Admitted,
    Committed,
    Rejected,
    Timeout,
    Expired,
}

impl State {
    /// No further change.
    pub fn terminal(self) -> bool {
        matches!(
            self,
            State::Committed | State::Rejected | State::Timeout | State::Expired
        )
    }
}

/// An enforcement agent's answer about a policy made from the anomaly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub agent: String,
    pub policy: String,
    pub target: String,
    /// applied, failed, skipped, expired.
    pub status: String,
    pub at_ms: Ms,
}

/// One anomaly's way from detection to enforcement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub id: String,
    pub class: String,
    pub confidence: f64,
    pub state: State,
    /// The end of the window the engines detected it in.
    pub detected_ms: Ms,
    pub published_ms: Ms,
    pub admitted_ms: Option<Ms>,
    pub committed_ms: Option<Ms>,
    /// When it reached REJECTED, TIMEOUT or EXPIRED.
    pub ended_ms: Option<Ms>,
    /// The height of the block that admitted it.
    pub height: Option<u64>,
    /// The validators that announced that block.
    pub validators: BTreeSet<String>,
    /// The validators that announced a block refusing it.
    #[serde(default)]
    pub rejected_by: BTreeSet<String>,
    /// Why it was rejected, timed out or expired.
    pub reason: Option<String>,
    /// Policies made from it.
    pub policies: BTreeSet<String>,
    pub acks: Vec<Ack>,
}

/// A change of the threshold, with what it was decided on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub at_ms: Ms,
    pub from: f64,
    pub to: f64,
    /// Acceptance over the window.
    pub rate: f64,
    pub committed: usize,
    pub decided: usize,
    /// Published in the window (decided or not).
    pub published: usize,
    pub window_ms: Ms,
    pub reason: String,
}

/// What a shell stores and restores.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub threshold: f64,
    pub last_eval_ms: Ms,
    pub items: Vec<Lifecycle>,
    pub changes: Vec<Change>,
}

/// Counts by state, for the status.
pub type Counts = BTreeMap<State, usize>;

/// The feedback core.
pub struct Feedback {
    cfg: Config,
    /// f of the validator set: f + 1 announcements prove a commit.
    f: usize,
    threshold: f64,
    last_eval_ms: Ms,
    items: HashMap<String, Lifecycle>,
    order: VecDeque<String>,
    /// Policy id → its anomalies (to route acks).
    policies: HashMap<String, Vec<String>>,
    policy_order: VecDeque<String>,
    changes: VecDeque<Change>,
    /// Commits naming anomalies this service did not publish (another
    /// instance's, or from before what is kept).
    pub unknown: u64,
}

impl Feedback {
    /// A new core for a validator set tolerating `f` faults.
    pub fn new(cfg: Config, f: usize) -> Feedback {
        Feedback {
            threshold: cfg.initial,
            cfg,
            f,
            last_eval_ms: 0,
            items: HashMap::new(),
            order: VecDeque::new(),
            policies: HashMap::new(),
            policy_order: VecDeque::new(),
            changes: VecDeque::new(),
            unknown: 0,
        }
    }

    /// A core resumed from `snap` (its threshold clamped to the bounds of
    /// `cfg`, which may have changed).
    pub fn restore(cfg: Config, f: usize, snap: Snapshot) -> Feedback {
        let mut fb = Feedback::new(cfg, f);
        fb.threshold = snap.threshold.clamp(fb.cfg.min, fb.cfg.max);
        fb.last_eval_ms = snap.last_eval_ms;
        for it in snap.items {
            for p in &it.policies {
                fb.note_policy(p, &it.id);
            }
            fb.insert(it);
        }
        fb.changes = snap.changes.into();
        fb
    }

    /// What to store.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            threshold: self.threshold,
            last_eval_ms: self.last_eval_ms,
            items: self
                .order
                .iter()
                .filter_map(|id| self.items.get(id).cloned())
                .collect(),
            changes: self.changes.iter().cloned().collect(),
        }
    }

    /// The threshold the AI service publishes above.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Every change kept, oldest first.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter()
    }

    /// One anomaly's lifecycle.
    pub fn lifecycle(&self, id: &str) -> Option<&Lifecycle> {
        self.items.get(id)
    }

    /// How many anomalies are in each state.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::new();
        for it in self.items.values() {
            *c.entry(it.state).or_insert(0) += 1;
        }
        c
    }

    fn insert(&mut self, it: Lifecycle) {
        if self.items.insert(it.id.clone(), it.clone()).is_none() {
            self.order.push_back(it.id);
        }
        while self.order.len() > self.cfg.keep {
            if let Some(old) = self.order.pop_front() {
                self.items.remove(&old);
            }
        }
    }

    fn note_policy(&mut self, policy: &str, anomaly: &str) {
        let list = self.policies.entry(policy.to_string()).or_default();
        if list.is_empty() {
            self.policy_order.push_back(policy.to_string());
        }
        if !list.iter().any(|a| a == anomaly) {
            list.push(anomaly.to_string());
        }
        while self.policy_order.len() > self.cfg.keep {
            if let Some(old) = self.policy_order.pop_front() {
                self.policies.remove(&old);
            }
        }
    }

    /// The AI service published anomaly `id` (detected at the end of the
    /// window `detected_ms`).
    pub fn published(&mut self, id: &str, class: &str, confidence: f64, detected_ms: Ms, now: Ms) {
        if self.items.contains_key(id) {
            return;
        }
        self.insert(Lifecycle {
            id: id.to_string(),
            class: class.to_string(),
            confidence,
            state: State::Published,
            detected_ms,
            published_ms: now,
            admitted_ms: None,
            committed_ms: None,
            ended_ms: None,
            height: None,
            validators: BTreeSet::new(),
            rejected_by: BTreeSet::new(),
            reason: None,
            policies: BTreeSet::new(),
            acks: vec![],
        });
    }

    /// Validator `validator` announced block `height`, which admitted
    /// `admitted` and refused `rejected` (id, reason).
    pub fn commit(
        &mut self,
        validator: &str,
        height: u64,
        admitted: &[String],
        rejected: &[(String, String)],
        now: Ms,
    ) {
        let quorum = self.f + 1;
        for id in admitted {
            let Some(it) = self.items.get_mut(id) else {
                self.unknown += 1;
                continue;
            };
            it.validators.insert(validator.to_string());
            if matches!(it.state, State::Published | State::Timeout) {
                // A late decision beats a timeout: the chain is the truth.
                it.state = State::Admitted;
                it.admitted_ms = Some(now);
                it.height = Some(height);
                it.ended_ms = None;
                it.reason = None;
            }
            if it.state == State::Admitted && it.validators.len() >= quorum {
                it.state = State::Committed;
                it.committed_ms = Some(now);
            }
        }
        for (id, reason) in rejected {
            let Some(it) = self.items.get_mut(id) else {
                self.unknown += 1;
                continue;
            };
            // One validator's word is not enough either way: a lying one
            // could otherwise push the threshold up, and detection down.
            it.rejected_by.insert(validator.to_string());
            if it.rejected_by.len() >= quorum
                && matches!(
                    it.state,
                    State::Published | State::Admitted | State::Timeout
                )
            {
                it.state = State::Rejected;
                it.ended_ms = Some(now);
                it.reason = Some(reason.clone());
            }
        }
    }

    /// A block policy `policy` was made from `anomalies`.
    pub fn policy(&mut self, policy: &str, anomalies: &[String]) {
        for a in anomalies {
            if let Some(it) = self.items.get_mut(a) {
                it.policies.insert(policy.to_string());
                self.note_policy(policy, a);
            }
        }
    }

    /// An enforcement agent acked policy `ack.policy`.
    pub fn ack(&mut self, ack: Ack) {
        let Some(list) = self.policies.get(&ack.policy) else {
            return;
        };
        for a in list.clone() {
            if let Some(it) = self.items.get_mut(&a) {
                let seen = it.acks.iter().any(|x| {
                    x.agent == ack.agent && x.target == ack.target && x.status == ack.status
                });
                if !seen && it.acks.len() < 64 {
                    it.acks.push(ack.clone());
                }
            }
        }
    }

    /// Time passes: timeouts and expiries, then (every `every_ms`) the
    /// acceptance is judged; a change of threshold is returned (and kept).
    pub fn tick(&mut self, now: Ms) -> Option<Change> {
        for it in self.items.values_mut() {
            let age = now.saturating_sub(it.published_ms);
            match it.state {
                State::Published if age > self.cfg.timeout_ms => {
                    it.state = State::Timeout;
                    it.ended_ms = Some(now);
                    it.reason = Some(format!(
                        "no validator admitted or refused it within {} s",
                        self.cfg.timeout_ms / 1000
                    ));
                }
                State::Admitted if age > self.cfg.ttl_ms => {
                    it.state = State::Expired;
                    it.ended_ms = Some(now);
                    it.reason = Some(format!(
                        "admitted but not committed by f + 1 validators within {} days",
                        self.cfg.ttl_ms / 86_400_000
                    ));
                }
                _ => {}
            }
        }
        if now < self.last_eval_ms.saturating_add(self.cfg.every_ms) {
            return None;
        }
        self.last_eval_ms = now;
        let since = now.saturating_sub(self.cfg.window_ms);
        let (mut published, mut decided, mut committed) = (0, 0, 0);
        for it in self.items.values().filter(|it| it.published_ms >= since) {
            published += 1;
            if it.state.terminal() {
                decided += 1;
                if it.state == State::Committed {
                    committed += 1;
                }
            }
        }
        if decided < self.cfg.min_decided.max(1) {
            return None;
        }
        let rate = committed as f64 / decided as f64;
        let c = &self.cfg;
        // How far outside the band, as a share of the room on that side:
        // the step grows from step_min at the edge to step_max at 0 or 1.
        let (dir, depth, reason) = if rate < c.low {
            (
                1.0,
                (c.low - rate) / c.low.max(f64::EPSILON),
                format!(
                    "acceptance {:.1} % < {:.0} %: too many anomalies the validators did not commit; publishing less",
                    rate * 100.0,
                    c.low * 100.0
                ),
            )
        } else if rate > c.high {
            (
                -1.0,
                (rate - c.high) / (1.0 - c.high).max(f64::EPSILON),
                format!(
                    "acceptance {:.1} % > {:.0} %: the validators commit nearly all; publishing more",
                    rate * 100.0,
                    c.high * 100.0
                ),
            )
        } else {
            return None;
        };
        let step = c.step_min + (c.step_max - c.step_min) * depth.clamp(0.0, 1.0);
        let from = self.threshold;
        let to = (from * (1.0 + dir * step)).clamp(c.min, c.max);
        if (to - from).abs() < 1e-12 {
            return None; // at the bound already
        }
        self.threshold = to;
        let change = Change {
            at_ms: now,
            from,
            to,
            rate,
            committed,
            decided,
            published,
            window_ms: c.window_ms,
            reason,
        };
        self.changes.push_back(change.clone());
        while self.changes.len() > c.keep_changes {
            self.changes.pop_front();
        }
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Ms = 60_000;

    fn cfg() -> Config {
        Config {
            min_decided: 10,
            ..Config::default()
        }
    }

    /// A stream of 20 anomalies a minute where `accepted` % of each
    /// minute's get committed (by two of four validators) and the rest
    /// refused; one judgement a minute over `minutes`. Returns the core
    /// and the changes made.
    fn stream(accepted: usize, minutes: u64) -> (Feedback, Vec<Change>) {
        let mut fb = Feedback::new(cfg(), 1);
        let mut made = vec![];
        let mut k = 0usize;
        for m in 1..=minutes {
            let now = m * MIN;
            for i in 0..20 {
                let id = format!("an-{k}");
                k += 1;
                fb.published(&id, "portscan", 0.8, now - 2_000, now - 1_000);
                if i * 100 < accepted * 20 {
                    for v in ["validator-1", "validator-2"] {
                        fb.commit(v, k as u64, std::slice::from_ref(&id), &[], now);
                    }
                } else {
                    for v in ["validator-1", "validator-3"] {
                        fb.commit(v, k as u64, &[], &[(id.clone(), "stale".into())], now);
                    }
                }
            }
            if let Some(c) = fb.tick(now) {
                made.push(c);
            }
        }
        (fb, made)
    }

    #[test]
    fn low_acceptance_raises_the_threshold_within_bounds() {
        let (fb, made) = stream(40, 120);
        assert!(!made.is_empty());
        assert!(
            made.iter().all(|c| c.to > c.from && c.rate < 0.7),
            "{made:?}"
        );
        // Each step is 2–5 % of the threshold.
        for c in &made {
            let step = (c.to - c.from) / c.from;
            assert!(
                (0.02 - 1e-9..=0.05 + 1e-9).contains(&step) || c.to == fb.cfg.max,
                "{c:?}"
            );
            assert!(c.reason.contains("acceptance 40.0 %"), "{}", c.reason);
            assert_eq!(c.committed * 100, c.decided * 40, "{c:?}");
            assert!(c.decided <= 200 && c.published == c.decided);
        }
        // It reaches the ceiling and stays there.
        assert!((fb.threshold() - 0.95).abs() < 1e-12);
        assert_eq!(fb.changes().count(), made.len());
    }

    #[test]
    fn high_acceptance_lowers_it_and_the_band_keeps_it() {
        let (fb, made) = stream(95, 120);
        assert!(made.iter().all(|c| c.to < c.from && c.rate > 0.85));
        assert!((fb.threshold() - 0.50).abs() < 1e-12, "{}", fb.threshold());
        let (fb, made) = stream(80, 30);
        assert!(made.is_empty(), "{made:?}");
        assert!((fb.threshold() - 0.70).abs() < 1e-12);
    }

    #[test]
    fn the_step_grows_with_the_distance_from_the_band() {
        let (_, near) = stream(65, 3);
        let (_, far) = stream(5, 3);
        let step = |c: &Change| (c.to - c.from) / c.from;
        assert!(step(&near[0]) < step(&far[0]), "{near:?} {far:?}");
        assert!(step(&near[0]) >= 0.02 && step(&far[0]) <= 0.05 + 1e-9);
    }

    #[test]
    fn lifecycle_from_publish_to_ack() {
        let mut fb = Feedback::new(cfg(), 1);
        fb.published("a", "portscan", 0.9, 900, 1_000);
        assert_eq!(fb.lifecycle("a").unwrap().state, State::Published);
        fb.commit("validator-3", 7, &["a".into()], &[], 2_000);
        let it = fb.lifecycle("a").unwrap();
        assert_eq!(
            (it.state, it.height, it.admitted_ms),
            (State::Admitted, Some(7), Some(2_000))
        );
        // The same validator again proves nothing more.
        fb.commit("validator-3", 7, &["a".into()], &[], 2_100);
        assert_eq!(fb.lifecycle("a").unwrap().state, State::Admitted);
        fb.commit("validator-1", 7, &["a".into()], &[], 2_200);
        assert_eq!(fb.lifecycle("a").unwrap().state, State::Committed);
        fb.policy("p1", &["a".into(), "other".into()]);
        fb.ack(Ack {
            agent: "enforcer-1".into(),
            policy: "p1".into(),
            target: "10.0.0.9".into(),
            status: "applied".into(),
            at_ms: 2_500,
        });
        let it = fb.lifecycle("a").unwrap();
        assert_eq!(it.acks.len(), 1);
        assert!(it.policies.contains("p1"));
        // Unknown ids are counted, not invented.
        fb.commit("validator-1", 8, &["nope".into()], &[], 3_000);
        assert_eq!(fb.unknown, 1);
        assert!(fb.lifecycle("nope").is_none());
    }

    #[test]
    fn timeouts_expiry_and_rejection() {
        let mut fb = Feedback::new(cfg(), 1);
        fb.published("t", "dos", 0.8, 0, 0);
        fb.published("e", "dos", 0.8, 0, 0);
        fb.published("r", "dos", 0.8, 0, 0);
        fb.commit(
            "validator-1",
            1,
            &["e".into()],
            &[("r".into(), "expired TTL".into())],
            10,
        );
        // One validator's refusal is not a decision (a liar could push the
        // threshold up); a second one's is.
        assert_eq!(fb.lifecycle("r").unwrap().state, State::Published);
        fb.commit(
            "validator-2",
            1,
            &[],
            &[("r".into(), "expired TTL".into())],
            11,
        );
        let _ = fb.tick(5 * MIN + 1);
        assert_eq!(fb.lifecycle("t").unwrap().state, State::Timeout);
        assert_eq!(fb.lifecycle("e").unwrap().state, State::Admitted);
        let r = fb.lifecycle("r").unwrap();
        assert_eq!(
            (r.state, r.reason.as_deref()),
            (State::Rejected, Some("expired TTL"))
        );
        // A decision after the timeout still counts.
        fb.commit("validator-1", 2, &["t".into()], &[], 6 * MIN);
        assert_eq!(fb.lifecycle("t").unwrap().state, State::Admitted);
        let _ = fb.tick(31 * 24 * 60 * MIN);
        assert_eq!(fb.lifecycle("e").unwrap().state, State::Expired);
        let c = fb.counts();
        assert_eq!(c.get(&State::Expired), Some(&2));
        assert_eq!(c.get(&State::Rejected), Some(&1));
    }

    #[test]
    fn a_restart_keeps_states_and_thresholds() {
        let (fb, made) = stream(40, 10);
        assert!(!made.is_empty());
        let snap = fb.snapshot();
        let text = serde_json_like(&snap);
        let back = Feedback::restore(cfg(), 1, snap.clone());
        assert_eq!(back.threshold(), fb.threshold());
        assert_eq!(back.snapshot(), snap, "{text}");
        assert_eq!(back.counts(), fb.counts());
        // Tighter bounds after the restart clamp what was kept.
        let tight = Config { max: 0.72, ..cfg() };
        let back = Feedback::restore(tight, 1, snap);
        assert!(back.threshold() <= 0.72);
    }

    /// The snapshot's Debug text, for a failure message.
    fn serde_json_like(s: &Snapshot) -> String {
        format!("{:?}", s.changes)
    }

    #[test]
    fn bad_settings_are_named() {
        let e = Config {
            low: 0.9,
            high: 0.8,
            ..Config::default()
        }
        .check()
        .unwrap_err();
        assert!(e.contains("low = 0.9"), "{e}");
        let e = Config {
            initial: 0.99,
            ..Config::default()
        }
        .check()
        .unwrap_err();
        assert!(e.contains("initial"), "{e}");
        assert!(Config::default().check().is_ok());
    }

    #[test]
    fn what_is_kept_is_bounded() {
        let mut fb = Feedback::new(Config { keep: 10, ..cfg() }, 1);
        for i in 0..25 {
            fb.published(&format!("x{i}"), "c", 0.8, 0, i);
        }
        assert_eq!(fb.snapshot().items.len(), 10);
        assert!(fb.lifecycle("x0").is_none() && fb.lifecycle("x24").is_some());
    }
}
