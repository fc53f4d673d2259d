//! The email channel: text and HTML over SMTP (STARTTLS, implicit TLS or, on loopback
//! only, plain), `Message-ID` made from the notification id.

use askama::Template;

use super::*;

pub(super) struct EmailChannel {
    name: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

pub(super) fn email(config: &EmailConfig, env: Env, found: &mut Problems) -> Option<EmailChannel> {
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
        let html = match &n.html {
            Some(html) => html.clone(),
            None => email_html(n).map_err(not_composed)?,
        };
        builder
            .multipart(MultiPart::alternative_plain_html(
                email_text(n).map_err(not_composed)?,
                html,
            ))
            .map_err(not_composed)
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

/// A message that cannot be put together now will not be next time either.
fn not_composed(e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Permanent(format!("could not compose the email: {e}"))
}

/// The text part: the notification's text, signed with what names it.
#[derive(Template)]
#[template(path = "notification_email.txt")]
struct EmailText<'a> {
    n: &'a Notification,
    event: &'static str,
}

fn email_text(n: &Notification) -> askama::Result<String> {
    EmailText {
        n,
        event: event_name(n.event),
    }
    .render()
}

/// The HTML part. Everything in it comes from data (doctor names, clinic ids and
/// whatever else a booking app let through), so every piece is escaped.
#[derive(Template)]
#[template(path = "notification_email.html", escape = "mail")]
struct EmailHtml<'a> {
    n: &'a Notification,
    event: &'static str,
}

fn email_html(n: &Notification) -> askama::Result<String> {
    EmailHtml {
        n,
        event: event_name(n.event),
    }
    .render()
}

/// The escaper of HTML sent by email (`escape = "mail"`, askama.toml): named
/// references (`&lt;`, `&quot;`), the form received mails have always carried and
/// that reads plainly in a message's source; askama's own escaper writes numeric ones
/// (`&#60;`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MailHtml;

impl askama::filters::Escaper for MailHtml {
    fn write_escaped_str<W: std::fmt::Write>(&self, mut dest: W, text: &str) -> std::fmt::Result {
        dest.write_str(&escape_html(text))
    }
}

/// Escapes text for HTML element content and attribute values.
fn escape_html(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, process::Stdio};

    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;
    use crate::alert::channels::testkit::*;

    // -------------------------------------------------------------------- email

    #[test]
    fn email_html_escapes_whatever_the_text_holds() {
        let mut n = notification(Event::Opened);
        n.subject = "2 bookings <b>now</b>".to_owned();
        let html = email_html(&n).unwrap();
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
}
