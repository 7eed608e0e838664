//! A component's counters in one shape for both modes: `ben cluster up`
//! reads them from each process's signed metrics, `ben up`'s status line
//! sums them over the kinds it runs. Each kind's `probe` in the component
//! table adds its own counters to one of these.

use serde::{Deserialize, Serialize};

/// The AI service's flows on a status line (both modes), when it dropped,
/// filed late or never got any: ` | AI flows dropped D (windows full),
/// late L, batches missing M`; empty when all are 0.
pub fn ai_flows_status(dropped: u64, late: u64, missing: u64) -> String {
    if dropped + late + missing == 0 {
        return String::new();
    }
    format!(" | AI flows dropped {dropped} (windows full), late {late}, batches missing {missing}")
}

/// One process's counters, as it publishes them (signed) every 500 ms on
/// `ben.metrics.<id>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ComponentMetrics {
    pub id: String,
    pub role: String,
    pub pid: u32,
    /// When this incarnation started (ns since the epoch).
    pub started_ns: i64,
    pub at_ns: i64,
    pub seq: u64,
    /// Records this component handled successfully.
    pub processed: u64,
    pub queue_depth: u64,
    /// The active intent version, if any.
    pub intent: Option<String>,
    /// sidecar: records accepted from apps, rejected, signals delivered.
    pub accepted: u64,
    pub rejected: u64,
    pub signals_delivered: u64,
    /// detector: signals emitted, flags seen.
    pub signals: u64,
    pub flags: u64,
    /// Lucius: observations held, written, dropped (bounded buffer).
    pub stored: u64,
    pub written: u64,
    pub dropped: u64,
    /// Messages the component could not publish after it accepted what
    /// they carry (records, signals, anomalies): counted, never silent.
    pub publish_errors: u64,
    /// Records that arrived in this interval (500 ms), and how old they
    /// were then, µs since the sidecar received them (p50, p99; at most
    /// 19 % high). The sidecar's are its signals' (triggering record →
    /// handed to the app). See `ben_component::age`.
    pub age_n: u64,
    pub age_p50_us: Option<u64>,
    pub age_p99_us: Option<u64>,
    /// CyberMesh validators: the highest committed height, and those
    /// halted because their database does not take their blocks.
    pub chain_height: u64,
    pub halted: Vec<String>,
    /// CyberMesh enforcement: entries held, and whether the circuit
    /// breaker holds policies back.
    pub blocked: u64,
    pub breaker_open: bool,
    /// CyberMesh live sensors: frames captured, and packets the kernel
    /// dropped because the capture ring was full.
    pub captured: u64,
    pub capture_drops: u64,
    /// Captured frames that formed no flow because they did not decode
    /// (truncated, malformed) or the ring's header for them did not fit.
    pub capture_undecodable: u64,
    /// CyberMesh AI service: flows refused because its open windows held
    /// the most allowed, and flows that came after their window had
    /// closed (judged in a later one).
    pub flows_dropped: u64,
    pub flows_late: u64,
    /// Sensors' batches of flows the AI service never got (gaps in their
    /// numbers).
    pub flow_batches_missing: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn ai_flows_show_only_when_something_was_lost_or_late() {
        assert_eq!(super::ai_flows_status(0, 0, 0), "");
        assert_eq!(
            super::ai_flows_status(3, 0, 2),
            " | AI flows dropped 3 (windows full), late 0, batches missing 2"
        );
    }
}
