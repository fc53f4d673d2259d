//! Staff accounts: created, disabled, given a new password. The one set of rules the
//! `slotguard users` command and the admin page both use.

use chrono::{DateTime, Utc};

use super::passwords;
use crate::domain::{ClinicId, Email, FieldError, StaffRole, StaffUser};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("there is already an account for {0}")]
    Taken(Email),
    #[error("there is no account for {0}")]
    Unknown(Email),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AccountError {
    fn from(e: StoreError) -> Self {
        AccountError::Store(e)
    }
}

/// A password to set: the one given (checked for length), or a generated one-time
/// password. The second value says whether it was generated (and so must be shown).
pub fn password_or_generated(given: Option<String>) -> Result<(String, bool), FieldError> {
    match given {
        Some(p) => {
            passwords::acceptable("password", &p)?;
            Ok((p, false))
        }
        None => Ok((passwords::one_time(), true)),
    }
}

/// Creates an account. Hashing is slow on purpose, so it runs off the async threads.
pub async fn create(
    store: &dyn Store,
    email: Email,
    role: StaffRole,
    clinics: Vec<ClinicId>,
    password: &str,
    now: DateTime<Utc>,
) -> Result<StaffUser, AccountError> {
    StaffUser::check_scope(role, &clinics)?;
    let user = StaffUser {
        id: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
        email: email.clone(),
        role,
        clinics,
        password_hash: hash(password).await,
        created_at: now,
        disabled_at: None,
    };
    match store.insert_staff_user(&user).await {
        Ok(()) => Ok(user),
        Err(StoreError::AlreadyExists(_)) => Err(AccountError::Taken(email)),
        Err(e) => Err(e.into()),
    }
}

async fn hash(password: &str) -> String {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .expect("hashing a password does not panic")
}

async fn find(store: &dyn Store, email: &Email) -> Result<StaffUser, AccountError> {
    store
        .staff_user_by_email(email)
        .await?
        .ok_or_else(|| AccountError::Unknown(email.clone()))
}

/// Sets a new password (enabling the account again) and ends every session of it.
pub async fn reset_password(
    store: &dyn Store,
    email: &Email,
    password: &str,
    now: DateTime<Utc>,
) -> Result<StaffUser, AccountError> {
    let mut user = find(store, email).await?;
    user.password_hash = hash(password).await;
    user.disabled_at = None;
    store.update_staff_user(&user, Some(now)).await?;
    Ok(user)
}

/// Disables an account and ends its sessions; its history (who resolved what) stays.
pub async fn disable(
    store: &dyn Store,
    email: &Email,
    now: DateTime<Utc>,
) -> Result<StaffUser, AccountError> {
    let mut user = find(store, email).await?;
    if user.disabled_at.is_none() {
        user.disabled_at = Some(now);
        store.update_staff_user(&user, Some(now)).await?;
    }
    Ok(user)
}

/// The demo's admin (`serve --demo`): created on first start, given a new one-time
/// password at every start so the printed one always works.
pub const DEMO_ADMIN: &str = "admin@demo-clinic.example";

pub async fn demo_admin(store: &dyn Store, now: DateTime<Utc>) -> Result<String, AccountError> {
    let email = Email::parse("email", DEMO_ADMIN)?;
    let password = passwords::one_time();
    match store.staff_user_by_email(&email).await? {
        Some(_) => {
            reset_password(store, &email, &password, now).await?;
        }
        None => {
            create(store, email, StaffRole::Admin, Vec::new(), &password, now).await?;
        }
    }
    Ok(password)
}
