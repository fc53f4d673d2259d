//! Test support: a real slotguard on port 0 over a real database per test (a fresh
//! SQLite file, or a fresh PostgreSQL database on the server `scripts/test.sh`
//! starts), and a real `slotguard` process for crash and multi-process tests.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use slotguard::alert::dispatch::Timing;
use slotguard::app::{App, Options};
use slotguard::audit::runner::Settings as AuditSettings;
use slotguard::clock::{Clock, FixedClock};
use slotguard::detect::detector::Settings;
use slotguard::domain::{Clinic, Role};
use slotguard::http;
use slotguard::store::{self, SqliteSync};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test; the SQLite file lives as long as this does.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// The same database for a second server; the first `TestDb` must outlive it.
    pub fn shared(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            _dir: None,
        }
    }
}

/// A fresh database, or `None` when PostgreSQL is not available outside CI (the
/// test is then skipped, loudly). In CI a missing PostgreSQL fails the test.
pub async fn test_db(backend: Backend) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = dir.path().join("slotguard.db").display().to_string();
            Some(TestDb {
                url,
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var("SLOTGUARD_TEST_DATABASE_URL") else {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(
                    !ci,
                    "CI=true but SLOTGUARD_TEST_DATABASE_URL is not set: run scripts/test.sh"
                );
                eprintln!("SKIPPED (no PostgreSQL; run scripts/test.sh): a PostgreSQL test");
                return None;
            };
            let name = format!("sg_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create test database");
            let (base, _) = admin_url
                .rsplit_once('/')
                .expect("database URL with a path");
            Some(TestDb {
                url: format!("{base}/{name}"),
                _dir: None,
            })
        }
    }
}

/// 2026-12-01 (a Tuesday) at `hh:mm` in Asia/Kolkata.
pub fn kolkata(date: &str, hh: u32, mm: u32) -> DateTime<Utc> {
    let local = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(hh, mm, 0)
        .unwrap();
    Clinic::DEFAULT_TIMEZONE
        .from_local_datetime(&local)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

use chrono::TimeZone;

/// The day most tests book on, and the instant they stand at: early that morning.
pub const DAY: &str = "2026-12-01";

pub struct TestApp {
    pub base: String,
    pub admin_key: String,
    pub clock: Arc<FixedClock>,
    pub db: TestDb,
    pub client: reqwest::Client,
    /// For the dashboard: keeps redirects (303s) to be seen, not followed.
    pub web: reqwest::Client,
    /// The running services; held so they run as long as the test.
    pub app: App,
    server: Server,
}

/// The HTTP server of a `TestApp`, shut down when dropped.
struct Server {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    /// Stops as `serve` does on SIGTERM: requests under way finish, then the app
    /// stops (flushing its booking counts). The database is handed back for a restart.
    pub async fn stop(self) -> TestDb {
        let TestApp {
            db,
            app,
            mut server,
            ..
        } = self;
        if let Some(stop) = server.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = server.serving.take() {
            serving.await.unwrap().unwrap();
        }
        app.stop().await;
        db
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Detection and alert timing for tests: re-scans every 200 ms, alerts grouped
/// over `group_wait`, the dispatcher looking for work every 50 ms.
pub fn test_options(channels: &[Value], group_wait: Duration, wakeups: bool) -> Options {
    let channels: Vec<slotguard::alert::channels::ChannelConfig> = channels
        .iter()
        .map(|c| serde_json::from_value(c.clone()).expect("channel config"))
        .collect();
    Options {
        detect: Settings {
            wakeups,
            rescan_every: Duration::from_millis(200),
            ..Settings::default()
        },
        timing: Timing {
            group_wait,
            tick: Duration::from_millis(50),
            first_backoff: Duration::from_millis(100),
            ..Timing::default()
        },
        alerting: slotguard::alert::Alerting::new(
            slotguard::alert::channels::build(&channels).expect("channels build"),
        ),
        // Tests run the audit pass themselves, with the clock where they want it.
        audit: AuditSettings {
            tick: Duration::from_secs(3600),
            ..AuditSettings::default()
        },
        metrics_flush: Duration::from_millis(100),
    }
}

/// `options` with the periodic re-scan put off for an hour: detection only by
/// wake-ups (or none, with wake-ups off), so a story sees what they alone find.
pub fn without_rescan(mut options: Options) -> Options {
    options.detect.rescan_every = Duration::from_secs(3600);
    options
}

/// Serves slotguard in this process, with its clock standing at 06:00 on [`DAY`].
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, test_options(&[], Duration::ZERO, true)).await
}

pub async fn spawn_app_with(backend: Backend, options: Options) -> Option<TestApp> {
    Some(start_app(test_db(backend).await?, options).await)
}

/// Serves slotguard in this process over `db` (fresh, or one a stopped app left).
pub async fn start_app(db: TestDb, options: Options) -> TestApp {
    start_app_at(db, options, kolkata(DAY, 6, 0)).await
}

/// [`start_app`] with its clock standing at `now` from the start.
pub async fn start_app_at(db: TestDb, options: Options, now: DateTime<Utc>) -> TestApp {
    let store: Arc<dyn store::Store> = Arc::from(
        store::open(&db.url, SqliteSync::Full)
            .await
            .expect("open store"),
    );
    let key = slotguard::auth::new_key(Role::Admin, vec![], Utc::now());
    store.insert_api_key(&key.record).await.unwrap();
    let clock = Arc::new(FixedClock::at(now));
    let app = App::start(store, clock.clone(), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(http::serve(listener, app.state.clone(), async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        admin_key: key.text,
        clock,
        db,
        client: client(),
        web: web_client(),
        app,
        server: Server {
            shutdown: Some(stop),
            serving: Some(serving),
        },
    }
}

/// A response: status and JSON body (`Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = client.request(method, url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request reached the server");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        send(
            &self.client,
            reqwest::Method::POST,
            &self.url(path),
            Some(&self.admin_key),
            Some(&body),
            &[],
        )
        .await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> Reply {
        send(
            &self.client,
            reqwest::Method::POST,
            &self.url(path),
            Some(key),
            Some(&body),
            &[],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(
            &self.client,
            reqwest::Method::GET,
            &self.url(path),
            Some(&self.admin_key),
            None,
            &[],
        )
        .await
    }

    /// A key of `role` for `clinic`, made through the same code as `keys create`.
    pub async fn key(&self, role: Role, clinics: &[&str]) -> String {
        let store = store::open(&self.db.url, SqliteSync::Full).await.unwrap();
        let clinics = clinics
            .iter()
            .map(|c| slotguard::domain::ClinicId::parse("c", c).unwrap())
            .collect();
        let key = slotguard::auth::new_key(role, clinics, Utc::now());
        store.insert_api_key(&key.record).await.unwrap();
        key.text
    }

    /// `clinic` with doctor `dr-asha`: `hours` every day of the week in `slot_minutes` slots.
    pub async fn clinic_with_doctor(&self, clinic: &str, slot_minutes: u32, hours: Value) {
        let created = self
            .post(
                "/api/v1/clinics",
                json!({"id": clinic, "name": "Test Clinic"}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let created = self
            .post(
                &format!("/api/v1/clinics/{clinic}/doctors"),
                doctor_body("dr-asha", slot_minutes, hours),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    }

    pub async fn occupying(&self, clinic: &str, date: &str) -> Vec<Value> {
        let listed = self
            .get(&format!(
                "/api/v1/appointments?clinicId={clinic}&date={date}"
            ))
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
        listed.body["appointments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| !matches!(a["status"].as_str(), Some("Cancelled" | "No-show")))
            .cloned()
            .collect()
    }

    pub async fn row_counts(&self) -> Value {
        row_counts(&self.db.url).await
    }
}

pub fn doctor_body(id: &str, slot_minutes: u32, hours: Value) -> Value {
    let week: serde_json::Map<String, Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| (d.to_string(), hours.clone()))
        .collect();
    json!({"id": id, "name": "Asha Menon", "slotMinutes": slot_minutes, "availability": week})
}

/// Rows of every table that a request could write, read straight from the database.
pub async fn row_counts(url: &str) -> Value {
    let tables = [
        "clinics",
        "doctors",
        "appointments",
        "walk_in_counters",
        "idempotency_keys",
        "audit_runs",
    ];
    let mut counts = serde_json::Map::new();
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        for t in tables {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            counts.insert(t.into(), json!(n));
        }
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{url}"))
            .await
            .unwrap();
        for t in tables {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            counts.insert(t.into(), json!(n));
        }
    }
    Value::Object(counts)
}

/// Asserts invariants 1 and 2 over a list of appointments.
pub fn assert_no_duplicates(appointments: &[Value]) {
    let mut slots = std::collections::HashSet::new();
    let mut tokens = std::collections::HashSet::new();
    for a in appointments
        .iter()
        .filter(|a| !matches!(a["status"].as_str(), Some("Cancelled" | "No-show")))
    {
        let day = (
            a["clinicId"].to_string(),
            a["doctorId"].to_string(),
            a["date"].to_string(),
        );
        assert!(
            slots.insert((day.clone(), a["slotIndex"].as_u64())),
            "two occupants of slot {}",
            a["slotIndex"]
        );
        assert!(
            tokens.insert((day, a["tokenNumber"].to_string())),
            "two holders of token {}",
            a["tokenNumber"]
        );
    }
}

/// `slotguard serve` as a child process on an ephemeral port.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub base: String,
    /// `http://…/metrics` of the metrics listener, when one was asked for.
    pub metrics_url: Option<String>,
}

impl ServerProcess {
    pub async fn start(database: &str) -> ServerProcess {
        Self::start_with(database, &[]).await
    }

    pub async fn start_with(database: &str, extra: &[&str]) -> ServerProcess {
        Self::start_in(database, extra, &[]).await
    }

    /// With extra arguments and environment variables (`TZ`, say).
    pub async fn start_in(database: &str, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args(["serve", "--database", database, "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start slotguard");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // The metrics listener, if any, is announced before the API.
        let mut metrics_url = None;
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("slotguard metrics on ") {
                    metrics_url = Some(url.to_owned());
                }
                if let Some(address) = line.strip_prefix("slotguard listening on ") {
                    return address.to_owned();
                }
            }
            panic!("slotguard exited before listening");
        })
        .await
        .expect("slotguard started within 30 s");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess {
            child,
            base,
            metrics_url,
        }
    }

    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM, as a service manager stops it, and waits for a clean exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("slotguard stopped within 30 s of SIGTERM")
            .unwrap();
        assert!(exit.success(), "slotguard exited with {exit}");
    }
}

/// An admin key stored straight into `url`, for a server started as a process.
pub async fn admin_key_for(url: &str) -> String {
    let store = store::open(url, SqliteSync::Full)
        .await
        .expect("open store");
    let key = slotguard::auth::new_key(Role::Admin, vec![], Utc::now());
    store.insert_api_key(&key.record).await.unwrap();
    key.text
}

/// A POST to send: path, JSON body, extra headers.
pub type Post = (String, Value, Vec<(String, String)>);

/// Sends all `requests` (path, body, extra headers) at once, each on its own task,
/// with `key`; replies in request order.
pub async fn concurrently(app: &TestApp, key: &str, requests: Vec<Post>) -> Vec<Reply> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(path, body, headers)| {
            let (client, url, key, barrier) = (
                app.client.clone(),
                app.url(&path),
                key.to_owned(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                send(
                    &client,
                    reqwest::Method::POST,
                    &url,
                    Some(&key),
                    Some(&body),
                    &headers,
                )
                .await
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(tasks.len());
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}

/// How many replies had each status.
pub fn tally(replies: &[Reply]) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in replies {
        *counts.entry(r.status.as_u16()).or_default() += 1;
    }
    counts
}

/// Runs one SQL statement straight on the database, behind slotguard's back.
pub async fn tamper(url: &str, sql: &str) {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{url}"))
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real HTTP receiver on 127.0.0.1:0 that records every POST (body and
/// `Idempotency-Key`) and answers 200.
/// What a receiver got: each POST's `Idempotency-Key` and body.
type Received = Arc<std::sync::Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub received: Received,
    /// What it answers from now on (see [`Receiver::answer`]).
    status: Arc<std::sync::atomic::AtomicU16>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::answering(200).await
    }

    /// From now on, answer `status` (a receiver that was down comes back).
    pub fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// A receiver that records every POST and answers `status`.
    pub async fn answering(status: u16) -> Receiver {
        let answer = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let status = answer.clone();
        let received: Received = Default::default();
        let log = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let log = log.clone();
                    let status = axum::http::StatusCode::from_u16(
                        status.load(std::sync::atomic::Ordering::SeqCst),
                    )
                    .unwrap();
                    async move {
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        log.lock()
                            .unwrap()
                            .push((key, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                        (status, "ok")
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            received,
            status: answer,
        }
    }

    pub fn messages(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// `tests/smtp_sink.py`: a real SMTP server (aiosmtpd) on loopback, writing each
/// message it accepts to a directory as NNNN.json (envelope and decoded parts).
pub struct SmtpSink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// With [`SmtpSink::start_starttls`]: its self-signed certificate, the PEM file a
    /// client names as `ca_file` to trust it.
    pub ca_file: Option<std::path::PathBuf>,
    _certs: Option<tempfile::TempDir>,
    _child: tokio::process::Child,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        Self::start_with(&[], None).await
    }

    /// A sink that offers STARTTLS and requires it, with a self-signed certificate
    /// for 127.0.0.1 made here; each message says which TLS version carried it
    /// (`"tls"`).
    pub async fn start_starttls() -> SmtpSink {
        let certs = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let options = [
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ];
        let mut sink = Self::start_with(&options, Some(certs)).await;
        sink.ca_file = Some(cert);
        sink
    }

    async fn start_with(options: &[String], certs: Option<tempfile::TempDir>) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py"))
            .arg("0")
            .arg(dir.path())
            .args(options)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs tests/smtp_sink.py (pip install aiosmtpd)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("smtp_sink said READY in 30 s")
            .unwrap()
            .expect("smtp_sink started (pip install aiosmtpd)");
        let port = line
            .strip_prefix("READY ")
            .expect("READY line")
            .trim()
            .parse()
            .unwrap();
        SmtpSink {
            port,
            dir,
            ca_file: None,
            _certs: certs,
            _child: child,
        }
    }

    /// Every message received so far, as the sink decoded it.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

// ---- the dashboard, as a browser without JavaScript uses it ----------------------

/// The password of every staff account the tests make.
pub const PASSWORD: &str = "correct horse battery staple";

/// A client for the dashboard: redirects are answers to look at, not to follow, and
/// cookies are sent by hand (a session is a header the test holds).
pub fn web_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A logged-in browser: the `Cookie` header it sends and the CSRF token its pages
/// carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// A dashboard answer: status, headers and body text (HTML, CSV or an event stream).
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Where a redirect points.
    pub fn location(&self) -> &str {
        self.header("location").unwrap_or("")
    }

    pub fn is_html(&self) -> bool {
        self.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    }
}

/// The CSRF token of a page: `<meta name="csrf-token" content="…">`.
pub fn csrf_token(html: &str) -> Option<String> {
    let after = html.split_once("<meta name=\"csrf-token\" content=\"")?.1;
    Some(after.split_once('"')?.0.to_owned()).filter(|t| !t.is_empty())
}

async fn page_of(response: reqwest::Response) -> Page {
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap_or_default(),
    }
}

impl TestApp {
    /// A staff account with [`PASSWORD`], made through the same code as `slotguard
    /// users create`.
    pub async fn staff_user(
        &self,
        email: &str,
        role: slotguard::domain::StaffRole,
        clinics: &[&str],
    ) -> slotguard::domain::StaffUser {
        let clinics = clinics
            .iter()
            .map(|c| slotguard::domain::ClinicId::parse("clinic", c).unwrap())
            .collect();
        slotguard::web::accounts::create(
            self.app.state.bookings.store(),
            slotguard::domain::Email::parse("email", email).unwrap(),
            role,
            clinics,
            PASSWORD,
            self.clock.now(),
        )
        .await
        .expect("create a staff account")
    }

    /// Sends the login form as a browser does (no `Origin` from a program).
    pub async fn submit_login(&self, email: &str, password: &str) -> Page {
        let response = self
            .web
            .post(self.url("/login"))
            .form(&[("email", email), ("password", password), ("next", "/")])
            .send()
            .await
            .expect("login reached the server");
        page_of(response).await
    }

    /// Logs in with [`PASSWORD`]: the session cookie, and the CSRF token of the
    /// overview page it lands on.
    pub async fn log_in(&self, email: &str) -> Session {
        let answer = self.submit_login(email, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
        let set_cookie = answer.header("set-cookie").expect("a session cookie");
        let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
        assert!(cookie.starts_with("sg_session="), "{set_cookie}");
        let mut session = Session {
            cookie,
            csrf: String::new(),
        };
        let overview = self.page(Some(&session), "/").await;
        assert_eq!(overview.status, StatusCode::OK, "{}", overview.text);
        session.csrf = csrf_token(&overview.text).expect("the overview carries a CSRF token");
        session
    }

    /// `GET path` as the browser of `session` (or a stranger's, with `None`).
    pub async fn page(&self, session: Option<&Session>, path: &str) -> Page {
        self.page_with(session, path, &[]).await
    }

    pub async fn page_with(
        &self,
        session: Option<&Session>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self.web.get(self.url(path));
        if let Some(s) = session {
            request = request.header("cookie", &s.cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        page_of(request.send().await.expect("page reached the server")).await
    }

    /// `POST path` with a urlencoded form as the browser of `session`, with extra
    /// headers (`Origin`, `Sec-Fetch-Site`); the CSRF token only if `fields` has it.
    pub async fn submit(
        &self,
        session: &Session,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .web
            .post(self.url(path))
            .header("cookie", &session.cookie)
            .form(fields);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        page_of(request.send().await.expect("form reached the server")).await
    }
}

// ---- alerts: a Sentry receiver, options from slotguard.toml, a server's log -------

/// One envelope a [`SentryReceiver`] got, parsed as Sentry's envelope format has it:
/// a header line, then items, each an item header line and a payload of `length`
/// bytes.
#[derive(Debug, Clone)]
pub struct SentryEnvelope {
    pub path: String,
    /// The `X-Sentry-Auth` header's fields (`sentry_key`, `sentry_version`, …).
    pub auth: std::collections::HashMap<String, String>,
    pub content_type: String,
    pub header: Value,
    /// Each item's header and its payload (JSON).
    pub items: Vec<(Value, Value)>,
    /// What the receiver answered.
    pub status: u16,
}

impl SentryEnvelope {
    /// The payload of the envelope's `event` item.
    pub fn event(&self) -> &Value {
        &self
            .items
            .iter()
            .find(|(header, _)| header["type"] == "event")
            .unwrap_or_else(|| panic!("no event item in {self:?}"))
            .1
    }
}

/// An answer a [`SentryReceiver`] gives: a status and headers (`Retry-After`).
pub type SentryAnswer = (u16, Vec<(&'static str, &'static str)>);

/// A local HTTP server that speaks Sentry's envelope endpoint, `POST
/// /api/{project}/envelope/`: it checks `X-Sentry-Auth` (401 without the project's
/// key, as Sentry answers), parses each envelope, and gives the scripted answers in
/// order, then 200 with the event id.
pub struct SentryReceiver {
    pub port: u16,
    pub project: u64,
    pub key: String,
    envelopes: Arc<std::sync::Mutex<Vec<SentryEnvelope>>>,
}

impl SentryReceiver {
    pub async fn start(answers: Vec<SentryAnswer>) -> SentryReceiver {
        let (project, key) = (42u64, "3f2a9c1b8d7e4f60a1b2c3d4e5f60718".to_owned());
        let envelopes: Arc<std::sync::Mutex<Vec<SentryEnvelope>>> = Default::default();
        let answers = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            answers,
        )));
        let (log, expected_key) = (envelopes.clone(), key.clone());
        let app = axum::Router::new().route(
            "/api/{project}/envelope/",
            axum::routing::post(
                move |axum::extract::Path(path_project): axum::extract::Path<u64>,
                      headers: axum::http::HeaderMap,
                      body: axum::body::Bytes| {
                    let (log, answers, expected_key) =
                        (log.clone(), answers.clone(), expected_key.clone());
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let auth = sentry_auth(&header("x-sentry-auth"));
                        let authorised = path_project == project
                            && auth.get("sentry_key") == Some(&expected_key);
                        let (header_line, items) = parse_envelope(&body);
                        let (status, extra) = if authorised {
                            answers.lock().unwrap().pop_front().unwrap_or((200, vec![]))
                        } else {
                            (401, vec![])
                        };
                        log.lock().unwrap().push(SentryEnvelope {
                            path: format!("/api/{path_project}/envelope/"),
                            auth,
                            content_type: header("content-type"),
                            header: header_line.clone(),
                            items,
                            status,
                        });
                        let mut response = axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            axum::Json(json!({"id": header_line["event_id"]})),
                        ));
                        for (name, value) in extra {
                            response
                                .headers_mut()
                                .insert(name, axum::http::HeaderValue::from_static(value));
                        }
                        response
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        SentryReceiver {
            port,
            project,
            key,
            envelopes,
        }
    }

    /// The DSN a project on this receiver has.
    pub fn dsn(&self) -> String {
        format!(
            "http://{}@127.0.0.1:{}/{}",
            self.key, self.port, self.project
        )
    }

    /// Every envelope received so far, refused ones included.
    pub fn envelopes(&self) -> Vec<SentryEnvelope> {
        self.envelopes.lock().unwrap().clone()
    }

    /// The envelopes it accepted (answered 2xx).
    pub fn accepted(&self) -> Vec<SentryEnvelope> {
        self.envelopes()
            .into_iter()
            .filter(|e| (200..300).contains(&e.status))
            .collect()
    }
}

/// `Sentry sentry_key=…, sentry_version=7, …` as its fields.
fn sentry_auth(header: &str) -> std::collections::HashMap<String, String> {
    header
        .strip_prefix("Sentry ")
        .unwrap_or("")
        .split(',')
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// An envelope's header and items (item header, payload), by the format's rules: a
/// payload is `length` bytes when its header says so, else up to the next newline.
fn parse_envelope(body: &[u8]) -> (Value, Vec<(Value, Value)>) {
    let line_end = |from: usize| {
        body[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(body.len(), |p| from + p)
    };
    let end = line_end(0);
    let header: Value = serde_json::from_slice(&body[..end]).expect("an envelope header");
    let mut at = end + 1;
    let mut items = Vec::new();
    while at < body.len() {
        let end = line_end(at);
        if end == at {
            at += 1;
            continue;
        }
        let item: Value = serde_json::from_slice(&body[at..end]).expect("an item header");
        at = end + 1;
        let payload_end = match item["length"].as_u64() {
            Some(length) => at + length as usize,
            None => line_end(at),
        };
        assert!(
            payload_end <= body.len(),
            "an item longer than the envelope"
        );
        let payload = serde_json::from_slice(&body[at..payload_end]).unwrap_or(Value::Null);
        items.push((item, payload));
        at = payload_end + 1;
    }
    (header, items)
}

/// Options whose `[alerts]` come from `toml` (a slotguard.toml's text) through the
/// same code as `serve`, with secrets from `env` instead of the process environment;
/// detection and dispatch timed as [`test_options`] times them.
pub fn alert_options(toml: &str, env: &[(&str, &str)], group_wait: Duration) -> Options {
    #[derive(serde::Deserialize)]
    struct File {
        alerts: slotguard::app::AlertsConfig,
    }
    let file: File = toml::from_str(toml).expect("the test's slotguard.toml parses");
    let vars: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let alerting = file
        .alerts
        .alerting_with_env(
            &slotguard::alert::routes::ConfigLines::read("slotguard.toml", toml),
            &|name| {
                vars.get(name)
                    .cloned()
                    .ok_or(std::env::VarError::NotPresent)
            },
        )
        .unwrap_or_else(|e| panic!("the test's alerts configuration builds:\n{e}"));
    Options {
        alerting,
        ..test_options(&[], group_wait, true)
    }
}

/// The lines a [`ServerProcess`] wrote to stderr, as they arrive.
pub type LogLines = Arc<std::sync::Mutex<Vec<String>>>;

impl ServerProcess {
    /// [`ServerProcess::start_in`], keeping every line it logs.
    pub async fn start_logged(
        database: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (ServerProcess, LogLines) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args(["serve", "--database", database, "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start slotguard");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let logged: LogLines = Default::default();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                logged.lock().unwrap().push(line.clone());
                if let Some(address) = line.strip_prefix("slotguard listening on ") {
                    return address.to_owned();
                }
            }
            panic!(
                "slotguard exited before listening:\n{}",
                logged.lock().unwrap().join("\n")
            );
        })
        .await
        .expect("slotguard started within 30 s");
        let keep = logged.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep.lock().unwrap().push(line);
            }
        });
        (
            ServerProcess {
                child,
                base,
                metrics_url: None,
            },
            logged,
        )
    }
}
