//! What the metrics keep and read: the booking rollups and totals the servers add to,
//! and the counts `/api/v1/stats` and `/metrics` read from the other tables: the trait,
//! its SQL, and its one implementation for every [`SqlBackend`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;

use super::audit::WATCHED_CHECKED;
use super::rows::{self, corrupt};
use super::sql::{query, Reads, SqlBackend, Tx};
use super::StoreError;
use crate::domain::{ClinicId, DoctorId, Incident, Kind, RollupKey, Tally};

/// Booking attempts of one clinic on one of its local days that came to one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOutcome {
    pub clinic_id: ClinicId,
    pub day: NaiveDate,
    pub outcome: String,
    pub count: u64,
    pub retries: u64,
}

/// Booking attempts of one doctor over a range of local days that came to one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOutcome {
    pub clinic_id: ClinicId,
    pub doctor_id: DoctorId,
    pub outcome: String,
    pub count: u64,
    pub retries: u64,
}

/// Booking attempts in one local hour (0–23) of one local day that came to one
/// outcome, over the clinics asked for (each in its own time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourOutcome {
    pub day: NaiveDate,
    pub hour: u32,
    pub outcome: String,
    pub count: u64,
}

/// Appointments dated one day at one clinic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayAppointments {
    pub clinic_id: ClinicId,
    pub date: NaiveDate,
    pub count: u64,
}

/// What `/api/v1/stats` reads for one clinic (or all) over local dates `from..=to`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsRows {
    pub day_outcomes: Vec<DayOutcome>,
    pub hour_outcomes: Vec<HourOutcome>,
    /// `appointmentsChecked` per clinic and date (`domain::counts::is_checked`).
    pub appointments: Vec<DayAppointments>,
    /// Incidents about appointments of those dates, whatever their state.
    pub incidents: Vec<Incident>,
}

/// Booking attempts of one kind and outcome since the database was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingTotal {
    pub kind: Kind,
    pub outcome: String,
    pub count: u64,
    pub retries: u64,
}

/// What `/metrics` reads about detection and alerting at each scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertingGauges {
    /// Unresolved incidents: (clinic, state `open` or `acknowledged`, count).
    pub open_incidents: Vec<(String, String, u64)>,
    /// Notifications: (channel, delivery state `pending`, `delivered` or `dead`, count).
    pub notifications: Vec<(String, String, u64)>,
    /// Failed delivery attempts: (channel, `transient` or `permanent`, count).
    pub failed_attempts: Vec<(String, String, u64)>,
    /// Alerts written but not yet grouped into a notification.
    pub outbox_backlog: u64,
}

#[async_trait]
pub trait MetricsStore: Send + Sync {
    /// Adds counts to the rollups and to the totals, in one transaction. The rows are
    /// written in key order, so two servers flushing at once lock them in the same
    /// order and cannot deadlock.
    async fn add_rollups(&self, deltas: &BTreeMap<RollupKey, Tally>) -> Result<(), StoreError>;
    /// The rollups, appointment counts and incidents of days `from..=to`, of one
    /// clinic or of all.
    async fn stats_rows(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<StatsRows, StoreError>;
    /// The booking rollups alone of days `from..=to` (`appointments` and `incidents`
    /// left empty), of one clinic or of all.
    async fn booking_outcomes(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<StatsRows, StoreError>;
    /// Appointments per day of one clinic over `from..=to` (days with none left out),
    /// counted as `StatsRows::appointments` counts them.
    async fn day_appointments(
        &self,
        clinic: &ClinicId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DayAppointments>, StoreError>;
    /// Booking attempts per doctor and outcome over local days `from..=to`.
    async fn doctor_outcomes(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DoctorOutcome>, StoreError>;
    async fn booking_totals(&self) -> Result<Vec<BookingTotal>, StoreError>;
    async fn alerting_gauges(&self) -> Result<AlertingGauges, StoreError>;
}

/// The deltas summed by kind and outcome, in key order: what `booking_totals` gets.
pub fn totals_of(deltas: &BTreeMap<RollupKey, Tally>) -> BTreeMap<(Kind, &'static str), Tally> {
    let mut totals: BTreeMap<(Kind, &'static str), Tally> = BTreeMap::new();
    for (key, tally) in deltas {
        totals
            .entry((key.kind, key.outcome))
            .or_default()
            .add(*tally);
    }
    totals
}

/// A count as stored (BIGINT), for binding.
pub fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---- decoding -------------------------------------------------------------------

use super::sql::DecodeRow;

/// Rows of [`OUTCOMES`] summed, as they stream in, into day outcomes (per clinic, day
/// and outcome) and hour outcomes (per day, hour and outcome, over the clinics read).
/// Summed row by row so a month of every clinic's rollups never sits in memory at once.
#[derive(Debug, Default)]
pub struct OutcomeSums {
    days: BTreeMap<(ClinicId, NaiveDate, String), (u64, u64)>,
    hours: BTreeMap<(NaiveDate, u32, String), u64>,
}

impl OutcomeSums {
    pub fn add<R: DecodeRow>(&mut self, row: &R) -> Result<(), StoreError> {
        let day = row.date("day")?;
        let hour = row.int("hour")?;
        let hour = u32::try_from(hour)
            .ok()
            .filter(|h| *h < 24)
            .ok_or_else(|| rows::corrupt("hour", hour))?;
        let outcome = row.text("outcome")?;
        let (n, retries) = (rows::count(row, "count")?, rows::count(row, "retries")?);
        let summed = self
            .days
            .entry((rows::clinic_id(row)?, day, outcome.clone()))
            .or_default();
        summed.0 += n;
        summed.1 += retries;
        *self.hours.entry((day, hour, outcome)).or_default() += n;
        Ok(())
    }

    /// The sums, each in key order.
    pub fn finish(self) -> (Vec<DayOutcome>, Vec<HourOutcome>) {
        (
            self.days
                .into_iter()
                .map(|((clinic_id, day, outcome), (count, retries))| DayOutcome {
                    clinic_id,
                    day,
                    outcome,
                    count,
                    retries,
                })
                .collect(),
            self.hours
                .into_iter()
                .map(|((day, hour, outcome), count)| HourOutcome {
                    day,
                    hour,
                    outcome,
                    count,
                })
                .collect(),
        )
    }
}

/// One statement in two forms: over one clinic's rows (`clinic_id = $1`) or over every
/// clinic's (`$1` bound as NULL). Each form gets a plan of its own, so the one-clinic
/// form seeks the clinic's index instead of scanning every clinic's rows, as one text
/// with `($1 IS NULL OR clinic_id = $1)` does on both backends. Held as the text
/// around each place of the clinic filter, each piece a list of parts.
pub struct Scoped(&'static [&'static [&'static str]]);

impl Scoped {
    pub fn sql(&self, clinic: Option<&ClinicId>) -> String {
        let filter = match clinic {
            Some(_) => "clinic_id = $1",
            None => "CAST($1 AS TEXT) IS NULL",
        };
        self.0
            .iter()
            .map(|parts| parts.concat())
            .collect::<Vec<_>>()
            .join(filter)
    }
}

/// Booking outcomes per clinic, day, hour and outcome (doctors and kinds summed), in
/// the order of `booking_rollups_by_day` so no sort is needed: both the day outcomes
/// and the hour outcomes come from this one read ([`outcomes_of`]). Sums are cast back
/// to BIGINT: PostgreSQL's `SUM(bigint)` is `numeric`.
pub const OUTCOMES: Scoped = Scoped(&[
    &[
        "SELECT clinic_id, day, CAST(hour AS BIGINT) AS hour, outcome, \
    CAST(SUM(count) AS BIGINT) AS count, CAST(SUM(retries) AS BIGINT) AS retries \
    FROM booking_rollups WHERE ",
    ],
    &[" AND day BETWEEN $2 AND $3 GROUP BY day, clinic_id, hour, outcome"],
]);

pub const DOCTOR_OUTCOMES: Scoped = Scoped(&[
    &["SELECT clinic_id, doctor_id, outcome, \
    CAST(SUM(count) AS BIGINT) AS count, CAST(SUM(retries) AS BIGINT) AS retries \
    FROM booking_rollups WHERE "],
    &[" AND day BETWEEN $2 AND $3 \
    GROUP BY clinic_id, doctor_id, outcome ORDER BY clinic_id, doctor_id, outcome"],
]);

/// `appointmentsChecked` per clinic and date (`domain::counts::is_checked`; the
/// watched rows' part is [`WATCHED_CHECKED`]).
pub const DAY_APPOINTMENTS: Scoped = Scoped(&[
    &["SELECT clinic_id, date, COUNT(*) AS count FROM ( \
      SELECT clinic_id, date FROM appointments WHERE "],
    &[" AND date BETWEEN $2 AND $3 \
    UNION ALL \
      SELECT clinic_id, date FROM watched_appointments WHERE "],
    &[
        " AND date BETWEEN $2 AND $3 AND ",
        WATCHED_CHECKED,
        " ) AS dated GROUP BY clinic_id, date ORDER BY clinic_id, date",
    ],
]);

pub const INCIDENTS_DATED: Scoped = Scoped(&[
    &["SELECT * FROM incidents WHERE "],
    &[" AND date BETWEEN $2 AND $3 ORDER BY clinic_id, date, doctor_id, kind, key"],
]);

pub const ADD_ROLLUP: &str = "INSERT INTO booking_rollups \
    (clinic_id, day, hour, doctor_id, kind, outcome, count, retries, latency_us_sum) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
    ON CONFLICT (clinic_id, day, hour, doctor_id, kind, outcome) DO UPDATE SET \
    count = booking_rollups.count + excluded.count, \
    retries = booking_rollups.retries + excluded.retries, \
    latency_us_sum = booking_rollups.latency_us_sum + excluded.latency_us_sum";

pub const ADD_TOTAL: &str = "INSERT INTO booking_totals (kind, outcome, count, retries) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (kind, outcome) DO UPDATE SET \
    count = booking_totals.count + excluded.count, \
    retries = booking_totals.retries + excluded.retries";

pub fn doctor_outcome<R: DecodeRow>(row: &R) -> Result<DoctorOutcome, StoreError> {
    let doctor = row.text("doctor_id")?;
    Ok(DoctorOutcome {
        clinic_id: rows::clinic_id(row)?,
        doctor_id: DoctorId::parse("doctor_id", &doctor).map_err(|e| corrupt("doctor id", e))?,
        outcome: row.text("outcome")?,
        count: rows::count(row, "count")?,
        retries: rows::count(row, "retries")?,
    })
}

pub fn day_appointments<R: DecodeRow>(row: &R) -> Result<DayAppointments, StoreError> {
    Ok(DayAppointments {
        clinic_id: rows::clinic_id(row)?,
        date: row.date("date")?,
        count: rows::count(row, "count")?,
    })
}

pub fn booking_total<R: DecodeRow>(row: &R) -> Result<BookingTotal, StoreError> {
    let kind = row.text("kind")?;
    Ok(BookingTotal {
        kind: Kind::from_stored(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        outcome: row.text("outcome")?,
        count: rows::count(row, "count")?,
        retries: rows::count(row, "retries")?,
    })
}

#[async_trait::async_trait]
impl<B: SqlBackend> MetricsStore for B {
    async fn add_rollups(&self, deltas: &BTreeMap<RollupKey, Tally>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for (key, tally) in deltas {
            query(ADD_ROLLUP)
                .bind(key.clinic_id.as_str())
                .bind(key.day)
                .bind(i16::from(key.hour))
                .bind(key.doctor_id.as_str())
                .bind(key.kind.as_str())
                .bind(key.outcome)
                .bind(stored(tally.count))
                .bind(stored(tally.retries))
                .bind(stored(tally.latency_us))
                .execute(&mut tx)
                .await?;
        }
        for ((kind, outcome), tally) in totals_of(deltas) {
            query(ADD_TOTAL)
                .bind(kind.as_str())
                .bind(outcome)
                .bind(stored(tally.count))
                .bind(stored(tally.retries))
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn stats_rows(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<StatsRows, StoreError> {
        let dated = |sql: &Scoped| {
            query(sql.sql(clinic))
                .bind(clinic.map(ClinicId::as_str))
                .bind(from)
                .bind(to)
                .fetch_all(self.reader())
        };
        let outcomes = self.booking_outcomes(clinic, from, to).await?;
        Ok(StatsRows {
            appointments: dated(&DAY_APPOINTMENTS)
                .await?
                .iter()
                .map(day_appointments)
                .collect::<Result<_, _>>()?,
            incidents: dated(&INCIDENTS_DATED)
                .await?
                .iter()
                .map(rows::incident)
                .collect::<Result<_, _>>()?,
            ..outcomes
        })
    }

    async fn booking_outcomes(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<StatsRows, StoreError> {
        let mut sums = OutcomeSums::default();
        let outcomes = query(OUTCOMES.sql(clinic))
            .bind(clinic.map(ClinicId::as_str))
            .bind(from)
            .bind(to);
        self.reader()
            .for_each_row(outcomes, |row| sums.add(row))
            .await?;
        let (day_outcomes, hour_outcomes) = sums.finish();
        Ok(StatsRows {
            day_outcomes,
            hour_outcomes,
            ..StatsRows::default()
        })
    }

    async fn day_appointments(
        &self,
        clinic: &ClinicId,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DayAppointments>, StoreError> {
        query(DAY_APPOINTMENTS.sql(Some(clinic)))
            .bind(clinic.as_str())
            .bind(from)
            .bind(to)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(day_appointments)
            .collect()
    }

    async fn doctor_outcomes(
        &self,
        clinic: Option<&ClinicId>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DoctorOutcome>, StoreError> {
        query(DOCTOR_OUTCOMES.sql(clinic))
            .bind(clinic.map(ClinicId::as_str))
            .bind(from)
            .bind(to)
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(doctor_outcome)
            .collect()
    }

    async fn booking_totals(&self) -> Result<Vec<BookingTotal>, StoreError> {
        query("SELECT kind, outcome, count, retries FROM booking_totals ORDER BY kind, outcome")
            .fetch_all(self.reader())
            .await?
            .iter()
            .map(booking_total)
            .collect()
    }

    async fn alerting_gauges(&self) -> Result<AlertingGauges, StoreError> {
        let grouped = |sql: &'static str| query(sql).fetch_all(self.reader());
        let backlog = query("SELECT COUNT(*) AS n FROM alert_outbox WHERE notification_id IS NULL")
            .fetch_one(self.reader())
            .await?
            .int("n")?;
        Ok(AlertingGauges {
            open_incidents: rows::labelled_counts(&grouped(
                "SELECT clinic_id AS a, state AS b, COUNT(*) AS count FROM incidents \
                 WHERE state <> 'resolved' GROUP BY clinic_id, state ORDER BY clinic_id, state",
            ).await?)?,
            notifications: rows::labelled_counts(&grouped(
                "SELECT channel AS a, state AS b, COUNT(*) AS count FROM notifications \
                 GROUP BY channel, state ORDER BY channel, state",
            ).await?)?,
            failed_attempts: rows::labelled_counts(&grouped(
                "SELECT channel AS a, outcome AS b, COUNT(*) AS count FROM notification_attempts \
                 WHERE outcome <> 'delivered' GROUP BY channel, outcome ORDER BY channel, outcome",
            ).await?)?,
            outbox_backlog: u64::try_from(backlog).map_err(|_| rows::corrupt("outbox backlog", backlog))?,
        })
    }
}
