//! What an agent enforces: a policy's action, target, direction, ports
//! and time, and the guards every target passes before it reaches a host
//! (pure). The shared pieces live in [`ben_mesh_wire::policy`], as the
//! validators make policies of the same parts.

pub use ben_mesh_wire::policy::{
    check_scope, refuse_target, request_policy_id, Action, Direction, Net, Ports, Protocol, Spec,
    WIDEST_V4, WIDEST_V6,
};

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
    /// Stable id (one per target, or per target, shape and scope).
    pub id: String,
    /// What to do, which way, to which packets.
    pub spec: Spec,
    /// Whom.
    pub target: Net,
    /// Until when (ms since the epoch, block time).
    pub expires_at_ms: u64,
    /// The anomalies behind it.
    pub anomalies: Vec<String>,
    /// The height of the block that carried it.
    pub height: u64,
    /// That block's time (ms since the epoch).
    pub block_time_ms: u64,
    /// The agents that enforce it: agent ids, host names or labels
    /// (`key=value`); empty: all.
    pub scope: Vec<String>,
}

impl Policy {
    /// Whether the agent `id` on host `host`, labelled `labels`, enforces
    /// it.
    pub fn in_scope(&self, id: &str, host: &str, labels: &[String]) -> bool {
        self.scope.is_empty()
            || self
                .scope
                .iter()
                .any(|s| s == id || s == host || labels.contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
