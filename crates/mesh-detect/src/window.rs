//! Per-source window statistics: what one source did in one window.
//!
//! Floods and scans are made of flows that can each look harmless; what
//! gives them away is how many there are, how many ports they touch and how
//! empty they are. [`SourceStats`] holds those aggregates for one source
//! over one window; the rules and math engines read them by name
//! (`src.flows`, `src.distinct_dst_ports`, …; see [`SourceMetric`]).

use crate::flow::{FlowRecord, FlowTable};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Where the semantic columns the engines need live in a [`FlowTable`].
/// Each is optional: a missing column makes the metrics built on it zero.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowColumns {
    /// Flow duration (µs).
    pub duration: Option<usize>,
    /// Forward (initiator → responder) packets.
    pub fwd_packets: Option<usize>,
    /// Backward packets.
    pub bwd_packets: Option<usize>,
    /// Forward payload bytes.
    pub fwd_bytes: Option<usize>,
    /// Backward payload bytes.
    pub bwd_bytes: Option<usize>,
    /// SYN flags seen.
    pub syn: Option<usize>,
    /// ACK flags seen.
    pub ack: Option<usize>,
    /// RST flags seen.
    pub rst: Option<usize>,
}

impl FlowColumns {
    /// Finds the columns by their usual CICFlowMeter names and variants.
    pub fn resolve(table: &FlowTable) -> Self {
        Self {
            duration: table.feature_index(&["flow_duration", "duration"]),
            fwd_packets: table.feature_index(&[
                "total_fwd_packets",
                "tot_fwd_pkts",
                "total_fwd_pkts",
                "fwd_packets",
            ]),
            bwd_packets: table.feature_index(&[
                "total_backward_packets",
                "total_bwd_packets",
                "tot_bwd_pkts",
                "total_bwd_pkts",
                "bwd_packets",
            ]),
            fwd_bytes: table.feature_index(&[
                "total_length_of_fwd_packets",
                "totlen_fwd_pkts",
                "total_fwd_bytes",
                "fwd_bytes",
                "total_length_fwd_packets",
            ]),
            bwd_bytes: table.feature_index(&[
                "total_length_of_bwd_packets",
                "totlen_bwd_pkts",
                "total_bwd_bytes",
                "bwd_bytes",
                "total_length_bwd_packets",
            ]),
            syn: table.feature_index(&["syn_flag_count", "syn_flag_cnt", "syn_count"]),
            ack: table.feature_index(&["ack_flag_count", "ack_flag_cnt", "ack_count"]),
            rst: table.feature_index(&["rst_flag_count", "rst_flag_cnt", "rst_count"]),
        }
    }

    #[inline]
    fn get(idx: Option<usize>, flow: &FlowRecord) -> f64 {
        match idx.and_then(|i| flow.features.get(i)) {
            Some(v) if v.is_finite() => *v,
            _ => 0.0,
        }
    }

    /// Payload bytes in both directions.
    pub fn payload(&self, f: &FlowRecord) -> f64 {
        Self::get(self.fwd_bytes, f) + Self::get(self.bwd_bytes, f)
    }
}

/// Named per-source window metrics, as rules and baselines spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceMetric {
    /// Flows started by the source in the window.
    Flows,
    /// Flows per second of window.
    FlowsPerSec,
    /// Distinct destination ports.
    DistinctDstPorts,
    /// Distinct destination addresses.
    DistinctDstIps,
    /// Share of flows with no payload in either direction.
    EmptyRatio,
    /// Share of flows with a SYN and no data exchanged (half-open / refused).
    SynOnlyRatio,
    /// Forward packets per second of window.
    FwdPacketsPerSec,
    /// Mean forward payload per forward packet.
    MeanFwdPayload,
    /// Most flows to one (destination, port).
    MaxFlowsToOnePort,
    /// Flows to the rule file's authentication ports.
    AuthFlows,
    /// Flows to one authentication (destination, port), at most.
    MaxAuthFlowsToOnePort,
    /// Mean flow duration (seconds).
    MeanDurationSecs,
    /// Forward payload bytes.
    FwdBytes,
    /// Backward payload bytes.
    BwdBytes,
    /// Largest forward payload of one flow.
    MaxFlowFwdBytes,
    /// Forward share of all payload bytes.
    UploadRatio,
    /// Share of flows that got no packet back (probes nothing answered,
    /// payload or not).
    UnansweredRatio,
}

impl SourceMetric {
    /// Every metric, in a fixed order.
    pub const ALL: [SourceMetric; 17] = [
        Self::Flows,
        Self::FlowsPerSec,
        Self::DistinctDstPorts,
        Self::DistinctDstIps,
        Self::EmptyRatio,
        Self::SynOnlyRatio,
        Self::FwdPacketsPerSec,
        Self::MeanFwdPayload,
        Self::MaxFlowsToOnePort,
        Self::AuthFlows,
        Self::MaxAuthFlowsToOnePort,
        Self::MeanDurationSecs,
        Self::FwdBytes,
        Self::BwdBytes,
        Self::MaxFlowFwdBytes,
        Self::UploadRatio,
        Self::UnansweredRatio,
    ];

    /// The name used in rule and baseline files (without the `src.` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Self::Flows => "flows",
            Self::FlowsPerSec => "flows_per_sec",
            Self::DistinctDstPorts => "distinct_dst_ports",
            Self::DistinctDstIps => "distinct_dst_ips",
            Self::EmptyRatio => "empty_ratio",
            Self::SynOnlyRatio => "syn_only_ratio",
            Self::FwdPacketsPerSec => "fwd_packets_per_sec",
            Self::MeanFwdPayload => "mean_fwd_payload",
            Self::MaxFlowsToOnePort => "max_flows_to_one_port",
            Self::AuthFlows => "auth_flows",
            Self::MaxAuthFlowsToOnePort => "max_auth_flows_to_one_port",
            Self::MeanDurationSecs => "mean_duration_secs",
            Self::FwdBytes => "fwd_bytes",
            Self::BwdBytes => "bwd_bytes",
            Self::MaxFlowFwdBytes => "max_flow_fwd_bytes",
            Self::UploadRatio => "upload_ratio",
            Self::UnansweredRatio => "unanswered_ratio",
        }
    }

    /// Looks a metric up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Aggregates of one source over one window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceStats {
    values: [f64; 17],
}

impl SourceStats {
    /// The value of a metric.
    #[inline]
    pub fn get(&self, m: SourceMetric) -> f64 {
        self.values[m as usize]
    }

    /// Computes the stats of every source among `flows` (one window).
    /// `auth_ports` are the ports whose repeated connections count as
    /// authentication attempts.
    pub fn by_source<'a>(
        flows: impl IntoIterator<Item = &'a FlowRecord>,
        cols: &FlowColumns,
        window_secs: f64,
        auth_ports: &[u16],
    ) -> HashMap<IpAddr, SourceStats> {
        #[derive(Default)]
        struct Acc {
            flows: f64,
            ports: HashSet<u16>,
            ips: HashSet<IpAddr>,
            empty: f64,
            syn_only: f64,
            fwd_pkts: f64,
            per_port: HashMap<(IpAddr, u16), f64>,
            auth: f64,
            duration_us: f64,
            fwd_bytes: f64,
            bwd_bytes: f64,
            max_fwd: f64,
            unanswered: f64,
        }
        let mut acc: HashMap<IpAddr, Acc> = HashMap::new();
        for f in flows {
            let a = acc.entry(f.endpoints.src_ip).or_default();
            let e = &f.endpoints;
            a.flows += 1.0;
            a.ports.insert(e.dst_port);
            a.ips.insert(e.dst_ip);
            let fwd = FlowColumns::get(cols.fwd_bytes, f);
            let bwd = FlowColumns::get(cols.bwd_bytes, f);
            if fwd + bwd <= 0.0 {
                a.empty += 1.0;
                if FlowColumns::get(cols.syn, f) > 0.0 || e.protocol != 6 {
                    a.syn_only += 1.0;
                }
            }
            a.fwd_pkts += FlowColumns::get(cols.fwd_packets, f);
            if cols.bwd_packets.is_some() && FlowColumns::get(cols.bwd_packets, f) <= 0.0 {
                a.unanswered += 1.0;
            }
            *a.per_port.entry((e.dst_ip, e.dst_port)).or_default() += 1.0;
            if auth_ports.contains(&e.dst_port) {
                a.auth += 1.0;
            }
            a.duration_us += FlowColumns::get(cols.duration, f);
            a.fwd_bytes += fwd;
            a.bwd_bytes += bwd;
            a.max_fwd = a.max_fwd.max(fwd);
        }
        let w = window_secs.max(1e-3);
        acc.into_iter()
            .map(|(ip, a)| {
                let n = a.flows.max(1.0);
                let max_port = a.per_port.values().copied().fold(0.0, f64::max);
                let max_auth = a
                    .per_port
                    .iter()
                    .filter(|((_, p), _)| auth_ports.contains(p))
                    .map(|(_, c)| *c)
                    .fold(0.0, f64::max);
                let total = a.fwd_bytes + a.bwd_bytes;
                let mut s = SourceStats::default();
                let mut set = |m: SourceMetric, v: f64| s.values[m as usize] = v;
                set(SourceMetric::Flows, a.flows);
                set(SourceMetric::FlowsPerSec, a.flows / w);
                set(SourceMetric::DistinctDstPorts, a.ports.len() as f64);
                set(SourceMetric::DistinctDstIps, a.ips.len() as f64);
                set(SourceMetric::EmptyRatio, a.empty / n);
                set(SourceMetric::SynOnlyRatio, a.syn_only / n);
                set(SourceMetric::FwdPacketsPerSec, a.fwd_pkts / w);
                set(
                    SourceMetric::MeanFwdPayload,
                    if a.fwd_pkts > 0.0 {
                        a.fwd_bytes / a.fwd_pkts
                    } else {
                        0.0
                    },
                );
                set(SourceMetric::MaxFlowsToOnePort, max_port);
                set(SourceMetric::AuthFlows, a.auth);
                set(SourceMetric::MaxAuthFlowsToOnePort, max_auth);
                set(SourceMetric::MeanDurationSecs, a.duration_us / n / 1e6);
                set(SourceMetric::FwdBytes, a.fwd_bytes);
                set(SourceMetric::BwdBytes, a.bwd_bytes);
                set(SourceMetric::MaxFlowFwdBytes, a.max_fwd);
                set(
                    SourceMetric::UploadRatio,
                    if total > 0.0 {
                        a.fwd_bytes / total
                    } else {
                        0.0
                    },
                );
                set(SourceMetric::UnansweredRatio, a.unanswered / n);
                (ip, s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip() {
        for m in SourceMetric::ALL {
            assert_eq!(SourceMetric::from_name(m.name()), Some(m));
        }
        assert_eq!(SourceMetric::from_name("nope"), None);
    }

    #[test]
    fn stats_count_ports_and_emptiness() {
        let t = FlowTable::from_csv(
            "src_ip,dst_ip,dst_port,protocol,ts,total_fwd_packets,total_length_of_fwd_packets,total_length_of_bwd_packets,syn_flag_count\n\
             10.0.0.1,10.0.0.9,22,6,1,1,0,0,1\n\
             10.0.0.1,10.0.0.9,23,6,1,1,0,0,1\n\
             10.0.0.1,10.0.0.9,22,6,2,5,300,100,1\n\
             10.0.0.2,10.0.0.9,80,6,2,4,50,5000,1\n",
        )
        .unwrap();
        let cols = FlowColumns::resolve(&t);
        let s = SourceStats::by_source(&t.flows, &cols, 10.0, &[22]);
        let a = &s[&"10.0.0.1".parse::<IpAddr>().unwrap()];
        assert_eq!(a.get(SourceMetric::Flows), 3.0);
        assert_eq!(a.get(SourceMetric::DistinctDstPorts), 2.0);
        assert!((a.get(SourceMetric::EmptyRatio) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.get(SourceMetric::AuthFlows), 2.0);
        assert_eq!(a.get(SourceMetric::MaxAuthFlowsToOnePort), 2.0);
        assert_eq!(a.get(SourceMetric::FwdPacketsPerSec), 0.7);
        assert_eq!(a.get(SourceMetric::UploadRatio), 0.75);
        // no backward packet column: nothing counts as unanswered
        assert_eq!(a.get(SourceMetric::UnansweredRatio), 0.0);
        let b = &s[&"10.0.0.2".parse::<IpAddr>().unwrap()];
        assert_eq!(b.get(SourceMetric::EmptyRatio), 0.0);
        assert_eq!(b.get(SourceMetric::MaxFlowFwdBytes), 50.0);
    }

    #[test]
    fn unanswered_probes_count_whatever_their_payload() {
        // a UDP probe with a payload and no answer, one without, one answered
        let t = FlowTable::from_csv(
            "src_ip,dst_ip,dst_port,protocol,ts,total_fwd_packets,total_backward_packets,total_length_of_fwd_packets,total_length_of_bwd_packets\n\
             10.0.0.1,10.0.0.9,1001,17,1,1,0,72,0\n\
             10.0.0.1,10.0.0.9,1002,17,1,1,0,0,0\n\
             10.0.0.1,10.0.0.9,53,17,1,1,1,40,90\n",
        )
        .unwrap();
        let cols = FlowColumns::resolve(&t);
        let s = SourceStats::by_source(&t.flows, &cols, 10.0, &[]);
        let a = &s[&"10.0.0.1".parse::<IpAddr>().unwrap()];
        assert!((a.get(SourceMetric::UnansweredRatio) - 2.0 / 3.0).abs() < 1e-12);
        assert!((a.get(SourceMetric::EmptyRatio) - 1.0 / 3.0).abs() < 1e-12);
    }
}
