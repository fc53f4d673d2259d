//! `slotguard audit` over the database: the same audit as the nightly one, on
//! demand, for chosen local dates and clinics, printed as a table, JSON or CSV.

use std::fmt::Write as _;

use serde::Serialize;

use super::runner::Auditor;
use super::{findings, Finding, Output};
use crate::domain::{Clinic, ClinicId, Counts};
use crate::metrics::stats::DateRange;
use crate::store::audit::{AuditRun, Trigger};
use crate::store::StoreError;

/// Every audited day and what it found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub runs: Vec<AuditRun>,
    pub findings: Vec<Finding>,
    /// The three counts over every day audited.
    pub total: Counts,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.total.is_clean()
    }
}

/// What to audit: which clinics, which local dates (`None`: each clinic's today).
pub struct Selection {
    pub clinic: Option<ClinicId>,
    pub dates: Option<DateRange>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("no clinic {0}: it is not registered and no watched document names it")]
    UnknownClinic(ClinicId),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Audits the selected days of the selected known clinics (registered, or only seen
/// in watched documents), each recorded as an on-demand run.
pub async fn audit(auditor: &Auditor, selection: &Selection) -> Result<Report, AuditError> {
    let known = auditor.known_clinics().await?;
    let clinics: Vec<&Clinic> = match &selection.clinic {
        Some(id) => vec![
            &known
                .get(id)
                .ok_or_else(|| AuditError::UnknownClinic(id.clone()))?
                .clinic,
        ],
        None => known.iter().map(|k| &k.clinic).collect(),
    };
    let mut report = Report::default();
    let now = auditor.clock().now();
    for clinic in clinics {
        let (from, to) = selection.dates.map_or_else(
            || (clinic.today(now), clinic.today(now)),
            |r| (r.from(), r.to()),
        );
        for date in from.iter_days().take_while(|d| *d <= to) {
            let Some(outcome) = auditor.audit(clinic, date, Trigger::OnDemand).await? else {
                continue;
            };
            report.total += outcome.run.counts;
            report.findings.extend(findings(&outcome.duplicates));
            report.runs.push(outcome.run);
        }
    }
    Ok(report)
}

fn members(finding: &Finding) -> String {
    finding
        .members
        .iter()
        .map(|m| format!("{}:{}", m.source, m.id))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report as the user asked for it.
pub fn render(report: &Report, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Output::Csv => {
            let mut out = csv::Writer::from_writer(Vec::new());
            let _ = out.write_record(["clinicId", "doctorId", "date", "kind", "key", "members"]);
            for f in &report.findings {
                let _ = out.write_record([
                    f.group.clinic_id.as_str(),
                    f.group.doctor_id.as_str(),
                    &f.group.date.to_string(),
                    f.kind.as_str(),
                    &f.key,
                    &members(f),
                ]);
            }
            String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Output::Table => {
            let mut out = format!(
                "{:<20} {:<10} {:>9} {:>7} {:>6} {:>9} {:>7}\n",
                "clinic", "date", "checked", "groups", "extra", "affected", "opened"
            );
            for r in &report.runs {
                let _ = writeln!(
                    out,
                    "{:<20} {:<10} {:>9} {:>7} {:>6} {:>9} {:>7}{}",
                    r.clinic_id.as_str(),
                    r.local_date,
                    r.counts.appointments_checked,
                    r.counts.duplicate_groups,
                    r.counts.extra_rows,
                    r.counts.affected_rows,
                    r.incidents_opened,
                    r.error
                        .as_deref()
                        .map(|e| format!("  FAILED: {e}"))
                        .unwrap_or_default()
                );
            }
            for f in &report.findings {
                let _ = writeln!(
                    out,
                    "  {} {} of {} on {}: {}",
                    f.kind.as_str(),
                    f.key,
                    f.group.doctor_id,
                    f.group.date,
                    members(f)
                );
            }
            let t = &report.total;
            let _ = writeln!(
                out,
                "{} days, {} appointments checked: {} duplicate groups, {} extra rows, {} affected rows",
                report.runs.len(),
                t.appointments_checked,
                t.duplicate_groups,
                t.extra_rows,
                t.affected_rows
            );
            out
        }
    }
}
