//! Who may take which slot: the walk-in reserve, lead time, started slots and days
//! off (invariant 6 of docs/PRODUCT.md). Pure: the caller passes the day's schedule, the slots
//! already occupied and the time.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::domain::plan::BOOKING_HORIZON_DAYS;
use crate::domain::{Clinic, DaySchedule, PlannedSlot, Refusal, Session, SlotIndex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    Free,
    Taken,
    ReservedWalkIn,
    Past,
}

/// One doctor's day as seen at `now`, with the slots occupied so far.
pub struct DayView<'a> {
    pub clinic: &'a Clinic,
    pub schedule: &'a DaySchedule,
    pub now: DateTime<Utc>,
    pub taken: &'a BTreeSet<u32>,
}

impl DayView<'_> {
    fn started(&self, session: &Session, k: u32) -> bool {
        self.clinic.instant(session.start_of(k)) <= self.now
    }

    /// How many slots of the session have not started. Where the clinic's UTC offset
    /// is the same at the session's first and last slot, start instants rise with the
    /// position, so the started slots are a prefix and bisection finds its end; across
    /// a daylight-saving change every slot is asked. (The booking path asks this on
    /// every booking: asking all 500 slots of a long session cost a sixth of its CPU.)
    fn not_started(&self, session: &Session) -> u32 {
        let n = session.slot_count;
        if n == 0 {
            return 0;
        }
        let offset = |k| {
            let local = session.start_of(k);
            self.clinic.instant(local) - local.and_utc()
        };
        if offset(0) != offset(n - 1) {
            return (0..n).filter(|&k| !self.started(session, k)).count() as u32;
        }
        let (mut started, mut unknown_from) = (0, n);
        while started < unknown_from {
            let mid = started + (unknown_from - started) / 2;
            if self.started(session, mid) {
                started = mid + 1;
            } else {
                unknown_from = mid;
            }
        }
        n - started
    }

    /// First position of the walk-in reserve: the last `ceil(ratio × F)` slots, F the
    /// slots of the session not yet started.
    fn reserve_from(&self, session: &Session) -> u32 {
        session.slot_count
            - self
                .clinic
                .policy
                .walk_in_reserve
                .reserve_size(self.not_started(session))
    }

    fn is_taken(&self, session: &Session, k: u32) -> bool {
        self.taken.contains(&session.slot(k).value())
    }

    pub fn state(&self, session: &Session, k: u32) -> SlotState {
        if self.started(session, k) {
            SlotState::Past
        } else if self.is_taken(session, k) {
            SlotState::Taken
        } else if k >= self.reserve_from(session) {
            SlotState::ReservedWalkIn
        } else {
            SlotState::Free
        }
    }

    /// Why slot `k` of `session` cannot be booked in advance now, if it cannot.
    pub fn advance_refusal(&self, session: &Session, k: u32) -> Option<Refusal> {
        let slot = session.slot(k).value();
        let lead = Duration::minutes(i64::from(self.clinic.policy.min_lead_minutes));
        match self.state(session, k) {
            SlotState::Past => Some(Refusal::SlotStarted(slot)),
            SlotState::Taken => Some(Refusal::SlotTaken),
            SlotState::ReservedWalkIn => Some(Refusal::ReservedForWalkIns(slot)),
            SlotState::Free if self.clinic.instant(session.start_of(k)) < self.now + lead => {
                Some(Refusal::SlotTooSoon {
                    slot,
                    min_lead_minutes: self.clinic.policy.min_lead_minutes,
                })
            }
            SlotState::Free => None,
        }
    }

    fn check_date(&self) -> Result<(), Refusal> {
        let today = self.clinic.today(self.now);
        let date = self.schedule.date;
        if date < today {
            return Err(Refusal::DateInPast(date));
        }
        if date > today + Duration::days(BOOKING_HORIZON_DAYS) {
            return Err(Refusal::DateTooFar);
        }
        if self.schedule.is_day_off() {
            return Err(Refusal::DoctorUnavailable(date));
        }
        Ok(())
    }

    /// The requested slot if it may be booked in advance, or the earliest that may.
    pub fn plan_advance(&self, requested: Option<SlotIndex>) -> Result<PlannedSlot, Refusal> {
        self.check_date()?;
        match requested {
            Some(slot) => {
                let session = self
                    .schedule
                    .session_of(slot)
                    .ok_or(Refusal::SlotOutOfRange(slot.value()))?;
                match self.advance_refusal(session, slot.position()) {
                    Some(refusal) => Err(refusal),
                    None => Ok(planned(session, slot.position())),
                }
            }
            None => self
                .schedule
                .sessions
                .iter()
                .flat_map(|s| (0..s.slot_count).map(move |k| (s, k)))
                .find(|(s, k)| self.advance_refusal(s, *k).is_none())
                .map(|(s, k)| planned(s, k))
                .ok_or(Refusal::NoSlotAvailable),
        }
    }

    /// The earliest free slot that has not started, reserve included. With `force`,
    /// a full day still takes the patient: after the last slot of the current session
    /// (the one under way, else the next, else the day's last).
    pub fn plan_walk_in(&self, force: bool) -> Result<PlannedSlot, Refusal> {
        let earliest = self
            .schedule
            .sessions
            .iter()
            .flat_map(|s| (0..s.slot_count).map(move |k| (s, k)))
            .find(|(s, k)| {
                matches!(
                    self.state(s, *k),
                    SlotState::Free | SlotState::ReservedWalkIn
                )
            });
        if let Some((session, k)) = earliest {
            return Ok(planned(session, k));
        }
        if !force {
            return Err(Refusal::NoWalkInSlot);
        }
        let local_now = self.clinic.local(self.now);
        let session = self
            .schedule
            .sessions
            .iter()
            .find(|s| s.date.and_time(s.to) > local_now)
            .or(self.schedule.sessions.last())
            .ok_or(Refusal::NoWalkInSlot)?;
        let after_last_taken = self
            .taken
            .range(session.slot(0).value()..session.slot(0).value() + 1000)
            .next_back()
            .map_or(0, |v| v % 1000 + 1);
        let k = session.slot_count.max(after_last_taken);
        let fits_today = session.start_of(k).date() == session.date;
        if k >= 1000 || !fits_today {
            return Err(Refusal::NoWalkInSlot);
        }
        Ok(planned(session, k))
    }
}

fn planned(session: &Session, k: u32) -> PlannedSlot {
    PlannedSlot {
        slot: session.slot(k),
        time: session.start_of(k).time(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::tests::doctor;
    use crate::domain::{BookingPolicy, ClinicId};
    use chrono::NaiveDate;
    use serde_json::json;

    fn clinic() -> Clinic {
        Clinic {
            id: ClinicId::parse("id", "demo-clinic").unwrap(),
            name: "Demo".into(),
            timezone: Clinic::DEFAULT_TIMEZONE,
            policy: BookingPolicy::default(),
            audit_at: Clinic::DEFAULT_AUDIT_AT,
        }
    }

    /// 2026-12-01 (a Tuesday) at `hh:mm` in Kolkata.
    fn at(hh: u32, mm: u32) -> DateTime<Utc> {
        clinic().instant(
            NaiveDate::from_ymd_opt(2026, 12, 1)
                .unwrap()
                .and_hms_opt(hh, mm, 0)
                .unwrap(),
        )
    }

    fn day() -> DaySchedule {
        // 09:00–10:40 in 10-minute slots: 10 slots, reserve ceil(0.15 × 10) = 2.
        doctor(10, json!({"tue": [{"from": "09:00", "to": "10:40"}]}))
            .day_schedule(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap())
    }

    #[test]
    fn the_last_slots_of_a_session_are_kept_for_walk_ins() {
        let (c, d, taken) = (clinic(), day(), BTreeSet::new());
        let view = DayView {
            clinic: &c,
            schedule: &d,
            now: at(7, 0),
            taken: &taken,
        };
        let states: Vec<_> = (0..10).map(|k| view.state(&d.sessions[0], k)).collect();
        assert_eq!(&states[..8], &[SlotState::Free; 8]);
        assert_eq!(&states[8..], &[SlotState::ReservedWalkIn; 2]);
        assert_eq!(
            view.plan_advance(Some(SlotIndex::from_parts(0, 8))),
            Err(Refusal::ReservedForWalkIns(8))
        );
    }

    #[test]
    fn the_reserve_shrinks_as_slots_start() {
        let (c, d, taken) = (clinic(), day(), BTreeSet::new());
        // At 09:35 slots 0–3 have started: F = 6, reserve = ceil(0.9) = 1.
        let view = DayView {
            clinic: &c,
            schedule: &d,
            now: at(9, 35),
            taken: &taken,
        };
        assert_eq!(view.state(&d.sessions[0], 3), SlotState::Past);
        assert_eq!(view.state(&d.sessions[0], 8), SlotState::Free);
        assert_eq!(view.state(&d.sessions[0], 9), SlotState::ReservedWalkIn);
    }

    #[test]
    fn advance_bookings_need_the_lead_time() {
        let (c, d, taken) = (clinic(), day(), BTreeSet::new());
        let view = DayView {
            clinic: &c,
            schedule: &d,
            now: at(8, 45),
            taken: &taken,
        };
        assert!(matches!(
            view.plan_advance(Some(SlotIndex::from_parts(0, 1))),
            Err(Refusal::SlotTooSoon { slot: 1, .. })
        ));
        assert_eq!(
            view.plan_advance(None).unwrap().slot,
            SlotIndex::from_parts(0, 2)
        );
    }

    #[test]
    fn walk_ins_take_the_earliest_free_slot_not_yet_started() {
        let c = clinic();
        let d = day();
        let taken: BTreeSet<u32> = [4, 5].into();
        let view = DayView {
            clinic: &c,
            schedule: &d,
            now: at(9, 31),
            taken: &taken,
        };
        assert_eq!(view.plan_walk_in(false).unwrap().slot.value(), 6);
    }

    #[test]
    fn a_forced_walk_in_goes_after_the_last_slot_of_a_full_session() {
        let c = clinic();
        let d = day();
        let taken: BTreeSet<u32> = (0..10).chain([10]).collect();
        let view = DayView {
            clinic: &c,
            schedule: &d,
            now: at(9, 5),
            taken: &taken,
        };
        assert_eq!(view.plan_walk_in(false), Err(Refusal::NoWalkInSlot));
        let forced = view.plan_walk_in(true).unwrap();
        assert_eq!(forced.slot.value(), 11);
        assert_eq!(forced.time.format("%H:%M").to_string(), "10:50");
    }

    #[test]
    fn nothing_is_booked_on_past_dates_or_days_off() {
        let (c, d, taken) = (clinic(), day(), BTreeSet::new());
        let tomorrow = at(9, 0) + Duration::days(1);
        let view = DayView {
            clinic: &c,
            schedule: &d,
            now: tomorrow,
            taken: &taken,
        };
        assert!(matches!(
            view.plan_advance(None),
            Err(Refusal::DateInPast(_))
        ));
        let off = DaySchedule {
            date: d.date,
            sessions: vec![],
        };
        let view = DayView {
            clinic: &c,
            schedule: &off,
            now: at(6, 0),
            taken: &taken,
        };
        assert!(matches!(
            view.plan_advance(None),
            Err(Refusal::DoctorUnavailable(_))
        ));
    }

    proptest::proptest! {
        /// Bisection counts the slots not yet started exactly as asking every slot
        /// does, on ordinary days and on New York's daylight-saving days (sessions and
        /// moments around 02:00, when the clocks change).
        #[test]
        fn slots_not_started_are_counted_exactly(
            day in proptest::sample::select(vec!["2026-03-08", "2026-11-01", "2026-12-01"]),
            from_minute in 0u32..180,
            slot_minutes in 1u32..=60,
            slot_count in 0u32..600,
            now_minutes in 0i64..300,
        ) {
            let date = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
            let clinic = Clinic { timezone: chrono_tz::America::New_York, ..clinic() };
            let from = chrono::NaiveTime::from_num_seconds_from_midnight_opt(from_minute * 60, 0).unwrap();
            let session = Session { index: 0, date, from, to: from, slot_minutes, slot_count };
            let schedule = DaySchedule { date, sessions: vec![session] };
            let taken = BTreeSet::new();
            let view = DayView {
                clinic: &clinic,
                schedule: &schedule,
                now: clinic.instant(date.and_hms_opt(0, 0, 0).unwrap()) + Duration::minutes(now_minutes),
                taken: &taken,
            };
            let asked = (0..slot_count).filter(|&k| !view.started(&session, k)).count() as u32;
            proptest::prop_assert_eq!(view.not_started(&session), asked);
        }
    }
}
