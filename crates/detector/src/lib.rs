//! # Detector
//!
//! Consumes the spines' enriched, redacted records, runs the bundle's
//! playbooks over their flags and fields, and emits signed signals on
//! `ben.signal.<app>`, addressed to the app whose records triggered them.
//! It never reinterprets raw input: it sees only what the spine let out
//! (redacted values, flags).
//!
//! **Several detectors give the signals of one.** Detector traffic is
//! split into [`subjects::DETECTOR_PARTITIONS`] partitions by the
//! playbooks' group keys (the spine sends each record to its home
//! partition `ben.data.detector.<k>`, and a copy to
//! `ben.data.detector.<k>.copy` for each other partition one of its
//! playbooks' groups lives in; see [`ben_playbook::Partitions`]). Each
//! partition is served by one detector: the live detectors (their signed
//! heartbeats) are known to each, and partition `k` belongs to the one
//! whose id ranks highest for `k` (rendezvous hashing), so every detector
//! computes the same owners, and a detector joining or leaving moves only
//! the partitions it gains or loses. A detector subscribes to its
//! partitions in the queue group `detector-p<k>`: while ownership moves,
//! old and new owner briefly share the partition, and nothing is lost.
//! A partition is never left without a subscriber while detectors run: a
//! starting detector serves every partition until it hears the others,
//! and a detector that no longer owns a partition keeps serving it for
//! [`HANDOVER_NS`] (views of who is live may differ for a heartbeat
//! interval), so a handover overlaps instead of dropping records; one
//! asked to stop while others run stops its heartbeats and serves on until
//! they have taken its partitions ([`LEAVE_NS`]). In a copy from partition `k` only the playbooks whose group
//! is in `k` observe the record; only the home copy counts as processed
//! (the record books) or is dead-lettered.
//!
//! Windows live with the playbooks: a new intent version that runs the
//! same playbooks keeps them; one that changes them starts fresh windows.

use ben_bitspec::canon::program_from_artifacts;
use ben_bitspec::ir::Program;
use ben_bitspec::Value;
use ben_bus::Message;
use ben_component::{subjects, Deps, IntentAgent, Load, Outbox, Publish, Role};
use ben_playbook::{Detector, Limits, Observed, Signal};
use ben_wire::pb;
use prost::Message as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct DetectorRole;

impl Role for DetectorRole {
    const NAME: &'static str = "detector";
    type Compiled = Arc<Program>;
    fn compile(
        &self,
        arts: &BTreeMap<String, Vec<u8>>,
        _version: &str,
    ) -> Result<Arc<Program>, String> {
        program_from_artifacts(arts)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

/// A record's fields as the detector sees them: the redacted JSON, read
/// without type coercion (a pseudonymised IP is a string here).
pub fn fields(program: &Program, schema: usize, body: &serde_json::Value) -> Vec<Value> {
    ben_playbook::record_from_json(&program.schemas[schema], body)
}

/// Playbook state for one intent version.
pub struct Watch {
    pub version: String,
    program: Arc<Program>,
    detector: Detector,
}

impl Watch {
    pub fn new(version: String, program: Arc<Program>) -> Self {
        let detector = Detector::new(&program.playbooks, Limits::default());
        Watch {
            version,
            program,
            detector,
        }
    }

    /// The watch for `version`: this one's windows carried over when the
    /// version runs the same playbooks on the same schemas, fresh ones
    /// otherwise.
    pub fn next(self, version: String, program: Arc<Program>) -> Watch {
        let same_schemas = |p: &Program| -> Vec<String> {
            p.playbooks
                .iter()
                .map(|pb| {
                    p.schemas.get(pb.schema).map_or(String::new(), |s| {
                        let fields: Vec<&str> = s.fields.iter().map(|f| f.path.as_str()).collect();
                        format!("{}@{}:{}", s.name, s.version, fields.join(","))
                    })
                })
                .collect()
        };
        if self.detector.runs(&program.playbooks)
            && same_schemas(&self.program) == same_schemas(&program)
        {
            Watch {
                version,
                program,
                detector: self.detector,
            }
        } else {
            Watch::new(version, program)
        }
    }

    /// Feeds one enriched record; returns the signals it triggers.
    pub fn observe(&mut self, rec: &pb::Record) -> Result<Vec<Signal>, String> {
        self.observe_in(rec, None)
    }

    /// Feeds the copy of a record partition `k` got (`None`: every
    /// playbook observes it).
    pub fn observe_in(
        &mut self,
        rec: &pb::Record,
        partition: Option<u32>,
    ) -> Result<Vec<Signal>, String> {
        let schema = self
            .program
            .schema(&rec.schema, Some(rec.schema_version))
            .ok_or_else(|| format!("unknown schema {} v{}", rec.schema, rec.schema_version))?;
        let body: serde_json::Value = serde_json::from_slice(&rec.body)
            .map_err(|e| format!("record body is not JSON: {e}"))?;
        let values = fields(&self.program, schema, &body);
        let flags: Vec<&str> = rec.flags.iter().map(String::as_str).collect();
        let ev = Observed {
            schema,
            at_ns: rec.received_ns,
            record: &values,
            flags: &flags,
        };
        Ok(match partition {
            Some(k) => self
                .detector
                .observe_in(&ev, k, subjects::DETECTOR_PARTITIONS),
            None => self.detector.observe(&ev),
        })
    }
}

/// Counts for status lines and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub signals: AtomicU64,
    /// Flags set on the records this detector saw.
    pub flags: AtomicU64,
    /// The partitions each detector (by id) serves now (subscribed,
    /// including handovers in progress).
    pub partitions: Mutex<BTreeMap<String, BTreeSet<u32>>>,
}

/// How long a detector counts as live after its last heartbeat.
const LIVE_NS: i64 = 3_000_000_000;

/// How long a detector keeps serving a partition it no longer owns.
pub const HANDOVER_NS: i64 = 2_000_000_000;

/// How long a detector asked to stop keeps serving, silent, while other
/// detectors run: until they count it gone and take its partitions (within
/// the 4.5 s a cluster process has to drain).
pub const LEAVE_NS: i64 = LIVE_NS + 500_000_000;

/// The live detectors as one detector sees them, and the partitions each
/// serves.
#[derive(Debug, Clone)]
pub struct Members {
    me: String,
    /// Last heartbeat (ns) of every other detector heard.
    seen: BTreeMap<String, i64>,
}

impl Members {
    pub fn new(me: String) -> Members {
        Members {
            me,
            seen: BTreeMap::new(),
        }
    }

    /// A verified heartbeat from detector `id` at `now`.
    pub fn heard(&mut self, id: &str, now: i64) {
        if id != self.me {
            self.seen.insert(id.to_string(), now);
        }
    }

    /// The partitions this detector serves at `now`: those for which its id
    /// ranks highest among the live detectors (rendezvous hashing).
    pub fn owned(&self, now: i64) -> BTreeSet<u32> {
        let live: Vec<&str> = std::iter::once(self.me.as_str())
            .chain(
                self.seen
                    .iter()
                    .filter(|(_, t)| now - **t < LIVE_NS)
                    .map(|(id, _)| id.as_str()),
            )
            .collect();
        (0..subjects::DETECTOR_PARTITIONS)
            .filter(|k| {
                live.iter()
                    .max_by_key(|id| (rank(*k, id), **id))
                    .is_some_and(|id| *id == self.me)
            })
            .collect()
    }
}

/// Partition `k`'s rank of detector `id` (FNV-1a: the same everywhere).
fn rank(k: u32, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.to_le_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One served partition: a task forwarding its two subjects (home records
/// and copies) into the detector's queue, stopped by draining.
struct Feed {
    stop: tokio::sync::oneshot::Sender<()>,
}

/// A delivery: the partition, whether it is the home copy, the message.
type Delivery = (u32, bool, Message);

async fn feed(
    deps: &Deps,
    k: u32,
    tx: tokio::sync::mpsc::Sender<Delivery>,
) -> Result<Feed, String> {
    let group = format!("detector-p{k}");
    let mut home = deps
        .bus
        .subscribe(subjects::detector_partition(k), Some(&group))
        .await
        .map_err(|e| e.to_string())?;
    let mut copy = deps
        .bus
        .subscribe(subjects::detector_copy(k), Some(&group))
        .await
        .map_err(|e| e.to_string())?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut home_open, mut copy_open) = (true, true);
        let mut draining = false;
        while home_open || copy_open {
            let (is_home, m) = tokio::select! {
                _ = &mut stopped, if !draining => {
                    // Leave both queue groups; what was delivered still
                    // comes out below.
                    draining = true;
                    home.drain();
                    copy.drain();
                    continue;
                }
                m = home.next(), if home_open => (true, m),
                m = copy.next(), if copy_open => (false, m),
            };
            match m {
                Some(m) => {
                    if tx.send((k, is_home, m)).await.is_err() {
                        return;
                    }
                }
                None if is_home => home_open = false,
                None => copy_open = false,
            }
        }
    });
    Ok(Feed { stop })
}

/// Runs a detector until the bus closes or it has drained.
pub async fn run(deps: Deps, load: Arc<Load>, stats: Arc<Stats>) -> Result<(), String> {
    let agent = IntentAgent::new(deps.clone(), DetectorRole);
    let active = agent.active.clone();
    tokio::spawn(agent.clone().run());
    agent.ready().await;
    let mut heartbeats = Some(ben_component::start_heartbeats(
        &deps,
        "detector",
        active.clone(),
        load.clone(),
    ));
    let mut beats = deps
        .bus
        .subscribe(subjects::HEARTBEAT, None)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(256);
    let mut tx = Some(tx);
    // Served partitions, with when this detector stopped owning each.
    let mut feeds: BTreeMap<u32, (Feed, Option<i64>)> = BTreeMap::new();
    let mut members = Members::new(deps.id.clone());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let drain = deps.drain.wait();
    tokio::pin!(drain);
    let mut draining = false;
    // Asked to stop while other detectors run: silent (no heartbeats), it
    // serves its partitions until they have taken them over.
    let mut leave_at: Option<i64> = None;
    let mut watch: Option<Watch> = None;
    let mut seq = 0u64;
    let mut outbox = Outbox::default();
    let unassign = |stats: &Stats| {
        if let Ok(mut p) = stats.partitions.lock() {
            p.remove(&deps.id);
        }
    };
    loop {
        let (k, home, m) = tokio::select! {
            biased;
            _ = &mut drain, if !draining && leave_at.is_none() => {
                let now = deps.clock.now_ns();
                if members.owned(now).len() < subjects::DETECTOR_PARTITIONS as usize {
                    drop(heartbeats.take());
                    leave_at = Some(now + LEAVE_NS);
                    continue;
                }
                draining = true;
                for (_, (f, _)) in std::mem::take(&mut feeds) {
                    let _ = f.stop.send(());
                }
                tx = None;
                unassign(&stats);
                continue;
            }
            b = beats.next(), if !draining => {
                let Some(b) = b else { break };
                if let Ok(hb) = ben_wire::open_bytes::<pb::Heartbeat>(&b.payload, &deps.keyring) {
                    let hb = hb.into_inner();
                    if hb.role == "detector" {
                        members.heard(&hb.component, deps.clock.now_ns());
                    }
                }
                continue;
            }
            _ = tick.tick(), if !draining => {
                let now = deps.clock.now_ns();
                if let Some(at) = leave_at {
                    if now >= at {
                        draining = true;
                        for (_, (f, _)) in std::mem::take(&mut feeds) {
                            let _ = f.stop.send(());
                        }
                        tx = None;
                        unassign(&stats);
                    }
                    continue;
                }
                let Some(sender) = tx.as_ref() else { continue };
                let want = members.owned(now);
                for (k, (_, released)) in feeds.iter_mut() {
                    *released = match (want.contains(k), *released) {
                        (true, _) => None,
                        (false, None) => Some(now),
                        (false, at) => at,
                    };
                }
                // Dropping a feed's stop sender drains it (see `feed`).
                feeds.retain(|_, (_, released)| released.is_none_or(|at| now - at < HANDOVER_NS));
                for k in &want {
                    if !feeds.contains_key(k) {
                        feeds.insert(*k, (feed(&deps, *k, sender.clone()).await?, None));
                    }
                }
                if let Ok(mut p) = stats.partitions.lock() {
                    p.insert(deps.id.clone(), feeds.keys().copied().collect());
                }
                continue;
            }
            d = rx.recv() => match d {
                Some(d) => d,
                None if draining => break,
                None => continue,
            },
        };
        load.queue_depth.store(rx.len() as u64, Ordering::Relaxed);
        let subject = m.subject.clone();
        let size = m.payload.len();
        let records = match pb::RecordBatch::decode(m.payload.as_slice()) {
            Ok(b) => b.records,
            Err(e) => {
                if home {
                    deps.dead_letter(&subject, format!("not a record batch: {e}"), size)
                        .await;
                }
                continue;
            }
        };
        let Some(loaded) = active.load() else {
            if home {
                deps.dead_letter(
                    &subject,
                    format!(
                        "a batch of {} records arrived before any intent is active; nothing evaluates it",
                        records.len()
                    ),
                    size,
                )
                .await;
            }
            continue;
        };
        if home {
            if let Some(first) = records.first().filter(|r| r.received_ns > 0) {
                load.ages.record(
                    deps.clock.now_ns() - first.received_ns,
                    records.len() as u64,
                );
            }
        }
        let w = match watch.take() {
            Some(w) if w.version == loaded.version => w,
            Some(w) => w.next(loaded.version.clone(), loaded.compiled.clone()),
            None => Watch::new(loaded.version.clone(), loaded.compiled.clone()),
        };
        let w = watch.insert(w);
        let mut ok = 0u64;
        let mut refused = Vec::new();
        for rec in records {
            match w.observe_in(&rec, Some(k)) {
                Ok(signals) => {
                    if home {
                        ok += 1;
                        stats
                            .flags
                            .fetch_add(rec.flags.len() as u64, Ordering::Relaxed);
                    }
                    for s in signals {
                        seq += 1;
                        stats.signals.fetch_add(1, Ordering::Relaxed);
                        outbox.publish(Publish::new(
                            subjects::signal(&rec.app),
                            deps.signer
                                .seal_bytes(&signal(&deps.id, seq, s, &rec, &w.version)),
                        ));
                    }
                }
                // The home copy reports a bad record, once.
                Err(reason) if home => refused.push((rec.id.clone(), rec.encoded_len(), reason)),
                Err(_) => {}
            }
        }
        load.processed.fetch_add(ok, Ordering::Relaxed);
        outbox.flush(deps.bus.as_ref(), &load.publish_errors).await;
        for (id, size, reason) in refused {
            deps.dead_letter(&subject, format!("record {id}: {reason}"), size)
                .await;
        }
        tokio::task::yield_now().await;
    }
    unassign(&stats);
    Ok(())
}

fn signal(id: &str, seq: u64, s: Signal, rec: &pb::Record, version: &str) -> pb::Signal {
    pb::Signal {
        id: format!("{id}-{seq}"),
        playbook: s.playbook,
        name: s.name,
        severity: s.severity.name().to_string(),
        key: s.key.iter().map(Value::to_text).collect(),
        value: s.value,
        at_ns: s.at_ns,
        app: rec.app.clone(),
        intent_version: version.to_string(),
        sender: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every partition has exactly one owner when the views agree, and a
    /// detector joining takes partitions only from nobody else's share
    /// but its own gain (the others keep what they keep).
    #[test]
    fn live_detectors_split_the_partitions_once_and_stably() {
        const NOW: i64 = 10 * LIVE_NS;
        let view = |me: &str, others: &[&str]| {
            let mut m = Members::new(me.into());
            for o in others {
                m.heard(o, NOW - 1);
            }
            m.owned(NOW)
        };
        let ids = ["detector-1", "detector-2", "detector-3"];
        let owned: Vec<BTreeSet<u32>> = ids.iter().map(|me| view(me, &ids)).collect();
        let mut all: Vec<u32> = owned.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..subjects::DETECTOR_PARTITIONS).collect::<Vec<_>>());
        assert!(owned.iter().all(|o| !o.is_empty()), "{owned:?}");
        // Before detector-3 joined, 1 and 2 owned supersets of what they
        // own now.
        let before = [view(ids[0], &ids[..2]), view(ids[1], &ids[..2])];
        assert!(owned[0].is_subset(&before[0]) && owned[1].is_subset(&before[1]));
        // Alone, one serves everything; a silent one is forgotten.
        assert_eq!(
            view("detector-1", &[]).len(),
            subjects::DETECTOR_PARTITIONS as usize
        );
        let mut m = Members::new("detector-1".into());
        m.heard("detector-2", 0);
        assert_eq!(
            m.owned(LIVE_NS + 1).len(),
            subjects::DETECTOR_PARTITIONS as usize
        );
    }
}
