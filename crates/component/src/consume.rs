//! The data-path loop every component shares.

use crate::{Active, Deps, Load, Loaded, Outbox};
use ben_wire::pb;
use ben_wire::view::RecordView;
use prost::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How [`consume`] reads the records of a batch message: decoded into
/// [`pb::Record`]s, or in place as [`RecordView`]s for a hop that passes
/// records on unchanged.
pub trait Incoming: Sized {
    /// What a refused record's dead letter needs (its id and size), taken
    /// before the handler consumes the record.
    type Label;
    fn read(payload: Vec<u8>) -> Result<Vec<Self>, String>;
    fn received_ns(&self) -> i64;
    fn label(&self) -> Self::Label;
    fn describe(label: Self::Label) -> (String, usize);
}

impl Incoming for pb::Record {
    type Label = (String, usize);
    fn read(payload: Vec<u8>) -> Result<Vec<Self>, String> {
        pb::RecordBatch::decode(payload.as_slice())
            .map(|b| b.records)
            .map_err(|e| e.to_string())
    }
    fn received_ns(&self) -> i64 {
        self.received_ns
    }
    fn label(&self) -> (String, usize) {
        (self.id.clone(), self.encoded_len())
    }
    fn describe(label: (String, usize)) -> (String, usize) {
        label
    }
}

impl Incoming for RecordView {
    type Label = RecordView;
    fn read(payload: Vec<u8>) -> Result<Vec<Self>, String> {
        ben_wire::view::read_batch(payload.into()).map_err(|e| e.to_string())
    }
    fn received_ns(&self) -> i64 {
        self.received_ns
    }
    fn label(&self) -> RecordView {
        // A shared slice and a few ranges: no copy.
        self.clone()
    }
    fn describe(v: RecordView) -> (String, usize) {
        (v.id().to_string(), v.raw().len())
    }
}

/// The data-path loop every component shares: take record batches from
/// `subject` (queue group `queue`), read them ([`Incoming`]), and hand each
/// record with one snapshot of the active intent (the same for the whole
/// batch) to `handle`, which puts what it sends on into the [`Outbox`];
/// after each batch the outbox is published, one message per subject. An
/// unreadable message, a batch arriving before any intent is active and
/// each record `handle` refuses (its `Err` is the reason) go to the
/// dead-letter subject. Runs until the bus closes.
pub async fn consume<C: Send + Sync + 'static, R: Incoming>(
    deps: &Deps,
    subject: &str,
    queue: &str,
    active: &Active<C>,
    load: &Load,
    mut handle: impl FnMut(&Arc<Loaded<C>>, R, &mut Outbox) -> Result<(), String>,
) -> Result<(), String> {
    let mut sub = deps
        .bus
        .subscribe(subject, Some(queue))
        .await
        .map_err(|e| e.to_string())?;
    let mut outbox = Outbox::default();
    let mut draining = false;
    let drain = deps.drain.wait();
    tokio::pin!(drain);
    loop {
        let m = tokio::select! {
            biased;
            _ = &mut drain, if !draining => {
                // No new batches; the ones already here still come out of
                // `next` until it ends.
                draining = true;
                sub.drain();
                continue;
            }
            m = sub.next() => m,
        };
        let Some(m) = m else { break };
        load.queue_depth
            .store(sub.rx.len() as u64, Ordering::Relaxed);
        let size = m.payload.len();
        let records = match R::read(m.payload) {
            Ok(b) => b,
            Err(e) => {
                deps.dead_letter(subject, format!("not a record batch: {e}"), size)
                    .await;
                continue;
            }
        };
        if let Some(first) = records.first().filter(|r| r.received_ns() > 0) {
            load.ages.record(
                deps.clock.now_ns() - first.received_ns(),
                records.len() as u64,
            );
        }
        let Some(loaded) = active.load() else {
            deps.dead_letter(
                subject,
                format!(
                    "a batch of {} records arrived before any intent is active; nothing evaluates it",
                    records.len()
                ),
                size,
            )
            .await;
            continue;
        };
        let mut refused = Vec::new();
        let mut ok = 0u64;
        for rec in records {
            // Kept for the dead letter: `handle` takes the record.
            let label = rec.label();
            match handle(&loaded, rec, &mut outbox) {
                Ok(()) => ok += 1,
                Err(reason) => refused.push((label, reason)),
            }
        }
        load.processed.fetch_add(ok, Ordering::Relaxed);
        outbox.flush(deps.bus.as_ref(), &load.publish_errors).await;
        for (label, reason) in refused {
            let (id, size) = R::describe(label);
            deps.dead_letter(subject, format!("record {id}: {reason}"), size)
                .await;
        }
        // Let the process's other tasks (heartbeats, the intent agent) run
        // between batches: receiving from a full queue does not yield for
        // up to 128 messages, which on a single-threaded runtime under a
        // burst kept a detector's heartbeats away for over 10 s and got it
        // killed as hung.
        tokio::task::yield_now().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::setup;
    use crate::Clock;
    use ben_bus::Bus;
    use std::time::Duration;

    struct At(i64);
    impl Clock for At {
        fn now_ns(&self) -> i64 {
            self.0
        }
    }

    /// `consume` records each batch's age on arrival, weighted by its
    /// records, and on drain finishes what it was sent, then returns.
    #[tokio::test]
    async fn consume_records_ages_and_returns_after_draining() {
        let (mut deps, _, bus) = setup("ages");
        const NOW: i64 = 50_000_000_000;
        deps.clock = Arc::new(At(NOW));
        let active: Active<String> = Active::default();
        active.swap(Arc::new(Loaded {
            version: "v1".into(),
            compiled: String::new(),
        }));
        let load = Arc::new(Load::default());
        let mut out = bus.subscribe("ben.data.detector", None).await.unwrap();
        let task = {
            let (deps, load) = (deps.clone(), load.clone());
            tokio::spawn(async move {
                consume(
                    &deps,
                    "ben.data.spine",
                    "spines",
                    &active,
                    &load,
                    |_, r, o| {
                        o.record("ben.data.detector", r);
                        Ok(())
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let batch = |n: usize, age_ns: i64| pb::RecordBatch {
            records: (0..n)
                .map(|i| pb::Record {
                    id: format!("r{i}"),
                    received_ns: NOW - age_ns,
                    ..Default::default()
                })
                .collect(),
        };
        bus.publish("ben.data.spine", batch(3, 2_000_000).encode_to_vec())
            .await
            .unwrap();
        bus.publish("ben.data.spine", batch(1, 40_000_000).encode_to_vec())
            .await
            .unwrap();
        deps.drain.start();
        let done = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("consume returns once drained")
            .unwrap();
        assert_eq!(done, Ok(()));
        let mut forwarded = 0;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), out.next()).await {
            forwarded += pb::RecordBatch::decode(m.payload.as_slice())
                .unwrap()
                .records
                .len();
        }
        assert_eq!(forwarded, 4, "what was sent before the drain went on");
        let ages = load.ages.take();
        assert_eq!(ages.total(), 4);
        let p50 = ages.quantile_us(0.5).unwrap();
        assert!((2_000..=2_379).contains(&p50), "{p50}");
        let max = ages.quantile_us(1.0).unwrap();
        assert!((40_000..=47_568).contains(&max), "{max}");
    }

    /// A bus that refuses every publish on `fails`.
    struct Refusing {
        inner: Arc<dyn Bus>,
        fails: &'static str,
    }

    impl Bus for Refusing {
        fn publish<'a>(
            &'a self,
            subject: &'a str,
            payload: Vec<u8>,
        ) -> ben_bus::BoxFuture<'a, Result<ben_bus::PublishReport, ben_bus::BusError>> {
            if subject == self.fails {
                return Box::pin(async { Err(ben_bus::BusError::Closed) });
            }
            self.inner.publish(subject, payload)
        }
        fn subscribe<'a>(
            &'a self,
            subject: &'a str,
            queue: Option<&'a str>,
        ) -> ben_bus::BoxFuture<'a, Result<ben_bus::Subscription, ben_bus::BusError>> {
            self.inner.subscribe(subject, queue)
        }
        fn request<'a>(
            &'a self,
            subject: &'a str,
            payload: Vec<u8>,
            timeout: Duration,
        ) -> ben_bus::BoxFuture<'a, Result<ben_bus::Message, ben_bus::BusError>> {
            self.inner.request(subject, payload, timeout)
        }
    }

    /// What a handler sent on and the bus refused is counted in
    /// `Load::publish_errors` (records and other messages alike), and the
    /// loop goes on.
    #[tokio::test]
    async fn refused_publishes_are_counted() {
        let (mut deps, _, bus) = setup("refused");
        deps.bus = Arc::new(Refusing {
            inner: bus.clone(),
            fails: "ben.data.detector",
        });
        let active: Active<String> = Active::default();
        active.swap(Arc::new(Loaded {
            version: "v1".into(),
            compiled: String::new(),
        }));
        let load = Arc::new(Load::default());
        let mut signals = bus.subscribe("ben.signal.a", None).await.unwrap();
        let task = {
            let (deps, load) = (deps.clone(), load.clone());
            tokio::spawn(async move {
                consume(
                    &deps,
                    "ben.data.spine",
                    "spines",
                    &active,
                    &load,
                    |_, r: pb::Record, o| {
                        o.publish(crate::Publish::new("ben.signal.a", b"s".to_vec()));
                        o.publish(crate::Publish::new("ben.data.detector", b"x".to_vec()));
                        o.record("ben.data.detector", r);
                        Ok(())
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..2 {
            let b = pb::RecordBatch {
                records: vec![pb::Record::default()],
            };
            bus.publish("ben.data.spine", b.encode_to_vec())
                .await
                .unwrap();
        }
        deps.drain.start();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("consume returns once drained")
            .unwrap()
            .unwrap();
        // Per batch: the records' message and one other on the refused
        // subject; the signals went out.
        assert_eq!(load.publish_errors.load(Ordering::Relaxed), 4);
        assert_eq!(load.processed.load(Ordering::Relaxed), 2);
        for _ in 0..2 {
            assert!(signals.next().await.is_some());
        }
    }
}
