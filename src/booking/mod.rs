//! The booking service: loads the clinic and doctor, hands the store a planner built
//! from [`rules`], and wraps writes in idempotency. Every write to appointments goes
//! through here: duplicate detection hooks in after each commit, and every booking
//! attempt is counted for the metrics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::clock::Clock;
use crate::detect::Wakeups;
use crate::domain::{
    Appointment, AppointmentId, Clinic, ClinicId, Doctor, DoctorId, Group, Kind, Patient,
    PlannedSlot, Refusal, SlotIndex, Status,
};
use crate::metrics::{Attempt, BookingMetrics};
use crate::store::{
    AppointmentFilter, Booking, BookingOutcome, IdempotencyRecord, Store, StoreError,
    StoredResponse,
};
use reference::Reference;

pub mod idempotency;
pub mod reference;
pub mod rules;

use idempotency::KeyLocks;
use rules::{DayView, SlotState};

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("This Idempotency-Key was already used with a different request.")]
    IdempotencyKeyReused,
    #[error("A request with this Idempotency-Key is still being processed; retry shortly.")]
    IdempotencyInFlight,
}

impl From<Refusal> for BookingError {
    fn from(r: Refusal) -> Self {
        BookingError::Store(StoreError::Refused(r))
    }
}

/// A booking's answer: made now, or the stored answer to an earlier request with the
/// same idempotency key.
#[derive(Debug)]
pub enum Booked {
    Fresh(Box<Appointment>),
    Replayed(StoredResponse),
}

/// How a booking's slot is chosen.
#[derive(Debug, Clone, Copy)]
enum Choice {
    /// The given slot, or the earliest bookable in advance.
    Advance(Option<SlotIndex>),
    /// The earliest free slot from now; `force` places it after the session when full.
    WalkIn { force: bool },
}

pub struct AdvanceRequest {
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    pub date: NaiveDate,
    pub slot: Option<SlotIndex>,
    pub patient: Patient,
}

pub struct WalkInRequest {
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    pub patient: Patient,
    pub force: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotAvailability {
    pub slot_index: u32,
    pub time: String,
    pub state: SlotState,
    /// Whether an advance booking of this slot would succeed now (free and outside
    /// the lead time).
    pub bookable: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAvailability {
    pub session_index: u32,
    pub from: String,
    pub to: String,
    pub slots: Vec<SlotAvailability>,
}

pub struct Bookings {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    key_locks: KeyLocks,
    wakeups: Option<Wakeups>,
    metrics: Arc<BookingMetrics>,
    reference: Reference,
}

impl Bookings {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            key_locks: KeyLocks::default(),
            wakeups: None,
            metrics: Arc::default(),
            reference: Reference::default(),
        }
    }

    /// What every booking attempt came to, until it is flushed to the rollups.
    pub fn metrics(&self) -> &Arc<BookingMetrics> {
        &self.metrics
    }

    /// Tells the detector about every doctor-day a committed write touched.
    pub fn with_wakeups(mut self, wakeups: Wakeups) -> Self {
        self.wakeups = Some(wakeups);
        self
    }

    pub fn wakeups(&self) -> Option<&Wakeups> {
        self.wakeups.as_ref()
    }

    /// After a commit: the post-commit hook of every appointment write.
    async fn committed(&self, appointment: &Appointment) {
        if let Some(wakeups) = &self.wakeups {
            wakeups
                .wake(Group {
                    clinic_id: appointment.clinic_id.clone(),
                    doctor_id: appointment.doctor_id.clone(),
                    date: appointment.date,
                })
                .await;
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The clinic, read at most [`reference::KEEP_FOR`] ago.
    pub async fn clinic(&self, id: &ClinicId) -> Result<Clinic, BookingError> {
        if let Some(clinic) = self.reference.clinic(id) {
            return Ok(clinic);
        }
        let clinic = self
            .store
            .clinic(id)
            .await?
            .ok_or(StoreError::NotFound(crate::domain::Entity::Clinic))?;
        self.reference.keep_clinic(&clinic);
        Ok(clinic)
    }

    /// The clinic and its doctor, each read at most [`reference::KEEP_FOR`] ago.
    pub async fn clinic_and_doctor(
        &self,
        clinic: &ClinicId,
        doctor: &DoctorId,
    ) -> Result<(Clinic, Doctor), BookingError> {
        let clinic = self.clinic(clinic).await?;
        if let Some(doctor) = self.reference.doctor(&clinic.id, doctor) {
            return Ok((clinic, doctor));
        }
        let doctor = self
            .store
            .doctor(&clinic.id, doctor)
            .await?
            .ok_or(StoreError::NotFound(crate::domain::Entity::Doctor))?;
        self.reference.keep_doctor(&doctor);
        Ok((clinic, doctor))
    }

    /// Saves a clinic's new settings; this server uses them from the next request.
    pub async fn update_clinic(&self, clinic: &Clinic) -> Result<(), BookingError> {
        self.store.update_clinic(clinic, self.now()).await?;
        self.reference.keep_clinic(clinic);
        Ok(())
    }

    /// Saves a doctor's new schedule; this server uses it from the next request.
    pub async fn update_doctor(&self, doctor: &Doctor) -> Result<(), BookingError> {
        self.store.update_doctor(doctor, self.now()).await?;
        self.reference.keep_doctor(doctor);
        Ok(())
    }

    pub async fn appointment(&self, id: &AppointmentId) -> Result<Appointment, BookingError> {
        Ok(self
            .store
            .appointment(id)
            .await?
            .ok_or(StoreError::NotFound(crate::domain::Entity::Appointment))?)
    }

    pub async fn appointments(
        &self,
        filter: &AppointmentFilter,
    ) -> Result<Vec<Appointment>, BookingError> {
        Ok(self.store.appointments(filter).await?)
    }

    async fn taken(
        &self,
        clinic: &ClinicId,
        doctor: &DoctorId,
        date: NaiveDate,
    ) -> Result<BTreeSet<u32>, BookingError> {
        Ok(self
            .store
            .occupying(clinic, doctor, date)
            .await?
            .iter()
            .map(|a| a.slot_index)
            .collect())
    }

    pub async fn availability(
        &self,
        clinic: &ClinicId,
        doctor: &DoctorId,
        date: NaiveDate,
    ) -> Result<Vec<SessionAvailability>, BookingError> {
        let (clinic, doctor) = self.clinic_and_doctor(clinic, doctor).await?;
        let schedule = doctor.day_schedule(date);
        let taken = self.taken(&clinic.id, &doctor.id, date).await?;
        let view = DayView {
            clinic: &clinic,
            schedule: &schedule,
            now: self.now(),
            taken: &taken,
        };
        Ok(schedule
            .sessions
            .iter()
            .map(|s| SessionAvailability {
                session_index: s.index,
                from: s.from.format("%H:%M").to_string(),
                to: s.to.format("%H:%M").to_string(),
                slots: (0..s.slot_count)
                    .map(|k| SlotAvailability {
                        slot_index: s.slot(k).value(),
                        time: s.start_of(k).format("%H:%M").to_string(),
                        state: view.state(s, k),
                        bookable: view.advance_refusal(s, k).is_none(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// Advisory: would this advance booking succeed now? Writes nothing.
    pub async fn validate(&self, req: &AdvanceRequest) -> Result<PlannedSlot, BookingError> {
        let (clinic, doctor) = self
            .clinic_and_doctor(&req.clinic_id, &req.doctor_id)
            .await?;
        let schedule = doctor.day_schedule(req.date);
        let taken = self.taken(&clinic.id, &doctor.id, req.date).await?;
        let view = DayView {
            clinic: &clinic,
            schedule: &schedule,
            now: self.now(),
            taken: &taken,
        };
        Ok(view.plan_advance(req.slot)?)
    }

    pub async fn book(
        &self,
        req: &AdvanceRequest,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Booked, BookingError> {
        self.idempotent(&req.clinic_id, key, |key| self.book_advance(req, key, None))
            .await
    }

    pub async fn walk_in(
        &self,
        req: &WalkInRequest,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Booked, BookingError> {
        self.idempotent(&req.clinic_id, key, |key| self.book_walk_in(req, key))
            .await
    }

    /// Moves an appointment to another date or slot of the same doctor: the new one
    /// exists and the old one is Cancelled, or nothing changed.
    pub async fn reschedule(
        &self,
        old: &Appointment,
        date: NaiveDate,
        slot: Option<SlotIndex>,
    ) -> Result<Appointment, BookingError> {
        if !old.status.is_occupying() {
            return Err(StoreError::InvalidTransition {
                from: old.status,
                to: Status::Cancelled,
            }
            .into());
        }
        let req = AdvanceRequest {
            clinic_id: old.clinic_id.clone(),
            doctor_id: old.doctor_id.clone(),
            date,
            slot,
            patient: Patient {
                name: old.patient_name.clone(),
                phone: old.patient_phone.clone(),
                booked_via: old.booked_via.clone(),
            },
        };
        self.book_advance(&req, None, Some(&old.id)).await
    }

    /// Cancels at once, freeing the slot. Cancelling a cancelled appointment is a
    /// no-op that answers with it, so a retried cancel is harmless.
    pub async fn cancel(&self, appointment: &Appointment) -> Result<Appointment, BookingError> {
        if appointment.status == Status::Cancelled {
            return Ok(appointment.clone());
        }
        self.set_status(appointment, Status::Cancelled).await
    }

    pub async fn set_status(
        &self,
        appointment: &Appointment,
        to: Status,
    ) -> Result<Appointment, BookingError> {
        let changed = self
            .store
            .change_status(&appointment.id, to, self.now())
            .await?;
        self.committed(&changed).await;
        Ok(changed)
    }

    async fn book_advance(
        &self,
        req: &AdvanceRequest,
        key: Option<&IdempotencyRecord>,
        replaces: Option<&AppointmentId>,
    ) -> Result<Appointment, BookingError> {
        let (clinic, doctor) = self
            .clinic_and_doctor(&req.clinic_id, &req.doctor_id)
            .await?;
        let now = self.now();
        self.commit(
            clinic,
            doctor,
            req.date,
            now,
            &req.patient,
            replaces,
            key,
            Choice::Advance(req.slot),
        )
        .await
    }

    async fn book_walk_in(
        &self,
        req: &WalkInRequest,
        key: Option<&IdempotencyRecord>,
    ) -> Result<Appointment, BookingError> {
        let (clinic, doctor) = self
            .clinic_and_doctor(&req.clinic_id, &req.doctor_id)
            .await?;
        let now = self.now();
        let date = clinic.today(now);
        self.commit(
            clinic,
            doctor,
            date,
            now,
            &req.patient,
            None,
            key,
            Choice::WalkIn { force: req.force },
        )
        .await
    }

    /// Commits one booking of `date`; the slot is chosen inside the transaction from
    /// the day as it stands then. Every appointment insert goes through here.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        clinic: Clinic,
        doctor: Doctor,
        date: NaiveDate,
        now: DateTime<Utc>,
        patient: &Patient,
        replaces: Option<&AppointmentId>,
        key: Option<&IdempotencyRecord>,
        choice: Choice,
    ) -> Result<Appointment, BookingError> {
        let schedule = doctor.day_schedule(date);
        let kind = match choice {
            Choice::Advance(_) => Kind::Advance,
            Choice::WalkIn { .. } => Kind::WalkIn,
        };
        let attempt = Attempt::new(&clinic, &doctor.id, kind, now);
        let booking = Booking {
            id: AppointmentId::generate(),
            clinic_id: clinic.id.clone(),
            doctor_id: doctor.id,
            date,
            kind,
            patient: patient.clone(),
            now,
            replaces: replaces.cloned(),
            idempotency: key.cloned(),
            plan: Box::new(move |taken: &BTreeSet<u32>| {
                let day = DayView {
                    clinic: &clinic,
                    schedule: &schedule,
                    now,
                    taken,
                };
                match choice {
                    Choice::Advance(slot) => day.plan_advance(slot),
                    Choice::WalkIn { force } => day.plan_walk_in(force),
                }
            }),
        };
        let started = Instant::now();
        let BookingOutcome { result, retries } = self.store.book(booking).await;
        self.metrics
            .record(attempt, &result, retries, started.elapsed());
        let appointment = result?;
        self.committed(&appointment).await;
        Ok(appointment)
    }

    /// Runs `book` at most once per idempotency key. Requests with the same key in
    /// this process wait for the first and replay its answer; across processes the
    /// key's primary key decides, and the loser replays the winner's answer.
    async fn idempotent<'a, F, Fut>(
        &'a self,
        clinic: &ClinicId,
        key: Option<&'a IdempotencyRecord>,
        book: F,
    ) -> Result<Booked, BookingError>
    where
        F: FnOnce(Option<&'a IdempotencyRecord>) -> Fut,
        Fut: std::future::Future<Output = Result<Appointment, BookingError>>,
    {
        let Some(key) = key else {
            return book(None).await.map(|a| Booked::Fresh(Box::new(a)));
        };
        let _turn = self
            .key_locks
            .wait_turn(&key.key_hash)
            .await
            .ok_or(BookingError::IdempotencyInFlight)?;
        if let Some(stored) = self
            .store
            .idempotent_response(clinic, &key.key_hash)
            .await?
        {
            return replay(stored, key);
        }
        match book(Some(key)).await {
            Err(BookingError::Store(StoreError::IdempotencyKeyUsed)) => {
                let stored = self
                    .store
                    .idempotent_response(clinic, &key.key_hash)
                    .await?
                    .ok_or(BookingError::IdempotencyInFlight)?;
                replay(stored, key)
            }
            other => other.map(|a| Booked::Fresh(Box::new(a))),
        }
    }

    /// Drops idempotency keys older than `keep` (they are kept at least 24 hours).
    pub async fn forget_idempotency_keys(
        &self,
        keep: chrono::Duration,
    ) -> Result<u64, BookingError> {
        Ok(self
            .store
            .forget_idempotency_keys(self.now() - keep)
            .await?)
    }
}

fn replay(stored: StoredResponse, key: &IdempotencyRecord) -> Result<Booked, BookingError> {
    if stored.request_hash == key.request_hash {
        Ok(Booked::Replayed(stored))
    } else {
        Err(BookingError::IdempotencyKeyReused)
    }
}
