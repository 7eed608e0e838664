//! Flow records (CSV and JSONL): parsing never panics, strict or lenient.
#![no_main]
use ben_mesh_detect::FlowTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = FlowTable::parse(&text);
    let _ = FlowTable::parse_lenient(&text);
});
