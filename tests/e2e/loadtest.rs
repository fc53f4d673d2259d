//! Stories of `slotguard loadtest --script`: the clinic's own artillery script, run by
//! the real binary against a real server, books one patient and refuses the rest; a
//! run that books nothing, or meets a 4xx it did not expect, fails and says why; a
//! script's flow runs step by step in order with its templates, variables and payload;
//! and the clinic app's body, which names the doctor, is understood at its own path.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const CLINIC: &str = "demo-clinic";
/// The day the scripts book: the day after the test clock's.
const BOOKING_DATE: &str = "2026-12-02";

fn artillery_data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/artillery")
        .join(file)
}

/// What one `slotguard loadtest` process did.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
    report: Value,
}

impl Ran {
    fn outcomes(&self) -> &Value {
        &self.report["summary"]["byClass"]
    }
}

/// Runs `slotguard loadtest --quiet --report … ARGS` with BOOKING_DATE and `env` set.
async fn loadtest(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
        .arg("loadtest")
        .args(["--quiet", "--report", report.to_str().unwrap()])
        .args(args)
        .env_remove("SLOTGUARD_KEY")
        .env("BOOKING_DATE", BOOKING_DATE)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run slotguard loadtest");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        report: std::fs::read_to_string(&report)
            .ok()
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or(Value::Null),
    }
}

/// The clinic's script with `edit` applied to its YAML, shortened to 2 seconds of
/// 10 arrivals a second (the full minute runs in bench/artillery_compare.sh).
fn clinic_rush(dir: &Path, edit: impl FnOnce(&mut yaml_serde::Value)) -> PathBuf {
    let text = std::fs::read_to_string(artillery_data("clinic-rush.yml")).unwrap();
    let mut script: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    script["config"]["phases"][0]["duration"] = 2.into();
    edit(&mut script);
    let path = dir.join("clinic-rush.yml");
    std::fs::write(&path, yaml_serde::to_string(&script).unwrap()).unwrap();
    path
}

/// What the clinic adds before a run: the target, a key, the day and a patient's name.
fn fill_in(script: &mut yaml_serde::Value, target: &str, key: &str) {
    let config = &mut script["config"];
    config["target"] = target.into();
    let headers: yaml_serde::Value =
        yaml_serde::from_str(&format!("headers: {{Authorization: \"Bearer {key}\"}}")).unwrap();
    config["defaults"] = headers;
    let body = &mut script["scenarios"][0]["flow"][0]["post"]["json"];
    // From the environment: an unquoted date is a timestamp to artillery's YAML reader.
    body["date"] = "{{ $env.BOOKING_DATE }}".into();
    body["patientName"] = "Rush patient {{ $randomString(6) }}".into();
}

/// `demo-clinic` with Asha Menon (`dr-asha`) seeing patients 09:00–13:00 in 10-minute
/// slots, as `serve --demo` has her.
async fn demo_clinic(app: &TestApp) {
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
}

pub async fn loadtest_of_the_clinics_rush_script_with_target_key_date_and_name_added_books_one_and_refuses_the_rest(
    backend: Backend,
) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    demo_clinic(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let script = clinic_rush(dir.path(), |s| fill_in(s, &app.base, &app.admin_key));

    // No --target and no --key: the script carries both, as it does for artillery.
    let ran = loadtest(dir.path(), &["--script", script.to_str().unwrap()], &[]).await;
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(
        ran.outcomes(),
        &json!({"201": 1, "409 slot_taken": 19}),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("409 slot_taken"), "{}", ran.stdout);
    assert!(ran.stdout.contains("expected"), "{}", ran.stdout);
    assert!(ran.stdout.contains("PASSED"), "{}", ran.stdout);
    assert_eq!(ran.report["verification"]["lost"]["count"], 0);
    assert_eq!(ran.report["verification"]["lyingFailures"]["count"], 0);

    let booked = app.occupying(CLINIC, BOOKING_DATE).await;
    assert_eq!(booked.len(), 1, "{booked:?}");
    assert_eq!(
        (&booked[0]["doctorId"], &booked[0]["slotIndex"]),
        (&json!("dr-asha"), &json!(5))
    );
    let name = booked[0]["patientName"].as_str().unwrap();
    assert!(
        name.starts_with("Rush patient ") && name.len() == 19 && !name.contains('{'),
        "templates are expanded: {name}"
    );
}

pub async fn loadtest_fails_saying_why_when_a_run_books_nothing_or_meets_an_unexpected_4xx(
    backend: Backend,
) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    demo_clinic(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let one_line_reason = |ran: &Ran, needles: &[&str]| {
        assert_eq!(ran.code, 1, "{}{}", ran.stdout, ran.stderr);
        let reason = ran.stderr.trim_end();
        assert_eq!(reason.lines().count(), 1, "one line: {reason}");
        for needle in needles {
            assert!(reason.contains(needle), "{needle:?} in {reason}");
        }
    };

    // The script as written, with only a target and a key: no date, so every booking
    // is refused 422. That is a failed run, not a clean one.
    let as_written = clinic_rush(dir.path(), |_| {});
    let ran = loadtest(
        dir.path(),
        &[
            "--script",
            as_written.to_str().unwrap(),
            "--target",
            &app.base,
            "--key",
            &app.admin_key,
        ],
        &[],
    )
    .await;
    one_line_reason(
        &ran,
        &[
            "no booking succeeded",
            "20 × 422 invalid_field",
            "date is required",
        ],
    );
    assert!(
        ran.stdout.contains("422 invalid_field") && ran.stdout.contains("UNEXPECTED"),
        "{}",
        ran.stdout
    );
    assert_eq!(ran.report["summary"]["answers"][0]["count"], 20);

    // A wrong key: every request 401.
    let wrong_key = clinic_rush(dir.path(), |s| fill_in(s, &app.base, "sg_wrong_key"));
    let ran = loadtest(
        dir.path(),
        &["--script", wrong_key.to_str().unwrap(), "--no-verify"],
        &[],
    )
    .await;
    one_line_reason(&ran, &["no booking succeeded", "401 unauthorized"]);

    // Slot numbers drawn by $randomNumber are text, as artillery sends them: "21" is
    // no slot index.
    let reserved = clinic_rush(dir.path(), |s| {
        fill_in(s, &app.base, &app.admin_key);
        s["scenarios"][0]["flow"][0]["post"]["json"]["slotIndex"] =
            "{{ $randomNumber(21, 22) }}".into();
    });
    let ran = loadtest(dir.path(), &["--script", reserved.to_str().unwrap()], &[]).await;
    one_line_reason(&ran, &["422 invalid_field", "slotIndex"]);
    // Slot 22 is kept for walk-ins: a 409, but not a conflict of the rush.
    let reserved = clinic_rush(dir.path(), |s| {
        fill_in(s, &app.base, &app.admin_key);
        s["scenarios"][0]["flow"][0]["post"]["json"]["slotIndex"] = 22.into();
    });
    let ran = loadtest(
        dir.path(),
        &["--script", reserved.to_str().unwrap()],
        &[("BOOKING_DATE", "2026-12-03")],
    )
    .await;
    one_line_reason(&ran, &["no booking succeeded", "409 slot_reserved_walk_in"]);
}

pub async fn loadtest_runs_a_scripts_two_step_flow_in_order_per_user_with_variables_and_payload(
    backend: Backend,
) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    demo_clinic(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let script = artillery_data("two-step.yml");
    let ran = loadtest(
        dir.path(),
        &[
            "--script",
            script.to_str().unwrap(),
            "--target",
            &app.base,
            "--history",
            history.to_str().unwrap(),
            "--expect-zero-duplicates",
        ],
        &[
            ("SLOTGUARD_KEY", app.admin_key.as_str()),
            ("BOOKING_DATE", BOOKING_DATE),
        ],
    )
    .await;
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    // Ten users, two steps each: every first step books, every second is refused.
    assert_eq!(
        ran.outcomes(),
        &json!({"201": 10, "409 slot_taken": 10}),
        "{}",
        ran.stdout
    );

    let booked = app.occupying(CLINIC, BOOKING_DATE).await;
    assert_eq!(booked.len(), 10);
    let patients = std::fs::read_to_string(artillery_data("patients.csv")).unwrap();
    for row in patients.lines().skip(1) {
        let (name, slot) = row.split_once(',').unwrap();
        let slot: u64 = slot.parse().unwrap();
        let held = booked
            .iter()
            .find(|a| a["slotIndex"] == slot)
            .unwrap_or_else(|| panic!("slot {slot} booked: {booked:?}"));
        // The first step took every slot: the second never ran before it.
        assert_eq!(held["bookedVia"], "step 1", "{held}");
        let patient = held["patientName"].as_str().unwrap();
        let suffix = patient.strip_prefix(&format!("{name} ")).unwrap();
        assert!(
            suffix.len() == 4 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{patient}"
        );
        let phone = held["patientPhone"].as_str().unwrap();
        assert!(
            phone.starts_with("+91 98470 ") && phone.len() == 15,
            "{phone}"
        );
        assert_eq!(
            (&held["date"], &held["doctorId"]),
            (&json!(BOOKING_DATE), &json!("dr-asha"))
        );
    }

    // Each user's second step was sent after its first was answered and the second's
    // think time was over.
    let ops: Vec<Value> = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ops.len(), 20);
    for first in ops.iter().filter(|op| op["status"] == 201) {
        let name = first["patientName"].as_str().unwrap();
        let base = &name[..name.len() - 5];
        let second = ops
            .iter()
            .find(|op| op["patientName"] == format!("{base} again"))
            .unwrap_or_else(|| panic!("the second step of {base}"));
        let at = |op: &Value, field: &str| {
            chrono::DateTime::parse_from_rfc3339(op[field].as_str().unwrap()).unwrap()
        };
        let pause = at(second, "invokedAt") - at(first, "completedAt");
        assert!(
            pause >= chrono::Duration::milliseconds(990),
            "{base}: {pause}"
        );
        assert_eq!(second["error"], "slot_taken");
    }
}

pub async fn loadtest_scripts_may_name_the_doctor_at_book_appointment_and_unknown_or_ambiguous_names_are_refused(
    backend: Backend,
) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    demo_clinic(&app).await;
    let second = app
        .post(
            &format!("/api/v1/clinics/{CLINIC}/doctors"),
            json!({"id": "dr-asha-2", "name": "Asha  menon", "slotMinutes": 10,
                   "availability": {"wed": [{"from": "09:00", "to": "13:00"}]}}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let ravi = app
        .post(
            &format!("/api/v1/clinics/{CLINIC}/doctors"),
            json!({"id": "dr-ravi", "name": "Ravi Nair", "slotMinutes": 15,
                   "availability": {"wed": [{"from": "09:00", "to": "13:00"}]}}),
        )
        .await;
    assert_eq!(ravi.status, StatusCode::CREATED, "{}", ravi.text);
    let body = |doctor: &str, slot: u32| json!({"clinicId": CLINIC, "doctor": doctor, "date": BOOKING_DATE, "slotIndex": slot, "patientName": "Anu"});

    // Two doctors called Asha Menon (up to case and spacing): which one is not guessed.
    let ambiguous = app
        .post("/api/book-appointment", body("Asha Menon", 5))
        .await;
    assert_eq!(
        ambiguous.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        ambiguous.text
    );
    assert_eq!(ambiguous.body["error"]["details"]["field"], "doctor");
    let mut ids: Vec<&str> = ambiguous.body["error"]["details"]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["dr-asha", "dr-asha-2"], "{}", ambiguous.text);

    // Unknown: the answer lists the names close to it, or the clinic's doctors.
    let unknown = app.post("/api/book-appointment", body("Ravi", 5)).await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown.text
    );
    assert!(
        unknown.text.contains("Ravi Nair (dr-ravi)"),
        "{}",
        unknown.text
    );
    let unknown = app.post("/api/book-appointment", body("Meera", 5)).await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown.text
    );
    assert!(
        unknown.text.contains("its doctors") && unknown.text.contains("Ravi Nair (dr-ravi)"),
        "{}",
        unknown.text
    );

    // One match, "Dr." and case aside: booked with that doctor's id.
    let booked = app
        .post("/api/book-appointment", body("dr. RAVI nair", 1))
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{}", booked.text);
    assert_eq!(booked.body["doctorId"], "dr-ravi");
    // A name and an id that disagree are refused.
    let mut both = body("Ravi Nair", 2);
    both["doctorId"] = json!("dr-asha");
    let disagree = app.post("/api/book-appointment", both).await;
    assert_eq!(
        disagree.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        disagree.text
    );

    // Only the clinic app's path takes a name; /api/v1 says where it belongs.
    let v1 = app.post("/api/v1/appointments", body("Ravi Nair", 3)).await;
    assert_eq!(v1.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", v1.text);
    assert_eq!(v1.body["error"]["details"]["field"], "doctor");
    assert!(v1.text.contains("/api/book-appointment"), "{}", v1.text);

    // A key of another clinic learns nothing of this clinic's doctors.
    let outsider = app
        .key(slotguard::domain::Role::Booking, &["elsewhere"])
        .await;
    let refused = app
        .post_as(&outsider, "/api/book-appointment", body("Ravi Nair", 4))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(!refused.text.contains("dr-ravi"));
}

/// A script slotguard cannot run as artillery would is refused before anything is sent,
/// naming what it cannot do, with exit 2.
#[tokio::test]
async fn an_unsupported_artillery_feature_is_refused_by_name_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("capture.yml");
    std::fs::write(
        &script,
        "config:\n  target: http://127.0.0.1:9\n  phases: [{duration: 1, arrivalRate: 1}]\nscenarios:\n  - flow:\n      - post:\n          url: /api/book-appointment\n          capture: {json: $.id, as: id}\n",
    )
    .unwrap();
    let ran = loadtest(
        dir.path(),
        &["--script", script.to_str().unwrap(), "--key", "k"],
        &[],
    )
    .await;
    assert_eq!(ran.code, 2, "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("post.capture is not supported"),
        "{}",
        ran.stderr
    );
    std::fs::write(
        &script,
        "config:\n  phases: [{duration: 1, arrivalRate: 1}]\nscenarios:\n  - flow:\n      - post: {url: /api/book-appointment, json: {date: '{{ $env.SLOTGUARD_UNSET_DAY }}'}}\n",
    )
    .unwrap();
    let ran = loadtest(
        dir.path(),
        &["--script", script.to_str().unwrap(), "--key", "k"],
        &[],
    )
    .await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("SLOTGUARD_UNSET_DAY is not set"),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn loadtest_help_gives_every_flag_a_description_and_the_local_server_as_target() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
        .args(["loadtest", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("http://127.0.0.1:8080"), "{help}");
    // Every `--flag` line is followed by a description, on it or on the next line.
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let flag = line.trim_start();
        if flag.starts_with("--") || flag.starts_with("-h") {
            let described = flag.split("  ").filter(|p| !p.trim().is_empty()).count() > 1
                || lines
                    .get(i + 1)
                    .is_some_and(|next| next.starts_with("          ") && !next.trim().is_empty());
            assert!(described, "{flag} has no description:\n{help}");
        }
    }
}
