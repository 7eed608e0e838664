//! What a component is given.

use crate::{Clock, Drain};
use ben_bus::Bus;
use ben_store::Store;
use ben_wire::{Keyring, Signer};
use std::sync::Arc;

/// What a component is given.
#[derive(Clone)]
pub struct Deps {
    /// Unique component id, e.g. `spine-1`.
    pub id: String,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub signer: Arc<Signer>,
    /// Keys this component trusts (the ledger's and the other components').
    pub keyring: Arc<Keyring>,
    /// Started when the component is asked to stop: its data-path loops
    /// ([`consume`]) take no new work and finish what they hold.
    pub drain: Drain,
}
