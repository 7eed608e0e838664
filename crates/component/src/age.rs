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

    /// The counts so far, kept.
    pub fn snapshot(&self) -> AgeCounts {
        AgeCounts {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
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

/// The bounds (seconds) of the Prometheus histogram of record ages
/// (`ben_record_age_seconds`): 100 µs to 10 s.
pub const HISTOGRAM_BOUNDS_S: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Record ages as a Prometheus histogram: cumulative counts at each of
/// [`HISTOGRAM_BOUNDS_S`], the count and the sum (seconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgeHistogram {
    pub le: Vec<u64>,
    pub count: u64,
    pub sum_s: f64,
}

impl AgeCounts {
    /// No records.
    pub fn empty() -> AgeCounts {
        AgeCounts {
            counts: vec![0; BUCKETS],
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &AgeCounts) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// As a Prometheus histogram. A record counts at a bound when its
    /// bucket's upper bound is within it, so an age near a bound may count
    /// at the next one (buckets are 19 % wide); the sum takes each record
    /// at the geometric middle of its bucket (within 10 %).
    pub fn histogram(&self) -> AgeHistogram {
        let mut le = vec![0u64; HISTOGRAM_BOUNDS_S.len()];
        let mut sum_s = 0.0;
        for (i, c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let upper_s = upper_us(i) as f64 / 1e6;
            let mid_s = if i == 0 {
                0.0
            } else {
                upper_s / 2f64.powf(0.5 / PER_DOUBLING)
            };
            sum_s += mid_s * *c as f64;
            for (j, bound) in HISTOGRAM_BOUNDS_S.iter().enumerate() {
                if upper_s <= *bound * (1.0 + 1e-9) {
                    le[j] += c;
                }
            }
        }
        AgeHistogram {
            le,
            count: self.total(),
            sum_s,
        }
    }

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
    fn the_histogram_is_cumulative_and_adds_up() {
        let a = Ages::default();
        a.record(50_000, 3); // 50 µs
        a.record(2_000_000, 2); // 2 ms
        a.record(30_000_000_000, 1); // 30 s: past every bound
        let mut total = a.snapshot();
        assert_eq!(total.total(), 6, "a snapshot keeps the counts");
        let h = total.histogram();
        assert_eq!(h.count, 6);
        assert_eq!(h.le[0], 3, "100 µs");
        assert_eq!(h.le[4], 5, "2.5 ms");
        assert_eq!(*h.le.last().unwrap(), 5, "10 s");
        assert!(h.le.windows(2).all(|w| w[0] <= w[1]));
        let exact = 3.0 * 50e-6 + 2.0 * 2e-3 + 30.0;
        assert!(
            (h.sum_s - exact).abs() / exact < 0.1,
            "{} vs {exact}",
            h.sum_s
        );
        // Intervals add up to the running total.
        total.add(&a.take());
        assert_eq!(total.histogram().count, 12);
        assert_eq!(a.take().total(), 0);
        assert_eq!(AgeCounts::empty().histogram().count, 0);
    }

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
