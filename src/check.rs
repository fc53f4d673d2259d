//! The history checker behind `slotguard check`: a load run's history (see [`history`])
//! held against the rows the database ended with, Jepsen style. It finds acknowledged
//! writes that vanished, refusals that wrote anyway, double-booked slots and tokens,
//! answers that disagree with what was stored, and operations that made two rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Serialize;

use crate::domain::{Appointment, ClinicId, DoctorId};
use crate::history::{self, OpKind, Operation, Outcome};
use crate::store::{AppointmentFilter, Store, StoreError};

/// Witnesses kept per class: enough to start an investigation, short enough to read.
const MAX_WITNESSES: usize = 5;
/// Rows read per doctor-day (or per clinic+doctor for undated walk-ins).
const READ_LIMIT: u32 = 5000;

/// One concrete instance of a violation, named by op number and appointment ids only:
/// patient names are personal data outside load runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Witness {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<u64>,
    pub appointment_ids: Vec<String>,
    pub detail: String,
}

/// How often one class of violation occurred, with the first few witnesses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub count: u64,
    pub witnesses: Vec<Witness>,
}

impl Finding {
    fn add(&mut self, op: Option<u64>, ids: Vec<String>, detail: String) {
        self.count += 1;
        if self.witnesses.len() < MAX_WITNESSES {
            self.witnesses.push(Witness {
                op,
                appointment_ids: ids,
                detail,
            });
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub operations: u64,
    pub rows: u64,
    /// kind → outcome → count, e.g. `{"book": {"ok": 80, "fail": 20}}`.
    pub ops: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// An `ok` booking whose row is gone, or freed without a cancel that could explain it.
    pub lost: Finding,
    /// A `fail` booking that left a row behind (invariant 4).
    pub lying_failures: Finding,
    /// `info` bookings (no answer) that did commit / did not; neither is an error.
    pub info_committed: u64,
    pub info_not_committed: u64,
    pub duplicate_slots: Finding,
    pub duplicate_tokens: Finding,
    /// An `ok` answer that disagrees with the stored row of the same id.
    pub token_mismatches: Finding,
    /// More than one row for one operation (invariant 5: one key, one appointment).
    pub duplicate_rows_per_operation: Finding,
    /// Rows no operation of this history made (other clients); not an error.
    pub unknown_rows: u64,
}

impl CheckReport {
    fn violations(&self) -> [(&'static str, &Finding); 6] {
        [
            ("lost acknowledged bookings", &self.lost),
            ("lying failures", &self.lying_failures),
            ("duplicate slots", &self.duplicate_slots),
            ("duplicate tokens", &self.duplicate_tokens),
            ("token mismatches", &self.token_mismatches),
            (
                "duplicate rows per operation",
                &self.duplicate_rows_per_operation,
            ),
        ]
    }

    pub fn is_clean(&self) -> bool {
        self.violations().iter().all(|(_, f)| f.count == 0)
    }

    pub fn render(&self) -> String {
        let verdict = if self.is_clean() {
            "clean"
        } else {
            "VIOLATIONS FOUND"
        };
        let mut out = format!(
            "slotguard check: {} operations against {} stored rows: {verdict}\n",
            self.operations, self.rows
        );
        for (kind, outcomes) in &self.ops {
            let parts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
            let _ = writeln!(out, "  {kind}: {}", parts.join(", "));
        }
        let _ = writeln!(
            out,
            "  unanswered bookings: {} committed, {} not committed",
            self.info_committed, self.info_not_committed
        );
        let _ = writeln!(out, "  rows from other clients: {}", self.unknown_rows);
        for (name, finding) in self.violations() {
            let _ = writeln!(out, "  {name}: {}", finding.count);
            for w in &finding.witnesses {
                let op = w.op.map(|n| format!("op {n}: ")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    - {op}{} [{}]",
                    w.detail,
                    w.appointment_ids.join(", ")
                );
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: not a history operation: {source}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// Reads a JSON-lines history; blank lines (a trailing newline) are skipped.
pub fn read_history(path: &Path) -> Result<Vec<Operation>, HistoryError> {
    let read_err = |source| HistoryError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut ops = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| HistoryError::Malformed {
            path: path.to_owned(),
            line: i + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Reads every appointment, any status, of each doctor-day the history touched.
pub async fn rows_for(
    store: &dyn Store,
    history: &[Operation],
) -> Result<Vec<Appointment>, StoreError> {
    let mut days: BTreeSet<(ClinicId, DoctorId, Option<NaiveDate>)> = BTreeSet::new();
    for op in history {
        // An id that does not parse can never have been stored: nothing to read.
        let (Ok(clinic), Ok(doctor)) = (
            ClinicId::parse("clinicId", &op.clinic_id),
            DoctorId::parse("doctorId", &op.doctor_id),
        ) else {
            continue;
        };
        // Both dates when both are known: if the answer named another day than the
        // request, the row lives on the answered one and the mismatch must be seen.
        let dates: BTreeSet<NaiveDate> = [
            op.date.as_deref(),
            op.response.as_ref().map(|r| r.date.as_str()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .collect();
        if dates.is_empty() && op.kind == OpKind::WalkIn {
            // An unanswered walk-in's day is unknown: it may be any of the doctor's.
            days.insert((clinic, doctor, None));
        } else {
            days.extend(
                dates
                    .into_iter()
                    .map(|d| (clinic.clone(), doctor.clone(), Some(d))),
            );
        }
    }
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for (clinic, doctor, date) in days {
        let filter = AppointmentFilter {
            clinic_id: Some(clinic),
            doctor_id: Some(doctor),
            date,
            status: None,
            limit: READ_LIMIT,
        };
        let batch = store.appointments(&filter).await?;
        if batch.len() == READ_LIMIT as usize {
            // A cut-off read would report the missing rows as lost: say so loudly.
            tracing::warn!(
                ?filter,
                "read limit reached; the check may report rows as lost that exist"
            );
        }
        rows.extend(
            batch
                .into_iter()
                .filter(|r| seen.insert(r.id.as_str().to_owned())),
        );
    }
    Ok(rows)
}

fn kind_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Book => "book",
        OpKind::WalkIn => "walk_in",
        OpKind::Cancel => "cancel",
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}

fn ids(rows: &[&Appointment]) -> Vec<String> {
    rows.iter().map(|r| r.id.as_str().to_owned()).collect()
}

/// Pure: the history against the final rows of the doctor-days it touched.
pub fn check(history: &[history::Operation], rows: &[Appointment]) -> CheckReport {
    let mut report = CheckReport {
        operations: history.len() as u64,
        rows: rows.len() as u64,
        ..CheckReport::default()
    };
    let by_id: HashMap<&str, &Appointment> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut by_patient: HashMap<&str, Vec<&Appointment>> = HashMap::new();
    for r in rows {
        by_patient
            .entry(r.patient_name.as_str())
            .or_default()
            .push(r);
    }
    // An unanswered cancel may have been applied, so it too explains a freed row.
    let cancelled: HashSet<&str> = history
        .iter()
        .filter(|op| op.kind == OpKind::Cancel && op.outcome != Outcome::Fail)
        .filter_map(|op| op.appointment_id.as_deref())
        .collect();

    let mut known_patients = HashSet::new();
    for op in history {
        *report
            .ops
            .entry(kind_name(op.kind))
            .or_default()
            .entry(outcome_name(op.outcome))
            .or_default() += 1;
        if op.kind == OpKind::Cancel {
            continue;
        }
        let Some(name) = op.patient_name.as_deref() else {
            continue;
        };
        known_patients.insert(name);
        let made: &[&Appointment] = by_patient.get(name).map_or(&[], Vec::as_slice);
        if made.len() > 1 {
            let detail = format!("{} rows for one operation", made.len());
            report
                .duplicate_rows_per_operation
                .add(Some(op.op), ids(made), detail);
        }
        match op.outcome {
            Outcome::Ok => check_acknowledged(&mut report, op, made, &by_id, &cancelled),
            Outcome::Fail if !made.is_empty() => {
                let detail = format!(
                    "refused ({}) yet a row exists",
                    op.error.as_deref().unwrap_or("no code")
                );
                report.lying_failures.add(Some(op.op), ids(made), detail);
            }
            Outcome::Fail => {}
            Outcome::Info if made.is_empty() => report.info_not_committed += 1,
            Outcome::Info => report.info_committed += 1,
        }
    }
    report.unknown_rows = rows
        .iter()
        .filter(|r| !known_patients.contains(r.patient_name.as_str()))
        .count() as u64;

    // Invariants 1 and 2 over every occupying row, whoever wrote it: a duplicate is one
    // whether or not this run caused it.
    let mut slots: BTreeMap<_, Vec<&Appointment>> = BTreeMap::new();
    let mut tokens: BTreeMap<_, Vec<&Appointment>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status.is_occupying()) {
        let day = (r.clinic_id.as_str(), r.doctor_id.as_str(), r.date);
        slots.entry((day, r.slot_index)).or_default().push(r);
        tokens
            .entry((day, r.token_number.as_str()))
            .or_default()
            .push(r);
    }
    for (((clinic, doctor, date), slot), held) in slots.into_iter().filter(|(_, v)| v.len() > 1) {
        let detail = format!(
            "{clinic}/{doctor} {date} slot {slot} held by {} occupying rows",
            held.len()
        );
        report.duplicate_slots.add(None, ids(&held), detail);
    }
    for (((clinic, doctor, date), token), held) in tokens.into_iter().filter(|(_, v)| v.len() > 1) {
        let detail = format!(
            "{clinic}/{doctor} {date} token {token} held by {} occupying rows",
            held.len()
        );
        report.duplicate_tokens.add(None, ids(&held), detail);
    }
    report
}

/// An acknowledged booking must still be there, occupying unless cancelled, and match
/// what the client was told.
fn check_acknowledged(
    report: &mut CheckReport,
    op: &Operation,
    made: &[&Appointment],
    by_id: &HashMap<&str, &Appointment>,
    cancelled: &HashSet<&str>,
) {
    let Some(answer) = &op.response else {
        // A 2xx without a readable body: the patient name is all there is to go on.
        if made.is_empty() {
            report.lost.add(
                Some(op.op),
                vec![],
                "acknowledged, no row with its patient".into(),
            );
        }
        return;
    };
    let Some(row) = by_id.get(answer.id.as_str()) else {
        report.lost.add(
            Some(op.op),
            vec![answer.id.clone()],
            "acknowledged id is not in the database".into(),
        );
        return;
    };
    if !row.status.is_occupying() && !cancelled.contains(answer.id.as_str()) {
        let detail = format!("acknowledged, now {} with no cancel naming it", row.status);
        report
            .lost
            .add(Some(op.op), vec![answer.id.clone()], detail);
    }
    let told_and_stored = [
        (
            "clinicId",
            answer.clinic_id.clone(),
            row.clinic_id.to_string(),
        ),
        (
            "doctorId",
            answer.doctor_id.clone(),
            row.doctor_id.to_string(),
        ),
        ("date", answer.date.clone(), row.date.to_string()),
        (
            "slotIndex",
            answer.slot_index.to_string(),
            row.slot_index.to_string(),
        ),
        (
            "tokenNumber",
            answer.token_number.clone(),
            row.token_number.clone(),
        ),
    ];
    let mut differ: Vec<String> = told_and_stored
        .iter()
        .filter(|(_, told, stored)| told != stored)
        .map(|(field, told, stored)| format!("{field} answered {told}, stored {stored}"))
        .collect();
    if op.patient_name.as_deref() != Some(row.patient_name.as_str()) {
        differ.push("the answered id holds another patient's row".into());
    }
    if !differ.is_empty() {
        report
            .token_mismatches
            .add(Some(op.op), vec![answer.id.clone()], differ.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppointmentId, Kind, Status};
    use crate::history::AnsweredAppointment;
    use chrono::{TimeZone, Utc};
    use std::io::Write;

    const DATE: &str = "2026-12-01";

    fn op(n: u64, kind: OpKind, outcome: Outcome) -> Operation {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 4, 0, 0).unwrap();
        Operation {
            op: n,
            kind,
            patient_name: (kind != OpKind::Cancel).then(|| format!("lt-t-{n}")),
            idempotency_key: None,
            clinic_id: "kochi".into(),
            doctor_id: "dr-asha".into(),
            date: Some(DATE.into()),
            slot_index: None,
            appointment_id: None,
            invoked_at: at,
            completed_at: at,
            outcome,
            status: None,
            error: None,
            response: None,
        }
    }

    /// An `ok` booking of `slot` answered as appointment `id`.
    fn booked(n: u64, id: &str, slot: u32) -> Operation {
        Operation {
            response: Some(AnsweredAppointment {
                id: id.into(),
                clinic_id: "kochi".into(),
                doctor_id: "dr-asha".into(),
                date: DATE.into(),
                slot_index: slot,
                token_number: format!("A1-{:03}", slot + 1),
                status: "Pending".into(),
            }),
            ..op(n, OpKind::Book, Outcome::Ok)
        }
    }

    fn cancel(n: u64, id: &str, outcome: Outcome) -> Operation {
        Operation {
            appointment_id: Some(id.into()),
            ..op(n, OpKind::Cancel, outcome)
        }
    }

    /// The row op `n` would have made, in `slot` with its advance token.
    fn row(id: &str, n: u64, slot: u32, status: Status) -> Appointment {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 4, 0, 0).unwrap();
        Appointment {
            id: AppointmentId::from_stored(id.into()),
            clinic_id: ClinicId::parse("clinicId", "kochi").unwrap(),
            doctor_id: DoctorId::parse("doctorId", "dr-asha").unwrap(),
            date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            session_index: 0,
            slot_index: slot,
            time: "09:00".into(),
            kind: Kind::Advance,
            numeric_token: slot + 1,
            token_number: format!("A1-{:03}", slot + 1),
            status,
            patient_name: format!("lt-t-{n}"),
            patient_phone: None,
            booked_via: "Online".into(),
            created_at: at,
            updated_at: at,
            previous_appointment_id: None,
        }
    }

    fn violations(report: &CheckReport) -> Vec<(&'static str, u64)> {
        report
            .violations()
            .iter()
            .filter(|(_, f)| f.count > 0)
            .map(|(n, f)| (*n, f.count))
            .collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let history = [
            booked(1, "a1", 0),
            op(2, OpKind::Book, Outcome::Fail),
            booked(3, "a3", 1),
            cancel(4, "a3", Outcome::Ok),
            booked(5, "a5", 1),
        ];
        let rows = [
            row("a1", 1, 0, Status::Pending),
            row("a3", 3, 1, Status::Cancelled),
            row("a5", 5, 1, Status::Confirmed),
            row("other", 99, 2, Status::Pending),
        ];
        let report = check(&history, &rows);
        assert!(report.is_clean(), "{}", report.render());
        assert_eq!(report.unknown_rows, 1);
        assert_eq!(report.ops["book"]["ok"], 3);
        assert_eq!(report.ops["cancel"]["ok"], 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["lyingFailures"]["count"], 0);
    }

    #[test]
    fn an_acknowledged_booking_missing_or_silently_freed_is_lost() {
        let history = [booked(1, "a1", 0), booked(2, "a2", 1)];
        let report = check(&history, &[row("a2", 2, 1, Status::NoShow)]);
        assert_eq!(violations(&report), [("lost acknowledged bookings", 2)]);
        assert_eq!(report.lost.witnesses[0].op, Some(1));
        assert_eq!(report.lost.witnesses[1].appointment_ids, ["a2"]);
    }

    #[test]
    fn a_cancelled_booking_is_not_lost_when_an_ok_cancel_names_it() {
        let history = [booked(1, "a1", 0), cancel(2, "a1", Outcome::Ok)];
        let report = check(&history, &[row("a1", 1, 0, Status::Cancelled)]);
        assert!(report.is_clean(), "{}", report.render());
    }

    #[test]
    fn a_refused_booking_that_left_a_row_is_a_lying_failure() {
        let refused = Operation {
            error: Some("slot_taken".into()),
            ..op(1, OpKind::Book, Outcome::Fail)
        };
        let report = check(&[refused], &[row("a1", 1, 0, Status::Pending)]);
        assert_eq!(violations(&report), [("lying failures", 1)]);
        assert_eq!(report.lying_failures.witnesses[0].appointment_ids, ["a1"]);
    }

    #[test]
    fn two_occupying_rows_in_one_slot_are_a_duplicate_slot() {
        // A walk-in from another client landed on slot 4; the cancelled row there is no rival.
        let mut walk_in = row("w", 8, 4, Status::Pending);
        walk_in.token_number = "W1-101".into();
        let rows = [
            row("a1", 1, 4, Status::Pending),
            walk_in,
            row("gone", 9, 4, Status::Cancelled),
        ];
        let report = check(&[booked(1, "a1", 4)], &rows);
        assert_eq!(violations(&report), [("duplicate slots", 1)]);
        assert_eq!(
            report.duplicate_slots.witnesses[0].appointment_ids,
            ["a1", "w"]
        );
    }

    #[test]
    fn two_occupying_rows_with_one_token_are_a_duplicate_token() {
        let history = [booked(1, "a1", 4), booked(2, "a2", 5)];
        let mut second = row("a2", 2, 5, Status::Confirmed);
        second.token_number = "A1-005".into();
        let report = check(&history, &[row("a1", 1, 4, Status::Pending), second]);
        assert_eq!(report.duplicate_tokens.count, 1);
        assert_eq!(report.duplicate_slots.count, 0);
        assert!(!report.is_clean());
    }

    #[test]
    fn an_answer_that_disagrees_with_its_row_is_a_token_mismatch() {
        let report = check(&[booked(1, "a1", 4)], &[row("a1", 1, 6, Status::Pending)]);
        assert_eq!(violations(&report), [("token mismatches", 1)]);
        let detail = &report.token_mismatches.witnesses[0].detail;
        assert!(
            detail.contains("tokenNumber answered A1-005, stored A1-007"),
            "{detail}"
        );
        assert!(
            detail.contains("slotIndex answered 4, stored 6"),
            "{detail}"
        );
    }

    #[test]
    fn two_rows_for_one_operation_are_reported() {
        let rows = [
            row("a1", 1, 0, Status::Pending),
            row("a1-again", 1, 1, Status::Pending),
        ];
        let report = check(&[booked(1, "a1", 0)], &rows);
        assert_eq!(violations(&report), [("duplicate rows per operation", 1)]);
        assert_eq!(
            report.duplicate_rows_per_operation.witnesses[0].appointment_ids,
            ["a1", "a1-again"]
        );
    }

    #[test]
    fn unanswered_bookings_are_resolved_both_ways_without_failing_the_check() {
        let history = [
            op(1, OpKind::Book, Outcome::Info),
            op(2, OpKind::WalkIn, Outcome::Info),
        ];
        let report = check(&history, &[row("a1", 1, 0, Status::Pending)]);
        assert_eq!((report.info_committed, report.info_not_committed), (1, 1));
        assert!(report.is_clean(), "{}", report.render());
    }

    #[test]
    fn read_history_names_the_line_that_does_not_parse() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let good = serde_json::to_string(&booked(1, "a1", 0)).unwrap();
        write!(file, "{good}\n\n{{\"op\": 2, \"kind\": \"book\"\n").unwrap();
        let err = read_history(file.path()).unwrap_err();
        assert!(
            matches!(err, HistoryError::Malformed { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(":3:"), "{err}");
    }

    #[tokio::test]
    async fn rows_for_reads_each_touched_doctor_day_and_every_day_of_an_undated_walk_in() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("check.db");
        let store = crate::store::open(url.to_str().unwrap(), crate::store::SqliteSync::Full);
        let store: std::sync::Arc<dyn Store> = store.await.unwrap().into();
        // 09:00 in Kolkata: the demo gives dr-asha 4 bookings today and dr-ravi 3
        // walk-ins, and each of them 3 bookings tomorrow.
        let clock =
            crate::clock::FixedClock::at(Utc.with_ymd_and_hms(2026, 12, 1, 3, 30, 0).unwrap());
        let bookings = crate::booking::Bookings::new(store.clone(), std::sync::Arc::new(clock));
        crate::demo::seed(&bookings).await.unwrap();
        let at = |doctor: &str, kind, date: Option<&str>| Operation {
            clinic_id: "demo-clinic".into(),
            doctor_id: doctor.into(),
            date: date.map(Into::into),
            ..op(1, kind, Outcome::Info)
        };
        let history = [
            at("dr-asha", OpKind::WalkIn, None),
            at("dr-asha", OpKind::Book, Some("2026-12-02")),
            at("dr-ravi", OpKind::Book, Some("2026-12-02")),
            at("dr-ravi", OpKind::Cancel, None),
        ];
        let rows = rows_for(&*store, &history).await.unwrap();
        let ids: HashSet<_> = rows.iter().map(|r| r.id.as_str()).collect();
        // dr-asha's today (4) and tomorrow (3), dr-ravi's tomorrow (3).
        assert_eq!((rows.len(), ids.len()), (10, 10));
        assert_eq!(
            rows.iter()
                .filter(|r| r.doctor_id.as_str() == "dr-asha")
                .count(),
            7
        );
    }
}
