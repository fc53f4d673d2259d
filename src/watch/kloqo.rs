//! One Kloqo appointment document (Firestore, as the clinic app writes it) read into a
//! [`WatchedAppointment`]. Lenient where Kloqo has varied between versions (the date's
//! spelling, two timestamp encodings), strict where detection depends on the value
//! (ids, date, slot), and every error names the field as the document spells it.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;

use chrono::{DateTime, Month, NaiveDate, Utc};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::schedule::parse_date;
use crate::domain::{ClinicId, DoctorId, EventOrder, FieldError, Status, WatchedAppointment};

/// Firestore ids are 20 characters; other apps forwarding documents may use UUIDs or
/// longer keys, so the bound only stops abuse.
const MAX_DOCUMENT_ID_CHARS: usize = 128;
/// Status, token and channel labels end up in alerts (SMS) and logs.
const MAX_LABEL_CHARS: usize = 128;
/// How Kloqo marks a break placeholder: it occupies its slot but is no patient's token.
const BREAK_TOKEN: &str = "Break";
const BREAK_BOOKED_VIA: &str = "BreakBlock";
const FIRESTORE_TIMESTAMP_TYPE: &str = "firestore/timestamp/1.0";
const DATE_FORMS: &str = "must be a date written like \"18 January 2026\" or \"2026-01-18\"";

/// Reads a document that carries its own `id` (an export file, a forwarded write).
pub fn parse_document(doc: &Value) -> Result<WatchedAppointment, FieldError> {
    let fields = object(doc)?;
    let slot_fields = SlotFields::of(fields);
    let id = appointment_id(&slot_fields)?.to_owned();
    parse_fields(id, fields, &slot_fields, doc)
}

/// Reads a document whose id comes from elsewhere (the URL of `PUT …/{id}`). A body
/// `id` may be left out; if present it must be the same, so a client cannot mirror a
/// document under one id while its body claims another.
pub fn parse_document_with_id(id: &str, doc: &Value) -> Result<WatchedAppointment, FieldError> {
    let fields = object(doc)?;
    let slot_fields = SlotFields::of(fields);
    let id = document_id("id", id)?;
    if optional_str(&slot_fields.id, "id")?.is_some_and(|body_id| body_id != id) {
        return Err(FieldError::new(
            "id",
            "must be the id in the URL, or be left out of the body",
        ));
    }
    parse_fields(id.to_owned(), fields, &slot_fields, doc)
}

fn parse_fields(
    id: String,
    fields: &Map<String, Value>,
    slot_fields: &SlotFields<'_>,
    doc: &Value,
) -> Result<WatchedAppointment, FieldError> {
    let held = slot_holder(slot_fields)?;
    let clinic_id = ClinicId::parse("clinicId", held.clinic_id)?;
    let doctor_id = held.doctor.key()?;
    let session_index = get(fields, "sessionIndex")
        .map(|v| index("sessionIndex", &Json::from(v)))
        .transpose()?;
    Ok(WatchedAppointment {
        id,
        clinic_id,
        doctor_id,
        date: held.date,
        session_index,
        slot_index: held.slot_index,
        token_number: held.token_number.map(str::to_owned),
        status: held.status.to_owned(),
        occupying: held.occupying,
        is_break: held.is_break,
        booked_via: held.booked_via.map(str::to_owned),
        created_at: timestamp(fields, "createdAt")?,
        updated_at: timestamp(fields, "updatedAt")?,
        update_time: timestamp(fields, "updateTime")?,
        document: doc.clone(),
    })
}

/// The [`EventOrder`] of a document, its times read as [`parse_document`]
/// reads them (`updateTime`, else `updatedAt`, else `createdAt`); for `audit --file`,
/// which reads them only for an id listed more than once.
pub fn document_order(doc: &Value) -> Result<EventOrder, FieldError> {
    let fields = object(doc)?;
    let version = timestamp(fields, "updateTime")?
        .or(timestamp(fields, "updatedAt")?)
        .or(timestamp(fields, "createdAt")?)
        .map(|t| t.timestamp_micros());
    let status = get(fields, "status").and_then(Value::as_str).unwrap_or("");
    Ok(EventOrder::of(version, status, doc))
}

/// A JSON value as the rules below read it: scalars as written, arrays and objects
/// only by kind. Borrowed, so `audit --file` can read a line without building a tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Any other number, including integers beyond `i64`.
    Float(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Json<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "true or false",
            Json::Int(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array => "an array",
            Json::Object => "an object",
        }
    }
}

impl<'a> From<&'a Value> for Json<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map_or_else(|| Json::Float(n.as_f64().unwrap_or(f64::NAN)), Json::Int),
            Value::String(s) => Json::Str(Cow::Borrowed(s)),
            Value::Array(_) => Json::Array,
            Value::Object(_) => Json::Object,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor(std::marker::PhantomData))
    }
}

struct JsonVisitor<'a>(std::marker::PhantomData<Json<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for JsonVisitor<'a> {
    type Value = Json<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'a>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'a>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'a>, E> {
        Ok(Json::Int(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'a>, E> {
        Ok(i64::try_from(n).map_or(Json::Float(n as f64), Json::Int))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json<'a>, E> {
        Ok(Json::Float(n))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'a>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }

    /// A string with escapes cannot be borrowed from the input.
    fn visit_str<E>(self, s: &str) -> Result<Json<'a>, E> {
        Ok(Json::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Json<'a>, A::Error> {
        while items.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Json<'a>, A::Error> {
        while entries.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Json::Object)
    }
}

/// The fields of an appointment document that say which slot and token it holds, by
/// their names in Kloqo's documents and in the API. `null` counts as absent, as
/// Firestore exports write deleted or unset fields as `null` (`bufferedAt: null` in
/// the samples). Read straight from a JSON Lines line, other fields skipped, by
/// `audit::skim` or, where it is unsure, by serde.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotFields<'a> {
    #[serde(borrow)]
    pub id: Option<Json<'a>>,
    #[serde(borrow)]
    pub clinic_id: Option<Json<'a>>,
    #[serde(borrow)]
    pub doctor_id: Option<Json<'a>>,
    #[serde(borrow)]
    pub date: Option<Json<'a>>,
    #[serde(borrow)]
    pub slot_index: Option<Json<'a>>,
    #[serde(borrow)]
    pub status: Option<Json<'a>>,
    #[serde(borrow)]
    pub token_number: Option<Json<'a>>,
    #[serde(borrow)]
    pub booked_via: Option<Json<'a>>,
    #[serde(borrow)]
    pub cancelled_by_break: Option<Json<'a>>,
    /// The doctor's name: the key of a document that has no `doctorId`.
    #[serde(borrow)]
    pub doctor: Option<Json<'a>>,
}

impl<'a> SlotFields<'a> {
    /// The fields of a document already read into a tree.
    pub fn from_document(doc: &'a Value) -> Result<Self, FieldError> {
        object(doc).map(SlotFields::of)
    }

    fn of(fields: &'a Map<String, Value>) -> Self {
        let mut slot_fields = SlotFields::default();
        for (name, value) in fields {
            if let Some(field) = slot_fields.field_mut(name) {
                *field = Some(value).filter(|v| !v.is_null()).map(Json::from);
            }
        }
        slot_fields
    }

    /// The names of these fields as documents spell them, in the order of
    /// [`SlotFields::field_at`].
    pub const NAMES: [&'static str; 10] = [
        "id",
        "clinicId",
        "doctorId",
        "date",
        "slotIndex",
        "status",
        "tokenNumber",
        "bookedVia",
        "cancelledByBreak",
        "doctor",
    ];

    /// Where the field named `name` goes, when it is one of these.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut Option<Json<'a>>> {
        let index = Self::NAMES.iter().position(|n| *n == name)?;
        self.field_at(index)
    }

    /// The field named `NAMES[index]`.
    pub fn field_at(&mut self, index: usize) -> Option<&mut Option<Json<'a>>> {
        Some(match index {
            0 => &mut self.id,
            1 => &mut self.clinic_id,
            2 => &mut self.doctor_id,
            3 => &mut self.date,
            4 => &mut self.slot_index,
            5 => &mut self.status,
            6 => &mut self.token_number,
            7 => &mut self.booked_via,
            8 => &mut self.cancelled_by_break,
            9 => &mut self.doctor,
            _ => return None,
        })
    }
}

/// What a document says about the slot and the token it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotHolder<'a> {
    /// As written: [`ClinicId::parse`] and [`DoctorId::parse`] read them, so readers
    /// that meet one id millions of times can parse it once.
    pub clinic_id: &'a str,
    pub doctor: DoctorRef<'a>,
    pub date: NaiveDate,
    pub slot_index: u32,
    pub status: &'a str,
    /// `None` for a break placeholder: it holds its slot but no patient's token.
    pub token_number: Option<&'a str>,
    pub booked_via: Option<&'a str>,
    pub is_break: bool,
    /// Per [`Status::occupies`], and not moved away by a break.
    pub occupying: bool,
}

/// Which doctor a document is of: its `doctorId`, or, without one, its `doctor` (the
/// name), as Kloqo's own duplicate checks key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoctorRef<'a> {
    Id(&'a str),
    Name(&'a str),
}

impl DoctorRef<'_> {
    /// The doctor's key: the id, or [`DoctorId::by_name`].
    pub fn key(&self) -> Result<DoctorId, FieldError> {
        match self {
            DoctorRef::Id(id) => DoctorId::parse("doctorId", id),
            DoctorRef::Name(name) => DoctorId::by_name("doctor", name),
        }
    }

    /// The key as text, for readers that meet one doctor many times and parse it once.
    pub fn key_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            DoctorRef::Id(id) => std::borrow::Cow::Borrowed(id),
            DoctorRef::Name(name) => {
                std::borrow::Cow::Owned(format!("{}{}", DoctorId::BY_NAME, name.trim()))
            }
        }
    }
}

/// The one reading of which slot and token a Kloqo document holds, shared by the
/// watch API, `watch import` and `audit --file`, so that they cannot disagree on
/// what a duplicate is.
pub fn slot_holder<'a>(fields: &'a SlotFields<'_>) -> Result<SlotHolder<'a>, FieldError> {
    let clinic_id = required_str(&fields.clinic_id, "clinicId")?;
    let doctor = match (
        optional_str(&fields.doctor_id, "doctorId")?,
        optional_str(&fields.doctor, "doctor")?,
    ) {
        (Some(id), _) => DoctorRef::Id(id),
        (None, Some(name)) => DoctorRef::Name(name),
        (None, None) => {
            return Err(FieldError::new(
                "doctorId",
                "is required (or doctor, the doctor's name, to key the document by name)",
            ))
        }
    };
    let date = kloqo_date("date", required_str(&fields.date, "date")?)?;
    let slot_index = index("slotIndex", required(&fields.slot_index, "slotIndex")?)?;
    let status = label("status", required_str(&fields.status, "status")?)?;
    if status.is_empty() {
        return Err(FieldError::new("status", "must not be empty"));
    }
    let token_number = optional_str(&fields.token_number, "tokenNumber")?
        .map(|t| label("tokenNumber", t))
        .transpose()?;
    let booked_via = optional_str(&fields.booked_via, "bookedVia")?
        .map(|b| label("bookedVia", b))
        .transpose()?;
    let is_break = token_number == Some(BREAK_TOKEN) || booked_via == Some(BREAK_BOOKED_VIA);
    // When Kloqo inserts a break it moves the patients behind it to later slots and
    // marks their old rows `cancelledByBreak: true`, often with status Completed:
    // such a row no longer holds its slot, whatever its status says.
    let moved_by_break = !is_break && fields.cancelled_by_break == Some(Json::Bool(true));
    Ok(SlotHolder {
        clinic_id,
        doctor,
        date,
        slot_index,
        status,
        token_number: token_number.filter(|_| !is_break),
        booked_via,
        is_break,
        occupying: Status::occupies(status) && !moved_by_break,
    })
}

/// The document's own `id`, checked as [`parse_document`] checks it.
pub fn appointment_id<'a>(fields: &'a SlotFields<'_>) -> Result<&'a str, FieldError> {
    document_id("id", required_str(&fields.id, "id")?)
}

fn object(doc: &Value) -> Result<&Map<String, Value>, FieldError> {
    doc.as_object().ok_or_else(|| {
        FieldError::new(
            "document",
            format!(
                "must be a JSON object (one appointment document), not {}",
                Json::from(doc).kind()
            ),
        )
    })
}

/// A field's value; `null` counts as absent (see [`SlotFields`]).
fn get<'a>(fields: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    fields.get(field).filter(|v| !v.is_null())
}

fn required<'v, 'a>(value: &'v Option<Json<'a>>, field: &str) -> Result<&'v Json<'a>, FieldError> {
    value
        .as_ref()
        .ok_or_else(|| FieldError::new(field, "is required"))
}

fn required_str<'v>(value: &'v Option<Json<'_>>, field: &str) -> Result<&'v str, FieldError> {
    string(field, required(value, field)?)
}

fn optional_str<'v>(
    value: &'v Option<Json<'_>>,
    field: &str,
) -> Result<Option<&'v str>, FieldError> {
    value.as_ref().map(|v| string(field, v)).transpose()
}

fn string<'v>(field: &str, value: &'v Json<'_>) -> Result<&'v str, FieldError> {
    match value {
        Json::Str(s) => Ok(s),
        other => Err(FieldError::new(
            field,
            format!("must be a string, not {}", other.kind()),
        )),
    }
}

/// A document id: checked, not copied (most are never needed again).
fn document_id<'a>(field: &str, raw: &'a str) -> Result<&'a str, FieldError> {
    if raw.is_empty() || !short_plain_text(raw, MAX_DOCUMENT_ID_CHARS) {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_DOCUMENT_ID_CHARS} characters with no control characters"),
        ));
    }
    Ok(raw)
}

/// A label kept as the app wrote it (not trimmed: the mirror is verbatim), but bounded
/// and free of control characters since it ends up in alerts and logs.
fn label<'a>(field: &str, raw: &'a str) -> Result<&'a str, FieldError> {
    if !short_plain_text(raw, MAX_LABEL_CHARS) {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_LABEL_CHARS} characters with no control characters"),
        ));
    }
    Ok(raw)
}

/// At most `max` characters, none of them a control character.
fn short_plain_text(raw: &str, max: usize) -> bool {
    // Ids and labels are nearly always printable ASCII, where bytes are characters.
    if raw.len() <= max && raw.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return true;
    }
    raw.chars().count() <= max && !raw.chars().any(char::is_control)
}

/// A whole number as JSON holds it. `5.0` is accepted: JavaScript and Python writers
/// may spell an integer that way, and the value is unambiguous.
fn integer(value: &Json<'_>) -> Option<i64> {
    match value {
        Json::Int(n) => Some(*n),
        Json::Float(f) if f.fract() == 0.0 && f.abs() < 2f64.powi(53) => Some(*f as i64),
        _ => None,
    }
}

/// `slotIndex` / `sessionIndex`: a whole number, 0 or more.
fn index(field: &str, value: &Json<'_>) -> Result<u32, FieldError> {
    if let Some(n) = integer(value) {
        return u32::try_from(n).map_err(|_| {
            FieldError::new(
                field,
                format!("must be a whole number from 0 to {}", u32::MAX),
            )
        });
    }
    let message = match value {
        // A quoted number is the commonest mistake in hand-made files: say so.
        Json::Str(s) if s.trim().parse::<u64>().is_ok() => {
            format!(
                "must be a number, not a string: write {}, not \"{s}\"",
                s.trim()
            )
        }
        _ => format!("must be a whole number 0 or more, not {}", value.kind()),
    };
    Err(FieldError::new(field, message))
}

/// Kloqo V1 writes `"18 January 2026"` (day not zero-padded: `"8 January 2026"`),
/// Kloqo V2 writes ISO `"2026-01-18"`.
fn kloqo_date(field: &str, raw: &str) -> Result<NaiveDate, FieldError> {
    if raw.as_bytes().get(4) == Some(&b'-') {
        return parse_date(field, raw)
            .map_err(|_| FieldError::new(field, format!("{DATE_FORMS}, and be a real day")));
    }
    let (day, month, year) =
        long_date_parts(raw).ok_or_else(|| FieldError::new(field, DATE_FORMS))?;
    NaiveDate::from_ymd_opt(year, month.number_from_month(), day).ok_or_else(|| {
        let month = month.name();
        FieldError::new(
            field,
            format!("is not a real date: {month} {year} has no day {day}"),
        )
    })
}

/// `"18 January 2026"` as its parts: a 1–2 digit day, an English month name, a 4-digit
/// year, one space apart.
fn long_date_parts(raw: &str) -> Option<(u32, Month, i32)> {
    let digits = |s: &str, len: RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    let mut parts = raw.split(' ');
    let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !digits(day, 1..=2) || !digits(year, 4..=4) {
        return None;
    }
    Some((day.parse().ok()?, month.parse().ok()?, year.parse().ok()?))
}

/// `createdAt` / `updatedAt`: absent, an RFC 3339 string, or a Firestore timestamp in
/// either JSON encoding: the web SDK's `Timestamp.toJSON()`
/// `{"type": "firestore/timestamp/1.0", "seconds", "nanoseconds"}`, or the Admin SDK's
/// object serialised as is, `{"_seconds", "_nanoseconds"}`.
fn timestamp(
    fields: &Map<String, Value>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, FieldError> {
    let Some(value) = get(fields, field) else {
        return Ok(None);
    };
    let instant = match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                FieldError::new(
                    field,
                    "must be an RFC 3339 time such as 2026-01-18T09:30:00Z, or a Firestore timestamp",
                )
            })?,
        Value::Object(ts) => firestore_timestamp(field, ts)?,
        other => {
            return Err(FieldError::new(
                field,
                format!(
                    "must be a Firestore timestamp or an RFC 3339 string, not {}",
                    Json::from(other).kind()
                ),
            ))
        }
    };
    check_year(field, instant)?;
    Ok(Some(instant))
}

/// Refuses a time outside [`EARLIEST_YEAR`]..=[`LATEST_YEAR`].
pub fn check_year(field: &str, instant: DateTime<Utc>) -> Result<(), FieldError> {
    if !(EARLIEST_YEAR..=LATEST_YEAR).contains(&chrono::Datelike::year(&instant)) {
        return Err(FieldError::new(
            field,
            format!("must be a time between the years {EARLIEST_YEAR} and {LATEST_YEAR}"),
        ));
    }
    Ok(())
}

/// The years a document's own timestamps may fall in: a booking app's data, not a
/// calendar's; outside them a value is a mistake, and one far in the future would
/// outrank every later real update.
pub const EARLIEST_YEAR: i32 = 1900;
pub const LATEST_YEAR: i32 = 2200;

fn firestore_timestamp(field: &str, ts: &Map<String, Value>) -> Result<DateTime<Utc>, FieldError> {
    let (seconds_key, nanos_key) = if ts.contains_key("_seconds") {
        ("_seconds", "_nanoseconds")
    } else {
        ("seconds", "nanoseconds")
    };
    if ts
        .get("type")
        .is_some_and(|t| t != FIRESTORE_TIMESTAMP_TYPE)
    {
        return Err(FieldError::new(
            format!("{field}.type"),
            format!("must be \"{FIRESTORE_TIMESTAMP_TYPE}\""),
        ));
    }
    let seconds = ts
        .get(seconds_key)
        .ok_or_else(|| FieldError::new(format!("{field}.{seconds_key}"), "is required"))
        .and_then(|v| {
            integer(&Json::from(v)).ok_or_else(|| {
                FieldError::new(
                    format!("{field}.{seconds_key}"),
                    "must be a whole number of seconds since 1970-01-01 UTC",
                )
            })
        })?;
    // Firestore always writes both parts; a missing nanosecond part means a whole second.
    let nanos = match ts.get(nanos_key) {
        None => 0,
        Some(v) => integer(&Json::from(v))
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n < 1_000_000_000)
            .ok_or_else(|| {
                FieldError::new(
                    format!("{field}.{nanos_key}"),
                    "must be a whole number from 0 to 999999999",
                )
            })?,
    };
    DateTime::from_timestamp(seconds, nanos).ok_or_else(|| {
        FieldError::new(
            format!("{field}.{seconds_key}"),
            "is outside the range of representable times",
        )
    })
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kloqo");

    /// The sample exports: `appointments.json` and every file of `history/`. A missing
    /// directory fails the test (they are part of the repository, in `tests/data/`).
    pub(crate) fn sample_exports() -> Vec<std::path::PathBuf> {
        let history = Path::new(SAMPLES).join("history");
        let mut files: Vec<_> = std::fs::read_dir(&history)
            .unwrap_or_else(|e| panic!("{}: {e}", history.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "no exports in {}", history.display());
        files.sort();
        files.insert(0, Path::new(SAMPLES).join("appointments.json"));
        files
    }

    fn appointment() -> Value {
        json!({
            "id": "2CBFdD7IZrmpOAbOXXIT",
            "clinicId": "LhfG8x4SZZg1BLmCkpYF",
            "doctorId": "doc-1766066333627-yjug38zsr",
            "date": "18 January 2026",
            "sessionIndex": 0,
            "slotIndex": 10,
            "numericToken": 11,
            "tokenNumber": "A1-011",
            "status": "Pending",
            "bookedVia": "Online",
            "createdAt": {"type": "firestore/timestamp/1.0", "seconds": 1768726393, "nanoseconds": 493000000}
        })
    }

    fn with(mut doc: Value, field: &str, value: Value) -> Value {
        doc[field] = value;
        doc
    }

    fn without(mut doc: Value, field: &str) -> Value {
        doc.as_object_mut().unwrap().remove(field);
        doc
    }

    fn field_of_error(doc: &Value) -> String {
        parse_document(doc).expect_err("accepted").field
    }

    #[test]
    fn every_document_of_the_sample_exports_parses() {
        let (mut documents, mut breaks) = (0, 0);
        for path in sample_exports() {
            let text = std::fs::read_to_string(&path).unwrap();
            let export: Vec<Value> = serde_json::from_str(&text).unwrap();
            assert!(!export.is_empty(), "{}", path.display());
            for doc in &export {
                // Names and phones are personal data: on failure show the id and the error only.
                let parsed = parse_document(doc)
                    .unwrap_or_else(|e| panic!("{} document {}: {e}", path.display(), doc["id"]));
                assert_eq!(&parsed.document, doc);
                assert!(parsed.created_at.is_some());
                if parsed.is_break {
                    breaks += 1;
                    assert!(parsed.occupying && parsed.token_number.is_none());
                } else {
                    assert!(parsed.token_number.is_some());
                }
            }
            documents += export.len();
        }
        assert!(
            documents > 200 && breaks == 4,
            "{documents} documents, {breaks} breaks"
        );
    }

    #[test]
    fn each_field_name_is_the_one_serde_reads_into_that_field() {
        for (index, name) in SlotFields::NAMES.iter().enumerate() {
            let line = format!("{{\"{name}\": 7}}");
            let mut read: SlotFields<'_> = serde_json::from_str(&line).unwrap();
            assert_eq!(
                read.field_at(index),
                Some(&mut Some(Json::Int(7))),
                "{name}"
            );
            assert_eq!(read.field_mut(name), Some(&mut Some(Json::Int(7))));
        }
    }

    #[test]
    fn a_document_read_as_a_line_holds_the_same_slot_as_read_into_a_tree() {
        // Escaped text cannot be borrowed from the line: it is copied, and reads the same.
        let escaped = with(appointment(), "tokenNumber", json!("A1-\"011\""));
        let mut documents = vec![escaped];
        for path in sample_exports() {
            let text = std::fs::read_to_string(&path).unwrap();
            documents.extend(serde_json::from_str::<Vec<Value>>(&text).unwrap());
        }
        for doc in &documents {
            let line = doc.to_string();
            let streamed: SlotFields<'_> = serde_json::from_str(&line).unwrap();
            let tree = SlotFields::of(doc.as_object().unwrap());
            assert_eq!(slot_holder(&streamed), slot_holder(&tree), "{}", doc["id"]);
            assert_eq!(appointment_id(&streamed), appointment_id(&tree));
        }
        let quoted: SlotFields<'_> =
            serde_json::from_str(r#"{"slotIndex": "5", "bufferedAt": null, "x": [{"y": 1}]}"#)
                .unwrap();
        assert_eq!(quoted.slot_index, Some(Json::Str("5".into())));
    }

    #[test]
    fn a_kloqo_document_gives_its_slot_token_and_occupancy() {
        let parsed = parse_document(&appointment()).unwrap();
        assert_eq!(parsed.id, "2CBFdD7IZrmpOAbOXXIT");
        assert_eq!(parsed.clinic_id.as_str(), "LhfG8x4SZZg1BLmCkpYF");
        assert_eq!(parsed.date, NaiveDate::from_ymd_opt(2026, 1, 18).unwrap());
        assert_eq!((parsed.session_index, parsed.slot_index), (Some(0), 10));
        assert_eq!(parsed.token_number.as_deref(), Some("A1-011"));
        assert!(parsed.occupying && !parsed.is_break);
        assert_eq!(parsed.booked_via.as_deref(), Some("Online"));

        for (status, occupying) in [("Cancelled", false), ("No-show", false), ("Skipped", true)] {
            let parsed = parse_document(&with(appointment(), "status", json!(status))).unwrap();
            assert_eq!(parsed.occupying, occupying, "{status}");
        }
    }

    #[test]
    fn both_firestore_timestamp_encodings_and_rfc_3339_give_the_same_instant() {
        let expected = DateTime::from_timestamp(1768726393, 493_000_000);
        for created_at in [
            json!({"type": "firestore/timestamp/1.0", "seconds": 1768726393, "nanoseconds": 493000000}),
            json!({"_seconds": 1768726393, "_nanoseconds": 493000000}),
            json!("2026-01-18T08:53:13.493Z"),
            json!("2026-01-18T14:23:13.493+05:30"),
        ] {
            let doc = with(appointment(), "createdAt", created_at.clone());
            assert_eq!(
                parse_document(&doc).unwrap().created_at,
                expected,
                "{created_at}"
            );
        }
        let doc = with(appointment(), "updatedAt", json!(null));
        assert_eq!(parse_document(&doc).unwrap().updated_at, None);
        let doc = without(appointment(), "createdAt");
        assert_eq!(parse_document(&doc).unwrap().created_at, None);
    }

    #[test]
    fn a_malformed_timestamp_names_the_part_to_fix() {
        let cases = [
            (json!(1768726393), "createdAt"),
            (json!("18 January 2026 10:00"), "createdAt"),
            (
                json!({"seconds": "1768726393", "nanoseconds": 0}),
                "createdAt.seconds",
            ),
            (
                json!({"_seconds": 1768726393, "_nanoseconds": 2_000_000_000u64}),
                "createdAt._nanoseconds",
            ),
            (
                json!({"type": "geo/point", "seconds": 1, "nanoseconds": 0}),
                "createdAt.type",
            ),
            (json!({"nanoseconds": 0}), "createdAt.seconds"),
        ];
        for (created_at, field) in cases {
            let doc = with(appointment(), "createdAt", created_at.clone());
            assert_eq!(field_of_error(&doc), field, "{created_at}");
        }
    }

    #[test]
    fn dates_are_read_in_kloqo_long_form_and_in_iso() {
        for (raw, (y, m, d)) in [
            ("18 January 2026", (2026, 1, 18)),
            ("8 January 2026", (2026, 1, 8)),
            ("29 February 2028", (2028, 2, 29)),
            ("2026-01-18", (2026, 1, 18)),
        ] {
            let parsed = parse_document(&with(appointment(), "date", json!(raw))).unwrap();
            assert_eq!(
                parsed.date,
                NaiveDate::from_ymd_opt(y, m, d).unwrap(),
                "{raw}"
            );
        }
    }

    #[test]
    fn an_impossible_or_unreadable_date_is_refused_naming_date() {
        let err =
            parse_document(&with(appointment(), "date", json!("31 February 2026"))).unwrap_err();
        assert_eq!(err.field, "date");
        assert_eq!(
            err.message,
            "is not a real date: February 2026 has no day 31"
        );
        for bad in [
            json!("2026-02-30"),
            json!("18 Janvier 2026"),
            json!("January 18, 2026"),
            json!("18/01/2026"),
            json!("018 January 2026"),
            json!("18 January 20260"),
            json!(""),
            json!(20260118),
        ] {
            assert_eq!(
                field_of_error(&with(appointment(), "date", bad.clone())),
                "date",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_missing_or_quoted_slot_index_is_named() {
        let err = parse_document(&without(appointment(), "slotIndex")).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.message.as_str()),
            ("slotIndex", "is required")
        );

        let err = parse_document(&with(appointment(), "slotIndex", json!("5"))).unwrap_err();
        assert_eq!(err.field, "slotIndex");
        assert!(err.message.contains("not a string"), "{}", err.message);

        for bad in [json!(-1), json!(1.5), json!(5_000_000_000u64), json!([5])] {
            let doc = with(appointment(), "slotIndex", bad.clone());
            assert_eq!(field_of_error(&doc), "slotIndex", "{bad}");
        }
        let doc = with(appointment(), "sessionIndex", json!("0"));
        assert_eq!(field_of_error(&doc), "sessionIndex");
        assert_eq!(
            parse_document(&with(appointment(), "slotIndex", json!(5.0)))
                .unwrap()
                .slot_index,
            5
        );
    }

    #[test]
    fn missing_or_malformed_required_fields_are_named() {
        for field in ["id", "clinicId", "doctorId", "date", "status"] {
            assert_eq!(field_of_error(&without(appointment(), field)), field);
            assert_eq!(field_of_error(&with(appointment(), field, json!(7))), field);
        }
        let cases = [
            ("id", json!("")),
            ("id", json!("a\nb")),
            ("id", json!("x".repeat(129))),
            ("clinicId", json!("../etc")),
            ("doctorId", json!("dr asha")),
            ("status", json!("")),
            ("tokenNumber", json!(11)),
            ("bookedVia", json!("Online\u{1b}[2J")),
        ];
        for (field, value) in cases {
            assert_eq!(field_of_error(&with(appointment(), field, value)), field);
        }
        assert_eq!(field_of_error(&json!(["not", "a", "document"])), "document");
    }

    #[test]
    fn unknown_fields_and_unknown_statuses_are_kept_verbatim() {
        let doc = with(
            with(appointment(), "status", json!("Rescheduled?")),
            "walkInPatientsAhead",
            json!({"count": 3, "list": [1, "two", null], "bufferedAt": null}),
        );
        let parsed = parse_document(&doc).unwrap();
        assert_eq!(parsed.document, doc);
        assert_eq!(parsed.status, "Rescheduled?");
        assert!(parsed.occupying, "an unknown status is taken to occupy");
    }

    #[test]
    fn break_blocks_occupy_their_slot_but_hold_no_token() {
        let by_token = with(appointment(), "tokenNumber", json!("Break"));
        let by_channel = with(appointment(), "bookedVia", json!("BreakBlock"));
        for doc in [by_token, by_channel] {
            let parsed = parse_document(&with(doc, "status", json!("Completed"))).unwrap();
            assert!(parsed.is_break && parsed.occupying);
            assert_eq!(parsed.token_number, None);
        }
    }

    #[test]
    fn a_patient_moved_by_a_break_no_longer_holds_the_old_slot() {
        let moved = with(
            with(appointment(), "status", json!("Completed")),
            "cancelledByBreak",
            json!(true),
        );
        assert!(!parse_document(&moved).unwrap().occupying);
        let block = with(
            with(moved, "tokenNumber", json!("Break")),
            "bookedVia",
            json!("BreakBlock"),
        );
        assert!(
            parse_document(&block).unwrap().occupying,
            "the break itself holds the slot"
        );
    }

    #[test]
    fn a_document_put_under_a_url_id_must_not_claim_another() {
        let body = without(appointment(), "id");
        let parsed = parse_document_with_id("from-the-url", &body).unwrap();
        assert_eq!(parsed.id, "from-the-url");
        assert_eq!(parsed.document, body, "the body is kept as sent");

        let same = parse_document_with_id("2CBFdD7IZrmpOAbOXXIT", &appointment()).unwrap();
        assert_eq!(same.id, "2CBFdD7IZrmpOAbOXXIT");

        for (url_id, body) in [
            ("another-id", appointment()),
            ("", without(appointment(), "id")),
            ("2CBFdD7IZrmpOAbOXXIT", with(appointment(), "id", json!(42))),
        ] {
            let err = parse_document_with_id(url_id, &body).unwrap_err();
            assert_eq!(err.field, "id", "{url_id:?}");
        }
    }
}
