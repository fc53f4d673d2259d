//! Stories that need real `slotguard` processes: a crash by SIGKILL, two servers on
//! one database, and the command line itself. These use the real clock, so they
//! book a week ahead on a doctor who works every day.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slotguard::domain::Clinic;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

const CLINIC: &str = "kochi";

fn a_week_ahead() -> String {
    (Utc::now()
        .with_timezone(&Clinic::DEFAULT_TIMEZONE)
        .date_naive()
        + chrono::Duration::days(7))
    .to_string()
}

async fn post(client: &reqwest::Client, base: &str, key: &str, path: &str, body: Value) -> Reply {
    send(
        client,
        Method::POST,
        &format!("{base}{path}"),
        Some(key),
        Some(&body),
        &[],
    )
    .await
}

async fn set_up_clinic(client: &reqwest::Client, base: &str, key: &str) {
    let made = post(
        client,
        base,
        key,
        "/api/v1/clinics",
        json!({"id": CLINIC, "name": "Test Clinic"}),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let made = post(
        client,
        base,
        key,
        &format!("/api/v1/clinics/{CLINIC}/doctors"),
        doctor_body("dr-asha", 10, json!([{"from": "08:00", "to": "20:00"}])),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
}

pub async fn a_server_killed_after_answering_201_loses_none_of_them(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let key = admin_key_for(&db.url).await;
    let client = client();
    let server = ServerProcess::start(&db.url).await;
    set_up_clinic(&client, &server.base, &key).await;
    let date = a_week_ahead();

    let mut tasks = Vec::new();
    for slot in 0..40 {
        let (client, base, key, date) = (
            client.clone(),
            server.base.clone(),
            key.clone(),
            date.clone(),
        );
        tasks.push(tokio::spawn(async move {
            post(&client, &base, &key, "/api/v1/appointments", json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": date, "slotIndex": slot, "patientName": format!("Patient {slot}")})).await
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        acknowledged.push(reply.body);
    }
    server.kill().await;

    let restarted = ServerProcess::start(&db.url).await;
    for booked in &acknowledged {
        let id = booked["id"].as_str().unwrap();
        let found = send(
            &client,
            Method::GET,
            &format!("{}/api/v1/appointments/{id}", restarted.base),
            Some(&key),
            None,
            &[],
        )
        .await;
        assert_eq!(
            found.status,
            StatusCode::OK,
            "acknowledged booking {id} was lost"
        );
        assert_eq!(found.body["tokenNumber"], booked["tokenNumber"]);
    }
    restarted.kill().await;
}

pub async fn two_serve_processes_on_one_database_never_double_book(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let key = admin_key_for(&db.url).await;
    let client = client();
    let servers = [
        ServerProcess::start(&db.url).await,
        ServerProcess::start(&db.url).await,
    ];
    set_up_clinic(&client, &servers[0].base, &key).await;
    let date = a_week_ahead();

    // 300 requests over 72 slots, alternating servers: explicit slots racing each
    // other and "earliest free" bookings racing everything.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let base = servers[i % 2].base.clone();
        let mut body = json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": date, "patientName": format!("Patient {i}")});
        if i % 3 != 0 {
            body["slotIndex"] = json!(i % 40);
        }
        let (client, key) = (client.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            post(&client, &base, &key, "/api/v1/appointments", body).await
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert!(
            reply.status.is_success() || reply.status == StatusCode::CONFLICT,
            "{}",
            reply.text
        );
        if reply.status == StatusCode::CREATED {
            created.push(reply.body);
        }
    }
    let listed = send(
        &client,
        Method::GET,
        &format!(
            "{}/api/v1/appointments?clinicId={CLINIC}&date={date}",
            servers[1].base
        ),
        Some(&key),
        None,
        &[],
    )
    .await;
    let stored = listed.body["appointments"].as_array().unwrap().clone();
    assert_no_duplicates(&stored);
    assert_eq!(
        stored.len(),
        created.len(),
        "every 201 is stored, nothing else is"
    );
    let explicit: BTreeSet<u64> = stored
        .iter()
        .filter_map(|a| a["slotIndex"].as_u64())
        .filter(|s| *s < 40)
        .collect();
    assert_eq!(
        explicit.len(),
        40,
        "each of the 40 contested slots went to exactly one patient"
    );
    for server in servers {
        server.kill().await;
    }
}

pub fn keys_create_prints_only_the_key_and_bad_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("keys.db").display().to_string();
    let slotguard = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args(args)
            .output()
            .unwrap()
    };

    // Only serve and migrate create a database: a mistyped path is named, not created.
    let mistyped = dir.path().join("kyes.db").display().to_string();
    for reads in [
        &["keys", "list", "--database", &mistyped][..],
        &["keys", "create", "--role", "admin", "--database", &mistyped][..],
        &["audit", "--date", "2026-12-01", "--database", &mistyped][..],
        &["report", "weekly", "--database", &mistyped][..],
    ] {
        let out = slotguard(reads);
        assert_eq!(out.status.code(), Some(2), "{reads:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(&format!("no database at {mistyped}")),
            "{stderr}"
        );
    }
    assert!(
        !std::path::Path::new(&mistyped).exists(),
        "nothing was created"
    );
    assert!(slotguard(&["migrate", "--database", &database])
        .status
        .success());

    let created = slotguard(&[
        "keys",
        "create",
        "--role",
        "clinic",
        "--clinic",
        "kochi",
        "--database",
        &database,
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the key alone: {stdout:?}"
    );
    assert!(stdout.starts_with("sg_") && stdout.trim_end().len() > 40);

    let listed = slotguard(&["keys", "list", "--database", &database]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(listing.contains("clinic\tkochi"), "{listing}");
    assert!(
        !listing.contains(stdout.trim()),
        "listing never shows a secret"
    );

    for bad in [
        &["keys", "create", "--role", "owner", "--database", &database][..],
        &[
            "keys",
            "create",
            "--role",
            "clinic",
            "--database",
            &database,
        ][..],
        &["serve", "--no-such-flag"][..],
        &["frobnicate"][..],
    ] {
        let out = slotguard(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{bad:?}: one line, got {stderr:?}"
        );
    }
}

pub async fn a_short_load_run_checks_clean_and_a_lost_booking_is_caught(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let key = admin_key_for(&db.url).await;
    let server = ServerProcess::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let (history, report) = (
        dir.path().join("history.jsonl"),
        dir.path().join("report.json"),
    );
    let slotguard = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args(args)
            .output()
            .unwrap()
    };

    let run = slotguard(&[
        "loadtest",
        "--target",
        &server.base,
        "--key",
        &key,
        "--scenario",
        "rush",
        "--duration",
        "2",
        "--rate",
        "40",
        "--quiet",
        "--history",
        history.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--expect-zero-duplicates",
        "--max-error-rate",
        "0",
    ]);
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["summary"]["requests"], 80);
    assert_eq!(report["verification"]["lost"]["count"], 0);
    let check = slotguard(&[
        "check",
        "--history",
        history.to_str().unwrap(),
        "--database",
        &db.url,
    ]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let acknowledged = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|op| op["outcome"] == "ok" && op["kind"] == "book")
        .expect("an acknowledged booking");
    tamper(
        &db.url,
        &format!(
            "DELETE FROM appointments WHERE id = '{}'",
            acknowledged["response"]["id"].as_str().unwrap()
        ),
    )
    .await;
    let check = slotguard(&[
        "check",
        "--history",
        history.to_str().unwrap(),
        "--database",
        &db.url,
        "--json",
    ]);
    assert_eq!(check.status.code(), Some(1));
    let verdict: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(verdict["lost"]["count"], 1);
    server.kill().await;
}

/// Alerts are at least once, never lost: a server killed between the incident's
/// commit and the delivery delivers after restart, and one killed after delivering
/// does not deliver again. Two servers on one database send one message.
pub async fn an_alert_survives_crashes_and_is_delivered_once(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    let key = admin_key_for(&db.url).await;
    let client = client();
    let webhook = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slotguard.toml");
    std::fs::write(
        &config,
        format!(
            "[detect]\nrescan_seconds = 0.5\n\n[alerts]\ngroup_wait_seconds = 3\n\n[[alerts.channels]]\nkind = \"webhook\"\nname = \"ops\"\nurl = \"{}\"\n",
            webhook.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let server = ServerProcess::start_with(&db.url, &["--config", config]).await;
    for id in ["doc-a", "doc-b"] {
        let doc = json!({"id": id, "clinicId": CLINIC, "doctorId": "dr-asha", "date": "1 December 2026", "slotIndex": 5, "tokenNumber": "A1-006", "status": "Pending"});
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
    let incidents_url = |base: &str| format!("{base}/api/v1/incidents?clinicId={CLINIC}");
    eventually(10, "the incident", || async {
        let listed = send(
            &client,
            Method::GET,
            &incidents_url(&server.base),
            Some(&key),
            None,
            &[],
        )
        .await;
        (listed.body["incidents"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    server.kill().await;
    assert!(
        webhook.messages().is_empty(),
        "killed inside groupWait: nothing was sent yet"
    );

    let first = ServerProcess::start_with(&db.url, &["--config", config]).await;
    let second = ServerProcess::start_with(&db.url, &["--config", config]).await;
    let servers = [first, second];
    eventually(20, "the delivery after restart", || async {
        (!webhook.messages().is_empty()).then_some(())
    })
    .await;
    let delivered_url = format!("{}/api/v1/notifications?state=delivered", servers[0].base);
    eventually(10, "the delivery to be recorded", || async {
        let listed = send(&client, Method::GET, &delivered_url, Some(&key), None, &[]).await;
        (listed.body["notifications"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    for server in servers {
        server.kill().await;
    }
    let again = ServerProcess::start_with(&db.url, &["--config", config]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        webhook.messages().len(),
        1,
        "delivered once: not again after a restart, not twice by two servers"
    );
    let (key, body) = webhook.received.lock().unwrap()[0].clone();
    assert_eq!(
        key.as_deref(),
        body["id"].as_str(),
        "the stable id travels as the Idempotency-Key"
    );
    again.kill().await;
}

/// The README's first command: `serve --demo` prints the dashboard's address and a
/// one-time password, the login works, and the overview shows the demo's day with its
/// double booking; a second start keeps the day and prints a new password.
pub async fn serve_demo_prints_a_login_that_opens_the_overview(backend: Backend) {
    let Some(db) = test_db(backend).await else {
        return;
    };
    for start in 0..2 {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args([
                "serve",
                "--demo",
                "--database",
                &db.url,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start slotguard");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut seeded, mut login) = (String::new(), String::new());
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("demo: ") {
                    seeded = line.clone();
                }
                if line.starts_with("dashboard: ") {
                    login = line;
                    return;
                }
            }
            panic!("slotguard exited before printing the dashboard's login");
        })
        .await
        .expect("the dashboard's login within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if start == 0 {
            assert!(
                seeded.contains("walk-ins today") && seeded.contains("double booking"),
                "the demo says what it made: {seeded}"
            );
        } else {
            assert!(seeded.contains("nothing added"), "{seeded}");
        }
        // "dashboard: http://127.0.0.1:PORT/  log in as EMAIL with password PW (…)"
        let words: Vec<&str> = login.split_whitespace().collect();
        let base = words[1].trim_end_matches('/').to_owned();
        let email = words[words.iter().position(|w| *w == "as").unwrap() + 1];
        let password = words[words.iter().position(|w| *w == "password").unwrap() + 1];
        let web = web_client();
        let answer = web
            .post(format!("{base}/login"))
            .form(&[("email", email), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::SEE_OTHER,
            "the printed login works"
        );
        let cookie = answer.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let overview = web
            .get(format!("{base}/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(overview.status(), StatusCode::OK);
        let html = overview.text().await.unwrap();
        assert!(html.contains("<h1>Overview</h1>"), "{html}");
        let today = eventually(10, "the demo's double booking on the overview", || {
            let (web, cookie, base) = (web.clone(), cookie.clone(), base.clone());
            async move {
                let html = web
                    .get(format!("{base}/fragments/overview"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                html.contains("Investigate").then_some(html)
            }
        })
        .await;
        assert!(today.contains("Asha Menon"), "{today}");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}
