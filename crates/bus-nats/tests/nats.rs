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
