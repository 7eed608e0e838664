//! `ben bench activation --components N [--nats URL] [--rounds R]`: how long
//! an intent deploy takes from `deploy` to `finalized` with N components
//! over NATS (DESIGN.md §7: 100 components finalized < 1 s).
//!
//! Starts the control service (ledger + SQLite + store, its HTTP API on a
//! free port) and N lightweight components. Each is a task with its own
//! NATS connection and its own [`IntentAgent`] of role `proxy`: on announce
//! it fetches the proxy's artifacts from the store, verifies their hashes,
//! compiles them into a Bitspec program (as the proxy does) and acks over
//! NATS, signed; it heartbeats so the ledger registers it. Every subject is
//! under a per-run prefix ([`PrefixedBus`]), so runs do not see each other.
//! Then R deploys alternate two builds of the shop bundle; each is timed
//! from the deploy call (the ledger client the API's deploy uses) to the
//! ledger's finalize. After every round each component must run the new
//! version; after the last, each must also report it in its heartbeats.

use anyhow::{anyhow, bail, Context, Result};
use ben_bus::{Bus, PrefixedBus};
use ben_component::{start_heartbeats, Deps, HeartbeatGuard, IntentAgent, Load, Role};
use ben_control::ledger::{DeployPhase, StageRequest};
use ben_store::{FileStore, Store};
use ben_wire::{Keyring, Signer};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy role's artifacts (schemas, packs, settings) compiled into a
/// Bitspec program, as the proxy loads them.
struct BenchProxy;

impl Role for BenchProxy {
    const NAME: &'static str = "proxy";
    type Compiled = ben_bitspec::ir::Program;
    fn compile(
        &self,
        artifacts: &BTreeMap<String, Vec<u8>>,
        _version: &str,
    ) -> Result<Self::Compiled, String> {
        ben_bitspec::canon::program_from_artifacts(artifacts).map_err(|e| e.to_string())
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub components: usize,
    /// Deploy → finalized, one per round, as the ledger timed its finalize.
    pub rounds: Vec<Duration>,
    /// Of which deploy → activate sent (every component prepared), per round.
    pub prepare: Vec<Duration>,
    /// The version deployed last (every component runs and reports it).
    pub last_version: String,
}

impl Figures {
    pub fn p50(&self) -> Duration {
        let mut v = self.rounds.clone();
        v.sort();
        v.get(v.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.rounds.iter().max().copied().unwrap_or_default()
    }
}

fn p50(d: &[Duration]) -> Duration {
    let mut v = d.to_vec();
    v.sort();
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// Runs the bench for each N in `components` and prints one line per N.
pub fn run(nats: Option<&str>, components: &[usize], rounds: usize) -> Result<()> {
    let url = nats.unwrap_or("nats://127.0.0.1:4222").to_string();
    let rt = crate::cluster::runtime()?;
    rt.block_on(async {
        for &n in components {
            let f = measure(&url, n, rounds).await?;
            println!(
                "activation over NATS, {} components: deploy → finalized p50 {:.1} ms, max {:.1} ms (prepare phase p50 {:.1} ms) over {} rounds ({}); every component runs and reports {}",
                f.components,
                ms(f.p50()),
                ms(f.max()),
                ms(p50(&f.prepare)),
                f.rounds.len(),
                f.rounds
                    .iter()
                    .map(|d| format!("{:.1}", ms(*d)))
                    .collect::<Vec<_>>()
                    .join(", "),
                f.last_version
            );
        }
        Ok(())
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One component: its agent (to read the version it runs) and the tasks
/// that keep it alive.
struct Component {
    agent: Arc<IntentAgent<BenchProxy>>,
    _heartbeats: HeartbeatGuard,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Component {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the shop bundle, `variant` 1 with a different playbook window (a
/// second version), stores its artifacts and returns the stage request.
fn build(dir: &Path, variant: u8, store: &FileStore) -> Result<StageRequest> {
    let dir = crate::shop::write_bundle(&dir.join(format!("shop{variant}")))?;
    if variant == 1 {
        let path = dir.join("shop.bspec");
        let text = std::fs::read_to_string(&path).context("reading shop.bspec")?;
        let changed = text.replace("within 60s", "within 90s");
        if changed == text {
            bail!("the shop bundle no longer has the `within 60s` this bench changes");
        }
        std::fs::write(&path, changed).context("writing shop.bspec")?;
    }
    let bundle = ben_intent::Bundle::load(&dir).map_err(|e| anyhow!("{e}"))?;
    let built = bundle.build().map_err(|f| anyhow!("{}", f.render()))?;
    let mut artifacts = BTreeMap::new();
    for a in &built.artifacts {
        let key = store.put(&a.bytes).map_err(|e| anyhow!("{e}"))?;
        artifacts.insert(a.name.clone(), key.to_string());
    }
    Ok(StageRequest {
        version: built.version.clone(),
        bundle: built.name.clone(),
        digest: built.digest.to_hex().to_string(),
        artifacts,
    })
}

async fn connect(url: &str, prefix: &str) -> Result<Arc<dyn Bus>> {
    let nats = ben_bus_nats::NatsBus::connect(&ben_bus_nats::Config {
        url: url.to_string(),
        ..ben_bus_nats::Config::default()
    })
    .await
    .map_err(|e| anyhow!(e))?;
    Ok(Arc::new(PrefixedBus::new(nats, prefix.to_string())))
}

/// Starts the control service and `n` components on NATS at `url`, then
/// times `rounds` deploys alternating two versions of the shop bundle.
pub async fn measure(url: &str, n: usize, rounds: usize) -> Result<Figures> {
    if n == 0 || rounds == 0 {
        bail!("--components and --rounds must be at least 1");
    }
    let run_id = format!("{}x{}", std::process::id(), ben_time::now_ns());
    let dir = std::env::temp_dir().join(format!("ben-bench-activation-{run_id}"));
    let _ = std::fs::remove_dir_all(&dir);
    let result = measure_in(&dir, &run_id, url, n, rounds).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure_in(
    dir: &Path,
    run_id: &str,
    url: &str,
    n: usize,
    rounds: usize,
) -> Result<Figures> {
    let prefix = format!("benact{run_id}");
    let store = Arc::new(FileStore::open(dir.join("store")).map_err(|e| anyhow!("{e}"))?);
    let versions = [build(dir, 0, &store)?, build(dir, 1, &store)?];
    if versions[0].version == versions[1].version {
        bail!("the two builds of the shop bundle have the same version");
    }

    // Keys: the ledger's and one per component, each bound to its id;
    // everyone trusts all.
    let ledger_signer = Arc::new(Signer::from_secret(
        ben_runtime::random32().map_err(anyhow::Error::msg)?,
    ));
    let mut keyring = Keyring::new();
    keyring.trust(
        ben_wire::LEDGER_ID,
        ben_wire::Role::Ledger,
        ledger_signer.public(),
    );
    let mut signers = Vec::with_capacity(n);
    for i in 0..n {
        let s = Signer::from_secret(ben_runtime::random32().map_err(anyhow::Error::msg)?);
        keyring.trust(&format!("proxy-{i}"), ben_wire::Role::Proxy, s.public());
        signers.push(Arc::new(s));
    }
    let keyring_arc = Arc::new(keyring.clone());

    let control = ben_control::start(
        ben_control::Config {
            data_dir: dir.join("control"),
            api_addr: "127.0.0.1:0".parse()?,
            roles: ben_runtime::intent_roles(),
            ..ben_control::Config::default()
        },
        ben_control::Deps {
            bus: connect(url, &prefix).await?,
            store: store.clone(),
            signer: ledger_signer,
            keyring,
            clock: Arc::new(ben_time::now_ns),
        },
    )
    .await
    .map_err(|e| anyhow!("starting the control service: {e}"))?;
    let client = control.client();

    // Components, each with its own NATS connection, started concurrently.
    let mut starting = tokio::task::JoinSet::new();
    for (i, signer) in signers.into_iter().enumerate() {
        let (url, prefix) = (url.to_string(), prefix.clone());
        let (store, keyring) = (store.clone(), keyring_arc.clone());
        starting.spawn(async move {
            let deps = Deps {
                id: format!("proxy-{i}"),
                bus: connect(&url, &prefix).await?,
                store: store as Arc<dyn Store>,
                clock: Arc::new(ben_component::SystemClock),
                signer,
                keyring,
                drain: Default::default(),
            };
            let agent = IntentAgent::new(deps.clone(), BenchProxy);
            let task = tokio::spawn({
                let agent = agent.clone();
                async move {
                    let _ = agent.run().await;
                }
            });
            agent.ready().await;
            let heartbeats = start_heartbeats(
                &deps,
                BenchProxy::NAME,
                agent.active.clone(),
                Arc::new(Load::default()),
            );
            Ok::<_, anyhow::Error>(Component {
                agent,
                _heartbeats: heartbeats,
                task,
            })
        });
    }
    let mut components = Vec::with_capacity(n);
    while let Some(c) = starting.join_next().await {
        components.push(c.context("a component task")??);
    }

    let outcome = async {
        for v in &versions {
            client
                .stage(v.clone())
                .await
                .map_err(|e| anyhow!("staging {}: {e}", v.version))?;
        }
        // Every component registered (its first heartbeat reached the ledger).
        let t = Instant::now();
        loop {
            let registered = client.status(None).await?.components.len();
            if registered >= n {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!("only {registered} of {n} components registered within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let mut times = Vec::with_capacity(rounds);
        let mut prepare = Vec::with_capacity(rounds);
        let mut last = String::new();
        for r in 0..rounds {
            let v = &versions[r % 2].version;
            let t0 = ben_time::now_ns();
            let started = client
                .deploy(v.clone())
                .await
                .map_err(|e| anyhow!("deploy {v}: {e}"))?;
            if started.required.len() != n {
                bail!(
                    "deploy {v} requires {} components, not {n}",
                    started.required.len()
                );
            }
            let polled = Instant::now();
            let rec = loop {
                let st = client.status(None).await?;
                if let Some(d) = st
                    .deploy
                    .filter(|d| d.id == started.id && d.phase.is_over())
                {
                    break d;
                }
                if polled.elapsed() > Duration::from_secs(60) {
                    bail!("deploy {v} did not finish within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            if rec.phase != DeployPhase::Finalized {
                bail!(
                    "deploy {v} ended {}: {}",
                    rec.phase.as_str(),
                    rec.reason.unwrap_or_default()
                );
            }
            let ended = rec.ended_ns.unwrap_or(t0);
            times.push(Duration::from_nanos(ended.saturating_sub(t0).max(0) as u64));
            let behind = components
                .iter()
                .filter(|c| c.agent.active.version().as_deref() != Some(v.as_str()))
                .count();
            if behind > 0 {
                bail!("{v} finalized but {behind} of {n} components do not run it");
            }
            // When activate went out (every component prepared), from the
            // audit log; read after the timed part.
            let sent = client
                .history()
                .await?
                .iter()
                .rev()
                .find(|e| e.version == *v && e.what == "all prepared; activate sent")
                .map(|e| e.at_ns)
                .unwrap_or(ended);
            prepare.push(Duration::from_nanos(sent.saturating_sub(t0).max(0) as u64));
            last = v.clone();
        }
        // Their heartbeats say so too (one a second).
        let t = Instant::now();
        loop {
            let st = client.status(None).await?;
            let reporting = st
                .components
                .iter()
                .filter(|c| c.intent_version == last)
                .count();
            if reporting >= n {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("only {reporting} of {n} components report {last} in their heartbeats");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Figures {
            components: n,
            rounds: times,
            prepare,
            last_version: last,
        })
    }
    .await;
    drop(components);
    control.shutdown().await;
    outcome
}
