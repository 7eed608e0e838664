//! Dead letters: what could not be processed, where and why, never the
//! value. Signed by the component that writes them (kind `dead_letter`,
//! invariant 8), so a reader of the DLQ can tell them from forgeries.

use crate::{subjects, Deps};
use ben_wire::pb;

impl Deps {
    /// Publishes a signed dead letter: where, why, never the value.
    pub async fn dead_letter(&self, subject: &str, reason: impl Into<String>, size: usize) {
        self.dead_letter_of(subject, reason, size, &[]).await
    }

    /// A dead letter for `bytes` received on `subject` that failed: also
    /// names the refused envelope's key id, when it was an envelope.
    pub async fn dead_letter_of(
        &self,
        subject: &str,
        reason: impl Into<String>,
        size: usize,
        bytes: &[u8],
    ) {
        self.dead_letter_to(subjects::DLQ, subject, reason, size, bytes)
            .await
    }

    /// [`Deps::dead_letter_of`] on the dead-letter subject `dlq` (CyberMesh
    /// keeps its own, `ai.dlq.v1`).
    pub async fn dead_letter_to(
        &self,
        dlq: &str,
        subject: &str,
        reason: impl Into<String>,
        size: usize,
        bytes: &[u8],
    ) {
        use prost::Message as _;
        let key_id = pb::SignedEnvelope::decode(bytes)
            .map(|e| e.key_id.chars().take(64).collect())
            .unwrap_or_default();
        let dl = pb::DeadLetter {
            subject: subject.to_string(),
            reason: reason.into(),
            at_ns: self.clock.now_ns(),
            sender: self.id.clone(),
            size: size as u64,
            key_id,
        };
        tracing::warn!(component = %self.id, subject, reason = %dl.reason, "dead letter");
        // The warning above already told the operator why; a DLQ the bus
        // refuses is said too, never dropped without a word.
        if let Err(e) = self.bus.publish(dlq, self.signer.seal_bytes(&dl)).await {
            tracing::error!(component = %self.id, subject, error = %e, "dead letter not published");
        }
    }
}
