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

/// Longest doctor name a document may be keyed by.
const MAX_NAME_CHARS: usize = 128;

impl DoctorId {
    /// What starts a doctor key made from a name: `:` is never in a client's id, so a
    /// name key cannot be mistaken for one.
    pub const BY_NAME: &'static str = "name:";

    /// The key of a doctor another app names only by `doctor` (Kloqo's documents
    /// without `doctorId`; Kloqo's own duplicate checks key on the name): `name:`
    /// and the name as written, spaces at its ends trimmed. Within one clinic, one
    /// name is one doctor.
    pub fn by_name(field: &str, name: &str) -> Result<Self, FieldError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(FieldError::new(
                field,
                format!(
                    "must be the doctor's name, 1 to {MAX_NAME_CHARS} characters with no control characters"
                ),
            ));
        }
        Ok(Self(format!("{}{name}", Self::BY_NAME)))
    }

    /// A doctor id or a name key, as the store holds them.
    pub fn parse_stored(field: &str, raw: &str) -> Result<Self, FieldError> {
        match raw.strip_prefix(Self::BY_NAME) {
            Some(name) => Self::by_name(field, name),
            None => Self::parse(field, raw),
        }
    }

    /// The doctor's name when this key was made from one.
    pub fn name(&self) -> Option<&str> {
        self.0.strip_prefix(Self::BY_NAME)
    }
}

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
    fn a_doctor_named_only_by_name_gets_a_key_no_client_id_can_be() {
        let key = DoctorId::by_name("doctor", "  Dr. Asha Menon ").unwrap();
        assert_eq!(key.as_str(), "name:Dr. Asha Menon");
        assert_eq!(key.name(), Some("Dr. Asha Menon"));
        assert!(
            DoctorId::parse("doctorId", key.as_str()).is_err(),
            "never a client id"
        );
        assert_eq!(
            DoctorId::parse_stored("doctor_id", key.as_str()).unwrap(),
            key
        );
        assert_eq!(DoctorId::parse("id", "dr-asha").unwrap().name(), None);
        for bad in ["", "   ", "a\u{0}b", &"x".repeat(129)] {
            assert!(
                DoctorId::by_name("doctor", bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn appointment_ids_must_be_uuids() {
        let id = AppointmentId::generate();
        assert_eq!(AppointmentId::parse("id", id.as_str()).unwrap(), id);
        assert!(AppointmentId::parse("id", "42").is_err());
    }
}
