//! # Scaling on queue depth (a pure core)
//!
//! Inputs in, decisions out: per component kind, the queue depths and
//! record rates from the *accepted* heartbeats of its running instances
//! (see [`Observation::from_health`]: heartbeats the [`Health`] core
//! judged replayed, stale, from the future or implausible never get here),
//! how many instances run, and the time. No clock, no I/O.
//!
//! * **Up** — the mean queue depth per reporting instance stays above the
//!   kind's high-water mark for the whole up window → add one instance
//!   (never above `max`).
//! * **Down** — every running instance reports a near-empty queue (at
//!   most a quarter of the high-water mark) for the down window, which is
//!   longer (twice the up window) → remove one (never below `min`, the
//!   configured count).
//! * **Cooldown** — after any action the kind does nothing for `cooldown`,
//!   and both windows start again from that moment, so a change is judged
//!   on what the new count does.
//! * **Stateful kinds** ([`Style::UpOnly`], the detectors in the runtime's
//!   component table) are scaled conservatively: twice the mark, twice the
//!   window, and never down automatically (a detector holds playbook
//!   windows; removing one loses them).
//!
//! A kind with no fresh accepted heartbeat gets no decision: missing data
//! is never read as "empty".

use crate::Health;
use std::collections::BTreeMap;

/// Settings shared by every kind (`[scale]` in the cluster config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalePolicy {
    /// Queue depth (messages waiting per instance) above which a kind is
    /// under pressure.
    pub high_water: u64,
    /// How long the pressure must last before one instance is added.
    pub window_ns: i64,
    /// The least time between two actions on one kind.
    pub cooldown_ns: i64,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            high_water: 64,
            window_ns: 10_000_000_000,
            cooldown_ns: 30_000_000_000,
        }
    }
}

/// How a kind may be scaled (set per kind by the component table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Up under pressure, down when idle.
    Both,
    /// Holds state: up only, at twice the mark and the window.
    UpOnly,
}

/// The thresholds one kind is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindPolicy {
    pub high_water: u64,
    /// Near-empty: every instance at or below this.
    pub low_water: u64,
    pub up_window_ns: i64,
    /// `None`: never scaled down automatically.
    pub down_window_ns: Option<i64>,
    pub cooldown_ns: i64,
}

impl ScalePolicy {
    /// The thresholds for a kind scaled in `style`: [`Style::UpOnly`]
    /// conservatively (twice the mark and the window, never down),
    /// [`Style::Both`] as configured.
    pub fn for_style(&self, style: Style) -> KindPolicy {
        let conservative = style == Style::UpOnly;
        let (mark, window) = if conservative {
            (
                self.high_water.saturating_mul(2),
                self.window_ns.saturating_mul(2),
            )
        } else {
            (self.high_water, self.window_ns)
        };
        KindPolicy {
            high_water: mark,
            low_water: mark / 4,
            up_window_ns: window,
            down_window_ns: (!conservative).then(|| window.saturating_mul(2)),
            cooldown_ns: self.cooldown_ns,
        }
    }
}

/// What the scaler sees of one kind at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Instances of the kind being run (started, whether or not they have
    /// reported yet).
    pub running: usize,
    /// Queue depth of each running instance with a fresh accepted
    /// heartbeat.
    pub depths: Vec<u64>,
    /// Records/s of the same instances.
    pub rates: Vec<f64>,
}

impl Observation {
    /// Builds the observation of `running` (the ids of `kind` being run)
    /// from what `health` accepted and still holds fresh at `now`. Rejected
    /// heartbeats never reached `health`'s view; stale ones are left out.
    pub fn from_health(health: &Health, kind: &str, running: &[String], now: i64) -> Observation {
        let mut o = Observation {
            running: running.len(),
            ..Observation::default()
        };
        for b in health.alive(now) {
            if b.role == kind && running.contains(&b.component) {
                o.depths.push(b.queue_depth);
                o.rates.push(b.records_per_s);
            }
        }
        o
    }

    fn mean_depth(&self) -> f64 {
        if self.depths.is_empty() {
            return 0.0;
        }
        self.depths.iter().map(|d| *d as f64).sum::<f64>() / self.depths.len() as f64
    }

    fn total_rate(&self) -> f64 {
        self.rates
            .iter()
            .filter(|r| r.is_finite() && **r >= 0.0)
            .sum()
    }
}

/// Which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// One scaling decision, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: String,
    pub direction: Direction,
    /// The instance count before the action.
    pub from: usize,
    /// The instance count the action leads to.
    pub to: usize,
    pub at_ns: i64,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct KindState {
    style: Style,
    min: usize,
    max: usize,
    above_since: Option<i64>,
    idle_since: Option<i64>,
    /// When the last action was decided (or the kind was first seen:
    /// nothing happens within a cooldown of the start).
    last_action_ns: Option<i64>,
}

/// The scaling core: one state per kind.
#[derive(Debug, Clone)]
pub struct Scaler {
    policy: ScalePolicy,
    kinds: BTreeMap<String, KindState>,
}

impl Scaler {
    pub fn new(policy: ScalePolicy) -> Self {
        Scaler {
            policy,
            kinds: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> ScalePolicy {
        self.policy
    }

    /// Lets `kind` range over `[min, max]` (`max` below `min` is read as
    /// `min`: no scaling).
    pub fn set_limits(&mut self, kind: &str, style: Style, min: usize, max: usize) {
        let st = self.kinds.entry(kind.to_string()).or_insert(KindState {
            style,
            min,
            max,
            above_since: None,
            idle_since: None,
            last_action_ns: None,
        });
        st.style = style;
        st.min = min;
        st.max = max.max(min);
    }

    /// `kind`'s `[min, max]`, if it is scaled.
    pub fn limits(&self, kind: &str) -> Option<(usize, usize)> {
        self.kinds.get(kind).map(|k| (k.min, k.max))
    }

    /// Judges `obs` of `kind` at `now`. Returns a decision at most once per
    /// cooldown; the caller acts on it (or not: the next observation tells
    /// the truth either way).
    pub fn decide(&mut self, kind: &str, obs: &Observation, now: i64) -> Option<Decision> {
        let st = self.kinds.get_mut(kind)?;
        let p = self.policy.for_style(st.style);
        // Time only moves forward here: an earlier `now` is read as no time
        // having passed.
        let since = |t: i64| now.saturating_sub(t).max(0);
        if st.last_action_ns.is_none() {
            st.last_action_ns = Some(now);
        }
        let reporting = obs.depths.len();
        if reporting == 0 {
            // No fresh data: no pressure and no idleness can be shown.
            st.above_since = None;
            st.idle_since = None;
            return None;
        }
        let mean = obs.mean_depth();
        if mean > p.high_water as f64 {
            st.above_since.get_or_insert(now);
        } else {
            st.above_since = None;
        }
        let all_idle = reporting >= obs.running && obs.depths.iter().all(|d| *d <= p.low_water);
        if all_idle {
            st.idle_since.get_or_insert(now);
        } else {
            st.idle_since = None;
        }
        let cooled = st.last_action_ns.is_none_or(|t| since(t) >= p.cooldown_ns);
        if !cooled {
            return None;
        }
        let rate = obs.total_rate();
        let decision = if let Some(t) = st.above_since.filter(|t| since(*t) >= p.up_window_ns) {
            (obs.running < st.max).then(|| Decision {
                kind: kind.to_string(),
                direction: Direction::Up,
                from: obs.running,
                to: obs.running + 1,
                at_ns: now,
                reason: format!(
                    "mean queue depth {mean:.1} over {reporting} {kind}(s) above the high-water mark {} for {} ms ({rate:.0} records/s)",
                    p.high_water,
                    since(t) / 1_000_000
                ),
            })
        } else if let (Some(t), Some(w)) = (st.idle_since, p.down_window_ns) {
            (since(t) >= w && obs.running > st.min).then(|| Decision {
                kind: kind.to_string(),
                direction: Direction::Down,
                from: obs.running,
                to: obs.running - 1,
                at_ns: now,
                reason: format!(
                    "every {kind} near-empty (queue depth at most {}) for {} ms ({rate:.0} records/s); back towards {}",
                    p.low_water,
                    since(t) / 1_000_000,
                    st.min
                ),
            })
        } else {
            None
        };
        if decision.is_some() {
            st.last_action_ns = Some(now);
            st.above_since = None;
            st.idle_since = None;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Beat, HealthLimits};
    use proptest::prelude::*;

    const MS: i64 = 1_000_000;

    fn policy() -> ScalePolicy {
        ScalePolicy {
            high_water: 10,
            window_ns: 1000 * MS,
            cooldown_ns: 2000 * MS,
        }
    }

    fn obs(running: usize, depth: u64) -> Observation {
        Observation {
            running,
            depths: vec![depth; running],
            rates: vec![100.0; running],
        }
    }

    /// Feeds `depth` every 100 ms from `from` to `to` (ms); returns the
    /// decisions with the count kept as they say.
    fn run(
        s: &mut Scaler,
        kind: &str,
        running: &mut usize,
        depth: u64,
        from: i64,
        to: i64,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            if let Some(d) = s.decide(kind, &obs(*running, depth), t * MS) {
                *running = d.to;
                out.push(d);
            }
            t += 100;
        }
        out
    }

    #[test]
    fn sustained_depth_adds_one_then_idle_removes_it() {
        let mut s = Scaler::new(policy());
        s.set_limits("spine", Style::Both, 1, 3);
        let mut n = 1;
        // Within the start's cooldown nothing happens.
        assert!(run(&mut s, "spine", &mut n, 50, 0, 1900).is_empty());
        // Pressure for a full window after the cooldown: one up.
        let d = run(&mut s, "spine", &mut n, 50, 2000, 3000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].direction, d[0].from, d[0].to), (Direction::Up, 1, 2));
        assert!(
            d[0].reason.contains("high-water mark 10"),
            "{}",
            d[0].reason
        );
        // A short spike does nothing.
        assert!(run(&mut s, "spine", &mut n, 50, 3100, 3500).is_empty());
        assert!(run(&mut s, "spine", &mut n, 0, 3600, 3700).is_empty());
        // Idle: down after the cooldown and the (longer) down window.
        let d = run(&mut s, "spine", &mut n, 0, 3800, 20_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].direction, d[0].to), (Direction::Down, 1));
        // Cooldown from 3000 ms over; idle since 3600 ms for the 2000 ms
        // down window.
        assert_eq!(d[0].at_ns, 5600 * MS, "{d:?}");
        assert!(d[0].reason.contains("near-empty"), "{}", d[0].reason);
        // Never below the configured count.
        assert!(run(&mut s, "spine", &mut n, 0, 20_100, 40_000).is_empty());
        assert_eq!(n, 1);
    }

    #[test]
    fn never_above_max_and_one_per_cooldown() {
        let mut s = Scaler::new(policy());
        s.set_limits("proxy", Style::Both, 1, 3);
        let mut n = 1;
        let d = run(&mut s, "proxy", &mut n, 1000, 0, 30_000);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(n, 3);
        assert!(d[1].at_ns - d[0].at_ns >= 2000 * MS);
    }

    #[test]
    fn detectors_conservative_and_never_down() {
        let mut s = Scaler::new(policy());
        s.set_limits("detector", Style::UpOnly, 1, 2);
        let mut n = 1;
        // Above the spine mark, below twice it: nothing.
        assert!(run(&mut s, "detector", &mut n, 15, 0, 10_000).is_empty());
        // Above twice the mark for one window (2×1000 ms after the
        // cooldown start): nothing until the longer window passed.
        let d = run(&mut s, "detector", &mut n, 25, 10_100, 12_000);
        assert!(d.is_empty(), "{d:?}");
        let d = run(&mut s, "detector", &mut n, 25, 12_100, 13_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(n, 2);
        assert!(run(&mut s, "detector", &mut n, 0, 13_100, 100_000).is_empty());
        assert_eq!(n, 2);
    }

    #[test]
    fn no_fresh_data_means_no_decision() {
        let mut s = Scaler::new(policy());
        s.set_limits("spine", Style::Both, 1, 3);
        let empty = Observation {
            running: 2,
            ..Observation::default()
        };
        for t in 0..100 {
            assert_eq!(s.decide("spine", &empty, t * 500 * MS), None);
        }
        // One instance silent (just started): not "all near-empty".
        let half = Observation {
            running: 2,
            depths: vec![0],
            rates: vec![0.0],
        };
        for t in 0..100 {
            assert_eq!(s.decide("spine", &half, t * 500 * MS), None);
        }
        // Unknown kinds are not scaled.
        assert_eq!(s.decide("lucius", &obs(1, 1000), 0), None);
    }

    #[test]
    fn rejected_heartbeats_do_not_count() {
        let mut h = Health::new(HealthLimits::default());
        let beat = |id: &str, seq, at, depth| Beat {
            component: id.into(),
            role: "spine".into(),
            seq,
            at_ns: at,
            queue_depth: depth,
            records_per_s: 10.0,
            intent_version: String::new(),
        };
        let now = 100_000 * MS;
        h.observe(beat("spine-1", 5, now, 3), now).unwrap();
        // A replay claiming a deep queue, one from the future, one
        // implausible: all refused, the view keeps depth 3.
        assert!(h.observe(beat("spine-1", 4, now, 500), now).is_err());
        assert!(h
            .observe(beat("spine-1", 6, now + 10_000 * MS, 500), now)
            .is_err());
        assert!(h.observe(beat("spine-1", 7, now, u64::MAX), now).is_err());
        // A stale one from another spine is refused too.
        assert!(h
            .observe(beat("spine-2", 1, now - 60_000 * MS, 500), now)
            .is_err());
        // spine-9 is not one of the running ids.
        h.observe(beat("spine-9", 1, now, 500), now).unwrap();
        let running = vec!["spine-1".to_string(), "spine-2".to_string()];
        let o = Observation::from_health(&h, "spine", &running, now);
        assert_eq!(o.running, 2);
        assert_eq!(o.depths, vec![3]);
        // Stale after the health limit: nothing left.
        let o = Observation::from_health(&h, "spine", &running, now + 10_000 * MS);
        assert!(o.depths.is_empty());
    }

    proptest! {
        #[test]
        fn stays_in_bounds_and_never_flaps_faster_than_the_cooldown(
            min in 1usize..4,
            extra in 0usize..4,
            kind in prop::sample::select(vec!["spine", "proxy", "detector"]),
            steps in prop::collection::vec((0i64..3000, prop::collection::vec(0u64..200, 0..6)), 1..300),
            cooldown in 0i64..5000,
            window in 0i64..3000,
            high_water in 0u64..50,
        ) {
            let mut s = Scaler::new(ScalePolicy {
                high_water,
                window_ns: window * MS,
                cooldown_ns: cooldown * MS,
            });
            let max = min + extra;
            let style = if kind == "detector" { Style::UpOnly } else { Style::Both };
            s.set_limits(kind, style, min, max);
            let mut n = min;
            let mut t = 0i64;
            let mut last: Option<i64> = None;
            for (dt, depths) in steps {
                t += dt * MS;
                let depths: Vec<u64> = depths.into_iter().take(n).collect();
                let o = Observation { running: n, rates: vec![1.0; depths.len()], depths };
                if let Some(d) = s.decide(kind, &o, t) {
                    prop_assert_eq!(d.from, n);
                    if let Some(l) = last {
                        prop_assert!(t - l >= cooldown * MS, "{} then {}", l, t);
                    }
                    if kind == "detector" {
                        prop_assert_eq!(d.direction, Direction::Up);
                    }
                    last = Some(t);
                    n = d.to;
                }
                prop_assert!(n >= min && n <= max, "{} outside [{}, {}]", n, min, max);
            }
        }
    }
}
