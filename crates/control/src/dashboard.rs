//! The dashboard's API (`/api/dashboard/…`, JSON) and its live stream,
//! which the single-page app (`ben_dashboard_ui`, served at `/`) reads.
//!
//! | path | what | cached |
//! |---|---|---|
//! | `overview` | records, flags and signals (totals and per second), the chain (height, anomalies, policies, acks, validators), enforcement, the AI service's threshold and lifecycle counts, the intent version and deploy, dead letters, each component's health | live |
//! | `series` | the overview's rates, one point a second, the last five minutes (charts) | no |
//! | `anomalies?limit=N` | the newest committed anomalies with their policies and acks | live |
//! | `anomalies/{id}` | one anomaly's way as a timeline: flow window → detected → published → admitted → committed → policy → acks → outcome, with times | live |
//! | `blocks?limit=N` | the newest committed blocks | live |
//! | `enforcement` | what the enforcement agents hold | heavy, or until an ack arrives |
//! | `intent` | staged versions, the audit log, the active version and the running deploy per component | heavy, or until the deploy changes |
//! | `search?schema=&flag=&since_ns=&limit=` | Lucius | heavy |
//! | `stream` | server-sent events: `overview` every second, `deploy` when a deploy changes, `chain` when a block, policy or ack arrives, `resync` when this reader fell behind | — |
//!
//! **Caches** (moka): "live" answers are kept [`Settings::live_ttl_ms`]
//! (1 s), "heavy" ones — a round trip to another component or a database
//! read — [`Settings::heavy_ttl_ms`] (one minute), or until what they show
//! changes (the sampler drops them then). Concurrent requests for one key
//! wait for **one** loader. Each answer says `x-ben-cache: hit` or `miss`.
//!
//! **The stream** is a broadcast of [`Settings::stream_buffer`] events; a
//! reader that falls further behind gets an `event: resync` (with how many
//! it missed) and goes on from the newest, instead of being cut off: the
//! app then reloads what it shows.

use crate::api::{limit, mesh_view, ApiError, AppState, Limit};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// How the dashboard caches and streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How long live answers (overview, anomalies, blocks) are kept.
    pub live_ttl_ms: u64,
    /// How long heavy answers (Lucius, enforcement, intent) are kept at
    /// most.
    pub heavy_ttl_ms: u64,
    /// Events a stream reader may fall behind before it gets a resync.
    pub stream_buffer: usize,
    /// How often the sampler looks at the deploy and the chain (the
    /// overview goes out every tenth look, and rates are per second).
    pub sample_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            live_ttl_ms: 1_000,
            heavy_ttl_ms: 60_000,
            stream_buffer: 256,
            sample_ms: 100,
        }
    }
}

/// Bytes each cache holds at most (keys and answers): whoever may read
/// (a browser session too) picks the keys — search parameters, anomaly
/// ids — so the caches are bounded by size, not by count. An answer
/// larger than this is served, not kept.
pub const CACHE_BYTES: u64 = 64 << 20;

fn weight(key: &str, answer: &Bytes) -> u32 {
    u32::try_from(key.len() + answer.len()).unwrap_or(u32::MAX)
}

/// Points of the rate series kept (one a second: five minutes).
pub const SERIES: usize = 300;

/// One streamed event: its name and JSON.
#[derive(Clone, Debug)]
pub struct Event {
    pub name: &'static str,
    pub data: Arc<str>,
}

/// One point of the rate series.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub records_per_s: f64,
    pub flags_per_s: f64,
    pub signals_per_s: f64,
    pub anomalies: u64,
    pub policies: u64,
    pub blocked: u64,
}

/// The counters the rates come from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    at_ms: u64,
    records: u64,
    flags: u64,
    signals: u64,
    blocked: u64,
}

/// The dashboard's state: caches, the live stream, the rate series.
pub struct Dashboard {
    settings: Settings,
    live: moka::future::Cache<String, Bytes>,
    heavy: moka::future::Cache<String, Bytes>,
    /// Loader runs (misses that loaded), for tests and the overview.
    loads: AtomicU64,
    events: broadcast::Sender<Event>,
    /// Set when the API stops: every stream ends (a server waits for its
    /// open connections before it stops).
    closing: tokio::sync::watch::Sender<bool>,
    series: Mutex<VecDeque<Point>>,
    sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Dashboard {
    pub fn new(settings: Settings) -> Arc<Dashboard> {
        let ttl = |ms: u64| Duration::from_millis(ms.max(1));
        let (events, _) = broadcast::channel(settings.stream_buffer.max(1));
        Arc::new(Dashboard {
            live: moka::future::Cache::builder()
                .weigher(|k: &String, v: &Bytes| weight(k, v))
                .max_capacity(CACHE_BYTES)
                .time_to_live(ttl(settings.live_ttl_ms))
                .build(),
            heavy: moka::future::Cache::builder()
                .weigher(|k: &String, v: &Bytes| weight(k, v))
                .max_capacity(CACHE_BYTES)
                .time_to_live(ttl(settings.heavy_ttl_ms))
                .build(),
            settings,
            loads: AtomicU64::new(0),
            events,
            closing: tokio::sync::watch::Sender::new(false),
            series: Mutex::new(VecDeque::with_capacity(SERIES)),
            sampler: Mutex::new(None),
        })
    }

    /// Sends an event to every stream reader (none listening: dropped, as
    /// nobody is owed it).
    pub fn send(&self, name: &'static str, data: &serde_json::Value) {
        self.broadcast(name, data.to_string().into());
    }

    /// [`Dashboard::send`] of JSON already written.
    fn send_json(&self, name: &'static str, json: &[u8]) {
        self.broadcast(name, String::from_utf8_lossy(json).into());
    }

    fn broadcast(&self, name: &'static str, data: Arc<str>) {
        // An error here means no reader is connected: nobody missed it.
        let _no_reader = self.events.send(Event { name, data });
    }

    /// A new stream reader, and what tells it the API stops.
    pub fn subscribe(&self) -> Reader {
        Reader {
            rx: self.events.subscribe(),
            closing: self.closing.subscribe(),
        }
    }

    /// How many times a loader ran.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Stops the sampler and ends every stream.
    pub fn stop(&self) {
        self.closing.send_replace(true);
        if let Ok(mut s) = self.sampler.lock() {
            if let Some(t) = s.take() {
                t.abort();
            }
        }
    }

    fn series(&self) -> Vec<Point> {
        self.series
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn last_point(&self) -> Point {
        self.series
            .lock()
            .ok()
            .and_then(|s| s.back().cloned())
            .unwrap_or_default()
    }
}

/// Which cache an answer goes to.
#[derive(Clone, Copy)]
enum Tier {
    Live,
    Heavy,
}

/// The answer for `key` from `tier` as JSON bytes, loading it with `load`
/// on a miss (one loader per key however many ask together; a failed load
/// is not kept), and whether it was a hit.
async fn cached_bytes<F>(
    st: &AppState,
    tier: Tier,
    key: String,
    load: F,
) -> Result<(Bytes, bool), ApiError>
where
    F: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    let d = &st.dashboard;
    let cache = match tier {
        Tier::Live => &d.live,
        Tier::Heavy => &d.heavy,
    };
    let loaded = AtomicBool::new(false);
    let bytes = cache
        .try_get_with(key, async {
            loaded.store(true, Ordering::Relaxed);
            d.loads.fetch_add(1, Ordering::Relaxed);
            let v = load.await?;
            Ok::<_, ApiError>(Bytes::from(v.to_string()))
        })
        .await
        .map_err(|e: Arc<ApiError>| e.as_ref().clone())?;
    Ok((bytes, !loaded.load(Ordering::Relaxed)))
}

/// [`cached_bytes`] as the API's answer, saying `x-ben-cache: hit|miss`.
async fn cached<F>(st: &AppState, tier: Tier, key: String, load: F) -> Result<Response, ApiError>
where
    F: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    let (bytes, hit) = cached_bytes(st, tier, key, load).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("x-ben-cache"),
                if hit { "hit" } else { "miss" },
            ),
        ],
        bytes,
    )
        .into_response())
}

fn sum(components: &[serde_json::Value], field: &str) -> u64 {
    components
        .iter()
        .filter_map(|c| c.get(field).and_then(|v| v.as_u64()))
        .sum()
}

/// The counters the rates come from, now.
fn sample(st: &AppState, now_ms: u64) -> Sample {
    let c = st.metrics.components();
    Sample {
        at_ms: now_ms,
        records: sum(&c, "accepted"),
        flags: sum(&c, "flags"),
        signals: sum(&c, "signals"),
        blocked: sum(&c, "blocked"),
    }
}

fn now_ms() -> u64 {
    (ben_time::now_ns() / 1_000_000).max(0) as u64
}

/// The AI service's threshold and lifecycle counts (heavy: a round trip),
/// or why there are none.
async fn feedback(st: &AppState) -> serde_json::Value {
    let r = cached_bytes(st, Tier::Heavy, "feedback".into(), async {
        crate::mesh::ask_feedback(st.bus.as_ref(), "", Duration::from_secs(2))
            .await
            .map(|mut v| {
                // The overview shows the newest changes only.
                if let Some(c) = v.get_mut("changes").and_then(|c| c.as_array_mut()) {
                    let skip = c.len().saturating_sub(10);
                    c.drain(..skip);
                }
                v
            })
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    })
    .await;
    match r.map(|(b, _)| serde_json::from_slice(&b)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => serde_json::json!({ "error": format!("the cached answer is not JSON: {e}") }),
        Err(e) => serde_json::json!({ "error": e.message() }),
    }
}

/// Heartbeat age (ms) past which a component shows as late.
const LATE_MS: u64 = 3_000;

async fn load_overview(st: &AppState) -> Result<serde_json::Value, ApiError> {
    let now = now_ms();
    let comps = st.metrics.components();
    let rates = st.dashboard.last_point();
    let (totals, validators, forks) = {
        let v = mesh_view(st)?;
        (v.totals(), v.validators(), v.forks.clone())
    };
    let status = st.ledger.status(None).await?;
    let dlq = st
        .dlq
        .book
        .lock()
        .map(|b| serde_json::to_value(b.view(0)).unwrap_or_default())
        .unwrap_or_default();
    let by_id: BTreeMap<&str, &serde_json::Value> = comps
        .iter()
        .filter_map(|c| Some((c.get("id")?.as_str()?, c)))
        .filter(|(id, _)| !id.is_empty())
        .collect();
    let components: Vec<serde_json::Value> = status
        .components
        .iter()
        .map(|c| {
            let age = now.saturating_sub((c.last_heartbeat_ns / 1_000_000).max(0) as u64);
            let m = by_id.get(c.id.as_str());
            let field = |f: &str| {
                m.and_then(|m| m.get(f))
                    .cloned()
                    .unwrap_or(serde_json::json!(0))
            };
            serde_json::json!({
                "id": c.id,
                "role": c.role,
                "intent": c.intent_version,
                "behind": c.behind,
                "heartbeat_age_ms": age,
                "health": if c.behind { "behind" } else if age > LATE_MS { "late" } else { "ok" },
                "processed": field("processed"),
                "queue_depth": field("queue_depth"),
                "publish_errors": field("publish_errors"),
            })
        })
        .collect();
    let fb = feedback(st).await;
    Ok(serde_json::json!({
        "at_ms": now,
        "records": { "total": sum(&comps, "accepted"), "per_s": rates.records_per_s },
        "flags": { "total": sum(&comps, "flags"), "per_s": rates.flags_per_s },
        "signals": { "total": sum(&comps, "signals"), "per_s": rates.signals_per_s },
        "publish_errors": sum(&comps, "publish_errors"),
        "chain": {
            "height": totals.height,
            "anomalies": totals.anomalies,
            "policies": totals.policies,
            "acks": totals.acks,
            "forks": forks,
            "validators": validators,
        },
        "enforcement": {
            "blocked": sum(&comps, "blocked"),
            "breaker_open": comps.iter().any(|c| c.get("breaker_open").and_then(|b| b.as_bool()) == Some(true)),
        },
        "feedback": fb,
        "intent": {
            "active": status.active,
            "deploy": status.deploy.as_ref().map(|d| serde_json::json!({
                "version": d.version, "phase": d.phase, "reason": d.reason,
            })),
            "last_db_error": status.last_db_error,
        },
        "dead_letters": {
            "total": dlq.get("total").cloned().unwrap_or_default(),
            "unverified": dlq.get("unverified").cloned().unwrap_or_default(),
            "by_subject": dlq.get("by_subject").cloned().unwrap_or_default(),
        },
        "components": components,
        "cache": { "loads": st.dashboard.loads() },
    }))
}

pub(crate) async fn overview(State(st): State<AppState>) -> Result<Response, ApiError> {
    cached(&st, Tier::Live, OVERVIEW.into(), load_overview(&st)).await
}

/// The overview's cache key.
const OVERVIEW: &str = "overview";

pub(crate) async fn series(State(st): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "points": st.dashboard.series() })).into_response()
}

pub(crate) async fn anomalies(State(st): State<AppState>, q: Limit) -> Result<Response, ApiError> {
    let n = limit(q, 50, 1_000)?;
    cached(&st, Tier::Live, format!("anomalies:{n}"), async {
        Ok(serde_json::json!({ "anomalies": mesh_view(&st)?.recent(n) }))
    })
    .await
}

pub(crate) async fn blocks(State(st): State<AppState>, q: Limit) -> Result<Response, ApiError> {
    let n = limit(q, 20, crate::mesh::BLOCKS)?;
    cached(&st, Tier::Live, format!("blocks:{n}"), async {
        let v = mesh_view(&st)?;
        Ok(serde_json::json!({ "blocks": v.blocks(n), "forks": v.forks }))
    })
    .await
}

/// One step of an anomaly's way.
fn step(what: &str, at_ms: Option<u64>, detail: String) -> Option<serde_json::Value> {
    Some(serde_json::json!({ "step": what, "at_ms": at_ms?, "detail": detail }))
}

/// The steps of an anomaly's way, in the order they happen.
const STEPS: [&str; 8] = [
    "flows",
    "detected",
    "published",
    "admitted",
    "committed",
    "policy",
    "ack",
    "feedback",
];

/// An anomaly's way from the flows to the outcome: what the chain view
/// holds (block, policies, acks) and what the AI service knows (detection,
/// publication, admission, its outcome). Steps come in the order they
/// happen (acks by time); each has the time it was seen.
pub fn timeline(
    chain: Option<&crate::mesh::AnomalyView>,
    life: Option<&serde_json::Value>,
) -> Vec<serde_json::Value> {
    let ms = |f: &str| life.and_then(|v| v.get(f)).and_then(|x| x.as_u64());
    let mut steps: Vec<serde_json::Value> = Vec::new();
    if let Some(l) = life {
        let class = l.get("class").and_then(|c| c.as_str()).unwrap_or("");
        let conf = l.get("confidence").and_then(|c| c.as_f64()).unwrap_or(0.0);
        let height = ms("height").unwrap_or(0);
        steps.extend(step(
            "flows",
            ms("detected_ms"),
            "the flow window it was found in closed".into(),
        ));
        steps.extend(step(
            "detected",
            ms("detected_ms"),
            format!("{class}, confidence {conf:.2}"),
        ));
        steps.extend(step(
            "published",
            ms("published_ms"),
            "signed and sent to the validators".into(),
        ));
        steps.extend(step(
            "admitted",
            ms("admitted_ms"),
            format!("in the block proposed at height {height}"),
        ));
    }
    if let Some(a) = chain {
        // When the AI service saw the commit, else the block's own time.
        let at = ms("committed_ms").unwrap_or(a.time_ms);
        steps.extend(step(
            "committed",
            Some(at),
            format!(
                "block {} at height {}, certified by the validators",
                short(&a.block),
                a.height
            ),
        ));
        for p in &a.policies {
            steps.extend(step(
                "policy",
                Some(at),
                format!(
                    "{} {} ({}) for {} s",
                    p.action,
                    p.target,
                    p.rule,
                    p.expires_at_ms.saturating_sub(a.time_ms) / 1_000
                ),
            ));
            for ack in a.acks.get(&p.id).into_iter().flatten() {
                let why = if ack.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", ack.reason)
                };
                steps.extend(step(
                    "ack",
                    Some(ack.at_ms),
                    format!(
                        "{} {} {} on {}{why}",
                        ack.agent, ack.status, ack.target, ack.backend
                    ),
                ));
            }
        }
    } else if let Some(c) = ms("committed_ms") {
        steps.extend(step(
            "committed",
            Some(c),
            "committed (its block is older than the control process holds)".into(),
        ));
    }
    if let Some(l) = life {
        let state = l.get("state").and_then(|s| s.as_str()).unwrap_or("");
        let reason = l.get("reason").and_then(|s| s.as_str()).unwrap_or("");
        let acks = l
            .get("acks")
            .and_then(|a| a.as_array())
            .map_or(0, |a| a.len());
        if let Some(end) = ms("ended_ms") {
            steps.extend(step("feedback", Some(end), format!("{state}: {reason}")));
        } else if let Some(at) = ms("committed_ms") {
            steps.extend(step(
                "feedback",
                Some(at),
                format!("{state}, {acks} ack(s) recorded: counts toward the acceptance rate the publish threshold follows"),
            ));
        }
    }
    let rank = |s: &serde_json::Value| {
        let name = s["step"].as_str().unwrap_or("");
        STEPS.iter().position(|x| *x == name).unwrap_or(STEPS.len())
    };
    steps.sort_by_key(|s| (rank(s), s["at_ms"].as_u64().unwrap_or(0)));
    steps
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

pub(crate) async fn anomaly(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.len() > 200 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "an anomaly id is at most 200 characters",
        ));
    }
    cached(&st, Tier::Live, format!("anomaly:{id}"), async {
        let chain = mesh_view(&st)?.anomaly(&id);
        let life = crate::mesh::ask_feedback(st.bus.as_ref(), &id, Duration::from_secs(2)).await;
        let (lifecycle, lifecycle_error) = match life {
            Ok(v) if v.get("lifecycle").is_some() => (Some(v["lifecycle"].clone()), None),
            Ok(v) => (None, Some(v["error"].to_string())),
            Err(e) => (None, Some(e.to_string())),
        };
        if chain.is_none() && lifecycle.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("anomaly {id:?} is neither among the committed ones the control process holds nor known to the AI service: {}", lifecycle_error.unwrap_or_default()),
            ));
        }
        Ok(serde_json::json!({
            "id": id,
            "chain": chain,
            "lifecycle": lifecycle,
            "lifecycle_error": lifecycle_error,
            "timeline": timeline(chain.as_ref(), lifecycle.as_ref()),
        }))
    })
    .await
}

pub(crate) async fn enforcement(State(st): State<AppState>) -> Result<Response, ApiError> {
    cached(
        &st,
        Tier::Heavy,
        "enforcement".into(),
        crate::api::ask_enforcement(&st),
    )
    .await
}

pub(crate) async fn intent(State(st): State<AppState>) -> Result<Response, ApiError> {
    cached(&st, Tier::Heavy, "intent".into(), async {
        let versions = st.ledger.versions().await?;
        let history = st.ledger.history().await?;
        let status = st.ledger.status(None).await?;
        let skip = history.len().saturating_sub(100);
        Ok(serde_json::json!({
            "status": status,
            "versions": versions,
            "history": &history[skip..],
        }))
    })
    .await
}

pub(crate) async fn search(
    State(st): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = crate::api::lucius_query(&q)?;
    let key = format!("search:{}", serde_json::Value::Object(query.clone()));
    cached(&st, Tier::Heavy, key, crate::api::ask_lucius(&st, query)).await
}

/// One stream reader's place in the broadcast.
pub struct Reader {
    rx: broadcast::Receiver<Event>,
    closing: tokio::sync::watch::Receiver<bool>,
}

/// The stream of one reader: its events as SSE, a `resync` when it fell
/// behind (how many it missed), then on from the newest; it ends when the
/// API stops.
pub fn events(
    reader: Reader,
) -> impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    futures_util::stream::unfold(reader, |mut r| async move {
        if *r.closing.borrow() {
            return None;
        }
        let got = tokio::select! {
            got = r.rx.recv() => got,
            _ = r.closing.changed() => return None,
        };
        let ev = match got {
            Ok(e) => SseEvent::default().event(e.name).data(&*e.data),
            Err(broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                .event("resync")
                .data(serde_json::json!({ "missed": n }).to_string()),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), r))
    })
}

/// `{active, deploy}` now: what `deploy` events carry.
async fn deploy_now(st: &AppState) -> Option<serde_json::Value> {
    let status = st.ledger.status(None).await.ok()?;
    Some(serde_json::json!({ "active": status.active, "deploy": status.deploy }))
}

/// A new reader first gets the deploy as it stands (later `deploy` events
/// are changes to it), then the live events.
pub(crate) async fn stream(State(st): State<AppState>) -> impl IntoResponse {
    use futures_util::StreamExt;
    let rx = st.dashboard.subscribe();
    let first = deploy_now(&st).await.map(|d| {
        Ok::<_, std::convert::Infallible>(SseEvent::default().event("deploy").data(d.to_string()))
    });
    Sse::new(futures_util::stream::iter(first).chain(events(rx))).keep_alive(KeepAlive::default())
}

/// Starts the sampler: every [`Settings::sample_ms`] it looks at the
/// deploy and the chain (a change is sent at once, and drops the heavy
/// answers it makes stale); every second it adds a point to the series
/// and sends the overview.
pub(crate) fn start_sampler(st: AppState) {
    let d = st.dashboard.clone();
    let holder = d.clone();
    let every = Duration::from_millis(d.settings.sample_ms.max(10));
    let per_overview = (1_000 / d.settings.sample_ms.max(10)).max(1);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_deploy = String::new();
        let mut last_chain = crate::mesh::Totals::default();
        let mut last_sample: Option<Sample> = None;
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            // The deploy, per component.
            if let Some(now) = deploy_now(&st).await {
                let text = now.to_string();
                if text != last_deploy {
                    last_deploy = text;
                    st.dashboard.heavy.invalidate("intent").await;
                    st.dashboard.send("deploy", &now);
                }
            }
            // The chain (a poisoned view is said every 600 looks, a minute
            // at the default pace: the API answers 500 for it too).
            let totals = match st.mesh.view.lock() {
                Ok(v) => Some(v.totals()),
                Err(_) => {
                    if n % 600 == 1 {
                        tracing::error!("the CyberMesh view is poisoned; the dashboard's chain stands still until the control process restarts");
                    }
                    None
                }
            };
            if let Some(t) = totals {
                if t != last_chain {
                    if t.acks != last_chain.acks {
                        st.dashboard.heavy.invalidate("enforcement").await;
                    }
                    st.dashboard
                        .send("chain", &serde_json::to_value(&t).unwrap_or_default());
                    last_chain = t;
                }
            }
            if !n.is_multiple_of(per_overview) {
                continue;
            }
            let s = sample(&st, now_ms());
            if let Some(p) = last_sample {
                let secs = (s.at_ms.saturating_sub(p.at_ms)) as f64 / 1_000.0;
                let rate = |a: u64, b: u64| {
                    if secs > 0.0 {
                        a.saturating_sub(b) as f64 / secs
                    } else {
                        0.0
                    }
                };
                let point = Point {
                    at_ms: s.at_ms,
                    records_per_s: rate(s.records, p.records),
                    flags_per_s: rate(s.flags, p.flags),
                    signals_per_s: rate(s.signals, p.signals),
                    anomalies: last_chain.anomalies,
                    policies: last_chain.policies,
                    blocked: s.blocked,
                };
                if let Ok(mut series) = d.series.lock() {
                    if series.len() >= SERIES {
                        series.pop_front();
                    }
                    series.push_back(point);
                }
            }
            last_sample = Some(s);
            // The cached bytes as they are: the stream's readers get what
            // the API answers, not a copy parsed and written again.
            match cached_bytes(&st, Tier::Live, OVERVIEW.into(), load_overview(&st)).await {
                Ok((bytes, _)) => st.dashboard.send_json("overview", &bytes),
                Err(e) => {
                    tracing::warn!(error = e.message(), "the dashboard's overview did not load")
                }
            }
        }
    });
    if let Ok(mut s) = holder.sampler.lock() {
        *s = Some(task);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_that_fell_behind_gets_a_resync_and_goes_on() {
        use futures_util::StreamExt;
        let d = Dashboard::new(Settings {
            stream_buffer: 4,
            ..Settings::default()
        });
        let rx = d.subscribe();
        let mut s = Box::pin(events(rx));
        // The reader reads nothing while ten events go out.
        for i in 0..10 {
            d.send("overview", &serde_json::json!({ "i": i }));
        }
        let text = |e: SseEvent| format!("{e:?}");
        let first = text(s.next().await.unwrap().unwrap());
        assert!(
            first.contains("resync") && first.contains("missed"),
            "{first}"
        );
        assert!(first.contains("6"), "six of ten were missed: {first}");
        // Then the newest four, in order, and the stream stays open.
        for i in 6..10 {
            let e = text(s.next().await.unwrap().unwrap());
            assert!(
                e.contains(&format!("{{\\\"i\\\":{i}}}")) || e.contains(&format!("{{\"i\":{i}}}")),
                "{e}"
            );
        }
        d.send("deploy", &serde_json::json!({}));
        assert!(text(s.next().await.unwrap().unwrap()).contains("deploy"));
        // Stopping ends the stream (the server can then stop).
        d.stop();
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn the_caches_are_bounded_by_bytes() {
        let d = Dashboard::new(Settings::default());
        let mib = Bytes::from(vec![b'x'; 1 << 20]);
        for i in 0..100 {
            d.heavy.insert(format!("search:{i}"), mib.clone()).await;
        }
        d.heavy.run_pending_tasks().await;
        assert!(
            d.heavy.weighted_size() <= CACHE_BYTES,
            "{}",
            d.heavy.weighted_size()
        );
        assert!(d.heavy.entry_count() < 100);
        // One answer larger than the whole cache is not kept.
        let huge = Bytes::from(vec![b'x'; (CACHE_BYTES + 1) as usize]);
        d.live.insert("overview".into(), huge).await;
        d.live.run_pending_tasks().await;
        assert!(d.live.get("overview").await.is_none());
    }

    #[test]
    fn the_timeline_orders_an_anomalys_way() {
        use crate::mesh::{AckView, AnomalyView, PolicyView};
        let chain = AnomalyView {
            id: "a1".into(),
            height: 7,
            block: "0123456789abcdef".into(),
            time_ms: 1_300,
            policies: vec![PolicyView {
                id: "p1".into(),
                action: "drop".into(),
                rule: "drop ingress".into(),
                target: "10.0.0.9/32".into(),
                scope: vec![],
                request: String::new(),
                expires_at_ms: 9_000,
                height: 7,
            }],
            acks: BTreeMap::from([(
                "p1".to_string(),
                vec![AckView {
                    agent: "enforce-1".into(),
                    status: "applied".into(),
                    reason: String::new(),
                    target: "10.0.0.9/32".into(),
                    backend: "nftables".into(),
                    at_ms: 1_450,
                }],
            )]),
        };
        let life = serde_json::json!({
            "class": "brute-ssh", "confidence": 0.93, "state": "committed",
            "detected_ms": 1_000, "published_ms": 1_010, "admitted_ms": 1_200,
            "committed_ms": 1_300, "height": 7,
        });
        let t = timeline(Some(&chain), Some(&life));
        let steps: Vec<&str> = t.iter().map(|s| s["step"].as_str().unwrap()).collect();
        assert_eq!(steps, STEPS);
        assert!(t[5]["detail"].as_str().unwrap().contains("10.0.0.9/32"));
        assert!(t[6]["detail"]
            .as_str()
            .unwrap()
            .contains("enforce-1 applied"));
        assert_eq!(t[6]["at_ms"], 1_450);
        // Only what the AI service knows: no chain steps.
        let t = timeline(None, Some(&life));
        assert!(t.iter().all(|s| s["step"] != "policy"));
        assert!(timeline(None, None).is_empty());
    }
}
