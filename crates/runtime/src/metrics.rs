//! A component's counters in one shape for both modes: `ben cluster up`
//! reads them from each process's signed metrics, `ben up`'s status line
//! sums them over the kinds it runs. Each kind's `probe` in the component
//! table adds its own counters to one of these.

use ben_component::age::HISTOGRAM_BOUNDS_S;
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
    /// Every record's age since the component started, as a histogram:
    /// cumulative counts at `ben_component::age::HISTOGRAM_BOUNDS_S`, the
    /// count and the sum (seconds).
    pub age_le: Vec<u64>,
    pub age_count: u64,
    pub age_sum_s: f64,
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
    /// The bus client's errors no call returned (`ben_bus::BusErrors`):
    /// publishes the broker did not store, offset commits it refused,
    /// errors consumers met while reading (Kafka).
    pub bus_not_stored: u64,
    pub bus_commit_errors: u64,
    pub bus_read_errors: u64,
    /// Queue group rejoins over partitions no member read (Kafka).
    pub bus_group_rejoins: u64,
}

/// The bus's errors on a status line (both modes), when there are any:
/// ` | bus: N not stored, C offset commits refused, R read errors` (and,
/// when any, `, G group rejoins over unread partitions`).
pub fn bus_status(
    not_stored: u64,
    commit_errors: u64,
    read_errors: u64,
    group_rejoins: u64,
) -> String {
    if not_stored + commit_errors + read_errors + group_rejoins == 0 {
        return String::new();
    }
    let rejoins = match group_rejoins {
        0 => String::new(),
        n => format!(", {n} group rejoins over unread partitions"),
    };
    format!(" | bus: {not_stored} not stored, {commit_errors} offset commits refused, {read_errors} read errors{rejoins}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bus_errors_show_only_when_there_are_some() {
        assert_eq!(super::bus_status(0, 0, 0, 0), "");
        assert_eq!(
            super::bus_status(2, 0, 1, 0),
            " | bus: 2 not stored, 0 offset commits refused, 1 read errors"
        );
        assert_eq!(
            super::bus_status(0, 0, 0, 3),
            " | bus: 0 not stored, 0 offset commits refused, 0 read errors, 3 group rejoins over unread partitions"
        );
    }

    #[test]
    fn ai_flows_show_only_when_something_was_lost_or_late() {
        assert_eq!(super::ai_flows_status(0, 0, 0), "");
        assert_eq!(
            super::ai_flows_status(3, 0, 2),
            " | AI flows dropped 3 (windows full), late 0, batches missing 2"
        );
    }
}

/// One Prometheus metric family: name, help, type, and how to read it.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    read: fn(&ComponentMetrics) -> Option<f64>,
}

const fn counter(
    name: &'static str,
    help: &'static str,
    read: fn(&ComponentMetrics) -> Option<f64>,
) -> Family {
    Family {
        name,
        help,
        counter: true,
        read,
    }
}

const fn gauge(
    name: &'static str,
    help: &'static str,
    read: fn(&ComponentMetrics) -> Option<f64>,
) -> Family {
    Family {
        counter: false,
        ..counter(name, help, read)
    }
}

/// Whether `m` is one instance's (it has an id), not a kind's sum: what
/// every instance keeps (records handled, queue, publish errors) is only
/// said per instance.
fn per_instance(m: &ComponentMetrics) -> bool {
    !m.id.is_empty()
}

/// A counter that only some kinds keep: absent where it is 0.
fn some(v: u64) -> Option<f64> {
    (v > 0).then_some(v as f64)
}

/// What each component's counters become, with conventional names and
/// units (counters end in `_total`, times in seconds).
const FAMILIES: &[Family] = &[
    counter(
        "ben_records_processed_total",
        "Records the component handled.",
        |m| per_instance(m).then_some(m.processed as f64),
    ),
    gauge(
        "ben_queue_depth",
        "Messages waiting for the component.",
        |m| per_instance(m).then_some(m.queue_depth as f64),
    ),
    counter(
        "ben_publish_errors_total",
        "Messages the component could not publish after accepting what they carry.",
        |m| per_instance(m).then_some(m.publish_errors as f64),
    ),
    counter(
        "ben_records_accepted_total",
        "Records the sidecar accepted from apps.",
        |m| some(m.accepted),
    ),
    counter(
        "ben_records_rejected_total",
        "Records the sidecar refused, with the reason sent to the app.",
        |m| some(m.rejected),
    ),
    counter(
        "ben_signals_delivered_total",
        "Signals the sidecar handed to apps.",
        |m| some(m.signals_delivered),
    ),
    counter(
        "ben_signals_emitted_total",
        "Signals detectors emitted.",
        |m| some(m.signals),
    ),
    counter(
        "ben_flags_total",
        "Flags detectors saw set on records.",
        |m| some(m.flags),
    ),
    gauge(
        "ben_lucius_observations",
        "Observations Lucius holds.",
        |m| some(m.stored),
    ),
    counter(
        "ben_lucius_written_total",
        "Observations Lucius wrote.",
        |m| some(m.written),
    ),
    counter(
        "ben_lucius_dropped_total",
        "Observations Lucius dropped because its queue was full.",
        |m| some(m.dropped),
    ),
    gauge(
        "ben_record_age_p50_seconds",
        "Median age of the records that reached the component in the last interval, since the sidecar received them.",
        |m| m.age_p50_us.map(|u| u as f64 / 1e6),
    ),
    gauge(
        "ben_record_age_p99_seconds",
        "99th percentile age of the records that reached the component in the last interval.",
        |m| m.age_p99_us.map(|u| u as f64 / 1e6),
    ),
    gauge(
        "ben_mesh_chain_height",
        "The highest block height the CyberMesh validators committed.",
        |m| some(m.chain_height),
    ),
    gauge(
        "ben_mesh_validators_halted",
        "CyberMesh validators halted because their database does not take their blocks.",
        |m| some(m.halted.len() as u64),
    ),
    gauge(
        "ben_mesh_enforced_entries",
        "Entries the CyberMesh enforcement agent holds.",
        |m| some(m.blocked),
    ),
    gauge(
        "ben_mesh_breaker_open",
        "1 while the enforcement agent's circuit breaker holds policies back.",
        |m| m.breaker_open.then_some(1.0),
    ),
    counter(
        "ben_mesh_frames_captured_total",
        "Frames the CyberMesh sensor captured.",
        |m| some(m.captured),
    ),
    counter(
        "ben_mesh_capture_kernel_drops_total",
        "Packets the kernel dropped because the capture ring was full.",
        |m| some(m.capture_drops),
    ),
    counter(
        "ben_mesh_capture_undecodable_total",
        "Captured frames that did not decode.",
        |m| some(m.capture_undecodable),
    ),
    counter(
        "ben_mesh_flows_dropped_total",
        "Flows the AI service refused because its open windows were full.",
        |m| some(m.flows_dropped),
    ),
    counter(
        "ben_mesh_flows_late_total",
        "Flows that reached the AI service after their window closed.",
        |m| some(m.flows_late),
    ),
    counter(
        "ben_mesh_flow_batches_missing_total",
        "Sensor flow batches the AI service never got.",
        |m| some(m.flow_batches_missing),
    ),
    counter(
        "ben_bus_not_stored_total",
        "Publishes the broker did not store (each also an error to its caller).",
        |m| some(m.bus_not_stored),
    ),
    counter(
        "ben_bus_commit_errors_total",
        "Consumer offset commits the broker refused (those messages come again).",
        |m| some(m.bus_commit_errors),
    ),
    counter(
        "ben_bus_read_errors_total",
        "Errors the bus's consumers met while reading (they go on reading).",
        |m| some(m.bus_read_errors),
    ),
    counter(
        "ben_bus_group_rejoins_total",
        "Times a queue group member left and rejoined its group because partitions stood unread by any member.",
        |m| some(m.bus_group_rejoins),
    ),
];

/// A label value as the text format writes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Components' counters in Prometheus' text exposition format (0.0.4):
/// one family per counter, one sample per component labelled `role` and,
/// when it has one, `component` (its id); `extra` are process-wide
/// samples (name, help, counter or not, value). Families no component
/// reports are left out.
pub fn prometheus(components: &[ComponentMetrics], extra: &[(&str, &str, bool, f64)]) -> String {
    let mut out = String::new();
    // A family's HELP and TYPE lines.
    let header = |out: &mut String, name: &str, help: &str, counter: bool| {
        let kind = if counter { "counter" } else { "gauge" };
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    };
    for f in FAMILIES {
        let samples: Vec<(String, f64)> = components
            .iter()
            .filter_map(|m| {
                let v = (f.read)(m)?;
                let labels = if m.id.is_empty() {
                    format!("role=\"{}\"", label(&m.role))
                } else {
                    format!("component=\"{}\",role=\"{}\"", label(&m.id), label(&m.role))
                };
                Some((labels, v))
            })
            .collect();
        if samples.is_empty() {
            continue;
        }
        header(&mut out, f.name, f.help, f.counter);
        for (labels, v) in samples {
            out.push_str(&format!("{}{{{labels}}} {v}\n", f.name));
        }
    }
    let histograms: Vec<&ComponentMetrics> = components
        .iter()
        .filter(|m| m.age_count > 0 && m.age_le.len() == HISTOGRAM_BOUNDS_S.len())
        .collect();
    if !histograms.is_empty() {
        let name = "ben_record_age_seconds";
        out.push_str(&format!(
            "# HELP {name} How old records were when they reached the component (since the sidecar received them), since it started.\n# TYPE {name} histogram\n"
        ));
        for m in histograms {
            let labels = if m.id.is_empty() {
                format!("role=\"{}\"", label(&m.role))
            } else {
                format!("component=\"{}\",role=\"{}\"", label(&m.id), label(&m.role))
            };
            for (bound, n) in HISTOGRAM_BOUNDS_S.iter().zip(&m.age_le) {
                out.push_str(&format!("{name}_bucket{{{labels},le=\"{bound}\"}} {n}\n"));
            }
            out.push_str(&format!(
                "{name}_bucket{{{labels},le=\"+Inf\"}} {}\n{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}\n",
                m.age_count, m.age_sum_s, m.age_count
            ));
        }
    }
    for (name, help, counter, v) in extra {
        header(&mut out, name, help, *counter);
        out.push_str(&format!("{name} {v}\n"));
    }
    out
}

/// `m`'s age histogram set from `counts` (every record since start).
pub fn set_age_histogram(m: &mut ComponentMetrics, counts: &ben_component::age::AgeCounts) {
    let h = counts.histogram();
    m.age_le = h.le;
    m.age_count = h.count;
    m.age_sum_s = h.sum_s;
}

#[cfg(test)]
mod prometheus_tests {
    use super::*;

    /// The text parses as Prometheus' format, each family once with its
    /// type, each component's sample labelled.
    #[test]
    fn components_render_as_prometheus_text() {
        let ages = ben_component::age::Ages::default();
        ages.record(2_000_000, 7);
        let mut sidecar = ComponentMetrics {
            id: "sidecar-1".into(),
            role: "sidecar".into(),
            accepted: 7,
            processed: 7,
            age_p50_us: Some(1_500),
            ..ComponentMetrics::default()
        };
        set_age_histogram(&mut sidecar, &ages.snapshot());
        let validators = ComponentMetrics {
            role: "validator".into(),
            chain_height: 12,
            halted: vec!["validator-2".into()],
            ..ComponentMetrics::default()
        };
        let text = prometheus(
            &[sidecar, validators],
            &[("ben_dead_letters_total", "Dead letters.", true, 3.0)],
        );
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        let find = |name: &str| {
            scrape
                .samples
                .iter()
                .filter(|s| s.metric == name)
                .collect::<Vec<_>>()
        };
        let acc = find("ben_records_accepted_total");
        assert_eq!(acc.len(), 1, "{text}");
        assert_eq!(acc[0].labels.get("component"), Some("sidecar-1"));
        assert!(matches!(acc[0].value, prometheus_parse::Value::Counter(v) if v == 7.0));
        let h = find("ben_mesh_chain_height");
        assert_eq!(h[0].labels.get("role"), Some("validator"));
        assert_eq!(h[0].labels.get("component"), None);
        assert!(matches!(h[0].value, prometheus_parse::Value::Gauge(v) if v == 12.0));
        assert!(
            matches!(find("ben_record_age_p50_seconds")[0].value, prometheus_parse::Value::Gauge(v) if (v - 0.0015).abs() < 1e-12)
        );
        assert_eq!(find("ben_mesh_validators_halted").len(), 1);
        // The age histogram: seven records of 2 ms, by bound.
        let h = find("ben_record_age_seconds");
        assert_eq!(h.len(), 1, "{text}");
        assert_eq!(h[0].labels.get("component"), Some("sidecar-1"));
        match &h[0].value {
            prometheus_parse::Value::Histogram(b) => {
                let at = |le: f64| b.iter().find(|x| x.less_than == le).map(|x| x.count);
                assert_eq!(at(0.001), Some(0.0));
                assert_eq!(at(0.0025), Some(7.0));
                assert_eq!(at(f64::INFINITY), Some(7.0));
            }
            v => panic!("not a histogram: {v:?}"),
        }
        assert!(
            matches!(find("ben_dead_letters_total")[0].value, prometheus_parse::Value::Counter(v) if v == 3.0)
        );
        // Kinds' counters nobody reported are left out; every family is
        // declared once.
        assert!(find("ben_lucius_written_total").is_empty());
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let names: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(types, names.len(), "{text}");
        // A label value is escaped.
        let odd = ComponentMetrics {
            id: "a\"b\\c".into(),
            role: "spine".into(),
            ..ComponentMetrics::default()
        };
        let t = prometheus(&[odd], &[]);
        assert!(t.contains(r#"component="a\"b\\c""#), "{t}");
    }
}
