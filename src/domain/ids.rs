//! Identifiers. Clinic and doctor ids are chosen by clients (Kloqo uses Firestore
//! document ids); appointment ids are UUIDs slotguard generates.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::FieldError;

/// Longest client-chosen identifier; Firestore ids are 20 characters.
const MAX_ID_CHARS: usize = 64;

macro_rules! client_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, " id: 1–64 ASCII letters, digits, `-` or `_`, so it is safe in URLs, logs and file names.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
                parse_client_id(field, raw).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

client_id!(ClinicId, "clinic");
client_id!(DoctorId, "doctor");

fn parse_client_id(field: &str, raw: &str) -> Result<String, FieldError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_ID_CHARS
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_ID_CHARS} characters of letters, digits, '-' or '_'"),
        ))
    }
}

/// An appointment id: a random UUID, generated here, never chosen by a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppointmentId(String);

impl AppointmentId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        uuid::Uuid::parse_str(raw)
            .map(|id| Self(id.to_string()))
            .map_err(|_| FieldError::new(field, "must be an appointment id (a UUID)"))
    }

    /// For ids read back from the store, which only ever holds generated ones.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppointmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_accept_firestore_ids_and_refuse_path_tricks() {
        assert!(ClinicId::parse("id", "demo-clinic").is_ok());
        assert!(DoctorId::parse("id", "uE8bFh3kXq9Zt2Lm0PaR").is_ok());
        for bad in [
            "",
            "../etc",
            "a b",
            "x'; DROP TABLE clinics;--",
            &"a".repeat(65),
        ] {
            assert!(ClinicId::parse("id", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn appointment_ids_must_be_uuids() {
        let id = AppointmentId::generate();
        assert_eq!(AppointmentId::parse("id", id.as_str()).unwrap(), id);
        assert!(AppointmentId::parse("id", "42").is_err());
    }
}
