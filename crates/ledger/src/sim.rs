//! Seeded deterministic simulation of the activation protocol: many
//! components, random delays, duplicated and lost prepare acks, components
//! that fail to compile or never answer. Invariants 1 and 2 (DESIGN.md §4)
//! are checked after every delivered message, on thousands of seeds.

use super::*;

/// xorshift64*: tiny, deterministic, good enough for scheduling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Debug, Clone)]
enum Msg {
    ToLedger(Input),
    ToComponent(usize, Output),
}

#[derive(Debug, Clone, Default)]
struct Component {
    id: String,
    role: String,
    running: Option<String>,
    prepared: Option<String>,
    /// Fails to compile this version.
    broken_for: Option<String>,
    /// Never answers (crashed).
    silent: bool,
}

const S: i64 = 1_000_000_000;

fn staged(v: &str) -> Staged {
    let mut artifacts = BTreeMap::new();
    artifacts.insert("pack/web".to_string(), format!("hash-{v}-pack"));
    artifacts.insert("contract/app".to_string(), format!("hash-{v}-contract"));
    let mut roles = BTreeMap::new();
    roles.insert(
        "spine".to_string(),
        ["pack/web".to_string()].into_iter().collect(),
    );
    roles.insert(
        "sidecar".to_string(),
        ["contract/app".to_string()].into_iter().collect(),
    );
    Staged {
        version: v.to_string(),
        artifacts,
        roles,
    }
}

/// Runs one seeded scenario; panics with the seed on a violated invariant.
fn run(seed: u64) -> (usize, usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = 2 + rng.below(20) as usize;
    let mut comps: Vec<Component> = (0..n)
        .map(|i| Component {
            id: format!("c{i}"),
            role: if i % 3 == 0 {
                "sidecar".into()
            } else {
                "spine".into()
            },
            ..Component::default()
        })
        .collect();
    let mut ledger = Ledger::new(Timeouts { prepare_ns: 5 * S });
    let mut now: i64 = 0;
    // (deliver at, message); delivered in time order, ties by insertion.
    let mut net: Vec<(i64, u64, Msg)> = Vec::new();
    let mut seq = 0u64;
    let send = |net: &mut Vec<(i64, u64, Msg)>, seq: &mut u64, at: i64, m: Msg| {
        *seq += 1;
        net.push((at, *seq, m));
    };
    for c in &comps {
        ledger
            .step(
                Input::Register {
                    component: c.id.clone(),
                    role: c.role.clone(),
                },
                now,
            )
            .unwrap();
    }
    let versions = ["v1", "v2", "v3"];
    for v in versions {
        ledger.step(Input::Stage(staged(v)), now).unwrap();
    }
    let mut finalized = 0;
    let mut aborted = 0;
    let mut activated: BTreeSet<String> = BTreeSet::new();
    let mut aborted_versions: Vec<String> = Vec::new();
    for v in versions {
        let v = v.to_string();
        // Faults for this round.
        for c in comps.iter_mut() {
            c.broken_for = rng.chance(30).then(|| v.clone());
            c.silent = rng.chance(15);
        }
        let outs = match ledger.step(Input::Deploy { version: v.clone() }, now) {
            Ok(o) => o,
            Err(LedgerError::AlreadyActive(_)) => continue,
            Err(e) => panic!("seed {seed}: deploy refused: {e}"),
        };
        let mut pending: Vec<Output> = outs;
        let deadline = now + 60 * S;
        loop {
            for o in pending.drain(..) {
                match &o {
                    Output::Finalized { version } => {
                        finalized += 1;
                        // Invariant 1: every required component runs it.
                        for c in &comps {
                            assert_eq!(
                                c.running.as_deref(),
                                Some(version.as_str()),
                                "seed {seed}: finalized {version} but {} runs {:?}",
                                c.id,
                                c.running
                            );
                        }
                    }
                    Output::Abort { version, .. } => {
                        aborted += 1;
                        // Invariant 2: an aborted version was never activated.
                        assert!(
                            !activated.contains(version),
                            "seed {seed}: {version} aborted after activate was sent"
                        );
                        aborted_versions.push(version.clone());
                        for (i, _) in comps.iter().enumerate() {
                            let d = now + 1 + rng.below(S as u64 / 10) as i64;
                            send(&mut net, &mut seq, d, Msg::ToComponent(i, o.clone()));
                        }
                    }
                    Output::Activate { version, .. } => {
                        assert!(
                            !aborted_versions.contains(version),
                            "seed {seed}: activate after abort"
                        );
                        activated.insert(version.clone());
                        for (i, _) in comps.iter().enumerate() {
                            let d = now + 1 + rng.below(S as u64 / 5) as i64;
                            send(&mut net, &mut seq, d, Msg::ToComponent(i, o.clone()));
                            if rng.chance(100) {
                                send(&mut net, &mut seq, d + 7, Msg::ToComponent(i, o.clone()));
                            }
                        }
                    }
                    Output::Announce { .. } => {
                        for (i, _) in comps.iter().enumerate() {
                            let d = now + 1 + rng.below(S as u64 / 2) as i64;
                            send(&mut net, &mut seq, d, Msg::ToComponent(i, o.clone()));
                        }
                    }
                    Output::Interrupted { version, .. } => {
                        panic!("seed {seed}: {version} interrupted without a restart")
                    }
                }
            }
            if ledger.deploy().is_none() && net.is_empty() {
                break;
            }
            // Next event: a message, or a tick every 100 ms.
            net.sort_by_key(|(t, s, _)| (*t, *s));
            let next_tick = now + S / 10;
            if net.first().is_none_or(|(t, _, _)| *t > next_tick) {
                now = next_tick;
                pending = ledger.step(Input::Tick, now).unwrap();
                assert!(
                    now < deadline + 10 * S,
                    "seed {seed}: deploy of {v} never ended: {:?}",
                    ledger.deploy()
                );
                continue;
            }
            let (t, _, m) = net.remove(0);
            now = t;
            match m {
                Msg::ToLedger(input) => {
                    pending = ledger.step(input, now).unwrap_or_default();
                }
                Msg::ToComponent(i, out) => {
                    let c = &mut comps[i];
                    if c.silent {
                        continue;
                    }
                    match out {
                        Output::Announce { version, required } if required.contains(&c.id) => {
                            let reply = if c.broken_for.as_deref() == Some(version.as_str()) {
                                Input::PrepareFailed {
                                    component: c.id.clone(),
                                    version,
                                    reason: "compile error".into(),
                                }
                            } else {
                                c.prepared = Some(version.clone());
                                let st = staged(&version);
                                let hashes = st.roles[&c.role]
                                    .iter()
                                    .map(|n| (n.clone(), st.artifacts[n].clone()))
                                    .collect();
                                Input::Prepared {
                                    component: c.id.clone(),
                                    version,
                                    hashes,
                                }
                            };
                            let d = now + 1 + rng.below(S as u64 / 2) as i64;
                            // Prepare acks may be lost (then the prepare times out) or duplicated.
                            if !rng.chance(20) {
                                send(&mut net, &mut seq, d, Msg::ToLedger(reply.clone()));
                            }
                            if rng.chance(50) {
                                send(&mut net, &mut seq, d + 3, Msg::ToLedger(reply));
                            }
                        }
                        Output::Activate { version, required } if required.contains(&c.id) => {
                            assert_eq!(
                                c.prepared.as_deref(),
                                Some(version.as_str()),
                                "seed {seed}: {} told to activate {version} it never prepared",
                                c.id
                            );
                            c.running = Some(version.clone());
                            let d = now + 1 + rng.below(S as u64 / 5) as i64;
                            send(
                                &mut net,
                                &mut seq,
                                d,
                                Msg::ToLedger(Input::Active {
                                    component: c.id.clone(),
                                    version,
                                }),
                            );
                        }
                        Output::Abort { version, .. } => {
                            if c.prepared.as_deref() == Some(version.as_str()) {
                                c.prepared = None;
                            }
                            assert_ne!(
                                c.running.as_deref(),
                                Some(version.as_str()),
                                "seed {seed}: {} runs aborted {version}",
                                c.id
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        // After each deploy: all components run the same version (the
        // ledger's active one), or none has switched.
        let running: BTreeSet<Option<String>> = comps.iter().map(|c| c.running.clone()).collect();
        assert_eq!(
            running.len(),
            1,
            "seed {seed}: mixed versions after deploy of {v}: {running:?}"
        );
        assert_eq!(
            running.into_iter().next().flatten(),
            ledger.active().cloned(),
            "seed {seed}"
        );
    }
    (finalized, aborted)
}

#[test]
fn activation_invariants_hold_on_3000_seeds() {
    let (mut fin, mut ab) = (0, 0);
    for seed in 0..3000 {
        let (f, a) = run(seed);
        fin += f;
        ab += a;
    }
    // Both outcomes must really occur, or the simulation tests nothing.
    assert!(fin > 1000, "finalized {fin}");
    assert!(ab > 1000, "aborted {ab}");
}

#[test]
fn happy_path_and_history() {
    let mut l = Ledger::new(Timeouts::default());
    l.step(
        Input::Register {
            component: "s1".into(),
            role: "spine".into(),
        },
        0,
    )
    .unwrap();
    l.step(Input::Stage(staged("v1")), 1).unwrap();
    assert_eq!(
        l.step(
            Input::Deploy {
                version: "v2".into()
            },
            2
        ),
        Err(LedgerError::NotStaged("v2".into()))
    );
    let out = l
        .step(
            Input::Deploy {
                version: "v1".into(),
            },
            2,
        )
        .unwrap();
    assert_eq!(
        out,
        vec![Output::Announce {
            version: "v1".into(),
            required: vec!["s1".into()]
        }]
    );
    assert_eq!(l.active(), None, "nothing activates implicitly");
    // Wrong hashes abort.
    let mut bad = BTreeMap::new();
    bad.insert("pack/web".to_string(), "tampered".to_string());
    let out = l
        .step(
            Input::Prepared {
                component: "s1".into(),
                version: "v1".into(),
                hashes: bad,
            },
            3,
        )
        .unwrap();
    assert!(matches!(&out[0], Output::Abort { reason, .. } if reason.contains("do not match")));
    // Again, correctly.
    l.step(
        Input::Deploy {
            version: "v1".into(),
        },
        4,
    )
    .unwrap();
    let st = staged("v1");
    let hashes: BTreeMap<_, _> = st.roles["spine"]
        .iter()
        .map(|n| (n.clone(), st.artifacts[n].clone()))
        .collect();
    let out = l
        .step(
            Input::Prepared {
                component: "s1".into(),
                version: "v1".into(),
                hashes,
            },
            5,
        )
        .unwrap();
    assert_eq!(
        out,
        vec![Output::Activate {
            version: "v1".into(),
            required: vec!["s1".into()]
        }]
    );
    let out = l
        .step(
            Input::Active {
                component: "s1".into(),
                version: "v1".into(),
            },
            6,
        )
        .unwrap();
    assert_eq!(
        out,
        vec![Output::Finalized {
            version: "v1".into()
        }]
    );
    assert_eq!(l.active().map(String::as_str), Some("v1"));
    let what: Vec<&str> = l.history().iter().map(|e| e.what.as_str()).collect();
    assert_eq!(what.first(), Some(&"staged (2 artifacts)"));
    assert_eq!(what.last(), Some(&"finalized"));
    assert!(what
        .iter()
        .any(|w| w.starts_with("aborted: s1 prepared artifacts whose hashes")));
}

#[test]
fn restore_keeps_versions_active_and_history() {
    let mut l = Ledger::new(Timeouts::default());
    l.step(Input::Stage(staged("v1")), 1).unwrap();
    l.step(Input::Stage(staged("v2")), 2).unwrap();
    let mut r = Ledger::restore(
        Timeouts::default(),
        l.staged_versions().cloned(),
        Some("v1".into()),
        l.history().to_vec(),
    );
    assert_eq!(r.active().map(String::as_str), Some("v1"));
    assert_eq!(r.history(), l.history());
    assert_eq!(r.staged("v2"), Some(&staged("v2")));
    assert!(r.registry().is_empty());
    // Restaging the same version is a no-op; a different one conflicts.
    assert_eq!(r.step(Input::Stage(staged("v2")), 3), Ok(vec![]));
    let mut other = staged("v2");
    other.artifacts.insert("pack/x".into(), "h".into());
    assert_eq!(
        r.step(Input::Stage(other), 3),
        Err(LedgerError::Conflict("v2".into()))
    );
    // Nothing is registered yet, so a deploy is refused, not started.
    assert!(matches!(
        r.step(
            Input::Deploy {
                version: "v2".into()
            },
            4
        ),
        Err(LedgerError::NoComponents { .. })
    ));
    r.note(5, "v2", "noted");
    assert_eq!(r.history().last().map(|e| e.what.as_str()), Some("noted"));
}

fn registered_ledger() -> Ledger {
    let mut l = Ledger::new(Timeouts { prepare_ns: 10 * S });
    for (c, role) in [("s1", "spine"), ("c1", "sidecar")] {
        l.step(
            Input::Register {
                component: c.into(),
                role: role.into(),
            },
            0,
        )
        .unwrap();
    }
    l.step(Input::Stage(staged("v1")), 1).unwrap();
    l
}

fn prepared(c: &str, role: &str, v: &str) -> Input {
    let st = staged(v);
    Input::Prepared {
        component: c.into(),
        version: v.into(),
        hashes: st.roles[role]
            .iter()
            .map(|n| (n.clone(), st.artifacts[n].clone()))
            .collect(),
    }
}

#[test]
fn cancel_aborts_in_either_phase_and_needs_a_deploy() {
    let mut l = registered_ledger();
    let cancel = |r: &str| Input::Cancel { reason: r.into() };
    assert_eq!(l.step(cancel("x"), 2), Err(LedgerError::NoDeploy));
    l.step(
        Input::Deploy {
            version: "v1".into(),
        },
        2,
    )
    .unwrap();
    let out = l.step(cancel("db down"), 3).unwrap();
    assert_eq!(
        out,
        vec![Output::Abort {
            version: "v1".into(),
            reason: "db down".into()
        }]
    );
    assert!(l.deploy().is_none());
    // Activating: the shell withheld activate; cancel still aborts.
    l.step(
        Input::Deploy {
            version: "v1".into(),
        },
        4,
    )
    .unwrap();
    l.step(prepared("s1", "spine", "v1"), 5).unwrap();
    let out = l.step(prepared("c1", "sidecar", "v1"), 5).unwrap();
    assert!(matches!(out[0], Output::Activate { .. }));
    let out = l.step(cancel("could not record activate"), 6).unwrap();
    assert!(
        matches!(&out[0], Output::Abort { reason, .. } if reason == "could not record activate")
    );
    assert_eq!(l.active(), None);
    let what: Vec<&str> = l.history().iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        what[what.len() - 3..],
        [
            "all prepared; activate sent",
            "activate withdrawn before it went out",
            "aborted: could not record activate"
        ]
    );
}

#[test]
fn resumed_activation_finalizes_or_is_interrupted() {
    let mut l = registered_ledger();
    let resume = || Input::ResumeActivation {
        version: "v1".into(),
        required: vec!["s1".into(), "c1".into()],
    };
    let out = l.step(resume(), 10).unwrap();
    assert_eq!(
        out,
        vec![Output::Activate {
            version: "v1".into(),
            required: vec!["c1".into(), "s1".into()]
        }]
    );
    assert_eq!(
        l.step(resume(), 10),
        Err(LedgerError::Busy {
            running: "v1".into()
        })
    );
    // A late prepare ack changes nothing; active acks finalize.
    assert_eq!(l.step(prepared("s1", "spine", "v1"), 11), Ok(vec![]));
    for c in ["s1", "c1"] {
        l.step(
            Input::Active {
                component: c.into(),
                version: "v1".into(),
            },
            12,
        )
        .unwrap();
    }
    assert_eq!(l.active().map(String::as_str), Some("v1"));
    assert!(l.deploy().is_none());
    assert_eq!(
        l.step(resume(), 13),
        Err(LedgerError::AlreadyActive("v1".into()))
    );

    // Not confirmed in time: interrupted, never finalized, active unchanged.
    let mut l = registered_ledger();
    l.step(resume(), 10).unwrap();
    l.step(
        Input::Active {
            component: "s1".into(),
            version: "v1".into(),
        },
        11,
    )
    .unwrap();
    assert_eq!(l.step(Input::Tick, 10 + 10 * S), Ok(vec![]));
    let out = l.step(Input::Tick, 11 + 10 * S).unwrap();
    assert!(
        matches!(&out[0], Output::Interrupted { version, reason } if version == "v1" && reason.contains("c1 did not confirm")),
        "{out:?}"
    );
    assert!(l.deploy().is_none());
    assert_eq!(l.active(), None);
    let mut l = registered_ledger();
    assert_eq!(
        l.step(
            Input::ResumeActivation {
                version: "v9".into(),
                required: vec!["s1".into()]
            },
            1
        ),
        Err(LedgerError::NotStaged("v9".into()))
    );
}
