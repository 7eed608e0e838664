//! # Time
//!
//! Cores never read the wall clock (invariant 12): time is an input. A
//! shell hands a component a [`Clock`] — [`SystemClock`] in production, a
//! [`ManualClock`] (or any `Fn() -> i64`) in tests and simulations — and
//! the component asks it for "now" in nanoseconds since the Unix epoch.
//! [`now_ns`] is the wall clock for shells and binaries that need it once,
//! without a `Clock` at hand.
//!
//! [`rfc3339`] parses and prints timestamps (`2026-01-01T00:00:00Z`,
//! `2026-01-01T01:00:00.5+01:00`) by hand, so no locale or time zone
//! database is involved:
//!
//! ```
//! let ns = ben_time::parse_rfc3339("2026-01-01T01:00:00.25+01:00").unwrap();
//! assert_eq!(ben_time::format_rfc3339(ns), "2026-01-01T00:00:00.25Z");
//! assert_eq!(ben_time::parse_rfc3339("2026-02-31T00:00:00Z"), None);
//! ```
//!
//! This crate depends on nothing but std, so every layer may use it.

pub mod rfc3339;

pub use rfc3339::{
    format_rfc3339, format_rfc3339_millis, parse_rfc3339, parse_rfc3339_utc_default,
};

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Nanoseconds since the Unix epoch, injected (invariant 12).
pub trait Clock: Send + Sync {
    fn now_ns(&self) -> i64;
}

impl<F: Fn() -> i64 + Send + Sync> Clock for F {
    fn now_ns(&self) -> i64 {
        self()
    }
}

/// The wall clock (shells only).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        now_ns()
    }
}

/// The wall clock in nanoseconds since the Unix epoch: 0 for a clock set
/// before 1970, `i64::MAX` past 2262.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A clock moved by hand (tests, simulation); clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ns: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start_ns)))
    }

    pub fn advance(&self, by: Duration) {
        let ns = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = ManualClock::new(1_000);
        let other = c.clone();
        assert_eq!(c.now_ns(), 1_000);
        other.advance(Duration::from_micros(2));
        assert_eq!(c.now_ns(), 3_000);
    }

    #[test]
    fn closures_and_the_system_clock_are_clocks() {
        let fixed: Arc<dyn Clock> = Arc::new(|| 42);
        assert_eq!(fixed.now_ns(), 42);
        // 2020-01-01: a wall clock that reads less is broken or missing.
        assert!(SystemClock.now_ns() > 1_577_836_800_000_000_000);
        assert!(now_ns() > 1_577_836_800_000_000_000);
    }
}
