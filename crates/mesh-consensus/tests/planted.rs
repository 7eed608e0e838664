//! The checker catches planted bugs: with each one the simulation must
//! find a breach within a bounded number of seeds, and says after how
//! many. Runs only with `--features planted-bugs` (`scripts/test` does).
#![cfg(feature = "planted-bugs")]

use ben_mesh_consensus::planted::{plant, Bug};
use ben_mesh_consensus::sim::{run, Scenario};

/// Seeds (4 validators, then 7, alternating) until the first breach.
fn seeds_to_catch(bug: Bug, limit: u64) -> Option<(u64, usize, Vec<String>)> {
    plant(Some(bug));
    let found = (0..limit).find_map(|i| {
        let n = if i % 2 == 0 { 4 } else { 7 };
        let out = run(&Scenario::from_seed(i / 2, n), false);
        (!out.violations.is_empty()).then(|| (i + 1, n, out.violations))
    });
    plant(None);
    found
}

/// Not caught yet: 20,000 random-fault seeds (2026-12-04) did not find
/// the schedule this bug needs (a QC that only some saw, a TC whose
/// highest QC is below it, and a later certified child of the same
/// block). Kept to run with `--ignored` while the scenarios grow a
/// targeted scheduler.
#[test]
#[ignore = "not caught in 20,000 seeds yet; see the doc comment"]
fn dropping_the_consecutive_round_check_is_caught() {
    let (seeds, n, v) = seeds_to_catch(Bug::NoConsecutiveCheck, 20_000)
        .expect("20,000 seeds did not catch commits without the consecutive-round check");
    println!("no consecutive-round check: caught after {seeds} seeds ({n} validators): {v:?}");
}

#[test]
fn voting_before_persisting_is_caught() {
    let (seeds, n, v) = seeds_to_catch(Bug::VoteBeforePersist, 20_000)
        .expect("20,000 seeds did not catch a vote sent before its safety state was durable");
    println!("vote before persist: caught after {seeds} seeds ({n} validators): {v:?}");
    assert!(
        v.iter().any(|v| v.contains("two votes")),
        "the breach found is not the double vote: {v:?}"
    );
}
