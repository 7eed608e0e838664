//! CSV and JSON Lines output of finished flows.
//!
//! CSV columns: [`ID_COLUMNS`], then the 78 [`FEATURE_NAMES`], then
//! `Label`. Numbers use Rust's shortest round-trip formatting, so a value
//! read back is bit-identical.

use crate::features::{FEATURE_NAMES, FEATURE_SCHEMA_ID, FEATURE_SCHEMA_VERSION};
use crate::flow::FlowRecord;
use std::io::{self, Write};

/// Identity columns before the features, in order. `Timestamp` is the first
/// packet's time in epoch seconds with microseconds.
pub const ID_COLUMNS: [&str; 6] = [
    "Flow ID",
    "Source IP",
    "Source Port",
    "Destination IP",
    "Protocol",
    "Timestamp",
];

/// The label column's name.
pub const LABEL_COLUMN: &str = "Label";

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, one header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// `seconds.micros` for a timestamp in ns.
pub fn epoch_seconds(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1000)
}

/// Writes the CSV header row.
pub fn write_csv_header<W: Write>(w: &mut W) -> io::Result<()> {
    for c in ID_COLUMNS {
        write!(w, "{c},")?;
    }
    for c in FEATURE_NAMES {
        write!(w, "{c},")?;
    }
    writeln!(w, "{LABEL_COLUMN}")
}

fn csv_field<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    if s.contains([',', '"', '\n', '\r']) {
        write!(w, "\"{}\"", s.replace('"', "\"\""))
    } else {
        w.write_all(s.as_bytes())
    }
}

/// Writes one flow as a CSV row.
pub fn write_csv_row<W: Write>(w: &mut W, r: &FlowRecord, label: &str) -> io::Result<()> {
    write!(
        w,
        "{},{},{},{},{},{},",
        r.flow_id(),
        r.src.to_ip(),
        r.src_port,
        r.dst.to_ip(),
        r.protocol,
        epoch_seconds(r.start_ns)
    )?;
    for v in r.features.as_array() {
        write!(w, "{v},")?;
    }
    csv_field(w, label)?;
    w.write_all(b"\n")
}

fn json_str<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    w.write_all(b"\"")?;
    for c in s.chars() {
        match c {
            '"' => w.write_all(b"\\\"")?,
            '\\' => w.write_all(b"\\\\")?,
            c if (c as u32) < 0x20 => write!(w, "\\u{:04x}", c as u32)?,
            c => write!(w, "{c}")?,
        }
    }
    w.write_all(b"\"")
}

/// Writes one flow as a JSON object on one line:
/// `{"schema":"cic78/1","id":…,"flow_id":…,"src_ip":…,"src_port":…,
/// "dst_ip":…,"dst_port":…,"protocol":…,"timestamp":…,"end_ns":…,
/// "end_reason":…,"features":{name:value,…},"label":…}`.
pub fn write_jsonl_row<W: Write>(w: &mut W, r: &FlowRecord, label: &str) -> io::Result<()> {
    write!(
        w,
        "{{\"schema\":\"{FEATURE_SCHEMA_ID}/{FEATURE_SCHEMA_VERSION}\",\"id\":{},\"flow_id\":\"{}\",\
         \"src_ip\":\"{}\",\"src_port\":{},\"dst_ip\":\"{}\",\"dst_port\":{},\"protocol\":{},\
         \"timestamp\":{},\"start_ns\":{},\"end_ns\":{},\"end_reason\":\"{}\",\"features\":{{",
        r.id,
        r.flow_id(),
        r.src.to_ip(),
        r.src_port,
        r.dst.to_ip(),
        r.dst_port,
        r.protocol,
        epoch_seconds(r.start_ns),
        r.start_ns,
        r.end_ns,
        r.end_reason.as_str()
    )?;
    for (i, (name, v)) in r.features.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write!(w, "\"{name}\":{v}")?;
    }
    w.write_all(b"},\"label\":")?;
    json_str(w, label)?;
    w.write_all(b"}\n")
}

/// One flow as a CSV row with an empty label, without its line end: what
/// sensors put on `ben.mesh.flows`.
pub fn csv_line(r: &FlowRecord) -> Vec<u8> {
    let mut line = Vec::new();
    // Writing into a Vec cannot fail; the row itself ends in "\n".
    if write_csv_row(&mut line, r, "").is_ok() && line.last() == Some(&b'\n') {
        line.pop();
    }
    line
}

/// Writes one flow in `format` (no header).
pub fn write_row<W: Write>(
    w: &mut W,
    format: Format,
    r: &FlowRecord,
    label: &str,
) -> io::Result<()> {
    match format {
        Format::Csv => write_csv_row(w, r, label),
        Format::Jsonl => write_jsonl_row(w, r, label),
    }
}
