//! What the channels' tests share: notifications, configurations read from TOML, and
//! a real HTTP receiver that records what it is sent.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{body::Bytes, extract::State, http::HeaderMap, Router};

use super::*;

// ------------------------------------------------------------------ fixtures

pub(super) fn notification(event: Event) -> Notification {
    Notification {
        id: "ntf-kochi-2026-12-01-0007".to_owned(),
        clinic_id: "kochi".to_owned(),
        event,
        subject: "slotguard: 2 duplicate bookings at clinic kochi".to_owned(),
        text: "Slot 5 of dr-asha on 2026-12-01 has 2 occupying appointments.\n\
               Booked via: <script>alert(\"x\")</script> & co\n"
            .to_owned(),
        short_text: "kochi: slot 5 of dr-asha on 2026-12-01 booked twice".to_owned(),
        incidents: serde_json::json!([{
            "id": "inc-1", "kind": "slot", "doctor": "dr-asha", "date": "2026-12-01",
            "slotIndex": 5, "members": [{"patientName": "Anu Thomas"}], "state": "open"
        }]),
        details: None,
        html: None,
    }
}

#[derive(Deserialize)]
pub(super) struct File {
    pub(super) alerts: Alerts,
}

#[derive(Deserialize)]
pub(super) struct Alerts {
    pub(super) channels: Vec<ChannelConfig>,
}

pub(super) fn configs(toml_text: &str) -> Vec<ChannelConfig> {
    toml::from_str::<File>(toml_text)
        .unwrap_or_else(|e| panic!("test TOML must parse: {e}"))
        .alerts
        .channels
}

pub(super) fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| vars.get(name).cloned().ok_or(VarError::NotPresent)
}

pub(super) const SECRETS: &[(&str, &str)] = &[
    ("SLOTGUARD_SMTP_USER", "slotguard"),
    ("SLOTGUARD_SMTP_PASSWORD", "mail-secret"),
    ("TWILIO_TOKEN", "twilio-token"),
    ("GATEWAY_KEY", "gateway-key"),
    (
        "SENTRY_DSN",
        "https://0123456789abcdef@sentry.clinic.example/42",
    ),
    ("TYPO_DSN", "https://sentry.clinic.example/secret-project"),
];

pub(super) fn channels(toml_text: &str) -> Vec<Box<dyn Channel>> {
    match build_with_env(&configs(toml_text), &env_of(SECRETS)) {
        Ok(channels) => channels,
        Err(e) => panic!("the test configuration must build:\n{e}"),
    }
}

pub(super) fn channel(toml_text: &str) -> Box<dyn Channel> {
    channels(toml_text).remove(0)
}

pub(super) fn refusal(toml_text: &str) -> String {
    match build_with_env(&configs(toml_text), &env_of(SECRETS)) {
        Ok(_) => panic!("build must refuse this configuration"),
        Err(e) => e,
    }
}

pub(super) fn assert_contains(text: &str, wanted: &str) {
    assert!(text.contains(wanted), "expected {wanted:?} in:\n{text}");
}

// ------------------------------------------------- HTTP receivers on loopback

#[derive(Clone, Debug)]
pub(super) struct Received {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Received {
    pub(super) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("request has no {name} header"))
            .to_str()
            .unwrap()
    }

    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub(super) fn form(&self) -> HashMap<String, String> {
        serde_urlencoded::from_bytes(&self.body).expect("the body is a form")
    }
}

pub(super) type Answer = Arc<dyn Fn(&Received) -> StatusCode + Send + Sync>;

#[derive(Clone)]
pub(super) struct ReceiverState {
    pub(super) received: Arc<Mutex<Vec<Received>>>,
    pub(super) answer: Answer,
    pub(super) delay: Duration,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers with
/// whatever `answer` says.
pub(super) struct Receiver {
    pub(super) url: String,
    pub(super) received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub(super) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

pub(super) async fn receiver_answering(
    answer: impl Fn(&Received) -> StatusCode + Send + Sync + 'static,
    delay: Duration,
) -> Receiver {
    async fn record(
        State(state): State<ReceiverState>,
        method: axum::http::Method,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        let received = Received {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers,
            body,
        };
        let status = (state.answer)(&received);
        state.received.lock().unwrap().push(received);
        tokio::time::sleep(state.delay).await;
        (status, "answer from the test receiver")
    }
    let state = ReceiverState {
        received: Arc::default(),
        answer: Arc::new(answer),
        delay,
    };
    let received = state.received.clone();
    let router = Router::new().fallback(record).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Receiver { url, received }
}

pub(super) async fn receiver(status: StatusCode) -> Receiver {
    receiver_answering(move |_| status, Duration::ZERO).await
}

/// A loopback port nobody listens on (bound, then released).
pub(super) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
