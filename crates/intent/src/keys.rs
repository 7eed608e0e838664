//! Where the hmac key comes from: `[blot] key = "env:VAR"` or
//! `"file:PATH"`; for the default `env:BEN_BLOT_KEY` when the variable is
//! unset, `DATA_DIR/blot.key`, created with 32 fresh random bytes on first
//! use (and a note on stderr, so nobody is surprised by it).

use ben_blot::BlotKey;
use std::io::Write;
use std::path::Path;

pub fn load_blot_key(
    spec: &str,
    bundle_dir: Option<&Path>,
    data_dir: &Path,
) -> Result<BlotKey, String> {
    let material: Vec<u8> = if let Some(var) = spec.strip_prefix("env:") {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => v.into_bytes(),
            _ if var == "BEN_BLOT_KEY" => {
                let path = data_dir.join("blot.key");
                if !path.exists() {
                    std::fs::create_dir_all(data_dir)
                        .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
                    let mut bytes = [0u8; 32];
                    getrandom::getrandom(&mut bytes)
                        .map_err(|e| format!("drawing 32 random bytes for a new blot key: {e}"))?;
                    write_private(&path, hex::encode(bytes).as_bytes())?;
                    eprintln!(
                        "note: BEN_BLOT_KEY is not set; created a new hmac key in {}",
                        path.display()
                    );
                }
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?
            }
            _ => {
                return Err(format!(
                    "ben.toml sets [blot] key = \"{spec}\", but ${var} is not set"
                ))
            }
        }
    } else if let Some(p) = spec.strip_prefix("file:") {
        let path = bundle_dir.map_or_else(|| Path::new(p).to_path_buf(), |d| d.join(p));
        std::fs::read(&path).map_err(|e| {
            format!(
                "reading the blot key file {} ([blot] key in ben.toml): {e}",
                path.display()
            )
        })?
    } else {
        return Err(format!(
            "[blot] key = \"{spec}\" must start with env: or file:"
        ));
    };
    let material: Vec<u8> = String::from_utf8_lossy(&material)
        .trim()
        .as_bytes()
        .to_vec();
    BlotKey::from_material(&material).map_err(|e| format!("blot key ({spec}): {e}"))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without BEN_BLOT_KEY a key is drawn once into DATA_DIR/blot.key
    /// (64 hex digits, owner-only) and read back the same afterwards.
    #[test]
    fn a_missing_key_is_created_once_in_the_data_dir() {
        if std::env::var_os("BEN_BLOT_KEY").is_some_and(|v| !v.is_empty()) {
            eprintln!("BEN_BLOT_KEY is set; this test needs it unset");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ben-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_blot_key("env:BEN_BLOT_KEY", None, &dir).unwrap();
        let text = std::fs::read_to_string(dir.join("blot.key")).unwrap();
        assert_eq!(text.len(), 64, "{text}");
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("blot.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_blot_key("env:BEN_BLOT_KEY", None, &dir).unwrap();
        assert_eq!(first.id(), again.id());
        let other = std::env::temp_dir().join(format!("ben-keys-other-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&other);
        let fresh = load_blot_key("env:BEN_BLOT_KEY", None, &other).unwrap();
        assert_ne!(first.id(), fresh.id(), "two draws gave the same key");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
