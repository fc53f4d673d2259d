//! Turning requests into checked values: JSON bodies (400 when not JSON, 422 naming
//! the field when a value has the wrong type), bearer keys, query strings.

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::auth::{authenticate, Principal};
use crate::domain::FieldError;

/// A JSON body: the typed value and the parsed document (for idempotency hashes).
pub struct JsonBody<T> {
    pub value: T,
    pub document: serde_json::Value,
}

/// Any JSON document as the body (a batch may be a bare array).
pub struct JsonDocument(pub serde_json::Value);

/// Reads the body as JSON: 413 past the size limit, 400 when it is not JSON.
async fn read_document<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<serde_json::Value, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("The body is larger than {} bytes.", super::BODY_LIMIT_BYTES),
            )
        } else {
            ApiError::malformed(format!("The body could not be read: {rejection}."))
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::malformed(format!("The body is not valid JSON: {e}.")))
}

impl<S: Send + Sync> FromRequest<S> for JsonDocument {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        read_document(req, state).await.map(JsonDocument)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let document = read_document(req, state).await?;
        if !document.is_object() {
            return Err(ApiError::malformed("The body must be a JSON object."));
        }
        let value = serde_path_to_error::deserialize(&document).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            match unknown_field(&message) {
                Some((name, known)) => {
                    // serde_path_to_error's path already ends with the unknown key.
                    let field = match path.as_str() {
                        "." | "" => name.clone(),
                        _ => path,
                    };
                    FieldError::new(field, not_a_field(&name, &known))
                }
                None => FieldError::new(path, type_message(&message)),
            }
        })?;
        Ok(Self { value, document })
    }
}

/// The unknown field and the known ones, from serde's "unknown field `slot`, expected
/// one of `clinicId`, `doctorId`, …" (or "expected `note`").
fn unknown_field(serde_message: &str) -> Option<(String, Vec<String>)> {
    let rest = serde_message.strip_prefix("unknown field `")?;
    let (name, expected) = rest.split_once('`')?;
    let known = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((name.to_owned(), known))
}

/// Why an unknown field is refused, and the known field meant when one is close:
/// `slot`, `slot_index` and `SlotIndex` all mean `slotIndex`.
fn not_a_field(name: &str, known: &[String]) -> String {
    let plain = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let wanted = plain(name);
    let close = known.iter().find(|k| plain(k) == wanted).or_else(|| {
        known.iter().find(|k| {
            let k = plain(k);
            (wanted.len() >= 3 && k.starts_with(&wanted)) || edit_distance(&k, &wanted) <= 2
        })
    });
    match close {
        Some(meant) => format!("is not a field of this body; did you mean {meant}?"),
        None => format!(
            "is not a field of this body (its fields: {})",
            known.join(", ")
        ),
    }
}

/// Levenshtein distance, for the few short names of a body.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// serde's "invalid type: string \"x\", expected u32" without serde's jargon.
fn type_message(serde_message: &str) -> String {
    let Some((found, expected)) = serde_message.split_once(", expected ") else {
        return serde_message.to_owned();
    };
    let expected = match expected {
        "i64" | "u32" | "u64" | "i32" => "a whole number",
        "f64" => "a number",
        other => other,
    };
    let found = found
        .trim_start_matches("invalid type: ")
        .trim_start_matches("invalid value: ");
    format!("has the wrong type ({found}); expected {expected}")
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// A client address that failed to authenticate too often is refused (429) before
    /// any lookup; a key over its request rate too.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let limits = &state.limits;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(wait) = address.and_then(|ip| limits.may_try(ip).err()) {
            if !token.is_some_and(|t| limits.recently_good(t)) {
                return Err(ApiError::rate_limited(
                    "Too many requests with a missing or wrong key from this address; wait and retry with a valid key.",
                    wait,
                ));
            }
        }
        let principal = match token {
            Some(token) => authenticate(state.bookings.store(), token).await?,
            None => None,
        };
        let Some(principal) = principal else {
            if let Some(ip) = address {
                limits.failed(ip);
            }
            return Err(ApiError::unauthorized());
        };
        if let Some(token) = token {
            limits.authenticated(token);
        }
        limits.request(&principal.key_id).map_err(|wait| {
            ApiError::rate_limited(
                "This key is over its request rate; slow down and retry.",
                wait,
            )
        })?;
        Ok(principal)
    }
}

/// Query parameters, as text; handlers parse each into its domain type.
pub struct QueryParams(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_query",
                    "The query string is malformed.",
                )
            })
    }
}

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An optional parameter, parsed by `parse(name, raw)` when present.
    pub fn parse<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str, &str) -> Result<T, FieldError>,
    ) -> Result<Option<T>, FieldError> {
        self.get(name).map(|raw| parse(name, raw)).transpose()
    }

    pub fn require(&self, name: &str) -> Result<&str, FieldError> {
        self.get(name)
            .ok_or_else(|| FieldError::new(name, "is required"))
    }
}

/// A required body field, or a 422 naming it.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, FieldError> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["clinicId", "doctorId", "date", "slotIndex", "patientName"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn a_misspelled_field_names_the_field_meant() {
        for typo in ["slot", "slot_index", "SlotIndex", "slotIdx"] {
            assert_eq!(
                not_a_field(typo, &known()),
                "is not a field of this body; did you mean slotIndex?",
                "{typo}"
            );
        }
        assert!(not_a_field("colour", &known()).contains("its fields: clinicId"));
    }

    #[test]
    fn serdes_unknown_field_message_is_read_back() {
        let (name, known) =
            unknown_field("unknown field `slot`, expected one of `clinicId`, `slotIndex`").unwrap();
        assert_eq!(
            (name.as_str(), known),
            ("slot", vec!["clinicId".to_owned(), "slotIndex".to_owned()])
        );
        assert_eq!(
            unknown_field("unknown field `x`, expected `note`")
                .unwrap()
                .1,
            ["note"]
        );
    }
}
