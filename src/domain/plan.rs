//! What a booking's planner decides inside the booking's transaction, once the day's
//! occupied slots are known: the slot to take, or why none may be taken.

use chrono::NaiveDate;

use super::SlotIndex;

/// Advance bookings may be made at most this many days ahead.
pub const BOOKING_HORIZON_DAYS: i64 = 366;

/// Why a booking cannot be made. Each maps to one status and code in `http::error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("This slot is already booked. Please select another time.")]
    SlotTaken,
    #[error("This token is already held by another appointment.")]
    TokenTaken,
    #[error("The doctor has no sessions on {0}.")]
    DoctorUnavailable(NaiveDate),
    #[error("Slot {0} does not exist in the doctor's schedule for that day.")]
    SlotOutOfRange(u32),
    #[error("{0} is in the past in the clinic's time zone.")]
    DateInPast(NaiveDate),
    #[error("Bookings open at most {BOOKING_HORIZON_DAYS} days ahead.")]
    DateTooFar,
    #[error("Slot {0} has already started.")]
    SlotStarted(u32),
    #[error("Slot {slot} starts in less than {min_lead_minutes} minutes; advance bookings need that much notice.")]
    SlotTooSoon { slot: u32, min_lead_minutes: u32 },
    #[error("Slot {0} is kept for walk-in patients.")]
    ReservedForWalkIns(u32),
    #[error("No slot can be booked in advance on that day.")]
    NoSlotAvailable,
    #[error("No walk-in slot is left today.")]
    NoWalkInSlot,
}

impl Refusal {
    /// The refusal's stable name: the API's error code and the booking outcome the
    /// metrics count.
    pub const fn code(&self) -> &'static str {
        match self {
            Refusal::SlotTaken => "slot_taken",
            Refusal::TokenTaken => "token_taken",
            Refusal::DoctorUnavailable(_) => "doctor_unavailable",
            Refusal::SlotOutOfRange(_) => "slot_out_of_range",
            Refusal::DateInPast(_) => "date_in_past",
            Refusal::DateTooFar => "date_too_far",
            Refusal::SlotStarted(_) => "slot_started",
            Refusal::SlotTooSoon { .. } => "slot_too_soon",
            Refusal::ReservedForWalkIns(_) => "slot_reserved_walk_in",
            Refusal::NoSlotAvailable => "no_slot_available",
            Refusal::NoWalkInSlot => "no_walk_in_slot",
        }
    }

    /// The refusals that mean someone else got there first: the slot, its token or
    /// the day's last free slot went to another patient. These are the conflicts of
    /// the morning rush; the other refusals follow from the request and the clinic's
    /// policy alone.
    pub const CONFLICTS: [Refusal; 4] = [
        Refusal::SlotTaken,
        Refusal::TokenTaken,
        Refusal::NoSlotAvailable,
        Refusal::NoWalkInSlot,
    ];
}

/// The slot a booking will take, decided inside the booking's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedSlot {
    pub slot: SlotIndex,
    /// Local start, `HH:MM`.
    pub time: chrono::NaiveTime,
}
