//! The clinic's rules as pure types and functions: identifiers, clinics and their
//! booking policy, which clinics are known and in which zone, doctors' schedules and
//! slot arithmetic, tokens, statuses, what a booking's planner decides; and every type
//! more than one layer uses, so that no two of them import each other: duplicates and
//! incidents, the events notifications are sent for, the audit's counts, rollup rows,
//! watched documents, API key roles, the errors every layer names.
//! Nothing here does I/O or reads a clock: "now" is always a parameter.

pub mod appointment;
pub mod clinic;
pub mod config;
pub mod counts;
pub mod entity;
pub mod event;
pub mod ids;
pub mod incident;
pub mod known;
pub mod lifecycle;
pub mod plan;
pub mod role;
pub mod rollup;
pub mod schedule;
pub mod staff;
pub mod status;
pub mod text;
pub mod token;
pub mod watched;

pub use appointment::{Appointment, Kind, Patient};
pub use clinic::{BookingPolicy, Clinic, ReserveRatio};
pub use config::ConfigError;
pub use counts::Counts;
pub use entity::Entity;
pub use event::Event;
pub use ids::{AppointmentId, ClinicId, DoctorId};
pub use incident::{
    Changes, Duplicate, DuplicateKind, FoundBy, Group, Incident, IncidentState, Keys, MemberRef,
    OutboxEntry, Reach, Touched,
};
pub use known::{KnownClinic, KnownClinics, SourceZones, WatchedClinic};
pub use plan::{PlannedSlot, Refusal};
pub use role::Role;
pub use rollup::{RollupKey, Tally};
pub use schedule::{DaySchedule, Doctor, Session, SlotIndex, WeeklyAvailability};
pub use staff::{Email, Staff, StaffAction, StaffRole, StaffUser};
pub use status::Status;
pub use token::Token;
pub use watched::{EventOrder, WatchedAppointment};

/// A value from outside that is not acceptable, naming the field it came from so the
/// caller can be told exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
