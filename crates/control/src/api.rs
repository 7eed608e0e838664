//! The HTTP API (`/api/v1/…`, JSON) that `benctl` and late-starting
//! components use. Every error is `{"error": "…"}` with a 4xx/5xx status;
//! bad input never panics (invariant 11).
//!
//! | method | path | does |
//! |---|---|---|
//! | PUT | `/api/v1/artifacts/{blake3}` | store raw bytes; refused unless they hash to the key |
//! | POST | `/api/v1/versions` | stage `{version, bundle, digest, artifacts: {name: blake3}}` (409 lists missing artifacts) |
//! | GET | `/api/v1/versions` | staged versions |
//! | POST | `/api/v1/deploy` | `{version}` → 202 `{id, version, required}`; the deploy runs on |
//! | POST | `/api/v1/rollback` | deploy the most recent earlier finalized version → 202 |
//! | GET | `/api/v1/status`, `/api/v1/status/{version}` | active version, deploy phase, per-component states |
//! | GET | `/api/v1/history` | the audit log |
//! | GET | `/api/v1/active` | the active version, its artifacts and roles |
//! | GET | `/api/v1/dlq?limit=N` | the newest dead letters (Ben's and CyberMesh's) with their reasons, and the counts |
//! | GET | `/api/v1/bees` | issued BEEs (as the sidecars report them) and revoked subjects |
//! | POST | `/api/v1/bees/revoke` | `{subject}`: revoke an app identity; sidecars drop its connections and refuse it |
//! | POST | `/api/v1/login-link` | a one-time link a browser logs in with (`benctl dashboard`) |
//! | GET | `/login?code=…` | trades a one-time code for a read-only session cookie, then `/` |
//! | GET | `/`, `/assets/…` | the dashboard's page and script (no data; no token) |
//! | GET | `/api/dashboard/…` | the dashboard's API ([`crate::dashboard`]) |
//! | GET | `/api/v1/health` | `{"status": "ok"}`; needs no token |
//! | GET | `/metrics` | the process's counters in Prometheus' text format (`ben up`: every component's; cluster mode: every process's); 503 until they run |
//!
//! Every endpoint but the health check, the login and the page needs the
//! API token (`Authorization: Bearer <token>`) or, for reads, a browser
//! session ([`crate::auth`]); without either: 401.

use crate::ledger::StageRequest;
use crate::{Config, ControlError, LedgerClient};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ben_ledger::LedgerError;
use ben_store::{Key, Store};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) ledger: LedgerClient,
    store: Arc<dyn Store>,
    pub(crate) bus: Arc<dyn ben_bus::Bus>,
    bees: Arc<crate::bees::Bees>,
    pub(crate) mesh: Arc<crate::mesh::Watch>,
    pub(crate) dlq: Arc<crate::dlq::Dlq>,
    pub(crate) dashboard: Arc<crate::dashboard::Dashboard>,
    pub(crate) logins: Arc<crate::auth::Logins>,
    pub(crate) metrics: crate::MetricsSource,
    max_artifact_bytes: usize,
    max_json_bytes: usize,
}

/// What the API serves from.
pub struct Parts {
    pub ledger: LedgerClient,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn ben_bus::Bus>,
    pub bees: Arc<crate::bees::Bees>,
    pub mesh: Arc<crate::mesh::Watch>,
    pub dlq: Arc<crate::dlq::Dlq>,
    pub dashboard: Arc<crate::dashboard::Dashboard>,
    pub logins: Arc<crate::auth::Logins>,
}

/// An error response: status + `{"error": …}` (+ `missing` for staging).
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    missing: Vec<String>,
}

impl ApiError {
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            missing: vec![],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if !self.missing.is_empty() {
            body["missing"] = serde_json::json!(self.missing);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::MissingArtifacts(_) => StatusCode::CONFLICT,
            ControlError::UnknownVersion(_) => StatusCode::NOT_FOUND,
            ControlError::NoRollbackTarget { .. } => StatusCode::CONFLICT,
            ControlError::Ledger(LedgerError::NotStaged(_)) => StatusCode::NOT_FOUND,
            ControlError::Ledger(_) => StatusCode::CONFLICT,
            ControlError::Store(ben_store::StoreError::BadKey(_)) => StatusCode::BAD_REQUEST,
            ControlError::Store(ben_store::StoreError::Remote { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ControlError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::NotRecorded { .. }
            | ControlError::Unavailable { .. }
            | ControlError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let missing = match &e {
            ControlError::MissingArtifacts(m) => m.clone(),
            _ => vec![],
        };
        ApiError {
            status,
            message: e.to_string(),
            missing,
        }
    }
}

type ApiResult = Result<Response, ApiError>;

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body unreadable or over {limit} bytes: {e}"),
        )
    })
}

async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = read_body(body, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (status, Json(v)).into_response()
}

async fn put_artifact(
    State(st): State<AppState>,
    Path(key): Path<String>,
    body: Body,
) -> ApiResult {
    let key =
        Key::parse(&key).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let bytes = read_body(body, st.max_artifact_bytes).await?;
    let actual = Key::of(&bytes);
    if actual != key {
        // Invariant 3: a mismatch is an error, never a fallback.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body hashes to {actual}, not to the key {key}; upload the artifact under its own BLAKE3 hash"),
        ));
    }
    let store = st.store.clone();
    let len = bytes.len();
    let existed = store.has(&key).map_err(ControlError::from)?;
    tokio::task::spawn_blocking(move || store.put(&bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ControlError::from)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(
        status,
        &serde_json::json!({ "blake3": key.as_str(), "bytes": len }),
    ))
}

async fn stage(State(st): State<AppState>, body: Body) -> ApiResult {
    let req: StageRequest = read_json(body, st.max_json_bytes).await?;
    let out = st.ledger.stage(req).await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &out))
}

async fn versions(State(st): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &st.ledger.versions().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    version: String,
}

async fn deploy(State(st): State<AppState>, body: Body) -> ApiResult {
    let req: DeployBody = read_json(body, st.max_json_bytes).await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &st.ledger.deploy(req.version).await?,
    ))
}

async fn rollback(State(st): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::ACCEPTED, &st.ledger.rollback().await?))
}

async fn status(State(st): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &st.ledger.status(None).await?))
}

async fn status_of(State(st): State<AppState>, Path(v): Path<String>) -> ApiResult {
    Ok(json(StatusCode::OK, &st.ledger.status(Some(v)).await?))
}

async fn history(State(st): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &st.ledger.history().await?))
}

async fn active(State(st): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &st.ledger.active().await?))
}

/// `GET /api/v1/lucius?schema=&flag=&since_ns=&limit=`: asks Lucius over
/// the bus (`ben.lucius.query`) and returns its answer.
async fn lucius(
    State(st): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = lucius_query(&q)?;
    Ok(axum::Json(ask_lucius(&st, query).await?).into_response())
}

/// A Lucius query from URL parameters (schema, flag, since_ns, limit).
pub(crate) fn lucius_query(
    q: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let mut query = serde_json::Map::new();
    for (k, v) in q {
        let val = match k.as_str() {
            "schema" | "flag" => serde_json::Value::String(v.clone()),
            "since_ns" | "limit" => serde_json::Value::from(v.parse::<i64>().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("{k} must be an integer"))
            })?),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter `{k}`; use schema, flag, since_ns, limit"),
                ))
            }
        };
        query.insert(k.clone(), val);
    }
    Ok(query)
}

/// Lucius' answer to `query` over the bus.
pub(crate) async fn ask_lucius(
    st: &AppState,
    query: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, ApiError> {
    let body = serde_json::Value::Object(query).to_string().into_bytes();
    let reply = st
        .bus
        .request("ben.lucius.query", body, std::time::Duration::from_secs(5))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Lucius did not answer: {e}"),
            )
        })?;
    let json: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Lucius answered garbage: {e}"),
        )
    })?;
    if let Some(err) = json.get("error").and_then(|e| e.as_str()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, err.to_string()));
    }
    Ok(json)
}

/// `GET /api/v1/mesh/enforcement`: asks the enforcement agent over the
/// bus what it holds.
async fn mesh_enforcement(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(ask_enforcement(&st).await?).into_response())
}

/// What the enforcement agent holds, as it answers over the bus.
pub(crate) async fn ask_enforcement(st: &AppState) -> Result<serde_json::Value, ApiError> {
    let reply = st
        .bus
        .request(
            ben_mesh_wire::ENFORCEMENT_QUERY,
            vec![],
            std::time::Duration::from_secs(5),
        )
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no enforcement agent answered: {e}"),
            )
        })?;
    serde_json::from_slice(&reply.payload).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the enforcement agent answered garbage: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitQuery {
    limit: Option<usize>,
}

/// `?limit=N` of a list endpoint: `default` when absent, at most `max`.
pub(crate) type Limit =
    Result<axum::extract::Query<LimitQuery>, axum::extract::rejection::QueryRejection>;

/// The limit asked for, or 400 saying what was expected.
pub(crate) fn limit(q: Limit, default: usize, max: usize) -> Result<usize, ApiError> {
    let q =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e} (expected ?limit=N)")))?;
    Ok(q.limit.unwrap_or(default).min(max))
}

pub(crate) fn mesh_view(
    st: &AppState,
) -> Result<std::sync::MutexGuard<'_, crate::mesh::View>, ApiError> {
    st.mesh.view.lock().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the CyberMesh view is poisoned (a panic while it was held); restart the control process",
        )
    })
}

/// `GET /api/v1/mesh/blocks?limit=N`: the newest committed blocks (20 by
/// default), as the validators announced them since the control process
/// started; `forks` lists heights announced with two different blocks.
async fn mesh_blocks(State(st): State<AppState>, q: Limit) -> ApiResult {
    let n = limit(q, 20, crate::mesh::BLOCKS)?;
    let v = mesh_view(&st)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "blocks": v.blocks(n),
            "forks": v.forks,
        }),
    ))
}

/// `GET /api/v1/mesh/validators`: each validator heard from, its height,
/// round, lag and reputation.
async fn mesh_validators(State(st): State<AppState>) -> ApiResult {
    let v = mesh_view(&st)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "validators": v.validators() }),
    ))
}

/// Asks the AI service's feedback loop (`query`: empty for the summary,
/// an anomaly id for its lifecycle).
async fn ask_feedback(st: &AppState, query: &str) -> Result<serde_json::Value, ApiError> {
    use crate::mesh::FeedbackError;
    crate::mesh::ask_feedback(st.bus.as_ref(), query, std::time::Duration::from_secs(3))
        .await
        .map_err(|e| {
            let status = match e {
                FeedbackError::NoAnswer(_) => StatusCode::SERVICE_UNAVAILABLE,
                FeedbackError::Garbage(_) => StatusCode::BAD_GATEWAY,
            };
            ApiError::new(status, e.to_string())
        })
}

/// `GET /api/v1/mesh/thresholds`: the AI service's publish threshold, its
/// anomalies by lifecycle state, and every threshold change with its
/// inputs and reason.
async fn mesh_thresholds(State(st): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &ask_feedback(&st, "").await?))
}

/// `GET /api/v1/mesh/anomalies/{id}`: the anomaly's lifecycle from the AI
/// service (detected, published, admitted, committed or why not, acks) and
/// from the chain (the block that committed it, the policies made from it).
async fn mesh_anomaly(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let chain = mesh_view(&st)?.anomaly(&id);
    let life = ask_feedback(&st, &id).await;
    let mut out = match &chain {
        Some(a) => serde_json::to_value(a).unwrap_or_default(),
        None => serde_json::json!({ "id": id }),
    };
    match life {
        Ok(v) if v.get("lifecycle").is_some() => out["lifecycle"] = v["lifecycle"].clone(),
        Ok(v) => out["lifecycle_error"] = v["error"].clone(),
        Err(e) => out["lifecycle_error"] = serde_json::Value::String(e.message.clone()),
    }
    if chain.is_none() && out.get("lifecycle").is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "anomaly {id:?} is not among the last {} committed since the control process started (older ones are in the validators' tables), and the AI service does not know it: {}",
                crate::mesh::ANOMALIES,
                out["lifecycle_error"].as_str().unwrap_or("")
            ),
        ));
    }
    Ok(json(StatusCode::OK, &out))
}

/// The newest dead letters with their reasons (`?limit=N`, default 50),
/// and the counts.
async fn dead_letters(State(st): State<AppState>, q: Limit) -> ApiResult {
    let n = limit(q, 50, crate::dlq::KEPT)?;
    let book = st.dlq.book.lock().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the dead-letter book is unavailable (a reader panicked)",
        )
    })?;
    Ok(json(StatusCode::OK, &book.view(n)))
}

async fn list_bees(State(st): State<AppState>) -> ApiResult {
    Ok(json(StatusCode::OK, &st.bees.list()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    subject: String,
}

async fn revoke_bee(State(st): State<AppState>, body: Body) -> ApiResult {
    let req: RevokeBody = read_json(body, st.max_json_bytes).await?;
    let new = st
        .bees
        .revoke(&req.subject)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "subject": req.subject, "already_revoked": !new }),
    ))
}

/// The process's counters in Prometheus' text format (behind the token,
/// as every route but health: Prometheus sends it with `authorization`).
async fn metrics(State(st): State<AppState>) -> Result<Response, ApiError> {
    prometheus_text(&st.metrics)
}

fn prometheus_text(source: &crate::MetricsSource) -> Result<Response, ApiError> {
    let text = source.render().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics yet: the components of this process are still starting",
        )
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[derive(Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// `GET /login?code=…`: a one-time code for a session cookie, then to the
/// dashboard.
async fn login(
    State(st): State<AppState>,
    q: Result<axum::extract::Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let code = q.ok().and_then(|q| q.0.code).unwrap_or_default();
    match st.logins.redeem(&code) {
        Some(session) => (
            StatusCode::SEE_OTHER,
            [
                (axum::http::header::LOCATION, "/".to_string()),
                (
                    axum::http::header::SET_COOKIE,
                    format!(
                        "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                        crate::auth::SESSION_COOKIE,
                        crate::auth::SESSION_TTL.as_secs()
                    ),
                ),
                (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
            ],
        )
            .into_response(),
        None => {
            // Someone holding a used, expired or made-up code: said, so
            // guessing shows in the logs.
            tracing::warn!("a dashboard login was refused: the code was used, expired or unknown");
            (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "This login link was used already, has expired, or is not this Ben's. Each link works once, for 15 minutes: run `benctl dashboard` for a new one.\n",
        )
            .into_response()
        }
    }
}

/// `POST /api/v1/login-link`: a new one-time link for a browser (needs the
/// token: `benctl dashboard`).
async fn login_link(State(st): State<AppState>, headers: axum::http::HeaderMap) -> ApiResult {
    let code = st
        .logins
        .code()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:7420");
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "url": format!("http://{host}{}?code={code}", crate::auth::LOGIN),
            "expires_in_s": crate::auth::LOGIN_CODE_TTL.as_secs(),
        }),
    ))
}

/// The dashboard's page and script, built into the binary.
async fn ui(uri: axum::http::Uri) -> Response {
    match ben_dashboard_ui::file(uri.path()) {
        Some((bytes, content_type)) => (
            [
                (axum::http::header::CONTENT_TYPE, content_type),
                (axum::http::header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        None => not_found().await.into_response(),
    }
}

async fn health() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /api/v1/status, /api/v1/versions, /api/v1/history, /api/v1/active, /api/v1/health",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// The API's routes over a ledger client, a store, the bus and the BEE list.
pub fn router(parts: Parts, cfg: &Config) -> Router {
    let Parts {
        ledger,
        store,
        bus,
        bees,
        mesh,
        dlq,
        dashboard,
        logins,
    } = parts;
    let gate = crate::auth::Gate::new(cfg.api_token.as_ref(), logins.clone());
    let state = AppState {
        ledger,
        store,
        bus,
        bees,
        mesh,
        dlq,
        dashboard,
        logins,
        metrics: cfg.metrics.clone(),
        max_artifact_bytes: cfg.max_artifact_bytes,
        max_json_bytes: cfg.max_json_bytes,
    };
    crate::dashboard::start_sampler(state.clone());
    use crate::dashboard as d;
    let mut r = Router::new();
    for path in ben_dashboard_ui::PATHS {
        r = r.route(path, get(ui));
    }
    r.route("/api/dashboard/overview", get(d::overview))
        .route("/api/dashboard/series", get(d::series))
        .route("/api/dashboard/anomalies", get(d::anomalies))
        .route("/api/dashboard/anomalies/{id}", get(d::anomaly))
        .route("/api/dashboard/blocks", get(d::blocks))
        .route("/api/dashboard/enforcement", get(d::enforcement))
        .route("/api/dashboard/intent", get(d::intent))
        .route("/api/dashboard/search", get(d::search))
        .route("/api/dashboard/stream", get(d::stream))
        .route(crate::auth::LOGIN, get(login))
        .route("/api/v1/login-link", post(login_link))
        .route("/api/v1/artifacts/{key}", put(put_artifact))
        .route("/api/v1/versions", post(stage).get(versions))
        .route("/api/v1/deploy", post(deploy))
        .route("/api/v1/rollback", post(rollback))
        .route("/api/v1/status", get(status))
        .route("/api/v1/status/{version}", get(status_of))
        .route("/api/v1/history", get(history))
        .route("/api/v1/active", get(active))
        .route("/api/v1/lucius", get(lucius))
        .route("/api/v1/mesh/enforcement", get(mesh_enforcement))
        .route("/api/v1/mesh/blocks", get(mesh_blocks))
        .route("/api/v1/mesh/validators", get(mesh_validators))
        .route("/api/v1/mesh/anomalies/{id}", get(mesh_anomaly))
        .route("/api/v1/mesh/thresholds", get(mesh_thresholds))
        .route("/api/v1/dlq", get(dead_letters))
        .route("/api/v1/bees", get(list_bees))
        .route("/api/v1/bees/revoke", post(revoke_bee))
        .route(crate::auth::HEALTH, get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Around every route and the fallback: no handler (not even a
        // 404) runs without the token.
        .layer(axum::middleware::from_fn_with_state(
            gate,
            crate::auth::require_token,
        ))
        // Our own limits apply (read_body); axum's default 2 MB one would
        // refuse large artifacts first.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// `GET /metrics` alone, behind `token`: what each cluster process but the
/// control process serves on a port of its own.
pub fn metrics_router(token: &crate::auth::ApiToken, source: crate::MetricsSource) -> Router {
    let gate = crate::auth::Gate::new(Some(token), Arc::default());
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let source = source.clone();
                async move { prometheus_text(&source) }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "this port serves only GET /metrics (the API is the control process's)",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            gate,
            crate::auth::require_token,
        ))
}

/// How long a stopping API waits for open requests.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The running HTTP server.
pub struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves the API on `listener` until [`Server::shutdown`].
    pub fn start(listener: TcpListener, parts: Parts, cfg: &Config) -> Server {
        Server::serve(listener, router(parts, cfg))
    }

    /// Serves `app` on `listener` until [`Server::shutdown`].
    pub fn serve(listener: TcpListener, app: Router) -> Server {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let addr = listener.local_addr().ok();
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Sent, or its sender dropped: either way, stop.
                    let _stop = stop_rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(?addr, error = %e, "the HTTP server stopped with an error");
            }
        });
        Server {
            stop: Some(stop_tx),
            task,
        }
    }

    /// Stops taking connections and waits for open requests, at most
    /// [`SHUTDOWN_GRACE`]; a connection still open then is dropped.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "the API still had open connections; dropped them"
            );
            self.task.abort();
        }
    }
}
