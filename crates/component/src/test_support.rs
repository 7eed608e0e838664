//! Fixtures the unit tests share.

use crate::{Deps, SystemClock};
use ben_bus::InProcessBus;
use ben_store::FileStore;
use ben_wire::{Keyring, Signer};
use std::sync::Arc;

/// A component `spine-1` on an in-process bus and a fresh files store,
/// trusting the ledger's key (returned) and its own.
pub(crate) fn setup(dir: &str) -> (Deps, Signer, Arc<InProcessBus>) {
    let ledger = Signer::from_secret([9; 32]);
    let me = Signer::from_secret([1; 32]);
    let mut keys = Keyring::new();
    keys.trust(ben_wire::LEDGER_ID, ben_wire::Role::Ledger, ledger.public());
    keys.trust("spine-1", ben_wire::Role::Spine, me.public());
    let d = std::env::temp_dir().join(format!("ben-comp-{dir}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let bus = Arc::new(InProcessBus::default());
    let deps = Deps {
        id: "spine-1".into(),
        bus: bus.clone(),
        store: Arc::new(FileStore::open(d).unwrap()),
        clock: Arc::new(SystemClock),
        signer: Arc::new(me),
        keyring: Arc::new(keys),
        drain: Default::default(),
    };
    (deps, ledger, bus)
}
