//! # The store (`ben_store_access`)
//!
//! Content-addressed artifacts: the key of a blob is the BLAKE3 hash of its
//! bytes (64 hex characters). `put` returns the key; `get` re-hashes what it
//! read and refuses bytes whose hash does not match the key — a mismatch is
//! an error, never a fallback (DESIGN.md §4, invariant 3). Identical
//! artifacts are stored once.
//!
//! [`FileStore`] keeps blobs under a directory (`ab/abcdef…`), writing to a
//! temporary file and renaming, so a crash never leaves a half-written blob
//! under a valid key. Cluster mode keeps artifacts in the NATS object store
//! (`ben_bus_nats::NatsStore`) behind the same [`Store`] trait.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A BLAKE3 content key, 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    pub fn of(bytes: &[u8]) -> Key {
        Key(blake3::hash(bytes).to_hex().to_string())
    }

    /// Parses a key; refuses anything that is not 64 lowercase hex chars.
    pub fn parse(s: &str) -> Result<Key, StoreError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Key(s.to_string()))
        } else {
            Err(StoreError::BadKey(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a store key (64 lowercase hex characters of BLAKE3)")]
    BadKey(String),
    #[error("no artifact {0} in the store")]
    NotFound(Key),
    #[error("artifact {key} is corrupt: its bytes hash to {actual}; it will not be served (restore it by staging the bundle again)")]
    Corrupt { key: Key, actual: String },
    /// A store behind a network (the NATS object store): unreachable,
    /// timed out, refused the write.
    #[error("{store}: {reason}")]
    Remote { store: String, reason: String },
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Content-addressed blob storage.
pub trait Store: Send + Sync {
    fn put(&self, bytes: &[u8]) -> Result<Key, StoreError>;
    /// The bytes of `key`, verified against it.
    fn get(&self, key: &Key) -> Result<Vec<u8>, StoreError>;
    /// Whether the store holds `key`. `Err` when it cannot tell (an
    /// unreachable remote store, an unreadable directory): never "absent"
    /// for "could not look".
    fn has(&self, key: &Key) -> Result<bool, StoreError>;
}

/// `create_dir_all` with mode 0700 for what it creates.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Blobs as files under a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Opens (creates) the store in `dir`. The directories are made 0700
    /// and blobs 0600, whatever the umask: only Ben's user reads them.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir.as_ref().to_path_buf();
        let io = |source| StoreError::Io {
            path: dir.clone(),
            source,
        };
        private_dir(&dir).map_err(io)?;
        // An existing store made wider (by an older Ben) is narrowed.
        if std::fs::metadata(&dir).map_err(io)?.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(FileStore { dir })
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(&key.0[..2]).join(&key.0)
    }
}

impl Store for FileStore {
    fn put(&self, bytes: &[u8]) -> Result<Key, StoreError> {
        let key = Key::of(bytes);
        let path = self.path(&key);
        if path.is_file() && self.get(&key).is_ok() {
            return Ok(key); // already there, and intact
        }
        let io = |source, p: &Path| StoreError::Io {
            path: p.to_path_buf(),
            source,
        };
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        private_dir(&parent).map_err(|e| io(e, &parent))?;
        let tmp = parent.join(format!(".{}.tmp{}", key.0, std::process::id()));
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io(e, &tmp))?
        };
        f.write_all(bytes).map_err(|e| io(e, &tmp))?;
        f.sync_all().map_err(|e| io(e, &tmp))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(e, &path))?;
        Ok(key)
    }

    fn get(&self, key: &Key) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.clone()))
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let actual = Key::of(&bytes);
        if actual != *key {
            return Err(StoreError::Corrupt {
                key: key.clone(),
                actual: actual.0,
            });
        }
        Ok(bytes)
    }

    fn has(&self, key: &Key) -> Result<bool, StoreError> {
        let path = self.path(key);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ben-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn put_get_dedupe() {
        let s = FileStore::open(tmp("a")).unwrap();
        let k = s.put(b"pack bytes").unwrap();
        assert_eq!(k, Key::of(b"pack bytes"));
        assert_eq!(s.put(b"pack bytes").unwrap(), k);
        assert_eq!(s.get(&k).unwrap(), b"pack bytes");
        assert!(s.has(&k).unwrap());
        let missing = Key::of(b"other");
        assert!(matches!(s.get(&missing), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn corrupt_blob_is_refused_never_served() {
        let dir = tmp("b");
        let s = FileStore::open(&dir).unwrap();
        let k = s.put(b"original").unwrap();
        std::fs::write(dir.join(&k.as_str()[..2]).join(k.as_str()), b"tampered").unwrap();
        let err = s.get(&k).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        // put repairs it.
        s.put(b"original").unwrap();
        assert_eq!(s.get(&k).unwrap(), b"original");
    }

    #[test]
    fn keys_are_validated() {
        assert!(Key::parse(&"a".repeat(64)).is_ok());
        assert!(Key::parse("../../etc/passwd").is_err());
        assert!(Key::parse(&"A".repeat(64)).is_err());
    }
}
