//! The seeded simulation over many seeds (see `ben_mesh_consensus::sim`
//! for what each run injects and checks).
//!
//! `BEN_SIM_SEEDS=N` runs N seeds per validator count (default 5,000, so
//! 10,000 in all); `BEN_SIM_SEED=S BEN_SIM_N=4` replays one seed with its
//! trace.

use ben_mesh_consensus::sim::{run, Scenario};
use std::time::Instant;

fn seeds() -> u64 {
    std::env::var("BEN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000)
}

/// Runs `count` seeds for `n` validators on every core; panics with the
/// first failing seed's trace.
fn sweep(n: usize, count: u64) {
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get()) as u64;
    let results: Vec<_> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                sc.spawn(move || {
                    let mut failed = vec![];
                    let (mut worst, mut heights, mut msgs) = (0u64, 0u64, 0u64);
                    let mut seed = t;
                    while seed < count {
                        let out = run(&Scenario::from_seed(seed, n), false);
                        if !out.violations.is_empty() {
                            failed.push((seed, out.violations));
                        }
                        worst = worst.max(out.recovery.unwrap_or(0));
                        heights += out.height;
                        msgs += out.delivered;
                        seed += threads;
                    }
                    (failed, worst, heights, msgs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sim thread"))
            .collect()
    });
    let mut failed: Vec<_> = results.iter().flat_map(|r| r.0.clone()).collect();
    failed.sort();
    let worst = results.iter().map(|r| r.1).max().unwrap_or(0);
    let heights: u64 = results.iter().map(|r| r.2).sum();
    let msgs: u64 = results.iter().map(|r| r.3).sum();
    println!(
        "{n} validators: {count} seeds in {:.1} s, {} failed; mean height {:.1}, {:.0} messages per seed; slowest recovery after the heal {worst} ms",
        started.elapsed().as_secs_f64(),
        failed.len(),
        heights as f64 / count as f64,
        msgs as f64 / count as f64
    );
    if let Some((seed, v)) = failed.first() {
        let out = run(&Scenario::from_seed(*seed, n), true);
        panic!(
            "{} of {count} seeds failed with {n} validators; first: seed {seed}: {v:#?}\n{:#?}\nlast events:\n{}\nreplay: BEN_SIM_SEED={seed} BEN_SIM_N={n} cargo test -p ben-mesh-consensus --test sim replay -- --nocapture",
            failed.len(),
            Scenario::from_seed(*seed, n),
            out.trace.join("\n")
        );
    }
}

#[test]
fn four_validators_on_thousands_of_seeds() {
    sweep(4, seeds());
}

#[test]
fn seven_validators_on_thousands_of_seeds() {
    sweep(7, seeds());
}

/// Replays `BEN_SIM_SEED` (with `BEN_SIM_N` validators) and prints its
/// trace; without it, replays seed 1 and checks the replay is identical.
#[test]
fn replay() {
    let seed = std::env::var("BEN_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let n = std::env::var("BEN_SIM_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let s = Scenario::from_seed(seed.unwrap_or(1), n);
    let a = run(&s, true);
    if seed.is_some() {
        println!("{s:#?}\n{}", a.trace.join("\n"));
        assert!(a.violations.is_empty(), "{:#?}", a.violations);
    }
    let b = run(&s, true);
    assert_eq!(a.trace, b.trace, "the same seed ran differently");
    assert_eq!(
        (a.height, a.delivered, a.end),
        (b.height, b.delivered, b.end)
    );
    assert!(!a.trace.is_empty());
}
