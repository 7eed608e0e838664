//! The layer rule (ARCHITECTURE.md "Layers"), checked on the workspace's
//! real dependency graph (`cargo metadata`): a crate depends only on
//! crates of its own layer or below, a component never on another
//! component, the two modes never on each other, and the cores never on an
//! async runtime, a database driver or a network client. Dev-dependencies
//! (tests, benches) are free.

use std::collections::BTreeMap;
use std::process::Command;

/// Every workspace crate's layer. A crate missing here fails the test:
/// a new crate is placed deliberately.
const LAYERS: &[(&str, u8)] = &[
    // types
    ("ben-wire", 0),
    ("ben-time", 0),
    ("ben-mesh-wire", 0),
    // static files: the dashboard's built app (no dependencies)
    ("ben-dashboard-ui", 0),
    // cores
    ("ben-bitspec", 1),
    ("ben-blot", 1),
    ("ben-intent", 1),
    ("ben-playbook", 1),
    ("ben-ledger", 1),
    ("ben-mesh-flows", 1),
    ("ben-mesh-detect", 1),
    ("ben-mesh-consensus", 1),
    ("ben-mesh-feedback", 1),
    // shells
    ("ben-bus", 2),
    ("ben-bus-nats", 2),
    ("ben-bus-kafka", 2),
    ("ben-store", 2),
    ("ben-sql", 2),
    ("ben-bee", 2),
    ("ben-client", 2),
    ("ben-control", 2),
    ("ben-component", 2),
    ("ben-orchestrator", 2),
    // components
    ("ben-sidecar", 3),
    ("ben-proxy", 3),
    ("ben-spine", 3),
    ("ben-detector", 3),
    ("ben-lucius", 3),
    ("ben-mesh-ai", 3),
    ("ben-mesh-validator", 3),
    ("ben-mesh-enforce", 3),
    ("ben-mesh-sensor", 3),
    // wiring: the component table, then the two modes on it
    ("ben-runtime", 4),
    ("ben-embedded", 5),
    ("ben-cluster", 5),
    // binaries
    ("ben-cli", 6),
    ("ben-benctl", 6),
    // benchmarks against peers, outside the build
    ("ben-bench-peers", 7),
];

/// Crates a core must not use (directly): I/O and async belong to shells.
const NOT_IN_CORES: &[&str] = &["tokio", "sqlx", "async-nats", "ureq", "hyper", "axum"];

struct Package {
    name: String,
    /// (dependency name, is a workspace path dependency)
    deps: Vec<String>,
}

fn workspace() -> Vec<Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut v = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            // Normal dependencies only (kind null); dev and build are free.
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap_or_default().to_string())
            .collect();
        v.push(Package {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            deps,
        });
    }
    v
}

#[test]
fn dependencies_point_down() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for p in workspace() {
        let Some(&own) = layer.get(p.name.as_str()) else {
            wrong.push(format!("{}: no layer (add it to LAYERS)", p.name));
            continue;
        };
        for d in &p.deps {
            match layer.get(d.as_str()) {
                Some(&l) if l > own => {
                    wrong.push(format!("{} (layer {own}) depends on {d} (layer {l})", p.name))
                }
                Some(&l) if l == own && (own == 3 || own == 5) => wrong.push(format!(
                    "{} depends on {d}: components (and the two modes) do not depend on each other; move what they share down",
                    p.name
                )),
                None if own <= 1 && NOT_IN_CORES.contains(&d.as_str()) => wrong.push(format!(
                    "{} (a {}) depends on {d}: no async runtime, database or network in cores",
                    p.name,
                    if own == 0 { "type crate" } else { "core" }
                )),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
}
