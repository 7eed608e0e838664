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
    let mut ledger = Ledger::new(Timeouts {
        prepare_ns: 5 * S,
        resend_ns: S,
    });
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
                    running: None,
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
            running: None,
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

// ---------------------------------------------------------------------------
// Crashes, late joiners and ledger restarts.
//
// One event queue drives 1..=64 components and the ledger through four
// deploys per seed. Messages in both directions are delayed, reordered,
// duplicated and lost; components crash (they stop acking and lose what
// they prepared) and may come back as late joiners that load
// `Ledger::committed` before they serve; the ledger restarts at random
// points: everything in memory and every message in flight to it is lost,
// and it is rebuilt with `Ledger::recover` from `Ledger::durable` (what the
// shell writes after every step, before that step's messages go out, so the
// record at a restart is the state after the last step).
//
// Modelled shell (crates/control): a component registers with its first
// heartbeat (`Register` with the version it runs) and is deregistered when
// it has sent none for `STALE`; after a ledger restart the registry is
// empty until each live component's next heartbeat. Faults per deploy: one
// component may fail to compile the version or ack PREPARED with a wrong
// hash (a tampered blob); those faults end with the deploy.
//
// Checked: invariant 1 (activate for a version is sent only after every
// component it was announced to in that deploy delivered a matching
// PREPARED; a component switches only on an activate for what it prepared);
// invariant 2 (once the run settles after a deploy, every live component
// runs the new version if it finalized, or the previous one if it aborted,
// and nobody ever ran an aborted version); invariant 3 (a PREPARED with
// wrong hashes is never followed by an activate for that component and
// version); invariant 4 (each processed record is tagged with the version
// its component ran at that moment, which was committed, never one only
// prepared); every deploy ends finalized or aborted (or interrupted, only
// one resumed after a restart that a registered component never confirmed;
// then the fleet is brought back to the active version), and a deploy in
// flight at a restart is resolved explicitly.

const MS: i64 = 1_000_000;
const STALE: i64 = 3 * S;

#[derive(Debug, Clone)]
enum Ev {
    ToLedger(Input),
    ToComp(usize, std::rc::Rc<Output>),
    Crash(usize),
    Restart(usize),
    /// The shell's staleness check for a crashed component (epoch).
    StaleCheck(usize, u32),
    /// A component's first heartbeat after it (or the ledger) started.
    Heartbeat(usize, u32),
    LedgerRestart,
    Deploy,
    /// A component processes one record.
    Process(usize),
    Tick,
}

#[derive(Debug, Default)]
struct Node {
    id: String,
    role: String,
    up: bool,
    /// Bumped on every crash.
    epoch: u32,
    serving: bool,
    running: Option<String>,
    /// The prepared version and whether its hashes were the staged ones.
    prepared: Option<(String, bool)>,
    broken_for: Option<String>,
    tampered_for: Option<String>,
    /// (since, version) every time what it runs changes.
    timeline: Vec<(i64, Option<String>)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    deploys: usize,
    finalized: usize,
    aborted: usize,
    /// Resumed after a restart, then not confirmed in time by a component
    /// still registered.
    interrupted: usize,
    restarts_preparing: usize,
    restarts_activating: usize,
    restarts_idle: usize,
    crashes: usize,
    rejoins: usize,
    catch_ups: usize,
    records: usize,
    components: usize,
}

struct World {
    rng: Rng,
    now: i64,
    seq: u64,
    queue: BTreeMap<(i64, u64), Ev>,
    trace: Option<Vec<String>>,
    timeouts: Timeouts,
    ledger: Ledger,
    nodes: Vec<Node>,
    /// The shell's registry (components heard from since the ledger started).
    seen: BTreeSet<usize>,
    /// Messages on the network.
    inflight: usize,
    pending_heartbeats: usize,
    /// (component, version): a PREPARED with the staged hashes reached a ledger.
    delivered_prepared: BTreeSet<(String, String)>,
    /// Version → components announced to during its deploy.
    announced: BTreeMap<String, BTreeSet<String>>,
    activated: BTreeSet<String>,
    aborted: BTreeSet<String>,
    finalized: BTreeSet<String>,
    interrupted: BTreeSet<String>,
    /// Versions whose deploy was resumed after a ledger restart.
    resumed: BTreeSet<String>,
    deploying: Option<String>,
    /// A deploy ended; check once the run settles.
    settle: Option<String>,
    next_version: usize,
    rounds: usize,
    deploy_tries: usize,
    crash_per_mille: u64,
    done: bool,
    tally: Tally,
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

impl World {
    fn new(seed: u64, trace: bool) -> World {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let n = 1 + rng.below(64) as usize;
        let crash_per_mille = [0, 20, 50, 100][rng.below(4) as usize];
        let timeouts = Timeouts {
            prepare_ns: 5 * S,
            resend_ns: S,
        };
        let mut w = World {
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            trace: trace.then(Vec::new),
            timeouts,
            ledger: Ledger::new(timeouts),
            nodes: Vec::new(),
            seen: BTreeSet::new(),
            inflight: 0,
            pending_heartbeats: 0,
            delivered_prepared: BTreeSet::new(),
            announced: BTreeMap::new(),
            activated: BTreeSet::new(),
            aborted: BTreeSet::new(),
            finalized: BTreeSet::new(),
            interrupted: BTreeSet::new(),
            resumed: BTreeSet::new(),
            deploying: None,
            settle: None,
            next_version: 1,
            rounds: 4,
            deploy_tries: 0,
            crash_per_mille,
            done: false,
            tally: Tally {
                components: n,
                ..Tally::default()
            },
        };
        for v in 1..=w.rounds {
            let _ = w.ledger.step(Input::Stage(staged(&format!("v{v}"))), 0);
        }
        for i in 0..n {
            w.nodes.push(Node {
                id: format!("c{i}"),
                role: if i % 3 == 0 { "sidecar" } else { "spine" }.into(),
                up: true,
                serving: true,
                timeline: vec![(0, None)],
                ..Node::default()
            });
            let d = w.rng.below(S as u64) as i64;
            w.at(d, Ev::Heartbeat(i, 0));
            let d = S + w.rng.below(3 * S as u64) as i64;
            w.at(d, Ev::Process(i));
        }
        w.at(S + S / 2, Ev::Deploy);
        w.at(100 * MS, Ev::Tick);
        w
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{:>9.3}s {}", self.now as f64 / 1e9, line()));
        }
    }

    fn at(&mut self, delay: i64, ev: Ev) {
        self.seq += 1;
        match ev {
            Ev::ToLedger(_) | Ev::ToComp(..) => self.inflight += 1,
            Ev::Heartbeat(..) => self.pending_heartbeats += 1,
            _ => {}
        }
        self.queue.insert((self.now + delay.max(1), self.seq), ev);
    }

    /// 1–300 ms, sometimes up to 1.5 s (reordering).
    fn delay(&mut self) -> i64 {
        if self.rng.chance(50) {
            1 + self.rng.below(1500 * MS as u64) as i64
        } else {
            1 + self.rng.below(300 * MS as u64) as i64
        }
    }

    /// Sends with loss (3 %) and duplication (5 %).
    fn send(&mut self, ev: Ev) {
        if !self.rng.chance(30) {
            let d = self.delay();
            self.at(d, ev.clone());
        } else {
            self.note(|| format!("lost: {ev:?}"));
        }
        if self.rng.chance(50) {
            let d = self.delay();
            self.at(d, ev);
        }
    }

    fn index(&self, id: &str) -> Option<usize> {
        id.strip_prefix('c').and_then(|n| n.parse().ok())
    }

    /// One ledger step; its outputs go out.
    fn step(&mut self, input: Input) -> Result<(), String> {
        self.note(|| format!("ledger <- {input:?}"));
        match self.ledger.step(input, self.now) {
            Ok(outs) => self.emit(outs),
            Err(e) => {
                self.note(|| format!("ledger: {e}"));
                Ok(())
            }
        }
    }

    fn emit(&mut self, outs: Vec<Output>) -> Result<(), String> {
        for o in outs {
            self.note(|| format!("ledger -> {o:?}"));
            let shared = std::rc::Rc::new(o.clone());
            match &o {
                Output::Announce { version, required } => {
                    if self.deploying.as_ref() == Some(version) {
                        self.announced
                            .entry(version.clone())
                            .or_default()
                            .extend(required.iter().cloned());
                    }
                    for c in required {
                        if let Some(i) = self.index(c) {
                            self.send(Ev::ToComp(i, shared.clone()));
                        }
                    }
                }
                Output::Activate { version, required } => {
                    ensure!(
                        !self.aborted.contains(version),
                        "activate for {version}, which was aborted"
                    );
                    // Invariant 1: the first activate of a deploy follows a
                    // matching PREPARED from everyone announced to; every
                    // activate names only components that prepared it.
                    if !self.activated.contains(version) {
                        for c in self.announced.get(version).into_iter().flatten() {
                            ensure!(
                                self.delivered_prepared
                                    .contains(&(c.clone(), version.clone())),
                                "invariant 1: activate {version} sent before {c} prepared it"
                            );
                        }
                    }
                    for c in required {
                        ensure!(
                            self.delivered_prepared
                                .contains(&(c.clone(), version.clone())),
                            "invariant 1: activate {version} names {c}, which never prepared it"
                        );
                    }
                    self.activated.insert(version.clone());
                    for c in required {
                        if let Some(i) = self.index(c) {
                            self.send(Ev::ToComp(i, shared.clone()));
                        }
                    }
                }
                Output::Abort { version, .. } => {
                    ensure!(
                        !self.activated.contains(version),
                        "invariant 2: {version} aborted after activate was sent"
                    );
                    self.aborted.insert(version.clone());
                    self.end_round(version);
                    for i in 0..self.nodes.len() {
                        self.send(Ev::ToComp(i, shared.clone()));
                    }
                }
                Output::Finalized { version } => {
                    self.finalized.insert(version.clone());
                    self.end_round(version);
                }
                Output::Interrupted { version, .. } => {
                    // Only a deploy resumed after a restart can end so,
                    // and only instead of finalizing.
                    ensure!(
                        self.resumed.contains(version) && !self.finalized.contains(version),
                        "{version} interrupted without being resumed after a restart"
                    );
                    ensure!(
                        self.ledger.active() != Some(version),
                        "{version} interrupted but active"
                    );
                    self.interrupted.insert(version.clone());
                    self.end_round(version);
                }
            }
        }
        Ok(())
    }

    fn end_round(&mut self, version: &str) {
        if self.deploying.as_deref() == Some(version) {
            self.deploying = None;
            self.settle = Some(version.to_string());
            for n in self.nodes.iter_mut() {
                n.broken_for = None;
                n.tampered_for = None;
            }
        }
    }

    fn switch(&mut self, i: usize, v: Option<String>) {
        let now = self.now;
        let n = &mut self.nodes[i];
        if n.running != v {
            n.running = v.clone();
            n.timeline.push((now, v));
        }
    }

    fn ack(&mut self, input: Input) {
        self.send(Ev::ToLedger(input));
    }

    /// The hashes are the staged ones for the component's role.
    fn hashes_match(
        &self,
        component: &str,
        version: &str,
        hashes: &BTreeMap<String, String>,
    ) -> bool {
        let st = staged(version);
        self.index(component)
            .and_then(|i| st.roles.get(&self.nodes[i].role))
            .is_some_and(|names| {
                hashes.len() == names.len()
                    && names.iter().all(|a| hashes.get(a) == st.artifacts.get(a))
            })
    }

    fn on_component(&mut self, i: usize, out: &Output) -> Result<(), String> {
        if !self.nodes[i].up {
            self.note(|| format!("c{i} is down; drops {out:?}"));
            return Ok(());
        }
        self.note(|| format!("c{i} <- {out:?}"));
        let id = self.nodes[i].id.clone();
        match out {
            Output::Announce { version, required } if required.contains(&id) => {
                let version = version.clone();
                let n = &mut self.nodes[i];
                if n.broken_for.as_deref() == Some(version.as_str()) {
                    self.ack(Input::PrepareFailed {
                        component: id,
                        version,
                        reason: "compile error".into(),
                    });
                    return Ok(());
                }
                // A tampered blob for this deploy, or a transient bad read:
                // 10 % when catching up to a finalized version, 0.3 % else.
                let rate = if self.finalized.contains(&version) {
                    100
                } else {
                    3
                };
                let transient = self.rng.chance(rate);
                let n = &mut self.nodes[i];
                // Idempotent: a verified copy of this version is kept and
                // acked again; a bad read never replaces it.
                let held = n.prepared.as_ref() == Some(&(version.clone(), true));
                let ok =
                    held || (n.tampered_for.as_deref() != Some(version.as_str()) && !transient);
                n.prepared = Some((version.clone(), ok));
                let st = staged(&version);
                let hashes = st.roles[&n.role]
                    .iter()
                    .map(|a| {
                        let h = if ok {
                            st.artifacts[a].clone()
                        } else {
                            "tampered".to_string()
                        };
                        (a.clone(), h)
                    })
                    .collect();
                self.ack(Input::Prepared {
                    component: id,
                    version,
                    hashes,
                });
            }
            Output::Activate { version, required } if required.contains(&id) => {
                let version = version.clone();
                let n = &self.nodes[i];
                match n.prepared.clone() {
                    Some((p, ok)) if p == version => {
                        ensure!(
                            ok,
                            "invariant 3: {id} told to activate {version}, prepared with wrong hashes"
                        );
                        self.switch(i, Some(version.clone()));
                        self.ack(Input::Active {
                            component: id,
                            version,
                        });
                    }
                    _ if n.running.as_ref() == Some(&version) => self.ack(Input::Active {
                        component: id,
                        version,
                    }),
                    _ => self.ack(Input::PrepareFailed {
                        component: id,
                        version,
                        reason: "activate for a version not prepared here".into(),
                    }),
                }
            }
            Output::Abort { version, .. } => {
                let n = &mut self.nodes[i];
                if n.prepared.as_ref().is_some_and(|(p, _)| p == version) {
                    n.prepared = None;
                }
                ensure!(
                    n.running.as_ref() != Some(version),
                    "invariant 2: {id} runs {version}, which was aborted"
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn on_deploy(&mut self) -> Result<(), String> {
        if self.deploying.is_some() || self.settle.is_some() {
            self.at(500 * MS, Ev::Deploy);
            return Ok(());
        }
        if self.next_version > self.rounds {
            self.done = true;
            return Ok(());
        }
        let v = format!("v{}", self.next_version);
        // Faults of this round.
        let n = self.nodes.len() as u64;
        match self.rng.below(4) {
            0 => self.nodes[self.rng.below(n) as usize].broken_for = Some(v.clone()),
            1 => self.nodes[self.rng.below(n) as usize].tampered_for = Some(v.clone()),
            _ => {}
        }
        for i in 0..self.nodes.len() {
            if self.rng.chance(self.crash_per_mille) {
                let d = self.rng.below(2 * S as u64) as i64;
                self.at(d, Ev::Crash(i));
            }
        }
        for _ in 0..2 {
            if self.rng.chance(250) {
                let d = self.rng.below(3 * S as u64) as i64;
                self.at(d, Ev::LedgerRestart);
            }
        }
        self.note(|| format!("deploy {v}"));
        match self
            .ledger
            .step(Input::Deploy { version: v.clone() }, self.now)
        {
            Ok(outs) => {
                self.tally.deploys += 1;
                self.next_version += 1;
                self.deploy_tries = 0;
                self.deploying = Some(v.clone());
                self.announced.insert(v, BTreeSet::new());
                self.emit(outs)
            }
            Err(LedgerError::NoComponents { .. } | LedgerError::Busy { .. })
                if self.deploy_tries < 30 =>
            {
                self.deploy_tries += 1;
                self.at(S, Ev::Deploy);
                Ok(())
            }
            Err(LedgerError::NoComponents { .. }) => {
                // Nobody there for a long time: skip this version.
                self.next_version += 1;
                self.deploy_tries = 0;
                self.at(S, Ev::Deploy);
                Ok(())
            }
            Err(e) => Err(format!("deploy {v} refused: {e}")),
        }
    }

    fn on_ledger_restart(&mut self) -> Result<(), String> {
        let lost: Vec<(i64, u64)> = self
            .queue
            .iter()
            .filter(|(_, e)| matches!(e, Ev::ToLedger(_)))
            .map(|(k, _)| *k)
            .collect();
        for k in lost {
            self.queue.remove(&k);
            self.inflight -= 1;
        }
        let record = self.ledger.durable();
        self.note(|| format!("LEDGER RESTART; in flight: {:?}", record.deploy));
        let history_len = record.history.len();
        let in_flight = record.deploy.clone();
        let (ledger, outs) = Ledger::recover(self.timeouts, record, self.now);
        self.ledger = ledger;
        self.seen.clear();
        match &in_flight {
            None => self.tally.restarts_idle += 1,
            Some(f) if f.phase == Phase::Preparing => {
                self.tally.restarts_preparing += 1;
                ensure!(
                    self.ledger.deploy().is_none()
                        && outs.iter().any(
                            |o| matches!(o, Output::Abort { version, .. } if *version == f.version)
                        )
                        && outs.iter().any(|o| matches!(o, Output::Abort { reason, .. }
                            if reason == Ledger::RESTARTED_PREPARING))
                        && self.ledger.history()[history_len..].iter().any(|e| {
                            e.what == format!("aborted: {}", Ledger::RESTARTED_PREPARING)
                        }),
                    "restart during prepare of {} was not aborted with a recorded reason",
                    f.version
                );
            }
            Some(f) => {
                self.tally.restarts_activating += 1;
                self.resumed.insert(f.version.clone());
                let resumed = self.ledger.deploy().is_some_and(|d| d.version == f.version)
                    || self.ledger.active() == Some(&f.version);
                ensure!(
                    resumed
                        && self.ledger.history()[history_len..]
                            .iter()
                            .any(|e| e.what.starts_with("resumed after a ledger restart")),
                    "restart after activate of {} was not resumed",
                    f.version
                );
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                let d = self.rng.below(1500 * MS as u64) as i64;
                let e = self.nodes[i].epoch;
                self.at(d, Ev::Heartbeat(i, e));
            }
        }
        self.emit(outs)
    }

    fn on_event(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::ToLedger(input) => {
                self.inflight -= 1;
                if let Input::Prepared {
                    component,
                    version,
                    hashes,
                } = &input
                {
                    if self.hashes_match(component, version, hashes) {
                        self.delivered_prepared
                            .insert((component.clone(), version.clone()));
                    }
                }
                self.step(input)
            }
            Ev::ToComp(i, out) => {
                self.inflight -= 1;
                self.on_component(i, &out)
            }
            Ev::Tick => {
                self.step(Input::Tick)?;
                if !self.done {
                    self.at(100 * MS, Ev::Tick);
                }
                Ok(())
            }
            Ev::Deploy => self.on_deploy(),
            Ev::LedgerRestart => self.on_ledger_restart(),
            Ev::Crash(i) => {
                let n = &mut self.nodes[i];
                if !n.up {
                    return Ok(());
                }
                self.tally.crashes += 1;
                n.up = false;
                n.serving = false;
                n.prepared = None;
                n.epoch += 1;
                let e = n.epoch;
                self.note(|| format!("c{i} CRASHES"));
                let d = STALE + self.rng.below(S as u64) as i64;
                self.at(d, Ev::StaleCheck(i, e));
                if self.rng.chance(700) {
                    let d = 200 * MS + self.rng.below(8 * S as u64) as i64;
                    self.at(d, Ev::Restart(i));
                }
                Ok(())
            }
            Ev::StaleCheck(i, e) => {
                if !self.nodes[i].up && self.nodes[i].epoch == e && self.seen.remove(&i) {
                    let component = self.nodes[i].id.clone();
                    self.step(Input::Deregister { component })?;
                }
                Ok(())
            }
            Ev::Restart(i) => {
                // A late joiner loads the committed version before it serves.
                self.tally.rejoins += 1;
                let v = self.ledger.committed().cloned();
                self.note(|| format!("c{i} RESTARTS and loads {v:?}"));
                if let Some(v) = &v {
                    ensure!(
                        self.finalized.contains(v) || self.activated.contains(v),
                        "c{i} started on {v}, which was never committed"
                    );
                }
                self.nodes[i].up = true;
                self.switch(i, v);
                self.nodes[i].serving = true;
                let e = self.nodes[i].epoch;
                let d = self.rng.below(S as u64) as i64;
                self.at(d, Ev::Heartbeat(i, e));
                let d = self.rng.below(2 * S as u64) as i64;
                self.at(d, Ev::Process(i));
                Ok(())
            }
            Ev::Heartbeat(i, e) => {
                self.pending_heartbeats -= 1;
                let n = &self.nodes[i];
                if !n.up || n.epoch != e || self.seen.contains(&i) {
                    return Ok(());
                }
                if self.rng.chance(100) {
                    // Lost; the next one comes a second later.
                    self.at(S, Ev::Heartbeat(i, e));
                    return Ok(());
                }
                self.seen.insert(i);
                let input = Input::Register {
                    component: n.id.clone(),
                    role: n.role.clone(),
                    running: n.running.clone(),
                };
                self.step(input)
            }
            Ev::Process(i) => {
                let n = &self.nodes[i];
                if !n.up || !n.serving {
                    return Ok(());
                }
                // Invariant 4: the record names the version that processed
                // it: what this component ran at that moment, a committed
                // version, never one only prepared or aborted.
                if let Some(tag) = n.running.clone() {
                    let at_time = n
                        .timeline
                        .iter()
                        .rev()
                        .find(|(t, _)| *t <= self.now)
                        .and_then(|(_, v)| v.clone());
                    ensure!(
                        at_time.as_ref() == Some(&tag),
                        "invariant 4: c{i} tagged a record {tag} while running {at_time:?}"
                    );
                    ensure!(
                        (self.activated.contains(&tag) || self.finalized.contains(&tag))
                            && !self.aborted.contains(&tag),
                        "invariant 4: c{i} processed a record with {tag}, never committed"
                    );
                    self.tally.records += 1;
                }
                if !self.done {
                    let d = S + self.rng.below(3 * S as u64) as i64;
                    self.at(d, Ev::Process(i));
                }
                Ok(())
            }
        }
    }

    fn settled(&self) -> bool {
        self.ledger.deploy().is_none()
            && self.ledger.catch_ups().is_empty()
            && self.inflight == 0
            && self.pending_heartbeats == 0
            && self
                .nodes
                .iter()
                .enumerate()
                .all(|(i, n)| !n.up || self.seen.contains(&i))
    }

    /// Invariant 2 once the run settled after the deploy of `v`.
    fn check_settled(&mut self, v: &str) -> Result<(), String> {
        let fin = self.finalized.contains(v);
        let ab = self.aborted.contains(v);
        let int = self.interrupted.contains(v);
        ensure!(
            [fin, ab, int].iter().filter(|x| **x).count() == 1,
            "deploy of {v}: finalized {fin}, aborted {ab}, interrupted {int}"
        );
        let active = self.ledger.active().cloned();
        if int {
            self.tally.interrupted += 1;
            ensure!(active.as_deref() != Some(v), "{v} interrupted but active");
            // With an older active version everyone is caught up to it;
            // with none there is nothing to go back to.
            if active.is_none() {
                for n in self.nodes.iter().filter(|n| n.up) {
                    ensure!(
                        n.running.is_none() || n.running.as_deref() == Some(v),
                        "after {v} was interrupted {} runs {:?}",
                        n.id,
                        n.running
                    );
                }
                return Ok(());
            }
        } else if fin {
            self.tally.finalized += 1;
            ensure!(
                active.as_deref() == Some(v),
                "{v} finalized but active is {active:?}"
            );
        } else {
            self.tally.aborted += 1;
            for n in &self.nodes {
                ensure!(
                    n.timeline.iter().all(|(_, r)| r.as_deref() != Some(v)),
                    "invariant 2: {} ran aborted {v}",
                    n.id
                );
            }
        }
        for n in &self.nodes {
            if n.up {
                ensure!(
                    n.serving && n.running == active,
                    "invariant 2: after {v} settled, {} runs {:?}, active is {active:?}",
                    n.id,
                    n.running
                );
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Tally, String> {
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            self.now = t;
            ensure!(
                self.now < 900 * S,
                "the run never settled (deploying {:?}, settle {:?}, ledger deploy {:?}, catch-ups {:?})",
                self.deploying,
                self.settle,
                self.ledger.deploy(),
                self.ledger.catch_ups()
            );
            self.on_event(ev)?;
            if let Some(v) = self.settle.clone() {
                if self.settled() {
                    self.note(|| format!("settled after {v}"));
                    self.check_settled(&v)?;
                    self.settle = None;
                    let d = self.rng.below(2 * S as u64) as i64;
                    self.at(d, Ev::Deploy);
                }
            }
        }
        ensure!(
            self.done && self.settle.is_none() && self.deploying.is_none(),
            "the run stopped with deploying {:?}, settle {:?}",
            self.deploying,
            self.settle
        );
        ensure!(
            self.tally.deploys
                == self.tally.finalized + self.tally.aborted + self.tally.interrupted,
            "{} deploys, {} finalized, {} aborted, {} interrupted",
            self.tally.deploys,
            self.tally.finalized,
            self.tally.aborted,
            self.tally.interrupted
        );
        self.tally.catch_ups = self
            .ledger
            .history()
            .iter()
            .filter(|e| e.what.ends_with("caught up"))
            .count();
        Ok(self.tally)
    }
}

fn run_world(seed: u64) -> Result<Tally, String> {
    World::new(seed, false).run()
}

/// Replays a seed with its trace (every event, message and ledger output).
fn trace_of(seed: u64) -> (Result<Tally, String>, Vec<String>) {
    let mut w = World::new(seed, true);
    let r = w.run();
    (r, w.trace.unwrap_or_default())
}

fn fail_with_trace(seed: u64, e: &str) -> ! {
    let (_, trace) = trace_of(seed);
    let tail = trace.len().saturating_sub(400);
    panic!(
        "seed {seed}: {e}\n--- trace (last {} of {} lines; full: BEN_SIM_SEED={seed} cargo test -p ben-ledger replay_one_seed -- --nocapture) ---\n{}",
        trace.len() - tail,
        trace.len(),
        trace[tail..].join("\n")
    );
}

#[test]
fn crashes_late_joiners_and_ledger_restarts_on_3000_seeds() {
    let mut sum = Tally::default();
    let t0 = std::time::Instant::now();
    let seeds = 3000;
    for seed in 0..seeds {
        match run_world(seed) {
            Ok(t) => {
                sum.deploys += t.deploys;
                sum.finalized += t.finalized;
                sum.aborted += t.aborted;
                sum.interrupted += t.interrupted;
                sum.restarts_preparing += t.restarts_preparing;
                sum.restarts_activating += t.restarts_activating;
                sum.restarts_idle += t.restarts_idle;
                sum.crashes += t.crashes;
                sum.rejoins += t.rejoins;
                sum.catch_ups += t.catch_ups;
                sum.records += t.records;
                sum.components += t.components;
            }
            Err(e) => fail_with_trace(seed, &e),
        }
    }
    eprintln!("{seeds} seeds in {:?}: {sum:?}", t0.elapsed());
    // Every outcome and fault must really occur, or the simulation tests
    // nothing.
    assert!(sum.finalized > 3000, "{sum:?}");
    assert!(sum.aborted > 1000, "{sum:?}");
    assert!(sum.restarts_preparing > 100, "{sum:?}");
    assert!(sum.restarts_activating > 100, "{sum:?}");
    assert!(sum.crashes > 1000 && sum.rejoins > 500, "{sum:?}");
    assert!(sum.catch_ups > 100, "{sum:?}");
    assert!(sum.records > 100_000, "{sum:?}");
}

/// `BEN_SIM_SEED=N cargo test -p ben-ledger replay_one_seed -- --nocapture`
/// prints the full trace of one seed.
#[test]
fn replay_one_seed() {
    let seed = std::env::var("BEN_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let (r, trace) = trace_of(seed);
    if std::env::var("BEN_SIM_SEED").is_ok() {
        println!("{}", trace.join("\n"));
    }
    if let Err(e) = r {
        fail_with_trace(seed, &e);
    }
    assert!(!trace.is_empty());
}

// ---------------------------------------------------------------------------
// Unit tests of the restart, drop, join and catch-up API.

fn reg(l: &mut Ledger, c: &str, role: &str, running: Option<&str>, now: i64) -> Vec<Output> {
    l.step(
        Input::Register {
            component: c.into(),
            role: role.into(),
            running: running.map(String::from),
        },
        now,
    )
    .unwrap()
}

fn good_hashes(v: &str, role: &str) -> BTreeMap<String, String> {
    let st = staged(v);
    st.roles[role]
        .iter()
        .map(|n| (n.clone(), st.artifacts[n].clone()))
        .collect()
}

fn prepared(l: &mut Ledger, c: &str, v: &str, role: &str, now: i64) -> Vec<Output> {
    l.step(
        Input::Prepared {
            component: c.into(),
            version: v.into(),
            hashes: good_hashes(v, role),
        },
        now,
    )
    .unwrap()
}

fn active(l: &mut Ledger, c: &str, v: &str, now: i64) -> Vec<Output> {
    l.step(
        Input::Active {
            component: c.into(),
            version: v.into(),
        },
        now,
    )
    .unwrap()
}

fn two_spines() -> Ledger {
    let t = Timeouts {
        prepare_ns: 10 * S,
        resend_ns: S,
    };
    let mut l = Ledger::new(t);
    l.step(Input::Stage(staged("v1")), 0).unwrap();
    reg(&mut l, "a", "spine", None, 0);
    reg(&mut l, "b", "spine", None, 0);
    l
}

fn deploy(l: &mut Ledger, v: &str, now: i64) -> Vec<Output> {
    l.step(Input::Deploy { version: v.into() }, now).unwrap()
}

#[test]
fn restart_during_prepare_aborts_with_the_reason_recorded() {
    let mut l = two_spines();
    deploy(&mut l, "v1", 1);
    prepared(&mut l, "a", "v1", "spine", 2);
    let rec = l.durable();
    assert_eq!(
        rec.deploy.as_ref().map(|d| d.phase.clone()),
        Some(Phase::Preparing)
    );
    let (r, outs) = Ledger::recover(l.timeouts, rec, 3);
    assert!(matches!(&outs[..], [Output::Abort { version, reason }]
        if version == "v1" && reason == "ledger restarted during deploy; nothing activated"));
    assert!(r.deploy().is_none());
    assert_eq!(r.active(), None);
    assert!(r
        .history()
        .last()
        .unwrap()
        .what
        .starts_with("aborted: ledger restarted during deploy"));
}

#[test]
fn restart_after_activate_resumes_and_finalizes() {
    let mut l = two_spines();
    deploy(&mut l, "v1", 1);
    prepared(&mut l, "a", "v1", "spine", 2);
    let out = prepared(&mut l, "b", "v1", "spine", 3);
    assert!(matches!(&out[..], [Output::Activate { .. }]));
    active(&mut l, "a", "v1", 4);
    assert_eq!(l.committed().map(String::as_str), Some("v1"));
    let (mut r, outs) = Ledger::recover(l.timeouts, l.durable(), 5);
    assert_eq!(
        outs,
        vec![Output::Activate {
            version: "v1".into(),
            required: vec!["a".into(), "b".into()]
        }]
    );
    assert_eq!(r.committed().map(String::as_str), Some("v1"));
    // Components re-register; both ack (again).
    reg(&mut r, "a", "spine", Some("v1"), 6);
    reg(&mut r, "b", "spine", None, 6);
    assert!(active(&mut r, "a", "v1", 7).is_empty());
    assert_eq!(
        active(&mut r, "b", "v1", 8),
        vec![Output::Finalized {
            version: "v1".into()
        }]
    );
    assert_eq!(r.active().map(String::as_str), Some("v1"));
}

#[test]
fn after_activate_a_departed_component_is_dropped_and_caught_up_later() {
    let mut l = two_spines();
    deploy(&mut l, "v1", 1);
    prepared(&mut l, "a", "v1", "spine", 2);
    prepared(&mut l, "b", "v1", "spine", 3);
    active(&mut l, "a", "v1", 4);
    // b leaves: the deploy finalizes without it (the decision was made).
    let out = l
        .step(
            Input::Deregister {
                component: "b".into(),
            },
            5,
        )
        .unwrap();
    assert_eq!(
        out,
        vec![Output::Finalized {
            version: "v1".into()
        }]
    );
    // b comes back running nothing: it is caught up alone.
    let out = reg(&mut l, "b", "spine", None, 6);
    assert_eq!(
        out,
        vec![Output::Announce {
            version: "v1".into(),
            required: vec!["b".into()]
        }]
    );
    // Wrong hashes are never accepted: no activate, it stays behind.
    let bad: BTreeMap<String, String> = [("pack/web".to_string(), "x".to_string())]
        .into_iter()
        .collect();
    let out = l
        .step(
            Input::Prepared {
                component: "b".into(),
                version: "v1".into(),
                hashes: bad,
            },
            7,
        )
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(l.catch_ups()["b"].failures, 1);
    // It registers again (restart): announce, prepared, activate, active.
    l.step(
        Input::Deregister {
            component: "b".into(),
        },
        8,
    )
    .unwrap();
    reg(&mut l, "b", "spine", None, 9);
    let out = prepared(&mut l, "b", "v1", "spine", 10);
    assert_eq!(
        out,
        vec![Output::Activate {
            version: "v1".into(),
            required: vec!["b".into()]
        }]
    );
    assert!(active(&mut l, "b", "v1", 11).is_empty());
    assert!(l.catch_ups().is_empty());
    assert!(l.history().last().unwrap().what.ends_with("caught up"));
}

#[test]
fn joining_during_prepare_makes_it_required_and_unanswered_messages_are_resent() {
    let mut l = two_spines();
    deploy(&mut l, "v1", 0);
    let out = reg(&mut l, "c", "spine", None, 1);
    assert_eq!(
        out,
        vec![Output::Announce {
            version: "v1".into(),
            required: vec!["c".into()]
        }]
    );
    prepared(&mut l, "a", "v1", "spine", 2);
    prepared(&mut l, "b", "v1", "spine", 3);
    // Not yet: c has not prepared. After resend_ns the announce goes again.
    let out = l.step(Input::Tick, S + 10).unwrap();
    assert_eq!(
        out,
        vec![Output::Announce {
            version: "v1".into(),
            required: vec!["c".into()]
        }]
    );
    let out = prepared(&mut l, "c", "v1", "spine", S + 20);
    assert!(matches!(&out[..], [Output::Activate { required, .. }] if required.len() == 3));
    active(&mut l, "a", "v1", S + 30);
    // c restarted and lost what it prepared: it says so and is dropped.
    l.step(
        Input::PrepareFailed {
            component: "c".into(),
            version: "v1".into(),
            reason: "activate for a version not prepared here".into(),
        },
        S + 40,
    )
    .unwrap();
    assert!(matches!(
        l.deploy().unwrap().components.get("c"),
        Some(ComponentState::Dropped(_))
    ));
    // b's ack was lost: activate is sent again to b only.
    let out = l.step(Input::Tick, 3 * S).unwrap();
    assert_eq!(
        out,
        vec![Output::Activate {
            version: "v1".into(),
            required: vec!["b".into()]
        }]
    );
    let out = active(&mut l, "b", "v1", 3 * S + 1);
    assert_eq!(
        out,
        vec![
            Output::Finalized {
                version: "v1".into()
            },
            Output::Announce {
                version: "v1".into(),
                required: vec!["c".into()]
            }
        ]
    );
}

#[test]
fn cancel_aborts_in_either_phase_and_needs_a_deploy() {
    let mut l = two_spines();
    let cancel = |r: &str| Input::Cancel { reason: r.into() };
    assert_eq!(l.step(cancel("x"), 2), Err(LedgerError::NoDeploy));
    deploy(&mut l, "v1", 2);
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
    deploy(&mut l, "v1", 4);
    prepared(&mut l, "a", "v1", "spine", 5);
    let out = prepared(&mut l, "b", "v1", "spine", 5);
    assert!(matches!(out[0], Output::Activate { .. }));
    let out = l.step(cancel("could not record activate"), 6).unwrap();
    assert!(
        matches!(&out[0], Output::Abort { reason, .. } if reason == "could not record activate")
    );
    assert_eq!(l.active(), None);
    assert_eq!(l.committed(), None);
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

/// Resumed after activate: `a` is back and confirms, `b` is registered but
/// never confirms: interrupted after the prepare timeout of the restart,
/// naming `b` only; active unchanged.
#[test]
fn resumed_activation_not_confirmed_in_time_is_interrupted() {
    let mut l = two_spines();
    deploy(&mut l, "v1", 1);
    prepared(&mut l, "a", "v1", "spine", 2);
    prepared(&mut l, "b", "v1", "spine", 3);
    let (mut r, outs) = Ledger::recover(l.timeouts, l.durable(), 10);
    assert!(matches!(&outs[..], [Output::Activate { .. }]));
    assert_eq!(
        r.history().last().unwrap().what,
        "resumed after a ledger restart: activate sent again to a, b"
    );
    reg(&mut r, "a", "spine", None, 11);
    reg(&mut r, "b", "spine", None, 11);
    assert!(active(&mut r, "a", "v1", 12).is_empty());
    // Resends until the bound (b is registered: it is not dropped).
    let mut t = 12;
    while t <= 10 + 10 * S {
        let out = r.step(Input::Tick, t).unwrap();
        assert!(
            out.iter()
                .all(|o| matches!(o, Output::Activate { required, .. } if required == &["b"])),
            "{out:?}"
        );
        t += S / 2;
    }
    let out = r.step(Input::Tick, 11 + 10 * S).unwrap();
    assert!(
        matches!(&out[..], [Output::Interrupted { version, reason }]
            if version == "v1" && reason.contains("but b did not confirm in time")
                && !reason.contains(" a,")),
        "{out:?}"
    );
    assert!(r.deploy().is_none());
    assert_eq!(r.active(), None);
    assert_eq!(r.committed(), None);
    assert!(r
        .history()
        .last()
        .unwrap()
        .what
        .starts_with("interrupted: "));
}

/// With an older active version, an interrupted deploy brings whoever
/// switched back to it (catch-up), so the fleet is not left split.
#[test]
fn an_interrupted_deploy_catches_the_fleet_up_to_the_active_version() {
    let mut l = two_spines();
    l.step(Input::Stage(staged("v2")), 0).unwrap();
    deploy(&mut l, "v1", 1);
    prepared(&mut l, "a", "v1", "spine", 2);
    prepared(&mut l, "b", "v1", "spine", 2);
    active(&mut l, "a", "v1", 3);
    active(&mut l, "b", "v1", 3);
    assert_eq!(l.active().map(String::as_str), Some("v1"));
    deploy(&mut l, "v2", 4);
    prepared(&mut l, "a", "v2", "spine", 5);
    prepared(&mut l, "b", "v2", "spine", 5);
    let (mut r, _) = Ledger::recover(l.timeouts, l.durable(), 10);
    reg(&mut r, "a", "spine", Some("v2"), 11);
    reg(&mut r, "b", "spine", Some("v1"), 11);
    active(&mut r, "a", "v2", 12);
    let out = r.step(Input::Tick, 11 + 10 * S).unwrap();
    assert!(
        matches!(&out[0], Output::Interrupted { reason, .. }
            if reason.contains("b did not confirm") && reason.contains("brought back to v1")),
        "{out:?}"
    );
    assert_eq!(
        out[1..],
        [Output::Announce {
            version: "v1".into(),
            required: vec!["a".into()]
        }]
    );
    assert_eq!(r.active().map(String::as_str), Some("v1"));
}

/// Past activate a deploy is never aborted; if it cannot be resumed it
/// ends interrupted, visibly.
#[test]
fn an_unresumable_deploy_past_activate_is_interrupted_not_aborted() {
    let rec = Durable {
        staged: vec![staged("v1")],
        active: None,
        history: vec![],
        deploy: Some(InFlight {
            version: "v1".into(),
            phase: Phase::Activating,
            started_ns: 0,
            required: vec![],
        }),
    };
    let (r, outs) = Ledger::recover(Timeouts::default(), rec.clone(), 1);
    assert!(
        matches!(&outs[..], [Output::Interrupted { reason, .. }]
            if reason.contains("no required component is on record")),
        "{outs:?}"
    );
    assert!(r.deploy().is_none());
    let rec = Durable {
        staged: vec![],
        ..rec
    };
    let (_, outs) = Ledger::recover(Timeouts::default(), rec, 1);
    assert!(
        matches!(&outs[..], [Output::Interrupted { reason, .. }]
            if reason.contains("no longer staged")),
        "{outs:?}"
    );
}
