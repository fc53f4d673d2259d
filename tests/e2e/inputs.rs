//! Bad input gets the documented 4xx with an actionable message and changes nothing;
//! keys are held to their role and clinic.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slotguard::domain::Role;

use crate::support::*;

const CLINIC: &str = "kochi";

fn booking(extra: Value) -> Value {
    let mut body = json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": DAY, "slotIndex": 5, "patientName": "Anu"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

/// One row of the table: what is sent and what must come back.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    key: Option<String>,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    path: &str,
    body: Value,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method: Method::POST,
        path: path.to_owned(),
        key: None,
        body: Some(body.to_string()),
        headers: vec![],
        status,
        code,
        field,
    }
}

fn raw(what: &'static str, body: &str, status: u16, code: &'static str) -> Case {
    Case {
        body: Some(body.to_owned()),
        ..case(what, "/api/v1/appointments", json!({}), status, code, None)
    }
}

const BOOK: &str = "/api/v1/appointments";

pub async fn bad_inputs_get_the_documented_4xx_and_change_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    app.post("/api/v1/clinics", json!({"id": "other", "name": "Other"}))
        .await;
    app.post(
        "/api/v1/clinics",
        json!({"id": "strict", "name": "Strict", "minLeadMinutes": 240}),
    )
    .await;
    app.post(
        "/api/v1/clinics/strict/doctors",
        doctor_body("dr-asha", 10, json!([{"from": "09:00", "to": "13:00"}])),
    )
    .await;
    let taken = app.post(BOOK, booking(json!({"slotIndex": 7}))).await;
    let taken_id = taken.body["id"].as_str().unwrap().to_owned();
    let booking_app = app.key(Role::Booking, &[]).await;
    let other_staff = app.key(Role::Clinic, &["other"]).await;

    let mut cases = vec![
        case(
            "slot misspelled as slot (it would book the earliest slot instead)",
            BOOK,
            booking(json!({"slotIndex": null, "slot": 5})),
            422,
            "invalid_field",
            Some("slot"),
        ),
        case(
            "slot misspelled as slot_index",
            BOOK,
            booking(json!({"slotIndex": null, "slot_index": 5})),
            422,
            "invalid_field",
            Some("slot_index"),
        ),
        case(
            "slot misspelled as SlotIndex",
            BOOK,
            booking(json!({"slotIndex": null, "SlotIndex": 5})),
            422,
            "invalid_field",
            Some("SlotIndex"),
        ),
        case(
            "an unknown field on a walk-in",
            "/api/v1/appointments/walk-in",
            json!({"clinicId": CLINIC, "doctorId": "dr-asha", "patientName": "Anu", "forced": true}),
            422,
            "invalid_field",
            Some("forced"),
        ),
        case(
            "an unknown field on a clinic",
            "/api/v1/clinics",
            json!({"id": "typo", "name": "Typo", "timeZone": "Asia/Kolkata"}),
            422,
            "invalid_field",
            Some("timeZone"),
        ),
        raw("malformed JSON", "{\"clinicId\": ", 400, "malformed_body"),
        raw("not an object", "[1, 2]", 400, "malformed_body"),
        raw("empty body", "", 400, "malformed_body"),
        case(
            "slotIndex as a string",
            BOOK,
            booking(json!({"slotIndex": "5"})),
            422,
            "invalid_field",
            Some("slotIndex"),
        ),
        case(
            "slotIndex as a fraction",
            BOOK,
            booking(json!({"slotIndex": 5.5})),
            422,
            "invalid_field",
            Some("slotIndex"),
        ),
        case(
            "patientName as a number",
            BOOK,
            booking(json!({"patientName": 42})),
            422,
            "invalid_field",
            Some("patientName"),
        ),
        case(
            "missing patientName",
            BOOK,
            booking(json!({"patientName": null})),
            422,
            "invalid_field",
            Some("patientName"),
        ),
        case(
            "missing clinicId",
            BOOK,
            booking(json!({"clinicId": null})),
            422,
            "invalid_field",
            Some("clinicId"),
        ),
        case(
            "missing date",
            BOOK,
            booking(json!({"date": null})),
            422,
            "invalid_field",
            Some("date"),
        ),
        case(
            "negative slot",
            BOOK,
            booking(json!({"slotIndex": -1})),
            422,
            "invalid_field",
            Some("slotIndex"),
        ),
        case(
            "slot past the session",
            BOOK,
            booking(json!({"slotIndex": 24})),
            422,
            "slot_out_of_range",
            Some("slotIndex"),
        ),
        case(
            "slot of a session that does not exist",
            BOOK,
            booking(json!({"slotIndex": 1000})),
            422,
            "slot_out_of_range",
            Some("slotIndex"),
        ),
        case(
            "absurd slot",
            BOOK,
            booking(json!({"slotIndex": 9_999_999_999_i64})),
            422,
            "invalid_field",
            Some("slotIndex"),
        ),
        case(
            "past date",
            BOOK,
            booking(json!({"date": "2026-11-30"})),
            422,
            "date_in_past",
            Some("date"),
        ),
        case(
            "impossible date",
            BOOK,
            booking(json!({"date": "2026-02-30"})),
            422,
            "invalid_field",
            Some("date"),
        ),
        case(
            "date in another format",
            BOOK,
            booking(json!({"date": "1 December 2026"})),
            422,
            "invalid_field",
            Some("date"),
        ),
        case(
            "date years ahead",
            BOOK,
            booking(json!({"date": "2031-01-01"})),
            422,
            "date_too_far",
            Some("date"),
        ),
        case(
            "unknown clinic",
            BOOK,
            booking(json!({"clinicId": "nowhere"})),
            404,
            "clinic_not_found",
            None,
        ),
        case(
            "unknown doctor",
            BOOK,
            booking(json!({"doctorId": "dr-nobody"})),
            404,
            "doctor_not_found",
            None,
        ),
        case(
            "reserved walk-in slot",
            BOOK,
            booking(json!({"slotIndex": 21})),
            409,
            "slot_reserved_walk_in",
            Some("slotIndex"),
        ),
        case(
            "slot inside the lead time",
            BOOK,
            booking(json!({"clinicId": "strict", "slotIndex": 0})),
            422,
            "slot_too_soon",
            Some("slotIndex"),
        ),
        case(
            "taken slot",
            BOOK,
            booking(json!({"slotIndex": 7})),
            409,
            "slot_taken",
            None,
        ),
        case(
            "path tricks in clinicId",
            BOOK,
            booking(json!({"clinicId": "../../etc/passwd"})),
            422,
            "invalid_field",
            Some("clinicId"),
        ),
        case(
            "SQL in doctorId",
            BOOK,
            booking(json!({"doctorId": "x' OR '1'='1"})),
            422,
            "invalid_field",
            Some("doctorId"),
        ),
        case(
            "NUL in a name",
            BOOK,
            booking(json!({"patientName": "An\u{0}u"})),
            422,
            "invalid_field",
            Some("patientName"),
        ),
        case(
            "name of 10 000 characters",
            BOOK,
            booking(json!({"patientName": "x".repeat(10_000)})),
            422,
            "invalid_field",
            Some("patientName"),
        ),
        case(
            "blank name",
            BOOK,
            booking(json!({"patientName": "   "})),
            422,
            "invalid_field",
            Some("patientName"),
        ),
        case(
            "phone that is not one",
            BOOK,
            booking(json!({"patientPhone": "call me"})),
            422,
            "invalid_field",
            Some("patientPhone"),
        ),
        case(
            "oversized body",
            BOOK,
            booking(json!({"patientName": "x".repeat(100_000)})),
            413,
            "body_too_large",
            None,
        ),
        case(
            "unknown status",
            &format!("{BOOK}/{taken_id}/status"),
            json!({"status": "Done"}),
            422,
            "invalid_field",
            Some("status"),
        ),
        case(
            "appointment id that is no id",
            &format!("{BOOK}/42/cancel"),
            json!({}),
            422,
            "invalid_field",
            Some("id"),
        ),
        case(
            "unknown appointment",
            &format!("{BOOK}/{}/cancel", uuid::Uuid::new_v4()),
            json!({}),
            404,
            "appointment_not_found",
            None,
        ),
        case(
            "clinic with a made-up time zone",
            "/api/v1/clinics",
            json!({"id": "c2", "name": "C", "timezone": "Mars/Olympus"}),
            422,
            "invalid_field",
            Some("timezone"),
        ),
        case(
            "reserve ratio above 1",
            "/api/v1/clinics",
            json!({"id": "c2", "name": "C", "walkInReserveRatio": 2}),
            422,
            "invalid_field",
            Some("walkInReserveRatio"),
        ),
        case(
            "audit time that is no time of day",
            "/api/v1/clinics",
            json!({"id": "c2", "name": "C", "auditAt": "24:30"}),
            422,
            "invalid_field",
            Some("auditAt"),
        ),
        case(
            "audit of a date that does not exist",
            "/api/v1/audits",
            json!({"clinicId": CLINIC, "date": "2026-13-01"}),
            422,
            "invalid_field",
            Some("date"),
        ),
        case(
            "clinic id taken",
            "/api/v1/clinics",
            json!({"id": CLINIC, "name": "Again"}),
            409,
            "already_exists",
            Some("id"),
        ),
        case(
            "overlapping sessions",
            "/api/v1/clinics/kochi/doctors",
            doctor_body(
                "dr-b",
                10,
                json!([{"from": "09:00", "to": "12:00"}, {"from": "11:00", "to": "13:00"}]),
            ),
            422,
            "invalid_field",
            Some("availability.mon"),
        ),
        case(
            "walk-in for an unknown doctor",
            "/api/v1/appointments/walk-in",
            json!({"clinicId": CLINIC, "doctorId": "dr-x", "patientName": "A"}),
            404,
            "doctor_not_found",
            None,
        ),
        Case {
            headers: vec![("Idempotency-Key", "k".repeat(300))],
            ..case(
                "idempotency key too long",
                BOOK,
                booking(json!({})),
                422,
                "invalid_field",
                Some("Idempotency-Key"),
            )
        },
        Case {
            key: Some(String::new()),
            ..case(
                "no key",
                BOOK,
                booking(json!({"slotIndex": 6})),
                401,
                "unauthorized",
                None,
            )
        },
        Case {
            key: Some("sg_nope_nope".into()),
            ..case(
                "unknown key",
                BOOK,
                booking(json!({"slotIndex": 6})),
                401,
                "unauthorized",
                None,
            )
        },
        Case {
            key: Some(booking_app.clone()),
            ..case(
                "wrong role",
                "/api/v1/clinics",
                json!({"id": "c3", "name": "C"}),
                403,
                "forbidden",
                None,
            )
        },
        Case {
            key: Some(other_staff.clone()),
            ..case(
                "other clinic's key",
                BOOK,
                booking(json!({"slotIndex": 6})),
                403,
                "forbidden",
                None,
            )
        },
        Case {
            key: Some(other_staff.clone()),
            ..case(
                "other clinic's appointment",
                &format!("{BOOK}/{taken_id}/cancel"),
                json!({}),
                403,
                "forbidden",
                None,
            )
        },
        Case {
            method: Method::GET,
            body: None,
            ..case(
                "availability without a date",
                "/api/v1/clinics/kochi/doctors/dr-asha/availability",
                json!({}),
                422,
                "invalid_field",
                Some("date"),
            )
        },
        Case {
            method: Method::GET,
            body: None,
            ..case(
                "list with limit 0",
                "/api/v1/appointments?limit=0",
                json!({}),
                422,
                "invalid_field",
                Some("limit"),
            )
        },
        Case {
            method: Method::GET,
            body: None,
            ..case(
                "unknown route",
                "/api/v1/nothing-here",
                json!({}),
                404,
                "not_found",
                None,
            )
        },
        Case {
            method: Method::GET,
            body: None,
            ..case(
                "a NUL byte in an id",
                "/api/v1/incidents/%00",
                json!({}),
                404,
                "not_found",
                None,
            )
        },
        Case {
            method: Method::DELETE,
            body: None,
            ..case(
                "a NUL byte inside a watched document's id",
                "/api/v1/watch/kloqo/appointments/a%00b",
                json!({}),
                404,
                "not_found",
                None,
            )
        },
        Case {
            method: Method::GET,
            body: None,
            ..case(
                "an id that is not UTF-8",
                "/api/v1/incidents/%FF%FE",
                json!({}),
                400,
                "malformed_path",
                None,
            )
        },
        Case {
            method: Method::PUT,
            ..case(
                "a watched document created before 4713 BC",
                "/api/v1/watch/kloqo/appointments/ancient",
                {
                    let mut doc = crate::detection::document("ancient", 3, "Pending", 0);
                    doc["createdAt"] = json!({"_seconds": -300_000_000_000i64, "_nanoseconds": 0});
                    doc
                },
                422,
                "invalid_field",
                Some("createdAt"),
            )
        },
        Case {
            method: Method::PUT,
            ..case(
                "a watched document updated in year 9999",
                "/api/v1/watch/kloqo/appointments/future",
                {
                    let mut doc = crate::detection::document("future", 3, "Pending", 0);
                    doc["updatedAt"] = json!("9999-12-31T00:00:00Z");
                    doc
                },
                422,
                "invalid_field",
                Some("updatedAt"),
            )
        },
        Case {
            method: Method::PUT,
            ..case(
                "a watched document updated two days after the server's clock",
                "/api/v1/watch/kloqo/appointments/ahead",
                {
                    let mut doc = crate::detection::document("ahead", 3, "Pending", 0);
                    doc["updatedAt"] = json!("2026-12-03T06:00:00Z");
                    doc
                },
                422,
                "invalid_field",
                Some("updatedAt"),
            )
        },
        Case {
            method: Method::DELETE,
            body: None,
            ..case(
                "wrong method",
                BOOK,
                json!({}),
                405,
                "method_not_allowed",
                None,
            )
        },
    ];
    for c in &mut cases {
        if c.key.is_none() {
            c.key = Some(app.admin_key.clone());
        }
    }

    let before = app.row_counts().await;
    for c in cases {
        let mut request = app
            .client
            .request(c.method.clone(), app.url(&c.path))
            .header("content-type", "application/json");
        if let Some(key) = c.key.as_deref().filter(|k| !k.is_empty()) {
            request = request.bearer_auth(key);
        }
        for (name, value) in &c.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = c.body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let reply: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status.as_u16(), c.status, "{}: {reply}", c.what);
        assert_eq!(reply["error"]["code"], c.code, "{}: {reply}", c.what);
        let message = reply["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.len() > 10,
            "{}: a person needs a message, got {reply}",
            c.what
        );
        if let Some(field) = c.field {
            assert_eq!(
                reply["error"]["details"]["field"], field,
                "{}: {reply}",
                c.what
            );
        }
        if c.what.starts_with("slot misspelled") {
            assert!(
                message.contains("did you mean slotIndex?"),
                "{}: {reply}",
                c.what
            );
        }
        if c.what == "an unknown field on a clinic" {
            assert!(message.contains("did you mean timezone?"), "{reply}");
        }
    }
    assert_eq!(
        app.row_counts().await,
        before,
        "refused requests left rows behind"
    );

    let hostile = "Robert'); DROP TABLE appointments;-- <script>alert(1)</script> \u{202e}";
    let stored = app
        .post(
            BOOK,
            booking(json!({"slotIndex": 8, "patientName": hostile})),
        )
        .await;
    assert_eq!(
        stored.status,
        StatusCode::CREATED,
        "odd but printable names are a patient's business"
    );
    assert_eq!(
        app.get(&format!("{BOOK}/{}", stored.body["id"].as_str().unwrap()))
            .await
            .body["patientName"],
        hostile
    );
}

pub async fn keys_are_held_to_their_role_and_clinic(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    app.post("/api/v1/clinics", json!({"id": "other", "name": "Other"}))
        .await;
    let staff = app.key(Role::Clinic, &[CLINIC]).await;
    let kiosk = app.key(Role::Booking, &[CLINIC]).await;
    let elsewhere = app.key(Role::Booking, &["other"]).await;

    let booked = app.post_as(&kiosk, BOOK, booking(json!({}))).await;
    assert_eq!(booked.status, StatusCode::CREATED, "{}", booked.text);
    assert_eq!(
        app.post_as(&elsewhere, BOOK, booking(json!({"slotIndex": 6})))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let list = send(
        &app.client,
        Method::GET,
        &app.url(&format!("{BOOK}?clinicId={CLINIC}")),
        Some(&kiosk),
        None,
        &[],
    )
    .await;
    assert_eq!(
        list.status,
        StatusCode::FORBIDDEN,
        "a patient app may not list other patients"
    );
    let list = send(
        &app.client,
        Method::GET,
        &app.url(&format!("{BOOK}?clinicId={CLINIC}")),
        Some(&staff),
        None,
        &[],
    )
    .await;
    assert_eq!(list.body["appointments"].as_array().map(Vec::len), Some(1));
    let everything = send(
        &app.client,
        Method::GET,
        &app.url(BOOK),
        Some(&staff),
        None,
        &[],
    )
    .await;
    assert_eq!(
        everything.status,
        StatusCode::FORBIDDEN,
        "staff list their own clinic only"
    );

    let id = booked.body["id"].as_str().unwrap();
    let confirm = app
        .post_as(
            &kiosk,
            &format!("{BOOK}/{id}/status"),
            json!({"status": "Confirmed"}),
        )
        .await;
    assert_eq!(
        confirm.status,
        StatusCode::FORBIDDEN,
        "status changes are the clinic's"
    );
    let confirm = app
        .post_as(
            &staff,
            &format!("{BOOK}/{id}/status"),
            json!({"status": "Confirmed"}),
        )
        .await;
    assert_eq!(confirm.body["status"], "Confirmed");
    let cancel = app
        .post_as(&kiosk, &format!("{BOOK}/{id}/cancel"), json!({}))
        .await;
    assert_eq!(cancel.body["status"], "Cancelled");

    let store = slotguard::store::open(&app.db.url, slotguard::store::SqliteSync::Full)
        .await
        .unwrap();
    let kiosk_id = kiosk.split('_').nth(1).unwrap();
    assert!(store
        .revoke_api_key(kiosk_id, chrono::Utc::now())
        .await
        .unwrap());
    assert_eq!(
        app.post_as(&kiosk, BOOK, booking(json!({"slotIndex": 9})))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// A flood of bad keys from one address is refused from memory after a burst (429
/// with Retry-After) while good keys go on; a key over its own rate is slowed the
/// same way.
pub async fn bad_keys_are_rate_limited_per_address_and_keys_per_key(backend: Backend) {
    use slotguard::http::limits::{Limits, Rate};
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let burst = Limits::default().failed_auth.burst as usize;
    // The good key has been used from this address before the flood.
    assert_eq!(app.get("/api/v1/clinics").await.status, StatusCode::OK);
    let mut statuses = Vec::new();
    for i in 0..burst + 10 {
        let reply = send(
            &app.client,
            Method::GET,
            &app.url("/api/v1/clinics"),
            Some(&format!("sg_nosuchkey_{i}")),
            None,
            &[],
        )
        .await;
        statuses.push(reply.status.as_u16());
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.code(), "rate_limited");
            assert!(reply.body["error"]["details"]["retryAfterSeconds"].as_u64() >= Some(1));
        }
    }
    assert!(statuses[..burst].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[burst..].iter().all(|s| *s == 429), "{statuses:?}");
    let good = app.get("/api/v1/clinics").await;
    assert_eq!(good.status, StatusCode::OK, "a good key is not held up");
    let stranger = app.key(Role::Booking, &[]).await;
    let unseen = send(
        &app.client,
        Method::GET,
        &app.url("/api/v1/clinics"),
        Some(&stranger),
        None,
        &[],
    )
    .await;
    assert_eq!(
        unseen.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a key this address never used waits like the flood"
    );

    // The same app behind a listener whose keys may make 3 requests, then 1 a second.
    let limits = Limits {
        per_key: Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        ..Limits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = app.app.state.clone().with_limits(limits);
    let server = tokio::spawn(slotguard::http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let mut answers = Vec::new();
    for _ in 0..4 {
        let r = app
            .client
            .get(format!("{base}/api/v1/clinics"))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        answers.push((
            r.status().as_u16(),
            r.headers().get("retry-after").is_some(),
        ));
    }
    assert_eq!(
        answers,
        [(200, false), (200, false), (200, false), (429, true)]
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Issue 12: more clients than the server handles at once that send their headers
/// and then their bodies a byte at a time, and more that connect and say nothing,
/// hold connections, never the permits of requests being handled: a booking and
/// `/healthz` are still answered. The slow bodies are answered 408 when the body
/// timeout is up, the silent connections closed at the header timeout, and past the
/// connection cap a new connection is closed at once, until some close.
pub async fn slow_and_silent_clients_lock_nobody_out(backend: Backend) {
    use slotguard::http::limits::Limits;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    let before = app.row_counts().await;
    let limits = Limits {
        header_timeout: std::time::Duration::from_secs(3),
        body_timeout: std::time::Duration::from_secs(4),
        ..Limits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let base = format!("http://{address}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = app.app.state.clone().with_limits(limits);
    let server = tokio::spawn(slotguard::http::serve(listener, state, async {
        let _ = stopped.await;
    }));

    // More slow senders than the 1,024 requests handled at once.
    let slow_senders = slotguard::http::MAX_IN_FLIGHT + 76;
    let head = format!(
        "POST {BOOK} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{",
        app.admin_key
    );
    let mut slow = Vec::new();
    for _ in 0..slow_senders {
        let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    // Each slow sender sends one more byte: still far from its 200.
    for s in &mut slow {
        s.write_all(b" ").await.unwrap();
    }

    let health = app
        .client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "/healthz is answered");
    let booked = app
        .client
        .post(format!("{base}{BOOK}"))
        .bearer_auth(&app.admin_key)
        .json(&booking(json!({"slotIndex": 9})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        booked.status(),
        StatusCode::CREATED,
        "a booking is answered"
    );

    // Each slow sender gets a 408 in the error envelope when its time is up.
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for mut s in slow {
        let mut text = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut text))
                .await;
        assert!(read.is_ok(), "a slow sender's connection was left open");
        let text = String::from_utf8_lossy(&text);
        let status = text.lines().next().unwrap_or("(nothing)").to_owned();
        if status.contains("408") {
            assert!(text.contains("\"body_timeout\""), "{text}");
        }
        *answers.entry(status).or_default() += 1;
    }
    assert_eq!(
        answers,
        [("HTTP/1.1 408 Request Timeout".to_owned(), slow_senders)].into(),
        "every slow sender is answered 408"
    );
    // The silent ones are closed at the header timeout, having been sent nothing.
    for mut s in silent {
        let mut text = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut text))
                .await;
        assert!(read.is_ok(), "an idle connection was left open");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // A listener that holds 20 connections: the 21st is closed at once, and once the
    // 20 go quiet past the header timeout, new clients are served again.
    let capped = Limits {
        header_timeout: std::time::Duration::from_secs(2),
        max_connections: 20,
        ..Limits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let state = app.app.state.clone().with_limits(capped);
    let server = tokio::spawn(slotguard::http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let probe = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = |mut s: tokio::net::TcpStream| async move {
        s.write_all(probe.as_bytes()).await.ok();
        let mut text = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut text))
            .await;
        String::from_utf8_lossy(&text)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let over = tokio::net::TcpStream::connect(address).await.unwrap();
    assert_eq!(
        answer(over).await,
        "",
        "past the cap a connection is closed unanswered"
    );
    let served = eventually(
        30,
        "a connection served once the idle ones are closed",
        || async {
            let s = tokio::net::TcpStream::connect(address).await.unwrap();
            let status = answer(s).await;
            status.contains("200").then_some(status)
        },
    )
    .await;
    assert_eq!(served, "HTTP/1.1 200 OK");
    drop(idle);
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let mut after = app.row_counts().await;
    assert_eq!(
        after["appointments"],
        json!(before["appointments"].as_i64().unwrap() + 1)
    );
    after["appointments"] = before["appointments"].clone();
    assert_eq!(after, before, "the slow senders wrote nothing");
}
