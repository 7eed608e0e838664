//! Rule files: compiling never panics.
#![no_main]
use ben_mesh_detect::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let classes: Vec<String> = ["benign", "portscan", "flood"].iter().map(|s| s.to_string()).collect();
    let features = vec!["flow_duration".to_string()];
    let _ = RuleSet::parse(&String::from_utf8_lossy(data), &classes, &features);
});
