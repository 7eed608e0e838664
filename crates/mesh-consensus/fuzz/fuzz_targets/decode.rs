//! Validator messages: decoding never panics, what decodes re-encodes to a
//! message that decodes the same, and a validator handed it (as if from a
//! peer) never panics either.
#![no_main]
use ben_mesh_consensus::{wire, Block, Config, Durable, Node, Pool, SimCrypto};
use libfuzzer_sys::fuzz_target;

struct Empty;
impl Pool for Empty {
    fn committed(&mut self, _: &Block) {}

    fn batch(&mut self, _: &[&Block], _: usize, _: usize) -> Vec<Vec<u8>> {
        vec![]
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(env) = wire::decode(data) else { return };
    assert_eq!(wire::decode(&wire::encode(&env)).as_ref(), Ok(&env));
    let g = Block::genesis("fuzz");
    let mut node = Node::new(Config::new(4, 0), SimCrypto::new(0, 1), &g, Durable::genesis(&g));
    let mut out = vec![];
    node.start(0, &mut Empty, &mut out);
    node.on_message(1, env, 10, &mut Empty, &mut out);
    node.on_tick(5_000, &mut Empty, &mut out);
});
