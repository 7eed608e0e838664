//! Runtime values and types, and the text forms of times, durations, IPs and
//! CIDRs (parsed and printed by hand so no clock or locale is involved).

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

/// A Bitspec type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Type {
    String,
    Int,
    Float,
    Bool,
    Time,
    Duration,
    Ip,
    Cidr,
    Bytes,
    List(Box<Type>),
    Optional(Box<Type>),
    /// The type of the `null` literal.
    Null,
    /// A contract's input (`in.…`): JSON, checked when the record arrives.
    Dyn,
}

impl Type {
    /// The type with any `?` removed.
    pub fn base(&self) -> &Type {
        match self {
            Type::Optional(t) => t.base(),
            t => t,
        }
    }

    pub fn is_optional(&self) -> bool {
        matches!(self, Type::Optional(_) | Type::Null | Type::Dyn)
    }

    pub fn optional(self) -> Type {
        match self {
            t @ (Type::Optional(_) | Type::Null | Type::Dyn) => t,
            t => Type::Optional(Box::new(t)),
        }
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self.base(), Type::Int | Type::Float)
    }

    /// The type named by a Bitspec type keyword.
    pub fn from_name(name: &str) -> Option<Type> {
        Some(match name {
            "string" => Type::String,
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            "time" => Type::Time,
            "duration" => Type::Duration,
            "ip" => Type::Ip,
            "cidr" => Type::Cidr,
            "bytes" => Type::Bytes,
            _ => return None,
        })
    }

    pub const NAMES: [&'static str; 9] = [
        "string", "int", "float", "bool", "time", "duration", "ip", "cidr", "bytes",
    ];
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::String => f.write_str("string"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Bool => f.write_str("bool"),
            Type::Time => f.write_str("time"),
            Type::Duration => f.write_str("duration"),
            Type::Ip => f.write_str("ip"),
            Type::Cidr => f.write_str("cidr"),
            Type::Bytes => f.write_str("bytes"),
            Type::List(t) => write!(f, "[{t}]"),
            Type::Optional(t) => write!(f, "{t}?"),
            Type::Null => f.write_str("null"),
            Type::Dyn => f.write_str("input value"),
        }
    }
}

/// An IP network: address and prefix length.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::y/n`; host bits must be zero-able (they
    /// are masked off).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        Some(Cidr {
            addr: mask_addr(addr, prefix),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix as u32)
                };
                u32::from(a) & m == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix as u32)
                };
                u128::from(a) & m == u128::from(n)
            }
            (IpAddr::V4(_), IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|a4| self.contains(IpAddr::V4(a4))),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn mask_addr(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix as u32)
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix as u32)
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A runtime value. Times and durations are nanoseconds (since the Unix
/// epoch for times).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Time(i64),
    Duration(i64),
    Ip(IpAddr),
    Cidr(Cidr),
    Bytes(Vec<u8>),
    List(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The name of the value's kind, for error messages that must not
    /// echo the value itself.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Time(_) => "time",
            Value::Duration(_) => "duration",
            Value::Ip(_) => "ip",
            Value::Cidr(_) => "cidr",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
        }
    }

    /// Equality as Bitspec's `==` sees it: ints and floats compare by value,
    /// null equals only null.
    pub fn bs_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => {
                (*a as f64) == *b
            }
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bs_eq(y))
            }
            (a, b) => a == b,
        }
    }

    /// Ordering for `< <= > >=`; `None` when the values are not comparable.
    pub fn bs_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Time(a), Value::Time(b)) | (Value::Duration(a), Value::Duration(b)) => {
                Some(a.cmp(b))
            }
            (Value::Ip(a), Value::Ip(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// JSON form used in records and `benctl eval` output.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Time(t) => J::String(format_time(*t)),
            Value::Duration(d) => J::String(format_duration(*d)),
            Value::Ip(ip) => J::String(ip.to_string()),
            Value::Cidr(c) => J::String(c.to_string()),
            Value::Bytes(b) => J::String(base64(b)),
            Value::List(l) => J::Array(l.iter().map(Value::to_json).collect()),
        }
    }

    /// Canonical text form (used when a non-string field is redacted).
    pub fn to_text(&self) -> String {
        match self.to_json() {
            serde_json::Value::String(s) => s,
            j => j.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Time(t) => f.write_str(&format_time(*t)),
            Value::Duration(d) => f.write_str(&format_duration(*d)),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            v => write!(f, "{}", v.to_json()),
        }
    }
}

const NS: i64 = 1_000_000_000;

/// Parses an RFC 3339 timestamp (`2026-01-01T00:00:00Z`,
/// `2026-01-01T01:00:00.5+01:00`) into nanoseconds since the epoch
/// ([`ben_time::parse_rfc3339`]: the offset is required, days per month
/// checked).
pub fn parse_time(s: &str) -> Option<i64> {
    ben_time::parse_rfc3339(s)
}

/// Formats nanoseconds since the epoch as RFC 3339 UTC, with a fraction only
/// when it is non-zero ([`ben_time::format_rfc3339`]).
pub fn format_time(ns: i64) -> String {
    ben_time::format_rfc3339(ns)
}

/// Parses `500ms`, `60s`, `5m`, `1h30m`, `2d` into nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if n_end == 0 {
            return None;
        }
        let n: i64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => NS,
            "m" => 60 * NS,
            "h" => 3600 * NS,
            "d" => 86_400 * NS,
            _ => return None,
        };
        rest = &rest[u_end..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// Formats nanoseconds as the shortest exact duration text (`1h30m`, `250ms`).
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut v = ns;
    if v < 0 {
        out.push('-');
        v = v.checked_neg().unwrap_or(i64::MAX);
    }
    for (unit, name) in [
        (86_400 * NS, "d"),
        (3600 * NS, "h"),
        (60 * NS, "m"),
        (NS, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ] {
        if v >= unit {
            out.push_str(&format!("{}{name}", v / unit));
            v %= unit;
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(t, 1_767_225_600 * NS);
        assert_eq!(format_time(t), "2026-01-01T00:00:00Z");
        let t2 = parse_time("2026-01-01T01:00:00.25+01:00").unwrap();
        assert_eq!(t2, t + NS / 4);
        assert_eq!(format_time(t2), "2026-01-01T00:00:00.25Z");
        assert_eq!(parse_time("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_time("2026-01-01 00:00:00"), None);
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("60s"), Some(60 * NS));
        assert_eq!(parse_duration("1h30m"), Some(5400 * NS));
        assert_eq!(format_duration(5400 * NS), "1h30m");
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let c6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c6.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(
            Cidr::parse("0.0.0.0/0").map(|c| c.contains("1.2.3.4".parse().unwrap())),
            Some(true)
        );
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
