//! The iptables + ipset backend, for hosts without nftables: one ipset per
//! action × direction × family (`hash:net` with timeouts: each entry has
//! its own), an allowlist ipset per family, and the agent's own chains
//! `BEN-INPUT` / `BEN-OUTPUT` (jumped to first from `INPUT` / `OUTPUT`)
//! holding one `-m set` rule per set, the allowlist's ACCEPT ahead of
//! them. Entries go in with `ipset restore -exist` (one invocation per
//! batch; `-exist` makes an add refresh an entry's timeout and a delete of
//! a missing entry harmless). Nothing outside its chains and sets is
//! touched.
//!
//! Policies with a protocol, ports or a rate limit are rules of their own
//! in `BEN-RULES-IN` / `BEN-RULES-OUT` (jumped to last from the agent's
//! chains), written whole with `iptables-restore --noflush` (declaring a
//! chain there empties it; one transaction per family), each matching
//! until its time (`-m time --datestop`, UTC) and carrying its set name,
//! target and time in its comment, as the nftables backend does. A rate
//! limit is `-m hashlimit --hashlimit-above N/sec` (burst N) with a bucket
//! of its own.
//!
//! Rendering and parsing are pure; [`Iptables`] runs the commands
//! (optionally in a network namespace, for tests).

use crate::backend::{Backend, Held};
use crate::model::{Action, Allowlist, Direction, Net};
use crate::schedule::{Change, SetKey};
use std::io::Write;
use std::process::{Command, Stdio};

/// The ipset name of a set.
pub fn ipset_name(s: &SetKey) -> String {
    format!("ben-{}", s.name())
}

fn allow_name(v6: bool) -> &'static str {
    if v6 {
        "ben-allow6"
    } else {
        "ben-allow4"
    }
}

fn chain_of(d: Direction) -> (&'static str, &'static str) {
    match d {
        Direction::Ingress => ("INPUT", "BEN-INPUT"),
        Direction::Egress => ("OUTPUT", "BEN-OUTPUT"),
    }
}

fn rules_chain(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "BEN-RULES-IN",
        Direction::Egress => "BEN-RULES-OUT",
    }
}

fn verdict(a: Action) -> &'static str {
    match a {
        Action::Reject => "REJECT",
        Action::Drop | Action::RateLimit(_) => "DROP",
    }
}

/// `ipset restore` input that creates the sets (if missing) and refills
/// the allowlists.
pub fn render_sets(allow: &Allowlist, maxelem: usize) -> String {
    let mut out = String::new();
    for s in SetKey::all() {
        out += &format!(
            "create {} hash:net family {} timeout 0 maxelem {maxelem}\n",
            ipset_name(&s),
            if s.v6 { "inet6" } else { "inet" }
        );
    }
    for v6 in [false, true] {
        out += &format!(
            "create {} hash:net family {}\nflush {}\n",
            allow_name(v6),
            if v6 { "inet6" } else { "inet" },
            allow_name(v6)
        );
        for n in allow.nets().filter(|n| n.is_v6() == v6) {
            out += &format!("add {} {n}\n", allow_name(v6));
        }
    }
    out
}

/// The rules of the agent's chains, as `(ip6?, chain, rule args)`.
pub fn render_rules() -> Vec<(bool, &'static str, Vec<String>)> {
    let mut out = vec![];
    for d in [Direction::Ingress, Direction::Egress] {
        let (_, chain) = chain_of(d);
        let dir = if d == Direction::Ingress {
            "src"
        } else {
            "dst"
        };
        for v6 in [false, true] {
            out.push((
                v6,
                chain,
                vec![
                    "-m",
                    "set",
                    "--match-set",
                    allow_name(v6),
                    dir,
                    "-j",
                    "ACCEPT",
                ]
                .into_iter()
                .map(String::from)
                .collect(),
            ));
        }
        for s in SetKey::all().into_iter().filter(|s| s.direction() == d) {
            let verdict = verdict(s.action());
            out.push((
                s.v6,
                chain,
                vec![
                    "-m".into(),
                    "set".into(),
                    "--match-set".into(),
                    ipset_name(&s),
                    dir.into(),
                    "-j".into(),
                    verdict.into(),
                ],
            ));
        }
        for v6 in [false, true] {
            out.push((v6, chain, vec!["-j".into(), rules_chain(d).into()]));
        }
    }
    out
}

/// `iptables-restore --noflush` input that makes the jump chains
/// (`BEN-INPUT`, `BEN-OUTPUT`) of one family hold exactly their rules
/// ([`render_rules`]), made when missing: one transaction, so the host is
/// never without them while they are rewritten.
pub fn render_jump_chains(v6: bool) -> String {
    let mut out = String::from("*filter\n");
    for d in [Direction::Ingress, Direction::Egress] {
        // Declaring a chain with --noflush creates or empties it.
        out += &format!(":{} - [0:0]\n", chain_of(d).1);
    }
    for (r6, chain, args) in render_rules() {
        if r6 == v6 {
            out += &format!("-A {chain} {}\n", args.join(" "));
        }
    }
    out + "COMMIT\n"
}

/// `iptables-restore --noflush` input (`v6`: for `ip6tables-restore`)
/// that makes the rules' chains hold exactly the rules of that family in
/// `rules` (those whose time is up left out).
pub fn render_rule_chains(rules: &[Change], v6: bool, now_ms: u64) -> String {
    let mut out = String::from("*filter\n");
    for d in [Direction::Ingress, Direction::Egress] {
        out += &format!(":{} - [0:0]\n", rules_chain(d));
    }
    for c in rules
        .iter()
        .filter(|c| c.target.is_v6() == v6 && c.expires_at_ms > now_ms)
    {
        let spec = c.set.spec;
        let addr = if spec.direction == Direction::Ingress {
            "-s"
        } else {
            "-d"
        };
        out += &format!("-A {} {addr} {}", rules_chain(spec.direction), c.target);
        if let Some(p) = spec.protocol.l4_name(v6) {
            out += &format!(" -p {p}");
        }
        if let Some(p) = spec.ports {
            out += &format!(" --dport {}:{}", p.from, p.to);
        }
        let until = ben_time::rfc3339::format_rfc3339(
            (c.expires_at_ms.div_ceil(1_000) as i64).saturating_mul(1_000_000_000),
        );
        out += &format!(" -m time --datestop {}", until.trim_end_matches('Z'));
        let comment = crate::nft::rule_comment(c);
        if let Action::RateLimit(r) = spec.action {
            // A bucket of its own, named after the rule.
            let name = &blake3::hash(comment.as_bytes()).to_hex()[..12];
            out += &format!(
                " -m hashlimit --hashlimit-above {r}/sec --hashlimit-burst {r} --hashlimit-name ben{name}"
            );
        }
        out += &format!(
            " -m comment --comment \"{comment}\" -j {}\n",
            verdict(spec.action)
        );
    }
    out + "COMMIT\n"
}

/// The rules in `iptables -S` output of the rules' chains, by comment.
pub fn parse_rule_listing(text: &str) -> Vec<Held> {
    text.lines()
        .filter_map(|l| {
            let at = l.find("--comment ")? + "--comment ".len();
            let c = l[at..].trim_start_matches('"');
            let end = c.find(['"', ' ']).unwrap_or(c.len());
            crate::nft::parse_rule_comment(&c[..end])
        })
        .collect()
}

/// `ipset restore -exist` input for a batch.
pub fn render_changes(changes: &[Change], remove: &[(SetKey, Net)], now_ms: u64) -> String {
    let mut out = String::new();
    for (s, n) in remove {
        out += &format!("del {} {n}\n", ipset_name(s));
    }
    for c in changes {
        out += &format!(
            "add {} {} timeout {}\n",
            ipset_name(&c.set),
            c.target,
            crate::nft::timeout_s(c.expires_at_ms, now_ms)
        );
    }
    out
}

/// Entries in `ipset save` output, for the agent's timeout sets.
pub fn parse_save(text: &str) -> Result<Vec<Held>, String> {
    let mut out = vec![];
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("add") {
            continue;
        }
        let Some(set) = w.next().and_then(|s| s.strip_prefix("ben-")) else {
            continue;
        };
        if set.starts_with("allow") {
            continue;
        }
        let target = Net::parse(w.next().ok_or_else(|| format!("ipset line {line:?}"))?)?;
        let mut expires_s = None;
        while let Some(k) = w.next() {
            if k == "timeout" {
                expires_s = w.next().and_then(|v| v.parse().ok());
            }
        }
        out.push(Held {
            set: set.to_string(),
            target,
            expires_s,
            until_ms: None,
        });
    }
    Ok(out)
}

/// Runs ipset and iptables, in the network namespace `netns` when set.
pub struct Iptables {
    /// A network namespace (`ip netns exec`), for tests.
    pub netns: Option<String>,
    /// Entries per set at most (ipset's `maxelem`).
    pub maxelem: usize,
}

impl Iptables {
    fn command(&self, bin: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        }
    }

    fn run(&self, bin: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = self
            .command(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!("running {bin}: {e} (are the iptables and ipset packages installed?)")
            })?;
        if let (Some(mut i), Some(text)) = (child.stdin.take(), stdin) {
            i.write_all(text.as_bytes())
                .map_err(|e| format!("writing to {bin}: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {bin}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{bin} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Backend for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn setup(&mut self, allow: &Allowlist) -> Result<(), String> {
        self.run(
            "ipset",
            &["restore", "-exist"],
            Some(&render_sets(allow, self.maxelem)),
        )?;
        for v6 in [false, true] {
            let bin = if v6 { "ip6tables" } else { "iptables" };
            for d in [Direction::Ingress, Direction::Egress] {
                // The rules' chains: made if missing, left as they are.
                if self
                    .run(bin, &["-w", "-L", rules_chain(d), "-n"], None)
                    .is_err()
                {
                    self.run(bin, &["-w", "-N", rules_chain(d)], None)?;
                }
            }
            // The jump chains emptied and refilled in one transaction:
            // flushing them and adding rules one command at a time left
            // the host unprotected in between (an agent restarting let
            // blocked sources through for as long as that took).
            let restore = if v6 {
                "ip6tables-restore"
            } else {
                "iptables-restore"
            };
            self.run(restore, &["--noflush", "-w"], Some(&render_jump_chains(v6)))?;
            for d in [Direction::Ingress, Direction::Egress] {
                let (hook, chain) = chain_of(d);
                // Jumped to first.
                if self
                    .run(bin, &["-w", "-C", hook, "-j", chain], None)
                    .is_err()
                {
                    self.run(bin, &["-w", "-I", hook, "1", "-j", chain], None)?;
                }
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        changes: &[Change],
        remove: &[(SetKey, Net)],
        now_ms: u64,
    ) -> Result<(), String> {
        if changes.is_empty() && remove.is_empty() {
            return Ok(());
        }
        self.run(
            "ipset",
            &["restore", "-exist"],
            Some(&render_changes(changes, remove, now_ms)),
        )
        .map(|_| ())
    }

    fn rules(&mut self, rules: &[Change], now_ms: u64) -> Result<(), String> {
        for v6 in [false, true] {
            let bin = if v6 {
                "ip6tables-restore"
            } else {
                "iptables-restore"
            };
            self.run(
                bin,
                &["--noflush", "-w"],
                Some(&render_rule_chains(rules, v6, now_ms)),
            )?;
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Vec<Held>, String> {
        let mut out = vec![];
        for s in SetKey::all() {
            out.extend(parse_save(&self.run(
                "ipset",
                &["save", &ipset_name(&s)],
                None,
            )?)?);
        }
        for bin in ["iptables", "ip6tables"] {
            for d in [Direction::Ingress, Direction::Egress] {
                out.extend(parse_rule_listing(&self.run(
                    bin,
                    &["-w", "-S", rules_chain(d)],
                    None,
                )?));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_rules_and_batches_render_as_ipset_and_iptables_take_them() {
        let mut a = Allowlist::default();
        a.add(Net::parse("10.0.0.1").unwrap(), "validator");
        let sets = render_sets(&a, 200_000);
        assert!(
            sets.contains("create ben-drop4_in hash:net family inet timeout 0 maxelem 200000\n")
        );
        assert!(sets.contains("flush ben-allow4\nadd ben-allow4 10.0.0.1\n"));
        let rules = render_rules();
        let input: Vec<_> = rules
            .iter()
            .filter(|r| r.1 == "BEN-INPUT" && !r.0)
            .collect();
        assert!(
            input[0].2.contains(&"ACCEPT".to_string()),
            "allowlist first"
        );
        assert_eq!(input.len(), 1 + 4 + 1);
        assert_eq!(input[5].2, ["-j", "BEN-RULES-IN"], "rules last");
        let set = SetKey::set(Action::Drop, Direction::Ingress, false, true);
        let c = Change {
            set,
            target: Net::parse("192.0.2.0/24").unwrap(),
            expires_at_ms: 61_000,
            policy: "p".into(),
            height: 1,
            replace: false,
        };
        let text = render_changes(&[c], &[(set, Net::parse("192.0.2.9").unwrap())], 1_000);
        assert_eq!(
            text,
            "del ben-drop4_in_net 192.0.2.9\nadd ben-drop4_in_net 192.0.2.0/24 timeout 60\n"
        );
    }

    #[test]
    fn the_jump_chains_are_rewritten_in_one_transaction() {
        let t = render_jump_chains(false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(lines[1..3], [":BEN-INPUT - [0:0]", ":BEN-OUTPUT - [0:0]"]);
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        // In each chain: the allowlist first, the verdict sets, then the
        // rules' chain; IPv4 sets only.
        let input: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("-A BEN-INPUT "))
            .copied()
            .collect();
        assert!(
            input[0].contains("--match-set ben-allow4 src -j ACCEPT"),
            "{t}"
        );
        assert_eq!(*input.last().unwrap(), "-A BEN-INPUT -j BEN-RULES-IN");
        assert!(input.iter().any(|l| l.ends_with("-j DROP")), "{t}");
        assert!(!t.contains("allow6"), "{t}");
        assert!(render_jump_chains(true).contains("ben-allow6"));
    }

    #[test]
    fn rules_render_for_iptables_restore_and_read_back() {
        let c = |spec: &str, rate: u32, dir: &str, proto: &str, ports: &str, t: &str| {
            let spec = crate::model::Spec::parse(spec, rate, dir, proto, ports).unwrap();
            let target = Net::parse(t).unwrap();
            Change {
                set: SetKey {
                    spec,
                    v6: target.is_v6(),
                    net: !target.is_host(),
                },
                target,
                // 2026-12-05T12:00:00Z, less half a second.
                expires_at_ms: 1_796_472_000_000 - 500,
                policy: "req-1".into(),
                height: 1,
                replace: false,
            }
        };
        let rules = [
            c("rate-limit", 50, "", "tcp", "22", "192.0.2.0/24"),
            c("reject", 0, "egress", "icmp", "", "2001:db8::7"),
            c("drop", 0, "", "udp", "53-60", "192.0.2.9"),
        ];
        let v4 = render_rule_chains(&rules, false, 0);
        let lines: Vec<&str> = v4.lines().collect();
        assert_eq!(
            lines[..3],
            ["*filter", ":BEN-RULES-IN - [0:0]", ":BEN-RULES-OUT - [0:0]"]
        );
        assert!(lines[3].starts_with(
            "-A BEN-RULES-IN -s 192.0.2.0/24 -p tcp --dport 22:22 -m time --datestop 2026-12-05T12:00:00 -m hashlimit --hashlimit-above 50/sec --hashlimit-burst 50 --hashlimit-name ben"
        ), "{}", lines[3]);
        assert!(lines[3].ends_with(
            " -m comment --comment \"ben|rl50_in_tcp_22|192.0.2.0/24|1796471999500\" -j DROP"
        ));
        assert!(lines[4].starts_with("-A BEN-RULES-IN -s 192.0.2.9 -p udp --dport 53:60 -m time"));
        assert_eq!(lines[5], "COMMIT");
        let v6 = render_rule_chains(&rules, true, 0);
        assert!(
            v6.contains("-A BEN-RULES-OUT -d 2001:db8::7 -p ipv6-icmp -m time"),
            "{v6}"
        );
        assert!(v6.contains("-j REJECT"));
        assert_eq!(
            render_rule_chains(&rules, false, 1_796_472_000_000)
                .lines()
                .count(),
            4
        );
        let listing = "-N BEN-RULES-IN\n-A BEN-RULES-IN -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -m comment --comment \"ben|rl50_in_tcp_22|192.0.2.0/24|1796471999500\" -j DROP\n-A BEN-RULES-IN -s 1.2.3.4/32 -j DROP\n";
        let h = parse_rule_listing(listing);
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].set.as_str(), h[0].until_ms),
            ("rl50_in_tcp_22", Some(1_796_471_999_500))
        );
    }

    #[test]
    fn save_output_reads_back() {
        let h = parse_save(
            "create ben-drop4_in hash:net family inet hashsize 1024 maxelem 65536 timeout 0\n\
             add ben-drop4_in 10.1.0.0/16 timeout 29\nadd ben-drop4_in 10.2.3.4 timeout 59\n\
             add ben-allow4 10.0.0.1\nadd theirs 1.2.3.4\n",
        )
        .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].set.as_str(), h[0].expires_s), ("drop4_in", Some(29)));
        assert_eq!(h[1].target.to_string(), "10.2.3.4");
    }
}
