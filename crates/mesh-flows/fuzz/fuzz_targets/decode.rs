//! The packet decoder and the flow table never panic, whatever the bytes:
//! the first byte picks the link type, the rest is the frame, pushed twice
//! (so a second packet meets an existing flow) with timestamps from the input.
#![no_main]

use ben_mesh_flows::{decode, Config, FlowTable, LinkType};
use libfuzzer_sys::fuzz_target;

const LINKS: [u32; 10] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LinkType(LINKS[usize::from(sel) % LINKS.len()]);
    let _ = decode(link, frame);
    let mut table = FlowTable::new(Config::default());
    let ts = u64::from(sel) << 30;
    let _ = table.push(ts, link, frame);
    let _ = table.push(ts.wrapping_mul(3), link, frame);
    table.finish_all();
    for r in table.drain_finished() {
        assert!(r.features.as_array().iter().all(|v| v.is_finite()));
    }
    let c = *table.counters();
    assert_eq!(c.packets, c.in_flows + c.skipped() + c.corrupt());
});
