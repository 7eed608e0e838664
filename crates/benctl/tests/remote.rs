//! benctl's remote commands through the real binary, against Ben's control
//! plane (ledger service + HTTP API) started in this test with simulated
//! components on an in-process bus.

use ben_bus::{Bus, InProcessBus};
use ben_control::testkit::{self, Behaviour, SimComponent, SimSpec};
use ben_control::{Config, Deps, SystemClock};
use ben_store::{FileStore, Store};
use ben_wire::{Keyring, Signer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ben-remote-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn benctl(args: &[&str], api: Option<&str>) -> Output {
    benctl_with(args, api, &[])
}

/// benctl with `BEN_API` = `api` and the other variables `env`; none of
/// the caller's `BEN_API*` / `BEN_DATA_DIR`, and run in a fresh directory
/// (no `.ben/` to find a token in).
fn benctl_with(args: &[&str], api: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_benctl"));
    c.args(args)
        .env_remove("BEN_API")
        .env_remove("BEN_API_TOKEN")
        .env_remove("BEN_DATA_DIR")
        .current_dir(std::env::temp_dir());
    if let Some(a) = api {
        c.env("BEN_API", a);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run benctl")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Ben {
    rt: tokio::runtime::Runtime,
    api: String,
    /// The data dir, where the control plane wrote api.token.
    dir: PathBuf,
    bus: Arc<InProcessBus>,
    store: Arc<FileStore>,
    ledger_signer: Arc<Signer>,
    sims: Vec<SimComponent>,
}

impl Ben {
    fn start(name: &str) -> Ben {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tmp(name);
        let bus = Arc::new(InProcessBus::default());
        let store = Arc::new(FileStore::open(dir.join("store")).unwrap());
        let ledger_signer = Arc::new(Signer::from_secret([3; 32]));
        // Each simulated component signs as itself (testkit::sim_signer).
        let keyring = testkit::sim_keyring(4);
        let deps = Deps {
            bus: bus.clone(),
            store: store.clone(),
            signer: ledger_signer.clone(),
            keyring,
            clock: Arc::new(SystemClock),
        };
        // As `ben up` does: the token made in the data dir on first start.
        let mut random = [0x5a; 32];
        for (i, b) in name.bytes().enumerate() {
            random[i % 32] ^= b;
        }
        let token = ben_control::auth::token_file(&dir, random).unwrap();
        let cfg = Config {
            data_dir: dir.clone(),
            api_addr: "127.0.0.1:0".parse().unwrap(),
            api_token: Some(token),
            prepare_timeout_ms: 2_000,
            roles: ben_control::testkit::roles(),
            ..Config::default()
        };
        let handle = rt.block_on(ben_control::start(cfg, deps)).unwrap();
        let api = format!("http://{}", handle.api_addr());
        // The handle lives as long as the runtime.
        std::mem::forget(handle);
        Ben {
            rt,
            api,
            dir,
            bus,
            store,
            ledger_signer,
            sims: Vec::new(),
        }
    }

    fn sim(&mut self, id: &str, role: &str, behaviour: Behaviour) {
        let mut ledger_keys = Keyring::new();
        ledger_keys.trust(
            ben_wire::LEDGER_ID,
            ben_wire::Role::Ledger,
            self.ledger_signer.public(),
        );
        let s = self
            .rt
            .block_on(testkit::spawn(
                SimSpec {
                    id: id.into(),
                    role: role.into(),
                    behaviour,
                    heartbeat_every: Duration::from_millis(100),
                },
                self.bus.clone() as Arc<dyn Bus>,
                self.store.clone() as Arc<dyn Store>,
                Arc::new(testkit::sim_signer(id)),
                ledger_keys,
                Arc::new(SystemClock),
            ))
            .unwrap();
        self.sims.push(s);
    }

    /// benctl as a user runs it against a `ben up --data-dir DIR`: with
    /// `BEN_DATA_DIR=DIR`, where it finds the token.
    fn ctl(&self, args: &[&str], api: Option<&str>) -> Output {
        let dir = self.dir.to_str().unwrap();
        benctl_with(args, api, &[("BEN_DATA_DIR", dir)])
    }

    /// Waits until `n` components are registered (via `benctl status`).
    fn wait_registered(&self, n: usize) {
        for _ in 0..100 {
            let o = self.ctl(&["status", "--json", "--api", &self.api], None);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            if v["components"].as_array().map(Vec::len) == Some(n) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{n} components never registered");
    }
}

#[test]
fn stage_deploy_wait_status_history_against_the_api() {
    let mut ben = Ben::start("flow");
    for (id, role) in [
        ("sidecar-1", "sidecar"),
        ("spine-1", "spine"),
        ("detector-1", "detector"),
    ] {
        ben.sim(id, role, Behaviour::Healthy);
    }
    let shop = root().join("examples/shop");
    let version = ben_intent::Bundle::load(&shop)
        .unwrap()
        .build()
        .unwrap()
        .version;

    let o = ben.ctl(&["stage", shop.to_str().unwrap(), "--api", &ben.api], None);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains(&format!("staged   {version}")),
        "{}",
        out(&o)
    );
    assert!(
        out(&o).contains("uploaded, 0 already in the store"),
        "{}",
        out(&o)
    );
    // Again: nothing new; BEN_API instead of --api.
    let o = ben.ctl(&["stage", shop.to_str().unwrap()], Some(&ben.api));
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("already staged"), "{}", out(&o));

    // Staged, not active yet.
    let o = ben.ctl(&["versions", "--api", &ben.api], None);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).starts_with(&format!("  {version}")), "{}", out(&o));
    assert!(out(&o).contains("shop"), "{}", out(&o));

    ben.wait_registered(3);
    let o = ben.ctl(&["deploy", &version, "--wait", "--api", &ben.api], None);
    assert!(o.status.success(), "{}\n{}", out(&o), err(&o));
    // Active now: marked.
    let vs = ben.ctl(&["versions", "--api", &ben.api], None);
    assert!(
        out(&vs).starts_with(&format!("* {version}")),
        "{}",
        out(&vs)
    );
    let vs = ben.ctl(&["versions", "--json", "--api", &ben.api], None);
    let v: serde_json::Value = serde_json::from_slice(&vs.stdout).unwrap();
    assert_eq!(v[0]["active"], true, "{v}");
    let text = out(&o);
    assert!(text.contains(&format!("{version} finalized")), "{text}");
    for id in ["sidecar-1", "spine-1", "detector-1"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("  {id} ")))
            .unwrap_or_else(|| panic!("no line for {id}: {text}"));
        assert!(line.contains("active"), "{line}");
    }

    let o = ben.ctl(&["status", "--api", &ben.api], None);
    assert!(o.status.success());
    assert!(
        out(&o).contains(&format!("active   {version}")),
        "{}",
        out(&o)
    );
    assert!(out(&o).contains("components 3 registered"), "{}", out(&o));
    let o = ben.ctl(&["status", &version, "--api", &ben.api], None);
    assert!(out(&o).contains(", active"), "{}", out(&o));

    let o = ben.ctl(&["history", "--api", &ben.api], None);
    assert!(o.status.success());
    let h = out(&o);
    assert!(h.lines().next().unwrap().contains("staged"), "{h}");
    assert!(h.lines().last().unwrap().ends_with("finalized"), "{h}");

    // Nothing to roll back to: refused with the reason, exit 1.
    let o = ben.ctl(&["rollback", "--api", &ben.api], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("no earlier finalized version"),
        "{}",
        err(&o)
    );
    // Redeploying the active version: refused.
    let o = ben.ctl(&["deploy", &version, "--api", &ben.api], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("already active"), "{}", err(&o));

    // A second version that one component cannot prepare: deploy --wait
    // reports the abort and who failed why, exits 1; the first stays active.
    let two = tmp("shop-two");
    for f in ["ben.lock", "shop.bspec", "tests.bspec"] {
        std::fs::copy(shop.join(f), two.join(f)).unwrap();
    }
    std::fs::write(
        two.join("ben.toml"),
        "[bundle]\nname = \"shop\"\nversion = \"shop-2\"\n",
    )
    .unwrap();
    let o = ben.ctl(&["stage", two.to_str().unwrap(), "--api", &ben.api], None);
    assert!(o.status.success(), "{}", err(&o));
    ben.sim(
        "lucius-1",
        "lucius",
        Behaviour::FailPrepare("disk full".into()),
    );
    ben.wait_registered(4);
    let o = ben.ctl(&["deploy", "shop-2", "--wait", "--api", &ben.api], None);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = out(&o);
    assert!(text.contains("shop-2 aborted"), "{text}");
    assert!(
        text.contains("reason   lucius-1 failed to prepare: disk full"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("  lucius-1 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("failed") && line.ends_with("disk full"),
        "{line}"
    );
    let o = ben.ctl(&["status", "--api", &ben.api], None);
    assert!(
        out(&o).contains(&format!("active   {version}")),
        "{}",
        out(&o)
    );
}

#[test]
fn unreachable_ben_is_a_clear_error() {
    let o = benctl(&["status", "--api", "http://127.0.0.1:9"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("cannot reach Ben at http://127.0.0.1:9: is `ben up` running?"),
        "{}",
        err(&o)
    );
    let o = benctl(&["deploy", "v1", "--wait"], Some("http://127.0.0.1:9/"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("cannot reach Ben at http://127.0.0.1:9:"),
        "{}",
        err(&o)
    );
}

#[test]
fn stage_refuses_a_stale_lock_before_contacting_ben() {
    let dir = tmp("stale-lock");
    let shop = root().join("examples/shop");
    for f in ["ben.toml", "shop.bspec", "tests.bspec"] {
        std::fs::copy(shop.join(f), dir.join(f)).unwrap();
    }
    // No ben.lock: building would assign bits that are not committed.
    let o = benctl(
        &[
            "stage",
            dir.to_str().unwrap(),
            "--api",
            "http://127.0.0.1:9",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("ben.lock is out of date"), "{}", err(&o));
}

#[test]
fn without_the_token_benctl_is_refused_and_says_where_it_looked() {
    let ben = Ben::start("token");
    // No token anywhere: 401, exit 1, and where benctl looked.
    let o = benctl(&["status", "--api", &ben.api], None);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = err(&o);
    assert!(e.contains("needs Ben's API token"), "{e}");
    assert!(e.contains("$BEN_API_TOKEN (unset)"), "{e}");
    assert!(e.contains(".ben/api.token (the default data dir)"), "{e}");
    // A wrong token: refused, naming where that token came from.
    let o = benctl_with(
        &["deploy", "v1", "--api", &ben.api],
        None,
        &[("BEN_API_TOKEN", "0123456789abcdef-wrong")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("does not match"), "{}", err(&o));
    assert!(err(&o).contains("from $BEN_API_TOKEN"), "{}", err(&o));
    // Each way a user gives it works: --data-dir, $BEN_DATA_DIR, --token,
    // $BEN_API_TOKEN.
    let dir = ben.dir.to_str().unwrap();
    let token = std::fs::read_to_string(ben.dir.join("api.token")).unwrap();
    for o in [
        benctl(&["status", "--api", &ben.api, "--data-dir", dir], None),
        ben.ctl(&["status", "--api", &ben.api], None),
        benctl(&["status", "--api", &ben.api, "--token", &token], None),
        benctl_with(
            &["status", "--api", &ben.api],
            None,
            &[("BEN_API_TOKEN", &token)],
        ),
    ] {
        assert!(o.status.success(), "{}", err(&o));
        assert!(out(&o).contains("active   none"), "{}", out(&o));
    }
}

#[test]
fn bee_list_and_revoke_through_the_api() {
    let ben = Ben::start("bees");
    let o = ben.ctl(&["bee", "list", "--api", &ben.api], None);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("bees     0 issued"), "{}", out(&o));
    assert!(out(&o).contains("revoked  0"), "{}", out(&o));
    let o = ben.ctl(
        &[
            "bee",
            "revoke",
            "shop_web/1000/abcdef0123456789",
            "--api",
            &ben.api,
        ],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("revoked  shop_web/1000/abcdef0123456789"),
        "{}",
        out(&o)
    );
    let o = ben.ctl(&["bee", "list", "--json", "--api", &ben.api], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["revoked"][0], "shop_web/1000/abcdef0123456789", "{v}");
    // Kept in the data dir, private.
    let kept = std::fs::read_to_string(ben.dir.join("revoked-bees")).unwrap();
    assert_eq!(kept.trim(), "shop_web/1000/abcdef0123456789");
    // Again: said so; a malformed subject: refused with the reason.
    let o = ben.ctl(
        &[
            "bee",
            "revoke",
            "shop_web/1000/abcdef0123456789",
            "--api",
            &ben.api,
        ],
        None,
    );
    assert!(out(&o).contains("already revoked"), "{}", out(&o));
    let o = ben.ctl(&["bee", "revoke", "nonsense", "--api", &ben.api], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("is not a BEE subject"), "{}", err(&o));
    // Without the token: refused, nothing revoked.
    let o = benctl(&["bee", "revoke", "x/1/ff", "--api", &ben.api], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(!std::fs::read_to_string(ben.dir.join("revoked-bees"))
        .unwrap()
        .contains("x/1/ff"));
}

/// `benctl dlq`: the dead letters the control plane saw, with who refused
/// what and why; one that does not verify is counted apart, never shown.
#[test]
fn dead_letters_are_read_with_their_reasons() {
    let ben = Ben::start("dlq");
    let spine = testkit::sim_signer("spine-0");
    let letter = ben_wire::pb::DeadLetter {
        subject: "ben.data.spine".into(),
        reason: "record refused: field `amount` is not a number".into(),
        at_ns: ben_time::now_ns(),
        sender: "spine-0".into(),
        size: 42,
        key_id: String::new(),
    };
    let forged = ben_wire::pb::DeadLetter {
        sender: "spine-1".into(),
        ..letter.clone()
    };
    ben.rt.block_on(async {
        ben.bus
            .publish(ben_control::subjects::DLQ, spine.seal_bytes(&letter))
            .await
            .unwrap();
        // Signed by spine-0 in spine-1's name.
        ben.bus
            .publish(ben_mesh_wire::DLQ_SUBJECT, spine.seal_bytes(&forged))
            .await
            .unwrap();
    });
    let mut v = serde_json::Value::Null;
    for _ in 0..50 {
        let o = ben.ctl(&["dlq", "--json", "--api", &ben.api], None);
        assert!(o.status.success(), "{}", err(&o));
        v = serde_json::from_slice(&o.stdout).unwrap();
        if v["total"] == 1 && v["unverified"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        (v["total"].as_u64(), v["unverified"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let o = ben.ctl(&["dlq", "--api", &ben.api], None);
    let text = out(&o);
    assert!(
        text.contains("dead letters  1 in all (1 did not verify"),
        "{text}"
    );
    assert!(
        text.contains("spine-0        refused ben.data.spine (42 bytes): record refused: field `amount` is not a number"),
        "{text}"
    );
    // Without the token: refused.
    let o = benctl(&["dlq", "--api", &ben.api], None);
    assert_eq!(o.status.code(), Some(1));
}
