//! `slotguard loadtest`: drives any slotguard server with an open model (arrivals at a
//! set rate, in phases, whatever the latency) or a closed one (`--concurrency`),
//! measures latency from each request's due time into HDR histograms, writes a
//! Jepsen-style history, then reads back every touched doctor-day and runs the same
//! checker as `slotguard check` over it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::check;
use crate::cli::CliError;
use crate::domain::{Appointment, Clinic};
use crate::history::{AnsweredAppointment, OpKind, Operation, Outcome};

pub mod arrivals;
pub mod artillery;
pub mod stats;

use arrivals::Phase;
use stats::{Class, Sample, Stats, Thresholds};

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
    /// Base URL of the slotguard server (or `config.target` of --script).
    #[arg(long)]
    pub target: Option<String>,
    /// API key; an admin key lets the run create its own clinic and read back its days.
    #[arg(long, env = "SLOTGUARD_KEY")]
    pub key: String,
    #[arg(long, value_enum, default_value = "same-slot")]
    pub scenario: Scenario,
    /// Run an artillery script's phases and POST flows instead of a scenario.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Seconds of load (one phase; with --concurrency, how long workers run).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Arrivals per second (open model).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Ramp the arrival rate linearly to this by the end of the phase.
    #[arg(long)]
    pub ramp_to: Option<f64>,
    /// Closed model: this many clients, each sending its next request when the last
    /// one is answered.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Use this existing clinic (with --doctor) instead of creating one.
    #[arg(long, requires = "doctor")]
    pub clinic: Option<String>,
    #[arg(long, requires = "clinic")]
    pub doctor: Option<String>,
    /// Clinics and doctors per clinic the `spread` scenario creates.
    #[arg(long, default_value_t = 10)]
    pub clinics: u32,
    #[arg(long, default_value_t = 5)]
    pub doctors: u32,
    /// Day advance bookings go to [default: a week from today, clinic time].
    #[arg(long)]
    pub date: Option<String>,
    /// Seconds before a request counts as timed out (outcome unknown: `info`).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Requests in flight at most; arrivals past it are dropped and counted.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the history (JSON lines, one per operation) here.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Fail the run when p99 latency (ms, from due time) is above this.
    #[arg(long)]
    pub max_p99: Option<f64>,
    /// Fail the run when the share of errors (5xx, 429, timeouts, connection
    /// failures) is above this fraction.
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

/// Most arrivals one run may plan (the schedule is held in memory).
const MAX_ARRIVALS: f64 = 10_000_000.0;

/// What one arrival sends.
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

/// Everything the arrivals share.
struct Run {
    id: String,
    base: String,
    key: String,
    client: reqwest::Client,
    scenario: Scenario,
    script: Option<artillery::Script>,
    /// (clinic, doctor) pairs the run books at.
    targets: Vec<(String, String)>,
    date: chrono::NaiveDate,
    op_counter: AtomicU64,
    mismatched_replays: AtomicU64,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

pub async fn run(args: LoadtestArgs) -> Result<(), CliError> {
    let script = match &args.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
            Some(artillery::parse(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?)
        }
        None => None,
    };
    let base = args
        .target
        .clone()
        .or_else(|| script.as_ref().and_then(|s| s.target.clone()))
        .ok_or_else(|| usage("--target is required (or config.target in --script)"))?
        .trim_end_matches('/')
        .to_owned();
    if !base.starts_with("http://") {
        return Err(usage(format!(
            "--target {base}: only http:// targets are supported"
        )));
    }
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
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let targets = match (&args.clinic, &args.doctor, &script) {
        (Some(c), Some(d), _) => vec![(c.clone(), d.clone())],
        (_, _, Some(_)) => Vec::new(),
        _ => {
            set_up(
                &client,
                &base,
                &args.key,
                &id,
                args.scenario,
                args.clinics,
                args.doctors,
            )
            .await?
        }
    };
    let run = Arc::new(Run {
        id,
        base,
        key: args.key.clone(),
        client,
        scenario: args.scenario,
        script,
        targets,
        date,
        op_counter: AtomicU64::new(0),
        mismatched_replays: AtomicU64::new(0),
    });

    let (samples, received) = mpsc::unbounded_channel();
    let expected = match args.concurrency {
        Some(_) => None,
        None => Some(arrivals::schedule(&phases).len() as u64),
    };
    let collector = tokio::spawn(collect(
        received,
        args.history.clone(),
        expected,
        args.quiet,
    ));
    let (late, dropped) = match args.concurrency {
        Some(n) => {
            closed_model(
                run.clone(),
                n,
                Duration::from_secs_f64(args.duration),
                samples,
            )
            .await;
            (0, 0)
        }
        None => open_model(run.clone(), &phases, args.max_in_flight, samples).await,
    };
    let (mut stats, history) = collector
        .await
        .map_err(|e| CliError::Failed(e.to_string()))??;
    stats.late_arrivals = late;
    stats.dropped_arrivals = dropped;
    let summary = stats.summary();

    let verification = if args.no_verify {
        None
    } else {
        Some(verify(&run, &history).await?)
    };
    let mut failures = stats::violations(
        &summary,
        Thresholds {
            max_p99_ms: args.max_p99,
            max_error_rate: args.max_error_rate,
        },
    );
    let mismatched = run.mismatched_replays.load(Ordering::Relaxed);
    if mismatched > 0 {
        failures.push(format!(
            "{mismatched} retries with the same Idempotency-Key got a different answer"
        ));
    }
    if args.expect_zero_duplicates {
        match &verification {
            Some(report) if !report.is_clean() => {
                failures.push("the read-back found duplicates or lost bookings".into())
            }
            None => failures
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
            "verification": verification,
            "failures": failures,
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "run failed: {}",
            failures.join("; ")
        )))
    }
}

/// Creates the run's own clinics (`lt-<run>[-n]`) with doctors `dr-0`… who work all
/// day every day in 1-minute slots (1435 slots a day).
async fn set_up(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    run: &str,
    scenario: Scenario,
    clinics: u32,
    doctors: u32,
) -> Result<Vec<(String, String)>, CliError> {
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
            key,
            json!({"id": clinic, "name": format!("Load test {run}")}),
        )
        .await?;
        for d in 0..doctors {
            let doctor = format!("dr-{d}");
            post_setup(client, &format!("{base}/api/v1/clinics/{clinic}/doctors"), key, json!({"id": doctor, "name": format!("Doctor {d}"), "slotMinutes": 1, "availability": week})).await?;
            targets.push((clinic.clone(), doctor));
        }
    }
    Ok(targets)
}

async fn post_setup(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: Value,
) -> Result<(), CliError> {
    let response = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("cannot reach {url}: {e}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(CliError::Failed(format!("setting up the run failed at {url}: {status} {text} (an admin key is needed unless --clinic and --doctor are given)")));
    }
    Ok(())
}

impl Run {
    fn patient(&self, op: u64) -> String {
        format!("lt-{}-{op}", self.id)
    }

    /// The request arrival `op` sends.
    fn request(&self, op: u64) -> Request {
        let mut request = Request {
            kind: OpKind::Book,
            path: "/api/v1/appointments".into(),
            body: Value::Null,
            idempotency_key: None,
            retries: 0,
            then_cancel: false,
        };
        if let Some(script) = &self.script {
            let total: u32 = script.scenarios.iter().map(|(w, _)| w).sum();
            let mut pick = fastrand::u32(0..total.max(1));
            let posts = script
                .scenarios
                .iter()
                .find(|(w, _)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .map(|(_, p)| p)
                .unwrap_or(&script.scenarios[0].1);
            let post = &posts[fastrand::usize(0..posts.len())];
            request.path = post.url.clone();
            request.body = post.json.clone();
            if !request.body.is_object() {
                request.body = json!({});
            }
            request.body["patientName"] = json!(self.patient(op));
            if post.url.contains("walk-in") {
                request.kind = OpKind::WalkIn;
            }
            return request;
        }
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

    /// Sends one request and classifies the answer.
    async fn send(
        &self,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> (Class, Option<u16>, Option<Value>, Option<String>) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Option<Value> = response.json().await.ok();
                let code = body
                    .as_ref()
                    .and_then(|b| b["error"]["code"].as_str())
                    .map(str::to_owned);
                (
                    Class::of_status(status, code.as_deref()),
                    Some(status),
                    body,
                    code,
                )
            }
            Err(e) if e.is_timeout() => (Class::Timeout, None, None, Some("timeout".into())),
            Err(e) if e.is_connect() => (Class::Connect, None, None, Some("connect".into())),
            Err(e) => (
                Class::Transport,
                None,
                None,
                Some(format!("transport: {e}")),
            ),
        }
    }

    /// Runs arrival `op`; returns its sample and history lines.
    async fn arrive(&self, op: u64, due: Duration, due_at: Instant) -> (Sample, Vec<Operation>) {
        let request = self.request(op);
        let invoked_at = Utc::now();
        let key = request.idempotency_key.as_deref();
        let (mut class, mut status, mut body, mut error) =
            self.send(&request.path, &request.body, key).await;
        for _ in 0..request.retries {
            let again = self.send(&request.path, &request.body, key).await;
            if class.is_success()
                && again.0.is_success()
                && again.2.as_ref().map(|b| &b["id"]) != body.as_ref().map(|b| &b["id"])
            {
                self.mismatched_replays.fetch_add(1, Ordering::Relaxed);
            }
            if again.1.is_some() || status.is_none() {
                (class, status, body, error) = again;
            }
        }
        let latency = due_at.elapsed();
        let answered: Option<AnsweredAppointment> = body
            .filter(|_| class.is_success())
            .and_then(|b| serde_json::from_value::<Appointment>(b).ok())
            .map(|a| AnsweredAppointment {
                id: a.id.to_string(),
                clinic_id: a.clinic_id.to_string(),
                doctor_id: a.doctor_id.to_string(),
                date: a.date.to_string(),
                slot_index: a.slot_index,
                token_number: a.token_number,
                status: a.status.to_string(),
            });
        let field = |name: &str| request.body[name].as_str().unwrap_or_default().to_owned();
        let outcome = match (class.is_success(), status) {
            (true, _) => Outcome::Ok,
            (false, Some(_)) => Outcome::Fail,
            (false, None) => Outcome::Info,
        };
        let mut ops = vec![Operation {
            op,
            kind: request.kind,
            patient_name: Some(field("patientName")),
            idempotency_key: request.idempotency_key.clone(),
            clinic_id: field("clinicId"),
            doctor_id: field("doctorId"),
            date: answered
                .as_ref()
                .map(|a| a.date.clone())
                .or_else(|| request.body["date"].as_str().map(str::to_owned)),
            slot_index: request.body["slotIndex"].as_u64().map(|s| s as u32),
            appointment_id: None,
            invoked_at,
            completed_at: Utc::now(),
            outcome,
            status,
            error: if class.is_success() { None } else { error },
            response: answered.clone(),
        }];
        if let (true, Some(booked)) = (request.then_cancel, answered) {
            let cancel_op = self.op_counter.fetch_add(1, Ordering::Relaxed) + 1_000_000_000;
            let invoked_at = Utc::now();
            let (c, status, _, error) = self
                .send(
                    &format!("/api/v1/appointments/{}/cancel", booked.id),
                    &json!({}),
                    None,
                )
                .await;
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
                outcome: if c.is_success() {
                    Outcome::Ok
                } else if status.is_some() {
                    Outcome::Fail
                } else {
                    Outcome::Info
                },
                status,
                error: if c.is_success() { None } else { error },
                response: None,
            });
        }
        (
            Sample {
                due,
                latency,
                class,
            },
            ops,
        )
    }
}

type Report = (Sample, Vec<Operation>);

/// Sends each arrival at its due time, whether or not earlier ones were answered.
/// Returns (late, dropped) arrival counts.
async fn open_model(
    run: Arc<Run>,
    phases: &[Phase],
    max_in_flight: usize,
    samples: mpsc::UnboundedSender<Report>,
) -> (u64, u64) {
    let schedule = arrivals::schedule(phases);
    let start = Instant::now() + Duration::from_millis(50);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let (mut late, mut dropped) = (0, 0);
    for (op, due) in schedule.into_iter().enumerate() {
        let due_at = start + due;
        tokio::time::sleep_until(due_at).await;
        if due_at.elapsed() > stats::LATE_AFTER {
            late += 1;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let (run, samples) = (run.clone(), samples.clone());
        tokio::spawn(async move {
            let report = run.arrive(op as u64, due, due_at).await;
            drop(permit);
            let _ = samples.send(report);
        });
    }
    // Wait for everything in flight.
    let _ = in_flight.acquire_many(max_in_flight as u32).await;
    (late, dropped)
}

/// `concurrency` clients, each sending its next request as soon as the last is answered.
async fn closed_model(
    run: Arc<Run>,
    concurrency: u32,
    duration: Duration,
    samples: mpsc::UnboundedSender<Report>,
) {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (run, samples, next) = (run.clone(), samples.clone(), next.clone());
            tokio::spawn(async move {
                while start.elapsed() < duration {
                    let op = next.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let _ = samples.send(run.arrive(op, now - start, now).await);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

/// Gathers samples into statistics, appends history lines, moves the progress bar.
async fn collect(
    mut received: mpsc::UnboundedReceiver<Report>,
    history: Option<PathBuf>,
    expected: Option<u64>,
    quiet: bool,
) -> Result<(Stats, Vec<Operation>), CliError> {
    let mut file = match &history {
        Some(path) => Some(tokio::io::BufWriter::new(
            tokio::fs::File::create(path)
                .await
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?,
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
            "{elapsed_precise} [{bar:30}] {pos}/{len} requests {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut stats = Stats::default();
    let mut ops = Vec::new();
    while let Some((sample, mut done)) = received.recv().await {
        stats.record(sample);
        bar.inc(1);
        if let Some(f) = file.as_mut() {
            for op in &done {
                let mut line = serde_json::to_vec(op).unwrap_or_default();
                line.push(b'\n');
                f.write_all(&line)
                    .await
                    .map_err(|e| CliError::Failed(format!("history: {e}")))?;
            }
        }
        ops.append(&mut done);
    }
    bar.finish_and_clear();
    if let Some(f) = file.as_mut() {
        f.flush()
            .await
            .map_err(|e| CliError::Failed(format!("history: {e}")))?;
    }
    Ok((stats, ops))
}

/// Reads back every doctor-day the run touched through the API and checks it.
async fn verify(run: &Run, history: &[Operation]) -> Result<check::CheckReport, CliError> {
    let days: BTreeSet<(String, String, String)> = history
        .iter()
        .filter(|op| op.kind != OpKind::Cancel)
        .filter_map(|op| {
            op.date
                .clone()
                .map(|d| (op.clinic_id.clone(), op.doctor_id.clone(), d))
        })
        .collect();
    let mut rows = Vec::new();
    for (clinic, doctor, date) in days {
        let url = format!(
            "{}/api/v1/appointments?clinicId={clinic}&doctorId={doctor}&date={date}",
            run.base
        );
        let response = run
            .client
            .get(&url)
            .bearer_auth(&run.key)
            .send()
            .await
            .map_err(|e| CliError::Failed(format!("read-back failed: {e}")))?;
        if !response.status().is_success() {
            return Err(CliError::Failed(format!("read-back of {clinic}/{doctor}/{date} answered {} (it needs an admin or clinic key; --no-verify skips it)", response.status())));
        }
        let page: Value = response
            .json()
            .await
            .map_err(|e| CliError::Failed(format!("read-back: {e}")))?;
        let listed: Vec<Appointment> = serde_json::from_value(page["appointments"].clone())
            .map_err(|e| CliError::Failed(format!("read-back: {e}")))?;
        rows.extend(listed);
    }
    Ok(check::check(history, &rows))
}

fn print_summary(
    run: &Run,
    s: &stats::Summary,
    verification: Option<&check::CheckReport>,
    failures: &[String],
) {
    let l = &s.latency_ms;
    println!("run {} against {}", run.id, run.base);
    println!(
        "requests {}  successes {}  errors {} ({:.2} %)  late arrivals {}  dropped {}",
        s.requests,
        s.successes,
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
    if let Some(report) = verification {
        println!("{}", report.render());
    }
    for failure in failures {
        println!("FAILED: {failure}");
    }
}
