//! # Playbooks: when to signal
//!
//! A playbook watches the records one schema's packs have evaluated and
//! decides when to emit a signal:
//!
//! ```text
//! playbook brute_force on http.request v2 {
//!   when count(login_failed) by client.ip within 60s >= 5
//!   signal "auth.bruteforce" severity high
//! }
//! ```
//!
//! [`Detector`] keeps, per playbook and per group key, a sliding window of
//! the aggregate's inputs. Each observed record adds its contribution,
//! drops entries older than the window, and compares the aggregate with the
//! threshold. A key that fires is quiet until one full window has passed
//! since it fired, so a sustained attack gives one signal per window, not
//! one per record.
//!
//! **Partitions.** Several detectors give the signals one would: each
//! playbook's groups are spread over a fixed number of partitions by a
//! stable hash of the playbook's name and the group key ([`partition`]),
//! every record reaches the partitions its playbooks' groups live in
//! ([`Partitions::of`]), and a detector observes, in the copy it gets from
//! partition `k`, only the playbooks whose group is in `k`
//! ([`Detector::observe_in`]). One partition is served by one detector at
//! a time, so one group's window is in one place.
//!
//! Pure core: time is the record's time (nanoseconds), passed in; nothing
//! reads a clock. Memory is bounded by [`Limits`]: past `max_keys` groups
//! the least recently seen group is evicted and counted in
//! [`Detector::evicted`], never silently.

use ben_bitspec::interp::{self, Env};
use ben_bitspec::ir::{Aggregate, Playbook, Severity};
use ben_bitspec::Value;
use std::collections::{HashMap, VecDeque};

/// Named resource limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Groups (distinct `by` keys) tracked per playbook.
    pub max_keys: usize,
    /// Entries kept per group window.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_keys: 100_000,
            max_entries: 100_000,
        }
    }
}

/// A decision to signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub playbook: String,
    pub name: String,
    pub severity: Severity,
    /// The group key values, in `by` order.
    pub key: Vec<Value>,
    /// The aggregate's value when it fired.
    pub value: f64,
    /// Time of the record that made it fire (ns).
    pub at_ns: i64,
}

#[derive(Debug, Default)]
struct Group {
    /// The key's values, for the signal.
    key: Vec<Value>,
    entries: VecDeque<(i64, Value)>,
    /// Running sum/count for count and sum.
    total: f64,
    fired_at: Option<i64>,
    last_seen: i64,
}

struct Watch {
    pb: Playbook,
    groups: HashMap<Vec<HKey>, Group>,
}

/// Key for hashing values (floats by bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HKey {
    Null,
    Bool(bool),
    Int(i64),
    Bits(u64),
    Text(String),
}

fn hkey(v: &Value) -> HKey {
    match v {
        Value::Null => HKey::Null,
        Value::Bool(b) => HKey::Bool(*b),
        Value::Int(i) | Value::Time(i) | Value::Duration(i) => HKey::Int(*i),
        Value::Float(f) => HKey::Bits(f.to_bits()),
        v => HKey::Text(v.to_text()),
    }
}

/// FNV-1a, 64 bits: stable across processes, versions and machines (the
/// spine and every detector must agree on it).
fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The partition (of `partitions`) that holds `pb`'s group for `record`:
/// a stable hash of the playbook's name and the group key's values.
pub fn partition(pb: &Playbook, record: &[Value], partitions: u32) -> u32 {
    let mut h = FNV_OFFSET;
    fnv(&mut h, pb.name.as_bytes());
    for s in &pb.by {
        fnv(&mut h, &[0xff]);
        match record.get(*s).map(hkey) {
            None | Some(HKey::Null) => fnv(&mut h, b"n"),
            Some(HKey::Bool(b)) => fnv(&mut h, if b { b"t" } else { b"f" }),
            Some(HKey::Int(i)) => {
                fnv(&mut h, b"i");
                fnv(&mut h, &i.to_le_bytes());
            }
            Some(HKey::Bits(x)) => {
                fnv(&mut h, b"x");
                fnv(&mut h, &x.to_le_bytes());
            }
            Some(HKey::Text(t)) => {
                fnv(&mut h, b"s");
                fnv(&mut h, t.as_bytes());
            }
        }
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// The partition of a record no playbook watches (spread by its id).
pub fn partition_of_id(id: &str, partitions: u32) -> u32 {
    let mut h = FNV_OFFSET;
    fnv(&mut h, id.as_bytes());
    (h % u64::from(partitions.max(1))) as u32
}

/// Where one record goes among the detector partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    /// The copy that counts (the record's books, its dead letter): the
    /// partition of the first playbook on its schema, or of its id.
    pub home: u32,
    /// Further copies, one per other partition a playbook's group of it
    /// lives in (each observed only for those playbooks).
    pub copies: Vec<u32>,
}

impl Partitions {
    /// The partitions of a record of `schema` (values as the detector
    /// reads them: [`record_from_json`]).
    pub fn of(
        playbooks: &[Playbook],
        schema: usize,
        record: &[Value],
        id: &str,
        partitions: u32,
    ) -> Partitions {
        let mut home = None;
        let mut copies = Vec::new();
        for pb in playbooks.iter().filter(|p| p.schema == schema) {
            let k = partition(pb, record, partitions);
            match home {
                None => home = Some(k),
                Some(h) if h == k || copies.contains(&k) => {}
                Some(_) => copies.push(k),
            }
        }
        Partitions {
            home: home.unwrap_or_else(|| partition_of_id(id, partitions)),
            copies,
        }
    }
}

/// A record's fields as detectors see them: the redacted JSON body read
/// without type coercion (a pseudonymised IP is a string here), `null`
/// where a field is absent.
pub fn record_from_json(schema: &ben_bitspec::ir::Schema, body: &serde_json::Value) -> Vec<Value> {
    schema
        .fields
        .iter()
        .map(|f| {
            let mut cur = Some(body);
            for seg in f.path.split('.') {
                cur = cur.and_then(|j| j.get(seg));
            }
            cur.and_then(|j| interp::json_to_value(j).ok())
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// Runs every playbook of a bundle over evaluated records.
pub struct Detector {
    watches: Vec<Watch>,
    limits: Limits,
    evicted: u64,
    dropped_entries: u64,
}

/// One evaluated record as a detector sees it.
pub struct Observed<'a> {
    pub schema: usize,
    /// Record time, nanoseconds since the epoch.
    pub at_ns: i64,
    /// Field values in schema slot order (already redacted where the pack
    /// redacts: detectors never see raw PII).
    pub record: &'a [Value],
    /// Names of the flags that are set.
    pub flags: &'a [&'a str],
}

impl Detector {
    pub fn new(playbooks: &[Playbook], limits: Limits) -> Self {
        Detector {
            watches: playbooks
                .iter()
                .map(|pb| Watch {
                    pb: pb.clone(),
                    groups: HashMap::new(),
                })
                .collect(),
            limits,
            evicted: 0,
            dropped_entries: 0,
        }
    }

    /// Groups evicted because `max_keys` was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Window entries dropped because `max_entries` was reached.
    pub fn dropped_entries(&self) -> u64 {
        self.dropped_entries
    }

    /// Tracked groups across all playbooks.
    pub fn groups(&self) -> usize {
        self.watches.iter().map(|w| w.groups.len()).sum()
    }

    /// Whether this detector runs exactly `playbooks` (same definitions,
    /// same order): then its windows carry over to a version that did not
    /// change them.
    pub fn runs(&self, playbooks: &[Playbook]) -> bool {
        self.watches.len() == playbooks.len()
            && self
                .watches
                .iter()
                .zip(playbooks)
                .all(|(w, p)| serde_json::to_string(&w.pb).ok() == serde_json::to_string(p).ok())
    }

    /// Feeds one record; returns the signals it triggers.
    pub fn observe(&mut self, ev: &Observed) -> Vec<Signal> {
        self.observe_where(ev, None)
    }

    /// Feeds the copy of a record that partition `k` (of `partitions`)
    /// got: only the playbooks whose group for it is in `k` observe it.
    pub fn observe_in(&mut self, ev: &Observed, k: u32, partitions: u32) -> Vec<Signal> {
        self.observe_where(ev, Some((k, partitions)))
    }

    fn observe_where(&mut self, ev: &Observed, only: Option<(u32, u32)>) -> Vec<Signal> {
        let mut out = Vec::new();
        for w in &mut self.watches {
            if w.pb.schema != ev.schema {
                continue;
            }
            if only.is_some_and(|(k, n)| partition(&w.pb, ev.record, n) != k) {
                continue;
            }
            let flags: Vec<bool> =
                w.pb.flag_names
                    .iter()
                    .map(|n| ev.flags.contains(&n.as_str()))
                    .collect();
            let env = Env {
                record: ev.record,
                input: None,
                flags: &flags,
                metas: &[],
            };
            // The record's contribution; None = it does not count.
            let contribution = match (&w.pb.agg, &w.pb.arg) {
                (Aggregate::Count, None) => Some(Value::Int(1)),
                (Aggregate::Count, Some(a)) => interp::eval(a, &env)
                    .ok()
                    .filter(interp::truthy)
                    .map(|_| Value::Int(1)),
                (_, Some(a)) => interp::eval(a, &env).ok().filter(|v| !v.is_null()),
                (_, None) => None,
            };
            let key: Vec<Value> =
                w.pb.by
                    .iter()
                    .map(|s| ev.record.get(*s).cloned().unwrap_or(Value::Null))
                    .collect();
            let hk: Vec<HKey> = key.iter().map(hkey).collect();
            let window = w.pb.window_ns;
            if contribution.is_none() && !w.groups.contains_key(&hk) {
                continue;
            }
            if !w.groups.contains_key(&hk) && w.groups.len() >= self.limits.max_keys {
                if let Some(oldest) = w
                    .groups
                    .iter()
                    .min_by_key(|(_, g)| g.last_seen)
                    .map(|(k, _)| k.clone())
                {
                    w.groups.remove(&oldest);
                    self.evicted += 1;
                }
            }
            let g = w.groups.entry(hk.clone()).or_insert_with(|| Group {
                key: key.clone(),
                ..Group::default()
            });
            g.last_seen = g.last_seen.max(ev.at_ns);
            if let Some(v) = contribution {
                if g.entries.len() >= self.limits.max_entries {
                    if let Some((_, old)) = g.entries.pop_front() {
                        g.total -= num(&old);
                    }
                    self.dropped_entries += 1;
                }
                g.total += num(&v);
                g.entries.push_back((ev.at_ns, v));
            }
            let horizon = ev.at_ns.saturating_sub(window);
            while g.entries.front().is_some_and(|(t, _)| *t <= horizon) {
                if let Some((_, old)) = g.entries.pop_front() {
                    g.total -= num(&old);
                }
            }
            let value = match w.pb.agg {
                Aggregate::Count | Aggregate::Sum => g.total,
                Aggregate::Distinct => {
                    let mut seen = std::collections::HashSet::new();
                    g.entries
                        .iter()
                        .filter(|(_, v)| seen.insert(hkey(v)))
                        .count() as f64
                }
                Aggregate::Min => g
                    .entries
                    .iter()
                    .map(|(_, v)| num(v))
                    .fold(f64::INFINITY, f64::min),
                Aggregate::Max => g
                    .entries
                    .iter()
                    .map(|(_, v)| num(v))
                    .fold(f64::NEG_INFINITY, f64::max),
            };
            let quiet = g
                .fired_at
                .is_some_and(|t| ev.at_ns < t.saturating_add(window));
            if !g.entries.is_empty() && !quiet && holds(w.pb.op, value, w.pb.threshold) {
                g.fired_at = Some(ev.at_ns);
                out.push(Signal {
                    playbook: w.pb.name.clone(),
                    name: w.pb.signal.clone(),
                    severity: w.pb.severity,
                    key: g.key.clone(),
                    value,
                    at_ns: ev.at_ns,
                });
            }
            // An empty, quiet-free group holds nothing worth keeping.
            if g.entries.is_empty() && !quiet {
                w.groups.remove(&hk);
            }
        }
        out
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

fn holds(op: ben_bitspec::ast::BinOp, v: f64, t: f64) -> bool {
    use ben_bitspec::ast::BinOp::*;
    match op {
        Ge => v >= t,
        Gt => v > t,
        Le => v <= t,
        Lt => v < t,
        Eq => v == t,
        Ne => v != t,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_bitspec::{compile, lock::BitTable, Source};

    const SRC: &str = r#"
schema r v1 { ip: ip  path: string  status: int  bytes: int }
pack p on r v1 { flag failed = status == 401 }
playbook brute on r v1 {
  when count(failed) by ip within 60s >= 5
  signal "auth.bruteforce" severity high
}
playbook big on r v1 {
  when sum(bytes) by ip within 10s > 1000
  signal "exfil" severity medium
}
playbook scan on r v1 {
  when distinct(path) by ip within 10s >= 3
  signal "scan" severity low
}
"#;

    const S: i64 = 1_000_000_000;

    fn setup() -> (Detector, usize) {
        let c = compile(
            &[Source::new("t.bspec", SRC)],
            &BitTable::default(),
            Default::default(),
        )
        .unwrap();
        (Detector::new(&c.program.playbooks, Limits::default()), 0)
    }

    fn rec(ip: &str, path: &str, status: i64, bytes: i64) -> Vec<Value> {
        vec![
            Value::Ip(ip.parse().unwrap()),
            Value::Str(path.into()),
            Value::Int(status),
            Value::Int(bytes),
        ]
    }

    fn feed(d: &mut Detector, t: i64, r: &[Value]) -> Vec<String> {
        let failed = matches!(r[2], Value::Int(401));
        let flags: Vec<&str> = if failed { vec!["failed"] } else { vec![] };
        d.observe(&Observed {
            schema: 0,
            at_ns: t,
            record: r,
            flags: &flags,
        })
        .into_iter()
        .map(|s| s.name)
        .collect()
    }

    /// The same records through one detector, and through one detector
    /// per partition each fed its home records and copies: the same
    /// signals, each from one partition.
    #[test]
    fn partitions_give_the_signals_of_one_detector() {
        let c = compile(
            &[Source::new("t.bspec", SRC)],
            &BitTable::default(),
            Default::default(),
        )
        .unwrap();
        let pbs = &c.program.playbooks;
        const N: u32 = 8;
        let mut one = Detector::new(pbs, Limits::default());
        let mut parts: Vec<Detector> = (0..N)
            .map(|_| Detector::new(pbs, Limits::default()))
            .collect();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        let mut copies = 0;
        for i in 0..400i64 {
            let r = rec(
                &format!("10.0.0.{}", i % 13),
                &format!("/p{}", i % 7),
                if i % 3 == 0 { 401 } else { 200 },
                i % 500,
            );
            let failed = i % 3 == 0;
            let flags: Vec<&str> = if failed { vec!["failed"] } else { vec![] };
            let ev = Observed {
                schema: 0,
                at_ns: i * S / 10,
                record: &r,
                flags: &flags,
            };
            let name = |s: Signal| {
                (
                    s.name,
                    s.key.iter().map(Value::to_text).collect::<Vec<_>>(),
                    s.at_ns,
                )
            };
            want.extend(one.observe(&ev).into_iter().map(name));
            let p = Partitions::of(pbs, 0, &r, &i.to_string(), N);
            assert!(!p.copies.contains(&p.home));
            copies += p.copies.len();
            for k in std::iter::once(p.home).chain(p.copies) {
                got.extend(
                    parts[k as usize]
                        .observe_in(&ev, k, N)
                        .into_iter()
                        .map(name),
                );
            }
        }
        assert!(copies > 0, "three playbooks: some records need copies");
        assert!(want.len() > 10, "{want:?}");
        want.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(got, want);
        // A schema no playbook watches: spread by id, no copies.
        let p = Partitions::of(pbs, 1, &[], "r-1", N);
        assert_eq!(
            p,
            Partitions {
                home: partition_of_id("r-1", N),
                copies: vec![]
            }
        );
    }

    #[test]
    fn brute_force_fires_once_per_window_per_key() {
        let (mut d, _) = setup();
        let mut fired = Vec::new();
        // 20 failures from one IP, one per second: fires at the 5th, then
        // stays quiet for 60 s.
        for i in 0..20 {
            for s in feed(&mut d, i * S, &rec("203.0.113.9", "/login", 401, 0)) {
                fired.push((i, s));
            }
        }
        assert_eq!(fired, vec![(4, "auth.bruteforce".to_string())]);
        // Another IP is counted separately.
        let mut other = 0;
        for i in 0..5 {
            other += feed(&mut d, (30 + i) * S, &rec("198.51.100.1", "/login", 401, 0)).len();
        }
        assert_eq!(other, 1);
        // After the quiet window, a continuing attack fires again.
        let mut again = 0;
        for i in 64..70 {
            again += feed(&mut d, i * S, &rec("203.0.113.9", "/login", 401, 0))
                .iter()
                .filter(|s| *s == "auth.bruteforce")
                .count();
        }
        assert_eq!(again, 1);
    }

    #[test]
    fn old_entries_leave_the_window() {
        let (mut d, _) = setup();
        // Four failures, a long pause, four more: never five within 60 s.
        let mut n = 0;
        for i in 0..4 {
            n += feed(&mut d, i * S, &rec("203.0.113.9", "/login", 401, 0)).len();
        }
        for i in 0..4 {
            n += feed(&mut d, (100 + i) * S, &rec("203.0.113.9", "/login", 401, 0)).len();
        }
        assert_eq!(n, 0);
    }

    #[test]
    fn sum_and_distinct() {
        let (mut d, _) = setup();
        assert!(feed(&mut d, 0, &rec("10.0.0.1", "/a", 200, 600)).is_empty());
        assert_eq!(
            feed(&mut d, S, &rec("10.0.0.1", "/a", 200, 600)),
            vec!["exfil"]
        );
        assert!(feed(&mut d, 2 * S, &rec("10.0.0.2", "/a", 200, 1)).is_empty());
        assert!(feed(&mut d, 3 * S, &rec("10.0.0.2", "/b", 200, 1)).is_empty());
        assert_eq!(
            feed(&mut d, 4 * S, &rec("10.0.0.2", "/c", 200, 1)),
            vec!["scan"]
        );
    }

    #[test]
    fn groups_are_bounded_and_evictions_counted() {
        let c = compile(
            &[Source::new("t.bspec", SRC)],
            &BitTable::default(),
            Default::default(),
        )
        .unwrap();
        let mut d = Detector::new(
            &c.program.playbooks,
            Limits {
                max_keys: 10,
                max_entries: 100,
            },
        );
        for i in 0..100u8 {
            feed(
                &mut d,
                i64::from(i) * S / 100,
                &rec(&format!("10.0.1.{i}"), "/login", 401, 0),
            );
        }
        assert!(d.groups() <= 30, "{}", d.groups());
        assert!(d.evicted() >= 90 * 3 - 30, "{}", d.evicted());
    }
}
