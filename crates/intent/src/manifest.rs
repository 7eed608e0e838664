//! `ben.toml`: only `[bundle] name` is required; every other key has a
//! default. Unknown keys are errors (a typo must not silently do nothing).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub bundle: BundleSection,
    #[serde(default)]
    pub blot: BlotSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub apps: Vec<AppSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSection {
    pub name: String,
    /// `"auto"` (the content digest) or an explicit label.
    #[serde(default = "auto")]
    pub version: String,
    /// Component roles this bundle targets; empty means all.
    #[serde(default)]
    pub targets: Vec<String>,
}

fn auto() -> String {
    "auto".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlotSection {
    /// Scan string fields that no schema declares (records given in schema
    /// form); when false they are dropped, never passed through raw.
    #[serde(default = "yes")]
    pub scan_undeclared: bool,
    /// Where the hmac key comes from: `env:VAR` or `file:PATH`.
    #[serde(default = "default_key")]
    pub key: String,
    #[serde(default = "default_field")]
    pub max_field_bytes: usize,
    #[serde(default = "default_record")]
    pub max_record_bytes: usize,
}

fn yes() -> bool {
    true
}
fn default_key() -> String {
    "env:BEN_BLOT_KEY".into()
}
fn default_field() -> usize {
    ben_blot::Limits::default().max_field_bytes
}
fn default_record() -> usize {
    ben_blot::Limits::default().max_record_bytes
}

impl Default for BlotSection {
    fn default() -> Self {
        BlotSection {
            scan_undeclared: true,
            key: default_key(),
            max_field_bytes: default_field(),
            max_record_bytes: default_record(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(default = "default_cost")]
    pub max_pack_cost: u64,
}

fn default_cost() -> u64 {
    ben_bitspec::check::CheckOptions::default().max_pack_cost
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_pack_cost: default_cost(),
        }
    }
}

/// An app Beekeeper attests, and the contract that translates its records.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub name: String,
    pub contract: String,
    #[serde(default)]
    pub selector: Selector,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub exe: Option<String>,
    /// BLAKE3 of the executable, hex.
    pub exe_blake3: Option<String>,
}

/// Parses `ben.toml` text; the error names the key and line.
pub fn parse(text: &str) -> Result<Manifest, String> {
    let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
    if m.bundle.name.trim().is_empty() {
        return Err("[bundle] name must not be empty".into());
    }
    if !m
        .bundle
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "[bundle] name `{}` may use only letters, digits, `_` and `-`",
            m.bundle.name
        ));
    }
    if !(m.blot.key.starts_with("env:") || m.blot.key.starts_with("file:")) {
        return Err(format!(
            "[blot] key = \"{}\": write \"env:VARIABLE\" or \"file:PATH\"",
            m.blot.key
        ));
    }
    Ok(m)
}
