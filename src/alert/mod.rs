//! Alerts: what slotguard tells people about incidents, and the channels it tells
//! them through (webhook, email, SMS, log).

use serde::{Deserialize, Serialize};

pub mod channels;
pub mod dispatch;

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A duplicate was found.
    Opened,
    /// More appointments joined an open incident.
    Grew,
    /// A resolved incident's duplicate came back.
    Regressed,
    /// The duplicate is gone (a member was cancelled or moved), or someone resolved it.
    Resolved,
    /// Still open and unchanged after `repeatInterval`.
    Reminder,
    /// The nightly audit of a clinic's day finished: clean, or what it found.
    DailySummary,
    /// A clinic's day had no successful audit by `auditAt` + grace (dead-man's switch).
    AuditMissing,
    /// The weekly report.
    WeeklyReport,
}

impl Event {
    /// SMS is for what needs a person now: new incidents and regressions.
    pub fn is_urgent(self) -> bool {
        matches!(self, Event::Opened | Event::Regressed | Event::AuditMissing)
    }
}

/// One message to deliver: possibly several incidents of one clinic grouped over
/// `groupWait`. `id` is stable across retries and restarts so a receiver can drop
/// repeats (delivery is at least once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: String,
    pub clinic_id: String,
    /// The most urgent event among the grouped incidents.
    pub event: Event,
    /// One line, e.g. "slotguard: 2 duplicate bookings at clinic kochi".
    pub subject: String,
    /// Plain text, a few lines per incident.
    pub text: String,
    /// At most 160 characters, for SMS.
    pub short_text: String,
    /// The incidents as JSON (id, kind, doctor, date, slot or token, members, state).
    pub incidents: serde_json::Value,
    /// What a notice that is not about incidents carries: the audit run of a daily
    /// summary, the weekly report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// A ready HTML body (the weekly report); otherwise email renders `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// A delivery that did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later: timeouts, connection failures, 5xx, 429, SMTP 4xx.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help: 4xx other than 429, SMTP 5xx, bad configuration.
    #[error("permanent: {0}")]
    Permanent(String),
}
