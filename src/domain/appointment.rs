//! An appointment as the API returns it and the store keeps it.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{AppointmentId, ClinicId, DoctorId, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Advance,
    WalkIn,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Advance => "advance",
            Kind::WalkIn => "walk_in",
        }
    }

    pub fn from_stored(raw: &str) -> Option<Self> {
        match raw {
            "advance" => Some(Kind::Advance),
            "walk_in" => Some(Kind::WalkIn),
            _ => None,
        }
    }
}

/// Who the appointment is for, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    pub name: String,
    pub phone: Option<String>,
    pub booked_via: String,
}

/// Deserialize reads the API's own answers (the load tester's read-back); input from
/// people is parsed field by field at the edge instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    pub id: AppointmentId,
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    pub date: NaiveDate,
    pub session_index: u32,
    pub slot_index: u32,
    /// Local start, `HH:MM`.
    pub time: String,
    pub kind: Kind,
    pub numeric_token: u32,
    pub token_number: String,
    pub status: Status,
    pub patient_name: String,
    pub patient_phone: Option<String>,
    pub booked_via: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub previous_appointment_id: Option<AppointmentId>,
}
