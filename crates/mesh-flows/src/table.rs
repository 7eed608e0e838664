//! The flow table: packets in, finished flows out.

use crate::decode::{decode, Addr, LinkType, Packet};
use crate::error::DecodeError;
use crate::flow::{After, EndReason, FlowRecord, FlowState};
use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;
use hashbrown::HashMap;

const SECOND: u64 = 1_000_000_000;

/// Flow-table settings. Every limit is here and named; the defaults follow
/// CICFlowMeter where it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A flow is cut when a packet arrives more than this long after the
    /// flow's first packet (CICFlowMeter "flow timeout"). Default 120 s.
    pub flow_timeout_ns: u64,
    /// A flow ends when no packet arrived for this long. Default 120 s,
    /// which with the default flow timeout never cuts before it (as in
    /// CICFlowMeter); lower it to split long-idle connections.
    pub idle_timeout_ns: u64,
    /// A gap longer than this ends an "active" period and starts an "idle"
    /// one (CICFlowMeter "activity timeout"). Default 5 s.
    pub activity_timeout_ns: u64,
    /// A gap longer than this starts a new subflow. Default 1 s.
    pub subflow_gap_ns: u64,
    /// A gap longer than this between data packets ends a bulk. Default 1 s.
    pub bulk_gap_ns: u64,
    /// At most this many flows are open at once; beyond it the least
    /// recently seen are ended with [`EndReason::Evicted`] (counted).
    /// Default 1,000,000.
    pub max_flows: usize,
    /// Timeouts are checked over the whole table once per this much capture
    /// time. Affects only how soon a timed-out flow is emitted, never its
    /// contents. Default 1 s.
    pub sweep_interval_ns: u64,
    /// Seed of the flow-key hash, so an attacker cannot precompute
    /// colliding 5-tuples. Pass a random value in production; output never
    /// depends on it.
    pub hash_seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            flow_timeout_ns: 120 * SECOND,
            idle_timeout_ns: 120 * SECOND,
            activity_timeout_ns: 5 * SECOND,
            subflow_gap_ns: SECOND,
            bulk_gap_ns: SECOND,
            max_flows: 1_000_000,
            sweep_interval_ns: SECOND,
            hash_seed: 0,
        }
    }
}

/// What happened to every packet pushed into a [`FlowTable`]. Nothing is
/// dropped without being counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets pushed.
    pub packets: u64,
    /// Packets that joined a flow.
    pub in_flows: u64,
    /// Skipped: not IP (ARP, LLDP, …).
    pub non_ip: u64,
    /// Skipped: non-first IP fragments.
    pub fragments: u64,
    /// Skipped: link type the decoder does not read.
    pub unsupported_link: u64,
    /// Corrupt: fewer bytes captured than a header needs.
    pub truncated: u64,
    /// Corrupt: impossible header fields.
    pub malformed: u64,
    /// Packets whose timestamp was earlier than their flow's last packet
    /// (counted, and treated as a zero gap).
    pub out_of_order: u64,
    /// Flows emitted.
    pub flows: u64,
    /// Of those, flows ended early because the table was full.
    pub evicted: u64,
}

impl Counters {
    /// Packets skipped as not part of any flow (non-IP, fragments, links).
    pub fn skipped(&self) -> u64 {
        self.non_ip + self.fragments + self.unsupported_link
    }
    /// Packets counted as corrupt (truncated or malformed).
    pub fn corrupt(&self) -> u64 {
        self.truncated + self.malformed
    }
}

/// Canonical 5-tuple: the lower (address, port) endpoint first, so both
/// directions of a connection find the same entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    lo: [u8; 16],
    hi: [u8; 16],
    lo_port: u16,
    hi_port: u16,
    protocol: u8,
    v6: bool,
}

impl FlowKey {
    #[inline]
    fn of(p: &Packet) -> FlowKey {
        let a = (p.src, p.src_port);
        let b = (p.dst, p.dst_port);
        let (lo, hi): ((Addr, u16), (Addr, u16)) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            lo: lo.0.bytes,
            hi: hi.0.bytes,
            lo_port: lo.1,
            hi_port: hi.1,
            protocol: p.protocol,
            v6: p.src.v6,
        }
    }
}

/// Bidirectional flow assembly over a stream of timestamped packets.
///
/// Time comes only from the packets. Finished flows accumulate until
/// [`FlowTable::drain_finished`]; call [`FlowTable::finish_all`] at the end
/// of the capture.
pub struct FlowTable {
    cfg: Config,
    flows: HashMap<FlowKey, FlowState, SeedableRandomState>,
    finished: Vec<FlowRecord>,
    counters: Counters,
    next_id: u64,
    next_sweep_ns: u64,
}

impl FlowTable {
    /// An empty table.
    pub fn new(cfg: Config) -> FlowTable {
        let hasher = SeedableRandomState::with_seed(cfg.hash_seed, SharedSeed::global_fixed());
        FlowTable {
            flows: HashMap::with_capacity_and_hasher(1024, hasher),
            cfg,
            finished: Vec::new(),
            counters: Counters::default(),
            next_id: 0,
            next_sweep_ns: 0,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Decodes and adds one captured frame (`ts_ns`: ns since the Unix
    /// epoch). A frame that cannot join a flow is counted in
    /// [`FlowTable::counters`] and its reason returned.
    #[inline]
    pub fn push(&mut self, ts_ns: u64, link: LinkType, frame: &[u8]) -> Result<(), DecodeError> {
        self.counters.packets += 1;
        match decode(link, frame) {
            Ok(p) => {
                self.add(ts_ns, &p);
                Ok(())
            }
            Err(e) => {
                let c = &mut self.counters;
                match e {
                    DecodeError::Truncated { .. } => c.truncated += 1,
                    DecodeError::Malformed { .. } => c.malformed += 1,
                    DecodeError::NonIp { .. } => c.non_ip += 1,
                    DecodeError::Fragment => c.fragments += 1,
                    DecodeError::UnsupportedLinkType { .. } => c.unsupported_link += 1,
                }
                self.maybe_sweep(ts_ns);
                Err(e)
            }
        }
    }

    /// Adds an already decoded packet.
    #[inline]
    pub fn push_packet(&mut self, ts_ns: u64, p: &Packet) {
        self.counters.packets += 1;
        self.add(ts_ns, p);
    }

    #[inline]
    fn add(&mut self, ts: u64, p: &Packet) {
        self.counters.in_flows += 1;
        self.maybe_sweep(ts);
        let key = FlowKey::of(p);
        if let Some(flow) = self.flows.get_mut(&key) {
            if ts < flow.last_ns {
                self.counters.out_of_order += 1;
            }
            match flow.expired_by(ts, p, &self.cfg) {
                None => {
                    if let After::Closed(reason) = flow.add(ts, p, &self.cfg) {
                        if let Some(done) = self.flows.remove(&key) {
                            self.emit(done.finish(reason));
                        }
                    }
                    return;
                }
                Some(reason) => {
                    if let Some(done) = self.flows.remove(&key) {
                        self.emit(done.finish(reason));
                    }
                }
            }
        }
        self.start(key, ts, p);
    }

    fn start(&mut self, key: FlowKey, ts: u64, p: &Packet) {
        if self.flows.len() >= self.cfg.max_flows {
            self.make_room(ts);
        }
        let mut flow = FlowState::new(self.next_id, ts, p);
        self.next_id += 1;
        match flow.add(ts, p, &self.cfg) {
            // A lone RST (or similar) is a whole flow by itself.
            After::Closed(reason) => self.emit(flow.finish(reason)),
            After::Open => {
                self.flows.insert(key, flow);
            }
        }
    }

    #[inline]
    fn emit(&mut self, r: FlowRecord) {
        self.counters.flows += 1;
        if r.end_reason == EndReason::Evicted {
            self.counters.evicted += 1;
        }
        self.finished.push(r);
    }

    #[inline]
    fn maybe_sweep(&mut self, now: u64) {
        if now >= self.next_sweep_ns {
            self.sweep(now);
        }
    }

    /// Ends every flow that timed out at capture time `now`.
    pub fn sweep(&mut self, now: u64) {
        self.next_sweep_ns = now.saturating_add(self.cfg.sweep_interval_ns.max(1));
        let flow_to = self.cfg.flow_timeout_ns;
        let idle_to = self.cfg.idle_timeout_ns;
        let start = self.finished.len();
        for (_, f) in self.flows.extract_if(|_, f| {
            now.saturating_sub(f.first_ns) > flow_to || now.saturating_sub(f.last_ns) > idle_to
        }) {
            // A flow past both limits ends by whichever came first (idle
            // on a tie: the flow had gone quiet).
            let by_flow = f.first_ns.saturating_add(flow_to);
            let by_idle = f.last_ns.saturating_add(idle_to);
            let reason = if by_idle <= by_flow {
                EndReason::IdleTimeout
            } else {
                EndReason::FlowTimeout
            };
            self.counters.flows += 1;
            self.finished.push(f.finish(reason));
        }
        // Hash order depends on the seed; output order must not.
        self.finished[start..].sort_unstable_by_key(|r| (r.start_ns, r.id));
    }

    /// The table is full: sweep, and if that frees nothing, end the least
    /// recently seen eighth of the flows.
    fn make_room(&mut self, now: u64) {
        self.sweep(now);
        if self.flows.len() < self.cfg.max_flows {
            return;
        }
        let mut last: Vec<u64> = self.flows.values().map(|f| f.last_ns).collect();
        let k = (last.len() / 8).max(1).min(last.len().saturating_sub(1));
        let (_, &mut cutoff, _) = last.select_nth_unstable(k);
        let start = self.finished.len();
        for (_, f) in self.flows.extract_if(|_, f| f.last_ns <= cutoff) {
            self.counters.flows += 1;
            self.counters.evicted += 1;
            self.finished.push(f.finish(EndReason::Evicted));
        }
        self.finished[start..].sort_unstable_by_key(|r| (r.start_ns, r.id));
    }

    /// Ends every open flow (end of capture), in order of flow start.
    pub fn finish_all(&mut self) {
        let start = self.finished.len();
        for (_, f) in self.flows.drain() {
            self.counters.flows += 1;
            self.finished.push(f.finish(EndReason::EndOfCapture));
        }
        self.finished[start..].sort_unstable_by_key(|r| (r.start_ns, r.id));
    }

    /// Takes the flows finished so far, oldest event first.
    pub fn drain_finished(&mut self) -> std::vec::Drain<'_, FlowRecord> {
        self.finished.drain(..)
    }

    /// Number of flows finished and not yet drained.
    pub fn finished_len(&self) -> usize {
        self.finished.len()
    }

    /// Number of flows open now.
    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// What happened to the packets so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}
