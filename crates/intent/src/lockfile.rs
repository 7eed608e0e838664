//! `ben.lock` as text: a small TOML file, written deterministically.

use ben_bitspec::lock::{BitTable, PackBits};
use std::fmt::Write as _;

const HEADER: &str = "# ben.lock: flag bit positions, written by `benctl build`. Commit it.\n\
# A flag keeps its bit forever; a removed flag's bit is retired and never reused.\n\
# Do not edit by hand: `benctl build` refuses an inconsistent table.\n";

pub fn render(t: &BitTable) -> String {
    let mut s = String::from(HEADER);
    s.push_str("version = 1\n");
    for (name, pb) in &t.packs {
        let _ = writeln!(s, "\n[packs.{name}]");
        let _ = writeln!(s, "next = {}", pb.next);
        let mut live: Vec<(&String, &u32)> = pb.live.iter().collect();
        live.sort_by_key(|(_, b)| **b);
        s.push_str("bits = { ");
        s.push_str(
            &live
                .iter()
                .map(|(n, b)| format!("{n} = {b}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str(if live.is_empty() { "}\n" } else { " }\n" });
        s.push_str("retired = [");
        s.push_str(
            &pb.retired
                .iter()
                .map(|(n, b)| format!("{{ name = \"{n}\", bit = {b} }}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str("]\n");
    }
    s
}

/// Parses `ben.lock`; each error names the key.
pub fn parse(text: &str) -> Result<BitTable, String> {
    let v: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    match v.get("version").and_then(toml::Value::as_integer) {
        Some(1) => {}
        Some(n) => {
            return Err(format!(
                "version = {n} is not supported (this benctl reads version 1)"
            ))
        }
        None => return Err("missing `version = 1`".into()),
    }
    let mut t = BitTable::default();
    let Some(packs) = v.get("packs") else {
        return Ok(t);
    };
    let packs = packs.as_table().ok_or("`packs` must be a table")?;
    for (name, pv) in packs {
        let pt = pv
            .as_table()
            .ok_or_else(|| format!("packs.{name} must be a table"))?;
        let bit = |x: &toml::Value, at: &str| -> Result<u32, String> {
            x.as_integer()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| format!("{at} must be a non-negative integer"))
        };
        let mut pb = PackBits {
            next: bit(
                pt.get("next")
                    .ok_or_else(|| format!("packs.{name}.next is missing"))?,
                &format!("packs.{name}.next"),
            )?,
            ..PackBits::default()
        };
        if let Some(bits) = pt.get("bits") {
            let bt = bits
                .as_table()
                .ok_or_else(|| format!("packs.{name}.bits must be a table"))?;
            for (flag, b) in bt {
                pb.live
                    .insert(flag.clone(), bit(b, &format!("packs.{name}.bits.{flag}"))?);
            }
        }
        if let Some(r) = pt.get("retired") {
            let arr = r
                .as_array()
                .ok_or_else(|| format!("packs.{name}.retired must be an array"))?;
            for (i, e) in arr.iter().enumerate() {
                let at = format!("packs.{name}.retired[{i}]");
                let n = e
                    .get("name")
                    .and_then(toml::Value::as_str)
                    .ok_or_else(|| format!("{at}.name must be a string"))?;
                let b = bit(
                    e.get("bit").ok_or_else(|| format!("{at}.bit is missing"))?,
                    &format!("{at}.bit"),
                )?;
                pb.retired.push((n.to_string(), b));
            }
        }
        for k in pt.keys() {
            if !["next", "bits", "retired"].contains(&k.as_str()) {
                return Err(format!("packs.{name}.{k} is not a lock key"));
            }
        }
        t.packs.insert(name.clone(), pb);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut t = BitTable::default();
        let pb = t.packs.entry("web_guard".into()).or_default();
        pb.live.insert("a".into(), 0);
        pb.live.insert("c".into(), 2);
        pb.retired.push(("b".into(), 1));
        pb.next = 3;
        let text = render(&t);
        assert_eq!(parse(&text).unwrap(), t);
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("version = 1\n[packs.p]\nnext = -1\n").unwrap_err();
        assert!(e.contains("packs.p.next"), "{e}");
    }
}
