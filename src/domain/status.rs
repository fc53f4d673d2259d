//! Appointment statuses, the one definition of "occupying", and the allowed moves.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Pending,
    Confirmed,
    Skipped,
    InConsultation,
    Completed,
    Cancelled,
    #[serde(rename = "No-show")]
    NoShow,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Confirmed,
        Status::Skipped,
        Status::InConsultation,
        Status::Completed,
        Status::Cancelled,
        Status::NoShow,
    ];

    /// An occupying appointment holds its slot and token. This is the single
    /// definition; the partial unique indexes in `migrations/` spell the same set as
    /// `status NOT IN ('Cancelled', 'No-show')`, and a store test checks they agree.
    pub fn is_occupying(self) -> bool {
        !matches!(self, Status::Cancelled | Status::NoShow)
    }

    /// Moves a clinic's day can make. Nothing returns to an occupying status from
    /// Cancelled or No-show: the slot may already be someone else's, so such a
    /// patient is booked again instead.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        match self {
            Pending => matches!(
                next,
                Confirmed | Skipped | InConsultation | Cancelled | NoShow
            ),
            Confirmed => matches!(next, Skipped | InConsultation | Cancelled | NoShow),
            Skipped => matches!(next, Confirmed | InConsultation | Cancelled | NoShow),
            InConsultation => matches!(next, Completed),
            Completed | Cancelled | NoShow => false,
        }
    }

    /// Whether a status written by another app holds its slot: a status slotguard
    /// knows is judged by [`Status::is_occupying`]; one it does not know is taken to
    /// occupy, since a watchdog should rather raise a false alarm than miss a
    /// double booking.
    pub fn occupies(raw: &str) -> bool {
        Status::parse("status", raw).map_or(true, Status::is_occupying)
    }

    /// How far along the day a status written by another app is: 0 waiting
    /// (`Pending`, or a status slotguard does not know), 1 called (`Confirmed`,
    /// `Skipped`), 2 `InConsultation`, 3 done (`Completed`, `Cancelled`, `No-show`).
    /// When two versions of a document carry the same time, the later stage is
    /// taken as the newer: an appointment does not go back.
    pub fn stage(raw: &str) -> u8 {
        match Status::parse("status", raw) {
            Ok(Status::Pending) | Err(_) => 0,
            Ok(Status::Confirmed | Status::Skipped) => 1,
            Ok(Status::InConsultation) => 2,
            Ok(Status::Completed | Status::Cancelled | Status::NoShow) => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::Confirmed => "Confirmed",
            Status::Skipped => "Skipped",
            Status::InConsultation => "InConsultation",
            Status::Completed => "Completed",
            Status::Cancelled => "Cancelled",
            Status::NoShow => "No-show",
        }
    }

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "must be one of Pending, Confirmed, Skipped, InConsultation, Completed, Cancelled, No-show",
                )
            })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_and_no_show_are_the_only_statuses_that_free_a_slot() {
        let free: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| !s.is_occupying())
            .collect();
        assert_eq!(free, [Status::Cancelled, Status::NoShow]);
    }

    #[test]
    fn no_move_makes_a_freed_appointment_occupy_again() {
        for from in Status::ALL.into_iter().filter(|s| !s.is_occupying()) {
            for to in Status::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn an_unknown_foreign_status_is_taken_to_occupy() {
        assert!(Status::occupies("Pending"));
        assert!(!Status::occupies("Cancelled"));
        assert!(!Status::occupies("No-show"));
        assert!(Status::occupies("Rescheduled?"));
    }

    #[test]
    fn statuses_parse_from_their_spec_spelling() {
        for s in Status::ALL {
            assert_eq!(Status::parse("status", s.as_str()).unwrap(), s);
        }
        assert!(Status::parse("status", "NoShow").is_err());
    }
}
