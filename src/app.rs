//! One running slotguard: the booking service, the detector, the alert dispatcher,
//! the metrics flusher and housekeeping, started together and stopped together.
//! `serve` and the end-to-end tests build it the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alert::channels::{ChannelConfig, Env};
use crate::alert::dispatch::{Dispatcher, Timing};
use crate::alert::routes::{ConfigLines, RouteConfig};
use crate::alert::Alerting;
use crate::audit::runner::{Auditor, Settings as AuditSettings};
use crate::booking::idempotency::KEEP_KEYS;
use crate::booking::Bookings;
use crate::clock::Clock;
use crate::detect::detector::{Detector, Settings};
use crate::detect::Wakeups;
use crate::domain::clinic::parse_timezone;
use crate::domain::schedule::parse_clock_time;
use crate::domain::{ClinicId, ConfigError, SourceZones};
use crate::http::AppState;
use crate::store::Store;

/// `[detect]` in slotguard.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Check a day as soon as a write touches it (default true); the re-scan runs either way.
    pub wakeups: Option<bool>,
    /// Seconds between re-scans of recently changed days (default 5).
    pub rescan_seconds: Option<f64>,
    /// How far back a re-scan looks, in seconds (default 120).
    pub rescan_window_seconds: Option<f64>,
}

/// `[alerts]` in slotguard.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alerts of one clinic within this many seconds go out as one message (default 30).
    pub group_wait_seconds: Option<f64>,
    /// An open, unchanged incident is repeated after this many seconds (default 14400).
    pub repeat_interval_seconds: Option<f64>,
    /// Write every incident change to the server log at warn (default true, unless a
    /// `kind = "log"` channel is configured).
    pub log: Option<bool>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    /// Which notifications go to which channels; none: every channel gets everything.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `[audit]` in slotguard.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Nights missed while no server ran are audited at start, this many days back (default 7).
    pub catch_up_days: Option<u32>,
    /// Minutes after `auditAt` before a day without a successful audit alerts (default 30).
    pub grace_minutes: Option<f64>,
    /// Seconds between looks at the clock (default 30).
    pub tick_seconds: Option<f64>,
    /// Local time of the weekly report on Mondays, HH:MM (default 09:00).
    pub weekly_report_at: Option<String>,
}

impl AuditConfig {
    pub fn settings(&self) -> Result<AuditSettings, ConfigError> {
        let d = AuditSettings::default();
        let catch_up_days = self.catch_up_days.unwrap_or(d.catch_up_days);
        if !(1..=60).contains(&catch_up_days) {
            return Err(
                format!("audit.catch_up_days = {catch_up_days}: must be from 1 to 60").into(),
            );
        }
        let tick = seconds("audit.tick_seconds", self.tick_seconds, d.tick)?;
        if tick.is_zero() {
            return Err("audit.tick_seconds must be above 0".into());
        }
        Ok(AuditSettings {
            catch_up_days,
            grace: seconds(
                "audit.grace_minutes",
                self.grace_minutes.map(|m| m * 60.0),
                d.grace,
            )?,
            tick,
            weekly_report_at: match &self.weekly_report_at {
                None => d.weekly_report_at,
                Some(raw) => {
                    parse_clock_time("audit.weekly_report_at", raw).map_err(|e| e.to_string())?
                }
            },
            ..d
        })
    }
}

/// `[watch]` in slotguard.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// `[watch.sources.NAME]`: settings of one watch source (the `{source}` of the
    /// watch API and of `watch import`).
    #[serde(default)]
    pub sources: BTreeMap<String, WatchSourceConfig>,
}

/// `[watch.sources.NAME]` in slotguard.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSourceConfig {
    /// The IANA time zone of the source's clinics that are not registered: their
    /// nightly audit, weekly report and local dates (a registered clinic keeps its own).
    pub timezone: String,
}

impl WatchConfig {
    pub fn zones(&self) -> Result<SourceZones, ConfigError> {
        self.sources
            .iter()
            .map(|(source, config)| {
                let field = format!("watch.sources.{source}");
                ClinicId::parse(&field, source).map_err(|e| {
                    format!(
                        "{field}: a source is named like in the watch API: {}",
                        e.message
                    )
                })?;
                let tz = parse_timezone(&format!("{field}.timezone"), &config.timezone)
                    .map_err(|e| format!("{} = {:?}: {}", e.field, config.timezone, e.message))?;
                Ok((source.clone(), tz))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(SourceZones::new)
            .map_err(ConfigError::from)
    }
}

/// `[metrics]` in slotguard.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Seconds between flushes of the booking counts to the database (default 5): the
    /// most a crash can lose.
    pub flush_seconds: Option<f64>,
    /// Also serve `/metrics`, without a key, on this address (`--metrics-listen`).
    pub listen: Option<String>,
}

/// How often booking counts go to the database when `[metrics] flush_seconds` is unset.
pub const DEFAULT_METRICS_FLUSH: Duration = Duration::from_secs(5);

impl MetricsConfig {
    pub fn flush_every(&self) -> Result<Duration, ConfigError> {
        let every = seconds(
            "metrics.flush_seconds",
            self.flush_seconds,
            DEFAULT_METRICS_FLUSH,
        )?;
        if every.is_zero() {
            return Err("metrics.flush_seconds must be above 0".into());
        }
        Ok(every)
    }
}

fn seconds(field: &str, value: Option<f64>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(s) if (0.0..1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(format!(
            "{field} = {s}: must be a number of seconds, 0 or more"
        )),
    }
}

impl DetectConfig {
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let d = Settings::default();
        let rescan_every = seconds("detect.rescan_seconds", self.rescan_seconds, d.rescan_every)?;
        if rescan_every.is_zero() {
            return Err("detect.rescan_seconds must be above 0".into());
        }
        Ok(Settings {
            wakeups: self.wakeups.unwrap_or(d.wakeups),
            rescan_every,
            rescan_window: seconds(
                "detect.rescan_window_seconds",
                self.rescan_window_seconds,
                d.rescan_window,
            )?,
            debounce: d.debounce,
        })
    }
}

impl AlertsConfig {
    /// The channels and routes, checked; secrets from the process environment.
    pub fn alerting(&self, lines: &ConfigLines) -> Result<Alerting, ConfigError> {
        self.alerting_with_env(lines, &|name| std::env::var(name))
    }

    /// [`Self::alerting`] with the environment given (tests bring their own).
    pub fn alerting_with_env(
        &self,
        lines: &ConfigLines,
        env: Env,
    ) -> Result<Alerting, ConfigError> {
        Alerting::build(&self.channels, &self.routes, self.log, env, lines)
    }

    pub fn timing(&self) -> Result<Timing, ConfigError> {
        let d = Timing::default();
        Ok(Timing {
            group_wait: seconds(
                "alerts.group_wait_seconds",
                self.group_wait_seconds,
                d.group_wait,
            )?,
            repeat_interval: seconds(
                "alerts.repeat_interval_seconds",
                self.repeat_interval_seconds,
                d.repeat_interval,
            )?,
            ..d
        })
    }
}

pub struct Options {
    pub detect: Settings,
    pub audit: AuditSettings,
    pub timing: Timing,
    pub alerting: Alerting,
    /// Between flushes of the booking counts to the rollups.
    pub metrics_flush: Duration,
}

impl Options {
    /// `lines` places the `[alerts]` tables in slotguard.toml, for errors that name
    /// the line ([`ConfigLines::default`] when there is no file).
    pub fn from_config(
        detect: &DetectConfig,
        alerts: &AlertsConfig,
        audit: &AuditConfig,
        watch: &WatchConfig,
        metrics: &MetricsConfig,
        lines: &ConfigLines,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            detect: detect.settings()?,
            audit: AuditSettings {
                zones: watch.zones()?,
                ..audit.settings()?
            },
            timing: alerts.timing()?,
            alerting: alerts.alerting(lines)?,
            metrics_flush: metrics.flush_every()?,
        })
    }
}

/// The services of one slotguard over one store, built once: what `serve` runs (as
/// an [`App`]) and what the commands that need them (`slotguard audit`, `watch
/// import`) borrow, so every caller gets the same wiring and settings.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub bookings: Arc<Bookings>,
    pub detector: Arc<Detector>,
    pub dispatcher: Arc<Dispatcher>,
    pub auditor: Arc<Auditor>,
    /// The wake-ups of this process's writes, for the detector once it runs.
    woken: tokio::sync::mpsc::UnboundedReceiver<crate::domain::Touched>,
    metrics_flush: Duration,
}

impl Services {
    pub fn build(store: Arc<dyn Store>, clock: Arc<dyn Clock>, options: Options) -> Self {
        let (wakeups, woken) = Wakeups::new(store.clone());
        let bookings = Arc::new(Bookings::new(store.clone(), clock.clone()).with_wakeups(wakeups));
        let detector = Arc::new(Detector::new(store.clone(), clock.clone(), options.detect));
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            clock.clone(),
            options.alerting,
            options.timing,
        ));
        let auditor = Arc::new(Auditor::new(
            store.clone(),
            clock,
            detector.clone(),
            dispatcher.clone(),
            options.audit,
        ));
        Self {
            store,
            bookings,
            detector,
            dispatcher,
            auditor,
            woken,
            metrics_flush: options.metrics_flush,
        }
    }
}

pub struct App {
    pub state: AppState,
    pub detector: Arc<Detector>,
    pub dispatcher: Arc<Dispatcher>,
    pub auditor: Arc<Auditor>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Builds the services over `store` and starts their background tasks.
    pub fn start(store: Arc<dyn Store>, clock: Arc<dyn Clock>, options: Options) -> Self {
        Self::run(Services::build(store, clock, options))
    }

    /// Starts the background tasks of `services`: the detector, the dispatcher, the
    /// auditor, the metrics flusher and housekeeping.
    pub fn run(services: Services) -> Self {
        let Services {
            store,
            bookings,
            detector,
            dispatcher,
            auditor,
            woken,
            metrics_flush,
        } = services;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(detector.clone().run(woken, stopped.clone())),
            tokio::spawn(dispatcher.clone().run(stopped.clone())),
            tokio::spawn(auditor.clone().run(stopped.clone())),
            tokio::spawn(
                bookings
                    .metrics()
                    .clone()
                    .run(store, metrics_flush, stopped.clone()),
            ),
            tokio::spawn(forget_old_keys(bookings.clone(), stopped.clone())),
        ];
        let state = AppState::new(bookings, detector.clone(), auditor.clone());
        tasks.push(tokio::spawn(crate::web::live::follow_other_processes(
            state.web.clone(),
            stopped,
        )));
        Self {
            state,
            detector,
            dispatcher,
            auditor,
            stop,
            tasks,
        }
    }

    /// Stops the background tasks and waits for them; the booking counts not yet in
    /// the database are flushed on the way out.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Hourly, drops idempotency keys past their keeping time, until shutdown.
async fn forget_old_keys(bookings: Arc<Bookings>, mut stopped: watch::Receiver<bool>) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every_hour.tick() => {
                if let Err(e) = bookings.forget_idempotency_keys(KEEP_KEYS).await {
                    tracing::warn!(error = %e, "could not drop old idempotency keys");
                }
            }
            _ = stopped.changed() => return,
        }
    }
}
