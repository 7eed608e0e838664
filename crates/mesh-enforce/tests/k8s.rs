//! The Kubernetes backend, as far as it can be tested without an API
//! server: the NetworkPolicy objects it renders pass the Kubernetes schema
//! (`kubernetes-validate`, strict, for the oldest version the types
//! target), and the requests it makes are exactly the server-side applies
//! and reads expected, answered by a recorded fake API.

use ben_mesh_enforce::backend::Backend;
use ben_mesh_enforce::k8s::{blocked_in, render, K8sConfig, Kubernetes};
use ben_mesh_enforce::model::{Action, Direction, Net};
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

fn nets(list: &[&str]) -> BTreeSet<Net> {
    list.iter().map(|s| Net::parse(s).unwrap()).collect()
}

#[test]
fn rendered_policies_pass_the_kubernetes_schema() {
    let dir = std::env::temp_dir().join(format!("ben-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            Direction::Ingress,
            nets(&["203.0.113.66", "198.51.100.0/24", "2001:db8::7"]),
        ),
        (Direction::Egress, nets(&["192.0.2.9"])),
        (Direction::Ingress, nets(&[])),
    ];
    for (i, (d, blocked)) in cases.iter().enumerate() {
        let p = render(&cfg(), *d, blocked);
        assert_eq!(
            blocked_in(&p).into_iter().collect::<BTreeSet<_>>(),
            *blocked
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
    let mut want =
        serde_json::to_value(render(&cfg(), Direction::Ingress, &nets(&["203.0.113.66"]))).unwrap();
    want["apiVersion"] = "networking.k8s.io/v1".into();
    want["kind"] = "NetworkPolicy".into();
    assert_eq!(sent, want);
    reply.send_response(http::Response::new(Body::from(body.to_vec())));
    // 2. The read-back: one GET per direction.
    for (name, held) in [
        ("ben-block-ingress", Some(body.to_vec())),
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
            None => reply.send_response(
                http::Response::builder()
                    .status(404)
                    .body(Body::from(
                        br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                            .to_vec(),
                    ))
                    .unwrap(),
            ),
        }
    }
    let (applied, read) = call.await.unwrap();
    applied.unwrap();
    let held = read.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].set.as_str(), held[0].target.to_string()),
        ("drop4_in", "203.0.113.66".to_string())
    );
}
