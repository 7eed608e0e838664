//! The example bundle, compiled into the binary so `ben up --demo` and
//! `ben bench` work from any directory, and the facts about this process
//! Beekeeper needs to accept it as the demo app.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

const FILES: [(&str, &str); 4] = [
    ("ben.toml", include_str!("../../../examples/shop/ben.toml")),
    (
        "shop.bspec",
        include_str!("../../../examples/shop/shop.bspec"),
    ),
    (
        "tests.bspec",
        include_str!("../../../examples/shop/tests.bspec"),
    ),
    ("ben.lock", include_str!("../../../examples/shop/ben.lock")),
];

/// Writes the shop bundle into `dir` and returns it.
pub fn write_bundle(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    Ok(dir.to_path_buf())
}

/// A Beekeeper selector that accepts this executable, run by this user,
/// as the shop's app.
pub fn selector_for_this_process() -> Result<ben_bee::Selector> {
    ben_bee::Selector::this_process("shop_web").map_err(anyhow::Error::msg)
}
