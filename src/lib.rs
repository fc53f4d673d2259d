//! slotguard: a clinic appointment and token service that cannot give two patients
//! the same slot or the same token.
//!
//! - [`domain`]: the clinic's vocabulary and arithmetic (slots, tokens, statuses), and
//!   every type more than one layer uses; pure, at the bottom of the module graph.
//! - [`booking`]: the booking rules and the intent of each write (idempotency, retries).
//! - [`store`]: the `Store` trait with its SQLite and PostgreSQL implementations; the
//!   invariants are the migrations' unique indexes.
//! - [`detect`]: duplicates found after each write become incidents (reconcile, detector).
//! - [`watch`]: mirroring an external app's appointment documents (Kloqo and files).
//! - [`audit`]: the nightly audit, `slotguard audit` over a database or an export file,
//!   and the weekly report (the three counts are `domain::counts`).
//! - [`alert`]: notifications, their routes and channels (webhook, email, SMS, Sentry, log).
//! - [`metrics`]: booking outcomes as persisted rollups, `/api/v1/stats` and `/metrics`.
//! - [`auth`]: API keys, roles and clinic scope.
//! - [`http`]: the JSON API on axum; `http::error` maps every failure to one status.
//! - [`web`]: the monitoring dashboard at `/`: pages, staff sessions, live updates.
//! - [`loadtest`]: `slotguard loadtest`, open and closed models, HDR statistics.
//! - [`app`]: the services built once over a store (`Services`: bookings, detector,
//!   dispatcher, auditor) and one running slotguard (`App`: their tasks, the metrics
//!   flusher, started and stopped together).
//! - [`cli`]: the `slotguard` command line and `serve`.
//! - [`demo`]: the demo clinic `serve --demo` seeds.
//! - [`history`]: the JSON-lines record of a load run that `check` verifies.
//! - [`check`]: the history checker: acknowledged writes lost, refusals that wrote,
//!   duplicate slots and tokens, answers that disagree with the stored rows.
//! - [`clock`]: "what time is it", injectable so tests can stand at any hour.

pub mod alert;
pub mod app;
pub mod audit;
pub mod auth;
pub mod booking;
pub mod check;
pub mod cli;
pub mod clock;
pub mod demo;
pub mod detect;
pub mod domain;
pub mod history;
pub mod http;
pub mod loadtest;
pub mod metrics;
pub mod store;
pub mod watch;
pub mod web;

#[cfg(test)]
mod module_graph;
