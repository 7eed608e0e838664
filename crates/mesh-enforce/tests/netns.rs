//! The agent against a real kernel: three network namespaces (victim,
//! attacker, another host) over veth pairs, the agent's nftables table in
//! the victim's. A committed policy drops the attacker's packets (the rule
//! counts them, a TCP connect fails) while the other host still connects;
//! a flushed set and a deleted element come back within the reconciler's
//! period; a restarted agent rebuilds the same state and nothing expires
//! early; after the TTL the attacker connects again; an allowlisted source
//! is never blocked; spoiled policies are dead-lettered and nothing of
//! theirs reaches the kernel; tables of others are left alone.
//!
//! Needs root and `nft` (scripts/test installs nftables).

mod common;
use ben_bus::{Bus, InProcessBus};
use ben_component::Deps;
use ben_mesh_enforce::agent::{self, Counters};
use ben_mesh_enforce::model::{Allowlist, Net};
use ben_mesh_enforce::nft::Nft;
use ben_mesh_wire::{PolicyAck, ACK_SUBJECT, DLQ_SUBJECT, POLICY_SUBJECT};
use ben_wire::{pb, Role, Signer};
use common::{now_ms, Spoil, World};
use prost::Message as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sh(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    out
}

fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Which backend a run tests.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fw {
    Nft,
    Ipt,
}

/// Three namespaces; removed when dropped.
struct Net3 {
    victim: String,
    attacker: String,
    other: String,
    k: u32,
    fw: Fw,
    server: std::process::Child,
}

impl Net3 {
    /// `slot` keeps the namespaces of tests running at once apart.
    fn new(fw: Fw, slot: u32) -> Net3 {
        assert!(
            sh(&["id", "-u"]).stdout.starts_with(b"0"),
            "this test makes network namespaces and needs root"
        );
        let tool = if fw == Fw::Nft { "nft" } else { "ipset" };
        assert!(
            sh(&[tool, "--version"]).status.success(),
            "{tool} is missing: install the nftables, iptables and ipset packages (scripts/test does)"
        );
        let k = (std::process::id() % 50) * 4 + 20 + slot * 2 + (fw == Fw::Ipt) as u32;
        let (victim, attacker, other) = (format!("bv{k}"), format!("ba{k}"), format!("bo{k}"));
        for ns in [&victim, &attacker, &other] {
            let _ = sh(&["ip", "netns", "del", ns]);
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for (peer, net, a, b) in [(&attacker, 201, "va", "av"), (&other, 202, "vo", "ov")] {
            let (va, av) = (format!("{a}{k}"), format!("{b}{k}"));
            must(&[
                "ip", "link", "add", &va, "netns", &victim, "type", "veth", "peer", "name", &av,
                "netns", peer,
            ]);
            must(&[
                "ip",
                "-n",
                &victim,
                "addr",
                "add",
                &format!("10.{net}.{k}.1/24"),
                "dev",
                &va,
            ]);
            must(&[
                "ip",
                "-n",
                peer,
                "addr",
                "add",
                &format!("10.{net}.{k}.2/24"),
                "dev",
                &av,
            ]);
            must(&["ip", "-n", &victim, "link", "set", &va, "up"]);
            must(&["ip", "-n", peer, "link", "set", &av, "up"]);
        }
        let server = Command::new("ip")
            .args(["netns", "exec", &victim, "python3", "-c",
                "import socket,threading\ndef serve(p):\n s=socket.socket()\n s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n s.bind(('0.0.0.0',p))\n s.listen(64)\n while True:\n  c,_=s.accept()\n  c.close()\nthreading.Thread(target=serve,args=(8081,),daemon=True).start()\nserve(8080)\n"])
            .spawn()
            .expect("python3 for the victim's server");
        let n = Net3 {
            victim,
            attacker,
            other,
            k,
            fw,
            server,
        };
        let t = Instant::now();
        while !n.connects(&n.other.clone(), 202) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the victim's server never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    }

    fn ip(&self, net: u32) -> String {
        format!("10.{net}.{}.2", self.k)
    }

    /// Whether `ns` completes a TCP connect to the victim's port 8080
    /// within a second.
    fn connects(&self, ns: &str, net: u32) -> bool {
        self.connects_to(ns, net, 8080)
    }

    /// The same, to `port` (the victim serves 8080 and 8081).
    fn connects_to(&self, ns: &str, net: u32, port: u16) -> bool {
        let code = format!(
            "import socket\ns=socket.socket()\ns.settimeout(1)\ns.connect(('10.{net}.{}.1',{port}))\n",
            self.k
        );
        sh(&["ip", "netns", "exec", ns, "python3", "-c", &code])
            .status
            .success()
    }

    fn nft(&self, args: &[&str]) -> String {
        let mut a = vec!["nft"];
        a.extend_from_slice(args);
        self.exec(&a)
    }

    /// In the victim's namespace.
    fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "netns", "exec", &self.victim];
        a.extend_from_slice(args);
        must(&a)
    }

    /// Entries of the ingress drop set and the seconds each has left.
    fn held(&self) -> Vec<(String, u64)> {
        match self.fw {
            Fw::Nft => {
                let v: serde_json::Value = serde_json::from_str(
                    &self.nft(&["-j", "list", "set", "inet", "ben", "drop4_in"]),
                )
                .unwrap();
                let mut out = vec![];
                for o in v["nftables"].as_array().unwrap() {
                    for e in o["set"]["elem"].as_array().into_iter().flatten() {
                        let val = e["elem"]["val"].as_str().unwrap_or_default().to_string();
                        out.push((val, e["elem"]["expires"].as_u64().unwrap_or(0)));
                    }
                }
                out
            }
            Fw::Ipt => {
                ben_mesh_enforce::ipt::parse_save(&self.exec(&["ipset", "save", "ben-drop4_in"]))
                    .unwrap()
                    .into_iter()
                    .map(|h| (h.target.to_string(), h.expires_s.unwrap_or(0)))
                    .collect()
            }
        }
    }

    /// Packets the ingress drop rule counted.
    fn dropped(&self) -> u64 {
        match self.fw {
            Fw::Nft => {
                let v: serde_json::Value = serde_json::from_str(
                    &self.nft(&["-j", "list", "chain", "inet", "ben", "input"]),
                )
                .unwrap();
                v["nftables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|o| o.get("rule"))
                    .filter(|r| r["expr"][0]["match"]["right"] == "@drop4_in")
                    .filter_map(|r| r["expr"][1]["counter"]["packets"].as_u64())
                    .sum()
            }
            Fw::Ipt => self
                .exec(&["iptables", "-w", "-L", "BEN-INPUT", "-v", "-x", "-n"])
                .lines()
                .filter(|l| l.contains("ben-drop4_in"))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum(),
        }
    }

    /// Datagrams the victim's UDP port 9999 took from each of the
    /// attacker and the other host when both send `n` over `secs` seconds
    /// at once.
    fn udp_race(&self, n: u32, secs: f64) -> (u32, u32) {
        let k = self.k;
        let counter = format!(
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',9999))\ns.settimeout(0.2)\nc={{}}\nend=time.time()+{}\nprint('ready',flush=True)\nwhile time.time()<end:\n try:\n  _,a=s.recvfrom(64)\n  c[a[0]]=c.get(a[0],0)+1\n except socket.timeout:\n  pass\nprint(c.get('10.201.{k}.2',0),c.get('10.202.{k}.2',0))\n",
            secs + 1.5
        );
        let mut rx = Command::new("ip")
            .args(["netns", "exec", &self.victim, "python3", "-c", &counter])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 for the UDP counter");
        let mut out = std::io::BufReader::new(rx.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let send = |ns: &str, net: u32| {
            let code = format!(
                "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range({n}):\n s.sendto(b'x',('10.{net}.{k}.1',9999))\n time.sleep({})\n",
                secs / n as f64
            );
            Command::new("ip")
                .args(["netns", "exec", ns, "python3", "-c", &code])
                .spawn()
                .expect("python3 for a UDP sender")
        };
        let mut a = send(&self.attacker, 201);
        let mut o = send(&self.other, 202);
        a.wait().unwrap();
        o.wait().unwrap();
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        rx.wait().unwrap();
        let v: Vec<u32> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1])
    }

    /// Deletes the agent's rules behind its back.
    fn flush_rules(&self) {
        match self.fw {
            Fw::Nft => self.nft(&["flush", "chain", "inet", "ben", "rules_in"]),
            Fw::Ipt => self.exec(&["iptables", "-w", "-F", "BEN-RULES-IN"]),
        };
    }

    /// The agent's rules as the host shows them.
    fn rules(&self) -> String {
        match self.fw {
            Fw::Nft => self.nft(&["list", "chain", "inet", "ben", "rules_in"]),
            Fw::Ipt => self.exec(&["iptables", "-w", "-S", "BEN-RULES-IN"]),
        }
    }

    /// Empties the ingress drop set behind the agent's back.
    fn flush(&self) {
        match self.fw {
            Fw::Nft => self.nft(&["flush", "set", "inet", "ben", "drop4_in"]),
            Fw::Ipt => self.exec(&["ipset", "flush", "ben-drop4_in"]),
        };
    }

    /// Deletes one entry behind the agent's back.
    fn delete(&self, ip: &str) {
        match self.fw {
            Fw::Nft => self.nft(&[
                "delete",
                "element",
                "inet",
                "ben",
                "drop4_in",
                &format!("{{ {ip} }}"),
            ]),
            Fw::Ipt => self.exec(&["ipset", "del", "ben-drop4_in", ip]),
        };
    }

    /// Someone else's rules, which the agent must leave alone.
    fn foreign(&self) {
        match self.fw {
            Fw::Nft => {
                self.nft(&["add", "table", "ip", "theirs"]);
                self.nft(&["add", "chain", "ip", "theirs", "c"]);
            }
            Fw::Ipt => {
                self.exec(&["iptables", "-w", "-N", "THEIRS"]);
                self.exec(&[
                    "iptables", "-w", "-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "THEIRS",
                ]);
            }
        }
    }

    fn foreign_intact(&self) -> bool {
        match self.fw {
            Fw::Nft => self.nft(&["list", "tables"]).contains("table ip theirs"),
            Fw::Ipt => self
                .exec(&["iptables", "-w", "-S", "INPUT"])
                .contains("-j THEIRS"),
        }
    }
}

impl Drop for Net3 {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        for ns in [&self.victim, &self.attacker, &self.other] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

struct Harness {
    bus: Arc<InProcessBus>,
    world: World,
    n: Net3,
    state: std::path::PathBuf,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    counters: Arc<Counters>,
}

impl Harness {
    fn start(&mut self) {
        let mut allow = Allowlist::default();
        allow.add(
            Net::parse(&format!("10.201.{}.1", self.n.k)).unwrap(),
            "own address",
        );
        allow.add(
            Net::parse(&format!("10.202.{}.1", self.n.k)).unwrap(),
            "own address",
        );
        allow.add(
            Net::parse(&format!("10.202.{}.0/24", self.n.k)).unwrap(),
            "configured",
        );
        let cfg = agent::Config {
            verifier: self.world.verifier(),
            schedule: ben_mesh_enforce::schedule::Config {
                batch_ms: 20,
                ..Default::default()
            },
            allow,
            reconcile_ms: 300,
            state: Some(self.state.clone()),
            labels: vec!["role=victim".into()],
        };
        let mut keyring = (*self.world.keyring).clone();
        let signer = Signer::from_secret([55; 32]);
        keyring.trust("enforcer-1", Role::Enforcer, signer.public());
        let deps = Deps {
            id: "enforcer-1".into(),
            bus: self.bus.clone(),
            store: Arc::new(ben_store::FileStore::open(self.state.join("store")).unwrap()),
            clock: Arc::new(ben_time::SystemClock),
            signer: Arc::new(signer),
            keyring: Arc::new(keyring),
            drain: Default::default(),
        };
        let ns = Some(self.n.victim.clone());
        let backend: Box<dyn ben_mesh_enforce::backend::Backend> = match self.n.fw {
            Fw::Nft => Box::new(Nft { netns: ns }),
            Fw::Ipt => Box::new(ben_mesh_enforce::ipt::Iptables {
                netns: ns,
                maxelem: 100_000,
            }),
        };
        self.counters = Arc::new(Counters::default());
        self.task = Some(tokio::spawn(agent::run(
            deps,
            cfg,
            backend,
            self.counters.clone(),
        )));
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn publish(&self, bytes: Vec<u8>) {
        self.bus.publish(POLICY_SUBJECT, bytes).await.unwrap();
    }
}

async fn next_ack(acks: &mut ben_bus::Subscription, status: &str, target: &str) -> PolicyAck {
    let t = Instant::now();
    loop {
        let left = Duration::from_secs(15).saturating_sub(t.elapsed());
        let m = tokio::time::timeout(left, acks.next())
            .await
            .unwrap_or_else(|_| panic!("no {status} ack for {target}"))
            .unwrap();
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        assert_eq!(env.kind, "policy_ack");
        let a = PolicyAck::decode(&env.payload[..]).unwrap();
        if a.status == status && a.target == target {
            return a;
        }
    }
}

async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_a_committed_policy_drops_the_attacker_and_the_host_stays_that_way() {
    scenario(Fw::Nft).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_a_committed_policy_drops_the_attacker_and_the_host_stays_that_way() {
    scenario(Fw::Ipt).await
}

impl Harness {
    /// An agent on `n`'s victim, its state in a directory named `name`,
    /// started; the subscriptions to acks and dead letters.
    async fn new(n: Net3, name: &str) -> (Harness, ben_bus::Subscription, ben_bus::Subscription) {
        let bus = Arc::new(InProcessBus::default());
        let acks = bus.subscribe(ACK_SUBJECT, None).await.unwrap();
        let dlq = bus.subscribe(DLQ_SUBJECT, None).await.unwrap();
        let state =
            std::env::temp_dir().join(format!("ben-{name}-{}-{:?}", std::process::id(), n.fw));
        let _ = std::fs::remove_dir_all(&state);
        let mut h = Harness {
            bus,
            world: World::new(),
            n,
            state,
            task: None,
            counters: Arc::new(Counters::default()),
        };
        h.start();
        (h, acks, dlq)
    }
}

async fn scenario(fw: Fw) {
    let n = Net3::new(fw, 0);
    n.foreign();
    let (mut h, mut acks, mut dlq) = Harness::new(n, "enforce").await;
    let (attacker, other) = (h.n.attacker.clone(), h.n.other.clone());
    let (a_ip, o_ip) = (h.n.ip(201), h.n.ip(202));
    assert!(
        h.n.connects(&attacker, 201),
        "attacker connects before any policy"
    );

    // Spoiled policies first: each dead-lettered, none on the host.
    let now = now_ms();
    for spoil in [
        Spoil::TooFewVotes,
        Spoil::ForeignVotes,
        Spoil::OtherBlock,
        Spoil::OtherChain,
        Spoil::OtherTarget,
    ] {
        h.publish(h.world.policy(&a_ip, 3, now, now + 60_000, spoil))
            .await;
    }
    let mut bad_sig = h.world.policy(&a_ip, 3, now, now + 60_000, Spoil::None);
    let l = bad_sig.len();
    bad_sig[l - 3] ^= 1;
    h.publish(bad_sig).await;
    h.publish(
        h.world
            .policy("0.0.0.0/0", 3, now, now + 60_000, Spoil::None),
    )
    .await;
    for i in 0..7 {
        let m = tokio::time::timeout(Duration::from_secs(5), dlq.next())
            .await
            .unwrap_or_else(|_| {
                let t = h.task.take().unwrap();
                let done = t.is_finished();
                panic!(
                    "dead letter {i} of 7 (agent finished: {done}, {:?})",
                    futures_now(t)
                )
            })
            .unwrap();
        let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
        let dl = pb::DeadLetter::decode(&env.payload[..]).unwrap();
        assert_eq!(dl.subject, POLICY_SUBJECT);
        assert!(dl.reason.starts_with("policy refused: "), "{dl:?}");
    }
    assert!(h.n.held().is_empty(), "a spoiled policy reached the kernel");
    assert!(h.n.connects(&attacker, 201));

    // The committed policy, as all four validators announce it: applied
    // once, acked after it is read back, and the attacker's SYNs dropped.
    let ttl_ms = 6_000;
    let good = h.world.policy(&a_ip, 4, now, now + ttl_ms, Spoil::None);
    for _ in 0..4 {
        h.publish(good.clone()).await;
    }
    let ack = next_ack(&mut acks, "applied", &a_ip).await;
    let name = if fw == Fw::Nft {
        "nftables"
    } else {
        "iptables"
    };
    assert_eq!((ack.height, ack.backend.as_str()), (4, name));
    assert!(!h.n.connects(&attacker, 201), "the attacker still connects");
    assert!(h.n.dropped() > 0, "the drop rule counted nothing");
    assert!(h.n.connects(&other, 202), "another host is cut off too");

    // An allowlisted source: skipped with the reason, never blocked.
    h.publish(h.world.policy(&o_ip, 5, now, now + 60_000, Spoil::None))
        .await;
    let skipped = next_ack(&mut acks, "skipped", &o_ip).await;
    assert!(skipped.reason.contains("allowlisted"), "{skipped:?}");
    assert!(h.n.connects(&other, 202));

    // The set flushed behind the agent's back: restored within its period.
    let repaired = |h: &Harness| {
        h.counters
            .repaired
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = repaired(&h);
    h.n.flush();
    let n = &h.n;
    wait_for("the flushed entry restored", Duration::from_secs(3), || {
        n.held().len() == 1
    })
    .await;
    let h1 = &h;
    wait_for(
        "the reconciler's repair counted",
        Duration::from_secs(3),
        || repaired(h1) == before + 1,
    )
    .await;
    assert!(!h.n.connects(&attacker, 201));
    // One element deleted: the same.
    h.n.delete(&a_ip);
    let n = &h.n;
    wait_for("the deleted entry restored", Duration::from_secs(3), || {
        n.held().len() == 1
    })
    .await;
    let h2 = &h;
    wait_for("the repair counted", Duration::from_secs(3), || {
        repaired(h2) == before + 2
    })
    .await;

    // The agent restarts: the same entry, its time left not reset.
    let before = h.n.held()[0].1;
    h.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = h.n.held();
    assert_eq!(after.len(), 1);
    assert!(
        after[0].1 <= before,
        "timeout reset on restart: {before} s then {} s",
        after[0].1
    );
    assert!(!h.n.connects(&attacker, 201));

    // Its time is up: the attacker connects again, and the agent says so.
    let n = &h.n;
    let until = now + ttl_ms + 2_500;
    wait_for(
        "the entry expired",
        Duration::from_millis(until.saturating_sub(now_ms())),
        || n.held().is_empty(),
    )
    .await;
    assert!(h.n.connects(&attacker, 201), "still dropped after the TTL");
    next_ack(&mut acks, "expired", &a_ip).await;
    // The same policy replayed after its time: refused as expired, with
    // the reason, and the attacker still gets through.
    h.publish(good.clone()).await;
    let m = tokio::time::timeout(Duration::from_secs(5), dlq.next())
        .await
        .expect("the replay dead-lettered")
        .unwrap();
    let env = pb::SignedEnvelope::decode(&m.payload[..]).unwrap();
    let dl = pb::DeadLetter::decode(&env.payload[..]).unwrap();
    assert!(dl.reason.contains("expired"), "{dl:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        h.n.held().is_empty(),
        "a replayed, expired policy was applied"
    );
    assert!(h.n.connects(&attacker, 201));
    // The other table is still there.
    assert!(h.n.foreign_intact(), "the agent touched rules not its own");
    h.stop();
    let _ = std::fs::remove_dir_all(&h.state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nftables_ports_rate_limits_and_scopes_are_enforced_as_requested() {
    rules_scenario(Fw::Nft).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_ports_rate_limits_and_scopes_are_enforced_as_requested() {
    rules_scenario(Fw::Ipt).await
}

/// Policies an AI service requested (DESIGN: `ai.policy.v1`), certified
/// like any other: a port drop cuts the attacker off one service and not
/// the other; a rate limit lets a trickle of its datagrams through while
/// the other host's all arrive; a policy scoped to another host is
/// skipped; a deleted rule comes back; a restart rebuilds the rules; and
/// at its time the port opens again.
async fn rules_scenario(fw: Fw) {
    let (mut h, mut acks, _dlq) = Harness::new(Net3::new(fw, 1), "enforce-rules").await;
    let (attacker, other) = (h.n.attacker.clone(), h.n.other.clone());
    let a_ip = h.n.ip(201);
    assert!(h.n.connects_to(&attacker, 201, 8080));
    let (a0, o0) = h.n.udp_race(200, 1.0);
    assert!(
        a0 >= 190 && o0 >= 190,
        "before any policy: {a0} and {o0} of 200"
    );

    let now = now_ms();
    // Port 8080/tcp dropped from the attacker, for 8 s.
    let mut port = h.world.request("r-port", &a_ip, "an-port", 8_000);
    port.action = "drop".into();
    port.rate = 0;
    port.protocol = "tcp".into();
    port.ports = "8080".into();
    h.publish(h.world.requested(&port, &a_ip, 10, now, |_| {}))
        .await;
    // UDP to 9999 from the attacker limited to 20 a second.
    let mut rl = h.world.request("r-rate", &a_ip, "an-rate", 60_000);
    rl.rate = 20;
    rl.protocol = "udp".into();
    rl.ports = "9999".into();
    h.publish(h.world.requested(&rl, &a_ip, 11, now, |_| {}))
        .await;
    let ack = next_ack(&mut acks, "applied", &a_ip).await;
    assert!(ack.reason.starts_with("rule "), "{ack:?}");
    next_ack(&mut acks, "applied", &a_ip).await;
    assert!(
        !h.n.connects_to(&attacker, 201, 8080),
        "the attacker still reaches the dropped port"
    );
    assert!(
        h.n.connects_to(&attacker, 201, 8081),
        "the attacker lost a port no policy names"
    );
    let (a1, o1) = h.n.udp_race(200, 1.0);
    eprintln!("rate-limited: attacker {a1} of 200, other {o1} of 200 (before: {a0}, {o0})");
    assert!(
        (5..=80).contains(&a1),
        "rate-limited to 20/s (burst 20), the attacker got {a1} of 200 through in 1 s"
    );
    assert!(o1 >= 190, "the other host lost datagrams: {o1} of 200");

    // Scoped by a label this agent carries: its to enforce.
    let mut labelled = h.world.request("r-label", &a_ip, "an-label", 60_000);
    labelled.action = "reject".into();
    labelled.rate = 0;
    labelled.protocol = "tcp".into();
    labelled.ports = "9000".into();
    labelled.scope = vec!["role=victim".into(), "web-9".into()];
    h.publish(h.world.requested(&labelled, &a_ip, 13, now, |_| {}))
        .await;
    let ack = next_ack(&mut acks, "applied", &a_ip).await;
    assert!(ack.reason.contains("reject_in_tcp_9000"), "{ack:?}");
    // Scoped to another host: skipped, saying why.
    let mut scoped = h.world.request("r-scope", &h.n.ip(202), "an-scope", 60_000);
    scoped.scope = vec!["enforcer-9".into()];
    h.publish(h.world.requested(&scoped, &h.n.ip(202), 12, now, |_| {}))
        .await;
    let skipped = next_ack(&mut acks, "skipped", &h.n.ip(202)).await;
    assert!(skipped.reason.contains("scope"), "{skipped:?}");

    // The rules deleted behind the agent's back: back within its period.
    h.n.flush_rules();
    let n = &h.n;
    wait_for("the deleted rules restored", Duration::from_secs(3), || {
        n.rules().matches("ben|").count() == 3
    })
    .await;
    assert!(!h.n.connects_to(&attacker, 201, 8080));

    // Restarted: the same rules.
    h.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.start();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.n.rules().matches("ben|").count(), 3, "{}", h.n.rules());
    assert!(!h.n.connects_to(&attacker, 201, 8080));

    // The port policy's time is up: the port opens, the rate limit stays.
    let n = &h.n;
    let until = now + 8_000 + 2_500;
    wait_for(
        "the port opens at the policy's time",
        Duration::from_millis(until.saturating_sub(now_ms())),
        || n.connects_to(&attacker, 201, 8080),
    )
    .await;
    next_ack(&mut acks, "expired", &a_ip).await;
    let n = &h.n;
    wait_for("the expired rule removed", Duration::from_secs(3), || {
        n.rules().matches("ben|").count() == 2
    })
    .await;
    assert!(h.n.connects_to(&other, 202, 8080));
    h.stop();
    let _ = std::fs::remove_dir_all(&h.state);
}

fn futures_now(t: tokio::task::JoinHandle<Result<(), String>>) -> String {
    if !t.is_finished() {
        return "running".into();
    }
    let rt = tokio::runtime::Handle::current();
    format!("{:?}", tokio::task::block_in_place(|| rt.block_on(t)))
}
