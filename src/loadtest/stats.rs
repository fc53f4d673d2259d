//! The statistics of a load run, as pure functions over samples: latency percentiles
//! from an HDR histogram, counts per outcome class, a per-second series, and the
//! thresholds that fail a run. Unit-tested apart from the client and the printer.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Created,
    OtherSuccess,
    SlotTaken,
    OtherConflict,
    Unprocessable,
    RateLimited,
    OtherClientError,
    ServerError,
    Timeout,
    Connect,
    Transport,
}

impl Class {
    pub fn of_status(status: u16, code: Option<&str>) -> Self {
        match status {
            201 => Class::Created,
            200..=299 => Class::OtherSuccess,
            409 if code == Some("slot_taken") => Class::SlotTaken,
            409 => Class::OtherConflict,
            422 => Class::Unprocessable,
            429 => Class::RateLimited,
            400..=499 => Class::OtherClientError,
            _ => Class::ServerError,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Class::Created => "201",
            Class::OtherSuccess => "2xx",
            Class::SlotTaken => "409 slot_taken",
            Class::OtherConflict => "409 other",
            Class::Unprocessable => "422",
            Class::RateLimited => "429",
            Class::OtherClientError => "4xx other",
            Class::ServerError => "5xx",
            Class::Timeout => "timeout",
            Class::Connect => "connect",
            Class::Transport => "transport",
        }
    }

    pub fn is_success(self) -> bool {
        matches!(self, Class::Created | Class::OtherSuccess)
    }

    /// Errors count against `--max-error-rate`: the server failed or could not be
    /// reached. A 409 or 422 is the server refusing correctly, not an error.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Class::RateLimited
                | Class::ServerError
                | Class::Timeout
                | Class::Connect
                | Class::Transport
        )
    }
}

/// One finished request: when it was due (offset from the start of the run) and how
/// long it took from then — not from when it was sent, so a stalled client or server
/// shows up as latency instead of as fewer samples (no coordinated omission).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub due: Duration,
    pub latency: Duration,
    pub class: Class,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondBucket {
    pub second: u64,
    pub requests: u64,
    pub successes: u64,
    pub refusals: u64,
    pub errors: u64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub requests: u64,
    pub successes: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Milliseconds, measured from each request's due time.
    pub latency_ms: Latency,
    pub by_class: BTreeMap<&'static str, u64>,
    pub per_second: Vec<SecondBucket>,
    /// Sent more than `LATE_AFTER` after they were due (the client fell behind).
    pub late_arrivals: u64,
    /// Never sent: the in-flight cap was reached. Counted, never silently skipped.
    pub dropped_arrivals: u64,
}

/// An arrival sent later than this after its due time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

pub struct Stats {
    histogram: Histogram<u64>,
    by_class: BTreeMap<Class, u64>,
    seconds: BTreeMap<u64, SecondBucket>,
    pub late_arrivals: u64,
    pub dropped_arrivals: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            // Microseconds, 1 µs to 10 minutes, 3 significant figures.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("valid histogram bounds"),
            by_class: BTreeMap::new(),
            seconds: BTreeMap::new(),
            late_arrivals: 0,
            dropped_arrivals: 0,
        }
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Stats {
    pub fn record(&mut self, sample: Sample) {
        let micros = (sample.latency.as_micros() as u64).clamp(1, 600_000_000);
        self.histogram.saturating_record(micros);
        *self.by_class.entry(sample.class).or_default() += 1;
        let second = sample.due.as_secs();
        let bucket = self.seconds.entry(second).or_insert_with(|| SecondBucket {
            second,
            ..Default::default()
        });
        bucket.requests += 1;
        if sample.class.is_success() {
            bucket.successes += 1;
        } else if sample.class.is_error() {
            bucket.errors += 1;
        } else {
            bucket.refusals += 1;
        }
        bucket.max_ms = bucket.max_ms.max(ms(micros));
    }

    pub fn summary(&self) -> Summary {
        let requests = self.histogram.len();
        let count = |f: fn(Class) -> bool| {
            self.by_class
                .iter()
                .filter(|(c, _)| f(**c))
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        let errors = count(Class::is_error);
        let h = &self.histogram;
        let at = |q: f64| {
            if requests == 0 {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        Summary {
            requests,
            successes: count(Class::is_success),
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            latency_ms: Latency {
                p50: at(0.50),
                p90: at(0.90),
                p95: at(0.95),
                p99: at(0.99),
                p999: at(0.999),
                max: if requests == 0 { 0.0 } else { ms(h.max()) },
                mean: if requests == 0 {
                    0.0
                } else {
                    h.mean() / 1000.0
                },
            },
            by_class: self.by_class.iter().map(|(c, n)| (c.label(), *n)).collect(),
            per_second: self.seconds.values().cloned().collect(),
            late_arrivals: self.late_arrivals,
            dropped_arrivals: self.dropped_arrivals,
        }
    }
}

/// Limits that fail a run, like k6 thresholds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Thresholds {
    pub max_p99_ms: Option<f64>,
    pub max_error_rate: Option<f64>,
}

/// Each threshold the run broke, as a sentence.
pub fn violations(summary: &Summary, limits: Thresholds) -> Vec<String> {
    let mut broken = Vec::new();
    if let Some(max) = limits
        .max_p99_ms
        .filter(|max| summary.latency_ms.p99 > *max)
    {
        broken.push(format!(
            "p99 latency {:.2} ms is above --max-p99 {max} ms",
            summary.latency_ms.p99
        ));
    }
    if let Some(max) = limits
        .max_error_rate
        .filter(|max| summary.error_rate > *max)
    {
        broken.push(format!(
            "error rate {:.4} is above --max-error-rate {max}",
            summary.error_rate
        ));
    }
    if summary.dropped_arrivals > 0 && limits.max_error_rate.is_some() {
        broken.push(format!(
            "{} arrivals were dropped at the in-flight cap",
            summary.dropped_arrivals
        ));
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(due_ms: u64, latency_ms: u64, class: Class) -> Sample {
        Sample {
            due: Duration::from_millis(due_ms),
            latency: Duration::from_millis(latency_ms),
            class,
        }
    }

    #[test]
    fn percentiles_come_from_every_sample() {
        let mut stats = Stats::default();
        for i in 1..=1000 {
            stats.record(sample(i, i, Class::Created));
        }
        let s = stats.summary();
        assert_eq!(s.requests, 1000);
        assert!(
            (s.latency_ms.p50 - 500.0).abs() < 1.0,
            "{}",
            s.latency_ms.p50
        );
        assert!(
            (s.latency_ms.p99 - 990.0).abs() < 1.0,
            "{}",
            s.latency_ms.p99
        );
        assert!((s.latency_ms.max - 1000.0).abs() < 1.0);
    }

    #[test]
    fn refusals_are_not_errors_but_timeouts_and_5xx_are() {
        let mut stats = Stats::default();
        stats.record(sample(0, 1, Class::Created));
        stats.record(sample(0, 1, Class::of_status(409, Some("slot_taken"))));
        stats.record(sample(0, 1, Class::of_status(422, None)));
        stats.record(sample(1500, 1, Class::of_status(503, None)));
        stats.record(sample(1500, 1, Class::Timeout));
        let s = stats.summary();
        assert_eq!((s.successes, s.errors), (1, 2));
        assert!((s.error_rate - 0.4).abs() < 1e-9);
        assert_eq!(s.by_class["409 slot_taken"], 1);
        assert_eq!(s.per_second.len(), 2);
        assert_eq!((s.per_second[0].refusals, s.per_second[1].errors), (2, 2));
    }

    #[test]
    fn thresholds_fail_a_slow_or_failing_run_and_pass_a_good_one() {
        let mut stats = Stats::default();
        for i in 0..100 {
            stats.record(sample(
                i,
                if i >= 98 { 50 } else { 2 },
                if i < 95 {
                    Class::Created
                } else {
                    Class::ServerError
                },
            ));
        }
        let s = stats.summary();
        let strict = Thresholds {
            max_p99_ms: Some(10.0),
            max_error_rate: Some(0.01),
        };
        assert_eq!(violations(&s, strict).len(), 2);
        let lenient = Thresholds {
            max_p99_ms: Some(100.0),
            max_error_rate: Some(0.1),
        };
        assert!(violations(&s, lenient).is_empty());
    }

    #[test]
    fn an_empty_run_has_zero_latency_rather_than_a_panic() {
        let s = Stats::default().summary();
        assert_eq!((s.requests, s.latency_ms.p99, s.error_rate), (0, 0.0, 0.0));
    }
}
