//! Files only Ben's user may read: the data dir and key directories
//! (0700), databases, keys and the API token (0600).
//!
//! Modes are set explicitly, never left to the umask: a directory or file
//! that already exists with wider permissions (a `.ben/` made by an older
//! Ben, a database copied in) is narrowed, not trusted as is. SQLite
//! creates its `-wal` and `-shm` files with the database file's mode, so a
//! database made here with [`file`] before SQLite opens it keeps them
//! private too.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of private directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of private files.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) with mode 0700, or narrows an
/// existing directory to 0700.
pub fn dir(path: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| format!("creating the private directory {}: {e}", path.display()))?;
    narrow(path, DIR_MODE)
}

/// Makes sure `path` exists as a file only its owner can read and write:
/// created empty with mode 0600 when missing, narrowed to 0600 when it is
/// wider. Its directory is created private when missing.
pub fn file(path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            dir(parent)?;
        }
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => narrow(path, FILE_MODE),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => narrow(path, FILE_MODE),
        Err(e) => Err(format!("creating the private file {}: {e}", path.display())),
    }
}

/// Writes `bytes` to a new file `path` with mode 0600. `Ok(false)` when
/// the file already exists (it is left as it is).
pub fn create_new(path: &Path, bytes: &[u8]) -> Result<bool, String> {
    use std::io::Write;
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(format!("creating {}: {e}", path.display())),
    };
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    narrow(path, FILE_MODE)?;
    Ok(true)
}

/// Sets `mode` on `path` when its permission bits allow more than `mode`
/// (the umask cannot widen; an existing file may be wider).
pub fn narrow(path: &Path, mode: u32) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o777 & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            format!(
                "setting mode {mode:o} on {} (only its owner should read it): {e}; change its owner or mode by hand",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Opens `path` (0600, created when missing) to append to it.
pub fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Replaces `path` with `bytes` at once, durably: a temporary file beside
/// it (0600), fsynced, renamed over it, and the directory fsynced. A crash
/// leaves the old content or the new, never a mix.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replace_and_append_are_private() {
        let base = std::env::temp_dir().join(format!("ben-private-r-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        dir(&base).unwrap();
        let p = base.join("f");
        replace(&p, b"one").unwrap();
        replace(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), FILE_MODE);
        assert!(!p.with_extension("tmp").exists());
        let q = base.join("g");
        std::io::Write::write_all(&mut append(&q).unwrap(), b"a").unwrap();
        std::io::Write::write_all(&mut append(&q).unwrap(), b"b").unwrap();
        assert_eq!(std::fs::read(&q).unwrap(), b"ab");
        assert_eq!(mode(&q), FILE_MODE);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn modes_are_private_whatever_was_there() {
        let base = std::env::temp_dir().join(format!("ben-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let d = base.join("data");
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        // An existing world-readable dir and file are narrowed.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("x.db");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"x", "contents are kept");
        let g = d.join("new.db");
        file(&g).unwrap();
        assert_eq!(mode(&g), 0o600);
        let t = d.join("token");
        assert!(create_new(&t, b"abc").unwrap());
        assert!(!create_new(&t, b"other").unwrap());
        assert_eq!(std::fs::read(&t).unwrap(), b"abc");
        assert_eq!(mode(&t), 0o600);
        let _ = std::fs::remove_dir_all(&base);
    }
}
