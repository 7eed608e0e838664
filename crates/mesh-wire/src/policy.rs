//! What a policy does, shared by the validators that make policies and
//! the agents that enforce them: its action, direction, protocol and
//! ports, its target, and the targets never enforced (pure). Text forms
//! (`drop`, `rate-limit`, `tcp`, `22`, `8000-8100`, `192.0.2.0/24`) are
//! what travels in [`crate::BlockPolicy`] and [`crate::PolicyRequest`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What to do with matching packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Dropped without a word.
    Drop,
    /// Refused (TCP reset, ICMP unreachable).
    Reject,
    /// Packets over this many a second dropped (per policy: the
    /// target's packets share one budget).
    RateLimit(u32),
}

/// The highest rate a rate limit may name (packets a second).
pub const MAX_RATE: u32 = 1_000_000;

impl Action {
    /// `drop` (also the empty string), `reject`, `rate-limit` with
    /// `rate` packets a second (1 to [`MAX_RATE`]; 0 for the others).
    pub fn parse(s: &str, rate: u32) -> Result<Action, String> {
        let a = match s {
            "drop" | "" => Action::Drop,
            "reject" => Action::Reject,
            "rate-limit" => {
                if rate == 0 || rate > MAX_RATE {
                    return Err(format!(
                        "rate-limit needs a rate of 1 to {MAX_RATE} packets a second, not {rate}"
                    ));
                }
                return Ok(Action::RateLimit(rate));
            }
            other => {
                return Err(format!(
                    "unknown action {other:?} (drop, reject, rate-limit)"
                ))
            }
        };
        if rate != 0 {
            return Err(format!(
                "a rate ({rate}/s) is only for rate-limit, not {s:?}"
            ));
        }
        Ok(a)
    }

    /// Its name in set names, acks and messages.
    pub fn name(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Reject => "reject",
            Action::RateLimit(_) => "rate-limit",
        }
    }

    /// The rate of a rate limit (0 for the others).
    pub fn rate(self) -> u32 {
        match self {
            Action::RateLimit(r) => r,
            _ => 0,
        }
    }
}

/// Which packets: from the target (ingress) or to it (egress).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Packets from the target.
    Ingress,
    /// Packets to the target.
    Egress,
}

impl Direction {
    /// `ingress` (the default), `egress`.
    pub fn parse(s: &str) -> Result<Direction, String> {
        match s {
            "ingress" | "" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            other => Err(format!("unknown direction {other:?} (ingress, egress)")),
        }
    }
}

impl Direction {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Which transport protocol a policy matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// Every packet.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (ICMPv6 for IPv6 targets).
    Icmp,
}

impl Protocol {
    /// `any` (also the empty string), `tcp`, `udp`, `icmp`.
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s {
            "" | "any" => Ok(Protocol::Any),
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "icmp" => Ok(Protocol::Icmp),
            other => Err(format!("unknown protocol {other:?} (any, tcp, udp, icmp)")),
        }
    }

    /// Its name as iptables and nftables match it for a target of that
    /// family (`ipv6-icmp` for ICMP to IPv6); none for every protocol.
    pub fn l4_name(self, v6: bool) -> Option<&'static str> {
        match self {
            Protocol::Any => None,
            Protocol::Icmp if v6 => Some("ipv6-icmp"),
            p => Some(p.name()),
        }
    }

    /// Its name in messages (`any` for [`Protocol::Any`]).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Any => "any",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

/// Destination ports `from..=to` (the service's port on the protected
/// host for ingress, the target's for egress).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub from: u16,
    pub to: u16,
}

impl Ports {
    /// `22` or `8000-8100` (1 to 65535, ascending); the empty string is
    /// every port.
    pub fn parse(s: &str) -> Result<Option<Ports>, String> {
        if s.is_empty() {
            return Ok(None);
        }
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let port = |x: &str| {
            x.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("ports {s:?}: {x:?} is not a port (1 to 65535)"))
        };
        let (from, to) = (port(a)?, port(b)?);
        if from > to {
            return Err(format!("ports {s:?}: the range runs backwards"));
        }
        Ok(Some(Ports { from, to }))
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

/// What a policy does to its target's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Spec {
    pub action: Action,
    pub direction: Direction,
    pub protocol: Protocol,
    pub ports: Option<Ports>,
}

impl Spec {
    /// Every packet from the target dropped: what an anomaly makes.
    pub const BLOCK: Spec = Spec {
        action: Action::Drop,
        direction: Direction::Ingress,
        protocol: Protocol::Any,
        ports: None,
    };

    /// From the text forms; ports need TCP or UDP.
    pub fn parse(
        action: &str,
        rate: u32,
        direction: &str,
        protocol: &str,
        ports: &str,
    ) -> Result<Spec, String> {
        let spec = Spec {
            action: Action::parse(action, rate)?,
            direction: Direction::parse(direction)?,
            protocol: Protocol::parse(protocol)?,
            ports: Ports::parse(ports)?,
        };
        if spec.ports.is_some() && !matches!(spec.protocol, Protocol::Tcp | Protocol::Udp) {
            return Err(format!(
                "ports {} need protocol tcp or udp, not {}",
                ports,
                spec.protocol.name()
            ));
        }
        Ok(spec)
    }

    /// Whether it is a whole-address drop or reject (the agents keep
    /// those in sets that take 100k entries; the others are rules).
    pub fn is_whole(&self) -> bool {
        matches!(self.action, Action::Drop | Action::Reject)
            && self.protocol == Protocol::Any
            && self.ports.is_none()
    }

    /// `drop ingress`, `rate-limit 100/s ingress tcp 22`…
    pub fn describe(&self) -> String {
        let mut s = match self.action {
            Action::RateLimit(r) => format!("rate-limit {r}/s"),
            a => a.name().to_string(),
        };
        s.push(' ');
        s.push_str(self.direction.name());
        if self.protocol != Protocol::Any {
            s.push(' ');
            s.push_str(self.protocol.name());
        }
        if let Some(p) = self.ports {
            s.push_str(&format!(" {p}"));
        }
        s
    }
}

/// The id of the policy a request makes: one per target, shape and
/// scope (sorted, without repeats), so asking again extends it.
pub fn request_policy_id(target: &Net, spec: &Spec, scope: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"ben/v1/request-policy\0");
    h.update(format!("{target}|{}|{}", spec.describe(), scope.join(",")).as_bytes());
    format!("req-{}", &h.finalize().to_hex()[..16])
}

/// A scope entry: a host name or agent id (1 to 128 of `A-Z a-z 0-9 .
/// _ -`), or a label `key=value` (the key may carry a `prefix/`, as
/// Kubernetes labels do) that agents configured with it match.
pub fn check_scope(s: &str) -> Result<(), String> {
    let word = |w: &str, extra: &[u8]| {
        !w.is_empty()
            && w.len() <= 128
            && w.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') || extra.contains(&b)
            })
    };
    let ok = match s.split_once('=') {
        Some((k, v)) => word(k, b"/") && word(v, b""),
        None => word(s, b""),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "scope {s:?}: a host name or agent id (letters, digits, '.', '_', '-'; at most 128), or a label key=value"
        ))
    }
}

/// An address or CIDR, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length (32 or 128 for one host).
    pub prefix: u8,
}

impl Net {
    /// `192.0.2.7`, `192.0.2.0/24`, `2001:db8::1`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Net::new(addr, prefix))
    }

    /// `addr/prefix` with the host bits cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Net {
        let addr = match addr {
            IpAddr::V4(a) => {
                let p = prefix.min(32);
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let p = prefix.min(128);
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Net { addr, prefix }
    }

    /// One host.
    pub fn host(addr: IpAddr) -> Net {
        Net::new(addr, if addr.is_ipv4() { 32 } else { 128 })
    }

    /// IPv6 or not.
    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether it is one host.
    pub fn is_host(&self) -> bool {
        self.prefix == if self.is_v6() { 128 } else { 32 }
    }

    /// Whether `a` is in it.
    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && Net::new(a, self.prefix).addr == self.addr
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, o: &Net) -> bool {
        if self.is_v6() != o.is_v6() {
            return false;
        }
        let p = self.prefix.min(o.prefix);
        Net::new(self.addr, p) == Net::new(o.addr, p)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// The widest target accepted: a /8 of IPv4, a /32 of IPv6. Wider ones
/// would cut off a large part of the internet on one detection.
pub const WIDEST_V4: u8 = 8;
/// See [`WIDEST_V4`].
pub const WIDEST_V6: u8 = 32;

/// Why a target can never be enforced, whatever the allowlist says.
pub fn refuse_target(n: &Net) -> Option<String> {
    let why = match n.addr {
        _ if n.prefix == 0 => "the whole address space",
        IpAddr::V4(_) if n.prefix < WIDEST_V4 => "wider than a /8",
        IpAddr::V6(_) if n.prefix < WIDEST_V6 => "wider than a /32",
        IpAddr::V4(a) if a.is_unspecified() => "the unspecified address",
        IpAddr::V4(a) if a.is_loopback() => "loopback",
        IpAddr::V4(a) if a.is_multicast() => "multicast",
        IpAddr::V4(a) if a.is_broadcast() => "broadcast",
        IpAddr::V4(a) if a.is_link_local() => "link-local",
        IpAddr::V6(a) if a.is_unspecified() => "the unspecified address",
        IpAddr::V6(a) if a.is_loopback() => "loopback",
        IpAddr::V6(a) if a.is_multicast() => "multicast",
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        _ => {
            // A network that holds loopback or multicast is refused too.
            let special = [
                Net::parse("127.0.0.0/8"),
                Net::parse("224.0.0.0/4"),
                Net::parse("::1"),
                Net::parse("ff00::/8"),
            ];
            return special
                .into_iter()
                .flatten()
                .find(|s| s.overlaps(n))
                .map(|s| format!("target {n} covers {s}, which is never blocked"));
        }
    };
    Some(format!("target {n} is {why}, which is never blocked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_normalise_and_overlap() {
        let n = Net::parse("10.1.2.3/8").unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.200.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.overlaps(&Net::parse("10.9.9.9").unwrap()));
        assert!(!n.overlaps(&Net::parse("::a00:1").unwrap()));
        assert_eq!(
            Net::parse("2001:db8::7").unwrap().to_string(),
            "2001:db8::7"
        );
        for bad in ["", "10.0.0.1/33", "::/129", "host", "10.0.0.1/x", "1.2.3"] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dangerous_targets_are_refused() {
        for t in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/7",
            "2001::/16",
            "0.0.0.0",
            "127.0.0.1",
            "::1",
            "224.0.0.5",
            "ff02::1",
            "255.255.255.255",
            "169.254.1.1",
            "fe80::1",
            "96.0.0.0/3",
        ] {
            assert!(refuse_target(&Net::parse(t).unwrap()).is_some(), "{t}");
        }
        for t in ["192.0.2.7", "198.51.100.0/24", "2001:db8::1", "10.0.0.0/8"] {
            assert_eq!(refuse_target(&Net::parse(t).unwrap()), None, "{t}");
        }
    }

    #[test]
    fn specs_parse_and_refuse_what_cannot_be_enforced() {
        let s = Spec::parse("rate-limit", 100, "", "tcp", "22").unwrap();
        assert_eq!(s.action, Action::RateLimit(100));
        assert_eq!(s.describe(), "rate-limit 100/s ingress tcp 22");
        assert!(!s.is_whole());
        assert!(Spec::parse("drop", 0, "", "", "").unwrap().is_whole());
        assert_eq!(Spec::parse("", 0, "", "", "").unwrap(), Spec::BLOCK);
        let p = Spec::parse("reject", 0, "egress", "udp", "8000-8100").unwrap();
        assert_eq!(
            p.ports,
            Some(Ports {
                from: 8000,
                to: 8100
            })
        );
        for (a, r, d, pr, po) in [
            ("rate-limit", 0, "", "", ""),
            ("rate-limit", MAX_RATE + 1, "", "", ""),
            ("drop", 5, "", "", ""),
            ("allow", 0, "", "", ""),
            ("drop", 0, "sideways", "", ""),
            ("drop", 0, "", "sctp", ""),
            ("drop", 0, "", "", "22"),
            ("drop", 0, "", "icmp", "22"),
            ("drop", 0, "", "tcp", "0"),
            ("drop", 0, "", "tcp", "90-80"),
            ("drop", 0, "", "tcp", "70000"),
        ] {
            assert!(
                Spec::parse(a, r, d, pr, po).is_err(),
                "{a} {r} {d} {pr} {po}"
            );
        }
        assert!(check_scope("web-1.example").is_ok());
        assert!(check_scope("app.kubernetes.io/name=web").is_ok());
        for bad in [
            "",
            "a b",
            "x;rm",
            &"h".repeat(129),
            "=web",
            "app=",
            "a=b=c",
            "k=v/w",
        ] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
    }
}
