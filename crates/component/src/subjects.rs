//! Subjects of the intent and health planes and the data path
//! ([`ben_wire::subjects`], named here too).

pub use ben_wire::subjects::*;

/// How many partitions detector traffic is split into (fixed: a group's
/// partition must not move when detectors come and go).
pub const DETECTOR_PARTITIONS: u32 = 16;

/// Every detector partition subject (documentation, the status).
pub const DETECTOR_ALL: &str = "ben.data.detector.>";

fn names(suffix: &str) -> Vec<&'static str> {
    // Built once per process; a fixed, small set of names.
    (0..DETECTOR_PARTITIONS)
        .map(|k| &*Box::leak(format!("{DETECTOR}.{k}{suffix}").into_boxed_str()))
        .collect()
}

static PARTITION: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| names(""));
static COPY: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| names(".copy"));

/// spine → the detector serving partition `k`: the records whose home is
/// `k` (each record once; these count).
pub fn detector_partition(k: u32) -> &'static str {
    PARTITION
        .get(k as usize)
        .copied()
        .unwrap_or("ben.data.detector.invalid")
}

/// spine → the detector serving partition `k`: copies of records whose
/// home is elsewhere, for the playbooks whose groups are in `k`.
pub fn detector_copy(k: u32) -> &'static str {
    COPY.get(k as usize)
        .copied()
        .unwrap_or("ben.data.detector.invalid.copy")
}
