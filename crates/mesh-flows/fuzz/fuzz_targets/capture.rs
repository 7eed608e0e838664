//! The pcap/pcapng reader never panics on any file.
#![no_main]

use ben_mesh_flows::{read_capture, Config, FlowTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut table = FlowTable::new(Config::default());
    let _ = read_capture(data, |ts, link, frame| {
        let _ = table.push(ts, link, frame);
    });
    table.finish_all();
});
