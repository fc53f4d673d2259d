//! The Sentry channel: every new, grown or regressed incident as a Sentry error
//! event, as the clinic's plan has it (`captureMessage('Duplicate booking
//! detected')`, level error, extra clinic, doctor, slot, token, count).
//!
//! The event and its envelope are the `sentry-types` crate's, posted to the
//! project's envelope endpoint (`POST /api/{project}/envelope/`, `X-Sentry-Auth`) by
//! slotguard's own dispatcher, not by a Sentry SDK's fire-and-forget transport: a
//! notification is delivered at least once, retried with backoff, dead-lettered and
//! logged like every other. Repeats are harmless: an event's id is made from the
//! notification and the incident, and Sentry drops an event id it already has.
//! Events are fingerprinted by incident, so Sentry folds one incident's events
//! (opened, grew, regressed) into one issue.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Url;
use sentry_types::protocol::v7::{Envelope, Event as SentryEvent, Level, Map};
use sentry_types::{Dsn, Uuid};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{http_client, send_with, Channel, Env, Problems, SentryConfig};
use crate::alert::{DeliveryError, IncidentAlert, Notification};
use crate::domain::Event;

/// The message of every event: the plan's words, so Sentry's issue list reads as
/// the clinic expects.
pub const MESSAGE: &str = "Duplicate booking detected";

/// Where the DSN is read from when `dsn_env` is not given.
pub const DEFAULT_DSN_ENV: &str = "SENTRY_DSN";

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct SentryChannel {
    name: String,
    dsn: Dsn,
    url: Url,
    environment: Option<String>,
    client: reqwest::Client,
}

pub(super) fn channel(
    config: &SentryConfig,
    env: Env,
    found: &mut Problems,
) -> Option<SentryChannel> {
    let variable = config.dsn_env.as_deref().unwrap_or(DEFAULT_DSN_ENV);
    let field = if config.dsn_env.is_some() {
        "dsn_env"
    } else {
        "the default dsn_env"
    };
    let raw = found.secret(env, field, variable)?;
    // The DSN is left out of the message: its key lets anyone send to the project.
    let dsn: Dsn = match raw.trim().parse() {
        Ok(dsn) => dsn,
        Err(e) => {
            found.add(format!(
                "environment variable {variable} does not hold a Sentry DSN ({e}); it looks \
                 like https://<key>@<host>/<project>"
            ));
            return None;
        }
    };
    let environment = match config.environment.as_deref().map(str::trim) {
        Some("") => {
            found.add("environment must not be empty; leave it out instead");
            None
        }
        other => other.map(str::to_owned),
    };
    Some(SentryChannel {
        name: config.name.trim().to_owned(),
        url: dsn.envelope_api_url(),
        dsn,
        environment,
        client: http_client(TIMEOUT),
    })
}

/// The events Sentry hears of: a duplicate appearing, growing, or coming back.
fn is_reported(event: Event) -> bool {
    matches!(event, Event::Opened | Event::Grew | Event::Regressed)
}

/// One JSON value, or a list when there are several (a slot shared by two tokens).
fn one_or_all<T: serde::Serialize>(values: &[T]) -> Value {
    match values {
        [one] => json!(one),
        all => json!(all),
    }
}

impl SentryChannel {
    /// The event of incident `i` in notification `n`. Its id is the same for every
    /// delivery of `n`, so Sentry keeps one.
    fn event(&self, n: &Notification, i: &IncidentAlert) -> SentryEvent<'static> {
        let digest = Sha256::digest(format!("{}\n{}", n.id, i.id).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        // An RFC 9562 version 8 (custom) UUID.
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let tags: Map<String, String> = [
            ("clinic", i.clinic_id.clone()),
            ("kind", i.kind.as_str().to_owned()),
            ("found_by", i.found_by.as_str().to_owned()),
            ("event", i.event.as_str().to_owned()),
            ("doctor", i.doctor_id.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let extra: Map<String, Value> = [
            ("clinic", json!(i.clinic_id)),
            ("doctor", json!(i.doctor_id)),
            ("date", json!(i.date)),
            ("slot", one_or_all(&i.slots)),
            ("token", one_or_all(&i.tokens)),
            ("count", json!(i.members.len())),
            ("incident", json!(i.id)),
            ("state", json!(i.state)),
            (
                "members",
                json!(i
                    .members
                    .iter()
                    .map(|m| format!("{}:{}", m.source, m.id))
                    .collect::<Vec<_>>()),
            ),
            ("notification", json!(n.id)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        SentryEvent {
            event_id: Uuid::from_bytes(bytes),
            level: Level::Error,
            message: Some(MESSAGE.to_owned()),
            fingerprint: Cow::Owned(vec![
                Cow::Borrowed("slotguard-duplicate-booking"),
                Cow::Owned(i.id.clone()),
            ]),
            logger: Some("slotguard".to_owned()),
            platform: Cow::Borrowed("other"),
            timestamp: i
                .changed_at
                .map(SystemTime::from)
                .unwrap_or_else(SystemTime::now),
            release: Some(Cow::Borrowed(concat!(
                "slotguard@",
                env!("CARGO_PKG_VERSION")
            ))),
            environment: self.environment.clone().map(Cow::Owned),
            tags,
            extra,
            ..SentryEvent::default()
        }
    }

    async fn post(&self, event: SentryEvent<'static>) -> Result<(), DeliveryError> {
        let mut body = Vec::new();
        Envelope::from(event)
            .to_writer(&mut body)
            .map_err(|e| DeliveryError::Permanent(format!("could not write the envelope: {e}")))?;
        let auth = self
            .dsn
            .to_auth(Some(concat!("slotguard/", env!("CARGO_PKG_VERSION"))))
            .to_string();
        let request = self
            .client
            .post(self.url.clone())
            .header("X-Sentry-Auth", auth)
            .header(CONTENT_TYPE, "application/x-sentry-envelope")
            .body(body);
        send_with(request, sentry_rate_limit).await
    }
}

/// Sentry's own rate-limit header, which it sends beside (and prefers to)
/// `Retry-After`: `seconds:categories:scope…, …`; the longest wait that covers
/// errors (`error`, `default`, or every category) wins.
fn sentry_rate_limit(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("x-sentry-rate-limits")?.to_str().ok()?;
    value
        .split(',')
        .filter_map(|limit| {
            let mut parts = limit.trim().split(':');
            let seconds: f64 = parts.next()?.trim().parse().ok()?;
            let categories = parts.next().unwrap_or("");
            let covers_errors = categories.is_empty()
                || categories
                    .split(';')
                    .any(|c| matches!(c.trim(), "error" | "default"));
            (covers_errors && seconds.is_finite() && seconds >= 0.0)
                .then(|| Duration::from_secs_f64(seconds.min(1e9)))
        })
        .max()
}

#[async_trait]
impl Channel for SentryChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sentry"
    }

    fn wants(&self, n: &Notification) -> bool {
        n.incident_alerts().iter().any(|i| is_reported(i.event))
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let incidents: Vec<IncidentAlert> = n
            .incident_alerts()
            .into_iter()
            .filter(|i| is_reported(i.event))
            .collect();
        let mut failures = Vec::new();
        for i in &incidents {
            match self.post(self.event(n, i)).await {
                Ok(()) => {}
                // Rate limited: the rest would be refused too; all of it waits.
                Err(DeliveryError::RetryLater(m, at)) => {
                    return Err(DeliveryError::RetryLater(
                        format!("incident {}: {m}", i.id),
                        at,
                    ))
                }
                Err(e) => failures.push((i.id.clone(), e)),
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        // Events that went through go again with the retry; Sentry drops them by id.
        let transient = failures
            .iter()
            .any(|(_, e)| !matches!(e, DeliveryError::Permanent(_)));
        let detail = failures
            .into_iter()
            .map(|(id, e)| match e {
                DeliveryError::Transient(m)
                | DeliveryError::RetryLater(m, _)
                | DeliveryError::Permanent(m) => format!("incident {id}: {m}"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(if transient {
            DeliveryError::Transient(detail)
        } else {
            DeliveryError::Permanent(detail)
        })
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn sentrys_rate_limit_header_gives_the_longest_wait_covering_errors() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-sentry-rate-limits",
            HeaderValue::from_static("60:transaction:key, 120:error;default:organization, 30::key"),
        );
        assert_eq!(sentry_rate_limit(&headers), Some(Duration::from_secs(120)));
        headers.insert(
            "x-sentry-rate-limits",
            HeaderValue::from_static("90:transaction:key"),
        );
        assert_eq!(sentry_rate_limit(&headers), None, "transactions only");
        assert_eq!(sentry_rate_limit(&HeaderMap::new()), None);
    }
}
