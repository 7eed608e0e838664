//! # CyberMesh live sensor
//!
//! Packets from a network interface into the `mesh-flows` table, finished
//! flows out as they end (DESIGN §2, "sensor"):
//!
//! * [`ring`] — the capture: an AF_PACKET socket with a TPACKET_V3
//!   memory-mapped receive ring bound to one interface (optionally inside a
//!   network namespace, [`ring::in_netns`]), a classic BPF filter attached
//!   before any packet enters, the kernel's counts of received packets,
//!   ring-full drops and queue freezes ([`ring::KernelStats`]). The only
//!   `unsafe` code of the sensor; every offset the kernel writes into the
//!   ring is checked before it is followed (a bad one is counted).
//! * [`bpf`] — filters: `tcpdump -ddd` output parsed into instructions
//!   (the sensor compiles `--filter EXPR` with tcpdump, the one BPF
//!   compiler every Linux host has a package for). Pure.
//! * [`Live`] — the pure core between them: frames (kernel time stamps)
//!   into a [`FlowTable`], time advanced by [`Live::tick`] so flows that
//!   went idle end without waiting for another packet, finished flows
//!   handed out in start order; every frame lands in a flow or a counter
//!   (non-IP, fragment, truncated, malformed, cut by the ring), never a
//!   panic.
//!
//! * [`run`] — the component: the ring on its own thread, each tick's
//!   finished flows sealed as `FlowBatch`es by the sensor's key and
//!   published on `ben.mesh.flows`, everything counted ([`run::Counters`]).
//!
//! `ben sensor --config F` runs one in a cluster, `ben up --sensor-iface IF`
//! in one process.

pub mod bpf;
pub mod lab;
pub mod ring;
pub mod run;

use ben_mesh_flows::{Config, Counters, FlowRecord, FlowTable, LinkType};

/// Frames into flows, for one Ethernet interface.
pub struct Live {
    table: FlowTable,
    /// Frames the ring had cut to its frame size (their flows still get
    /// their true sizes from the IP headers).
    pub cut: u64,
    /// Frame headers in the ring that did not fit their block.
    pub bad_headers: u64,
    /// The newest time stamp seen or ticked to.
    now_ns: u64,
}

impl Live {
    pub fn new(cfg: Config) -> Live {
        Live {
            table: FlowTable::new(cfg),
            cut: 0,
            bad_headers: 0,
            now_ns: 0,
        }
    }

    /// One captured Ethernet frame. A frame that does not decode is
    /// counted in [`Live::counters`].
    pub fn frame(&mut self, ts_ns: u64, data: &[u8]) {
        self.now_ns = self.now_ns.max(ts_ns);
        // Decode failures are counted by the table (truncated, malformed,
        // non-IP, fragments), and the run loop puts the counts on the
        // status line; nothing else is to be done with them here.
        let _ = self.table.push(ts_ns, LinkType::ETHERNET, data);
    }

    /// What one block read of the ring found besides its frames.
    pub fn block(&mut self, read: &ring::BlockRead) {
        self.cut += read.cut;
        self.bad_headers += read.bad_headers;
    }

    /// Advances time to `now_ns` (the wall clock, when no packet comes):
    /// flows past their idle or flow timeout end. Returns the flows that
    /// have finished since the last call, in start order.
    pub fn tick(&mut self, now_ns: u64) -> Vec<FlowRecord> {
        self.now_ns = self.now_ns.max(now_ns);
        self.table.sweep(self.now_ns);
        let mut out: Vec<FlowRecord> = self.table.drain_finished().collect();
        out.sort_by_key(|r| (r.start_ns, r.id));
        out
    }

    /// Ends every open flow (the sensor stops) and returns what finished.
    pub fn finish(&mut self) -> Vec<FlowRecord> {
        self.table.finish_all();
        self.table.drain_finished().collect()
    }

    pub fn counters(&self) -> &Counters {
        self.table.counters()
    }

    pub fn open_flows(&self) -> usize {
        self.table.open_flows()
    }
}

/// What a batch may hold at most, bytes of rows (well under a NATS
/// server's default 1 MiB payload limit, with the envelope around it).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The rows' bytes per batch over a bus whose messages may be at most
/// `max_payload` bytes (`Bus::max_payload`): half of that, as validators
/// size their blocks, and never over [`MAX_BATCH_BYTES`]. A NATS server
/// configured below its default would otherwise refuse every batch.
pub fn batch_bytes(max_payload: Option<usize>) -> usize {
    max_payload.map_or(MAX_BATCH_BYTES, |m| (m / 2).clamp(1, MAX_BATCH_BYTES))
}

/// How a sensor numbers its batches: its run (larger at every start) and
/// the last batch's number in it.
#[derive(Clone, Copy, Debug)]
pub struct Numbering {
    pub incarnation: u64,
    pub seq: u64,
}

impl Numbering {
    /// A new run, numbered by its start time (ns since the epoch).
    pub fn starting_at(now_ns: u64) -> Numbering {
        Numbering {
            incarnation: now_ns,
            seq: 0,
        }
    }
}

/// Rows into [`ben_mesh_wire::FlowBatch`]es signed by `signer` as sensor
/// `sensor`, each at most `max_bytes` of rows (a single larger row goes
/// alone), numbered by `n`. What goes on `ben.mesh.flows`.
pub fn seal_batches(
    signer: &ben_wire::Signer,
    sensor: &str,
    n: &mut Numbering,
    rows: Vec<Vec<u8>>,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut batch: Vec<Vec<u8>> = vec![];
    let mut size = 0;
    let seal = |batch: Vec<Vec<u8>>, n: &mut Numbering| {
        n.seq += 1;
        signer.seal_bytes(&ben_mesh_wire::FlowBatch {
            sensor: sensor.to_string(),
            seq: n.seq,
            rows: batch,
            incarnation: n.incarnation,
        })
    };
    for row in rows {
        if !batch.is_empty() && size + row.len() > max_bytes {
            out.push(seal(std::mem::take(&mut batch), n));
            size = 0;
        }
        size += row.len();
        batch.push(row);
    }
    if !batch.is_empty() {
        out.push(seal(batch, n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        f
    }

    #[test]
    fn batches_fit_the_bus() {
        assert_eq!(batch_bytes(None), MAX_BATCH_BYTES);
        assert_eq!(batch_bytes(Some(1024 * 1024)), MAX_BATCH_BYTES);
        assert_eq!(batch_bytes(Some(64 * 1024)), 32 * 1024);
        assert_eq!(batch_bytes(Some(0)), 1);
    }

    #[test]
    fn batches_are_signed_bounded_and_numbered() {
        let signer = ben_wire::Signer::from_secret([7; 32]);
        let mut keys = ben_wire::Keyring::new();
        keys.trust("sensor-1", ben_wire::Role::Sensor, signer.public());
        let rows: Vec<Vec<u8>> = (0..10).map(|i| vec![b'a' + i as u8; 100]).collect();
        let mut seq = Numbering {
            incarnation: 77,
            seq: 5,
        };
        let out = seal_batches(&signer, "sensor-1", &mut seq, rows, 250);
        assert_eq!(out.len(), 5, "two rows of 100 bytes per 250");
        assert_eq!(seq.seq, 10);
        let first = ben_wire::open_bytes::<ben_mesh_wire::FlowBatch>(&out[0], &keys)
            .unwrap()
            .into_inner();
        assert_eq!((first.seq, first.rows.len(), first.incarnation), (6, 2, 77));
        // Another role's key is refused, and so is a batch naming another
        // sensor than its signer.
        let mut wrong = ben_wire::Keyring::new();
        wrong.trust("mesh-1", ben_wire::Role::AiService, signer.public());
        assert!(ben_wire::open_bytes::<ben_mesh_wire::FlowBatch>(&out[0], &wrong).is_err());
        let other = seal_batches(&signer, "sensor-2", &mut seq, vec![b"x".to_vec()], 250);
        assert!(ben_wire::open_bytes::<ben_mesh_wire::FlowBatch>(&other[0], &keys).is_err());
        // One row over the limit goes alone.
        let big = seal_batches(
            &signer,
            "sensor-1",
            &mut seq,
            vec![vec![1; 400], vec![2; 10]],
            250,
        );
        assert_eq!(big.len(), 2);
    }

    #[test]
    fn idle_flows_end_on_a_tick_without_another_packet() {
        let cfg = Config {
            idle_timeout_ns: 2_000_000_000,
            sweep_interval_ns: 100_000_000,
            ..Config::default()
        };
        let mut live = Live::new(cfg);
        let t0 = 1_700_000_000_000_000_000;
        live.frame(t0, &eth_tcp([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0x02));
        assert!(live.tick(t0 + 1_000_000_000).is_empty());
        let done = live.tick(t0 + 2_500_000_000);
        assert_eq!(done.len(), 1);
        assert_eq!(live.open_flows(), 0);
    }

    #[test]
    fn a_reset_ends_its_flow_at_once_and_bad_frames_are_counted() {
        let mut live = Live::new(Config::default());
        let t0 = 1_700_000_000_000_000_000;
        live.frame(t0, &eth_tcp([10, 0, 0, 1], [10, 0, 0, 2], 40000, 81, 0x02));
        live.frame(
            t0 + 1000,
            &eth_tcp([10, 0, 0, 2], [10, 0, 0, 1], 81, 40000, 0x14),
        );
        // Truncated, non-IP, empty: counted, not a panic.
        live.frame(
            t0 + 2000,
            &eth_tcp([10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 0x02)[..20],
        );
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        live.frame(t0 + 3000, &arp);
        live.frame(t0 + 4000, &[]);
        let done = live.tick(t0 + 5000);
        assert_eq!(done.len(), 1, "the reset flow is out at the next tick");
        let c = live.counters();
        assert_eq!(c.packets, 5);
        assert_eq!(c.non_ip, 1);
        assert!(c.corrupt() >= 2, "{c:?}");
        assert!(!ben_mesh_flows::output::csv_line(&done[0]).ends_with(b"\n"));
    }
}
