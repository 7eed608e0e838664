//! Draining before a stop.

use std::sync::Arc;

/// The switch that asks a component to drain before it stops: each
/// [`consume`] loop then leaves its queue group (NATS stops sending it
/// batches; the others in the group get them), processes and publishes
/// every batch already delivered to it, and returns. Scaling down or
/// stopping a process therefore hands its share of the traffic to the
/// others instead of losing what it held.
#[derive(Clone)]
pub struct Drain(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Drain {
    fn default() -> Self {
        Drain(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Drain {
    /// Starts draining (idempotent).
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once draining has started.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}
