//! Roles: what a key may sign (DESIGN.md §4, invariant 8).
//!
//! Every trusted key is bound, when it is provisioned, to one component id
//! and that id's [`Role`]; [`crate::open`] refuses a message whose kind the
//! signer's role may not sign, and a body that names another component
//! than the signer. The role comes from provisioning, never from a message:
//! an id's role is its stem (`spine-2` → spine, `mesh-1` → the AI service,
//! `control` → the ledger), see [`Role::of_id`].
//!
//! [`SIGNS`] is the one table of who signs what:
//!
//! | role | id stem | kinds it signs |
//! |---|---|---|
//! | ledger | `control` | `announce` `activate` `abort` `bee_revocations` `dead_letter` `metrics` |
//! | sidecar | `sidecar` | `ack` `heartbeat` `bee_roster` `dead_letter` `metrics` |
//! | proxy, spine, Lucius | `proxy` `spine` `lucius` | `ack` `heartbeat` `dead_letter` `metrics` |
//! | detector | `detector` | `ack` `heartbeat` `signal` `dead_letter` `metrics` |
//! | AI service | `mesh` | `anomaly` `evidence` `dead_letter` `metrics` |
//! | validator | `validator` | `commit` `policy` `reputation` `dead_letter` `metrics` |
//! | enforcement agent | `enforcer` | `policy_ack` `dead_letter` `metrics` |
//! | sensor | `sensor` | `flows` `dead_letter` `metrics` |
//!
//! Every role writes dead letters about what it refused, signed as itself.
//! `commit`, `policy`, `reputation` and `policy_ack` are the CyberMesh
//! kinds of DESIGN.md §3 whose messages come with the validator and
//! enforcement crates.

/// The id of the ledger (the control process), in both modes.
pub const LEDGER_ID: &str = "control";

/// What a component is, as far as signing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Ledger,
    Sidecar,
    Proxy,
    Spine,
    Detector,
    Lucius,
    /// The CyberMesh AI service (`mesh-<n>`).
    AiService,
    /// A CyberMesh validator.
    Validator,
    /// A CyberMesh enforcement agent.
    Enforcer,
    /// A CyberMesh sensor (flows from an interface or a capture).
    Sensor,
}

/// Who signs what: each role and the kinds (`ben/v1/<kind>`) it may sign.
pub const SIGNS: &[(Role, &[&str])] = &[
    (
        Role::Ledger,
        &[
            "announce",
            "activate",
            "abort",
            "bee_revocations",
            "dead_letter",
            "metrics",
        ],
    ),
    (
        Role::Sidecar,
        &["ack", "heartbeat", "bee_roster", "dead_letter", "metrics"],
    ),
    (Role::Proxy, &["ack", "heartbeat", "dead_letter", "metrics"]),
    (Role::Spine, &["ack", "heartbeat", "dead_letter", "metrics"]),
    (
        Role::Detector,
        &["ack", "heartbeat", "signal", "dead_letter", "metrics"],
    ),
    (
        Role::Lucius,
        &["ack", "heartbeat", "dead_letter", "metrics"],
    ),
    (
        Role::AiService,
        &[
            "anomaly",
            "evidence",
            "policy_request",
            "dead_letter",
            "metrics",
        ],
    ),
    (
        Role::Validator,
        &["commit", "policy", "reputation", "dead_letter", "metrics"],
    ),
    (Role::Enforcer, &["policy_ack", "dead_letter", "metrics"]),
    (Role::Sensor, &["flows", "dead_letter", "metrics"]),
];

impl Role {
    /// Every role, in [`SIGNS`] order.
    pub const ALL: [Role; 10] = [
        Role::Ledger,
        Role::Sidecar,
        Role::Proxy,
        Role::Spine,
        Role::Detector,
        Role::Lucius,
        Role::AiService,
        Role::Validator,
        Role::Enforcer,
        Role::Sensor,
    ];

    /// The role's name: what heartbeats and the component table call it
    /// (`spine`, `mesh`, …; the ledger is `ledger`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Ledger => "ledger",
            Role::Sidecar => "sidecar",
            Role::Proxy => "proxy",
            Role::Spine => "spine",
            Role::Detector => "detector",
            Role::Lucius => "lucius",
            Role::AiService => "mesh",
            Role::Validator => "validator",
            Role::Enforcer => "enforcer",
            Role::Sensor => "sensor",
        }
    }

    /// The role an id was provisioned for: its stem before the first `-`
    /// (`spine-2` → spine, `mesh-1` → the AI service), `control` for the
    /// ledger. `None` for an id of no role.
    pub fn of_id(id: &str) -> Option<Role> {
        if id == LEDGER_ID {
            return Some(Role::Ledger);
        }
        let (stem, rest) = id.split_once('-')?;
        if rest.is_empty() {
            return None;
        }
        Role::ALL
            .into_iter()
            .find(|r| *r != Role::Ledger && r.name() == stem)
    }

    /// The kinds this role may sign.
    pub fn signs(self) -> &'static [&'static str] {
        SIGNS
            .iter()
            .find(|(r, _)| *r == self)
            .map_or(&[], |(_, kinds)| *kinds)
    }

    /// May a key of this role sign messages of `kind`?
    pub fn may_sign(self, kind: &str) -> bool {
        self.signs().contains(&kind)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table, spelled out: a change to who signs what changes this test.
    #[test]
    fn who_signs_what() {
        let table: Vec<(&str, Vec<&str>)> = Role::ALL
            .iter()
            .map(|r| (r.name(), r.signs().to_vec()))
            .collect();
        let common = ["dead_letter", "metrics"];
        let with = |k: &[&'static str]| -> Vec<&'static str> {
            k.iter().chain(common.iter()).copied().collect()
        };
        assert_eq!(
            table,
            vec![
                (
                    "ledger",
                    with(&["announce", "activate", "abort", "bee_revocations"])
                ),
                ("sidecar", with(&["ack", "heartbeat", "bee_roster"])),
                ("proxy", with(&["ack", "heartbeat"])),
                ("spine", with(&["ack", "heartbeat"])),
                ("detector", with(&["ack", "heartbeat", "signal"])),
                ("lucius", with(&["ack", "heartbeat"])),
                ("mesh", with(&["anomaly", "evidence", "policy_request"])),
                ("validator", with(&["commit", "policy", "reputation"])),
                ("enforcer", with(&["policy_ack"])),
                ("sensor", with(&["flows"])),
            ]
        );
        // Only the ledger announces, activates and aborts.
        for kind in ["announce", "activate", "abort", "bee_revocations"] {
            let signers: Vec<Role> = Role::ALL.into_iter().filter(|r| r.may_sign(kind)).collect();
            assert_eq!(signers, vec![Role::Ledger], "{kind}");
        }
        assert_eq!(SIGNS.len(), Role::ALL.len());
        assert!(!Role::Spine.may_sign("no_such_kind"));
    }

    #[test]
    fn an_ids_role_is_its_stem() {
        assert_eq!(Role::of_id("control"), Some(Role::Ledger));
        assert_eq!(Role::of_id("spine-2"), Some(Role::Spine));
        assert_eq!(Role::of_id("mesh-1"), Some(Role::AiService));
        assert_eq!(Role::of_id("lucius-10"), Some(Role::Lucius));
        assert_eq!(Role::of_id("enforcer-a"), Some(Role::Enforcer));
        assert_eq!(Role::of_id("sensor-edge-1"), Some(Role::Sensor));
        for bad in [
            "",
            "spine",
            "spine-",
            "ledger-1",
            "control-1",
            "x-1",
            "Spine-1",
        ] {
            assert_eq!(Role::of_id(bad), None, "{bad}");
        }
        for r in Role::ALL {
            assert_eq!(r.to_string(), r.name());
        }
    }
}
