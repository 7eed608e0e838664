//! The HTTP API over a real TCP socket (127.0.0.1, ephemeral port): stage,
//! deploy, status, history, rollback (on SQLite and on PostgreSQL), and the
//! error cases.

mod common;

use ben_control::testkit::Behaviour;
use ben_control::{Config, SystemClock};
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;

fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {v}"))
}

async fn upload(h: &Http, arts: &[(String, Vec<u8>)]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (name, bytes) in arts {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let (code, v) = h
            .req(
                "PUT",
                &format!("/api/v1/artifacts/{hash}"),
                Some(bytes.clone()),
            )
            .await;
        assert!(code == 201 || code == 200, "{code} {v}");
        assert_eq!(v["blake3"], hash.as_str());
        m.insert(name.clone(), Value::String(hash));
    }
    m
}

fn stage_body(version: &str, artifacts: &serde_json::Map<String, Value>) -> Value {
    let map = artifacts
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    json!({
        "version": version,
        "bundle": "shop",
        "digest": ben_control::bundle_digest(&map),
        "artifacts": artifacts,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_and_stage_refuse_bad_input() {
    let env = Env::new("api-errors", Arc::new(SystemClock));
    let cfg = Config {
        max_artifact_bytes: 64 << 10,
        ..env.config()
    };
    let h = env.start(cfg).await;
    let http = Http {
        base: format!("http://{}", h.api_addr()),
    };
    // A body that does not hash to its key is refused, and not stored.
    let good = b"{\"k\":1}".to_vec();
    let other_key = blake3::hash(b"something else").to_hex().to_string();
    let (code, v) = http
        .req(
            "PUT",
            &format!("/api/v1/artifacts/{other_key}"),
            Some(good.clone()),
        )
        .await;
    assert_eq!(code, 400);
    assert!(error_of(&v).contains("hashes to"), "{v}");
    assert!(!ben_store::Store::has(
        env.store.as_ref(),
        &ben_store::Key::parse(&other_key).unwrap()
    )
    .unwrap());
    let (code, v) = http
        .req(
            "PUT",
            "/api/v1/artifacts/../../etc/passwd",
            Some(good.clone()),
        )
        .await;
    assert!(code == 400 || code == 404, "{code} {v}");
    let (code, v) = http
        .req("PUT", "/api/v1/artifacts/not-a-key", Some(good.clone()))
        .await;
    assert_eq!(code, 400);
    assert!(error_of(&v).contains("not a store key"), "{v}");
    // Over the configured limit: refused, even with the right key.
    let big = vec![b'x'; (64 << 10) + 1];
    let big_key = blake3::hash(&big).to_hex().to_string();
    let (code, v) = http
        .req("PUT", &format!("/api/v1/artifacts/{big_key}"), Some(big))
        .await;
    assert_eq!(code, 413);
    assert!(error_of(&v).contains("over 65536 bytes"), "{v}");
    // Upload twice: created, then already there.
    let key = blake3::hash(&good).to_hex().to_string();
    let path = format!("/api/v1/artifacts/{key}");
    assert_eq!(http.req("PUT", &path, Some(good.clone())).await.0, 201);
    assert_eq!(http.req("PUT", &path, Some(good.clone())).await.0, 200);

    // Staging with an artifact that is not in the store: 409 naming it.
    let (version, arts) = bundle(None);
    let mut uploaded = upload(&http, &arts[1..]).await;
    let missing_name = arts[0].0.clone();
    uploaded.insert(
        missing_name.clone(),
        Value::String(blake3::hash(&arts[0].1).to_hex().to_string()),
    );
    let (code, v) = http
        .json("POST", "/api/v1/versions", stage_body(&version, &uploaded))
        .await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["missing"], json!([missing_name]));
    assert!(error_of(&v).contains(&missing_name));

    // Malformed JSON, unknown fields, a wrong digest, a bad version name.
    let (code, v) = http
        .req("POST", "/api/v1/versions", Some(b"{\"version\": ".to_vec()))
        .await;
    assert_eq!(code, 400);
    assert!(error_of(&v).starts_with("malformed JSON body"), "{v}");
    let (code, v) = http
        .json(
            "POST",
            "/api/v1/deploy",
            json!({"version": "x", "force": true}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(error_of(&v).contains("unknown field `force`"), "{v}");
    let mut body = stage_body(&version, &uploaded);
    body["digest"] = json!("00".repeat(32));
    let (code, v) = http.json("POST", "/api/v1/versions", body).await;
    assert_eq!(code, 400);
    assert!(error_of(&v).contains("does not match the artifacts"), "{v}");
    let (code, v) = http
        .json("POST", "/api/v1/versions", stage_body("a b/c", &uploaded))
        .await;
    assert_eq!(code, 400, "{v}");

    // Deploy errors: not staged (404), nothing registered (409).
    let (code, v) = http
        .json("POST", "/api/v1/deploy", json!({"version": "nope"}))
        .await;
    assert_eq!(code, 404);
    assert!(error_of(&v).contains("not staged"), "{v}");
    upload(&http, &arts[..1]).await;
    let (code, v) = http
        .json("POST", "/api/v1/versions", stage_body(&version, &uploaded))
        .await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = http
        .json("POST", "/api/v1/deploy", json!({"version": version}))
        .await;
    assert_eq!(code, 409);
    assert!(error_of(&v).contains("no component is registered"), "{v}");
    // Nothing finalized: no rollback target; nothing active.
    let (code, v) = http.req("POST", "/api/v1/rollback", None).await;
    assert_eq!(code, 409);
    assert!(error_of(&v).contains("no earlier finalized version"), "{v}");
    let (code, v) = http.req("GET", "/api/v1/active", None).await;
    assert_eq!((code, &v["version"]), (200, &Value::Null));
    // Unknown endpoints, methods and versions are JSON errors too.
    let (code, v) = http.req("GET", "/api/v1/nope", None).await;
    assert_eq!(code, 404);
    error_of(&v);
    let (code, v) = http.req("DELETE", "/api/v1/versions", None).await;
    assert_eq!(code, 405);
    error_of(&v);
    let (code, v) = http.req("GET", "/api/v1/status/unknown", None).await;
    assert_eq!(code, 404);
    assert!(error_of(&v).contains("unknown"), "{v}");
    h.shutdown().await;
}

on_both!(stage_deploy_status_history_rollback);
async fn stage_deploy_status_history_rollback(b: Backend) {
    let env = Env::on("api-flow", Arc::new(SystemClock), b);
    let cfg = Config {
        prepare_timeout_ms: 1_000,
        ..env.config()
    };
    let h = env.start(cfg).await;
    let http = Http {
        base: format!("http://{}", h.api_addr()),
    };
    let _spine = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    let _detector = env.sim("detector-1", "detector", Behaviour::Healthy).await;
    let (v1, arts1) = bundle(None);
    let (v2, arts2) = bundle(Some("two"));
    for (v, arts) in [(&v1, &arts1), (&v2, &arts2)] {
        let up = upload(&http, arts).await;
        let (code, out) = http
            .json("POST", "/api/v1/versions", stage_body(v, &up))
            .await;
        assert_eq!(code, 201, "{out}");
        assert_eq!(out["version"], v.as_str());
        // Staging again is idempotent.
        let (code, _) = http
            .json("POST", "/api/v1/versions", stage_body(v, &up))
            .await;
        assert_eq!(code, 200);
    }
    let (_, vs) = http.req("GET", "/api/v1/versions", None).await;
    assert_eq!(vs.as_array().unwrap().len(), 2);
    wait_registered(&h.client(), 2).await;

    let mut ids = Vec::new();
    for v in [&v1, &v2] {
        let (code, d) = http
            .json("POST", "/api/v1/deploy", json!({ "version": v }))
            .await;
        assert_eq!(code, 202, "{d}");
        assert_eq!(d["required"], json!(["detector-1", "spine-1"]));
        let s = http.wait(d["id"].as_i64().unwrap()).await;
        assert_eq!(s["deploy"]["phase"], "finalized", "{s:#}");
        assert_eq!(s["active"], v.as_str());
        ids.push(d["id"].as_i64().unwrap());
    }
    let (_, active) = http.req("GET", "/api/v1/active", None).await;
    assert_eq!(active["version"], v2.as_str());
    assert_eq!(
        active["roles"]["detector"],
        json!([
            "playbook/brute_force",
            "schema/http.request@v1",
            "schema/http.request@v2",
            "settings"
        ])
    );
    // Rollback = deploy of the previous finalized version.
    let (code, r) = http.req("POST", "/api/v1/rollback", None).await;
    assert_eq!(code, 202, "{r}");
    assert_eq!(r["version"], v1.as_str());
    let s = http.wait(r["id"].as_i64().unwrap()).await;
    assert_eq!(s["active"], v1.as_str());

    // A silent component holds the deploy in prepare: a second deploy is
    // refused as busy; the prepare timeout aborts it and names it.
    let _silent = env.sim("lucius-1", "lucius", Behaviour::Silent).await;
    wait_registered(&h.client(), 3).await;
    let (code, d) = http
        .json("POST", "/api/v1/deploy", json!({ "version": v2 }))
        .await;
    assert_eq!(code, 202);
    let (code, busy) = http
        .json("POST", "/api/v1/deploy", json!({ "version": v2 }))
        .await;
    assert_eq!(code, 409);
    assert!(error_of(&busy).contains("in progress"), "{busy}");
    let s = http.wait(d["id"].as_i64().unwrap()).await;
    assert_eq!(s["deploy"]["phase"], "aborted");
    assert_eq!(
        s["active"],
        v1.as_str(),
        "an aborted deploy changes nothing"
    );
    let lucius = s["deploy"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "lucius-1")
        .unwrap()
        .clone();
    assert_eq!(lucius["state"], "failed");
    // Status of a version shows its own last deploy.
    let (_, s1) = http.req("GET", &format!("/api/v1/status/{v1}"), None).await;
    assert_eq!(s1["version"]["active"], true);
    assert_eq!(s1["deploy"]["phase"], "finalized");
    let (_, hist) = http.req("GET", "/api/v1/history", None).await;
    let whats: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats.iter().filter(|w| **w == "finalized").count(), 3);
    assert!(whats
        .iter()
        .any(|w| w.starts_with("aborted: prepare timed out")));
    h.shutdown().await;
}

/// Every endpoint but the health check needs the token; the token file is
/// made 0600 in the data dir; an open API is refused off loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_its_token() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("api-auth", Arc::new(SystemClock));
    let token = ben_control::auth::token_file(&env.dir, [5; 32]).unwrap();
    let path = ben_control::auth::token_path(&env.dir);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let h = env
        .start(Config {
            api_token: Some(token.clone()),
            ..env.config()
        })
        .await;
    let http = Http {
        base: format!("http://{}", h.api_addr()),
    };
    let deploy = Some(br#"{"version":"v1"}"#.to_vec());
    for (method, path, body) in [
        ("POST", "/api/v1/deploy", deploy.clone()),
        ("POST", "/api/v1/rollback", None),
        ("GET", "/api/v1/status", None),
        ("GET", "/api/v1/versions", None),
        ("GET", "/api/v1/history", None),
        ("GET", "/api/v1/active", None),
        ("GET", "/api/v1/lucius?limit=1", None),
        (
            "PUT",
            &format!("/api/v1/artifacts/{}", "ab".repeat(32)),
            Some(b"x".to_vec()),
        ),
        ("GET", "/api/v1/no-such-endpoint", None),
    ] {
        let (code, v) = http.req_as(None, method, path, body.clone()).await;
        assert_eq!(code, 401, "{method} {path} without a token: {v}");
        assert!(error_of(&v).contains("api.token"), "{v}");
        let (code, v) = http
            .req_as(Some("not-the-token-but-long"), method, path, body.clone())
            .await;
        assert_eq!(code, 401, "{method} {path} with a wrong token: {v}");
        assert!(error_of(&v).contains("does not match"), "{v}");
        // A prefix of the right token is no token.
        let (code, _) = http
            .req_as(Some(&token.reveal()[..32]), method, path, body.clone())
            .await;
        assert_eq!(code, 401, "{method} {path} with half the token");
    }
    // Nothing happened: no deploy was attempted.
    let (code, v) = http
        .req_as(Some(token.reveal()), "GET", "/api/v1/status", None)
        .await;
    assert_eq!(code, 200, "{v}");
    assert!(v["deploy"].is_null(), "{v}");
    let (code, v) = http
        .req_as(Some(token.reveal()), "POST", "/api/v1/deploy", deploy)
        .await;
    assert_eq!(code, 404, "with the token the deploy is judged: {v}");
    let (code, v) = http.req_as(None, "GET", "/api/v1/health", None).await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")));
    h.shutdown().await;

    // No token: only on loopback.
    let open = Config {
        api_token: None,
        api_addr: "0.0.0.0:0".parse().unwrap(),
        ..env.config()
    };
    let e = ben_control::start(open, env.deps()).await.err().unwrap();
    assert!(e.to_string().contains("not a loopback address"), "{e}");
}
