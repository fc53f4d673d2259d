//! What an API key is for: its role decides which actions it may take
//! (`auth::Principal::may`), and is stored with the key.

use serde::Serialize;

/// The role of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Clinic,
    Booking,
    /// Forwards an external app's documents; scoped to sources.
    Watch,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinic => "clinic",
            Role::Booking => "booking",
            Role::Watch => "watch",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Role::Admin, Role::Clinic, Role::Booking, Role::Watch]
            .into_iter()
            .find(|r| r.as_str() == raw)
    }
}
