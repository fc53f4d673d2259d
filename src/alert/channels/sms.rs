//! The SMS channel: Twilio, a JSON gateway, or a template of the clinic's own gateway;
//! one short message per number, only for new and regressed incidents.

use super::*;

pub(super) struct SmsChannel {
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

pub(super) fn sms(config: &SmsConfig, env: Env, found: &mut Problems) -> Option<SmsChannel> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::channels::testkit::*;

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
}
