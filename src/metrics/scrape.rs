//! What `GET /metrics` shows, gathered at each scrape. Booking counters come from
//! the database's totals: they survive restarts, and every server sharing the
//! database reports the same database-wide numbers (each up to one flush interval
//! behind). The booking latency histogram and the detection latency are this
//! process's own. Each part of the page is one function called from [`gather`].

use super::exposition::{Exposition, Type};
use super::latency::LatencySnapshot;
use super::rollups::BookingMetrics;
use crate::detect::detector::{Detector, Latency};
use crate::domain::Refusal;
use crate::store::audit::AuditGauges;
use crate::store::metrics::{AlertingGauges, BookingTotal};
use crate::store::{Store, StoreError};

/// The whole page, in Prometheus' text format.
pub async fn gather(
    store: &dyn Store,
    bookings: &BookingMetrics,
    detector: &Detector,
) -> Result<String, StoreError> {
    let mut out = Exposition::default();
    booking_counters(&mut out, &store.booking_totals().await?);
    booking_latency(&mut out, &bookings.latency());
    detection(
        &mut out,
        &store.alerting_gauges().await?,
        &detector.latency(),
    );
    audit(&mut out, &store.audit_gauges().await?);
    Ok(out.into_text())
}

/// Help texts end by saying where the numbers come from.
const DATABASE_WIDE: &str = "Database-wide, from the persisted rollups: every server \
    reports the same total, up to [metrics] flush_seconds behind.";
const THIS_PROCESS: &str = "This process only, since it started.";

fn booking_counters(out: &mut Exposition, totals: &[BookingTotal]) {
    out.family(
        "slotguard_bookings_total",
        Type::Counter,
        &format!(
            "Booking attempts by kind and outcome (booked, the error code of a refusal, \
             appointment_changed, replayed, failed). {DATABASE_WIDE}"
        ),
    );
    for t in totals {
        out.sample(
            "slotguard_bookings_total",
            &[("kind", t.kind.as_str()), ("outcome", &t.outcome)],
            t.count as f64,
        );
    }

    out.family(
        "slotguard_booking_conflicts_total",
        Type::Counter,
        &format!(
            "Bookings refused because another patient got there first, by reason. \
             {DATABASE_WIDE}"
        ),
    );
    for reason in Refusal::CONFLICTS.iter().map(Refusal::code) {
        let n: u64 = totals
            .iter()
            .filter(|t| t.outcome == reason)
            .map(|t| t.count)
            .sum();
        out.sample(
            "slotguard_booking_conflicts_total",
            &[("reason", reason)],
            n as f64,
        );
    }

    out.family(
        "slotguard_transaction_retries_total",
        Type::Counter,
        &format!(
            "Booking transactions run again after a PostgreSQL serialization failure or \
             deadlock. {DATABASE_WIDE}"
        ),
    );
    let retries: u64 = totals.iter().map(|t| t.retries).sum();
    out.sample("slotguard_transaction_retries_total", &[], retries as f64);
}

fn booking_latency(out: &mut Exposition, latency: &LatencySnapshot) {
    const NAME: &str = "slotguard_booking_duration_seconds";
    out.family(
        NAME,
        Type::Histogram,
        &format!(
            "Time a booking spends in the store, waiting for the writer or the \
             doctor-day lock included. {THIS_PROCESS}"
        ),
    );
    for (bound, count) in &latency.buckets {
        let le = bound.to_string();
        out.sample(&format!("{NAME}_bucket"), &[("le", &le)], *count as f64);
    }
    out.sample(
        &format!("{NAME}_bucket"),
        &[("le", "+Inf")],
        latency.count as f64,
    );
    out.sample(&format!("{NAME}_sum"), &[], latency.sum_seconds);
    out.sample(&format!("{NAME}_count"), &[], latency.count as f64);
}

fn detection(out: &mut Exposition, gauges: &AlertingGauges, latency: &Latency) {
    out.family(
        "slotguard_open_incidents",
        Type::Gauge,
        "Incidents not resolved, by clinic and state (open, acknowledged).",
    );
    for (clinic, state, n) in &gauges.open_incidents {
        out.sample(
            "slotguard_open_incidents",
            &[("clinic_id", clinic), ("state", state)],
            *n as f64,
        );
    }

    const LATENCY: &str = "slotguard_detection_latency_seconds";
    out.family(
        LATENCY,
        Type::Summary,
        &format!(
            "From the commit of a duplicate's newest member to its incident being saved, \
             for the incidents this process's detector recorded (the detector lease \
             holder). {THIS_PROCESS}"
        ),
    );
    for (quantile, ms) in [("0.5", latency.p50_ms), ("0.99", latency.p99_ms)] {
        out.sample(LATENCY, &[("quantile", quantile)], ms as f64 / 1e3);
    }
    out.sample(&format!("{LATENCY}_sum"), &[], latency.sum_ms / 1e3);
    out.sample(&format!("{LATENCY}_count"), &[], latency.count as f64);

    for (name, kind, help, state) in [
        (
            "slotguard_alerts_sent_total",
            Type::Counter,
            "Notifications delivered, by channel.",
            "delivered",
        ),
        (
            "slotguard_alerts_failed_total",
            Type::Counter,
            "Notifications given up on (dead letters: a permanent error, or too many \
             transient ones), by channel.",
            "dead",
        ),
        (
            "slotguard_alerts_pending",
            Type::Gauge,
            "Notifications waiting for delivery or for a retry, by channel.",
            "pending",
        ),
    ] {
        out.family(name, kind, help);
        for (channel, _, n) in gauges.notifications.iter().filter(|(_, s, _)| s == state) {
            out.sample(name, &[("channel", channel)], *n as f64);
        }
    }

    out.family(
        "slotguard_alert_delivery_failures_total",
        Type::Counter,
        "Failed delivery attempts, by channel and outcome (transient: retried; \
         permanent: given up).",
    );
    for (channel, outcome, n) in &gauges.failed_attempts {
        out.sample(
            "slotguard_alert_delivery_failures_total",
            &[("channel", channel), ("outcome", outcome)],
            *n as f64,
        );
    }

    out.family(
        "slotguard_alert_outbox_backlog",
        Type::Gauge,
        "Alerts written with their incident but not yet grouped into a notification.",
    );
    out.sample(
        "slotguard_alert_outbox_backlog",
        &[],
        gauges.outbox_backlog as f64,
    );
}

fn audit(out: &mut Exposition, gauges: &AuditGauges) {
    const LAST: &str = "slotguard_audit_last_success_timestamp_seconds";
    out.family(
        LAST,
        Type::Gauge,
        "When the newest successful audit of each clinic finished (Unix time): alert \
         when it is older than a day and a bit (the dead-man's switch from outside).",
    );
    for (clinic, _, finished) in &gauges.last_success {
        out.sample(
            LAST,
            &[("clinic_id", clinic)],
            finished.timestamp_millis() as f64 / 1e3,
        );
    }
    const DURATION: &str = "slotguard_audit_duration_seconds";
    out.family(
        DURATION,
        Type::Gauge,
        "How long the newest successful audit of each clinic took.",
    );
    for (clinic, started, finished) in &gauges.last_success {
        let took = (*finished - *started).num_milliseconds().max(0) as f64 / 1e3;
        out.sample(DURATION, &[("clinic_id", clinic)], took);
    }
    out.family(
        "slotguard_audit_runs_total",
        Type::Counter,
        "Audit runs by clinic and status (running, succeeded, failed).",
    );
    for (clinic, status, n) in &gauges.runs {
        out.sample(
            "slotguard_audit_runs_total",
            &[("clinic_id", clinic), ("status", status)],
            *n as f64,
        );
    }
    out.family(
        "slotguard_audit_incidents_opened_total",
        Type::Counter,
        "Incidents opened by an audit: duplicates real-time detection had missed.",
    );
    for (clinic, n) in &gauges.incidents_opened {
        out.sample(
            "slotguard_audit_incidents_opened_total",
            &[("clinic_id", clinic)],
            *n as f64,
        );
    }
}
