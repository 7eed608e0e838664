//! Against the machine's real NATS (127.0.0.1:4222; `scripts/test` starts
//! it). Every run uses its own subject prefix, so runs never collide.

use ben_bus::Bus;
use ben_bus_nats::{Config, NatsBus};
use std::time::Duration;

fn prefix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bentest.{}.{t}", std::process::id())
}

async fn bus() -> NatsBus {
    NatsBus::connect(&Config::default())
        .await
        .expect("NATS on 127.0.0.1:4222 (scripts/test starts it)")
}

async fn drain(sub: &mut ben_bus::Subscription) -> usize {
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_queue_groups_wildcards_across_connections() {
    let p = prefix();
    let (a, b) = (bus().await, bus().await);
    let mut all = a.subscribe(&format!("{p}.data.>"), None).await.unwrap();
    let mut q1 = a
        .subscribe(&format!("{p}.data.spine"), Some("spines"))
        .await
        .unwrap();
    let mut q2 = b
        .subscribe(&format!("{p}.data.spine"), Some("spines"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    for i in 0..40u8 {
        b.publish(&format!("{p}.data.spine"), vec![i])
            .await
            .unwrap();
    }
    b.flush().await.unwrap();
    let (n_all, n1, n2) = (
        drain(&mut all).await,
        drain(&mut q1).await,
        drain(&mut q2).await,
    );
    assert_eq!(n_all, 40);
    assert_eq!(
        n1 + n2,
        40,
        "each message to exactly one member of the group"
    );
    assert!(n1 > 0 && n2 > 0, "the group shares the load: {n1} / {n2}");
    assert!(b.publish("bad subject", vec![]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_and_no_responders() {
    let p = prefix();
    let (svc_bus, client) = (bus().await, bus().await);
    let mut svc = svc_bus
        .subscribe(&format!("{p}.ledger.status"), None)
        .await
        .unwrap();
    svc_bus.flush().await.unwrap();
    let responder = svc_bus.clone();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            let mut out = b"re:".to_vec();
            out.extend_from_slice(&m.payload);
            responder.reply(&m, out).await.unwrap();
        }
    });
    let r = client
        .request(
            &format!("{p}.ledger.status"),
            b"hi".to_vec(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(r.payload, b"re:hi");
    let e = client
        .request(&format!("{p}.nobody"), vec![], Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ben_bus::BusError::NoResponders(_) | ben_bus::BusError::Timeout { .. }
        ),
        "{e:?}"
    );
}

/// A queue-group member that drains while traffic flows loses nothing:
/// every message reaches exactly one member, the drained one's
/// subscription ends after what it had been sent, and the rest go to the
/// other member (scaling a spine down under load hands its share over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_queue_member_hands_over_without_losing_a_message() {
    let p = prefix();
    let subject = format!("{p}.data.spine");
    let small = |_| async {
        NatsBus::connect(&Config {
            queue_len: 8,
            ..Config::default()
        })
        .await
        .expect("NATS on 127.0.0.1:4222")
    };
    let (a, b, c) = (small(0).await, small(1).await, bus().await);
    let mut qa = a.subscribe(&subject, Some("spines")).await.unwrap();
    let mut qb = b.subscribe(&subject, Some("spines")).await.unwrap();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    // Long enough (about half a second) that A's fence, 150 ms of its
    // traffic past the drain, is reached while B still receives.
    const N: u32 = 16_000;
    let publisher = {
        let subject = subject.clone();
        tokio::spawn(async move {
            for i in 0..N {
                c.publish(&subject, i.to_be_bytes().to_vec()).await.unwrap();
                if i % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            c.flush().await.unwrap();
        })
    };
    let reader_b = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), qb.next()).await {
            got.push(u32::from_be_bytes(m.payload.try_into().unwrap()));
        }
        got
    });
    // A takes part for a while, then drains with traffic still flowing
    // and its channel full.
    let mut got_a = Vec::new();
    while got_a.len() < 300 {
        let m = tokio::time::timeout(Duration::from_secs(5), qa.next())
            .await
            .expect("member A receives its share")
            .expect("subscription open");
        got_a.push(u32::from_be_bytes(m.payload.try_into().unwrap()));
    }
    qa.drain();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = qa.next().await {
            got_a.push(u32::from_be_bytes(m.payload.try_into().unwrap()));
        }
    })
    .await;
    assert!(ended.is_ok(), "the drained subscription ends");
    publisher.await.unwrap();
    let got_b = reader_b.await.unwrap();
    let mut all: Vec<u32> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "no message twice");
    assert_eq!(
        all.len() as u32,
        N,
        "every message reached a member (A {}, B {})",
        got_a.len(),
        got_b.len()
    );
    assert!(
        got_b
            .iter()
            .filter(|&&i| i > *got_a.iter().max().unwrap())
            .count()
            > 0,
        "B took over after A drained"
    );
}

/// The server's payload limit reaches the producers (through a prefix
/// too), and a message over it is refused with an error, not dropped
/// silently: validators size their blocks by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_limit_is_known_and_enforced() {
    let nats = bus().await;
    let max = nats.max_payload().expect("a NATS server names its limit");
    assert!(max >= 64 * 1024, "{max}");
    let prefixed = ben_bus::PrefixedBus::new(nats, prefix());
    assert_eq!(prefixed.max_payload(), Some(max));
    let e = prefixed.publish("big", vec![0u8; max + 1]).await;
    assert!(e.is_err(), "a message over the limit was taken: {e:?}");
    assert!(prefixed.publish("small", vec![0u8; 1024]).await.is_ok());
    let _ = prefixed.flush().await;
}
