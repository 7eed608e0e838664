//! The CyberMesh topics on a real Kafka-protocol broker (tansu 0.6.0,
//! started by each test on a port of its own): keys and order, large
//! messages, refusals said, a restarted member resuming from what it
//! handled, a broker killed mid-stream losing nothing the producer was told
//! is stored, a publish failing visibly while the broker is away, and a
//! killed group member's partitions taken over by another.

use ben_bus::{Bus, BusError, InProcessBus, Message, Subscription};
use ben_bus_kafka::testing::Broker;
use ben_bus_kafka::{Config, KafkaBus, Split};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ANOMALIES: &str = "ai.anomalies.v1";

fn cfg(b: &Broker, prefix: &str, member: Option<&str>) -> Config {
    Config {
        brokers: b.addr(),
        topic_prefix: format!("{prefix}."),
        member: member.map(str::to_string),
        session_timeout: Duration::from_secs(6),
        ..Config::default()
    }
}

/// A topic prefix no other run uses.
fn prefix(name: &str) -> String {
    format!(
        "t{}x{}{name}",
        std::process::id(),
        ben_time_ns() % 1_000_000_000
    )
}

fn ben_time_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn next(sub: &mut Subscription, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, sub.next())
        .await
        .ok()
        .flatten()
}

/// `key:seq` messages.
fn body(key: &str, seq: usize) -> Vec<u8> {
    format!("{key}:{seq}").into_bytes()
}

fn parse(m: &Message) -> (String, usize) {
    let s = String::from_utf8_lossy(&m.payload).to_string();
    let (k, n) = s.split_once(':').expect("key:seq");
    (k.to_string(), n.parse().expect("seq"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_messages_keep_their_order_large_ones_pass_and_refusals_are_said() {
    let broker = Broker::in_memory();
    let p = prefix("order");
    let bus = KafkaBus::connect(cfg(&broker, &p, None)).await.unwrap();
    // Connecting again finds the topics there: no error.
    let again = KafkaBus::connect(cfg(&broker, &p, None)).await.unwrap();
    // Topics that exist with a smaller message limit than this client's
    // (made by a client that sends only 4 KB): refused at start, naming
    // the topic, both sizes and what to change.
    let small = prefix("small");
    KafkaBus::connect(Config {
        max_message_bytes: 4096,
        ..cfg(&broker, &small, None)
    })
    .await
    .unwrap();
    let e = KafkaBus::connect(cfg(&broker, &small, None))
        .await
        .err()
        .expect("an existing topic with a 4 KB limit is refused");
    assert!(
        e.contains("max.message.bytes = 4096")
            && e.contains("1048576")
            && e.contains(&format!("{small}.ai."))
            && e.contains("raise"),
        "{e}"
    );
    let mut sub = bus.subscribe(ANOMALIES, None).await.unwrap();
    let keys: Vec<String> = (0..10).map(|k| format!("10.0.0.{k}")).collect();
    for seq in 0..30 {
        for k in &keys {
            let r = again
                .publish_keyed(ANOMALIES, k.as_bytes(), body(k, seq))
                .await
                .unwrap();
            assert_eq!(r.delivered, 1);
        }
    }
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let m = next(&mut sub, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("not all 300 arrived: {last:?}\n{}", broker.log()));
        assert_eq!(m.subject, ANOMALIES);
        let (k, seq) = parse(&m);
        if let Some(prev) = last.insert(k.clone(), seq) {
            assert_eq!(seq, prev + 1, "{k}: {seq} after {prev}");
        } else {
            assert_eq!(seq, 0, "{k} started at {seq}");
        }
    }
    assert!(last.values().all(|s| *s == 29), "{last:?}");

    // Evidence of the seed's 512 KB passes whole.
    let mut ev = bus.subscribe("ai.evidence.v1", None).await.unwrap();
    let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    bus.publish("ai.evidence.v1", big.clone()).await.unwrap();
    let m = next(&mut ev, Duration::from_secs(20))
        .await
        .expect("512 KB evidence");
    assert_eq!(m.payload, big);
    // Over the limit: an error naming the sizes, counted.
    let e = bus
        .publish("ai.evidence.v1", vec![0; (1 << 20) + 1])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BusError::NotStored { reason, .. } if reason.contains("1048577 bytes")),
        "{e}"
    );
    assert_eq!(
        bus.counters()
            .not_stored
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A subject that is not a CyberMesh topic: refused, naming the topics.
    let e = bus.publish("ben.data.spine", vec![1]).await.unwrap_err();
    assert!(e.to_string().contains("ai.anomalies.v1"), "{e}");

    // Split: the topics to Kafka, the rest to the other bus; a wildcard
    // that would take a Kafka topic from the other bus is refused.
    let local = Arc::new(InProcessBus::default());
    let split = Split::new(Arc::new(bus), local.clone());
    let mut beats = split.subscribe("ben.health.*", None).await.unwrap();
    split
        .publish("ben.health.heartbeat", vec![9])
        .await
        .unwrap();
    assert_eq!(
        next(&mut beats, Duration::from_secs(1))
            .await
            .unwrap()
            .payload,
        vec![9]
    );
    split.publish(ANOMALIES, body("x", 0)).await.unwrap();
    assert_eq!(local.unrouted(), 0, "a Kafka topic went to the other bus");
    let e = split.subscribe("ai.>", None).await.err().expect("refused");
    assert!(e.to_string().contains("carried on Kafka"), "{e}");
    assert_eq!(split.max_payload(), Some(1 << 20));
}

/// A component's subscription commits what it handled: restarted (a new
/// connection, the same member), it gets the message it was handling when
/// it stopped, everything after, and what was published while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_resumes_from_what_it_handled() {
    let broker = Broker::in_memory();
    let p = prefix("resume");
    let producer = KafkaBus::connect(cfg(&broker, &p, None)).await.unwrap();
    let first = KafkaBus::connect(cfg(&broker, &p, Some("validator-1")))
        .await
        .unwrap();
    let mut sub = first.subscribe(ANOMALIES, None).await.unwrap();
    for seq in 0..20 {
        producer
            .publish_keyed(ANOMALIES, b"k", body("k", seq))
            .await
            .unwrap();
    }
    // Ten taken: the first nine handled, the tenth in hand when it stops.
    for want in 0..10 {
        let m = next(&mut sub, Duration::from_secs(20))
            .await
            .expect("a message");
        assert_eq!(parse(&m).1, want);
    }
    drop(sub);
    drop(first);
    for seq in 20..25 {
        producer
            .publish_keyed(ANOMALIES, b"k", body("k", seq))
            .await
            .unwrap();
    }
    let second = KafkaBus::connect(cfg(&broker, &p, Some("validator-1")))
        .await
        .unwrap();
    let mut sub = second.subscribe(ANOMALIES, None).await.unwrap();
    let mut got = vec![];
    while got.len() < 16 {
        let m = next(&mut sub, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("resumed with {got:?}\n{}", broker.log()));
        got.push(parse(&m).1);
    }
    assert_eq!(got, (9..25).collect::<Vec<_>>());
    // A new member starts at the end: none of the old ones.
    let other = KafkaBus::connect(cfg(&broker, &p, Some("validator-2")))
        .await
        .unwrap();
    let mut fresh = other.subscribe(ANOMALIES, None).await.unwrap();
    producer
        .publish_keyed(ANOMALIES, b"k", body("k", 25))
        .await
        .unwrap();
    let m = next(&mut fresh, Duration::from_secs(20))
        .await
        .expect("the new one");
    assert_eq!(parse(&m).1, 25);
}

/// While the broker is away a publish fails within the delivery timeout,
/// as an error the caller sees and a count; back, publishing works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_did_not_store_is_an_error() {
    let broker = Broker::in_memory();
    let p = prefix("down");
    let bus = KafkaBus::connect(Config {
        delivery_timeout: Duration::from_secs(3),
        ..cfg(&broker, &p, None)
    })
    .await
    .unwrap();
    bus.publish(ANOMALIES, body("k", 0)).await.unwrap();
    broker.kill();
    let t = Instant::now();
    let e = bus.publish(ANOMALIES, body("k", 1)).await.unwrap_err();
    assert!(matches!(e, BusError::NotStored { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        bus.counters()
            .not_stored
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // What a process reports with its metrics, through the split bus it
    // uses (the NATS side adds none).
    let split = Split::new(Arc::new(bus), Arc::new(InProcessBus::default()));
    assert_eq!(
        split.errors(),
        ben_bus::BusErrors {
            not_stored: 1,
            ..Default::default()
        }
    );
    println!(
        "broker away: the publish failed after {:.1} s: {e}",
        t.elapsed().as_secs_f64()
    );
}

/// Publishing without pause while the broker is killed and restarted
/// (its data in a SQLite file): every message whose publish returned Ok is
/// read by the consumer, which resumes on its own; publishes that failed
/// said so; duplicates (resent after the restart) are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_loses_nothing_it_was_said_to_store() {
    let broker = Arc::new(Broker::durable());
    let p = prefix("restart");
    let producer = Arc::new(
        KafkaBus::connect(Config {
            delivery_timeout: Duration::from_secs(20),
            ..cfg(&broker, &p, None)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", broker.log())),
    );
    let consumer = KafkaBus::connect(cfg(&broker, &p, Some("agent-1")))
        .await
        .unwrap();
    let mut sub = consumer.subscribe(ANOMALIES, None).await.unwrap();
    const N: usize = 1500;
    let stored = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publishing = {
        let (producer, stored, failed) = (producer.clone(), stored.clone(), failed.clone());
        tokio::spawn(async move {
            let window = Arc::new(tokio::sync::Semaphore::new(16));
            let mut tasks = tokio::task::JoinSet::new();
            for seq in 0..N {
                let permit = window.clone().acquire_owned().await.unwrap();
                let (producer, stored, failed) = (producer.clone(), stored.clone(), failed.clone());
                tasks.spawn(async move {
                    let key = format!("10.0.{}.{}", seq % 7, seq % 5);
                    match producer
                        .publish_keyed(ANOMALIES, key.as_bytes(), body(&key, seq))
                        .await
                    {
                        Ok(_) => {
                            stored.lock().unwrap().insert(seq);
                        }
                        Err(_) => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    drop(permit);
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    let mut killed = false;
    let t = Instant::now();
    loop {
        if !killed && seen.len() >= N / 3 {
            broker.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            broker.restart();
            killed = true;
        }
        let done = publishing.is_finished();
        if done {
            let want = stored.lock().unwrap().clone();
            if want.iter().all(|s| seen.contains_key(s)) {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "stored but not read: {:?}\n{}",
            stored
                .lock()
                .unwrap()
                .iter()
                .filter(|s| !seen.contains_key(s))
                .take(20)
                .collect::<Vec<_>>(),
            broker.log()
        );
        if let Some(m) = next(&mut sub, Duration::from_millis(500)).await {
            *seen.entry(parse(&m).1).or_insert(0) += 1;
        }
    }
    assert!(killed);
    let stored = stored.lock().unwrap().len();
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stored + failed, N);
    let dupes: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "broker killed after {} of {N} read, back 2 s later: {stored} publishes stored (all read), {failed} failed visibly, {dupes} read twice",
        N / 3
    );
    drop(sub);
}

/// Not a test of its own: the group member that
/// `a_killed_group_member_hands_its_partitions_over` runs as a child
/// process (`--ignored --exact`): joins queue group `q`, handles slowly,
/// writes each message it handled to a file, until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_killed_group_member_hands_its_partitions_over"]
async fn child_group_member() {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} unset: this is the child process of a_killed_group_member_hands_its_partitions_over, not a test to run alone")
        })
    };
    let (brokers, prefix, out) = (
        var("BEN_KAFKA_CHILD_BROKERS"),
        var("BEN_KAFKA_CHILD_PREFIX"),
        var("BEN_KAFKA_CHILD_OUT"),
    );
    let bus = KafkaBus::connect(Config {
        brokers,
        topic_prefix: prefix,
        member: Some("enforcer-9".into()),
        session_timeout: Duration::from_secs(6),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut sub = bus.subscribe(ANOMALIES, Some("q")).await.unwrap();
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .unwrap();
    while let Some(m) = sub.next().await {
        writeln!(f, "{}", parse(&m).1).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two members of one queue group, one a process of its own: killed with
/// SIGKILL mid-batch, its partitions go to the other, which reads what the
/// dead one had not committed. Every message is handled at least once.
/// Twice: the dead member led the group, and it did not.
///
/// tansu 0.6.0 drops the dead member without a new generation, so the
/// survivor's rejoin gets its old assignment back and the dead member's
/// partitions stay unread: the group watch (`consume::watch`) sees them
/// stand with messages waiting and rejoins as a new member, which hands
/// every partition out again. A broker that rebalances on its own hands
/// them over before the watch would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_group_member_hands_its_partitions_over() {
    killed_group_member(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_group_leader_hands_its_partitions_over() {
    killed_group_member(true).await;
}

/// `leader`: the member killed joined first (and so leads the group).
async fn killed_group_member(leader: bool) {
    let broker = Broker::in_memory();
    let p = prefix("group");
    let c = cfg(&broker, &p, Some("enforcer-1"));
    let bus = KafkaBus::connect(c.clone()).await.unwrap();
    let out = std::env::temp_dir().join(format!(
        "ben-kafka-child-{}-{leader}.txt",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&out);
    let child_read = |out: &std::path::Path| -> BTreeSet<usize> {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_group_member", "--nocapture"])
            .env("BEN_KAFKA_CHILD_BROKERS", &c.brokers)
            .env("BEN_KAFKA_CHILD_PREFIX", &c.topic_prefix)
            .env("BEN_KAFKA_CHILD_OUT", &out)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let probe = body("probe", 0);
    let mut mine: BTreeMap<usize, usize> = BTreeMap::new();
    // The first member alone reads everything: the probe.
    let (mut child, mut sub) = if leader {
        let child = spawn();
        bus.publish(ANOMALIES, probe.clone()).await.unwrap();
        let t = Instant::now();
        while !child_read(&out).contains(&0) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the child alone did not read the probe\n{}",
                broker.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (child, bus.subscribe(ANOMALIES, Some("q")).await.unwrap())
    } else {
        let mut sub = bus.subscribe(ANOMALIES, Some("q")).await.unwrap();
        bus.publish(ANOMALIES, probe.clone()).await.unwrap();
        assert_eq!(
            next(&mut sub, Duration::from_secs(30))
                .await
                .map(|m| m.payload),
            Some(probe),
            "the first member alone reads everything"
        );
        mine.insert(0, 1);
        (spawn(), sub)
    };
    // Both in the group: probes until each has read one.
    let mut seq = 1usize;
    let t = Instant::now();
    loop {
        for _ in 0..6 {
            let k = format!("probe-{seq}");
            bus.publish_keyed(ANOMALIES, k.as_bytes(), body(&k, seq))
                .await
                .unwrap();
            seq += 1;
        }
        while let Some(m) = next(&mut sub, Duration::from_millis(300)).await {
            *mine.entry(parse(&m).1).or_insert(0) += 1;
        }
        if mine.keys().any(|k| *k > 0) && child_read(&out).iter().any(|k| *k > 0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the group did not share the partitions: this member {} messages, the child {}\n{}",
            mine.len(),
            child_read(&out).len(),
            broker.log()
        );
    }
    // The batch: the child handles slowly, and is killed in the middle.
    let first = seq;
    const BATCH: usize = 300;
    for _ in 0..BATCH {
        let k = format!("10.1.{}.{}", seq % 11, seq % 13);
        bus.publish_keyed(ANOMALIES, k.as_bytes(), body(&k, seq))
            .await
            .unwrap();
        seq += 1;
    }
    let t = Instant::now();
    while child_read(&out).iter().filter(|s| **s >= first).count() < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the child handles nothing"
        );
        while let Some(m) = next(&mut sub, Duration::from_millis(50)).await {
            *mine.entry(parse(&m).1).or_insert(0) += 1;
        }
    }
    assert_eq!(
        bus.errors().group_rejoins,
        0,
        "a group whose members read everything was rejoined"
    );
    let _ = child.kill();
    let _ = child.wait();
    let killed = Instant::now();
    let theirs = child_read(&out);
    let all: BTreeSet<usize> = (0..seq).collect();
    loop {
        let covered: BTreeSet<usize> = mine.keys().chain(theirs.iter()).copied().collect();
        if covered.is_superset(&all) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "after the kill, {} of {} handled by no one\n{}",
            all.difference(&covered).count(),
            all.len(),
            broker.log()
        );
        if let Some(m) = next(&mut sub, Duration::from_millis(200)).await {
            *mine.entry(parse(&m).1).or_insert(0) += 1;
        }
    }
    let took_over = killed.elapsed();
    let again = theirs.iter().filter(|s| mine.contains_key(s)).count();
    let rejoins = bus.errors().group_rejoins;
    println!(
        "group {} killed after handling {} of the batch: {:.1} s later the other had handled the rest ({} messages handled by both, {rejoins} rejoins over unread partitions)",
        if leader { "leader" } else { "member" },
        theirs.iter().filter(|s| **s >= first).count(),
        took_over.as_secs_f64(),
        again
    );
    let _ = std::fs::remove_file(&out);
}
