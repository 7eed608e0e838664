//! Dead letters as the operator reads them: every verified dead letter on
//! `ben.dlq` (Ben's) and `ai.dlq.v1` (CyberMesh's), the newest [`KEPT`]
//! kept with their reasons, all counted (by subject, and those that did
//! not verify apart) — behind `GET /api/v1/dlq` and `benctl dlq`.

use ben_bus::Bus;
use ben_wire::{pb, Keyring};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Dead letters kept to read (the count goes on).
pub const KEPT: usize = 1_000;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Letter {
    pub at_ns: i64,
    /// The component that refused the message (the letter's signer).
    pub sender: String,
    /// Where the refused message was going.
    pub subject: String,
    pub reason: String,
    pub size: u64,
    /// The refused message's signing key, when it was an envelope.
    pub key_id: String,
    /// The DLQ it came on.
    pub dlq: String,
}

/// The book (pure).
#[derive(Debug, Default)]
pub struct Book {
    letters: VecDeque<Letter>,
    total: u64,
    unverified: u64,
    by_subject: BTreeMap<String, u64>,
}

impl Book {
    pub fn add(&mut self, l: Letter) {
        self.total += 1;
        *self.by_subject.entry(l.subject.clone()).or_insert(0) += 1;
        self.letters.push_back(l);
        while self.letters.len() > KEPT {
            self.letters.pop_front();
        }
    }

    /// A dead letter that did not verify: counted, never shown as one.
    pub fn unverified(&mut self) {
        self.unverified += 1;
    }

    /// The newest `limit`, newest first, with the counts.
    pub fn view(&self, limit: usize) -> serde_json::Value {
        let letters: Vec<&Letter> = self.letters.iter().rev().take(limit).collect();
        serde_json::json!({
            "total": self.total,
            "unverified": self.unverified,
            "kept": self.letters.len(),
            "by_subject": self.by_subject,
            "letters": letters,
        })
    }
}

/// The book, kept current from the bus.
pub struct Dlq {
    pub book: Mutex<Book>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Dlq {
    /// Subscribes to both dead-letter queues.
    pub async fn start(bus: Arc<dyn Bus>, keyring: Keyring) -> Result<Arc<Dlq>, String> {
        let sub = |s: &'static str| {
            let bus = bus.clone();
            async move {
                bus.subscribe(s, None)
                    .await
                    .map_err(|e| format!("subscribing to {s}: {e}"))
            }
        };
        let mut ben = sub(crate::subjects::DLQ).await?;
        let mut mesh = sub(ben_mesh_wire::DLQ_SUBJECT).await?;
        let dlq = Arc::new(Dlq {
            book: Mutex::default(),
            task: Mutex::default(),
        });
        let d = dlq.clone();
        let task = tokio::spawn(async move {
            loop {
                let (m, on) = tokio::select! {
                    m = ben.next() => (m, crate::subjects::DLQ),
                    m = mesh.next() => (m, ben_mesh_wire::DLQ_SUBJECT),
                };
                let Some(m) = m else { break };
                let opened = ben_wire::open_bytes::<pb::DeadLetter>(&m.payload, &keyring);
                let Ok(mut book) = d.book.lock() else { break };
                match opened {
                    Ok(v) => {
                        let l = v.into_inner();
                        book.add(Letter {
                            at_ns: l.at_ns,
                            sender: l.sender,
                            subject: l.subject,
                            reason: l.reason,
                            size: l.size,
                            key_id: l.key_id,
                            dlq: on.to_string(),
                        });
                    }
                    Err(_) => book.unverified(),
                }
            }
        });
        if let Ok(mut t) = dlq.task.lock() {
            *t = Some(task);
        }
        Ok(dlq)
    }

    pub fn stop(&self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: usize) -> Letter {
        Letter {
            at_ns: n as i64,
            sender: "spine-1".into(),
            subject: if n.is_multiple_of(2) {
                "ben.data.spine"
            } else {
                "ai.anomalies.v1"
            }
            .into(),
            reason: format!("reason {n}"),
            size: 10,
            key_id: String::new(),
            dlq: "ben.dlq".into(),
        }
    }

    /// Bounded, newest first, every letter counted.
    #[test]
    fn the_book_keeps_the_newest_and_counts_all() {
        let mut b = Book::default();
        for n in 0..KEPT + 5 {
            b.add(letter(n));
        }
        b.unverified();
        let v = b.view(3);
        assert_eq!(v["total"], KEPT as u64 + 5);
        assert_eq!(v["unverified"], 1);
        assert_eq!(v["kept"], KEPT);
        assert_eq!(v["letters"][0]["reason"], format!("reason {}", KEPT + 4));
        assert_eq!(v["letters"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            v["by_subject"]["ben.data.spine"],
            (KEPT as u64 + 5).div_ceil(2)
        );
    }
}
