//! # The bus
//!
//! Every Ben component talks to the others only through a [`Bus`]:
//! subjects (`ben.<plane>.<…>`, and the CyberMesh topic names), publish and
//! subscribe with NATS-style wildcards (`*` one token, `>` the rest), queue
//! groups (each message goes to one member of a group), and request/reply.
//! Embedded mode (`ben up`) uses [`InProcessBus`]; cluster mode plugs a
//! NATS adapter into the same trait.
//!
//! Queues are bounded. A subscriber's queue that is full makes `publish`
//! wait (back-pressure) up to [`Limits::publish_timeout`]; past that the
//! message is counted as dropped for that subscriber and the publisher is
//! told ([`PublishReport`]) — never silently lost. Messages nobody
//! subscribes to are counted too.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub payload: Vec<u8>,
    /// Where a reply goes, for requests.
    pub reply: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("invalid subject `{0}`: tokens are non-empty, separated by `.`, and wildcards (`*`, `>`) may only be used to subscribe")]
    Subject(String),
    #[error("no reply on `{subject}` within {timeout_ms} ms")]
    Timeout { subject: String, timeout_ms: u64 },
    #[error("no responder on `{0}`")]
    NoResponders(String),
    #[error("the bus is closed")]
    Closed,
    /// A durable subject's message the broker did not confirm it stored.
    #[error("`{subject}` was not stored: {reason}")]
    NotStored { subject: String, reason: String },
    /// What this bus cannot do (a wildcard over subjects another broker
    /// carries, request/reply on a Kafka topic…), said with what to do.
    #[error("{0}")]
    Unsupported(String),
}

/// What happened to one published message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Subscriber queues it was delivered to.
    pub delivered: usize,
    /// Subscriber queues that stayed full past the timeout.
    pub dropped: usize,
}

/// A subscription: messages arrive on `rx` until it is dropped.
pub struct Subscription {
    pub rx: mpsc::Receiver<Message>,
    /// How the source stops delivering (see [`Subscription::drain`]).
    drain: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// Told each time a message taken by [`Subscription::next`] has been
    /// handled (see [`Subscription::with_handled`]).
    handled: Option<Box<dyn FnMut() + Send + Sync>>,
    /// A message was handed out and not yet reported handled.
    taken: bool,
}

impl Subscription {
    /// Messages arrive on `rx`; draining closes it (nothing new gets in,
    /// what is in it can still be read).
    pub fn new(rx: mpsc::Receiver<Message>) -> Subscription {
        Subscription {
            rx,
            drain: None,
            handled: None,
            taken: false,
        }
    }

    /// Messages arrive on `rx`; draining calls `drain`, which must make
    /// the source stop and then drop its sender once it has handed over
    /// everything already on its way (so `next` ends).
    pub fn with_drain(
        rx: mpsc::Receiver<Message>,
        drain: impl FnOnce() + Send + Sync + 'static,
    ) -> Subscription {
        Subscription {
            rx,
            drain: Some(Box::new(drain)),
            handled: None,
            taken: false,
        }
    }

    /// For sources that acknowledge what was handled (a Kafka consumer
    /// commits its offsets only then): `handled` is called once for each
    /// message [`Subscription::next`] returned, when `next` is called
    /// again — the caller is done with the previous one. A message taken
    /// and never followed by another `next` (the process died, or the
    /// subscription was dropped) is not reported, so such a source
    /// delivers it again: at least once.
    pub fn with_handled(mut self, handled: impl FnMut() + Send + Sync + 'static) -> Subscription {
        self.handled = Some(Box::new(handled));
        self
    }

    pub async fn next(&mut self) -> Option<Message> {
        if std::mem::take(&mut self.taken) {
            if let Some(h) = self.handled.as_mut() {
                h();
            }
        }
        let m = self.rx.recv().await;
        self.taken = m.is_some();
        m
    }

    /// [`Subscription::next`] without waiting: a message already
    /// delivered, or none (nothing is there now, or the subscription
    /// ended: `next` tells which). Reports the previous one handled, as
    /// `next` does.
    pub fn try_next(&mut self) -> Option<Message> {
        if std::mem::take(&mut self.taken) {
            if let Some(h) = self.handled.as_mut() {
                h();
            }
        }
        let m = self.rx.try_recv().ok();
        self.taken = m.is_some();
        m
    }

    /// Stops new deliveries to this subscription (in a queue group, the
    /// other members get them from now on); [`Subscription::next`] still
    /// returns every message delivered before, then `None`.
    pub fn drain(&mut self) {
        match self.drain.take() {
            Some(f) => f(),
            None => self.rx.close(),
        }
    }
}

/// What went wrong inside a bus client that no single call returned: a
/// process reports them with its metrics (never silent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusErrors {
    /// Publishes the broker did not store (each also returned as an
    /// error to its caller).
    pub not_stored: u64,
    /// Offset commits the broker refused (those messages come again).
    pub commit_errors: u64,
    /// Errors consumers met while reading (they go on reading).
    pub read_errors: u64,
    /// Times a queue group member rejoined its group because partitions
    /// stood unread by any member (Kafka).
    pub group_rejoins: u64,
}

impl std::ops::Add for BusErrors {
    type Output = BusErrors;
    fn add(self, o: BusErrors) -> BusErrors {
        BusErrors {
            not_stored: self.not_stored + o.not_stored,
            commit_errors: self.commit_errors + o.commit_errors,
            read_errors: self.read_errors + o.read_errors,
            group_rejoins: self.group_rejoins + o.group_rejoins,
        }
    }
}

/// The bus every component uses.
pub trait Bus: Send + Sync {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>>;
    /// `queue`: join a queue group (one member receives each message).
    /// Publishes with a key: a bus that partitions its subjects (Kafka)
    /// keeps the order of the messages of one key; the others ignore it.
    /// Wrappers forward it.
    fn publish_keyed<'a>(
        &'a self,
        subject: &'a str,
        _key: &'a [u8],
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        self.publish(subject, payload)
    }
    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>>;
    fn request<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, BusError>>;
    /// Whether what is published now can reach anyone: false while a
    /// networked bus has lost its server and is reconnecting (a publish
    /// then may sit in a client buffer and be lost with it). The in-process
    /// bus is always connected.
    fn connected(&self) -> bool {
        true
    }
    /// The largest message this bus carries (a NATS server's
    /// `max_payload`); `None`: no limit. Producers of large messages (a
    /// validator's block policies, which carry the block) size them by it.
    fn max_payload(&self) -> Option<usize> {
        None
    }
    /// The client's errors so far that no call returned (none for a bus
    /// whose every error is a call's). Wrappers forward it.
    fn errors(&self) -> BusErrors {
        BusErrors::default()
    }
    /// Waits until everything published so far has left this process (a
    /// networked client buffers writes: a process that exits without this
    /// loses them). The in-process bus hands messages over at once.
    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async { Ok(()) })
    }
    /// Answers a request.
    fn reply<'a>(
        &'a self,
        to: &'a Message,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            match &to.reply {
                Some(r) => self.publish(r, payload).await.map(|_| ()),
                None => Ok(()),
            }
        })
    }
}

/// Named limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages buffered per subscriber.
    pub queue_len: usize,
    /// How long `publish` waits for a full subscriber queue.
    pub publish_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_len: 4096,
            publish_timeout: Duration::from_secs(1),
        }
    }
}

/// Checks a subject; `pattern` allows wildcards.
pub fn valid_subject(s: &str, pattern: bool) -> bool {
    if s.is_empty() {
        return false;
    }
    let toks: Vec<&str> = s.split('.').collect();
    toks.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.contains(char::is_whitespace)
            && match *t {
                "*" => pattern,
                ">" => pattern && i == toks.len() - 1,
                t => !t.contains('*') && !t.contains('>'),
            }
    })
}

/// Does `subject` match `pattern` (`*` one token, `>` one or more)?
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

struct Sub {
    pattern: String,
    queue: Option<String>,
    tx: mpsc::Sender<Message>,
}

#[derive(Default)]
struct State {
    subs: Vec<Sub>,
    /// Round-robin position per (pattern, queue group).
    rr: BTreeMap<(String, String), usize>,
}

/// The embedded bus: in-process, bounded channels.
#[derive(Clone)]
pub struct InProcessBus {
    state: Arc<Mutex<State>>,
    limits: Limits,
    no_subscriber: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    inbox_seq: Arc<AtomicUsize>,
}

impl InProcessBus {
    pub fn new(limits: Limits) -> Self {
        InProcessBus {
            state: Arc::new(Mutex::new(State::default())),
            limits,
            no_subscriber: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            inbox_seq: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Messages published where nobody listened.
    pub fn unrouted(&self) -> u64 {
        self.no_subscriber.load(Ordering::Relaxed)
    }

    /// Deliveries dropped because a subscriber stayed full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Current subscriber count (closed subscriptions are pruned on publish).
    pub fn subscribers(&self) -> usize {
        self.state.lock().map(|s| s.subs.len()).unwrap_or(0)
    }

    /// The queues a message on `subject` goes to: every plain subscriber,
    /// and one member per queue group (round robin).
    fn targets(&self, subject: &str) -> Vec<mpsc::Sender<Message>> {
        let Ok(mut st) = self.state.lock() else {
            return vec![];
        };
        st.subs.retain(|s| !s.tx.is_closed());
        let mut out = Vec::new();
        let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, s) in st.subs.iter().enumerate() {
            if !matches(&s.pattern, subject) {
                continue;
            }
            match &s.queue {
                None => out.push(s.tx.clone()),
                Some(q) => groups
                    .entry((s.pattern.clone(), q.clone()))
                    .or_default()
                    .push(i),
            }
        }
        for (key, members) in groups {
            let pos = st.rr.entry(key).or_insert(0);
            let pick = members[*pos % members.len()];
            *pos = pos.wrapping_add(1);
            out.push(st.subs[pick].tx.clone());
        }
        out
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Bus for InProcessBus {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        Box::pin(async move {
            if !valid_subject(subject, false) {
                return Err(BusError::Subject(subject.to_string()));
            }
            let targets = self.targets(subject);
            if targets.is_empty() {
                self.no_subscriber.fetch_add(1, Ordering::Relaxed);
                return Ok(PublishReport::default());
            }
            let mut report = PublishReport::default();
            let n = targets.len();
            let mut payload = Some(payload);
            for (i, tx) in targets.into_iter().enumerate() {
                let body = if i + 1 == n {
                    payload.take().unwrap_or_default()
                } else {
                    payload.clone().unwrap_or_default()
                };
                let msg = Message {
                    subject: subject.to_string(),
                    payload: body,
                    reply: None,
                };
                match tokio::time::timeout(self.limits.publish_timeout, tx.send(msg)).await {
                    Ok(Ok(())) => report.delivered += 1,
                    Ok(Err(_)) => {} // subscriber went away meanwhile
                    Err(_) => {
                        report.dropped += 1;
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(report)
        })
    }

    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(async move {
            if !valid_subject(subject, true) {
                return Err(BusError::Subject(subject.to_string()));
            }
            let (tx, rx) = mpsc::channel(self.limits.queue_len.max(1));
            let mut st = self.state.lock().map_err(|_| BusError::Closed)?;
            st.subs.push(Sub {
                pattern: subject.to_string(),
                queue: queue.map(str::to_string),
                tx,
            });
            Ok(Subscription::new(rx))
        })
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, BusError>> {
        Box::pin(async move {
            if !valid_subject(subject, false) {
                return Err(BusError::Subject(subject.to_string()));
            }
            let inbox = format!("_INBOX.{}", self.inbox_seq.fetch_add(1, Ordering::Relaxed));
            let mut sub = self.subscribe(&inbox, None).await?;
            let targets = self.targets(subject);
            if targets.is_empty() {
                self.no_subscriber.fetch_add(1, Ordering::Relaxed);
                return Err(BusError::NoResponders(subject.to_string()));
            }
            for tx in targets {
                let msg = Message {
                    subject: subject.to_string(),
                    payload: payload.clone(),
                    reply: Some(inbox.clone()),
                };
                let _ = tokio::time::timeout(self.limits.publish_timeout, tx.send(msg)).await;
            }
            match tokio::time::timeout(timeout, sub.next()).await {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(BusError::Closed),
                Err(_) => Err(BusError::Timeout {
                    subject: subject.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                }),
            }
        })
    }
}

/// A bus whose subjects all live under a prefix (`<prefix>.<subject>`), so
/// several systems — or test runs — can share one NATS server without
/// seeing each other. Replies go to the requester's inbox unprefixed.
pub struct PrefixedBus<B> {
    inner: B,
    prefix: String,
}

impl<B: Bus> PrefixedBus<B> {
    pub fn new(inner: B, prefix: impl Into<String>) -> Self {
        PrefixedBus {
            inner,
            prefix: prefix.into(),
        }
    }

    fn full(&self, subject: &str) -> String {
        format!("{}.{subject}", self.prefix)
    }

    fn strip(&self, m: Message) -> Message {
        strip_prefix(&self.prefix, m)
    }
}

fn strip_prefix(prefix: &str, mut m: Message) -> Message {
    if let Some(rest) = m
        .subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
    {
        m.subject = rest.to_string();
    }
    m
}

impl<B: Bus> Bus for PrefixedBus<B> {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        Box::pin(async move { self.inner.publish(&self.full(subject), payload).await })
    }

    fn publish_keyed<'a>(
        &'a self,
        subject: &'a str,
        key: &'a [u8],
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        Box::pin(async move {
            self.inner
                .publish_keyed(&self.full(subject), key, payload)
                .await
        })
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    fn max_payload(&self) -> Option<usize> {
        self.inner.max_payload()
    }

    fn errors(&self) -> BusErrors {
        self.inner.errors()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.flush()
    }

    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(async move {
            let mut inner = self.inner.subscribe(&self.full(subject), queue).await?;
            let (tx, rx) = mpsc::channel(inner.rx.max_capacity().max(1));
            let prefix = self.prefix.clone();
            let (drain_tx, mut drain_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let mut draining = false;
                loop {
                    let m = tokio::select! {
                        biased;
                        _ = &mut drain_rx, if !draining => {
                            draining = true;
                            inner.drain();
                            continue;
                        }
                        m = inner.next() => m,
                    };
                    let Some(m) = m else { break };
                    if tx.send(strip_prefix(&prefix, m)).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Subscription::with_drain(rx, move || {
                let _ = drain_tx.send(());
            }))
        })
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, BusError>> {
        Box::pin(async move {
            self.inner
                .request(&self.full(subject), payload, timeout)
                .await
                .map(|m| self.strip(m))
        })
    }

    fn reply<'a>(
        &'a self,
        to: &'a Message,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        // The reply subject is the requester's inbox: never prefixed.
        self.inner.reply(to, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("ben.data.*", "ben.data.spine"));
        assert!(!matches("ben.data.*", "ben.data.spine.x"));
        assert!(matches("ben.>", "ben.data.spine.x"));
        assert!(!matches("ben.>", "ben"));
        assert!(matches("ai.anomalies.v1", "ai.anomalies.v1"));
        assert!(valid_subject("ben.data.*", true));
        assert!(!valid_subject("ben.data.*", false));
        assert!(!valid_subject("ben..x", true));
        assert!(!valid_subject("ben.>.x", true));
    }

    /// A subscription fed by the returned sender, counting the messages
    /// reported handled.
    fn counted_subscription() -> (mpsc::Sender<Message>, Arc<AtomicU64>, Subscription) {
        let (tx, rx) = mpsc::channel(8);
        let n = Arc::new(AtomicU64::new(0));
        let counted = n.clone();
        let sub = Subscription::new(rx).with_handled(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        (tx, n, sub)
    }

    /// A message counts as handled when the next one is asked for; the one
    /// in hand when the subscription ends is not reported.
    #[tokio::test]
    async fn handled_is_reported_when_the_next_message_is_asked_for() {
        let (tx, n, mut sub) = counted_subscription();
        for i in 0..3u8 {
            tx.send(Message {
                subject: "s".into(),
                payload: vec![i],
                reply: None,
            })
            .await
            .unwrap();
        }
        drop(tx);
        assert_eq!(sub.next().await.unwrap().payload, [0]);
        assert_eq!(n.load(Ordering::Relaxed), 0);
        assert_eq!(sub.next().await.unwrap().payload, [1]);
        assert_eq!(n.load(Ordering::Relaxed), 1);
        assert_eq!(sub.next().await.unwrap().payload, [2]);
        assert!(sub.next().await.is_none());
        assert_eq!(n.load(Ordering::Relaxed), 3);
        // Nothing more was taken: nothing more is reported.
        assert!(sub.next().await.is_none());
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }

    /// `try_next` takes what is there without waiting, and counts as
    /// asking for the next message.
    #[tokio::test]
    async fn try_next_takes_what_is_there_and_reports_the_one_before() {
        let (tx, n, mut sub) = counted_subscription();
        let msg = |i: u8| Message {
            subject: "s".into(),
            payload: vec![i],
            reply: None,
        };
        assert!(sub.try_next().is_none());
        tx.send(msg(0)).await.unwrap();
        tx.send(msg(1)).await.unwrap();
        assert_eq!(sub.next().await.unwrap().payload, [0]);
        assert_eq!(sub.try_next().unwrap().payload, [1]);
        assert_eq!(n.load(Ordering::Relaxed), 1);
        // Nothing there: the one in hand is reported, nothing taken.
        assert!(sub.try_next().is_none());
        assert_eq!(n.load(Ordering::Relaxed), 2);
        tx.send(msg(2)).await.unwrap();
        assert_eq!(sub.next().await.unwrap().payload, [2]);
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_drained_member_keeps_what_it_had_and_the_group_gets_the_rest() {
        for prefixed in [false, true] {
            let bus: Arc<dyn Bus> = if prefixed {
                Arc::new(PrefixedBus::new(InProcessBus::default(), "cl"))
            } else {
                Arc::new(InProcessBus::default())
            };
            let mut q1 = bus.subscribe("ben.data.spine", Some("s")).await.unwrap();
            let mut q2 = bus.subscribe("ben.data.spine", Some("s")).await.unwrap();
            for i in 0..4u8 {
                bus.publish("ben.data.spine", vec![i]).await.unwrap();
            }
            q1.drain();
            // Through a prefix, the drain reaches the inner bus from the
            // forwarding task: give it its turn (over NATS, the server's
            // UNSUB takes a round trip the same way).
            tokio::time::sleep(Duration::from_millis(20)).await;
            for i in 4..8u8 {
                bus.publish("ben.data.spine", vec![i]).await.unwrap();
            }
            let mut got1 = vec![];
            while let Some(m) = q1.next().await {
                got1.push(m.payload[0]);
            }
            let mut got2 = vec![];
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), q2.next()).await
            {
                got2.push(m.payload[0]);
            }
            assert_eq!(
                got1,
                [0, 2],
                "prefixed {prefixed}: what it had before draining"
            );
            assert_eq!(got2, [1, 3, 4, 5, 6, 7], "prefixed {prefixed}: the rest");
        }
    }

    #[tokio::test]
    async fn fan_out_and_queue_groups() {
        let bus = InProcessBus::default();
        let mut a = bus.subscribe("ben.data.>", None).await.unwrap();
        let mut q1 = bus
            .subscribe("ben.data.spine", Some("spines"))
            .await
            .unwrap();
        let mut q2 = bus
            .subscribe("ben.data.spine", Some("spines"))
            .await
            .unwrap();
        for i in 0..10u8 {
            let r = bus.publish("ben.data.spine", vec![i]).await.unwrap();
            assert_eq!(r.delivered, 2);
        }
        let mut seen_a = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), a.next()).await {
            seen_a += 1;
        }
        let mut n1 = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), q1.next()).await {
            n1 += 1;
        }
        let mut n2 = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(10), q2.next()).await {
            n2 += 1;
        }
        assert_eq!(seen_a, 10);
        assert_eq!((n1, n2), (5, 5), "queue group splits round robin");
        bus.publish("ben.nobody", vec![]).await.unwrap();
        assert_eq!(bus.unrouted(), 1);
    }

    #[tokio::test]
    async fn full_queue_back_pressure_then_counted_drop() {
        let bus = InProcessBus::new(Limits {
            queue_len: 2,
            publish_timeout: Duration::from_millis(20),
        });
        let _slow = bus.subscribe("ben.x", None).await.unwrap();
        assert_eq!(bus.publish("ben.x", vec![1]).await.unwrap().delivered, 1);
        assert_eq!(bus.publish("ben.x", vec![2]).await.unwrap().delivered, 1);
        let r = bus.publish("ben.x", vec![3]).await.unwrap();
        assert_eq!(
            r,
            PublishReport {
                delivered: 0,
                dropped: 1
            }
        );
        assert_eq!(bus.dropped(), 1);
    }

    #[tokio::test]
    async fn request_reply() {
        let bus = InProcessBus::default();
        let mut svc = bus.subscribe("ben.ledger.status", None).await.unwrap();
        let b2 = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = svc.next().await {
                let mut out = b"re:".to_vec();
                out.extend_from_slice(&m.payload);
                b2.reply(&m, out).await.unwrap();
            }
        });
        let r = bus
            .request("ben.ledger.status", b"hi".to_vec(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r.payload, b"re:hi");
        assert_eq!(
            bus.request("ben.none", vec![], Duration::from_millis(10))
                .await,
            Err(BusError::NoResponders("ben.none".into()))
        );
        assert!(matches!(
            bus.publish("bad subject", vec![]).await,
            Err(BusError::Subject(_))
        ));
    }

    #[tokio::test]
    async fn prefixed_buses_do_not_see_each_other() {
        let shared = InProcessBus::default();
        let a = PrefixedBus::new(shared.clone(), "run-a");
        let b = PrefixedBus::new(shared.clone(), "run-b");
        let mut sa = a.subscribe("ben.data.>", None).await.unwrap();
        let mut sb = b.subscribe("ben.data.>", None).await.unwrap();
        a.publish("ben.data.spine", vec![1]).await.unwrap();
        let m = tokio::time::timeout(Duration::from_millis(100), sa.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            m.subject, "ben.data.spine",
            "subscribers see unprefixed subjects"
        );
        assert!(tokio::time::timeout(Duration::from_millis(50), sb.next())
            .await
            .is_err());
        // Request/reply through the prefix.
        let mut svc = a.subscribe("ben.q", None).await.unwrap();
        let a2 = PrefixedBus::new(shared.clone(), "run-a");
        tokio::spawn(async move {
            if let Some(m) = svc.next().await {
                a2.reply(&m, b"ok".to_vec()).await.unwrap();
            }
        });
        assert_eq!(
            a.request("ben.q", vec![], Duration::from_secs(1))
                .await
                .unwrap()
                .payload,
            b"ok"
        );
    }

    #[tokio::test]
    async fn closed_subscriptions_are_pruned() {
        let bus = InProcessBus::default();
        let s = bus.subscribe("ben.y", None).await.unwrap();
        drop(s);
        let r = bus.publish("ben.y", vec![]).await.unwrap();
        assert_eq!(r.delivered, 0);
        assert_eq!(bus.subscribers(), 0);
    }
}
