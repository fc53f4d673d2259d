//! The `slotguard` command line: `serve`, `migrate`, `keys`. Configuration comes from
//! flags, then environment variables, then `slotguard.toml`, then defaults.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::auth::new_key;
use crate::clock::{Clock, SystemClock};
use crate::domain::ClinicId;
use crate::http;
use crate::store::{self, Role, SqliteSync, Store};

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
    /// Drive a slotguard server with load, then verify nothing was double-booked or lost.
    Loadtest(Box<crate::loadtest::LoadtestArgs>),
    /// Check a load run's history against the database (exit 0 only when clean).
    Check(CheckArgs),
    /// Audit appointments for duplicate slots and tokens: exit 0 clean, 1 duplicates
    /// found, 2 input that cannot be (wholly) read.
    Audit(AuditArgs),
    /// Mirror an external app's appointments (initial sync from an export file).
    Watch {
        #[command(subcommand)]
        command: WatchCommand,
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

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Export file to audit, no database needed: Kloqo export JSON (an array of
    /// documents), JSON Lines or CSV, with the API's camelCase field names.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The file's format [default: by extension, else by its first bytes].
    #[arg(long, value_enum, requires = "file")]
    pub format: Option<crate::watch::import::Format>,
    /// How to print the report on stdout.
    #[arg(long, value_enum, default_value_t = crate::audit::file::Output::Table)]
    pub output: crate::audit::file::Output,
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
    /// SQLite durability per commit (`full` fsyncs every booking).
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
    /// Also create a demo clinic with two doctors and a few of today's bookings.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (only it) on stdout; it is shown this once.
    Create {
        #[arg(long, value_parser = ["admin", "clinic", "booking", "watch"])]
        role: String,
        /// Clinic the key is for (required for `clinic`; repeat to scope `booking`).
        #[arg(long = "clinic")]
        clinics: Vec<String>,
        /// Source a `watch` key may forward documents of (repeat for several; none
        /// means every source).
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
        id: String,
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
}

/// A failure the user can fix (exit code 2) or one they cannot (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
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
}

fn settings(store: &StoreArgs, listen: Option<&str>) -> Result<Settings, CliError> {
    let path = store.config.clone().or_else(|| {
        let default = PathBuf::from("slotguard.toml");
        default.exists().then_some(default)
    });
    let file: ConfigFile = match path {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?;
            toml::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{}: {}", p.display(), e.message())))?
        }
        None => ConfigFile::default(),
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
    })
}

async fn open_store(s: &Settings) -> Result<Arc<dyn Store>, CliError> {
    let store = store::open(&s.database, s.sqlite_sync).await.map_err(|e| {
        CliError::Failed(format!("cannot open database {}: {e}", redact(&s.database)))
    })?;
    Ok(Arc::from(store))
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let s = settings(&args, None)?;
            open_store(&s).await?;
            eprintln!("database {} is up to date", redact(&s.database));
            Ok(())
        }
        Command::Keys { command } => keys(command).await,
        Command::Loadtest(args) => crate::loadtest::run(*args).await,
        Command::Check(args) => check_history(args).await,
        Command::Audit(args) => audit(args),
        Command::Watch {
            command: WatchCommand::Import { import, store },
        } => watch_import(import, store).await,
    }
}

async fn watch_import(
    args: crate::watch::importer::ImportArgs,
    store: StoreArgs,
) -> Result<(), CliError> {
    use crate::watch::importer::{run, ImportError};
    let store = open_store(&settings(&store, None)?).await?;
    let report = run(store, &args).await.map_err(|e| match e {
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

fn audit(args: AuditArgs) -> Result<(), CliError> {
    if let Some(file) = &args.file {
        return audit_file(file, &args);
    }
    Err(CliError::Usage(
        "audit without --file needs the database mode, which this build does not have yet; \
         pass --file EXPORT"
            .into(),
    ))
}

fn audit_file(file: &std::path::Path, args: &AuditArgs) -> Result<(), CliError> {
    use crate::audit::file::{run, Verdict};
    match run(file, args.format, args.output).map_err(|e| CliError::Usage(e.to_string()))? {
        Verdict::Clean => Ok(()),
        Verdict::Duplicates { groups } => Err(CliError::Failed(format!(
            "{}: duplicate groups found: {groups}",
            file.display()
        ))),
        Verdict::Incomplete { unreadable } => Err(CliError::Usage(format!(
            "{}: records that could not be read: {unreadable}; the audit is incomplete",
            file.display()
        ))),
    }
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
            match (role, clinics.len(), sources.len()) {
                (Role::Watch, 0, _) => clinics = sources,
                (_, _, 1..) | (Role::Watch, _, _) => {
                    return Err(CliError::Usage(
                        "--source is for watch keys, --clinic for the others".into(),
                    ))
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
            let key = new_key(role, clinics, clock.now());
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
                let clinics: Vec<_> = key.clinics.iter().map(ClinicId::as_str).collect();
                let revoked = key
                    .revoked_at
                    .map(|t| format!(" revoked {}", t.to_rfc3339()))
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\tcreated {}{revoked}",
                    key.id,
                    key.role.as_str(),
                    if clinics.is_empty() {
                        "*".to_owned()
                    } else {
                        clinics.join(",")
                    },
                    key.created_at.to_rfc3339()
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

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let s = settings(&args.store, args.listen.as_deref())?;
    let options =
        crate::app::Options::from_config(&s.detect, &s.alerts).map_err(CliError::Usage)?;
    let store = open_store(&s).await?;
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
    if args.demo {
        crate::demo::seed(&app.state.bookings)
            .await
            .map_err(|e| CliError::Failed(format!("demo seed failed: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", s.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    tracing::info!(%address, database = %redact(&s.database), "slotguard listening");
    eprintln!("slotguard listening on http://{address}");
    http::serve(listener, app.state.clone(), shutdown_signal())
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    app.stop().await;
    eprintln!("slotguard stopped");
    Ok(())
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
