//! # CyberMesh on Kafka
//!
//! Seed 002 makes Kafka the bus of CyberMesh. This crate carries the eight
//! CyberMesh topics ([`TOPICS`]) on a Kafka cluster through `rdkafka`
//! (librdkafka built from the crate's bundled sources: Debian's is too old
//! for current brokers), behind the same [`Bus`] trait every component
//! uses; [`Split`] sends those topics to Kafka and every other subject
//! (heartbeats, intent, flows, queries) to the bus it wraps, so a component
//! does not know which broker carries what.
//!
//! * **Producer**: idempotent, `acks=all`; `publish` returns once the
//!   broker stored the message, and a message the broker did not take
//!   within [`Config::delivery_timeout`] is an error the caller sees
//!   ([`BusError::NotStored`]), never a silent loss. `publish_keyed` keys a
//!   message so that the order of one key's messages holds (one
//!   partition): the AI service keys anomalies and evidence by source and
//!   requests by target, each validator its announcements by its id, an
//!   agent its acks by its id.
//! * **Consumers**: each subscription is a consumer of its own whose
//!   offsets are committed only for messages handled (see
//!   [`ben_bus::Subscription::with_handled`]: a message counts as handled
//!   when the component asks for the next one), every
//!   [`COMMIT_EVERY`] and when the subscription ends: at least once
//!   (duplicates are harmless: anomaly ids and policy ids). A plain
//!   subscription (no queue group) of a component named by
//!   [`Config::member`] takes every partition under a group named by the
//!   component, the topic and the subscription's rank in the process, so a
//!   restarted process resumes where it stopped; it starts at the end of
//!   each partition the first time (what is published after `subscribe`
//!   returned is delivered, as on NATS). A subscription in a queue group
//!   joins the Kafka consumer group of that name: partitions are shared
//!   among the members and a member that dies has its partitions taken over
//!   (a new group starts at the oldest message the broker keeps). Each
//!   member also watches the partitions it does not hold: one that no
//!   member reads (messages wait, the group's offset stands still for two
//!   session timeouts) is said, counted ([`Counters::group_rejoins`]) and
//!   mended by rejoining the group as a new member (tansu 0.6.0 keeps a
//!   dead member's partitions unassigned otherwise).
//! * **Topics** are created on connect when missing, with
//!   [`Config::partitions`], [`Config::replication`] and the topic's
//!   `max.message.bytes` set explicitly to [`Config::max_message_bytes`]
//!   (1 MiB: the seed's evidence messages go up to 512 KB); the producer's
//!   and consumers' limits follow it. A topic that exists already is used
//!   as it is, unless its `max.message.bytes` is smaller than
//!   [`Config::max_message_bytes`]: then connecting fails, naming the
//!   topic, both sizes and what to change.

mod consume;
#[cfg(feature = "test-support")]
pub mod testing;

use ben_bus::{BoxFuture, Bus, BusError, Message, PublishReport, Subscription};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The CyberMesh topics, as seed 002 names them.
pub const TOPICS: [&str; 8] = [
    "ai.anomalies.v1",
    "ai.evidence.v1",
    "ai.policy.v1",
    "control.commits.v1",
    "control.policy.v1",
    "control.reputation.v1",
    "control.policy.ack.v1",
    "ai.dlq.v1",
];

/// How often a consumer commits the offsets of what was handled.
pub const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Where and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Put before every topic name (empty: the seed's names exactly); two
    /// Ben clusters sharing one Kafka set different ones.
    pub topic_prefix: String,
    /// Partitions of a topic this creates.
    pub partitions: i32,
    /// Replication factor of a topic this creates.
    pub replication: i32,
    /// The largest message, on the topics this creates and in the clients.
    pub max_message_bytes: usize,
    /// The component this process is: its plain subscriptions' consumer
    /// groups are named by it and resume after a restart. `None` (an
    /// observer): groups of its own each time, starting at the end.
    pub member: Option<String>,
    /// How long the producer tries to store a message before the publish
    /// fails.
    pub delivery_timeout: Duration,
    /// How long a consumer may be silent before its group gives its
    /// partitions to another member.
    pub session_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            partitions: 3,
            replication: 1,
            max_message_bytes: 1 << 20,
            member: None,
            delivery_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters a process can show.
#[derive(Debug, Default)]
pub struct Counters {
    /// Publishes the broker did not store (returned as errors).
    pub not_stored: AtomicU64,
    /// Offset commits the broker refused (the messages come again).
    pub commit_errors: AtomicU64,
    /// Errors a consumer met while reading (it goes on reading).
    pub read_errors: AtomicU64,
    /// Times a queue group member left and rejoined its group because
    /// partitions stood unread (see `consume::watch`).
    pub group_rejoins: AtomicU64,
}

/// The CyberMesh topics on Kafka. Subjects that are not among them are
/// refused (see [`Split`] for a bus that carries everything).
pub struct KafkaBus {
    cfg: Config,
    producer: FutureProducer,
    /// Plain subscriptions made so far, per topic (their groups' names).
    ranks: Mutex<BTreeMap<String, u32>>,
    /// A random name for an observer's groups.
    observer: String,
    counters: Arc<Counters>,
}

impl KafkaBus {
    /// Connects: makes the producer and creates the topics that are
    /// missing. An unreachable broker is an error naming it.
    pub async fn connect(cfg: Config) -> Result<KafkaBus, String> {
        if cfg.partitions < 1 || cfg.replication < 1 {
            return Err(format!(
                "Kafka: partitions ({}) and replication ({}) must be at least 1",
                cfg.partitions, cfg.replication
            ));
        }
        if cfg.max_message_bytes < 1024 {
            return Err(format!(
                "Kafka: max_message_bytes {} is too small (at least 1024)",
                cfg.max_message_bytes
            ));
        }
        let producer: FutureProducer = client(&cfg)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                cfg.delivery_timeout.as_millis().to_string(),
            )
            .set("message.max.bytes", message_max(&cfg).to_string())
            .create()
            .map_err(|e| format!("Kafka producer for {}: {e}", cfg.brokers))?;
        ensure_topics(&cfg).await?;
        let mut raw = [0u8; 8];
        getrandom::getrandom(&mut raw).map_err(|e| format!("randomness: {e}"))?;
        Ok(KafkaBus {
            cfg,
            producer,
            ranks: Mutex::default(),
            observer: hex::encode(raw),
            counters: Arc::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Whether `subject` is one of the topics this carries.
    pub fn carries(&self, subject: &str) -> bool {
        TOPICS.contains(&subject)
    }

    /// The Kafka topic of a subject.
    pub fn topic(&self, subject: &str) -> String {
        format!("{}{subject}", self.cfg.topic_prefix)
    }

    fn refuse(&self, subject: &str) -> BusError {
        BusError::Unsupported(format!(
            "`{subject}` is not one of the CyberMesh topics carried on Kafka ({})",
            TOPICS.join(", ")
        ))
    }

    async fn produce(
        &self,
        subject: &str,
        key: Option<&[u8]>,
        payload: Vec<u8>,
    ) -> Result<PublishReport, BusError> {
        if !self.carries(subject) {
            return Err(self.refuse(subject));
        }
        let not_stored = |reason: String| {
            self.counters.not_stored.fetch_add(1, Ordering::Relaxed);
            BusError::NotStored {
                subject: subject.to_string(),
                reason,
            }
        };
        if payload.len() > self.cfg.max_message_bytes {
            return Err(not_stored(format!(
                "{} bytes, over the {} a message may have (max_message_bytes)",
                payload.len(),
                self.cfg.max_message_bytes
            )));
        }
        let topic = self.topic(subject);
        let mut rec = FutureRecord::<[u8], [u8]>::to(&topic).payload(&payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        match self
            .producer
            .send(rec, Timeout::After(self.cfg.delivery_timeout))
            .await
        {
            Ok(_) => Ok(PublishReport {
                delivered: 1,
                dropped: 0,
            }),
            Err((e, _)) => Err(not_stored(format!("Kafka at {}: {e}", self.cfg.brokers))),
        }
    }

    /// The consumer group of a subscription.
    fn group(&self, topic: &str, queue: Option<&str>) -> String {
        if let Some(q) = queue {
            return format!("ben.queue.{q}.{topic}");
        }
        let rank = {
            let mut r = self.ranks.lock().unwrap_or_else(|p| p.into_inner());
            let n = r.entry(topic.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        match &self.cfg.member {
            Some(m) => format!("ben.member.{m}.{topic}.{rank}"),
            None => format!("ben.observer.{}.{topic}.{rank}", self.observer),
        }
    }
}

/// The settings every client of this crate shares.
fn client(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000");
    c
}

/// A client's request limit: a message and its batch framing.
fn message_max(cfg: &Config) -> usize {
    cfg.max_message_bytes + 64 * 1024
}

/// Creates the topics that are missing; one that exists is left as it is,
/// but must take messages as large as [`Config::max_message_bytes`] (an
/// existing topic with a smaller `max.message.bytes` would refuse the
/// seed's large evidence messages at run time: refused here, at start,
/// with what to change).
async fn ensure_topics(cfg: &Config) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client(cfg)
        .create()
        .map_err(|e| format!("Kafka admin client for {}: {e}", cfg.brokers))?;
    let names: Vec<String> = TOPICS
        .iter()
        .map(|t| format!("{}{t}", cfg.topic_prefix))
        .collect();
    let max = cfg.max_message_bytes.to_string();
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            NewTopic::new(n, cfg.partitions, TopicReplication::Fixed(cfg.replication))
                .set("max.message.bytes", &max)
        })
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&new, &opts).await.map_err(|e| {
        format!(
            "Kafka at {}: creating the CyberMesh topics: {e} (is the broker up?)",
            cfg.brokers
        )
    })?;
    let mut existing = Vec::new();
    for r in results {
        match r {
            Ok(_) => {}
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(name),
            Err((name, e)) => {
                return Err(format!(
                    "Kafka at {}: creating topic `{name}`: {e}",
                    cfg.brokers
                ))
            }
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let specs: Vec<ResourceSpecifier<'_>> = existing
        .iter()
        .map(|n| ResourceSpecifier::Topic(n))
        .collect();
    let described = admin.describe_configs(&specs, &opts).await.map_err(|e| {
        format!(
            "Kafka at {}: reading the existing CyberMesh topics' settings: {e}",
            cfg.brokers
        )
    })?;
    for (name, r) in existing.iter().zip(described) {
        let limit = match r {
            Ok(res) => res
                .get("max.message.bytes")
                .and_then(|e| e.value.as_deref())
                .map(str::to_string),
            Err(e) => {
                return Err(format!(
                    "Kafka at {}: reading the settings of topic `{name}`: {e}",
                    cfg.brokers
                ))
            }
        };
        check_limit(name, limit.as_deref(), cfg.max_message_bytes)?;
    }
    Ok(())
}

/// An existing topic's `max.message.bytes` against the largest message Ben
/// sends on it. A broker that reports none (tansu, for a topic created
/// without it) is taken at its word.
fn check_limit(topic: &str, limit: Option<&str>, need: usize) -> Result<(), String> {
    let Some(v) = limit else {
        tracing::debug!(topic, "Kafka topic reports no max.message.bytes");
        return Ok(());
    };
    match v.trim().parse::<u64>() {
        Ok(have) if have >= need as u64 => Ok(()),
        Ok(have) => Err(format!(
            "Kafka topic `{topic}` exists with max.message.bytes = {have}, under the {need} bytes Ben sends on it (evidence messages go up to 512 KB): raise the topic's max.message.bytes to at least {need}, or lower [bus] max_message_bytes"
        )),
        Err(_) => Err(format!(
            "Kafka topic `{topic}` reports max.message.bytes = `{v}`, not a number of bytes: fix the topic's setting"
        )),
    }
}

impl Bus for KafkaBus {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        Box::pin(self.produce(subject, None, payload))
    }

    fn publish_keyed<'a>(
        &'a self,
        subject: &'a str,
        key: &'a [u8],
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        Box::pin(self.produce(subject, Some(key), payload))
    }

    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(async move {
            if !self.carries(subject) {
                return Err(self.refuse(subject));
            }
            let topic = self.topic(subject);
            let group = self.group(&topic, queue);
            consume::subscribe(consume::Spec {
                cfg: &self.cfg,
                subject,
                topic,
                group,
                shared: queue.is_some(),
                commit: queue.is_some() || self.cfg.member.is_some(),
                counters: self.counters.clone(),
            })
            .await
        })
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        _payload: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, BusError>> {
        Box::pin(async move {
            Err(BusError::Unsupported(format!(
                "request/reply on `{subject}`: the Kafka topics carry no requests"
            )))
        })
    }

    fn max_payload(&self) -> Option<usize> {
        Some(self.cfg.max_message_bytes)
    }

    fn errors(&self) -> ben_bus::BusErrors {
        let c = &self.counters;
        ben_bus::BusErrors {
            not_stored: c.not_stored.load(Ordering::Relaxed),
            commit_errors: c.commit_errors.load(Ordering::Relaxed),
            read_errors: c.read_errors.load(Ordering::Relaxed),
            group_rejoins: c.group_rejoins.load(Ordering::Relaxed),
        }
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let p = self.producer.clone();
            let t = self.cfg.delivery_timeout;
            tokio::task::spawn_blocking(move || p.flush(Timeout::After(t)))
                .await
                .map_err(|_| BusError::Closed)?
                .map_err(|e| BusError::NotStored {
                    subject: "(flush)".into(),
                    reason: e.to_string(),
                })
        })
    }
}

/// The CyberMesh topics on Kafka, every other subject on `rest`.
pub struct Split {
    kafka: Arc<KafkaBus>,
    rest: Arc<dyn Bus>,
}

impl Split {
    pub fn new(kafka: Arc<KafkaBus>, rest: Arc<dyn Bus>) -> Split {
        Split { kafka, rest }
    }

    pub fn kafka(&self) -> &Arc<KafkaBus> {
        &self.kafka
    }

    /// The bus that carries `subject`.
    fn of(&self, subject: &str) -> &dyn Bus {
        if self.kafka.carries(subject) {
            self.kafka.as_ref()
        } else {
            self.rest.as_ref()
        }
    }

    /// A wildcard that would take a Kafka topic's messages from the other
    /// bus, where they never are: refused, naming the topic.
    fn check_pattern(&self, pattern: &str) -> Result<(), BusError> {
        match TOPICS.iter().find(|t| ben_bus::matches(pattern, t)) {
            Some(t) if pattern != *t => Err(BusError::Unsupported(format!(
                "`{pattern}` would match `{t}`, which is carried on Kafka: subscribe to it by its name"
            ))),
            _ => Ok(()),
        }
    }
}

impl Bus for Split {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        self.of(subject).publish(subject, payload)
    }

    fn publish_keyed<'a>(
        &'a self,
        subject: &'a str,
        key: &'a [u8],
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<PublishReport, BusError>> {
        self.of(subject).publish_keyed(subject, key, payload)
    }

    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        if self.kafka.carries(subject) {
            return self.kafka.subscribe(subject, queue);
        }
        if let Err(e) = self.check_pattern(subject) {
            return Box::pin(async move { Err(e) });
        }
        self.rest.subscribe(subject, queue)
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, BusError>> {
        self.of(subject).request(subject, payload, timeout)
    }

    fn reply<'a>(
        &'a self,
        to: &'a Message,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        self.rest.reply(to, payload)
    }

    fn connected(&self) -> bool {
        self.rest.connected()
    }

    /// The smaller of the two: a producer sizing its messages by it fits
    /// on either.
    fn errors(&self) -> ben_bus::BusErrors {
        self.kafka.errors() + self.rest.errors()
    }

    fn max_payload(&self) -> Option<usize> {
        let k = self.kafka.max_payload();
        match (k, self.rest.max_payload()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.kafka.flush().await?;
            self.rest.flush().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The topics are the subjects the CyberMesh components use, each once.
    #[test]
    fn the_eight_topics_are_the_mesh_subjects() {
        let used = [
            ben_mesh_detect::wire::ANOMALIES_SUBJECT,
            ben_mesh_detect::wire::EVIDENCE_SUBJECT,
            ben_mesh_wire::POLICY_REQUEST_SUBJECT,
            ben_mesh_wire::COMMITS_SUBJECT,
            ben_mesh_wire::POLICY_SUBJECT,
            ben_mesh_wire::REPUTATION_SUBJECT,
            ben_mesh_wire::ACK_SUBJECT,
            ben_mesh_wire::DLQ_SUBJECT,
        ];
        let topics: std::collections::BTreeSet<&str> = TOPICS.into_iter().collect();
        assert_eq!(
            topics,
            used.into_iter().collect(),
            "TOPICS and the subjects differ"
        );
        for t in TOPICS {
            assert!(ben_bus::valid_subject(t, false), "{t}");
        }
    }

    #[test]
    fn an_existing_topic_must_take_the_largest_message() {
        assert!(check_limit("t", Some("1048576"), 1 << 20).is_ok());
        assert!(check_limit("t", Some(" 2000000 "), 1 << 20).is_ok());
        assert!(check_limit("t", None, 1 << 20).is_ok());
        let e = check_limit("ai.evidence.v1", Some("1000012"), 1 << 20).unwrap_err();
        assert!(
            e.contains("`ai.evidence.v1`") && e.contains("1000012") && e.contains("1048576"),
            "{e}"
        );
        let e = check_limit("t", Some("big"), 1 << 20).unwrap_err();
        assert!(e.contains("`big`"), "{e}");
    }
}
