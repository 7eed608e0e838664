//! How old records are when they reach a hop: the time since the sidecar
//! received them from the app (`Record::received_ns`), on the component's
//! clock. Every process on the path keeps one [`Ages`]; reported per
//! metrics interval, the hops' ages show where the data path's latency
//! goes (the sidecar keeps the age of the signals it hands to apps).
//!
//! Across machines the figure includes the clocks' offset; on one machine
//! (or with synchronised clocks) it is the latency so far.
//!
//! A lock-free log histogram: four buckets per doubling (each bucket's
//! upper bound is 2^(1/4) ≈ 1.19 times its lower one), from 1 µs to about
//! 67 s; older goes in the last bucket, clock skew into "now" in the first.

use std::sync::atomic::{AtomicU64, Ordering};

const PER_DOUBLING: f64 = 4.0;
const BUCKETS: usize = 26 * 4 + 1;

/// Counts of records by age, since the last [`Ages::take`].
pub struct Ages {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Ages {
    fn default() -> Self {
        Ages {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for Ages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ages").finish_non_exhaustive()
    }
}

/// Bucket `i > 0` holds ages in (2^((i-1)/4), 2^(i/4)] µs; bucket 0 holds
/// ages up to 1 µs (and negative ones: a clock behind the sidecar's).
fn bucket(age_us: f64) -> usize {
    if age_us <= 1.0 {
        return 0;
    }
    ((age_us.log2() * PER_DOUBLING).ceil() as usize).min(BUCKETS - 1)
}

fn upper_us(i: usize) -> u64 {
    2f64.powf(i as f64 / PER_DOUBLING).round() as u64
}

impl Ages {
    /// `n` records that are `age_ns` old now.
    pub fn record(&self, age_ns: i64, n: u64) {
        let i = bucket(age_ns as f64 / 1e3);
        self.buckets[i].fetch_add(n, Ordering::Relaxed);
    }

    /// The counts so far, and starts again from zero.
    pub fn take(&self) -> AgeCounts {
        AgeCounts {
            counts: self
                .buckets
                .iter()
                .map(|b| b.swap(0, Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A snapshot of [`Ages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeCounts {
    counts: Vec<u64>,
}

impl AgeCounts {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The age (µs, rounded up to its bucket's bound, so at most 19 % high)
    /// that a `q` share of the records did not exceed; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let want = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(upper_us(i));
            }
        }
        Some(upper_us(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let a = Ages::default();
        // 1..=1000 µs, one record each.
        for us in 1..=1000i64 {
            a.record(us * 1000, 1);
        }
        let c = a.take();
        assert_eq!(c.total(), 1000);
        for (q, truth) in [(0.5, 500.0), (0.99, 990.0), (0.1, 100.0), (1.0, 1000.0)] {
            let got = c.quantile_us(q).unwrap() as f64;
            assert!(
                got >= truth * 0.999 && got <= truth * 1.19 + 1.0,
                "q{q}: {got} for {truth}"
            );
        }
        // Taken: empty again.
        assert_eq!(a.take().quantile_us(0.5), None);
    }

    #[test]
    fn weights_skew_and_overflow() {
        let a = Ages::default();
        a.record(-5_000, 3); // a clock behind the sidecar's
        a.record(2_000_000, 97); // 2 ms, 97 records in one batch
        let c = a.take();
        assert_eq!(c.total(), 100);
        assert_eq!(c.quantile_us(0.01), Some(1));
        let p50 = c.quantile_us(0.5).unwrap();
        assert!((2000..=2379).contains(&p50), "{p50}");
        a.record(i64::MAX, 1);
        let huge = a.take().quantile_us(0.5).unwrap();
        assert!(huge >= 60_000_000, "{huge}");
    }
}
