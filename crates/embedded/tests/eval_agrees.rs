//! The running system and `benctl eval` give the same answer for every
//! sample record of `examples/shop`: the same route (a spine or Lucius),
//! the same flags, and a refusal where eval reports an error. The v2 app
//! records (`records.jsonl`, contract `shop_web`) and the v1 records
//! (`records-v1.jsonl`, from an app whose contract still writes
//! `http.request v1`: migrated to v2 before they are routed and evaluated)
//! go through `ben up` over the real socket, and through
//! `ben_intent::Evaluator`, which is what `benctl eval` runs.

use ben_bee::Selector;
use ben_client::Client;
use ben_embedded::{Config, System};
use ben_intent::{Evaluator, InputKind};
use ben_wire::pb;
use prost::Message;
use serde_json::Value as J;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn shop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop")
}

/// An app still on the old schema: an identity contract into
/// `http.request v1`, so its records enter as v1 (as records from an
/// app not yet moved to v2 do).
const LEGACY: &str = r#"
contract shop_legacy -> http.request v1 {
  ts = in.ts
  method = in.method
  path = in.path
  status = in.status
  client.ip = in.client.ip
  user.email = in.user.email
  user.card = in.user.card
  note = in.note
}
"#;

/// examples/shop plus the legacy app.
fn bundle() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ben-eval-agrees-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["ben.toml", "shop.bspec", "tests.bspec", "ben.lock"] {
        std::fs::copy(shop().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("legacy.bspec"), LEGACY).unwrap();
    let mut toml = std::fs::read_to_string(dir.join("ben.toml")).unwrap();
    toml.push_str(
        "\n[[apps]]\nname = \"shop_legacy\"\ncontract = \"shop_legacy\"\nselector = { uid = 1000, exe = \"/usr/local/bin/shop-legacy\" }\n",
    );
    std::fs::write(dir.join("ben.toml"), toml).unwrap();
    dir
}

fn me(app: &str) -> Selector {
    Selector::this_process(app).unwrap()
}

/// What happened to one record: refused, or routed with these flags.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Error,
    Routed { route: String, flags: Vec<String> },
}

fn routed(route: &str, flags: impl IntoIterator<Item = String>) -> Outcome {
    let mut flags: Vec<String> = flags.into_iter().collect();
    flags.sort();
    Outcome::Routed {
        route: route.into(),
        flags,
    }
}

/// `benctl eval`'s answer for one line.
fn eval(ev: &Evaluator, kind: InputKind, line: &J) -> Outcome {
    match ev.eval_line(kind, line) {
        Ok(out) => routed(
            out["route"].as_str().unwrap(),
            out["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string()),
        ),
        Err(_) => Outcome::Error,
    }
}

fn lines(file: &str) -> Vec<J> {
    std::fs::read_to_string(shop().join(file))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The index of a record in its app's batch: the last part of its id.
fn index(id: &str) -> usize {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_system_agrees_with_eval_on_every_shop_record() {
    let dir = std::env::temp_dir().join(format!("ben-eval-agrees-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("BEN_BLOT_KEY", "e2e test key 0123456789abcdef");
    let bundle = bundle();

    // What eval says.
    let built = ben_intent::Bundle::load(&bundle).unwrap().build().unwrap();
    let key = ben_intent::keys::load_blot_key("env:BEN_BLOT_KEY", None, &dir).unwrap();
    let ev = Evaluator::new(&built, Some(key));
    let web = ev.input_kind(Some("shop_web"), None).unwrap();
    let legacy = ev.input_kind(Some("shop_legacy"), None).unwrap();
    let v1 = ev.input_kind(None, Some("http.request@v1")).unwrap();
    let apps = [
        ("shop_web", lines("records.jsonl"), web),
        ("shop_legacy", lines("records-v1.jsonl"), legacy),
    ];
    let mut want: BTreeMap<(&str, usize), Outcome> = BTreeMap::new();
    for (app, recs, kind) in &apps {
        for (i, r) in recs.iter().enumerate() {
            want.insert((*app, i), eval(&ev, *kind, r));
        }
    }
    // The v1 records in schema form (`benctl eval --schema
    // http.request@v1`) get the same answers as through the contract.
    for (i, r) in apps[1].1.iter().enumerate() {
        assert_eq!(eval(&ev, v1, r), want[&("shop_legacy", i)], "v1 line {i}");
    }
    // The samples cover what is compared: both routes from both
    // versions, flags on a Lucius record, and refusals.
    for app in ["shop_web", "shop_legacy"] {
        for route in ["spine", "lucius"] {
            assert!(
                want.iter().any(|((a, _), o)| *a == app
                    && matches!(o, Outcome::Routed { route: r, .. } if r == route)),
                "{app} has no sample record routed to {route}: {want:?}"
            );
        }
    }
    assert!(want.values().any(|o| matches!(o,
        Outcome::Routed { route, flags } if route == "lucius" && !flags.is_empty())));
    assert!(want.values().any(|o| *o == Outcome::Error));

    // What the running system does.
    let sys = System::start(Config {
        data_dir: dir,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        extra_selectors: vec![me("shop_web"), me("shop_legacy")],
        ..Config::default()
    })
    .await
    .expect("ben up starts");
    let version = sys.deploy_dir(&bundle).await.expect("deploy finalizes");
    assert_eq!(version, built.version);
    let mut downstream = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ben.data.detector.*", None)
        .await
        .unwrap();
    let mut got: BTreeMap<(&str, usize), Outcome> = BTreeMap::new();
    let mut accepted = 0;
    for (app, recs, _) in &apps {
        let mut client = Client::connect(sys.cfg.socket_path(), app)
            .await
            .expect("attested");
        let acc = client.send(recs).await.unwrap();
        accepted += acc.accepted as usize;
        for e in &acc.errors {
            got.insert((*app, e.index as usize), Outcome::Error);
        }
    }
    let app_of = |a: &str| -> &'static str {
        match a {
            "shop_web" => "shop_web",
            "shop_legacy" => "shop_legacy",
            other => panic!("record of app {other}"),
        }
    };
    let lucius = sys.stats.shared.lucius.get().cloned().expect("a Lucius");
    let mut spine = 0;
    for _ in 0..500 {
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(10), downstream.next()).await
        {
            for r in pb::RecordBatch::decode(m.payload.as_slice())
                .unwrap()
                .records
            {
                assert_eq!(r.schema_version, 2, "spines emit the current version");
                spine += 1;
                got.insert((app_of(&r.app), index(&r.id)), routed("spine", r.flags));
            }
        }
        if spine + lucius.count() >= accepted {
            break;
        }
    }
    for o in lucius
        .query(&ben_lucius::Query {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
    {
        assert_eq!(o.schema_version, 2, "Lucius stores the current version");
        got.insert((app_of(&o.app), index(&o.id)), routed("lucius", o.flags));
    }
    assert_eq!(got, want, "the running system (left) and eval (right)");
    sys.shutdown().await;
}
