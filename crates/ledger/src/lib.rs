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
//! Once activate is sent the version is **committed**: a required
//! component that leaves, or restarts and loses what it prepared, is marked
//! `Dropped` and no longer holds the deploy back; after finalize, every
//! registered component that does not run the active version (it joined or
//! came back during the deploy) is brought to it by a **catch-up**: the same
//! announce → prepared (hashes checked) → activate → active exchange, for
//! that component alone. A component starting up loads
//! [`Ledger::committed`], never a merely prepared version.
//!
//! **Restarts.** [`Ledger::durable`] is what the shell persists after every
//! step (before sending that step's outputs); [`Ledger::recover`] rebuilds
//! the ledger from it and resolves a deploy that was in flight explicitly:
//! before activate it is aborted with the reason recorded ("ledger
//! restarted during deploy; nothing activated"); after activate it is
//! resumed (activate sent again). A resumed deploy finalizes like any other
//! (required components that are gone are dropped and catch up later), or,
//! if a component that is registered still has not confirmed within the
//! prepare timeout of the restart, it ends [`Output::Interrupted`] naming
//! it, so the operator gets a definite outcome instead of a deploy that
//! blocks every other.
//!
//! **The database down.** When the shell cannot record the step that
//! starts a deploy or sends its first activate, it withholds that step's
//! messages and ends the deploy with [`Input::Cancel`]: nobody was told to
//! activate, so it aborts like a failed prepare.
//!
//! Pure core: [`Ledger::step`] takes an input and the current time and
//! returns what to send; it never reads a clock or does I/O, so a seeded
//! simulation can drive it (see `sim.rs`).

use std::collections::{BTreeMap, BTreeSet};

pub type ComponentId = String;
pub type VersionId = String;

/// Timeouts, in nanoseconds of the injected clock.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub prepare_ns: i64,
    /// How long before an unanswered announce or activate (or catch-up
    /// message) is sent again to the components that have not answered
    /// (delivery is at most once); after activate, a required component
    /// that is not registered by then is dropped from the deploy.
    pub resend_ns: i64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            prepare_ns: 30_000_000_000,
            resend_ns: 2_000_000_000,
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
        /// The version it says it runs (its heartbeat), if any.
        running: Option<VersionId>,
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
    /// either phase. Never valid once `Activate` has gone out (the shell
    /// cancels only instead of sending a deploy's first activate; a resent
    /// activate is never withheld).
    Cancel {
        reason: String,
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
    /// A resumed activation was not confirmed in time by a required
    /// component that is still registered: the deploy ends, unfinished; the
    /// active version stays what it was, and registered components that run
    /// something else are caught up to it (as after an abort). Nothing else
    /// is sent.
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
    /// After activate was sent it left, or lost what it prepared (it
    /// restarted): it no longer holds the deploy back and catches up to
    /// the version once it is finalized.
    Dropped(String),
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
    /// When announce or activate was last sent (resends are `resend_ns`
    /// apart).
    pub sent_ns: i64,
    pub components: BTreeMap<ComponentId, ComponentState>,
    /// When [`Ledger::recover`] resumed it after a restart (activate sent
    /// again); a resumed deploy is bounded by the prepare timeout from then.
    pub resumed_ns: Option<i64>,
}

/// A component being brought to the active version on its own (it joined
/// or came back while another version was being deployed, or runs an older
/// one): announce to it alone, activate once it prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    pub version: VersionId,
    /// `Preparing` (announce sent) or `Activating` (activate sent).
    pub state: ComponentState,
    pub sent_ns: i64,
    /// `failed` acks so far; it is given up after [`CATCH_UP_ATTEMPTS`].
    pub failures: u32,
}

/// A catch-up is given up (recorded, the component stays behind) after this
/// many `failed` acks: a late `failed` answering an earlier message must not
/// end it at once.
pub const CATCH_UP_ATTEMPTS: u32 = 5;

/// A deploy in flight, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub version: VersionId,
    pub phase: Phase,
    pub started_ns: i64,
    pub required: Vec<ComponentId>,
}

/// What the shell persists after every step, before sending that step's
/// outputs; [`Ledger::recover`] rebuilds the ledger from it. The registry
/// and catch-ups are not in it: components re-register with their next
/// heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Durable {
    pub staged: Vec<Staged>,
    pub active: Option<VersionId>,
    pub history: Vec<Event>,
    pub deploy: Option<InFlight>,
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
    /// What each registered component last said it runs.
    running: BTreeMap<ComponentId, Option<VersionId>>,
    catch_ups: BTreeMap<ComponentId, CatchUp>,
    /// The last deploy that finalized, as it ended.
    finished: Option<Deploy>,
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
    /// in progress. [`Ledger::recover`] is this plus the explicit
    /// resolution of a deploy that was in flight (invariant 1).
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

    /// The durable record (see [`Durable`]).
    pub fn durable(&self) -> Durable {
        Durable {
            staged: self.staged.values().cloned().collect(),
            active: self.active.clone(),
            history: self.history.clone(),
            deploy: self.deploy.as_ref().map(|d| InFlight {
                version: d.version.clone(),
                phase: d.phase.clone(),
                started_ns: d.started_ns,
                required: d.components.keys().cloned().collect(),
            }),
        }
    }

    /// The audit text of a deploy aborted because the ledger restarted
    /// before it sent activate (also the abort's reason to components).
    pub const RESTARTED_PREPARING: &'static str =
        "ledger restarted during deploy; nothing activated";

    /// A ledger rebuilt from its durable record after a restart, with the
    /// deploy that was in flight resolved, never left half-done: one still
    /// preparing is aborted (nobody was told to activate; the reason is in
    /// the history and sent with the abort), one past activate is resumed
    /// (activate is sent again to every required component: those that
    /// already switched ack again) and finalizes like any other, or ends
    /// [`Output::Interrupted`] (see [`Input::Tick`]). Returns what to send.
    pub fn recover(timeouts: Timeouts, d: Durable, now: i64) -> (Ledger, Vec<Output>) {
        let mut l = Ledger::restore(timeouts, d.staged, d.active, d.history);
        let Some(f) = d.deploy else {
            return (l, vec![]);
        };
        if f.phase == Phase::Preparing {
            let reason = Self::RESTARTED_PREPARING;
            l.log(now, &f.version, format!("aborted: {reason}"));
            return (
                l,
                vec![Output::Abort {
                    version: f.version,
                    reason: reason.to_string(),
                }],
            );
        }
        // Past activate it can no longer be aborted (components may run
        // it); if it cannot be resumed either, it ends visibly.
        let unresumable = if l.staged(&f.version).is_none() {
            Some("the version is no longer staged")
        } else if f.required.is_empty() {
            Some("no required component is on record")
        } else {
            None
        };
        if let Some(why) = unresumable {
            let reason = format!(
                "the ledger restarted after activate was sent and could not resume it: {why}; \
                 components may run {}: check `benctl status` and deploy again",
                f.version
            );
            l.log(now, &f.version, format!("interrupted: {reason}"));
            return (
                l,
                vec![Output::Interrupted {
                    version: f.version,
                    reason,
                }],
            );
        }
        l.log(
            now,
            &f.version,
            format!(
                "resumed after a ledger restart: activate sent again to {}",
                f.required.join(", ")
            ),
        );
        l.deploy = Some(Deploy {
            version: f.version.clone(),
            phase: Phase::Activating,
            started_ns: f.started_ns,
            sent_ns: now,
            components: f
                .required
                .iter()
                .map(|c| (c.clone(), ComponentState::Activating))
                .collect(),
            resumed_ns: Some(now),
        });
        let mut outs = vec![Output::Activate {
            version: f.version,
            required: f.required,
        }];
        outs.extend(l.finish_if_done(now));
        (l, outs)
    }

    /// The version a component that starts now must load before it takes
    /// traffic: the one being activated once activate was sent (it is
    /// decided), else the active one.
    pub fn committed(&self) -> Option<&VersionId> {
        match &self.deploy {
            Some(d) if d.phase == Phase::Activating => Some(&d.version),
            _ => self.active.as_ref(),
        }
    }

    /// The last deploy that finalized, with each required component's final
    /// state (`Active` or `Dropped`).
    pub fn finished(&self) -> Option<&Deploy> {
        self.finished.as_ref()
    }

    /// Components being brought to the active version one by one.
    pub fn catch_ups(&self) -> &BTreeMap<ComponentId, CatchUp> {
        &self.catch_ups
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
        let mut outs = vec![Output::Abort {
            version: d.version,
            reason,
        }];
        // Who joined during prepare may run something older than active.
        outs.extend(self.catch_up_all(now));
        outs
    }

    /// Applies one input at time `now`.
    pub fn step(&mut self, input: Input, now: i64) -> Result<Vec<Output>, LedgerError> {
        match input {
            Input::Register {
                component,
                role,
                running,
            } => {
                self.registry.insert(component.clone(), role.clone());
                self.running.insert(component.clone(), running);
                let joins = self.deploy.as_ref().and_then(|d| {
                    let targeted = self
                        .staged
                        .get(&d.version)
                        .is_some_and(|st| st.roles.contains_key(&role));
                    (d.phase == Phase::Preparing
                        && targeted
                        && !d.components.contains_key(&component))
                    .then(|| d.version.clone())
                });
                if let Some(v) = joins {
                    // Registered for a targeted role while the others
                    // prepare: it is required too.
                    if let Some(d) = self.deploy.as_mut() {
                        d.components
                            .insert(component.clone(), ComponentState::Preparing);
                    }
                    self.log(now, &v, format!("{component} joined during prepare"));
                    return Ok(vec![Output::Announce {
                        version: v,
                        required: vec![component],
                    }]);
                }
                if self.deploy.is_none() {
                    return Ok(self.catch_up(&component, now));
                }
                // During activate: it catches up once the version is final.
                Ok(vec![])
            }
            Input::Deregister { component } => {
                self.registry.remove(&component);
                self.running.remove(&component);
                self.catch_ups.remove(&component);
                let leaving_after_activate = self.deploy.as_ref().is_some_and(|d| {
                    d.phase == Phase::Activating
                        && d.components.get(&component) == Some(&ComponentState::Activating)
                });
                if leaving_after_activate {
                    return Ok(self.drop_member(now, &component, "left during activate"));
                }
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
                // Whoever was catching up is required now; the deploy
                // brings it along.
                self.catch_ups.clear();
                self.deploy = Some(Deploy {
                    version: version.clone(),
                    phase: Phase::Preparing,
                    started_ns: now,
                    sent_ns: now,
                    components: required,
                    resumed_ns: None,
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
                if !self.in_deploy(&component, &version) {
                    return self.catch_up_prepared(now, component, version, hashes == expected);
                }
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
                    d.sent_ns = now;
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
                if !self.in_deploy(&component, &version) {
                    return self.catch_up_failed(now, component, version, reason);
                }
                let d = self.current(&component, &version)?;
                match d.phase {
                    Phase::Preparing => {
                        if let Some(s) = d.components.get_mut(&component) {
                            *s = ComponentState::Failed(reason.clone());
                        }
                        Ok(self.abort(now, format!("{component} failed to prepare: {reason}")))
                    }
                    // Told to activate what it no longer holds (it
                    // restarted after preparing): it catches up later.
                    Phase::Activating
                        if d.components.get(&component) == Some(&ComponentState::Activating) =>
                    {
                        Ok(
                            self.drop_member(
                                now,
                                &component,
                                &format!("cannot activate: {reason}"),
                            ),
                        )
                    }
                    Phase::Activating => Ok(vec![]),
                }
            }
            Input::Active { component, version } => {
                if !self.in_deploy(&component, &version) {
                    return self.catch_up_active(now, component, version);
                }
                let d = self.current(&component, &version)?;
                if d.phase != Phase::Activating {
                    // `active` before `activate` was sent is a protocol
                    // violation by the component; ignore it, never count it.
                    return Ok(vec![]);
                }
                if let Some(s) = d.components.get_mut(&component) {
                    if *s == ComponentState::Active {
                        return Ok(vec![]); // duplicate
                    }
                    *s = ComponentState::Active;
                }
                let v = d.version.clone();
                if self.registry.contains_key(&component) {
                    self.running.insert(component.clone(), Some(v.clone()));
                }
                self.log(now, &v, format!("{component} active"));
                Ok(self.finish_if_done(now))
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
            Input::Tick => {
                let mut outs = self.resend_catch_ups(now);
                let phase = self.deploy.as_ref().map(|d| d.phase.clone());
                match phase {
                    Some(Phase::Preparing) => {
                        let aborted = self.prepare_timeout(now);
                        if aborted.is_empty() {
                            outs.extend(self.announce_resend(now));
                        }
                        outs.extend(aborted);
                    }
                    Some(Phase::Activating) => {
                        let ended = self.resumed_timeout(now);
                        if ended.is_empty() {
                            outs.extend(self.activate_resend(now));
                        }
                        outs.extend(ended);
                    }
                    None => {}
                }
                Ok(outs)
            }
        }
    }

    fn prepare_timeout(&mut self, now: i64) -> Vec<Output> {
        let timed_out = self
            .deploy
            .as_ref()
            .is_some_and(|d| now.saturating_sub(d.started_ns) > self.timeouts.prepare_ns);
        if !timed_out {
            return vec![];
        }
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
        self.abort(
            now,
            format!("prepare timed out waiting for {}", waiting.join(", ")),
        )
    }

    /// A deploy resumed after a restart whose required components have not
    /// all confirmed (`active`, or dropped because they left) within the
    /// prepare timeout of the restart ends [`Output::Interrupted`], naming
    /// them. The two designs this merges differed here: one resumed and
    /// waited indefinitely, one ended the deploy. A component that is gone
    /// is dropped (it catches up when it is back), but one that is still
    /// registered and never answers activate would block every later deploy
    /// and rollback; ending the deploy with the names gives the operator a
    /// definite outcome. The active version stays what it was and registered
    /// components are brought back to it by catch-ups, so the fleet does not
    /// stay split.
    fn resumed_timeout(&mut self, now: i64) -> Vec<Output> {
        let out = self.deploy.as_ref().is_some_and(|d| {
            d.phase == Phase::Activating
                && d.resumed_ns
                    .is_some_and(|r| now.saturating_sub(r) > self.timeouts.prepare_ns)
        });
        if !out {
            return vec![];
        }
        // Who is gone is dropped, as at a resend: only a component that is
        // still registered and silent interrupts the deploy.
        let gone: Vec<ComponentId> = self
            .deploy
            .iter()
            .flat_map(|d| d.components.iter())
            .filter(|(c, s)| **s == ComponentState::Activating && !self.registry.contains_key(*c))
            .map(|(c, _)| c.clone())
            .collect();
        let mut dropped = Vec::new();
        for c in gone {
            dropped.extend(self.drop_member(now, &c, "not registered since activate was sent"));
        }
        let Some(d) = self.deploy.take() else {
            return dropped; // finalized by the drops
        };
        let waiting: Vec<&str> = d
            .components
            .iter()
            .filter(|(_, s)| !matches!(s, ComponentState::Active | ComponentState::Dropped(_)))
            .map(|(c, _)| c.as_str())
            .collect();
        let after = match &self.active {
            Some(a) => format!("components that switched to it are brought back to {a}"),
            None => format!(
                "components may run {}: check `benctl status` and deploy again",
                d.version
            ),
        };
        let reason = format!(
            "activate was sent again after a ledger restart but {} did not confirm in time; {after}",
            waiting.join(", "),
        );
        self.log(now, &d.version, format!("interrupted: {reason}"));
        let mut outs = vec![Output::Interrupted {
            version: d.version,
            reason,
        }];
        outs.extend(self.catch_up_all(now));
        outs
    }

    /// During prepare: every `resend_ns`, announce again to the required
    /// components that have not answered (an announce or its ack was lost).
    fn announce_resend(&mut self, now: i64) -> Vec<Output> {
        let resend_ns = self.timeouts.resend_ns;
        let Some(d) = self.deploy.as_mut() else {
            return vec![];
        };
        if now.saturating_sub(d.sent_ns) <= resend_ns {
            return vec![];
        }
        d.sent_ns = now;
        let waiting: Vec<ComponentId> = d
            .components
            .iter()
            .filter(|(_, s)| **s == ComponentState::Preparing)
            .map(|(c, _)| c.clone())
            .collect();
        if waiting.is_empty() {
            return vec![];
        }
        vec![Output::Announce {
            version: d.version.clone(),
            required: waiting,
        }]
    }

    /// After activate: every `resend_ns`, drop required components that
    /// are no longer registered and send activate again to the others that
    /// have not acked.
    fn activate_resend(&mut self, now: i64) -> Vec<Output> {
        let Some(d) = self.deploy.as_ref() else {
            return vec![];
        };
        if now.saturating_sub(d.sent_ns) <= self.timeouts.resend_ns {
            return vec![];
        }
        let waiting: Vec<ComponentId> = d
            .components
            .iter()
            .filter(|(_, s)| **s == ComponentState::Activating)
            .map(|(c, _)| c.clone())
            .collect();
        let (gone, here): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|c| !self.registry.contains_key(c));
        let mut outs = Vec::new();
        for c in gone {
            outs.extend(self.drop_member(now, &c, "not registered since activate was sent"));
        }
        if let Some(d) = self.deploy.as_mut() {
            d.sent_ns = now;
            if !here.is_empty() {
                outs.push(Output::Activate {
                    version: d.version.clone(),
                    required: here,
                });
            }
        }
        outs
    }

    /// Marks a required component `Dropped` after activate was sent; the
    /// deploy may then be done.
    fn drop_member(&mut self, now: i64, component: &str, why: &str) -> Vec<Output> {
        let Some(d) = self.deploy.as_mut() else {
            return vec![];
        };
        let v = d.version.clone();
        if let Some(s) = d.components.get_mut(component) {
            *s = ComponentState::Dropped(why.to_string());
        }
        self.log(
            now,
            &v,
            format!("{component} dropped: {why}; it catches up once {v} is finalized"),
        );
        self.finish_if_done(now)
    }

    /// After activate: finalizes when every required component is active
    /// or dropped, then starts catch-ups for whoever runs something else.
    fn finish_if_done(&mut self, now: i64) -> Vec<Output> {
        let done = self.deploy.as_ref().is_some_and(|d| {
            d.phase == Phase::Activating
                && d.components
                    .values()
                    .all(|s| matches!(s, ComponentState::Active | ComponentState::Dropped(_)))
        });
        if !done {
            return vec![];
        }
        let Some(d) = self.deploy.take() else {
            return vec![];
        };
        let v = d.version.clone();
        self.finished = Some(d);
        self.active = Some(v.clone());
        self.log(now, &v, "finalized");
        let mut outs = vec![Output::Finalized { version: v }];
        outs.extend(self.catch_up_all(now));
        outs
    }

    /// Starts bringing `component` to the active version if its role needs
    /// it and it says it runs another one.
    /// [`Self::catch_up`] for every registered component (after a deploy
    /// ends, however it ended).
    fn catch_up_all(&mut self, now: i64) -> Vec<Output> {
        let registered: Vec<ComponentId> = self.registry.keys().cloned().collect();
        registered
            .iter()
            .flat_map(|c| self.catch_up(c, now))
            .collect()
    }

    fn catch_up(&mut self, component: &str, now: i64) -> Vec<Output> {
        let (Some(a), Some(role)) = (self.active.clone(), self.registry.get(component)) else {
            return vec![];
        };
        let targeted = self
            .staged
            .get(&a)
            .is_some_and(|st| st.roles.contains_key(role));
        let runs = self.running.get(component).cloned().flatten();
        let already = self
            .catch_ups
            .get(component)
            .is_some_and(|c| c.version == a);
        if !targeted || runs.as_ref() == Some(&a) || already {
            return vec![];
        }
        self.catch_ups.insert(
            component.to_string(),
            CatchUp {
                version: a.clone(),
                state: ComponentState::Preparing,
                sent_ns: now,
                failures: 0,
            },
        );
        self.log(
            now,
            &a,
            format!(
                "{component} runs {}; catching it up",
                runs.as_deref().unwrap_or("nothing")
            ),
        );
        vec![Output::Announce {
            version: a,
            required: vec![component.to_string()],
        }]
    }

    fn catch_up_of(&self, component: &str, version: &str) -> Option<&CatchUp> {
        self.catch_ups
            .get(component)
            .filter(|c| c.version == version)
    }

    fn stale(component: String, version: String) -> Result<Vec<Output>, LedgerError> {
        Err(LedgerError::StaleAck { component, version })
    }

    fn catch_up_prepared(
        &mut self,
        now: i64,
        component: String,
        version: String,
        hashes_match: bool,
    ) -> Result<Vec<Output>, LedgerError> {
        let Some(c) = self.catch_up_of(&component, &version) else {
            return Self::stale(component, version);
        };
        if c.state != ComponentState::Preparing {
            return Ok(vec![]);
        }
        if !hashes_match {
            // Never activated on wrong hashes (invariant 3); it prepares
            // again at the next resend, and is given up like a failure.
            self.log(
                now,
                &version,
                format!("{component} prepared artifacts whose hashes do not match the staged ones; not activated"),
            );
            let reason = "prepared artifacts whose hashes do not match".to_string();
            return self.catch_up_failed(now, component, version, reason);
        }
        if let Some(c) = self.catch_ups.get_mut(&component) {
            c.state = ComponentState::Activating;
            c.sent_ns = now;
        }
        Ok(vec![Output::Activate {
            version,
            required: vec![component],
        }])
    }

    fn catch_up_failed(
        &mut self,
        now: i64,
        component: String,
        version: String,
        reason: String,
    ) -> Result<Vec<Output>, LedgerError> {
        let Some(c) = self.catch_up_of(&component, &version) else {
            return Self::stale(component, version);
        };
        let was_activating = c.state == ComponentState::Activating;
        let failures = c.failures + 1;
        if failures < CATCH_UP_ATTEMPTS {
            if let Some(c) = self.catch_ups.get_mut(&component) {
                c.failures = failures;
                if was_activating {
                    // It lost what it prepared (restarted): prepare again.
                    c.state = ComponentState::Preparing;
                    c.sent_ns = now;
                }
            }
            return Ok(if was_activating {
                vec![Output::Announce {
                    version,
                    required: vec![component],
                }]
            } else {
                vec![] // announced again at the next resend
            });
        }
        self.catch_ups.remove(&component);
        self.log(
            now,
            &version,
            format!("{component} cannot load it: {reason}; it stays behind"),
        );
        Ok(vec![])
    }

    fn catch_up_active(
        &mut self,
        now: i64,
        component: String,
        version: String,
    ) -> Result<Vec<Output>, LedgerError> {
        let Some(c) = self.catch_up_of(&component, &version) else {
            return Self::stale(component, version);
        };
        if c.state != ComponentState::Activating {
            return Ok(vec![]); // `active` before activate: never counted
        }
        self.catch_ups.remove(&component);
        self.running
            .insert(component.clone(), Some(version.clone()));
        self.log(now, &version, format!("{component} caught up"));
        Ok(vec![])
    }

    fn resend_catch_ups(&mut self, now: i64) -> Vec<Output> {
        let mut outs = Vec::new();
        for (c, cu) in self.catch_ups.iter_mut() {
            if now.saturating_sub(cu.sent_ns) <= self.timeouts.resend_ns {
                continue;
            }
            cu.sent_ns = now;
            let (version, required) = (cu.version.clone(), vec![c.clone()]);
            outs.push(if cu.state == ComponentState::Activating {
                Output::Activate { version, required }
            } else {
                Output::Announce { version, required }
            });
        }
        outs
    }

    fn in_deploy(&self, component: &str, version: &str) -> bool {
        self.deploy
            .as_ref()
            .is_some_and(|d| d.version == version && d.components.contains_key(component))
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
