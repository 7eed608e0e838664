//! # Orchestrator
//!
//! Starts components in the order the data path needs them (each
//! [`Spec`] carries its place, from the runtime's component table) —
//! detectors,//! spines, proxies, Lucius, sidecars — so nothing sends into a hop that
//! does not exist yet; watches their health; restarts a component that
//! exits or crashes, with exponential backoff, counting every restart.
//!
//! Health comes from signed heartbeats (verified before they get here).
//! [`Health`] is a pure core that refuses bad health data instead of
//! acting on it: a heartbeat whose sequence number does not increase
//! (replay), whose time is in the future or too old, or whose load figures
//! are implausible (negative or absurd rates, queue depths beyond any
//! queue) is ignored and counted. The orchestrator interprets no telemetry,
//! intent or policy.
//!
//! Two backends share the start order and the restart policy
//! ([`Backoff`], a pure core): [`supervise`] keeps tokio tasks running
//! (`ben up`), [`process::Supervisor`] keeps OS processes running (`ben
//! cluster up`: one `ben run <component>` per component).
//!
//! [`scale::Scaler`] (pure) decides when a kind gets one more instance or
//! one fewer, from the queue depths of the heartbeats [`Health`] accepted:
//! proxies and spines both ways, detectors only up and conservatively.

pub mod cpu;
pub mod process;
pub mod scale;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One heartbeat's content, as the orchestrator judges it.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub component: String,
    pub role: String,
    pub seq: u64,
    pub at_ns: i64,
    pub queue_depth: u64,
    pub records_per_s: f64,
    pub intent_version: String,
}

/// Why a heartbeat was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    Replay,
    FromTheFuture,
    Stale,
    Implausible(&'static str),
}

/// Limits for judging heartbeats.
#[derive(Debug, Clone, Copy)]
pub struct HealthLimits {
    pub stale_after_ns: i64,
    pub max_clock_skew_ns: i64,
    pub max_queue_depth: u64,
    pub max_records_per_s: f64,
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits {
            stale_after_ns: 3_000_000_000,
            max_clock_skew_ns: 2_000_000_000,
            max_queue_depth: 10_000_000,
            max_records_per_s: 100_000_000.0,
        }
    }
}

/// The health view: latest accepted beat per component.
#[derive(Debug, Default)]
pub struct Health {
    limits: HealthLimits,
    latest: BTreeMap<String, Beat>,
    pub rejected: BTreeMap<String, u64>,
}

impl Health {
    pub fn new(limits: HealthLimits) -> Self {
        Health {
            limits,
            ..Health::default()
        }
    }

    /// Judges and records a beat at time `now`.
    pub fn observe(&mut self, b: Beat, now: i64) -> Result<(), Rejected> {
        let verdict = if b.at_ns > now.saturating_add(self.limits.max_clock_skew_ns) {
            Err(Rejected::FromTheFuture)
        } else if b.at_ns < now.saturating_sub(self.limits.stale_after_ns) {
            Err(Rejected::Stale)
        } else if !b.records_per_s.is_finite()
            || b.records_per_s < 0.0
            || b.records_per_s > self.limits.max_records_per_s
        {
            Err(Rejected::Implausible("records_per_s"))
        } else if b.queue_depth > self.limits.max_queue_depth {
            Err(Rejected::Implausible("queue_depth"))
        } else if self.latest.get(&b.component).is_some_and(|p| {
            b.seq <= p.seq && b.at_ns < p.at_ns.saturating_add(self.limits.stale_after_ns)
        }) {
            // Same incarnation, old sequence number: a replay. (A restarted
            // component starts again at 1 with a newer time — accepted once
            // the previous incarnation is stale.)
            Err(Rejected::Replay)
        } else {
            Ok(())
        };
        match verdict {
            Ok(()) => {
                self.latest.insert(b.component.clone(), b);
                Ok(())
            }
            Err(r) => {
                *self.rejected.entry(b.component).or_default() += 1;
                Err(r)
            }
        }
    }

    /// Components whose last accepted beat is fresh.
    pub fn alive(&self, now: i64) -> Vec<&Beat> {
        self.latest
            .values()
            .filter(|b| b.at_ns >= now - self.limits.stale_after_ns)
            .collect()
    }

    /// Components that stopped beating.
    pub fn stale(&self, now: i64) -> Vec<&Beat> {
        self.latest
            .values()
            .filter(|b| b.at_ns < now - self.limits.stale_after_ns)
            .collect()
    }
}

/// The restart policy: wait `initial` after the first exit, doubling up
/// to `max`; a component that ran for longer than `reset_after` before it
/// exited starts again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// One component's position in its [`Backoff`] policy.
#[derive(Debug, Clone)]
pub struct BackoffState {
    policy: Backoff,
    next: Duration,
}

impl BackoffState {
    pub fn new(policy: Backoff) -> Self {
        BackoffState {
            policy,
            next: policy.initial,
        }
    }

    /// The component exited after running for `ran_for`: how long to wait
    /// before starting it again.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for > self.policy.reset_after {
            self.next = self.policy.initial;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(self.policy.max.max(self.policy.initial));
        wait
    }
}

pub type BoxFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How to (re)start one component.
pub struct Spec {
    pub name: String,
    pub kind: &'static str,
    /// Start order: lower starts first (the component table's `order`).
    pub order: u8,
    pub start: Box<dyn Fn() -> BoxFuture + Send + Sync>,
}

/// Restart counters per component.
#[derive(Debug, Default)]
pub struct Restarts {
    pub counts: std::sync::Mutex<BTreeMap<String, u64>>,
    pub total: AtomicU64,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `specs` by their `order` and keeps each running: when one
/// returns or panics it is started again after a backoff (100 ms doubling
/// to 5 s). Returns the task handles.
pub fn supervise(
    mut specs: Vec<Spec>,
    restarts: Arc<Restarts>,
) -> Vec<tokio::task::JoinHandle<()>> {
    specs.sort_by_key(|s| s.order);
    specs
        .into_iter()
        .map(|spec| {
            let restarts = restarts.clone();
            tokio::spawn(async move {
                let mut backoff = BackoffState::new(Backoff::default());
                loop {
                    let started = tokio::time::Instant::now();
                    // The component runs as a task of its own (a panic is
                    // an outcome, not the supervisor's end); cancelling the
                    // supervisor (shutdown) cancels it too: a dropped
                    // handle alone would leave it running.
                    let mut run = tokio::spawn((spec.start)());
                    let _cancel = AbortOnDrop(run.abort_handle());
                    let outcome = (&mut run).await;
                    let why = match outcome {
                        Ok(Ok(())) => "exited".to_string(),
                        Ok(Err(e)) => format!("failed: {e}"),
                        Err(e) if e.is_panic() => "panicked".to_string(),
                        Err(_) => return, // cancelled: shutting down
                    };
                    let wait = backoff.after_exit(started.elapsed());
                    tracing::warn!(component = %spec.name, "{why}; restarting in {wait:?}");
                    restarts.record(&spec.name);
                    tokio::time::sleep(wait).await;
                }
            })
        })
        .collect()
}

impl Restarts {
    /// Counts one restart of `name`.
    pub fn record(&self, name: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(name.to_string()).or_default() += 1;
        }
    }

    /// Restarts of `name` so far.
    pub fn of(&self, name: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn beat(seq: u64, at: i64) -> Beat {
        Beat {
            component: "spine-1".into(),
            role: "spine".into(),
            seq,
            at_ns: at,
            queue_depth: 3,
            records_per_s: 100.0,
            intent_version: "v1".into(),
        }
    }

    #[test]
    fn bad_health_data_is_ignored() {
        let mut h = Health::new(HealthLimits::default());
        assert_eq!(h.observe(beat(1, 10 * S), 10 * S), Ok(()));
        assert_eq!(h.observe(beat(1, 10 * S), 11 * S), Err(Rejected::Replay));
        assert_eq!(
            h.observe(beat(2, 20 * S), 11 * S),
            Err(Rejected::FromTheFuture)
        );
        assert_eq!(h.observe(beat(2, S), 11 * S), Err(Rejected::Stale));
        let mut b = beat(3, 11 * S);
        b.records_per_s = -5.0;
        assert_eq!(
            h.observe(b, 11 * S),
            Err(Rejected::Implausible("records_per_s"))
        );
        let mut b = beat(3, 11 * S);
        b.queue_depth = u64::MAX;
        assert_eq!(
            h.observe(b, 11 * S),
            Err(Rejected::Implausible("queue_depth"))
        );
        assert_eq!(h.observe(beat(3, 11 * S), 11 * S), Ok(()));
        assert_eq!(h.rejected["spine-1"], 5);
        assert_eq!(h.alive(12 * S).len(), 1);
        assert_eq!(h.stale(20 * S).len(), 1);
        // A restarted incarnation (seq back to 1, newer time) is accepted
        // once the old one is stale.
        assert_eq!(h.observe(beat(1, 30 * S), 30 * S), Ok(()));
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = BackoffState::new(Backoff::default());
        let short = Duration::from_millis(10);
        let waits: Vec<u64> = (0..8)
            .map(|_| b.after_exit(short).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.after_exit(Duration::from_secs(31)).as_millis(), 100);
        assert_eq!(b.after_exit(short).as_millis(), 200);
    }

    #[tokio::test]
    async fn crashed_component_is_restarted_in_order() {
        let order = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let runs = Arc::new(AtomicU64::new(0));
        let mk = |name: &str, kind: &'static str, rank: u8, crash: bool| {
            let (order, runs, name2) = (order.clone(), runs.clone(), name.to_string());
            Spec {
                name: name.into(),
                kind,
                order: rank,
                start: Box::new(move || {
                    let (order, runs, name) = (order.clone(), runs.clone(), name2.clone());
                    Box::pin(async move {
                        order.lock().unwrap().push(name);
                        if crash && runs.fetch_add(1, Ordering::SeqCst) < 2 {
                            panic!("simulated crash");
                        }
                        std::future::pending::<()>().await;
                        Ok(())
                    })
                }),
            }
        };
        let restarts = Arc::new(Restarts::default());
        let specs = vec![
            mk("sidecar", "sidecar", 9, false),
            mk("spine-1", "spine", 2, true),
            mk("detector-1", "detector", 1, false),
        ];
        let handles = supervise(specs, restarts.clone());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(restarts.total.load(Ordering::SeqCst), 2);
        assert_eq!(restarts.counts.lock().unwrap()["spine-1"], 2);
        let o = order.lock().unwrap().clone();
        assert_eq!(&o[..3], ["detector-1", "spine-1", "sidecar"], "{o:?}");
        for h in handles {
            h.abort();
        }
    }
}
