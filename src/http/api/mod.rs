//! Handlers, one module per resource. Each parses its input into domain types,
//! asks `Principal::may`, and calls the booking service.

pub mod appointments;
pub mod audit;
pub mod clinics;
pub mod detection;
pub mod metrics;
pub mod reports;
