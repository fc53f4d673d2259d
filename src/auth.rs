//! API keys, roles and clinic scope. A key is `sg_<id>_<secret>`; only a SHA-256 of
//! the secret is stored. Which role may do what, and for which clinics, is decided in
//! one place: [`Principal::may`].

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::domain::{ClinicId, Role};
use crate::store::{ApiKeyRecord, Store, StoreError};

/// Someone holding a valid, unrevoked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    /// For `clinic` keys exactly one; for `booking` keys empty means every clinic.
    pub clinics: Vec<ClinicId>,
    /// For `watch` keys: the clinics whose documents they may forward (empty: all).
    pub watch_clinics: Vec<ClinicId>,
}

/// What a request wants to do, and to which clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateClinic,
    EditClinic,
    ReadClinic,
    EditDoctors,
    /// Availability, advance booking, validation, cancel, reschedule, reading one
    /// appointment: what a patient-facing app needs.
    Book,
    /// Walk-ins (forced or not), status changes, listing a clinic's appointments,
    /// its incidents and its stats.
    RunClinicDay,
    /// `GET /metrics`: every clinic's numbers at once, so admin keys only.
    ReadMetrics,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("This key's role ({0}) may not do that.")]
    Role(&'static str),
    #[error("This key is not valid for {0}.")]
    OtherClinic(String),
}

impl Principal {
    pub fn may(&self, action: Action, clinic: Option<&ClinicId>) -> Result<(), Denied> {
        let role_allows = match self.role {
            Role::Admin => true,
            Role::Clinic => !matches!(action, Action::CreateClinic | Action::ReadMetrics),
            Role::Booking => matches!(action, Action::ReadClinic | Action::Book),
            Role::Watch => false,
        };
        if !role_allows {
            return Err(Denied::Role(self.role.as_str()));
        }
        match clinic {
            Some(c)
                if self.role != Role::Admin
                    && !self.clinics.is_empty()
                    && !self.clinics.contains(c) =>
            {
                Err(Denied::OtherClinic(format!("clinic {c}")))
            }
            None if self.role == Role::Clinic => Err(Denied::Role(self.role.as_str())),
            _ => Ok(()),
        }
    }
}

impl Principal {
    /// Whether the key may forward documents of `source` (watch keys list their
    /// sources where other keys list clinics; none listed means every source).
    pub fn may_watch(&self, source: &str) -> Result<(), Denied> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Watch
                if self.clinics.is_empty() || self.clinics.iter().any(|s| s.as_str() == source) =>
            {
                Ok(())
            }
            Role::Watch => Err(Denied::OtherClinic(format!("source {source}"))),
            other => Err(Denied::Role(other.as_str())),
        }
    }

    /// Whether the key may forward a document of `clinic` (a watch key held to
    /// clinics may not open incidents elsewhere).
    pub fn may_watch_clinic(&self, clinic: &ClinicId) -> Result<(), Denied> {
        if self.role == Role::Watch
            && !self.watch_clinics.is_empty()
            && !self.watch_clinics.contains(clinic)
        {
            return Err(Denied::OtherClinic(format!("clinic {clinic}")));
        }
        Ok(())
    }
}

/// A freshly made key: the text to hand out once, and the record to store.
pub struct NewKey {
    pub text: String,
    pub record: ApiKeyRecord,
}

pub fn new_key(role: Role, clinics: Vec<ClinicId>, now: DateTime<Utc>) -> NewKey {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    NewKey {
        text: format!("sg_{id}_{secret}"),
        record: ApiKeyRecord {
            id,
            role,
            clinics,
            watch_clinics: Vec::new(),
            secret_hash: sha256_hex(secret.as_bytes()),
            created_at: now,
            revoked_at: None,
        },
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Constant-time comparison, so response timing says nothing about a secret.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The principal a bearer token stands for, or `None` for an unknown, malformed or
/// revoked key.
pub async fn authenticate(store: &dyn Store, token: &str) -> Result<Option<Principal>, StoreError> {
    let Some((id, secret)) = token
        .strip_prefix("sg_")
        .and_then(|rest| rest.split_once('_'))
    else {
        return Ok(None);
    };
    let Some(record) = store.api_key(id).await? else {
        return Ok(None);
    };
    if record.revoked_at.is_some()
        || !same_secret(&record.secret_hash, &sha256_hex(secret.as_bytes()))
    {
        return Ok(None);
    }
    Ok(Some(Principal {
        key_id: record.id,
        role: record.role,
        clinics: record.clinics,
        watch_clinics: record.watch_clinics,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, clinics: &[&str]) -> Principal {
        Principal {
            key_id: "k".into(),
            role,
            watch_clinics: Vec::new(),
            clinics: clinics
                .iter()
                .map(|c| ClinicId::parse("c", c).unwrap())
                .collect(),
        }
    }

    #[test]
    fn clinic_staff_run_their_own_clinic_only() {
        let staff = principal(Role::Clinic, &["a"]);
        let a = ClinicId::parse("c", "a").unwrap();
        let b = ClinicId::parse("c", "b").unwrap();
        assert!(staff.may(Action::RunClinicDay, Some(&a)).is_ok());
        assert!(staff.may(Action::RunClinicDay, Some(&b)).is_err());
        assert!(staff.may(Action::CreateClinic, None).is_err());
        assert!(staff.may(Action::ReadMetrics, Some(&a)).is_err());
    }

    #[test]
    fn patient_apps_book_but_do_not_run_the_clinic_day() {
        let app = principal(Role::Booking, &[]);
        let a = ClinicId::parse("c", "a").unwrap();
        assert!(app.may(Action::Book, Some(&a)).is_ok());
        assert!(app.may(Action::RunClinicDay, Some(&a)).is_err());
        assert!(app.may(Action::EditDoctors, Some(&a)).is_err());
        let scoped = principal(Role::Booking, &["b"]);
        assert!(scoped.may(Action::Book, Some(&a)).is_err());
    }

    #[test]
    fn a_new_key_is_only_stored_as_a_hash() {
        let key = new_key(Role::Admin, vec![], Utc::now());
        assert!(key.text.starts_with(&format!("sg_{}_", key.record.id)));
        assert!(!key.text.contains(&key.record.secret_hash));
        assert_eq!(key.record.secret_hash.len(), 64);
    }
}
