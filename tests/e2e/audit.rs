//! Stories of the nightly audit: each clinic's day audited at its `auditAt` in its
//! own time zone, missed nights caught up, a dead-man's switch, one runner however
//! many servers, and a summary through the alert channels.

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slotguard::app::{App, Options};
use slotguard::clock::FixedClock;
use slotguard::store::audit::{AuditRun, RunStatus, Trigger};
use slotguard::store::{self, SqliteSync};

use crate::detection::{delete_document, document, incidents, put};
use crate::support::*;

const CLINIC: &str = "kochi";

/// Alerts to a webhook; detection only when the test asks (no wake-ups, no re-scan),
/// so what the audit finds is what real-time detection missed.
fn options(webhook: &Receiver) -> Options {
    without_rescan(test_options(
        &[json!({"kind": "webhook", "name": "ops", "url": webhook.url})],
        Duration::ZERO,
        false,
    ))
}

/// A nightly run of `clinic`'s [`DAY`] that another server claimed at `started_at`
/// and never finished.
fn stuck_run(clinic: &str, started_at: chrono::DateTime<chrono::Utc>) -> AuditRun {
    AuditRun {
        id: "stuck-run".into(),
        clinic_id: slotguard::domain::ClinicId::parse("c", clinic).unwrap(),
        local_date: DAY.parse::<NaiveDate>().unwrap(),
        trigger: Trigger::Nightly,
        runner: "another-server".into(),
        status: RunStatus::Running,
        started_at,
        finished_at: None,
        counts: Default::default(),
        incidents_opened: 0,
        incidents_resolved: 0,
        error: None,
    }
}

async fn runs(app: &TestApp, date: &str) -> Vec<Value> {
    runs_of(app, CLINIC, date).await
}

async fn runs_of(app: &TestApp, clinic: &str, date: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/audits?clinicId={clinic}&date={date}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["runs"].as_array().unwrap().clone()
}

/// The webhook messages of `event` so far.
fn received(webhook: &Receiver, event: &str) -> Vec<Value> {
    webhook
        .messages()
        .into_iter()
        .filter(|m| m["event"] == event)
        .collect()
}

/// Returns once the detector has made its first pass (its watermark is written). With
/// [`options`] it makes no other for an hour, so what is written after this is left
/// to the audit. On PostgreSQL the pass waits for the detector's LISTEN, which under
/// a full parallel run can come after a story's first writes.
async fn detector_passed_once(app: &TestApp) {
    let store = app.app.state.bookings.store();
    eventually(30, "the detector's first pass", || async {
        store
            .watermark(slotguard::detect::detector::WATERMARK)
            .await
            .unwrap()
    })
    .await;
}

/// Kochi (Asia/Kolkata, audit at 23:00) with dr-asha 09:00–13:00 in 10-minute slots,
/// one native booking and two watched documents in slot 5 of [`DAY`].
async fn a_day_with_a_watched_double_booking(app: &TestApp) {
    detector_passed_once(app).await;
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    let booked = app
        .post(
            "/api/v1/appointments",
            json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": DAY, "slotIndex": 3, "patientName": "Anu"}),
        )
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{}", booked.text);
    for doc in [
        document("doc-a", 5, "Pending", 0),
        document("doc-b", 5, "Confirmed", 1),
    ] {
        assert_eq!(put(app, &doc).await.status, StatusCode::OK);
    }
}

pub async fn the_audit_runs_at_23_00_india_time_and_opens_what_detection_missed(backend: Backend) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options(&webhook)).await else {
        return;
    };
    a_day_with_a_watched_double_booking(&app).await;
    assert!(incidents(&app).await.is_empty(), "detection was kept off");

    app.clock.set(kolkata(DAY, 22, 59));
    app.app.auditor.run_once().await.unwrap();
    assert!(runs(&app, DAY).await.is_empty(), "not yet at 22:59");

    app.clock.set(kolkata(DAY, 23, 0));
    app.app.auditor.run_once().await.unwrap();
    app.app.auditor.run_once().await.unwrap();
    let done = runs(&app, DAY).await;
    assert_eq!(done.len(), 1, "one run for the night: {done:?}");
    let run = &done[0];
    assert_eq!(
        (
            run["trigger"].as_str(),
            run["status"].as_str(),
            run["localDate"].as_str()
        ),
        (Some("nightly"), Some("succeeded"), Some(DAY))
    );
    assert_eq!(
        [
            &run["appointmentsChecked"],
            &run["duplicateGroups"],
            &run["extraRows"],
            &run["affectedRows"],
            &run["incidentsOpened"],
        ],
        [&json!(3), &json!(1), &json!(1), &json!(2), &json!(1)]
    );
    let found = incidents(&app).await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0]["foundBy"].as_str(), found[0]["key"].as_str()),
        (Some("audit"), Some("5"))
    );
    let page = crate::metrics::metrics_page(&app).await;
    let sample = |key: &str| crate::metrics::sample(&page, key);
    assert_eq!(
        sample(&format!(
            "slotguard_audit_incidents_opened_total{{clinic_id=\"{CLINIC}\"}}"
        )),
        1.0,
        "an audit that opens an incident is detection's miss, counted"
    );
    assert_eq!(
        sample(&format!(
            "slotguard_audit_runs_total{{clinic_id=\"{CLINIC}\",status=\"succeeded\"}}"
        )),
        1.0
    );
    assert_eq!(
        sample(&format!(
            "slotguard_audit_last_success_timestamp_seconds{{clinic_id=\"{CLINIC}\"}}"
        )),
        kolkata(DAY, 23, 0).timestamp() as f64
    );

    let summary = eventually(10, "the daily summary", || async {
        received(&webhook, "daily_summary").into_iter().next()
    })
    .await;
    assert!(
        summary["subject"].as_str().unwrap().ends_with(&format!(
            "audit of {DAY} at clinic {CLINIC}: 1 double booking"
        )),
        "{summary}"
    );
    assert_eq!(summary["details"]["extraRows"], 1);
    eventually(10, "the incident's own alert", || async {
        (!received(&webhook, "opened").is_empty()).then_some(())
    })
    .await;
    assert!(
        !summary.to_string().contains("Patient doc-a"),
        "summaries name no patient"
    );
}

pub async fn a_clean_day_says_so_and_an_audit_on_demand_resolves_a_fixed_duplicate(
    backend: Backend,
) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options(&webhook)).await else {
        return;
    };
    a_day_with_a_watched_double_booking(&app).await;
    let audit_now = || async {
        app.post("/api/v1/audits", json!({"clinicId": CLINIC, "date": DAY}))
            .await
    };
    let first = audit_now().await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.body["run"]["trigger"], "on_demand");
    assert_eq!(
        first.body["findings"],
        json!([{"clinicId": CLINIC, "doctorId": "dr-asha", "date": DAY, "kind": "slot", "key": "5",
                "members": [{"source": "kloqo", "id": "doc-a"}, {"source": "kloqo", "id": "doc-b"}]}])
    );

    put(&app, &document("doc-b", 5, "Cancelled", 2)).await;
    let second = audit_now().await;
    assert_eq!(second.body["run"]["duplicateGroups"], 0);
    assert_eq!(second.body["run"]["incidentsResolved"], 1);
    assert_eq!(incidents(&app).await[0]["state"], "resolved");

    // On-demand runs do not stand in for the nightly one, which then finds it clean.
    app.clock.set(kolkata(DAY, 23, 0));
    app.app.auditor.run_once().await.unwrap();
    let all = runs(&app, DAY).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[2]["trigger"], "nightly");
    let summary = eventually(10, "the daily summary", || async {
        received(&webhook, "daily_summary").into_iter().next()
    })
    .await;
    assert!(
        summary["subject"].as_str().unwrap().ends_with(": clean"),
        "{summary}"
    );

    for (body, field) in [
        (json!({"date": DAY}), "clinicId"),
        (json!({"clinicId": CLINIC, "date": "2026-02-30"}), "date"),
        (json!({"clinicId": CLINIC}), "date"),
    ] {
        let refused = app.post("/api/v1/audits", body).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.text
        );
        assert_eq!(refused.body["error"]["details"]["field"], field);
    }
    let unknown = app
        .post(
            "/api/v1/audits",
            json!({"clinicId": "nowhere", "date": DAY}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let bad_range = app
        .get(&format!(
            "/api/v1/audits?clinicId={CLINIC}&from=2026-12-02&to=2026-12-01"
        ))
        .await;
    assert_eq!(bad_range.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(runs(&app, DAY).await.len(), 3, "refusals ran nothing");
}

/// Starts slotguard's services on an existing database, with their own clock.
async fn start_on(url: &str, clock: Arc<FixedClock>, options: Options) -> App {
    let store: Arc<dyn store::Store> = Arc::from(store::open(url, SqliteSync::Full).await.unwrap());
    App::start(store, clock, options)
}

pub async fn nights_missed_while_no_server_ran_are_caught_up_at_start(backend: Backend) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options(&webhook)).await else {
        return;
    };
    a_day_with_a_watched_double_booking(&app).await;

    // Two days later, at 10:00 India time, a server starts: the first pass of its
    // runner audits the 1st and the 2nd, which nobody audited.
    let later = Arc::new(FixedClock::at(kolkata("2026-12-03", 10, 0)));
    let mut restarted = options(&webhook);
    restarted.audit.tick = Duration::from_millis(100);
    let second = start_on(&app.db.url, later, restarted).await;
    let caught_up = eventually(60, "both missed nights audited", || async {
        let runs = app
            .get(&format!(
                "/api/v1/audits?clinicId={CLINIC}&from=2026-11-30&to=2026-12-03"
            ))
            .await
            .body["runs"]
            .as_array()
            .unwrap()
            .clone();
        (runs.len() == 2 && runs.iter().all(|r| r["status"] == "succeeded")).then_some(runs)
    })
    .await;
    let dates: Vec<&str> = caught_up
        .iter()
        .map(|r| r["localDate"].as_str().unwrap())
        .collect();
    assert_eq!(dates, [DAY, "2026-12-02"]);
    assert!(caught_up.iter().all(|r| r["trigger"] == "catch_up"));
    assert_eq!(caught_up[0]["duplicateGroups"], 1);
    // The restarted server's dispatcher sends them (its clock is where they are due:
    // the first server's stands two days earlier), so it runs until they are out.
    let summaries = eventually(10, "two summaries", || async {
        let s = received(&webhook, "daily_summary");
        (s.len() == 2).then_some(s)
    })
    .await;
    second.stop().await;
    assert!(summaries
        .iter()
        .all(|s| s["text"].as_str().unwrap().contains("Caught up")));
}

pub async fn a_day_without_a_successful_audit_by_23_30_alerts_and_a_stuck_run_is_taken_over(
    backend: Backend,
) {
    let webhook = Receiver::start().await;
    let mut options = options(&webhook);
    // A run is presumed abandoned after an hour here, so the alarm comes first.
    options.audit.stale_after = Duration::from_secs(3600);
    let Some(app) = spawn_app_with(backend, options).await else {
        return;
    };
    a_day_with_a_watched_double_booking(&app).await;
    let auditor = &app.app.auditor;
    // Another runner claimed the night at 23:00 and then hung.
    let stuck = stuck_run(CLINIC, kolkata(DAY, 23, 0));
    assert!(auditor
        .store()
        .claim_audit_run(&stuck, kolkata(DAY, 22, 0))
        .await
        .unwrap());

    app.clock.set(kolkata(DAY, 23, 29));
    auditor.run_once().await.unwrap();
    assert!(
        received(&webhook, "audit_missing").is_empty(),
        "within grace"
    );

    app.clock.set(kolkata(DAY, 23, 31));
    auditor.run_once().await.unwrap();
    auditor.run_once().await.unwrap();
    let alarm = eventually(10, "the dead-man's switch", || async {
        received(&webhook, "audit_missing").into_iter().next()
    })
    .await;
    assert_eq!(
        alarm["subject"],
        format!("slotguard: no audit of {DAY} at clinic {CLINIC}")
    );
    let all = runs(&app, DAY).await;
    assert_eq!(all.len(), 1, "the live claim was respected: {all:?}");

    // An hour after it started, the stuck run counts as abandoned.
    app.clock.set(kolkata("2026-12-02", 0, 1));
    auditor.run_once().await.unwrap();
    let all = runs(&app, DAY).await;
    let statuses: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert_eq!(statuses[0], ("stuck-run", "failed"));
    assert_eq!(statuses[1].1, "succeeded");
    assert!(all[0]["error"].as_str().unwrap().contains("abandoned"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received(&webhook, "audit_missing").len(),
        1,
        "the alarm went out once"
    );
}

/// Two `slotguard serve` processes, both with the system clock and TZ=UTC, share one
/// PostgreSQL database; the clinic is in India. Each missed night is audited by
/// exactly one of them, on the clinic's local dates.
pub async fn two_servers_in_utc_audit_each_india_night_once(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let key = admin_key_for(&db.url).await;
    let client = client();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[audit]\ntick_seconds = 0.1\n").unwrap();
    let config_path = config.path().display().to_string();
    let args = ["--config", config_path.as_str()];
    let env = [("TZ", "UTC")];
    let first = ServerProcess::start_in(&db.url, &args, &env).await;
    let clinic = send(
        &client,
        Method::POST,
        &format!("{}/api/v1/clinics", first.base),
        Some(&key),
        Some(&json!({"id": CLINIC, "name": "Kochi", "timezone": "Asia/Kolkata"})),
        &[],
    )
    .await;
    assert_eq!(clinic.status, StatusCode::CREATED, "{}", clinic.text);
    // The clinic has existed for three days: the nights since then are due.
    tamper(
        &db.url,
        "UPDATE clinics SET created_at = created_at - INTERVAL '3 days'",
    )
    .await;
    let second = ServerProcess::start_in(&db.url, &args, &env).await;

    let store = store::open(&db.url, SqliteSync::Full).await.unwrap();
    let kochi = store
        .clinic(&slotguard::domain::ClinicId::parse("c", CLINIC).unwrap())
        .await
        .unwrap()
        .unwrap();
    let (_, created) = store
        .clinics_since()
        .await
        .unwrap()
        .into_iter()
        .find(|(clinic, _)| clinic.id == kochi.id)
        .unwrap();
    let latest = slotguard::audit::schedule::latest_due(&kochi, Utc::now());
    let expected = slotguard::audit::schedule::dates_to_audit(latest, kochi.today(created), 7, &[]);
    assert!(expected.len() >= 2, "{expected:?}");
    let from = expected[0] - chrono::Duration::days(1);
    eventually(30, "every due night audited", || async {
        let runs = store.audit_runs(None, from, latest).await.unwrap();
        let succeeded = runs
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .count();
        (succeeded >= expected.len()).then_some(())
    })
    .await;
    // Both runners keep ticking for a while: nothing is audited twice.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let runs = store.audit_runs(None, from, latest).await.unwrap();
    first.kill().await;
    second.kill().await;
    let dates: Vec<NaiveDate> = runs.iter().map(|r| r.local_date).collect();
    assert_eq!(dates, expected, "one run per India night: {runs:?}");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
}

/// Runs `slotguard` with `args`; its exit code and stdout.
async fn slotguard(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
        .args(args)
        .output()
        .await
        .expect("run slotguard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

pub async fn slotguard_audit_prints_the_day_and_exits_1_on_duplicates(backend: Backend) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options(&webhook)).await else {
        return;
    };
    a_day_with_a_watched_double_booking(&app).await;
    let url = app.db.url.as_str();
    let (code, out) = slotguard(&[
        "audit",
        "--database",
        url,
        "--clinic",
        CLINIC,
        "--date",
        DAY,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["total"],
        json!({"appointmentsChecked": 3, "duplicateGroups": 1, "extraRows": 1, "affectedRows": 2})
    );
    assert_eq!(report["findings"][0]["key"], "5");
    assert_eq!(report["runs"][0]["trigger"], "on_demand");

    let (code, csv) = slotguard(&[
        "audit",
        "--database",
        url,
        "--clinic",
        CLINIC,
        "--date",
        DAY,
        "--output",
        "csv",
    ])
    .await;
    assert_eq!(code, 1);
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "clinicId,doctorId,date,kind,key,members",
            &format!("{CLINIC},dr-asha,{DAY},slot,5,kloqo:doc-a kloqo:doc-b"),
        ]
    );

    put(&app, &document("doc-b", 5, "Cancelled", 2)).await;
    let (code, table) = slotguard(&[
        "audit",
        "--database",
        url,
        "--from",
        DAY,
        "--to",
        "2026-12-02",
    ])
    .await;
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("2 days, 3 appointments checked: 0 duplicate groups"),
        "{table}"
    );

    for bad in [
        &["audit", "--database", url, "--date", "01-12-2026"][..],
        &[
            "audit",
            "--database",
            url,
            "--clinic",
            "nowhere",
            "--date",
            DAY,
        ],
        &["audit", "--database", url, "--from", DAY],
        &[
            "audit",
            "--database",
            url,
            "--from",
            "2026-12-02",
            "--to",
            DAY,
        ],
        &["audit", "--database", url, "--output", "xml"],
    ] {
        assert_eq!(slotguard(bad).await.0, 2, "{bad:?}");
    }
}

pub async fn the_weekly_report_matches_the_bookings_and_goes_out_monday_09_00_once(
    backend: Backend,
) {
    use crate::metrics::{book_all, long_day, stats_when, TOMORROW};
    let (webhook, smtp) = (Receiver::start().await, SmtpSink::start().await);
    let channels = [
        json!({"kind": "webhook", "name": "ops", "url": webhook.url}),
        json!({"kind": "email", "name": "mail", "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
               "from": "slotguard@clinic.example", "to": ["ops@clinic.example"]}),
    ];
    let Some(app) = spawn_app_with(backend, test_options(&channels, Duration::ZERO, true)).await
    else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, long_day()).await;
    // Tuesday 1 December, 09:15 in Kochi: four bookings for tomorrow, two of them
    // sought again by other patients.
    app.clock.set(kolkata(DAY, 9, 15));
    book_all(&app, TOMORROW, &[0, 1, 2, 3], StatusCode::CREATED).await;
    book_all(&app, TOMORROW, &[0, 1], StatusCode::CONFLICT).await;
    // Kloqo gives slot 10 of tomorrow to two patients; detection opens an incident.
    for id in ["doc-a", "doc-b"] {
        let mut doc = document(id, 10, "Pending", 0);
        doc["date"] = json!("2 December 2026");
        assert_eq!(put(&app, &doc).await.status, StatusCode::OK);
    }
    eventually(10, "the incident", || async {
        (!incidents(&app).await.is_empty()).then_some(())
    })
    .await;
    stats_when(&app, DAY, TOMORROW, "the six attempts flushed", |s| {
        s["retryRate"]["attempts"] == 6
    })
    .await;

    let auditor = &app.app.auditor;
    let week_url = format!("/api/v1/reports/weekly?week=2026-W49&clinicId={CLINIC}&format=json");
    app.clock.set(kolkata("2026-12-07", 8, 59));
    auditor.run_once().await.unwrap();
    assert!(
        received(&webhook, "weekly_report").is_empty(),
        "not before 09:00"
    );

    app.clock.set(kolkata("2026-12-07", 9, 0));
    auditor.run_once().await.unwrap();
    auditor.run_once().await.unwrap();
    let sent = eventually(10, "the weekly report", || async {
        received(&webhook, "weekly_report").into_iter().next()
    })
    .await;
    let report = &sent["details"];
    assert_eq!(report["week"], "2026-W49");
    let tuesday = &report["days"][1];
    assert_eq!(
        (
            &tuesday["date"],
            &tuesday["bookings"],
            &tuesday["conflicts"],
            &tuesday["attempts"]
        ),
        (&json!(DAY), &json!(4), &json!(2), &json!(6))
    );
    let wednesday = &report["days"][2];
    assert_eq!(
        (
            &wednesday["appointmentsChecked"],
            &wednesday["duplicateGroups"],
            &wednesday["extraRows"],
            &wednesday["targetMet"]
        ),
        (&json!(6), &json!(1), &json!(1), &json!(false))
    );
    assert_eq!(report["stats"]["conflictsByHour"]["tue"][9], 2);
    assert_eq!(report["doctors"][0]["doctorId"], "dr-asha");
    assert_eq!(report["doctors"][0]["bookings"], 4);
    assert_eq!(report["incidents"]["total"], 1);
    assert_eq!(
        report["auditRuns"].as_array().unwrap().len(),
        6,
        "the nights from Tuesday to Sunday, caught up"
    );
    assert!(
        !sent.to_string().contains("Patient doc-a"),
        "no patient named"
    );
    let mail = eventually(10, "the report by email", || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.to_string().contains("weekly report 2026-W49"))
    })
    .await;
    let html = mail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["contentType"] == "text/html")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(html.contains("Conflicts by hour of day"), "{html}");

    // Stored: a third patient in slot 10 of that Wednesday, arriving late, does not
    // change the week as it was reported.
    let mut late = document("doc-c", 10, "Pending", 5);
    late["date"] = json!("2 December 2026");
    put(&app, &late).await;
    eventually(10, "the incident grown", || async {
        (incidents(&app).await[0]["members"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let stored = app.get(&week_url).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text);
    assert_eq!(&stored.body, report);
    let csv = app
        .get(&format!(
            "/api/v1/reports/weekly?week=2026-W49&clinicId={CLINIC}&format=csv"
        ))
        .await
        .text;
    assert!(
        csv.contains(&format!("day,{CLINIC},,{DAY},,bookings,4")),
        "{csv}"
    );
    let (code, printed) = slotguard(&[
        "report",
        "weekly",
        "--database",
        &app.db.url,
        "--week",
        "2026-W49",
        "--clinic",
        CLINIC,
        "--format",
        "json",
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(&serde_json::from_str::<Value>(&printed).unwrap(), report);

    auditor.run_once().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received(&webhook, "weekly_report").len(), 1, "sent once");

    for (query, field) in [
        ("week=2026-W99", "week"),
        ("week=2026-49", "week"),
        ("format=pdf", "format"),
        ("clinicId=a%20b", "clinicId"),
    ] {
        let refused = app.get(&format!("/api/v1/reports/weekly?{query}")).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            refused.text
        );
        assert_eq!(refused.body["error"]["details"]["field"], field);
    }
    let (code, _) = slotguard(&[
        "report",
        "weekly",
        "--database",
        &app.db.url,
        "--week",
        "W49",
    ])
    .await;
    assert_eq!(code, 2);
}

/// Kloqo's document `id` of `doctor` in `slot` of [`DAY`], as changed `seconds` after a
/// fixed instant: a change-log export lists each change of a document.
fn change(id: &str, doctor: &str, slot: u32, seconds: i64) -> Value {
    let mut doc = document(id, slot, "Pending", seconds);
    doc["doctorId"] = json!(doctor);
    doc
}

fn confirmed(mut doc: Value) -> Value {
    doc["status"] = json!("Confirmed");
    doc
}

fn as_jsonl(documents: &[Value]) -> String {
    documents.iter().map(|d| format!("{d}\n")).collect()
}

/// `slotguard audit --file` of `file` as JSON; its exit code and report.
async fn audit_file(file: &std::path::Path) -> (i32, Value) {
    let (code, out) = slotguard(&[
        "audit",
        "--file",
        file.to_str().unwrap(),
        "--output",
        "json",
    ])
    .await;
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, report)
}

/// `slotguard watch import` of `file` as Kloqo's documents into the app's database.
async fn watch_import(app: &TestApp, file: &std::path::Path) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
        .args([
            "watch",
            "import",
            "--source",
            "kloqo",
            "--quiet",
            "--database",
        ])
        .arg(&app.db.url)
        .arg(file)
        .output()
        .await
        .expect("run slotguard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An audit of [`DAY`] on demand: its run and findings.
async fn audit_day(app: &TestApp) -> Value {
    let reply = app
        .post("/api/v1/audits", json!({"clinicId": CLINIC, "date": DAY}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

/// The four counts of an audit run or report.
fn counts(of: &Value) -> Value {
    json!({
        "appointmentsChecked": of["appointmentsChecked"],
        "duplicateGroups": of["duplicateGroups"],
        "extraRows": of["extraRows"],
        "affectedRows": of["affectedRows"],
    })
}

pub async fn an_export_listing_one_id_twice_audits_as_the_mirror_keeps_it(backend: Backend) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options(&webhook)).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    // Each doctor has a patient in slot 5 and a document listed twice, in slot 5 and
    // in slot 7.
    let export = [
        // The older copy doubles slot 5, the newer is in slot 7: clean, in either order.
        change("x1", "dr-1", 5, 0),
        change("a1", "dr-1", 5, 0),
        change("a1", "dr-1", 7, 60),
        change("x2", "dr-2", 5, 0),
        change("a2", "dr-2", 7, 60),
        change("a2", "dr-2", 5, 0),
        // The newer copy doubles slot 5: a double booking, in either order.
        change("x3", "dr-3", 5, 0),
        change("a3", "dr-3", 7, 0),
        change("a3", "dr-3", 5, 60),
        change("x4", "dr-4", 5, 0),
        change("a4", "dr-4", 5, 60),
        change("a4", "dr-4", 7, 0),
        // Two copies of one version: the later stage of the day is kept (Confirmed,
        // in slot 7, over Pending in slot 5), in either order: clean.
        change("x5", "dr-5", 5, 0),
        change("a5", "dr-5", 5, 30),
        confirmed(change("a5", "dr-5", 7, 30)),
        change("x6", "dr-6", 5, 0),
        confirmed(change("a6", "dr-6", 7, 30)),
        change("a6", "dr-6", 5, 30),
    ];
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("changes.jsonl");
    std::fs::write(&lines, as_jsonl(&export)).unwrap();
    let array = dir.path().join("changes.json");
    std::fs::write(&array, serde_json::to_vec_pretty(&export).unwrap()).unwrap();

    watch_import(&app, &lines).await;
    let database = audit_day(&app).await;
    let expected =
        json!({"appointmentsChecked": 12, "duplicateGroups": 2, "extraRows": 2, "affectedRows": 4});
    assert_eq!(counts(&database["run"]), expected, "{database}");
    let doubled = |doctor: &str, members: [&str; 2]| json!({"doctorId": doctor, "kind": "slot", "key": "5", "members": members});
    let database_findings: Vec<Value> = database["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let ids: Vec<&str> = f["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap())
                .collect();
            json!({"doctorId": f["doctorId"], "kind": f["kind"], "key": f["key"], "members": ids})
        })
        .collect();
    assert_eq!(
        database_findings,
        [doubled("dr-3", ["a3", "x3"]), doubled("dr-4", ["a4", "x4"]),]
    );

    for file in [&lines, &array] {
        let (code, report) = audit_file(file).await;
        assert_eq!(code, 1, "{report}");
        assert_eq!(
            report["counts"],
            expected,
            "{}: the file audit counts what the database audit counts",
            file.display()
        );
        let file_findings: Vec<Value> = report["duplicates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json!({"doctorId": d["doctorId"], "kind": d["kind"], "key": d["key"], "members": d["members"]}))
            .collect();
        assert_eq!(file_findings, database_findings, "{}", file.display());
    }
}

pub async fn appointments_checked_is_one_number_in_the_file_audit_audit_run_stats_and_weekly_report(
    backend: Backend,
) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options(&webhook)).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    // Two bookings of slotguard's own, one of them cancelled.
    let mut native = Vec::new();
    for slot in [2, 3] {
        let booked = app
            .post(
                "/api/v1/appointments",
                json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": DAY, "slotIndex": slot, "patientName": "Anu"}),
            )
            .await;
        assert_eq!(booked.status, StatusCode::CREATED, "{}", booked.text);
        native.push(booked.body["id"].as_str().unwrap().to_owned());
    }
    let cancelled = app
        .post(
            &format!("/api/v1/appointments/{}/cancel", native[1]),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);

    // Kloqo's day: a double booking of slot 5, a cancelled appointment, a break, and a
    // document moved from slot 8 to 9 (listed twice, as a change-log export does).
    let mut placeholder = document("w-break", 7, "Completed", 0);
    placeholder["tokenNumber"] = json!("Break");
    placeholder["bookedVia"] = json!("BreakBlock");
    let kloqo = [
        document("w-pending", 5, "Pending", 0),
        document("w-double", 5, "Confirmed", 0),
        document("w-cancelled", 6, "Cancelled", 0),
        placeholder,
        document("w-moved", 8, "Pending", 0),
        document("w-moved", 9, "Pending", 60),
    ];
    let dir = tempfile::tempdir().unwrap();
    let kloqo_file = dir.path().join("kloqo.jsonl");
    std::fs::write(&kloqo_file, as_jsonl(&kloqo)).unwrap();
    watch_import(&app, &kloqo_file).await;
    // And one Kloqo deleted after it was forwarded: the mirror keeps its tombstone.
    assert_eq!(
        put(&app, &document("w-deleted", 10, "Pending", 0))
            .await
            .status,
        StatusCode::OK
    );
    let deleted = delete_document(&app, "w-deleted").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);

    // The whole day as one export: slotguard's appointments (the API's fields are
    // Kloqo's) and Kloqo's documents; the deleted one is no longer in it.
    let listed = app
        .get(&format!(
            "/api/v1/appointments?clinicId={CLINIC}&date={DAY}"
        ))
        .await;
    let mut day = listed.body["appointments"].as_array().unwrap().clone();
    assert_eq!(day.len(), 2, "{}", listed.text);
    day.extend(kloqo);
    let day_file = dir.path().join("day.jsonl");
    std::fs::write(&day_file, as_jsonl(&day)).unwrap();

    // Every appointment of the day whatever its status, once per id: the two native
    // ones and w-pending, w-double, w-cancelled, w-moved. Not the break placeholder,
    // not the deleted document.
    let checked = json!(6);
    let (code, file_report) = audit_file(&day_file).await;
    assert_eq!(code, 1, "{file_report}");
    let audited = audit_day(&app).await;
    let run = &audited["run"];
    assert_eq!(
        file_report["counts"],
        json!({"appointmentsChecked": checked, "duplicateGroups": 1, "extraRows": 1, "affectedRows": 2}),
        "the file audit"
    );
    assert_eq!(counts(run), file_report["counts"], "the audit run");

    let stats = app
        .get(&format!(
            "/api/v1/stats?clinicId={CLINIC}&from={DAY}&to={DAY}"
        ))
        .await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    let rate = &stats.body["duplicateRate"];
    assert_eq!(rate["appointmentsChecked"], checked, "the stats: {rate}");
    assert_eq!(rate["days"][0]["appointmentsChecked"], checked);
    assert_eq!(stats.body["clinics"][0]["appointmentsChecked"], checked);

    let report = app
        .get(&format!(
            "/api/v1/reports/weekly?week=2026-W49&clinicId={CLINIC}&format=json"
        ))
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    let tuesday = &report.body["days"][1];
    assert_eq!(tuesday["date"], DAY);
    assert_eq!(
        tuesday["appointmentsChecked"], checked,
        "the weekly report's day"
    );
    let runs = report.body["auditRuns"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0]["appointmentsChecked"], checked,
        "the audit run in the same report"
    );
}

/// A Kloqo document that names its doctor only by `doctor`, as Kloqo's own queries
/// key every duplicate check on the name.
fn named(id: &str, doctor: &str, slot: u32) -> Value {
    let mut doc = document(id, slot, "Pending", 0);
    let fields = doc.as_object_mut().unwrap();
    fields.remove("doctorId");
    fields.insert("doctor".into(), json!(doctor));
    doc
}

/// Issue 13, item 1: documents without `doctorId` are keyed by their doctor's name
/// within their clinic (`name:Asha Menon`), and said so, in the watch API, `watch
/// import` and `audit --file`; a document with neither is refused naming `doctorId`.
pub async fn documents_naming_their_doctor_only_by_name_are_checked_by_that_name(backend: Backend) {
    let Some(app) = spawn_app_with(backend, test_options(&[], Duration::ZERO, true)).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    // The watch API: two patients of Dr. Asha Menon in slot 5, by name only.
    for id in ["n1", "n2"] {
        let reply = put(&app, &named(id, "Asha Menon", 5)).await;
        assert!(reply.status.is_success(), "{}", reply.text);
    }
    let found = eventually(10, "the name-keyed incident", || async {
        incidents(&app).await.into_iter().next()
    })
    .await;
    assert_eq!(found["doctorId"], "name:Asha Menon", "{found}");
    assert_eq!(found["key"], "5");
    // The same name with spaces around it is the same doctor; another name is not.
    put(&app, &named("n3", " Asha Menon ", 8)).await;
    put(&app, &named("n4", "Asha Menon", 8)).await;
    put(&app, &named("n5", "Ravi Kumar", 9)).await;
    put(&app, &named("n6", "Asha Menon", 9)).await;
    let keys = eventually(10, "slot 8's incident too", || async {
        let mut keys: Vec<String> = incidents(&app)
            .await
            .iter()
            .map(|i| {
                format!(
                    "{} {}",
                    i["doctorId"].as_str().unwrap(),
                    i["key"].as_str().unwrap()
                )
            })
            .collect();
        keys.sort();
        (keys.len() >= 2).then_some(keys)
    })
    .await;
    assert_eq!(keys, ["name:Asha Menon 5", "name:Asha Menon 8"]);
    let mut neither = named("n7", "x", 3);
    neither.as_object_mut().unwrap().remove("doctor");
    let refused = put(&app, &neither).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(refused.body["error"]["details"]["field"], "doctorId");

    // An export of Dr. Ravi Kumar's day by name, with one document keyed by id: the
    // file audit finds the name-keyed double booking (exit 1, not 2) ...
    let export = [
        named("r1", "Ravi Kumar", 6),
        named("r2", "Ravi Kumar", 6),
        document("r3", 6, "Pending", 0),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("by-name.jsonl");
    std::fs::write(&file, as_jsonl(&export)).unwrap();
    let (code, report) = audit_file(&file).await;
    assert_eq!(code, 1, "{report}");
    let found: Vec<(String, String)> = report["duplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["doctorId"].as_str().unwrap().to_owned(),
                d["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(found, [("name:Ravi Kumar".to_owned(), "6".to_owned())]);
    // ... and so does the database audit after `watch import` of the same file.
    watch_import(&app, &file).await;
    let audited = audit_day(&app).await;
    let by_name: Vec<&Value> = audited["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["doctorId"] == "name:Ravi Kumar")
        .collect();
    assert_eq!(by_name.len(), 1, "{audited}");
    assert_eq!(by_name[0]["key"], "6");
}

/// A clinic Kloqo's documents name that was never created with `POST /clinics`.
const WATCHED_ONLY: &str = "aluva";

/// Kloqo's document `id` holding `slot` of [`DAY`] at [`WATCHED_ONLY`].
fn at_aluva(id: &str, slot: u32) -> Value {
    let mut doc = document(id, slot, "Pending", 0);
    doc["clinicId"] = json!(WATCHED_ONLY);
    doc
}

/// Aluva's day: slot 5 given twice, slot 6 once.
async fn a_watched_only_double_booking(app: &TestApp) {
    detector_passed_once(app).await;
    for doc in [
        at_aluva("aluva-a", 5),
        at_aluva("aluva-b", 5),
        at_aluva("aluva-c", 6),
    ] {
        assert_eq!(put(app, &doc).await.status, StatusCode::OK);
    }
}

/// The source's zone for Kloqo's unregistered clinics, as `[watch.sources.kloqo]`
/// sets it: Tokyo (UTC+9), so their 23:00 is 19:30 in Kochi.
const KLOQO_IN_TOKYO: &str = "[watch.sources.kloqo]\ntimezone = \"Asia/Tokyo\"\n";

/// [`options`] with [`KLOQO_IN_TOKYO`].
fn options_in_tokyo(webhook: &Receiver) -> Options {
    let mut options = options(webhook);
    options.audit.zones =
        slotguard::domain::SourceZones::new([("kloqo".to_owned(), chrono_tz::Asia::Tokyo)]);
    options
}

pub async fn a_clinic_only_in_watched_data_is_audited_at_23_00_in_its_sources_zone_and_counted_everywhere(
    backend: Backend,
) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options_in_tokyo(&webhook)).await else {
        return;
    };
    // Kochi is registered in Asia/Kolkata and watched through the same source.
    a_day_with_a_watched_double_booking(&app).await;
    a_watched_only_double_booking(&app).await;
    let auditor = &app.app.auditor;

    app.clock.set(kolkata(DAY, 19, 29));
    auditor.run_once().await.unwrap();
    assert!(
        runs_of(&app, WATCHED_ONLY, DAY).await.is_empty(),
        "22:59 in Tokyo"
    );
    app.clock.set(kolkata(DAY, 19, 30));
    auditor.run_once().await.unwrap();
    let night = runs_of(&app, WATCHED_ONLY, DAY).await;
    assert_eq!(night.len(), 1, "{night:?}");
    assert_eq!(
        (
            night[0]["trigger"].as_str(),
            night[0]["status"].as_str(),
            night[0]["localDate"].as_str()
        ),
        (Some("nightly"), Some("succeeded"), Some(DAY))
    );
    let found =
        json!({"appointmentsChecked": 3, "duplicateGroups": 1, "extraRows": 1, "affectedRows": 2});
    assert_eq!(counts(&night[0]), found);
    assert_eq!(night[0]["incidentsOpened"], 1);
    assert!(
        runs(&app, DAY).await.is_empty(),
        "a registered clinic keeps its own zone: 19:30 is not Kochi's 23:00"
    );
    let summary = eventually(10, "Aluva's daily summary", || async {
        received(&webhook, "daily_summary")
            .into_iter()
            .find(|s| s["clinicId"] == WATCHED_ONLY)
    })
    .await;
    assert!(
        summary["subject"].as_str().unwrap().ends_with(&format!(
            "audit of {DAY} at clinic {WATCHED_ONLY}: 1 double booking"
        )),
        "{summary}"
    );
    app.clock.set(kolkata(DAY, 23, 0));
    auditor.run_once().await.unwrap();
    assert_eq!(runs(&app, DAY).await.len(), 1, "Kochi at its own 23:00");

    let on_demand = app
        .post(
            "/api/v1/audits",
            json!({"clinicId": WATCHED_ONLY, "date": DAY}),
        )
        .await;
    assert_eq!(on_demand.status, StatusCode::OK, "{}", on_demand.text);
    assert_eq!(on_demand.body["run"]["trigger"], "on_demand");
    assert_eq!(
        on_demand.body["findings"],
        json!([{"clinicId": WATCHED_ONLY, "doctorId": "dr-asha", "date": DAY, "kind": "slot", "key": "5",
                "members": [{"source": "kloqo", "id": "aluva-a"}, {"source": "kloqo", "id": "aluva-b"}]}])
    );

    let stats = app
        .get(&format!(
            "/api/v1/stats?clinicId={WATCHED_ONLY}&from={DAY}&to={DAY}"
        ))
        .await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    assert_eq!(counts(&stats.body["duplicateRate"]), found);
    let everyone = app.get(&format!("/api/v1/stats?from={DAY}&to={DAY}")).await;
    let listed: Vec<&str> = everyone.body["clinics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["clinicId"].as_str())
        .collect();
    assert!(listed.contains(&WATCHED_ONLY), "{listed:?}");

    let week = app
        .get(&format!(
            "/api/v1/reports/weekly?week=2026-W49&clinicId={WATCHED_ONLY}&format=json"
        ))
        .await;
    assert_eq!(week.status, StatusCode::OK, "{}", week.text);
    assert_eq!(counts(&week.body["days"][1]), found, "Tuesday");
    assert_eq!(week.body["auditRuns"].as_array().unwrap().len(), 2);

    // Monday 09:00 in Tokyo is 05:30 in Kochi: Aluva's report goes out, Kochi's waits.
    app.clock.set(kolkata("2026-12-07", 5, 29));
    auditor.run_once().await.unwrap();
    app.clock.set(kolkata("2026-12-07", 5, 30));
    auditor.run_once().await.unwrap();
    let sent = eventually(10, "Aluva's weekly report", || async {
        received(&webhook, "weekly_report").into_iter().next()
    })
    .await;
    assert_eq!(sent["clinicId"], WATCHED_ONLY);
    assert_eq!(sent["details"]["week"], "2026-W49");
    assert_eq!(counts(&sent["details"]["days"][1]), found);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received(&webhook, "weekly_report").len(),
        1,
        "Kochi's is due at its own 09:00"
    );

    // A clinic neither registered nor named by any document is still unknown.
    for reply in [
        app.post(
            "/api/v1/audits",
            json!({"clinicId": "nowhere", "date": DAY}),
        )
        .await,
        app.get(&format!(
            "/api/v1/stats?clinicId=nowhere&from={DAY}&to={DAY}"
        ))
        .await,
        app.get("/api/v1/reports/weekly?week=2026-W49&clinicId=nowhere")
            .await,
    ] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
        assert_eq!(reply.code(), "clinic_not_found");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not registered and no watched document names it"),
            "{}",
            reply.text
        );
    }
}

pub async fn a_clinic_only_in_watched_data_alarms_when_its_night_goes_unaudited(backend: Backend) {
    let webhook = Receiver::start().await;
    let mut options = options_in_tokyo(&webhook);
    options.audit.stale_after = Duration::from_secs(3600);
    let Some(app) = spawn_app_with(backend, options).await else {
        return;
    };
    a_watched_only_double_booking(&app).await;
    let auditor = &app.app.auditor;
    // Another runner claimed Aluva's night at 23:00 Tokyo time and then hung.
    let stuck = stuck_run(WATCHED_ONLY, kolkata(DAY, 19, 30));
    assert!(auditor
        .store()
        .claim_audit_run(&stuck, kolkata(DAY, 19, 0))
        .await
        .unwrap());

    app.clock.set(kolkata(DAY, 19, 59));
    auditor.run_once().await.unwrap();
    assert!(
        received(&webhook, "audit_missing").is_empty(),
        "23:29 in Tokyo: within grace"
    );
    app.clock.set(kolkata(DAY, 20, 1));
    auditor.run_once().await.unwrap();
    let alarm = eventually(10, "the dead-man's switch", || async {
        received(&webhook, "audit_missing").into_iter().next()
    })
    .await;
    assert_eq!(
        alarm["subject"],
        format!("slotguard: no audit of {DAY} at clinic {WATCHED_ONLY}")
    );
    assert!(
        alarm["text"]
            .as_str()
            .unwrap()
            .contains("due at 23:00 (Asia/Tokyo)"),
        "{alarm}"
    );

    // The dashboard says the same, in the same zone.
    app.staff_user(
        "admin@clinic.example",
        slotguard::domain::StaffRole::Admin,
        &[],
    )
    .await;
    let session = app.log_in("admin@clinic.example").await;
    let audits = app.page(Some(&session), "/audits").await;
    assert_eq!(audits.status, StatusCode::OK, "{}", audits.text);
    assert!(
        audits
            .text
            .contains(&format!("{WATCHED_ONLY}: no successful audit of {DAY}")),
        "{}",
        audits.text
    );
}

pub async fn slotguard_audit_clinic_audits_a_clinic_only_in_watched_data_in_its_sources_zone(
    backend: Backend,
) {
    let webhook = Receiver::start().await;
    let Some(app) = spawn_app_with(backend, options(&webhook)).await else {
        return;
    };
    // Aluva's day arrives by `slotguard watch import`, as a first sync does.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("aluva.jsonl");
    let day = [
        at_aluva("aluva-a", 5),
        at_aluva("aluva-b", 5),
        at_aluva("aluva-c", 6),
    ];
    std::fs::write(&export, as_jsonl(&day)).unwrap();
    watch_import(&app, &export).await;
    let config = dir.path().join("slotguard.toml");
    std::fs::write(&config, KLOQO_IN_TOKYO).unwrap();
    let (url, config) = (app.db.url.as_str(), config.to_str().unwrap());
    let audit = |extra: &'static [&'static str]| {
        let mut args = vec!["audit", "--database", url, "--config", config];
        args.extend(extra);
        async move { slotguard(&args).await }
    };

    let (code, out) = audit(&["--clinic", WATCHED_ONLY, "--date", DAY, "--output", "json"]).await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["total"],
        json!({"appointmentsChecked": 3, "duplicateGroups": 1, "extraRows": 1, "affectedRows": 2})
    );
    assert_eq!(
        report["findings"][0]["members"],
        json!([{"source": "kloqo", "id": "aluva-a"}, {"source": "kloqo", "id": "aluva-b"}])
    );

    // Without a date: the clinic's today, in its source's zone.
    let tokyo_today = || {
        Utc::now()
            .with_timezone(&chrono_tz::Asia::Tokyo)
            .date_naive()
    };
    let before = tokyo_today();
    let (code, out) = audit(&["--clinic", WATCHED_ONLY, "--output", "json"]).await;
    let after = tokyo_today();
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let audited: NaiveDate = report["runs"][0]["localDate"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(audited == before || audited == after, "{audited}");

    // Every clinic, registered or not.
    let (code, out) = audit(&["--date", DAY, "--output", "json"]).await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["runs"][0]["clinicId"], WATCHED_ONLY);

    let (code, printed) = slotguard(&[
        "report",
        "weekly",
        "--database",
        url,
        "--config",
        config,
        "--week",
        "2026-W49",
        "--clinic",
        WATCHED_ONLY,
        "--format",
        "json",
    ])
    .await;
    assert_eq!(code, 0, "{printed}");
    let week: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(week["days"][1]["appointmentsChecked"], 3);

    let bad_zone = dir.path().join("bad.toml");
    std::fs::write(
        &bad_zone,
        "[watch.sources.kloqo]\ntimezone = \"Asia/Kochi\"\n",
    )
    .unwrap();
    for bad in [
        &[
            "audit",
            "--database",
            url,
            "--config",
            config,
            "--clinic",
            "nowhere",
            "--date",
            DAY,
        ][..],
        &[
            "audit",
            "--database",
            url,
            "--config",
            bad_zone.to_str().unwrap(),
            "--date",
            DAY,
        ],
        &[
            "report",
            "weekly",
            "--database",
            url,
            "--config",
            config,
            "--clinic",
            "nowhere",
        ],
    ] {
        assert_eq!(slotguard(bad).await.0, 2, "{bad:?}");
    }
}
