//! # Beekeeper and the BEE
//!
//! A **BEE** is an app's short-lived identity: claims (app name, pid, uid,
//! executable path and BLAKE3, process start time, issue and expiry times,
//! serial) signed with Beekeeper's Ed25519 key under the domain
//! `ben/v1/bee`. The sidecar asks for one when an app connects on its Unix
//! socket, and checks it on every use: no BEE, no data.
//!
//! Attestation trusts only the kernel, never the app: [`PeerFacts::of`]
//! reads the peer's pid/uid/gid with `SO_PEERCRED`, then `/proc/<pid>/exe`
//! (hashed with BLAKE3) and the start time from `/proc/<pid>/stat`, so a
//! recycled pid cannot inherit a BEE. [`Beekeeper::attest`] matches those
//! facts against the selectors declared in `ben.toml` and fails closed: an
//! unknown executable, a failed read, or a missing Beekeeper issue nothing.
//!
//! BEEs live `ttl` (default 10 min), should be rotated at half-life
//! ([`Bee::should_rotate`]), and can be revoked by serial or by subject
//! ([`Beekeeper::revoke_subject`]: every BEE of that app identity stops
//! verifying, and no new one is issued to it). Time is an input
//! (nanoseconds), so the core is deterministic.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use std::collections::BTreeSet;

const DOMAIN: &[u8] = b"ben/v1/bee\0";

/// What the kernel says about the process on the other end of a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFacts {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe: String,
    /// BLAKE3 hex of the executable's bytes.
    pub exe_blake3: String,
    /// Process start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start_time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeeError {
    #[error("cannot read the peer's credentials: {0}")]
    PeerCred(String),
    #[error("cannot inspect process {pid}: {what}")]
    Proc { pid: u32, what: String },
    #[error("no app selector matches this process (uid {uid}, exe {exe}); declare it under [[apps]] in ben.toml")]
    NoMatch { uid: u32, exe: String },
    #[error("BEE is malformed")]
    Malformed,
    #[error("BEE signature does not verify")]
    BadSignature,
    #[error("BEE expired")]
    Expired,
    #[error("BEE was revoked")]
    Revoked,
    #[error("BEE subject {subject} is revoked; an operator must lift the revocation before this app may connect")]
    SubjectRevoked { subject: String },
    #[error("BEE was issued to another process (pid {bee_pid}), not this one (pid {peer_pid})")]
    WrongProcess { bee_pid: u32, peer_pid: u32 },
}

impl PeerFacts {
    /// Reads the facts of the peer of a connected Unix stream.
    pub fn of(stream: &tokio::net::UnixStream) -> Result<PeerFacts, BeeError> {
        let cred = stream
            .peer_cred()
            .map_err(|e| BeeError::PeerCred(e.to_string()))?;
        let pid = cred
            .pid()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| BeeError::PeerCred("the kernel gave no pid".into()))?;
        Self::of_pid(pid, cred.uid(), cred.gid())
    }

    /// Reads `/proc` for a pid whose uid/gid the kernel already reported.
    pub fn of_pid(pid: u32, uid: u32, gid: u32) -> Result<PeerFacts, BeeError> {
        let proc_err = |what: String| BeeError::Proc { pid, what };
        let exe_link = format!("/proc/{pid}/exe");
        let exe =
            std::fs::read_link(&exe_link).map_err(|e| proc_err(format!("{exe_link}: {e}")))?;
        // Hash through /proc/<pid>/exe: the file the process really runs,
        // even if its path was replaced since.
        let bytes =
            std::fs::read(&exe_link).map_err(|e| proc_err(format!("reading {exe_link}: {e}")))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| proc_err(format!("stat: {e}")))?;
        let start_time =
            parse_start_time(&stat).ok_or_else(|| proc_err("unparseable /proc stat".into()))?;
        Ok(PeerFacts {
            pid,
            uid,
            gid,
            exe: exe.display().to_string(),
            exe_blake3: blake3::hash(&bytes).to_hex().to_string(),
            start_time,
        })
    }
}

/// Field 22 of `/proc/<pid>/stat`; the command name (field 2) may hold
/// spaces and parentheses, so parse after the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process's real uid, as the kernel reports it (`/proc/self/status`).
pub fn own_uid() -> Result<u32, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| "no Uid line in /proc/self/status".to_string())
}

/// Who may connect: any field left `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub app: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub exe: Option<String>,
    pub exe_blake3: Option<String>,
}

impl Selector {
    /// A selector that accepts this executable, run by this process's
    /// user, as `app` (the demo app, tests).
    pub fn this_process(app: &str) -> Result<Selector, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
        Ok(Selector {
            app: app.to_string(),
            uid: Some(own_uid()?),
            exe: Some(exe.display().to_string()),
            ..Selector::default()
        })
    }

    pub fn matches(&self, f: &PeerFacts) -> bool {
        self.uid.is_none_or(|u| u == f.uid)
            && self.gid.is_none_or(|g| g == f.gid)
            && self.exe.as_ref().is_none_or(|e| *e == f.exe)
            && self
                .exe_blake3
                .as_ref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&f.exe_blake3))
    }
}

/// The signed claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub app: String,
    pub serial: u64,
    pub pid: u32,
    pub uid: u32,
    pub start_time: u64,
    pub exe_blake3: String,
    pub issued_ns: i64,
    pub expires_ns: i64,
}

impl Claims {
    /// The subject every record from this app carries: `app/uid/exe-prefix`.
    pub fn subject(&self) -> String {
        format!(
            "{}/{}/{}",
            self.app,
            self.uid,
            &self.exe_blake3[..self.exe_blake3.len().min(16)]
        )
    }

    fn encode(&self) -> Vec<u8> {
        // Fixed field order, length-prefixed strings: unambiguous.
        let mut b = Vec::new();
        for s in [&self.app, &self.exe_blake3] {
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&self.serial.to_le_bytes());
        b.extend_from_slice(&self.pid.to_le_bytes());
        b.extend_from_slice(&self.uid.to_le_bytes());
        b.extend_from_slice(&self.start_time.to_le_bytes());
        b.extend_from_slice(&self.issued_ns.to_le_bytes());
        b.extend_from_slice(&self.expires_ns.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Claims> {
        let mut r = Reader { b, i: 0 };
        let app = r.string()?;
        let exe_blake3 = r.string()?;
        let serial = r.u64()?;
        let pid = r.u32()?;
        let uid = r.u32()?;
        let start_time = r.u64()?;
        let issued_ns = r.u64()? as i64;
        let expires_ns = r.u64()? as i64;
        if r.i != b.len() {
            return None;
        }
        Some(Claims {
            app,
            serial,
            pid,
            uid,
            start_time,
            exe_blake3,
            issued_ns,
            expires_ns,
        })
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.i..self.i.checked_add(n)?)?;
        self.i += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        if n > 4096 {
            return None;
        }
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// A signed BEE: claims + signature, as bytes for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bee {
    pub claims: Claims,
    pub token: Vec<u8>,
}

impl Bee {
    /// Rotate once half the lifetime has passed.
    pub fn should_rotate(&self, now_ns: i64) -> bool {
        now_ns >= self.claims.issued_ns + (self.claims.expires_ns - self.claims.issued_ns) / 2
    }
}

/// Issues and checks BEEs.
pub struct Beekeeper {
    key: SigningKey,
    selectors: Vec<Selector>,
    ttl_ns: i64,
    next_serial: u64,
    revoked: BTreeSet<u64>,
    revoked_subjects: BTreeSet<String>,
}

/// Default BEE lifetime: 10 minutes.
pub const DEFAULT_TTL_NS: i64 = 600 * 1_000_000_000;

impl Beekeeper {
    /// `secret`: 32 bytes of key material from the caller's randomness.
    pub fn new(secret: [u8; 32], selectors: Vec<Selector>, ttl_ns: i64) -> Self {
        Beekeeper {
            key: SigningKey::from_bytes(&secret),
            selectors,
            ttl_ns,
            next_serial: 1,
            revoked: BTreeSet::new(),
            revoked_subjects: BTreeSet::new(),
        }
    }

    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Attests a peer and issues a BEE, or refuses.
    pub fn attest(&mut self, facts: &PeerFacts, now_ns: i64) -> Result<Bee, BeeError> {
        let sel = self
            .selectors
            .iter()
            .find(|s| s.matches(facts))
            .ok_or_else(|| BeeError::NoMatch {
                uid: facts.uid,
                exe: facts.exe.clone(),
            })?;
        let claims = Claims {
            app: sel.app.clone(),
            serial: self.next_serial,
            pid: facts.pid,
            uid: facts.uid,
            start_time: facts.start_time,
            exe_blake3: facts.exe_blake3.clone(),
            issued_ns: now_ns,
            expires_ns: now_ns.saturating_add(self.ttl_ns),
        };
        let subject = claims.subject();
        if self.revoked_subjects.contains(&subject) {
            return Err(BeeError::SubjectRevoked { subject });
        }
        self.next_serial += 1;
        let body = claims.encode();
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&body);
        let sig = self.key.sign(&msg).to_bytes();
        let mut token = body;
        token.extend_from_slice(&sig);
        Ok(Bee { claims, token })
    }

    /// Replaces the selectors (they follow the active intent's `[[apps]]`).
    pub fn set_selectors(&mut self, selectors: Vec<Selector>) {
        self.selectors = selectors;
    }

    pub fn revoke(&mut self, serial: u64) {
        self.revoked.insert(serial);
    }

    /// Revokes an app identity ([`Claims::subject`]): its BEEs stop
    /// verifying and [`Beekeeper::attest`] issues it none. `true` if it was
    /// not revoked before.
    pub fn revoke_subject(&mut self, subject: &str) -> bool {
        self.revoked_subjects.insert(subject.to_string())
    }

    /// Is this subject revoked?
    pub fn is_revoked(&self, subject: &str) -> bool {
        self.revoked_subjects.contains(subject)
    }

    /// Checks a presented token against the process presenting it.
    pub fn verify(&self, token: &[u8], peer: &PeerFacts, now_ns: i64) -> Result<Claims, BeeError> {
        let c = verify(&self.public(), &self.revoked, token, peer, now_ns)?;
        let subject = c.subject();
        if self.revoked_subjects.contains(&subject) {
            return Err(BeeError::SubjectRevoked { subject });
        }
        Ok(c)
    }
}

/// Verification with only the public key and revocation list (what a
/// sidecar holds).
pub fn verify(
    key: &VerifyingKey,
    revoked: &BTreeSet<u64>,
    token: &[u8],
    peer: &PeerFacts,
    now_ns: i64,
) -> Result<Claims, BeeError> {
    if token.len() < 64 {
        return Err(BeeError::Malformed);
    }
    let (body, sig) = token.split_at(token.len() - 64);
    let sig = Signature::from_bytes(sig.try_into().map_err(|_| BeeError::Malformed)?);
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(body);
    key.verify(&msg, &sig).map_err(|_| BeeError::BadSignature)?;
    let c = Claims::decode(body).ok_or(BeeError::Malformed)?;
    if now_ns >= c.expires_ns {
        return Err(BeeError::Expired);
    }
    if revoked.contains(&c.serial) {
        return Err(BeeError::Revoked);
    }
    if c.pid != peer.pid
        || c.start_time != peer.start_time
        || c.uid != peer.uid
        || c.exe_blake3 != peer.exe_blake3
    {
        return Err(BeeError::WrongProcess {
            bee_pid: c.pid,
            peer_pid: peer.pid,
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {

    #[test]
    fn this_process_is_what_the_kernel_says() {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's (effective) uid; tests run
        // with real = effective.
        let owner = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(own_uid().unwrap(), owner);
        let s = Selector::this_process("shop_web").unwrap();
        let facts = PeerFacts::of_pid(std::process::id(), owner, 0).unwrap();
        assert_eq!(s.exe.as_deref(), Some(facts.exe.as_str()));
        assert!(s.matches(&facts));
        assert_eq!((s.app.as_str(), s.gid), ("shop_web", None));
    }
    use super::*;

    const S: i64 = 1_000_000_000;

    fn facts(pid: u32) -> PeerFacts {
        PeerFacts {
            pid,
            uid: 1000,
            gid: 1000,
            exe: "/usr/local/bin/shop-web".into(),
            exe_blake3: "ab".repeat(32),
            start_time: 4242,
        }
    }

    fn keeper() -> Beekeeper {
        let sel = Selector {
            app: "shop_web".into(),
            uid: Some(1000),
            exe: Some("/usr/local/bin/shop-web".into()),
            ..Selector::default()
        };
        Beekeeper::new([7; 32], vec![sel], DEFAULT_TTL_NS)
    }

    #[test]
    fn issue_verify_rotate_expire() {
        let mut k = keeper();
        let bee = k.attest(&facts(10), 0).unwrap();
        assert_eq!(bee.claims.app, "shop_web");
        assert_eq!(
            k.verify(&bee.token, &facts(10), 60 * S).unwrap(),
            bee.claims
        );
        assert!(!bee.should_rotate(299 * S));
        assert!(bee.should_rotate(300 * S));
        assert_eq!(
            k.verify(&bee.token, &facts(10), 600 * S),
            Err(BeeError::Expired)
        );
    }

    #[test]
    fn unknown_executable_is_refused() {
        let mut k = keeper();
        let mut f = facts(10);
        f.exe = "/tmp/evil".into();
        assert!(matches!(k.attest(&f, 0), Err(BeeError::NoMatch { .. })));
    }

    #[test]
    fn bee_from_another_process_is_refused() {
        let mut k = keeper();
        let bee = k.attest(&facts(10), 0).unwrap();
        assert!(matches!(
            k.verify(&bee.token, &facts(11), S),
            Err(BeeError::WrongProcess { .. })
        ));
        // Same pid, recycled: another start time.
        let mut recycled = facts(10);
        recycled.start_time += 1;
        assert!(matches!(
            k.verify(&bee.token, &recycled, S),
            Err(BeeError::WrongProcess { .. })
        ));
    }

    #[test]
    fn tampered_forged_revoked() {
        let mut k = keeper();
        let bee = k.attest(&facts(10), 0).unwrap();
        let mut t = bee.token.clone();
        t[5] ^= 1;
        assert_eq!(k.verify(&t, &facts(10), S), Err(BeeError::BadSignature));
        let forger = Beekeeper::new([8; 32], keeper().selectors.clone(), DEFAULT_TTL_NS);
        let mut forger = forger;
        let forged = forger.attest(&facts(10), 0).unwrap();
        assert_eq!(
            k.verify(&forged.token, &facts(10), S),
            Err(BeeError::BadSignature)
        );
        k.revoke(bee.claims.serial);
        assert_eq!(k.verify(&bee.token, &facts(10), S), Err(BeeError::Revoked));
        assert_eq!(k.verify(b"short", &facts(10), S), Err(BeeError::Malformed));
    }

    #[test]
    fn a_revoked_subject_neither_verifies_nor_attests() {
        let mut k = keeper();
        let bee = k.attest(&facts(10), 0).unwrap();
        let subject = bee.claims.subject();
        assert!(k.revoke_subject(&subject));
        assert!(!k.revoke_subject(&subject), "already revoked");
        assert!(matches!(
            k.verify(&bee.token, &facts(10), S),
            Err(BeeError::SubjectRevoked { .. })
        ));
        // A new process of the same app identity gets nothing.
        assert!(matches!(
            k.attest(&facts(11), S),
            Err(BeeError::SubjectRevoked { .. })
        ));
        // Another identity (another uid) is not affected.
        let mut f = facts(12);
        f.uid = 1001;
        k.set_selectors(vec![Selector {
            app: "shop_web".into(),
            ..Selector::default()
        }]);
        assert!(k.attest(&f, S).is_ok());
    }

    #[test]
    fn start_time_parsing_survives_odd_names() {
        let stat = "1234 (my (weird) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[tokio::test]
    async fn real_socket_attestation() {
        let dir = std::env::temp_dir().join(format!("ben-bee-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let f = PeerFacts::of(&server).unwrap();
        assert_eq!(f.pid, std::process::id());
        let me = std::env::current_exe().unwrap();
        assert_eq!(f.exe, me.display().to_string());
        assert_eq!(
            f.exe_blake3,
            blake3::hash(&std::fs::read(&me).unwrap())
                .to_hex()
                .to_string()
        );
        // This test binary is allowed by exe path; another path is not.
        let mut ok = Beekeeper::new(
            [1; 32],
            vec![Selector {
                app: "t".into(),
                exe: Some(f.exe.clone()),
                ..Selector::default()
            }],
            DEFAULT_TTL_NS,
        );
        let bee = ok.attest(&f, 0).unwrap();
        assert!(ok.verify(&bee.token, &f, 1).is_ok());
        let mut no = Beekeeper::new(
            [1; 32],
            vec![Selector {
                app: "t".into(),
                exe: Some("/usr/bin/other".into()),
                ..Selector::default()
            }],
            DEFAULT_TTL_NS,
        );
        assert!(matches!(no.attest(&f, 0), Err(BeeError::NoMatch { .. })));
    }
}
