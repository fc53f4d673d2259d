//! The demo clinic `slotguard serve --demo` creates: `demo-clinic` in Asia/Kolkata with
//! two doctors, and a useful day whatever the hour it starts: today's bookings (some
//! already seen, some to come), a walk-in queue, tomorrow's bookings, and one double
//! booking forwarded through the watch mirror (source `kloqo-demo`) as another app
//! would let it happen, so the dashboard's incident list and the alerts have something
//! to show. The demo writes its appointments straight to the store, into slots it
//! chooses, so the booking rules' "not in the past" does not leave a late-evening demo
//! empty, and its own writes are not booking attempts: the metrics do not count them.
//! A day already seeded is left as it is, so restarts keep what was booked.

use std::collections::BTreeSet;

use chrono::{Duration, NaiveDate};
use serde_json::json;

use crate::booking::{BookingError, Bookings};
use crate::domain::schedule::WeeklyAvailability;
use crate::domain::{
    AppointmentId, BookingPolicy, Clinic, ClinicId, Doctor, DoctorId, Kind, Patient, PlannedSlot,
    SlotIndex,
};
use crate::store::{AppointmentFilter, Booking, StoreError};

pub const CLINIC_ID: &str = "demo-clinic";
/// The watched source of the demo's double booking.
pub const SOURCE: &str = "kloqo-demo";

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

/// What the demo created, for the line `serve --demo` prints.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub date: Option<NaiveDate>,
    pub today: usize,
    pub walk_ins: usize,
    pub tomorrow: usize,
    pub double_booking: Option<String>,
}

impl Seeded {
    pub fn describe(&self) -> String {
        match self.date {
            None => format!("demo: {CLINIC_ID} already has today's demo day; nothing added"),
            Some(date) => format!(
                "demo: {CLINIC_ID} (Asia/Kolkata, doctors dr-asha and dr-ravi): {} bookings and {} walk-ins today ({date}), {} bookings tomorrow{}",
                self.today,
                self.walk_ins,
                self.tomorrow,
                self.double_booking
                    .as_deref()
                    .map(|d| format!(", and {d}"))
                    .unwrap_or_default()
            ),
        }
    }
}

const PATIENTS: [&str; 8] = [
    "Anil Kumar",
    "Beena Thomas",
    "Chitra Pillai",
    "Deepa Varghese",
    "Eldho Joseph",
    "Fathima Rahman",
    "Gopika Nair",
    "Hari Menon",
];

/// Writes one appointment into `slot` (or the first free slot from it on), bypassing
/// the booking rules' clock checks but not the store's guards.
async fn place(
    bookings: &Bookings,
    doctor: &Doctor,
    date: NaiveDate,
    slot: SlotIndex,
    kind: Kind,
    patient: Patient,
) -> Result<bool, StoreError> {
    let schedule = doctor.day_schedule(date);
    let Some(session) = schedule.session_of(slot).copied() else {
        return Ok(false);
    };
    let first = slot.position();
    let plan = move |taken: &BTreeSet<u32>| {
        (first..session.slot_count)
            .map(|k| (session.slot(k), session.start_of(k).time()))
            .find(|(s, _)| !taken.contains(&s.value()))
            .map(|(slot, time)| PlannedSlot { slot, time })
            .ok_or(crate::domain::Refusal::NoSlotAvailable)
    };
    let outcome = bookings
        .store()
        .book(Booking {
            id: AppointmentId::generate(),
            clinic_id: doctor.clinic_id.clone(),
            doctor_id: doctor.id.clone(),
            date,
            kind,
            patient,
            now: bookings.now(),
            replaces: None,
            idempotency: None,
            plan: Box::new(plan),
        })
        .await;
    match outcome.result {
        Ok(_) => Ok(true),
        Err(StoreError::Refused(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn patient(name: &str, via: &str) -> Patient {
    Patient {
        name: name.into(),
        phone: Some("+910000000000".into()),
        booked_via: via.into(),
    }
}

/// Creates the demo clinic and doctors if they are missing, and seeds today (in the
/// clinic's time) unless it already has appointments.
pub async fn seed(bookings: &Bookings) -> Result<Seeded, BookingError> {
    let store = bookings.store();
    let clinic_id = ClinicId::parse("id", CLINIC_ID).expect("demo clinic id");
    let now = bookings.now();
    let clinic = match store.clinic(&clinic_id).await? {
        Some(c) => c,
        None => {
            let clinic = Clinic {
                id: clinic_id.clone(),
                name: "Demo Clinic".into(),
                timezone: Clinic::DEFAULT_TIMEZONE,
                policy: BookingPolicy::default(),
                audit_at: Clinic::DEFAULT_AUDIT_AT,
            };
            store.insert_clinic(&clinic, now).await?;
            clinic
        }
    };
    let doctors = [
        doctor(
            &clinic_id,
            "dr-asha",
            "Asha Menon",
            10,
            json!([{"from": "09:00", "to": "13:00"}, {"from": "17:00", "to": "21:00"}]),
        ),
        // Round the clock, so the demo's walk-ins and the README's tour work at any hour.
        doctor(
            &clinic_id,
            "dr-ravi",
            "Ravi Nair",
            15,
            json!([{"from": "00:00", "to": "23:59"}]),
        ),
    ];
    for d in &doctors {
        if store.doctor(&clinic_id, &d.id).await?.is_none() {
            store.insert_doctor(d, now).await?;
        }
    }
    let today = clinic.today(now);
    let already = store
        .appointments(&AppointmentFilter {
            clinic_id: Some(clinic_id.clone()),
            date: Some(today),
            limit: 1,
            ..AppointmentFilter::default()
        })
        .await?;
    if !already.is_empty() {
        return Ok(Seeded::default());
    }
    let mut seeded = Seeded {
        date: Some(today),
        ..Seeded::default()
    };
    let [asha, ravi] = &doctors;
    // Today: Asha's morning list from slot 0, Ravi's patients around the current hour.
    for (i, name) in PATIENTS.iter().take(4).enumerate() {
        let slot = SlotIndex::from_parts(0, (i as u32) * 2);
        if place(
            bookings,
            asha,
            today,
            slot,
            Kind::Advance,
            patient(name, "Online"),
        )
        .await?
        {
            seeded.today += 1;
        }
    }
    let local_now = now.with_timezone(&clinic.timezone).time();
    let minutes = local_now
        .signed_duration_since(chrono::NaiveTime::MIN)
        .num_minutes();
    let current = u32::try_from(minutes / 15).unwrap_or(0);
    // The walk-in queue: patients who walked in over the last hour, waiting now.
    for (i, name) in PATIENTS.iter().skip(4).take(3).enumerate() {
        let k = current.saturating_sub(3) + i as u32;
        let slot = SlotIndex::from_parts(0, k.min(94));
        if place(
            bookings,
            ravi,
            today,
            slot,
            Kind::WalkIn,
            patient(name, "Walk-in"),
        )
        .await?
        {
            seeded.walk_ins += 1;
        }
    }
    // Tomorrow: three advance bookings each.
    let tomorrow = today + Duration::days(1);
    for d in &doctors {
        for (i, name) in PATIENTS.iter().take(3).enumerate() {
            let slot = SlotIndex::from_parts(0, 10 + i as u32);
            if place(
                bookings,
                d,
                tomorrow,
                slot,
                Kind::Advance,
                patient(name, "Phone"),
            )
            .await?
            {
                seeded.tomorrow += 1;
            }
        }
    }
    seeded.double_booking = Some(double_booking(bookings, asha, today).await?);
    Ok(seeded)
}

/// Two documents of another app holding Asha's slot 5 today: the morning-rush double
/// booking (`A1-006` twice) that the detector turns into an incident.
async fn double_booking(
    bookings: &Bookings,
    asha: &Doctor,
    today: NaiveDate,
) -> Result<String, BookingError> {
    let created = bookings.now().timestamp();
    let documents = ["Irfan Ali", "Jaya Krishnan"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let document = json!({
                "id": format!("demo-{today}-{i}"),
                "clinicId": CLINIC_ID, "doctorId": asha.id, "doctor": asha.name,
                "date": today.to_string(), "sessionIndex": 0, "slotIndex": 5,
                "numericToken": 6, "tokenNumber": "A1-006", "time": "09:50",
                "status": "Pending", "bookedVia": "Online", "patientName": name,
                "createdAt": {"_seconds": created + i as i64, "_nanoseconds": 0},
            });
            crate::watch::kloqo::parse_document(&document)
                .map_err(|e| StoreError::Corrupt(format!("demo document: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (_, touched) = bookings
        .store()
        .upsert_watched(SOURCE, &documents, bookings.now())
        .await?;
    if let Some(wakeups) = bookings.wakeups() {
        wakeups.touch(touched).await;
    }
    Ok(format!(
        "one double booking of {}'s slot 5 (token A1-006) today from source {SOURCE}",
        asha.name
    ))
}
