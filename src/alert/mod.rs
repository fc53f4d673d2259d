//! Alerts: what slotguard tells people about incidents, and the channels it tells
//! them through (webhook, email, SMS, Sentry, log).
//!
//! - [`message`]: the words of a notification, true of each incident it names.
//! - [`channels`]: where notifications go, a file per channel, checked at start.
//! - [`routes`]: which notifications of which clinics go to which channels.
//! - [`dispatch`]: the outbox, grouping, delivery with retries, dead letters, reminders.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{ConfigError, DuplicateKind, Event, FoundBy, IncidentState, MemberRef};

pub mod channels;
pub mod dispatch;
pub mod message;
pub mod routes;

/// What the dispatcher delivers through: the channels, the routes among them, and
/// whether every incident change is also written to the server log.
pub struct Alerting {
    pub channels: Vec<Box<dyn channels::Channel>>,
    pub routes: routes::Routes,
    /// Every incident a notification names, as a warn line in slotguard's own log
    /// ([`channels::log_notification`]), whatever the channels and routes: with
    /// nothing configured, somebody is still told.
    pub server_log: bool,
}

impl Alerting {
    /// These channels, no routes, the server log on.
    pub fn new(channels: Vec<Box<dyn channels::Channel>>) -> Self {
        Self {
            channels,
            routes: routes::Routes::none(),
            server_log: true,
        }
    }

    /// The `[alerts]` configuration checked as a whole: every problem of every
    /// channel and route, one per line, each with its line in slotguard.toml when
    /// `lines` knows it. `server_log` defaults to on unless a `log` channel is
    /// configured (which writes the same lines).
    pub fn build(
        channel_configs: &[channels::ChannelConfig],
        route_configs: &[routes::RouteConfig],
        server_log: Option<bool>,
        env: channels::Env,
        lines: &routes::ConfigLines,
    ) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let built = channels::build_with(channel_configs, env, lines).unwrap_or_else(|p| {
            problems.extend(p);
            Vec::new()
        });
        let names: Vec<&str> = channel_configs.iter().map(|c| c.name().trim()).collect();
        let routes = routes::Routes::build(route_configs, &names, lines).unwrap_or_else(|p| {
            problems.extend(p);
            routes::Routes::none()
        });
        if !problems.is_empty() {
            return Err(format!(
                "the alerts configuration has {} problem{}:\n  - {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("\n  - ")
            )
            .into());
        }
        let has_log_channel = built.iter().any(|c| c.kind() == "log");
        Ok(Self {
            channels: built,
            routes,
            server_log: server_log.unwrap_or(!has_log_channel),
        })
    }

    /// What `serve` says at start when nobody is configured to hear of incidents.
    pub fn unheard(&self) -> Option<&'static str> {
        match (self.channels.is_empty(), self.server_log) {
            (false, _) => None,
            (true, true) => Some(
                "no alert channels are configured ([[alerts.channels]] in slotguard.toml): \
                 incidents are only written to this log, at warn; see docs/DETECTION.md",
            ),
            (true, false) => Some(
                "no alert channels are configured and [alerts] log = false: incidents will \
                 reach nobody; see docs/DETECTION.md",
            ),
        }
    }
}

/// One incident as a notification names it: what happened to it since the clinic's
/// last message (`event`), and where it stands now (`state`). The message's words
/// come from both, so a message never calls "new" an incident already resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentAlert {
    pub id: String,
    /// The most urgent event of this incident since the clinic's last message.
    pub event: Event,
    pub kind: DuplicateKind,
    /// The slot index (as text) or the token number.
    pub key: String,
    pub clinic_id: String,
    pub doctor_id: String,
    pub date: NaiveDate,
    /// The incident's state when the message was composed.
    pub state: IncidentState,
    #[serde(default = "realtime")]
    pub found_by: FoundBy,
    /// The appointments by source and id: enough to investigate, no patient.
    pub members: Vec<MemberRef>,
    /// The slots the members hold (one, for a slot duplicate).
    #[serde(default)]
    pub slots: Vec<u32>,
    /// The tokens the members hold (one, for a token duplicate).
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub changed_at: Option<DateTime<Utc>>,
}

fn realtime() -> FoundBy {
    FoundBy::Realtime
}

impl IncidentAlert {
    /// What is true of the incident now: a resolved incident is resolved, whatever
    /// happened to it before; one resolved and open again is back.
    pub fn current(&self) -> Event {
        match (self.state, self.event) {
            (IncidentState::Resolved, _) => Event::Resolved,
            (_, Event::Resolved) => Event::Regressed,
            (_, event) => event,
        }
    }

    /// Its word in a message: `NEW`, `GREW`, `BACK`, `STILL OPEN`, `RESOLVED`, or
    /// `NEW, NOW RESOLVED` for one that opened and was resolved before the message left.
    pub fn word(&self) -> String {
        match (self.state, self.event) {
            (IncidentState::Resolved, Event::Resolved) => "RESOLVED".to_owned(),
            (IncidentState::Resolved, event) => format!("{}, NOW RESOLVED", event_word(event)),
            (_, Event::Resolved) => "BACK".to_owned(),
            (_, event) => event_word(event).to_owned(),
        }
    }
}

/// The word for an event in a message's text.
pub fn event_word(event: Event) -> &'static str {
    match event {
        Event::Opened => "NEW",
        Event::Grew => "GREW",
        Event::Regressed => "BACK",
        Event::Resolved => "RESOLVED",
        Event::Reminder => "STILL OPEN",
        Event::DailySummary => "AUDIT",
        Event::AuditMissing => "NO AUDIT",
        Event::WeeklyReport => "WEEKLY",
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

impl Notification {
    /// The incidents it names, as [`message::compose`] wrote them; none for a notice
    /// (a daily summary, a weekly report).
    pub fn incident_alerts(&self) -> Vec<IncidentAlert> {
        serde_json::from_value(self.incidents.clone()).unwrap_or_default()
    }

    /// A short reference to the message, the same for every delivery of it, that a
    /// person can read out: an SMS carries it so a repeat can be recognised.
    pub fn reference(&self) -> String {
        // Crockford's base32: no I, L, O or U to misread.
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let digest = Sha256::digest(self.id.as_bytes());
        let mut bits = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
        (0..6)
            .map(|_| {
                let c = ALPHABET[(bits & 31) as usize] as char;
                bits >>= 5;
                c
            })
            .collect()
    }
}

/// A delivery that did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying later: timeouts, connection failures, 5xx, 429, SMTP 4xx.
    #[error("transient: {0}")]
    Transient(String),
    /// Worth retrying, but not before the receiver said (429 or 503 with
    /// `Retry-After`, Sentry's rate limits).
    #[error("transient: {0}")]
    RetryLater(String, RetryAt),
    /// Retrying cannot help: 4xx other than 429, SMTP 5xx, bad configuration.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// When a receiver that refused for now will take the delivery: a delay (read with
/// the dispatcher's clock) or an instant (an HTTP date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAt {
    After(Duration),
    At(DateTime<Utc>),
}
