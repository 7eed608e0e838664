//! When attacks come from many addresses of one network, the AI service
//! asks the validators to block the network (pure: time is an argument).
//!
//! Each published anomaly is filed under its source's network (a /24 of
//! IPv4, a /64 of IPv6). When anomalies from at least `min_sources`
//! distinct addresses of one network were published within `window_ms`,
//! a [`Ask`] names the network and the anomalies (the newest of each
//! source, at most [`MAX_CITED`]); the shell signs it as a
//! `PolicyRequest` on `ai.policy.v1`. A network is asked for again only
//! after `ttl_ms / 2` (by then the first request's policy is half
//! through). Off by default (`min_sources` 0): one block of a network
//! cuts off every host in it, the innocent ones too, so an operator
//! turns it on knowing their traffic.

use ben_mesh_wire::policy::Net;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// At most this many anomalies are cited by one request (the validators
/// take 64).
pub const MAX_CITED: usize = 32;

/// Settings.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Distinct sources of one network that make a request (0: never;
    /// otherwise at least 2, which the validators require).
    pub min_sources: usize,
    /// Within this long (ms).
    pub window_ms: u64,
    /// Prefix lengths of the networks.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// The TTL asked for (ms).
    pub ttl_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            min_sources: 0,
            window_ms: 60_000,
            prefix_v4: 24,
            prefix_v6: 64,
            ttl_ms: 3_600_000,
        }
    }
}

impl NetworkConfig {
    /// Why these settings cannot run, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.min_sources == 1 {
            return Err(
                "network_sources = 1 would block a whole network for one address; 0 (off) or at least 2".into(),
            );
        }
        Ok(())
    }
}

/// A network to ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    pub target: Net,
    pub anomalies: Vec<String>,
    pub sources: usize,
}

/// See the module documentation.
#[derive(Default)]
pub struct Networks {
    cfg: NetworkConfig,
    /// Per network: (published at, anomaly id, source), oldest first.
    seen: HashMap<Net, VecDeque<(u64, String, IpAddr)>>,
    /// When each network was last asked for.
    asked: HashMap<Net, u64>,
}

impl Networks {
    pub fn new(cfg: NetworkConfig) -> Networks {
        Networks {
            cfg,
            ..Networks::default()
        }
    }

    /// The TTL to ask for.
    pub fn ttl_ms(&self) -> u64 {
        self.cfg.ttl_ms
    }

    /// A published anomaly from `source`: the network to ask for, if this
    /// one makes it.
    pub fn observe(&mut self, id: &str, source: IpAddr, now_ms: u64) -> Option<Ask> {
        if self.cfg.min_sources < 2 {
            return None;
        }
        let prefix = if source.is_ipv4() {
            self.cfg.prefix_v4
        } else {
            self.cfg.prefix_v6
        };
        let net = Net::new(source, prefix);
        let since = now_ms.saturating_sub(self.cfg.window_ms);
        // Bounded: networks with nothing in the window go.
        if self.seen.len() > 10_000 {
            self.seen
                .retain(|_, q| q.back().is_some_and(|(t, _, _)| *t >= since));
            let again = now_ms.saturating_sub(self.cfg.ttl_ms / 2);
            self.asked.retain(|_, t| *t >= again);
        }
        let q = self.seen.entry(net).or_default();
        q.push_back((now_ms, id.to_string(), source));
        while q.front().is_some_and(|(t, _, _)| *t < since) || q.len() > 4 * MAX_CITED {
            q.pop_front();
        }
        // The newest anomaly of each source.
        let mut newest: Vec<(&String, IpAddr)> = vec![];
        for (_, id, src) in q.iter().rev() {
            if !newest.iter().any(|(_, s)| s == src) {
                newest.push((id, *src));
            }
        }
        if newest.len() < self.cfg.min_sources {
            return None;
        }
        if self
            .asked
            .get(&net)
            .is_some_and(|t| now_ms < t + self.cfg.ttl_ms / 2)
        {
            return None;
        }
        self.asked.insert(net, now_ms);
        Some(Ask {
            target: net,
            sources: newest.len(),
            anomalies: newest
                .into_iter()
                .take(MAX_CITED)
                .map(|(id, _)| id.clone())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_network_is_asked_for_once_enough_of_its_addresses_attack_in_the_window() {
        let mut n = Networks::new(NetworkConfig {
            min_sources: 3,
            ..NetworkConfig::default()
        });
        assert_eq!(n.observe("a1", ip("198.51.100.1"), 1_000), None);
        // The same source again, and another network: not three sources.
        assert_eq!(n.observe("a2", ip("198.51.100.1"), 2_000), None);
        assert_eq!(n.observe("b1", ip("203.0.113.9"), 2_000), None);
        assert_eq!(n.observe("a3", ip("198.51.100.2"), 3_000), None);
        let ask = n.observe("a4", ip("198.51.100.3"), 4_000).unwrap();
        assert_eq!(ask.target.to_string(), "198.51.100.0/24");
        assert_eq!(
            ask.anomalies,
            ["a4", "a3", "a2"],
            "the newest of each source"
        );
        assert_eq!(ask.sources, 3);
        // Asked: not again within half the TTL, then again.
        assert_eq!(n.observe("a5", ip("198.51.100.4"), 5_000), None);
        assert!(
            n.observe("a6", ip("198.51.100.5"), 1_804_001).is_none(),
            "window emptied"
        );
        assert!(n.observe("a7", ip("198.51.100.6"), 1_804_002).is_none());
        assert!(n.observe("a8", ip("198.51.100.7"), 1_804_003).is_some());
    }

    #[test]
    fn old_anomalies_fall_out_of_the_window_and_off_asks_nothing() {
        let mut n = Networks::new(NetworkConfig {
            min_sources: 2,
            window_ms: 10_000,
            ..NetworkConfig::default()
        });
        assert_eq!(n.observe("x1", ip("2001:db8:0:1::5"), 0), None);
        assert_eq!(
            n.observe("x2", ip("2001:db8:0:1::6"), 20_000),
            None,
            "x1 is too old"
        );
        let ask = n.observe("x3", ip("2001:db8:0:1::7"), 21_000).unwrap();
        assert_eq!(ask.target.to_string(), "2001:db8:0:1::/64");
        let mut off = Networks::new(NetworkConfig::default());
        for k in 0..50 {
            assert_eq!(off.observe("y", ip(&format!("198.51.100.{k}")), 0), None);
        }
        assert!(NetworkConfig {
            min_sources: 1,
            ..NetworkConfig::default()
        }
        .check()
        .is_err());
    }
}
