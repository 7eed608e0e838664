//! One subscription: a consumer of its own, read on a task, its offsets
//! committed for what the component handled.

use crate::{client, message_max, Config, Counters, COMMIT_EVERY};
use ben_bus::{BusError, Message, Subscription};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Messages read ahead of the component.
const AHEAD: usize = 256;
/// How long the metadata and offset lookups of a new subscription may take.
const LOOKUP: Duration = Duration::from_secs(10);

pub(crate) struct Spec<'a> {
    pub cfg: &'a Config,
    pub subject: &'a str,
    pub topic: String,
    pub group: String,
    /// A queue group: Kafka's group protocol shares the partitions.
    pub shared: bool,
    /// Commit offsets (an observer's groups are never seen again).
    pub commit: bool,
    pub counters: Arc<Counters>,
}

/// Says what the broker refused, where the operator sees it.
struct Ctx {
    group: String,
    counters: Arc<Counters>,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn post_rebalance(
        &self,
        _c: &rdkafka::consumer::BaseConsumer<Self>,
        r: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match r {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(group = %self.group, ?parts, "Kafka group: partitions assigned");
            }
            rdkafka::consumer::Rebalance::Revoke(_) => {
                tracing::info!(group = %self.group, "Kafka group: partitions revoked");
            }
            rdkafka::consumer::Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, "Kafka group: rebalance failed: {e}");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(group = %self.group, "Kafka refused an offset commit: {e} (those messages come again)");
        }
    }
}

type Kc = StreamConsumer<Ctx>;

pub(crate) async fn subscribe(s: Spec<'_>) -> Result<Subscription, BusError> {
    let fetch_n = (2 * message_max(s.cfg)).max(1 << 20);
    let fetch = fetch_n.to_string();
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        BusError::Unsupported(format!(
            "Kafka at {}: {what} for `{}`: {e}",
            s.cfg.brokers, s.topic
        ))
    };
    let consumer: Kc = client(s.cfg)
        .set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .set("fetch.max.bytes", &fetch)
        .set("max.partition.fetch.bytes", &fetch)
        .set(
            "receive.message.max.bytes",
            (fetch_n + (1 << 20)).to_string(),
        )
        // What librdkafka prefetches for a consumer the component has not
        // read yet: bounded to a few fetches (its default, 64 MiB per
        // consumer, is gigabytes over a cluster's processes).
        .set(
            "queued.max.messages.kbytes",
            (2 * fetch_n / 1024).to_string(),
        )
        .set(
            "session.timeout.ms",
            s.cfg.session_timeout.as_millis().to_string(),
        )
        .set(
            "max.poll.interval.ms",
            (2 * s.cfg.session_timeout.as_millis()).to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (s.cfg.session_timeout.as_millis() / 5).max(100).to_string(),
        )
        .create_with_context(Ctx {
            group: s.group.clone(),
            counters: s.counters.clone(),
        })
        .map_err(|e| failed("a consumer", &e))?;
    let consumer = Arc::new(consumer);
    let (watch_tx, watch_rx) = oneshot::channel::<()>();
    if s.shared {
        consumer
            .subscribe(&[&s.topic])
            .map_err(|e| failed("joining the group", &e))?;
        tokio::spawn(watch(Watch {
            consumer: consumer.clone(),
            topic: s.topic.clone(),
            group: s.group.clone(),
            every: s.cfg.session_timeout,
            stalls: Stalls::new(2 * s.cfg.session_timeout),
            ended: watch_rx,
            counters: s.counters.clone(),
        }));
    } else {
        let (c, topic) = (consumer.clone(), s.topic.clone());
        let tpl = tokio::task::spawn_blocking(move || starts(&c, &topic))
            .await
            .map_err(|e| failed("looking up offsets", &e))?
            .map_err(|e| failed("looking up offsets", &e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| failed("assigning partitions", &e))?;
    }
    let (tx, rx) = mpsc::channel(AHEAD);
    let (stop_tx, stop_rx) = oneshot::channel();
    let handled = Arc::new(AtomicU64::new(0));
    tokio::spawn(pump(Pump {
        consumer,
        subject: s.subject.to_string(),
        topic: s.topic.clone(),
        group: s.group,
        commit: s.commit,
        tx,
        stop: stop_rx,
        handled: handled.clone(),
        counters: s.counters,
        _watch: watch_tx,
    }));
    Ok(Subscription::with_drain(rx, move || {
        // A pump that already ended (its consumer failed, or the queue
        // closed) has nothing left to stop: it committed on its way out.
        if stop_tx.send(()).is_err() {
            tracing::debug!("Kafka subscription drained after its reader ended");
        }
    })
    .with_handled(move || {
        handled.fetch_add(1, Ordering::Relaxed);
    }))
}

/// Where a plain subscription starts on each partition: its group's
/// committed offset, or the end of the partition now (so what is published
/// after `subscribe` returns is read, and nothing older).
fn starts(c: &Kc, topic: &str) -> KafkaResult<TopicPartitionList> {
    let (parts, committed) = group_offsets(c, topic, &BTreeSet::new())?;
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => o,
            _ => c.fetch_watermarks(topic, p, Timeout::After(LOOKUP))?.1,
        };
        tpl.add_partition_offset(topic, p, Offset::Offset(at))?;
    }
    Ok(tpl)
}

/// The partitions of `topic` but `except`, and the group's committed
/// offsets on them.
fn group_offsets(
    c: &Kc,
    topic: &str,
    except: &BTreeSet<i32>,
) -> KafkaResult<(Vec<i32>, TopicPartitionList)> {
    let md = c.fetch_metadata(Some(topic), Timeout::After(LOOKUP))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .filter(|p| !except.contains(p))
        .collect();
    if parts.is_empty() {
        return Ok((parts, TopicPartitionList::new()));
    }
    let mut want = TopicPartitionList::new();
    for p in &parts {
        want.add_partition(topic, *p);
    }
    let committed = c.committed_offsets(want, Timeout::After(LOOKUP))?;
    Ok((parts, committed))
}

struct Pump {
    consumer: Arc<Kc>,
    subject: String,
    topic: String,
    group: String,
    commit: bool,
    tx: mpsc::Sender<Message>,
    stop: oneshot::Receiver<()>,
    handled: Arc<AtomicU64>,
    counters: Arc<Counters>,
    /// Dropped when the pump ends, which ends the group's watch.
    _watch: oneshot::Sender<()>,
}

/// Reads the consumer into the subscription's queue, committing what was
/// handled every [`COMMIT_EVERY`] and at the end.
async fn pump(p: Pump) {
    let Pump {
        consumer,
        subject,
        topic,
        group,
        commit,
        tx,
        mut stop,
        handled,
        counters,
        _watch,
    } = p;
    let mut book = Book {
        topic,
        ..Book::default()
    };
    let mut tick = tokio::time::interval(COMMIT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<Message> = None;
    let mut stopping = false;
    let mut last_error: Option<tokio::time::Instant> = None;
    loop {
        if stopping && pending.is_none() {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut stop, if !stopping => stopping = true,
            _ = tx.closed() => break,
            _ = tick.tick() => {
                if commit {
                    book.commit(&consumer, handled.load(Ordering::Relaxed));
                }
            }
            permit = tx.reserve(), if pending.is_some() => match permit {
                Ok(permit) => {
                    if let Some(m) = pending.take() {
                        permit.send(m);
                    }
                }
                Err(_) => break,
            },
            m = consumer.recv(), if pending.is_none() && !stopping => match m {
                Ok(m) => {
                    book.read(m.partition(), m.offset());
                    pending = Some(Message {
                        subject: subject.clone(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        reply: None,
                    });
                }
                Err(e) => {
                    counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    // Said once in a while: librdkafka reports every failed
                    // connection attempt while a broker is away.
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(group = %group, subject = %subject, "Kafka consumer: {e} (reading on)");
                        last_error = Some(tokio::time::Instant::now());
                    }
                }
            },
        }
    }
    if commit {
        book.commit_sync(&consumer, handled.load(Ordering::Relaxed));
    }
}

/// A shared group's watch for partitions no member reads.
struct Watch {
    consumer: Arc<Kc>,
    topic: String,
    group: String,
    every: Duration,
    stalls: Stalls,
    ended: oneshot::Receiver<()>,
    counters: Arc<Counters>,
}

/// Every `every`, looks at the partitions this member does not hold: one
/// whose messages wait while the group's committed offset on it stands still
/// (for [`Stalls`]' window) is read by no member — a member that died
/// without its group handing its partitions over (tansu 0.6.0 drops a dead
/// member without a new generation, so the survivors keep their old
/// assignment), or a group that lost a member's assignment. Said, counted,
/// and mended by leaving the group and joining it again as a new member,
/// which makes the group hand out every partition anew. A group whose
/// members read everything is never touched.
async fn watch(w: Watch) {
    let Watch {
        consumer,
        topic,
        group,
        every,
        mut stalls,
        mut ended,
        counters,
    } = w;
    let start = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut ended => return,
            _ = tokio::time::sleep(every) => {}
        }
        let (c, t) = (consumer.clone(), topic.clone());
        let seen = match tokio::task::spawn_blocking(move || others(&c, &t)).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(e)) => {
                // Said each time (once a session timeout at most): a watch
                // that cannot read offsets (a broker away, an ACL) is blind.
                tracing::warn!(group = %group, "Kafka group watch: could not read the group's offsets: {e} (partitions no member reads are not seen meanwhile)");
                continue;
            }
            Err(e) => {
                tracing::warn!(group = %group, "Kafka group watch ended: {e}");
                return;
            }
        };
        let stalled = stalls.observe(start.elapsed(), &seen);
        if stalled.is_empty() {
            continue;
        }
        counters.group_rejoins.fetch_add(1, Ordering::Relaxed);
        let waiting: i64 = seen
            .iter()
            .filter(|p| stalled.contains(&p.partition))
            .map(|p| p.end - p.committed)
            .sum();
        tracing::warn!(
            group = %group,
            partitions = ?stalled,
            waiting,
            "Kafka group: partitions that no member reads (messages wait, the group's offsets stand still for {} s); leaving and rejoining the group so they are handed out again",
            stalls.window().as_secs()
        );
        consumer.unsubscribe();
        if let Err(e) = consumer.subscribe(&[&topic]) {
            tracing::error!(group = %group, "Kafka group: rejoining failed: {e}; this subscription reads nothing more");
            counters.read_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stalls.clear();
    }
}

/// The partitions of `topic` this member does not hold: where the group
/// stands on each (its committed offset, or the oldest message kept when it
/// has none) and where the partition ends.
fn others(c: &Kc, topic: &str) -> KafkaResult<Vec<Seen>> {
    let mine: BTreeSet<i32> = c
        .assignment()?
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    let (parts, committed) = group_offsets(c, topic, &mine)?;
    let mut seen = Vec::with_capacity(parts.len());
    for p in parts {
        let (low, end) = c.fetch_watermarks(topic, p, Timeout::After(LOOKUP))?;
        let committed = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= low => o,
            _ => low,
        };
        seen.push(Seen {
            partition: p,
            committed,
            end,
        });
    }
    Ok(seen)
}

/// A partition as the group watch saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    partition: i32,
    /// The group's next offset to read on it.
    committed: i64,
    /// The partition's end (the next offset to be written).
    end: i64,
}

/// Which partitions stand still with messages waiting (pure: the watch
/// hands it what it saw and the time).
struct Stalls {
    window: Duration,
    /// Per partition with messages waiting: the group's offset and since
    /// when it has stood there.
    standing: BTreeMap<i32, (i64, Duration)>,
}

impl Stalls {
    fn new(window: Duration) -> Stalls {
        Stalls {
            window,
            standing: BTreeMap::new(),
        }
    }

    fn window(&self) -> Duration {
        self.window
    }

    /// The partitions (of those seen now) whose group offset has stood
    /// below their end for at least the window.
    fn observe(&mut self, now: Duration, seen: &[Seen]) -> Vec<i32> {
        let waiting: BTreeSet<i32> = seen
            .iter()
            .filter(|p| p.committed < p.end)
            .map(|p| p.partition)
            .collect();
        self.standing.retain(|p, _| waiting.contains(p));
        let mut stalled = Vec::new();
        for p in seen.iter().filter(|p| waiting.contains(&p.partition)) {
            match self.standing.get(&p.partition) {
                Some(&(at, since)) if at == p.committed => {
                    if now.saturating_sub(since) >= self.window {
                        stalled.push(p.partition);
                    }
                }
                _ => {
                    self.standing.insert(p.partition, (p.committed, now));
                }
            }
        }
        stalled
    }

    fn clear(&mut self) {
        self.standing.clear();
    }
}

/// Offsets read, in the order handed to the component.
#[derive(Default)]
struct Book {
    topic: String,
    read: VecDeque<(i32, i64)>,
    /// Messages counted as handled so far.
    done: u64,
}

impl Book {
    fn read(&mut self, partition: i32, offset: i64) {
        self.read.push_back((partition, offset));
    }

    /// The next offset per partition for what was handled since the last
    /// call (`handled` counts every message handled so far).
    fn take(&mut self, handled: u64) -> BTreeMap<i32, i64> {
        let mut next = BTreeMap::new();
        while self.done < handled {
            let Some((p, o)) = self.read.pop_front() else {
                break;
            };
            next.insert(p, o + 1);
            self.done += 1;
        }
        next
    }

    fn list(&mut self, handled: u64) -> Option<TopicPartitionList> {
        let next = self.take(handled);
        if next.is_empty() {
            return None;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .ok()?;
        }
        Some(tpl)
    }

    fn commit(&mut self, c: &Kc, handled: u64) {
        if let Some(tpl) = self.list(handled) {
            if let Err(e) = c.commit(&tpl, CommitMode::Async) {
                tracing::warn!("Kafka offset commit not sent: {e} (those messages come again)");
            }
        }
    }

    fn commit_sync(&mut self, c: &Kc, handled: u64) {
        if let Some(tpl) = self.list(handled) {
            if let Err(e) = c.commit(&tpl, CommitMode::Sync) {
                tracing::warn!("Kafka offset commit at the end: {e} (those messages come again)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only what was handled is committed, per partition, as the next
    /// offset to read; what was read ahead is not.
    #[test]
    fn commits_cover_only_handled_messages() {
        let mut b = Book::default();
        for (p, o) in [(0, 10), (1, 5), (0, 11), (2, 7), (1, 6)] {
            b.read(p, o);
        }
        assert!(b.take(0).is_empty());
        assert_eq!(b.take(2), BTreeMap::from([(0, 11), (1, 6)]));
        assert!(b.take(2).is_empty());
        assert_eq!(b.take(4), BTreeMap::from([(0, 12), (2, 8)]));
        // More handled than read (cannot happen, but never panics).
        assert_eq!(b.take(9), BTreeMap::from([(1, 7)]));
    }

    fn seen(partition: i32, committed: i64, end: i64) -> Seen {
        Seen {
            partition,
            committed,
            end,
        }
    }

    /// A partition is stalled only once its group offset has stood below
    /// its end for the whole window; one that moves, catches up or is
    /// taken by this member starts over.
    #[test]
    fn a_partition_is_stalled_after_standing_with_messages_waiting_for_the_window() {
        let s = Duration::from_secs;
        let mut st = Stalls::new(s(20));
        // 0 waits and stands; 1 moves; 2 has nothing waiting.
        assert!(st
            .observe(s(0), &[seen(0, 5, 9), seen(1, 3, 9), seen(2, 7, 7)])
            .is_empty());
        assert!(st
            .observe(s(10), &[seen(0, 5, 9), seen(1, 4, 9), seen(2, 7, 8)])
            .is_empty());
        assert_eq!(
            st.observe(s(20), &[seen(0, 5, 12), seen(1, 6, 12), seen(2, 8, 8)]),
            vec![0],
            "0 stood at 5 for 20 s with messages waiting"
        );
        // 1 stood at 6 from 20 s; 2 waits from 30 s.
        assert_eq!(
            st.observe(s(30), &[seen(0, 5, 12), seen(1, 6, 12), seen(2, 8, 9)]),
            vec![0]
        );
        assert_eq!(
            st.observe(s(40), &[seen(0, 5, 12), seen(1, 6, 12), seen(2, 8, 9)]),
            vec![0, 1]
        );
        // 0 now held by this member (not seen), 1 caught up: neither again.
        assert_eq!(
            st.observe(s(50), &[seen(1, 12, 12), seen(2, 8, 9)]),
            vec![2]
        );
        assert!(st
            .observe(s(60), &[seen(0, 5, 12), seen(1, 12, 13)])
            .is_empty());
        st.clear();
        assert!(st.observe(s(70), &[seen(0, 5, 12)]).is_empty());
        assert!(st.observe(s(80), &[seen(0, 5, 12)]).is_empty());
        assert_eq!(st.observe(s(90), &[seen(0, 5, 12)]), vec![0]);
    }
}
