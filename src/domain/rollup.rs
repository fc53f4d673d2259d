//! Booking attempts counted: one row of the booking rollups, by clinic, local day and
//! hour, doctor, kind and outcome, and its counts. The metrics add them up in memory,
//! the store adds them to `booking_rollups`.

use chrono::NaiveDate;

use super::{ClinicId, DoctorId, Kind};

/// One row of the rollups. The fields are in the table's primary-key order, so the
/// derived order is the order rows are written in (see `MetricsStore::add_rollups`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RollupKey {
    pub clinic_id: ClinicId,
    /// The clinic's local date of the attempt (not the appointment's date).
    pub day: NaiveDate,
    /// The clinic's local hour of the attempt, 0–23.
    pub hour: u8,
    pub doctor_id: DoctorId,
    pub kind: Kind,
    /// See [`crate::metrics::outcome_of`].
    pub outcome: &'static str,
}

/// Counts of one rollup row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    /// Transactions the store ran again for these attempts.
    pub retries: u64,
    /// Time in the store, summed, in µs.
    pub latency_us: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.count += other.count;
        self.retries += other.retries;
        self.latency_us += other.latency_us;
    }
}
