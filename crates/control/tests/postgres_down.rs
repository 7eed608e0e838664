//! PostgreSQL unavailable during a deploy: the deploy fails visibly (503
//! from the API naming the database, the deploy record and `status` say
//! why) and nothing activates; once the server is back, what could not be
//! written is written.
//!
//! The server is a private one the test starts for itself (initdb + pg_ctl
//! in a temp dir, on a free port; as the `postgres` user through `runuser`
//! when the test runs as root, since initdb refuses root) and stops with
//! `pg_ctl stop -m fast`, which cuts every connection. The machine's shared
//! PostgreSQL is never touched.

mod common;

use ben_bus::Bus;
use ben_control::ledger::DeployPhase;
use ben_control::testkit::Behaviour;
use ben_control::{subjects, Config, SystemClock};
use ben_sql::testing::PrivatePg;
use ben_wire::pb;
use common::*;
use serde_json::json;
use sqlx::{Connection, Row};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Nothing arrives on `sub` within `ms`.
async fn silent_for(sub: &mut ben_bus::Subscription, ms: u64, what: &str) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        panic!("{what}: got a message on {:?}", m.map(|m| m.subject));
    }
}

/// The audit lines in the database itself, once one contains `needle`.
async fn wait_in_db(url: &str, needle: &str) -> Vec<String> {
    let t0 = Instant::now();
    loop {
        if let Ok(mut c) = sqlx::PgConnection::connect(url).await {
            let rows = sqlx::query("SELECT what FROM ledger_history ORDER BY seq")
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
            let what: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
            let _ = c.close().await;
            if what.iter().any(|w| w.contains(needle)) {
                return what;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "`{needle}` never reached the database"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_fails_the_deploy_visibly_and_nothing_activates() {
    let pg = Arc::new(blocking(PrivatePg::start).await);
    let port = pg.port.to_string();
    let mut env = Env::new("pg-down", Arc::new(SystemClock));
    env.database_url = Some(pg.url());
    let cfg = Config {
        db_timeout_ms: 1_000,
        ..env.config()
    };
    let h = env.start(cfg.clone()).await;
    let c = h.client();
    let http = Http {
        base: format!("http://{}", h.api_addr()),
    };
    let spine = env.sim("spine-1", "spine", Behaviour::Healthy).await;
    // Plays lucius-1 by hand (heartbeats; prepares when the test says).
    let _lucius = env.sim("lucius-1", "lucius", Behaviour::Silent).await;
    let mut announces = env.bus.subscribe(subjects::ANNOUNCE, None).await.unwrap();
    let mut activates = env.bus.subscribe(subjects::ACTIVATE, None).await.unwrap();
    let mut aborts = env.bus.subscribe(subjects::ABORT, None).await.unwrap();
    let (v, arts) = bundle(None);
    c.stage(stage_request(env.store.as_ref(), &v, &arts))
        .await
        .unwrap();
    wait_registered(&c, 2).await;

    // 1. Down when the deploy starts: refused with the database named,
    //    nothing announced.
    blocking({
        let pg = pg.clone();
        move || pg.stop()
    })
    .await;
    let (code, body) = http
        .json("POST", "/api/v1/deploy", json!({ "version": v }))
        .await;
    assert_eq!(code, 503, "{body:#}");
    let err = body["error"].as_str().unwrap();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        err.contains(&format!("the start of the deploy of {v}")),
        "{err}"
    );
    assert!(err.contains("nothing activates"), "{err}");
    silent_for(
        &mut announces,
        300,
        "no announce while the database is down",
    )
    .await;
    let (code, st) = http.req("GET", "/api/v1/status", None).await;
    assert_eq!(code, 200);
    assert_eq!(st["deploy"]["phase"], "aborted", "{st:#}");
    let reason = st["deploy"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("unavailable") && reason.contains(&port),
        "{reason}"
    );
    assert!(
        st["last_db_error"].as_str().unwrap().contains(&port),
        "{st:#}"
    );
    assert!(st["counters"]["db_errors"].as_u64().unwrap() >= 1);
    assert_eq!(st["database"], pg.url(), "status names the database");
    assert!(st["active"].is_null());
    let first_id = st["deploy"]["id"].as_i64().unwrap();
    // Staging needs the database too: refused, not half-done.
    let (v2, arts2) = bundle(Some("down"));
    let e = c
        .stage(stage_request(env.store.as_ref(), &v2, &arts2))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&port) && e.contains("the version was not staged"),
        "{e}"
    );
    assert!(c.versions().await.unwrap().iter().all(|x| x.version != v2));
    // A request that must read the database names it too.
    let (code, body) = http.req("POST", "/api/v1/rollback", None).await;
    assert_eq!(code, 503, "{body:#}");
    let err = body["error"].as_str().unwrap();
    assert!(err.contains(&port) && err.contains("unavailable"), "{err}");

    // Back up: the backlog (the cancelled deploy's audit lines) is written.
    blocking({
        let pg = pg.clone();
        move || pg.resume()
    })
    .await;
    wait_in_db(&pg.url(), "could not record the start of the deploy").await;

    // 2. Down between prepare and activate: activate is withheld, the
    //    components are told to abort, nothing activates.
    let (code, body) = http
        .json("POST", "/api/v1/deploy", json!({ "version": v }))
        .await;
    assert_eq!(code, 202, "{body:#}");
    let id = body["id"].as_i64().unwrap();
    assert!(id > first_id);
    let keys = env.ledger_keys();
    let m = tokio::time::timeout(Duration::from_secs(10), announces.next())
        .await
        .unwrap()
        .unwrap();
    let announce = ben_wire::open_bytes::<pb::Announce>(&m.payload, &keys)
        .unwrap()
        .into_inner();
    wait_status(&c, "spine-1 prepared", |s| {
        s.deploy.as_ref().is_some_and(|d| {
            d.components
                .iter()
                .any(|x| x.id == "spine-1" && x.state == "prepared")
        })
    })
    .await;
    blocking({
        let pg = pg.clone();
        move || pg.stop()
    })
    .await;
    let hashes =
        ben_control::testkit::fetch_role_artifacts(&announce, "lucius", env.store.as_ref())
            .unwrap();
    let ack = pb::Ack {
        component: "lucius-1".into(),
        version: v.clone(),
        phase: pb::ack::Phase::Prepared as i32,
        hashes: hashes.into_iter().collect(),
        ..Default::default()
    };
    env.bus
        .publish(subjects::ACK, env.signer("lucius-1").seal_bytes(&ack))
        .await
        .unwrap();
    let rec = wait_deploy(&c, id).await;
    assert_eq!(rec.phase, DeployPhase::Aborted, "{rec:#?}");
    let reason = rec.reason.clone().unwrap();
    assert!(
        reason.contains(&format!("could not record the activation of {v}"))
            && reason.contains(&port),
        "{reason}"
    );
    let ab = tokio::time::timeout(Duration::from_secs(10), aborts.next())
        .await
        .unwrap()
        .unwrap();
    let ab = ben_wire::open_bytes::<pb::Abort>(&ab.payload, &keys)
        .unwrap()
        .into_inner();
    assert_eq!(ab.version, v);
    silent_for(&mut activates, 500, "activate must not go out").await;
    assert_eq!(spine.running(), None, "nothing activated");
    let (code, st) = http.req("GET", "/api/v1/status", None).await;
    assert_eq!(code, 200);
    assert_eq!(st["deploy"]["phase"], "aborted");
    assert!(st["active"].is_null());

    // 3. Back up: the abort is written, and a restart on the same database
    //    shows both failed deploys with their reasons.
    blocking({
        let pg = pg.clone();
        move || pg.resume()
    })
    .await;
    let what = wait_in_db(&pg.url(), "could not record the activation").await;
    assert!(what
        .iter()
        .any(|w| w.contains("could not record the start of the deploy")));
    let n = what.len();
    assert_eq!(
        what[n - 2],
        "activate withdrawn before it went out",
        "{what:#?}"
    );
    h.shutdown().await;
    let h = env.start(cfg).await;
    let c = h.client();
    let st = c.status(Some(v.clone())).await.unwrap();
    let rec = st.deploy.unwrap();
    assert_eq!((rec.id, rec.phase), (id, DeployPhase::Aborted));
    assert!(rec
        .reason
        .unwrap()
        .contains("could not record the activation"));
    assert_eq!(st.active, None);
    h.shutdown().await;
}
