//! `slotguard audit --file`: an export (Kloqo's JSON array, JSON Lines or CSV) checked
//! for duplicate slots and tokens with no database. Every record is read by the rules
//! the watch API uses ([`kloqo::slot_holder`]); JSON Lines, the format of big exports,
//! on a fast path that decodes only the fields those rules read and keeps no record
//! (the rare lines whose id is listed twice are read again whole, for their version).

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write as _};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::Serialize;

use super::scan::{DocumentCopy, Findings, Scan};
use super::skim::skim;
use super::Output;
use crate::domain::incident::same_double_booking_once;
use crate::domain::{Counts, Duplicate, DuplicateKind, FieldError, Group};
use crate::watch::import::{self, FileError, Format, FormatError, Position, RecordError};
use crate::watch::kloqo::{self, SlotFields};

/// Unreadable records a report lists (all are counted): enough to see what is wrong,
/// bounded for a file where every line is.
const LISTED_UNREADABLE: usize = 1000;
/// Smaller files are audited in about a second: no progress bar for them.
const PROGRESS_FROM_BYTES: u64 = 64 << 20;

/// An audited file.
#[derive(Debug)]
pub struct FileAudit {
    pub path: PathBuf,
    pub format: Format,
    pub findings: Findings,
    pub unreadable: Unreadable,
}

/// Records that could not be read: every one counted, the first ones kept.
#[derive(Debug, Default)]
pub struct Unreadable {
    pub count: u64,
    pub listed: Vec<RecordError>,
}

impl Unreadable {
    fn add(&mut self, position: Position, reason: String) {
        self.count += 1;
        if self.listed.len() < LISTED_UNREADABLE {
            self.listed.push(RecordError { position, reason });
        }
    }
}

/// What the audit says, as the exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Duplicates {
        groups: u64,
    },
    /// Some records could not be read: whatever else it found, the audit did not see
    /// the whole file.
    Incomplete {
        unreadable: u64,
    },
}

impl FileAudit {
    pub fn verdict(&self) -> Verdict {
        let counts = &self.findings.counts;
        if self.unreadable.count > 0 {
            Verdict::Incomplete {
                unreadable: self.unreadable.count,
            }
        } else if !counts.is_clean() {
            Verdict::Duplicates {
                groups: counts.duplicate_groups,
            }
        } else {
            Verdict::Clean
        }
    }
}

/// Why a file could not be audited at all.
#[derive(Debug, thiserror::Error)]
pub enum FileAuditError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{}: no appointments in the file; an empty export audits nothing", .0.display())]
    Empty(PathBuf),
    #[error("{}: the file changed while it was audited (byte {offset} no longer starts the appointment read there)", .path.display())]
    Changed { path: PathBuf, offset: u64 },
    #[error("cannot write the report: {0}")]
    Output(io::Error),
}

/// Audits `path` and prints the report on stdout (a progress bar on stderr for a large
/// file when stderr is a terminal).
pub fn run(path: &Path, format: Option<Format>, output: Output) -> Result<Verdict, FileAuditError> {
    let bar = progress_bar(path);
    let audit = audit_file(path, format, bar.as_ref());
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let audit = audit?;
    let report = match output {
        Output::Table => table(&audit).into_bytes(),
        Output::Json => json(&audit).into_bytes(),
        Output::Csv => {
            eprintln!("{}", summary(&audit));
            csv(&audit)
        }
    };
    io::stdout()
        .lock()
        .write_all(&report)
        .map_err(FileAuditError::Output)?;
    Ok(audit.verdict())
}

fn progress_bar(path: &Path) -> Option<ProgressBar> {
    let size = std::fs::metadata(path).ok()?.len();
    (io::stderr().is_terminal() && size >= PROGRESS_FROM_BYTES).then(import::progress_bar)
}

/// Reads the whole of `path` as `format` (by default as [`Format::of_file`] tells).
pub fn audit_file(
    path: &Path,
    format: Option<Format>,
    progress: Option<&ProgressBar>,
) -> Result<FileAudit, FileAuditError> {
    let format = match format {
        Some(format) => format,
        None => Format::of_file(path).map_err(FileAuditError::Format)?,
    };
    let mut scan = Scan::default();
    let mut unreadable = Unreadable::default();
    let mut read = 0u64;
    let finished = match format {
        Format::Jsonl => {
            import::read_lines(path, progress, |line| {
                let mut fields = SlotFields::default();
                let added = line_fields(line.text, &mut fields).and_then(|()| {
                    // The line is found again by its offset, should its id be needed.
                    add(&mut scan, &fields, line.offset)
                        .map(drop)
                        .map_err(|e| e.to_string())
                });
                match added {
                    Ok(()) => read += 1,
                    Err(reason) => unreadable.add(Position::Line(line.number), reason),
                }
            })?;
            let finished = scan.finish(
                |offsets| copies_at(path, offsets),
                |offsets| ids_at(path, offsets),
            )?;
            let offsets: Vec<u64> = finished.unreadable.iter().map(|(o, _)| *o).collect();
            let lines = line_numbers(path, &offsets)?;
            for (line, (_, e)) in lines.into_iter().zip(&finished.unreadable) {
                unreadable.add(Position::Line(line), e.to_string());
            }
            finished
        }
        Format::Kloqo | Format::Csv => {
            // These readers build each document anyway; its id and version are kept,
            // as the file is not read again.
            let mut kept: Vec<Kept> = Vec::new();
            import::read_with_progress(path, format, progress, |record| {
                let added = record.and_then(|record| {
                    let row = kept.len() as u64;
                    SlotFields::from_document(&record.document)
                        .and_then(|fields| {
                            let id = add(&mut scan, &fields, row)?;
                            kept.push(Kept {
                                id: id.to_owned(),
                                position: record.position,
                                order: kloqo::document_order(&record.document),
                            });
                            Ok(())
                        })
                        .map_err(|e| RecordError {
                            position: record.position,
                            reason: e.to_string(),
                        })
                });
                match added {
                    Ok(()) => read += 1,
                    Err(e) => unreadable.add(e.position, e.reason),
                }
            })?;
            let finished = scan.finish(
                |rows| {
                    let copies = rows.iter().map(|row| {
                        let kept = &kept[*row as usize];
                        DocumentCopy {
                            row: *row,
                            id: kept.id.clone(),
                            order: kept.order.clone(),
                        }
                    });
                    Ok::<_, FileAuditError>(copies.collect())
                },
                |rows| {
                    Ok(rows
                        .iter()
                        .map(|row| kept[*row as usize].id.clone())
                        .collect())
                },
            )?;
            for (row, e) in &finished.unreadable {
                unreadable.add(kept[*row as usize].position, e.to_string());
            }
            finished
        }
    };
    if read == 0 && unreadable.count == 0 {
        return Err(FileAuditError::Empty(path.to_owned()));
    }
    // Copies whose version could not be read are found after the rest of the file.
    unreadable.listed.sort_by_key(|e| match e.position {
        Position::Index(index) => index as u64,
        Position::Line(line) => line,
    });
    Ok(FileAudit {
        path: path.to_owned(),
        format,
        findings: finished.findings,
        unreadable,
    })
}

/// What an audit of a Kloqo array or a CSV file keeps of each appointment, for the end:
/// the file is not read again.
struct Kept {
    id: String,
    position: Position,
    order: Result<crate::domain::EventOrder, FieldError>,
}

/// One document's part in the audit, read as the watch API reads it. Returns its id.
fn add<'f>(scan: &mut Scan, fields: &'f SlotFields<'_>, row: u64) -> Result<&'f str, FieldError> {
    let id = kloqo::appointment_id(fields)?;
    let held = kloqo::slot_holder(fields)?;
    scan.add(id, &held, row)?;
    Ok(id)
}

/// The fields of a JSON Lines line: skimmed, or read by serde_json when the skim is
/// not sure (which also says what is wrong with a bad line).
fn line_fields<'l>(line: &'l [u8], fields: &mut SlotFields<'l>) -> Result<(), String> {
    if skim(line, fields).is_some() {
        return Ok(());
    }
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("is not UTF-8 text (column {})", e.valid_up_to() + 1))?;
    *fields = serde_json::from_str(text).map_err(|e| import::line_error(line, &e))?;
    Ok(())
}

/// The JSON Lines records at `offsets` read again, each by `read`; a record that no
/// longer reads (the file changed since the first pass) is an error naming its offset.
fn reread<T>(
    path: &Path,
    offsets: &[u64],
    mut read: impl FnMut(u64, &[u8]) -> Option<T>,
) -> Result<Vec<T>, FileAuditError> {
    let mut found = Vec::with_capacity(offsets.len());
    let mut changed = None;
    import::read_lines_at(path, offsets, |offset, line| match read(offset, line) {
        Some(value) => found.push(value),
        None => {
            changed.get_or_insert(offset);
        }
    })?;
    match changed {
        Some(offset) => Err(FileAuditError::Changed {
            path: path.to_owned(),
            offset,
        }),
        None => Ok(found),
    }
}

/// The JSON Lines records at `offsets` read again whole, as copies of a document whose
/// id may be listed more than once (their version is read only now).
fn copies_at(path: &Path, offsets: &[u64]) -> Result<Vec<DocumentCopy>, FileAuditError> {
    reread(path, offsets, |offset, line| {
        let document: serde_json::Value = serde_json::from_slice(line).ok()?;
        let fields = SlotFields::from_document(&document).ok()?;
        Some(DocumentCopy {
            row: offset,
            id: kloqo::appointment_id(&fields).ok()?.to_owned(),
            order: kloqo::document_order(&document),
        })
    })
}

/// The line numbers of the JSON Lines lines at `offsets` (ascending), counted by
/// reading the file again: only for the rare record reported after the first pass.
fn line_numbers(path: &Path, offsets: &[u64]) -> Result<Vec<u64>, FileAuditError> {
    let mut numbers = Vec::with_capacity(offsets.len());
    if !offsets.is_empty() {
        import::read_lines(path, None, |line| {
            if offsets.binary_search(&line.offset).is_ok() {
                numbers.push(line.number);
            }
        })?;
    }
    if numbers.len() == offsets.len() {
        Ok(numbers)
    } else {
        Err(FileAuditError::Changed {
            path: path.to_owned(),
            offset: offsets[numbers.len()],
        })
    }
}

/// The ids of the JSON Lines records at `offsets`, read again.
fn ids_at(path: &Path, offsets: &[u64]) -> Result<Vec<String>, FileAuditError> {
    reread(path, offsets, |_, line| {
        let mut fields = SlotFields::default();
        line_fields(line, &mut fields).ok()?;
        Some(kloqo::appointment_id(&fields).ok()?.to_owned())
    })
}

/// A double booking as the report lists it: one line per group the counts count.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedGroup<'a> {
    #[serde(flatten)]
    pub group: &'a Group,
    pub kind: DuplicateKind,
    pub key: String,
    /// For a slot: the token its members share too (the same double booking).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_token: Option<String>,
    /// Appointment ids only: names and phone numbers stay in the file.
    pub members: Vec<String>,
}

/// The groups of `findings` as [`Counts`] counts them: a slot given twice with its
/// token is listed once, as the slot.
pub fn listed_groups(findings: &Findings) -> Vec<ListedGroup<'_>> {
    let mut listed = Vec::new();
    for (group, found) in &findings.days {
        for duplicate in same_double_booking_once(found) {
            let shared_token = (duplicate.kind == DuplicateKind::Slot)
                .then(|| shared_token(found, &duplicate))
                .flatten();
            listed.push(ListedGroup {
                group,
                kind: duplicate.kind,
                shared_token,
                members: duplicate.members.into_iter().map(|m| m.id).collect(),
                key: duplicate.key,
            });
        }
    }
    listed
}

fn shared_token(found: &[Duplicate], slot: &Duplicate) -> Option<String> {
    found
        .iter()
        .find(|d| d.kind == DuplicateKind::Token && d.members == slot.members)
        .map(|d| d.key.clone())
}

fn summary(audit: &FileAudit) -> String {
    let Counts {
        appointments_checked,
        duplicate_groups,
        extra_rows,
        affected_rows,
    } = audit.findings.counts;
    format!(
        "{} ({}): appointments checked {appointments_checked}, duplicate groups {duplicate_groups}, \
         extra rows {extra_rows}, affected rows {affected_rows}, unreadable records {}",
        audit.path.display(),
        audit.format,
        audit.unreadable.count
    )
}

fn table(audit: &FileAudit) -> String {
    let mut out = summary(audit);
    out.push_str("\n\n");
    let groups = listed_groups(&audit.findings);
    if groups.is_empty() {
        out.push_str("No slot or token is held by two occupying appointments");
        out.push_str(if audit.unreadable.count > 0 {
            " among the records read.\n"
        } else {
            ".\n"
        });
    } else {
        let mut rows =
            vec![["clinic", "doctor", "date", "kind", "key", "members"].map(String::from)];
        rows.extend(groups.iter().map(|g| {
            let key = match &g.shared_token {
                Some(token) => format!("{} / {token}", g.key),
                None => g.key.clone(),
            };
            [
                g.group.clinic_id.to_string(),
                g.group.doctor_id.to_string(),
                g.group.date.to_string(),
                g.kind.as_str().to_owned(),
                key,
                g.members.join(", "),
            ]
        }));
        let mut widths = [0; 6];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:width$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
    }
    let unreadable = &audit.unreadable;
    if unreadable.count > 0 {
        let _ = writeln!(out, "\nUnreadable records ({}):", unreadable.count);
        for error in &unreadable.listed {
            let _ = writeln!(out, "  {error}");
        }
        let unlisted = unreadable.count - unreadable.listed.len() as u64;
        if unlisted > 0 {
            let _ = writeln!(out, "  … and {unlisted} more");
        }
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    file: String,
    format: &'static str,
    counts: Counts,
    unreadable_records: u64,
    duplicates: Vec<ListedGroup<'a>>,
    /// The first [`LISTED_UNREADABLE`].
    unreadable: Vec<JsonUnreadable<'a>>,
}

/// `{"line": 7, …}` for JSON Lines and CSV, `{"index": 3, …}` in a Kloqo array.
#[derive(Serialize)]
struct JsonUnreadable<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    reason: &'a str,
}

fn json(audit: &FileAudit) -> String {
    let report = JsonReport {
        file: audit.path.display().to_string(),
        format: audit.format.name(),
        counts: audit.findings.counts,
        unreadable_records: audit.unreadable.count,
        duplicates: listed_groups(&audit.findings),
        unreadable: audit
            .unreadable
            .listed
            .iter()
            .map(|e| JsonUnreadable {
                line: match e.position {
                    Position::Line(line) => Some(line),
                    Position::Index(_) => None,
                },
                index: match e.position {
                    Position::Index(index) => Some(index),
                    Position::Line(_) => None,
                },
                reason: &e.reason,
            })
            .collect(),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
}

const CSV_COLUMNS: [&str; 9] = [
    "finding",
    "clinicId",
    "doctorId",
    "date",
    "key",
    "sharedToken",
    "appointmentId",
    "position",
    "reason",
];

/// One row per member of each group (finding `slot` or `token`) and per listed
/// unreadable record (finding `unreadable`).
fn csv(audit: &FileAudit) -> Vec<u8> {
    let mut rows = vec![CSV_COLUMNS.map(String::from)];
    for g in listed_groups(&audit.findings) {
        for member in &g.members {
            rows.push([
                g.kind.as_str().to_owned(),
                g.group.clinic_id.to_string(),
                g.group.doctor_id.to_string(),
                g.group.date.to_string(),
                g.key.clone(),
                g.shared_token.clone().unwrap_or_default(),
                member.clone(),
                String::new(),
                String::new(),
            ]);
        }
    }
    for error in &audit.unreadable.listed {
        let mut row: [String; 9] = Default::default();
        row[0] = "unreadable".to_owned();
        row[7] = error.position.to_string();
        row[8] = error.reason.clone();
        rows.push(row);
    }
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in rows {
        // Writing to memory cannot fail.
        let _ = out.write_record(&row);
    }
    out.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn appointment(id: &str, slot: u32, token: &str) -> Value {
        json!({"id": id, "clinicId": "kochi", "doctorId": "dr-asha", "date": "2026-12-01",
               "slotIndex": slot, "tokenNumber": token, "status": "Pending"})
    }

    fn audit_of(name: &str, content: &str) -> Result<FileAudit, FileAuditError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        audit_file(&path, None, None)
    }

    fn jsonl(documents: &[Value]) -> String {
        documents.iter().map(|d| format!("{d}\n")).collect()
    }

    #[test]
    fn a_slot_and_its_token_given_twice_are_listed_once_as_the_slot() {
        let lines = jsonl(&[
            appointment("a", 5, "A1-006"),
            appointment("b", 5, "A1-006"),
            appointment("c", 7, "W1-101"),
            appointment("d", 8, "W1-101"),
        ]);
        let audit = audit_of("day.jsonl", &lines).unwrap();
        let listed = listed_groups(&audit.findings);
        let seen: Vec<_> = listed
            .iter()
            .map(|g| {
                (
                    g.kind,
                    g.key.as_str(),
                    g.shared_token.as_deref(),
                    g.members.join(" "),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (DuplicateKind::Slot, "5", Some("A1-006"), "a b".to_owned()),
                (DuplicateKind::Token, "W1-101", None, "c d".to_owned()),
            ]
        );
        assert_eq!(listed.len() as u64, audit.findings.counts.duplicate_groups);
        assert_eq!(audit.verdict(), Verdict::Duplicates { groups: 2 });
    }

    #[test]
    fn the_same_records_give_the_same_findings_in_all_three_formats() {
        let documents = [
            appointment("a", 5, "A1-006"),
            appointment("b", 5, "A1-006"),
            appointment("c", 6, "A1-007"),
        ];
        let array = serde_json::to_string_pretty(&documents).unwrap();
        let mut csv = "id,clinicId,doctorId,date,slotIndex,tokenNumber,status\n".to_owned();
        for d in &documents {
            let row: Vec<String> = [
                "id",
                "clinicId",
                "doctorId",
                "date",
                "slotIndex",
                "tokenNumber",
                "status",
            ]
            .iter()
            .map(|f| {
                d[f].as_str()
                    .map_or_else(|| d[f].to_string(), str::to_owned)
            })
            .collect();
            csv.push_str(&(row.join(",") + "\n"));
        }
        let audits = [
            audit_of("day.json", &array).unwrap(),
            audit_of("day.jsonl", &jsonl(&documents)).unwrap(),
            audit_of("day.csv", &csv).unwrap(),
        ];
        for audit in &audits[1..] {
            assert_eq!(audit.findings, audits[0].findings, "{}", audit.format);
        }
        assert_eq!(audits[0].findings.counts.appointments_checked, 3);
    }

    #[test]
    fn an_id_listed_twice_is_its_newest_copy_in_all_three_formats() {
        let changed = |mut doc: Value, at: &str| {
            doc["updatedAt"] = json!(at);
            doc
        };
        let documents = [
            appointment("b", 5, "A1-006"),
            changed(appointment("a", 7, "A1-008"), "2026-11-30T10:00:00Z"),
            changed(appointment("a", 5, "A1-006"), "2026-11-30T09:00:00Z"),
            changed(appointment("c", 9, "A1-010"), "2026-11-30T09:00:00Z"),
            changed(appointment("c", 5, "A1-006"), "soon"),
        ];
        let columns = [
            "id",
            "clinicId",
            "doctorId",
            "date",
            "slotIndex",
            "tokenNumber",
            "status",
            "updatedAt",
        ];
        let mut csv = columns.join(",") + "\n";
        for d in &documents {
            let row: Vec<String> = columns
                .iter()
                .map(|f| {
                    d[f].as_str()
                        .map_or_else(|| d[f].to_string(), str::to_owned)
                })
                .collect();
            csv.push_str(&(row.join(",") + "\n"));
        }
        for (audit, position) in [
            (
                audit_of("day.json", &serde_json::to_string(&documents).unwrap()),
                Position::Index(4),
            ),
            (audit_of("day.jsonl", &jsonl(&documents)), Position::Line(5)),
            (audit_of("day.csv", &csv), Position::Line(6)),
        ] {
            let audit = audit.unwrap();
            let counts = audit.findings.counts;
            assert!(counts.is_clean(), "{}: {:?}", audit.format, audit.findings);
            assert_eq!(counts.appointments_checked, 3, "{}", audit.format);
            let unreadable: Vec<String> = audit
                .unreadable
                .listed
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(
                unreadable,
                [format!("{position}: updatedAt: must be an RFC 3339 time such as 2026-01-18T09:30:00Z, or a Firestore timestamp")],
                "{}",
                audit.format
            );
        }
    }

    #[test]
    fn an_unreadable_line_is_listed_with_its_number_and_makes_the_audit_incomplete() {
        let mut lines = jsonl(&[appointment("a", 5, "A1-006")]);
        lines.push_str("\n{\"id\": \"b\", \"clinicId\": \"kochi\", \"doctorId\": \"dr-asha\", \"date\": \"2026-12-01\", \"slotIndex\": -1, \"status\": \"Pending\"}\n");
        lines.push_str("{\"id\": \"c\",\n");
        lines.push_str("[1, 2]\n");
        let audit = audit_of("day.jsonl", &lines).unwrap();
        let listed: Vec<String> = audit
            .unreadable
            .listed
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(listed.len(), 3);
        assert!(
            listed[0].starts_with("line 3: slotIndex: must be a whole number"),
            "{listed:?}"
        );
        assert!(
            listed[1].starts_with("line 4: not valid JSON"),
            "{listed:?}"
        );
        assert_eq!(
            listed[2],
            "line 5: is not a JSON object (an appointment document)"
        );
        assert_eq!(audit.verdict(), Verdict::Incomplete { unreadable: 3 });
        assert_eq!(audit.findings.counts.appointments_checked, 1);
    }

    #[test]
    fn an_empty_file_audits_nothing_and_says_so() {
        for (name, content) in [
            ("empty.jsonl", ""),
            ("blank.jsonl", "\n \n"),
            ("empty.json", "[]"),
            ("header.csv", "id,status\n"),
        ] {
            let error = audit_of(name, content).unwrap_err();
            assert!(matches!(error, FileAuditError::Empty(_)), "{name}: {error}");
        }
    }

    #[test]
    fn the_three_outputs_name_the_group_and_its_members_but_no_patient() {
        let mut documents = vec![appointment("a", 5, "A1-006"), appointment("b", 5, "A1-006")];
        documents[0]["patientName"] = json!("Anu A.");
        let mut lines = jsonl(&documents);
        lines.push_str("not json\n");
        let audit = audit_of("day.jsonl", &lines).unwrap();

        let report: Value = serde_json::from_str(&json(&audit)).unwrap();
        assert_eq!(
            report["counts"],
            json!({"appointmentsChecked": 2, "duplicateGroups": 1, "extraRows": 1, "affectedRows": 2})
        );
        assert_eq!(
            report["duplicates"],
            json!([{"clinicId": "kochi", "doctorId": "dr-asha", "date": "2026-12-01", "kind": "slot",
                    "key": "5", "sharedToken": "A1-006", "members": ["a", "b"]}])
        );
        assert_eq!(report["unreadableRecords"], 1);
        assert_eq!(report["unreadable"][0]["line"], 3);

        let rows: Vec<Vec<String>> = csv::Reader::from_reader(&csv(&audit)[..])
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0][..7],
            ["slot", "kochi", "dr-asha", "2026-12-01", "5", "A1-006", "a"]
        );
        assert_eq!(rows[1][6], "b");
        assert_eq!(
            (rows[2][0].as_str(), rows[2][7].as_str()),
            ("unreadable", "line 3")
        );

        let text = table(&audit);
        assert!(text.contains("slot  5 / A1-006  a, b"), "{text}");
        assert!(text.contains("line 3: not valid JSON"), "{text}");
        for shown in [text, json(&audit), String::from_utf8(csv(&audit)).unwrap()] {
            assert!(!shown.contains("Anu"), "a patient's name in {shown}");
        }
    }
}
