//! The events notifications are sent for: what happened to an incident, or a notice
//! about a clinic's audits. Detection writes them to the outbox with each incident
//! change, the audit sends its notices under them, alerting routes and words by them.

use serde::{Deserialize, Serialize};

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    pub const ALL: [Event; 8] = [
        Event::Opened,
        Event::Grew,
        Event::Regressed,
        Event::Resolved,
        Event::Reminder,
        Event::DailySummary,
        Event::AuditMissing,
        Event::WeeklyReport,
    ];

    /// SMS is for what needs a person now: new incidents and regressions.
    pub fn is_urgent(self) -> bool {
        matches!(self, Event::Opened | Event::Regressed | Event::AuditMissing)
    }

    /// The name in JSON, in the configuration and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Opened => "opened",
            Event::Grew => "grew",
            Event::Regressed => "regressed",
            Event::Resolved => "resolved",
            Event::Reminder => "reminder",
            Event::DailySummary => "daily_summary",
            Event::AuditMissing => "audit_missing",
            Event::WeeklyReport => "weekly_report",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == raw)
    }

    /// Among the events of one incident, or of one message, the most urgent names it.
    pub fn urgency(self) -> u8 {
        match self {
            Event::Regressed => 5,
            Event::Opened => 4,
            Event::Grew => 3,
            Event::Reminder => 2,
            Event::Resolved => 1,
            Event::DailySummary | Event::AuditMissing | Event::WeeklyReport => 0,
        }
    }
}
