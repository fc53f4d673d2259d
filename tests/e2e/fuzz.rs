//! Issue 12, item 9: every body and query parser of the API and the dashboard fed
//! random input — valid requests with fields removed, retyped, misspelt or added,
//! bodies that are not JSON or not UTF-8, query strings of random names and values,
//! percent-encoded bytes that are not UTF-8. Never a panic, never a 5xx; an API
//! refusal is always the error envelope.
//!
//! The requests go through the whole router in this process (every middleware, the
//! real store), `SLOTGUARD_FUZZ_CASES` cases per target (default 120) from a seed
//! printed at the start (`SLOTGUARD_FUZZ_SEED` replays one).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Map, Value};
use slotguard::domain::StaffRole;
use tower::ServiceExt;

use crate::detection::{document, put};
use crate::support::*;

const CLINIC: &str = "kochi";

/// Random input, reproducible from its seed.
struct Fuzzer {
    rng: fastrand::Rng,
}

/// Text that parsers trip on: empty, spaces, control characters, markup, near-valid
/// dates and numbers, other scripts, long runs.
const AWKWARD: &[&str] = &[
    "",
    " ",
    "\0",
    "a\0b",
    "\u{1b}[31m",
    "\r\n",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "../../etc/passwd",
    "%00",
    "%FF",
    "2026-12-01",
    "2026-13-45",
    "2026-02-30",
    "-0001-01-01",
    "99999-12-31",
    "31 February 2026",
    "1 December 2026",
    "2026-12-01T10:00:00Z",
    "2026-12-01T25:61:00+05:30",
    "9999-12-31T23:59:59Z",
    "-1",
    "0",
    "1e309",
    "NaN",
    "18446744073709551616",
    "-9223372036854775809",
    "kochi",
    "dr-asha",
    "Asia/Kolkata",
    "Mars/Olympus",
    "open",
    "slot",
    "token",
    "admin",
    "Pending",
    "Cancelled",
    "നന്ദി",
    "👩‍⚕️",
    "\u{202e}",
];

impl Fuzzer {
    fn text(&mut self) -> String {
        match self.rng.u8(0..10) {
            0..=5 => AWKWARD[self.rng.usize(..AWKWARD.len())].to_owned(),
            6 => "x".repeat(self.rng.usize(60..5000)),
            7 => (0..self.rng.usize(1..40))
                .map(|_| char::from_u32(self.rng.u32(0..0x3000)).unwrap_or('?'))
                .collect(),
            _ => (0..self.rng.usize(1..20))
                .map(|_| self.rng.alphanumeric())
                .collect(),
        }
    }

    fn value(&mut self, depth: u32) -> Value {
        match self.rng.u8(0..12) {
            0 => Value::Null,
            1 => json!(self.rng.bool()),
            2 => json!(self.rng.i64(..)),
            3 => json!([0, -1, 1, 5, 100, 1000, i64::MAX, i64::MIN][self.rng.usize(..8)]),
            4 => json!(self.rng.f64() * 1e12 - 5e11),
            5 => json!(u64::MAX),
            6 => json!(1e300),
            7 if depth < 3 => Value::Array(
                (0..self.rng.usize(0..4))
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            8 if depth < 3 => Value::Object(
                (0..self.rng.usize(0..4))
                    .map(|_| (self.text(), self.value(depth + 1)))
                    .collect(),
            ),
            _ => json!(self.text()),
        }
    }

    /// A field name: one of the template's, one near it, or anything.
    fn field(&mut self, known: &[String]) -> String {
        match (self.rng.u8(0..4), known.is_empty()) {
            (0 | 1, false) => {
                let name = &known[self.rng.usize(..known.len())];
                match self.rng.u8(0..3) {
                    0 => name.to_lowercase(),
                    1 => format!("{name}s"),
                    _ => name.chars().skip(1).collect(),
                }
            }
            _ => self.text(),
        }
    }

    /// A body: the template changed a few times, or something that is no template.
    fn body(&mut self, template: &Value) -> Vec<u8> {
        match self.rng.u8(0..14) {
            0 => Vec::new(),
            1 => (0..self.rng.usize(1..300))
                .map(|_| self.rng.u8(..))
                .collect(),
            2 => {
                let text = template.to_string();
                text.as_bytes()[..self.rng.usize(..text.len().max(1))].to_vec()
            }
            3 => {
                let depth = self.rng.usize(100..5000);
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            }
            4 => self.value(0).to_string().into_bytes(),
            5 => b"{\"a\":1,\"a\":2}".to_vec(),
            _ => {
                let mut body = template.clone();
                for _ in 0..self.rng.usize(1..4) {
                    self.mutate(&mut body);
                }
                body.to_string().into_bytes()
            }
        }
    }

    fn mutate(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                let known: Vec<String> = map.keys().cloned().collect();
                match self.rng.u8(0..5) {
                    0 if !known.is_empty() => {
                        map.remove(&known[self.rng.usize(..known.len())]);
                    }
                    1 => {
                        let name = self.field(&known);
                        let v = self.value(1);
                        map.insert(name, v);
                    }
                    2 if !known.is_empty() => {
                        let name = &known[self.rng.usize(..known.len())];
                        let mut inner = map[name].clone();
                        self.mutate(&mut inner);
                        map.insert(name.clone(), inner);
                    }
                    _ if !known.is_empty() => {
                        let name = known[self.rng.usize(..known.len())].clone();
                        let v = self.value(1);
                        map.insert(name, v);
                    }
                    _ => {}
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let i = self.rng.usize(..items.len());
                self.mutate(&mut items[i]);
            }
            other => *other = self.value(1),
        }
    }

    /// A query string over `names` (and strangers), values percent-encoded as sent,
    /// sometimes with bytes that are not UTF-8 or a pair without `=`.
    fn query(&mut self, names: &[&str]) -> String {
        let mut pairs = Vec::new();
        for _ in 0..self.rng.usize(0..5) {
            let name = if names.is_empty() || self.rng.u8(0..4) == 0 {
                self.text()
            } else {
                names[self.rng.usize(..names.len())].to_owned()
            };
            let value = match self.rng.u8(0..6) {
                0 => "%FF%FE".to_owned(),
                1 => "%zz".to_owned(),
                _ => self.text(),
            };
            let pair = match self.rng.u8(0..8) {
                0 => encode(&name),
                _ if value.starts_with('%') => format!("{}={value}", encode(&name)),
                _ => format!("{}={}", encode(&name), encode(&value)),
            };
            pairs.push(pair);
        }
        pairs.join("&")
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request through the whole router: status and body.
async fn call(
    router: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let Ok(mut request) = request.body(Body::from(body)) else {
        // Not a request a client could send (e.g. a URI hyper would refuse).
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

pub async fn random_bodies_and_query_strings_never_panic_or_get_a_5xx(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let cases: usize = std::env::var("SLOTGUARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("SLOTGUARD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fuzz: {cases} cases per target, SLOTGUARD_FUZZ_SEED={seed}");
    let mut fuzz = Fuzzer {
        rng: fastrand::Rng::with_seed(seed),
    };

    // Something for every path to be about: a clinic, a doctor, an appointment, an
    // incident with its notification, a staff admin logged in.
    app.clinic_with_doctor(CLINIC, 10, json!([{"from": "09:00", "to": "13:00"}]))
        .await;
    let booked = app
        .post(
            "/api/v1/appointments",
            json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": DAY, "slotIndex": 3, "patientName": "Anu"}),
        )
        .await;
    assert_eq!(booked.status, StatusCode::CREATED, "{}", booked.text);
    let appointment = booked.body["id"].as_str().unwrap().to_owned();
    put(&app, &document("a", 5, "Pending", 0)).await;
    put(&app, &document("b", 5, "Pending", 0)).await;
    let incident = eventually(30, "the incident", || async {
        let list = app.get("/api/v1/incidents").await;
        list.body["incidents"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    app.staff_user("fuzz@example.org", StaffRole::Admin, &[])
        .await;
    let session = app.log_in("fuzz@example.org").await;
    let router = slotguard::http::router(app.app.state.clone());
    let bearer = ("authorization", format!("Bearer {}", app.admin_key));
    let json_type = ("content-type", "application/json".to_owned());
    let cookie = ("cookie", session.cookie.clone());
    let form_type = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );

    let booking = json!({"clinicId": CLINIC, "doctorId": "dr-asha", "date": DAY, "slotIndex": 5,
        "patientName": "Anu", "patientPhone": "+91 98470 12345", "bookedVia": "Online"});
    let bodies: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/api/v1/clinics".into(),
            json!({"id": "fuzz", "name": "Fuzz", "timezone": "Asia/Kolkata", "walkInReserveRatio": 0.2, "minLeadMinutes": 0, "auditAt": "23:00"}),
        ),
        (
            Method::PUT,
            format!("/api/v1/clinics/{CLINIC}"),
            json!({"name": "Kochi", "timezone": "Asia/Kolkata", "walkInReserveRatio": 0.2, "minLeadMinutes": 0}),
        ),
        (
            Method::POST,
            format!("/api/v1/clinics/{CLINIC}/doctors"),
            doctor_body("dr-fuzz", 10, json!([{"from": "09:00", "to": "13:00"}])),
        ),
        (
            Method::PUT,
            format!("/api/v1/clinics/{CLINIC}/doctors/dr-asha"),
            doctor_body("dr-asha", 10, json!([{"from": "09:00", "to": "13:00"}])),
        ),
        (Method::POST, "/api/v1/appointments".into(), booking.clone()),
        (
            Method::POST,
            "/api/book-appointment".into(),
            booking.clone(),
        ),
        (
            Method::POST,
            "/api/v1/appointments/validate".into(),
            booking.clone(),
        ),
        (
            Method::POST,
            "/api/v1/appointments/walk-in".into(),
            json!({"clinicId": CLINIC, "doctorId": "dr-asha", "patientName": "Binu", "force": false}),
        ),
        (
            Method::POST,
            format!("/api/v1/appointments/{appointment}/status"),
            json!({"status": "Confirmed"}),
        ),
        (
            Method::POST,
            format!("/api/v1/appointments/{appointment}/cancel"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/appointments/{appointment}/reschedule"),
            json!({"date": DAY, "slotIndex": 8}),
        ),
        (
            Method::PUT,
            "/api/v1/watch/kloqo/appointments/fuzz-1".into(),
            document("fuzz-1", 9, "Pending", 0),
        ),
        (
            Method::POST,
            "/api/v1/watch/kloqo/appointments:batch".into(),
            json!({"documents": [document("fuzz-2", 10, "Pending", 0)]}),
        ),
        (
            Method::POST,
            format!("/api/v1/incidents/{incident}/acknowledge"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/incidents/{incident}/resolve"),
            json!({"note": "moved"}),
        ),
        (
            Method::POST,
            "/api/v1/notifications/n-1/retry".into(),
            json!({}),
        ),
        (
            Method::POST,
            "/api/v1/silences".into(),
            json!({"clinicId": CLINIC, "kind": "slot", "reason": "r", "endsAt": "2026-12-01T12:00:00+05:30"}),
        ),
        (
            Method::POST,
            "/api/v1/audits".into(),
            json!({"clinicId": CLINIC, "date": DAY}),
        ),
    ];
    let incident_page = format!("/incidents/{incident}");
    let queries: Vec<(&str, &[&str])> = vec![
        ("/api/v1/clinics", &[]),
        (
            "/api/v1/appointments",
            &["clinicId", "doctorId", "date", "status", "limit"],
        ),
        (
            "/api/v1/clinics/kochi/doctors/dr-asha/availability",
            &["date", "from", "to"],
        ),
        (
            "/api/v1/incidents",
            &[
                "clinicId", "state", "kind", "date", "from", "to", "limit", "cursor", "doctorId",
            ],
        ),
        (
            "/api/v1/notifications",
            &[
                "clinicId",
                "state",
                "channel",
                "limit",
                "cursor",
                "incidentId",
            ],
        ),
        ("/api/v1/silences", &["clinicId", "active"]),
        (
            "/api/v1/audits",
            &["clinicId", "from", "to", "date", "status"],
        ),
        ("/api/v1/stats", &["clinicId", "from", "to"]),
        ("/api/v1/reports/weekly", &["clinicId", "week", "format"]),
        ("/metrics", &[]),
        ("/", &["clinic"]),
        ("/fragments/overview", &["clinic"]),
        (
            "/incidents",
            &[
                "clinic", "doctor", "state", "kind", "found_by", "from", "to", "cursor", "after",
            ],
        ),
        (
            "/incidents.csv",
            &[
                "clinic", "doctor", "state", "kind", "found_by", "from", "to",
            ],
        ),
        (
            "/fragments/incidents",
            &[
                "clinic", "doctor", "state", "kind", "found_by", "from", "to", "cursor",
            ],
        ),
        ("/board", &["clinic", "doctor", "date"]),
        ("/audits", &["clinic", "from", "to", "done"]),
        ("/reports", &["clinic", "week"]),
        ("/reports/view", &["clinic", "week", "format"]),
        ("/silences", &["clinic"]),
        ("/admin", &["done"]),
        ("/login", &["next"]),
        (&incident_page, &["recheck", "retried", "done"]),
    ];
    let forms: Vec<(String, Vec<&str>)> = vec![
        (format!("/incidents/{incident}/acknowledge"), vec!["csrf"]),
        (
            format!("/incidents/{incident}/resolve"),
            vec!["csrf", "note"],
        ),
        (format!("/incidents/{incident}/recheck"), vec!["csrf"]),
        (
            format!("/incidents/{incident}/silence"),
            vec!["csrf", "hours", "reason"],
        ),
        ("/audits".into(), vec!["csrf", "clinic", "date"]),
        (
            "/silences".into(),
            vec!["csrf", "clinic", "kind", "hours", "reason"],
        ),
        (
            "/admin/users".into(),
            vec!["csrf", "email", "role", "clinic"],
        ),
        ("/admin/keys".into(), vec!["csrf", "role", "clinic", "kind"]),
        ("/silences/s-1/end".into(), vec!["csrf"]),
        ("/admin/users/u-1/disable".into(), vec!["csrf"]),
        ("/admin/keys/k-1/revoke".into(), vec!["csrf"]),
    ];

    let mut failures = Vec::new();
    let mut tally = std::collections::BTreeMap::<u16, usize>::new();
    let mut check = |what: String, status: StatusCode, body: &[u8], api: bool| {
        *tally.entry(status.as_u16()).or_default() += 1;
        if status.is_server_error() {
            failures.push(format!(
                "{status} for {what}: {}",
                String::from_utf8_lossy(body)
            ));
        } else if api && status.is_client_error() {
            let envelope: Option<Value> = serde_json::from_slice(body).ok();
            let code = envelope.as_ref().and_then(|e| e["error"]["code"].as_str());
            if code.is_none() {
                failures.push(format!(
                    "{status} outside the error envelope for {what}: {}",
                    String::from_utf8_lossy(body)
                ));
            }
        }
    };
    for _ in 0..cases {
        for (method, path, template) in &bodies {
            let body = fuzz.body(template);
            let query = fuzz.query(&["clinicId", "dryRun", "force"]);
            let uri = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            let headers = [bearer.clone(), json_type.clone()];
            let (status, answer) =
                call(&router, method.clone(), &uri, &headers, body.clone()).await;
            check(
                format!("{method} {uri} {}", String::from_utf8_lossy(&body)),
                status,
                &answer,
                true,
            );
        }
        for (path, names) in &queries {
            let query = fuzz.query(names);
            let uri = format!("{path}?{query}");
            let api = path.starts_with("/api") || *path == "/metrics";
            let headers = if api {
                vec![bearer.clone()]
            } else {
                vec![cookie.clone()]
            };
            let (status, answer) = call(&router, Method::GET, &uri, &headers, Vec::new()).await;
            check(format!("GET {uri}"), status, &answer, api);
        }
        for (path, names) in &forms {
            let mut fields: Map<String, Value> = Map::new();
            for name in names {
                let value = if *name == "csrf" && fuzz.rng.u8(0..4) != 0 {
                    session.csrf.clone()
                } else {
                    fuzz.text()
                };
                fields.insert((*name).to_owned(), json!(value));
            }
            let mut body = fields
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v.as_str().unwrap_or(""))))
                .collect::<Vec<_>>()
                .join("&");
            if fuzz.rng.u8(0..5) == 0 {
                body.push_str(&format!("&{}", fuzz.query(names)));
            }
            let headers = [cookie.clone(), form_type.clone()];
            let (status, answer) = call(
                &router,
                Method::POST,
                path,
                &headers,
                body.clone().into_bytes(),
            )
            .await;
            check(format!("POST {path} {body}"), status, &answer, false);
        }
        // The login form, without a session.
        let login = fuzz.query(&["email", "password", "next"]);
        let (status, answer) = call(
            &router,
            Method::POST,
            "/login",
            std::slice::from_ref(&form_type),
            login.clone().into_bytes(),
        )
        .await;
        check(format!("POST /login {login}"), status, &answer, false);
    }
    eprintln!("fuzz: answers by status {tally:?}");
    assert!(
        failures.is_empty(),
        "SLOTGUARD_FUZZ_SEED={seed}: {} failures, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        tally.keys().any(|s| (200..300).contains(s)) && tally.keys().any(|s| *s >= 400),
        "the cases reached both answers and refusals: {tally:?}"
    );
}
