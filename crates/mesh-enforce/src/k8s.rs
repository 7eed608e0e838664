//! The Kubernetes backend (feature `kubernetes`): the agent's entries as
//! NetworkPolicy objects, applied with server-side apply through `kube`.
//!
//! A NetworkPolicy only allows; it cannot deny one source. So each
//! direction is one policy over the selected pods (the policy's scope, as
//! labels) that allows every address **except** the blocked ones:
//! `ipBlock { cidr: 0.0.0.0/0, except: [...] }` and the same for `::/0`.
//! Kubernetes has no timeouts: the agent re-applies the object as entries
//! expire. Dropping is what a NetworkPolicy does; `reject` entries are
//! enforced as drops and said so in the ack's backend name.
//!
//! A policy with a protocol or ports (a rule) takes its target out of the
//! "everyone" peer and gives it a peer of its own whose `ports` allow
//! every TCP, UDP and SCTP port but the blocked ones (`port` + `endPort`
//! ranges). A target inside another rule's target is taken out of that
//! one too and carries its blocks as well, so each address matches
//! exactly one peer (NetworkPolicy peers only add up). What a NetworkPolicy
//! cannot say, said plainly: a peer with `ports` admits only TCP, UDP and
//! SCTP, so a rule's target also loses ICMP and other protocols; a rate
//! limit cannot be expressed at all, and such policies are skipped with
//! that reason ([`Backend::refuses`]).
//!
//! What the API server does with them cannot be tested here (no API server
//! runs on this machine): the objects are checked against the Kubernetes
//! schema (`kubernetes-validate`) and the exact server-side-apply requests
//! against a recorded fake API (`tests/k8s.rs`).

use crate::backend::{Backend, Held};
use crate::model::{Action, Allowlist, Direction, Net, Protocol, Spec};
use crate::schedule::{Change, SetKey};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
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

/// The ports a rule's target may still reach: every TCP, UDP and SCTP
/// port but those `specs` block (none: all of them blocked).
pub fn allowed_ports(specs: &[Spec]) -> Vec<NetworkPolicyPort> {
    let mut out = vec![];
    for (proto, name) in [
        (Protocol::Tcp, "TCP"),
        (Protocol::Udp, "UDP"),
        (Protocol::Any, "SCTP"),
    ] {
        // Blocked ranges of this protocol (SCTP: no policy names it).
        let mut blocked: Vec<(u16, u16)> = specs
            .iter()
            .filter(|s| proto != Protocol::Any && s.protocol == proto)
            .map(|s| s.ports.map_or((1, 65535), |p| (p.from, p.to)))
            .collect();
        blocked.sort();
        if blocked.is_empty() {
            out.push(NetworkPolicyPort {
                protocol: Some(name.into()),
                port: None,
                end_port: None,
            });
            continue;
        }
        let mut next = 1u32;
        let mut open = vec![];
        for (a, b) in blocked {
            if u32::from(a) > next {
                open.push((next, u32::from(a) - 1));
            }
            next = next.max(u32::from(b) + 1);
        }
        if next <= 65535 {
            open.push((next, 65535));
        }
        for (a, b) in open {
            out.push(NetworkPolicyPort {
                protocol: Some(name.into()),
                port: Some(IntOrString::Int(a as i32)),
                end_port: (b > a).then_some(b as i32),
            });
        }
    }
    out
}

/// One direction's NetworkPolicy: everyone allowed but the `blocked`
/// networks and the targets of `rules` (target → what is blocked for
/// it); each rule target allowed the ports its rules, and those of the
/// rule targets around it, leave.
pub fn render(
    cfg: &K8sConfig,
    d: Direction,
    blocked: &BTreeSet<Net>,
    rules: &BTreeMap<Net, Vec<Spec>>,
) -> NetworkPolicy {
    // A rule's target inside a blocked network is blocked whole anyway.
    let rules: BTreeMap<&Net, &Vec<Spec>> = rules
        .iter()
        .filter(|(t, _)| {
            !blocked
                .iter()
                .any(|b| b.prefix <= t.prefix && b.overlaps(t))
        })
        .collect();
    let inside = |outer: &Net, n: &Net| outer.prefix < n.prefix && outer.overlaps(n);
    let cidr = |n: &Net| format!("{}/{}", n.addr, n.prefix);
    let mut peers: Vec<(NetworkPolicyPeer, Option<Vec<NetworkPolicyPort>>)> = vec![];
    for (all, v6) in [("0.0.0.0/0", false), ("::/0", true)] {
        // Out of the everyone peer: blocked networks, and rule targets
        // not inside another rule target.
        let mut except: Vec<String> = blocked
            .iter()
            .filter(|n| n.is_v6() == v6)
            .map(cidr)
            .collect();
        except.extend(
            rules
                .keys()
                .filter(|t| t.is_v6() == v6 && !rules.keys().any(|o| inside(o, t)))
                .map(|t| cidr(t)),
        );
        peers.push((ip_peer(all, except), None));
    }
    for (t, specs) in &rules {
        // Out of this peer: what is blocked inside it, and the rule
        // targets directly inside it.
        let mut except: Vec<String> = blocked.iter().filter(|b| inside(t, b)).map(cidr).collect();
        except.extend(
            rules
                .keys()
                .filter(|n| inside(t, n) && !rules.keys().any(|m| inside(t, m) && inside(m, n)))
                .map(|n| cidr(n)),
        );
        // Its own blocks and those of every rule target around it.
        let mut all: Vec<Spec> = specs.to_vec();
        for (o, more) in &rules {
            if inside(o, t) {
                all.extend(more.iter().copied());
            }
        }
        peers.push((ip_peer(&cidr(t), except), Some(allowed_ports(&all))));
    }
    let (ingress, egress, kind) = match d {
        Direction::Ingress => (
            Some(
                peers
                    .into_iter()
                    .map(|(p, ports)| NetworkPolicyIngressRule {
                        from: Some(vec![p]),
                        ports,
                    })
                    .collect(),
            ),
            None,
            "Ingress",
        ),
        Direction::Egress => (
            None,
            Some(
                peers
                    .into_iter()
                    .map(|(p, ports)| NetworkPolicyEgressRule {
                        to: Some(vec![p]),
                        ports,
                    })
                    .collect(),
            ),
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

fn ip_peer(cidr: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: (!except.is_empty()).then_some(except),
        }),
        ..Default::default()
    }
}

/// The rule targets a policy holds (peers of their own, with ports).
pub fn rule_targets_in(p: &NetworkPolicy) -> BTreeSet<Net> {
    peers_of(p)
        .filter(|(_, ports)| ports.is_some())
        .filter_map(|(peer, _)| Net::parse(&peer.ip_block.as_ref()?.cidr).ok())
        .collect()
}

/// Every peer of a policy, with its rule's ports.
fn peers_of(
    p: &NetworkPolicy,
) -> impl Iterator<Item = (&NetworkPolicyPeer, Option<&Vec<NetworkPolicyPort>>)> {
    let spec = p.spec.as_ref();
    let ingress = spec
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.from.iter().flatten().map(move |p| (p, r.ports.as_ref())));
    let egress = spec
        .and_then(|s| s.egress.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.to.iter().flatten().map(move |p| (p, r.ports.as_ref())));
    ingress.chain(egress)
}

/// The blocked networks a policy holds: what its peers leave out that
/// is not a rule target with a peer of its own.
pub fn blocked_in(p: &NetworkPolicy) -> Vec<Net> {
    let rules = rule_targets_in(p);
    peers_of(p)
        .filter_map(|(peer, _)| peer.ip_block.as_ref())
        .flat_map(|b| b.except.iter().flatten())
        .filter_map(|c| Net::parse(c).ok())
        .filter(|n| !rules.contains(n))
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
    /// The rules it holds, the same way.
    rules: BTreeMap<(SetKey, Net), u64>,
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
            rules: BTreeMap::new(),
        }
    }

    fn push(&self, d: Direction) -> Result<(), String> {
        let blocked: BTreeSet<Net> = self
            .held
            .keys()
            .filter(|(s, _)| s.direction() == d)
            .map(|(_, n)| *n)
            .collect();
        let mut rules: BTreeMap<Net, Vec<Spec>> = BTreeMap::new();
        for (s, n) in self.rules.keys().filter(|(s, _)| s.direction() == d) {
            rules.entry(*n).or_default().push(s.spec);
        }
        let obj = render(&self.cfg, d, &blocked, &rules);
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

    fn refuses(&self, spec: &Spec) -> Option<String> {
        matches!(spec.action, Action::RateLimit(_)).then(|| {
            format!(
                "the Kubernetes backend cannot {}: a NetworkPolicy only allows or leaves out",
                spec.describe()
            )
        })
    }

    fn rules(&mut self, rules: &[Change], now_ms: u64) -> Result<(), String> {
        let want: BTreeMap<(SetKey, Net), u64> = rules
            .iter()
            .filter(|c| c.expires_at_ms > now_ms && self.refuses(&c.set.spec).is_none())
            .map(|c| ((c.set, c.target), c.expires_at_ms))
            .collect();
        let touched: BTreeSet<Direction> = want
            .keys()
            .chain(self.rules.keys())
            .map(|(s, _)| s.direction())
            .collect();
        if want == self.rules {
            return Ok(());
        }
        self.rules = want;
        for d in touched {
            self.push(d)?;
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<Held>, String> {
        let mut out = vec![];
        for d in [Direction::Ingress, Direction::Egress] {
            let p = self
                .rt
                .block_on(self.api.get_opt(policy_name(d)))
                .map_err(|e| format!("reading NetworkPolicy {}: {e}", policy_name(d)))?;
            let Some(p) = p else { continue };
            let there = rule_targets_in(&p);
            for ((s, n), until) in &self.rules {
                if s.direction() == d && there.contains(n) {
                    out.push(Held {
                        set: s.name(),
                        target: *n,
                        expires_s: None,
                        until_ms: Some(*until),
                    });
                }
            }
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
