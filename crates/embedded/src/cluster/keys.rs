//! The cluster's key directory.
//!
//! `ben cluster up` provisions it before it starts anything: for every
//! component id the config names (spares included) an Ed25519 secret
//! `<id>.key` (hex, mode 0600, the directory 0700) and its public key
//! `<id>.pub` (hex). A process started as `<id>` signs with `<id>.key` only
//! and trusts every `*.pub` in the directory — the cluster's keyring.
//! Existing keys are kept, so restarts and re-runs keep their identities;
//! deleting a `.pub` (and restarting) revokes that id.
//!
//! The directory is local: processes on one machine share it. Spreading a
//! cluster over machines means copying the `.pub` files to each and each
//! id's `.key` to the machine that runs it.

use ben_wire::{Keyring, Signer};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Is `id` usable as a component id (and a file name)?
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn key_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.key"))
}

fn pub_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.pub"))
}

fn read_secret(path: &Path) -> Result<[u8; 32], String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    unhex32(&text).ok_or_else(|| {
        format!(
            "{}: not an Ed25519 secret key (64 hex digits)",
            path.display()
        )
    })
}

/// Creates the directory and any missing key pair for `ids`.
pub fn provision<'a>(dir: &Path, ids: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating the key directory {}: {e}", dir.display()))?;
    for id in ids {
        if !valid_id(id) {
            return Err(format!("`{id}` is not a component id (a-z, 0-9, -)"));
        }
        let kp = key_path(dir, id);
        let secret = if kp.exists() {
            read_secret(&kp)?
        } else {
            let secret = crate::random32()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&kp)
                .map_err(|e| format!("creating {}: {e}", kp.display()))?;
            f.write_all(hex(&secret).as_bytes())
                .map_err(|e| format!("writing {}: {e}", kp.display()))?;
            secret
        };
        let public = hex(Signer::from_secret(secret).public().as_bytes());
        let pp = pub_path(dir, id);
        if std::fs::read_to_string(&pp).ok().as_deref().map(str::trim) != Some(public.as_str()) {
            let tmp = dir.join(format!(".{id}.pub.tmp"));
            std::fs::write(&tmp, &public)
                .and_then(|_| std::fs::rename(&tmp, &pp))
                .map_err(|e| format!("writing {}: {e}", pp.display()))?;
        }
    }
    Ok(())
}

/// The cluster's keyring: every `*.pub` in `dir`.
pub fn keyring(dir: &Path) -> Result<Keyring, String> {
    let mut ring = Keyring::new();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "reading the key directory {}: {e} (`ben cluster up` creates it)",
            dir.display()
        )
    })?;
    let mut n = 0;
    for e in entries {
        let path = e
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        if path.extension().and_then(|x| x.to_str()) != Some("pub") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let key = unhex32(&text)
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(|| {
                format!(
                    "{}: not an Ed25519 public key (64 hex digits)",
                    path.display()
                )
            })?;
        ring.trust(key);
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "the key directory {} holds no public keys (`ben cluster up` provisions them)",
            dir.display()
        ));
    }
    Ok(ring)
}

/// The signing identity of `id` and the cluster's keyring.
pub fn load(dir: &Path, id: &str) -> Result<(Signer, Keyring), String> {
    if !valid_id(id) {
        return Err(format!("`{id}` is not a component id (a-z, 0-9, -)"));
    }
    let kp = key_path(dir, id);
    if !kp.exists() {
        let mut known: Vec<String> = std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".key"))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        known.sort();
        return Err(format!(
            "no key for `{id}` in {} (ids with keys: {}); `ben cluster up` provisions one per id its config names, plus [scale] spare",
            dir.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ));
    }
    let signer = Signer::from_secret(read_secret(&kp)?);
    let ring = keyring(dir)?;
    if !ring_has(&ring, &signer) {
        return Err(format!(
            "{} has no matching {}: this id is not trusted by the cluster",
            kp.display(),
            pub_path(dir, id).display()
        ));
    }
    Ok((signer, ring))
}

fn ring_has(ring: &Keyring, s: &Signer) -> bool {
    // A message sealed by `s` opens with the ring iff its key is in it.
    let probe = ben_wire::pb::Heartbeat::default();
    ben_wire::open_bytes::<ben_wire::pb::Heartbeat>(&s.seal_bytes(&probe), ring).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_err(dir: &Path, id: &str) -> String {
        match load(dir, id) {
            Ok(_) => panic!("{id} loaded"),
            Err(e) => e,
        }
    }

    #[test]
    fn provision_load_and_refuse() {
        let dir = std::env::temp_dir().join(format!("ben-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        provision(&dir, ["control", "spine-1"]).unwrap();
        let secret = std::fs::read_to_string(dir.join("spine-1.key")).unwrap();
        provision(&dir, ["control", "spine-1", "spine-2"]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("spine-1.key")).unwrap(),
            secret,
            "existing keys are kept"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("spine-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (s1, ring) = load(&dir, "spine-1").unwrap();
        let (c, _) = load(&dir, "control").unwrap();
        // Each id signs with its own key; the ring trusts all three.
        assert_ne!(s1.id(), c.id());
        assert!(ring_has(&ring, &s1) && ring_has(&ring, &c));
        assert!(!ring_has(&ring, &Signer::from_secret([7; 32])));
        let e = load_err(&dir, "spine-9");
        assert!(
            e.contains("no key for `spine-9`") && e.contains("spine-2"),
            "{e}"
        );
        assert!(load_err(&dir, "../etc").contains("not a component id"));
        // Revoked: its .pub is gone.
        std::fs::remove_file(dir.join("spine-2.pub")).unwrap();
        assert!(load_err(&dir, "spine-2").contains("not trusted"));
        std::fs::write(dir.join("bad.pub"), "zz").unwrap();
        assert!(keyring(&dir).unwrap_err().contains("bad.pub"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
