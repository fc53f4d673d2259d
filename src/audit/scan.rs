//! Duplicate slots and tokens found in one pass over any number of appointments.
//! Each appointment costs a few lookups under compact integer keys (clinic, doctor and
//! token numbered on first sight, a doctor-day keyed by those numbers and its date),
//! so millions of rows need no more than 32 bytes each (slot, token, a hash of the id,
//! and where to find them again); only the rare ids listed twice are read again, to
//! keep their newest copy, and only the rare keys held twice become [`Duplicate`]s,
//! whose members' ids are asked for at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;

use chrono::NaiveDate;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use crate::domain::watched::supersedes;
use crate::domain::{
    counts, ClinicId, Counts, DoctorId, Duplicate, DuplicateKind, EventOrder, FieldError, Group,
    MemberRef,
};
use crate::watch::kloqo::SlotHolder;

/// The source of every member an audit of a file finds (`MemberRef::source`).
pub const FILE_SOURCE: &str = "file";

/// A break placeholder holds its slot but no token.
const NO_TOKEN: u32 = u32::MAX;

/// The appointments added so far, kept as what the duplicate rules compare.
#[derive(Default)]
pub struct Scan {
    clinics: Numbered<ClinicId>,
    doctors: Numbered<DoctorId>,
    tokens: Numbered<String>,
    /// The occupying appointments of each doctor-day (clinic, doctor, date). The list
    /// sits beside its key, so finding where to add one costs one cache miss, not two.
    days: FxHashMap<(u32, u32, NaiveDate), Vec<Occupant>>,
    /// Every appointment added, to find the ids listed more than once.
    listed: Vec<Listed>,
    checked: u64,
}

/// An appointment as its id finds it: a hash of the id whose lowest bit is replaced by
/// whether the appointment counts as checked (16 bytes, not 24), and its row.
#[derive(Debug, Clone, Copy)]
struct Listed {
    key: u64,
    row: u64,
}

impl Listed {
    fn new(id: &str, checked: bool, row: u64) -> Listed {
        let hash = FxBuildHasher.hash_one(id);
        Listed {
            key: (hash & !1) | u64::from(checked),
            row,
        }
    }

    fn id_hash(self) -> u64 {
        self.key & !1
    }

    fn checked(self) -> bool {
        self.key & 1 == 1
    }
}

/// One copy of a document whose id may be listed more than once, read again: its row,
/// its id and its order ([`EventOrder`]), or why its times cannot be read.
#[derive(Debug)]
pub struct DocumentCopy {
    pub row: u64,
    pub id: String,
    pub order: Result<EventOrder, FieldError>,
}

/// An occupying appointment: its slot, its token's number (or [`NO_TOKEN`]), and the
/// row its reader finds it again by.
#[derive(Debug, Clone, Copy)]
struct Occupant {
    slot: u32,
    token: u32,
    row: u64,
}

/// Values numbered in the order first seen, found again by their text.
struct Numbered<T> {
    numbers: FxHashMap<Box<str>, u32>,
    values: Vec<T>,
}

impl<T> Default for Numbered<T> {
    fn default() -> Self {
        Numbered {
            numbers: FxHashMap::default(),
            values: Vec::new(),
        }
    }
}

impl<T> Numbered<T> {
    /// The number of `raw`, parsing it only the first time it is seen. (Fewer than
    /// 2³² distinct values: each costs far more than 4 bytes of memory.)
    fn number(
        &mut self,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Result<u32, FieldError> {
        if let Some(&number) = self.numbers.get(raw) {
            return Ok(number);
        }
        let value = parse(raw)?;
        let number = self.values.len() as u32;
        self.values.push(value);
        self.numbers.insert(raw.into(), number);
        Ok(number)
    }
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq)]
pub struct Findings {
    pub counts: Counts,
    /// The doctor-days with duplicates, in clinic, doctor, date order, each with its
    /// duplicates by slot and by token.
    pub days: Vec<(Group, Vec<Duplicate>)>,
}

/// What a scan found, and the copies of ids listed more than once whose versions could
/// not be read (their rows, ascending, and why): they are left out of the findings, as
/// `watch import` would refuse them.
#[derive(Debug)]
pub struct Finished {
    pub findings: Findings,
    pub unreadable: Vec<(u64, FieldError)>,
}

impl Scan {
    /// One appointment read, document `id`; `row` is how its reader finds it again (a
    /// line's offset, an index; one per appointment, growing through the file) should
    /// its id or version be needed. Fails, counting nothing, when its clinic or doctor
    /// id breaks the rules for ids.
    pub fn add(&mut self, id: &str, held: &SlotHolder<'_>, row: u64) -> Result<(), FieldError> {
        let clinic = self
            .clinics
            .number(held.clinic_id, |raw| ClinicId::parse("clinicId", raw))?;
        let doctor = self
            .doctors
            .number(&held.doctor.key_text(), |_| held.doctor.key())?;
        let checked = counts::is_checked(held.is_break, false);
        self.checked += u64::from(checked);
        self.listed.push(Listed::new(id, checked, row));
        if !held.occupying {
            return Ok(());
        }
        let token = match held.token_number {
            Some(token) => self.tokens.number(token, |raw| Ok(raw.to_owned()))?,
            None => NO_TOKEN,
        };
        self.days
            .entry((clinic, doctor, held.date))
            .or_default()
            .push(Occupant {
                slot: held.slot_index,
                token,
                row,
            });
        Ok(())
    }

    /// The duplicates among everything added, and the counts, one document id being
    /// one appointment. `copies_of` is given the rows of every appointment whose id
    /// may be listed more than once, ascending, and answers a [`DocumentCopy`] for
    /// each, in the same order; of the copies of an id only the newest is kept
    /// ([`Scan::keep_newest`]). `ids_of` is then given the rows of the duplicates'
    /// members, ascending and each once, and answers their ids in the same order.
    pub fn finish<E>(
        mut self,
        copies_of: impl FnOnce(&[u64]) -> Result<Vec<DocumentCopy>, E>,
        ids_of: impl FnOnce(&[u64]) -> Result<Vec<String>, E>,
    ) -> Result<Finished, E> {
        let unreadable = self.keep_newest(copies_of)?;
        let mut found = Vec::new();
        for (day, mut occupants) in self.days {
            occupants.sort_unstable_by_key(|o| o.slot);
            for held_twice in occupants.chunk_by(|a, b| a.slot == b.slot) {
                if held_twice.len() > 1 {
                    let key = held_twice[0].slot.to_string();
                    found.push((day, DuplicateKind::Slot, key, held_twice.to_vec()));
                }
            }
            occupants.sort_unstable_by_key(|o| o.token);
            for held_twice in occupants.chunk_by(|a, b| a.token == b.token) {
                let token = held_twice[0].token;
                if held_twice.len() > 1 && token != NO_TOKEN {
                    let key = self.tokens.values[token as usize].clone();
                    found.push((day, DuplicateKind::Token, key, held_twice.to_vec()));
                }
            }
        }
        let mut rows: Vec<u64> = found
            .iter()
            .flat_map(|(.., members)| members.iter().map(|o| o.row))
            .collect();
        rows.sort_unstable();
        rows.dedup();
        let ids = ids_of(&rows)?;
        let id_of = |row: u64| ids[rows.partition_point(|r| *r < row)].clone();

        let mut days: BTreeMap<Group, Vec<Duplicate>> = BTreeMap::new();
        for (day, kind, key, occupants) in found {
            // Each id is one row by now (`keep_newest`), so every member is another id.
            let members: BTreeSet<MemberRef> = occupants
                .iter()
                .map(|o| MemberRef {
                    source: FILE_SOURCE.to_owned(),
                    id: id_of(o.row),
                })
                .collect();
            let (clinic, doctor, date) = day;
            let group = Group {
                clinic_id: self.clinics.values[clinic as usize].clone(),
                doctor_id: self.doctors.values[doctor as usize].clone(),
                date,
            };
            days.entry(group).or_default().push(Duplicate {
                kind,
                key,
                members,
                last_change: None,
                last_commit: None,
            });
        }
        let counts = Counts::tally(self.checked, days.values().map(Vec::as_slice));
        Ok(Finished {
            findings: Findings {
                counts,
                days: days.into_iter().collect(),
            },
            unreadable,
        })
    }

    /// One document id is one appointment, as the watch mirror keeps one row per id:
    /// of the copies of an id (a change-log export lists each change), only the one the
    /// mirror would keep after `watch import` of the file stays: the one that orders
    /// last by [`supersedes`] (version, then stage of the day, then the text),
    /// whatever their order in the file.
    /// A copy whose version cannot be read is left out, and returned with the reason.
    fn keep_newest<E>(
        &mut self,
        copies_of: impl FnOnce(&[u64]) -> Result<Vec<DocumentCopy>, E>,
    ) -> Result<Vec<(u64, FieldError)>, E> {
        let mut listed = std::mem::take(&mut self.listed);
        listed.sort_unstable_by_key(|l| l.id_hash());
        let mut maybe_repeated: Vec<Listed> = listed
            .chunk_by(|a, b| a.id_hash() == b.id_hash())
            .filter(|same| same.len() > 1)
            .flatten()
            .copied()
            .collect();
        drop(listed);
        if maybe_repeated.is_empty() {
            return Ok(Vec::new());
        }
        maybe_repeated.sort_unstable_by_key(|l| l.row);
        let rows: Vec<u64> = maybe_repeated.iter().map(|l| l.row).collect();
        let mut copies = copies_of(&rows)?;
        // Equal hashes may still be different ids: the copies are grouped by id, each
        // id's in file order.
        copies.sort_unstable_by(|a, b| (&a.id, a.row).cmp(&(&b.id, b.row)));
        let mut left_out = FxHashSet::default();
        let mut unreadable = Vec::new();
        for same_id in copies.chunk_by(|a, b| a.id == b.id) {
            if same_id.len() < 2 {
                continue;
            }
            let mut kept: Option<(u64, &EventOrder)> = None;
            for copy in same_id {
                let order = match &copy.order {
                    Ok(order) => order,
                    Err(e) => {
                        left_out.insert(copy.row);
                        unreadable.push((copy.row, e.clone()));
                        continue;
                    }
                };
                match kept {
                    Some((_, kept_order)) if !supersedes(kept_order, order) => {
                        left_out.insert(copy.row);
                    }
                    Some((kept_row, _)) => {
                        left_out.insert(kept_row);
                        kept = Some((copy.row, order));
                    }
                    None => kept = Some((copy.row, order)),
                }
            }
        }
        if !left_out.is_empty() {
            for l in &maybe_repeated {
                if l.checked() && left_out.contains(&l.row) {
                    self.checked -= 1;
                }
            }
            for occupants in self.days.values_mut() {
                occupants.retain(|o| !left_out.contains(&o.row));
            }
        }
        unreadable.sort_unstable_by_key(|(row, _)| *row);
        Ok(unreadable)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use serde_json::{json, Value};

    use super::*;
    use crate::watch::kloqo::{appointment_id, document_order, slot_holder, SlotFields};

    /// An appointment of dr-asha at kochi on 1 December 2026, as a Kloqo document.
    fn appointment(id: &str, slot: u32, token: &str, status: &str) -> Value {
        json!({
            "id": id, "clinicId": "kochi", "doctorId": "dr-asha", "date": "1 December 2026",
            "slotIndex": slot, "tokenNumber": token, "status": status, "patientName": "Anu"
        })
    }

    fn with(mut doc: Value, field: &str, value: Value) -> Value {
        doc[field] = value;
        doc
    }

    /// Scans the documents (row = index), answering ids and versions from them.
    fn scan(documents: &[Value]) -> (Findings, Vec<u64>) {
        let (finished, asked) = scan_all(documents);
        assert!(finished.unreadable.is_empty(), "{:?}", finished.unreadable);
        (finished.findings, asked)
    }

    fn scan_all(documents: &[Value]) -> (Finished, Vec<u64>) {
        let mut scan = Scan::default();
        for (row, doc) in documents.iter().enumerate() {
            let fields = SlotFields::from_document(doc).unwrap();
            let id = appointment_id(&fields).unwrap();
            scan.add(id, &slot_holder(&fields).unwrap(), row as u64)
                .unwrap();
        }
        let mut asked = Vec::new();
        let finished = scan
            .finish(
                |rows| {
                    let copies = rows.iter().map(|r| {
                        let doc = &documents[*r as usize];
                        DocumentCopy {
                            row: *r,
                            id: doc["id"].as_str().unwrap().to_owned(),
                            order: document_order(doc),
                        }
                    });
                    Ok::<_, Infallible>(copies.collect())
                },
                |rows| {
                    asked = rows.to_vec();
                    let ids = rows.iter().map(|r| documents[*r as usize]["id"].as_str());
                    Ok(ids.map(|id| id.unwrap().to_owned()).collect())
                },
            )
            .unwrap();
        (finished, asked)
    }

    /// `doc` as changed at `seconds` past a fixed instant.
    fn changed_at(doc: Value, seconds: i64) -> Value {
        with(
            doc,
            "updatedAt",
            json!({"_seconds": 1_764_500_000 + seconds, "_nanoseconds": 0}),
        )
    }

    /// Each duplicate found as (kind, key, member ids).
    fn found(findings: &Findings) -> Vec<(DuplicateKind, String, Vec<String>)> {
        findings
            .days
            .iter()
            .flat_map(|(_, duplicates)| duplicates)
            .map(|d| {
                let ids = d.members.iter().map(|m| m.id.clone()).collect();
                (d.kind, d.key.clone(), ids)
            })
            .collect()
    }

    #[test]
    fn two_patients_in_slot_5_with_token_a1_006_are_one_double_booking() {
        let documents = [
            appointment("a", 5, "A1-006", "Pending"),
            appointment("b", 5, "A1-006", "Confirmed"),
            appointment("c", 6, "A1-007", "Pending"),
        ];
        let (findings, asked) = scan(&documents);
        let pair = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            found(&findings),
            [
                (DuplicateKind::Slot, "5".to_owned(), pair.clone()),
                (DuplicateKind::Token, "A1-006".to_owned(), pair)
            ]
        );
        let (group, _) = &findings.days[0];
        assert_eq!(
            (group.clinic_id.as_str(), group.doctor_id.as_str()),
            ("kochi", "dr-asha")
        );
        assert_eq!(group.date, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap());
        let counts = findings.counts;
        assert_eq!(
            (
                counts.appointments_checked,
                counts.duplicate_groups,
                counts.extra_rows,
                counts.affected_rows
            ),
            (3, 1, 1, 2)
        );
        assert_eq!(asked, [0, 1], "only the members' ids are asked for");
    }

    #[test]
    fn freed_and_moved_appointments_hold_nothing_and_a_break_holds_its_slot_only() {
        let documents = [
            appointment("cancelled", 5, "A1-006", "Cancelled"),
            appointment("no-show", 5, "A1-006", "No-show"),
            with(
                appointment("moved", 5, "A1-006", "Completed"),
                "cancelledByBreak",
                json!(true),
            ),
            appointment("holder", 5, "A1-006", "Pending"),
            with(
                appointment("break-1", 7, "Break", "Completed"),
                "bookedVia",
                json!("BreakBlock"),
            ),
            appointment("break-2", 8, "Break", "Completed"),
        ];
        let (findings, _) = scan(&documents);
        assert_eq!(found(&findings), []);
        assert_eq!(
            findings.counts.appointments_checked, 4,
            "break placeholders are no appointments; the freed and moved ones are"
        );
        assert!(findings.counts.is_clean());

        let (findings, _) = scan(&[
            documents[4].clone(),
            appointment("patient", 7, "A1-008", "Pending"),
        ]);
        let both = vec!["break-1".to_owned(), "patient".to_owned()];
        assert_eq!(
            found(&findings),
            [(DuplicateKind::Slot, "7".to_owned(), both)]
        );
    }

    #[test]
    fn the_same_slot_on_another_doctor_clinic_or_day_is_no_duplicate() {
        let documents = [
            appointment("a", 5, "A1-006", "Pending"),
            with(
                appointment("b", 5, "A1-006", "Pending"),
                "doctorId",
                json!("dr-ravi"),
            ),
            with(
                appointment("c", 5, "A1-006", "Pending"),
                "clinicId",
                json!("calicut"),
            ),
            with(
                appointment("d", 5, "A1-006", "Pending"),
                "date",
                json!("2026-12-02"),
            ),
        ];
        let (findings, asked) = scan(&documents);
        assert!(findings.days.is_empty() && asked.is_empty());
        assert_eq!(findings.counts.appointments_checked, 4);
    }

    #[test]
    fn one_day_written_in_long_form_and_in_iso_is_one_doctor_day() {
        let documents = [
            appointment("a", 5, "A1-006", "Pending"),
            with(
                appointment("b", 5, "A1-006", "Pending"),
                "date",
                json!("2026-12-01"),
            ),
        ];
        let (findings, _) = scan(&documents);
        assert_eq!(findings.counts.duplicate_groups, 1);
    }

    #[test]
    fn a_document_listed_twice_is_one_appointment_not_a_duplicate() {
        let twice = appointment("a", 5, "A1-006", "Pending");
        let (findings, _) = scan(&[twice.clone(), twice]);
        assert!(findings.days.is_empty());
        assert_eq!(findings.counts.duplicate_groups, 0);
        assert_eq!(findings.counts.appointments_checked, 1);
    }

    #[test]
    fn of_an_id_listed_twice_the_newest_copy_counts_wherever_it_is_in_the_file() {
        let holder = appointment("b", 5, "A1-006", "Pending");
        let in_5 = changed_at(appointment("a", 5, "A1-006", "Pending"), 0);
        let in_7 = changed_at(appointment("a", 7, "A1-008", "Pending"), 60);
        let pair = vec!["a".to_owned(), "b".to_owned()];
        for (copies, doubled) in [
            ([&in_5, &in_7], false),
            ([&in_7, &in_5], false),
            ([&changed_at(in_7.clone(), -60), &in_5], true),
            ([&in_5, &changed_at(in_7.clone(), -60)], true),
        ] {
            let documents = [copies[0].clone(), holder.clone(), copies[1].clone()];
            let (findings, _) = scan(&documents);
            let expected = if doubled {
                vec![
                    (DuplicateKind::Slot, "5".to_owned(), pair.clone()),
                    (DuplicateKind::Token, "A1-006".to_owned(), pair.clone()),
                ]
            } else {
                vec![]
            };
            assert_eq!(found(&findings), expected, "{copies:?}");
            assert_eq!(findings.counts.appointments_checked, 2);
        }
    }

    #[test]
    fn of_copies_with_one_version_or_none_the_same_one_counts_in_any_file_order() {
        let holder = appointment("b", 5, "A1-006", "Pending");
        for stamp in [Some(0), None] {
            let at = |doc: Value| match stamp {
                Some(seconds) => changed_at(doc, seconds),
                None => doc,
            };
            let in_5 = at(appointment("a", 5, "A1-006", "Pending"));
            let in_7 = at(appointment("a", 7, "A1-008", "Pending"));
            let (forwards, _) = scan(&[in_5.clone(), holder.clone(), in_7.clone()]);
            let (backwards, _) = scan(&[in_7.clone(), holder.clone(), in_5.clone()]);
            assert_eq!(forwards.counts, backwards.counts, "{stamp:?}");
            // Same version and stage: the document text (SHA-256) decides, as the
            // mirror's upsert does.
            let kept_in_5 = document_order(&in_5).unwrap() > document_order(&in_7).unwrap();
            assert_eq!(
                forwards.counts.duplicate_groups,
                u64::from(kept_in_5),
                "{stamp:?}"
            );
            // Of the same version, a later stage of the day wins whatever the order.
            let cancelled = at(appointment("a", 5, "A1-006", "Cancelled"));
            let (findings, _) = scan(&[cancelled.clone(), holder.clone(), in_5.clone()]);
            assert!(findings.counts.is_clean(), "{stamp:?}");
            let (findings, _) = scan(&[in_5, holder.clone(), cancelled]);
            assert!(findings.counts.is_clean(), "{stamp:?}");
        }
    }

    #[test]
    fn a_newer_copy_that_is_a_break_or_cancelled_replaces_the_patient() {
        let patient = changed_at(appointment("a", 5, "A1-006", "Pending"), 0);
        let holder = appointment("b", 5, "A1-006", "Pending");
        let cancelled = changed_at(appointment("a", 5, "A1-006", "Cancelled"), 60);
        let (findings, _) = scan(&[patient.clone(), holder.clone(), cancelled]);
        assert!(findings.counts.is_clean());
        assert_eq!(findings.counts.appointments_checked, 2);
        let made_a_break = changed_at(appointment("a", 9, "Break", "Completed"), 60);
        let (findings, _) = scan(&[patient, holder, made_a_break]);
        assert!(findings.counts.is_clean());
        assert_eq!(findings.counts.appointments_checked, 1);
    }

    #[test]
    fn a_copy_of_a_repeated_id_with_an_unreadable_version_is_left_out_and_said() {
        let holder = appointment("b", 5, "A1-006", "Pending");
        let old = changed_at(appointment("a", 7, "A1-008", "Pending"), 0);
        let bad = with(
            appointment("a", 5, "A1-006", "Pending"),
            "updatedAt",
            json!("yesterday"),
        );
        let lone = with(
            appointment("c", 9, "A1-010", "Pending"),
            "updatedAt",
            json!("yesterday"),
        );
        let (finished, _) = scan_all(&[old, holder, bad, lone]);
        let unreadable: Vec<(u64, &str)> = finished
            .unreadable
            .iter()
            .map(|(row, e)| (*row, e.field.as_str()))
            .collect();
        assert_eq!(
            unreadable,
            [(2, "updatedAt")],
            "timestamps are read only for an id listed twice"
        );
        assert!(finished.findings.counts.is_clean());
        assert_eq!(finished.findings.counts.appointments_checked, 3);
    }

    #[test]
    fn a_shared_token_apart_from_any_shared_slot_is_its_own_group() {
        let documents = [
            appointment("a", 5, "A1-006", "Pending"),
            appointment("b", 5, "A1-006", "Pending"),
            appointment("c", 5, "W1-101", "Pending"),
            appointment("d", 9, "W1-101", "Pending"),
        ];
        let (findings, _) = scan(&documents);
        let ids = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            found(&findings),
            [
                (DuplicateKind::Slot, "5".to_owned(), ids(&["a", "b", "c"])),
                (DuplicateKind::Token, "A1-006".to_owned(), ids(&["a", "b"])),
                (DuplicateKind::Token, "W1-101".to_owned(), ids(&["c", "d"])),
            ]
        );
        let counts = findings.counts;
        assert_eq!(
            (
                counts.duplicate_groups,
                counts.extra_rows,
                counts.affected_rows
            ),
            (3, 4, 4)
        );
    }

    #[test]
    fn a_malformed_clinic_id_is_refused_and_not_counted() {
        let mut scan = Scan::default();
        let doc = with(
            appointment("a", 5, "A1-006", "Pending"),
            "clinicId",
            json!("../etc"),
        );
        let fields = SlotFields::from_document(&doc).unwrap();
        let error = scan
            .add("a", &slot_holder(&fields).unwrap(), 0)
            .unwrap_err();
        assert_eq!(error.field, "clinicId");
        let finished = scan
            .finish(
                |_| Ok::<_, Infallible>(Vec::new()),
                |_| Ok::<_, Infallible>(Vec::new()),
            )
            .unwrap();
        assert_eq!(finished.findings.counts.appointments_checked, 0);
    }
}
