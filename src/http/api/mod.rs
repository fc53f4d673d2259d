//! Handlers, one module per resource. Each parses its input into domain types,
//! asks `Principal::may`, and calls the booking service.

pub mod appointments;
pub mod audit;
pub mod clinics;
pub mod detection;
pub mod metrics;
pub mod reports;

use super::error::ApiError;
use super::AppState;
use crate::domain::{ClinicId, KnownClinic};

/// A clinic the audit, the stats and the reports know of: registered, or seen in
/// watched documents (in its source's zone); else a 404 saying it is neither.
pub async fn known_clinic(state: &AppState, id: &ClinicId) -> Result<KnownClinic, ApiError> {
    state
        .auditor
        .known_clinic(id)
        .await?
        .ok_or_else(|| ApiError::unknown_clinic(id))
}
