//! `ben up --demo` through the real binary: the demo app (a second process,
//! attested by the kernel) sends traffic, and the brute-force signal comes
//! back to it.

use std::process::Command;

#[test]
fn ben_up_demo_runs_and_signals_reach_the_app() {
    let dir = std::env::temp_dir().join(format!("ben-up-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args([
            "up",
            "--demo",
            "--duration",
            "9",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("BEN_BLOT_KEY", "up-cli-test-key-0123456789")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("every component acked it"), "{out}");
    assert!(out.contains("demo-app: attested as shop_web/"), "{out}");
    assert!(
        out.contains("SIGNAL auth.bruteforce severity high key [\"203.0.113.66\"]"),
        "{out}"
    );
    // The security path: the bundled port scan, detected, committed by
    // the four validators, its policy checked and acked by the agent, and
    // the feedback loop's record of it.
    for stage in [
        "port scan from 203.0.113.66 replayed",
        "anomaly ",
        "all 4 validators committed it",
        "policy block-203.0.113.66: drop 203.0.113.66",
        "enforcer-1 applied it (dry-run",
        "feedback: anomaly COMMITTED ",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("security path +") && l.contains(stage)),
            "no security path line with {stage:?}:\n{out}"
        );
    }
    let final_line = out
        .lines()
        .find(|l| l.starts_with("ben up: final:"))
        .expect("final status line");
    assert!(
        final_line.contains("rejected 0 | dead letters 0"),
        "{final_line}\n(every dead letter's reason is in the output:)\n{out}"
    );
}

/// Logs reach the user: `ben up` installs a subscriber, so events from the
/// components (here the start event) are written to stderr, one line each,
/// or as JSON objects with `--log-format json`; `RUST_LOG` chooses.
/// `ben up --demo --netns` (root): the security path on live traffic in
/// namespaces the run makes, and removes.
#[test]
fn ben_up_demo_netns_blocks_a_live_scan() {
    let dir = std::env::temp_dir().join(format!("ben-up-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args([
            "up",
            "--demo",
            "--netns",
            "--duration",
            "12",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("BEN_BLOT_KEY", "up-cli-test-key-0123456789")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its LAN is numbered from its pid (ben_mesh_sensor::lab).
    let k = child.id() % 100 * 2 + 20;
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    for stage in [
        "connects to the victim's web server",
        "(a TCP connect scan: ",
        ": portscan (confidence",
        "all 4 validators committed it",
        "applied it (nftables)",
        "feedback: anomaly COMMITTED",
        "now cannot connect (its packets are dropped)",
        "the benign client loaded all its 30 pages throughout",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("security path +") && l.contains(stage)),
            "no security path line with {stage:?}:\n{out}"
        );
    }
    // The namespaces went with the run.
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&format!("svictim{k}"))),
        "namespaces left behind: {left}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ben_up_logs_to_stderr_in_both_formats() {
    let run = |format: &str, filter: Option<&str>| {
        let dir = std::env::temp_dir().join(format!(
            "ben-up-log-{}-{format}-{}",
            std::process::id(),
            filter.unwrap_or("default")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ben"));
        cmd.args([
            "up",
            "--duration",
            "1",
            "--api",
            "127.0.0.1:0",
            "--log-format",
            format,
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env("BEN_BLOT_KEY", "up-cli-test-key-0123456789")
        .env_remove("RUST_LOG");
        if let Some(f) = filter {
            cmd.env("RUST_LOG", f);
        }
        let o = cmd.output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "stderr:\n{err}");
        err
    };
    let human = run("human", None);
    let line = human
        .lines()
        .find(|l| l.contains("started"))
        .unwrap_or_else(|| panic!("no start event on stderr:\n{human}"));
    assert!(
        line.contains("INFO") && line.contains("components="),
        "{line}"
    );
    let json = run("json", None);
    let event: serde_json::Value = json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "started")
        .unwrap_or_else(|| panic!("no JSON start event on stderr:\n{json}"));
    assert_eq!(event["level"], "INFO", "{event}");
    assert!(
        event["fields"]["components"].as_u64().unwrap_or(0) >= 6,
        "{event}"
    );
    let quiet = run("human", Some("off"));
    assert!(
        !quiet.contains("started"),
        "RUST_LOG=off still logged:\n{quiet}"
    );
}
