//! benctl end to end on the example bundle: build, test, eval, and the lock
//! rules, through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn benctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_benctl"))
        .args(args)
        .env("BEN_BLOT_KEY", "cli-test-key-0123456789abcdef")
        .output()
        .expect("run benctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A private copy of examples/shop (build writes ben.lock into it).
fn shop_copy() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ben-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "ben.toml",
        "ben.lock",
        "shop.bspec",
        "tests.bspec",
        "records.jsonl",
    ] {
        std::fs::copy(root().join("examples/shop").join(f), dir.join(f)).unwrap();
    }
    dir
}

#[test]
fn eval_shop_records() {
    let shop = root().join("examples/shop");
    let o = benctl(&[
        "eval",
        shop.to_str().unwrap(),
        "--input",
        shop.join("records.jsonl").to_str().unwrap(),
        "--contract",
        "shop_web",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    // The pack's declared behaviour, record by record.
    assert_eq!(lines[0]["flags"], serde_json::json!([]));
    assert_eq!(lines[0]["route"], "lucius");
    assert_eq!(
        lines[1]["flags"],
        serde_json::json!(["admin_path", "login_failed"])
    );
    assert_eq!(lines[1]["bits"], "0x5");
    assert_eq!(lines[1]["meta"]["risk"], "high");
    assert_eq!(lines[1]["route"], "spine");
    assert_eq!(
        lines[2]["flags"],
        serde_json::json!(["server_error", "internal"])
    );
    assert_eq!(lines[2]["record"]["user"]["card"], "***************1111");
    assert_eq!(lines[3]["flags"], serde_json::json!(["login_failed"]));
    assert_eq!(
        lines[4]["error"],
        "field `client.ip`: expected an IP address"
    );
    assert_eq!(lines[4]["line"], 5);
    assert_eq!(lines[5]["line"], 6);
    // Every processed record names the intent version (invariant 4).
    for l in &lines[..4] {
        assert!(l["intent"].as_str().is_some_and(|v| v.len() == 16), "{l}");
    }
    // No raw PII leaves (invariant 5).
    for pii in [
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
        "4111 1111 1111 1111",
        "5500 0000 0000 0004",
        "415 555 0100",
    ] {
        assert!(!out.contains(pii), "{pii} leaked:\n{out}");
    }
    insta::assert_snapshot!("eval_shop", out);
}

#[test]
fn eval_schema_form_and_migration_from_v1() {
    let shop = root().join("examples/shop");
    let dir = std::env::temp_dir().join(format!("ben-cli-v1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("v1.jsonl");
    std::fs::write(
        &input,
        "{\"ts\":\"2026-01-01T00:00:00Z\",\"method\":\"GET\",\"path\":\"/admin\",\"status\":500,\"client\":{\"ip\":\"10.0.0.1\"},\"user\":{\"email\":\"x@example.com\"},\"extra\":\"call 555-0100\"}\nnot json\n",
    )
    .unwrap();
    let o = benctl(&[
        "eval",
        shop.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--schema",
        "http.request@v1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0]["flags"],
        serde_json::json!(["admin_path", "server_error", "internal"])
    );
    assert_eq!(
        lines[0]["record"]["bytes"], 0,
        "migrate v1 -> v2 sets bytes = 0"
    );
    assert!(
        lines[0]["record"].get("extra").is_some(),
        "undeclared fields are scanned and kept"
    );
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .starts_with("line is not JSON"));
}

#[test]
fn build_prints_digest_and_is_reproducible() {
    let a = shop_copy();
    let o1 = benctl(&["build", a.to_str().unwrap(), "--json"]);
    assert!(o1.status.success(), "{}", stderr(&o1));
    let j1: serde_json::Value = serde_json::from_str(&stdout(&o1)).unwrap();
    // Same sources with other whitespace, comments and file names: same digest.
    let b = shop_copy();
    let src = std::fs::read_to_string(b.join("shop.bspec")).unwrap();
    std::fs::remove_file(b.join("shop.bspec")).unwrap();
    std::fs::write(
        b.join("zz_renamed.bspec"),
        format!("# a comment\n\n{}", src.replace("  flag", "      flag")),
    )
    .unwrap();
    let o2 = benctl(&["build", b.to_str().unwrap(), "--json"]);
    let j2: serde_json::Value = serde_json::from_str(&stdout(&o2)).unwrap();
    assert_eq!(j1["digest"], j2["digest"]);
    assert_eq!(j1["lock_written"], false, "the committed lock is current");
    // A changed rule changes the digest.
    std::fs::write(
        b.join("zz_renamed.bspec"),
        src.replace("status >= 500", "status >= 501"),
    )
    .unwrap();
    let o3 = benctl(&["build", b.to_str().unwrap(), "--json"]);
    let j3: serde_json::Value = serde_json::from_str(&stdout(&o3)).unwrap();
    assert_ne!(j1["digest"], j3["digest"]);
}

#[test]
fn removed_flag_retires_its_bit_and_new_flag_gets_a_fresh_one() {
    let d = shop_copy();
    let src = std::fs::read_to_string(d.join("shop.bspec")).unwrap();
    let src = src
        .replace(
            "  flag server_error = status >= 500\n",
            "  flag slow = bytes > 100000\n",
        )
        .replace(
            "admin_path or server_error or login_failed",
            "admin_path or login_failed",
        );
    std::fs::write(d.join("shop.bspec"), src).unwrap();
    std::fs::write(d.join("tests.bspec"), "").unwrap();
    let locked = benctl(&["build", d.to_str().unwrap(), "--locked"]);
    assert_eq!(
        locked.status.code(),
        Some(1),
        "--locked refuses a stale lock"
    );
    let o = benctl(&["build", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("lock     + web_guard.slow = bit 4"), "{out}");
    assert!(
        out.contains("lock     - web_guard.server_error retires bit 1"),
        "{out}"
    );
    let lock = std::fs::read_to_string(d.join("ben.lock")).unwrap();
    assert!(
        lock.contains("retired = [{ name = \"server_error\", bit = 1 }]"),
        "{lock}"
    );
}

#[test]
fn hand_edited_lock_is_refused() {
    let d = shop_copy();
    let lock = std::fs::read_to_string(d.join("ben.lock")).unwrap();
    std::fs::write(
        d.join("ben.lock"),
        lock.replace("internal = 3", "internal = 0"),
    )
    .unwrap();
    let o = benctl(&["build", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("ben.lock is inconsistent: pack `web_guard`: bit 0 is claimed by both"),
        "{err}"
    );
}

#[test]
fn failing_test_shows_expected_and_actual() {
    let d = shop_copy();
    let t = std::fs::read_to_string(d.join("tests.bspec")).unwrap();
    std::fs::write(
        d.join("tests.bspec"),
        t.replace(
            "expect flags == [server_error, internal]",
            "expect flags == [server_error]",
        ),
    )
    .unwrap();
    let o = benctl(&["test", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("test a server error stays on the spine ... FAILED"),
        "{out}"
    );
    assert!(out.contains("expected: == [\"server_error\"]"), "{out}");
    assert!(out.contains("actual:   [internal, server_error]"), "{out}");
    assert!(out.contains("3 passed, 1 failed"), "{out}");
}

#[test]
fn diagnostics_as_json() {
    let d = shop_copy();
    std::fs::write(
        d.join("bad.bspec"),
        "pack p2 on http.request v2 {\n  flag x = stauts > 1\n}\n",
    )
    .unwrap();
    let o = benctl(&["build", d.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let diags = j["diagnostics"].as_array().unwrap();
    let unknown = diags
        .iter()
        .find(|d| d["code"] == "E0204")
        .expect("unknown field diagnostic");
    assert_eq!(unknown["line"], 2);
    assert_eq!(unknown["col"], 12);
    assert_eq!(unknown["help"], "did you mean `status`?");
}

#[test]
fn not_a_bundle_is_a_clear_error() {
    let o = benctl(&["build", "/nonexistent/bundle"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("has no ben.toml"), "{}", stderr(&o));
}

/// Completion scripts name every command; `--help` shows examples; the
/// one JSON flag is `--json` (the old `--format json` is refused).
#[test]
fn completions_help_examples_and_one_json_flag() {
    for shell in ["bash", "zsh", "fish"] {
        let o = benctl(&["completions", shell]);
        assert!(o.status.success(), "{}", stderr(&o));
        let script = stdout(&o);
        for cmd in ["stage", "deploy", "dashboard", "dlq", "versions"] {
            assert!(script.contains(cmd), "{shell} completions lack {cmd}");
        }
    }
    // A script that could not be written (a full disk) is an error.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_benctl"))
        .args(["completions", "bash"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    let help = stdout(&benctl(&["--help"]));
    assert!(
        help.contains("Examples:") && help.contains("benctl deploy VERSION --wait"),
        "{help}"
    );
    let o = benctl(&["build", "examples/nowhere", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--format"), "{}", stderr(&o));
}
