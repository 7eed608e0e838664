//! `ben bench enforce --entries N`: N block entries through the
//! enforcement agent's scheduler and nftables backend into a network
//! namespace of the bench's own (one atomic batch per 50,000 elements,
//! then read back to check every one is there), beside `nft add element`
//! one entry at a time in the same namespace. Policy verification is
//! timed apart, on a sample (it is per policy, not per batch).
//!
//! Needs root and `nft`. The last line is what scripts read:
//! `applied N entries in S s (one by one: T s)`.

use anyhow::{bail, Context, Result};
use ben_mesh_enforce::backend::Backend;
use ben_mesh_enforce::model::{Allowlist, Net, Policy, Spec};
use ben_mesh_enforce::nft::Nft;
use ben_mesh_enforce::schedule::{self, Scheduler};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

fn target(i: usize) -> Net {
    // 11.0.0.0 upwards: public space, never loopback or multicast.
    Net::host(IpAddr::V4(Ipv4Addr::from(0x0b00_0000u32 + i as u32)))
}

pub fn run(entries: usize, one_by_one: usize) -> Result<()> {
    if entries == 0 || entries > 1_000_000 {
        bail!("--entries must be 1 to 1,000,000");
    }
    let name = format!("benbench{}", std::process::id());
    // Removed when the bench ends, however it ends.
    let _ns = ben_mesh_sensor::lab::Namespaces(vec![name.clone()]);
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "cannot make a network namespace ({}); the bench needs root",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut nft = Nft {
        netns: Some(name.clone()),
    };
    nft.setup(&Allowlist::default())
        .map_err(anyhow::Error::msg)
        .context("setting up the table (is nftables installed?)")?;
    let now = 1_000_000u64;
    let policies: Vec<Policy> = (0..entries)
        .map(|i| Policy {
            id: format!("block-{i}"),
            spec: Spec::BLOCK,
            target: target(i),
            expires_at_ms: now + 3_600_000 + (i as u64 % 600) * 1_000,
            anomalies: vec![format!("an-{i}")],
            height: 1 + i as u64 / 1_000,
            block_time_ms: now,
            scope: vec![],
        })
        .collect();

    // Through the agent: scheduler → batches → nft → read back.
    let t = Instant::now();
    let mut sched = Scheduler::new(
        schedule::Config {
            batch_max: 50_000,
            max_entries: entries,
            max_blocks_per_s: usize::MAX,
            ..Default::default()
        },
        Allowlist::default(),
    );
    for p in policies {
        sched.offer(p, now);
    }
    let scheduled = t.elapsed().as_secs_f64();
    let mut applied = 0;
    while let Some(batch) = sched.batch(now + 1_000) {
        if batch.is_empty() {
            break;
        }
        nft.apply(&batch, &[], now).map_err(anyhow::Error::msg)?;
        applied += batch.len();
    }
    let in_kernel = t.elapsed().as_secs_f64();
    let held = nft.read().map_err(anyhow::Error::msg)?.len();
    let took = t.elapsed().as_secs_f64();
    println!(
        "scheduler {scheduled:.3} s, batches into the kernel {:.3} s, read-back {:.3} s",
        in_kernel - scheduled,
        took - in_kernel
    );
    if held != entries || applied != entries {
        bail!("{applied} entries applied, {held} read back, of {entries}");
    }
    println!("scheduler + nftables batches + read-back: {entries} entries in {took:.3} s");

    // One by one, as a bouncer without batches does.
    let k = one_by_one.min(entries);
    let t = Instant::now();
    for i in 0..k {
        let ip = Ipv4Addr::from(0x0c00_0000u32 + i as u32);
        let out = Command::new("ip")
            .args([
                "netns", "exec", &name, "nft", "add", "element", "inet", "ben", "drop4_in",
            ])
            .arg(format!("{{ {ip} timeout 3600s }}"))
            .output()
            .context("running nft")?;
        if !out.status.success() {
            bail!(
                "nft add element: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let each = t.elapsed().as_secs_f64() / k.max(1) as f64;
    println!(
        "one by one: {k} entries in {:.3} s ({:.2} ms each)",
        each * k as f64,
        each * 1e3
    );
    println!(
        "applied {entries} entries in {took:.3} s (one by one: {:.1} s{})",
        each * entries as f64,
        if k < entries {
            format!(", extrapolated from {k}")
        } else {
            String::new()
        }
    );
    Ok(())
}
