//! Stories of booking: races, walk-ins, idempotency, cancel, status, reschedule.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const CLINIC: &str = "kochi";

/// 09:00–13:00 in 10-minute slots: 24 slots; the walk-in reserve is ceil(0.15 × 24) = 4.
fn morning() -> Value {
    json!([{"from": "09:00", "to": "13:00"}])
}

fn booking(slot: Option<u32>, patient: &str) -> Value {
    let mut body =
        json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": DAY, "patientName": patient});
    if let Some(slot) = slot {
        body["slotIndex"] = json!(slot);
    }
    body
}

fn walk_in(patient: &str) -> Value {
    json!({"clinicId": CLINIC, "doctorId": "dr-asha", "patientName": patient})
}

fn posts(n: usize, path: &str, body: impl Fn(usize) -> Value) -> Vec<Post> {
    (0..n).map(|i| (path.to_owned(), body(i), vec![])).collect()
}

pub async fn two_patients_racing_for_slot_5_get_one_booking(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;

    let replies = concurrently(
        &app,
        &app.admin_key,
        posts(2, "/api/v1/appointments", |i| {
            booking(Some(5), ["Anu", "Biju"][i])
        }),
    )
    .await;

    assert_eq!(tally(&replies), [(201, 1), (409, 1)].into());
    let winner = replies
        .iter()
        .find(|r| r.status == StatusCode::CREATED)
        .unwrap();
    assert_eq!(winner.body["tokenNumber"], "A1-006");
    assert_eq!(winner.body["time"], "09:50");
    let loser = replies
        .iter()
        .find(|r| r.status == StatusCode::CONFLICT)
        .unwrap();
    assert_eq!(loser.code(), "slot_taken");
    assert_eq!(
        loser.body["error"]["message"],
        "This slot is already booked. Please select another time."
    );
    assert_eq!(app.occupying(CLINIC, DAY).await.len(), 1);
}

pub async fn two_hundred_concurrent_bookings_of_one_slot_have_one_winner(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;

    let replies = concurrently(
        &app,
        &app.admin_key,
        posts(200, "/api/book-appointment", |i| {
            booking(Some(5), &format!("Patient {i}"))
        }),
    )
    .await;

    assert_eq!(tally(&replies), [(201, 1), (409, 199)].into());
    assert!(replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .all(|r| r.code() == "slot_taken"));
    assert_eq!(app.occupying(CLINIC, DAY).await.len(), 1);
}

pub async fn a_hundred_concurrent_walk_ins_get_distinct_slots_and_tokens_101_to_200(
    backend: Backend,
) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    // 09:00–21:00 in 5-minute slots: 144 slots, and it is 06:00.
    app.clinic_with_doctor(CLINIC, 5, json!([{"from": "09:00", "to": "21:00"}]))
        .await;

    let replies = concurrently(
        &app,
        &app.admin_key,
        posts(100, "/api/v1/appointments/walk-in", |i| {
            walk_in(&format!("Walk-in {i}"))
        }),
    )
    .await;

    assert_eq!(
        tally(&replies),
        [(201, 100)].into(),
        "{:?}",
        replies.iter().find(|r| r.status != StatusCode::CREATED)
    );
    let slots: BTreeSet<u64> = replies
        .iter()
        .map(|r| r.body["slotIndex"].as_u64().unwrap())
        .collect();
    let numbers: BTreeSet<u64> = replies
        .iter()
        .map(|r| r.body["numericToken"].as_u64().unwrap())
        .collect();
    let tokens: BTreeSet<String> = replies
        .iter()
        .map(|r| r.body["tokenNumber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        slots,
        (0..100).collect(),
        "walk-ins take the earliest free slots"
    );
    assert_eq!(
        numbers,
        (101..=200).collect(),
        "walk-in numbers have no gap and no repeat"
    );
    assert_eq!(tokens.len(), 100);
    assert!(tokens.contains("W1-101") && tokens.contains("W1-200"));
    assert!(replies.iter().all(|r| r.body["kind"] == "walk_in"));
}

pub async fn walk_ins_and_advance_bookings_racing_over_one_session_keep_the_invariants(
    backend: Backend,
) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;

    let mut requests = posts(30, "/api/v1/appointments", |i| {
        booking(None, &format!("Advance {i}"))
    });
    requests.extend(posts(30, "/api/v1/appointments/walk-in", |i| {
        walk_in(&format!("Walk-in {i}"))
    }));
    let replies = concurrently(&app, &app.admin_key, requests).await;

    let tally = tally(&replies);
    assert_eq!(
        tally.get(&201),
        Some(&24),
        "every one of the 24 slots is filled: {tally:?}"
    );
    assert_eq!(tally.get(&409), Some(&36), "{tally:?}");
    for refused in replies.iter().filter(|r| r.status == StatusCode::CONFLICT) {
        assert!(
            matches!(refused.code(), "no_slot_available" | "no_walk_in_slot"),
            "{}",
            refused.text
        );
    }
    let booked = app.occupying(CLINIC, DAY).await;
    assert_eq!(booked.len(), 24);
    assert_no_duplicates(&booked);
    for advance in booked.iter().filter(|a| a["kind"] == "advance") {
        assert!(
            advance["slotIndex"].as_u64().unwrap() < 20,
            "advance booking took reserved slot {}",
            advance["slotIndex"]
        );
    }
}

pub async fn fifty_requests_with_one_idempotency_key_make_one_appointment(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;

    let key = vec![("Idempotency-Key".to_owned(), "booking-7f3a".to_owned())];
    let requests = (0..50)
        .map(|_| {
            (
                "/api/v1/appointments".to_owned(),
                booking(None, "Anu"),
                key.clone(),
            )
        })
        .collect();
    let replies = concurrently(&app, &app.admin_key, requests).await;

    assert_eq!(tally(&replies), [(201, 50)].into());
    let first = &replies[0].body;
    assert!(
        replies.iter().all(|r| &r.body == first),
        "every reply is the same appointment"
    );
    assert_eq!(app.occupying(CLINIC, DAY).await.len(), 1);
    assert_eq!(app.row_counts().await["idempotency_keys"], 1);
}

pub async fn an_idempotency_key_reused_with_another_body_is_refused(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;
    let send_with_key = |body: Value| {
        let app = &app;
        async move {
            send(
                &app.client,
                reqwest::Method::POST,
                &app.url("/api/v1/appointments"),
                Some(&app.admin_key),
                Some(&body),
                &[("Idempotency-Key", "k-1")],
            )
            .await
        }
    };

    let first = send_with_key(booking(Some(3), "Anu")).await;
    let again = send_with_key(booking(Some(3), "Anu")).await;
    let other = send_with_key(booking(Some(4), "Anu")).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body),
        "same key, same body: same answer"
    );
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.code(), "idempotency_key_reused");
    assert_eq!(app.occupying(CLINIC, DAY).await.len(), 1);
}

pub async fn cancel_frees_the_slot_at_once_and_walk_in_tokens_are_not_reissued(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;

    let first = app
        .post("/api/v1/appointments", booking(Some(5), "Anu"))
        .await;
    let cancelled = app
        .post(
            &format!(
                "/api/v1/appointments/{}/cancel",
                first.body["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.body["status"], "Cancelled");
    let second = app
        .post("/api/v1/appointments", booking(Some(5), "Biju"))
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    assert_eq!(second.body["tokenNumber"], "A1-006");

    let walk_in_1 = app
        .post("/api/v1/appointments/walk-in", walk_in("Chitra"))
        .await;
    assert_eq!(walk_in_1.body["tokenNumber"], "W1-101");
    app.post(
        &format!(
            "/api/v1/appointments/{}/cancel",
            walk_in_1.body["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    let walk_in_2 = app
        .post("/api/v1/appointments/walk-in", walk_in("Deepa"))
        .await;
    assert_eq!(
        walk_in_2.body["slotIndex"], walk_in_1.body["slotIndex"],
        "the freed slot is reused at once"
    );
    assert_eq!(
        walk_in_2.body["tokenNumber"], "W1-102",
        "a cancelled walk-in's number is never issued again"
    );
}

pub async fn no_show_frees_the_slot_but_every_occupying_status_holds_it(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;
    let paths: [(u32, &[&str], bool); 6] = [
        (1, &["Confirmed"], false),
        (2, &["Skipped"], false),
        (3, &["InConsultation"], false),
        (4, &["InConsultation", "Completed"], false),
        (6, &["No-show"], true),
        (7, &["Confirmed", "Cancelled"], true),
    ];
    for (slot, statuses, frees) in paths {
        let booked = app
            .post("/api/v1/appointments", booking(Some(slot), "Anu"))
            .await;
        let id = booked.body["id"].as_str().unwrap().to_owned();
        for status in statuses {
            let moved = app
                .post(
                    &format!("/api/v1/appointments/{id}/status"),
                    json!({"status": status}),
                )
                .await;
            assert_eq!(moved.status, StatusCode::OK, "{status}: {}", moved.text);
        }
        let rebook = app
            .post("/api/v1/appointments", booking(Some(slot), "Biju"))
            .await;
        let expected = if frees {
            StatusCode::CREATED
        } else {
            StatusCode::CONFLICT
        };
        assert_eq!(
            rebook.status, expected,
            "slot {slot} after {statuses:?}: {}",
            rebook.text
        );
    }
    let completed = app
        .occupying(CLINIC, DAY)
        .await
        .into_iter()
        .find(|a| a["status"] == "Completed")
        .unwrap();
    let back = app
        .post(
            &format!(
                "/api/v1/appointments/{}/status",
                completed["id"].as_str().unwrap()
            ),
            json!({"status": "Pending"}),
        )
        .await;
    assert_eq!(back.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(back.code(), "invalid_transition");
}

pub async fn reschedule_moves_the_booking_or_changes_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;
    let anu = app
        .post("/api/v1/appointments", booking(Some(5), "Anu"))
        .await
        .body;
    app.post("/api/v1/appointments", booking(Some(7), "Biju"))
        .await;
    let anu_id = anu["id"].as_str().unwrap();

    let onto_taken = app
        .post(
            &format!("/api/v1/appointments/{anu_id}/reschedule"),
            json!({"date": DAY, "slotIndex": 7}),
        )
        .await;
    assert_eq!(onto_taken.code(), "slot_taken");
    let unchanged = app
        .get(&format!("/api/v1/appointments/{anu_id}"))
        .await
        .body;
    assert_eq!(
        unchanged["status"], "Pending",
        "a failed reschedule leaves the booking as it was"
    );

    let moved = app
        .post(
            &format!("/api/v1/appointments/{anu_id}/reschedule"),
            json!({"date": "2026-12-02", "slotIndex": 9}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::CREATED, "{}", moved.text);
    assert_eq!(moved.body["previousAppointmentId"], anu["id"]);
    assert_eq!(
        (
            moved.body["date"].as_str(),
            moved.body["tokenNumber"].as_str(),
            moved.body["patientName"].as_str()
        ),
        (Some("2026-12-02"), Some("A1-010"), Some("Anu"))
    );
    assert_eq!(
        app.get(&format!("/api/v1/appointments/{anu_id}"))
            .await
            .body["status"],
        "Cancelled"
    );
    let slot_5_again = app
        .post("/api/v1/appointments", booking(Some(5), "Chitra"))
        .await;
    assert_eq!(slot_5_again.status, StatusCode::CREATED);
}

pub async fn earliest_bookable_slot_skips_taken_reserved_and_too_soon_slots(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;
    for slot in [2, 3] {
        app.post("/api/v1/appointments", booking(Some(slot), "Early bird"))
            .await;
    }
    // 08:45 + 30 minutes of lead: 09:00 and 09:10 are too soon, 09:20 and 09:30 taken.
    app.clock.set(kolkata(DAY, 8, 45));
    let earliest = app.post("/api/v1/appointments", booking(None, "Anu")).await;
    assert_eq!(earliest.body["slotIndex"], 4, "{}", earliest.text);

    for slot in 5..20 {
        assert_eq!(
            app.post("/api/v1/appointments", booking(Some(slot), "Filler"))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let none_left = app
        .post("/api/v1/appointments", booking(None, "Late"))
        .await;
    assert_eq!(
        none_left.code(),
        "no_slot_available",
        "slots 20–23 stay with walk-ins"
    );
}

pub async fn availability_shows_taken_reserved_and_past_slots(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;
    app.post("/api/v1/appointments", booking(Some(10), "Anu"))
        .await;
    app.clock.set(kolkata(DAY, 9, 25));

    let day = app
        .get(&format!(
            "/api/v1/clinics/{CLINIC}/doctors/dr-asha/availability?date={DAY}"
        ))
        .await;

    assert_eq!(day.status, StatusCode::OK, "{}", day.text);
    let slots = day.body["sessions"][0]["slots"].as_array().unwrap();
    let state = |k: usize| slots[k]["state"].as_str().unwrap();
    assert_eq!(slots.len(), 24);
    assert_eq!((state(0), state(2), state(3)), ("past", "past", "free"));
    assert_eq!(state(10), "taken");
    // 21 slots not yet started: ceil(0.15 × 21) = 4 reserved.
    assert_eq!(
        (state(19), state(20), state(23)),
        ("free", "reserved_walk_in", "reserved_walk_in")
    );
    assert_eq!(
        slots[5]["bookable"], false,
        "09:50 is inside the 30-minute lead time"
    );
    assert_eq!(slots[6]["bookable"], true);
    assert_eq!(slots[6]["time"], "10:00");
}

pub async fn validate_answers_without_writing(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, morning()).await;
    app.post("/api/v1/appointments", booking(Some(5), "Anu"))
        .await;
    let before = app.row_counts().await;

    let free = app
        .post("/api/v1/appointments/validate", booking(Some(6), "Biju"))
        .await;
    let taken = app
        .post("/api/v1/appointments/validate", booking(Some(5), "Biju"))
        .await;
    let bad = app
        .post("/api/v1/appointments/validate", json!({"clinicId": CLINIC}))
        .await;

    assert_eq!(
        free.body,
        json!({"valid": true, "slotIndex": 6, "time": "10:00"})
    );
    assert_eq!(
        (
            taken.body["valid"].as_bool(),
            taken.body["error"]["code"].as_str()
        ),
        (Some(false), Some("slot_taken"))
    );
    assert_eq!(bad.body["error"]["details"]["field"], "doctorId");
    assert_eq!(app.row_counts().await, before);
}

pub async fn a_forced_walk_in_goes_after_the_last_slot(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "09:30"}]))
        .await;
    for name in ["A", "B", "C"] {
        assert_eq!(
            app.post("/api/v1/appointments/walk-in", walk_in(name))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let full = app.post("/api/v1/appointments/walk-in", walk_in("D")).await;
    assert_eq!(full.code(), "no_walk_in_slot");

    let mut forced = walk_in("D");
    forced["force"] = json!(true);
    let app_key = app.key(slotguard::domain::Role::Booking, &[]).await;
    assert_eq!(
        app.post_as(&app_key, "/api/v1/appointments/walk-in", forced.clone())
            .await
            .status,
        StatusCode::FORBIDDEN,
        "only staff may force"
    );
    let placed = app
        .post("/api/v1/appointments/walk-in", forced.clone())
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    assert_eq!(
        (
            placed.body["slotIndex"].as_u64(),
            placed.body["time"].as_str(),
            placed.body["tokenNumber"].as_str()
        ),
        (Some(3), Some("09:30"), Some("W1-104"))
    );
    let next = app.post("/api/v1/appointments/walk-in", forced).await;
    assert_eq!(next.body["slotIndex"], 4);
}

/// Doctors are read once a second at most; an edit through this server applies to
/// the very next booking.
pub async fn a_day_off_set_through_this_server_refuses_the_next_booking_at_once(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let hours = json!([{"from": "09:00", "to": "13:00"}]);
    app.clinic_with_doctor("kochi", 10, hours.clone()).await;
    let book = |slot: u32| {
        app.post(
            "/api/v1/appointments",
            json!({"clinicId": "kochi", "doctorId": "dr-asha", "date": "2026-12-02",
                   "slotIndex": slot, "patientName": "Anu"}),
        )
    };
    assert_eq!(book(1).await.status, StatusCode::CREATED);
    let mut leave = doctor_body("dr-asha", 10, hours);
    leave["dateOverrides"] = json!({"2026-12-02": {"off": true}});
    let put = send(
        &app.client,
        reqwest::Method::PUT,
        &app.url("/api/v1/clinics/kochi/doctors/dr-asha"),
        Some(&app.admin_key),
        Some(&leave),
        &[],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let refused = book(2).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert_eq!(refused.code(), "doctor_unavailable");
}

/// The README's tour, step by step, as a newcomer runs it right after `serve --demo`:
/// late in the evening in India (23:40, when a walk-in queue has no free slot left
/// today) and in the morning. Every step answers as the README says.
pub async fn the_readme_tour_works_late_in_the_evening_and_in_the_morning(backend: Backend) {
    for (hh, mm) in [(23, 40), (8, 0)] {
        let Some(app) = spawn_app(backend).await else {
            return;
        };
        app.clock.set(kolkata(DAY, hh, mm));
        let seeded = slotguard::demo::seed(&app.app.state.bookings)
            .await
            .unwrap();
        assert!(
            seeded.walk_ins >= 1 && seeded.today >= 1,
            "{seeded:?} at {hh}:{mm}"
        );
        let at = format!("at {hh:02}:{mm:02}");

        let clinics = app.get("/api/v1/clinics").await;
        assert_eq!(clinics.body["clinics"][0]["id"], "demo-clinic", "{at}");
        assert_eq!(
            app.post(
                "/api/v1/clinics",
                json!({"id": "my-clinic", "name": "My Clinic", "timezone": "Asia/Kolkata"})
            )
            .await
            .status,
            StatusCode::CREATED
        );
        let morning = json!([{"from": "09:00", "to": "13:00"}]);
        let doctor = json!({
            "id": "dr-asha", "name": "Asha Menon", "slotMinutes": 10,
            "availability": {
                "mon": [{"from": "09:00", "to": "13:00"}, {"from": "17:00", "to": "19:00"}],
                "tue": morning, "wed": morning, "thu": morning, "fri": morning,
                "sat": morning, "sun": morning}});
        let created = app.post("/api/v1/clinics/my-clinic/doctors", doctor).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

        let tomorrow = "2026-12-02";
        let day = app
            .get(&format!(
                "/api/v1/clinics/my-clinic/doctors/dr-asha/availability?date={tomorrow}"
            ))
            .await;
        assert_eq!(day.body["sessions"][0]["slots"][0]["state"], "free", "{at}");
        let booked = app
            .post(
                "/api/v1/appointments",
                json!({"clinicId": "my-clinic", "doctorId": "dr-asha", "date": tomorrow,
                       "slotIndex": 5, "patientName": "Anu"}),
            )
            .await;
        assert_eq!(booked.status, StatusCode::CREATED, "{at}: {}", booked.text);
        assert_eq!(
            (&booked.body["time"], &booked.body["tokenNumber"]),
            (&json!("09:50"), &json!("A1-006")),
            "{at}"
        );
        let walk_in = app
            .post(
                "/api/v1/appointments/walk-in",
                json!({"clinicId": "demo-clinic", "doctorId": "dr-ravi",
                       "patientName": "Biju", "force": true}),
            )
            .await;
        assert_eq!(
            walk_in.status,
            StatusCode::CREATED,
            "{at}: {}",
            walk_in.text
        );
        assert_eq!(
            walk_in.body["tokenNumber"], "W1-104",
            "{at}: after the demo's three"
        );

        let racers: Vec<Post> = ["Chitra", "Deepa"]
            .into_iter()
            .map(|who| {
                (
                    "/api/v1/appointments".to_owned(),
                    json!({"clinicId": "my-clinic", "doctorId": "dr-asha", "date": tomorrow,
                           "slotIndex": 7, "patientName": who}),
                    Vec::new(),
                )
            })
            .collect();
        let outcomes = tally(&concurrently(&app, &app.admin_key, racers).await);
        assert_eq!(outcomes, [(201, 1), (409, 1)].into_iter().collect(), "{at}");
        let incident = eventually(10, "the demo's double booking", || async {
            let list = app.get("/api/v1/incidents").await.body["incidents"]
                .as_array()
                .cloned()?;
            list.into_iter().find(|i| i["clinicId"] == "demo-clinic")
        })
        .await;
        assert_eq!(incident["key"], "5", "{at}");
    }
}
