//! From the outbox to people: group a clinic's pending alerts over `groupWait` into
//! one notification per channel, deliver with exponential backoff and jitter, give up
//! into a visible dead-letter state, and remind about unchanged open incidents after
//! `repeatInterval`. All state is in the database, so a restart neither loses a
//! pending alert nor re-sends a delivered one. One instance (the `dispatcher` lease
//! holder) does the work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::channels::{log_notification, MAX_RETRY_AFTER};
use super::message::{compose, incident_alert};
use super::{Alerting, DeliveryError, Notification, RetryAt};
use crate::clock::Clock;
use crate::domain::{Changes, Event, Incident, OutboxEntry};
use crate::store::detection::{Attempt, DeliveryState, NotificationRow, Silence};
use crate::store::{Store, StoreError};

/// `[alerts]` timing in slotguard.toml.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub group_wait: Duration,
    pub repeat_interval: Duration,
    /// How often the dispatcher looks for work.
    pub tick: Duration,
    /// Attempts before a notification is dead.
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            group_wait: Duration::from_secs(30),
            repeat_interval: Duration::from_secs(4 * 3600),
            tick: Duration::from_millis(500),
            max_attempts: 8,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
        }
    }
}

const LEASE: chrono::Duration = chrono::Duration::seconds(5);

/// Delay before retry `attempt` (1-based): exponential, capped, ±25 % jitter so
/// receivers coming back are not hit by every sender at once.
pub fn backoff(timing: &Timing, attempt: u32) -> Duration {
    let exp = timing
        .first_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(timing.max_backoff);
    capped.mul_f64(0.75 + fastrand::f64() * 0.5)
}

fn silenced(silences: &[Silence], incident: &Incident) -> bool {
    silences.iter().any(|s| {
        s.clinic_id
            .as_deref()
            .is_none_or(|c| c == incident.group.clinic_id.as_str())
            && s.kind
                .as_deref()
                .is_none_or(|k| k == incident.kind.as_str())
    })
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    alerting: Alerting,
    timing: Timing,
    holder: String,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        alerting: Alerting,
        timing: Timing,
    ) -> Self {
        Self {
            store,
            clock,
            alerting,
            timing,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn chrono(d: Duration) -> chrono::Duration {
        chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    }

    /// One pass: reminders, grouping, deliveries. Tests call it directly.
    pub async fn run_once(&self) -> Result<(), StoreError> {
        self.queue_reminders().await?;
        self.group_alerts().await?;
        self.deliver_due().await
    }

    async fn queue_reminders(&self) -> Result<(), StoreError> {
        let now = self.now();
        let due = self
            .store
            .reminders_due(now - Self::chrono(self.timing.repeat_interval))
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let outbox = due
            .iter()
            .map(|i| OutboxEntry {
                id: uuid::Uuid::new_v4().to_string(),
                clinic_id: i.group.clinic_id.clone(),
                incident_id: i.id.clone(),
                event: Event::Reminder,
                created_at: now,
            })
            .collect();
        self.store
            .save_incidents(&Changes {
                incidents: Vec::new(),
                outbox,
            })
            .await
    }

    async fn group_alerts(&self) -> Result<(), StoreError> {
        let now = self.now();
        let pending = self.store.ungrouped_alerts().await?;
        let mut by_clinic: BTreeMap<String, Vec<OutboxEntry>> = BTreeMap::new();
        for entry in pending {
            by_clinic
                .entry(entry.clinic_id.to_string())
                .or_default()
                .push(entry);
        }
        let silences = self.store.silences(Some(now)).await?;
        for (clinic, entries) in by_clinic {
            let oldest = entries.iter().map(|e| e.created_at).min().unwrap_or(now);
            if now - oldest < Self::chrono(self.timing.group_wait) {
                continue;
            }
            // One line per incident: its most urgent event since the last message,
            // with its state now (the message's words come from both).
            let mut latest: BTreeMap<String, Event> = BTreeMap::new();
            for e in &entries {
                let slot = latest.entry(e.incident_id.clone()).or_insert(e.event);
                if e.event.urgency() > slot.urgency() {
                    *slot = e.event;
                }
            }
            let mut alerts = Vec::new();
            let mut quiet = Vec::new();
            for (incident_id, event) in latest {
                if let Some(incident) = self.store.incident(&incident_id).await? {
                    let members = self
                        .store
                        .member_rows(&incident.group, &incident.members)
                        .await?;
                    let alert = incident_alert(event, &incident, &members);
                    if silenced(&silences, &incident) {
                        quiet.push(alert);
                    } else {
                        alerts.push(alert);
                    }
                }
            }
            let id = uuid::Uuid::new_v4().to_string();
            let outbox_ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            if self.alerting.server_log && !quiet.is_empty() {
                // Silences are for people; the server's own log still hears of it.
                log_notification(
                    Some("server log (silenced)"),
                    &compose(&id, &clinic, &quiet),
                );
            }
            if alerts.is_empty() {
                self.store
                    .queue_notifications(&outbox_ids, &id, &[], &[], self.now())
                    .await?;
                continue;
            }
            let notification = compose(&id, &clinic, &alerts);
            if self.alerting.server_log {
                log_notification(None, &notification);
            }
            let rows = self.deliveries(&notification)?;
            let incident_ids: Vec<String> = alerts.iter().map(|i| i.id.clone()).collect();
            self.store
                .queue_notifications(&outbox_ids, &id, &rows, &incident_ids, self.now())
                .await?;
        }
        Ok(())
    }

    /// One pending delivery of `notification` per channel its routes send it to and
    /// that wants it.
    pub fn deliveries(
        &self,
        notification: &Notification,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let now = self.now();
        let payload =
            serde_json::to_string(notification).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let event = notification.event.as_str().to_owned();
        let names: Vec<&str> = self.alerting.channels.iter().map(|c| c.name()).collect();
        let routed = self.alerting.routes.select(notification, &names);
        Ok(self
            .alerting
            .channels
            .iter()
            .filter(|c| routed.contains(&c.name()) && c.wants(notification))
            .map(|c| NotificationRow {
                id: notification.id.clone(),
                channel: c.name().to_owned(),
                clinic_id: notification.clinic_id.clone(),
                event: event.clone(),
                payload: payload.clone(),
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
                delivered_at: None,
                created_at: now,
                retry_from: 0,
                retried_at: None,
                retried_by: None,
            })
            .collect())
    }

    async fn deliver_due(&self) -> Result<(), StoreError> {
        for mut row in self.store.due_notifications(self.now(), 50).await? {
            let attempt_no = row.attempts + 1;
            let outcome = match (
                self.alerting
                    .channels
                    .iter()
                    .find(|c| c.name() == row.channel),
                serde_json::from_str::<Notification>(&row.payload),
            ) {
                (None, _) => Err(DeliveryError::Permanent(format!(
                    "channel {} is no longer configured",
                    row.channel
                ))),
                (_, Err(e)) => Err(DeliveryError::Permanent(format!("unreadable payload: {e}"))),
                (Some(channel), Ok(notification)) => channel.deliver(&notification).await,
            };
            let now = self.now();
            row.attempts = attempt_no;
            // Attempts since the notification was last queued: a dead letter retried
            // on demand gets a full round of retries again.
            let round = attempt_no.saturating_sub(row.retry_from).max(1);
            let (label, error) = match outcome {
                Ok(()) => {
                    row.state = DeliveryState::Delivered;
                    row.delivered_at = Some(now);
                    row.last_error = None;
                    ("delivered", None)
                }
                Err(DeliveryError::RetryLater(e, at)) if round < self.timing.max_attempts => {
                    // Never before the receiver said, nor sooner than the backoff.
                    let asked = match at {
                        RetryAt::After(d) => now + Self::chrono(d.min(MAX_RETRY_AFTER)),
                        RetryAt::At(t) => t.min(now + Self::chrono(MAX_RETRY_AFTER)),
                    };
                    let backed_off = now + Self::chrono(backoff(&self.timing, round));
                    row.next_attempt_at = asked.max(backed_off);
                    row.last_error = Some(e.clone());
                    ("transient", Some(e))
                }
                Err(DeliveryError::Transient(e)) if round < self.timing.max_attempts => {
                    row.next_attempt_at = now + Self::chrono(backoff(&self.timing, round));
                    row.last_error = Some(e.clone());
                    ("transient", Some(e))
                }
                Err(DeliveryError::Transient(e) | DeliveryError::RetryLater(e, _)) => {
                    row.state = DeliveryState::Dead;
                    row.last_error = Some(format!("gave up after {round} attempts: {e}"));
                    ("transient", Some(e))
                }
                Err(DeliveryError::Permanent(e)) => {
                    row.state = DeliveryState::Dead;
                    row.last_error = Some(e.clone());
                    ("permanent", Some(e))
                }
            };
            match row.state {
                DeliveryState::Dead => {
                    tracing::warn!(notification = %row.id, channel = %row.channel, clinic = %row.clinic_id, event = %row.event, attempt = attempt_no, error = ?row.last_error, "notification dead-lettered");
                }
                DeliveryState::Delivered => {
                    tracing::info!(notification = %row.id, channel = %row.channel, clinic = %row.clinic_id, event = %row.event, attempt = attempt_no, "notification delivered");
                }
                DeliveryState::Pending => {
                    tracing::info!(notification = %row.id, channel = %row.channel, clinic = %row.clinic_id, attempt = attempt_no, error = ?row.last_error, "notification delivery failed; will retry");
                }
            }
            let attempt = Attempt {
                notification_id: row.id.clone(),
                channel: row.channel.clone(),
                attempt: attempt_no,
                at: now,
                outcome: label.to_owned(),
                error,
            };
            self.store.record_attempt(&row, &attempt).await?;
        }
        Ok(())
    }

    async fn lead(&self) -> bool {
        let now = self.now();
        self.store
            .try_lease("dispatcher", &self.holder, now, now + LEASE)
            .await
            .unwrap_or(false)
    }

    /// Runs until `stopped` turns true.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.timing.tick);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.lead().await {
                        if let Err(e) = self.run_once().await {
                            tracing::warn!(error = %e, "alert dispatch pass failed; retrying next tick");
                        }
                    }
                }
                _ = stopped.changed() => {
                    // A clean stop hands the work over at once.
                    if let Err(e) = self.store.release_lease("dispatcher", &self.holder).await {
                        tracing::debug!(error = %e, "could not release the dispatcher lease");
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let t = Timing::default();
        for attempt in 1..=12 {
            let d = backoff(&t, attempt).as_secs_f64();
            let base = (2.0 * 2f64.powi(attempt as i32 - 1)).min(600.0);
            assert!(
                d >= base * 0.75 - 1e-9 && d <= base * 1.25 + 1e-9,
                "attempt {attempt}: {d}"
            );
        }
    }
}
