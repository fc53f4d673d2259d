//! `slotguard loadtest`: drives any slotguard server with an open model (arrivals at a
//! set rate, in phases, whatever the latency) or a closed one (`--concurrency`), from a
//! built-in scenario or an artillery script ([`artillery`]), measures latency from each
//! request's due time into HDR histograms, writes a Jepsen-style history, then reads
//! back every touched doctor-day and runs the same checker as `slotguard check` over it
//! ([`readback`]). A run fails when it booked nothing, met a 4xx other than the rush's
//! conflicts, or broke a threshold ([`stats`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::domain::{Appointment, Clinic};
use crate::history::{AnsweredAppointment, OpKind, Operation, Outcome};

pub mod arrivals;
pub mod artillery;
pub mod readback;
pub mod stats;

use arrivals::Phase;
use artillery::Step;
use stats::{Answer, Class, Expected, Sample, Stats, Thresholds};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Everyone books slot 5 of one doctor-day: the morning rush on slot 5.
    SameSlot,
    /// One clinic's morning: advance bookings skewed to early slots, walk-ins, a few cancels.
    Rush,
    /// Many clinics and doctors, random days and slots: throughput.
    Spread,
    /// Walk-ins for one doctor, today.
    WalkIn,
    /// Clients that lose answers and retry with the same Idempotency-Key.
    IdempotentRetry,
}

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// Base URL of the slotguard server (http:// only).
    /// [default: the script's config.target, else http://127.0.0.1:8080]
    #[arg(long)]
    pub target: Option<String>,
    /// API key, sent as `Authorization: Bearer KEY` (unless the script sends its own
    /// Authorization header) and used to set the run up and read it back. An admin key
    /// lets the run create its own clinic; the read-back needs an admin or clinic key.
    /// Required, except with a script whose config.defaults.headers has Authorization.
    #[arg(long, env = "SLOTGUARD_KEY")]
    pub key: Option<String>,
    /// What each arrival sends (ignored with --script).
    #[arg(long, value_enum, default_value = "same-slot")]
    pub scenario: Scenario,
    /// Run an artillery script instead of a scenario, as artillery runs it: its phases,
    /// each arrival a virtual user running its scenario's flow in order, templates,
    /// variables and CSV payload (docs/PROOF.md lists the subset; anything else is
    /// refused with exit 2). [default: none, run --scenario]
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Seconds of load: the one phase of a scenario, or how long --concurrency workers
    /// run (a script's phases set their own).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Arrivals per second of the one phase (open model; not with --script).
    #[arg(long, default_value_t = 10.0, conflicts_with = "script")]
    pub rate: f64,
    /// Ramp the arrival rate linearly to this by the end of the phase (not with
    /// --script). [default: no ramp]
    #[arg(long, conflicts_with = "script")]
    pub ramp_to: Option<f64>,
    /// Closed model: this many clients, each sending its next request (with --script,
    /// running its next flow) when the last one is answered. [default: open model]
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Book at this existing clinic (with --doctor) instead of creating one.
    /// [default: a new clinic lt-<run>]
    #[arg(long, requires = "doctor", conflicts_with = "script")]
    pub clinic: Option<String>,
    /// The doctor id at --clinic to book with.
    #[arg(long, requires = "clinic")]
    pub doctor: Option<String>,
    /// Clinics the `spread` scenario creates.
    #[arg(long, default_value_t = 10)]
    pub clinics: u32,
    /// Doctors per clinic the `spread` scenario creates.
    #[arg(long, default_value_t = 5)]
    pub doctors: u32,
    /// Day advance bookings go to, YYYY-MM-DD (not with --script).
    /// [default: a week from today, India time]
    #[arg(long, conflicts_with = "script")]
    pub date: Option<String>,
    /// Seconds before a request counts as timed out (outcome unknown: `info`).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Arrivals under way at most (a script's virtual user counts until its flow
    /// ends); arrivals past it are dropped and counted.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// Also expect this 4xx answer, `STATUS` or `STATUS:CODE` (repeatable), e.g.
    /// `--accept 429` or `--accept 422:slot_too_soon`. A run fails when it booked
    /// nothing or got any 4xx but these and the rush's conflicts (409 slot_taken,
    /// token_taken, no_slot_available, no_walk_in_slot). [default: none]
    #[arg(long, value_name = "STATUS[:CODE]", value_parser = Expected::parse_accept)]
    pub accept: Vec<(u16, Option<String>)>,
    /// Write the JSON report here. [default: none]
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the history (JSON lines, one per operation) here. [default: none]
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Fail the run when p99 latency (ms, from due time) is above this.
    /// [default: no limit]
    #[arg(long)]
    pub max_p99: Option<f64>,
    /// Fail the run when the share of errors (5xx, 429, timeouts, connection
    /// failures) is above this fraction. [default: no limit]
    #[arg(long)]
    pub max_error_rate: Option<f64>,
    /// Fail the run unless the read-back finds no duplicate and no lost booking.
    #[arg(long)]
    pub expect_zero_duplicates: bool,
    /// Skip the read-back.
    #[arg(long)]
    pub no_verify: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Where the run goes when neither --target nor the script says: `slotguard serve`'s
/// own default address.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:8080";

/// Most arrivals one run may plan (the schedule is held in memory).
const MAX_ARRIVALS: f64 = 10_000_000.0;

/// What one arrival of a scenario sends.
#[derive(Debug, Clone)]
struct Request {
    kind: OpKind,
    path: String,
    body: Value,
    idempotency_key: Option<String>,
    /// Extra sends with the same key (the idempotent-retry scenario).
    retries: u32,
    /// Cancel the booking afterwards when it succeeds (the rush scenario).
    then_cancel: bool,
}

/// How one request ended.
struct Answered {
    class: Class,
    status: Option<u16>,
    body: Option<Value>,
    /// `error.code` of a refusal, or what went wrong with no answer (for the history).
    error: Option<String>,
    /// The answer, when it was not a 2xx.
    refusal: Option<Answer>,
}

/// Everything the arrivals share.
struct Run {
    id: String,
    base: String,
    client: reqwest::Client,
    /// `Bearer KEY` of --key: sent unless a script gives its own Authorization.
    auth: Option<String>,
    scenario: Scenario,
    script: Option<artillery::Script>,
    /// (clinic, doctor) pairs the run books at.
    targets: Vec<(String, String)>,
    date: chrono::NaiveDate,
    /// When the first arrival is due; samples' `due` count from here.
    start: Instant,
    op_counter: AtomicU64,
    /// Virtual users so far, for a payload read in sequence.
    users: AtomicUsize,
    mismatched_replays: AtomicU64,
    /// Operations whose body named the doctor instead of giving a doctorId.
    named_doctors: Mutex<readback::NamedDoctors>,
}

/// What the arrivals tell the collector.
enum Event {
    /// A request finished, with its history lines.
    Request(Sample, Vec<Operation>),
    /// An arrival (a virtual user of a script) finished all it had to send.
    ArrivalDone,
}

/// Why a load run was not made or did not pass; the command line gives each its own
/// exit code.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The arguments or the script are at fault.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

fn usage(message: impl Into<String>) -> LoadtestError {
    LoadtestError::Usage(message.into())
}

pub async fn run(args: LoadtestArgs) -> Result<(), LoadtestError> {
    let script = match &args.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            let env = |name: &str| std::env::var(name).ok();
            Some(
                artillery::Script::parse(&text, dir, &env)
                    .map_err(|e| usage(format!("{}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let base = args
        .target
        .clone()
        .or_else(|| script.as_ref().and_then(|s| s.target.clone()))
        .unwrap_or_else(|| DEFAULT_TARGET.to_owned())
        .trim_end_matches('/')
        .to_owned();
    if !base.starts_with("http://") {
        return Err(usage(format!(
            "--target {base}: only http:// targets are supported"
        )));
    }
    let auth = args.key.as_ref().map(|k| format!("Bearer {k}"));
    let script_auth = script.as_ref().and_then(|s| {
        s.headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .map(|(_, value)| value.clone())
    });
    // The set-up and the read-back use --key, else the script's own key.
    let Some(read_auth) = auth.clone().or(script_auth) else {
        return Err(usage(
            "--key is required (or SLOTGUARD_KEY, or an Authorization header in the script's config.defaults.headers)",
        ));
    };
    let phases = match &script {
        Some(s) => s.phases.clone(),
        None => vec![Phase {
            duration: args.duration,
            arrival_rate: args.rate,
            ramp_to: args.ramp_to,
        }],
    };
    for phase in &phases {
        phase.check().map_err(usage)?;
    }
    let planned: f64 = phases.iter().map(Phase::expected_arrivals).sum();
    if planned > MAX_ARRIVALS {
        return Err(usage(format!(
            "the phases plan {planned:.0} arrivals; at most {MAX_ARRIVALS} are allowed"
        )));
    }
    let timeout_ok = args.timeout.is_finite() && args.timeout > 0.0;
    if args.concurrency == Some(0) || args.max_in_flight == 0 || !timeout_ok {
        return Err(usage(
            "--concurrency, --max-in-flight and --timeout must be positive",
        ));
    }
    let today = Utc::now()
        .with_timezone(&Clinic::DEFAULT_TIMEZONE)
        .date_naive();
    let date = match &args.date {
        Some(d) => {
            crate::domain::schedule::parse_date("--date", d).map_err(|e| usage(e.to_string()))?
        }
        None => today + chrono::Duration::days(7),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(args.timeout))
        .pool_max_idle_per_host(args.max_in_flight.min(1024))
        .build()
        .map_err(|e| LoadtestError::Failed(e.to_string()))?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let targets = match (&args.clinic, &args.doctor, &script) {
        (Some(c), Some(d), _) => vec![(c.clone(), d.clone())],
        (_, _, Some(_)) => Vec::new(),
        _ => {
            set_up(
                &client,
                &base,
                &read_auth,
                &id,
                args.scenario,
                args.clinics,
                args.doctors,
            )
            .await?
        }
    };
    let schedule = match (&script, args.concurrency) {
        (_, Some(_)) => Vec::new(),
        (Some(_), None) => arrivals::artillery_schedule(&phases),
        (None, None) => arrivals::schedule(&phases),
    };
    let run = Arc::new(Run {
        id,
        base,
        client,
        auth,
        scenario: args.scenario,
        script,
        targets,
        date,
        start: Instant::now() + Duration::from_millis(50),
        op_counter: AtomicU64::new(0),
        users: AtomicUsize::new(0),
        mismatched_replays: AtomicU64::new(0),
        named_doctors: Mutex::new(readback::NamedDoctors::new()),
    });

    let (events, received) = mpsc::unbounded_channel();
    let expected_arrivals = args.concurrency.is_none().then_some(schedule.len() as u64);
    let collector = tokio::spawn(collect(
        received,
        args.history.clone(),
        expected_arrivals,
        args.quiet,
    ));
    let (late, dropped) = match args.concurrency {
        Some(n) => {
            closed_model(
                run.clone(),
                n,
                Duration::from_secs_f64(args.duration),
                events,
            )
            .await;
            (0, 0)
        }
        None => open_model(run.clone(), schedule, args.max_in_flight, events).await,
    };
    let (mut stats, history) = collector
        .await
        .map_err(|e| LoadtestError::Failed(e.to_string()))??;
    stats.late_arrivals = late;
    stats.dropped_arrivals = dropped;
    let summary = stats.summary(&Expected {
        accepted: args.accept.clone(),
    });

    let mut failures = stats::unexpected(&summary);
    failures.extend(stats::violations(
        &summary,
        Thresholds {
            max_p99_ms: args.max_p99,
            max_error_rate: args.max_error_rate,
        },
    ));
    let mismatched = run.mismatched_replays.load(Ordering::Relaxed);
    if mismatched > 0 {
        failures.push(format!(
            "{mismatched} retries with the same Idempotency-Key got a different answer"
        ));
    }
    let verification = if args.no_verify {
        None
    } else {
        let named =
            std::mem::take(&mut *run.named_doctors.lock().unwrap_or_else(|e| e.into_inner()));
        match readback::verify(&run.client, &run.base, &read_auth, &history, &named).await {
            Ok(verified) => Some(verified),
            Err(e) => {
                failures.push(e);
                None
            }
        }
    };
    if args.expect_zero_duplicates {
        match &verification {
            Some(v) if !v.report.is_clean() => {
                failures.push("the read-back found duplicates or lost bookings".into())
            }
            None if args.no_verify => failures
                .push("--expect-zero-duplicates needs the read-back (drop --no-verify)".into()),
            _ => {}
        }
    }

    print_summary(&run, &summary, verification.as_ref(), &failures);
    if let Some(path) = &args.report {
        let report = json!({
            "run": run.id,
            "target": run.base,
            "scenario": if run.script.is_some() { Value::from("script") } else { json!(run.scenario.to_possible_value().map(|v| v.get_name().to_owned())) },
            "model": match args.concurrency { Some(n) => json!({"closed": {"concurrency": n, "durationSeconds": args.duration}}), None => json!({"open": {"phases": phases}}) },
            "summary": summary,
            "mismatchedReplays": mismatched,
            "verification": verification.as_ref().map(|v| &v.report),
            "verificationNotes": verification.as_ref().map(|v| &v.notes),
            "failures": failures,
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| LoadtestError::Failed(format!("cannot write {}: {e}", path.display())))?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(LoadtestError::Failed(format!(
            "load run failed: {}",
            failures.join("; ")
        )))
    }
}

/// Creates the run's own clinics (`lt-<run>[-n]`) with doctors `dr-0`… who work all
/// day every day in 1-minute slots (1435 slots a day).
async fn set_up(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    run: &str,
    scenario: Scenario,
    clinics: u32,
    doctors: u32,
) -> Result<Vec<(String, String)>, LoadtestError> {
    let (clinics, doctors) = if scenario == Scenario::Spread {
        (clinics.max(1), doctors.max(1))
    } else {
        (1, 1)
    };
    let hours = json!([{"from": "00:00", "to": "16:30"}, {"from": "16:30", "to": "23:55"}]);
    let week: serde_json::Map<String, Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| (d.to_string(), hours.clone()))
        .collect();
    let mut targets = Vec::new();
    for c in 0..clinics {
        let clinic = if clinics == 1 {
            format!("lt-{run}")
        } else {
            format!("lt-{run}-{c}")
        };
        post_setup(
            client,
            &format!("{base}/api/v1/clinics"),
            auth,
            json!({"id": clinic, "name": format!("Load test {run}")}),
        )
        .await?;
        for d in 0..doctors {
            let doctor = format!("dr-{d}");
            post_setup(client, &format!("{base}/api/v1/clinics/{clinic}/doctors"), auth, json!({"id": doctor, "name": format!("Doctor {d}"), "slotMinutes": 1, "availability": week})).await?;
            targets.push((clinic.clone(), doctor));
        }
    }
    Ok(targets)
}

async fn post_setup(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: Value,
) -> Result<(), LoadtestError> {
    let response = client
        .post(url)
        .header(reqwest::header::AUTHORIZATION, auth)
        .json(&body)
        .send()
        .await
        .map_err(|e| LoadtestError::Failed(format!("cannot reach {url}: {e}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(LoadtestError::Failed(format!("setting up the run failed at {url}: {status} {text} (an admin key is needed unless --clinic and --doctor are given)")));
    }
    Ok(())
}

impl Run {
    fn patient(&self, op: u64) -> String {
        format!("lt-{}-{op}", self.id)
    }

    /// The request arrival `op` of a scenario sends.
    fn request(&self, op: u64) -> Request {
        let mut request = Request {
            kind: OpKind::Book,
            path: "/api/v1/appointments".into(),
            body: Value::Null,
            idempotency_key: None,
            retries: 0,
            then_cancel: false,
        };
        let (clinic, doctor) = &self.targets[fastrand::usize(0..self.targets.len())];
        let book = |slot: Option<u32>, date: chrono::NaiveDate| {
            let mut body = json!({"clinicId": clinic, "doctorId": doctor, "date": date.to_string(), "patientName": self.patient(op), "bookedVia": "loadtest"});
            if let Some(slot) = slot {
                body["slotIndex"] = json!(slot);
            }
            body
        };
        let walk_in = || json!({"clinicId": clinic, "doctorId": doctor, "patientName": self.patient(op), "bookedVia": "loadtest"});
        match self.scenario {
            Scenario::SameSlot => request.body = book(Some(5), self.date),
            Scenario::Spread => {
                request.body = book(
                    Some(fastrand::u32(0..800)),
                    self.date + chrono::Duration::days(fastrand::i64(0..14)),
                )
            }
            Scenario::Rush if fastrand::f64() < 0.3 => {
                request.kind = OpKind::WalkIn;
                request.path = "/api/v1/appointments/walk-in".into();
                request.body = walk_in();
            }
            Scenario::Rush => {
                // Most patients want the first hour: slot = 400 · u³.
                let u = fastrand::f64();
                request.body = book(Some((400.0 * u * u * u) as u32), self.date);
                request.then_cancel = fastrand::f64() < 0.1;
            }
            Scenario::WalkIn => {
                request.kind = OpKind::WalkIn;
                request.path = "/api/v1/appointments/walk-in".into();
                request.body = walk_in();
            }
            Scenario::IdempotentRetry => {
                request.body = book(Some(fastrand::u32(0..800)), self.date);
                request.idempotency_key = Some(format!("lt-{}-{op}", self.id));
                request.retries = 1 + fastrand::u32(0..2);
            }
        }
        request
    }

    /// Sends one POST and classifies the answer. `headers` are the script's; --key's
    /// Authorization goes along unless they carry their own.
    async fn send(
        &self,
        path: &str,
        body: Option<&Value>,
        headers: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Answered {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            if !headers.iter().any(|(name, _)| name == "authorization") {
                request = request.header(reqwest::header::AUTHORIZATION, auth);
            }
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unanswered = |class, what: String| Answered {
            class,
            status: None,
            body: None,
            error: Some(what),
            refusal: None,
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = match response.text().await {
                    Ok(text) => text,
                    Err(e) => return unanswered(Class::Transport, format!("transport: {e}")),
                };
                let body: Option<Value> = serde_json::from_str(&text).ok();
                let refusal = (!(200..300).contains(&status)).then(|| Answer::of(status, &text));
                let code = refusal
                    .as_ref()
                    .map(|r| r.code.clone())
                    .filter(|c| !c.is_empty());
                Answered {
                    class: Class::of_status(status, code.as_deref()),
                    status: Some(status),
                    body,
                    error: code,
                    refusal,
                }
            }
            Err(e) if e.is_timeout() => unanswered(Class::Timeout, "timeout".into()),
            Err(e) if e.is_connect() => unanswered(Class::Connect, "connect".into()),
            Err(e) => unanswered(Class::Transport, format!("transport: {e}")),
        }
    }

    /// The history line of a booking request `body` ended as `answered`.
    fn booking_op(
        &self,
        op: u64,
        kind: OpKind,
        body: &Value,
        idempotency_key: Option<String>,
        invoked_at: chrono::DateTime<Utc>,
        answered: &Answered,
    ) -> Operation {
        let response: Option<AnsweredAppointment> = answered
            .body
            .as_ref()
            .filter(|_| answered.class.is_success())
            .and_then(|b| serde_json::from_value::<Appointment>(b.clone()).ok())
            .map(|a| AnsweredAppointment {
                id: a.id.to_string(),
                clinic_id: a.clinic_id.to_string(),
                doctor_id: a.doctor_id.to_string(),
                date: a.date.to_string(),
                slot_index: a.slot_index,
                token_number: a.token_number,
                status: a.status.to_string(),
            });
        let text = |name: &str| body[name].as_str().map(str::to_owned);
        Operation {
            op,
            kind,
            patient_name: text("patientName"),
            idempotency_key,
            clinic_id: text("clinicId")
                .or_else(|| response.as_ref().map(|r| r.clinic_id.clone()))
                .unwrap_or_default(),
            doctor_id: text("doctorId")
                .or_else(|| response.as_ref().map(|r| r.doctor_id.clone()))
                .unwrap_or_default(),
            date: response
                .as_ref()
                .map(|a| a.date.clone())
                .or_else(|| text("date")),
            slot_index: body["slotIndex"].as_u64().map(|s| s as u32),
            appointment_id: None,
            invoked_at,
            completed_at: Utc::now(),
            outcome: match (answered.class.is_success(), answered.status) {
                (true, _) => Outcome::Ok,
                (false, Some(_)) => Outcome::Fail,
                (false, None) => Outcome::Info,
            },
            status: answered.status,
            error: if answered.class.is_success() {
                None
            } else {
                answered.error.clone()
            },
            response,
        }
    }

    fn sample(&self, due_at: Instant, answered: &Answered) -> Sample {
        Sample {
            due: due_at.saturating_duration_since(self.start),
            latency: due_at.elapsed(),
            class: answered.class,
            refusal: answered.refusal.clone(),
        }
    }

    /// Runs arrival `op`: a scenario's request, or a script's virtual user.
    async fn arrive(&self, op: u64, due_at: Instant, events: &mpsc::UnboundedSender<Event>) {
        match &self.script {
            Some(script) => self.virtual_user(script, due_at, events).await,
            None => {
                let report = self.scenario_arrival(op, due_at).await;
                let _ = events.send(Event::Request(report.0, report.1));
            }
        }
        let _ = events.send(Event::ArrivalDone);
    }

    async fn scenario_arrival(&self, op: u64, due_at: Instant) -> (Sample, Vec<Operation>) {
        let request = self.request(op);
        let invoked_at = Utc::now();
        let key = request.idempotency_key.as_deref();
        let mut answered = self
            .send(&request.path, Some(&request.body), &[], key)
            .await;
        for _ in 0..request.retries {
            let again = self
                .send(&request.path, Some(&request.body), &[], key)
                .await;
            if answered.class.is_success()
                && again.class.is_success()
                && again.body.as_ref().map(|b| &b["id"]) != answered.body.as_ref().map(|b| &b["id"])
            {
                self.mismatched_replays.fetch_add(1, Ordering::Relaxed);
            }
            if again.status.is_some() || answered.status.is_none() {
                answered = again;
            }
        }
        let sample = self.sample(due_at, &answered);
        let booked = self.booking_op(
            op,
            request.kind,
            &request.body,
            request.idempotency_key.clone(),
            invoked_at,
            &answered,
        );
        let cancel = booked.response.clone().filter(|_| request.then_cancel);
        let mut ops = vec![booked];
        if let Some(booked) = cancel {
            let cancel_op = self.op_counter.fetch_add(1, Ordering::Relaxed) + 1_000_000_000;
            let invoked_at = Utc::now();
            let path = format!("/api/v1/appointments/{}/cancel", booked.id);
            let cancelled = self.send(&path, Some(&json!({})), &[], None).await;
            ops.push(Operation {
                op: cancel_op,
                kind: OpKind::Cancel,
                patient_name: None,
                idempotency_key: None,
                clinic_id: booked.clinic_id.clone(),
                doctor_id: booked.doctor_id.clone(),
                date: Some(booked.date.clone()),
                slot_index: Some(booked.slot_index),
                appointment_id: Some(booked.id.clone()),
                invoked_at,
                completed_at: Utc::now(),
                outcome: if cancelled.class.is_success() {
                    Outcome::Ok
                } else if cancelled.status.is_some() {
                    Outcome::Fail
                } else {
                    Outcome::Info
                },
                status: cancelled.status,
                error: if cancelled.class.is_success() {
                    None
                } else {
                    cancelled.error
                },
                response: None,
            });
        }
        (sample, ops)
    }

    /// One virtual user of a script: its variables and payload row, then every step
    /// of one scenario's flow in order, each POST sent when the one before it was
    /// answered (or its think time is over). As in artillery, a request that gets no
    /// answer at all ends the user's flow; a refusal does not.
    async fn virtual_user(
        &self,
        script: &artillery::Script,
        arrived: Instant,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let user = script.virtual_user(&self.users);
        let mut due_at = arrived;
        for step in &script.pick_scenario().flow {
            let post = match step {
                Step::Think(pause) => {
                    due_at = Instant::now() + *pause;
                    tokio::time::sleep_until(due_at).await;
                    continue;
                }
                Step::Post(post) => post,
            };
            let request = script.request(post, &user);
            let op = self.op_counter.fetch_add(1, Ordering::Relaxed);
            let kind = booking_kind(&request.path);
            let mut body = request.json;
            if let (Some(_), Some(Value::Object(fields))) = (kind, body.as_mut()) {
                // The checker finds the row an operation made by its patient's name.
                fields
                    .entry("patientName")
                    .or_insert_with(|| json!(self.patient(op)));
            }
            let invoked_at = Utc::now();
            let answered = self
                .send(&request.path, body.as_ref(), &request.headers, None)
                .await;
            let mut ops = Vec::new();
            if let Some(kind) = kind {
                let body = body.unwrap_or(Value::Null);
                let key = request
                    .headers
                    .iter()
                    .find(|(name, _)| name == "idempotency-key")
                    .map(|(_, v)| v.clone());
                if let (None, Some(clinic), Some(doctor)) = (
                    body.get("doctorId"),
                    body["clinicId"].as_str(),
                    body["doctor"].as_str(),
                ) {
                    self.named_doctors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(op, (clinic.to_owned(), doctor.to_owned()));
                }
                ops.push(self.booking_op(op, kind, &body, key, invoked_at, &answered));
            }
            let unanswered = answered.status.is_none();
            let _ = events.send(Event::Request(self.sample(due_at, &answered), ops));
            if unanswered {
                return;
            }
            due_at = Instant::now();
        }
    }
}

/// The booking a script's POST to `path` makes, if it is a booking endpoint.
fn booking_kind(path: &str) -> Option<OpKind> {
    match path.split('?').next().unwrap_or(path) {
        "/api/book-appointment" | "/api/v1/appointments" => Some(OpKind::Book),
        "/api/v1/appointments/walk-in" => Some(OpKind::WalkIn),
        _ => None,
    }
}

/// Sends each arrival at its due time, whether or not earlier ones were answered.
/// Returns (late, dropped) arrival counts.
async fn open_model(
    run: Arc<Run>,
    schedule: Vec<Duration>,
    max_in_flight: usize,
    events: mpsc::UnboundedSender<Event>,
) -> (u64, u64) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let (mut late, mut dropped) = (0, 0);
    for (op, due) in schedule.into_iter().enumerate() {
        let due_at = run.start + due;
        tokio::time::sleep_until(due_at).await;
        if due_at.elapsed() > stats::LATE_AFTER {
            late += 1;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            let _ = events.send(Event::ArrivalDone);
            continue;
        };
        let (run, events) = (run.clone(), events.clone());
        tokio::spawn(async move {
            run.arrive(op as u64, due_at, &events).await;
            drop(permit);
        });
    }
    // Wait for everything in flight.
    let _ = in_flight.acquire_many(max_in_flight as u32).await;
    (late, dropped)
}

/// `concurrency` clients, each sending its next request (running its next flow) as
/// soon as the last is answered.
async fn closed_model(
    run: Arc<Run>,
    concurrency: u32,
    duration: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (run, events, next) = (run.clone(), events.clone(), next.clone());
            tokio::spawn(async move {
                while run.start.elapsed() < duration {
                    let op = next.fetch_add(1, Ordering::Relaxed);
                    run.arrive(op, Instant::now(), &events).await;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

/// Gathers samples into statistics, appends history lines, moves the progress bar
/// (one step per arrival).
async fn collect(
    mut received: mpsc::UnboundedReceiver<Event>,
    history: Option<PathBuf>,
    expected: Option<u64>,
    quiet: bool,
) -> Result<(Stats, Vec<Operation>), LoadtestError> {
    let mut file = match &history {
        Some(path) => Some(tokio::io::BufWriter::new(
            tokio::fs::File::create(path).await.map_err(|e| {
                LoadtestError::Failed(format!("cannot write {}: {e}", path.display()))
            })?,
        )),
        None => None,
    };
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        match expected {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        }
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} arrivals {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut stats = Stats::default();
    let mut ops = Vec::new();
    while let Some(event) = received.recv().await {
        let (sample, mut done) = match event {
            Event::ArrivalDone => {
                bar.inc(1);
                continue;
            }
            Event::Request(sample, done) => (sample, done),
        };
        stats.record(sample);
        if let Some(f) = file.as_mut() {
            for op in &done {
                let mut line = serde_json::to_vec(op).unwrap_or_default();
                line.push(b'\n');
                f.write_all(&line)
                    .await
                    .map_err(|e| LoadtestError::Failed(format!("history: {e}")))?;
            }
        }
        ops.append(&mut done);
    }
    bar.finish_and_clear();
    if let Some(f) = file.as_mut() {
        f.flush()
            .await
            .map_err(|e| LoadtestError::Failed(format!("history: {e}")))?;
    }
    Ok((stats, ops))
}

fn print_summary(
    run: &Run,
    s: &stats::Summary,
    verification: Option<&readback::Verified>,
    failures: &[String],
) {
    let l = &s.latency_ms;
    println!("run {} against {}", run.id, run.base);
    let refused: u64 = s.answers.iter().map(|a| a.count).sum();
    println!(
        "requests {}  successes {}  refusals {}  errors {} ({:.2} %)  late arrivals {}  dropped {}",
        s.requests,
        s.successes,
        refused,
        s.errors,
        s.error_rate * 100.0,
        s.late_arrivals,
        s.dropped_arrivals
    );
    println!("latency from due time (ms): p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}", l.p50, l.p90, l.p95, l.p99, l.p999, l.max);
    let classes: Vec<String> = s
        .by_class
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    println!("outcomes: {}", classes.join(", "));
    if !s.answers.is_empty() {
        println!("answers other than 2xx:");
        for a in &s.answers {
            let verdict = match (a.expected, a.status) {
                (true, _) => "expected",
                (false, 400..=499) => "UNEXPECTED",
                _ => "error",
            };
            println!(
                "  {:<28} {:>8}  {:<10}  {}",
                a.label(),
                a.count,
                verdict,
                a.message
            );
        }
    }
    if let Some(v) = verification {
        print!("{}", v.report.render());
        for note in &v.notes {
            println!("  note: {note}");
        }
    }
    if failures.is_empty() {
        println!("PASSED");
    }
    for failure in failures {
        println!("FAILED: {failure}");
    }
}
