//! Labeling flows for training and evaluation data.
//!
//! A label file is CSV with a header row. Columns are found by name (order
//! and extra columns do not matter):
//!
//! | column | aliases | meaning |
//! |---|---|---|
//! | `src_ip` | `ip`, `source_ip`, `host` | the host the rule is about (IPv4 or IPv6) |
//! | `class` | `label` | the label to give |
//! | `start` | — | optional: epoch seconds (fractions allowed), inclusive |
//! | `end` | — | optional: epoch seconds, inclusive |
//!
//! This is the format `scripts/mesh/gen-data.sh` writes
//! (`round,src_ip,class,start,end`). A flow takes the label of the first
//! rule whose host is the flow's **initiator** and whose time range holds
//! the flow's start; failing that, the first such rule whose host is the
//! flow's **responder**; failing that, the default label. Initiator rules
//! win so that an attacker's flows towards a host labeled benign still get
//! the attack label.

use crate::decode::Addr;
use crate::error::Error;
use crate::flow::FlowRecord;
use std::net::IpAddr;

/// The default label, as in CICIDS2017.
pub const DEFAULT_LABEL: &str = "BENIGN";

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    host: Addr,
    label: String,
    start_ns: u64,
    end_ns: u64,
}

/// Rules that map flows to labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Labeler {
    default: String,
    rules: Vec<Rule>,
}

impl Default for Labeler {
    fn default() -> Labeler {
        Labeler::constant(DEFAULT_LABEL)
    }
}

fn parse_epoch_ns(s: &str) -> Option<u64> {
    let s = s.trim();
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = int.parse().ok()?;
    let mut ns = 0u64;
    for (i, b) in frac.bytes().take(9).enumerate() {
        ns += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

impl Labeler {
    /// Every flow gets `label`.
    pub fn constant(label: &str) -> Labeler {
        Labeler {
            default: label.to_string(),
            rules: Vec::new(),
        }
    }

    /// Parses a label file (see the module doc); flows no rule matches get
    /// `default`.
    pub fn from_csv(text: &str, default: &str) -> Result<Labeler, Error> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((_, header)) = lines.next() else {
            return Ok(Labeler::constant(default));
        };
        let cols: Vec<String> = header
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let find = |names: &[&str]| cols.iter().position(|c| names.contains(&c.as_str()));
        let host_col = find(&["src_ip", "ip", "source_ip", "host"]).ok_or(Error::LabelFile {
            line: 1,
            reason: "header needs a host column (src_ip, ip, source_ip or host)".into(),
        })?;
        let label_col = find(&["class", "label"]).ok_or(Error::LabelFile {
            line: 1,
            reason: "header needs a label column (class or label)".into(),
        })?;
        let start_col = find(&["start"]);
        let end_col = find(&["end"]);
        let mut rules = Vec::new();
        for (line, text) in lines {
            let fields: Vec<&str> = text.split(',').map(str::trim).collect();
            let get = |col: usize| fields.get(col).copied().unwrap_or("");
            let host: IpAddr = get(host_col).parse().map_err(|_| Error::LabelFile {
                line,
                reason: format!("{:?} is not an IP address", get(host_col)),
            })?;
            let label = get(label_col);
            if label.is_empty() {
                return Err(Error::LabelFile {
                    line,
                    reason: "empty label".into(),
                });
            }
            let time = |col: Option<usize>, missing: u64| -> Result<u64, Error> {
                match col.map(get) {
                    None | Some("") => Ok(missing),
                    Some(t) => parse_epoch_ns(t).ok_or_else(|| Error::LabelFile {
                        line,
                        reason: format!("{t:?} is not epoch seconds (e.g. 1700000000.25)"),
                    }),
                }
            };
            let start_ns = time(start_col, 0)?;
            let end_ns = time(end_col, u64::MAX)?;
            if end_ns < start_ns {
                return Err(Error::LabelFile {
                    line,
                    reason: "end is before start".into(),
                });
            }
            rules.push(Rule {
                host: host.into(),
                label: label.to_string(),
                start_ns,
                end_ns,
            });
        }
        Ok(Labeler {
            default: default.to_string(),
            rules,
        })
    }

    /// The label for a flow.
    pub fn label(&self, flow: &FlowRecord) -> &str {
        let hit = |host: Addr| {
            self.rules.iter().find(|r| {
                r.host == host && r.start_ns <= flow.start_ns && flow.start_ns <= r.end_ns
            })
        };
        hit(flow.src)
            .or_else(|| hit(flow.dst))
            .map_or(self.default.as_str(), |r| r.label.as_str())
    }

    /// Number of rules loaded.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }
}
