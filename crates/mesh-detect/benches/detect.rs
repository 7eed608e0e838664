//! Detection throughput (flows/s) — filled in below.
fn main() {}
