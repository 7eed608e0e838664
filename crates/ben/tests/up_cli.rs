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
    let final_line = out
        .lines()
        .find(|l| l.starts_with("ben up: final:"))
        .expect("final status line");
    assert!(
        final_line.contains("rejected 0 | dead letters 0"),
        "{final_line}\n(every dead letter's reason is in the output:)\n{out}"
    );
}
