//! `ben bench activation` through the real binary, over the NATS server at
//! 127.0.0.1:4222: five components, each with its own connection and intent
//! agent, fetch, verify, compile and ack two alternating versions; every
//! deploy must finalize and every component run and report the new version
//! (the bench fails otherwise).

use std::process::Command;

#[test]
fn bench_activation_finalizes_over_nats_and_every_component_reports_it() {
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args([
            "bench",
            "activation",
            "--components",
            "5",
            "--rounds",
            "3",
            "--nats",
            "nats://127.0.0.1:4222",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("activation over NATS, 5 components:"))
        .unwrap_or_else(|| panic!("no result line:\n{out}"));
    assert!(line.contains("over 3 rounds"), "{line}");
    assert!(line.contains("every component runs and reports "), "{line}");
    // The last round deployed the first build again (rounds alternate).
    let version = line.rsplit(' ').next().unwrap_or_default();
    assert!(!version.is_empty() && !version.contains(' '), "{line}");
}

#[test]
fn bench_activation_refuses_zero_components_with_an_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args(["bench", "activation", "--components", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at least 1"), "{err}");
}
