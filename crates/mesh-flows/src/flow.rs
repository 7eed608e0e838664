//! One bidirectional flow's running state, and its features when it ends.

use crate::decode::{proto, tcp_flags, Addr, Packet};
use crate::features::{Feature, Features, FEATURE_COUNT};
use crate::table::Config;

/// Running count / mean / variance (Welford), min, max and sum, in O(1)
/// memory.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Running {
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    sum: f64,
}

impl Running {
    #[inline]
    pub(crate) fn push(&mut self, x: f64) {
        if self.n == 0 {
            self.min = x;
            self.max = x;
        } else {
            if x < self.min {
                self.min = x;
            }
            if x > self.max {
                self.max = x;
            }
        }
        self.n += 1;
        self.sum += x;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub(crate) fn count(&self) -> u64 {
        self.n
    }
    pub(crate) fn sum(&self) -> f64 {
        self.sum
    }
    pub(crate) fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.mean
        }
    }
    pub(crate) fn min(&self) -> f64 {
        self.min
    }
    pub(crate) fn max(&self) -> f64 {
        self.max
    }
    /// Sample variance (n − 1), 0 below two values.
    pub(crate) fn var(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).max(0.0)
        }
    }
    pub(crate) fn std(&self) -> f64 {
        self.var().sqrt()
    }
}

/// Bulk detection for one direction: a bulk is a run of at least
/// `BULK_MIN_PACKETS` data packets in this direction, with no data packet in
/// the other direction between them and no gap above `Config::bulk_gap`.
#[derive(Clone, Copy, Debug, Default)]
struct Bulk {
    run_start: u64,
    run_last: u64,
    run_packets: u64,
    run_bytes: u64,
    bulks: u64,
    packets: u64,
    bytes: u64,
    duration_ns: u64,
}

const BULK_MIN_PACKETS: u64 = 4;

impl Bulk {
    #[inline]
    fn close_run(&mut self) {
        if self.run_packets >= BULK_MIN_PACKETS {
            self.bulks += 1;
            self.packets += self.run_packets;
            self.bytes += self.run_bytes;
            self.duration_ns += self.run_last.saturating_sub(self.run_start);
        }
        self.run_packets = 0;
        self.run_bytes = 0;
    }

    #[inline]
    fn data_packet(&mut self, ts: u64, bytes: u64, gap_ns: u64) {
        if self.run_packets > 0 && ts.saturating_sub(self.run_last) > gap_ns {
            self.close_run();
        }
        if self.run_packets == 0 {
            self.run_start = ts;
        }
        self.run_last = ts;
        self.run_packets += 1;
        self.run_bytes += bytes;
    }

    fn avg_bytes(&self) -> f64 {
        ratio(self.bytes as f64, self.bulks as f64)
    }
    fn avg_packets(&self) -> f64 {
        ratio(self.packets as f64, self.bulks as f64)
    }
    fn rate(&self) -> f64 {
        ratio(self.bytes as f64, self.duration_ns as f64 / 1e9)
    }
}

#[inline]
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Per-direction counters.
#[derive(Clone, Copy, Debug, Default)]
struct Side {
    len: Running,
    iat: Running,
    last_ns: u64,
    header_bytes: u64,
    psh: u64,
    urg: u64,
    init_win: Option<u16>,
    bulk: Bulk,
    fin: bool,
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Both sides sent FIN and the last FIN was acknowledged.
    Fin,
    /// A packet carried RST.
    Rst,
    /// No packet for longer than `Config::idle_timeout`.
    IdleTimeout,
    /// The flow lasted longer than `Config::flow_timeout`.
    FlowTimeout,
    /// The capture ended.
    EndOfCapture,
    /// The table was full (`Config::max_flows`) and this flow was the
    /// least recently seen.
    Evicted,
}

impl EndReason {
    /// A short lowercase name (`fin`, `rst`, `idle`, `timeout`, `eof`, `evicted`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::IdleTimeout => "idle",
            EndReason::FlowTimeout => "timeout",
            EndReason::EndOfCapture => "eof",
            EndReason::Evicted => "evicted",
        }
    }
}

/// A finished flow: identity, endpoints, time span and feature vector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowRecord {
    /// Sequence number, unique within one [`crate::FlowTable`], in order of
    /// flow start.
    pub id: u64,
    /// Initiator address (source of the flow's first packet).
    pub src: Addr,
    /// Initiator port.
    pub src_port: u16,
    /// Responder address.
    pub dst: Addr,
    /// Responder port.
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Time of the first packet, ns since the Unix epoch.
    pub start_ns: u64,
    /// Time of the last packet, ns since the Unix epoch.
    pub end_ns: u64,
    /// Why it ended.
    pub end_reason: EndReason,
    /// The 78 features.
    pub features: Features,
}

impl FlowRecord {
    /// CICFlowMeter-style flow id: `src-dst-srcport-dstport-protocol`.
    pub fn flow_id(&self) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.src.to_ip(),
            self.dst.to_ip(),
            self.src_port,
            self.dst_port,
            self.protocol
        )
    }
}

/// What happened to a flow after a packet was added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After {
    Open,
    Closed(EndReason),
}

/// A flow in progress.
#[derive(Clone, Debug)]
pub(crate) struct FlowState {
    pub(crate) id: u64,
    pub(crate) src: Addr,
    pub(crate) src_port: u16,
    pub(crate) dst: Addr,
    pub(crate) dst_port: u16,
    pub(crate) protocol: u8,
    pub(crate) first_ns: u64,
    pub(crate) last_ns: u64,
    all_len: Running,
    all_iat: Running,
    fwd: Side,
    bwd: Side,
    fin: u64,
    syn: u64,
    rst: u64,
    psh: u64,
    ack: u64,
    urg: u64,
    cwr: u64,
    ece: u64,
    act_data_fwd: u64,
    min_hdr_fwd: u16,
    active: Running,
    idle: Running,
    active_start: u64,
    active_end: u64,
    subflows: u64,
}

impl FlowState {
    /// Starts a flow with its first packet (which fixes the direction).
    pub(crate) fn new(id: u64, ts: u64, p: &Packet) -> FlowState {
        FlowState {
            id,
            src: p.src,
            src_port: p.src_port,
            dst: p.dst,
            dst_port: p.dst_port,
            protocol: p.protocol,
            first_ns: ts,
            last_ns: ts,
            all_len: Running::default(),
            all_iat: Running::default(),
            fwd: Side::default(),
            bwd: Side::default(),
            fin: 0,
            syn: 0,
            rst: 0,
            psh: 0,
            ack: 0,
            urg: 0,
            cwr: 0,
            ece: 0,
            act_data_fwd: 0,
            min_hdr_fwd: u16::MAX,
            active: Running::default(),
            idle: Running::default(),
            active_start: ts,
            active_end: ts,
            subflows: 1,
        }
    }

    /// Whether this packet goes initiator → responder.
    #[inline]
    pub(crate) fn is_forward(&self, p: &Packet) -> bool {
        p.src == self.src && p.src_port == self.src_port
    }

    /// True if this packet must not join the flow but start a new one: the
    /// flow timed out, or it is closing and the packet opens a new
    /// connection.
    #[inline]
    pub(crate) fn expired_by(&self, ts: u64, p: &Packet, cfg: &Config) -> Option<EndReason> {
        let by_flow = ts.saturating_sub(self.first_ns) > cfg.flow_timeout_ns;
        let by_idle = ts.saturating_sub(self.last_ns) > cfg.idle_timeout_ns;
        if by_flow || by_idle {
            // Past both limits: whichever deadline came first (idle on a
            // tie), the same rule as `FlowTable::sweep`.
            let idle_first = self.last_ns.saturating_add(cfg.idle_timeout_ns)
                <= self.first_ns.saturating_add(cfg.flow_timeout_ns);
            return Some(if by_idle && (idle_first || !by_flow) {
                EndReason::IdleTimeout
            } else {
                EndReason::FlowTimeout
            });
        }
        if self.fwd.fin
            && self.bwd.fin
            && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
        {
            return Some(EndReason::Fin);
        }
        None
    }

    /// Adds a packet. Returns whether a TCP teardown closed the flow.
    #[inline]
    pub(crate) fn add(&mut self, ts: u64, p: &Packet, cfg: &Config) -> After {
        let n_before = self.all_len.count();
        let forward = self.is_forward(p);
        let len = f64::from(p.payload_len);
        // Out-of-order timestamps count as a zero gap rather than a
        // negative one.
        if n_before > 0 {
            let gap = ts.saturating_sub(self.last_ns);
            self.all_iat.push(gap as f64 / 1e3);
            if gap > cfg.subflow_gap_ns {
                self.subflows += 1;
            }
            if ts.saturating_sub(self.active_end) > cfg.activity_timeout_ns {
                self.active
                    .push(self.active_end.saturating_sub(self.active_start) as f64 / 1e3);
                self.idle
                    .push(ts.saturating_sub(self.active_end) as f64 / 1e3);
                self.active_start = ts;
                self.active_end = ts;
            } else if ts > self.active_end {
                self.active_end = ts;
            }
        }
        if ts > self.last_ns {
            self.last_ns = ts;
        }
        self.all_len.push(len);

        let flags = p.tcp_flags;
        let is_tcp = p.protocol == proto::TCP;
        let (side, other) = if forward {
            (&mut self.fwd, &mut self.bwd)
        } else {
            (&mut self.bwd, &mut self.fwd)
        };
        if side.len.count() > 0 {
            side.iat.push(ts.saturating_sub(side.last_ns) as f64 / 1e3);
        }
        if ts > side.last_ns || side.len.count() == 0 {
            side.last_ns = ts;
        }
        side.len.push(len);
        side.header_bytes += u64::from(p.header_len);
        if flags & tcp_flags::PSH != 0 {
            side.psh += 1;
        }
        if flags & tcp_flags::URG != 0 {
            side.urg += 1;
        }
        if is_tcp && side.init_win.is_none() {
            side.init_win = Some(p.tcp_window);
        }
        if p.payload_len > 0 {
            other.bulk.close_run();
            side.bulk
                .data_packet(ts, u64::from(p.payload_len), cfg.bulk_gap_ns);
        }
        let both_fin_before = side.fin && other.fin;
        if flags & tcp_flags::FIN != 0 {
            side.fin = true;
        }

        if forward {
            if p.payload_len > 0 {
                self.act_data_fwd += 1;
            }
            if p.header_len < self.min_hdr_fwd {
                self.min_hdr_fwd = p.header_len;
            }
        }
        self.fin += u64::from(flags & tcp_flags::FIN != 0);
        self.syn += u64::from(flags & tcp_flags::SYN != 0);
        self.rst += u64::from(flags & tcp_flags::RST != 0);
        self.psh += u64::from(flags & tcp_flags::PSH != 0);
        self.ack += u64::from(flags & tcp_flags::ACK != 0);
        self.urg += u64::from(flags & tcp_flags::URG != 0);
        self.cwr += u64::from(flags & tcp_flags::CWR != 0);
        self.ece += u64::from(flags & tcp_flags::ECE != 0);

        if is_tcp {
            if flags & tcp_flags::RST != 0 {
                return After::Closed(EndReason::Rst);
            }
            // The ACK of the second FIN ends the connection: the whole
            // teardown stays in this flow.
            if both_fin_before && flags & tcp_flags::ACK != 0 && flags & tcp_flags::FIN == 0 {
                return After::Closed(EndReason::Fin);
            }
        }
        After::Open
    }

    /// Ends the flow and computes its features.
    pub(crate) fn finish(mut self, reason: EndReason) -> FlowRecord {
        use Feature as F;
        self.fwd.bulk.close_run();
        self.bwd.bulk.close_run();
        self.active
            .push(self.active_end.saturating_sub(self.active_start) as f64 / 1e3);

        let mut f = Features([0.0; FEATURE_COUNT]);
        let dur_ns = self.last_ns.saturating_sub(self.first_ns);
        let dur_s = dur_ns as f64 / 1e9;
        let fwd_n = self.fwd.len.count() as f64;
        let bwd_n = self.bwd.len.count() as f64;
        let n = self.all_len.count() as f64;
        let fwd_bytes = self.fwd.len.sum();
        let bwd_bytes = self.bwd.len.sum();
        let sub = self.subflows as f64;
        let side_min = |s: &Side| if s.len.count() > 0 { s.len.min() } else { 0.0 };
        let side_max = |s: &Side| if s.len.count() > 0 { s.len.max() } else { 0.0 };
        let iat_min = |r: &Running| if r.count() > 0 { r.min() } else { 0.0 };
        let iat_max = |r: &Running| if r.count() > 0 { r.max() } else { 0.0 };
        let win = |w: Option<u16>| w.map_or(-1.0, f64::from);

        f.set(F::DestinationPort, f64::from(self.dst_port));
        f.set(F::FlowDuration, dur_ns as f64 / 1e3);
        f.set(F::TotalFwdPackets, fwd_n);
        f.set(F::TotalBackwardPackets, bwd_n);
        f.set(F::TotalLengthFwdPackets, fwd_bytes);
        f.set(F::TotalLengthBwdPackets, bwd_bytes);
        f.set(F::FwdPacketLengthMax, side_max(&self.fwd));
        f.set(F::FwdPacketLengthMin, side_min(&self.fwd));
        f.set(F::FwdPacketLengthMean, self.fwd.len.mean());
        f.set(F::FwdPacketLengthStd, self.fwd.len.std());
        f.set(F::BwdPacketLengthMax, side_max(&self.bwd));
        f.set(F::BwdPacketLengthMin, side_min(&self.bwd));
        f.set(F::BwdPacketLengthMean, self.bwd.len.mean());
        f.set(F::BwdPacketLengthStd, self.bwd.len.std());
        f.set(F::FlowBytesPerSec, ratio(fwd_bytes + bwd_bytes, dur_s));
        f.set(F::FlowPacketsPerSec, ratio(n, dur_s));
        f.set(F::FlowIatMean, self.all_iat.mean());
        f.set(F::FlowIatStd, self.all_iat.std());
        f.set(F::FlowIatMax, iat_max(&self.all_iat));
        f.set(F::FlowIatMin, iat_min(&self.all_iat));
        f.set(F::FwdIatTotal, self.fwd.iat.sum());
        f.set(F::FwdIatMean, self.fwd.iat.mean());
        f.set(F::FwdIatStd, self.fwd.iat.std());
        f.set(F::FwdIatMax, iat_max(&self.fwd.iat));
        f.set(F::FwdIatMin, iat_min(&self.fwd.iat));
        f.set(F::BwdIatTotal, self.bwd.iat.sum());
        f.set(F::BwdIatMean, self.bwd.iat.mean());
        f.set(F::BwdIatStd, self.bwd.iat.std());
        f.set(F::BwdIatMax, iat_max(&self.bwd.iat));
        f.set(F::BwdIatMin, iat_min(&self.bwd.iat));
        f.set(F::FwdPshFlags, self.fwd.psh as f64);
        f.set(F::BwdPshFlags, self.bwd.psh as f64);
        f.set(F::FwdUrgFlags, self.fwd.urg as f64);
        f.set(F::BwdUrgFlags, self.bwd.urg as f64);
        f.set(F::FwdHeaderLength, self.fwd.header_bytes as f64);
        f.set(F::BwdHeaderLength, self.bwd.header_bytes as f64);
        f.set(F::FwdPacketsPerSec, ratio(fwd_n, dur_s));
        f.set(F::BwdPacketsPerSec, ratio(bwd_n, dur_s));
        f.set(F::MinPacketLength, self.all_len.min());
        f.set(F::MaxPacketLength, self.all_len.max());
        f.set(F::PacketLengthMean, self.all_len.mean());
        f.set(F::PacketLengthStd, self.all_len.std());
        f.set(F::PacketLengthVariance, self.all_len.var());
        f.set(F::FinFlagCount, self.fin as f64);
        f.set(F::SynFlagCount, self.syn as f64);
        f.set(F::RstFlagCount, self.rst as f64);
        f.set(F::PshFlagCount, self.psh as f64);
        f.set(F::AckFlagCount, self.ack as f64);
        f.set(F::UrgFlagCount, self.urg as f64);
        f.set(F::CwrFlagCount, self.cwr as f64);
        f.set(F::EceFlagCount, self.ece as f64);
        f.set(F::DownUpRatio, ratio(bwd_n, fwd_n));
        f.set(F::AveragePacketSize, ratio(fwd_bytes + bwd_bytes, n));
        f.set(F::AvgFwdSegmentSize, ratio(fwd_bytes, fwd_n));
        f.set(F::AvgBwdSegmentSize, ratio(bwd_bytes, bwd_n));
        f.set(F::FwdHeaderLength1, self.fwd.header_bytes as f64);
        f.set(F::FwdAvgBytesPerBulk, self.fwd.bulk.avg_bytes());
        f.set(F::FwdAvgPacketsPerBulk, self.fwd.bulk.avg_packets());
        f.set(F::FwdAvgBulkRate, self.fwd.bulk.rate());
        f.set(F::BwdAvgBytesPerBulk, self.bwd.bulk.avg_bytes());
        f.set(F::BwdAvgPacketsPerBulk, self.bwd.bulk.avg_packets());
        f.set(F::BwdAvgBulkRate, self.bwd.bulk.rate());
        f.set(F::SubflowFwdPackets, ratio(fwd_n, sub));
        f.set(F::SubflowFwdBytes, ratio(fwd_bytes, sub));
        f.set(F::SubflowBwdPackets, ratio(bwd_n, sub));
        f.set(F::SubflowBwdBytes, ratio(bwd_bytes, sub));
        f.set(F::InitWinBytesForward, win(self.fwd.init_win));
        f.set(F::InitWinBytesBackward, win(self.bwd.init_win));
        f.set(F::ActDataPktFwd, self.act_data_fwd as f64);
        f.set(
            F::MinSegSizeForward,
            if self.min_hdr_fwd == u16::MAX {
                0.0
            } else {
                f64::from(self.min_hdr_fwd)
            },
        );
        f.set(F::ActiveMean, self.active.mean());
        f.set(F::ActiveStd, self.active.std());
        f.set(F::ActiveMax, iat_max(&self.active));
        f.set(F::ActiveMin, iat_min(&self.active));
        f.set(F::IdleMean, self.idle.mean());
        f.set(F::IdleStd, self.idle.std());
        f.set(F::IdleMax, iat_max(&self.idle));
        f.set(F::IdleMin, iat_min(&self.idle));

        FlowRecord {
            id: self.id,
            src: self.src,
            src_port: self.src_port,
            dst: self.dst,
            dst_port: self.dst_port,
            protocol: self.protocol,
            start_ns: self.first_ns,
            end_ns: self.last_ns,
            end_reason: reason,
            features: f,
        }
    }
}
