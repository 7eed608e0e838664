//! The enforcement agent on Ben's bus: policies in from
//! `control.policy.v1`, checked ([`crate::verify`]) before anything (what
//! fails goes to `ai.dlq.v1` with the reason, and nothing is applied),
//! scheduled ([`crate::schedule`]), applied through a [`Backend`], read
//! back, and acknowledged, signed, on `control.policy.ack.v1`: `applied`
//! (only once the host shows the entry), `failed`, `skipped` (allowlist,
//! limit) or `expired`.
//!
//! Every `reconcile_ms` the reconciler reads the host back, diffs it with
//! the desired state and repairs it: a flushed set or a deleted element
//! comes back with the time it has left. Verified policies are kept in
//! `<state>/policies` (re-verified at start), so a restarted agent
//! rebuilds the same desired state and nothing expires early.

use crate::backend::{diff, Backend, Held};
use crate::model::Allowlist;
use crate::schedule::{self, Breaker, Change, Offer, Scheduler};
use crate::verify::Verifier;
use ben_component::Deps;
use ben_mesh_wire::{PolicyAck, ACK_SUBJECT, DLQ_SUBJECT, ENFORCEMENT_QUERY, POLICY_SUBJECT};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What an agent runs with.
#[derive(Clone)]
pub struct Config {
    /// How policies are checked.
    pub verifier: Verifier,
    /// Batching and guards.
    pub schedule: schedule::Config,
    /// Never blocked.
    pub allow: Allowlist,
    /// How often the host is read back and repaired.
    pub reconcile_ms: u64,
    /// Where verified policies are kept across restarts (none: memory).
    pub state: Option<PathBuf>,
    /// This agent's labels (`key=value`): a policy scoped to one of them
    /// is its to enforce, as one scoped to its id or host name.
    pub labels: Vec<String>,
}

/// What a running agent counts.
#[derive(Default)]
pub struct Counters {
    /// Policies that verified.
    pub verified: AtomicU64,
    /// Policies refused (dead-lettered).
    pub refused: AtomicU64,
    /// Entries acked applied.
    pub applied: AtomicU64,
    /// Entries acked failed.
    pub failed: AtomicU64,
    /// Policies acked skipped.
    pub skipped: AtomicU64,
    /// Entries acked expired.
    pub expired: AtomicU64,
    /// Policies older than the one held for their target (a slower
    /// validator's copy, or a replay): no effect.
    pub older: AtomicU64,
    /// Entries the reconciler put back or re-timed.
    pub repaired: AtomicU64,
    /// Entries the reconciler removed (nothing wanted them).
    pub removed: AtomicU64,
    /// Whether the circuit breaker holds changes now.
    pub breaker_open: AtomicBool,
    /// Acks and dead letters the bus refused.
    pub publish_errors: AtomicU64,
    /// Entries held now.
    pub entries: AtomicU64,
}

struct Agent {
    deps: Deps,
    /// This host's name (a policy's scope may name it).
    host: String,
    cfg: Config,
    sched: Scheduler,
    backend: Option<Box<dyn Backend>>,
    counters: Arc<Counters>,
    backend_name: &'static str,
}

fn now_ms(deps: &Deps) -> u64 {
    (deps.clock.now_ns() / 1_000_000).max(0) as u64
}

impl Agent {
    async fn ack(
        &self,
        policy: &str,
        height: u64,
        status: &str,
        reason: String,
        target: String,
        expires_at_ms: u64,
    ) {
        let ack = PolicyAck {
            agent: self.deps.id.clone(),
            policy: policy.to_string(),
            height,
            status: status.to_string(),
            reason,
            target,
            expires_at_ms,
            backend: self.backend_name.to_string(),
        };
        if let Err(e) = self
            .deps
            .bus
            .publish_keyed(
                ACK_SUBJECT,
                self.deps.id.as_bytes(),
                self.deps.signer.seal_bytes(&ack),
            )
            .await
        {
            self.counters.publish_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(agent = %self.deps.id, policy, status, error = %e, "policy ack not published");
        }
    }

    /// Runs `f` on the backend off the event loop.
    async fn with_backend<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut dyn Backend) -> T + Send + 'static,
    ) -> Result<T, String> {
        let mut b = self.backend.take().ok_or("the backend was lost")?;
        let (b, r) = tokio::task::spawn_blocking(move || {
            let r = f(b.as_mut());
            (b, r)
        })
        .await
        .map_err(|e| format!("backend task: {e}"))?;
        self.backend = Some(b);
        Ok(r)
    }

    /// A policy refused: counted and dead-lettered with the reason.
    async fn refuse(&self, bytes: &[u8], why: String) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        self.deps
            .dead_letter_to(
                DLQ_SUBJECT,
                POLICY_SUBJECT,
                format!("policy refused: {why}"),
                bytes.len(),
                bytes,
            )
            .await;
    }

    /// A policy message (one block's policies): verified, kept,
    /// scheduled, or dead-lettered. `live`: it came from the bus (an
    /// expired policy there is refused, said in a dead letter); else it is
    /// a kept one read at start (an expired one is simply over).
    async fn offer(&mut self, bytes: &[u8], live: bool) {
        let now = now_ms(&self.deps);
        let policies = match self.cfg.verifier.verify(bytes) {
            Ok(p) => p,
            Err(why) => return self.refuse(bytes, why).await,
        };
        let mut queued = false;
        for p in policies {
            if let Some(why) = crate::verify::expired(&p, now) {
                if live {
                    self.refuse(bytes, why).await;
                }
                continue;
            }
            self.counters.verified.fetch_add(1, Ordering::Relaxed);
            let (id, height, target, exp) = (
                p.id.clone(),
                p.height,
                p.target.to_string(),
                p.expires_at_ms,
            );
            let refused = self.backend.as_ref().and_then(|b| b.refuses(&p.spec));
            let offered = if let Some(why) = refused {
                Offer::Skipped(why)
            } else if p.in_scope(&self.deps.id, &self.host, &self.cfg.labels) {
                self.sched.offer(p, now)
            } else {
                Offer::Skipped(format!(
                    "not in the policy's scope ({}): this agent is {} on host {}{}",
                    p.scope.join(", "),
                    self.deps.id,
                    self.host,
                    if self.cfg.labels.is_empty() {
                        ", without labels".to_string()
                    } else {
                        format!(", labelled {}", self.cfg.labels.join(", "))
                    }
                ))
            };
            match offered {
                Offer::Queued => queued = true,
                Offer::Duplicate => {}
                Offer::Skipped(why) => {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(agent = %self.deps.id, policy = %id, reason = %why, "policy skipped");
                    self.ack(&id, height, "skipped", why, target, exp).await;
                }
                Offer::Older => {
                    self.counters.older.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if queued && live {
            self.keep(bytes);
        }
        self.counters
            .entries
            .store(self.sched.len() as u64, Ordering::Relaxed);
    }

    /// Appends a verified policy to the state file (length-prefixed).
    fn keep(&self, bytes: &[u8]) {
        let Some(dir) = &self.cfg.state else { return };
        let path = dir.join("policies");
        let r = ben_control::private::append(&path).and_then(|mut f| {
            f.write_all(&(bytes.len() as u32).to_be_bytes())?;
            f.write_all(bytes)?;
            f.sync_data()
        });
        if let Err(e) = r {
            tracing::error!(agent = %self.deps.id, file = %path.display(), error = %e, "policy not kept: a restart would not rebuild it");
        }
    }

    /// The kept policies, re-verified; the file rewritten with those still
    /// in force.
    async fn reload(&mut self) -> Result<(), String> {
        let Some(dir) = self.cfg.state.clone() else {
            return Ok(());
        };
        ben_control::private::dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("policies");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut at = 0;
        let mut kept = vec![];
        let mut refused = 0;
        while at + 4 <= bytes.len() {
            let n = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            let Some(b) = bytes.get(at + 4..at + 4 + n) else {
                break;
            };
            match self.cfg.verifier.verify(b) {
                Ok(_) => kept.push(b.to_vec()),
                Err(e) => {
                    refused += 1;
                    tracing::warn!(agent = %self.deps.id, error = %e, "a kept policy no longer verifies; not restored");
                }
            }
            at += 4 + n;
        }
        if at < bytes.len() {
            tracing::warn!(agent = %self.deps.id, file = %path.display(), bytes = bytes.len() - at,
                "the policy file ends inside a record (a write cut short); the rest is ignored");
        }
        // The compacted file replaces the old one at once (temporary file,
        // fsynced, renamed): a crash here loses nothing.
        let mut out = Vec::new();
        for b in &kept {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        ben_control::private::replace(&path, &out)
            .map_err(|e| format!("{}: compacting: {e}", path.display()))?;
        tracing::info!(agent = %self.deps.id, restored = kept.len(), refused, "kept policies read back");
        for b in kept {
            self.offer(&b, false).await;
        }
        Ok(())
    }

    /// A due batch: applied, read back, acked.
    async fn apply_due(&mut self) {
        let now = now_ms(&self.deps);
        let open = matches!(self.sched.breaker(now), Breaker::Open { .. });
        if open != self.counters.breaker_open.swap(open, Ordering::Relaxed) {
            if let Breaker::Open { rate, .. } = self.sched.breaker(now).clone() {
                tracing::error!(agent = %self.deps.id, rate, held = self.sched.pending(),
                    "circuit breaker open: policies arrive from more blocks per second than configured; holding them, nothing applied");
            } else {
                tracing::warn!(agent = %self.deps.id, "circuit breaker closed: applying held policies");
            }
        }
        let Some(batch) = self.sched.batch(now) else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        let (rules, sets): (Vec<Change>, Vec<Change>) =
            batch.iter().cloned().partition(|c| c.set.is_rule());
        // A rule changed: the rules are written whole.
        let rules = (!rules.is_empty()).then(|| self.sched.rules());
        let r = self
            .with_backend(move |be| {
                if !sets.is_empty() {
                    be.apply(&sets, &[], now)?;
                }
                if let Some(r) = rules {
                    be.rules(&r, now)?;
                }
                be.read()
            })
            .await
            .and_then(|r| r);
        match r {
            Ok(held) => {
                let there: std::collections::BTreeSet<_> =
                    held.into_iter().map(|h| (h.set, h.target)).collect();
                for c in batch {
                    if there.contains(&(c.set.name(), c.target)) {
                        self.counters.applied.fetch_add(1, Ordering::Relaxed);
                        let what = if c.set.is_rule() {
                            format!("rule {} ({})", c.set.name(), c.set.spec.describe())
                        } else {
                            format!("in set {}", c.set.name())
                        };
                        self.ack_change(&c, "applied", what).await;
                    } else {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        self.ack_change(&c, "failed", "not on the host after the batch".into())
                            .await;
                    }
                }
            }
            Err(e) => {
                tracing::error!(agent = %self.deps.id, entries = batch.len(), error = %e, "batch not applied; the reconciler retries");
                for c in batch {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    self.ack_change(&c, "failed", e.clone()).await;
                }
            }
        }
    }

    async fn ack_change(&self, c: &Change, status: &str, reason: String) {
        self.ack(
            &c.policy,
            c.height,
            status,
            reason,
            c.target.to_string(),
            c.expires_at_ms,
        )
        .await;
    }

    async fn expire(&mut self) {
        let now = now_ms(&self.deps);
        let gone = self.sched.expire(now);
        if gone.iter().any(|e| !e.policy.spec.is_whole()) {
            // The kernel stopped matching them at their time; now they go.
            let rules = self.sched.rules();
            if let Err(e) = self
                .with_backend(move |b| b.rules(&rules, now))
                .await
                .and_then(|r| r)
            {
                tracing::error!(agent = %self.deps.id, error = %e, "expired rules not removed; the reconciler retries");
            }
        }
        for e in gone {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            let p = e.policy;
            self.ack(
                &p.id,
                p.height,
                "expired",
                String::new(),
                p.target.to_string(),
                p.expires_at_ms,
            )
            .await;
        }
        self.counters
            .entries
            .store(self.sched.len() as u64, Ordering::Relaxed);
    }

    /// What it holds, for `benctl mesh enforcement`: every entry with its
    /// set, since and until when, and why (policy, anomalies, height).
    fn report(&mut self) -> serde_json::Value {
        let now = now_ms(&self.deps);
        let breaker = match self.sched.breaker(now).clone() {
            Breaker::Closed => serde_json::json!({"open": false}),
            Breaker::Open { since_ms, rate } => {
                serde_json::json!({"open": true, "since_ms": since_ms, "blocks_per_s": rate})
            }
        };
        let entries: Vec<serde_json::Value> = self
            .sched
            .desired()
            .map(|(s, n, e)| {
                serde_json::json!({
                    "target": n.to_string(),
                    "set": s.name(),
                    "action": s.action().name(),
                    "rate": s.action().rate(),
                    "direction": s.direction().name(),
                    "protocol": s.spec.protocol.name(),
                    "ports": s.spec.ports.map(|p| p.to_string()).unwrap_or_default(),
                    "rule": s.spec.describe(),
                    "scope": e.policy.scope,
                    "policy": e.policy.id,
                    "height": e.policy.height,
                    "anomalies": e.policy.anomalies,
                    "since_ms": e.since_ms,
                    "expires_at_ms": e.policy.expires_at_ms,
                })
            })
            .collect();
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "agent": self.deps.id,
            "backend": self.backend_name,
            "now_ms": now,
            "breaker": breaker,
            "pending": self.sched.pending(),
            "entries": entries,
            "counters": {
                "verified": n(&c.verified), "refused": n(&c.refused), "applied": n(&c.applied),
                "failed": n(&c.failed), "skipped": n(&c.skipped), "expired": n(&c.expired),
                "repaired": n(&c.repaired), "removed": n(&c.removed), "older": n(&c.older),
                "publish_errors": n(&c.publish_errors),
            },
        })
    }

    /// Reads the host back and repairs it.
    async fn reconcile(&mut self) {
        let now = now_ms(&self.deps);
        let held: Vec<Held> = match self.with_backend(|b| b.read()).await.and_then(|r| r) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(agent = %self.deps.id, error = %e, "reading the host back failed; setting the table up again");
                let allow = self.cfg.allow.clone();
                if let Err(e) = self
                    .with_backend(move |b| b.setup(&allow))
                    .await
                    .and_then(|r| r)
                {
                    tracing::error!(agent = %self.deps.id, error = %e, "table setup failed");
                }
                return;
            }
        };
        let repair = diff(self.sched.desired(), &held, now);
        if repair.is_empty() {
            return;
        }
        let (na, nr) = (repair.add.len(), repair.remove.len());
        let rules = repair.rules.then(|| self.sched.rules());
        let nrules = rules.as_ref().map_or(0, Vec::len);
        match self
            .with_backend(move |b| {
                if !repair.add.is_empty() || !repair.remove.is_empty() {
                    b.apply(&repair.add, &repair.remove, now)?;
                }
                if let Some(r) = rules {
                    b.rules(&r, now)?;
                }
                Ok::<(), String>(())
            })
            .await
            .and_then(|r| r)
        {
            Ok(()) => {
                self.counters
                    .repaired
                    .fetch_add(na as u64, Ordering::Relaxed);
                self.counters
                    .removed
                    .fetch_add(nr as u64, Ordering::Relaxed);
                self.counters
                    .repaired
                    .fetch_add(u64::from(nrules > 0), Ordering::Relaxed);
                tracing::warn!(agent = %self.deps.id, restored = na, removed = nr, rules_rewritten = nrules, "reconciler repaired the host");
            }
            Err(e) => {
                tracing::error!(agent = %self.deps.id, error = %e, "reconciler could not repair the host")
            }
        }
    }
}

/// Runs the agent until its subscription ends.
pub async fn run(
    deps: Deps,
    cfg: Config,
    backend: Box<dyn Backend>,
    counters: Arc<Counters>,
) -> Result<(), String> {
    let mut sub = deps
        .bus
        .subscribe(POLICY_SUBJECT, None)
        .await
        .map_err(|e| format!("subscribing to {POLICY_SUBJECT}: {e}"))?;
    let mut queries = deps
        .bus
        .subscribe(ENFORCEMENT_QUERY, None)
        .await
        .map_err(|e| format!("subscribing to {ENFORCEMENT_QUERY}: {e}"))?;
    let backend_name = backend.name();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut a = Agent {
        host,
        sched: Scheduler::new(cfg.schedule.clone(), cfg.allow.clone()),
        deps,
        cfg,
        backend: Some(backend),
        counters,
        backend_name,
    };
    let allow = a.cfg.allow.clone();
    a.with_backend(move |b| b.setup(&allow))
        .await
        .and_then(|r| r)
        .map_err(|e| format!("{}: setting up {backend_name}: {e}", a.deps.id))?;
    a.reload().await?;
    a.reconcile().await;
    let tick = Duration::from_millis(a.cfg.schedule.batch_ms.clamp(5, 100));
    let mut ticker = tokio::time::interval(tick);
    let mut reconcile = tokio::time::interval(Duration::from_millis(a.cfg.reconcile_ms.max(100)));
    reconcile.tick().await;
    loop {
        tokio::select! {
            m = sub.next() => match m {
                Some(m) => a.offer(&m.payload, true).await,
                None => return Ok(()),
            },
            _ = ticker.tick() => {
                a.apply_due().await;
                a.expire().await;
            }
            _ = reconcile.tick() => a.reconcile().await,
            q = queries.next() => if let Some(q) = q {
                let answer = serde_json::to_vec(&a.report()).unwrap_or_default();
                if let Err(e) = a.deps.bus.reply(&q, answer).await {
                    tracing::warn!(agent = %a.deps.id, error = %e, "enforcement query not answered");
                }
            },
        }
    }
}
