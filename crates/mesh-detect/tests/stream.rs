//! Streaming detection ([`ben_mesh_detect::Stream`]) against the batch
//! pipeline on the committed test split: the same anomalies once windows
//! close, anomalies out on arrival rather than at a window's end, and live
//! arrival order (flows arrive when they end) keeping the quality targets.

mod common;

use ben_mesh_detect::quality::Confusion;
use ben_mesh_detect::{Config, FlowRecord, Stream, StreamConfig};
use std::collections::{BTreeMap, BTreeSet};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn duration_col() -> usize {
    let t = common::test_split();
    t.feature_names
        .iter()
        .position(|n| n == "flow_duration")
        .expect("flow_duration column")
}

fn end_us(f: &FlowRecord, col: usize) -> i64 {
    f.start_us + f.features[col].max(0.0) as i64
}

/// Streamed in random chunks with windows that never close before the end:
/// every anomaly batch `run` finds, and each one's final evidence equal to
/// the batch's (the close pass judges a window exactly as `run` does).
#[test]
fn closed_windows_give_the_batch_anomalies() {
    let table = common::test_split();
    let mut batch = common::detector(Config::default(), table);
    let report = batch.run(table);
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in &report.detections {
        want.insert(
            d.event.id.clone(),
            d.evidence.flows.iter().map(|f| f.id.clone()).collect(),
        );
    }
    assert!(want.len() > 10, "{} anomalies in the split", want.len());

    let mut order: Vec<&FlowRecord> = table.flows.iter().collect();
    order.sort_by_key(|f| f.start_us);
    let mut stream = Stream::new(
        common::detector(Config::default(), table),
        StreamConfig {
            lateness_secs: 1e9,
            ..StreamConfig::default()
        },
    );
    let mut rng = Rng(0x5eed);
    let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut take = |step: ben_mesh_detect::Step| {
        for d in step.detections {
            got.insert(
                d.event.id.clone(),
                d.evidence.flows.iter().map(|f| f.id.clone()).collect(),
            );
        }
        for e in step.evidence {
            got.insert(
                e.anomaly_id.clone(),
                e.flows.iter().map(|f| f.id.clone()).collect(),
            );
        }
    };
    let (mut i, mut now) = (0, 0i64);
    while i < order.len() {
        let n = 1 + (rng.next() % 400) as usize;
        let chunk = &order[i..(i + n).min(order.len())];
        now += 100_000;
        stream.push(chunk.iter().map(|f| (*f).clone()), now);
        take(stream.step(now));
        i += n;
    }
    take(stream.finish());
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "batch anomalies not streamed: {missing:?}"
    );
    for (id, flows) in &want {
        assert_eq!(&got[id], flows, "final evidence of {id}");
    }
    let extra = got.len() - want.len();
    println!(
        "{} batch anomalies all streamed; {extra} more emitted on partial windows; {:?}",
        want.len(),
        stream.counts()
    );
    assert_eq!(stream.counts().late, 0);
    assert_eq!(stream.detector().summary().flows, table.flows.len() as u64);
}

/// Live arrival order: each flow arrives when it ends, in 100 ms steps,
/// the windows close on the flow clock. A scan's or flood's anomaly comes
/// out at the step after the flows that make it, long before its window
/// ends; the split's quality targets hold per flow, judged as the stream
/// judged it last.
#[test]
fn live_order_detects_on_arrival_and_keeps_the_targets() {
    let table = common::test_split();
    let col = duration_col();
    let mut order: Vec<&FlowRecord> = table.flows.iter().collect();
    order.sort_by_key(|f| end_us(f, col));
    // Every flagged flow in the evidence, to score the stream per flow.
    let cfg = Config {
        max_evidence_flows: usize::MAX,
        ..Config::default()
    };
    let mut stream = Stream::new(common::detector(cfg, table), StreamConfig::default());
    // Caller time = flow time here (a live sensor on the same clock).
    let t0 = end_us(order[0], col);
    let mut now = t0;
    let mut i = 0;
    let mut on_arrival = 0usize;
    let mut at_close = 0usize;
    let mut flagged: BTreeMap<String, String> = BTreeMap::new();
    let mut record = |step: ben_mesh_detect::Step, now: i64| {
        for d in &step.detections {
            let e = &d.event;
            if now < e.window_end_us {
                on_arrival += 1;
            } else {
                at_close += 1;
            }
            for f in &d.evidence.flows {
                flagged.insert(f.id.clone(), e.class.clone());
            }
        }
        for e in &step.evidence {
            for f in &e.flows {
                flagged.insert(f.id.clone(), f.class.clone());
            }
        }
    };
    while i < order.len() {
        now += 100_000;
        let mut batch = Vec::new();
        while i < order.len() && end_us(order[i], col) <= now {
            batch.push(order[i].clone());
            i += 1;
        }
        stream.push(batch, now);
        let step = stream.step(now);
        record(step, now);
    }
    let step = stream.finish();
    record(step, now);
    let counts = stream.counts().clone();
    println!(
        "live order: {on_arrival} anomalies before their window ended, {at_close} at close; {counts:?}"
    );
    assert!(
        on_arrival > at_close,
        "most anomalies come out on arrival: {on_arrival} vs {at_close}"
    );
    let classes = stream.detector().classes().to_vec();
    let mut conf = Confusion::new(&classes);
    for f in &table.flows {
        let truth = classes
            .iter()
            .position(|c| Some(c.as_str()) == f.label.as_deref())
            .expect("labelled");
        let got = flagged
            .get(&f.id)
            .and_then(|c| classes.iter().position(|x| x == c))
            .unwrap_or(0);
        conf.add(truth, got);
    }
    let (f1, far) = (conf.macro_f1(), conf.false_alarm_rate());
    println!(
        "live order: macro-F1 {f1:.4}, false alarms {:.4} %",
        far * 100.0
    );
    assert!(f1 >= 0.95, "macro-F1 {f1:.4}");
    assert!(far < 0.001, "false alarms {:.4} %", far * 100.0);
    assert_eq!(stream.open_flows(), 0);
}

/// A window's flows arrive after it closed (a long flow exported at its
/// end): filed in the window their end falls in and counted, never lost.
#[test]
fn late_flows_are_counted_and_judged() {
    let table = common::test_split();
    let col = duration_col();
    let mut stream = Stream::new(
        common::detector(Config::default(), table),
        StreamConfig::default(),
    );
    let mut f = table.flows[0].clone();
    let t = f.start_us;
    f.features[col] = 0.0;
    stream.push([f.clone()], 0);
    // 60 s of flow clock later the first window is closed.
    let mut g = f.clone();
    g.id = "later".into();
    g.start_us = t + 60_000_000;
    stream.push([g], 0);
    stream.step(0);
    let mut late = f.clone();
    late.id = "late".into();
    late.start_us = t + 1;
    late.features[col] = 59_000_000.0;
    stream.push([late], 0);
    stream.step(0);
    assert_eq!(stream.counts().late, 1);
    assert_eq!(stream.detector().summary().flows, 3);
    stream.finish();
    assert_eq!(stream.open_flows(), 0);
}

/// The flow clock runs on the caller's time between arrivals: windows of
/// a capture from long ago close when the caller's time has moved on, not
/// never (no flow ever comes after the last one).
#[test]
fn windows_close_when_traffic_stops() {
    let table = common::test_split();
    let mut stream = Stream::new(
        common::detector(Config::default(), table),
        StreamConfig::default(),
    );
    stream.push(table.flows[..50].iter().cloned(), 5_000_000);
    stream.step(5_000_000);
    assert!(stream.open_flows() > 0);
    let window = Config::default().window_secs;
    let later = 5_000_000 + ((window + 2.0 + 120.0) * 1e6) as i64;
    stream.step(later);
    assert_eq!(stream.open_flows(), 0, "every window closed");
}

/// More flows than `max_open_flows`: the rest are counted as dropped.
#[test]
fn over_the_cap_is_counted() {
    let table = common::test_split();
    let mut stream = Stream::new(
        common::detector(Config::default(), table),
        StreamConfig {
            max_open_flows: 10,
            ..StreamConfig::default()
        },
    );
    stream.push(table.flows[..25].iter().cloned(), 0);
    assert_eq!(stream.open_flows(), 10);
    assert_eq!(stream.counts().dropped, 15);
}

/// A record claiming a duration of years does not move the flow clock: the
/// windows of the flows around it stay open, and a flow of the same window
/// coming after it is not late.
#[test]
fn a_flow_from_far_ahead_does_not_close_every_window() {
    let table = common::test_split();
    let col = duration_col();
    let mut stream = Stream::new(
        common::detector(Config::default(), table),
        StreamConfig::default(),
    );
    let mut first = table.flows[0].clone();
    first.features[col] = 0.0;
    let mut odd = first.clone();
    odd.id = "odd".into();
    odd.features[col] = 1e15;
    stream.push([first.clone(), odd], 0);
    stream.step(0);
    assert_eq!(stream.flow_now(0), Some(first.start_us));
    assert_eq!(stream.counts().clock_refused, 1);
    let mut same = first.clone();
    same.id = "same".into();
    same.start_us += 1;
    stream.push([same], 0);
    stream.step(0);
    assert_eq!(stream.counts().late, 0);
    assert_eq!(stream.detector().summary().flows, 3);
}

/// The second half of a closed window, kept for the next window's
/// straddling one, is held (counted in `open_flows`) only until that next
/// window would have closed too, and `finish` lets it go.
#[test]
fn the_kept_half_window_is_let_go() {
    let table = common::test_split();
    let window_us = (Config::default().window_secs * 1e6) as i64;
    let mut f = table.flows[0].clone();
    f.features[duration_col()] = 0.0;
    let w0 = f.start_us.div_euclid(window_us) * window_us;
    f.start_us = w0 + window_us * 3 / 4; // second half of its window
    for finish in [false, true] {
        let mut stream = Stream::new(
            common::detector(Config::default(), table),
            StreamConfig::default(),
        );
        stream.push([f.clone()], 0);
        // its window closes 1.5 windows + 2 s after its start: kept
        let closed = w0 + window_us * 3 / 2 + 2_000_000 - f.start_us;
        stream.step(closed);
        assert_eq!(stream.open_flows(), 1, "kept for the next window");
        if finish {
            stream.finish();
        } else {
            stream.step(closed + window_us);
        }
        assert_eq!(stream.open_flows(), 0, "finish: {finish}");
    }
}
