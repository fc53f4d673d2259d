//! Stories of detection: an external app's documents arrive through the watch API,
//! duplicates become incidents, and people are told through real channels.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const CLINIC: &str = "kochi";

/// A Kloqo-shaped document in slot `slot` of dr-asha on 1 December 2026.
pub fn document(id: &str, slot: u32, status: &str, updated_seconds: i64) -> Value {
    json!({
        "id": id, "clinicId": CLINIC, "doctorId": "dr-asha", "doctor": "Asha Menon",
        "date": "1 December 2026", "sessionIndex": 0, "slotIndex": slot,
        "numericToken": slot + 1, "tokenNumber": format!("A1-{:03}", slot + 1),
        "status": status, "bookedVia": "Online", "patientName": format!("Patient {id}"),
        "createdAt": {"type": "firestore/timestamp/1.0", "seconds": 1_764_500_000, "nanoseconds": 0},
        "updatedAt": {"_seconds": 1_764_500_000 + updated_seconds, "_nanoseconds": 0},
        "someFieldSlotguardDoesNotKnow": {"kept": true}
    })
}

pub async fn put(app: &TestApp, doc: &Value) -> Reply {
    watch_call(
        app,
        Method::PUT,
        doc["id"].as_str().unwrap(),
        Some(doc),
        &[],
    )
    .await
}

/// `DELETE` of watched document `id`, with the admin key.
pub async fn delete_document(app: &TestApp, id: &str) -> Reply {
    watch_call(app, Method::DELETE, id, None, &[]).await
}

async fn watch_call(
    app: &TestApp,
    method: Method,
    id: &str,
    doc: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let path = format!("/api/v1/watch/kloqo/appointments/{id}");
    send(
        &app.client,
        method,
        &app.url(&path),
        Some(&app.admin_key),
        doc,
        headers,
    )
    .await
}

pub async fn incidents(app: &TestApp) -> Vec<Value> {
    let listed = app
        .get(&format!("/api/v1/incidents?clinicId={CLINIC}"))
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    listed.body["incidents"].as_array().unwrap().clone()
}

fn channels(webhook: &Receiver, smtp: &SmtpSink) -> Vec<Value> {
    vec![
        json!({"kind": "webhook", "name": "ops", "url": webhook.url}),
        json!({"kind": "email", "name": "mail", "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
               "from": "slotguard@clinic.example", "to": ["ops@clinic.example"]}),
        json!({"kind": "log", "name": "log"}),
    ]
}

pub async fn a_watched_duplicate_is_one_incident_alerted_on_every_channel_until_cancelled(
    backend: Backend,
) {
    let (webhook, smtp) = (Receiver::start().await, SmtpSink::start().await);
    let Some(app) = spawn_app_with(
        backend,
        test_options(&channels(&webhook, &smtp), Duration::ZERO, true),
    )
    .await
    else {
        return;
    };

    for doc in [
        document("doc-a", 5, "Pending", 0),
        document("doc-b", 5, "Confirmed", 1),
    ] {
        assert_eq!(put(&app, &doc).await.status, StatusCode::OK);
    }
    let opened = eventually(10, "an incident", || async {
        incidents(&app).await.into_iter().next()
    })
    .await;
    assert_eq!(
        (
            opened["kind"].as_str(),
            opened["key"].as_str(),
            opened["state"].as_str()
        ),
        (Some("slot"), Some("5"), Some("open"))
    );
    eventually(10, "the webhook and the email", || async {
        (webhook.messages().len() == 1 && smtp.messages().len() == 1).then_some(())
    })
    .await;
    let hook = &webhook.messages()[0];
    assert_eq!(hook["event"], "opened");
    assert!(hook["text"].as_str().unwrap().contains("slot 5"), "{hook}");
    assert!(
        !hook.to_string().contains("Patient doc-a"),
        "alerts name no patient"
    );
    let mail = &smtp.messages()[0];
    assert_eq!(mail["rcptTos"], json!(["ops@clinic.example"]));
    let kinds: Vec<&str> = mail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["contentType"].as_str())
        .collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);

    put(&app, &document("doc-c", 5, "Pending", 2)).await;
    eventually(10, "the grown incident's alert", || async {
        (webhook.messages().len() == 2).then_some(())
    })
    .await;
    let all = incidents(&app).await;
    assert_eq!(all.len(), 1, "a third member joins the same incident");
    assert_eq!(all[0]["members"].as_array().unwrap().len(), 3);
    assert_eq!(webhook.messages()[1]["event"], "grew");

    put(&app, &document("doc-b", 5, "Cancelled", 3)).await;
    put(&app, &document("doc-c", 5, "Cancelled", 3)).await;
    let resolved = eventually(10, "the auto-resolve", || async {
        incidents(&app)
            .await
            .into_iter()
            .find(|i| i["state"] == "resolved")
    })
    .await;
    assert_eq!(resolved["resolvedBy"], "auto");
    let detail = app
        .get(&format!(
            "/api/v1/incidents/{}",
            resolved["id"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(detail["members"][0]["source"], "kloqo");
    assert!(
        detail["notifications"].as_array().unwrap().len() >= 4,
        "history lists each notification per channel: {detail}"
    );
    assert!(
        app.get("/healthz").await.body["detectionLatencyMs"]["incidents"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // The notification log pages too: one at a time, the same rows as all at once.
    // Compared once the dispatcher has settled, so no row changes between the reads.
    eventually(10, "every notification settled", || async {
        let pending = app
            .get(&format!(
                "/api/v1/notifications?clinicId={CLINIC}&state=pending"
            ))
            .await
            .body;
        pending["notifications"]
            .as_array()
            .is_some_and(|rows| rows.is_empty())
            .then_some(())
    })
    .await;
    let everything = app
        .get(&format!("/api/v1/notifications?clinicId={CLINIC}"))
        .await
        .body;
    let all: Vec<Value> = everything["notifications"].as_array().unwrap().clone();
    assert!(
        all.len() >= 4 && everything["next"].is_null(),
        "{everything}"
    );
    let mut paged = Vec::new();
    let mut path = format!("/api/v1/notifications?clinicId={CLINIC}&limit=1");
    while paged.len() <= all.len() {
        let page = app.get(&path).await.body;
        paged.extend(page["notifications"].as_array().unwrap().iter().cloned());
        let Some(next) = page["next"].as_str() else {
            break;
        };
        let cursor = serde_urlencoded::to_string([("cursor", next)]).unwrap();
        path = format!("/api/v1/notifications?clinicId={CLINIC}&limit=1&{cursor}");
    }
    assert_eq!(
        paged, all,
        "every notification on exactly one page, in order"
    );
    let refused = app.get("/api/v1/notifications?cursor=nonsense").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["error"]["details"]["field"], "cursor");
}

pub async fn two_duplicates_inside_group_wait_are_one_message(backend: Backend) {
    let webhook = Receiver::start().await;
    let hook = vec![json!({"kind": "webhook", "name": "ops", "url": webhook.url})];
    let Some(app) =
        spawn_app_with(backend, test_options(&hook, Duration::from_secs(30), true)).await
    else {
        return;
    };

    for doc in [
        document("a", 5, "Pending", 0),
        document("b", 5, "Pending", 0),
        document("c", 8, "Pending", 0),
        document("d", 8, "Pending", 0),
    ] {
        put(&app, &doc).await;
    }
    eventually(10, "two incidents", || async {
        (incidents(&app).await.len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        webhook.messages().is_empty(),
        "nothing goes out before groupWait"
    );
    app.clock.advance(chrono::Duration::seconds(31));
    eventually(10, "the grouped message", || async {
        (!webhook.messages().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = webhook.messages();
    assert_eq!(messages.len(), 1, "one bad burst is one message");
    assert_eq!(messages[0]["incidents"].as_array().unwrap().len(), 2);
}

pub async fn a_document_sent_twice_or_out_of_order_makes_no_phantom_incident(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let newest = document("doc-a", 7, "Pending", 10);
    let older_elsewhere = document("doc-a", 5, "Pending", 5);
    put(&app, &document("doc-z", 5, "Pending", 0)).await;

    put(&app, &newest).await;
    put(&app, &newest).await;
    let stale = put(&app, &older_elsewhere).await;
    assert_eq!(
        stale.body["applied"], false,
        "an older version of a document is ignored"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        incidents(&app).await.is_empty(),
        "no duplicate: doc-a is in slot 7, doc-z in slot 5"
    );
}

pub async fn with_wakeups_off_the_rescan_still_finds_the_duplicate(backend: Backend) {
    let Some(app) = spawn_app_with(backend, test_options(&[], Duration::ZERO, false)).await else {
        return;
    };
    put(&app, &document("a", 5, "Pending", 0)).await;
    put(&app, &document("b", 5, "Pending", 0)).await;
    let found = eventually(10, "the re-scan's incident", || async {
        incidents(&app).await.into_iter().next()
    })
    .await;
    assert_eq!(found["key"], "5");
}

pub async fn bad_documents_are_refused_naming_the_field_and_nothing_is_stored(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let mut no_slot = document("a", 5, "Pending", 0);
    no_slot.as_object_mut().unwrap().remove("slotIndex");
    let mut slot_as_text = document("a", 5, "Pending", 0);
    slot_as_text["slotIndex"] = json!("5");
    let mut impossible = document("a", 5, "Pending", 0);
    impossible["date"] = json!("31 February 2026");
    let mut no_clinic = document("a", 5, "Pending", 0);
    no_clinic.as_object_mut().unwrap().remove("clinicId");
    for (doc, field) in [
        (no_slot, "slotIndex"),
        (slot_as_text, "slotIndex"),
        (impossible, "date"),
        (no_clinic, "clinicId"),
    ] {
        let refused = put(&app, &doc).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.text
        );
        assert_eq!(
            refused.body["error"]["details"]["field"], field,
            "{}",
            refused.text
        );
    }
    let batch = json!([document("ok", 5, "Pending", 0), {"id": "bad", "clinicId": CLINIC}]);
    let refused = send(
        &app.client,
        Method::POST,
        &app.url("/api/v1/watch/kloqo/appointments:batch"),
        Some(&app.admin_key),
        Some(&batch),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body["error"]["details"]["field"]
            .as_str()
            .unwrap()
            .starts_with("documents[1]."),
        "{}",
        refused.text
    );
    let wrong_key = app.key(slotguard::domain::Role::Booking, &[]).await;
    let forbidden = send(
        &app.client,
        Method::PUT,
        &app.url("/api/v1/watch/kloqo/appointments/a"),
        Some(&wrong_key),
        Some(&document("a", 5, "Pending", 0)),
        &[],
    )
    .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let watched: i64 = count(&app.db.url, "SELECT COUNT(*) FROM watched_appointments").await;
    assert_eq!(watched, 0);
}

async fn count(url: &str, sql: &str) -> i64 {
    use sqlx::Connection;
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{url}"))
            .await
            .unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
    }
}

pub async fn the_sample_export_imports_clean_and_one_altered_document_is_one_incident(
    backend: Backend,
) {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kloqo/appointments.json"
    );
    let documents: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(sample).expect("the clinic's sample export in tests/data"),
    )
    .unwrap();
    let import = |db: &str, file: &str| {
        // Only serve and migrate create a database.
        let migrated = std::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args(["migrate", "--database", db])
            .output()
            .unwrap();
        assert!(migrated.status.success());
        std::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args([
                "watch",
                "import",
                "--source",
                "kloqo",
                "--quiet",
                "--database",
                db,
                file,
            ])
            .output()
            .unwrap()
    };
    let Some(clean_db) = test_db(backend).await else {
        return;
    };
    let out = import(&clean_db.url, sample);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(&clean_db.url, "SELECT COUNT(*) FROM watched_appointments").await,
        documents.len() as i64
    );
    assert_eq!(
        count(&clean_db.url, "SELECT COUNT(*) FROM incidents").await,
        0,
        "shared slots pair a cancelled row with an occupying one"
    );

    let occupying: Vec<usize> = (0..documents.len())
        .filter(|i| {
            !matches!(
                documents[*i]["status"].as_str(),
                Some("Cancelled" | "No-show")
            )
        })
        .collect();
    let mut altered = documents.clone();
    let (keep, change) = (occupying[0], occupying[1]);
    for field in ["clinicId", "doctorId", "date", "slotIndex"] {
        altered[change][field] = documents[keep][field].clone();
    }
    altered[change]["tokenNumber"] = json!("A9-999");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("altered.json");
    std::fs::write(&file, serde_json::to_string(&altered).unwrap()).unwrap();
    let Some(dup_db) = test_db(backend).await else {
        return;
    };
    let out = import(&dup_db.url, file.to_str().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(&dup_db.url, "SELECT COUNT(*) FROM incidents").await,
        1
    );
    assert_eq!(
        count(
            &dup_db.url,
            "SELECT COUNT(*) FROM incidents WHERE kind = 'slot' AND state = 'open'"
        )
        .await,
        1
    );
}

pub async fn silences_hold_alerts_back_and_refused_deliveries_are_dead_letters(backend: Backend) {
    let (ok, refusing) = (Receiver::start().await, Receiver::answering(400).await);
    let hooks = vec![
        json!({"kind": "webhook", "name": "ops", "url": ok.url}),
        json!({"kind": "webhook", "name": "broken", "url": refusing.url}),
    ];
    let Some(app) = spawn_app_with(backend, test_options(&hooks, Duration::ZERO, true)).await
    else {
        return;
    };
    let silence = app.post("/api/v1/silences", json!({"clinicId": CLINIC, "kind": "slot", "reason": "migration weekend", "endsAt": "2026-12-01T12:00:00+05:30"})).await;
    assert_eq!(silence.status, StatusCode::CREATED, "{}", silence.text);
    put(&app, &document("a", 5, "Pending", 0)).await;
    put(&app, &document("b", 5, "Pending", 0)).await;
    eventually(10, "the incident", || async {
        incidents(&app).await.into_iter().next()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ok.messages().is_empty(),
        "a silenced incident alerts nobody"
    );

    let ended = send(
        &app.client,
        Method::DELETE,
        &app.url(&format!(
            "/api/v1/silences/{}",
            silence.body["id"].as_str().unwrap()
        )),
        Some(&app.admin_key),
        None,
        &[],
    )
    .await;
    assert_eq!(ended.body["ended"], true);
    put(&app, &document("c", 5, "Pending", 1)).await;
    eventually(10, "the alert once the silence ended", || async {
        (!ok.messages().is_empty()).then_some(())
    })
    .await;
    let dead = eventually(10, "the dead letter", || async {
        let listed = app.get("/api/v1/notifications?state=dead").await;
        listed.body["notifications"]
            .as_array()
            .and_then(|n| n.first().cloned())
    })
    .await;
    assert_eq!(dead["channel"], "broken");
    assert!(
        dead["lastError"].as_str().unwrap().contains("400"),
        "{dead}"
    );
    assert_eq!(
        refusing.messages().len(),
        1,
        "a permanent refusal is not retried"
    );
}

/// Two servers on one PostgreSQL database, no re-scan: the one holding the detector
/// lease hears of a duplicate written through the other by its announcement alone.
pub async fn a_duplicate_written_through_one_server_is_found_by_the_other(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let options = || {
        let mut o = test_options(&[], Duration::ZERO, true);
        o.detect.rescan_every = Duration::from_secs(3600);
        o
    };
    let second_db = db.shared();
    // The first to start takes the detector lease (its clock never moves on).
    let detecting = start_app(db, options()).await;
    detecting
        .clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writing = start_app(second_db, options()).await;
    for doc in [
        document("doc-a", 5, "Pending", 0),
        document("doc-b", 5, "Confirmed", 1),
    ] {
        assert_eq!(put(&writing, &doc).await.status, StatusCode::OK);
    }
    let found = eventually(10, "the incident, found by the other server", || async {
        incidents(&detecting).await.into_iter().next()
    })
    .await;
    assert_eq!(found["key"], "5");
}

/// `GET /incidents` pages: `limit` at a time, newest first, with the cursor of the
/// next page; every incident on exactly one page, and bad paging refused by name.
pub async fn the_incident_list_pages_with_a_cursor_and_loses_none(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for slot in [3, 4, 5, 6, 7] {
        for id in ["x", "y"] {
            let doc = document(&format!("doc-{slot}-{id}"), slot, "Pending", 0);
            assert_eq!(put(&app, &doc).await.status, StatusCode::OK);
        }
    }
    eventually(10, "five incidents", || async {
        (incidents(&app).await.len() == 5).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    let mut path = format!("/api/v1/incidents?clinicId={CLINIC}&limit=2");
    let mut pages = 0;
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let list = page.body["incidents"].as_array().unwrap();
        assert!(list.len() <= 2, "{}", page.text);
        seen.extend(list.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page.body["next"].as_str() {
            Some(next) => {
                let cursor = serde_urlencoded::to_string([("cursor", next)]).unwrap();
                path = format!("/api/v1/incidents?clinicId={CLINIC}&limit=2&{cursor}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (5, 5), "each once: {seen:?}");
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=yesterday", "cursor"),
    ] {
        let refused = app
            .get(&format!("/api/v1/incidents?clinicId={CLINIC}&{query}"))
            .await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(refused.body["error"]["details"]["field"], field, "{query}");
    }
}

/// A server that stops cleanly gives up its leases: the next one detects at once
/// instead of waiting for them to run out (the test clock never moves, so a lease
/// left behind would never run out and nothing would be detected).
pub async fn a_server_that_stops_cleanly_hands_detection_over_at_once(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let first = start_app(db, test_options(&[], Duration::ZERO, true)).await;
    first
        .clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    let store = first.app.state.bookings.store();
    eventually(10, "the first server holds the detector lease", || async {
        store.detector_lease_expiry().await.unwrap()
    })
    .await;
    let db = first.stop().await;
    let second = start_app(db, test_options(&[], Duration::ZERO, true)).await;
    for doc in [
        document("doc-a", 5, "Pending", 0),
        document("doc-b", 5, "Confirmed", 1),
    ] {
        assert_eq!(put(&second, &doc).await.status, StatusCode::OK);
    }
    let found = eventually(5, "the incident, found by the second server", || async {
        incidents(&second).await.into_iter().next()
    })
    .await;
    assert_eq!(found["key"], "5");
}

/// A person's resolve racing the detector's save of the same incident: the save made
/// from what was read before the resolve is refused (the incident changed meanwhile),
/// and the detector reads again and decides again; so a resolve the API answered 200
/// is never undone (before, the stale save reopened the incident and dropped the note).
pub async fn a_resolve_racing_the_detector_is_never_undone(backend: Backend) {
    use slotguard::clock::Clock;
    use slotguard::detect::reconcile::reconcile;
    use slotguard::domain::{FoundBy, Group};
    use slotguard::store::StoreError;
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for id in ["a", "b"] {
        assert_eq!(
            put(&app, &document(id, 5, "Pending", 0)).await.status,
            StatusCode::OK
        );
    }
    let opened = eventually(10, "the incident", || async {
        incidents(&app).await.into_iter().next()
    })
    .await;
    let store = app.app.state.bookings.store();
    let group = Group {
        clinic_id: slotguard::domain::ClinicId::parse("c", CLINIC).unwrap(),
        doctor_id: slotguard::domain::DoctorId::parse("d", "dr-asha").unwrap(),
        date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
    };
    // The detector has read the day (the incident open, two members)…
    let read_before = store.group_incidents(&group).await.unwrap();
    // …a person resolves it…
    let id = opened["id"].as_str().unwrap();
    let resolved = app
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            json!({"note": "moved Patient b to slot 7"}),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    // …and a third patient joins: the detector decides "grew" from its stale read.
    assert_eq!(
        put(&app, &document("c", 5, "Pending", 0)).await.status,
        StatusCode::OK
    );
    let found = store.duplicates(&group).await.unwrap();
    let stale = reconcile(
        &group,
        &found,
        &read_before,
        app.clock.now(),
        FoundBy::Realtime,
    );
    assert!(!stale.is_empty(), "the stale read sees a change to save");
    let refused = store.save_incidents(&stale).await;
    assert!(
        matches!(refused, Err(StoreError::Changed(_))),
        "a save over an older revision is refused: {refused:?}"
    );
    // The detector itself reads again: the resolve stands, with its note.
    app.app
        .detector
        .check(&group, FoundBy::Realtime)
        .await
        .unwrap();
    let after = app.get(&format!("/api/v1/incidents/{id}")).await.body;
    assert_eq!(after["state"], "resolved", "{after}");
    assert_eq!(after["note"], "moved Patient b to slot 7", "{after}");

    // And racing for real, resolves and the detector's saves many times over.
    const RACES: u32 = 40;
    for slot in 10..10 + RACES {
        for id in ["a", "b"] {
            let doc = document(&format!("race-{slot}-{id}"), slot, "Pending", 0);
            assert_eq!(put(&app, &doc).await.status, StatusCode::OK);
        }
    }
    let racing = eventually(20, "an incident per slot", || async {
        let list = app
            .get(&format!(
                "/api/v1/incidents?clinicId={CLINIC}&state=open&limit=1000"
            ))
            .await
            .body["incidents"]
            .as_array()
            .cloned()?;
        (list.len() == RACES as usize).then_some(list)
    })
    .await;
    let mut checks = Vec::new();
    for incident in &racing {
        let id = incident["id"].as_str().unwrap().to_owned();
        let (client, key) = (app.client.clone(), app.admin_key.clone());
        let url = app.url(&format!("/api/v1/incidents/{id}/resolve"));
        checks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"note": format!("note of {id}")}))
                .send()
                .await
                .unwrap()
                .status()
        }));
        let slot: u32 = incident["key"].as_str().unwrap().parse().unwrap();
        put(
            &app,
            &document(&format!("race-{slot}-c"), slot, "Pending", 0),
        )
        .await;
    }
    for check in checks {
        assert_eq!(check.await.unwrap(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for incident in racing {
        let id = incident["id"].as_str().unwrap();
        let now = app.get(&format!("/api/v1/incidents/{id}")).await.body;
        assert_eq!(now["state"], "resolved", "{now}");
        assert_eq!(now["note"], format!("note of {id}"), "{now}");
    }
}

/// A watch key held to a clinic forwards that clinic's documents only: another
/// clinic's document (one, in a batch, or a delete) is refused and nothing changes,
/// so a forwarder cannot open incidents and send alerts about a clinic not its own.
pub async fn a_watch_key_held_to_a_clinic_cannot_touch_another(backend: Backend) {
    use slotguard::clock::Clock;
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let store = app.app.state.bookings.store();
    let source = slotguard::domain::ClinicId::parse("source", "kloqo").unwrap();
    let mut key = slotguard::auth::new_key(
        slotguard::domain::Role::Watch,
        vec![source],
        app.clock.now(),
    );
    key.record.watch_clinics = vec![slotguard::domain::ClinicId::parse("c", CLINIC).unwrap()];
    store.insert_api_key(&key.record).await.unwrap();
    let forwarder = key.text;
    let send_as = |method: Method, path: String, body: Option<Value>| {
        let (client, url, forwarder) = (app.client.clone(), app.url(&path), forwarder.clone());
        async move { send(&client, method, &url, Some(&forwarder), body.as_ref(), &[]).await }
    };
    let own = document("own", 5, "Pending", 0);
    let put_own = send_as(
        Method::PUT,
        "/api/v1/watch/kloqo/appointments/own".into(),
        Some(own),
    )
    .await;
    assert_eq!(put_own.status, StatusCode::OK, "{}", put_own.text);

    let mut foreign = document("foreign", 5, "Pending", 0);
    foreign["clinicId"] = json!("thrissur");
    assert_eq!(
        put(&app, &foreign).await.status,
        StatusCode::OK,
        "the admin may"
    );
    let before = app.row_counts().await;
    let refused = [
        send_as(
            Method::PUT,
            "/api/v1/watch/kloqo/appointments/foreign".into(),
            Some(foreign.clone()),
        )
        .await,
        send_as(
            Method::POST,
            "/api/v1/watch/kloqo/appointments:batch".into(),
            Some(json!([document("own-2", 6, "Pending", 0), foreign.clone()])),
        )
        .await,
        send_as(
            Method::DELETE,
            "/api/v1/watch/kloqo/appointments/foreign".into(),
            None,
        )
        .await,
    ];
    for reply in refused {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
        assert!(
            reply.text.contains("thrissur"),
            "names the clinic: {}",
            reply.text
        );
    }
    assert_eq!(app.row_counts().await, before, "nothing changed");
}

/// With no alert channel, an open incident is still reminded of once per repeat
/// interval (in the server's log), not at every pass of the dispatcher (before, a
/// reminder nobody carried left the incident "never reminded", and it was queued and
/// logged again every 30 s).
pub async fn with_no_channel_an_open_incident_is_reminded_once_per_interval(backend: Backend) {
    use slotguard::clock::Clock;
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    for doc in [
        document("doc-a", 5, "Pending", 0),
        document("doc-b", 5, "Confirmed", 1),
    ] {
        assert_eq!(put(&app, &doc).await.status, StatusCode::OK);
    }
    let incident = eventually(10, "the incident", || async {
        incidents(&app).await.into_iter().next()
    })
    .await;
    let id = incident["id"].as_str().unwrap().to_owned();
    let store = app.app.state.bookings.store();
    let reminders = || async {
        store
            .outbox_events(&id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event == "reminder")
            .count()
    };
    // Let the opening alert be grouped and handled, then five hours pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.clock.set(app.clock.now() + chrono::Duration::hours(5));
    eventually(10, "the reminder", || async {
        (reminders().await >= 1).then_some(())
    })
    .await;
    // Many more passes of the dispatcher (every 50 ms in tests), no time passing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reminders().await, 1, "one reminder per interval");
}

/// Issue 13, item 4: a server that acknowledged two watched writes making a duplicate
/// and died before checking them (its wake-up lost), then stayed down far longer
/// than the re-scan window: the next server checks every doctor-day written since
/// the persisted watermark, and the duplicate is found.
pub async fn a_duplicate_written_before_a_long_outage_is_found_at_the_next_start(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    // A server whose detector only re-scans once an hour and ignores wake-ups: it
    // makes its first pass at start, then acknowledges the writes and checks nothing.
    let deaf = slotguard::app::Options {
        detect: slotguard::detect::detector::Settings {
            wakeups: false,
            rescan_every: Duration::from_secs(3600),
            ..Default::default()
        },
        ..test_options(&[], Duration::ZERO, false)
    };
    let first = start_app_at(db, deaf, kolkata(DAY, 5, 0)).await;
    let store = first.app.state.bookings.store();
    eventually(30, "the first server's first pass", || async {
        store
            .watermark(slotguard::detect::detector::WATERMARK)
            .await
            .unwrap()
    })
    .await;
    first.clock.set(kolkata(DAY, 5, 1));
    for id in ["a", "b"] {
        let reply = put(&first, &document(id, 5, "Pending", 0)).await;
        assert!(reply.status.is_success(), "{}", reply.text);
    }
    let db = first.stop().await;

    // Back an hour later: far past the 120 s re-scan window.
    let next = start_app_at(
        db,
        test_options(&[], Duration::ZERO, true),
        kolkata(DAY, 6, 1),
    )
    .await;
    let found = eventually(30, "the duplicate found after the outage", || async {
        let list = next.get("/api/v1/incidents").await;
        let incidents = list.body["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!incidents.is_empty()).then_some(incidents)
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["kind"], "slot", "{found:?}");
    assert_eq!(found[0]["key"], "5", "{found:?}");
    assert_eq!(found[0]["members"].as_array().map(Vec::len), Some(2));
}

/// A Kloqo document as most of the sample's changed ones are: no `updatedAt`, so
/// the document alone cannot say which of two events is newer.
fn undated(id: &str, slot: u32, status: &str) -> Value {
    let mut doc = document(id, slot, status, 0);
    doc.as_object_mut().unwrap().remove("updatedAt");
    doc
}

async fn put_at(app: &TestApp, doc: &Value, update_time: &str) -> Reply {
    let id = doc["id"].as_str().unwrap();
    let headers = [("X-Update-Time", update_time)];
    watch_call(app, Method::PUT, id, Some(doc), &headers).await
}

/// The open incidents' slots, once detection has settled.
async fn open_slots(app: &TestApp) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut slots: Vec<String> = incidents(app)
        .await
        .iter()
        .filter(|i| i["state"] != "resolved")
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect();
    slots.sort();
    slots
}

/// Issue 13, item 3: events of one document arriving out of order. With the
/// source's write time (`X-Update-Time`, Firestore's updateTime) the older event
/// never overwrites the newer; with no time that can order them, the later stage of
/// the day wins whichever arrives last, so the end state does not depend on arrival.
pub async fn events_out_of_order_never_undo_a_newer_one(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // Slot 5: doc-a double-books doc-z, is cancelled, then its older Pending event
    // arrives late. It must not reopen the incident.
    put(&app, &undated("doc-z", 5, "Pending")).await;
    put_at(
        &app,
        &undated("doc-a", 5, "Pending"),
        "2026-12-01T04:00:00Z",
    )
    .await;
    assert_eq!(open_slots(&app).await, ["5"]);
    put_at(
        &app,
        &undated("doc-a", 5, "Cancelled"),
        "2026-12-01T04:05:00.5Z",
    )
    .await;
    let late = put_at(
        &app,
        &undated("doc-a", 5, "Pending"),
        "2026-12-01T04:00:00Z",
    )
    .await;
    assert_eq!(late.body["applied"], false, "{}", late.text);
    assert_eq!(
        open_slots(&app).await,
        Vec::<String>::new(),
        "no phantom on slot 5"
    );

    // Slot 10: doc-m moves from slot 11 onto doc-w's slot 10, then its older event
    // (still in slot 11) arrives late. The double booking must stay seen.
    put(&app, &undated("doc-w", 10, "Pending")).await;
    put_at(
        &app,
        &undated("doc-m", 11, "Pending"),
        "2026-12-01T04:10:00Z",
    )
    .await;
    put_at(
        &app,
        &undated("doc-m", 10, "Pending"),
        "2026-12-01T04:20:00Z",
    )
    .await;
    let late = put_at(
        &app,
        &undated("doc-m", 11, "Pending"),
        "2026-12-01T04:10:00Z",
    )
    .await;
    assert_eq!(late.body["applied"], false, "{}", late.text);
    assert_eq!(
        open_slots(&app).await,
        ["10"],
        "the move onto slot 10 is not hidden"
    );

    // No time to order them by (same createdAt, no updatedAt, no header): slot 20
    // gets Cancelled then Pending, slot 21 Pending then Cancelled. Both end
    // cancelled: no incident on either, whatever the order of arrival.
    put(&app, &undated("doc-y", 20, "Pending")).await;
    put(&app, &undated("doc-x", 21, "Pending")).await;
    put(&app, &undated("doc-c", 20, "Cancelled")).await;
    let tie = put(&app, &undated("doc-c", 20, "Pending")).await;
    assert_eq!(tie.body["applied"], false, "{}", tie.text);
    put(&app, &undated("doc-d", 21, "Pending")).await;
    put(&app, &undated("doc-d", 21, "Cancelled")).await;
    assert_eq!(
        open_slots(&app).await,
        ["10"],
        "slots 20 and 21 end alike, with no incident"
    );

    // A malformed header is refused, naming it, and stores nothing.
    let bad = put_at(&app, &undated("doc-q", 30, "Pending"), "yesterday").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert_eq!(bad.body["error"]["details"]["field"], "X-Update-Time");
    let far = put_at(
        &app,
        &undated("doc-q", 30, "Pending"),
        "9999-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(far.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", far.text);
    let stored = delete_document(&app, "doc-q").await;
    assert_eq!(
        stored.status,
        StatusCode::NOT_FOUND,
        "doc-q was never stored"
    );
}

/// A burst touches many doctor-days at once; the detector reads their duplicates and
/// incidents a few hundred days (or slots and tokens) to a statement. What it reads
/// for 450 days together (three statements), or for their written slots and tokens
/// (four), is what it reads for each day alone, and every planted duplicate is one
/// incident.
pub async fn many_days_checked_together_find_what_each_day_alone_finds(backend: Backend) {
    use slotguard::domain::Group;
    const DAYS: usize = 450;
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // Day i: two patients, in slots 1 and 2; on every third day the second is moved
    // onto slot 1 (a slot duplicate), on every fifth it also takes the first's token.
    let mut documents = Vec::new();
    for day in 0..DAYS {
        for patient in 0..2u32 {
            let mut doc = document(&format!("day{day}-p{patient}"), 1 + patient, "Pending", 0);
            doc["doctorId"] = json!(format!("dr-{day}"));
            if patient == 1 && day % 3 == 0 {
                doc["slotIndex"] = json!(1);
            }
            if patient == 1 && day % 5 == 0 {
                doc["tokenNumber"] = json!("A1-002");
            }
            documents.push(doc);
        }
    }
    for batch in documents.chunks(100) {
        let sent = app
            .post(
                "/api/v1/watch/kloqo/appointments:batch",
                json!({ "documents": batch }),
            )
            .await;
        assert_eq!(sent.status, StatusCode::OK, "{}", sent.text);
    }
    // A slot and its token given to the same two patients is one double booking.
    let planted = (0..DAYS).filter(|d| d % 3 == 0 || d % 5 == 0).count();
    let open = eventually(20, "every planted duplicate's incident", || async {
        let listed = app
            .get(&format!("/api/v1/incidents?clinicId={CLINIC}&limit=1000"))
            .await
            .body;
        let open = listed["incidents"].as_array().map_or(0, Vec::len);
        (open == planted).then_some(open)
    })
    .await;
    assert_eq!(open, planted);

    let store = app.app.state.bookings.store();
    let mut days: Vec<Group> = (0..DAYS)
        .map(|day| Group {
            clinic_id: slotguard::domain::ClinicId::parse("c", CLINIC).unwrap(),
            doctor_id: slotguard::domain::DoctorId::parse("d", &format!("dr-{day}")).unwrap(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        })
        .collect();
    days.push(Group {
        date: chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(),
        ..days[0].clone()
    });
    let together = store.duplicates_of(&days).await.unwrap();
    let incidents_together = store.incidents_of(&days).await.unwrap();
    assert_eq!(
        together.len(),
        planted,
        "days without a duplicate are left out"
    );
    // Reading only where the documents are (slots 1 and 2, their tokens) finds the
    // same; reading only slot 2 finds no slot duplicate (they are all in slot 1),
    // only the tokens given twice.
    let everywhere = slotguard::domain::Keys {
        slots: [1, 2].into(),
        tokens: ["A1-002".to_owned(), "A1-003".to_owned()].into(),
    };
    let keyed: Vec<_> = days
        .iter()
        .map(|d| (d.clone(), everywhere.clone()))
        .collect();
    assert_eq!(store.duplicates_at(&keyed).await.unwrap(), together);
    let slot_2 = slotguard::domain::Keys {
        slots: [2].into(),
        tokens: ["A1-002".to_owned()].into(),
    };
    let keyed: Vec<_> = days.iter().map(|d| (d.clone(), slot_2.clone())).collect();
    let at_slot_2 = store.duplicates_at(&keyed).await.unwrap();
    assert_eq!(at_slot_2.len(), (0..DAYS).filter(|d| d % 5 == 0).count());
    assert!(at_slot_2
        .values()
        .flatten()
        .all(|d| d.kind == slotguard::domain::DuplicateKind::Token && d.key == "A1-002"));
    for day in &days {
        let alone = store.duplicates(day).await.unwrap();
        assert_eq!(
            together.get(day).cloned().unwrap_or_default(),
            alone,
            "{day:?}"
        );
        // What the detector decides from (the alert dispatcher may note a
        // notification on an incident between the reads).
        let decided = |incidents: Vec<slotguard::domain::Incident>| {
            let mut decided: Vec<_> = incidents
                .into_iter()
                .map(|i| (i.id, i.kind, i.key, i.state, i.members))
                .collect();
            decided.sort_by(|a, b| a.0.cmp(&b.0));
            decided
        };
        let incidents_alone = store.group_incidents(day).await.unwrap();
        assert_eq!(
            decided(incidents_together.get(day).cloned().unwrap_or_default()),
            decided(incidents_alone.clone()),
            "{day:?}"
        );
        assert_eq!(
            incidents_alone.len(),
            usize::from(!alone.is_empty()),
            "one incident per double booking: {day:?}"
        );
    }
}

/// Wake-ups are gathered for a short debounce counted from the first one, so a
/// steady stream of writes (one every few milliseconds, never a pause as long as the
/// debounce) does not put the check off until the stream stops. Before, each new
/// wake-up restarted the debounce and only the periodic re-scan found the duplicate.
pub async fn a_duplicate_amid_a_steady_stream_of_writes_is_found_while_it_lasts(backend: Backend) {
    let options = without_rescan(test_options(&[], Duration::ZERO, true));
    let Some(app) = spawn_app_with(backend, options).await else {
        return;
    };
    put(&app, &document("a", 5, "Pending", 0)).await;
    put(&app, &document("b", 5, "Pending", 0)).await;
    let started = std::time::Instant::now();
    let mut found = false;
    let mut written = 0u32;
    while started.elapsed() < Duration::from_secs(4) {
        // Other patients of another doctor, each in a slot of their own.
        let mut other = document(&format!("stream-{written}"), 100 + written, "Pending", 0);
        other["doctorId"] = json!("dr-ravi");
        assert_eq!(put(&app, &other).await.status, StatusCode::OK);
        written += 1;
        if written.is_multiple_of(20) && !incidents(&app).await.is_empty() {
            found = true;
            break;
        }
    }
    assert!(
        found,
        "the duplicate was found while {written} writes streamed in over {:?}",
        started.elapsed()
    );
}

/// A watched write is checked where it landed and where it was (its old slot and
/// token, read before it is overwritten), not its whole day: moving off a taken slot
/// resolves that slot's incident; taking another's token opens one on the token;
/// deleting it resolves that.
pub async fn a_document_moved_is_checked_where_it_was_and_where_it_went(backend: Backend) {
    // Wake-ups only: the periodic re-scan (whole days) would hide a key left out.
    let options = without_rescan(test_options(&[], Duration::ZERO, true));
    let Some(app) = spawn_app_with(backend, options).await else {
        return;
    };
    put(&app, &document("a", 5, "Pending", 0)).await;
    put(&app, &document("b", 5, "Pending", 0)).await;
    let slot = eventually(10, "the slot's incident", || async {
        incidents(&app).await.into_iter().next()
    })
    .await;
    assert_eq!(slot["key"], "5");

    put(&app, &document("b", 6, "Pending", 10)).await;
    let id = slot["id"].as_str().unwrap();
    eventually(10, "the slot's incident resolved", || async {
        let now = app.get(&format!("/api/v1/incidents/{id}")).await.body;
        (now["state"] == "resolved").then_some(())
    })
    .await;

    // b keeps slot 6 but takes a's token: a token incident, in neither slot.
    assert!(
        incidents(&app)
            .await
            .iter()
            .all(|i| i["state"] == "resolved"),
        "b in slot 6 holds token A1-007 of its own"
    );
    let mut token_taken = document("b", 6, "Pending", 20);
    token_taken["tokenNumber"] = document("a", 5, "Pending", 0)["tokenNumber"].clone();
    put(&app, &token_taken).await;
    let token = eventually(10, "the token's incident", || async {
        incidents(&app)
            .await
            .into_iter()
            .find(|i| i["kind"] == "token" && i["state"] == "open")
    })
    .await;
    assert_eq!(token["key"], "A1-006");

    assert_eq!(delete_document(&app, "b").await.status, StatusCode::OK);
    let tid = token["id"].as_str().unwrap();
    eventually(10, "the token's incident resolved", || async {
        let now = app.get(&format!("/api/v1/incidents/{tid}")).await.body;
        (now["state"] == "resolved").then_some(())
    })
    .await;
}

/// Single documents sent at once are stored together (on SQLite in one transaction,
/// a savepoint each); every one is answered only once committed, applied or stale by
/// its own version, and their duplicates are found as if sent one by one.
pub async fn documents_sent_at_once_are_each_stored_once_and_their_duplicates_found(
    backend: Backend,
) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // 60 pairs in 60 slots; each pair's second copy also sent in an older version,
    // after or alongside it.
    let sends = (0..60u32).flat_map(|slot| {
        [
            document(&format!("first-{slot}"), slot, "Pending", 0),
            document(&format!("second-{slot}"), slot, "Pending", 10),
            document(&format!("second-{slot}"), slot + 100, "Pending", 5),
        ]
    });
    let answers = futures_util::future::join_all(sends.map(|doc| {
        let app = &app;
        async move { (put(app, &doc).await, doc) }
    }))
    .await;
    for (answer, doc) in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        if doc["slotIndex"].as_u64().unwrap() < 100 {
            assert_eq!(
                answer.body["applied"], true,
                "the newest is always applied: {doc}"
            );
        }
    }
    let found = eventually(10, "one incident per pair", || async {
        let listed = incidents(&app).await;
        (listed.len() == 60).then_some(listed)
    })
    .await;
    assert!(found
        .iter()
        .all(|i| i["kind"] == "slot" && i["state"] == "open"));
}
