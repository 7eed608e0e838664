//! What an agent enforces: a policy's action, target, direction and time,
//! and the guards every target passes before it reaches a host (pure).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What to do with matching packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Dropped without a word.
    Drop,
    /// Refused (TCP reset, ICMP unreachable).
    Reject,
}

impl Action {
    /// `drop`, `reject`; `rate-limit` is part of the model but this agent
    /// does not enforce it yet, and says so.
    pub fn parse(s: &str) -> Result<Action, String> {
        match s {
            "drop" | "" => Ok(Action::Drop),
            "reject" => Ok(Action::Reject),
            "rate-limit" => Err("action rate-limit is not enforced by this agent yet".into()),
            other => Err(format!(
                "unknown action {other:?} (drop, reject, rate-limit)"
            )),
        }
    }

    /// Its name in set names and acks.
    pub fn name(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Reject => "reject",
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

/// Networks never blocked: the host's own addresses, the validators, the
/// bus and the database, and what the operator configured.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    nets: Vec<(Net, String)>,
}

impl Allowlist {
    /// Adds `net`, saying why it is there (`validator`, `configured`…).
    pub fn add(&mut self, net: Net, why: &str) {
        self.nets.push((net, why.to_string()));
    }

    /// The allowlisted network `n` touches, and why it is allowlisted.
    pub fn hit(&self, n: &Net) -> Option<&(Net, String)> {
        self.nets.iter().find(|(a, _)| a.overlaps(n))
    }

    /// Every allowlisted network.
    pub fn nets(&self) -> impl Iterator<Item = &Net> {
        self.nets.iter().map(|(n, _)| n)
    }
}

/// A policy an agent checked and may enforce.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Stable id (one per target).
    pub id: String,
    /// What to do.
    pub action: Action,
    /// Whom.
    pub target: Net,
    /// Which way.
    pub direction: Direction,
    /// Until when (ms since the epoch, block time).
    pub expires_at_ms: u64,
    /// The anomalies behind it.
    pub anomalies: Vec<String>,
    /// The height of the block that carried it.
    pub height: u64,
    /// That block's time (ms since the epoch).
    pub block_time_ms: u64,
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
    fn the_allowlist_catches_overlaps_both_ways() {
        let mut a = Allowlist::default();
        a.add(Net::parse("10.0.0.5").unwrap(), "validator");
        a.add(Net::parse("192.168.0.0/16").unwrap(), "configured");
        assert!(a.hit(&Net::parse("10.0.0.0/24").unwrap()).is_some());
        assert!(a.hit(&Net::parse("192.168.4.4").unwrap()).is_some());
        assert!(a.hit(&Net::parse("10.0.0.6").unwrap()).is_none());
    }
}
