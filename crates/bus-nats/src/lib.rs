//! # The bus over NATS
//!
//! [`NatsBus`] implements [`ben_bus::Bus`] on NATS core subjects: the same
//! subject names and wildcards as the in-process bus, queue groups as NATS
//! queue subscriptions, request/reply with NATS inboxes. Components do not
//! change: cluster mode hands them a `NatsBus` instead of an
//! `InProcessBus`.
//!
//! Each subscription is forwarded into a bounded channel (the same
//! `queue_len` setting as the in-process bus); a full channel holds the
//! forwarding task back, and NATS then reports the subscriber as a slow
//! consumer rather than anything being dropped silently here.
//!
//! Not built yet: JetStream streams for the durable subjects (intent,
//! acks, signals, DLQ), KV for the registry, the object store for
//! artifacts. Core NATS delivery is at most once.

use ben_bus::{BoxFuture, Bus, BusError, Message, PublishReport, Subscription};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// e.g. `nats://127.0.0.1:4222`
    pub url: String,
    /// Messages buffered per subscription.
    pub queue_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "nats://127.0.0.1:4222".into(),
            queue_len: 4096,
        }
    }
}

#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    queue_len: usize,
}

impl NatsBus {
    pub async fn connect(cfg: &Config) -> Result<NatsBus, String> {
        let client = async_nats::connect(&cfg.url)
            .await
            .map_err(|e| format!("cannot connect to NATS at {}: {e}", cfg.url))?;
        Ok(NatsBus {
            client,
            queue_len: cfg.queue_len.max(1),
        })
    }

    /// Waits until everything published so far reached the server.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|_| BusError::Closed)
    }
}

fn convert(m: async_nats::Message) -> Message {
    Message {
        subject: m.subject.to_string(),
        payload: m.payload.to_vec(),
        reply: m.reply.map(|r| r.to_string()),
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

    fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        queue: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(async move {
            if !ben_bus::valid_subject(subject, true) {
                return Err(BusError::Subject(subject.to_string()));
            }
            let mut sub = match queue {
                Some(q) => {
                    self.client
                        .queue_subscribe(subject.to_string(), q.to_string())
                        .await
                }
                None => self.client.subscribe(subject.to_string()).await,
            }
            .map_err(|_| BusError::Closed)?;
            let (tx, rx) = mpsc::channel(self.queue_len);
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if tx.send(convert(m)).await.is_err() {
                        break; // the component dropped its subscription
                    }
                }
                let _ = sub.unsubscribe().await;
            });
            Ok(Subscription { rx })
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
