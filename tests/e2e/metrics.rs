//! Stories of metrics: booking counts survive restarts and add up across servers,
//! `/api/v1/stats` gives the clinic's four numbers in its own time, and `/metrics`
//! is Prometheus text, behind an admin key or on its own listener.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slotguard::app::Options;
use slotguard::domain::Role;

use crate::support::*;

const CLINIC: &str = "kochi";
/// The day after [`DAY`]: advance bookings made on `DAY` are for it.
pub const TOMORROW: &str = "2026-12-02";

/// 09:00–21:00 in 10-minute slots: 72 slots, the last 11 kept for walk-ins.
pub fn long_day() -> Value {
    json!([{"from": "09:00", "to": "21:00"}])
}

pub async fn book(app: &TestApp, date: &str, slot: u32, patient: &str) -> Reply {
    app.post(
        "/api/v1/appointments",
        json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": date,
               "slotIndex": slot, "patientName": patient}),
    )
    .await
}

/// Books each slot of `slots` on `date`, asserting 201 or 409 `slot_taken` as given.
pub async fn book_all(app: &TestApp, date: &str, slots: &[u32], expect: StatusCode) {
    for slot in slots {
        let reply = book(app, date, *slot, &format!("Patient {slot}")).await;
        assert_eq!(reply.status, expect, "slot {slot}: {}", reply.text);
        if expect == StatusCode::CONFLICT {
            assert_eq!(reply.code(), "slot_taken");
        }
    }
}

async fn walk_in(app: &TestApp) {
    let body = json!({"clinicId": CLINIC, "doctorId": "dr-asha", "patientName": "Walk-in"});
    let reply = app.post("/api/v1/appointments/walk-in", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

pub async fn stats(app: &TestApp, query: &str) -> Reply {
    app.get(&format!("/api/v1/stats?{query}")).await
}

async fn stats_as(app: &TestApp, key: Option<&str>, query: &str) -> Reply {
    let url = app.url(&format!("/api/v1/stats?{query}"));
    send(&app.client, Method::GET, &url, key, None, &[]).await
}

/// The stats of [`CLINIC`] for `from..=to` once `ready` holds for them (the
/// servers flush their counts every 100 ms in these tests).
pub async fn stats_when(
    app: &TestApp,
    from: &str,
    to: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    eventually(10, what, || async {
        let reply = stats(app, &format!("clinicId={CLINIC}&from={from}&to={to}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        ready(&reply.body).then_some(reply.body)
    })
    .await
}

fn clinic_row(stats: &Value) -> &Value {
    &stats["clinics"][0]
}

/// Reads Prometheus' text format strictly: every line is `# HELP name text`,
/// `# TYPE name type`, or `name{label="value",…} number`, with label values escaped
/// as the format says. Samples come back keyed as written, `name{labels}`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    fn name_end(s: &str) -> usize {
        s.char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
            })
            .map_or(s.len(), |(i, _)| i)
    }
    let mut samples = BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let (keyword, rest) = comment.split_once(' ').expect("a keyword and a name");
            let end = name_end(rest);
            assert!(end > 0, "a metric name after {keyword}: {line}");
            match keyword {
                "HELP" => assert!(rest[end..].starts_with(' '), "help text: {line}"),
                "TYPE" => {
                    let kind = rest[end..].trim_start();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "type: {line}"
                    );
                    assert!(typed.insert(rest[..end].to_owned()), "typed twice: {line}");
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let end = name_end(line);
        assert!(end > 0, "a sample starts with a metric name: {line:?}");
        let mut rest = &line[end..];
        if let Some(labels) = rest.strip_prefix('{') {
            let mut chars = labels.char_indices().peekable();
            let close = loop {
                let (start, _) = *chars.peek().expect("labels close with }");
                if labels[start..].starts_with('}') {
                    break start;
                }
                let label_end = name_end(&labels[start..]);
                assert!(label_end > 0, "a label name: {line}");
                for _ in 0..label_end {
                    chars.next();
                }
                assert_eq!(chars.next().map(|c| c.1), Some('='), "label=: {line}");
                assert_eq!(chars.next().map(|c| c.1), Some('"'), "label=\": {line}");
                loop {
                    match chars.next().expect("a closed label value").1 {
                        '\\' => {
                            let escaped = chars.next().expect("an escape").1;
                            assert!(matches!(escaped, '\\' | '"' | 'n'), "escape: {line}");
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                if chars.peek().is_some_and(|c| c.1 == ',') {
                    chars.next();
                }
            };
            rest = &labels[close + 1..];
        }
        let value = rest.strip_prefix(' ').expect("one space before the value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("a number: {line}")),
        };
        let key = &line[..line.len() - rest.len()];
        samples.insert(key.to_owned(), value);
    }
    samples
}

pub async fn metrics_page(app: &TestApp) -> BTreeMap<String, f64> {
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    parse_prometheus(&reply.text)
}

pub fn sample(page: &BTreeMap<String, f64>, key: &str) -> f64 {
    page.get(key).copied().unwrap_or(0.0)
}

pub async fn booking_counts_survive_a_restart(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    // Flushing hourly: what survives, survives because stopping flushed it.
    let hourly = || Options {
        metrics_flush: Duration::from_secs(3600),
        ..test_options(&[], Duration::ZERO, true)
    };
    let app = start_app(db, hourly()).await;
    app.clinic_with_doctor(CLINIC, 10, long_day()).await;
    book_all(&app, TOMORROW, &[1, 2, 3], StatusCode::CREATED).await;
    book_all(&app, TOMORROW, &[1, 2], StatusCode::CONFLICT).await;
    let db = app.stop().await;

    let app = start_app(db, hourly()).await;
    let reply = stats(&app, &format!("clinicId={CLINIC}&from={DAY}&to={DAY}")).await;
    let kochi = clinic_row(&reply.body);
    assert_eq!(
        (&kochi["attempts"], &kochi["bookings"], &kochi["conflicts"]),
        (&json!(5), &json!(3), &json!(2)),
        "{}",
        reply.text
    );
    assert_eq!(
        reply.body["conflictsByHour"]["tue"][6], 2,
        "06:00 in Kolkata"
    );
    let page = metrics_page(&app).await;
    assert_eq!(
        sample(
            &page,
            r#"slotguard_bookings_total{kind="advance",outcome="booked"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &page,
            r#"slotguard_booking_conflicts_total{reason="slot_taken"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(&page, "slotguard_booking_duration_seconds_count"),
        0.0,
        "the latency histogram is the new process's own"
    );
}

pub async fn two_servers_on_one_database_add_up(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let second_db = db.shared();
    let first = start_app(db, test_options(&[], Duration::ZERO, true)).await;
    let second = start_app(second_db, test_options(&[], Duration::ZERO, true)).await;
    first.clinic_with_doctor(CLINIC, 10, long_day()).await;

    book_all(&first, TOMORROW, &[1, 2], StatusCode::CREATED).await;
    book_all(&second, TOMORROW, &[3, 4, 5], StatusCode::CREATED).await;
    book_all(&second, TOMORROW, &[1], StatusCode::CONFLICT).await;
    book_all(&first, TOMORROW, &[5], StatusCode::CONFLICT).await;

    for app in [&first, &second] {
        let stats = stats_when(app, DAY, DAY, "both servers' counts", |s| {
            clinic_row(s)["attempts"] == 7
        })
        .await;
        let kochi = clinic_row(&stats);
        assert_eq!(
            (&kochi["bookings"], &kochi["conflicts"]),
            (&json!(5), &json!(2))
        );
        let page = metrics_page(app).await;
        assert_eq!(
            sample(
                &page,
                r#"slotguard_bookings_total{kind="advance",outcome="booked"}"#
            ),
            5.0,
            "every server reports the database-wide total"
        );
    }
}

/// A Kloqo-shaped document for dr-asha in `slot` on 2 December 2026.
fn watched(id: &str, slot: u32) -> Value {
    json!({
        "id": id, "clinicId": CLINIC, "doctorId": "dr-asha", "doctor": "Asha Menon",
        "date": "2 December 2026", "sessionIndex": 0, "slotIndex": slot,
        "numericToken": slot + 1, "tokenNumber": format!("A1-{:03}", slot + 1),
        "status": "Pending", "bookedVia": "Online", "patientName": format!("Patient {id}"),
        "createdAt": {"_seconds": 1_764_500_000, "_nanoseconds": 0}
    })
}

async fn watch(app: &TestApp, doc: &Value) {
    let id = doc["id"].as_str().unwrap();
    let url = app.url(&format!("/api/v1/watch/kloqo/appointments/{id}"));
    let key = Some(app.admin_key.as_str());
    let reply = send(&app.client, Method::PUT, &url, key, Some(doc), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// Waits until the detector has recorded an incident for the clinic.
async fn an_incident(app: &TestApp) {
    eventually(10, "the incident", || async {
        let listed = app
            .get(&format!("/api/v1/incidents?clinicId={CLINIC}"))
            .await;
        (!listed.body["incidents"].as_array()?.is_empty()).then_some(())
    })
    .await;
}

pub async fn stats_match_the_bookings_made_with_conflicts_in_kolkata_hours(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, long_day()).await;

    // Tuesday 09:15 in Kolkata is 03:45 UTC: the morning rush, by the clinic's clock.
    app.clock.set(kolkata(DAY, 9, 15));
    book_all(&app, TOMORROW, &[0, 1, 2, 3], StatusCode::CREATED).await;
    book_all(&app, TOMORROW, &[0, 1], StatusCode::CONFLICT).await;
    // 17:40 in Kolkata is 12:10 UTC.
    app.clock.set(kolkata(DAY, 17, 40));
    book_all(&app, TOMORROW, &[2], StatusCode::CONFLICT).await;
    walk_in(&app).await;
    let too_soon = book(&app, DAY, 54, "Late").await;
    assert_eq!(too_soon.code(), "slot_too_soon", "18:00 is 20 minutes away");
    // Kloqo, watched, gives slot 10 of tomorrow to two patients.
    watch(&app, &watched("doc-a", 10)).await;
    watch(&app, &watched("doc-b", 10)).await;
    an_incident(&app).await;

    let stats = stats_when(&app, DAY, TOMORROW, "the nine attempts", |s| {
        s["retryRate"]["attempts"] == 9
    })
    .await;
    assert_eq!(stats["clinicId"], CLINIC);
    assert_eq!(stats["retryRate"]["retries"], 0);
    assert_eq!(stats["retryRate"]["rate"], 0.0);

    let by_hour = &stats["conflictsByHour"];
    assert_eq!(by_hour["total"], 3);
    assert_eq!(by_hour["tue"][9], 2, "{by_hour}");
    assert_eq!(by_hour["tue"][17], 1, "{by_hour}");
    assert_eq!(
        (&by_hour["tue"][3], &by_hour["tue"][12]),
        (&json!(0), &json!(0)),
        "not UTC hours"
    );
    assert_eq!(by_hour["mon"], json!(vec![0; 24]));

    let kochi = clinic_row(&stats);
    assert_eq!(
        (&kochi["attempts"], &kochi["bookings"], &kochi["conflicts"]),
        (&json!(9), &json!(5), &json!(3)),
        "a refusal for lead time is an attempt, not a conflict: {kochi}"
    );

    let days = stats["duplicateRate"]["days"].as_array().unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!(
        (
            &days[0]["date"],
            &days[0]["appointmentsChecked"],
            &days[0]["extraRows"],
            &days[0]["met"]
        ),
        (&json!(DAY), &json!(1), &json!(0), &json!(true)),
        "today holds the walk-in"
    );
    let tomorrow = &days[1];
    assert_eq!(
        (
            &tomorrow["appointmentsChecked"],
            &tomorrow["duplicateGroups"],
            &tomorrow["extraRows"],
            &tomorrow["affectedRows"]
        ),
        (&json!(6), &json!(1), &json!(1), &json!(2)),
        "four bookings and two watched documents, two of them in one slot: {tomorrow}"
    );
    assert!((tomorrow["rate"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-12);
    assert_eq!(tomorrow["met"], false);
    assert_eq!(stats["duplicateRate"]["target"], 0.001);
    assert_eq!(stats["duplicateRate"]["extraRows"], 1);
    assert_eq!(stats["duplicateRate"]["appointmentsChecked"], 7);

    let staff = app.key(Role::Clinic, &[CLINIC]).await;
    let own = stats_as(
        &app,
        Some(&staff),
        &format!("clinicId={CLINIC}&from={DAY}&to={TOMORROW}"),
    )
    .await;
    assert_eq!(own.body, stats, "clinic staff see their clinic's stats");
}

pub async fn the_metrics_page_is_prometheus_text_with_the_counts(backend: Backend) {
    let hook = Receiver::answering(400).await;
    let channels = [
        json!({"kind": "log", "name": "log"}),
        json!({"kind": "webhook", "name": "ops \"east\"", "url": hook.url}),
    ];
    let Some(app) = spawn_app_with(backend, test_options(&channels, Duration::ZERO, true)).await
    else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, long_day()).await;
    book_all(&app, TOMORROW, &[1, 2], StatusCode::CREATED).await;
    book_all(&app, TOMORROW, &[1], StatusCode::CONFLICT).await;
    walk_in(&app).await;
    watch(&app, &watched("doc-a", 10)).await;
    watch(&app, &watched("doc-b", 10)).await;
    an_incident(&app).await;

    let page = eventually(10, "counts and alerts on the page", || async {
        let page = metrics_page(&app).await;
        let ready = sample(&page, r#"slotguard_alerts_sent_total{channel="log"}"#) == 1.0
            && sample(
                &page,
                r#"slotguard_alerts_failed_total{channel="ops \"east\""}"#,
            ) == 1.0
            && sample(
                &page,
                r#"slotguard_bookings_total{kind="walk_in",outcome="booked"}"#,
            ) == 1.0;
        ready.then_some(page)
    })
    .await;
    for (key, value) in [
        (
            r#"slotguard_bookings_total{kind="advance",outcome="booked"}"#,
            2.0,
        ),
        (
            r#"slotguard_bookings_total{kind="advance",outcome="slot_taken"}"#,
            1.0,
        ),
        (
            r#"slotguard_booking_conflicts_total{reason="slot_taken"}"#,
            1.0,
        ),
        (
            r#"slotguard_booking_conflicts_total{reason="no_walk_in_slot"}"#,
            0.0,
        ),
        ("slotguard_transaction_retries_total", 0.0),
        ("slotguard_booking_duration_seconds_count", 4.0),
        (
            r#"slotguard_booking_duration_seconds_bucket{le="+Inf"}"#,
            4.0,
        ),
        (
            r#"slotguard_open_incidents{clinic_id="kochi",state="open"}"#,
            1.0,
        ),
        ("slotguard_detection_latency_seconds_count", 1.0),
        (
            r#"slotguard_alert_delivery_failures_total{channel="ops \"east\"",outcome="permanent"}"#,
            1.0,
        ),
        ("slotguard_alert_outbox_backlog", 0.0),
    ] {
        assert_eq!(page.get(key), Some(&value), "{key}");
    }
    let buckets: Vec<f64> = page
        .iter()
        .filter(|(k, _)| k.starts_with("slotguard_booking_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 14, "13 bounds and +Inf");

    let anonymous = send(
        &app.client,
        Method::GET,
        &app.url("/metrics"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for role in [Role::Clinic, Role::Booking] {
        let key = app.key(role, &[CLINIC]).await;
        let denied = send(
            &app.client,
            Method::GET,
            &app.url("/metrics"),
            Some(&key),
            None,
            &[],
        )
        .await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{role:?}");
    }
}

pub async fn bad_stats_queries_get_a_4xx_naming_the_field_and_change_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, long_day()).await;
    app.post("/api/v1/clinics", json!({"id": "other", "name": "Other"}))
        .await;
    book_all(&app, TOMORROW, &[1], StatusCode::CREATED).await;
    let good = format!("clinicId={CLINIC}&from={DAY}&to={TOMORROW}");
    let before = stats_when(&app, DAY, TOMORROW, "the booking counted", |s| {
        clinic_row(s)["bookings"] == 1
    })
    .await;
    let rows_before = app.row_counts().await;
    let staff = app.key(Role::Clinic, &[CLINIC]).await;
    let kiosk = app.key(Role::Booking, &[CLINIC]).await;

    let invalid = [
        ("no from", format!("clinicId={CLINIC}&to={DAY}"), "from"),
        ("no to", format!("clinicId={CLINIC}&from={DAY}"), "to"),
        (
            "month 13",
            format!("clinicId={CLINIC}&from=2026-13-01&to={DAY}"),
            "from",
        ),
        (
            "not a date",
            format!("clinicId={CLINIC}&from={DAY}&to=tomorrow"),
            "to",
        ),
        (
            "to before from",
            format!("clinicId={CLINIC}&from={TOMORROW}&to={DAY}"),
            "to",
        ),
        (
            "367 days",
            format!("clinicId={CLINIC}&from=2026-01-01&to=2027-01-02"),
            "to",
        ),
        (
            "bad clinic id",
            format!("clinicId=no%20spaces&from={DAY}&to={DAY}"),
            "clinicId",
        ),
    ];
    for (what, query, field) in invalid {
        let reply = stats_as(&app, Some(&app.admin_key), &query).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            reply.text
        );
        assert_eq!(reply.code(), "invalid_field", "{what}");
        assert_eq!(reply.body["error"]["details"]["field"], field, "{what}");
    }
    let refused = [
        (
            "unknown clinic",
            format!("clinicId=nowhere&from={DAY}&to={DAY}"),
            Some(&app.admin_key),
            404,
            "clinic_not_found",
        ),
        (
            "staff of another clinic",
            format!("clinicId=other&from={DAY}&to={DAY}"),
            Some(&staff),
            403,
            "forbidden",
        ),
        (
            "staff without clinicId",
            format!("from={DAY}&to={DAY}"),
            Some(&staff),
            403,
            "forbidden",
        ),
        (
            "a patient app",
            good.clone(),
            Some(&kiosk),
            403,
            "forbidden",
        ),
        ("no key", good.clone(), None, 401, "unauthorized"),
    ];
    for (what, query, key, status, code) in refused {
        let reply = stats_as(&app, key.map(String::as_str), &query).await;
        assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.text);
        assert_eq!(reply.code(), code, "{what}");
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats(&app, &good).await.body, before, "no stats moved");
    assert_eq!(app.row_counts().await, rows_before, "no row was written");
}

/// `serve` as a process: `/metrics` without a key on the metrics listener (from
/// slotguard.toml, then from `--metrics-listen`), and the counts flushed at SIGTERM.
pub async fn a_metrics_listener_needs_no_key_and_sigterm_keeps_the_counts(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("slotguard.toml");
    // Hourly flushes: the counts can only reach the database at SIGTERM.
    std::fs::write(
        &config,
        "[metrics]\nflush_seconds = 3600\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let key = admin_key_for(&db.url).await;
    let client = client();
    let get = |url: String, key: Option<String>| {
        let client = client.clone();
        async move { send(&client, Method::GET, &url, key.as_deref(), None, &[]).await }
    };

    let server = ServerProcess::start_with(&db.url, &["--config", &config]).await;
    let open = get(
        server.metrics_url.clone().expect("a metrics listener"),
        None,
    )
    .await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.text);
    assert!(open
        .text
        .contains("# TYPE slotguard_bookings_total counter"));
    let keyed = format!("{}/metrics", server.base);
    assert_eq!(
        get(keyed.clone(), None).await.status,
        StatusCode::UNAUTHORIZED,
        "the API's address still asks for a key"
    );
    for (path, body) in [
        (
            "/api/v1/clinics",
            json!({"id": CLINIC, "name": "Test Clinic"}),
        ),
        (
            "/api/v1/clinics/kochi/doctors",
            doctor_body("dr-asha", 10, json!([{"from": "08:00", "to": "20:00"}])),
        ),
    ] {
        let url = format!("{}{path}", server.base);
        let made = send(&client, Method::POST, &url, Some(&key), Some(&body), &[]).await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    }
    let next_week = (chrono::Utc::now()
        .with_timezone(&slotguard::domain::Clinic::DEFAULT_TIMEZONE)
        .date_naive()
        + chrono::Duration::days(7))
    .to_string();
    for slot in [4, 5, 4] {
        let body = json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": next_week,
                          "slotIndex": slot, "patientName": "Anu"});
        let url = format!("{}/api/v1/appointments", server.base);
        send(&client, Method::POST, &url, Some(&key), Some(&body), &[]).await;
    }
    server.terminate().await;

    let server = ServerProcess::start_with(
        &db.url,
        &["--config", &config, "--metrics-listen", "127.0.0.1:0"],
    )
    .await;
    let page = get(
        server.metrics_url.clone().expect("a metrics listener"),
        None,
    )
    .await;
    let page = parse_prometheus(&page.text);
    assert_eq!(
        sample(
            &page,
            r#"slotguard_bookings_total{kind="advance",outcome="booked"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &page,
            r#"slotguard_booking_conflicts_total{reason="slot_taken"}"#
        ),
        1.0
    );
    let keyed = get(format!("{}/metrics", server.base), Some(key)).await;
    assert_eq!(
        keyed.status,
        StatusCode::OK,
        "an admin key opens it on the API's address"
    );
    server.terminate().await;
}
