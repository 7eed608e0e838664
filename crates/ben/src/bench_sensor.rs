//! `ben bench sensor --packets N`: the live sensor over a veth pair. Two
//! network namespaces of the bench's own joined by a veth pair; the
//! sensor's ring (TPACKET_V3) on one end, with the whole per-packet path
//! behind it (decode, flow table, ticks that end idle flows); on the other
//! end one thread sends N UDP datagrams as fast as the kernel takes them
//! (to 1,000 ports: 1,000 flows). Reported: packets sent, frames the ring
//! handed over, what the kernel counted and dropped (ring full) and how
//! often the ring froze, the capture thread's CPU time per packet, and the
//! rates. Drops are counted, never silent: sent = seen + dropped unless
//! the kernel lost packets elsewhere (then said).
//!
//! Needs root. The last line is what scripts read.

use anyhow::{bail, Context, Result};
use ben_mesh_sensor::lab::Namespaces;
use ben_mesh_sensor::ring::{self, Ring, RingConfig};
use ben_mesh_sensor::Live;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {} (the bench needs root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill. The thread CPU clock exists on
    // every Linux this runs on; were it refused, the zero left in `ts`
    // would show as 0 ns per packet, not as a plausible figure.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Seen {
    frames: u64,
    flows: usize,
    cpu: Duration,
    kernel: ring::KernelStats,
    corrupt: u64,
}

pub fn run(packets: u64, payload: usize) -> Result<()> {
    if packets == 0 || packets > 100_000_000 {
        bail!("--packets must be 1 to 100,000,000");
    }
    if payload > 1400 {
        bail!("--payload must be at most 1400 bytes (one frame)");
    }
    let pid = std::process::id();
    let (a, b) = (format!("bsa{pid}"), format!("bsb{pid}"));
    let ns = Namespaces(vec![a.clone(), b.clone()]);
    for n in &ns.0 {
        ben_mesh_sensor::lab::remove_netns(n).map_err(anyhow::Error::msg)?;
        ip(&["netns", "add", n])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    ip(&[
        "link", "add", "bva", "netns", &a, "type", "veth", "peer", "name", "bvb", "netns", &b,
    ])?;
    ip(&["-n", &a, "addr", "add", "10.215.0.1/24", "dev", "bva"])?;
    ip(&["-n", &b, "addr", "add", "10.215.0.2/24", "dev", "bvb"])?;
    ip(&["-n", &a, "link", "set", "bva", "up"])?;
    ip(&["-n", &b, "link", "set", "bvb", "up"])?;
    let path = |n: &str| std::path::PathBuf::from(format!("/run/netns/{n}"));
    let mut ring = ring::in_netns(&path(&b), || Ring::open("bvb", &RingConfig::default(), &[]))
        .context("opening the capture ring on the veth")?;
    let done = Arc::new(AtomicBool::new(false));
    let capture = {
        let done = done.clone();
        std::thread::spawn(move || -> Result<Seen> {
            let cfg = ben_mesh_flows::Config {
                idle_timeout_ns: 2_000_000_000,
                sweep_interval_ns: 100_000_000,
                ..ben_mesh_flows::Config::default()
            };
            let mut live = Live::new(cfg);
            let (mut frames, mut flows) = (0u64, 0usize);
            let cpu0 = thread_cpu();
            let mut next = Instant::now();
            let mut quiet_since: Option<Instant> = None;
            loop {
                match ring.next_block(Duration::from_millis(20), |f| live.frame(f.ts_ns, f.data))? {
                    Some(r) => {
                        frames += r.frames;
                        live.block(&r);
                        quiet_since = None;
                    }
                    None => {
                        if done.load(Ordering::Relaxed) {
                            let q = *quiet_since.get_or_insert_with(Instant::now);
                            if q.elapsed() > Duration::from_millis(300) {
                                break;
                            }
                        }
                    }
                }
                if Instant::now() >= next {
                    next = Instant::now() + Duration::from_millis(100);
                    flows += live.tick(now_ns()).len();
                }
            }
            flows += live.finish().len();
            let cpu = thread_cpu() - cpu0;
            let corrupt = live.counters().corrupt();
            Ok(Seen {
                frames,
                flows,
                cpu,
                kernel: ring.stats()?,
                corrupt,
            })
        })
    };
    // Warm the neighbour cache, then send.
    let started = Instant::now();
    let (sent, send_errors, send_time) = ring::in_netns(&path(&a), move || {
        let s = std::net::UdpSocket::bind("10.215.0.1:40000")?;
        let buf = vec![0x5a; payload];
        s.send_to(&buf, "10.215.0.2:9")?;
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let (mut ok, mut err) = (0u64, 0u64);
        for i in 0..packets {
            let port = 1000 + (i % 1000) as u16;
            match s.send_to(&buf, ("10.215.0.2", port)) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
        Ok((ok, err, t0.elapsed()))
    })
    .context("sending from the other namespace")?;
    done.store(true, Ordering::Relaxed);
    let seen = capture
        .join()
        .map_err(|_| anyhow::anyhow!("the capture thread panicked"))??;
    let wall = started.elapsed();
    drop(ns);
    // The warm-up datagram and the ARP exchange are frames too.
    let per_packet_ns = seen.cpu.as_nanos() as f64 / seen.frames.max(1) as f64;
    println!(
        "sent {sent} datagrams of {payload} B in {:.2} s ({:.0}/s; {send_errors} refused by the sender's kernel)",
        send_time.as_secs_f64(),
        sent as f64 / send_time.as_secs_f64().max(1e-9)
    );
    println!(
        "kernel: {} packets for the socket, {} dropped (ring full), {} freezes",
        seen.kernel.packets, seen.kernel.drops, seen.kernel.freezes
    );
    println!(
        "sensor: {} frames seen, {} flows, {} undecodable; capture thread {:.2} s CPU = {per_packet_ns:.0} ns/packet ({:.0} packets/CPU-s)",
        seen.frames,
        seen.flows,
        seen.corrupt,
        seen.cpu.as_secs_f64(),
        1e9 / per_packet_ns.max(1e-9)
    );
    let unaccounted = (sent + 1).saturating_sub(seen.frames + seen.kernel.drops);
    if unaccounted > 0 {
        println!("{unaccounted} datagrams neither seen nor counted as dropped by the ring: lost before the socket (the veth's queue)");
    }
    println!(
        "bench sensor: sent {sent} seen {} dropped {} cpu_ns_per_packet {per_packet_ns:.0} wall {:.2} s",
        seen.frames,
        seen.kernel.drops,
        wall.as_secs_f64()
    );
    Ok(())
}
