//! Alert channels: where a [`Notification`] goes (webhook, email, SMS, Sentry, log),
//! each configured by one `[[alerts.channels]]` table of `slotguard.toml`.
//!
//! [`build`] checks every channel before anything is sent — URLs, recipients, the
//! environment variables that hold secrets, unique names — so a typo fails at startup
//! with a sentence naming the table and the field, not at 3 a.m. when the first
//! duplicate booking is found. Deliveries are at least once: every channel passes the
//! notification id along (`Idempotency-Key`, `Message-ID`) so a receiver can drop
//! repeats, and every failure says whether retrying can help ([`DeliveryError`]).
//!
//! What goes out is the notification's own text; `incidents` (which name appointments)
//! goes only to the webhook, whose receiver is the clinic's own system.
//!
//! Here: the `[[alerts.channels]]` tables, [`build`], and what the HTTP channels share
//! (timeouts, retry classification, `Retry-After`). Each channel — its configuration
//! checks, its delivery and its tests — has a file of its own: `webhook`, `email`,
//! `sms`, `sentry`, `log`; `testkit` holds what their tests share.

use std::{
    borrow::Cow, collections::HashSet, env::VarError, error::Error as StdError, time::Duration,
};

use async_trait::async_trait;
use lettre::{
    message::{
        header::{HeaderName as MailHeaderName, HeaderValue as MailHeaderValue},
        Mailbox, MultiPart,
    },
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use reqwest::{
    header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER},
    Method, StatusCode, Url,
};
use serde::{Deserialize, Serialize};

use crate::domain::ConfigError;

use super::message::{SMS_MAX_CHARS, SMS_REFERENCE_CHARS};
use super::routes::ConfigLines;
use super::{DeliveryError, Notification, RetryAt};
use crate::domain::Event;

mod email;
mod log;
mod sentry;
mod sms;
#[cfg(test)]
mod testkit;
mod webhook;

pub use email::MailHtml;
pub use log::log_notification;

/// Whether outgoing HTTP can speak TLS: reqwest is compiled with rustls and the
/// webpki root certificates (see Cargo.toml). Were it not, [`build`] would refuse
/// `https://` URLs up front rather than let every delivery fail. The test
/// `https_support_flag_matches_how_reqwest_was_compiled` fails when this goes stale.
const HTTPS_SUPPORTED: bool = true;

/// How long one HTTP delivery (webhook, one SMS) may take, connection included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long lettre waits for the SMTP server at each step. Longer than HTTP: mail
/// servers commonly spend seconds on checks before answering DATA.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest wait a receiver's `Retry-After` is honoured for; a longer one (or a
/// date far ahead) is cut to this, so a misconfigured receiver cannot park a
/// notification for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How much of a refusing receiver's answer is kept in the error, for a person to read.
const ERROR_BODY_CHARS: usize = 200;

/// A place notifications are delivered to.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The configured `name`, unique among the channels.
    fn name(&self) -> &str;
    /// `"webhook"`, `"email"`, `"sms"`, `"sentry"` or `"log"`.
    fn kind(&self) -> &'static str;
    /// Whether this channel is told about this notification at all (SMS: only what
    /// is urgent; Sentry: only new, grown and regressed incidents).
    fn wants(&self, n: &Notification) -> bool;
    /// Delivers once. Safe to call again with the same notification after an error:
    /// receivers get the same id and can drop the repeat.
    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError>;
}

/// One `[[alerts.channels]]` table, told apart by its `kind`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelConfig {
    Webhook(WebhookConfig),
    Email(EmailConfig),
    Sms(SmsConfig),
    Sentry(SentryConfig),
    Log(LogConfig),
}

impl ChannelConfig {
    pub fn name(&self) -> &str {
        match self {
            ChannelConfig::Webhook(c) => &c.name,
            ChannelConfig::Email(c) => &c.name,
            ChannelConfig::Sms(c) => &c.name,
            ChannelConfig::Sentry(c) => &c.name,
            ChannelConfig::Log(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Sms(_) => "sms",
            ChannelConfig::Sentry(_) => "sentry",
            ChannelConfig::Log(_) => "log",
        }
    }
}

/// `kind = "webhook"`: a JSON POST of every notification (Slack and Mattermost
/// incoming webhooks show its `text`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
}

/// `kind = "email"`: every notification, as plain text and HTML, over SMTP with
/// STARTTLS, implicit TLS, or (to a relay on loopback or a trusted network) none.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
    pub smtp_host: String,
    /// Default 465 with `tls = "tls"`, else 25.
    pub smtp_port: Option<u16>,
    /// Default `starttls`, or `none` when `smtp_host` is a loopback address.
    pub tls: Option<SmtpTls>,
    /// A PEM file of certificates to trust besides the usual public roots (a
    /// clinic's own certificate authority, a self-signed server).
    pub ca_file: Option<String>,
    /// `slotguard@clinic.example` or `Slotguard <slotguard@clinic.example>`.
    pub from: String,
    pub to: Vec<String>,
    /// Names of the environment variables holding the SMTP credentials; both or neither.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
}

/// `kind = "sms"`: urgent notifications only ([`Event::is_urgent`]), one request per
/// number in `to`, through an HTTP SMS gateway chosen by `preset`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    pub name: String,
    pub preset: SmsPreset,
    pub to: Vec<String>,
    /// The gateway's endpoint. Optional for `twilio` (its Messages URL for
    /// `account_sid`), required otherwise.
    pub url: Option<String>,
    /// The sending number or sender id (`twilio`: `From`; `json`: `sender`).
    pub from: Option<String>,
    /// `twilio` only: the account, also the basic-auth user name.
    pub account_sid: Option<String>,
    /// `twilio` only: the environment variable holding the auth token.
    pub auth_token_env: Option<String>,
    /// `json` (required) and `template` (optional): the environment variable holding
    /// the gateway's API key, sent in the header `api_key_header`.
    pub api_key_env: Option<String>,
    /// Default `authkey` (MSG91's name).
    pub api_key_header: Option<String>,
    /// `template` only: `POST` (default) or `PUT`.
    pub method: Option<String>,
    /// `template` only: how `body` is encoded; default `json`.
    pub content_type: Option<TemplateContentType>,
    /// `template` only: the request body with `{to}`, `{message}` and `{id}`, which
    /// are JSON-escaped (write them inside quotes: `"{message}"`) or form-encoded.
    pub body: Option<String>,
}

/// How an email channel secures its SMTP connection. Certificates are always
/// verified (public roots, plus `ca_file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain, then `STARTTLS`, which the server must offer (no fallback to plain).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// Plain text: credentials and messages cross the network as they are.
    None,
}

/// `kind = "sentry"`: new, grown and regressed incidents as Sentry error events,
/// one per incident, fingerprinted by incident so Sentry folds each incident's
/// events into one issue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentryConfig {
    pub name: String,
    /// The environment variable holding the project's DSN (default `SENTRY_DSN`).
    pub dsn_env: Option<String>,
    /// Sentry's `environment` of every event (e.g. `production`).
    pub environment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsPreset {
    /// Twilio's Messages API: a form POST of `To`, `From`, `Body` with basic auth.
    Twilio,
    /// `{"sender", "to", "message"}` with an API key header, as Indian gateways
    /// (MSG91, Textlocal and the like) take it.
    Json,
    /// Any gateway: the body is a template.
    Template,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateContentType {
    Json,
    Form,
}

/// `kind = "log"`: one warning line per incident of a notification (one per notice)
/// in slotguard's own log. Without one, `[alerts] log` (on by default) writes the
/// same lines, without the delivery bookkeeping.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub name: String,
}

/// Turns the configured channels into working ones, or says everything that is wrong
/// with them, one problem per line. Secrets are read from the environment here, once.
pub fn build(configs: &[ChannelConfig]) -> Result<Vec<Box<dyn Channel>>, ConfigError> {
    build_with_env(configs, &|name| std::env::var(name)).map_err(ConfigError::from)
}

/// Where secrets come from: the process environment, or a test's own.
pub type Env<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

fn build_with_env(configs: &[ChannelConfig], env: Env) -> Result<Vec<Box<dyn Channel>>, String> {
    build_with(configs, env, &ConfigLines::default()).map_err(|problems| {
        format!(
            "the alert channels in the configuration have {} problem{}:\n  - {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  - ")
        )
    })
}

/// [`build`] with the environment given, and the problems one per entry, each
/// starting with its line in slotguard.toml when `lines` knows it.
pub fn build_with(
    configs: &[ChannelConfig],
    env: Env,
    lines: &ConfigLines,
) -> Result<Vec<Box<dyn Channel>>, Vec<String>> {
    let mut problems = Vec::new();
    let mut channels = Vec::new();
    let mut names = HashSet::new();
    for (index, config) in configs.iter().enumerate() {
        let mut found = Problems::default();
        let name = config.name().trim();
        if name.is_empty() {
            found.add("name must not be empty");
        } else if !names.insert(name) {
            found.add(format!(
                "name \"{name}\" is already used by another channel; names must be unique"
            ));
        }
        let channel: Option<Box<dyn Channel>> = match config {
            ChannelConfig::Webhook(c) => webhook::webhook(c, &mut found).map(|c| Box::new(c) as _),
            ChannelConfig::Email(c) => email::email(c, env, &mut found).map(|c| Box::new(c) as _),
            ChannelConfig::Sms(c) => sms::sms(c, env, &mut found).map(|c| Box::new(c) as _),
            ChannelConfig::Sentry(c) => {
                sentry::channel(c, env, &mut found).map(|c| Box::new(c) as _)
            }
            ChannelConfig::Log(c) => Some(Box::new(log::LogChannel {
                name: c.name.trim().to_owned(),
            })),
        };
        let place = format!(
            "{}alerts.channels[{index}] (kind = \"{}\", name = \"{}\")",
            lines.channel(index),
            config.kind(),
            config.name()
        );
        problems.extend(found.0.into_iter().map(|p| format!("{place}: {p}")));
        if let Some(channel) = channel {
            channels.push(channel);
        }
    }
    if problems.is_empty() {
        Ok(channels)
    } else {
        Err(problems)
    }
}

/// What is wrong with one channel's table, one sentence each.
#[derive(Default)]
pub(super) struct Problems(Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// A field the configuration must have for this kind or preset.
    fn required<'a, T>(&mut self, value: &'a Option<T>, field: &str, why: &str) -> Option<&'a T> {
        if value.is_none() {
            self.add(format!("{field} is required {why}"));
        }
        value.as_ref()
    }

    /// A field that would be silently ignored: say so instead.
    fn unused<T>(&mut self, value: &Option<T>, field: &str, belongs_to: &str) {
        if value.is_some() {
            self.add(format!("{field} is only used {belongs_to}; remove it"));
        }
    }

    /// Where the configuration names an environment variable, its value.
    pub(super) fn secret(&mut self, env: Env, field: &str, variable: &str) -> Option<String> {
        if variable.trim().is_empty() {
            self.add(format!("{field} must name an environment variable"));
            return None;
        }
        match env(variable) {
            Ok(value) if !value.is_empty() => Some(value),
            Ok(_) => {
                self.add(format!(
                    "environment variable {variable} (named by {field}) is empty"
                ));
                None
            }
            Err(VarError::NotPresent) => {
                self.add(format!(
                    "environment variable {variable} (named by {field}) is not set; \
                     export it before starting slotguard"
                ));
                None
            }
            Err(VarError::NotUnicode(_)) => {
                self.add(format!(
                    "environment variable {variable} (named by {field}) is not UTF-8"
                ));
                None
            }
        }
    }

    fn url(&mut self, field: &str, url: &str) -> Option<Url> {
        // The URL itself is left out of every message: webhook URLs (Slack's, for
        // one) and gateway URLs often carry a secret.
        let parsed = match Url::parse(url.trim()) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.add(format!("{field} is not a valid URL ({e})"));
                return None;
            }
        };
        match parsed.scheme() {
            "http" if parsed.host_str().is_some() => Some(parsed),
            "http" => {
                self.add(format!("{field} has no host"));
                None
            }
            "https" if HTTPS_SUPPORTED => Some(parsed),
            "https" => {
                self.add(format!(
                    "{field} uses https, but this build of slotguard has no TLS support for \
                     outgoing HTTP (reqwest is compiled without a TLS feature); use an http:// \
                     address (a relay on the local network) or a build with TLS"
                ));
                None
            }
            other => {
                self.add(format!(
                    "{field} must start with http:// or https://, not {other}://"
                ));
                None
            }
        }
    }

    fn recipients(&mut self, to: &[String]) -> bool {
        if to.is_empty() {
            self.add("to must list at least one recipient");
            return false;
        }
        true
    }
}

pub(super) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        // A receiver that moved should be reconfigured: following a redirect would
        // turn the POST into a GET and lose the notification.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("slotguard/", env!("CARGO_PKG_VERSION")))
        .build()
        // Fails only if the TLS backend or system resolver cannot start; with rustls'
        // built-in roots and the default resolver, that cannot happen.
        .expect("the HTTP client for alerts must start")
}

// ------------------------------------------------------------------------------- HTTP

pub(super) async fn send(request: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    send_with(request, |_| None).await
}

/// Sends, and on a refusal reads when to come back: `Retry-After` (seconds or an
/// HTTP date), or what `rate_limit` finds in the answer's other headers (Sentry's
/// `X-Sentry-Rate-Limits`), whichever is later.
pub(super) async fn send_with(
    request: reqwest::RequestBuilder,
    rate_limit: impl Fn(&reqwest::header::HeaderMap) -> Option<Duration>,
) -> Result<(), DeliveryError> {
    let response = request.send().await.map_err(request_failed)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let header = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_at = match (
        header.as_deref().and_then(retry_after),
        rate_limit(response.headers()),
    ) {
        (Some(RetryAt::After(a)), Some(b)) => Some(RetryAt::After(a.max(b))),
        (Some(at), _) => Some(at),
        (None, Some(b)) => Some(RetryAt::After(b)),
        (None, None) => None,
    };
    let retry_after = header
        .map(|v| format!(", Retry-After: {v}"))
        .unwrap_or_default();
    let answer = answer_excerpt(response).await;
    let detail = format!("the receiver answered {status}{retry_after}{answer}");
    Err(match (classify_status(status), retry_at) {
        (Retry::Worthwhile, Some(at)) => DeliveryError::RetryLater(detail, at),
        (Retry::Worthwhile, None) => DeliveryError::Transient(detail),
        (Retry::Pointless, _) => DeliveryError::Permanent(detail),
    })
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(value: &str) -> Option<RetryAt> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(RetryAt::After(Duration::from_secs(seconds)));
    }
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|at| RetryAt::At(at.with_timezone(&chrono::Utc)))
}

#[derive(Debug, PartialEq, Eq)]
enum Retry {
    Worthwhile,
    Pointless,
}

/// For a status that is not 2xx: whether the same request may succeed later.
fn classify_status(status: StatusCode) -> Retry {
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Retry::Worthwhile
    } else {
        // Other 4xx: the request or the credentials are wrong. 3xx: the receiver
        // moved, and the configuration must follow it.
        Retry::Pointless
    }
}

fn request_failed(error: reqwest::Error) -> DeliveryError {
    let builder = error.is_builder() || error.is_redirect();
    let detail = error_chain(&error.without_url());
    if builder {
        DeliveryError::Permanent(detail)
    } else {
        // Refused or dropped connections, timeouts, DNS: the receiver may be back soon.
        DeliveryError::Transient(detail)
    }
}

/// The start of a refusing receiver's answer ("invalid authkey"), on one line.
async fn answer_excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_CHARS * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = one_line(text.trim());
    if text.is_empty() {
        return String::new();
    }
    let excerpt: String = text.chars().take(ERROR_BODY_CHARS).collect();
    let more = if text.chars().count() > ERROR_BODY_CHARS {
        "…"
    } else {
        ""
    };
    format!(": {excerpt}{more}")
}

/// An error and its causes on one line, skipping a cause its parent already quotes.
pub(super) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

// ------------------------------------------------------------------------------ shared

fn event_name(event: Event) -> &'static str {
    event.as_str()
}

/// Line breaks become spaces: a log line, a subject or an SMS is one line.
pub(super) fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        Cow::Owned(
            text.split(['\n', '\r'])
                .filter(|part| !part.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" "),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::channels::testkit::*;

    // ------------------------------------------------------------------- config

    #[test]
    fn the_documented_example_builds_one_channel_of_each_kind() {
        let built = channels(
            r#"
            [alerts]
            group_wait_seconds = 30

            [[alerts.channels]]
            kind = "webhook"
            name = "ops"
            url = "http://127.0.0.1:9000/hooks/slotguard"

            [[alerts.channels]]
            kind = "email"
            name = "clinic-mail"
            smtp_host = "127.0.0.1"
            smtp_port = 2525
            from = "Slotguard <slotguard@clinic.example>"
            to = ["ops@clinic.example", "owner@clinic.example"]
            username_env = "SLOTGUARD_SMTP_USER"
            password_env = "SLOTGUARD_SMTP_PASSWORD"

            [[alerts.channels]]
            kind = "sms"
            name = "on-call"
            preset = "twilio"
            url = "http://sms-relay.clinic.lan/2010-04-01/Accounts/AC0123/Messages.json"
            account_sid = "AC0123"
            auth_token_env = "TWILIO_TOKEN"
            from = "+15005550006"
            to = ["+919812345678"]

            [[alerts.channels]]
            kind = "log"
            name = "log"
            "#,
        );
        let described: Vec<_> = built.iter().map(|c| (c.kind(), c.name())).collect();
        assert_eq!(
            described,
            [
                ("webhook", "ops"),
                ("email", "clinic-mail"),
                ("sms", "on-call"),
                ("log", "log")
            ]
        );
    }

    #[test]
    fn a_misspelled_field_or_kind_is_refused_when_the_file_is_read() {
        let typo = toml::from_str::<File>(
            "[[alerts.channels]]\nkind = \"webhook\"\nname = \"ops\"\nurll = \"http://x\"\n",
        )
        .err()
        .expect("unknown field must be refused")
        .to_string();
        assert_contains(&typo, "unknown field `urll`");

        let kind = toml::from_str::<File>("[[alerts.channels]]\nkind = \"slack\"\nname = \"x\"\n")
            .err()
            .expect("unknown kind must be refused")
            .to_string();
        assert_contains(&kind, "unknown variant `slack`");
        assert_contains(&kind, "`webhook`, `email`, `sms`, `sentry`, `log`");
    }

    #[test]
    fn build_refuses_a_url_that_is_not_http_and_never_quotes_it() {
        let message = refusal(
            r#"[[alerts.channels]]
            kind = "webhook"
            name = "ops"
            url = "ftp://token-abc@files.example/x"
            "#,
        );
        assert_contains(
            &message,
            "alerts.channels[0] (kind = \"webhook\", name = \"ops\"): url must start with http:// or https://, not ftp://",
        );
        assert!(!message.contains("token-abc"), "{message}");

        let message = refusal(
            "[[alerts.channels]]\nkind = \"webhook\"\nname = \"ops\"\nurl = \"not a url\"\n",
        );
        assert_contains(&message, "url is not a valid URL");
    }

    #[test]
    fn https_webhooks_and_twilios_own_url_are_accepted() {
        let https = configs(
            r#"[[alerts.channels]]
            kind = "webhook"
            name = "slack"
            url = "https://hooks.slack.com/services/T000/B000/secret"
            "#,
        );
        assert_eq!(build_with_env(&https, &env_of(SECRETS)).unwrap().len(), 1);
    }

    #[test]
    fn build_reports_every_problem_at_once_with_where_it_is() {
        let message = refusal(
            r#"[[alerts.channels]]
            kind = "email"
            name = "clinic-mail"
            smtp_host = "smtp://mail.clinic.example"
            from = "slotguard"
            to = []

            [[alerts.channels]]
            kind = "sms"
            name = "on-call"
            preset = "json"
            url = "http://gateway.example/send"
            from = "SLTGRD"
            api_key_env = "MSG91_KEY"
            to = []

            [[alerts.channels]]
            kind = "log"
            name = "clinic-mail"
            "#,
        );
        assert_contains(&message, "have 6 problems");
        let email = "alerts.channels[0] (kind = \"email\", name = \"clinic-mail\"): ";
        assert_contains(&message, &format!("{email}smtp_host is a host name"));
        assert_contains(
            &message,
            &format!("{email}from \"slotguard\" is not an email address"),
        );
        assert_contains(
            &message,
            &format!("{email}to must list at least one recipient"),
        );
        let sms = "alerts.channels[1] (kind = \"sms\", name = \"on-call\"): ";
        assert_contains(
            &message,
            &format!("{sms}to must list at least one recipient"),
        );
        assert_contains(
            &message,
            &format!("{sms}environment variable MSG91_KEY (named by api_key_env) is not set"),
        );
        assert_contains(
            &message,
            "alerts.channels[2] (kind = \"log\", name = \"clinic-mail\"): name \"clinic-mail\" is already used",
        );
    }

    #[test]
    fn build_refuses_credentials_half_given_or_missing_from_the_environment() {
        let half = refusal(
            r#"[[alerts.channels]]
            kind = "email"
            name = "mail"
            smtp_host = "127.0.0.1"
            from = "slotguard@clinic.example"
            to = ["ops@clinic.example"]
            username_env = "SLOTGUARD_SMTP_USER"
            "#,
        );
        assert_contains(&half, "username_env and password_env go together");

        let missing = refusal(
            r#"[[alerts.channels]]
            kind = "email"
            name = "mail"
            smtp_host = "127.0.0.1"
            from = "slotguard@clinic.example"
            to = ["ops@clinic.example", "not-an-address"]
            username_env = "SLOTGUARD_SMTP_USER"
            password_env = "SMTP_PASSWORD_TYPO"
            "#,
        );
        assert_contains(
            &missing,
            "environment variable SMTP_PASSWORD_TYPO (named by password_env) is not set; export it",
        );
        assert_contains(&missing, "to[1] \"not-an-address\" is not an email address");
    }

    #[test]
    fn build_refuses_sms_settings_that_belong_to_another_preset_or_are_missing() {
        let message = refusal(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "on-call"
            preset = "json"
            url = "http://gateway.example/send"
            account_sid = "AC0123"
            api_key_env = "GATEWAY_KEY"
            to = ["98123-45678"]
            "#,
        );
        assert_contains(
            &message,
            "account_sid is only used with preset = \"twilio\"; remove it",
        );
        assert_contains(
            &message,
            "from (the sender id) is required for preset = \"json\"",
        );
        assert_contains(&message, "to[0] \"98123-45678\" is not a phone number");

        let message = refusal(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "on-call"
            preset = "twilio"
            url = "http://relay.example/Messages.json"
            to = ["+919812345678"]
            "#,
        );
        assert_contains(&message, "account_sid is required for preset = \"twilio\"");
        assert_contains(
            &message,
            "from (the Twilio number to send from) is required",
        );
        assert_contains(&message, "auth_token_env is required");
    }

    #[test]
    fn build_refuses_a_template_with_an_unknown_placeholder_or_that_is_not_json() {
        let message = refusal(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "gateway"
            preset = "template"
            url = "http://gateway.example/send"
            method = "GET"
            body = '{"to": "{to}", "text": {message}, "ref": "{ref}"}'
            to = ["+919812345678"]
            "#,
        );
        assert_contains(&message, "method \"GET\" is not supported");
        assert_contains(
            &message,
            "body has an unknown placeholder {ref}; the known ones are {to}, {message}, {id}",
        );
        assert_contains(
            &message,
            "body is not valid JSON once its placeholders are filled",
        );
        assert_contains(&message, "write \"{message}\" inside quotes");

        let message = refusal(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "gateway"
            preset = "template"
            content_type = "form"
            url = "http://gateway.example/send"
            body = "number={to}"
            to = ["+919812345678"]
            "#,
        );
        assert_contains(&message, "body must contain {message}");
    }

    #[tokio::test]
    async fn https_support_flag_matches_how_reqwest_was_compiled() {
        // Against a plain HTTP listener: without TLS reqwest refuses the scheme
        // before connecting; with TLS it would connect and fail the handshake.
        let plain = receiver(StatusCode::OK).await;
        let https = plain.url.replace("http://", "https://");
        let error = http_client(HTTP_TIMEOUT)
            .get(&https)
            .send()
            .await
            .expect_err("a TLS request to a plain HTTP server cannot succeed");
        let refused_scheme = error_chain(&error).contains("scheme is not http");
        assert_eq!(
            refused_scheme,
            !HTTPS_SUPPORTED,
            "HTTPS_SUPPORTED is stale: {}",
            error_chain(&error)
        );
    }

    #[test]
    fn a_sentry_dsn_comes_from_the_environment_and_is_never_quoted() {
        let built = channel("[[alerts.channels]]\nkind = \"sentry\"\nname = \"sentry\"\n");
        assert_eq!((built.kind(), built.name()), ("sentry", "sentry"));
        let missing = refusal(
            "[[alerts.channels]]\nkind = \"sentry\"\nname = \"sentry\"\ndsn_env = \"NO_SUCH_DSN\"\n",
        );
        assert_contains(
            &missing,
            "environment variable NO_SUCH_DSN (named by dsn_env) is not set",
        );
        let wrong = refusal(
            "[[alerts.channels]]\nkind = \"sentry\"\nname = \"sentry\"\ndsn_env = \"TYPO_DSN\"\n",
        );
        assert_contains(
            &wrong,
            "environment variable TYPO_DSN does not hold a Sentry DSN",
        );
        assert!(!wrong.contains("secret-project"), "{wrong}");
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        assert_eq!(
            retry_after(" 120 "),
            Some(RetryAt::After(Duration::from_secs(120)))
        );
        assert_eq!(
            retry_after("Tue, 01 Dec 2026 06:30:00 GMT"),
            Some(RetryAt::At(
                chrono::DateTime::parse_from_rfc3339("2026-12-01T06:30:00Z")
                    .unwrap()
                    .with_timezone(&chrono::Utc)
            ))
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn statuses_are_classified_by_whether_a_retry_can_help() {
        for code in [500, 502, 503, 504, 429, 408] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify_status(status), Retry::Worthwhile, "{code}");
        }
        for code in [301, 302, 400, 401, 403, 404, 410, 413, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify_status(status), Retry::Pointless, "{code}");
        }
    }
}
