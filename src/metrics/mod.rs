//! Metrics: what booking attempts came to, counted in memory where they happen and
//! added to time-bucketed rollups in the database every few seconds ([`rollups`]),
//! so the counts survive restarts and add up across servers sharing a database.
//! `GET /api/v1/stats` turns them into the clinic's four numbers ([`stats`], pure);
//! `GET /metrics` shows them with the detection and alerting gauges in Prometheus'
//! text format ([`scrape`], written by [`exposition`]).

use crate::domain::{Appointment, Refusal};
use crate::store::StoreError;

pub mod exposition;
pub mod latency;
pub mod rollups;
pub mod scrape;
pub mod stats;

pub use rollups::{Attempt, BookingMetrics};

/// The outcome of an attempt that made an appointment.
pub const BOOKED: &str = "booked";
/// The outcome of an attempt that failed on slotguard's side (a database error, a
/// failed group commit): the API's `internal` or `unavailable`.
pub const FAILED: &str = "failed";

/// What a booking attempt came to, as the rollups count it: `booked`; a refusal by
/// its API error code (`slot_taken`, `no_walk_in_slot`, `slot_too_soon`, …);
/// `appointment_changed` (the API's code when the appointment being rescheduled was
/// cancelled meanwhile); `replayed` (another server stored the same idempotency key
/// first, and its answer is replayed); or `failed`.
pub fn outcome_of(result: &Result<Appointment, StoreError>) -> &'static str {
    match result {
        Ok(_) => BOOKED,
        Err(StoreError::Refused(refusal)) => refusal.code(),
        Err(StoreError::Changed(_)) => "appointment_changed",
        Err(StoreError::IdempotencyKeyUsed) => "replayed",
        Err(_) => FAILED,
    }
}

/// Whether an outcome is a conflict: another patient got there first
/// ([`Refusal::CONFLICTS`]).
pub fn is_conflict(outcome: &str) -> bool {
    Refusal::CONFLICTS.iter().any(|r| r.code() == outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_the_refusals_of_contention_not_of_policy() {
        for conflict in [
            "slot_taken",
            "token_taken",
            "no_slot_available",
            "no_walk_in_slot",
        ] {
            assert!(is_conflict(conflict), "{conflict}");
        }
        for other in [
            BOOKED,
            FAILED,
            "slot_reserved_walk_in",
            "slot_too_soon",
            "replayed",
        ] {
            assert!(!is_conflict(other), "{other}");
        }
    }

    #[test]
    fn a_refusal_is_counted_under_its_api_code() {
        let refused = Err(StoreError::Refused(Refusal::NoWalkInSlot));
        assert_eq!(outcome_of(&refused), "no_walk_in_slot");
        let failed = Err(StoreError::GroupCommitFailed);
        assert_eq!(outcome_of(&failed), FAILED);
    }
}
