//! The read-back after a run: every doctor-day the run touched, listed through the API
//! and held against the history by the same checker as `slotguard check`.
//!
//! Two things a script may do make the history harder to check, and both are handled
//! here rather than by changing what the script sends: a body that names the doctor
//! (`doctor`, at `/api/book-appointment`) instead of giving `doctorId`, and requests
//! that share a patient name (the checker finds the row an operation made by its
//! patient's name).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::check::{self, CheckReport};
use crate::domain::Appointment;
use crate::history::{OpKind, Operation, Outcome};

/// The clinic and doctor's name an operation's body gave instead of a `doctorId`.
pub type NamedDoctors = HashMap<u64, (String, String)>;

#[derive(Debug)]
pub struct Verified {
    pub report: CheckReport,
    /// What the check could not look at, as sentences.
    pub notes: Vec<String>,
}

/// Reads back the doctor-days of `history` with `auth` (an admin or clinic key) and
/// checks them.
pub async fn verify(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    history: &[Operation],
    named: &NamedDoctors,
) -> Result<Verified, String> {
    let mut history = history.to_vec();
    let mut notes = Vec::new();
    let unresolved = resolve_doctors(&mut history, named);
    if unresolved > 0 {
        notes.push(format!(
            "{unresolved} requests named a doctor that no acknowledged booking resolved to a doctorId; their days were not read back"
        ));
    }
    let days: BTreeSet<(String, String, String)> = history
        .iter()
        .filter(|op| op.kind != OpKind::Cancel && !op.doctor_id.is_empty())
        .filter_map(|op| {
            op.date
                .clone()
                .map(|d| (op.clinic_id.clone(), op.doctor_id.clone(), d))
        })
        .collect();
    let mut rows = Vec::new();
    for (clinic, doctor, date) in days {
        let url = reqwest::Url::parse_with_params(
            &format!("{base}/api/v1/appointments"),
            [
                ("clinicId", &clinic),
                ("doctorId", &doctor),
                ("date", &date),
            ],
        )
        .map_err(|e| format!("read-back: {e}"))?;
        let response = client
            .get(url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .send()
            .await
            .map_err(|e| format!("read-back failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("read-back of {clinic}/{doctor}/{date} answered {} (it needs an admin or clinic key; --no-verify skips it)", response.status()));
        }
        let page: Value = response
            .json()
            .await
            .map_err(|e| format!("read-back: {e}"))?;
        let listed: Vec<Appointment> = serde_json::from_value(page["appointments"].clone())
            .map_err(|e| format!("read-back: {e}"))?;
        rows.extend(listed);
    }
    let unattributable = tell_apart(&mut history, &mut rows);
    if unattributable > 0 {
        notes.push(format!(
            "{unattributable} refused or unanswered requests shared their patientName with other requests, so whether they left a row cannot be told (give each request its own patientName, or leave it out and loadtest names each one)"
        ));
    }
    Ok(Verified {
        report: check::check(&history, &rows),
        notes,
    })
}

/// Gives operations that named their doctor the doctorId an acknowledged booking of
/// the same clinic and name was answered with. Returns how many stay unknown.
fn resolve_doctors(history: &mut [Operation], named: &NamedDoctors) -> usize {
    let learned: HashMap<&(String, String), String> = history
        .iter()
        .filter_map(|op| Some((named.get(&op.op)?, op.response.as_ref()?.doctor_id.clone())))
        .collect();
    let mut unresolved = 0;
    for op in history.iter_mut().filter(|op| op.doctor_id.is_empty()) {
        match named.get(&op.op).and_then(|key| learned.get(key)) {
            Some(id) => op.doctor_id = id.clone(),
            None if op.kind != OpKind::Cancel => unresolved += 1,
            None => {}
        }
    }
    unresolved
}

/// Makes each booking operation's patient name its own, as the checker needs. Where a
/// name was shared, an acknowledged booking keeps its row (found by the answered id)
/// under a name of its own; a refused or unanswered one cannot be matched to a row
/// and is left out of the per-operation checks. Returns how many were left out.
fn tell_apart(history: &mut [Operation], rows: &mut [Appointment]) -> u64 {
    let mut uses: HashMap<String, u32> = HashMap::new();
    for op in history.iter().filter(|op| op.kind != OpKind::Cancel) {
        if let Some(name) = &op.patient_name {
            *uses.entry(name.clone()).or_default() += 1;
        }
    }
    let mut left_out = 0;
    for op in history.iter_mut().filter(|op| op.kind != OpKind::Cancel) {
        let Some(name) = &op.patient_name else {
            continue;
        };
        if uses.get(name).copied().unwrap_or(0) < 2 {
            continue;
        }
        match (&op.outcome, &op.response) {
            (Outcome::Ok, Some(answer)) => {
                let own = format!("{name} (op {})", op.op);
                if let Some(row) = rows.iter_mut().find(|r| r.id.as_str() == answer.id) {
                    row.patient_name = own.clone();
                }
                op.patient_name = Some(own);
            }
            _ => {
                op.patient_name = None;
                left_out += 1;
            }
        }
    }
    left_out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::AnsweredAppointment;
    use chrono::Utc;

    fn op(n: u64, doctor: &str, name: &str, outcome: Outcome) -> Operation {
        Operation {
            op: n,
            kind: OpKind::Book,
            patient_name: Some(name.into()),
            idempotency_key: None,
            clinic_id: "demo-clinic".into(),
            doctor_id: doctor.into(),
            date: Some("2026-12-02".into()),
            slot_index: Some(5),
            appointment_id: None,
            invoked_at: Utc::now(),
            completed_at: Utc::now(),
            outcome,
            status: Some(if outcome == Outcome::Ok { 201 } else { 409 }),
            error: None,
            response: (outcome == Outcome::Ok).then(|| AnsweredAppointment {
                id: format!("a{n}"),
                clinic_id: "demo-clinic".into(),
                doctor_id: "dr-asha".into(),
                date: "2026-12-02".into(),
                slot_index: 5,
                token_number: "A1-006".into(),
                status: "Pending".into(),
            }),
        }
    }

    fn row(id: &str, name: &str) -> Appointment {
        serde_json::from_value(serde_json::json!({
            "id": id, "clinicId": "demo-clinic", "doctorId": "dr-asha", "date": "2026-12-02",
            "sessionIndex": 0, "slotIndex": 5, "time": "09:50", "kind": "advance",
            "numericToken": 6, "tokenNumber": "A1-006", "status": "Pending",
            "patientName": name, "bookedVia": "Online",
            "createdAt": "2026-12-01T00:30:00Z", "updatedAt": "2026-12-01T00:30:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_doctor_named_in_the_body_is_resolved_from_an_acknowledged_booking() {
        let mut history = vec![
            op(0, "", "A", Outcome::Fail),
            op(1, "", "B", Outcome::Ok),
            op(2, "", "C", Outcome::Fail),
        ];
        let mut named: NamedDoctors = (0..2)
            .map(|n| (n, ("demo-clinic".to_owned(), "Asha Menon".to_owned())))
            .collect();
        named.insert(2, ("demo-clinic".into(), "Nobody".into()));
        assert_eq!(resolve_doctors(&mut history, &named), 1);
        assert_eq!(history[0].doctor_id, "dr-asha");
        assert_eq!(history[2].doctor_id, "");
    }

    #[test]
    fn a_shared_patient_name_checks_the_winner_by_id_and_sets_the_refusals_aside() {
        let mut history = vec![
            op(0, "dr-asha", "Test Patient", Outcome::Fail),
            op(1, "dr-asha", "Test Patient", Outcome::Ok),
            op(2, "dr-asha", "Test Patient", Outcome::Fail),
            op(3, "dr-asha", "Own Name", Outcome::Fail),
        ];
        let mut rows = vec![row("a1", "Test Patient")];
        assert_eq!(tell_apart(&mut history, &mut rows), 2);
        let report = check::check(&history, &rows);
        assert!(report.is_clean(), "{}", report.render());
        assert_eq!((report.unknown_rows, report.lost.count), (0, 0));
        // Without it the one row would count against every operation of the name.
        let naive = check::check(
            &[
                op(0, "dr-asha", "Test Patient", Outcome::Fail),
                op(1, "dr-asha", "Test Patient", Outcome::Ok),
            ],
            &[row("a1", "Test Patient")],
        );
        assert!(!naive.is_clean());
    }
}
