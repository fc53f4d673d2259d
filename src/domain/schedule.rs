//! Doctors' weekly sessions, days off and the slot arithmetic of docs/PRODUCT.md:
//! `slotIndex = sessionIndex * 1000 + k`, slot start = session start + k × slotMinutes,
//! all in the clinic's local time.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Weekday};
use serde_json::{json, Map, Value};

use super::{ClinicId, DoctorId, FieldError};

/// Slots per session the index encoding can hold (k is 0..=999).
pub const SLOTS_PER_SESSION_LIMIT: u32 = 1000;
/// Longest consultation a slot may be.
pub const MAX_SLOT_MINUTES: u32 = 240;
/// More sessions than this in one day is a typo, not a schedule.
pub const MAX_SESSIONS_PER_DAY: usize = 12;

const WEEKDAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, Clone, PartialEq)]
pub struct Doctor {
    pub id: DoctorId,
    pub clinic_id: ClinicId,
    pub name: String,
    pub slot_minutes: u32,
    pub availability: WeeklyAvailability,
    /// Dates the doctor does not work, whatever the weekly pattern says.
    pub days_off: Vec<NaiveDate>,
}

/// One sitting of a doctor, `from`..`to` in clinic local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindow {
    pub from: NaiveTime,
    pub to: NaiveTime,
}

/// Sessions per weekday, each day's list sorted by start time and non-overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeeklyAvailability {
    days: [Vec<SessionWindow>; 7],
}

pub fn parse_slot_minutes(field: &str, raw: i64) -> Result<u32, FieldError> {
    match u32::try_from(raw) {
        Ok(m) if (1..=MAX_SLOT_MINUTES).contains(&m) => Ok(m),
        _ => Err(FieldError::new(
            field,
            format!("must be a whole number of minutes from 1 to {MAX_SLOT_MINUTES}"),
        )),
    }
}

pub fn parse_date(field: &str, raw: &str) -> Result<NaiveDate, FieldError> {
    // Read by hand: chrono's format parser costs more than the rest of a line of
    // `audit --file`, which reads one date per appointment.
    let bytes = raw.as_bytes();
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let well_formed = bytes.len() == 10 && bytes[4] == b'-' && bytes[7] == b'-';
    well_formed
        .then(|| {
            let year = i32::try_from(number(&bytes[..4])?).ok()?;
            NaiveDate::from_ymd_opt(year, number(&bytes[5..7])?, number(&bytes[8..])?)
        })
        .flatten()
        .ok_or_else(|| FieldError::new(field, "must be a real calendar date written YYYY-MM-DD"))
}

pub fn parse_clock_time(field: &str, raw: &str) -> Result<NaiveTime, FieldError> {
    let well_formed = raw.len() == 5 && raw.as_bytes()[2] == b':';
    well_formed
        .then(|| NaiveTime::parse_from_str(raw, "%H:%M").ok())
        .flatten()
        .ok_or_else(|| FieldError::new(field, "must be a 24-hour time written HH:MM"))
}

impl WeeklyAvailability {
    /// Parses `{"mon": [{"from": "09:00", "to": "13:00"}, …], …}`. Every session must
    /// hold at least one slot of `slot_minutes` and at most 999, and a day's sessions
    /// must not overlap.
    pub fn parse(field: &str, raw: &Value, slot_minutes: u32) -> Result<Self, FieldError> {
        let object = raw.as_object().ok_or_else(|| {
            FieldError::new(field, "must be an object keyed by weekday (mon … sun)")
        })?;
        if let Some(key) = object.keys().find(|k| !WEEKDAY_KEYS.contains(&k.as_str())) {
            return Err(FieldError::new(
                format!("{field}.{key}"),
                "is not a weekday; use mon, tue, wed, thu, fri, sat or sun",
            ));
        }
        let mut availability = Self::default();
        for (day, key) in WEEKDAY_KEYS.iter().enumerate() {
            let Some(sessions) = object.get(*key) else {
                continue;
            };
            let day_field = format!("{field}.{key}");
            let list = sessions
                .as_array()
                .ok_or_else(|| FieldError::new(&day_field, "must be a list of sessions"))?;
            if list.len() > MAX_SESSIONS_PER_DAY {
                return Err(FieldError::new(
                    &day_field,
                    format!("has more than {MAX_SESSIONS_PER_DAY} sessions"),
                ));
            }
            let mut windows = Vec::with_capacity(list.len());
            for (i, session) in list.iter().enumerate() {
                windows.push(parse_window(
                    &format!("{day_field}[{i}]"),
                    session,
                    slot_minutes,
                )?);
            }
            windows.sort_by_key(|w| w.from);
            if let Some(pair) = windows.windows(2).find(|p| p[1].from < p[0].to) {
                return Err(FieldError::new(
                    &day_field,
                    format!(
                        "sessions {}–{} and {}–{} overlap",
                        pair[0].from.format("%H:%M"),
                        pair[0].to.format("%H:%M"),
                        pair[1].from.format("%H:%M"),
                        pair[1].to.format("%H:%M")
                    ),
                ));
            }
            availability.days[day] = windows;
        }
        Ok(availability)
    }

    pub fn sessions_on(&self, weekday: Weekday) -> &[SessionWindow] {
        &self.days[weekday.num_days_from_monday() as usize]
    }

    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (key, windows) in WEEKDAY_KEYS.iter().zip(&self.days) {
            if !windows.is_empty() {
                let list = windows
                    .iter()
                    .map(|w| json!({"from": w.from.format("%H:%M").to_string(), "to": w.to.format("%H:%M").to_string()}))
                    .collect();
                map.insert((*key).to_owned(), Value::Array(list));
            }
        }
        Value::Object(map)
    }
}

fn parse_window(field: &str, raw: &Value, slot_minutes: u32) -> Result<SessionWindow, FieldError> {
    let time = |name: &str| {
        let f = format!("{field}.{name}");
        raw.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| FieldError::new(&f, "is required, as HH:MM"))
            .and_then(|s| parse_clock_time(&f, s))
    };
    let window = SessionWindow {
        from: time("from")?,
        to: time("to")?,
    };
    if window.to <= window.from {
        return Err(FieldError::new(
            field,
            "must end after it starts (sessions cannot cross midnight)",
        ));
    }
    let slots = window.slot_count(slot_minutes);
    if slots == 0 {
        return Err(FieldError::new(field, "is shorter than one slot"));
    }
    if slots >= SLOTS_PER_SESSION_LIMIT {
        return Err(FieldError::new(field, "holds more than 999 slots"));
    }
    Ok(window)
}

impl SessionWindow {
    fn slot_count(self, slot_minutes: u32) -> u32 {
        ((self.to - self.from).num_minutes() / i64::from(slot_minutes)) as u32
    }
}

/// Parses `{"2026-12-25": {"off": true}, …}`; entries with `off: false` are dropped.
pub fn parse_days_off(field: &str, raw: &Value) -> Result<Vec<NaiveDate>, FieldError> {
    let object = raw
        .as_object()
        .ok_or_else(|| FieldError::new(field, "must be an object keyed by date (YYYY-MM-DD)"))?;
    let mut days = Vec::new();
    for (key, value) in object {
        let entry = format!("{field}.{key}");
        let date = parse_date(&entry, key)?;
        match value.get("off").map(Value::as_bool) {
            Some(Some(true)) => days.push(date),
            Some(Some(false)) => {}
            _ => {
                return Err(FieldError::new(
                    &entry,
                    "must be {\"off\": true} or {\"off\": false}",
                ))
            }
        }
    }
    days.sort();
    days.dedup();
    Ok(days)
}

pub fn days_off_to_json(days: &[NaiveDate]) -> Value {
    let map: BTreeMap<String, Value> = days
        .iter()
        .map(|d| (d.to_string(), json!({"off": true})))
        .collect();
    json!(map)
}

impl Doctor {
    /// The sessions the doctor holds on `date`: none on a day off.
    pub fn day_schedule(&self, date: NaiveDate) -> DaySchedule {
        let sessions = if self.days_off.binary_search(&date).is_ok() {
            Vec::new()
        } else {
            self.availability
                .sessions_on(date.weekday())
                .iter()
                .enumerate()
                .map(|(i, w)| Session {
                    index: i as u32,
                    date,
                    from: w.from,
                    to: w.to,
                    slot_minutes: self.slot_minutes,
                    slot_count: w.slot_count(self.slot_minutes),
                })
                .collect()
        };
        DaySchedule { date, sessions }
    }
}

/// One doctor's sessions on one date, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaySchedule {
    pub date: NaiveDate,
    pub sessions: Vec<Session>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub index: u32,
    pub date: NaiveDate,
    pub from: NaiveTime,
    pub to: NaiveTime,
    pub slot_minutes: u32,
    /// Regular slots; forced walk-ins may be placed after them.
    pub slot_count: u32,
}

impl Session {
    /// Local start of position `k` (k may lie past the last regular slot).
    pub fn start_of(&self, k: u32) -> NaiveDateTime {
        self.date.and_time(self.from)
            + Duration::minutes(i64::from(k) * i64::from(self.slot_minutes))
    }

    pub fn slot(&self, k: u32) -> SlotIndex {
        SlotIndex::from_parts(self.index, k)
    }
}

impl DaySchedule {
    pub fn is_day_off(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The session a regular slot belongs to, if the slot exists on this day.
    pub fn session_of(&self, slot: SlotIndex) -> Option<&Session> {
        self.sessions
            .get(slot.session() as usize)
            .filter(|s| slot.position() < s.slot_count)
    }
}

/// `sessionIndex * 1000 + k`, the Kloqo V1 encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotIndex(u32);

impl SlotIndex {
    pub fn from_parts(session: u32, position: u32) -> Self {
        debug_assert!(position < SLOTS_PER_SESSION_LIMIT);
        Self(session * SLOTS_PER_SESSION_LIMIT + position)
    }

    pub fn parse(field: &str, raw: i64) -> Result<Self, FieldError> {
        u32::try_from(raw)
            .ok()
            .filter(|v| *v / SLOTS_PER_SESSION_LIMIT < MAX_SESSIONS_PER_DAY as u32)
            .map(Self)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "must be sessionIndex × 1000 + position, a number from 0",
                )
            })
    }

    pub fn value(self) -> u32 {
        self.0
    }

    pub fn session(self) -> u32 {
        self.0 / SLOTS_PER_SESSION_LIMIT
    }

    pub fn position(self) -> u32 {
        self.0 % SLOTS_PER_SESSION_LIMIT
    }
}

impl fmt::Display for SlotIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn doctor(slot_minutes: u32, availability: Value) -> Doctor {
        Doctor {
            id: DoctorId::parse("id", "dr-asha").unwrap(),
            clinic_id: ClinicId::parse("id", "demo-clinic").unwrap(),
            name: "Asha Menon".into(),
            slot_minutes,
            availability: WeeklyAvailability::parse("availability", &availability, slot_minutes)
                .unwrap(),
            days_off: Vec::new(),
        }
    }

    fn date(s: &str) -> NaiveDate {
        parse_date("date", s).unwrap()
    }

    #[test]
    fn morning_and_evening_sessions_number_their_slots_from_0_and_1000() {
        let d = doctor(
            10,
            json!({"tue": [{"from": "17:00", "to": "19:00"}, {"from": "09:00", "to": "13:00"}]}),
        );
        let day = d.day_schedule(date("2026-12-01")); // a Tuesday
        assert_eq!(day.sessions.len(), 2);
        assert_eq!(day.sessions[0].slot_count, 24);
        let evening = day.session_of(SlotIndex::from_parts(1, 3)).unwrap();
        assert_eq!(
            evening.start_of(3).time().format("%H:%M").to_string(),
            "17:30"
        );
        assert!(day.session_of(SlotIndex::from_parts(0, 24)).is_none());
        assert!(day.session_of(SlotIndex::from_parts(2, 0)).is_none());
    }

    #[test]
    fn a_day_off_has_no_sessions() {
        let mut d = doctor(10, json!({"tue": [{"from": "09:00", "to": "13:00"}]}));
        d.days_off =
            parse_days_off("dateOverrides", &json!({"2026-12-01": {"off": true}})).unwrap();
        assert!(d.day_schedule(date("2026-12-01")).is_day_off());
        assert!(!d.day_schedule(date("2026-12-08")).is_day_off());
    }

    #[test]
    fn bad_schedules_name_the_field_to_fix() {
        let cases = [
            (json!({"funday": []}), "availability.funday"),
            (
                json!({"mon": [{"from": "13:00", "to": "09:00"}]}),
                "availability.mon[0]",
            ),
            (
                json!({"mon": [{"from": "9am", "to": "13:00"}]}),
                "availability.mon[0].from",
            ),
            (
                json!({"mon": [{"from": "09:00", "to": "09:05"}]}),
                "availability.mon[0]",
            ),
            (
                json!({"mon": [{"from": "09:00", "to": "12:00"}, {"from": "11:00", "to": "13:00"}]}),
                "availability.mon",
            ),
            (json!([]), "availability"),
        ];
        for (raw, field) in cases {
            let err = WeeklyAvailability::parse("availability", &raw, 10).unwrap_err();
            assert_eq!(err.field, field, "{raw}");
        }
    }

    #[test]
    fn impossible_dates_are_refused() {
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "18 January 2026",
            "2026-1-5",
            "",
        ] {
            assert!(parse_date("date", bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn slot_index_round_trips_through_session_and_position(session in 0u32..12, k in 0u32..1000) {
            let slot = SlotIndex::from_parts(session, k);
            prop_assert_eq!(slot.session(), session);
            prop_assert_eq!(slot.position(), k);
            prop_assert_eq!(SlotIndex::parse("s", i64::from(slot.value())).unwrap(), slot);
        }

        #[test]
        fn slot_start_is_session_start_plus_k_slots(minutes in 1u32..=60, k in 0u32..24) {
            let d = doctor(minutes, json!({"tue": [{"from": "09:00", "to": "13:00"}]}));
            let day = d.day_schedule(date("2026-12-01"));
            let session = &day.sessions[0];
            prop_assume!(k < session.slot_count);
            let start = session.start_of(k);
            prop_assert_eq!((start - date("2026-12-01").and_hms_opt(9, 0, 0).unwrap()).num_minutes(), i64::from(k * minutes));
        }
    }
}
