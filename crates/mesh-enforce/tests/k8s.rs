//! The Kubernetes backend, as far as it can be tested without an API
//! server: the NetworkPolicy objects it renders pass the Kubernetes schema
//! (`kubernetes-validate`, strict, for the oldest version the types
//! target), and the requests it makes are exactly the server-side applies
//! and reads expected, answered by a recorded fake API.

use ben_mesh_enforce::backend::Backend;
use ben_mesh_enforce::k8s::{blocked_in, render, rule_targets_in, K8sConfig, Kubernetes};
use ben_mesh_enforce::model::{Action, Direction, Net, Spec};
use ben_mesh_enforce::schedule::{Change, SetKey};
use kube::client::Body;
use std::collections::{BTreeMap, BTreeSet};

fn cfg() -> K8sConfig {
    K8sConfig {
        namespace: "shop".into(),
        pod_labels: BTreeMap::from([("app".into(), "web".into())]),
        field_manager: "ben-enforcer".into(),
    }
}

/// What the API answers for an object that is not there.
fn not_found() -> http::Response<Body> {
    http::Response::builder()
        .status(404)
        .body(Body::from(
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                .to_vec(),
        ))
        .unwrap()
}

/// The read-back: one GET per direction, answered with `ingress` for
/// the ingress object and "not found" for the egress one.
async fn answer_reads(
    api: &mut tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>,
    ingress: &[u8],
) {
    for (name, held) in [
        ("ben-block-ingress", Some(ingress.to_vec())),
        ("ben-block-egress", None),
    ] {
        let (req, reply) = api.next_request().await.expect("a read");
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(
            req.uri().path(),
            format!("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/{name}")
        );
        match held {
            Some(b) => reply.send_response(http::Response::new(Body::from(b))),
            None => reply.send_response(not_found()),
        }
    }
}

fn nets(list: &[&str]) -> BTreeSet<Net> {
    list.iter().map(|s| Net::parse(s).unwrap()).collect()
}

#[test]
fn rendered_policies_pass_the_kubernetes_schema() {
    let dir = std::env::temp_dir().join(format!("ben-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = |proto: &str, ports: &str| Spec::parse("drop", 0, "", proto, ports).unwrap();
    let rules = |list: &[(&str, Spec)]| {
        let mut m: BTreeMap<Net, Vec<Spec>> = BTreeMap::new();
        for (t, s) in list {
            m.entry(Net::parse(t).unwrap()).or_default().push(*s);
        }
        m
    };
    let cases = [
        (
            Direction::Ingress,
            nets(&["203.0.113.66", "198.51.100.0/24", "2001:db8::7"]),
            rules(&[]),
        ),
        (Direction::Egress, nets(&["192.0.2.9"]), rules(&[])),
        (Direction::Ingress, nets(&[]), rules(&[])),
        // Port 22/tcp of a /24 and, inside it, 53/udp of one host; ICMP
        // of an IPv6 host; a rule inside a blocked network (blocked whole).
        (
            Direction::Ingress,
            nets(&["203.0.113.66", "198.51.100.0/25"]),
            rules(&[
                ("192.0.2.0/24", spec("tcp", "22")),
                ("192.0.2.7", spec("udp", "53")),
                ("2001:db8::9", spec("icmp", "")),
                ("198.51.100.3", spec("tcp", "80-90")),
            ]),
        ),
        (
            Direction::Egress,
            nets(&[]),
            rules(&[("192.0.2.7", spec("tcp", "1-1023"))]),
        ),
    ];
    for (i, (d, blocked, rules)) in cases.iter().enumerate() {
        let p = render(&cfg(), *d, blocked, rules);
        assert_eq!(
            blocked_in(&p).into_iter().collect::<BTreeSet<_>>(),
            *blocked
        );
        let inside_blocked = Net::parse("198.51.100.3").unwrap();
        assert_eq!(
            rule_targets_in(&p),
            rules
                .keys()
                .copied()
                .filter(|t| *t != inside_blocked)
                .collect::<BTreeSet<_>>()
        );
        let mut v = serde_json::to_value(&p).unwrap();
        v["apiVersion"] = "networking.k8s.io/v1".into();
        v["kind"] = "NetworkPolicy".into();
        let file = dir.join(format!("policy-{i}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", "1.33.0"])
            .arg(&file)
            .output()
            .expect("kubernetes-validate (pip install kubernetes-validate; scripts/test does)");
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_requests_are_exactly_these() {
    let (service, mut api) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "shop");
    let mut backend = Kubernetes::new(cfg(), client, tokio::runtime::Handle::current());
    let set = SetKey::set(Action::Drop, Direction::Ingress, false, false);
    let change = Change {
        set,
        target: Net::parse("203.0.113.66").unwrap(),
        expires_at_ms: 61_000,
        policy: "block-203.0.113.66".into(),
        height: 9,
        replace: false,
    };
    let call = tokio::task::spawn_blocking(move || {
        let applied = backend.apply(&[change], &[], 1_000);
        let read = backend.read();
        (applied, read)
    });
    // 1. The apply: PATCH with the apply content type, our field manager,
    //    forced, the rendered object as the body.
    let (req, reply) = api.next_request().await.expect("an apply request");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/ben-block-ingress"
    );
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(query.contains("fieldManager=ben-enforcer"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(
        req.headers()["content-type"],
        "application/apply-patch+yaml"
    );
    let body = req.into_body().collect_bytes().await.unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut want = serde_json::to_value(render(
        &cfg(),
        Direction::Ingress,
        &nets(&["203.0.113.66"]),
        &BTreeMap::new(),
    ))
    .unwrap();
    want["apiVersion"] = "networking.k8s.io/v1".into();
    want["kind"] = "NetworkPolicy".into();
    assert_eq!(sent, want);
    reply.send_response(http::Response::new(Body::from(body.to_vec())));
    // 2. The read-back: one GET per direction.
    answer_reads(&mut api, &body).await;
    let (applied, read) = call.await.unwrap();
    applied.unwrap();
    let held = read.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].set.as_str(), held[0].target.to_string()),
        ("drop4_in", "203.0.113.66".to_string())
    );
}

/// What a rule's peer allows: every TCP, UDP and SCTP port but the
/// blocked ones, in ranges; a target inside another rule's is taken out
/// of it and carries its blocks too, so no peer lets back in what another
/// leaves out.
#[test]
fn a_rule_target_gets_a_peer_of_its_own_with_every_port_but_the_blocked() {
    use ben_mesh_enforce::k8s::allowed_ports;
    let spec = |proto: &str, ports: &str| Spec::parse("reject", 0, "", proto, ports).unwrap();
    let show = |ports: &[k8s_openapi::api::networking::v1::NetworkPolicyPort]| -> Vec<String> {
        ports
            .iter()
            .map(|p| {
                let proto = p.protocol.clone().unwrap_or_default();
                match (&p.port, p.end_port) {
                    (None, _) => proto,
                    (
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(a)),
                        None,
                    ) => {
                        format!("{proto} {a}")
                    }
                    (
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(a)),
                        Some(b),
                    ) => {
                        format!("{proto} {a}-{b}")
                    }
                    (Some(other), _) => format!("{proto} {other:?}"),
                }
            })
            .collect()
    };
    assert_eq!(
        show(&allowed_ports(&[
            spec("tcp", "22"),
            spec("tcp", "20-23"),
            spec("udp", "1-100")
        ])),
        ["TCP 1-19", "TCP 24-65535", "UDP 101-65535", "SCTP"]
    );
    assert_eq!(
        show(&allowed_ports(&[spec("tcp", "65535"), spec("udp", "1")])),
        ["TCP 1-65534", "UDP 2-65535", "SCTP"]
    );
    assert_eq!(
        show(&allowed_ports(&[spec("icmp", "")])),
        ["TCP", "UDP", "SCTP"]
    );
    assert_eq!(show(&allowed_ports(&[spec("tcp", "")])), ["UDP", "SCTP"]);
    // Nested: the host inside the /24 is out of the /24's peer and
    // carries the /24's block beside its own.
    let mut rules: BTreeMap<Net, Vec<Spec>> = BTreeMap::new();
    rules.insert(Net::parse("192.0.2.0/24").unwrap(), vec![spec("tcp", "22")]);
    rules.insert(Net::parse("192.0.2.7").unwrap(), vec![spec("udp", "53")]);
    let p = render(&cfg(), Direction::Ingress, &BTreeSet::new(), &rules);
    let ingress = p.spec.unwrap().ingress.unwrap();
    let peer = |i: usize| {
        ingress[i].from.as_ref().unwrap()[0]
            .ip_block
            .clone()
            .unwrap()
    };
    assert_eq!(peer(0).cidr, "0.0.0.0/0");
    assert_eq!(peer(0).except, Some(vec!["192.0.2.0/24".to_string()]));
    assert_eq!(peer(2).cidr, "192.0.2.0/24");
    assert_eq!(peer(2).except, Some(vec!["192.0.2.7/32".to_string()]));
    assert_eq!(peer(3).cidr, "192.0.2.7/32");
    assert_eq!(
        show(ingress[3].ports.as_ref().unwrap()),
        [
            "TCP 1-21",
            "TCP 23-65535",
            "UDP 1-52",
            "UDP 54-65535",
            "SCTP"
        ]
    );
}

/// A rate limit cannot be a NetworkPolicy: the backend says so, and the
/// agent skips such a policy with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_refused_with_the_reason() {
    let (service, _api) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "shop");
    let backend = Kubernetes::new(cfg(), client, tokio::runtime::Handle::current());
    let rl = Spec::parse("rate-limit", 100, "", "udp", "53").unwrap();
    let why = backend.refuses(&rl).expect("refused");
    assert!(why.contains("cannot rate-limit 100/s"), "{why}");
    assert_eq!(
        backend.refuses(&Spec::parse("drop", 0, "", "tcp", "22").unwrap()),
        None
    );
}

/// A port policy through the backend: one server-side apply of the
/// ingress object with the rule's peer, and read back as held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_rule_is_one_apply_and_reads_back() {
    let (service, mut api) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(service, "shop");
    let mut backend = Kubernetes::new(cfg(), client, tokio::runtime::Handle::current());
    let spec = Spec::parse("drop", 0, "", "tcp", "22").unwrap();
    let target = Net::parse("192.0.2.0/24").unwrap();
    let change = Change {
        set: SetKey {
            spec,
            v6: false,
            net: true,
        },
        target,
        expires_at_ms: 61_000,
        policy: "req-1".into(),
        height: 4,
        replace: false,
    };
    let call = tokio::task::spawn_blocking(move || {
        let applied = backend.rules(&[change], 1_000);
        let read = backend.read();
        (applied, read)
    });
    let (req, reply) = api.next_request().await.expect("an apply request");
    assert_eq!(req.method(), http::Method::PATCH);
    assert!(req
        .uri()
        .path()
        .ends_with("/networkpolicies/ben-block-ingress"));
    let body = req.into_body().collect_bytes().await.unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut want = serde_json::to_value(render(
        &cfg(),
        Direction::Ingress,
        &BTreeSet::new(),
        &BTreeMap::from([(target, vec![spec])]),
    ))
    .unwrap();
    want["apiVersion"] = "networking.k8s.io/v1".into();
    want["kind"] = "NetworkPolicy".into();
    assert_eq!(sent, want);
    assert_eq!(sent["spec"]["ingress"][2]["ports"][0]["endPort"], 21);
    reply.send_response(http::Response::new(Body::from(body.to_vec())));
    answer_reads(&mut api, &body).await;
    let (applied, read) = call.await.unwrap();
    applied.unwrap();
    let held = read.unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (held[0].set.as_str(), held[0].target, held[0].until_ms),
        ("drop_in_tcp_22", target, Some(61_000))
    );
}
