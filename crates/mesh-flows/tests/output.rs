//! CSV / JSONL output, schema and labels.

mod common;

use ben_mesh_flows::output::{write_csv_header, write_csv_row, write_jsonl_row, ID_COLUMNS};
use ben_mesh_flows::{
    Config, Feature, FlowRecord, FlowTable, Labeler, LinkType, FEATURE_COUNT, FEATURE_NAMES,
};
use common::*;

fn flows(frames: &[(u64, Vec<u8>)]) -> Vec<FlowRecord> {
    let mut t = FlowTable::new(Config::default());
    for (ts, f) in frames {
        t.push(ts * 1000, LinkType::ETHERNET, f).unwrap();
    }
    t.finish_all();
    t.drain_finished().collect()
}

#[test]
fn schema_has_78_unique_cicids2017_columns_in_order() {
    assert_eq!(FEATURE_NAMES.len(), 78);
    assert_eq!(FEATURE_NAMES[0], "Destination Port");
    assert_eq!(FEATURE_NAMES[34], "Fwd Header Length");
    assert_eq!(FEATURE_NAMES[55], "Fwd Header Length.1");
    assert_eq!(FEATURE_NAMES[77], "Idle Min");
    let mut sorted = FEATURE_NAMES.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), FEATURE_COUNT);
    assert_eq!(
        Feature::from_name(" Flow IAT Min"),
        Some(Feature::FlowIatMin)
    );
    assert_eq!(Feature::from_name("nope"), None);
    for (i, n) in FEATURE_NAMES.iter().enumerate() {
        assert_eq!(Feature::from_name(n).map(|f| f as usize), Some(i));
    }
}

#[test]
fn csv_rows_match_the_header_and_round_trip_values() {
    let fs = flows(&[
        (T0_US, v4_udp([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, 33)),
        (
            T0_US + 333,
            v4_udp([10, 0, 0, 2], [10, 0, 0, 1], 53, 1000, 100),
        ),
    ]);
    let mut out = Vec::new();
    write_csv_header(&mut out).unwrap();
    write_csv_row(&mut out, &fs[0], "web, attack \"x\"").unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header.len(), ID_COLUMNS.len() + 78 + 1);
    assert_eq!(header[6], "Destination Port");
    assert_eq!(*header.last().unwrap(), "Label");
    assert!(lines[1].ends_with(",\"web, attack \"\"x\"\"\""));
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(row[0], "10.0.0.1-10.0.0.2-1000-53-17");
    assert_eq!(row[5], "1700000000.000000");
    for (i, v) in fs[0].features.as_array().iter().enumerate() {
        let parsed: f64 = row[6 + i].parse().unwrap();
        assert_eq!(parsed.to_bits(), v.to_bits(), "column {}", FEATURE_NAMES[i]);
    }
    assert_eq!(row[6 + Feature::FlowDuration as usize], "333");
}

#[test]
fn jsonl_rows_are_self_describing() {
    let fs = flows(&[(T0_US, v4_udp([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, 33))]);
    let mut out = Vec::new();
    write_jsonl_row(&mut out, &fs[0], "a\"b").unwrap();
    let line = String::from_utf8(out).unwrap();
    assert!(line.starts_with("{\"schema\":\"cic78/1\","), "{line}");
    assert!(line.contains("\"Total Length of Fwd Packets\":33,"));
    assert!(line.contains("\"end_reason\":\"eof\""));
    assert!(line.ends_with("\"label\":\"a\\\"b\"}\n"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["label"], "a\"b");
    assert_eq!(v["dst_port"], 53);
    assert_eq!(v["src_ip"], "10.0.0.1");
    let feats = v["features"].as_object().unwrap();
    assert_eq!(feats.len(), FEATURE_COUNT);
    for (name, value) in fs[0].features.iter() {
        assert_eq!(feats[name].as_f64(), Some(value), "{name}");
    }
}

#[test]
fn label_file_rules_prefer_the_initiator_and_respect_time() {
    let text = "round,src_ip,class,start,end\n\
                1,10.77.0.101,portscan,1700000000.5,1700000010\n\
                1,10.77.0.5,benign,1700000000,1700000100\n";
    let l = Labeler::from_csv(text, "BENIGN").unwrap();
    assert_eq!(l.rules(), 2);
    let attacker = [10, 77, 0, 101];
    let host = [10, 77, 0, 5];
    let other = [10, 77, 0, 9];
    let fs = flows(&[
        // attacker → benign host inside the window: the attack label.
        (
            T0_US + 1_000_000,
            v4_tcp(attacker, host, 1, 22, SYN, 1, 20, 0),
        ),
        // the same, before the window opens: the responder rule applies.
        (
            T0_US + 100_000,
            v4_tcp(attacker, host, 2, 22, SYN, 1, 20, 0),
        ),
        // unrelated hosts: default.
        (T0_US + 1_000_000, v4_udp(other, [10, 77, 0, 10], 3, 3, 1)),
        // after the window: benign host as initiator.
        (T0_US + 50_000_000, v4_udp(host, other, 4, 4, 1)),
    ]);
    let labels: Vec<(u16, &str)> = fs.iter().map(|f| (f.src_port, l.label(f))).collect();
    assert!(labels.contains(&(1, "portscan")), "{labels:?}");
    assert!(labels.contains(&(2, "benign")), "{labels:?}");
    assert!(labels.contains(&(3, "BENIGN")), "{labels:?}");
    assert!(labels.contains(&(4, "benign")), "{labels:?}");
}

#[test]
fn label_file_errors_name_the_line() {
    let e = Labeler::from_csv("ip,label\n10.0.0.1,x\nnot-an-ip,y\n", "B").unwrap_err();
    assert_eq!(
        e.to_string(),
        "label file line 3: \"not-an-ip\" is not an IP address"
    );
    let e = Labeler::from_csv("a,b\n1,2\n", "B").unwrap_err();
    assert!(e.to_string().contains("host column"), "{e}");
    let e = Labeler::from_csv("ip,label,start\n10.0.0.1,x,yesterday\n", "B").unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}
