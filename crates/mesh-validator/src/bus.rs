//! The validator on Ben's bus: signed anomalies in from
//! `ai.anomalies.v1` (what does not verify is dead-lettered with the
//! reason), each committed block out on `control.commits.v1`, signed by the
//! validator (`ben/v1/commit`; only validators may sign it).
//!
//! [`ValidatorSet`] is the set a process runs (`ben up`: four in one
//! process): its keys, kept in the data directory so a restarted `ben up`
//! resumes the same chain, and its loopback addresses.

use crate::link::LinkConfig;
use crate::run::{run, Counters, Settings};
use crate::state;
use ben_component::Deps;
use ben_mesh_consensus::{Config, Hash, NodeId};
use ben_mesh_detect::wire::{AnomalyEvent, ANOMALIES_SUBJECT};
use ed25519_dalek::SigningKey;
use prost::Message as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

pub use ben_mesh_wire::{
    BlockPolicy, CommitEvent, PolicyEvent, ReputationEvent, ValidatorReputation, COMMITS_SUBJECT,
    POLICY_REQUEST_SUBJECT, POLICY_SUBJECT, REPUTATION_SUBJECT,
};

/// A validator set as one process sees it: every validator's public key
/// and link address, and the secret keys of those it runs (`ben up`: all
/// four; a cluster process: its own, or none).
pub struct ValidatorSet {
    keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Secret keys of the validators run here, by index.
    secrets: BTreeMap<usize, [u8; 32]>,
    addrs: Vec<SocketAddr>,
    /// Each running validator's counters, by id.
    pub counters: Mutex<BTreeMap<String, Arc<Counters>>>,
}

impl ValidatorSet {
    /// `n` validators on loopback ports free now, with the keys in
    /// `dir/keys` (made, private, the first time).
    pub fn load_or_create(
        dir: &Path,
        n: usize,
        random: impl Fn() -> Result<[u8; 32], String>,
    ) -> Result<ValidatorSet, String> {
        ben_control::private::dir(dir)?;
        let path = dir.join("keys");
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let bytes = if path.exists() {
            read(&path)?
        } else {
            let mut b = vec![];
            for _ in 0..n {
                b.extend_from_slice(&random()?);
            }
            // Another process may have made it meanwhile: then its keys.
            if ben_control::private::create_new(&path, &b)? {
                b
            } else {
                read(&path)?
            }
        };
        if bytes.len() != 32 * n {
            return Err(format!(
                "{}: holds {} bytes, not the keys of {n} validators; remove it to start a new chain",
                path.display(),
                bytes.len()
            ));
        }
        let secrets: BTreeMap<usize, [u8; 32]> = bytes
            .chunks(32)
            .map(|c| {
                let mut s = [0u8; 32];
                s.copy_from_slice(c);
                s
            })
            .enumerate()
            .collect();
        let mut addrs = vec![];
        for _ in 0..n {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("a loopback port for a validator: {e}"))?;
            addrs.push(l.local_addr().map_err(|e| e.to_string())?);
        }
        Ok(ValidatorSet {
            keys: secrets
                .values()
                .map(|s| SigningKey::from_bytes(s).verifying_key())
                .collect(),
            secrets,
            addrs,
            counters: Mutex::default(),
        })
    }

    /// A set spread over processes (cluster mode): every validator's key
    /// and address, by index, and `own`, the index and secret key of the
    /// validator this process runs (none: it only checks their work, as an
    /// enforcement agent does).
    pub fn spread(
        keys: Vec<ed25519_dalek::VerifyingKey>,
        addrs: Vec<SocketAddr>,
        own: Option<(usize, [u8; 32])>,
    ) -> Result<ValidatorSet, String> {
        if keys.len() != addrs.len() {
            return Err(format!(
                "{} validator keys for {} addresses: each validator needs both",
                keys.len(),
                addrs.len()
            ));
        }
        let mut secrets = BTreeMap::new();
        if let Some((i, secret)) = own {
            match keys.get(i) {
                Some(k) if *k == SigningKey::from_bytes(&secret).verifying_key() => {}
                Some(_) => {
                    return Err(format!(
                        "validator {}: its secret key is not the key the set names for it",
                        i + 1
                    ))
                }
                None => {
                    return Err(format!(
                        "the validator set has {} validators; there is no validator {}",
                        keys.len(),
                        i + 1
                    ))
                }
            }
            secrets.insert(i, secret);
        }
        Ok(ValidatorSet {
            keys,
            secrets,
            addrs,
            counters: Mutex::default(),
        })
    }

    /// The set's consensus keys, by index.
    pub fn public_keys(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        self.keys.clone()
    }

    /// The validators' link addresses, by index.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The chain these keys run: named after the set's public keys.
    pub fn chain(&self) -> String {
        let mut h = blake3::Hasher::new();
        for k in &self.keys {
            h.update(k.as_bytes());
        }
        format!("ben-validators-{}", &h.finalize().to_hex()[..16])
    }

    /// Validator `index`'s settings, its files under `dir`.
    pub fn settings(&self, index: usize, dir: &Path) -> Result<Settings, String> {
        let n = self.keys.len();
        if index >= n {
            return Err(format!(
                "the validator set has {n} validators; there is no validator {}",
                index + 1
            ));
        }
        let secret = *self.secrets.get(&index).ok_or_else(|| {
            format!(
                "validator {}: its secret key is not held by this process",
                index + 1
            )
        })?;
        Ok(Settings {
            consensus: Config::new(n, index as NodeId),
            state: state::Config::default(),
            link: LinkConfig {
                me: index as NodeId,
                addrs: self.addrs.clone(),
                keys: self.keys.clone(),
                secret,
                chain: Hash::ZERO,
                queue: 4_096,
            },
            dir: dir.to_path_buf(),
            mempool: 100_000,
            chain: self.chain(),
            database: Some(crate::persist::Target::Sqlite(dir.join("blocks.db"))),
            intake: crate::run::Intake::Anomalies,
        })
    }
}

/// A policy as `control.policy.v1` carries it.
pub fn block_policy(p: &state::Policy) -> BlockPolicy {
    let s = &p.spec;
    BlockPolicy {
        id: p.id.clone(),
        action: s.action.name().into(),
        target: p.target.to_string(),
        expires_at_ms: p.expires_at,
        anomalies: p.anomalies.clone(),
        direction: s.direction.name().into(),
        protocol: match s.protocol {
            ben_mesh_wire::policy::Protocol::Any => String::new(),
            other => other.name().into(),
        },
        ports: s.ports.map(|p| p.to_string()).unwrap_or_default(),
        rate: s.action.rate(),
        scope: p.scope.clone(),
        request: p.request.clone().unwrap_or_default(),
    }
}

/// Runs one validator on the bus until the bus closes: anomalies and
/// policy requests that verify go to it, the others are dead-lettered
/// with the reason; each block it commits is announced.
pub async fn serve(deps: Deps, settings: Settings, counters: Arc<Counters>) -> Result<(), String> {
    let mut sub = deps
        .bus
        .subscribe(ANOMALIES_SUBJECT, None)
        .await
        .map_err(|e| format!("subscribing to {ANOMALIES_SUBJECT}: {e}"))?;
    let mut requests = deps
        .bus
        .subscribe(POLICY_REQUEST_SUBJECT, None)
        .await
        .map_err(|e| format!("subscribing to {POLICY_REQUEST_SUBJECT}: {e}"))?;
    let (atx, arx) = mpsc::channel(4_096);
    let (ctx, mut crx) = mpsc::channel::<crate::run::Committed>(1_024);
    let (_stop, stop_rx) = oneshot::channel();
    let announce = {
        let deps = deps.clone();
        let counters = counters.clone();
        let chain = ben_mesh_consensus::Block::genesis(&settings.chain).id.hex();
        tokio::spawn(async move {
            while let Some(c) = crx.recv().await {
                let qc = ben_mesh_consensus::wire::encode_qc(&c.qc);
                // Reputation changes with every block; announced every
                // 16th (and with every block that makes a policy).
                if c.height.is_multiple_of(16) || !c.policies.is_empty() {
                    let ev = ReputationEvent {
                        validator: deps.id.clone(),
                        height: c.height,
                        validators: c
                            .reputation
                            .iter()
                            .map(|(i, r)| ValidatorReputation {
                                index: *i as u32,
                                proposed: r.proposed,
                                voted: r.voted,
                            })
                            .collect(),
                    };
                    if let Err(e) = deps
                        .bus
                        .publish_keyed(
                            REPUTATION_SUBJECT,
                            deps.id.as_bytes(),
                            deps.signer.seal_bytes(&ev),
                        )
                        .await
                    {
                        counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(validator = %deps.id, error = %e, "reputation not published");
                    }
                }
                if !c.policies.is_empty() {
                    let ev = PolicyEvent {
                        validator: deps.id.clone(),
                        height: c.height,
                        block: c.block_bytes.clone(),
                        qc: qc.clone(),
                        chain: chain.clone(),
                        policies: c.policies.iter().map(block_policy).collect(),
                    };
                    if let Err(e) = deps
                        .bus
                        .publish_keyed(
                            POLICY_SUBJECT,
                            deps.id.as_bytes(),
                            deps.signer.seal_bytes(&ev),
                        )
                        .await
                    {
                        counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(validator = %deps.id, height = c.height, policies = c.policies.len(), error = %e, "block policies not published");
                    }
                }
                let ev = CommitEvent {
                    validator: deps.id.clone(),
                    height: c.height,
                    block: c.block.hex(),
                    time_ms: c.time,
                    state_root: c.root.hex(),
                    anomalies: c.admitted,
                    refused: c.refused.len() as u32,
                    policies: c.policies.len() as u32,
                    round: c.qc.round(),
                    rejected: c
                        .rejected
                        .iter()
                        .map(|(id, reason)| ben_mesh_wire::RejectedAnomaly {
                            id: id.clone(),
                            reason: reason.clone(),
                        })
                        .collect(),
                    rejected_requests: c
                        .rejected_requests
                        .iter()
                        .map(|(id, reason)| ben_mesh_wire::RejectedAnomaly {
                            id: id.clone(),
                            reason: reason.clone(),
                        })
                        .collect(),
                };
                if let Err(e) = deps
                    .bus
                    .publish_keyed(
                        COMMITS_SUBJECT,
                        deps.id.as_bytes(),
                        deps.signer.seal_bytes(&ev),
                    )
                    .await
                {
                    counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(validator = %deps.id, height = c.height, error = %e, "commit not announced");
                }
            }
        })
    };
    let forward = {
        let deps = deps.clone();
        let counters = counters.clone();
        async move {
            loop {
                let (m, anomaly) = tokio::select! {
                    m = sub.next() => (m, true),
                    m = requests.next() => (m, false),
                };
                let Some(m) = m else { break };
                if !anomaly {
                    // A request (rare) is checked here and again by the
                    // validator, which reads what it rests on.
                    match ben_wire::open_bytes::<ben_mesh_wire::PolicyRequest>(
                        &m.payload,
                        &deps.keyring,
                    ) {
                        Ok(_) => {
                            if atx.send(m.payload.into()).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => refuse(&deps, &counters, false, m.payload, e).await,
                    }
                    continue;
                }
                // Anomalies are checked here, once (the validator takes
                // them as they are), with those already waiting: their
                // signatures in one batch (`ben_wire::open_all`, whose
                // verdict on each is its own).
                let mut batch = vec![m];
                while batch.len() < FORWARD_BATCH {
                    match sub.try_next() {
                        Some(m) => batch.push(m),
                        None => break,
                    }
                }
                let mut envs = Vec::with_capacity(batch.len());
                let mut kept = Vec::with_capacity(batch.len());
                for m in batch {
                    match ben_wire::pb::SignedEnvelope::decode(m.payload.as_slice()) {
                        Ok(env) => {
                            envs.push(env);
                            kept.push(m.payload);
                        }
                        Err(e) => {
                            let e = ben_wire::WireError::Envelope(e.to_string());
                            refuse(&deps, &counters, true, m.payload, e).await;
                        }
                    }
                }
                let opened = ben_wire::open_all::<AnomalyEvent>(&envs, &deps.keyring);
                let mut closed = false;
                for (bytes, v) in kept.into_iter().zip(opened) {
                    match v {
                        Ok(v) => {
                            let offer = crate::run::Offer {
                                bytes,
                                opened: Some(v),
                            };
                            if atx.send(offer).await.is_err() {
                                closed = true;
                                break;
                            }
                        }
                        Err(e) => refuse(&deps, &counters, true, bytes, e).await,
                    }
                }
                if closed {
                    break;
                }
            }
        }
    };
    let keyring = deps.keyring.clone();
    let r = tokio::select! {
        r = run(settings, keyring, arx, ctx, deps.clock.clone(), counters, stop_rx) => r.map_err(|e| e.to_string()),
        _ = forward => Err(format!("{}: the bus closed", deps.id)),
    };
    announce.abort();
    r
}

/// Anomalies taken off the bus and checked together at most.
const FORWARD_BATCH: usize = 128;

/// An anomaly or policy request refused before the validator: counted and
/// dead-lettered with the reason.
async fn refuse(
    deps: &Deps,
    counters: &Counters,
    anomaly: bool,
    payload: Vec<u8>,
    e: ben_wire::WireError,
) {
    counters.anomalies_refused.fetch_add(1, Ordering::Relaxed);
    let (subject, what) = if anomaly {
        (ANOMALIES_SUBJECT, "anomaly")
    } else {
        (POLICY_REQUEST_SUBJECT, "policy request")
    };
    let size = payload.len();
    deps.dead_letter_to(
        ben_mesh_wire::DLQ_SUBJECT,
        subject,
        format!("{what} refused: {e}"),
        size,
        &payload,
    )
    .await;
}
