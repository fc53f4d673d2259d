//! The demo clinic `slotguard serve --demo` creates: `demo-clinic` in Asia/Kolkata
//! with two doctors and a few of today's walk-ins and tomorrow's bookings. Seeding
//! is skipped when the clinic already exists, so restarts keep what was booked.

use serde_json::json;

use crate::booking::{AdvanceRequest, BookingError, Bookings, WalkInRequest};
use crate::domain::schedule::WeeklyAvailability;
use crate::domain::{BookingPolicy, Clinic, ClinicId, Doctor, DoctorId, Patient};

pub const CLINIC_ID: &str = "demo-clinic";

fn doctor(
    clinic: &ClinicId,
    id: &str,
    name: &str,
    slot_minutes: u32,
    hours: serde_json::Value,
) -> Doctor {
    let week: serde_json::Map<_, _> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .map(|d| (d.to_owned(), hours.clone()))
        .collect();
    Doctor {
        id: DoctorId::parse("id", id).expect("demo doctor id"),
        clinic_id: clinic.clone(),
        name: name.to_owned(),
        slot_minutes,
        availability: WeeklyAvailability::parse("availability", &week.into(), slot_minutes)
            .expect("demo availability"),
        days_off: Vec::new(),
    }
}

pub async fn seed(bookings: &Bookings) -> Result<(), BookingError> {
    let store = bookings.store();
    let clinic_id = ClinicId::parse("id", CLINIC_ID).expect("demo clinic id");
    if store.clinic(&clinic_id).await?.is_some() {
        return Ok(());
    }
    let now = bookings.now();
    let clinic = Clinic {
        id: clinic_id.clone(),
        name: "Demo Clinic".into(),
        timezone: Clinic::DEFAULT_TIMEZONE,
        policy: BookingPolicy::default(),
        audit_at: Clinic::DEFAULT_AUDIT_AT,
    };
    store.insert_clinic(&clinic, now).await?;
    let doctors = [
        doctor(
            &clinic_id,
            "dr-asha",
            "Asha Menon",
            10,
            json!([{"from": "09:00", "to": "13:00"}, {"from": "17:00", "to": "21:00"}]),
        ),
        doctor(
            &clinic_id,
            "dr-ravi",
            "Ravi Nair",
            15,
            json!([{"from": "07:00", "to": "23:00"}]),
        ),
    ];
    let patients = ["Anil Kumar", "Beena Thomas", "Chitra Pillai"];
    let tomorrow = clinic.today(now) + chrono::Duration::days(1);
    for doctor in &doctors {
        store.insert_doctor(doctor, now).await?;
        for name in patients {
            let patient = |via: &str| Patient {
                name: name.into(),
                phone: None,
                booked_via: via.into(),
            };
            // Today's session may be over already; the demo then simply has no walk-ins.
            let _ = bookings
                .walk_in(
                    &WalkInRequest {
                        clinic_id: clinic_id.clone(),
                        doctor_id: doctor.id.clone(),
                        patient: patient("Walk-in"),
                        force: false,
                    },
                    None,
                )
                .await;
            bookings
                .book(
                    &AdvanceRequest {
                        clinic_id: clinic_id.clone(),
                        doctor_id: doctor.id.clone(),
                        date: tomorrow,
                        slot: None,
                        patient: patient("Online"),
                    },
                    None,
                )
                .await?;
        }
    }
    Ok(())
}
