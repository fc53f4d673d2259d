//! The kinds of record a lookup or a write can miss or collide with, so errors name
//! them as values and each boundary maps every one of them explicitly.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Clinic,
    Doctor,
    Appointment,
    Incident,
    /// A watched document of an external app.
    Document,
    Notification,
    Silence,
    /// A staff user of the dashboard.
    User,
    /// A row whose unique index names none of the above.
    Record,
}

impl Entity {
    /// The word a person reads ("No such clinic.").
    pub fn name(self) -> &'static str {
        match self {
            Entity::Clinic => "clinic",
            Entity::Doctor => "doctor",
            Entity::Appointment => "appointment",
            Entity::Incident => "incident",
            Entity::Document => "document",
            Entity::Notification => "notification",
            Entity::Silence => "silence",
            Entity::User => "user",
            Entity::Record => "record",
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
