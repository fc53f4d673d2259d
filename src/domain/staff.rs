//! Staff who use the dashboard: their roles and which clinics they see and act in.
//! Who may see or do what on a page is decided here, in one place: [`Staff::may`].

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ClinicId, FieldError};

/// What a staff account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    /// Every clinic, every action, and the users and API keys.
    Admin,
    /// The clinics named on the account: see everything there (patients' names
    /// included) and act on it.
    Clinic,
    /// Read-only: the clinics named on the account, or every clinic when none is.
    Viewer,
}

impl StaffRole {
    pub const ALL: [StaffRole; 3] = [StaffRole::Admin, StaffRole::Clinic, StaffRole::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Admin => "admin",
            StaffRole::Clinic => "clinic",
            StaffRole::Viewer => "viewer",
        }
    }

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| FieldError::new(field, "must be admin, clinic or viewer"))
    }
}

impl fmt::Display for StaffRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An email address as a login name: trimmed, lower-cased, `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_lowercase();
        let well_formed = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
            })
            && email.matches('@').count() == 1
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if well_formed {
            Ok(Self(email))
        } else {
            Err(FieldError::new(
                field,
                "must be an email address like asha@clinic.example",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A staff account as stored: only an argon2id hash of its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StaffUser {
    pub id: String,
    pub email: Email,
    pub role: StaffRole,
    pub clinics: Vec<ClinicId>,
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl StaffUser {
    /// Checks the role and clinics belong together: a clinic user names at least one
    /// clinic, an admin none (they have all).
    pub fn check_scope(role: StaffRole, clinics: &[ClinicId]) -> Result<(), FieldError> {
        match (role, clinics.is_empty()) {
            (StaffRole::Clinic, true) => Err(FieldError::new(
                "clinic",
                "a clinic user needs at least one clinic",
            )),
            (StaffRole::Admin, false) => Err(FieldError::new(
                "clinic",
                "an admin has every clinic; name none",
            )),
            _ => Ok(()),
        }
    }
}

/// What someone wants to do on a page, and to which clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffAction {
    /// Incidents, day boards, audits, reports, stats of a clinic.
    See,
    /// Patients' names on an incident or a day board.
    SeePatients,
    /// Acknowledge, resolve, re-check, silence, audit now.
    Act,
    /// Users and API keys.
    Administer,
}

/// A logged-in person, as pages see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    pub user_id: String,
    pub email: Email,
    pub role: StaffRole,
    pub clinics: Vec<ClinicId>,
}

impl Staff {
    pub fn of(user: &StaffUser) -> Self {
        Self {
            user_id: user.id.clone(),
            email: user.email.clone(),
            role: user.role,
            clinics: user.clinics.clone(),
        }
    }

    /// The clinics this person sees: `None` for every clinic.
    pub fn scope(&self) -> Option<&[ClinicId]> {
        match self.role {
            StaffRole::Admin => None,
            StaffRole::Viewer if self.clinics.is_empty() => None,
            _ => Some(&self.clinics),
        }
    }

    pub fn sees(&self, clinic: &ClinicId) -> bool {
        self.scope().is_none_or(|clinics| clinics.contains(clinic))
    }

    /// Whether this person may do `action` at `clinic` (`None`: across clinics).
    pub fn may(&self, action: StaffAction, clinic: Option<&ClinicId>) -> bool {
        let in_scope = clinic.is_none_or(|c| self.sees(c));
        match (self.role, action) {
            (StaffRole::Admin, _) => true,
            (_, StaffAction::Administer) => false,
            (StaffRole::Viewer, StaffAction::See) => in_scope,
            (StaffRole::Viewer, _) => false,
            (StaffRole::Clinic, _) => clinic.is_some() && in_scope,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == StaffRole::Admin
    }

    /// How this person is named where their actions are recorded (an incident's
    /// `acknowledgedBy`, a silence's `createdBy`).
    pub fn actor(&self) -> String {
        format!("user:{}", self.email)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staff(role: StaffRole, clinics: &[&str]) -> Staff {
        Staff {
            user_id: "u".into(),
            email: Email::parse("email", "a@b.example").unwrap(),
            role,
            clinics: clinics
                .iter()
                .map(|c| ClinicId::parse("c", c).unwrap())
                .collect(),
        }
    }

    #[test]
    fn clinic_staff_see_and_act_in_their_clinics_only() {
        let (a, b) = (
            ClinicId::parse("c", "a").unwrap(),
            ClinicId::parse("c", "b").unwrap(),
        );
        let staff = staff(StaffRole::Clinic, &["a"]);
        assert!(staff.may(StaffAction::Act, Some(&a)));
        assert!(staff.may(StaffAction::SeePatients, Some(&a)));
        assert!(!staff.may(StaffAction::See, Some(&b)));
        assert!(!staff.may(StaffAction::Act, Some(&b)));
        assert!(!staff.may(StaffAction::Administer, None));
        assert_eq!(staff.scope(), Some(&[a][..]));
    }

    #[test]
    fn viewers_read_without_patients_names_and_never_act() {
        let a = ClinicId::parse("c", "a").unwrap();
        let everywhere = staff(StaffRole::Viewer, &[]);
        assert!(everywhere.may(StaffAction::See, Some(&a)));
        assert!(!everywhere.may(StaffAction::SeePatients, Some(&a)));
        assert!(!everywhere.may(StaffAction::Act, Some(&a)));
        assert_eq!(everywhere.scope(), None);
        let scoped = staff(StaffRole::Viewer, &["b"]);
        assert!(!scoped.may(StaffAction::See, Some(&a)));
    }

    #[test]
    fn emails_are_compared_lower_cased_and_must_look_like_one() {
        assert_eq!(
            Email::parse("e", " Asha@Clinic.Example ").unwrap().as_str(),
            "asha@clinic.example"
        );
        for bad in [
            "",
            "asha",
            "@clinic.example",
            "a@b",
            "a b@c.example",
            "a@@c.example",
        ] {
            assert!(Email::parse("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_clinic_user_names_a_clinic_and_an_admin_none() {
        let a = [ClinicId::parse("c", "a").unwrap()];
        assert!(StaffUser::check_scope(StaffRole::Clinic, &[]).is_err());
        assert!(StaffUser::check_scope(StaffRole::Clinic, &a).is_ok());
        assert!(StaffUser::check_scope(StaffRole::Admin, &a).is_err());
        assert!(StaffUser::check_scope(StaffRole::Viewer, &[]).is_ok());
    }
}
