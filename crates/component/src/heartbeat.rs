//! Heartbeats: a component's signed sign of life, with its load.

use crate::{age, subjects, Active, Deps};
use ben_wire::pb;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Load/throughput figures a component reports in its heartbeats.
#[derive(Debug, Default)]
pub struct Load {
    pub processed: AtomicU64,
    pub queue_depth: AtomicU64,
    /// How old records were when they arrived here (see [`age`]).
    pub ages: age::Ages,
    /// Records/s over the last heartbeat interval (f64 bits).
    pub rate_bits: AtomicU64,
    /// Messages this component could not publish (see
    /// [`crate::Publish::send`]).
    pub publish_errors: AtomicU64,
}

impl Load {
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }
}

/// Stops the heartbeat task when dropped (when its component's run ends,
/// crashes or is cancelled, it stops looking alive).
pub struct HeartbeatGuard(tokio::task::JoinHandle<()>);

impl Drop for HeartbeatGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts heartbeats that report `active`'s version; keep the guard alive
/// for as long as the component runs.
pub fn start_heartbeats<C: Send + Sync + 'static>(
    deps: &Deps,
    role: &'static str,
    active: Arc<Active<C>>,
    load: Arc<Load>,
) -> HeartbeatGuard {
    let version: Arc<dyn Fn() -> Option<String> + Send + Sync> = Arc::new(move || active.version());
    HeartbeatGuard(tokio::spawn(heartbeats(
        deps.clone(),
        role,
        version,
        load,
        Duration::from_secs(1),
    )))
}

/// Publishes a signed heartbeat every `every` until the bus closes.
pub async fn heartbeats(
    deps: Deps,
    role: &'static str,
    version: Arc<dyn Fn() -> Option<String> + Send + Sync>,
    load: Arc<Load>,
    every: Duration,
) {
    let mut seq = 0u64;
    let mut last = (deps.clock.now_ns(), 0u64);
    loop {
        seq += 1;
        let now = deps.clock.now_ns();
        let processed = load.processed.load(Ordering::Relaxed);
        let dt = ((now - last.0).max(1)) as f64 / 1e9;
        let rate = processed.saturating_sub(last.1) as f64 / dt;
        last = (now, processed);
        load.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
        let hb = pb::Heartbeat {
            component: deps.id.clone(),
            role: role.to_string(),
            seq,
            at_ns: now,
            queue_depth: load.queue_depth.load(Ordering::Relaxed),
            records_per_s: rate,
            intent_version: version().unwrap_or_default(),
        };
        if deps
            .bus
            .publish(subjects::HEARTBEAT, deps.signer.seal_bytes(&hb))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(every).await;
    }
}
