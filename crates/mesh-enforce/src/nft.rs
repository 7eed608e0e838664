//! The nftables backend: the agent's own `inet ben` table, one set per
//! action × direction × family with the `timeout` and `interval` flags and
//! a timeout on each element, one rule per set, an allowlist set with an
//! accept rule ahead of them, and every change one atomic batch through
//! `nft -j -f -`. Nothing outside `inet ben` is touched.
//!
//! Policies with a protocol, ports or a rate limit are rules of their own
//! in the chains `rules_in` / `rules_out` (jumped to after the sets, so
//! the allowlist still comes first), written whole in one transaction
//! (`flush chain` + the rules) whenever one changes. Each matches only
//! before its time (`meta time <`), so it stops on time even if no agent
//! is left to remove it, and carries its set name, target and time in
//! its comment (`ben|rl50_in_tcp_22|192.0.2.9|1796…`), which is how it is
//! read back. A rate limit drops what goes over the rate (`limit rate
//! over N/second`, burst N): the target's packets share one budget.
//!
//! Rendering and reading back are pure (tested without a kernel); [`Nft`]
//! runs `nft` (optionally inside a network namespace, for tests).
//!
//! The JSON is built with `serde_json` directly: the five objects used
//! here (table, chain, set, rule, element) are a small, stable part of
//! libnftables' JSON schema, and numbers must be JSON numbers (nft ignores
//! a timeout given as a string).

use crate::backend::{Backend, Held};
use crate::model::{Action, Allowlist, Direction, Net};
use crate::schedule::{Change, SetKey};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// The table's name (family `inet`).
pub const TABLE: &str = "ben";
/// Elements per `add element` command: nft takes large batches better in
/// pieces.
pub const CHUNK: usize = 10_000;

fn target_json(n: &Net) -> Value {
    if n.is_host() {
        json!(n.addr.to_string())
    } else {
        json!({"prefix": {"addr": n.addr.to_string(), "len": n.prefix}})
    }
}

fn set_obj(name: &str, v6: bool, interval: bool, timeout: bool) -> Value {
    let mut flags = vec![];
    if interval {
        flags.push("interval");
    }
    if timeout {
        flags.push("timeout");
    }
    json!({"set": {
        "family": "inet", "table": TABLE, "name": name,
        "type": if v6 { "ipv6_addr" } else { "ipv4_addr" },
        "flags": flags,
    }})
}

fn chain_obj(name: &str) -> Value {
    json!({"chain": {
        "family": "inet", "table": TABLE, "name": name,
        "type": "filter", "hook": name, "prio": -10, "policy": "accept",
    }})
}

fn chain_of(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "input",
        Direction::Egress => "output",
    }
}

/// The regular chain holding the rules of a direction.
fn rules_chain(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "rules_in",
        Direction::Egress => "rules_out",
    }
}

fn rule(chain: &str, v6: bool, field: &str, set: &str, verdict: Value) -> Value {
    json!({"add": {"rule": {
        "family": "inet", "table": TABLE, "chain": chain,
        "expr": [
            {"match": {"op": "==",
                "left": {"payload": {"protocol": if v6 { "ip6" } else { "ip" }, "field": field}},
                "right": format!("@{set}")}},
            {"counter": null},
            verdict,
        ],
    }}})
}

/// The batch that makes the table as it must be: chains, sets, rules
/// (rebuilt: the chains are flushed and refilled in the same
/// transaction), and the allowlist set refilled with `allow`. Entries in
/// the timeout sets are left alone.
pub fn render_setup(allow: &Allowlist) -> Value {
    let mut cmds = vec![json!({"add": {"table": {"family": "inet", "name": TABLE}}})];
    for c in ["input", "output"] {
        cmds.push(json!({"add": chain_obj(c)}));
        cmds.push(json!({"flush": {"chain": {"family": "inet", "table": TABLE, "name": c}}}));
    }
    // The rules' chains are made if missing and left as they are: the
    // agent writes them.
    for d in [Direction::Ingress, Direction::Egress] {
        cmds.push(
            json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": rules_chain(d)}}}),
        );
    }
    for v6 in [false, true] {
        let name = if v6 { "allow6" } else { "allow4" };
        cmds.push(json!({"add": set_obj(name, v6, true, false)}));
        cmds.push(json!({"flush": set_obj(name, v6, true, false)}));
        // An interval set refuses overlapping elements: a network inside
        // another allowlisted one is left to the wider one.
        let nets: Vec<&Net> = allow.nets().filter(|n| n.is_v6() == v6).collect();
        let mut elems: Vec<Value> = vec![];
        let mut seen = std::collections::BTreeSet::new();
        for (i, n) in nets.iter().enumerate() {
            let inside = nets.iter().enumerate().any(|(j, o)| {
                j != i && o.overlaps(n) && (o.prefix < n.prefix || (o.prefix == n.prefix && j < i))
            });
            if !inside && seen.insert(**n) {
                elems.push(target_json(n));
            }
        }
        if !elems.is_empty() {
            cmds.push(json!({"add": {"element": {
                "family": "inet", "table": TABLE, "name": name, "elem": elems}}}));
        }
    }
    for d in [Direction::Ingress, Direction::Egress] {
        let field = if d == Direction::Ingress {
            "saddr"
        } else {
            "daddr"
        };
        for v6 in [false, true] {
            let allow = if v6 { "allow6" } else { "allow4" };
            cmds.push(rule(chain_of(d), v6, field, allow, json!({"accept": null})));
        }
    }
    for s in SetKey::all() {
        cmds.push(json!({"add": set_obj(&s.name(), s.v6, s.net, true)}));
        let field = if s.direction() == Direction::Ingress {
            "saddr"
        } else {
            "daddr"
        };
        cmds.push(rule(
            chain_of(s.direction()),
            s.v6,
            field,
            &s.name(),
            verdict(s.action()),
        ));
    }
    for d in [Direction::Ingress, Direction::Egress] {
        cmds.push(json!({"add": {"rule": {
            "family": "inet", "table": TABLE, "chain": chain_of(d),
            "expr": [{"jump": {"target": rules_chain(d)}}],
        }}}));
    }
    json!({"nftables": cmds})
}

fn verdict(a: Action) -> Value {
    match a {
        Action::Reject => json!({"reject": null}),
        Action::Drop | Action::RateLimit(_) => json!({"drop": null}),
    }
}

/// The one transaction that makes the rules' chains hold exactly `rules`
/// (each matching until its time; those whose time is up are left out).
pub fn render_rules(rules: &[Change], now_ms: u64) -> Value {
    let mut cmds = vec![];
    for d in [Direction::Ingress, Direction::Egress] {
        cmds.push(
            json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": rules_chain(d)}}}),
        );
        cmds.push(
            json!({"flush": {"chain": {"family": "inet", "table": TABLE, "name": rules_chain(d)}}}),
        );
    }
    for c in rules.iter().filter(|c| c.expires_at_ms > now_ms) {
        let spec = c.set.spec;
        let v6 = c.target.is_v6();
        let field = if spec.direction == Direction::Ingress {
            "saddr"
        } else {
            "daddr"
        };
        let mut expr = vec![json!({"match": {"op": "==",
            "left": {"payload": {"protocol": if v6 { "ip6" } else { "ip" }, "field": field}},
            "right": target_json(&c.target)}})];
        if let Some(p) = spec.protocol.l4_name(v6) {
            expr.push(json!({"match": {"op": "==",
                "left": {"meta": {"key": "l4proto"}}, "right": p}}));
        }
        if let Some(p) = spec.ports {
            expr.push(json!({"match": {"op": "==",
                "left": {"payload": {"protocol": "th", "field": "dport"}},
                "right": {"range": [p.from, p.to]}}}));
        }
        // Seconds since the epoch: nft reads a number here as that.
        expr.push(json!({"match": {"op": "<",
            "left": {"meta": {"key": "time"}}, "right": c.expires_at_ms.div_ceil(1_000)}}));
        if let Action::RateLimit(r) = spec.action {
            expr.push(json!({"limit": {"rate": r, "burst": r, "per": "second", "inv": true}}));
        }
        expr.push(json!({"counter": null}));
        expr.push(verdict(spec.action));
        cmds.push(json!({"add": {"rule": {
            "family": "inet", "table": TABLE, "chain": rules_chain(spec.direction),
            "comment": rule_comment(c),
            "expr": expr,
        }}}));
    }
    json!({"nftables": cmds})
}

/// `ben|<set name>|<target>|<until ms>`: how a rule is read back.
pub fn rule_comment(c: &Change) -> String {
    format!("ben|{}|{}|{}", c.set.name(), c.target, c.expires_at_ms)
}

/// A rule's comment read back: its set name, target and time.
pub fn parse_rule_comment(s: &str) -> Option<Held> {
    let mut w = s.split('|');
    if w.next()? != "ben" {
        return None;
    }
    let set = w.next()?.to_string();
    let target = Net::parse(w.next()?).ok()?;
    let until = w.next()?.parse().ok()?;
    Some(Held {
        set,
        target,
        expires_s: None,
        until_ms: Some(until),
    })
}

/// Seconds left until `expires_at_ms` (at least one).
pub fn timeout_s(expires_at_ms: u64, now_ms: u64) -> u64 {
    expires_at_ms.saturating_sub(now_ms).div_ceil(1_000).max(1)
}

/// The batches (each one transaction) that bring `changes` to the host
/// and delete `remove`, without reading it first. An entry it may hold
/// already (`Change::replace`) is added, deleted and added again with its
/// timeout in one transaction: re-adding alone does not extend a timeout
/// on older kernels, and a delete of an element that is not there would
/// fail the whole transaction; the first add makes sure it is there. A
/// removal is the same add then delete.
pub fn render_changes(changes: &[Change], remove: &[(SetKey, Net)], now_ms: u64) -> Vec<Value> {
    type BySet = BTreeMap<String, Vec<Value>>;
    let (mut ensure, mut dels, mut refresh, mut adds) =
        (BySet::new(), BySet::new(), BySet::new(), BySet::new());
    for (s, n) in remove {
        ensure.entry(s.name()).or_default().push(target_json(n));
        dels.entry(s.name()).or_default().push(target_json(n));
    }
    for c in changes {
        let name = c.set.name();
        let elem = json!({"elem": {
            "val": target_json(&c.target),
            "timeout": timeout_s(c.expires_at_ms, now_ms),
        }});
        if c.replace {
            ensure.entry(name.clone()).or_default().push(elem.clone());
            dels.entry(name.clone())
                .or_default()
                .push(target_json(&c.target));
            refresh.entry(name).or_default().push(elem);
        } else {
            adds.entry(name).or_default().push(elem);
        }
    }
    let commands = |verb: &str, by_set: BySet| -> Vec<Value> {
        let mut out = vec![];
        for (name, elems) in by_set {
            for chunk in elems.chunks(CHUNK) {
                out.push(json!({verb: {"element": {
                    "family": "inet", "table": TABLE, "name": name, "elem": chunk}}}));
            }
        }
        out
    };
    // Replacements and removals in one transaction, so a replaced entry
    // is never missing; then the new entries, 50,000 per transaction (nft
    // parses a batch in memory).
    let mut first = commands("add", ensure);
    first.extend(commands("delete", dels));
    first.extend(commands("add", refresh));
    let mut out = vec![];
    if !first.is_empty() {
        out.push(json!({"nftables": first}));
    }
    for c in commands("add", adds).chunks(5) {
        out.push(json!({"nftables": c}));
    }
    out
}

/// What `nft -j list table inet ben` shows: each element of the timeout
/// sets, with the seconds it has left.
pub fn parse_listing(v: &Value) -> Result<Vec<Held>, String> {
    let objs = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft listing without an \"nftables\" array")?;
    let mut out = vec![];
    for o in objs {
        if let Some(r) = o.get("rule") {
            let chain = r.get("chain").and_then(Value::as_str).unwrap_or_default();
            if chain.starts_with("rules_") {
                if let Some(h) = r
                    .get("comment")
                    .and_then(Value::as_str)
                    .and_then(parse_rule_comment)
                {
                    out.push(h);
                }
            }
            continue;
        }
        let Some(set) = o.get("set") else { continue };
        let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.starts_with("allow") {
            continue;
        }
        for e in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (val, expires) = match e.get("elem") {
                Some(inner) => (
                    inner.get("val").ok_or("element without a value")?,
                    inner.get("expires").and_then(Value::as_u64),
                ),
                None => (e, None),
            };
            out.push(Held {
                set: name.to_string(),
                target: parse_target(val)?,
                expires_s: expires,
                until_ms: None,
            });
        }
    }
    Ok(out)
}

fn parse_target(v: &Value) -> Result<Net, String> {
    if let Some(s) = v.as_str() {
        return Net::parse(s);
    }
    if let Some(p) = v.get("prefix") {
        let addr = p
            .get("addr")
            .and_then(Value::as_str)
            .ok_or("prefix without addr")?;
        let len = p
            .get("len")
            .and_then(Value::as_u64)
            .ok_or("prefix without len")?;
        return Net::parse(&format!("{addr}/{len}"));
    }
    Err(format!("unexpected element in the ben table: {v}"))
}

/// Runs `nft`, in the network namespace `netns` when set.
pub struct Nft {
    /// A network namespace (`ip netns exec`), for tests.
    pub netns: Option<String>,
}

impl Nft {
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        }
    }

    /// Runs one batch (one transaction).
    pub fn run(&self, batch: &Value) -> Result<(), String> {
        let mut child = self
            .command()
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running nft: {e} (is the nftables package installed?)"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(batch.to_string().as_bytes())
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft refused the batch: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The table as the kernel holds it.
    pub fn list(&self) -> Result<Value, String> {
        let out = self
            .command()
            .args(["-j", "list", "table", "inet", TABLE])
            .output()
            .map_err(|e| format!("running nft: {e} (is the nftables package installed?)"))?;
        if !out.status.success() {
            return Err(format!(
                "nft list table inet {TABLE}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("nft listing: {e}"))
    }
}

impl Backend for Nft {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn setup(&mut self, allow: &Allowlist) -> Result<(), String> {
        self.run(&render_setup(allow))
    }

    fn apply(
        &mut self,
        changes: &[Change],
        remove: &[(SetKey, Net)],
        now_ms: u64,
    ) -> Result<(), String> {
        for batch in render_changes(changes, remove, now_ms) {
            self.run(&batch)?;
        }
        Ok(())
    }

    fn rules(&mut self, rules: &[Change], now_ms: u64) -> Result<(), String> {
        self.run(&render_rules(rules, now_ms))
    }

    fn read(&mut self) -> Result<Vec<Held>, String> {
        parse_listing(&self.list()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;

    fn set(net: bool) -> SetKey {
        SetKey::set(Action::Drop, Direction::Ingress, false, net)
    }

    #[test]
    fn setup_puts_the_allowlist_ahead_of_the_drops_with_numbers_as_numbers() {
        let mut a = Allowlist::default();
        a.add(Net::parse("10.0.0.1").unwrap(), "validator");
        a.add(Net::parse("10.0.0.0/24").unwrap(), "configured");
        a.add(Net::parse("10.0.0.0/24").unwrap(), "bus");
        a.add(Net::parse("fd00::/64").unwrap(), "configured");
        let v = render_setup(&a);
        // Overlaps left to the widest (an interval set refuses them).
        let allow4 = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|c| c["add"].get("element").filter(|e| e["name"] == "allow4"))
            .unwrap();
        assert_eq!(
            allow4["elem"],
            json!([{"prefix": {"addr": "10.0.0.0", "len": 24}}])
        );
        let cmds = v["nftables"].as_array().unwrap();
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        let first_input = rules.iter().find(|r| r["chain"] == "input").unwrap();
        assert_eq!(first_input["expr"][0]["match"]["right"], "@allow4");
        assert_eq!(first_input["expr"][2], json!({"accept": null}));
        assert_eq!(rules.len(), 4 + SetKey::all().len() + 2);
        let last_input = rules.iter().rfind(|r| r["chain"] == "input").unwrap();
        assert_eq!(
            last_input["expr"][0]["jump"]["target"], "rules_in",
            "rules after the sets"
        );
        let chain = cmds.iter().find_map(|c| c["add"].get("chain")).unwrap();
        assert!(chain["prio"].is_i64());
        let text = v.to_string();
        assert!(text.contains("\"fd00::\""), "{text}");
    }

    #[test]
    fn changes_refresh_what_is_there_in_one_transaction_and_chunk_large_ones() {
        let c = |t: &str, exp: u64, replace: bool| {
            let target = Net::parse(t).unwrap();
            Change {
                set: set(!target.is_host()),
                target,
                expires_at_ms: exp,
                policy: "p".into(),
                height: 1,
                replace,
            }
        };
        let b = render_changes(
            &[
                c("192.0.2.1", 61_000, true),
                c("198.51.100.0/24", 1_500, false),
            ],
            &[(set(false), Net::parse("203.0.113.5").unwrap())],
            1_000,
        );
        assert_eq!(b.len(), 2);
        let first = b[0]["nftables"].as_array().unwrap();
        let verbs: Vec<&str> = first
            .iter()
            .map(|c| c.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        assert_eq!(
            verbs,
            ["add", "delete", "add"],
            "add, delete, add: one transaction"
        );
        assert_eq!(
            first[1]["delete"]["element"]["elem"],
            json!(["203.0.113.5", "192.0.2.1"])
        );
        assert_eq!(
            first[2]["add"]["element"]["elem"][0]["elem"]["timeout"],
            json!(60)
        );
        let add = &b[1]["nftables"][0]["add"]["element"];
        assert_eq!(add["name"], "drop4_in_net");
        assert_eq!(add["elem"][0]["elem"]["timeout"], json!(1));
        assert_eq!(
            add["elem"][0]["elem"]["val"],
            json!({"prefix": {"addr": "198.51.100.0", "len": 24}})
        );
        let many: Vec<Change> = (0..100_000u32)
            .map(|i| {
                c(
                    &std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string(),
                    90_000,
                    false,
                )
            })
            .collect();
        let b = render_changes(&many, &[], 0);
        let elems: usize = b
            .iter()
            .flat_map(|t| t["nftables"].as_array().unwrap())
            .map(|c| c["add"]["element"]["elem"].as_array().unwrap().len())
            .sum();
        assert_eq!(elems, 100_000);
        assert!(b.len() > 1, "large batches go in pieces");
    }

    #[test]
    fn rules_render_whole_with_their_match_time_rate_and_comment_and_read_back() {
        use crate::model::Spec;
        let c = |spec: Spec, t: &str, until: u64| Change {
            set: SetKey {
                spec,
                v6: t.contains(':'),
                net: t.contains('/'),
            },
            target: Net::parse(t).unwrap(),
            expires_at_ms: until,
            policy: "req-1".into(),
            height: 3,
            replace: false,
        };
        let rl = Spec::parse("rate-limit", 50, "", "tcp", "22").unwrap();
        let out = Spec::parse("reject", 0, "egress", "icmp", "").unwrap();
        let v = render_rules(
            &[
                c(rl, "192.0.2.0/24", 61_500),
                c(out, "2001:db8::7", 90_000),
                c(rl, "192.0.2.9", 900),
            ],
            1_000,
        );
        let cmds = v["nftables"].as_array().unwrap();
        let verbs: Vec<&str> = cmds[..4]
            .iter()
            .map(|c| c.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        assert_eq!(verbs, ["add", "flush", "add", "flush"], "written whole");
        let rules: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        assert_eq!(rules.len(), 2, "the one whose time is up is left out");
        let r = rules[0];
        assert_eq!(r["chain"], "rules_in");
        assert_eq!(r["comment"], "ben|rl50_in_tcp_22|192.0.2.0/24|61500");
        let e = r["expr"].as_array().unwrap();
        assert_eq!(e[0]["match"]["right"]["prefix"]["len"], json!(24));
        assert_eq!(e[1]["match"]["right"], "tcp");
        assert_eq!(e[2]["match"]["right"], json!({"range": [22, 22]}));
        assert_eq!(e[3]["match"]["right"], json!(62), "seconds, rounded up");
        assert_eq!(
            e[4]["limit"],
            json!({"rate": 50, "burst": 50, "per": "second", "inv": true})
        );
        assert_eq!(e[6], json!({"drop": null}));
        let r6 = rules[1];
        assert_eq!(r6["chain"], "rules_out");
        assert_eq!(
            r6["expr"][0]["match"]["left"]["payload"],
            json!({"protocol": "ip6", "field": "daddr"})
        );
        assert_eq!(r6["expr"][1]["match"]["right"], "ipv6-icmp");
        assert_eq!(
            r6["expr"].as_array().unwrap().last().unwrap(),
            &json!({"reject": null})
        );
        // Read back from a listing.
        let listing = json!({"nftables": [
            {"rule": {"chain": "rules_in", "comment": "ben|rl50_in_tcp_22|192.0.2.0/24|61500", "expr": []}},
            {"rule": {"chain": "input", "comment": "ben|x|192.0.2.1|5", "expr": []}},
            {"rule": {"chain": "rules_out", "comment": "someone else's", "expr": []}},
        ]});
        let h = parse_listing(&listing).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].set.as_str(), h[0].until_ms),
            ("rl50_in_tcp_22", Some(61_500))
        );
        assert_eq!(h[0].target.to_string(), "192.0.2.0/24");
    }

    #[test]
    fn a_listing_reads_back_hosts_prefixes_and_time_left() {
        let v = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "ben"}},
            {"set": {"name": "allow4", "elem": ["10.0.0.1"]}},
            {"set": {"name": "drop4_in", "elem": [
                {"elem": {"val": "192.0.2.1", "timeout": 60, "expires": 42}},
                {"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}}, "timeout": 9, "expires": 3}},
            ]}},
            {"set": {"name": "drop6_in"}},
        ]});
        let h = parse_listing(&v).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].expires_s, Some(42));
        assert_eq!(h[1].target.to_string(), "198.51.100.0/24");
        assert!(parse_listing(&json!({"x": 1})).is_err());
    }
}
