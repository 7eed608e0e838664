//! The sensor as a component: the ring read on its own thread, flows
//! ended by time as well as by packets, each tick's finished flows sealed
//! as one or more [`ben_mesh_wire::FlowBatch`]es and published on
//! `ben.mesh.flows`. Everything counted in [`Counters`] (the status line
//! shows what was captured and what the kernel dropped).

use crate::ring::{self, Ring, RingConfig};
use crate::{batch_bytes, bpf, seal_batches, Live};
use ben_component::Deps;
use ben_mesh_flows::output::csv_line;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where and how a sensor captures.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The interface.
    pub iface: String,
    /// A pcap filter expression (compiled with tcpdump), if any.
    pub filter: Option<String>,
    /// The network namespace the interface lives in (`/run/netns/NAME`),
    /// if not this process's.
    pub netns: Option<PathBuf>,
    pub ring: RingConfig,
    /// Flow timeouts: a live sensor ends idle flows sooner than a capture
    /// file's 120 s (default 15 s), so a flood's flows reach detection, and
    /// cuts a flow that lasts longer than the detector's 10 s window into
    /// pieces of at most that (a flood on one 5-tuple, such as an ICMP echo
    /// flood, is one flow: with a capture file's 120 s it would reach
    /// detection two minutes after it began).
    pub flows: ben_mesh_flows::Config,
    /// How often finished flows are sent (default 100 ms).
    pub tick: Duration,
}

impl Settings {
    pub fn new(iface: &str) -> Settings {
        Settings {
            iface: iface.to_string(),
            filter: None,
            netns: None,
            ring: RingConfig::default(),
            flows: ben_mesh_flows::Config {
                idle_timeout_ns: 15_000_000_000,
                flow_timeout_ns: 10_000_000_000,
                sweep_interval_ns: 100_000_000,
                ..ben_mesh_flows::Config::default()
            },
            tick: Duration::from_millis(100),
        }
    }
}

/// What a sensor counted (totals since it started).
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames the ring handed over.
    pub frames: AtomicU64,
    /// Packets the kernel received for the socket, and those it dropped
    /// because the ring was full; times the ring froze.
    pub kernel_packets: AtomicU64,
    pub kernel_drops: AtomicU64,
    pub freezes: AtomicU64,
    /// Frames cut to the ring's frame size; ring headers that did not fit.
    pub cut: AtomicU64,
    pub bad_headers: AtomicU64,
    /// Frames that did not decode (truncated, malformed) and frames that
    /// make no flow (non-IP, non-first fragments).
    pub corrupt: AtomicU64,
    pub skipped: AtomicU64,
    /// Flows sent, batches sent, batches the bus refused.
    pub flows: AtomicU64,
    pub batches: AtomicU64,
    pub publish_errors: AtomicU64,
    /// The ring is bound to its interface: every frame from here on is
    /// captured (or counted as a kernel drop). Traffic a test or demo
    /// sends before this is not seen.
    pub capturing: AtomicBool,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Opens the ring (in the namespace, if one is set), with the filter.
pub fn open(s: &Settings) -> Result<Ring, String> {
    let filter = match &s.filter {
        Some(expr) => bpf::compile(expr)?,
        None => vec![],
    };
    let (iface, rc) = (s.iface.clone(), s.ring.clone());
    let opened = match &s.netns {
        Some(ns) => ring::in_netns(ns, move || Ring::open(&iface, &rc, &filter)),
        None => Ring::open(&iface, &rc, &filter),
    };
    opened.map_err(|e| format!("capturing on {}: {e}", s.iface))
}

/// Runs the sensor until the bus closes or the capture fails.
pub async fn run(deps: Deps, s: Settings, c: Arc<Counters>) -> Result<(), String> {
    let ring = open(&s)?;
    c.capturing.store(true, Ordering::Release);
    tracing::info!(id = %deps.id, iface = %s.iface, filter = ?s.filter, "sensor capturing");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Vec<u8>>>(64);
    let counters = c.clone();
    let (flows, tick) = (s.flows.clone(), s.tick);
    let capture = std::thread::Builder::new()
        .name("ben-sensor".into())
        .spawn(move || capture(ring, flows, tick, tx, &counters))
        .map_err(|e| format!("starting the capture thread: {e}"))?;
    let mut seq = crate::Numbering::starting_at(now_ns());
    let limit = batch_bytes(deps.bus.max_payload());
    while let Some(rows) = rx.recv().await {
        let n = rows.len() as u64;
        for batch in seal_batches(&deps.signer, &deps.id, &mut seq, rows, limit) {
            match deps.bus.publish(ben_mesh_wire::FLOWS_SUBJECT, batch).await {
                Ok(_) => {
                    c.batches.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    c.publish_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "the bus did not take a batch of flows");
                }
            }
        }
        c.flows.fetch_add(n, Ordering::Relaxed);
    }
    c.capturing.store(false, Ordering::Release);
    // The capture ended: say why.
    match capture.join() {
        Ok(Ok(())) => Err("the capture stopped".into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the capture thread panicked".into()),
    }
}

/// The capture thread: blocks read, ticks every `tick`, finished flows
/// sent as rows. Ends when the receiver is gone (`Ok`) or the ring fails.
fn capture(
    mut ring: Ring,
    cfg: ben_mesh_flows::Config,
    tick: Duration,
    tx: tokio::sync::mpsc::Sender<Vec<Vec<u8>>>,
    c: &Counters,
) -> Result<(), String> {
    let mut live = Live::new(cfg);
    let mut next = Instant::now() + tick;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match ring.next_block(wait, |f| live.frame(f.ts_ns, f.data)) {
            Ok(Some(read)) => {
                c.frames.fetch_add(read.frames, Ordering::Relaxed);
                live.block(&read);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("reading the capture ring: {e}")),
        }
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + tick;
        let done = live.tick(now_ns());
        let k = ring
            .stats()
            .map_err(|e| format!("reading the kernel's counts: {e}"))?;
        c.kernel_packets.store(k.packets, Ordering::Relaxed);
        c.kernel_drops.store(k.drops, Ordering::Relaxed);
        c.freezes.store(k.freezes, Ordering::Relaxed);
        c.cut.store(live.cut, Ordering::Relaxed);
        c.bad_headers.store(live.bad_headers, Ordering::Relaxed);
        let counts = live.counters();
        c.corrupt.store(counts.corrupt(), Ordering::Relaxed);
        c.skipped.store(counts.skipped(), Ordering::Relaxed);
        if done.is_empty() {
            if tx.is_closed() {
                return Ok(());
            }
            continue;
        }
        let rows = done.iter().map(csv_line).collect();
        // Waiting here holds the ring back: what the kernel cannot queue
        // meanwhile it drops, and counts (shown as kernel drops).
        if tx.blocking_send(rows).is_err() {
            return Ok(());
        }
    }
}
