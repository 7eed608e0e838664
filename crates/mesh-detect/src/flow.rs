//! Flow records: the detector's input, read from the sensor's CSV or JSONL.
//!
//! A record is a bidirectional flow: its endpoints (initiator = source), the
//! start time, and a vector of numeric features (the CICFlowMeter-style
//! set the sensor emits). Columns are matched by **normalised name**
//! (lower case, every run of non-alphanumerics → `_`), so `Flow Duration`,
//! `flow_duration` and `Flow-Duration` are one feature. Endpoint columns
//! are recognised by their usual names (`src_ip`/`source_ip`, `dst_port`,
//! `protocol`, `timestamp`, …); every other column is a feature. A `label`
//! column, if present, is kept for evaluation and never used for detection.

use crate::error::DetectError;
use std::net::IpAddr;

/// Lower-cases and turns every run of non-alphanumeric characters into one
/// `_`, trimming underscores at both ends: `"Fwd Pkt Len/s"` → `fwd_pkt_len_s`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending = false;
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() {
            if pending && !out.is_empty() {
                out.push('_');
            }
            pending = false;
            out.push(ch.to_ascii_lowercase());
        } else {
            pending = true;
        }
    }
    out
}

/// Source and target of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// Initiator address.
    pub src_ip: IpAddr,
    /// Initiator port (0 for ICMP).
    pub src_port: u16,
    /// Responder address.
    pub dst_ip: IpAddr,
    /// Responder port (0 for ICMP).
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub protocol: u8,
}

/// One flow record.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRecord {
    /// The sensor's flow id, or `line:N` when it has none.
    pub id: String,
    /// Endpoints.
    pub endpoints: Endpoints,
    /// Start time, microseconds since the Unix epoch.
    pub start_us: i64,
    /// Feature values, in [`FlowTable::feature_names`] order (NaN = missing).
    pub features: Vec<f64>,
    /// Ground-truth label, if the input carried one (evaluation only).
    pub label: Option<String>,
}

/// A batch of flow records sharing one feature layout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowTable {
    /// Normalised feature names.
    pub feature_names: Vec<String>,
    /// The records.
    pub flows: Vec<FlowRecord>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Id,
    FlowId,
    SrcIp,
    SrcPort,
    DstIp,
    DstPort,
    Protocol,
    Time,
    Label,
    Ignore,
    Feature(usize),
}

fn classify(name: &str) -> Option<Column> {
    Some(match name {
        "id" => Column::Id,
        "flow_id" => Column::FlowId,
        "src_ip" | "source_ip" | "saddr" | "src_addr" | "src" => Column::SrcIp,
        "src_port" | "source_port" | "sport" => Column::SrcPort,
        "dst_ip" | "destination_ip" | "daddr" | "dst_addr" | "dst" => Column::DstIp,
        "dst_port" | "destination_port" | "dport" => Column::DstPort,
        "protocol" | "proto" | "ip_proto" => Column::Protocol,
        "timestamp" | "ts" | "start" | "start_time" | "first_seen" | "start_us"
        | "timestamp_us" | "start_ts" => Column::Time,
        "label" | "class" => Column::Label,
        "end_time" | "last_seen" | "end_us" | "end_ts" | "direction" | "flow_key" | "schema"
        | "end_reason" | "start_ns" | "end_ns" => Column::Ignore,
        _ => return None,
    })
}

fn flow_err(line: usize, message: String) -> DetectError {
    DetectError::Flow { line, message }
}

fn parse_protocol(v: &str, line: usize) -> Result<u8, DetectError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" | "ipv6-icmp" => Ok(58),
        other => other
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=255.0).contains(p))
            .map(|p| p as u8)
            .ok_or_else(|| flow_err(line, format!("protocol {v:?} is not a number or name"))),
    }
}

fn parse_port(v: &str, line: usize) -> Result<u16, DetectError> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=65535.0).contains(p))
        .map(|p| p as u16)
        .ok_or_else(|| flow_err(line, format!("port {v:?} is not 0..=65535")))
}

fn parse_ip(v: &str, line: usize) -> Result<IpAddr, DetectError> {
    v.trim()
        .parse()
        .map_err(|_| flow_err(line, format!("{v:?} is not an IP address")))
}

/// Parses a start time: a number (epoch seconds; milliseconds above 1e11,
/// microseconds above 1e14, nanoseconds above 1e17) or an RFC 3339 string.
pub fn parse_time_us(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<f64>() {
        if !n.is_finite() {
            return None;
        }
        let a = n.abs();
        let us = if a >= 1e17 {
            n / 1e3
        } else if a >= 1e14 {
            n
        } else if a >= 1e11 {
            n * 1e3
        } else {
            n * 1e6
        };
        return Some(us.round() as i64);
    }
    parse_rfc3339_us(v)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]` (no offset: UTC) → microseconds
/// since the epoch, the fraction past microseconds dropped.
fn parse_rfc3339_us(s: &str) -> Option<i64> {
    ben_time::parse_rfc3339_utc_default(s).map(|ns| ns.div_euclid(1_000))
}

fn parse_value(v: &str, line: usize, name: &str) -> Result<f64, DetectError> {
    let t = v.trim();
    if t.is_empty() {
        return Ok(f64::NAN);
    }
    t.parse::<f64>()
        .map_err(|_| flow_err(line, format!("feature `{name}`: {v:?} is not a number")))
}

struct RowBuilder {
    id: Option<String>,
    flow_id: Option<String>,
    src_ip: Option<IpAddr>,
    src_port: u16,
    dst_ip: Option<IpAddr>,
    dst_port: u16,
    protocol: u8,
    time: Option<i64>,
    label: Option<String>,
}

impl RowBuilder {
    fn new() -> Self {
        Self {
            id: None,
            flow_id: None,
            src_ip: None,
            src_port: 0,
            dst_ip: None,
            dst_port: 0,
            protocol: 0,
            time: None,
            label: None,
        }
    }

    fn set(&mut self, col: Column, v: &str, line: usize) -> Result<(), DetectError> {
        match col {
            Column::Id => self.id = Some(v.trim().to_owned()),
            Column::FlowId => self.flow_id = Some(v.trim().to_owned()),
            Column::SrcIp => self.src_ip = Some(parse_ip(v, line)?),
            Column::SrcPort => self.src_port = parse_port(v, line)?,
            Column::DstIp => self.dst_ip = Some(parse_ip(v, line)?),
            Column::DstPort => self.dst_port = parse_port(v, line)?,
            Column::Protocol => self.protocol = parse_protocol(v, line)?,
            Column::Time => {
                self.time = Some(
                    parse_time_us(v)
                        .ok_or_else(|| flow_err(line, format!("timestamp {v:?} not understood")))?,
                )
            }
            Column::Label => {
                let t = v.trim();
                if !t.is_empty() {
                    self.label = Some(t.to_owned());
                }
            }
            Column::Ignore | Column::Feature(_) => {}
        }
        Ok(())
    }

    fn finish(self, line: usize, features: Vec<f64>) -> Result<FlowRecord, DetectError> {
        let src_ip = self
            .src_ip
            .ok_or_else(|| flow_err(line, "no source IP column".into()))?;
        let dst_ip = self
            .dst_ip
            .ok_or_else(|| flow_err(line, "no destination IP column".into()))?;
        let start_us = self
            .time
            .ok_or_else(|| flow_err(line, "no timestamp column".into()))?;
        Ok(FlowRecord {
            id: self
                .id
                .or(self.flow_id)
                .unwrap_or_else(|| format!("line:{line}")),
            endpoints: Endpoints {
                src_ip,
                src_port: self.src_port,
                dst_ip,
                dst_port: self.dst_port,
                protocol: self.protocol,
            },
            start_us,
            features,
            label: self.label,
        })
    }
}

fn csv_row(
    columns: &[Column],
    feature_names: &[String],
    cells: &csv::StringRecord,
    line_no: usize,
) -> Result<FlowRecord, DetectError> {
    if cells.len() != columns.len() {
        return Err(flow_err(
            line_no,
            format!("{} cells, the header has {}", cells.len(), columns.len()),
        ));
    }
    let mut row = RowBuilder::new();
    let mut features = vec![f64::NAN; feature_names.len()];
    for (col, cell) in columns.iter().zip(cells) {
        match *col {
            Column::Feature(i) => features[i] = parse_value(cell, line_no, &feature_names[i])?,
            c => row.set(c, cell, line_no)?,
        }
    }
    row.finish(line_no, features)
}

/// Where a CSV record starts (1-based line).
fn csv_line(cells: &csv::StringRecord) -> usize {
    cells
        .position()
        .and_then(|p| usize::try_from(p.line()).ok())
        .unwrap_or(0)
}

/// A line of nothing but white space (the reader already skips empty ones).
fn csv_blank(cells: &csv::StringRecord) -> bool {
    cells.len() == 1 && cells[0].trim().is_empty()
}

fn jsonl_row(
    table: &mut FlowTable,
    index: &mut std::collections::HashMap<String, usize>,
    line: &str,
    line_no: usize,
) -> Result<FlowRecord, DetectError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| flow_err(line_no, format!("not JSON: {e}")))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(flow_err(line_no, "not a JSON object".into()));
    };
    let mut flat = Vec::new();
    flatten(&obj, &mut flat, 0);
    let mut row = RowBuilder::new();
    let mut features = vec![f64::NAN; table.feature_names.len()];
    for (key, v) in flat {
        let name = normalize_name(&key);
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            serde_json::Value::Bool(b) => u8::from(*b).to_string(),
            other => other.to_string(),
        };
        match classify(&name) {
            Some(c) => row.set(c, &text, line_no)?,
            None => {
                let i = match index.get(&name) {
                    Some(&i) => i,
                    None => {
                        let i = table.feature_names.len();
                        table.feature_names.push(name.clone());
                        index.insert(name.clone(), i);
                        for f in &mut table.flows {
                            f.features.push(f64::NAN);
                        }
                        features.push(f64::NAN);
                        i
                    }
                };
                features[i] = parse_value(&text, line_no, &name)?;
            }
        }
    }
    row.finish(line_no, features)
}

impl FlowTable {
    /// Reads CSV with a header row; the first bad row is an error.
    pub fn from_csv(text: &str) -> Result<Self, DetectError> {
        let (table, mut errors) = Self::csv(text, false);
        match errors.pop() {
            Some(e) => Err(e),
            None => Ok(table),
        }
    }

    fn csv(text: &str, lenient: bool) -> (Self, Vec<DetectError>) {
        // RFC 4180: quotes, doubled quotes, CRLF, quoted newlines; rows of
        // another length than the header are this module's error, with the
        // line, so the reader is flexible about them.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        // One record reused for every row: no allocation per row for the
        // cells themselves.
        let mut cells = csv::StringRecord::new();
        let mut errors = Vec::new();
        let mut next = |cells: &mut csv::StringRecord, errors: &mut Vec<DetectError>| loop {
            match reader.read_record(cells) {
                Ok(true) if csv_blank(cells) => continue,
                Ok(true) => return true,
                Ok(false) => return false,
                Err(e) => {
                    let line = e
                        .position()
                        .and_then(|p| usize::try_from(p.line()).ok())
                        .unwrap_or(0);
                    errors.push(flow_err(line, format!("not CSV: {e}")));
                    return false;
                }
            }
        };
        if !next(&mut cells, &mut errors) {
            return (Self::default(), errors);
        }
        let mut feature_names = Vec::new();
        let columns: Vec<Column> = cells
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = if i == 0 {
                    h.trim_start_matches('\u{feff}')
                } else {
                    h
                };
                let n = normalize_name(h);
                classify(&n).unwrap_or_else(|| {
                    feature_names.push(n);
                    Column::Feature(feature_names.len() - 1)
                })
            })
            .collect();
        let mut flows = Vec::new();
        while next(&mut cells, &mut errors) {
            match csv_row(&columns, &feature_names, &cells, csv_line(&cells)) {
                Ok(f) => flows.push(f),
                Err(e) => {
                    errors.push(e);
                    if !lenient {
                        break;
                    }
                }
            }
        }
        let table = Self {
            feature_names,
            flows,
        };
        (table, errors)
    }

    /// Reads JSON lines: one object per line, flat or with nested objects
    /// (nested keys are taken without their parent's prefix); the first bad
    /// line is an error.
    pub fn from_jsonl(text: &str) -> Result<Self, DetectError> {
        let (table, mut errors) = Self::jsonl(text, false);
        match errors.pop() {
            Some(e) => Err(e),
            None => Ok(table),
        }
    }

    fn jsonl(text: &str, lenient: bool) -> (Self, Vec<DetectError>) {
        let mut table = Self::default();
        let mut index = std::collections::HashMap::new();
        let mut errors = Vec::new();
        for (no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match jsonl_row(&mut table, &mut index, line, no + 1) {
                Ok(f) => table.flows.push(f),
                Err(e) => {
                    errors.push(e);
                    if !lenient {
                        break;
                    }
                }
            }
        }
        (table, errors)
    }

    /// Reads CSV or JSONL, whichever the text is (JSONL starts with `{`);
    /// the first bad record is an error.
    pub fn parse(text: &str) -> Result<Self, DetectError> {
        if text.trim_start().starts_with('{') {
            Self::from_jsonl(text)
        } else {
            Self::from_csv(text)
        }
    }

    /// Like [`FlowTable::parse`], but a bad record is skipped and returned
    /// as an error beside the table, so one damaged line costs only itself
    /// (DESIGN §4 invariant 11).
    pub fn parse_lenient(text: &str) -> (Self, Vec<DetectError>) {
        if text.trim_start().starts_with('{') {
            Self::jsonl(text, true)
        } else {
            Self::csv(text, true)
        }
    }

    /// Index of a feature by any of its names (normalised before lookup).
    pub fn feature_index(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|n| {
            let n = normalize_name(n);
            self.feature_names.iter().position(|f| *f == n)
        })
    }

    /// Sorts flows by start time (stable, so ties keep input order).
    pub fn sort_by_time(&mut self) {
        self.flows.sort_by_key(|f| f.start_us);
    }
}

fn flatten<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, &'a serde_json::Value)>,
    depth: usize,
) {
    for (k, v) in obj {
        match v {
            serde_json::Value::Object(inner) if depth < 4 => flatten(inner, out, depth + 1),
            _ => out.push((k.clone(), v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalize_name("Flow Bytes/s"), "flow_bytes_s");
        assert_eq!(normalize_name(" Total Fwd Packets"), "total_fwd_packets");
        assert_eq!(normalize_name("fwd_pkt_len_max"), "fwd_pkt_len_max");
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time_us("1.5"), Some(1_500_000));
        assert_eq!(parse_time_us("1700000000123"), Some(1_700_000_000_123_000));
        assert_eq!(
            parse_time_us("2023-11-14T22:13:20.25Z"),
            Some(1_700_000_000_250_000)
        );
        assert_eq!(
            parse_time_us("2023-11-15T00:13:20+02:00"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_time_us("yesterday"), None);
        assert_eq!(parse_time_us("2023-13-01T00:00:00Z"), None);
        assert_eq!(parse_time_us("2023-02-31T00:00:00Z"), None);
        assert_eq!(
            parse_time_us("2023-11-14 22:13:20"),
            Some(1_700_000_000_000_000)
        );
    }

    #[test]
    fn csv_reads_keys_and_features() {
        let t = FlowTable::from_csv(
            "Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Flow Bytes/s,Label\n\
             f1,10.0.0.1,4000,10.0.0.2,80,6,100.0,12,Infinity,benign\n\
             f2,10.0.0.3,4001,10.0.0.2,53,UDP,101,,3.5,\n",
        )
        .unwrap();
        assert_eq!(t.feature_names, vec!["flow_duration", "flow_bytes_s"]);
        assert_eq!(t.flows.len(), 2);
        assert_eq!(t.flows[0].endpoints.dst_port, 80);
        assert_eq!(t.flows[0].features[1], f64::INFINITY);
        assert_eq!(t.flows[0].label.as_deref(), Some("benign"));
        assert!(t.flows[1].features[0].is_nan());
        assert_eq!(t.flows[1].endpoints.protocol, 17);
        assert_eq!(t.flows[1].label, None);
    }

    #[test]
    fn csv_quotes_crlf_blank_lines_and_bom() {
        let t = FlowTable::from_csv(
            "\u{feff}Flow ID,src_ip,dst_ip,ts,x\r\n\
             \"a,\"\"1\"\"\",10.0.0.1,10.0.0.2,1,3\r\n\
             \x20\x20\r\n\
             \n\
             b,10.0.0.1,10.0.0.2,2,\"4\"\r\n",
        )
        .unwrap();
        assert_eq!(t.feature_names, vec!["x"]);
        assert_eq!(t.flows.len(), 2);
        assert_eq!(t.flows[0].id, "a,\"1\"");
        assert_eq!(t.flows[1].features, vec![4.0]);
        // Lines are counted over blank lines, as the file has them.
        let e = FlowTable::from_csv("src_ip,dst_ip,ts,x\n\n  \n10.0.0.1,10.0.0.2,1,oops\n")
            .unwrap_err();
        assert!(e.to_string().contains("line 4"), "{e}");
    }

    #[test]
    fn jsonl_reads_nested_objects() {
        let t = FlowTable::from_jsonl(
            r#"{"id":"a","src_ip":"10.0.0.1","dst_ip":"10.0.0.2","src_port":1,"dst_port":22,"protocol":6,"ts":5,"features":{"flow_duration":3}}
{"id":"b","src_ip":"10.0.0.1","dst_ip":"10.0.0.2","src_port":2,"dst_port":22,"protocol":6,"ts":6,"features":{"flow_duration":4,"syn_flag_count":1}}"#,
        )
        .unwrap();
        assert_eq!(t.feature_names, vec!["flow_duration", "syn_flag_count"]);
        assert!(t.flows[0].features[1].is_nan());
        assert_eq!(t.flows[1].features, vec![4.0, 1.0]);
    }

    #[test]
    fn sensor_jsonl_reads() {
        // The shape `ben flows --format jsonl` writes.
        let t = FlowTable::from_jsonl(
            r#"{"schema":"cic78/1","id":7,"flow_id":"10.0.0.1-10.0.0.2-1-80-6","src_ip":"10.0.0.1","src_port":1,"dst_ip":"10.0.0.2","dst_port":80,"protocol":6,"timestamp":1700000000.25,"start_ns":1700000000250000000,"end_ns":1700000000350000000,"end_reason":"fin","features":{"Destination Port":80,"Flow Duration":100000,"SYN Flag Count":1},"label":"BENIGN"}"#,
        )
        .unwrap();
        assert_eq!(t.feature_names, vec!["flow_duration", "syn_flag_count"]);
        let f = &t.flows[0];
        assert_eq!(f.id, "7");
        assert_eq!(f.start_us, 1_700_000_000_250_000);
        assert_eq!(f.endpoints.dst_port, 80);
        assert_eq!(f.label.as_deref(), Some("BENIGN"));
    }

    #[test]
    fn lenient_parsing_skips_only_bad_records() {
        let (t, errors) = FlowTable::parse_lenient(
            "src_ip,dst_ip,ts,x\n10.0.0.1,10.0.0.2,1,3\nnope,10.0.0.2,1,3\n10.0.0.1,10.0.0.2,1\n10.0.0.3,10.0.0.2,2,4\n",
        );
        assert_eq!(t.flows.len(), 2);
        assert_eq!(t.flows[1].features, vec![4.0]);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].to_string().contains("line 3"), "{}", errors[0]);
        let (t, errors) = FlowTable::parse_lenient(
            "{\"src_ip\":\"10.0.0.1\",\"dst_ip\":\"10.0.0.2\",\"ts\":1}\n{oops\n[1]\n",
        );
        assert_eq!((t.flows.len(), errors.len()), (1, 2));
    }

    #[test]
    fn bad_rows_are_errors_with_lines() {
        let e = FlowTable::from_csv("src_ip,dst_ip,ts,x\n10.0.0.1,10.0.0.2,1,oops\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(FlowTable::from_csv("src_ip,dst_ip,ts\nnope,10.0.0.2,1\n").is_err());
        assert!(FlowTable::from_csv("src_ip,dst_ip,ts\n10.0.0.1,10.0.0.2\n").is_err());
        assert!(FlowTable::from_jsonl("[1,2]\n").is_err());
    }
}
