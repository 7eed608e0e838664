//! `ben flows` through the real binary on a real tcpdump capture.

use std::path::Path;
use std::process::Command;

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mesh-flows/tests/data/loopback-http.pcap")
        .display()
        .to_string()
}

#[test]
fn flows_csv_from_a_capture() {
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args(["flows", &fixture()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &header[..6],
        [
            "Flow ID",
            "Source IP",
            "Source Port",
            "Destination IP",
            "Protocol",
            "Timestamp"
        ]
    );
    assert_eq!(header.last(), Some(&"Label"));
    assert_eq!(
        header.len(),
        6 + 78 + 1,
        "flow id + endpoints + 78 CICIDS2017 features + label"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.len() == header.len()));
    assert!(
        rows.iter().any(|r| r[4] == "6"),
        "the capture holds TCP flows"
    );
}

#[test]
fn flows_jsonl_and_bad_input() {
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args(["flows", &fixture(), "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(o.status.success());
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("every line is JSON");
        assert!(v.get("features").is_some(), "{l}");
    }
    let dir = std::env::temp_dir().join(format!("ben-flows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args(["flows", junk.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "a file that is not a capture is an error"
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).is_empty(),
        "and it says why"
    );
}

/// `ben completions SHELL` prints a script naming the subcommands, and
/// `--help` shows examples.
#[test]
fn completions_and_help_examples() {
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = String::from_utf8_lossy(&o.stdout);
    for cmd in ["up", "cluster", "bench", "flows", "detect"] {
        assert!(script.contains(cmd), "no {cmd} in the completions");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_ben"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("Examples:") && help.contains("ben up --demo"),
        "{help}"
    );
}
