//! `/admin` (admins only): staff accounts and API keys. Create an account (its
//! one-time password is shown once), disable one, give one a new password; create an
//! API key (shown once) or revoke one. The same rules as `slotguard users` and
//! `slotguard keys` (`web::accounts`, `auth::new_key`).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{clinic_options, ClinicOption};
use crate::auth::new_key;
use crate::domain::{ClinicId, Email, Role, StaffAction, StaffRole};
use crate::web::accounts::{self, AccountError};
use crate::web::page::{render, Chrome, Clinics, Form, PageError, PathId, When};
use crate::web::session::{StaffForm, Visitor};
use crate::web::WebState;

#[derive(Template)]
#[template(path = "pages/admin.html")]
struct AdminPage {
    chrome: Chrome,
    clinics: Vec<ClinicOption>,
    users: Vec<UserRow>,
    keys: Vec<KeyRow>,
    /// A secret to show once: (what it is, the secret).
    secret: Option<(String, String)>,
    problem: Option<String>,
}

struct UserRow {
    id: String,
    email: String,
    role: String,
    clinics: String,
    created: When,
    disabled: Option<When>,
    is_me: bool,
}

struct KeyRow {
    id: String,
    role: &'static str,
    clinics: String,
    created: When,
    revoked: Option<When>,
}

fn admin_only(visitor: &Visitor) -> Result<(), PageError> {
    if visitor.staff.may(StaffAction::Administer, None) {
        Ok(())
    } else {
        Err(PageError::forbidden())
    }
}

fn list(clinics: &[ClinicId]) -> String {
    if clinics.is_empty() {
        "every clinic".into()
    } else {
        clinics
            .iter()
            .map(ClinicId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn admin_page(
    state: &WebState,
    visitor: &Visitor,
    secret: Option<(String, String)>,
    problem: Option<String>,
) -> Result<AdminPage, PageError> {
    let store = state.store();
    let clinics = Clinics::load(&state.auditor).await?;
    let tz = crate::domain::Clinic::DEFAULT_TIMEZONE;
    let users = store
        .staff_users()
        .await?
        .into_iter()
        .map(|u| UserRow {
            is_me: u.id == visitor.staff.user_id,
            id: u.id,
            email: u.email.to_string(),
            role: u.role.to_string(),
            clinics: if u.role == StaffRole::Admin {
                "every clinic".into()
            } else {
                list(&u.clinics)
            },
            created: When::new(u.created_at, tz),
            disabled: u.disabled_at.map(|t| When::new(t, tz)),
        })
        .collect();
    let keys = store
        .api_keys()
        .await?
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            role: k.role.as_str(),
            clinics: if k.role == Role::Watch {
                let sources = if k.clinics.is_empty() {
                    "every source".to_owned()
                } else {
                    k.clinics
                        .iter()
                        .map(ClinicId::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("{sources}; {}", list(&k.watch_clinics))
            } else {
                list(&k.clinics)
            },
            created: When::new(k.created_at, tz),
            revoked: k.revoked_at.map(|t| When::new(t, tz)),
        })
        .collect();
    Ok(AdminPage {
        chrome: visitor.chrome("admin", "Users and API keys"),
        clinics: clinic_options(store, &clinics, &visitor.staff, None).await?,
        users,
        keys,
        secret,
        problem,
    })
}

pub async fn page(State(state): State<WebState>, visitor: Visitor) -> Result<Response, PageError> {
    admin_only(&visitor)?;
    Ok(render(&admin_page(&state, &visitor, None, None).await?)?.into_response())
}

/// Shows the page again with a secret to copy now, or a problem to fix; the answer
/// to a POST that made a secret is the page itself (the secret must not travel in a URL).
async fn answer(
    state: &WebState,
    visitor: &Visitor,
    status: StatusCode,
    secret: Option<(String, String)>,
    problem: Option<String>,
) -> Result<Response, PageError> {
    let page = admin_page(state, visitor, secret, problem).await?;
    Ok((status, render(&page)?).into_response())
}

fn clinics_of(form: &Form) -> Result<Vec<ClinicId>, PageError> {
    Ok(form
        .all("clinic")
        .into_iter()
        .map(|c| ClinicId::parse("clinic", c))
        .collect::<Result<Vec<_>, _>>()?)
}

pub async fn create_user(
    State(state): State<WebState>,
    form: StaffForm,
) -> Result<Response, PageError> {
    admin_only(&form.visitor)?;
    let f = &form.form;
    let email = Email::parse("email", f.require("email")?)?;
    let role = StaffRole::parse("role", f.require("role")?)?;
    let clinics = clinics_of(f)?;
    let password = crate::web::passwords::one_time();
    match accounts::create(
        state.store(),
        email.clone(),
        role,
        clinics,
        &password,
        state.bookings.now(),
    )
    .await
    {
        Ok(_) => {
            answer(
                &state,
                &form.visitor,
                StatusCode::OK,
                Some((format!("One-time password of {email}"), password)),
                None,
            )
            .await
        }
        Err(AccountError::Store(e)) => Err(e.into()),
        Err(e) => {
            answer(
                &state,
                &form.visitor,
                StatusCode::BAD_REQUEST,
                None,
                Some(e.to_string()),
            )
            .await
        }
    }
}

async fn user_email(state: &WebState, id: &str) -> Result<Email, PageError> {
    Ok(state
        .store()
        .staff_user(id)
        .await?
        .ok_or_else(|| PageError::not_found("user"))?
        .email)
}

pub async fn disable_user(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    admin_only(&form.visitor)?;
    if id == form.visitor.staff.user_id {
        return Err(PageError::bad_request(
            "You cannot disable your own account; ask another admin.",
        ));
    }
    let email = user_email(&state, &id).await?;
    accounts::disable(state.store(), &email, state.bookings.now())
        .await
        .map_err(|e| match e {
            AccountError::Store(s) => PageError::from(s),
            other => PageError::bad_request(other.to_string()),
        })?;
    Ok(Redirect::to("/admin").into_response())
}

pub async fn reset_password(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    admin_only(&form.visitor)?;
    let email = user_email(&state, &id).await?;
    let password = crate::web::passwords::one_time();
    accounts::reset_password(state.store(), &email, &password, state.bookings.now())
        .await
        .map_err(|e| match e {
            AccountError::Store(s) => PageError::from(s),
            other => PageError::bad_request(other.to_string()),
        })?;
    answer(
        &state,
        &form.visitor,
        StatusCode::OK,
        Some((format!("New one-time password of {email}"), password)),
        None,
    )
    .await
}

pub async fn create_key(
    State(state): State<WebState>,
    form: StaffForm,
) -> Result<Response, PageError> {
    admin_only(&form.visitor)?;
    let f = &form.form;
    let role = Role::parse(f.require("role")?)
        .ok_or_else(|| PageError::bad_request("role must be admin, clinic, booking or watch."))?;
    let clinics = clinics_of(f)?;
    let problem = match (role, clinics.len()) {
        (Role::Clinic, 1) | (Role::Booking, _) | (Role::Watch, _) | (Role::Admin, 0) => None,
        (Role::Clinic, _) => Some("A clinic key needs exactly one clinic."),
        (Role::Admin, _) => Some("An admin key is for every clinic; choose no clinic."),
    };
    if let Some(problem) = problem {
        return answer(
            &state,
            &form.visitor,
            StatusCode::BAD_REQUEST,
            None,
            Some(problem.into()),
        )
        .await;
    }
    // A watch key made here forwards every source, of the clinics chosen (or all);
    // `slotguard keys create --role watch --source NAME` holds one to sources.
    let key = if role == Role::Watch {
        let mut key = new_key(role, Vec::new(), state.bookings.now());
        key.record.watch_clinics = clinics;
        key
    } else {
        new_key(role, clinics, state.bookings.now())
    };
    state.store().insert_api_key(&key.record).await?;
    answer(
        &state,
        &form.visitor,
        StatusCode::OK,
        Some((
            format!("New {} API key {}", role.as_str(), key.record.id),
            key.text,
        )),
        None,
    )
    .await
}

pub async fn revoke_key(
    State(state): State<WebState>,
    PathId(id): PathId,
    form: StaffForm,
) -> Result<Response, PageError> {
    admin_only(&form.visitor)?;
    if !state
        .store()
        .revoke_api_key(&id, state.bookings.now())
        .await?
    {
        return Err(PageError::not_found("active API key"));
    }
    Ok(Redirect::to("/admin").into_response())
}
