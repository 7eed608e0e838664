//! Activation in `ben up`: deploy v2 while traffic flows (nothing lost,
//! every record evaluated by exactly one version), a deploy that fails
//! verification aborts with the component and reason named and the old
//! version active everywhere, rollback, and the history of every step.

use ben_bee::Selector;
use ben_client::Client;
use ben_embedded::{Config, System};
use ben_wire::pb;
use prost::Message;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn copy_shop(to: &Path, server_error_threshold: u16) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    std::fs::create_dir_all(to).unwrap();
    for f in ["ben.toml", "ben.lock", "shop.bspec"] {
        let mut text = std::fs::read_to_string(src.join(f)).unwrap();
        if f == "shop.bspec" {
            text = text.replace(
                "status >= 500",
                &format!("status >= {server_error_threshold}"),
            );
        }
        std::fs::write(to.join(f), text).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_under_traffic_failure_rollback_history() {
    let base = std::env::temp_dir().join(format!("ben-activation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::env::set_var("BEN_BLOT_KEY", "activation test key 0123456789");
    let (v1_dir, v2_dir, v3_dir): (PathBuf, PathBuf, PathBuf) =
        (base.join("v1"), base.join("v2"), base.join("v3"));
    copy_shop(&v1_dir, 500);
    copy_shop(&v2_dir, 400); // v2: a 404 is a server_error (and so goes to a spine)
    copy_shop(&v3_dir, 450);
    let sys = System::start(Config {
        data_dir: base.join("data"),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        extra_selectors: vec![Selector {
            app: "shop_web".into(),
            uid: Some(ben_bee::own_uid().unwrap()),
            exe: Some(std::env::current_exe().unwrap().display().to_string()),
            ..Selector::default()
        }],
        ..Config::default()
    })
    .await
    .unwrap();
    let v1 = sys.deploy_dir(&v1_dir).await.unwrap();
    let mut spine_out = ben_bus::Bus::subscribe(sys.bus.as_ref(), "ben.data.detector.*", None)
        .await
        .unwrap();

    // Traffic: 404s from 10.x. Under v1 → flags [internal], routed to
    // Lucius; under v2 → [server_error, internal], routed to a spine.
    let sock = sys.cfg.socket_path();
    let sender = tokio::spawn(async move {
        let mut app = Client::connect(sock, "shop_web").await.unwrap();
        let mut accepted = 0;
        for b in 0..60 {
            let batch: Vec<_> = (0..20)
                .map(|i| json!({"timestamp": "2026-01-01T00:00:00Z", "verb": "get", "url": format!("/p/{b}/{i}"), "code": "404", "remote_addr": "10.9.8.7", "customer": {"email": "x@example.com"}}))
                .collect();
            accepted += app.send(&batch).await.unwrap().accepted;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        accepted
    });
    // Deploy v2 once traffic is flowing under v1.
    while sys.stats.shared.sidecar.accepted.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let v2 = {
        let b = ben_intent::Bundle::load(&v2_dir).unwrap().build().unwrap();
        b.version.clone()
    };
    assert_ne!(v1, v2);
    assert_eq!(
        sys.deploy_dir(&v2_dir).await.unwrap(),
        v2,
        "v2 finalizes while traffic flows"
    );
    let accepted = sender.await.unwrap();
    assert_eq!(accepted, 1200);
    sys.drain(Duration::from_secs(5)).await;

    // Nothing lost: every accepted record reached a spine or Lucius.
    let mut spine_records = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), spine_out.next()).await
    {
        spine_records.extend(
            pb::RecordBatch::decode(m.payload.as_slice())
                .unwrap()
                .records,
        );
    }
    let lucius = sys
        .stats
        .shared
        .lucius
        .get()
        .expect("a Lucius runs")
        .query(&ben_lucius::Query {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        spine_records.len() + lucius.len(),
        1200,
        "spine {} + lucius {}",
        spine_records.len(),
        lucius.len()
    );
    assert_eq!(sys.stats.dead_letters.load(Ordering::Relaxed), 0);
    // No mixed evaluation: each record's flags are those of the version it names.
    for r in &spine_records {
        let want: Vec<String> = if r.intent_version == v2 {
            vec!["server_error".into(), "internal".into()]
        } else {
            vec!["internal".into()]
        };
        assert!(
            r.intent_version == v1 || r.intent_version == v2,
            "{}",
            r.intent_version
        );
        assert_eq!(r.flags, want, "record {} under {}", r.id, r.intent_version);
    }
    for o in &lucius {
        let want: Vec<String> = if o.intent == v2 {
            vec!["server_error".into(), "internal".into()]
        } else {
            vec!["internal".into()]
        };
        assert_eq!(o.flags, want, "record {} under {}", o.id, o.intent);
    }
    assert!(
        spine_records.iter().any(|r| r.intent_version == v2),
        "some records ran under v2"
    );
    assert!(
        lucius.iter().any(|o| o.intent == v1)
            || spine_records.iter().any(|r| r.intent_version == v1),
        "some records ran under v1"
    );

    // v3 with a corrupt artifact in the store: components fail to verify,
    // the deploy aborts, v2 stays active everywhere.
    let b3 = ben_intent::Bundle::load(&v3_dir).unwrap().build().unwrap();
    let mut artifacts = std::collections::BTreeMap::new();
    for a in &b3.artifacts {
        let key = ben_store::Store::put(sys.store.as_ref(), &a.bytes).unwrap();
        artifacts.insert(a.name.clone(), key.to_string());
    }
    let pack_key = artifacts["pack/web_guard"].clone();
    std::fs::write(
        base.join("data/store").join(&pack_key[..2]).join(&pack_key),
        b"tampered",
    )
    .unwrap();
    let client = sys.control.client();
    client
        .stage(ben_control::ledger::StageRequest {
            version: b3.version.clone(),
            bundle: b3.name.clone(),
            digest: b3.digest.to_hex().to_string(),
            artifacts,
        })
        .await
        .unwrap();
    let err = sys.deploy(&b3.version).await.unwrap_err();
    assert!(err.contains("aborted"), "{err}");
    let st = client.status(Some(b3.version.clone())).await.unwrap();
    let d = st.deploy.unwrap();
    let failed: Vec<_> = d
        .components
        .iter()
        .filter(|c| c.state == "failed")
        .collect();
    assert!(!failed.is_empty(), "{:?}", d.components);
    assert!(
        failed[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("corrupt"),
        "{:?}",
        failed[0]
    );
    assert_eq!(st.active.as_deref(), Some(v2.as_str()));
    // Every component still runs v2 (their heartbeats say so).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = client.status(None).await.unwrap();
    assert!(st.components.len() >= 6);
    for c in &st.components {
        assert_eq!(c.intent_version, v2, "{c:?}");
    }

    // Rollback: deploy the previous finalized version through the same protocol.
    let rb = client.rollback().await.unwrap();
    assert_eq!(rb.version, v1);
    sys.wait_deploy(&v1).await.unwrap();
    assert_eq!(
        client.status(None).await.unwrap().active.as_deref(),
        Some(v1.as_str())
    );

    // History lists every step.
    let h: Vec<String> = client
        .history()
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.version, e.what))
        .collect();
    let text = h.join("\n");
    for needle in [
        format!("{v1} finalized"),
        format!("{v2} finalized"),
        format!("{} aborted", b3.version),
        format!("{v2} staged"),
    ] {
        assert!(text.contains(&needle), "history lacks `{needle}`:\n{text}");
    }
    sys.shutdown().await;
}
