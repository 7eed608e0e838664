//! A compact binary encoding of a record's field values, in schema slot
//! order. Components between the sidecar and the spine pass records in
//! this form, so a record is parsed from JSON once (at the sidecar) rather
//! than once per hop.
//!
//! Layout: a varint count, then each value as a tag byte and its payload.
//!
//! | tag | value | payload |
//! |---|---|---|
//! | 0 | null | — |
//! | 1, 2 | false, true | — |
//! | 3 | int | zigzag varint |
//! | 4 | float | 8 bytes little-endian IEEE 754 |
//! | 5 | string | varint length + UTF-8 bytes |
//! | 6 | time (ns since the epoch) | zigzag varint |
//! | 7 | duration (ns) | zigzag varint |
//! | 8 | IPv4 | 4 bytes |
//! | 9 | IPv6 | 16 bytes |
//! | 10 | CIDR | address as tag 8 or 9, then the prefix byte |
//! | 11 | bytes | varint length + bytes |
//! | 12 | list | varint count + values |
//!
//! Decoding never trusts the input: lengths are checked against what is
//! left, strings must be UTF-8, nesting is bounded and every error names
//! the byte offset. The decoded values are then checked against the schema
//! by [`crate::interp::from_values`].

use crate::value::{Cidr, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Lists nest at most this deep (Bitspec types nest far less).
const MAX_DEPTH: usize = 16;

/// Why bytes do not decode; `at` is the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    pub at: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field values are malformed at byte {}: {}",
            self.at, self.reason
        )
    }
}

impl std::error::Error for CodecError {}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.push(8);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(9);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::Int(i) => {
            out.push(3);
            put_varint(out, zigzag(*i));
        }
        Value::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Str(s) => {
            out.push(5);
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Time(t) => {
            out.push(6);
            put_varint(out, zigzag(*t));
        }
        Value::Duration(d) => {
            out.push(7);
            put_varint(out, zigzag(*d));
        }
        Value::Ip(ip) => put_ip(out, ip),
        Value::Cidr(c) => {
            out.push(10);
            put_ip(out, &c.addr);
            out.push(c.prefix);
        }
        Value::Bytes(b) => {
            out.push(11);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::List(items) => {
            out.push(12);
            put_varint(out, items.len() as u64);
            for i in items {
                put_value(out, i);
            }
        }
    }
}

/// Appends the encoding of `values` to `out`.
pub fn encode(values: &[Value], out: &mut Vec<u8>) {
    put_varint(out, values.len() as u64);
    for v in values {
        put_value(out, v);
    }
}

/// The encoding of `values`.
pub fn to_bytes(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * values.len() + 1);
    encode(values, &mut out);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &'static str) -> CodecError {
        CodecError {
            at: self.at,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.at).ok_or(self.err("ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() - self.at < n {
            return Err(self.err("a length runs past the end"));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("a varint is longer than 10 bytes"))
    }

    /// A count or length, which can never exceed the bytes left (every
    /// element takes at least one byte).
    fn len(&mut self) -> Result<usize, CodecError> {
        let start = self.at;
        let n = self.varint()?;
        if n > (self.buf.len() - self.at) as u64 {
            return Err(CodecError {
                at: start,
                reason: "a count or length exceeds the bytes left",
            });
        }
        Ok(n as usize)
    }

    fn ip(&mut self, tag: u8) -> Result<IpAddr, CodecError> {
        match tag {
            8 => {
                let b = self.take(4)?;
                Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            9 => {
                let b: [u8; 16] = self.take(16)?.try_into().map_err(|_| self.err("ip"))?;
                Ok(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => Err(self.err("expected an IP address tag (8 or 9)")),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        let tag = self.byte()?;
        Ok(match tag {
            0 => Value::Null,
            1 => Value::Bool(false),
            2 => Value::Bool(true),
            3 => Value::Int(unzigzag(self.varint()?)),
            4 => {
                let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| self.err("float"))?;
                Value::Float(f64::from_le_bytes(b))
            }
            5 => {
                let n = self.len()?;
                let at = self.at;
                let s = std::str::from_utf8(self.take(n)?).map_err(|_| CodecError {
                    at,
                    reason: "a string is not UTF-8",
                })?;
                Value::Str(s.to_string())
            }
            6 => Value::Time(unzigzag(self.varint()?)),
            7 => Value::Duration(unzigzag(self.varint()?)),
            8 | 9 => Value::Ip(self.ip(tag)?),
            10 => {
                let t = self.byte()?;
                let addr = self.ip(t)?;
                let prefix = self.byte()?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    return Err(self.err("a CIDR prefix is longer than its address"));
                }
                Value::Cidr(Cidr { addr, prefix })
            }
            11 => {
                let n = self.len()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
            12 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("lists nest too deep"));
                }
                let n = self.len()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::List(items)
            }
            _ => return Err(self.err("unknown value tag")),
        })
    }
}

impl Reader<'_> {
    /// Steps over one value, checking it as [`Reader::value`] does (UTF-8
    /// included) but building nothing.
    fn skip(&mut self, depth: usize) -> Result<(), CodecError> {
        let tag = self.byte()?;
        match tag {
            0..=2 => {}
            3 | 6 | 7 => {
                self.varint()?;
            }
            4 => {
                self.take(8)?;
            }
            5 => {
                let n = self.len()?;
                let at = self.at;
                std::str::from_utf8(self.take(n)?).map_err(|_| CodecError {
                    at,
                    reason: "a string is not UTF-8",
                })?;
            }
            8 | 9 => {
                self.ip(tag)?;
            }
            10..=12 => {
                // Rare on the paths that skip: decode and drop.
                self.at -= 1;
                self.value(depth)?;
            }
            _ => return Err(self.err("unknown value tag")),
        }
        Ok(())
    }
}

/// [`decode`] keeping only the slots where `keep` is true; the others come
/// back as null without being built (still checked). Slots past the end
/// of `keep` are dropped too.
pub fn decode_some(buf: &[u8], keep: &[bool]) -> Result<Vec<Value>, CodecError> {
    let mut r = Reader { buf, at: 0 };
    let n = r.len()?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if keep.get(i).copied().unwrap_or(false) {
            out.push(r.value(0)?);
        } else {
            r.skip(0)?;
            out.push(Value::Null);
        }
    }
    if r.at != buf.len() {
        return Err(r.err("trailing bytes after the last value"));
    }
    Ok(out)
}

/// Decodes what [`encode`] wrote. Trailing bytes are an error.
pub fn decode(buf: &[u8]) -> Result<Vec<Value>, CodecError> {
    let mut r = Reader { buf, at: 0 };
    let n = r.len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.value(0)?);
    }
    if r.at != buf.len() {
        return Err(r.err("trailing bytes after the last value"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".{0,40}".prop_map(Value::Str),
            any::<i64>().prop_map(Value::Time),
            any::<i64>().prop_map(Value::Duration),
            any::<[u8; 4]>().prop_map(|b| Value::Ip(IpAddr::V4(b.into()))),
            any::<[u8; 16]>().prop_map(|b| Value::Ip(IpAddr::V6(b.into()))),
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(b, p)| Value::Cidr(Cidr {
                addr: IpAddr::V4(b.into()),
                prefix: p
            })),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::List)
        })
    }

    proptest! {
        #[test]
        fn round_trips(values in proptest::collection::vec(value(), 0..12)) {
            let bytes = to_bytes(&values);
            prop_assert_eq!(decode(&bytes).unwrap(), values);
        }

        #[test]
        fn decode_some_keeps_what_it_is_asked_for(
            values in proptest::collection::vec(value(), 0..12),
            keep in proptest::collection::vec(any::<bool>(), 0..12),
        ) {
            let bytes = to_bytes(&values);
            let some = decode_some(&bytes, &keep).unwrap();
            prop_assert_eq!(some.len(), values.len());
            for (i, (got, want)) in some.iter().zip(&values).enumerate() {
                if keep.get(i).copied().unwrap_or(false) {
                    prop_assert_eq!(got, want);
                } else {
                    prop_assert_eq!(got, &Value::Null);
                }
            }
        }

        #[test]
        fn decode_some_refuses_what_decode_refuses(
            bytes in proptest::collection::vec(any::<u8>(), 0..120),
            keep in proptest::collection::vec(any::<bool>(), 0..12),
        ) {
            prop_assert_eq!(decode(&bytes).is_ok(), decode_some(&bytes, &keep).is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(values in proptest::collection::vec(value(), 1..8)) {
            let bytes = to_bytes(&values);
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err(), "cut at {}", cut);
            }
        }
    }

    #[test]
    fn errors_name_the_offset() {
        // one value, a string of length 5 with only 2 bytes present
        let e = decode(&[1, 5, 5, b'a', b'b']).unwrap_err();
        assert_eq!(e.at, 2);
        assert!(e.to_string().contains("byte 2"), "{e}");
        assert_eq!(decode(&[1, 99]).unwrap_err().reason, "unknown value tag");
        assert_eq!(
            decode(&[1, 0, 0]).unwrap_err().reason,
            "trailing bytes after the last value"
        );
        assert_eq!(
            decode(&[1, 5, 2, 0xff, 0xfe]).unwrap_err().reason,
            "a string is not UTF-8"
        );
        // a count larger than the bytes left is refused before allocating
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = vec![1];
        for _ in 0..40 {
            bytes.extend_from_slice(&[12, 1]);
        }
        bytes.push(0);
        assert_eq!(decode(&bytes).unwrap_err().reason, "lists nest too deep");
    }
}
