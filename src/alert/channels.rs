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

use super::message::{SMS_MAX_CHARS, SMS_REFERENCE_CHARS};
use super::routes::ConfigLines;
use super::{DeliveryError, Event, Notification, RetryAt};

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
pub fn build(configs: &[ChannelConfig]) -> Result<Vec<Box<dyn Channel>>, String> {
    build_with_env(configs, &|name| std::env::var(name))
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
            ChannelConfig::Webhook(c) => webhook(c, &mut found).map(|c| Box::new(c) as _),
            ChannelConfig::Email(c) => email(c, env, &mut found).map(|c| Box::new(c) as _),
            ChannelConfig::Sms(c) => sms(c, env, &mut found).map(|c| Box::new(c) as _),
            ChannelConfig::Sentry(c) => {
                super::sentry::channel(c, env, &mut found).map(|c| Box::new(c) as _)
            }
            ChannelConfig::Log(c) => Some(Box::new(LogChannel {
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

// ---------------------------------------------------------------------------- webhook

struct WebhookChannel {
    name: String,
    url: Url,
    client: reqwest::Client,
}

fn webhook(config: &WebhookConfig, found: &mut Problems) -> Option<WebhookChannel> {
    let url = found.url("url", &config.url)?;
    Some(WebhookChannel {
        name: config.name.trim().to_owned(),
        url,
        client: http_client(HTTP_TIMEOUT),
    })
}

/// The webhook body. `text` is what Slack and Mattermost show; the rest is for
/// receivers that understand slotguard.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookPayload<'a> {
    id: &'a str,
    /// The short reference the SMS of the same notification carries.
    reference: String,
    clinic_id: &'a str,
    event: Event,
    subject: &'a str,
    text: String,
    incidents: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

#[async_trait]
impl Channel for WebhookChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn wants(&self, _n: &Notification) -> bool {
        true
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let payload = WebhookPayload {
            id: &n.id,
            reference: n.reference(),
            clinic_id: &n.clinic_id,
            event: n.event,
            subject: &n.subject,
            // Chat apps show only `text`: lead with the subject so the one line a
            // phone notification shows says what happened.
            text: format!("{}\n{}", n.subject, n.text),
            incidents: &n.incidents,
            details: n.details.as_ref(),
        };
        let request = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", &n.id)
            .json(&payload);
        send(request).await
    }
}

// ------------------------------------------------------------------------------ email

struct EmailChannel {
    name: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

fn email(config: &EmailConfig, env: Env, found: &mut Problems) -> Option<EmailChannel> {
    let host = config.smtp_host.trim();
    if host.is_empty() {
        found.add("smtp_host must not be empty");
    } else if host.contains("://") {
        found.add("smtp_host is a host name such as mail.clinic.example, not a URL");
    }
    if config.smtp_port == Some(0) {
        found.add("smtp_port must be between 1 and 65535");
    }
    let from = match config.from.parse::<Mailbox>() {
        Ok(from) => Some(from),
        Err(e) => {
            found.add(format!(
                "from \"{}\" is not an email address ({e})",
                config.from
            ));
            None
        }
    };
    let mut to = Vec::new();
    if found.recipients(&config.to) {
        for (i, address) in config.to.iter().enumerate() {
            match address.parse::<Mailbox>() {
                Ok(mailbox) => to.push(mailbox),
                Err(e) => found.add(format!(
                    "to[{i}] \"{address}\" is not an email address ({e})"
                )),
            }
        }
    }
    let credentials = match (&config.username_env, &config.password_env) {
        (None, None) => None,
        (Some(user), Some(password)) => {
            let user = found.secret(env, "username_env", user);
            let password = found.secret(env, "password_env", password);
            user.zip(password).map(|(u, p)| Credentials::new(u, p))
        }
        _ => {
            found.add("username_env and password_env go together: set both, or neither");
            None
        }
    };
    let tls = smtp_tls(config, host, found);
    let from = from?;
    if !found.0.is_empty() {
        return None;
    }
    let port = config.smtp_port.unwrap_or(match &tls {
        Some(Tls::Wrapper(_)) => 465,
        _ => 25,
    });
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls?)
        .timeout(Some(SMTP_TIMEOUT));
    if let Some(credentials) = credentials {
        transport = transport.credentials(credentials);
    }
    Some(EmailChannel {
        name: config.name.trim().to_owned(),
        from,
        to,
        transport: transport.build(),
    })
}

/// Loopback: a relay on this machine, where plain SMTP crosses no network.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The connection's security: STARTTLS (required, never a silent fall back to plain)
/// unless the host is loopback; certificates checked against the public roots and
/// `ca_file`.
fn smtp_tls(config: &EmailConfig, host: &str, found: &mut Problems) -> Option<Tls> {
    let mode = config.tls.unwrap_or(if is_loopback(host) {
        SmtpTls::None
    } else {
        SmtpTls::Starttls
    });
    if mode == SmtpTls::None {
        if config.ca_file.is_some() {
            found.add("ca_file is only used with tls = \"starttls\" or \"tls\"; remove it");
        }
        return Some(Tls::None);
    }
    let mut parameters = TlsParameters::builder(host.to_owned());
    if let Some(path) = &config.ca_file {
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => {
                found.add(format!("ca_file \"{path}\" cannot be read ({e})"));
                return None;
            }
        };
        let has_certificate = pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----");
        match Certificate::from_pem(&pem) {
            Ok(certificate) if has_certificate => {
                parameters = parameters.add_root_certificate(certificate);
            }
            Ok(_) => {
                found.add(format!(
                    "ca_file \"{path}\" holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                ));
                return None;
            }
            Err(e) => {
                found.add(format!(
                    "ca_file \"{path}\" is not a PEM certificate file ({e})"
                ));
                return None;
            }
        }
    }
    match parameters.build_rustls() {
        Ok(parameters) => Some(match mode {
            SmtpTls::Tls => Tls::Wrapper(parameters),
            _ => Tls::Required(parameters),
        }),
        Err(e) => {
            found.add(format!("TLS for {host} cannot be set up ({e})"));
            None
        }
    }
}

/// A TLS handshake the server's certificate failed (rustls reports it as invalid
/// data): the same certificate fails the same way next time, until the
/// configuration (`ca_file`) or the certificate changes.
fn refused_handshake(error: &(dyn StdError + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
        }
        source = e.source();
    }
    false
}

impl EmailChannel {
    fn message(&self, n: &Notification) -> Result<Message, DeliveryError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(one_line(&n.subject))
            // Mail clients and list software drop a second message with the same
            // Message-ID; the id header says the same to a person or a filter.
            .message_id(Some(format!(
                "<{}@{}>",
                message_id_local_part(&n.id),
                self.from.email.domain()
            )))
            .raw_header(MailHeaderValue::new(
                MailHeaderName::new_from_ascii_str("X-Slotguard-Notification-Id"),
                n.id.clone(),
            ))
            .raw_header(MailHeaderValue::new(
                MailHeaderName::new_from_ascii_str("X-Slotguard-Event"),
                event_name(n.event).to_owned(),
            ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                email_text(n),
                n.html.clone().unwrap_or_else(|| email_html(n)),
            ))
            .map_err(|e| DeliveryError::Permanent(format!("could not compose the email: {e}")))
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    fn wants(&self, _n: &Notification) -> bool {
        true
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        let message = self.message(n)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // 5xx replies, client errors such as "no authentication mechanism in
            // common" or a server that offers no STARTTLS, and a certificate that
            // does not verify, will fail the same way next time.
            Err(e) if e.is_permanent() || e.is_client() || e.is_tls() => Err(
                DeliveryError::Permanent(format!("SMTP: {}", error_chain(&e))),
            ),
            Err(e) if refused_handshake(&e) => Err(DeliveryError::Permanent(format!(
                "SMTP: the TLS handshake failed ({}); if the server's certificate is \
                 signed by the clinic's own authority, name it in ca_file",
                error_chain(&e)
            ))),
            // 4xx replies, refused connections, timeouts, dropped connections.
            Err(e) => Err(DeliveryError::Transient(format!("SMTP: {e}"))),
        }
    }
}

fn email_text(n: &Notification) -> String {
    format!(
        "{}\n\n-- \nslotguard notification {} (ref {}, {}) for clinic {}\n",
        n.text.trim_end(),
        n.id,
        n.reference(),
        event_name(n.event),
        n.clinic_id
    )
}

/// The HTML part. Everything in it comes from data (doctor names, clinic ids and
/// whatever else a booking app let through), so every piece is escaped.
fn email_html(n: &Notification) -> String {
    let subject = escape_html(&n.subject);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{subject}</title></head>\n\
         <body style=\"font-family: sans-serif\">\n\
         <h2>{subject}</h2>\n\
         <pre style=\"font-family: inherit; white-space: pre-wrap\">{text}</pre>\n\
         <p style=\"color: #666; font-size: small\">slotguard notification {id} ({event}) \
         for clinic {clinic}</p>\n\
         </body></html>\n",
        text = escape_html(n.text.trim_end()),
        id = escape_html(&n.id),
        event = event_name(n.event),
        clinic = escape_html(&n.clinic_id),
    )
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The notification id as the left of a Message-ID (`<left@domain>`), which allows
/// fewer characters than an id may hold; the exact id is in X-Slotguard-Notification-Id.
fn message_id_local_part(id: &str) -> String {
    let local: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '.'
            }
        })
        .collect();
    let local = local
        .split('.')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    if local.is_empty() {
        "slotguard".to_owned()
    } else {
        local
    }
}

// -------------------------------------------------------------------------------- sms

struct SmsChannel {
    name: String,
    to: Vec<String>,
    gateway: Gateway,
    client: reqwest::Client,
}

/// How one SMS becomes one HTTP request, per preset.
enum Gateway {
    Twilio {
        url: Url,
        from: String,
        account_sid: String,
        auth_token: String,
    },
    Json {
        url: Url,
        sender: String,
        api_key: (HeaderName, HeaderValue),
    },
    Template {
        url: Url,
        method: Method,
        content_type: TemplateContentType,
        body: String,
        api_key: Option<(HeaderName, HeaderValue)>,
    },
}

const TEMPLATE_PLACEHOLDERS: [&str; 3] = ["to", "message", "id"];

fn sms(config: &SmsConfig, env: Env, found: &mut Problems) -> Option<SmsChannel> {
    if found.recipients(&config.to) {
        for (i, number) in config.to.iter().enumerate() {
            let digits = number.strip_prefix('+').unwrap_or(number);
            if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                found.add(format!(
                    "to[{i}] \"{number}\" is not a phone number: write digits only, optionally \
                     after a +, as the gateway expects them (+919812345678 or 919812345678)"
                ));
            }
        }
    }
    let gateway = match config.preset {
        SmsPreset::Twilio => twilio(config, env, found),
        SmsPreset::Json => json_gateway(config, env, found),
        SmsPreset::Template => template_gateway(config, env, found),
    };
    if !found.0.is_empty() {
        return None;
    }
    Some(SmsChannel {
        name: config.name.trim().to_owned(),
        to: config.to.clone(),
        gateway: gateway?,
        client: http_client(HTTP_TIMEOUT),
    })
}

fn twilio(config: &SmsConfig, env: Env, found: &mut Problems) -> Option<Gateway> {
    const WHY: &str = "for preset = \"twilio\"";
    const ONLY: &str = "with preset = \"json\" or \"template\"";
    found.unused(&config.api_key_env, "api_key_env", ONLY);
    found.unused(&config.api_key_header, "api_key_header", ONLY);
    found.unused(&config.method, "method", "with preset = \"template\"");
    found.unused(
        &config.content_type,
        "content_type",
        "with preset = \"template\"",
    );
    found.unused(&config.body, "body", "with preset = \"template\"");
    let account_sid = found.required(&config.account_sid, "account_sid", WHY);
    let from = found.required(&config.from, "from (the Twilio number to send from)", WHY);
    let auth_token = found
        .required(&config.auth_token_env, "auth_token_env", WHY)
        .and_then(|variable| found.secret(env, "auth_token_env", variable));
    let account_sid = account_sid?.trim().to_owned();
    if account_sid.is_empty() || !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        found.add("account_sid must be the account's SID (letters and digits, AC…)");
        return None;
    }
    let url = match &config.url {
        Some(url) => found.url("url", url),
        None => {
            let default =
                format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Messages.json");
            found.url(
                "url (default: Twilio's Messages URL; set url to use another)",
                &default,
            )
        }
    };
    Some(Gateway::Twilio {
        url: url?,
        from: from?.clone(),
        account_sid,
        auth_token: auth_token?,
    })
}

fn json_gateway(config: &SmsConfig, env: Env, found: &mut Problems) -> Option<Gateway> {
    const WHY: &str = "for preset = \"json\"";
    found.unused(
        &config.account_sid,
        "account_sid",
        "with preset = \"twilio\"",
    );
    found.unused(
        &config.auth_token_env,
        "auth_token_env",
        "with preset = \"twilio\"",
    );
    found.unused(&config.method, "method", "with preset = \"template\"");
    found.unused(
        &config.content_type,
        "content_type",
        "with preset = \"template\"",
    );
    found.unused(&config.body, "body", "with preset = \"template\"");
    let url = found
        .required(&config.url, "url", WHY)
        .and_then(|u| found.url("url", u));
    let sender = found.required(&config.from, "from (the sender id)", WHY);
    let api_key = found
        .required(&config.api_key_env, "api_key_env", WHY)
        .and_then(|variable| api_key_header(config, variable, env, found));
    Some(Gateway::Json {
        url: url?,
        sender: sender?.clone(),
        api_key: api_key?,
    })
}

fn template_gateway(config: &SmsConfig, env: Env, found: &mut Problems) -> Option<Gateway> {
    const WHY: &str = "for preset = \"template\"";
    found.unused(
        &config.account_sid,
        "account_sid",
        "with preset = \"twilio\"",
    );
    found.unused(
        &config.auth_token_env,
        "auth_token_env",
        "with preset = \"twilio\"",
    );
    found.unused(
        &config.from,
        "from",
        "with preset = \"twilio\" or \"json\"; write the sender into body",
    );
    if config.api_key_header.is_some() && config.api_key_env.is_none() {
        found.add("api_key_header needs api_key_env, the variable holding the key");
    }
    let url = found
        .required(&config.url, "url", WHY)
        .and_then(|u| found.url("url", u));
    let method = match config.method.as_deref().map(str::trim) {
        None => Some(Method::POST),
        Some(m) if m.eq_ignore_ascii_case("post") => Some(Method::POST),
        Some(m) if m.eq_ignore_ascii_case("put") => Some(Method::PUT),
        Some(other) => {
            found.add(format!(
                "method \"{other}\" is not supported; use \"POST\" or \"PUT\""
            ));
            None
        }
    };
    let content_type = config.content_type.unwrap_or(TemplateContentType::Json);
    let body = found.required(&config.body, "body (the request body template)", WHY);
    if let Some(body) = body {
        check_template(body, content_type, found);
    }
    let api_key = match &config.api_key_env {
        Some(variable) => Some(api_key_header(config, variable, env, found)?),
        None => None,
    };
    Some(Gateway::Template {
        url: url?,
        method: method?,
        content_type,
        body: body?.clone(),
        api_key,
    })
}

fn check_template(body: &str, content_type: TemplateContentType, found: &mut Problems) {
    let known = TEMPLATE_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ");
    for name in placeholders(body) {
        if !TEMPLATE_PLACEHOLDERS.contains(&name) {
            found.add(format!(
                "body has an unknown placeholder {{{name}}}; the known ones are {known}"
            ));
        }
    }
    for needed in ["to", "message"] {
        if !placeholders(body).any(|name| name == needed) {
            found.add(format!("body must contain {{{needed}}}"));
        }
    }
    if content_type == TemplateContentType::Json {
        let sample = fill_template(
            body,
            content_type,
            "+919812345678",
            "a \"quoted\"\nline",
            "id-1",
        );
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
            found.add(format!(
                "body is not valid JSON once its placeholders are filled ({e}); placeholders \
                 are filled without quotes, so write \"{{message}}\" inside quotes"
            ));
        }
    }
}

/// The `{name}` placeholders of a template: a brace, lowercase letters or `_`, a brace.
/// Other braces (JSON's own) are text.
fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template.match_indices('{').filter_map(move |(start, _)| {
        let rest = &template[start + 1..];
        let end = rest.find('}')?;
        let name = &rest[..end];
        let is_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        is_name.then_some(name)
    })
}

/// Fills `{to}`, `{message}`, `{id}` in one pass, encoding each value for the body's
/// content type; a value that itself contains `{id}` is not filled again.
fn fill_template(
    template: &str,
    content_type: TemplateContentType,
    to: &str,
    message: &str,
    id: &str,
) -> String {
    let encode = |value: &str| -> String {
        match content_type {
            TemplateContentType::Json => {
                let quoted = serde_json::Value::from(value).to_string();
                quoted[1..quoted.len() - 1].to_owned()
            }
            TemplateContentType::Form => form_encode(value),
        }
    };
    let values = [
        ("{to}", encode(to)),
        ("{message}", encode(message)),
        ("{id}", encode(id)),
    ];
    let mut filled = String::with_capacity(template.len() + message.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        filled.push_str(&rest[..start]);
        rest = &rest[start..];
        match values
            .iter()
            .find(|(placeholder, _)| rest.starts_with(placeholder))
        {
            Some((placeholder, value)) => {
                filled.push_str(value);
                rest = &rest[placeholder.len()..];
            }
            None => {
                filled.push('{');
                rest = &rest[1..];
            }
        }
    }
    filled.push_str(rest);
    filled
}

/// One value in `application/x-www-form-urlencoded` form (space as `+`, the rest
/// percent-encoded), by serde_urlencoded's serializer.
fn form_encode(value: &str) -> String {
    let pair = serde_urlencoded::to_string([("v", value)]).unwrap_or_default();
    pair.strip_prefix("v=").unwrap_or_default().to_owned()
}

fn api_key_header(
    config: &SmsConfig,
    variable: &str,
    env: Env,
    found: &mut Problems,
) -> Option<(HeaderName, HeaderValue)> {
    let header = config.api_key_header.as_deref().unwrap_or("authkey").trim();
    let name = match HeaderName::from_bytes(header.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            found.add(format!(
                "api_key_header \"{header}\" is not a valid HTTP header name"
            ));
            None
        }
    };
    let key = found.secret(env, "api_key_env", variable)?;
    let mut value = match HeaderValue::from_str(&key) {
        Ok(value) => value,
        Err(_) => {
            found.add(format!(
                "environment variable {variable} (named by api_key_env) holds characters an \
                 HTTP header cannot carry (a line break?)"
            ));
            return None;
        }
    };
    value.set_sensitive(true);
    Some((name?, value))
}

impl SmsChannel {
    fn request(&self, to: &str, message: &str, id: &str) -> reqwest::RequestBuilder {
        // One key per recipient: a gateway that drops repeats must not drop the
        // second number's message as a repeat of the first's.
        let idempotency_key = format!("{id}:{to}");
        let request = match &self.gateway {
            Gateway::Twilio {
                url,
                from,
                account_sid,
                auth_token,
            } => self
                .client
                .post(url.clone())
                .basic_auth(account_sid, Some(auth_token))
                .form(&[("To", to), ("From", from), ("Body", message)]),
            Gateway::Json {
                url,
                sender,
                api_key: (header, key),
            } => self
                .client
                .post(url.clone())
                .header(header, key)
                .json(&serde_json::json!({"sender": sender, "to": to, "message": message})),
            Gateway::Template {
                url,
                method,
                content_type,
                body,
                api_key,
            } => {
                let mime = match content_type {
                    TemplateContentType::Json => "application/json",
                    TemplateContentType::Form => "application/x-www-form-urlencoded",
                };
                let mut request = self
                    .client
                    .request(method.clone(), url.clone())
                    .header(CONTENT_TYPE, mime)
                    .body(fill_template(body, *content_type, to, message, id));
                if let Some((header, key)) = api_key {
                    request = request.header(header, key);
                }
                request
            }
        };
        request.header("Idempotency-Key", idempotency_key)
    }
}

#[async_trait]
impl Channel for SmsChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sms"
    }

    fn wants(&self, n: &Notification) -> bool {
        n.event.is_urgent()
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        // A text message wakes someone up: even if a caller forgets to ask `wants`,
        // "resolved" does not go out by SMS.
        if !self.wants(n) {
            tracing::debug!(channel = %self.name, notification = %n.id, "not urgent; no SMS sent");
            return Ok(());
        }
        let message = sms_body(&n.short_text, &n.reference());
        let mut failures = Vec::new();
        // Every number is tried even after one fails: one wrong number must not keep
        // the rest of the on-call list from hearing.
        for to in &self.to {
            if let Err(e) = send(self.request(to, &message, &n.id)).await {
                failures.push((mask_number(to), e));
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        // Any transient failure makes the whole delivery worth retrying (the numbers
        // that got it may get it twice: at least once); only when every failure is
        // permanent is retrying pointless.
        let transient = failures.iter().any(|(_, e)| {
            matches!(
                e,
                DeliveryError::Transient(_) | DeliveryError::RetryLater(..)
            )
        });
        let failed = failures.len();
        let detail = failures
            .into_iter()
            .map(|(to, e)| match e {
                DeliveryError::Transient(m)
                | DeliveryError::RetryLater(m, _)
                | DeliveryError::Permanent(m) => format!("{to}: {m}"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let detail = format!("{failed} of {} numbers failed: {detail}", self.to.len());
        Err(if transient {
            DeliveryError::Transient(detail)
        } else {
            DeliveryError::Permanent(detail)
        })
    }
}

/// The text sent by SMS: the short text on one line and the notification's
/// reference (`… ref 7K3Q9X`), so a person who gets it twice sees it is the same
/// message; at most 160 characters, the text cut on a character boundary (never
/// inside a multi-byte character) with an ellipsis, the reference never cut.
fn sms_body(short_text: &str, reference: &str) -> String {
    let line = one_line(short_text);
    let room = SMS_MAX_CHARS - SMS_REFERENCE_CHARS;
    let text = if line.chars().count() <= room {
        line.into_owned()
    } else {
        let mut cut: String = line.chars().take(room - 1).collect();
        cut.push('…');
        cut
    };
    format!("{text} ref {reference}")
}

/// A number as it may appear in a log: enough to tell which one, not to dial it.
fn mask_number(number: &str) -> String {
    let count = number.chars().count();
    let tail: String = number.chars().skip(count.saturating_sub(4)).collect();
    format!("…{tail}")
}

// -------------------------------------------------------------------------------- log

struct LogChannel {
    name: String,
}

#[async_trait]
impl Channel for LogChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "log"
    }

    fn wants(&self, _n: &Notification) -> bool {
        true
    }

    async fn deliver(&self, n: &Notification) -> Result<(), DeliveryError> {
        log_notification(Some(&self.name), n);
        Ok(())
    }
}

/// Writes `n` to slotguard's own log at warn: a line per incident it names (what
/// happened to it, where), or one line for a notice. Only ids, slots and tokens:
/// logs travel further than alerts do, and `members` rows would name patients.
pub fn log_notification(channel: Option<&str>, n: &Notification) {
    let channel = channel.unwrap_or("server log");
    let incidents = n.incident_alerts();
    if incidents.is_empty() {
        tracing::warn!(
            channel,
            notification = %n.id,
            clinic = %n.clinic_id,
            event = n.event.as_str(),
            summary = %one_line(&n.short_text),
            "{}",
            one_line(&n.subject),
        );
        return;
    }
    for i in &incidents {
        tracing::warn!(
            channel,
            notification = %n.id,
            clinic = %n.clinic_id,
            incident = %i.id,
            event = i.event.as_str(),
            state = i.state.as_str(),
            members = i.members.len(),
            "duplicate booking {}: {} {} of doctor {} on {} at clinic {}",
            i.word(),
            i.kind.as_str(),
            i.key,
            i.doctor_id,
            i.date,
            i.clinic_id,
        );
    }
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
    use std::{
        collections::HashMap,
        path::PathBuf,
        process::Stdio,
        sync::{Arc, Mutex},
    };

    use axum::{body::Bytes, extract::State, http::HeaderMap, Router};
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;

    // ------------------------------------------------------------------ fixtures

    fn notification(event: Event) -> Notification {
        Notification {
            id: "ntf-kochi-2026-12-01-0007".to_owned(),
            clinic_id: "kochi".to_owned(),
            event,
            subject: "slotguard: 2 duplicate bookings at clinic kochi".to_owned(),
            text: "Slot 5 of dr-asha on 2026-12-01 has 2 occupying appointments.\n\
                   Booked via: <script>alert(\"x\")</script> & co\n"
                .to_owned(),
            short_text: "kochi: slot 5 of dr-asha on 2026-12-01 booked twice".to_owned(),
            incidents: serde_json::json!([{
                "id": "inc-1", "kind": "slot", "doctor": "dr-asha", "date": "2026-12-01",
                "slotIndex": 5, "members": [{"patientName": "Anu Thomas"}], "state": "open"
            }]),
            details: None,
            html: None,
        }
    }

    #[derive(Deserialize)]
    struct File {
        alerts: Alerts,
    }

    #[derive(Deserialize)]
    struct Alerts {
        channels: Vec<ChannelConfig>,
    }

    fn configs(toml_text: &str) -> Vec<ChannelConfig> {
        toml::from_str::<File>(toml_text)
            .unwrap_or_else(|e| panic!("test TOML must parse: {e}"))
            .alerts
            .channels
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned().ok_or(VarError::NotPresent)
    }

    const SECRETS: &[(&str, &str)] = &[
        ("SLOTGUARD_SMTP_USER", "slotguard"),
        ("SLOTGUARD_SMTP_PASSWORD", "mail-secret"),
        ("TWILIO_TOKEN", "twilio-token"),
        ("GATEWAY_KEY", "gateway-key"),
        (
            "SENTRY_DSN",
            "https://0123456789abcdef@sentry.clinic.example/42",
        ),
        ("TYPO_DSN", "https://sentry.clinic.example/secret-project"),
    ];

    fn channels(toml_text: &str) -> Vec<Box<dyn Channel>> {
        match build_with_env(&configs(toml_text), &env_of(SECRETS)) {
            Ok(channels) => channels,
            Err(e) => panic!("the test configuration must build:\n{e}"),
        }
    }

    fn channel(toml_text: &str) -> Box<dyn Channel> {
        channels(toml_text).remove(0)
    }

    fn refusal(toml_text: &str) -> String {
        match build_with_env(&configs(toml_text), &env_of(SECRETS)) {
            Ok(_) => panic!("build must refuse this configuration"),
            Err(e) => e,
        }
    }

    fn assert_contains(text: &str, wanted: &str) {
        assert!(text.contains(wanted), "expected {wanted:?} in:\n{text}");
    }

    // ------------------------------------------------- HTTP receivers on loopback

    #[derive(Clone, Debug)]
    struct Received {
        method: String,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Received {
        fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .unwrap_or_else(|| panic!("request has no {name} header"))
                .to_str()
                .unwrap()
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("the body is JSON")
        }

        fn form(&self) -> HashMap<String, String> {
            serde_urlencoded::from_bytes(&self.body).expect("the body is a form")
        }
    }

    type Answer = Arc<dyn Fn(&Received) -> StatusCode + Send + Sync>;

    #[derive(Clone)]
    struct ReceiverState {
        received: Arc<Mutex<Vec<Received>>>,
        answer: Answer,
        delay: Duration,
    }

    /// An HTTP server on 127.0.0.1:0 that records every request and answers with
    /// whatever `answer` says.
    struct Receiver {
        url: String,
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl Receiver {
        fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    async fn receiver_answering(
        answer: impl Fn(&Received) -> StatusCode + Send + Sync + 'static,
        delay: Duration,
    ) -> Receiver {
        async fn record(
            State(state): State<ReceiverState>,
            method: axum::http::Method,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, &'static str) {
            let received = Received {
                method: method.to_string(),
                path: uri.path().to_owned(),
                headers,
                body,
            };
            let status = (state.answer)(&received);
            state.received.lock().unwrap().push(received);
            tokio::time::sleep(state.delay).await;
            (status, "answer from the test receiver")
        }
        let state = ReceiverState {
            received: Arc::default(),
            answer: Arc::new(answer),
            delay,
        };
        let received = state.received.clone();
        let router = Router::new().fallback(record).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { url, received }
    }

    async fn receiver(status: StatusCode) -> Receiver {
        receiver_answering(move |_| status, Duration::ZERO).await
    }

    /// A loopback port nobody listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

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

    // ------------------------------------------------------------------ webhook

    fn webhook_at(url: &str) -> Box<dyn Channel> {
        channel(&format!(
            "[[alerts.channels]]\nkind = \"webhook\"\nname = \"ops\"\nurl = \"{url}\"\n"
        ))
    }

    #[tokio::test]
    async fn webhook_posts_the_notification_as_json_keyed_by_its_id() {
        let hook = receiver(StatusCode::NO_CONTENT).await;
        let channel = webhook_at(&format!("{}/hooks/slotguard", hook.url));
        let n = notification(Event::Opened);
        assert!(
            channel.wants(&notification(Event::Resolved))
                && channel.wants(&notification(Event::Reminder))
        );

        channel.deliver(&n).await.expect("a 204 is a delivery");

        let received = hook.received();
        assert_eq!(received.len(), 1);
        let request = &received[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/hooks/slotguard")
        );
        assert_eq!(request.header("Idempotency-Key"), n.id);
        assert_eq!(request.header("content-type"), "application/json");
        let body = request.json();
        assert_eq!(body["id"], n.id.as_str());
        assert_eq!(body["clinicId"], "kochi");
        assert_eq!(body["event"], "opened");
        assert_eq!(body["subject"], n.subject.as_str());
        assert_eq!(body["text"], format!("{}\n{}", n.subject, n.text).as_str());
        assert_eq!(body["incidents"], n.incidents);
    }

    async fn webhook_answered(status: StatusCode) -> Result<(), DeliveryError> {
        let hook = receiver(status).await;
        webhook_at(&hook.url)
            .deliver(&notification(Event::Opened))
            .await
    }

    #[tokio::test]
    async fn a_receiver_answering_500_is_a_transient_failure_quoting_its_answer() {
        let error = webhook_answered(StatusCode::INTERNAL_SERVER_ERROR)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            DeliveryError::Transient(
                "the receiver answered 500 Internal Server Error: answer from the test receiver"
                    .to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_receiver_answering_429_is_a_transient_failure() {
        let error = webhook_answered(StatusCode::TOO_MANY_REQUESTS)
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Transient(_)), "{error}");
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

    #[tokio::test]
    async fn a_receiver_answering_400_is_a_permanent_failure() {
        let error = webhook_answered(StatusCode::BAD_REQUEST).await.unwrap_err();
        assert!(matches!(error, DeliveryError::Permanent(_)), "{error}");
    }

    #[tokio::test]
    async fn a_receiver_that_redirects_is_a_permanent_failure_not_a_lost_post() {
        let error = webhook_answered(StatusCode::MOVED_PERMANENTLY)
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Permanent(_)), "{error}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_transient_failure() {
        let url = format!("http://127.0.0.1:{}/hook", closed_port());
        let error = webhook_at(&url)
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Transient(_)), "{error}");
    }

    #[tokio::test]
    async fn a_receiver_slower_than_the_timeout_is_a_transient_failure() {
        let slow = receiver_answering(|_| StatusCode::OK, Duration::from_secs(5)).await;
        let channel = WebhookChannel {
            name: "ops".to_owned(),
            url: Url::parse(&slow.url).unwrap(),
            client: http_client(Duration::from_millis(200)),
        };
        let error = channel
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DeliveryError::Transient(m) if m.contains("timed out")),
            "{error}"
        );
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

    // ---------------------------------------------------------------------- sms

    #[tokio::test]
    async fn twilio_preset_posts_one_form_per_number_with_basic_auth() {
        let twilio = receiver(StatusCode::CREATED).await;
        let channel = channel(&format!(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "on-call"
            preset = "twilio"
            url = "{}/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
            account_sid = "AC0123456789abcdef"
            auth_token_env = "TWILIO_TOKEN"
            from = "+15005550006"
            to = ["+919812345678", "+919800000001"]
            "#,
            twilio.url
        ));
        let n = notification(Event::Opened);

        channel.deliver(&n).await.expect("a 201 is a delivery");

        let received = twilio.received();
        assert_eq!(received.len(), 2, "one request per number");
        for (request, to) in received.iter().zip(["+919812345678", "+919800000001"]) {
            assert_eq!(
                request.path,
                "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
            );
            assert_eq!(
                request.header("content-type"),
                "application/x-www-form-urlencoded"
            );
            assert_eq!(
                request.header("authorization"),
                "Basic QUMwMTIzNDU2Nzg5YWJjZGVmOnR3aWxpby10b2tlbg=="
            );
            assert_eq!(request.header("Idempotency-Key"), format!("{}:{to}", n.id));
            let form = request.form();
            assert_eq!(form["To"], to);
            assert_eq!(form["From"], "+15005550006");
            assert_eq!(form["Body"], sms_of(&n));
        }
    }

    fn json_gateway_at(url: &str, to: &[&str]) -> Box<dyn Channel> {
        channel(&format!(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "msg91"
            preset = "json"
            url = "{url}/api/send"
            from = "SLTGRD"
            api_key_env = "GATEWAY_KEY"
            to = {to:?}
            "#
        ))
    }

    #[tokio::test]
    async fn json_preset_sends_sender_to_and_message_with_the_api_key_header() {
        let gateway = receiver(StatusCode::OK).await;
        let channel = json_gateway_at(&gateway.url, &["919812345678"]);
        let n = notification(Event::Regressed);

        channel.deliver(&n).await.expect("a 200 is a delivery");

        let received = gateway.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].path, "/api/send");
        assert_eq!(received[0].header("authkey"), "gateway-key");
        assert_eq!(
            received[0].json(),
            serde_json::json!({"sender": "SLTGRD", "to": "919812345678", "message": sms_of(&n)})
        );
    }

    #[tokio::test]
    async fn sms_is_cut_to_160_characters_without_splitting_a_character() {
        let gateway = receiver(StatusCode::OK).await;
        let channel = json_gateway_at(&gateway.url, &["919812345678"]);
        let mut n = notification(Event::Opened);
        // Malayalam letters are three bytes each in UTF-8: a byte cut would break one.
        n.short_text = "ഡോക്ടർ ആശയുടെ സ്ലോട്ട് 5 രണ്ടുതവണ ബുക്ക് ചെയ്തു. ".repeat(6);

        channel.deliver(&n).await.unwrap();

        let sent = received_message(&gateway.received()[0]);
        assert_eq!(sent.chars().count(), 160);
        let reference = format!("… ref {}", n.reference());
        assert!(
            sent.ends_with(&reference),
            "the reference is never cut: {sent}"
        );
        assert!(n.short_text.starts_with(sent.trim_end_matches(&reference)));
        assert_eq!(
            sms_body("short and\nsweet", "7K3Q9X"),
            "short and sweet ref 7K3Q9X"
        );
    }

    fn received_message(request: &Received) -> String {
        request.json()["message"].as_str().unwrap().to_owned()
    }

    /// What an SMS of `n` says: its short text and its reference.
    fn sms_of(n: &Notification) -> String {
        format!("{} ref {}", n.short_text, n.reference())
    }

    #[tokio::test]
    async fn sms_is_only_for_new_and_regressed_incidents() {
        let gateway = receiver(StatusCode::OK).await;
        let channel = json_gateway_at(&gateway.url, &["919812345678"]);
        assert!(
            channel.wants(&notification(Event::Opened))
                && channel.wants(&notification(Event::Regressed))
        );
        for event in [Event::Grew, Event::Resolved, Event::Reminder] {
            assert!(!channel.wants(&notification(event)), "{event:?}");
            // Even when asked to deliver it anyway, nobody's phone rings.
            channel.deliver(&notification(event)).await.unwrap();
        }
        assert!(gateway.received().is_empty());
    }

    #[tokio::test]
    async fn one_refused_number_does_not_keep_the_others_from_their_sms() {
        let gateway = receiver_answering(
            |r| match r.json()["to"].as_str() {
                Some("919800000001") => StatusCode::BAD_REQUEST,
                _ => StatusCode::OK,
            },
            Duration::ZERO,
        )
        .await;
        let channel = json_gateway_at(&gateway.url, &["919800000001", "919812345678"]);

        let error = channel
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();

        assert_eq!(
            gateway.received().len(),
            2,
            "the second number was still tried"
        );
        let DeliveryError::Permanent(message) = error else {
            panic!("a refused number is permanent: {error}");
        };
        assert_contains(
            &message,
            "1 of 2 numbers failed: …0001: the receiver answered 400",
        );
        assert!(
            !message.contains("919800000001"),
            "numbers are masked: {message}"
        );
    }

    #[tokio::test]
    async fn a_gateway_failing_for_one_number_temporarily_makes_the_whole_delivery_retryable() {
        let gateway = receiver_answering(
            |r| match r.json()["to"].as_str() {
                Some("919800000001") => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            Duration::ZERO,
        )
        .await;
        let channel = json_gateway_at(&gateway.url, &["919800000001", "919812345678"]);
        let error = channel
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Transient(_)), "{error}");
    }

    #[tokio::test]
    async fn json_template_fills_placeholders_json_escaped_once() {
        let gateway = receiver(StatusCode::ACCEPTED).await;
        let channel = channel(&format!(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "gateway"
            preset = "template"
            url = "{}/v2/sms"
            api_key_env = "GATEWAY_KEY"
            api_key_header = "X-Api-Key"
            body = '{{"route": "T", "numbers": "{{to}}", "text": "{{message}}", "ref": "{{id}}"}}'
            to = ["+919812345678"]
            "#,
            gateway.url
        ));
        let mut n = notification(Event::Opened);
        n.short_text = r#"Slot "5" \ {id} booked twice"#.to_owned();

        channel.deliver(&n).await.unwrap();

        let request = &gateway.received()[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-api-key"), "gateway-key");
        assert_eq!(
            request.json(),
            serde_json::json!({
                "route": "T",
                "numbers": "+919812345678",
                "text": sms_of(&n),
                "ref": n.id,
            })
        );
    }

    #[tokio::test]
    async fn form_template_fills_placeholders_form_encoded() {
        let gateway = receiver(StatusCode::OK).await;
        let channel = channel(&format!(
            r#"[[alerts.channels]]
            kind = "sms"
            name = "textlocal"
            preset = "template"
            method = "put"
            content_type = "form"
            url = "{}/send/"
            body = "sender=SLTGRD&numbers={{to}}&message={{message}}&custom={{id}}"
            to = ["919812345678"]
            "#,
            gateway.url
        ));
        let mut n = notification(Event::Opened);
        n.short_text = "slot 5 & token A1-006 = twice? 100% ഡോക്ടർ+".to_owned();

        channel.deliver(&n).await.unwrap();

        let request = &gateway.received()[0];
        assert_eq!(request.method, "PUT");
        assert_eq!(
            request.header("content-type"),
            "application/x-www-form-urlencoded"
        );
        let form = request.form();
        assert_eq!(form.len(), 4, "{form:?}");
        assert_eq!(form["sender"], "SLTGRD");
        assert_eq!(form["numbers"], "919812345678");
        assert_eq!(form["message"], sms_of(&n));
        assert_eq!(form["custom"], n.id);
    }

    // -------------------------------------------------------------------- email

    #[test]
    fn email_html_escapes_whatever_the_text_holds() {
        let mut n = notification(Event::Opened);
        n.subject = "2 bookings <b>now</b>".to_owned();
        let html = email_html(&n);
        assert_contains(
            &html,
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co",
        );
        assert_contains(&html, "<h2>2 bookings &lt;b&gt;now&lt;/b&gt;</h2>");
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert_eq!(escape_html("it's"), "it&#39;s");
    }

    #[test]
    fn a_message_id_is_made_from_any_notification_id() {
        assert_eq!(message_id_local_part("ntf-kochi-0007"), "ntf-kochi-0007");
        assert_eq!(
            message_id_local_part("kochi/2026-12-01#3 <x>"),
            "kochi.2026-12-01.3.x"
        );
        assert_eq!(message_id_local_part("@@"), "slotguard");
    }

    /// `tests/smtp_sink.py`, a real SMTP server (aiosmtpd) on 127.0.0.1, killed when
    /// this is dropped.
    struct SmtpSink {
        port: u16,
        mail: PathBuf,
        _dir: tempfile::TempDir,
        _child: tokio::process::Child,
    }

    const SINK_NEEDS: &str = "the email tests need python3 with the aiosmtpd package: \
                              pip install aiosmtpd";

    async fn smtp_sink(options: &[&str]) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let mail = dir.path().join("mail");
        let stderr_path = dir.path().join("sink.stderr");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg("0")
            .arg(&mail)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start python3 ({e}); {SINK_NEEDS}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("tests/smtp_sink.py did not say READY in 30 s; {SINK_NEEDS}")
            });
        let port = match first {
            Ok(Some(line)) if line.starts_with("READY ") => line[6..].trim().parse().unwrap(),
            other => {
                let _ = child.wait().await;
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("tests/smtp_sink.py did not start ({other:?}):\n{stderr}\n{SINK_NEEDS}");
            }
        };
        SmtpSink {
            port,
            mail,
            _dir: dir,
            _child: child,
        }
    }

    /// What the sink received: each message's raw text and its decoded summary.
    struct Mail {
        raw: String,
        summary: serde_json::Value,
    }

    impl Mail {
        fn header(&self, name: &str) -> String {
            self.summary["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
                .unwrap_or_else(|| panic!("no {name} header in:\n{}", self.raw))[1]
                .as_str()
                .unwrap()
                .to_owned()
        }

        fn part(&self, content_type: &str) -> String {
            self.summary["parts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["contentType"] == content_type)
                .unwrap_or_else(|| panic!("no {content_type} part in:\n{}", self.raw))["content"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    }

    impl SmtpSink {
        fn received(&self) -> Vec<Mail> {
            let Ok(entries) = std::fs::read_dir(&self.mail) else {
                return Vec::new();
            };
            let mut paths: Vec<PathBuf> = entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect();
            paths.sort();
            paths
                .into_iter()
                .map(|eml| Mail {
                    raw: std::fs::read_to_string(&eml).unwrap(),
                    summary: serde_json::from_str(
                        &std::fs::read_to_string(eml.with_extension("json")).unwrap(),
                    )
                    .unwrap(),
                })
                .collect()
        }

        fn email_channel(&self, extra: &str) -> Box<dyn Channel> {
            email_channel_on(self.port, extra)
        }
    }

    fn email_channel_on(port: u16, extra: &str) -> Box<dyn Channel> {
        channel(&format!(
            r#"[[alerts.channels]]
            kind = "email"
            name = "clinic-mail"
            smtp_host = "127.0.0.1"
            smtp_port = {port}
            from = "Slotguard <slotguard@clinic.example>"
            to = ["ops@clinic.example", "owner@clinic.example"]
            {extra}
            "#
        ))
    }

    #[tokio::test]
    async fn email_arrives_as_text_and_html_with_the_notification_id() {
        let sink = smtp_sink(&[]).await;
        let channel = sink.email_channel("");
        let n = notification(Event::Opened);
        assert!(
            channel.wants(&notification(Event::Resolved))
                && channel.wants(&notification(Event::Reminder))
        );

        channel
            .deliver(&n)
            .await
            .expect("the sink accepts the message");

        let mail = sink.received();
        assert_eq!(mail.len(), 1, "exactly one message");
        let mail = &mail[0];
        assert_eq!(
            mail.summary["rcptTos"],
            serde_json::json!(["ops@clinic.example", "owner@clinic.example"])
        );
        assert_eq!(mail.header("From"), "Slotguard <slotguard@clinic.example>");
        assert_eq!(
            mail.header("To"),
            "ops@clinic.example, owner@clinic.example"
        );
        assert_eq!(mail.header("Subject"), n.subject);
        assert_eq!(mail.header("X-Slotguard-Notification-Id"), n.id);
        assert_eq!(mail.header("X-Slotguard-Event"), "opened");
        assert_eq!(
            mail.header("Message-ID"),
            format!("<{}@clinic.example>", n.id)
        );
        assert_contains(&mail.header("Content-Type"), "multipart/alternative");
        assert_contains(
            &mail.raw,
            &format!("X-Slotguard-Notification-Id: {}\r\n", n.id),
        );

        let text = mail.part("text/plain");
        assert_contains(
            &text,
            "Slot 5 of dr-asha on 2026-12-01 has 2 occupying appointments.",
        );
        assert_contains(&text, "Booked via: <script>alert(\"x\")</script> & co");
        let html = mail.part("text/html");
        assert_contains(
            &html,
            "Booked via: &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;",
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            !mail.raw.contains("Anu Thomas"),
            "incidents stay out of email"
        );
    }

    #[tokio::test]
    async fn email_logs_in_with_credentials_from_the_environment() {
        let sink = smtp_sink(&["--auth", "slotguard:mail-secret"]).await;
        let channel = sink.email_channel(
            "username_env = \"SLOTGUARD_SMTP_USER\"\npassword_env = \"SLOTGUARD_SMTP_PASSWORD\"",
        );
        channel.deliver(&notification(Event::Opened)).await.unwrap();
        assert_eq!(sink.received().len(), 1);
    }

    #[tokio::test]
    async fn email_refused_by_a_server_requiring_login_is_a_permanent_failure() {
        let sink = smtp_sink(&["--auth", "slotguard:another-secret"]).await;
        let channel = sink.email_channel(
            "username_env = \"SLOTGUARD_SMTP_USER\"\npassword_env = \"SLOTGUARD_SMTP_PASSWORD\"",
        );
        let error = channel
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DeliveryError::Permanent(m) if m.contains("535")),
            "{error}"
        );
        assert!(sink.received().is_empty());
    }

    #[tokio::test]
    async fn email_refused_with_550_is_a_permanent_failure() {
        let sink = smtp_sink(&["--reject-rcpt", "550 5.1.1 No such user here"]).await;
        let error = sink
            .email_channel("")
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DeliveryError::Permanent(m) if m.contains("550") && m.contains("No such user here")),
            "{error}"
        );
        assert!(sink.received().is_empty());
    }

    #[tokio::test]
    async fn email_deferred_with_451_is_a_transient_failure() {
        let sink = smtp_sink(&["--reject-rcpt", "451 4.3.0 Try again later"]).await;
        let error = sink
            .email_channel("")
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DeliveryError::Transient(m) if m.contains("451")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn email_with_no_smtp_server_listening_is_a_transient_failure() {
        let error = email_channel_on(closed_port(), "")
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Transient(_)), "{error}");
    }

    /// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `dir`:
    /// (certificate, key).
    fn self_signed(dir: &std::path::Path) -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    async fn tls_sink(dir: &std::path::Path, implicit: bool) -> SmtpSink {
        let (cert, key) = self_signed(dir);
        let mut options = vec!["--tls-cert", &cert, "--tls-key", &key];
        if implicit {
            options.push("--implicit-tls");
        }
        smtp_sink(&options).await
    }

    #[tokio::test]
    async fn email_over_starttls_is_encrypted_and_the_certificate_checked_against_ca_file() {
        let certs = tempfile::tempdir().unwrap();
        let sink = tls_sink(certs.path(), false).await;
        let ca_file = certs.path().join("cert.pem");
        let channel = sink.email_channel(&format!(
            "tls = \"starttls\"\nca_file = \"{}\"",
            ca_file.display()
        ));

        channel.deliver(&notification(Event::Opened)).await.unwrap();

        let mail = sink.received();
        assert_eq!(mail.len(), 1);
        let tls = mail[0].summary["tls"].as_str().unwrap_or("plain text");
        assert!(tls.starts_with("TLSv1."), "carried by {tls}");
    }

    #[tokio::test]
    async fn email_over_implicit_tls_is_encrypted_from_the_first_byte() {
        let certs = tempfile::tempdir().unwrap();
        let sink = tls_sink(certs.path(), true).await;
        let channel = sink.email_channel(&format!(
            "tls = \"tls\"\nca_file = \"{}\"",
            certs.path().join("cert.pem").display()
        ));

        channel.deliver(&notification(Event::Opened)).await.unwrap();

        let mail = sink.received();
        assert_eq!(mail.len(), 1);
        assert!(
            mail[0].summary["tls"].as_str().is_some(),
            "{}",
            mail[0].summary
        );
    }

    #[tokio::test]
    async fn a_certificate_nobody_vouches_for_is_refused_and_nothing_is_sent() {
        let certs = tempfile::tempdir().unwrap();
        let sink = tls_sink(certs.path(), false).await;
        // Certificates are verified by default: without ca_file, the self-signed
        // certificate is unknown.
        let error = sink
            .email_channel("tls = \"starttls\"")
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, DeliveryError::Permanent(m) if m.contains("certificate") && m.contains("ca_file")),
            "{error}"
        );
        assert!(sink.received().is_empty());
    }

    #[tokio::test]
    async fn a_server_offering_no_starttls_gets_no_plain_text_when_tls_is_asked() {
        let sink = smtp_sink(&[]).await;
        let error = sink
            .email_channel("tls = \"starttls\"")
            .deliver(&notification(Event::Opened))
            .await
            .unwrap_err();
        assert!(matches!(error, DeliveryError::Permanent(_)), "{error}");
        assert!(sink.received().is_empty());
    }

    #[test]
    fn build_refuses_a_ca_file_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let mail = |extra: &str| {
            format!(
                "[[alerts.channels]]\nkind = \"email\"\nname = \"mail\"\nsmtp_host = \"mail.clinic.example\"\n\
                 from = \"slotguard@clinic.example\"\nto = [\"ops@clinic.example\"]\n{extra}\n"
            )
        };
        assert_contains(
            &refusal(&mail("ca_file = \"/nonexistent/ca.pem\"")),
            "ca_file \"/nonexistent/ca.pem\" cannot be read",
        );
        assert_contains(
            &refusal(&mail(&format!("ca_file = \"{}\"", not_pem.display()))),
            "holds no PEM certificate",
        );
        assert_contains(
            &refusal(&mail("tls = \"none\"\nca_file = \"/etc/ssl/ca.pem\"")),
            "ca_file is only used with tls = \"starttls\" or \"tls\"",
        );
        assert_contains(
            &toml::from_str::<File>(&mail("tls = \"ssl\""))
                .err()
                .expect("an unknown tls is refused")
                .to_string(),
            "unknown variant `ssl`, expected one of `starttls`, `tls`, `none`",
        );
    }

    // ---------------------------------------------------------------------- log

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn log_channel_writes_one_warning_line_without_the_incidents() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let channel = channel("[[alerts.channels]]\nkind = \"log\"\nname = \"log\"\n");
        let n = notification(Event::Regressed);

        channel
            .deliver(&n)
            .await
            .expect("the log channel always succeeds");

        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(output.lines().count(), 1, "{output}");
        assert_contains(&output, "WARN");
        assert_contains(&output, &n.subject);
        assert_contains(&output, &n.id);
        assert_contains(&output, "event=\"regressed\"");
        assert!(!output.contains("Anu Thomas"), "{output}");
    }
}
