//! The statistics of a load run, as pure functions over samples: latency percentiles
//! from an HDR histogram, counts per outcome class, each refusal's status and error code
//! with a count and a sample message, a per-second series, and what fails a run (its
//! thresholds, a run that booked nothing, a refusal the run did not expect).
//! Unit-tested apart from the client and the printer.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::domain::Refusal;

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
#[derive(Debug, Clone)]
pub struct Sample {
    pub due: Duration,
    pub latency: Duration,
    pub class: Class,
    /// The answer, when it was not a 2xx.
    pub refusal: Option<Answer>,
}

/// A non-2xx answer: its status, the JSON `error.code` (empty when the body had
/// none) and the message (`error.message`, or the start of a body that is not ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Answer {
    /// Reads a non-2xx answer's body.
    pub fn of(status: u16, body: &str) -> Answer {
        let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|b| b["error"][name].as_str())
                .map(str::to_owned)
        };
        let message = field("message").unwrap_or_else(|| {
            let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
            line.chars().take(120).collect()
        });
        Answer {
            status,
            code: field("code").unwrap_or_default(),
            message,
        }
    }
}

/// Answers a run expects besides 2xx: the conflicts of a rush (someone else got the
/// slot, the token, the day's last slot, the last walk-in: `Refusal::CONFLICTS`), and
/// whatever `--accept STATUS[:CODE]` adds.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub accepted: Vec<(u16, Option<String>)>,
}

impl Expected {
    pub fn covers(&self, status: u16, code: &str) -> bool {
        (status == 409 && Refusal::CONFLICTS.iter().any(|r| r.code() == code))
            || self
                .accepted
                .iter()
                .any(|(s, c)| *s == status && c.as_deref().is_none_or(|c| c == code))
    }

    /// Reads `STATUS` or `STATUS:CODE`, a 4xx.
    pub fn parse_accept(text: &str) -> Result<(u16, Option<String>), String> {
        let (status, code) = match text.split_once(':') {
            Some((s, c)) => (s, Some(c.trim().to_owned()).filter(|c| !c.is_empty())),
            None => (text, None),
        };
        match status.trim().parse::<u16>() {
            Ok(s) if (400..500).contains(&s) => Ok((s, code)),
            _ => Err(format!(
                "--accept {text}: a 4xx status, optionally with an error code (409:idempotency_in_flight)"
            )),
        }
    }
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

/// How often one status and error code was answered, with the first message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerTally {
    pub status: u16,
    pub code: String,
    pub count: u64,
    pub message: String,
    /// A conflict of the rush or an `--accept`ed answer; any other 4xx fails the run.
    pub expected: bool,
}

impl AnswerTally {
    /// `409 slot_taken`, or `502` when the body had no error code.
    pub fn label(&self) -> String {
        if self.code.is_empty() {
            self.status.to_string()
        } else {
            format!("{} {}", self.status, self.code)
        }
    }
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
    /// Every non-2xx answer by status and error code, most frequent first.
    pub answers: Vec<AnswerTally>,
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
    /// (status, code) → (count, first message).
    answers: BTreeMap<(u16, String), (u64, String)>,
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
            answers: BTreeMap::new(),
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
        if let Some(answer) = sample.refusal {
            let tally = self
                .answers
                .entry((answer.status, answer.code))
                .or_insert((0, answer.message));
            tally.0 += 1;
        }
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

    pub fn summary(&self, expected: &Expected) -> Summary {
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
            answers: {
                let mut answers: Vec<AnswerTally> = self
                    .answers
                    .iter()
                    .map(|((status, code), (count, message))| AnswerTally {
                        status: *status,
                        code: code.clone(),
                        count: *count,
                        message: message.clone(),
                        expected: expected.covers(*status, code),
                    })
                    .collect();
                answers.sort_by_key(|a| std::cmp::Reverse(a.count));
                answers
            },
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

/// What makes a run fail whatever the thresholds: nothing sent, nothing booked, or
/// a 4xx the run did not expect (a wrong key, a body the server cannot read, a
/// doctor it does not know). Each as a sentence.
pub fn unexpected(summary: &Summary) -> Vec<String> {
    let mut failures = Vec::new();
    let tallies = |answers: &[&AnswerTally]| {
        answers
            .iter()
            .take(3)
            .map(|a| format!("{} × {} (\"{}\")", a.count, a.label(), a.message))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if summary.requests == 0 {
        failures.push("no request was sent".to_owned());
    } else if summary.successes == 0 {
        // What the run met besides the unexpected 4xx, which the next sentence lists.
        let others: Vec<&AnswerTally> = summary
            .answers
            .iter()
            .filter(|a| a.expected || !(400..500).contains(&a.status))
            .collect();
        let unanswered = summary.requests - summary.answers.iter().map(|a| a.count).sum::<u64>();
        let mut met = tallies(&others);
        if unanswered > 0 {
            met = [met, format!("{unanswered} unanswered")]
                .into_iter()
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
        }
        failures.push(if met.is_empty() {
            format!("no booking succeeded ({} requests)", summary.requests)
        } else {
            format!(
                "no booking succeeded ({} requests): {met}",
                summary.requests
            )
        });
    }
    let surprises: Vec<&AnswerTally> = summary
        .answers
        .iter()
        .filter(|a| (400..500).contains(&a.status) && !a.expected)
        .collect();
    if !surprises.is_empty() {
        let count: u64 = surprises.iter().map(|a| a.count).sum();
        failures.push(format!(
            "{count} answers were 4xx other than the rush's conflicts: {}",
            tallies(&surprises)
        ));
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(due_ms: u64, latency_ms: u64, class: Class) -> Sample {
        Sample {
            due: Duration::from_millis(due_ms),
            latency: Duration::from_millis(latency_ms),
            class,
            refusal: None,
        }
    }

    fn answered(status: u16, body: &str) -> Sample {
        let answer = Answer::of(status, body);
        Sample {
            class: Class::of_status(status, Some(answer.code.as_str())),
            refusal: Some(answer),
            ..sample(0, 1, Class::Created)
        }
    }

    fn error(code: &str, message: &str) -> String {
        serde_json::json!({"error": {"code": code, "message": message}}).to_string()
    }

    #[test]
    fn one_booking_and_the_rest_slot_taken_passes() {
        let mut stats = Stats::default();
        stats.record(sample(0, 1, Class::Created));
        for _ in 0..599 {
            stats.record(answered(
                409,
                &error("slot_taken", "This slot is already booked."),
            ));
        }
        let s = stats.summary(&Expected::default());
        assert_eq!(s.answers.len(), 1);
        assert_eq!(
            (
                s.answers[0].label(),
                s.answers[0].count,
                s.answers[0].expected
            ),
            ("409 slot_taken".into(), 599, true)
        );
        assert!(unexpected(&s).is_empty());
    }

    #[test]
    fn a_run_of_422s_or_401s_fails_naming_each_code_with_a_sample_message() {
        let mut stats = Stats::default();
        for _ in 0..600 {
            stats.record(answered(
                422,
                &error("invalid_field", "doctorId is required."),
            ));
        }
        let failures = unexpected(&stats.summary(&Expected::default()));
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert_eq!(failures[0], "no booking succeeded (600 requests)");
        assert_eq!(
            failures[1],
            "600 answers were 4xx other than the rush's conflicts: 600 × 422 invalid_field (\"doctorId is required.\")"
        );

        let mut stats = Stats::default();
        stats.record(sample(0, 1, Class::Created));
        stats.record(answered(
            401,
            &error("unauthorized", "Send a valid API key."),
        ));
        stats.record(answered(
            409,
            &error(
                "slot_reserved_walk_in",
                "Slot 9 is kept for walk-in patients.",
            ),
        ));
        stats.record(answered(502, "<html><body>Bad gateway</body></html>"));
        let s = stats.summary(&Expected::default());
        let failures = unexpected(&s);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("401 unauthorized")
                && failures[0].contains("409 slot_reserved_walk_in")
        );
        assert!(
            !failures[0].contains("502"),
            "5xx count against --max-error-rate instead"
        );
        let bad_gateway = s.answers.iter().find(|a| a.status == 502).unwrap();
        assert_eq!(
            (bad_gateway.label(), bad_gateway.message.as_str()),
            ("502".into(), "<html><body>Bad gateway</body></html>")
        );

        let accepting = Expected {
            accepted: vec![
                Expected::parse_accept("401").unwrap(),
                Expected::parse_accept("409:slot_reserved_walk_in").unwrap(),
            ],
        };
        assert!(unexpected(&stats.summary(&accepting)).is_empty());
        assert!(Expected::parse_accept("500").is_err());
        assert!(Expected::parse_accept("x").is_err());
    }

    #[test]
    fn a_run_refused_only_by_conflicts_or_unanswered_says_so() {
        let mut stats = Stats::default();
        stats.record(answered(
            409,
            &error("slot_taken", "This slot is already booked."),
        ));
        stats.record(sample(0, 1, Class::Timeout));
        let failures = unexpected(&stats.summary(&Expected::default()));
        assert_eq!(
            failures,
            ["no booking succeeded (2 requests): 1 × 409 slot_taken (\"This slot is already booked.\"), 1 unanswered"]
        );
    }

    #[test]
    fn a_run_that_sent_nothing_fails() {
        assert_eq!(
            unexpected(&Stats::default().summary(&Expected::default())),
            ["no request was sent"]
        );
    }

    #[test]
    fn percentiles_come_from_every_sample() {
        let mut stats = Stats::default();
        for i in 1..=1000 {
            stats.record(sample(i, i, Class::Created));
        }
        let s = stats.summary(&Expected::default());
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
        let s = stats.summary(&Expected::default());
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
        let s = stats.summary(&Expected::default());
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
        let s = Stats::default().summary(&Expected::default());
        assert_eq!((s.requests, s.latency_ms.p99, s.error_rate), (0, 0.0, 0.0));
    }
}
