//! What a data-path handler sends on.

use ben_wire::pb;
use ben_wire::view::RecordView;
use std::sync::atomic::{AtomicU64, Ordering};

/// A message a component wants published.
pub struct Publish {
    pub subject: String,
    pub payload: Vec<u8>,
    /// Keeps the order of one key's messages on a bus that partitions
    /// (see [`ben_bus::Bus::publish_keyed`]).
    pub key: Option<Vec<u8>>,
}

impl Publish {
    pub fn new(subject: impl Into<String>, payload: Vec<u8>) -> Self {
        Publish {
            subject: subject.into(),
            payload,
            key: None,
        }
    }

    /// Keyed: the messages of one key stay in order.
    pub fn keyed(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Publishes it now; a publish that fails (an error, or a subscriber
    /// queue that stayed full) is counted in `errors` — after a record was
    /// accepted nothing is lost silently. Returns whether it went out (to
    /// at least one subscriber, or to the broker).
    pub async fn send(self, bus: &dyn ben_bus::Bus, errors: &AtomicU64) -> bool {
        let r = match &self.key {
            Some(k) => bus.publish_keyed(&self.subject, k, self.payload).await,
            None => bus.publish(&self.subject, self.payload).await,
        };
        published(r, errors)
    }
}

/// Whether a publish went out; an error, or a subscriber that could not
/// take it, is counted in `errors`.
fn published(r: Result<ben_bus::PublishReport, ben_bus::BusError>, errors: &AtomicU64) -> bool {
    match r {
        Ok(report) if report.dropped == 0 => true,
        Ok(report) => {
            errors.fetch_add(1, Ordering::Relaxed);
            report.delivered > 0
        }
        Err(_) => {
            errors.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// What a data-path handler sends on for the records of one input batch:
/// records appended, as they come, to one encoded [`pb::RecordBatch`] per
/// subject (order kept), and other messages (signals) as they are.
#[derive(Default)]
pub struct Outbox {
    batches: Vec<(&'static str, Vec<u8>)>,
    messages: Vec<Publish>,
}

impl Outbox {
    fn batch(&mut self, subject: &'static str) -> &mut Vec<u8> {
        let i = match self.batches.iter().position(|(s, _)| *s == subject) {
            Some(i) => i,
            None => {
                self.batches.push((subject, Vec::new()));
                self.batches.len() - 1
            }
        };
        &mut self.batches[i].1
    }

    /// Sends `rec` on `subject` in this batch's message for that subject.
    pub fn record(&mut self, subject: &'static str, rec: pb::Record) {
        ben_wire::view::push_record(self.batch(subject), &rec);
    }

    /// Sends a record on unchanged (its encoding as it arrived).
    pub fn raw(&mut self, subject: &'static str, rec: &RecordView) {
        ben_wire::view::push_raw(self.batch(subject), rec.raw());
    }

    /// Publishes `p` after this batch's records.
    pub fn publish(&mut self, p: Publish) {
        self.messages.push(p);
    }

    /// Publishes everything queued and empties the outbox; each message
    /// that does not go out is counted in `errors`.
    pub async fn flush(&mut self, bus: &dyn ben_bus::Bus, errors: &AtomicU64) {
        for (subject, batch) in self.batches.drain(..) {
            published(bus.publish(subject, batch).await, errors);
        }
        for p in self.messages.drain(..) {
            p.send(bus, errors).await;
        }
    }
}
