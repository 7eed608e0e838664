//! BEE revocation from the control plane: the list of issued BEEs and the
//! list of revoked subjects.
//!
//! Beekeeper runs inside each sidecar's process, so control learns of BEEs
//! from the sidecars and tells them of revocations, both over the bus:
//!
//! | subject | direction | message |
//! |---|---|---|
//! | [`ROSTER`] | sidecar → control | signed [`pb::BeeRoster`]: the sidecar's live BEEs, on each change and every 2 s |
//! | [`REVOKED`] | control → sidecars | [`pb::BeeRevocations`] signed with the ledger's key: every revoked subject, on each revocation and every 2 s |
//!
//! Sending the whole list each time makes a revocation idempotent and lets
//! a sidecar that was away (restarted, partitioned) catch up within 2 s;
//! sidecars also keep the list in a file of their own, so a restarted one
//! refuses before it hears from control. Control keeps the list in
//! `revoked-bees` in its data dir (0600), one subject a line. A roster not
//! renewed for [`ROSTER_STALE_NS`] is dropped from the list (its sidecar is
//! gone).

use crate::private;
use ben_bus::Bus;
use ben_time::Clock;
use ben_wire::{pb, Keyring, Signer};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sidecars → control: signed `BeeRoster`.
pub const ROSTER: &str = "ben.bee.roster";
/// Control → sidecars: signed `BeeRevocations`.
pub const REVOKED: &str = "ben.bee.revoked";
/// How often control sends the revocation list again.
pub const RESEND: Duration = Duration::from_secs(2);
/// A sidecar's roster older than this is dropped.
pub const ROSTER_STALE_NS: i64 = 10_000_000_000;
/// The file in the data dir.
pub const FILE: &str = "revoked-bees";

/// One issued BEE, as `GET /api/v1/bees` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IssuedBee {
    pub subject: String,
    pub app: String,
    pub serial: u64,
    pub pid: u32,
    pub uid: u32,
    pub exe: String,
    pub issued_ns: i64,
    pub expires_ns: i64,
    /// The sidecar that issued it and holds the connection.
    pub sidecar: String,
}

/// `GET /api/v1/bees`.
#[derive(Debug, Clone, Serialize)]
pub struct BeeList {
    pub bees: Vec<IssuedBee>,
    pub revoked: Vec<String>,
}

struct State {
    revoked: BTreeSet<String>,
    /// sidecar id → (when control got it, its BEEs).
    rosters: BTreeMap<String, (i64, Vec<IssuedBee>)>,
}

/// The revocation list and the sidecars' rosters.
pub struct Bees {
    state: Mutex<State>,
    file: PathBuf,
    bus: Arc<dyn Bus>,
    signer: Arc<Signer>,
    clock: Arc<dyn Clock>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A subject as Beekeeper writes it: `app/uid/exe-prefix`, printable, no
/// spaces, bounded.
pub fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic()) && s.contains('/')
}

/// Reads a list written by [`write_list`]: one subject a line; a missing
/// file is an empty list.
pub fn read_list(path: &Path) -> Result<BTreeSet<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(format!(
            "reading the revoked BEE subjects {}: {e}",
            path.display()
        )),
    }
}

/// Writes `list` to `path` (0600) atomically.
pub fn write_list(path: &Path, list: &BTreeSet<String>) -> Result<(), String> {
    let mut text = String::new();
    for s in list {
        text.push_str(s);
        text.push('\n');
    }
    private::replace(path, text.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))
}

impl Bees {
    /// Loads the list from `data_dir`, takes rosters and sends the list
    /// every [`RESEND`].
    pub async fn start(
        data_dir: &Path,
        bus: Arc<dyn Bus>,
        signer: Arc<Signer>,
        keyring: Keyring,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Bees>, String> {
        let file = data_dir.join(FILE);
        let revoked = read_list(&file)?;
        let bees = Arc::new(Bees {
            state: Mutex::new(State {
                revoked,
                rosters: BTreeMap::new(),
            }),
            file,
            bus: bus.clone(),
            signer,
            clock,
            tasks: Mutex::new(Vec::new()),
        });
        let mut sub = bus
            .subscribe(ROSTER, None)
            .await
            .map_err(|e| format!("subscribing to {ROSTER}: {e}"))?;
        let b = bees.clone();
        let rosters = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                // A roster only informs the list, it never grants anything;
                // one that does not verify (or is not from the sidecar it
                // names) is still dead-lettered with the reason (invariant 8).
                match ben_wire::open_bytes::<pb::BeeRoster>(&m.payload, &keyring) {
                    Ok(v) => b.take_roster(v.into_inner()),
                    Err(e) => {
                        let dl = crate::dead_letter(
                            ROSTER,
                            &e.to_string(),
                            &m.payload,
                            b.clock.now_ns(),
                        );
                        if let Err(e) = b
                            .bus
                            .publish(crate::subjects::DLQ, b.signer.seal_bytes(&dl))
                            .await
                        {
                            tracing::error!(error = %e, "a refused BEE roster could not be dead-lettered");
                        }
                    }
                }
            }
        });
        let b = bees.clone();
        let resend = tokio::spawn(async move {
            let mut t = tokio::time::interval(RESEND);
            loop {
                t.tick().await;
                b.publish().await;
            }
        });
        if let Ok(mut t) = bees.tasks.lock() {
            t.extend([rosters, resend]);
        }
        Ok(bees)
    }

    fn take_roster(&self, r: pb::BeeRoster) {
        let now = self.clock.now_ns();
        let list = r
            .bees
            .into_iter()
            .map(|b| IssuedBee {
                subject: b.subject,
                app: b.app,
                serial: b.serial,
                pid: b.pid,
                uid: b.uid,
                exe: b.exe,
                issued_ns: b.issued_ns,
                expires_ns: b.expires_ns,
                sidecar: r.sidecar.clone(),
            })
            .collect();
        if let Ok(mut s) = self.state.lock() {
            s.rosters.insert(r.sidecar, (now, list));
        }
    }

    /// Issued BEEs (fresh rosters only) and the revoked subjects.
    pub fn list(&self) -> BeeList {
        let now = self.clock.now_ns();
        let Ok(mut s) = self.state.lock() else {
            return BeeList {
                bees: vec![],
                revoked: vec![],
            };
        };
        s.rosters.retain(|_, (at, _)| now - *at < ROSTER_STALE_NS);
        BeeList {
            bees: s.rosters.values().flat_map(|(_, b)| b.clone()).collect(),
            revoked: s.revoked.iter().cloned().collect(),
        }
    }

    /// Revokes `subject`: recorded in the file first, then sent to every
    /// sidecar. `Ok(false)` if it was revoked already (sent again anyway).
    pub async fn revoke(&self, subject: &str) -> Result<bool, String> {
        if !valid_subject(subject) {
            return Err(format!(
                "`{subject}` is not a BEE subject (app/uid/exe-prefix, as `benctl bee list` shows)"
            ));
        }
        let new = {
            let mut s = self
                .state
                .lock()
                .map_err(|_| "the BEE list is unavailable".to_string())?;
            let mut next = s.revoked.clone();
            let new = next.insert(subject.to_string());
            if new {
                // Persisted before anyone is told (a restart keeps it).
                write_list(&self.file, &next)?;
                s.revoked = next;
            }
            new
        };
        self.publish().await;
        Ok(new)
    }

    async fn publish(&self) {
        let subjects: Vec<String> = match self.state.lock() {
            Ok(s) => s.revoked.iter().cloned().collect(),
            Err(_) => return,
        };
        let msg = pb::BeeRevocations {
            subjects,
            at_ns: self.clock.now_ns(),
        };
        let _ = self
            .bus
            .publish(REVOKED, self.signer.seal_bytes(&msg))
            .await;
    }

    /// Stops the tasks.
    pub fn stop(&self) {
        if let Ok(t) = self.tasks.lock() {
            for t in t.iter() {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_privately() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("ben-bees-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        private::dir(&d).unwrap();
        let p = d.join(FILE);
        assert!(read_list(&p).unwrap().is_empty());
        let l: BTreeSet<String> = ["a/1/ff".to_string(), "b/2/ee".to_string()].into();
        write_list(&p, &l).unwrap();
        assert_eq!(read_list(&p).unwrap(), l);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(valid_subject("shop_web/1000/abcdef"));
        assert!(!valid_subject("has space/1"));
        assert!(!valid_subject("noslash"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
