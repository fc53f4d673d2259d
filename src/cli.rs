//! The `slotguard` command line: `serve`, `migrate`, `keys`, `audit` and the tools.
//! Configuration comes from flags, then environment variables, then `slotguard.toml`,
//! then defaults.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::auth::new_key;
use crate::clock::{Clock, SystemClock};
use crate::domain::{ClinicId, Role};
use crate::http;
use crate::store::{self, SqliteSync, Store};

pub const DEFAULT_DATABASE: &str = "./slotguard-data/slotguard.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Parser)]
#[command(
    name = "slotguard",
    version,
    about = "Clinic bookings that cannot give two patients the same slot or token."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text or as JSON objects (one per line), on stderr. The level is
    /// `SLOTGUARD_LOG` (default: info for serve, warn for the other commands).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (creates and migrates the database on first start).
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(StoreArgs),
    /// Create, list or revoke API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Staff accounts for the dashboard: create, list, disable, reset a password.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Drive a slotguard server with load, then verify nothing was double-booked or lost.
    Loadtest(Box<crate::loadtest::LoadtestArgs>),
    /// Check a load run's history against the database (exit 0 only when clean).
    Check(CheckArgs),
    /// Audit appointments for duplicate slots and tokens, in the database (as the
    /// nightly audit does) or in an export file: exit 0 clean, 1 duplicates found, 2
    /// bad input or input that cannot be (wholly) read.
    Audit(AuditArgs),
    /// Reports: `report weekly` prints a week's report (stored weeks read the same).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Mirror an external app's appointments (initial sync from an export file).
    Watch {
        #[command(subcommand)]
        command: WatchCommand,
    },
    /// Alert deliveries: retry dead letters.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Queue dead letters again, due now, for a new round of attempts by the running
    /// server's dispatcher; prints each one queued (notification id, channel, clinic).
    Retry {
        /// Every dead letter (narrowed by --channel and --clinic).
        #[arg(long, required_unless_present = "notification")]
        dead: bool,
        /// Only this notification's dead deliveries.
        #[arg(long, value_name = "ID")]
        notification: Option<String>,
        /// Only deliveries on this channel (its configured name).
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
        /// Only this clinic's.
        #[arg(long, value_name = "ID")]
        clinic: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Import an export file (Kloqo JSON, JSON Lines, CSV) and check it for duplicates.
    Import {
        #[command(flatten)]
        import: crate::watch::importer::ImportArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// A week's bookings, conflicts, retries, duplicate rate per day, conflicts by
    /// hour × weekday, per-clinic and per-doctor tables, and audit runs.
    Weekly {
        /// ISO week, e.g. 2026-W47. [default: the last full week]
        #[arg(long)]
        week: Option<String>,
        /// Only this clinic, registered or only seen in watched documents. [default:
        /// every clinic]
        #[arg(long)]
        clinic: Option<String>,
        /// html (the email's page), json, or csv (one value per line).
        #[arg(long, value_enum, default_value = "html")]
        format: crate::audit::report::Format,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Export file to audit, no database needed: Kloqo export JSON (an array of
    /// documents), JSON Lines or CSV, with the API's camelCase field names.
    #[arg(long, conflicts_with_all = ["date", "from", "to", "clinic"])]
    pub file: Option<PathBuf>,
    /// The file's format [default: by extension, else by its first bytes].
    #[arg(long, value_enum, requires = "file")]
    pub format: Option<crate::watch::import::Format>,
    /// Database mode: one local date to audit, YYYY-MM-DD. [default: each clinic's today]
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<String>,
    /// Database mode: first local date of a range (with --to; at most 366 days).
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Database mode: last local date of the range.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Database mode: only this clinic, registered or only seen in watched documents
    /// (those in their source's zone, `[watch.sources.NAME] timezone` in the config).
    /// [default: every clinic]
    #[arg(long)]
    pub clinic: Option<String>,
    /// How to print the report on stdout.
    #[arg(long, value_enum, default_value_t = crate::audit::Output::Table)]
    pub output: crate::audit::Output,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The history a `loadtest --history FILE` run wrote (JSON lines).
    #[arg(long)]
    pub history: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Database URL: a SQLite file path or `sqlite:` URL, or `postgres://…`.
    /// [default: ./slotguard-data/slotguard.db]
    #[arg(long, env = "SLOTGUARD_DATABASE_URL")]
    pub database: Option<String>,
    /// SQLite durability per commit (`full` fsyncs every booking). [default: full, or
    /// `sqlite_sync` in the config]
    #[arg(long, value_enum)]
    pub sqlite_sync: Option<SqliteSync>,
    /// Configuration file. [default: ./slotguard.toml when it exists]
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on. [default: 127.0.0.1:8080]
    #[arg(long, env = "SLOTGUARD_LISTEN")]
    pub listen: Option<String>,
    /// Also create a demo clinic with two doctors and a few of today's bookings, and a
    /// demo admin for the dashboard whose one-time password is printed at start.
    #[arg(long)]
    pub demo: bool,
    /// Also serve `GET /metrics` on this address, without a key, for a Prometheus on
    /// a network the API's clients cannot reach. (`/metrics` on --listen needs an
    /// admin key.) [default: not served]
    #[arg(long, env = "SLOTGUARD_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (only it) on stdout; it is shown this once.
    Create {
        /// admin: everything; clinic: one clinic's day; booking: a patient-facing app
        /// (availability, book, cancel); watch: an app's forwarder (the watch API).
        #[arg(long, value_parser = ["admin", "clinic", "booking", "watch"])]
        role: String,
        /// Clinic the key is for (required for `clinic`; repeat to scope `booking`, or a
        /// `watch` key to those clinics' documents).
        #[arg(long = "clinic")]
        clinics: Vec<String>,
        /// Source a `watch` key may forward documents of (repeat for several; none
        /// means every source). With --clinic, the watch key may forward only those
        /// clinics' documents.
        #[arg(long = "source")]
        sources: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by its id (the part after `sg_`, before the next `_`).
    Revoke {
        /// The key's id, as `keys list` shows it.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account and print its one-time password (only it) on stdout.
    Create {
        /// The login: an email address (stored lower-cased).
        #[arg(long)]
        email: String,
        /// admin: every clinic and the users and keys; clinic: acts in its clinics;
        /// viewer: read-only.
        #[arg(long, value_parser = ["admin", "clinic", "viewer"])]
        role: String,
        /// Clinic of a clinic user (required, repeat for several) or of a viewer
        /// (optional: none means every clinic).
        #[arg(long = "clinic")]
        clinics: Vec<String>,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List accounts (never their passwords).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable an account and end its sessions.
    Disable {
        /// The account's email.
        email: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give an account a new password (printed, or read with --password-stdin),
    /// enable it again and end its sessions.
    ResetPassword {
        /// The account's email.
        email: String,
        /// Read the new password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `slotguard.toml`: every key optional; flags and environment win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    database: Option<String>,
    listen: Option<String>,
    sqlite_sync: Option<String>,
    #[serde(default)]
    detect: crate::app::DetectConfig,
    #[serde(default)]
    alerts: crate::app::AlertsConfig,
    #[serde(default)]
    audit: crate::app::AuditConfig,
    #[serde(default)]
    watch: crate::app::WatchConfig,
    #[serde(default)]
    metrics: crate::app::MetricsConfig,
    #[serde(default)]
    limits: crate::http::limits::LimitsConfig,
}

/// A failure the user can fix (exit code 2) or one they cannot (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
    /// The command did its job and found what it looks for (an audit's duplicates):
    /// exit code 1, like a failing `dbt test`.
    #[error("{0}")]
    Found(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) | CliError::Found(_) => 1,
        }
    }
}

impl From<store::StoreError> for CliError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::BadUrl(_) => CliError::Usage(e.to_string()),
            other => CliError::Failed(other.to_string()),
        }
    }
}

struct Settings {
    database: String,
    sqlite_sync: SqliteSync,
    listen: String,
    detect: crate::app::DetectConfig,
    alerts: crate::app::AlertsConfig,
    /// Where the `[alerts]` tables are in the file, for errors that name the line.
    alert_lines: crate::alert::routes::ConfigLines,
    audit: crate::app::AuditConfig,
    watch: crate::app::WatchConfig,
    metrics: crate::app::MetricsConfig,
    limits: crate::http::limits::LimitsConfig,
}

fn settings(store: &StoreArgs, listen: Option<&str>) -> Result<Settings, CliError> {
    let path = store.config.clone().or_else(|| {
        let default = PathBuf::from("slotguard.toml");
        default.exists().then_some(default)
    });
    let (file, alert_lines): (ConfigFile, _) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?;
            let name = p.display().to_string();
            let file = toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|span| format!(" line {}", text[..span.start].matches('\n').count() + 1))
                    .unwrap_or_default();
                CliError::Usage(format!("{name}{line}: {}", e.message()))
            })?;
            (file, crate::alert::routes::ConfigLines::read(&name, &text))
        }
        None => (ConfigFile::default(), Default::default()),
    };
    let sqlite_sync = match (store.sqlite_sync, file.sqlite_sync.as_deref()) {
        (Some(s), _) => s,
        (None, None) => SqliteSync::Full,
        (None, Some(s)) => clap::ValueEnum::from_str(s, true).map_err(|_| {
            CliError::Usage(format!(
                "sqlite_sync = {s:?} in the config: use \"full\" or \"normal\""
            ))
        })?,
    };
    Ok(Settings {
        database: store
            .database
            .clone()
            .or(file.database)
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned()),
        sqlite_sync,
        listen: listen
            .map(str::to_owned)
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
        detect: file.detect,
        alerts: file.alerts,
        alert_lines,
        audit: file.audit,
        watch: file.watch,
        metrics: file.metrics,
        limits: file.limits,
    })
}

/// The services' settings, from slotguard.toml (and the flags standing for it).
fn options(s: &Settings) -> Result<crate::app::Options, CliError> {
    crate::app::Options::from_config(
        &s.detect,
        &s.alerts,
        &s.audit,
        &s.watch,
        &s.metrics,
        &s.alert_lines,
    )
    .map_err(|e| CliError::Usage(e.to_string()))
}

/// The services `serve` would run, over `store`, for a command that borrows them.
fn services(s: &Settings, store: Arc<dyn Store>) -> Result<crate::app::Services, CliError> {
    Ok(crate::app::Services::build(
        store,
        Arc::new(SystemClock),
        options(s)?,
    ))
}

/// Opens the database a command reads or adds to. It must exist already: only `serve`
/// and `migrate` create one, so a command pointed at a mistyped path says so instead
/// of auditing an empty new database and calling it clean.
async fn open_store(s: &Settings) -> Result<Arc<dyn Store>, CliError> {
    if let Some(path) = store::sqlite_path(&s.database) {
        if !std::path::Path::new(path).exists() {
            return Err(CliError::Usage(format!(
                "no database at {path}: check --database (or SLOTGUARD_DATABASE_URL); \
                 `slotguard migrate --database {path}` creates one"
            )));
        }
    }
    create_store(s).await
}

/// Opens the database, creating and migrating it when it does not exist yet.
async fn create_store(s: &Settings) -> Result<Arc<dyn Store>, CliError> {
    let store = store::open(&s.database, s.sqlite_sync).await.map_err(|e| {
        CliError::Failed(format!(
            "cannot open database {}: {}",
            redact(&s.database),
            redact_in(&e.to_string(), &s.database)
        ))
    })?;
    Ok(Arc::from(store))
}

/// A database URL without its secrets, for messages and logs: the password of its
/// user and the value of any query parameter that carries one (`password`,
/// `sslpassword`, `sslkey`…). A file path has none.
pub fn redact(url: &str) -> String {
    if store::sqlite_path(url).is_some() {
        return url.to_owned();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Unparseable: hide everything between the scheme and the last '@'.
        return match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        ["password", "secret", "token", "key"]
            .iter()
            .any(|s| k.contains(s))
    };
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string().replace("%2A%2A%2A", "***")
}

/// `message` with the raw URL (and its password) replaced by the redacted URL.
fn redact_in(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &redact(url));
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(password) = parsed.password().filter(|p| p.len() >= 3) {
            out = out.replace(password, "***");
            if let Ok(decoded) = urlencoding_decode(password) {
                out = out.replace(&decoded, "***");
            }
        }
    }
    out
}

fn urlencoding_decode(raw: &str) -> Result<String, ()> {
    url::form_urlencoded::parse(format!("x={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or(())
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let s = settings(&args, None)?;
            create_store(&s).await?;
            eprintln!("database {} is up to date", redact(&s.database));
            Ok(())
        }
        Command::Keys { command } => keys(command).await,
        Command::Users { command } => users(command).await,
        Command::Loadtest(args) => {
            use crate::loadtest::{run, LoadtestError};
            run(*args).await.map_err(|e| match e {
                LoadtestError::Usage(m) => CliError::Usage(m),
                LoadtestError::Failed(m) => CliError::Failed(m),
            })
        }
        Command::Check(args) => check_history(args).await,
        Command::Audit(args) => audit(args).await,
        Command::Report {
            command:
                ReportCommand::Weekly {
                    week,
                    clinic,
                    format,
                    store,
                },
        } => weekly_report(week, clinic, format, store).await,
        Command::Watch {
            command: WatchCommand::Import { import, store },
        } => watch_import(import, store).await,
        Command::Alerts {
            command:
                AlertsCommand::Retry {
                    dead: _,
                    notification,
                    channel,
                    clinic,
                    store,
                },
        } => retry_dead_letters(notification, channel, clinic, store).await,
    }
}

/// `alerts retry`: the dead letters selected, queued again in the database; the
/// server holding the dispatcher lease delivers them at its next pass.
async fn retry_dead_letters(
    notification: Option<String>,
    channel: Option<String>,
    clinic: Option<String>,
    store: StoreArgs,
) -> Result<(), CliError> {
    let usage = |e: crate::domain::FieldError| CliError::Usage(format!("--{e}"));
    let which = crate::store::detection::DeadLetters {
        id: notification,
        channel,
        clinic: clinic
            .as_deref()
            .map(|c| ClinicId::parse("clinic", c))
            .transpose()
            .map_err(usage)?,
    };
    let store = open_store(&settings(&store, None)?).await?;
    let queued = store.retry_dead(&which, "cli", SystemClock.now()).await?;
    for row in &queued {
        println!("{}\t{}\t{}", row.id, row.channel, row.clinic_id);
    }
    eprintln!(
        "queued {} dead letter{} again; a running slotguard server delivers {} at its next pass",
        queued.len(),
        if queued.len() == 1 { "" } else { "s" },
        if queued.len() == 1 { "it" } else { "them" },
    );
    Ok(())
}

async fn watch_import(
    args: crate::watch::importer::ImportArgs,
    store: StoreArgs,
) -> Result<(), CliError> {
    use crate::watch::importer::{run, ImportError};
    let s = settings(&store, None)?;
    let services = services(&s, open_store(&s).await?)?;
    let report = run(services.store.as_ref(), &services.detector, &args)
        .await
        .map_err(|e| match e {
            ImportError::Input(m) => CliError::Usage(m),
            ImportError::Store(e) => CliError::from(e),
        })?;
    println!(
        "{} records: {} stored, {} older than what was stored, {} skipped; {} doctor-days checked, {} incidents opened",
        report.records, report.applied, report.stale, report.bad.len(), report.days_checked, report.incidents_opened
    );
    for (position, reason) in report.bad.iter().take(20) {
        println!("  skipped {position}: {reason}");
    }
    Ok(())
}

async fn audit(args: AuditArgs) -> Result<(), CliError> {
    if let Some(file) = &args.file {
        return audit_file(file, &args);
    }
    audit_database(args).await
}

fn audit_file(file: &std::path::Path, args: &AuditArgs) -> Result<(), CliError> {
    use crate::audit::file::{run, Verdict};
    match run(file, args.format, args.output).map_err(|e| CliError::Usage(e.to_string()))? {
        Verdict::Clean => Ok(()),
        Verdict::Duplicates { groups } => Err(CliError::Found(format!(
            "{}: duplicate groups found: {groups}",
            file.display()
        ))),
        Verdict::Incomplete { unreadable } => Err(CliError::Usage(format!(
            "{}: records that could not be read: {unreadable}; the audit is incomplete",
            file.display()
        ))),
    }
}

async fn audit_database(args: AuditArgs) -> Result<(), CliError> {
    use crate::audit::command::{self, AuditError, Selection};
    let usage = |e: crate::domain::FieldError| CliError::Usage(format!("--{e}"));
    let selection = Selection {
        clinic: args
            .clinic
            .as_deref()
            .map(|c| ClinicId::parse("clinic", c))
            .transpose()
            .map_err(usage)?,
        dates: crate::audit::date_range(
            args.date.as_deref(),
            args.from.as_deref(),
            args.to.as_deref(),
        )
        .map_err(usage)?,
    };
    let s = settings(&args.store, None)?;
    let store = open_store(&s)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let services = services(&s, store)?;
    let report = command::audit(&services.auditor, &selection)
        .await
        .map_err(|e| match e {
            AuditError::UnknownClinic(_) => CliError::Usage(e.to_string()),
            AuditError::Store(e) => CliError::Usage(format!("could not audit: {e}")),
        })?;
    print!("{}", command::render(&report, args.output));
    if report.is_clean() {
        Ok(())
    } else {
        Err(CliError::Found(format!(
            "{} duplicate groups found",
            report.total.duplicate_groups
        )))
    }
}

async fn weekly_report(
    week: Option<String>,
    clinic: Option<String>,
    format: crate::audit::report::Format,
    store: StoreArgs,
) -> Result<(), CliError> {
    use crate::audit::report;
    let usage = |e: crate::domain::FieldError| CliError::Usage(format!("--{e}"));
    let clinic = clinic
        .as_deref()
        .map(|c| ClinicId::parse("clinic", c))
        .transpose()
        .map_err(usage)?;
    if let Some(week) = &week {
        report::week_asked(Some(week), None, chrono::Utc::now()).map_err(usage)?;
    }
    let s = settings(&store, None)?;
    let zones = s
        .watch
        .zones()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let store = open_store(&s).await?;
    let clinic = match &clinic {
        Some(id) => Some(
            crate::audit::runner::known_clinics(store.as_ref(), &zones)
                .await?
                .get(id)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "no clinic {id}: it is not registered and no watched document names it"
                    ))
                })?
                .clinic
                .clone(),
        ),
        None => None,
    };
    let now = SystemClock.now();
    let monday = report::week_asked(week.as_deref(), clinic.as_ref(), now).map_err(usage)?;
    let report = report::weekly(store.as_ref(), clinic.as_ref(), monday, now).await?;
    print!("{}", report.render(format));
    Ok(())
}

async fn check_history(args: CheckArgs) -> Result<(), CliError> {
    let history =
        crate::check::read_history(&args.history).map_err(|e| CliError::Usage(e.to_string()))?;
    let store = open_store(&settings(&args.store, None)?).await?;
    let rows = crate::check::rows_for(store.as_ref(), &history).await?;
    let report = crate::check::check(&history, &rows);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("{}", report.render());
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(CliError::Failed(
            "the history shows lost, lying or duplicate bookings".into(),
        ))
    }
}

async fn keys(command: KeysCommand) -> Result<(), CliError> {
    let clock = SystemClock;
    match command {
        KeysCommand::Create {
            role,
            clinics,
            sources,
            store,
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| CliError::Usage(format!("unknown role {role}")))?;
            let parse = |flag: &str, values: &[String]| {
                values
                    .iter()
                    .map(|c| ClinicId::parse(flag, c).map_err(|e| CliError::Usage(e.to_string())))
                    .collect::<Result<Vec<_>, _>>()
            };
            let mut clinics = parse("--clinic", &clinics)?;
            let sources = parse("--source", &sources)?;
            // A watch key lists its sources where other keys list clinics; its own
            // clinics, if any, hold it to those clinics' documents.
            let mut watch_clinics = Vec::new();
            match (role, clinics.len(), sources.len()) {
                (Role::Watch, _, _) => watch_clinics = std::mem::replace(&mut clinics, sources),
                (_, _, 1..) => {
                    return Err(CliError::Usage("--source is for watch keys only".into()))
                }
                (Role::Clinic, 1, _) | (Role::Booking, _, _) | (Role::Admin, 0, _) => {}
                (Role::Clinic, _, _) => {
                    return Err(CliError::Usage(
                        "a clinic key needs exactly one --clinic".into(),
                    ))
                }
                (Role::Admin, _, _) => {
                    return Err(CliError::Usage(
                        "an admin key is for every clinic; drop --clinic".into(),
                    ))
                }
            }
            let store = open_store(&settings(&store, None)?).await?;
            let mut key = new_key(role, clinics, clock.now());
            key.record.watch_clinics = watch_clinics;
            store.insert_api_key(&key.record).await?;
            println!("{}", key.text);
            eprintln!(
                "created {} key {} (shown once; only its hash is stored)",
                role.as_str(),
                key.record.id
            );
        }
        KeysCommand::List { store } => {
            let store = open_store(&settings(&store, None)?).await?;
            for key in store.api_keys().await? {
                let revoked = key.revoked_at.map(|t| ("revoked", t));
                let role = key.role.as_str();
                println!(
                    "{}",
                    listing(&key.id, role, &key.clinics, key.created_at, revoked)
                );
            }
        }
        KeysCommand::Revoke { id, store } => {
            let store = open_store(&settings(&store, None)?).await?;
            if !store.revoke_api_key(&id, clock.now()).await? {
                return Err(CliError::Usage(format!("no active key with id {id}")));
            }
            eprintln!("revoked key {id}");
        }
    }
    Ok(())
}

/// One line of `keys list` or `users list`: who, role, clinics (`*` for all), when
/// created, and when revoked or disabled.
fn listing(
    who: &str,
    role: &str,
    clinics: &[ClinicId],
    created: chrono::DateTime<chrono::Utc>,
    ended: Option<(&str, chrono::DateTime<chrono::Utc>)>,
) -> String {
    let clinics = if clinics.is_empty() {
        "*".to_owned()
    } else {
        clinics
            .iter()
            .map(ClinicId::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    let ended = ended
        .map(|(what, t)| format!(" {what} {}", t.to_rfc3339()))
        .unwrap_or_default();
    format!(
        "{who}\t{role}\t{clinics}\tcreated {}{ended}",
        created.to_rfc3339()
    )
}

/// The first line of stdin, for `--password-stdin`.
fn password_from_stdin(wanted: bool) -> Result<Option<String>, CliError> {
    if !wanted {
        return Ok(None);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

fn account_error(e: crate::web::accounts::AccountError) -> CliError {
    use crate::web::accounts::AccountError;
    match e {
        AccountError::Store(s) => CliError::from(s),
        other => CliError::Usage(other.to_string()),
    }
}

async fn users(command: UsersCommand) -> Result<(), CliError> {
    use crate::domain::{Email, StaffRole};
    use crate::web::accounts;
    let usage = |e: crate::domain::FieldError| CliError::Usage(format!("--{e}"));
    let now = SystemClock.now();
    match command {
        UsersCommand::Create {
            email,
            role,
            clinics,
            password_stdin,
            store,
        } => {
            let email = Email::parse("email", &email).map_err(usage)?;
            let role = StaffRole::parse("role", &role).map_err(usage)?;
            let clinics = clinics
                .iter()
                .map(|c| ClinicId::parse("clinic", c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(usage)?;
            crate::domain::StaffUser::check_scope(role, &clinics).map_err(usage)?;
            let (password, generated) =
                accounts::password_or_generated(password_from_stdin(password_stdin)?)
                    .map_err(usage)?;
            let store = open_store(&settings(&store, None)?).await?;
            let user = accounts::create(store.as_ref(), email, role, clinics, &password, now)
                .await
                .map_err(account_error)?;
            if generated {
                println!("{password}");
            }
            eprintln!(
                "created {} account {}{}",
                role,
                user.email,
                if generated {
                    " (its one-time password above is shown once; only its hash is stored)"
                } else {
                    ""
                }
            );
        }
        UsersCommand::List { store } => {
            let store = open_store(&settings(&store, None)?).await?;
            for user in store.staff_users().await? {
                let disabled = user.disabled_at.map(|t| ("disabled", t));
                let (email, role) = (user.email.as_str(), user.role.as_str());
                println!(
                    "{}",
                    listing(email, role, &user.clinics, user.created_at, disabled)
                );
            }
        }
        UsersCommand::Disable { email, store } => {
            let email = Email::parse("email", &email).map_err(usage)?;
            let store = open_store(&settings(&store, None)?).await?;
            accounts::disable(store.as_ref(), &email, now)
                .await
                .map_err(account_error)?;
            eprintln!("disabled {email}; its sessions have ended");
        }
        UsersCommand::ResetPassword {
            email,
            password_stdin,
            store,
        } => {
            let email = Email::parse("email", &email).map_err(usage)?;
            let (password, generated) =
                accounts::password_or_generated(password_from_stdin(password_stdin)?)
                    .map_err(usage)?;
            let store = open_store(&settings(&store, None)?).await?;
            accounts::reset_password(store.as_ref(), &email, &password, now)
                .await
                .map_err(account_error)?;
            if generated {
                println!("{password}");
            }
            eprintln!("new password set for {email}; its sessions have ended");
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let s = settings(&args.store, args.listen.as_deref())?;
    let options = options(&s)?;
    let limits = s
        .limits
        .limits()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(warning) = options.alerting.unheard() {
        tracing::warn!("{warning}");
    }
    let store = create_store(&s).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let has_admin = store
        .api_keys()
        .await?
        .iter()
        .any(|k| k.role == Role::Admin && k.revoked_at.is_none());
    if !has_admin {
        let key = new_key(Role::Admin, Vec::new(), clock.now());
        store.insert_api_key(&key.record).await?;
        println!("admin key (shown once, store it now): {}", key.text);
    }
    let app = crate::app::App::start(store, clock, options);
    let demo_password = if args.demo {
        let seeded = crate::demo::seed(&app.state.bookings)
            .await
            .map_err(|e| CliError::Failed(format!("demo seed failed: {e}")))?;
        eprintln!("{}", seeded.describe());
        Some(
            crate::web::accounts::demo_admin(app.state.bookings.store(), app.state.bookings.now())
                .await
                .map_err(|e| CliError::Failed(format!("demo admin: {e}")))?,
        )
    } else {
        None
    };
    let metrics_listener = match args.metrics_listen.or(s.metrics.listen) {
        Some(address) => Some(bind(&address).await?),
        None => None,
    };
    let (listener, address) = bind(&s.listen).await?;
    // The metrics address is announced first: "listening" says everything is up.
    if let Some((_, metrics_address)) = &metrics_listener {
        eprintln!("slotguard metrics on http://{metrics_address}/metrics");
    }
    tracing::info!(%address, database = %redact(&s.database), "slotguard listening");
    eprintln!("slotguard listening on http://{address}");
    if let Some(password) = demo_password {
        eprintln!(
            "dashboard: http://{address}/  log in as {} with password {password} \
             (a new one at every --demo start)",
            crate::web::accounts::DEMO_ADMIN
        );
    }
    let (stopping, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stopping.send(true);
    });
    let state = app.state.clone().with_limits(limits);
    let metrics = async {
        match metrics_listener {
            Some((listener, _)) => {
                http::serve_metrics(listener, state.clone(), stopped(stop.clone())).await
            }
            None => Ok(()),
        }
    };
    let api = http::serve(listener, state.clone(), stopped(stop.clone()));
    tokio::try_join!(api, metrics).map_err(|e| CliError::Failed(e.to_string()))?;
    app.stop().await;
    eprintln!("slotguard stopped");
    Ok(())
}

async fn bind(address: &str) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), CliError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok((listener, bound))
}

/// Completes once the shutdown signal has been seen.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    eprintln!("shutting down: finishing requests under way");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `settings` over a slotguard.toml holding `text`, then the zones it configures.
    fn zones_of(text: &str) -> Result<crate::domain::SourceZones, CliError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let args = StoreArgs {
            database: None,
            sqlite_sync: None,
            config: Some(file.path().to_path_buf()),
        };
        settings(&args, None)?
            .watch
            .zones()
            .map_err(|e| CliError::Usage(e.to_string()))
    }

    #[test]
    fn each_watch_sources_time_zone_is_read_from_slotguard_toml() {
        let zones = zones_of(
            "[watch.sources.kloqo]\ntimezone = \"Asia/Tokyo\"\n\n\
             [watch.sources.other-app]\ntimezone = \"Asia/Kolkata\"\n",
        )
        .unwrap();
        assert_eq!(zones.configured("kloqo"), Some(chrono_tz::Asia::Tokyo));
        assert_eq!(
            zones.configured("other-app"),
            Some(chrono_tz::Asia::Kolkata)
        );
        assert_eq!(zones.configured("unnamed"), None);
        assert_eq!(
            zones_of("").unwrap(),
            crate::domain::SourceZones::default(),
            "no [watch]: every source's clinics in the default zone"
        );
    }

    #[test]
    fn a_bad_zone_a_bad_source_name_or_an_unknown_key_under_watch_is_a_usage_error() {
        let refused = |text: &str| match zones_of(text) {
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                e.to_string()
            }
            Ok(zones) => panic!("{text:?} was accepted: {zones:?}"),
        };
        let zone = refused("[watch.sources.kloqo]\ntimezone = \"Asia/Kochi\"\n");
        assert!(
            zone.contains("watch.sources.kloqo.timezone = \"Asia/Kochi\"")
                && zone.contains("IANA time zone"),
            "{zone}"
        );
        let source = refused("[watch.sources.\"klo qo\"]\ntimezone = \"Asia/Tokyo\"\n");
        assert!(source.contains("watch.sources.klo qo"), "{source}");
        let key = refused("[watch.sources.kloqo]\ntimezone = \"Asia/Tokyo\"\nzone = \"x\"\n");
        assert!(
            key.contains("line 3") && key.contains("unknown field `zone`"),
            "{key}"
        );
        let missing = refused("[watch.sources.kloqo]\n");
        assert!(missing.contains("missing field `timezone`"), "{missing}");
        let top = refused("[watch]\nzones = {}\n");
        assert!(top.contains("unknown field `zones`"), "{top}");
    }

    #[test]
    fn database_urls_are_printed_without_any_secret() {
        assert_eq!(
            redact("postgres://app:s3cr%40t@db.example:5432/slotguard"),
            "postgres://app:***@db.example:5432/slotguard"
        );
        let with_query = redact("postgres://app@db/sg?password=hunter2&sslmode=require");
        assert!(!with_query.contains("hunter2"), "{with_query}");
        assert!(with_query.contains("sslmode=require"), "{with_query}");
        assert_eq!(
            redact("./slotguard-data/slotguard.db"),
            "./slotguard-data/slotguard.db"
        );
        let message = "could not connect to postgres://app:p%40ss@db/sg as app:p@ss";
        let cleaned = redact_in(message, "postgres://app:p%40ss@db/sg");
        assert!(
            !cleaned.contains("p%40ss") && !cleaned.contains("p@ss"),
            "{cleaned}"
        );
    }
}
