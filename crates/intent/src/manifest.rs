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
    /// Which processes may attest as this app. Required in `ben.toml`
    /// ([`parse`]): a table (`{ uid = 1000, exe = "/usr/bin/shop" }`), or
    /// `"any"` to accept every process on purpose (the build warns).
    #[serde(default, deserialize_with = "selector_form")]
    pub selector: Selector,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub exe: Option<String>,
    /// BLAKE3 of the executable, hex.
    pub exe_blake3: Option<String>,
    /// `selector = "any"`: every process matches, declared on purpose.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any: bool,
}

impl Selector {
    /// No field set: every process matches.
    pub fn matches_every_process(&self) -> bool {
        self.uid.is_none() && self.gid.is_none() && self.exe.is_none() && self.exe_blake3.is_none()
    }
}

/// `selector = "any"` or `selector = { … }`.
fn selector_form<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Selector, D::Error> {
    struct Form;
    impl<'de> serde::de::Visitor<'de> for Form {
        type Value = Selector;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table like { uid = 1000, exe = \"/usr/bin/app\" }, or \"any\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Selector, E> {
            if v == "any" {
                Ok(Selector {
                    any: true,
                    ..Selector::default()
                })
            } else {
                Err(E::custom(format!(
                    "selector = \"{v}\": write a table like {{ uid = 1000, exe = \"/usr/bin/app\" }}, or \"any\" to accept every process"
                )))
            }
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Selector, A::Error> {
            Selector::deserialize(serde::de::value::MapAccessDeserializer::new(m))
        }
    }
    d.deserialize_any(Form)
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
    // A missing or empty selector matches every process: refused unless
    // said on purpose (`selector = "any"`).
    let raw: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let declared = |i: usize| {
        raw.get("apps")
            .and_then(|a| a.as_array())
            .and_then(|a| a.get(i))
            .and_then(|a| a.as_table())
            .is_some_and(|a| a.contains_key("selector"))
    };
    for (i, app) in m.apps.iter().enumerate() {
        let fix = "write `selector = { uid = …, exe = \"…\" }` (keys: uid, gid, exe, exe_blake3), or `selector = \"any\"` to accept every process on purpose";
        if !declared(i) {
            return Err(format!(
                "[[apps]] `{}` has no selector, so any process that reaches the sidecar could attest as it; {fix}",
                app.name
            ));
        }
        if !app.selector.any && app.selector.matches_every_process() {
            return Err(format!(
                "[[apps]] `{}` has an empty selector, which matches every process; {fix}",
                app.name
            ));
        }
        if app.selector.any && !app.selector.matches_every_process() {
            return Err(format!(
                "[[apps]] `{}`: `any` cannot be combined with uid, gid, exe or exe_blake3",
                app.name
            ));
        }
    }
    if !(m.blot.key.starts_with("env:") || m.blot.key.starts_with("file:")) {
        return Err(format!(
            "[blot] key = \"{}\": write \"env:VARIABLE\" or \"file:PATH\"",
            m.blot.key
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[bundle]\nname = \"b\"\n[[apps]]\nname = \"web\"\ncontract = \"web\"\n";

    #[test]
    fn an_app_needs_a_selector_or_says_any() {
        let e = parse(HEAD).unwrap_err();
        assert!(e.contains("`web` has no selector"), "{e}");
        assert!(e.contains("selector = \"any\""), "{e}");
        let e = parse(&format!("{HEAD}selector = {{}}\n")).unwrap_err();
        assert!(e.contains("empty selector"), "{e}");
        let e = parse(&format!("{HEAD}selector = \"all\"\n")).unwrap_err();
        assert!(e.contains("selector = \"all\""), "{e}");
        let e = parse(&format!("{HEAD}selector = {{ uid = 1, user = 2 }}\n")).unwrap_err();
        assert!(e.contains("user"), "{e}");
        let m = parse(&format!("{HEAD}selector = \"any\"\n")).unwrap();
        assert!(m.apps[0].selector.any);
        let m = parse(&format!("{HEAD}selector = {{ uid = 1000 }}\n")).unwrap();
        assert_eq!(m.apps[0].selector.uid, Some(1000));
        assert!(!m.apps[0].selector.any);
        // In the settings artifact a table selector is written as before
        // (no `any` key), so existing versions keep their digests.
        let json = serde_json::to_string(&m.apps[0]).unwrap();
        assert!(!json.contains("any"), "{json}");
        let back: AppSection = serde_json::from_str(&json).unwrap();
        assert_eq!(back.selector, m.apps[0].selector);
        let any = parse(&format!("{HEAD}selector = \"any\"\n")).unwrap();
        let json = serde_json::to_string(&any.apps[0]).unwrap();
        let back: AppSection = serde_json::from_str(&json).unwrap();
        assert!(back.selector.any, "{json}");
    }
}
