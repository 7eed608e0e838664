//! The cluster's key directory.
//!
//! `ben cluster up` provisions it before it starts anything: for every
//! component id the config names (spares included) an Ed25519 secret
//! `<id>.key` (hex, mode 0600, the directory 0700) and its public key
//! `<id>.pub` (hex). A process started as `<id>` signs with `<id>.key` only
//! and trusts every `*.pub` in the directory — the cluster's keyring —
//! each as the id its file names, in the role that id's stem names
//! (`spine-2.pub` signs as `spine-2`, a spine; `control.pub` as the ledger;
//! see `ben_wire::Role`): a key signs only its role's kinds, and only in
//! its own name (invariant 8).
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

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
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

/// The Ed25519 public key in `path` (hex); `hint` follows a read error.
fn read_public(path: &Path, hint: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading {}: {e}{hint}", path.display()))?;
    unhex32(&text)
        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| {
            format!(
                "{}: not an Ed25519 public key (64 hex digits)",
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
        if ben_wire::Role::of_id(id).is_none() {
            return Err(format!(
                "`{id}` names no role: a key's role is its id's stem (spine-1, control, …)"
            ));
        }
        let kp = key_path(dir, id);
        let secret = if kp.exists() {
            read_secret(&kp)?
        } else {
            let secret = ben_runtime::random32()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&kp)
                .map_err(|e| format!("creating {}: {e}", kp.display()))?;
            f.write_all(hex::encode(secret).as_bytes())
                .map_err(|e| format!("writing {}: {e}", kp.display()))?;
            secret
        };
        let public = hex::encode(Signer::from_secret(secret).public().as_bytes());
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

/// The cluster's keyring: every `*.pub` in `dir`, bound to the id its
/// file names and that id's role.
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
        let id = path
            .file_stem()
            .and_then(|x| x.to_str())
            .filter(|id| valid_id(id))
            .ok_or_else(|| format!("{}: not named after a component id", path.display()))?;
        let key = read_public(&path, "")?;
        ring.trust_id(id, key)
            .map_err(|e| format!("{}: {e}", path.display()))?;
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

/// The cluster's validator set as process `id` sees it: `validator-<n>`'s
/// public key for each address of `[validators] addrs`, and, when `id` is
/// one of them, its secret key (a validator signs its consensus messages
/// with its component key; the digests are domain-separated).
pub fn validator_set(
    dir: &Path,
    addrs: &[std::net::SocketAddr],
    id: &str,
) -> Result<ben_mesh_validator::bus::ValidatorSet, String> {
    let mut keys = Vec::with_capacity(addrs.len());
    let mut own = None;
    for i in 0..addrs.len() {
        let vid = format!("validator-{}", i + 1);
        let key = read_public(
            &pub_path(dir, &vid),
            " (`ben cluster up` provisions a key for each address of [validators] addrs)",
        )?;
        keys.push(key);
        if vid == id {
            own = Some((i, read_secret(&key_path(dir, id))?));
        }
    }
    if own.is_none() && ben_wire::Role::of_id(id) == Some(ben_wire::Role::Validator) {
        return Err(format!(
            "`{id}` is not one of the {} validators [validators] addrs names",
            addrs.len()
        ));
    }
    ben_mesh_validator::bus::ValidatorSet::spread(keys, addrs.to_vec(), own)
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
    if ring.identity(signer.id()).map(|(bound, _)| bound) != Some(id) {
        return Err(format!(
            "{} has no matching {}: this id is not trusted by the cluster",
            kp.display(),
            pub_path(dir, id).display()
        ));
    }
    Ok((signer, ring))
}

#[cfg(test)]
fn ring_has(ring: &Keyring, s: &Signer) -> bool {
    ring.identity(s.id()).is_some()
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
        std::fs::remove_file(dir.join("bad.pub")).unwrap();
        // Each key is bound to its file's id and that id's role.
        let ring = keyring(&dir).unwrap();
        assert_eq!(
            ring.identity(s1.id()),
            Some(("spine-1", ben_wire::Role::Spine))
        );
        assert_eq!(
            ring.identity(c.id()),
            Some(("control", ben_wire::Role::Ledger))
        );
        // A key file of no role is refused, not trusted with a guess.
        std::fs::copy(dir.join("spine-1.pub"), dir.join("intruder-1.pub")).unwrap();
        assert!(keyring(&dir).unwrap_err().contains("names no role"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
