//! The Kubernetes backend (feature `kubernetes`): the agent's entries as
//! NetworkPolicy objects, applied with server-side apply through `kube`.
//!
//! A NetworkPolicy only allows; it cannot deny one source. So each
//! direction is one policy over the selected pods (the policy's scope, as
//! labels) that allows every address **except** the blocked ones:
//! `ipBlock { cidr: 0.0.0.0/0, except: [...] }` and the same for `::/0`.
//! Kubernetes has no timeouts: the agent re-applies the object as entries
//! expire. Dropping is what a NetworkPolicy does; `reject` entries are
//! enforced as drops and said so in the ack's backend name. Policies
//! with a port, a protocol or a rate limit (rules) are not rendered: the
//! backend refuses them, and the agent acks them `failed` with that
//! reason (a NetworkPolicy has no rate limit; ports are not built here).
//!
//! What the API server does with them cannot be tested here (no API server
//! runs on this machine): the objects are checked against the Kubernetes
//! schema (`kubernetes-validate`) and the exact server-side-apply requests
//! against a recorded fake API (`tests/k8s.rs`).

use crate::backend::{Backend, Held};
use crate::model::{Allowlist, Direction, Net};
use crate::schedule::{Change, SetKey};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::{BTreeMap, BTreeSet};

/// Where and to what the policies apply.
#[derive(Clone, Debug)]
pub struct K8sConfig {
    /// The namespace of the policies.
    pub namespace: String,
    /// The pods they select (empty: every pod of the namespace).
    pub pod_labels: BTreeMap<String, String>,
    /// The server-side-apply field manager.
    pub field_manager: String,
}

/// The policy name of a direction.
pub fn policy_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ben-block-ingress",
        Direction::Egress => "ben-block-egress",
    }
}

/// One direction's NetworkPolicy, allowing all but `blocked`.
pub fn render(cfg: &K8sConfig, d: Direction, blocked: &BTreeSet<Net>) -> NetworkPolicy {
    let peers: Vec<NetworkPolicyPeer> = [("0.0.0.0/0", false), ("::/0", true)]
        .into_iter()
        .map(|(cidr, v6)| {
            let except: Vec<String> = blocked
                .iter()
                .filter(|n| n.is_v6() == v6)
                .map(|n| format!("{}/{}", n.addr, n.prefix))
                .collect();
            NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.to_string(),
                    except: (!except.is_empty()).then_some(except),
                }),
                ..Default::default()
            }
        })
        .collect();
    let (ingress, egress, kind) = match d {
        Direction::Ingress => (
            Some(vec![NetworkPolicyIngressRule {
                from: Some(peers),
                ports: None,
            }]),
            None,
            "Ingress",
        ),
        Direction::Egress => (
            None,
            Some(vec![NetworkPolicyEgressRule {
                to: Some(peers),
                ports: None,
            }]),
            "Egress",
        ),
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name(d).to_string()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "ben-enforcer".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: (!cfg.pod_labels.is_empty()).then(|| cfg.pod_labels.clone()),
                match_expressions: None,
            }),
            policy_types: Some(vec![kind.to_string()]),
            ingress,
            egress,
        }),
    }
}

/// The blocked networks a policy holds (its `except` lists).
pub fn blocked_in(p: &NetworkPolicy) -> Vec<Net> {
    let spec = p.spec.as_ref();
    let peers = spec
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.from.iter().flatten())
        .chain(
            spec.and_then(|s| s.egress.as_ref())
                .into_iter()
                .flatten()
                .flat_map(|r| r.to.iter().flatten()),
        );
    peers
        .filter_map(|p| p.ip_block.as_ref())
        .flat_map(|b| b.except.iter().flatten())
        .filter_map(|c| Net::parse(c).ok())
        .collect()
}

/// Server-side apply through `kube`. Calls run on the agent's runtime
/// (the agent calls backends off its event loop, in a blocking task).
pub struct Kubernetes {
    cfg: K8sConfig,
    api: kube::Api<NetworkPolicy>,
    rt: tokio::runtime::Handle,
    /// What each direction holds, with when it ends (ms since the epoch).
    held: BTreeMap<(SetKey, Net), u64>,
}

impl Kubernetes {
    /// A backend on `client` (made by the caller: in-cluster config, a
    /// kubeconfig, or a test's fake API).
    pub fn new(cfg: K8sConfig, client: kube::Client, rt: tokio::runtime::Handle) -> Kubernetes {
        let api = kube::Api::namespaced(client, &cfg.namespace);
        Kubernetes {
            cfg,
            api,
            rt,
            held: BTreeMap::new(),
        }
    }

    fn push(&self, d: Direction) -> Result<(), String> {
        let blocked: BTreeSet<Net> = self
            .held
            .keys()
            .filter(|(s, _)| s.direction() == d)
            .map(|(_, n)| *n)
            .collect();
        let obj = render(&self.cfg, d, &blocked);
        let params = kube::api::PatchParams::apply(&self.cfg.field_manager).force();
        self.rt
            .block_on(
                self.api
                    .patch(policy_name(d), &params, &kube::api::Patch::Apply(&obj)),
            )
            .map(|_| ())
            .map_err(|e| format!("applying NetworkPolicy {}: {e}", policy_name(d)))
    }
}

impl Backend for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn setup(&mut self, _allow: &Allowlist) -> Result<(), String> {
        // The allowlist is enforced before anything reaches a backend (the
        // scheduler skips allowlisted targets); the objects start empty.
        for d in [Direction::Ingress, Direction::Egress] {
            self.push(d)?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        changes: &[Change],
        remove: &[(SetKey, Net)],
        now_ms: u64,
    ) -> Result<(), String> {
        let mut touched = BTreeSet::new();
        for k in remove {
            self.held.remove(k);
            touched.insert(k.0.direction());
        }
        for c in changes {
            self.held.insert((c.set, c.target), c.expires_at_ms);
            touched.insert(c.set.direction());
        }
        let before = self.held.len();
        self.held.retain(|_, exp| *exp > now_ms);
        if self.held.len() != before {
            touched.extend([Direction::Ingress, Direction::Egress]);
        }
        for d in touched {
            self.push(d)?;
        }
        Ok(())
    }

    fn rules(&mut self, rules: &[Change], now_ms: u64) -> Result<(), String> {
        let live: Vec<&Change> = rules.iter().filter(|c| c.expires_at_ms > now_ms).collect();
        match live.first() {
            None => Ok(()),
            Some(c) => Err(format!(
                "the Kubernetes backend enforces whole-address drops only; {} polic{} with a port, protocol or rate limit (such as {} {}) cannot be NetworkPolicies here",
                live.len(),
                if live.len() == 1 { "y" } else { "ies" },
                c.set.spec.describe(),
                c.target
            )),
        }
    }

    fn read(&mut self) -> Result<Vec<Held>, String> {
        let mut out = vec![];
        for d in [Direction::Ingress, Direction::Egress] {
            let p = self
                .rt
                .block_on(self.api.get_opt(policy_name(d)))
                .map_err(|e| format!("reading NetworkPolicy {}: {e}", policy_name(d)))?;
            let Some(p) = p else { continue };
            for n in blocked_in(&p) {
                // Which set it came from is not in the object: the one the
                // agent holds it in, if any (else a drop set).
                let set = self
                    .held
                    .keys()
                    .find(|(s, t)| s.direction() == d && *t == n)
                    .map(|(s, _)| *s)
                    .unwrap_or(SetKey::set(
                        crate::model::Action::Drop,
                        d,
                        n.is_v6(),
                        !n.is_host(),
                    ));
                out.push(Held {
                    set: set.name(),
                    target: n,
                    expires_s: None,
                    until_ms: None,
                });
            }
        }
        Ok(out)
    }
}
