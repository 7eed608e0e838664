//! The commands that talk to a running Ben (`ben up`) through its HTTP API:
//! `stage`, `deploy`, `status`, `history`, `rollback`, `lucius query`,
//! `bee list`, `bee revoke`.
//!
//! The API is `--api URL`, else `$BEN_API`, else `http://127.0.0.1:7420`.
//! Its token (every endpoint needs one) is `--token`, else
//! `$BEN_API_TOKEN`, else the `api.token` file in Ben's data dir:
//! `--data-dir D`, else `$BEN_DATA_DIR`, else `.ben` — the data dir of a
//! `ben up --data-dir D`, or a cluster's `data_dir`.
//! Exit codes: 0 success; 1 Ben refused (not staged, busy, …) or the
//! deploy aborted; 2 Ben unreachable, usage or I/O error.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub const DEFAULT_API: &str = "http://127.0.0.1:7420";

#[derive(Args, Clone)]
pub struct ApiArg {
    /// Ben's API (default: $BEN_API, else http://127.0.0.1:7420).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// The API token (default: $BEN_API_TOKEN, else api.token in the data dir).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Ben's data dir, where api.token is (default: $BEN_DATA_DIR, else .ben).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The API token file's name in the data dir (as `ben up` writes it).
const TOKEN_FILE: &str = "api.token";

/// The token to send, and where benctl looked for it (for a refusal).
fn find_token(arg: &ApiArg) -> (Option<String>, String) {
    let mut looked = Vec::new();
    let nonempty = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    if let Some(t) = arg.token.clone().and_then(nonempty) {
        return (Some(t), "--token".into());
    }
    looked.push("--token (not given)".to_string());
    if let Some(t) = std::env::var("BEN_API_TOKEN").ok().and_then(nonempty) {
        return (Some(t), "$BEN_API_TOKEN".into());
    }
    looked.push("$BEN_API_TOKEN (unset)".to_string());
    let (dir, from) = match (
        &arg.data_dir,
        std::env::var("BEN_DATA_DIR").ok().and_then(nonempty),
    ) {
        (Some(d), _) => (d.clone(), "--data-dir"),
        (None, Some(d)) => (PathBuf::from(d), "$BEN_DATA_DIR"),
        (None, None) => (PathBuf::from(".ben"), "the default data dir"),
    };
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => match nonempty(t) {
            Some(t) => (Some(t), format!("{} ({from})", path.display())),
            None => {
                looked.push(format!("{} ({from}): empty", path.display()));
                (None, looked.join(", "))
            }
        },
        Err(e) => {
            looked.push(format!("{} ({from}): {e}", path.display()));
            (None, looked.join(", "))
        }
    }
}

#[derive(Args, Clone)]
pub struct WaitArgs {
    /// Wait until the deploy is finalized or aborted; exit 1 on abort.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Build a bundle, upload its artifacts and stage it as a version (nothing activates).
    Stage {
        /// The bundle directory (holds ben.toml and a current ben.lock).
        dir: PathBuf,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Deploy a staged version: every required component prepares, then all activate.
    Deploy {
        version: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The active version, the current or last deploy, and the components.
    Status {
        /// Show this version's most recent deploy.
        version: Option<String>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The staged versions, newest first: bundle, digest, when staged,
    /// artifacts, and which one is active.
    Versions {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The ledger's audit log.
    History {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Deploy the most recently finalized version other than the active one.
    Rollback {
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Query Lucius, the observation store (records routed to observe).
    Lucius {
        #[command(subcommand)]
        cmd: LuciusCmd,
    },
    /// The BEEs sidecars issued, and revocation.
    Bee {
        #[command(subcommand)]
        cmd: BeeCmd,
    },
    /// CyberMesh: what is enforced.
    Mesh {
        #[command(subcommand)]
        cmd: MeshCmd,
    },
    /// A one-time link that logs a browser in to the dashboard (read
    /// only; works once, within 15 minutes).
    Dashboard {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Dead letters, Ben's and CyberMesh's: the newest, who refused what
    /// and why, and how many in all.
    Dlq {
        /// How many of the newest to show (the API keeps 1,000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
}

#[derive(Subcommand)]
pub enum MeshCmd {
    /// What the enforcement agent blocks: each target, since and until
    /// when, and why (policy, block height, anomalies).
    Enforcement {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The newest committed blocks: height, time, id, state root,
    /// anomalies, policies, and how many validators announced each.
    Blocks {
        /// How many (newest first).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Each validator: committed height, round, lag behind the highest,
    /// last commit, reputation (blocks proposed, votes in certificates).
    Validators {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// The AI service's publish threshold, its anomalies by lifecycle
    /// state, and every threshold change with its inputs and reason.
    Thresholds {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// One anomaly from detection to enforcement: its lifecycle
    /// (detected, published, admitted, committed or why not), the block
    /// that committed it, the policies made from it and the agents' acks.
    Anomaly {
        /// The anomaly's id (as `ben detect` and the AI service name it).
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
}

/// GETs `path`; prints the JSON with `--json`, else hands it to `show`.
fn get_and_show(api: &Api, path: &str, json: bool, show: impl FnOnce(&Value)) -> Result<ExitCode> {
    let r = api.call("GET", path, None)?;
    if !r.ok() {
        return Ok(refused(&r));
    }
    if json {
        println!("{}", r.body);
    } else {
        show(&r.body);
    }
    Ok(ExitCode::SUCCESS)
}

fn mesh_blocks(b: &Value) {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let u = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let rows = b["blocks"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no blocks committed since the control process started");
    }
    for r in &rows {
        let short = |h: String| h.chars().take(12).collect::<String>();
        println!(
            "height {}  {}  block {}  root {}  anomalies {}  refused {}  policies {}  announced by {}",
            u(r, "height"),
            ms_rfc3339(u(r, "time_ms")),
            short(s(r, "block")),
            short(s(r, "state_root")),
            r["anomalies"].as_array().map(Vec::len).unwrap_or(0),
            u(r, "refused"),
            u(r, "policies"),
            r["announced_by"].as_array().map(Vec::len).unwrap_or(0),
        );
    }
    if let Some(f) = b["forks"].as_array().filter(|f| !f.is_empty()) {
        println!("FORK: two different blocks announced at heights {f:?}: the validators disagree; stop and investigate");
    }
}

fn mesh_validators(b: &Value) {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let u = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let rows = b["validators"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no validator has announced a commit since the control process started");
    }
    for r in &rows {
        println!(
            "{}  height {}  round {}  lag {}  last commit {}  proposed {}  voted {}",
            s(r, "id"),
            u(r, "height"),
            u(r, "round"),
            u(r, "lag"),
            ms_rfc3339(u(r, "last_commit_ms")),
            u(r, "proposed"),
            u(r, "voted"),
        );
    }
}

fn mesh_anomaly(a: &Value) {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let u = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let at = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).map(ms_rfc3339);
    println!("anomaly {}", s(a, "id"));
    let l = &a["lifecycle"];
    if l.is_object() {
        println!(
            "  state {}  class {}  confidence {:.3}",
            s(l, "state"),
            s(l, "class"),
            l["confidence"].as_f64().unwrap_or(0.0)
        );
        for (what, key) in [
            ("detected", "detected_ms"),
            ("published", "published_ms"),
            ("admitted", "admitted_ms"),
            ("committed", "committed_ms"),
            ("ended", "ended_ms"),
        ] {
            if let Some(t) = at(l, key) {
                println!("  {what:<10} {t}");
            }
        }
        if let Some(r) = l["reason"].as_str() {
            println!("  reason     {r}");
        }
        for k in l["acks"].as_array().into_iter().flatten() {
            println!(
                "  ack        {} {} {} (policy {}) at {}",
                s(k, "agent"),
                s(k, "status"),
                s(k, "target"),
                s(k, "policy"),
                at(k, "at_ms").unwrap_or_default()
            );
        }
    } else if let Some(e) = a["lifecycle_error"].as_str() {
        println!("  lifecycle unknown: {e}");
    }
    if a.get("height").is_some() {
        println!(
            "  block      height {} ({}), {}",
            u(a, "height"),
            at(a, "time_ms").unwrap_or_default(),
            s(a, "block")
        );
    }
    for p in a["policies"].as_array().into_iter().flatten() {
        let scope: Vec<&str> = p["scope"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "  policy     {}  {} {}  until {}  at height {}{}{}",
            s(p, "id"),
            s(p, "rule"),
            s(p, "target"),
            ms_rfc3339(u(p, "expires_at_ms")),
            u(p, "height"),
            if scope.is_empty() {
                String::new()
            } else {
                format!("  on {}", scope.join(","))
            },
            if s(p, "request").is_empty() {
                String::new()
            } else {
                format!("  requested by {}", s(p, "request"))
            }
        );
    }
}

fn mesh_thresholds(t: &Value) {
    println!(
        "publish threshold {:.4}",
        t["threshold"].as_f64().unwrap_or(f64::NAN)
    );
    if let Some(c) = t["counts"].as_object() {
        let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("anomalies: {}", parts.join(", "));
    }
    let changes = t["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("no change yet");
    }
    for c in &changes {
        println!(
            "{}  {:.4} -> {:.4}  acceptance {:.1} % ({} of {} decided, {} published in {} min): {}",
            ms_rfc3339(c["at_ms"].as_u64().unwrap_or(0)),
            c["from"].as_f64().unwrap_or(0.0),
            c["to"].as_f64().unwrap_or(0.0),
            c["rate"].as_f64().unwrap_or(0.0) * 100.0,
            c["committed"],
            c["decided"],
            c["published"],
            c["window_ms"].as_u64().unwrap_or(0) / 60_000,
            c["reason"].as_str().unwrap_or("")
        );
    }
}

fn ms_rfc3339(ms: u64) -> String {
    ben_time::format_rfc3339(ms as i64 * 1_000_000)
}

fn mesh_enforcement(b: &Value) {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let u = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let rows = b
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    println!(
        "agent {} ({}), {} entries{}",
        s(b, "agent"),
        s(b, "backend"),
        rows.len(),
        if b["breaker"]["open"] == json!(true) {
            " — circuit breaker OPEN: new policies are held, not applied"
        } else {
            ""
        }
    );
    for e in &rows {
        let anomalies: Vec<&str> = e
            .get("anomalies")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{}  {}  since {}  until {}  policy {} at height {}  anomalies {}",
            s(e, "target"),
            s(e, "rule"),
            ms_rfc3339(u(e, "since_ms")),
            ms_rfc3339(u(e, "expires_at_ms")),
            s(e, "policy"),
            u(e, "height"),
            anomalies.join(",")
        );
    }
}

#[derive(Subcommand)]
pub enum BeeCmd {
    /// Issued BEEs (one per attested connection) and the revoked subjects.
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
    /// Revoke an app identity: its connections are dropped and its next Hello refused.
    Revoke {
        /// The BEE subject, as `benctl bee list` shows it (app/uid/exe-prefix).
        subject: String,
        #[command(flatten)]
        api: ApiArg,
    },
}

fn bee(cmd: BeeCmd) -> Result<ExitCode> {
    match cmd {
        BeeCmd::List { json, api } => {
            let r = Api::new(api).call("GET", "/api/v1/bees", None)?;
            if !r.ok() {
                return Ok(refused(&r));
            }
            if json {
                println!("{}", r.body);
                return Ok(ExitCode::SUCCESS);
            }
            let bees = r.body["bees"].as_array().cloned().unwrap_or_default();
            println!("bees     {} issued", bees.len());
            for b in &bees {
                let g = |k: &str| b[k].as_str().unwrap_or_default().to_string();
                let n = |k: &str| b[k].as_i64().unwrap_or_default();
                println!(
                    "  {}  serial {}  pid {}  {}  expires {}  (sidecar {})",
                    g("subject"),
                    n("serial"),
                    n("pid"),
                    g("exe"),
                    time(n("expires_ns")),
                    g("sidecar")
                );
            }
            let revoked = r.body["revoked"].as_array().cloned().unwrap_or_default();
            println!("revoked  {}", revoked.len());
            for s in &revoked {
                println!("  {}", s.as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        BeeCmd::Revoke { subject, api } => {
            let r = Api::new(api).call(
                "POST",
                "/api/v1/bees/revoke",
                Some(json!({ "subject": subject })),
            )?;
            if !r.ok() {
                return Ok(refused(&r));
            }
            if r.body["already_revoked"].as_bool() == Some(true) {
                println!("{subject} was already revoked; sidecars were told again");
            } else {
                println!(
                    "revoked  {subject}; sidecars drop its connections and refuse its next Hello"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Subcommand)]
pub enum LuciusCmd {
    /// Stored observations (redacted), oldest first.
    Query {
        /// Schema name, optionally with version: http.request or http.request@v2.
        #[arg(long)]
        schema: Option<String>,
        /// Only records with this flag set.
        #[arg(long)]
        flag: Option<String>,
        /// Only records since: a duration ago (10m, 1h) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArg,
    },
}

fn since_ns(s: &str) -> Result<i64> {
    if let Some(t) = ben_time::parse_rfc3339(s) {
        return Ok(t);
    }
    let d = ben_bitspec::value::parse_duration(s).ok_or_else(|| {
        anyhow::anyhow!(
            "--since {s}: write a duration like 10m or a time like 2026-01-01T00:00:00Z"
        )
    })?;
    Ok(ben_time::now_ns() - d)
}

fn lucius_query(
    api: &Api,
    schema: Option<String>,
    flag: Option<String>,
    since: Option<String>,
    limit: usize,
    json: bool,
) -> Result<ExitCode> {
    let mut q = vec![format!("limit={limit}")];
    if let Some(s) = schema {
        q.push(format!("schema={}", s.replace('@', "%40")));
    }
    if let Some(f) = flag {
        q.push(format!("flag={f}"));
    }
    if let Some(s) = since {
        q.push(format!("since_ns={}", since_ns(&s)?));
    }
    let r = api.call("GET", &format!("/api/v1/lucius?{}", q.join("&")), None)?;
    if !r.ok() {
        return Ok(refused(&r));
    }
    if json {
        println!("{}", r.body);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = r
        .body
        .get("records")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for row in &rows {
        println!(
            "{}  {}@v{}  {}  flags {}  {}",
            row.get("id").and_then(Value::as_str).unwrap_or(""),
            row.get("schema").and_then(Value::as_str).unwrap_or(""),
            row.get("schema_version")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            row.get("intent").and_then(Value::as_str).unwrap_or(""),
            row.get("flags").map(|f| f.to_string()).unwrap_or_default(),
            row.get("record").map(|f| f.to_string()).unwrap_or_default()
        );
    }
    println!(
        "{} shown, {} stored",
        rows.len(),
        r.body.get("count").and_then(Value::as_u64).unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Stage { dir, api } => stage(&Api::new(api), &dir),
        Cmd::Bee { cmd } => bee(cmd),
        Cmd::Deploy { version, wait, api } => {
            let api = Api::new(api);
            let r = api.call(
                "POST",
                "/api/v1/deploy",
                Some(json!({ "version": version })),
            )?;
            started(&api, r, &wait)
        }
        Cmd::Status { version, json, api } => status(&Api::new(api), version.as_deref(), json),
        Cmd::Dashboard { json, api } => {
            let r = Api::new(api).call("POST", "/api/v1/login-link", None)?;
            if !r.ok() {
                return Ok(refused(&r));
            }
            if json {
                println!("{}", r.body);
            } else {
                println!(
                    "{}\n(logs one browser in, once, within {} s; read only)",
                    r.body["url"].as_str().unwrap_or(""),
                    r.body["expires_in_s"].as_u64().unwrap_or(0)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dlq { limit, json, api } => get_and_show(
            &Api::new(api),
            &format!("/api/v1/dlq?limit={limit}"),
            json,
            dlq,
        ),
        Cmd::Versions { json, api } => {
            get_and_show(&Api::new(api), "/api/v1/versions", json, versions)
        }
        Cmd::History { json, api } => {
            get_and_show(&Api::new(api), "/api/v1/history", json, history)
        }
        Cmd::Rollback { wait, api } => {
            let api = Api::new(api);
            let r = api.call("POST", "/api/v1/rollback", None)?;
            started(&api, r, &wait)
        }
        Cmd::Lucius {
            cmd:
                LuciusCmd::Query {
                    schema,
                    flag,
                    since,
                    limit,
                    json,
                    api,
                },
        } => lucius_query(&Api::new(api), schema, flag, since, limit, json),
        Cmd::Mesh {
            cmd: MeshCmd::Enforcement { json, api },
        } => get_and_show(
            &Api::new(api),
            "/api/v1/mesh/enforcement",
            json,
            mesh_enforcement,
        ),
        Cmd::Mesh {
            cmd: MeshCmd::Blocks { limit, json, api },
        } => get_and_show(
            &Api::new(api),
            &format!("/api/v1/mesh/blocks?limit={limit}"),
            json,
            mesh_blocks,
        ),
        Cmd::Mesh {
            cmd: MeshCmd::Validators { json, api },
        } => get_and_show(
            &Api::new(api),
            "/api/v1/mesh/validators",
            json,
            mesh_validators,
        ),
        Cmd::Mesh {
            cmd: MeshCmd::Thresholds { json, api },
        } => get_and_show(
            &Api::new(api),
            "/api/v1/mesh/thresholds",
            json,
            mesh_thresholds,
        ),
        Cmd::Mesh {
            cmd: MeshCmd::Anomaly { id, json, api },
        } => {
            let path = format!("/api/v1/mesh/anomalies/{}", percent(&id));
            get_and_show(&Api::new(api), &path, json, mesh_anomaly)
        }
    }
}

/// A response: status code and JSON body.
struct Reply {
    code: u16,
    body: Value,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The API's `{"error": …}`, or the body.
    fn error(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(e) => e.to_string(),
            None => format!("HTTP {}: {}", self.code, self.body),
        }
    }
}

struct Api {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
    /// Where the token came from, or where benctl looked for one.
    token_from: String,
}

impl Api {
    fn new(arg: ApiArg) -> Api {
        let (token, token_from) = find_token(&arg);
        let base = arg
            .api
            .or_else(|| std::env::var("BEN_API").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_API.to_string());
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Api {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
            token,
            token_from,
        }
    }

    fn authorized<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    fn send(&self, method: &str, path: &str, body: Body) -> Result<Reply> {
        let url = format!("{}{path}", self.base);
        let res = match (method, body) {
            ("GET", _) => self.authorized(self.agent.get(&url)).call(),
            ("PUT", Body::Bytes(b)) => self
                .authorized(self.agent.put(&url))
                .header("content-type", "application/octet-stream")
                .send(b),
            ("POST", Body::Json(j)) => self
                .authorized(self.agent.post(&url))
                .header("content-type", "application/json")
                .send(j.to_string()),
            ("POST", _) => self.authorized(self.agent.post(&url)).send_empty(),
            _ => bail!("internal: unsupported request {method} {path}"),
        };
        let mut resp = match res {
            Ok(r) => r,
            Err(e) => bail!(
                "cannot reach Ben at {}: is `ben up` running? ({e})",
                self.base
            ),
        };
        let code = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the reply to {method} {url}"))?;
        let mut body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if code == 401 {
            // Say where the token came from, or where benctl looked.
            let said = Reply { code, body }.error();
            let source = match &self.token {
                Some(_) => format!("benctl sent the token from {}", self.token_from),
                None => format!("benctl found no token; it looked at {}", self.token_from),
            };
            body = json!({
                "error": format!("{said}\n  {source}; pass --token, set $BEN_API_TOKEN, or --data-dir D (or $BEN_DATA_DIR) for a `ben up --data-dir D`")
            });
        }
        Ok(Reply { code, body })
    }

    fn call(&self, method: &str, path: &str, json: Option<Value>) -> Result<Reply> {
        self.send(method, path, json.map(Body::Json).unwrap_or(Body::None))
    }
}

enum Body<'a> {
    None,
    Json(Value),
    Bytes(&'a [u8]),
}

/// Prints Ben's refusal and returns exit code 1.
fn refused(r: &Reply) -> ExitCode {
    eprintln!("error: {}", r.error());
    if let Some(m) = r.body.get("missing").and_then(Value::as_array) {
        for n in m {
            eprintln!("  missing: {}", n.as_str().unwrap_or_default());
        }
    }
    ExitCode::from(1)
}

fn stage(api: &Api, dir: &Path) -> Result<ExitCode> {
    let Some(b) = super::load_built(dir, super::Format::Human)? else {
        return Ok(ExitCode::from(1));
    };
    // Invariant 7: the bits staged must be the bits in the committed lock.
    if b.lock_changed {
        eprintln!(
            "error: ben.lock is out of date (flags were added or removed); run `benctl build {}`, commit ben.lock, then stage",
            dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    let failed: Vec<_> = ben_intent::run_tests(&b)
        .into_iter()
        .filter(|t| !t.passed())
        .collect();
    if !failed.is_empty() {
        for t in &failed {
            eprintln!("test {} ... FAILED ({})", t.name, t.location);
            for f in &t.failures {
                eprintln!("    {f}");
            }
        }
        eprintln!(
            "error: {} bundle test(s) failed; nothing was staged",
            failed.len()
        );
        return Ok(ExitCode::from(1));
    }
    let (mut uploaded, mut present) = (0, 0);
    let mut artifacts = serde_json::Map::new();
    // Drawn on a terminal only (indicatif hides it otherwise).
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(b.artifacts.iter().map(|a| a.bytes.len() as u64).sum()),
        indicatif::ProgressDrawTarget::stderr(),
    )
    .with_style(
        indicatif::ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for a in &b.artifacts {
        bar.set_message(a.name.clone());
        let hash = a.hash.to_hex().to_string();
        let r = api.send(
            "PUT",
            &format!("/api/v1/artifacts/{hash}"),
            Body::Bytes(&a.bytes),
        )?;
        match r.code {
            201 => uploaded += 1,
            200 => present += 1,
            _ => {
                eprintln!("error: uploading {}: {}", a.name, r.error());
                return Ok(ExitCode::from(1));
            }
        }
        artifacts.insert(a.name.clone(), Value::String(hash));
        bar.inc(a.bytes.len() as u64);
    }
    bar.finish_and_clear();
    let r = api.call(
        "POST",
        "/api/v1/versions",
        Some(json!({
            "version": b.version,
            "bundle": b.name,
            "digest": b.digest.to_hex().to_string(),
            "artifacts": artifacts,
        })),
    )?;
    if !r.ok() {
        return Ok(refused(&r));
    }
    let already = r.code == 200;
    println!(
        "{}   {}",
        if already { "already staged" } else { "staged" },
        b.version
    );
    println!("bundle   {}", b.name);
    println!("digest   blake3:{}", b.digest.to_hex());
    println!(
        "artifacts {} ({uploaded} uploaded, {present} already in the store)",
        b.artifacts.len()
    );
    println!("next     benctl deploy {} --wait", b.version);
    Ok(ExitCode::SUCCESS)
}

/// After POST deploy / rollback: print, and wait if asked.
fn started(api: &Api, r: Reply, wait: &WaitArgs) -> Result<ExitCode> {
    if !r.ok() {
        return Ok(refused(&r));
    }
    let id = r.body["id"].as_i64().unwrap_or_default();
    let version = r.body["version"].as_str().unwrap_or_default().to_string();
    let required: Vec<&str> = r.body["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "deploy #{id} of {version} started; required: {}",
        required.join(", ")
    );
    if !wait.wait {
        println!("follow it with `benctl status`");
        return Ok(ExitCode::SUCCESS);
    }
    let t0 = Instant::now();
    let deadline = Duration::from_secs(wait.timeout);
    loop {
        let s = api.call("GET", "/api/v1/status", None)?;
        if !s.ok() {
            return Ok(refused(&s));
        }
        let d = &s.body["deploy"];
        let phase = d["phase"].as_str().unwrap_or_default();
        if d["id"].as_i64() == Some(id) && !matches!(phase, "preparing" | "activating") {
            print_deploy(d);
            println!("took     {:.3} s", t0.elapsed().as_secs_f64());
            return Ok(if phase == "finalized" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        if t0.elapsed() > deadline {
            print_deploy(d);
            bail!(
                "deploy #{id} of {version} has not ended after {} s (still {phase}); `benctl status` follows it",
                wait.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_deploy(d: &Value) {
    if d.is_null() {
        println!("deploy   none yet");
        return;
    }
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    println!(
        "deploy   #{} {} {}",
        d["id"].as_i64().unwrap_or_default(),
        s("version"),
        s("phase")
    );
    if let Some(r) = d["reason"].as_str() {
        println!("reason   {r}");
    }
    println!(
        "started  {}",
        time(d["started_ns"].as_i64().unwrap_or_default())
    );
    if let Some(e) = d["ended_ns"].as_i64() {
        println!("ended    {}", time(e));
    }
    let comps = d["components"].as_array().cloned().unwrap_or_default();
    let w = comps
        .iter()
        .map(|c| c["id"].as_str().unwrap_or_default().len())
        .max()
        .unwrap_or(0)
        .max(9);
    for c in &comps {
        let g = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        let reason = c["reason"]
            .as_str()
            .map(|r| format!("  {r}"))
            .unwrap_or_default();
        let line = format!(
            "  {:<w$}  {:<8}  {:<10}{reason}",
            g("id"),
            g("role"),
            g("state")
        );
        println!("{}", line.trim_end());
    }
}

fn status(api: &Api, version: Option<&str>, as_json: bool) -> Result<ExitCode> {
    let path = match version {
        Some(v) => format!("/api/v1/status/{v}"),
        None => "/api/v1/status".to_string(),
    };
    let r = api.call("GET", &path, None)?;
    if !r.ok() {
        return Ok(refused(&r));
    }
    if as_json {
        println!("{}", r.body);
        return Ok(ExitCode::SUCCESS);
    }
    let b = &r.body;
    println!("active   {}", b["active"].as_str().unwrap_or("none"));
    if let Some(v) = b.get("version").filter(|v| !v.is_null()) {
        println!(
            "version  {} (bundle {}, {} artifacts, staged {}){}",
            v["version"].as_str().unwrap_or_default(),
            v["bundle"].as_str().unwrap_or_default(),
            v["artifacts"].as_u64().unwrap_or_default(),
            time(v["staged_ns"].as_i64().unwrap_or_default()),
            if v["active"].as_bool() == Some(true) {
                ", active"
            } else {
                ""
            }
        );
    }
    print_deploy(&b["deploy"]);
    let comps = b["components"].as_array().cloned().unwrap_or_default();
    println!("components {} registered", comps.len());
    for c in &comps {
        let g = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        let runs = g("intent_version");
        let mut notes = Vec::new();
        if c["behind"].as_bool() == Some(true) {
            notes.push("behind the active version");
        }
        if c["joined_late"].as_bool() == Some(true) {
            notes.push("joined late");
        }
        let line = format!(
            "  {:<20}  {:<8}  runs {:<18}  {}",
            g("id"),
            g("role"),
            if runs.is_empty() { "nothing" } else { &runs },
            notes.join(", ")
        );
        println!("{}", line.trim_end());
    }
    let k = &b["counters"];
    println!(
        "counters dead letters {}, stale acks {}, publish errors {}, db errors {}",
        k["dead_letters"], k["stale_acks"], k["publish_errors"], k["db_errors"]
    );
    if let Some(e) = b["last_db_error"].as_str() {
        println!("db error {e}");
    }
    Ok(ExitCode::SUCCESS)
}

fn history(body: &Value) {
    for e in body.as_array().cloned().unwrap_or_default() {
        println!(
            "{}  {:<18}  {}",
            time(e["at_ns"].as_i64().unwrap_or_default()),
            e["version"].as_str().unwrap_or_default(),
            e["what"].as_str().unwrap_or_default()
        );
    }
}

fn versions(body: &Value) {
    let mut all = body.as_array().cloned().unwrap_or_default();
    all.sort_by_key(|v| std::cmp::Reverse(v["staged_ns"].as_i64().unwrap_or_default()));
    if all.is_empty() {
        println!("no version staged (benctl stage DIR)");
    }
    for v in all {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let digest = s("digest");
        println!(
            "{} {:<18} {:<12} staged {}  digest {}  {} artifacts",
            if v["active"] == true { "*" } else { " " },
            s("version"),
            s("bundle"),
            time(v["staged_ns"].as_i64().unwrap_or_default()),
            &digest[..digest.len().min(16)],
            v["artifacts"]
        );
    }
}

fn dlq(b: &Value) {
    println!(
        "dead letters  {} in all ({} did not verify; the newest {} kept)",
        b["total"], b["unverified"], b["kept"]
    );
    for l in b["letters"].as_array().cloned().unwrap_or_default() {
        let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
        println!(
            "{}  {:<14} refused {} ({} bytes): {}",
            time(l["at_ns"].as_i64().unwrap_or_default()),
            s("sender"),
            s("subject"),
            l["size"],
            s("reason")
        );
    }
}

/// RFC 3339 UTC with milliseconds, from ns since the epoch.
fn time(ns: i64) -> String {
    ben_time::format_rfc3339_millis(ns)
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(1_767_225_600_123_000_000), "2026-01-01T00:00:00.123Z");
        assert_eq!(time(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }
}

/// `s` as one URL path segment: every byte but the unreserved ones
/// (RFC 3986: letters, digits, `-._~`) as `%XX`.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod percent_tests {
    #[test]
    fn a_path_segment_keeps_only_unreserved_bytes() {
        assert_eq!(super::percent("an-1.x_~"), "an-1.x_~");
        assert_eq!(super::percent("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }
}
