//! Policies as an enforcement agent receives them: the input, read as a
//! policy message and signed by a validator the agent trusts (so the
//! envelope check passes and the block, QC, target and time checks get the
//! fuzzer's bytes), then the raw input as an envelope. Verification never
//! panics; what verifies goes through the scheduler and both backends'
//! renderers without panicking either.
#![no_main]
use ben_mesh_consensus::Block;
use ben_mesh_enforce::model::Allowlist;
use ben_mesh_enforce::schedule::{Config, Scheduler};
use ben_mesh_enforce::verify::Verifier;
use ben_mesh_wire::PolicyEvent;
use ben_wire::{Keyring, Role, Signer};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use std::sync::{Arc, OnceLock};

fn setup() -> &'static (Signer, Verifier) {
    static S: OnceLock<(Signer, Verifier)> = OnceLock::new();
    S.get_or_init(|| {
        let signer = Signer::from_secret([7; 32]);
        let mut keys = Keyring::new();
        keys.trust("validator-1", Role::Validator, signer.public());
        let set = (0..4u8)
            .map(|i| Signer::from_secret([40 + i; 32]).public())
            .collect();
        let v = Verifier {
            keyring: Arc::new(keys),
            set,
            chain: Block::genesis("fuzz").id,
            max_ttl_ms: 86_400_000,
        };
        (signer, v)
    })
}

fuzz_target!(|data: &[u8]| {
    let (signer, v) = setup();
    let now = 1_700_000_000_000;
    let _ = v.verify(data);
    let Ok(mut ev) = PolicyEvent::decode(data) else { return };
    ev.validator = "validator-1".into();
    let sealed = signer.seal_bytes(&ev);
    if let Ok(ps) = v.verify(&sealed) {
        let mut s = Scheduler::new(Config::default(), Allowlist::default());
        for p in ps {
            s.offer(p, now);
        }
        if let Some(batch) = s.batch(now + 1_000) {
            let _ = ben_mesh_enforce::nft::render_changes(&batch, &[], now);
            let _ = ben_mesh_enforce::ipt::render_changes(&batch, &[], now);
        }
    }
});
