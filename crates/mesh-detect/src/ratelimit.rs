//! Token-bucket rate limiting of published anomalies.
//!
//! Time is an input (µs): capture time when replaying a file, wall time when
//! live (DESIGN §4 invariant 12). What does not fit is **counted**, never
//! silently dropped: the caller reports [`TokenBucket::overflow`].

/// A token bucket: `rate` tokens per second, at most `burst` banked.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_us: Option<i64>,
    overflow: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate_per_sec.max(0.0),
            burst,
            tokens: burst,
            last_us: None,
            overflow: 0,
        }
    }

    /// Takes one token at time `now_us`; false (and counted) when empty.
    /// Time going backwards adds no tokens.
    pub fn try_take(&mut self, now_us: i64) -> bool {
        if let Some(last) = self.last_us {
            if now_us > last {
                let dt = (now_us - last) as f64 / 1e6;
                self.tokens = (self.tokens + dt * self.rate).min(self.burst);
                self.last_us = Some(now_us);
            }
        } else {
            self.last_us = Some(now_us);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.overflow += 1;
            false
        }
    }

    /// How many takes were refused so far.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_and_refills() {
        let mut b = TokenBucket::new(100.0, 100.0);
        let granted = (0..150).filter(|_| b.try_take(0)).count();
        assert_eq!(granted, 100);
        assert_eq!(b.overflow(), 50);
        // 0.5 s later: 50 more
        let granted = (0..80).filter(|_| b.try_take(500_000)).count();
        assert_eq!(granted, 50);
        assert_eq!(b.overflow(), 80);
        // time going backwards grants nothing
        assert!(!b.try_take(0));
        // a long pause refills only up to the burst
        let granted = (0..300).filter(|_| b.try_take(100_000_000)).count();
        assert_eq!(granted, 100);
    }
}
