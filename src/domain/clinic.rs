//! A clinic, its time zone and its booking policy.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{ClinicId, FieldError};

#[derive(Debug, Clone, PartialEq)]
pub struct Clinic {
    pub id: ClinicId,
    pub name: String,
    pub timezone: Tz,
    pub policy: BookingPolicy,
    /// `auditAt`: when the nightly audit of the day runs, clinic local time.
    pub audit_at: NaiveTime,
}

/// How a clinic shares its day between advance bookings and walk-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingPolicy {
    pub walk_in_reserve: ReserveRatio,
    /// Advance bookings must start at least this many minutes from now.
    pub min_lead_minutes: u32,
}

impl Default for BookingPolicy {
    fn default() -> Self {
        Self {
            walk_in_reserve: ReserveRatio::DEFAULT,
            min_lead_minutes: 30,
        }
    }
}

/// Upper bound for `minLeadMinutes`: a week.
pub const MAX_LEAD_MINUTES: u32 = 7 * 24 * 60;

/// The share of each session's not-yet-started slots kept for walk-ins, held as
/// basis points so the reserve size is exact integer arithmetic (0.15 × 20 is 3, not
/// 3.0000000000000004 slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveRatio(u32);

impl ReserveRatio {
    pub const DEFAULT: Self = Self(1500);
    const SCALE: u32 = 10_000;

    pub fn parse(field: &str, ratio: f64) -> Result<Self, FieldError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(FieldError::new(field, "must be a number from 0 to 1"));
        }
        Ok(Self((ratio * f64::from(Self::SCALE)).round() as u32))
    }

    pub fn from_basis_points(bp: u32) -> Option<Self> {
        (bp <= Self::SCALE).then_some(Self(bp))
    }

    pub fn basis_points(self) -> u32 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(Self::SCALE)
    }

    /// How many of `not_started` slots are reserved: `ceil(ratio × not_started)`.
    pub fn reserve_size(self, not_started: u32) -> u32 {
        (u64::from(self.0) * u64::from(not_started)).div_ceil(u64::from(Self::SCALE)) as u32
    }
}

pub fn parse_timezone(field: &str, raw: &str) -> Result<Tz, FieldError> {
    raw.parse::<Tz>()
        .map_err(|_| FieldError::new(field, "must be an IANA time zone name such as Asia/Kolkata"))
}

impl Clinic {
    pub const DEFAULT_TIMEZONE: Tz = chrono_tz::Asia::Kolkata;
    /// The clinic's plan: the day is audited at 23:00 local, after the evening session.
    pub const DEFAULT_AUDIT_AT: NaiveTime = match NaiveTime::from_hms_opt(23, 0, 0) {
        Some(t) => t,
        None => panic!("23:00 is a time"),
    };

    /// The clinic's local wall-clock time at `now`.
    pub fn local(&self, now: DateTime<Utc>) -> NaiveDateTime {
        now.with_timezone(&self.timezone).naive_local()
    }

    pub fn today(&self, now: DateTime<Utc>) -> NaiveDate {
        self.local(now).date()
    }

    /// The instant a local wall-clock time happens in the clinic. A time skipped by a
    /// daylight-saving jump is taken an hour later; a repeated one at its first
    /// occurrence. (Asia/Kolkata has neither, but clinics elsewhere do.)
    pub fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let tz = self.timezone;
        tz.from_local_datetime(&local)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| local.and_utc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_reserve_of_twenty_free_slots_is_three() {
        assert_eq!(ReserveRatio::DEFAULT.reserve_size(20), 3);
        assert_eq!(ReserveRatio::DEFAULT.reserve_size(21), 4);
        assert_eq!(ReserveRatio::DEFAULT.reserve_size(0), 0);
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        assert!(ReserveRatio::parse("r", -0.1).is_err());
        assert!(ReserveRatio::parse("r", 1.01).is_err());
        assert!(ReserveRatio::parse("r", f64::NAN).is_err());
        assert_eq!(
            ReserveRatio::parse("r", 0.15).unwrap(),
            ReserveRatio::DEFAULT
        );
    }

    proptest! {
        #[test]
        fn reserve_is_the_ceiling_of_ratio_times_free_slots(bp in 0u32..=10_000, free in 0u32..2_000) {
            let ratio = ReserveRatio::from_basis_points(bp).unwrap();
            let size = ratio.reserve_size(free);
            // size is the least integer with size * 10000 >= bp * free
            prop_assert!(u64::from(size) * 10_000 >= u64::from(bp) * u64::from(free));
            prop_assert!(size == 0 || u64::from(size - 1) * 10_000 < u64::from(bp) * u64::from(free));
            prop_assert!(size <= free);
        }
    }

    #[test]
    fn a_local_time_is_the_same_instant_whatever_the_server_zone() {
        let clinic = Clinic {
            id: ClinicId::parse("id", "c").unwrap(),
            name: "C".into(),
            timezone: Clinic::DEFAULT_TIMEZONE,
            policy: BookingPolicy::default(),
            audit_at: Clinic::DEFAULT_AUDIT_AT,
        };
        let local = NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(9, 0, 0)
            .unwrap();
        let instant = clinic.instant(local);
        assert_eq!(instant.to_rfc3339(), "2026-12-01T03:30:00+00:00");
        assert_eq!(clinic.local(instant), local);
    }
}
