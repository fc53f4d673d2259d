//! The booking latency histogram: this process's own (Prometheus adds up the
//! servers' histograms), counted with atomics so recording takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 1 ms to 10 s. A booking on SQLite
/// commits in a few ms; seconds mean a queue behind the writer or a doctor-day lock.
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The histogram as Prometheus shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, observations at or below it), cumulative.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The count is the sum of the buckets read, so `+Inf` and `_count` agree even
    /// while bookings are being recorded.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = 0;
        let buckets = BUCKETS
            .iter()
            .zip(&self.counts)
            .map(|(&bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        let count = cumulative + self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            buckets,
            count,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_the_first_bucket_that_holds_them_and_add_up() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(800));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(
            s.buckets[0],
            (0.001, 2),
            "1 ms is at or below the 1 ms bound"
        );
        assert_eq!(s.buckets[4], (0.025, 2));
        assert_eq!(s.buckets[5], (0.05, 3));
        assert_eq!(s.buckets.last(), Some(&(10.0, 3)));
        assert_eq!(s.count, 4, "a minute is only in +Inf");
        assert!((s.sum_seconds - 60.0318).abs() < 1e-9);
    }
}
