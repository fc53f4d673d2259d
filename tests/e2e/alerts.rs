//! Stories of the alerts people receive: a duplicate told through a webhook, email
//! over STARTTLS, SMS and Sentry, each receiver a real local server; each clinic's
//! alerts following its own routes; Sentry's 429 honoured; dead letters retried on
//! demand (API, dashboard, CLI) and delivered once; grouped messages that say what is
//! true of each incident; and a server with no channel that still logs incidents.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slotguard::clock::Clock;
use slotguard::domain::{Role, StaffRole};

use crate::detection::{document, incidents, put};
use crate::support::*;

stories! {
    alerts::a_duplicate_reaches_webhook_email_over_starttls_sms_and_sentry_with_the_plans_fields,
    alerts::two_clinics_alerts_follow_their_own_routes,
    alerts::a_sentry_receiver_answering_429_with_retry_after_is_retried_after_it,
    alerts::a_dead_letter_retried_by_the_api_is_delivered_once,
    alerts::dead_letters_retried_from_the_dashboard_and_the_cli_are_delivered_once,
    alerts::a_grouped_message_about_one_new_and_one_resolved_incident_says_so_for_each,
    alerts::a_server_with_no_channels_logs_the_incident,
}

/// `document` at another clinic.
fn document_at(clinic: &str, id: &str, slot: u32) -> Value {
    let mut doc = document(id, slot, "Pending", 0);
    doc["clinicId"] = json!(clinic);
    doc
}

fn webhook_channel(name: &str, receiver: &Receiver) -> String {
    format!(
        "[[alerts.channels]]\nkind = \"webhook\"\nname = \"{name}\"\nurl = \"{}\"\n\n",
        receiver.url
    )
}

/// An SMS channel through a JSON gateway (`{sender, to, message}`), as MSG91 takes it.
fn sms_channel(name: &str, gateway: &Receiver, to: &str) -> String {
    format!(
        "[[alerts.channels]]\nkind = \"sms\"\nname = \"{name}\"\npreset = \"json\"\n\
         url = \"{}\"\nfrom = \"SLTGRD\"\napi_key_env = \"SMS_KEY\"\nto = [\"{to}\"]\n\n",
        gateway.url
    )
}

/// What a `Receiver` got, as (Idempotency-Key, body).
fn posts(receiver: &Receiver) -> Vec<(Option<String>, Value)> {
    receiver.received.lock().unwrap().clone()
}

/// The documents name their patients `Patient <id>`; no alert may.
fn no_patient_in(what: &str, text: &str) {
    assert!(!text.contains("Patient "), "{what} names a patient: {text}");
}

pub async fn a_duplicate_reaches_webhook_email_over_starttls_sms_and_sentry_with_the_plans_fields(
    backend: Backend,
) {
    let (webhook, gateway) = (Receiver::start().await, Receiver::start().await);
    let smtp = SmtpSink::start_starttls().await;
    let sentry = SentryReceiver::start(vec![]).await;
    let config = format!(
        "{}[[alerts.channels]]\nkind = \"email\"\nname = \"clinic-mail\"\nsmtp_host = \"127.0.0.1\"\n\
         smtp_port = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
         from = \"slotguard <slotguard@clinic.example>\"\nto = [\"ops@clinic.example\"]\n\n\
         {}[[alerts.channels]]\nkind = \"sentry\"\nname = \"sentry\"\nenvironment = \"clinic-test\"\n",
        webhook_channel("ops", &webhook),
        smtp.port,
        smtp.ca_file.as_ref().unwrap().display(),
        sms_channel("admin-sms", &gateway, "+919812345678"),
    );
    let dsn = sentry.dsn();
    let env = [("SMS_KEY", "gateway-key"), ("SENTRY_DSN", dsn.as_str())];
    let Some(app) = spawn_app_with(backend, alert_options(&config, &env, Duration::ZERO)).await
    else {
        return;
    };

    put(&app, &document("doc-a", 5, "Pending", 0)).await;
    put(&app, &document("doc-b", 5, "Confirmed", 1)).await;
    eventually(
        15,
        "the webhook, the email, the SMS and the Sentry event",
        || async {
            (webhook.messages().len() == 1
                && smtp.messages().len() == 1
                && posts(&gateway).len() == 1
                && sentry.accepted().len() == 1)
                .then_some(())
        },
    )
    .await;
    let incident = incidents(&app).await[0].clone();
    let incident_id = incident["id"].as_str().unwrap();

    let hook = &webhook.messages()[0];
    assert_eq!(hook["event"], "opened");
    assert_eq!(hook["incidents"][0]["id"], incident_id);
    assert_eq!(hook["incidents"][0]["tokens"], json!(["A1-006"]));
    assert!(
        hook["text"]
            .as_str()
            .unwrap()
            .contains(&format!("[NEW] slot 5 of doctor dr-asha on 2026-12-01: 2 appointments (kloqo:doc-a, kloqo:doc-b), tokens A1-006; incident {incident_id}")),
        "{hook}"
    );
    let reference = hook["reference"].as_str().unwrap().to_owned();
    assert_eq!(reference.len(), 6);

    let mail = &smtp.messages()[0];
    assert!(
        mail["tls"].as_str().unwrap_or("").starts_with("TLSv1."),
        "the email travelled over STARTTLS: {mail}"
    );
    assert_eq!(mail["rcptTos"], json!(["ops@clinic.example"]));
    let text = mail["parts"][0]["content"].as_str().unwrap();
    assert!(text.contains("[NEW] slot 5 of doctor dr-asha"), "{text}");
    assert!(text.contains(&format!("ref {reference}")), "{text}");

    let (_, sms) = &posts(&gateway)[0];
    assert_eq!(sms["to"], "+919812345678");
    assert_eq!(
        sms["message"],
        format!("slotguard kochi: NEW slot 5 dr dr-asha 2026-12-01 ref {reference}")
    );

    let envelope = &sentry.accepted()[0];
    assert_eq!(envelope.path, "/api/42/envelope/");
    assert_eq!(envelope.auth["sentry_key"], sentry.key);
    assert_eq!(envelope.auth["sentry_version"], "7");
    assert!(envelope.auth["sentry_client"].starts_with("slotguard/"));
    assert_eq!(envelope.content_type, "application/x-sentry-envelope");
    let event = envelope.event();
    assert_eq!(
        envelope.header["event_id"]
            .as_str()
            .unwrap()
            .replace('-', ""),
        event["event_id"].as_str().unwrap().replace('-', ""),
        "the envelope names its event"
    );
    // Sentry reads an event without a level as an error; sentry-types writes none then.
    assert_eq!(
        event["level"].as_str().unwrap_or("error"),
        "error",
        "{event}"
    );
    assert_eq!(event["message"], "Duplicate booking detected");
    assert_eq!(event["environment"], "clinic-test");
    let extra = &event["extra"];
    assert_eq!(
        (
            &extra["clinic"],
            &extra["doctor"],
            &extra["slot"],
            &extra["token"],
            &extra["count"]
        ),
        (
            &json!("kochi"),
            &json!("dr-asha"),
            &json!(5),
            &json!("A1-006"),
            &json!(2)
        ),
        "{event}"
    );
    assert_eq!(event["tags"]["clinic"], "kochi");
    assert_eq!(event["tags"]["kind"], "slot");
    assert_eq!(event["tags"]["found_by"], "realtime");
    let fingerprint = json!(["slotguard-duplicate-booking", incident_id]);
    assert_eq!(event["fingerprint"], fingerprint);

    // New members: Sentry hears of it under the same fingerprint; nobody's phone rings.
    put(&app, &document("doc-c", 5, "Pending", 2)).await;
    eventually(10, "the grown incident's Sentry event", || async {
        (sentry.accepted().len() == 2 && webhook.messages().len() == 2).then_some(())
    })
    .await;
    let grew = sentry.accepted()[1].event().clone();
    assert_eq!(grew["tags"]["event"], "grew");
    assert_eq!(grew["extra"]["count"], 3);
    assert_eq!(
        grew["fingerprint"], fingerprint,
        "one incident, one Sentry issue"
    );
    assert_ne!(grew["event_id"], event["event_id"]);
    assert_eq!(posts(&gateway).len(), 1, "no SMS for new members");

    // Resolved, then back: a regression is Sentry's third event of the same issue.
    put(&app, &document("doc-b", 5, "Cancelled", 3)).await;
    put(&app, &document("doc-c", 5, "Cancelled", 3)).await;
    eventually(10, "the resolve's message", || async {
        (webhook.messages().len() == 3).then_some(())
    })
    .await;
    // A member changed after the resolve (by its own clock), so the duplicate is back.
    let mut back_again = document("doc-b", 5, "Pending", 0);
    back_again["updatedAt"] =
        json!({"_seconds": app.clock.now().timestamp() + 60, "_nanoseconds": 0});
    put(&app, &back_again).await;
    eventually(10, "the regression's Sentry event and SMS", || async {
        (sentry.accepted().len() == 3 && posts(&gateway).len() == 2).then_some(())
    })
    .await;
    let back = sentry.accepted()[2].event().clone();
    assert_eq!(back["tags"]["event"], "regressed");
    assert_eq!(back["fingerprint"], fingerprint);
    let (_, sms) = &posts(&gateway)[1];
    assert!(
        sms["message"]
            .as_str()
            .unwrap()
            .starts_with("slotguard kochi: BACK slot 5 dr dr-asha 2026-12-01 ref "),
        "{sms}"
    );

    for envelope in sentry.envelopes() {
        no_patient_in("a Sentry event", &envelope.event().to_string());
    }
    for message in webhook.messages() {
        no_patient_in("a webhook", &message.to_string());
    }
    no_patient_in("the email", &smtp.messages()[0].to_string());
}

pub async fn two_clinics_alerts_follow_their_own_routes(backend: Backend) {
    let (webhook, gateway) = (Receiver::start().await, Receiver::start().await);
    let sentry = SentryReceiver::start(vec![]).await;
    let config = format!(
        "{}{}{}[[alerts.channels]]\nkind = \"sentry\"\nname = \"sentry\"\n\n\
         [[alerts.routes]]\nclinics = [\"kochi\"]\nchannels = [\"kochi-admin\"]\n\n\
         [[alerts.routes]]\nclinics = [\"aluva\"]\nchannels = [\"aluva-admin\", \"sentry\"]\n",
        webhook_channel("ops", &webhook),
        sms_channel("kochi-admin", &gateway, "+919800000001"),
        sms_channel("aluva-admin", &gateway, "+919800000002"),
    );
    let dsn = sentry.dsn();
    let env = [("SMS_KEY", "gateway-key"), ("SENTRY_DSN", dsn.as_str())];
    let Some(app) = spawn_app_with(backend, alert_options(&config, &env, Duration::ZERO)).await
    else {
        return;
    };

    for (clinic, slot) in [("kochi", 5), ("aluva", 3)] {
        put(&app, &document_at(clinic, &format!("{clinic}-a"), slot)).await;
        put(&app, &document_at(clinic, &format!("{clinic}-b"), slot)).await;
    }
    eventually(15, "both clinics' messages", || async {
        (webhook.messages().len() == 2
            && posts(&gateway).len() == 2
            && sentry.accepted().len() == 1)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut sms: Vec<(String, String)> = posts(&gateway)
        .iter()
        .map(|(_, b)| {
            (
                b["to"].as_str().unwrap().to_owned(),
                b["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    sms.sort();
    assert_eq!(
        sms.len(),
        2,
        "one SMS per clinic, to that clinic's admin: {sms:?}"
    );
    assert_eq!(sms[0].0, "+919800000001");
    assert!(
        sms[0].1.starts_with("slotguard kochi: NEW slot 5 "),
        "{sms:?}"
    );
    assert_eq!(sms[1].0, "+919800000002");
    assert!(
        sms[1].1.starts_with("slotguard aluva: NEW slot 3 "),
        "{sms:?}"
    );

    let mut heard: Vec<String> = webhook
        .messages()
        .iter()
        .map(|m| m["clinicId"].as_str().unwrap().to_owned())
        .collect();
    heard.sort();
    assert_eq!(
        heard,
        ["aluva", "kochi"],
        "a channel no route names hears of every clinic"
    );
    let sentry_events = sentry.accepted();
    assert_eq!(sentry_events.len(), 1, "only aluva's route sends to Sentry");
    assert_eq!(sentry_events[0].event()["tags"]["clinic"], "aluva");

    let listed = app.get("/api/v1/notifications").await;
    let mut channels: Vec<(String, String)> = listed.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["clinicId"].as_str().unwrap().to_owned(),
                n["channel"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    channels.sort();
    let expected = [
        ("aluva", "aluva-admin"),
        ("aluva", "ops"),
        ("aluva", "sentry"),
        ("kochi", "kochi-admin"),
        ("kochi", "ops"),
    ]
    .map(|(c, n)| (c.to_owned(), n.to_owned()));
    assert_eq!(channels, expected);
}

pub async fn a_sentry_receiver_answering_429_with_retry_after_is_retried_after_it(
    backend: Backend,
) {
    let sentry = SentryReceiver::start(vec![(429, vec![("retry-after", "120")])]).await;
    let config = "[[alerts.channels]]\nkind = \"sentry\"\nname = \"sentry\"\n";
    let dsn = sentry.dsn();
    let Some(app) = spawn_app_with(
        backend,
        alert_options(config, &[("SENTRY_DSN", dsn.as_str())], Duration::ZERO),
    )
    .await
    else {
        return;
    };

    put(&app, &document("doc-a", 5, "Pending", 0)).await;
    put(&app, &document("doc-b", 5, "Pending", 0)).await;
    eventually(10, "the first, refused, envelope", || async {
        (!sentry.envelopes().is_empty()).then_some(())
    })
    .await;
    let refused_at = app.clock.now();
    let pending = eventually(10, "the refusal to be recorded", || async {
        let listed = app.get("/api/v1/notifications?state=pending").await;
        listed.body["notifications"]
            .as_array()
            .and_then(|n| n.first().cloned())
            .filter(|n| n["attempts"] == 1)
    })
    .await;
    assert!(
        pending["lastError"]
            .as_str()
            .unwrap()
            .contains("429 Too Many Requests, Retry-After: 120"),
        "{pending}"
    );
    let next: chrono::DateTime<chrono::Utc> =
        pending["nextAttemptAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        next - refused_at,
        chrono::Duration::seconds(120),
        "the next attempt is when the receiver said, not the 100 ms backoff"
    );

    // The dispatcher looks every 50 ms: the clock, not luck, holds the retry back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    app.clock.advance(chrono::Duration::seconds(119));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        sentry.envelopes().len(),
        1,
        "nothing sent before Retry-After"
    );

    app.clock.advance(chrono::Duration::seconds(2));
    eventually(10, "the retry after Retry-After", || async {
        (sentry.accepted().len() == 1).then_some(())
    })
    .await;
    let envelopes = sentry.envelopes();
    assert_eq!(envelopes.len(), 2);
    assert_eq!(
        envelopes[0].event()["event_id"],
        envelopes[1].event()["event_id"],
        "the retry is the same event, so Sentry keeps one"
    );
    let delivered = eventually(10, "the delivery to be recorded", || async {
        let listed = app.get("/api/v1/notifications?state=delivered").await;
        listed.body["notifications"]
            .as_array()
            .and_then(|n| n.first().cloned())
    })
    .await;
    assert_eq!(delivered["attempts"], 2);
}

/// The dead deliveries listed by the API.
async fn dead_letters(app: &TestApp) -> Vec<Value> {
    let listed = app.get("/api/v1/notifications?state=dead").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    listed.body["notifications"].as_array().unwrap().clone()
}

pub async fn a_dead_letter_retried_by_the_api_is_delivered_once(backend: Backend) {
    let (ops, backup) = (
        Receiver::answering(400).await,
        Receiver::answering(400).await,
    );
    let config = format!(
        "{}{}",
        webhook_channel("ops", &ops),
        webhook_channel("backup", &backup)
    );
    let Some(app) = spawn_app_with(backend, alert_options(&config, &[], Duration::ZERO)).await
    else {
        return;
    };
    put(&app, &document("doc-a", 5, "Pending", 0)).await;
    put(&app, &document("doc-b", 5, "Pending", 0)).await;
    let dead = eventually(10, "two dead letters", || async {
        let dead = dead_letters(&app).await;
        (dead.len() == 2).then_some(dead)
    })
    .await;
    let id = dead[0]["id"].as_str().unwrap().to_owned();
    let retry = format!("/api/v1/notifications/{id}/retry");

    let ambiguous = app.post(&retry, json!({})).await;
    assert_eq!(
        ambiguous.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        ambiguous.text
    );
    assert_eq!(ambiguous.body["error"]["details"]["field"], "channel");
    assert!(ambiguous.text.contains("backup, ops"), "{}", ambiguous.text);
    let unknown = app
        .post("/api/v1/notifications/no-such-id/retry", json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let elsewhere = app.key(Role::Clinic, &["aluva"]).await;
    let refused = app
        .post_as(&elsewhere, &format!("{retry}?channel=ops"), json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);

    ops.answer(200);
    let kochi = app.key(Role::Clinic, &["kochi"]).await;
    let queued = app.post_as(&kochi, &retry, json!({"channel": "ops"})).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.text);
    let row = &queued.body["notifications"][0];
    assert_eq!(
        (row["channel"].as_str(), row["state"].as_str()),
        (Some("ops"), Some("pending"))
    );
    assert_eq!(row["retryFrom"], 1);
    assert!(row["retriedBy"].as_str().is_some_and(|by| !by.is_empty()));

    eventually(10, "the retried delivery", || async {
        let listed = app.get("/api/v1/notifications?state=delivered").await;
        (listed.body["notifications"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = posts(&ops);
    assert_eq!(sent.len(), 2, "the refused attempt and the one delivery");
    assert!(sent
        .iter()
        .all(|(key, _)| key.as_deref() == Some(id.as_str())));
    let again = app.post(&format!("{retry}?channel=ops"), json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.body["error"]["code"], "not_dead_letter");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posts(&ops).len(), 2, "delivered once");

    let still_dead = dead_letters(&app).await;
    assert_eq!(still_dead.len(), 1);
    assert_eq!(still_dead[0]["channel"], "backup");
    assert_eq!(posts(&backup).len(), 1, "the other channel was not retried");
    let detail = app
        .get(&format!(
            "/api/v1/incidents/{}",
            incidents(&app).await[0]["id"].as_str().unwrap()
        ))
        .await;
    let ops_history: Vec<&Value> = detail.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "ops")
        .collect();
    let outcomes: Vec<&str> = ops_history[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["permanent", "delivered"],
        "every attempt is kept"
    );
}

pub async fn dead_letters_retried_from_the_dashboard_and_the_cli_are_delivered_once(
    backend: Backend,
) {
    let (board, cli) = (
        Receiver::answering(400).await,
        Receiver::answering(400).await,
    );
    let config = format!(
        "{}{}",
        webhook_channel("board", &board),
        webhook_channel("cli", &cli)
    );
    let Some(app) = spawn_app_with(backend, alert_options(&config, &[], Duration::ZERO)).await
    else {
        return;
    };
    put(&app, &document("doc-a", 5, "Pending", 0)).await;
    put(&app, &document("doc-b", 5, "Pending", 0)).await;
    let dead = eventually(10, "two dead letters", || async {
        let dead = dead_letters(&app).await;
        (dead.len() == 2).then_some(dead)
    })
    .await;
    let id = dead[0]["id"].as_str().unwrap().to_owned();
    let incident = incidents(&app).await[0]["id"].as_str().unwrap().to_owned();
    let page = format!("/incidents/{incident}");
    let action = format!("/incidents/{incident}/notifications/{id}/board/retry");

    app.staff_user("viewer@clinic.example", StaffRole::Viewer, &[])
        .await;
    let viewer = app.log_in("viewer@clinic.example").await;
    assert!(!app.page(Some(&viewer), &page).await.text.contains(&action));
    let refused = app
        .submit(&viewer, &action, &[("csrf", viewer.csrf.as_str())], &[])
        .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "a viewer cannot retry"
    );

    app.staff_user("kochi@clinic.example", StaffRole::Clinic, &["kochi"])
        .await;
    let staff = app.log_in("kochi@clinic.example").await;
    let shown = app.page(Some(&staff), &page).await;
    assert!(
        shown.text.contains(&format!("action=\"{action}\"")),
        "a Retry form beside the dead letter"
    );
    board.answer(200);
    let retried = app
        .submit(&staff, &action, &[("csrf", staff.csrf.as_str())], &[])
        .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.text);
    assert_eq!(retried.location(), format!("{page}?retried=queued"));
    eventually(10, "the dashboard's retry delivered", || async {
        (posts(&board).len() == 2).then_some(())
    })
    .await;
    let after = app
        .page(Some(&staff), &format!("{page}?retried=queued"))
        .await;
    assert!(after.text.contains("The dead letter is queued again"));

    cli.answer(200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
        .args([
            "alerts",
            "retry",
            "--dead",
            "--channel",
            "cli",
            "--database",
        ])
        .arg(&app.db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{id}\tcli\tkochi\n")
    );
    eventually(10, "the CLI's retry delivered", || async {
        (posts(&cli).len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (posts(&board).len(), posts(&cli).len()),
        (2, 2),
        "each delivered once"
    );
    assert!(dead_letters(&app).await.is_empty());
    let nothing = std::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
        .args(["alerts", "retry", "--dead", "--database"])
        .arg(&app.db.url)
        .output()
        .unwrap();
    assert!(nothing.status.success());
    assert!(nothing.stdout.is_empty(), "nothing dead is left to retry");
}

pub async fn a_grouped_message_about_one_new_and_one_resolved_incident_says_so_for_each(
    backend: Backend,
) {
    let (webhook, gateway) = (Receiver::start().await, Receiver::start().await);
    let config = format!(
        "{}{}",
        webhook_channel("ops", &webhook),
        sms_channel("admin-sms", &gateway, "+919812345678")
    );
    let group_wait = Duration::from_secs(30);
    let Some(app) = spawn_app_with(
        backend,
        alert_options(&config, &[("SMS_KEY", "gateway-key")], group_wait),
    )
    .await
    else {
        return;
    };
    put(&app, &document("a", 5, "Pending", 0)).await;
    put(&app, &document("b", 5, "Pending", 0)).await;
    eventually(10, "the slot 5 incident", || async {
        (incidents(&app).await.len() == 1).then_some(())
    })
    .await;
    app.clock.advance(chrono::Duration::seconds(31));
    eventually(10, "the first message", || async {
        (webhook.messages().len() == 1 && posts(&gateway).len() == 1).then_some(())
    })
    .await;

    // Within one groupWait: slot 5's duplicate goes away, slot 8 gets one.
    put(&app, &document("b", 5, "Cancelled", 1)).await;
    put(&app, &document("c", 8, "Pending", 1)).await;
    put(&app, &document("d", 8, "Pending", 1)).await;
    eventually(10, "slot 5 resolved and slot 8 open", || async {
        let all = incidents(&app).await;
        let state = |key: &str| {
            all.iter()
                .find(|i| i["key"] == key)
                .map(|i| i["state"].as_str().unwrap().to_owned())
        };
        (state("5").as_deref() == Some("resolved") && state("8").as_deref() == Some("open"))
            .then_some(())
    })
    .await;
    app.clock.advance(chrono::Duration::seconds(31));
    eventually(10, "the grouped message", || async {
        (webhook.messages().len() == 2 && posts(&gateway).len() == 2).then_some(())
    })
    .await;

    let message = &webhook.messages()[1];
    assert_eq!(message["event"], "opened");
    assert_eq!(
        message["subject"],
        "slotguard: 1 duplicate booking at clinic kochi"
    );
    let lines: Vec<&str> = message["text"].as_str().unwrap().lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "the subject and one line per incident: {lines:?}"
    );
    assert!(
        lines[1].starts_with("[NEW] slot 8 of doctor dr-asha on 2026-12-01: 2 appointments"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with(
            "[RESOLVED] slot 5 of doctor dr-asha on 2026-12-01: no longer double-booked"
        ),
        "{lines:?}"
    );
    let told: Vec<(&str, &str, &str)> = message["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap(),
                i["event"].as_str().unwrap(),
                i["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        told,
        [("8", "opened", "open"), ("5", "resolved", "resolved")]
    );

    let reference = message["reference"].as_str().unwrap();
    assert_ne!(webhook.messages()[0]["reference"], reference);
    let (_, sms) = &posts(&gateway)[1];
    assert_eq!(
        sms["message"],
        format!(
            "slotguard kochi: NEW slot 8 dr dr-asha 2026-12-01; RESOLVED slot 5 dr dr-asha 2026-12-01 ref {reference}"
        )
    );
}

pub async fn a_server_with_no_channels_logs_the_incident(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let key = admin_key_for(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slotguard.toml");
    std::fs::write(
        &config,
        "[detect]\nrescan_seconds = 0.5\n\n[alerts]\ngroup_wait_seconds = 0\n",
    )
    .unwrap();
    let (server, log) =
        ServerProcess::start_logged(&db.url, &["--config", config.to_str().unwrap()], &[]).await;
    let warned = log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("WARN") && l.contains("no alert channels are configured"));
    assert!(
        warned,
        "serve warns at start:\n{}",
        log.lock().unwrap().join("\n")
    );

    let client = client();
    for id in ["doc-a", "doc-b"] {
        let doc = document(id, 5, "Pending", 0);
        let stored = send(
            &client,
            Method::PUT,
            &format!("{}/api/v1/watch/kloqo/appointments/{id}", server.base),
            Some(&key),
            Some(&doc),
            &[],
        )
        .await;
        assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);
    }
    let line = eventually(15, "the incident in the server log", || async {
        log.lock()
            .unwrap()
            .iter()
            .find(|l| {
                l.contains(
                    "duplicate booking NEW: slot 5 of doctor dr-asha on 2026-12-01 at clinic kochi",
                )
            })
            .cloned()
    })
    .await;
    assert!(line.contains("WARN"), "{line}");
    let listed = send(
        &client,
        Method::GET,
        &format!("{}/api/v1/incidents?clinicId=kochi", server.base),
        Some(&key),
        None,
        &[],
    )
    .await;
    let incident = listed.body["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        line.contains(&incident),
        "the line names the incident: {line}"
    );
    server.terminate().await;
    for l in log.lock().unwrap().iter() {
        no_patient_in("the server log", l);
    }
}
