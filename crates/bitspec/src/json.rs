//! The JSON an app sends, as contracts read it.
//!
//! A contract reads a handful of paths (`in.customer.email`) from each app
//! record. Parsing the record into a `serde_json::Value` builds an ordered
//! map (a hash table) per object and copies every string, which cost more
//! than the rest of the sidecar's translation. [`Json`] borrows strings
//! from the input bytes where they need no unescaping and keeps an
//! object's members as a list looked up by scanning: app records have tens
//! of keys, not thousands. As in `serde_json`, when a key repeats the last
//! one wins.
//!
//! Numbers follow `serde_json`'s reading: an integer that fits `i64` is an
//! int, anything else (fractions, exponents, integers beyond `i64`) a float.
//! Nesting is bounded by the `serde_json` deserializer (128 levels), so a
//! hostile record is an error, not a stack overflow.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses one JSON document from `bytes`, borrowing from them.
    pub fn parse(bytes: &'a [u8]) -> Result<Json<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The member `key` of an object (the last, if it repeats); `None` for
    /// a missing key or a value that is not an object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// What kind of JSON value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a bool",
            Json::Int(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'a> From<&'a serde_json::Value> for Json<'a> {
    /// A view of an already parsed value (test records, the CLI), strings
    /// borrowed.
    fn from(v: &'a serde_json::Value) -> Json<'a> {
        use serde_json::Value as J;
        match v {
            J::Null => Json::Null,
            J::Bool(b) => Json::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Json::Int(i),
                None => Json::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Json::Str(Cow::Borrowed(s)),
            J::Array(a) => Json::Array(a.iter().map(Json::from).collect()),
            J::Object(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from(v)))
                    .collect(),
            ),
        }
    }
}

/// A string borrowed from the input when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json<'de>, E> {
                Ok(Json::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Json<'de>, E> {
                Ok(Json::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<Json<'de>, E> {
                Ok(i64::try_from(u).map_or(Json::Float(u as f64), Json::Int))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Json<'de>, E> {
                Ok(Json::Float(f))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
                Ok(Json::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
                Ok(Json::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
                Ok(Json::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(Text(k)) = map.next_key()? {
                    members.push((k, map.next_value()?));
                }
                Ok(Json::Object(members))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed_and_escaped_ones_unescaped() {
        let j = Json::parse(br#"{"a": "plain", "b": "tab\there"}"#).unwrap();
        assert!(matches!(
            j.get("a"),
            Some(Json::Str(Cow::Borrowed("plain")))
        ));
        assert_eq!(j.get("b"), Some(&Json::Str(Cow::Owned("tab\there".into()))));
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for text in [
            "0",
            "-7",
            "9223372036854775807",
            "18446744073709551615",
            "1.5",
            "1e3",
            "2.0",
        ] {
            let ours = Json::parse(text.as_bytes()).unwrap();
            let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, Json::from(&theirs), "{text}");
        }
        assert_eq!(
            Json::parse(b"9223372036854775808").unwrap(),
            Json::Float(9223372036854775808.0)
        );
    }

    #[test]
    fn the_last_of_a_repeated_key_wins_like_serde_json() {
        let text = br#"{"k": 1, "k": 2}"#;
        let theirs: serde_json::Value = serde_json::from_slice(text).unwrap();
        assert_eq!(theirs["k"], 2);
        assert_eq!(Json::parse(text).unwrap().get("k"), Some(&Json::Int(2)));
    }

    #[test]
    fn paths_only_go_through_objects() {
        let j = Json::parse(br#"{"a": {"b": [1, {"c": null}]}, "s": "x"}"#).unwrap();
        assert_eq!(
            j.get("a").and_then(|a| a.get("b")).map(Json::kind),
            Some("an array")
        );
        assert_eq!(j.get("s").and_then(|s| s.get("x")), None);
        assert_eq!(j.get("missing"), None);
    }

    #[test]
    fn bad_and_hostile_input_is_an_error() {
        assert!(Json::parse(b"{\"a\": ").is_err());
        assert!(Json::parse(b"{} trailing").is_err());
        assert!(Json::parse(b"\"\\ud800\"").is_err());
        let deep = "[".repeat(100_000);
        assert!(Json::parse(deep.as_bytes()).is_err());
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e12f64..1e12).prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::vec(("[a-z\\\"]{0,4}", inner), 0..6)
                    .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().collect()) }),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever serde_json writes, [`Json`] reads as the view of
        /// serde_json's own reading of it.
        #[test]
        fn reads_what_serde_json_reads(v in any_json()) {
            let text = serde_json::to_vec(&v).unwrap();
            let theirs: serde_json::Value = serde_json::from_slice(&text).unwrap();
            proptest::prop_assert_eq!(Json::parse(&text).unwrap(), Json::from(&theirs));
        }
    }
}
