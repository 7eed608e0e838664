//! # The ledger: versions and the activation protocol
//!
//! The one explicit coordinator of intent changes (DESIGN.md §3). A version
//! is **staged** (its artifacts are in the store, nothing runs it), then
//! **deployed** through two phases:
//!
//! 1. *prepare*: the ledger announces the version's artifact keys; every
//!    **required** component (snapshotted at deploy time: those registered
//!    for the roles the bundle targets) fetches its artifacts, verifies the
//!    hashes, compiles, and acks `prepared` with the hashes it holds, or
//!    `failed` with the reason;
//! 2. *activate*: only when every required component has prepared does the
//!    ledger send `activate`; components swap and ack `active`; when all
//!    have, the version is **finalized** and becomes the active one.
//!
//! Any failure, hash mismatch or prepare timeout **aborts**: nobody was told
//! to activate, so the previous version keeps running everywhere
//! (invariants 1 and 2). Rollback is a deploy of an older version through
//! the same protocol. Every step is appended to the history.
//!
//! Pure core: [`Ledger::step`] takes an input and the current time and
//! returns what to send; it never reads a clock or does I/O, so a seeded
//! simulation can drive it (see the tests).

use std::collections::{BTreeMap, BTreeSet};

pub type ComponentId = String;
pub type VersionId = String;

/// Timeouts, in nanoseconds of the injected clock.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub prepare_ns: i64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            prepare_ns: 30_000_000_000,
        }
    }
}

/// A staged version: its artifacts and the roles that need each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub version: VersionId,
    /// Artifact name → BLAKE3 hex.
    pub artifacts: BTreeMap<String, String>,
    /// Role → artifact names it needs.
    pub roles: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Register {
        component: ComponentId,
        role: String,
    },
    Deregister {
        component: ComponentId,
    },
    Stage(Staged),
    Deploy {
        version: VersionId,
    },
    /// The component fetched, verified and compiled; `hashes` are what it
    /// holds (artifact name → BLAKE3 hex).
    Prepared {
        component: ComponentId,
        version: VersionId,
        hashes: BTreeMap<String, String>,
    },
    PrepareFailed {
        component: ComponentId,
        version: VersionId,
        reason: String,
    },
    Active {
        component: ComponentId,
        version: VersionId,
    },
    /// Time passes (checks timeouts).
    Tick,
    /// The shell cancels the running deploy because it could not record
    /// (or send) the step that would have told components to activate:
    /// nobody was told to activate, so it aborts like a failed prepare, in
    /// either phase. Never valid once `Activate` has gone out.
    Cancel {
        reason: String,
    },
    /// After a restart: the deploy of `version` had sent activate to
    /// `required` before the ledger stopped. The deploy is restored in the
    /// activating phase and activate is sent again (components ack it
    /// idempotently). If they do not all ack `active` within the prepare
    /// timeout, the deploy ends as [`Output::Interrupted`], never finalized.
    ResumeActivation {
        version: VersionId,
        required: Vec<ComponentId>,
    },
}

/// What the ledger asks the outside world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Prepare `version`: each component fetches the artifacts of its role.
    Announce {
        version: VersionId,
        required: Vec<ComponentId>,
    },
    Activate {
        version: VersionId,
        required: Vec<ComponentId>,
    },
    /// Discard the prepared `version`; keep running the current one.
    Abort {
        version: VersionId,
        reason: String,
    },
    Finalized {
        version: VersionId,
    },
    /// A resumed activation was not confirmed by every required component
    /// in time: the deploy ends, unfinished. Some components may run the
    /// version; the active version stays what it was. Nothing is sent.
    Interrupted {
        version: VersionId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("version {0} is not staged; run `benctl stage` first")]
    NotStaged(VersionId),
    #[error("version {0} is already staged with different artifacts; versions are immutable")]
    Conflict(VersionId),
    #[error("deploy of {running} is in progress; wait for it to finish or fail")]
    Busy { running: VersionId },
    #[error("version {0} is already active")]
    AlreadyActive(VersionId),
    #[error("no component is registered for the roles of {version} ({roles}); start them first")]
    NoComponents { version: VersionId, roles: String },
    #[error("no deploy is running")]
    NoDeploy,
    #[error("ack from {component} for {version}, which is not being deployed")]
    StaleAck {
        component: ComponentId,
        version: VersionId,
    },
}

/// Per-component state within a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentState {
    Preparing,
    Prepared,
    Failed(String),
    Activating,
    Active,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Preparing,
    Activating,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    pub version: VersionId,
    pub phase: Phase,
    pub started_ns: i64,
    pub components: BTreeMap<ComponentId, ComponentState>,
    /// Restored after a restart with activate sent again
    /// ([`Input::ResumeActivation`]); bounded by the prepare timeout.
    pub resumed: bool,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ns: i64,
    pub version: VersionId,
    pub what: String,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    timeouts: Timeouts,
    registry: BTreeMap<ComponentId, String>,
    staged: BTreeMap<VersionId, Staged>,
    active: Option<VersionId>,
    deploy: Option<Deploy>,
    history: Vec<Event>,
}

impl Ledger {
    pub fn new(timeouts: Timeouts) -> Self {
        Ledger {
            timeouts,
            ..Ledger::default()
        }
    }

    /// A ledger rebuilt from durable state (staged versions, the active
    /// version, the audit log) after a restart. The registry starts empty
    /// (components re-register with their next heartbeat) and no deploy is
    /// in progress: one that was running when the ledger stopped is resolved
    /// explicitly by the caller, never resumed implicitly (invariant 1):
    /// [`Input::Cancel`]-like abort if activate had not gone out, or
    /// [`Input::ResumeActivation`] if it had.
    pub fn restore(
        timeouts: Timeouts,
        staged: impl IntoIterator<Item = Staged>,
        active: Option<VersionId>,
        history: Vec<Event>,
    ) -> Self {
        Ledger {
            timeouts,
            staged: staged.into_iter().map(|s| (s.version.clone(), s)).collect(),
            active,
            history,
            ..Ledger::default()
        }
    }

    /// Every staged version, by version id.
    pub fn staged_versions(&self) -> impl Iterator<Item = &Staged> {
        self.staged.values()
    }

    /// Registered components and their roles.
    pub fn registry(&self) -> &BTreeMap<ComponentId, String> {
        &self.registry
    }

    /// Appends an audit line the shell observed (e.g. a deploy interrupted
    /// by a restart); it changes no state.
    pub fn note(&mut self, at_ns: i64, version: &str, what: impl Into<String>) {
        self.log(at_ns, version, what);
    }

    pub fn active(&self) -> Option<&VersionId> {
        self.active.as_ref()
    }

    pub fn deploy(&self) -> Option<&Deploy> {
        self.deploy.as_ref()
    }

    pub fn history(&self) -> &[Event] {
        &self.history
    }

    pub fn staged(&self, v: &str) -> Option<&Staged> {
        self.staged.get(v)
    }

    fn log(&mut self, at_ns: i64, version: &str, what: impl Into<String>) {
        self.history.push(Event {
            at_ns,
            version: version.to_string(),
            what: what.into(),
        });
    }

    fn abort(&mut self, now: i64, reason: String) -> Vec<Output> {
        let Some(d) = self.deploy.take() else {
            return vec![];
        };
        self.log(now, &d.version, format!("aborted: {reason}"));
        vec![Output::Abort {
            version: d.version,
            reason,
        }]
    }

    /// Applies one input at time `now`.
    pub fn step(&mut self, input: Input, now: i64) -> Result<Vec<Output>, LedgerError> {
        match input {
            Input::Register { component, role } => {
                self.registry.insert(component, role);
                Ok(vec![])
            }
            Input::Deregister { component } => {
                self.registry.remove(&component);
                // A required component that leaves mid-prepare can never
                // prepare: abort now rather than at the timeout.
                let leaving_required = self.deploy.as_ref().is_some_and(|d| {
                    d.phase == Phase::Preparing && d.components.contains_key(&component)
                });
                if leaving_required {
                    return Ok(self.abort(now, format!("{component} left during prepare")));
                }
                Ok(vec![])
            }
            Input::Stage(s) => {
                if let Some(old) = self.staged.get(&s.version) {
                    if *old != s {
                        return Err(LedgerError::Conflict(s.version));
                    }
                    return Ok(vec![]);
                }
                self.log(
                    now,
                    &s.version,
                    format!("staged ({} artifacts)", s.artifacts.len()),
                );
                self.staged.insert(s.version.clone(), s);
                Ok(vec![])
            }
            Input::Deploy { version } => {
                if let Some(d) = &self.deploy {
                    return Err(LedgerError::Busy {
                        running: d.version.clone(),
                    });
                }
                let Some(st) = self.staged.get(&version) else {
                    return Err(LedgerError::NotStaged(version));
                };
                if self.active.as_ref() == Some(&version) {
                    return Err(LedgerError::AlreadyActive(version));
                }
                let required: BTreeMap<ComponentId, ComponentState> = self
                    .registry
                    .iter()
                    .filter(|(_, role)| st.roles.contains_key(*role))
                    .map(|(c, _)| (c.clone(), ComponentState::Preparing))
                    .collect();
                if required.is_empty() {
                    return Err(LedgerError::NoComponents {
                        roles: st.roles.keys().cloned().collect::<Vec<_>>().join(", "),
                        version,
                    });
                }
                let list: Vec<ComponentId> = required.keys().cloned().collect();
                self.log(
                    now,
                    &version,
                    format!("deploy started; required: {}", list.join(", ")),
                );
                self.deploy = Some(Deploy {
                    version: version.clone(),
                    phase: Phase::Preparing,
                    started_ns: now,
                    components: required,
                    resumed: false,
                });
                Ok(vec![Output::Announce {
                    version,
                    required: list,
                }])
            }
            Input::Prepared {
                component,
                version,
                hashes,
            } => {
                let expected = self.expected_hashes(&component, &version);
                let d = self.current(&component, &version)?;
                if d.phase != Phase::Preparing {
                    return Ok(vec![]); // duplicate, already past prepare
                }
                if hashes != expected {
                    let reason = format!(
                        "{component} prepared artifacts whose hashes do not match the staged ones"
                    );
                    return Ok(self.abort(now, reason));
                }
                if let Some(s) = d.components.get_mut(&component) {
                    *s = ComponentState::Prepared;
                }
                let all = d
                    .components
                    .values()
                    .all(|s| *s == ComponentState::Prepared);
                let v = d.version.clone();
                self.log(now, &v, format!("{component} prepared"));
                if all {
                    let d = self.deploy.as_mut().ok_or_else(|| LedgerError::StaleAck {
                        component: component.clone(),
                        version: version.clone(),
                    })?;
                    d.phase = Phase::Activating;
                    for s in d.components.values_mut() {
                        *s = ComponentState::Activating;
                    }
                    let required: Vec<ComponentId> = d.components.keys().cloned().collect();
                    self.log(now, &v, "all prepared; activate sent");
                    return Ok(vec![Output::Activate {
                        version: v,
                        required,
                    }]);
                }
                Ok(vec![])
            }
            Input::PrepareFailed {
                component,
                version,
                reason,
            } => {
                let d = self.current(&component, &version)?;
                if d.phase != Phase::Preparing {
                    return Ok(vec![]);
                }
                if let Some(s) = d.components.get_mut(&component) {
                    *s = ComponentState::Failed(reason.clone());
                }
                Ok(self.abort(now, format!("{component} failed to prepare: {reason}")))
            }
            Input::Active { component, version } => {
                let d = self.current(&component, &version)?;
                if d.phase != Phase::Activating {
                    // `active` before `activate` was sent is a protocol
                    // violation by the component; ignore it, never count it.
                    return Ok(vec![]);
                }
                if let Some(s) = d.components.get_mut(&component) {
                    *s = ComponentState::Active;
                }
                let done = d.components.values().all(|s| *s == ComponentState::Active);
                let v = d.version.clone();
                self.log(now, &v, format!("{component} active"));
                if done {
                    self.deploy = None;
                    self.active = Some(v.clone());
                    self.log(now, &v, "finalized");
                    return Ok(vec![Output::Finalized { version: v }]);
                }
                Ok(vec![])
            }
            Input::Cancel { reason } => {
                let Some(d) = &self.deploy else {
                    return Err(LedgerError::NoDeploy);
                };
                if d.phase == Phase::Activating {
                    // The audit log said "activate sent"; it was not.
                    let v = d.version.clone();
                    self.log(now, &v, "activate withdrawn before it went out");
                }
                Ok(self.abort(now, reason))
            }
            Input::ResumeActivation { version, required } => {
                if let Some(d) = &self.deploy {
                    return Err(LedgerError::Busy {
                        running: d.version.clone(),
                    });
                }
                if !self.staged.contains_key(&version) {
                    return Err(LedgerError::NotStaged(version));
                }
                if self.active.as_ref() == Some(&version) {
                    return Err(LedgerError::AlreadyActive(version));
                }
                if required.is_empty() {
                    return Err(LedgerError::NoComponents {
                        version,
                        roles: "none recorded for the interrupted deploy".into(),
                    });
                }
                let components: BTreeMap<ComponentId, ComponentState> = required
                    .iter()
                    .map(|c| (c.clone(), ComponentState::Activating))
                    .collect();
                let list: Vec<ComponentId> = components.keys().cloned().collect();
                self.log(
                    now,
                    &version,
                    format!(
                        "resumed after a ledger restart: activate sent again to {}",
                        list.join(", ")
                    ),
                );
                self.deploy = Some(Deploy {
                    version: version.clone(),
                    phase: Phase::Activating,
                    started_ns: now,
                    components,
                    resumed: true,
                });
                Ok(vec![Output::Activate {
                    version,
                    required: list,
                }])
            }
            Input::Tick => {
                let resumed_out = self.deploy.as_ref().is_some_and(|d| {
                    d.resumed
                        && d.phase == Phase::Activating
                        && now.saturating_sub(d.started_ns) > self.timeouts.prepare_ns
                });
                if resumed_out {
                    let Some(d) = self.deploy.take() else {
                        return Ok(vec![]);
                    };
                    let waiting: Vec<&str> = d
                        .components
                        .iter()
                        .filter(|(_, s)| **s != ComponentState::Active)
                        .map(|(c, _)| c.as_str())
                        .collect();
                    let reason = format!(
                        "activate was sent again after a ledger restart but {} did not confirm in time; \
                         components may run {}: check `benctl status` and deploy again",
                        waiting.join(", "),
                        d.version
                    );
                    self.log(now, &d.version, format!("interrupted: {reason}"));
                    return Ok(vec![Output::Interrupted {
                        version: d.version,
                        reason,
                    }]);
                }
                let timed_out = self.deploy.as_ref().is_some_and(|d| {
                    d.phase == Phase::Preparing
                        && now.saturating_sub(d.started_ns) > self.timeouts.prepare_ns
                });
                if timed_out {
                    let waiting: Vec<String> = self
                        .deploy
                        .as_ref()
                        .map(|d| {
                            d.components
                                .iter()
                                .filter(|(_, s)| **s == ComponentState::Preparing)
                                .map(|(c, _)| c.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    return Ok(self.abort(
                        now,
                        format!("prepare timed out waiting for {}", waiting.join(", ")),
                    ));
                }
                Ok(vec![])
            }
        }
    }

    /// The hashes a component of this role must hold for `version`.
    fn expected_hashes(&self, component: &str, version: &str) -> BTreeMap<String, String> {
        let (Some(role), Some(st)) = (self.registry.get(component), self.staged.get(version))
        else {
            return BTreeMap::new();
        };
        st.roles
            .get(role)
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| st.artifacts.get(n).map(|h| (n.clone(), h.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn current(&mut self, component: &str, version: &str) -> Result<&mut Deploy, LedgerError> {
        match &mut self.deploy {
            Some(d) if d.version == version && d.components.contains_key(component) => Ok(d),
            _ => Err(LedgerError::StaleAck {
                component: component.to_string(),
                version: version.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod sim;
