//! `slotguard watch import`: the initial sync of an external app's appointments from
//! an export file. The file is read twice: first to check every record (a bad record
//! or a broken file stores nothing, unless `--skip-bad`), then to store them in
//! batches; every touched doctor-day is then checked for duplicates.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Args;

use super::import::{self, Format, Position};
use super::kloqo::parse_document;
use crate::clock::{Clock, SystemClock};
use crate::detect::detector::Detector;
use crate::domain::{FoundBy, WatchedAppointment};
use crate::store::{Store, StoreError};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Name of the app the documents come from (as in /api/v1/watch/{source}/…).
    #[arg(long)]
    pub source: String,
    /// Kloqo export JSON, JSON Lines or CSV.
    pub file: PathBuf,
    /// The file's format [default: by extension, else by its first bytes].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Import the good records and report the bad ones, instead of refusing the file.
    #[arg(long)]
    pub skip_bad: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Documents stored per transaction.
const BATCH: usize = 500;

#[derive(Debug, Default)]
pub struct ImportReport {
    pub records: u64,
    pub applied: u64,
    pub stale: u64,
    /// (position, reason) of records that could not be read or parsed.
    pub bad: Vec<(String, String)>,
    pub days_checked: usize,
    pub incidents_opened: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is at fault: exit code 2, nothing stored.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn position(p: &Position) -> String {
    p.to_string()
}

/// Reads every record; `keep` decides what happens to each parsed document.
fn pass(
    args: &ImportArgs,
    format: Format,
    quiet: bool,
    mut keep: impl FnMut(WatchedAppointment),
) -> Result<(u64, Vec<(String, String)>), ImportError> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        import::progress_bar()
    };
    let mut bad = Vec::new();
    let mut records = 0;
    import::read_with_progress(&args.file, format, Some(&bar), |record| {
        records += 1;
        match record {
            Ok(r) => match parse_document(&r.document) {
                Ok(doc) => keep(doc),
                Err(e) => bad.push((position(&r.position), format!("{}: {}", e.field, e.message))),
            },
            Err(e) => bad.push((position(&e.position), e.reason)),
        }
    })
    .map_err(|e| ImportError::Input(e.to_string()))?;
    bar.finish_and_clear();
    Ok((records, bad))
}

pub async fn run(
    store: &dyn Store,
    detector: &Detector,
    args: &ImportArgs,
) -> Result<ImportReport, ImportError> {
    let source = crate::domain::ClinicId::parse("--source", &args.source)
        .map_err(|e| ImportError::Input(e.to_string()))?;
    let format = match args.format {
        Some(format) => format,
        None => Format::of_file(&args.file).map_err(|e| ImportError::Input(e.to_string()))?,
    };
    let (records, bad) = pass(args, format, true, |_| {})?;
    if !bad.is_empty() && !args.skip_bad {
        let listed: Vec<String> = bad
            .iter()
            .take(10)
            .map(|(p, r)| format!("  {p}: {r}"))
            .collect();
        return Err(ImportError::Input(format!(
            "{} of {records} records cannot be imported; nothing was stored (--skip-bad imports the rest):\n{}",
            bad.len(),
            listed.join("\n")
        )));
    }
    let clock = SystemClock;
    let mut report = ImportReport {
        records,
        bad,
        ..Default::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut batches = Vec::new();
    pass(args, format, args.quiet, |doc| {
        batch.push(doc);
        if batch.len() == BATCH {
            batches.push(std::mem::take(&mut batch));
        }
    })?;
    batches.push(batch);
    let mut days = BTreeSet::new();
    for batch in batches.iter().filter(|b| !b.is_empty()) {
        let (applied, groups) = store
            .upsert_watched(source.as_str(), batch, clock.now())
            .await?;
        report.applied += applied.iter().filter(|a| **a).count() as u64;
        report.stale += applied.iter().filter(|a| !**a).count() as u64;
        days.extend(groups.days().cloned());
    }
    for day in &days {
        let changes = detector.check(day, FoundBy::Realtime).await?;
        report.incidents_opened += changes
            .outbox
            .iter()
            .filter(|o| o.event.is_urgent())
            .count();
    }
    report.days_checked = days.len();
    Ok(report)
}
