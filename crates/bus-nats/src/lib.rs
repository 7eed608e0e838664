//! # The bus over NATS
//!
//! [`NatsBus`] implements [`ben_bus::Bus`] on NATS: the same subject names
//! and wildcards as the in-process bus, queue groups as NATS queue
//! subscriptions, request/reply with NATS inboxes. Components do not
//! change: cluster mode hands them a `NatsBus` instead of an
//! `InProcessBus`.
//!
//! Each subscription is forwarded into a bounded channel (the same
//! `queue_len` setting as the in-process bus); a full channel holds the
//! forwarding task back, and NATS then reports the subscriber as a slow
//! consumer rather than anything being dropped silently here.
//! A core subscription is returned once the server has confirmed it, and
//! draining one (scaling a queue-group member down) does not lose what the
//! server had already routed to it: see `core_sub`.
//!
//! ## Durable subjects (JetStream)
//!
//! Core NATS delivers at most once, to whoever is subscribed at that
//! moment. The control-plane subjects that must not be lost — intent
//! announce/activate/abort, acks, signals, the DLQ ([`DURABLE_SUBJECTS`])
//! — can instead be kept in a JetStream stream ([`Config::durable`], one
//! stream per cluster prefix, created on connect if missing, bounded by
//! age and bytes). Then:
//!
//! * publishing on a durable subject is a JetStream publish that waits for
//!   the server's ack: a message NATS did not store is
//!   [`BusError::NotStored`] for the caller;
//! * subscribing to a pattern that lies wholly inside the durable subjects
//!   reads through a JetStream consumer:
//!   - with [`Durable::consumer`] set (cluster mode: the component id), a
//!     **durable pull consumer** named `<id>-<subject>-<n>` (the `n`-th
//!     subscription of that process to that pattern), acked explicitly as
//!     each message is handed to the subscriber. The server remembers how
//!     far it got, so a process that restarts under the same id receives
//!     what was published while it was down. A new name starts at the
//!     newest message (no replay of history to a process never seen
//!     before). Unused names are removed by the server after
//!     [`Durable::consumer_idle`];
//!   - with a queue group, one durable consumer named after the group,
//!     shared by its members (each message to one of them);
//!   - without an id (tools, tests, the supervisor's observers), an
//!     **ordered consumer** starting at the newest message; the forwarding
//!     task records the last stream sequence it delivered and recreates
//!     the consumer from the next one if it ends, so a dropped connection
//!     or a restarted server loses nothing that was stored;
//! * everything else — the data path, heartbeats, metrics, requests and
//!   replies (`ben.intent.active` is request/reply and deliberately not
//!   durable: a stream on it would answer requests with its publish ack) —
//!   stays on core NATS.
//!
//! Delivery on durable subjects is at least once: a message handed to the
//! subscriber's channel is acked, so a process killed with messages still
//! in its channel loses those; one killed before the ack gets it again.
//!
//! The client reconnects on its own (unbounded, 100 ms growing to 2 s
//! between attempts); core subscriptions are re-established by it, JetStream
//! reads by the forwarding tasks.
//!
//! ## Artifacts and the registry
//!
//! [`store::NatsStore`] is [`ben_store::Store`] on a JetStream object store
//! bucket (verified on read, like the files store); [`registry::Registry`]
//! is the service registry, a KV bucket with a max age in which each
//! process keeps its entry fresh. Both are named by
//! [`store::bucket_name`] of the cluster prefix.

mod core_sub;
pub mod registry;
pub mod store;

pub use registry::{Entry, Registry};
pub use store::{NatsStore, StoreConfig};

use ben_bus::{BoxFuture, Bus, BusError, Message, PublishReport, Subscription};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use async_nats::jetstream;
use jetstream::consumer::{pull, AckPolicy, DeliverPolicy};

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// e.g. `nats://127.0.0.1:4222`
    pub url: String,
    /// Messages buffered per subscription.
    pub queue_len: usize,
    /// JetStream for the durable subjects; `None`: everything on core NATS.
    pub durable: Option<Durable>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "nats://127.0.0.1:4222".into(),
            queue_len: 4096,
            durable: None,
        }
    }
}

/// Ben's subjects kept in JetStream (below a cluster's prefix).
pub const DURABLE_SUBJECTS: [&str; 6] = [
    "ben.intent.announce",
    "ben.intent.activate",
    "ben.intent.abort",
    "ben.intent.ack",
    "ben.signal.>",
    "ben.dlq",
];

/// The JetStream side of a [`NatsBus`].
#[derive(Debug, Clone)]
pub struct Durable {
    /// The stream's name (one per cluster).
    pub stream: String,
    /// The subject patterns it stores (full subjects, prefix included).
    pub subjects: Vec<String>,
    /// Left off the front of subjects in consumer names (the prefix).
    pub prefix: String,
    /// Who reads: names the durable consumers (cluster mode: the
    /// component id). `None`: ordered consumers from the newest message.
    pub consumer: Option<String>,
    /// Messages older than this are dropped from the stream.
    pub max_age: Duration,
    /// The stream keeps at most this many bytes (oldest dropped first).
    pub max_bytes: i64,
    /// A named consumer nobody reads for this long is deleted by the server.
    pub consumer_idle: Duration,
    /// How long a publish waits for the server's ack.
    pub ack_timeout: Duration,
}

impl Durable {
    /// Ben's durable subjects ([`DURABLE_SUBJECTS`]) under `prefix` (empty:
    /// none), in the stream [`Durable::stream_name`]`(prefix)`, with
    /// default limits: a day, 64 MiB.
    pub fn for_prefix(prefix: &str, consumer: Option<&str>) -> Durable {
        let full = |s: &str| {
            if prefix.is_empty() {
                s.to_string()
            } else {
                format!("{prefix}.{s}")
            }
        };
        Durable {
            stream: Self::stream_name(prefix),
            subjects: DURABLE_SUBJECTS.iter().map(|s| full(s)).collect(),
            prefix: prefix.to_string(),
            consumer: consumer.map(str::to_string),
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 64 << 20,
            consumer_idle: Duration::from_secs(3600),
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// `BEN_<prefix>` with the characters stream names cannot hold
    /// replaced (and then a hash of the prefix, so two prefixes never
    /// share a stream).
    pub fn stream_name(prefix: &str) -> String {
        let clean = name_token(prefix);
        if clean == prefix && !prefix.is_empty() {
            format!("BEN_{clean}")
        } else {
            format!("BEN_{clean}_{:08x}", fnv1a(prefix) as u32)
        }
    }

    fn is_durable(&self, subject: &str) -> bool {
        self.subjects.iter().any(|p| ben_bus::matches(p, subject))
    }

    /// Every subject `pattern` matches is durable.
    fn covers(&self, pattern: &str) -> bool {
        self.subjects.iter().any(|d| covers(d, pattern))
    }

    /// A consumer name for `pattern`: without the prefix, dots and
    /// wildcards spelled out.
    fn tail(&self, pattern: &str) -> String {
        let t = pattern
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('.'))
            .filter(|_| !self.prefix.is_empty())
            .unwrap_or(pattern);
        t.split('.')
            .map(|tok| match tok {
                "*" => "any".to_string(),
                ">" => "all".to_string(),
                t => name_token(t),
            })
            .collect::<Vec<_>>()
            .join("_")
    }
}

/// Stable across builds (stream names must not change between versions).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `s` with what JetStream names may not contain (`.`, `*`, `>`, `/`,
/// `\`, whitespace, control characters) replaced by `_`.
fn name_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Does the pattern `outer` match every subject `inner` matches?
fn covers(outer: &str, inner: &str) -> bool {
    let o: Vec<&str> = outer.split('.').collect();
    let i: Vec<&str> = inner.split('.').collect();
    for (k, ot) in o.iter().enumerate() {
        match (*ot, i.get(k)) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            (_, Some(&">")) => return false,
            ("*", Some(_)) => {}
            (a, Some(&b)) if a == b && b != "*" => {}
            _ => return false,
        }
    }
    o.len() == i.len()
}

struct Js {
    ctx: jetstream::Context,
    stream: jetstream::stream::Stream,
    cfg: Durable,
    /// Subscriptions so far per (pattern, queue): the `n` in names.
    seen: Mutex<HashMap<String, usize>>,
    /// Bumped on every (re)connection.
    reconnects: tokio::sync::watch::Receiver<u64>,
}

/// Resolves on the next (re)connection of the client.
async fn reconnected(rx: &mut tokio::sync::watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    queue_len: usize,
    js: Option<Arc<Js>>,
    /// Counts (re)connections (see [`NatsBus::connections`]).
    connects: tokio::sync::watch::Receiver<u64>,
}

impl NatsBus {
    /// Connects; with [`Config::durable`], also creates its stream if the
    /// server does not have it yet.
    pub async fn connect(cfg: &Config) -> Result<NatsBus, String> {
        // Counts (re)connections: JetStream readers start a fresh pull
        // after one instead of waiting out a heartbeat the old server
        // will never send.
        let (connected, reconnects) = tokio::sync::watch::channel(0u64);
        let client = async_nats::ConnectOptions::new()
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(2000)))
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    connected.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            })
            .connect(&cfg.url)
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", cfg.url))?;
        let connects = reconnects.clone();
        let js = match &cfg.durable {
            None => None,
            Some(d) => Some(Arc::new(
                open_stream(&client, &cfg.url, d, reconnects).await?,
            )),
        };
        Ok(NatsBus {
            client,
            queue_len: cfg.queue_len.max(1),
            js,
            connects,
        })
    }

    /// Is the client connected to the server right now?
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// How many times the client has (re)connected so far: a change
    /// between two looks means the connection dropped in between, even if
    /// it is back already.
    pub fn connections(&self) -> u64 {
        *self.connects.borrow()
    }

    /// The same as [`NatsBus::connect`] (named for the durable settings).
    pub async fn connect_with(cfg: &Config) -> Result<NatsBus, String> {
        Self::connect(cfg).await
    }

    /// Waits until the server has handled everything this connection sent
    /// so far (publishes, subscriptions): a round trip, not only the
    /// client's write buffer written out.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|_| BusError::Closed)?;
        core_sub::round_trip(&self.client).await.map_err(|e| {
            tracing::warn!(error = %e, "a flush did not come back from the server");
            BusError::Closed
        })
    }

    /// Deletes this bus's stream and every consumer on it (for runs that
    /// used a throwaway prefix). `Ok(false)`: there was none.
    pub async fn delete_stream(&self) -> Result<bool, String> {
        let Some(js) = &self.js else {
            return Ok(false);
        };
        match js.ctx.delete_stream(&js.cfg.stream).await {
            Ok(s) => Ok(s.success),
            Err(e) => Err(format!("deleting the stream {}: {e}", js.cfg.stream)),
        }
    }

    /// Is `subject` kept in JetStream by this bus?
    pub fn is_durable(&self, subject: &str) -> bool {
        self.js.as_ref().is_some_and(|j| j.cfg.is_durable(subject))
    }
}

/// Opens the stream `config` names, creating it if there is none. Every
/// process of a cluster does this as it starts, most at the same moment,
/// and a server (2.9) can refuse a create that races another create of the
/// same stream, as "subjects overlap with an existing stream": the other
/// create won, so on any refusal the stream is looked up again (briefly)
/// and the refusal returned only if it still does not exist.
pub(crate) async fn get_or_create_stream(
    ctx: &jetstream::Context,
    config: jetstream::stream::Config,
) -> Result<jetstream::stream::Stream, String> {
    let name = config.name.clone();
    let refused = match ctx.get_or_create_stream(config).await {
        Ok(s) => return Ok(s),
        Err(e) => e.to_string(),
    };
    created_meanwhile(|| async { ctx.get_stream(&name).await.ok() })
        .await
        .ok_or(refused)
}

/// After a create was refused: looks again, for up to half a second, for
/// what another process may have created at the same moment.
pub(crate) async fn created_meanwhile<T, F, Fut>(mut look: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for wait_ms in [20, 100, 400] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        if let Some(found) = look().await {
            return Some(found);
        }
    }
    None
}

async fn open_stream(
    client: &async_nats::Client,
    url: &str,
    d: &Durable,
    reconnects: tokio::sync::watch::Receiver<u64>,
) -> Result<Js, String> {
    if d.subjects.is_empty() || d.subjects.iter().any(|s| !ben_bus::valid_subject(s, true)) {
        return Err(format!(
            "durable subjects {:?}: each must be a NATS subject pattern",
            d.subjects
        ));
    }
    let mut ctx = jetstream::new(client.clone());
    ctx.set_timeout(d.ack_timeout.max(Duration::from_millis(100)));
    let stream = get_or_create_stream(&ctx, jetstream::stream::Config {
            name: d.stream.clone(),
            subjects: d.subjects.clone(),
            max_age: d.max_age,
            max_bytes: d.max_bytes,
            storage: jetstream::stream::StorageType::File,
            discard: jetstream::stream::DiscardPolicy::Old,
            description: Some("Ben's durable control-plane subjects".into()),
            ..Default::default()
        })
    .await
    .map_err(|e| {
            format!(
                "NATS at {url}: cannot open the JetStream stream {} for {:?}: {e} (is JetStream enabled: nats-server -js?)",
                d.stream, d.subjects
            )
        })?;
    Ok(Js {
        ctx,
        stream,
        cfg: d.clone(),
        seen: Mutex::new(HashMap::new()),
        reconnects,
    })
}

fn convert(m: async_nats::Message) -> Message {
    Message {
        subject: m.subject.to_string(),
        payload: m.payload.to_vec(),
        reply: m.reply.map(|r| r.to_string()),
    }
}

fn convert_js(m: &jetstream::Message) -> Message {
    Message {
        subject: m.subject.to_string(),
        payload: m.payload.to_vec(),
        // The reply subject of a stored message is JetStream's ack inbox.
        reply: None,
    }
}

/// Stream sequences a durable reader remembers to drop redeliveries.
const REMEMBERED: usize = 10_000;

/// How long a reading task waits before trying JetStream again.
const RETRY: Duration = Duration::from_millis(200);

impl Js {
    async fn subscribe(
        self: &Arc<Self>,
        pattern: &str,
        queue: Option<&str>,
        queue_len: usize,
    ) -> Result<Subscription, BusError> {
        let (tx, rx) = mpsc::channel(queue_len);
        let name = match (queue, &self.cfg.consumer) {
            (Some(q), _) => Some(format!("{}-{}", name_token(q), self.cfg.tail(pattern))),
            (None, Some(id)) => {
                let key = pattern.to_string();
                let n = {
                    let mut seen = self.seen.lock().map_err(|_| BusError::Closed)?;
                    let n = seen.entry(key).or_insert(0);
                    *n += 1;
                    *n - 1
                };
                Some(format!("{}-{}-{n}", name_token(id), self.cfg.tail(pattern)))
            }
            (None, None) => None,
        };
        let not_stored = |e: &dyn std::fmt::Display| BusError::NotStored {
            subject: pattern.to_string(),
            reason: format!("cannot read it from JetStream: {e}"),
        };
        match name {
            Some(name) => {
                let consumer = self
                    .durable_consumer(&name, pattern)
                    .await
                    .map_err(|e| not_stored(&e))?;
                tokio::spawn(forward_durable(
                    self.clone(),
                    name,
                    pattern.to_string(),
                    consumer,
                    tx,
                ));
            }
            None => {
                let consumer = self
                    .ordered_consumer(pattern, DeliverPolicy::New)
                    .await
                    .map_err(|e| not_stored(&e))?;
                tokio::spawn(forward_ordered(
                    self.clone(),
                    pattern.to_string(),
                    consumer,
                    tx,
                ));
            }
        }
        Ok(Subscription::new(rx))
    }

    async fn durable_consumer(
        &self,
        name: &str,
        pattern: &str,
    ) -> Result<jetstream::consumer::PullConsumer, jetstream::stream::ConsumerError> {
        self.stream
            .get_or_create_consumer(
                name,
                pull::Config {
                    durable_name: Some(name.to_string()),
                    filter_subject: pattern.to_string(),
                    deliver_policy: DeliverPolicy::New,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(10),
                    inactive_threshold: self.cfg.consumer_idle,
                    ..Default::default()
                },
            )
            .await
    }

    async fn ordered_consumer(
        &self,
        pattern: &str,
        from: DeliverPolicy,
    ) -> Result<jetstream::consumer::Consumer<pull::OrderedConfig>, jetstream::stream::ConsumerError>
    {
        self.stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: pattern.to_string(),
                deliver_policy: from,
                ..Default::default()
            })
            .await
    }
}

/// Reads a durable consumer into `tx` until the subscriber drops it,
/// acking each message once handed over; re-attaches after errors (the
/// server keeps the position).
async fn forward_durable(
    js: Arc<Js>,
    name: String,
    pattern: String,
    mut consumer: jetstream::consumer::PullConsumer,
    tx: mpsc::Sender<Message>,
) {
    // Stream sequences handed over lately: an ack lost with a server
    // restart makes the server deliver a message again.
    let mut delivered = std::collections::BTreeSet::new();
    loop {
        let mut conn = js.reconnects.clone();
        conn.borrow_and_update();
        if let Ok(mut msgs) = consumer.messages().await {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    _ = reconnected(&mut conn) => break,
                    m = msgs.next() => m,
                };
                match next {
                    Some(Ok(m)) => {
                        let seq = m.info().map(|i| i.stream_sequence).ok();
                        if seq.is_none_or(|s| !delivered.contains(&s)) {
                            if tx.send(convert_js(&m)).await.is_err() {
                                return;
                            }
                            if let Some(s) = seq {
                                delivered.insert(s);
                                if delivered.len() > REMEMBERED {
                                    delivered.pop_first();
                                }
                            }
                        }
                        let _ = m.ack().await;
                    }
                    // A lost connection, a restarted server, a deleted
                    // consumer: start reading again (the position is kept).
                    Some(Err(_)) | None => break,
                }
            }
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            if let Ok(c) = js.durable_consumer(&name, &pattern).await {
                consumer = c;
                break;
            }
        }
    }
}

/// Reads an ordered consumer into `tx` until the subscriber drops it; if
/// the consumer ends, a new one starts after the last sequence delivered.
async fn forward_ordered(
    js: Arc<Js>,
    pattern: String,
    mut consumer: jetstream::consumer::Consumer<pull::OrderedConfig>,
    tx: mpsc::Sender<Message>,
) {
    let mut last: Option<u64> = None;
    loop {
        let mut conn = js.reconnects.clone();
        conn.borrow_and_update();
        if let Ok(mut msgs) = consumer.messages().await {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    _ = reconnected(&mut conn) => break,
                    m = msgs.next() => m,
                };
                match next {
                    Some(Ok(m)) => {
                        let seq = m.info().map(|i| i.stream_sequence).ok();
                        if last.is_some_and(|l| seq.is_some_and(|s| s <= l)) {
                            continue; // already delivered before a restart
                        }
                        if tx.send(convert_js(&m)).await.is_err() {
                            return;
                        }
                        last = seq.or(last);
                    }
                    // A lost connection, a restarted server, a deleted
                    // consumer: start reading again (the position is kept).
                    Some(Err(_)) | None => break,
                }
            }
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            let from = match last {
                Some(l) => DeliverPolicy::ByStartSequence {
                    start_sequence: l + 1,
                },
                None => DeliverPolicy::New,
            };
            if let Ok(c) = js.ordered_consumer(&pattern, from).await {
                consumer = c;
                break;
            }
        }
    }
}

impl Bus for NatsBus {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        Box::pin(async move {
            if !ben_bus::valid_subject(subject, false) {
                return Err(BusError::Subject(subject.to_string()));
            }
            if let Some(js) = self.js.as_ref().filter(|j| j.cfg.is_durable(subject)) {
                let not_stored = |reason: String| BusError::NotStored {
                    subject: subject.to_string(),
                    reason,
                };
                let ack = js
                    .ctx
                    .publish(subject.to_string(), bytes::Bytes::from(payload))
                    .await
                    .map_err(|e| not_stored(e.to_string()))?;
                ack.await.map_err(|e| not_stored(e.to_string()))?;
                // Stored: whoever reads the stream will get it.
                return Ok(PublishReport {
                    delivered: 1,
                    dropped: 0,
                });
            }
            self.client
                .publish(subject.to_string(), bytes::Bytes::from(payload))
                .await
                .map_err(|_| BusError::Closed)?;
            // NATS does not tell a publisher who received a message.
            Ok(PublishReport {
                delivered: 1,
                dropped: 0,
            })
        })
    }

    fn connected(&self) -> bool {
        self.is_connected()
    }

    fn max_payload(&self) -> Option<usize> {
        Some(self.client.server_info().max_payload)
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(NatsBus::flush(self))
    }

    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(async move {
            if !ben_bus::valid_subject(subject, true) {
                return Err(BusError::Subject(subject.to_string()));
            }
            if let Some(js) = self.js.as_ref().filter(|j| j.cfg.covers(subject)) {
                return js.subscribe(subject, queue, self.queue_len).await;
            }
            let sub = match queue {
                Some(q) => {
                    self.client
                        .queue_subscribe(subject.to_string(), q.to_string())
                        .await
                }
                None => self.client.subscribe(subject.to_string()).await,
            }
            .map_err(|_| BusError::Closed)?;
            // Returned once the server has the interest: what anyone
            // publishes after this reaches the subscription (as on the
            // in-process bus), not only what this connection publishes.
            // While disconnected the client subscribes again when it is
            // back; there is nothing to wait for until then.
            if self.client.connection_state() == async_nats::connection::State::Connected {
                if let Err(e) = core_sub::round_trip(&self.client).await {
                    tracing::warn!(%subject, error = %e, "the server did not confirm a subscription; it is kept (the client renews it on reconnect)");
                }
            }
            let (tx, rx) = mpsc::channel(self.queue_len);
            let js = self.js.clone();
            let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
            // A durable message seen on core NATS (a pattern wider than the
            // durable subjects): its reply subject is the publisher's ack
            // inbox, not a request's.
            let fix = move |m| {
                let mut m = convert(m);
                if js.as_ref().is_some_and(|j| j.cfg.is_durable(&m.subject)) {
                    m.reply = None;
                }
                m
            };
            tokio::spawn(core_sub::forward(
                self.client.clone(),
                sub,
                tx,
                drain_rx,
                self.connects.clone(),
                fix,
            ));
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
            if !ben_bus::valid_subject(subject, false) {
                return Err(BusError::Subject(subject.to_string()));
            }
            let fut = self
                .client
                .request(subject.to_string(), bytes::Bytes::from(payload));
            match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(m)) => Ok(convert(m)),
                Ok(Err(e)) if matches!(e.kind(), async_nats::RequestErrorKind::NoResponders) => {
                    Err(BusError::NoResponders(subject.to_string()))
                }
                Ok(Err(_)) | Err(_) => Err(BusError::Timeout {
                    subject: subject.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_patterns() {
        assert!(covers("p.ben.signal.>", "p.ben.signal.*"));
        assert!(covers("p.ben.signal.>", "p.ben.signal.shop.x"));
        assert!(covers("p.ben.signal.>", "p.ben.signal.>"));
        assert!(!covers("p.ben.signal.>", "p.ben.signal"));
        assert!(!covers("p.ben.signal.>", "p.ben.>"));
        assert!(covers("p.ben.dlq", "p.ben.dlq"));
        assert!(!covers("p.ben.dlq", "p.ben.*"));
        assert!(!covers("p.ben.dlq", "p.ben.dlq.x"));
        assert!(covers("p.*.dlq", "p.ben.dlq"));
        assert!(covers("p.*.dlq", "p.*.dlq"));
        assert!(!covers("p.ben.dlq", "p.*.dlq"));
        let d = Durable::for_prefix("shop-prod", Some("spine-1"));
        assert!(d.covers("shop-prod.ben.intent.ack"));
        assert!(!d.covers("shop-prod.ben.intent.active"));
        assert!(!d.covers("shop-prod.ben.intent.>"));
        assert!(d.is_durable("shop-prod.ben.signal.shop_web"));
        assert!(!d.is_durable("shop-prod.ben.data.spine"));
        assert_eq!(d.tail("shop-prod.ben.signal.*"), "ben_signal_any");
    }

    #[test]
    fn stream_names_are_valid_and_distinct() {
        assert_eq!(Durable::stream_name("shop-prod"), "BEN_shop-prod");
        let (a, b) = (Durable::stream_name("a.b"), Durable::stream_name("a_b"));
        assert_ne!(a, b);
        assert!(a.starts_with("BEN_a_b_") && !a.contains('.'), "{a}");
        assert_eq!(b, "BEN_a_b");
        assert!(Durable::stream_name("").starts_with("BEN__"));
    }
}
