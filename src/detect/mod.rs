//! Detection: after every committed write to a doctor-day, native or watched, check
//! that day for two occupying appointments in one slot or with one token, and keep
//! one incident per such duplicate. [`reconcile`] decides (pure); [`detector`] runs
//! it on wake-ups and periodic re-scans.

pub mod detector;
pub mod reconcile;

pub use detector::{Detector, IncidentChanged, Wakeups};
