//! How the store's shared code talks to either database. A [`Statement`] is SQL text
//! with `$n` placeholders (SQLite and PostgreSQL both accept them) and the values
//! bound to them; it runs on a backend's pool ([`Reads`]) or open transaction
//! ([`Tx`]) and its rows decode through [`DecodeRow`]. The capabilities
//! (`store::{records, detection, audit, metrics, dashboard}`) are written once over
//! [`SqlBackend`], the contract each backend (`store::sqlite`, `store::postgres`)
//! implements: its connections, and the few operations that differ.

use std::borrow::Cow;
use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Backend, Booking, BookingOutcome, StoreError};
use crate::domain::{Group, Touched, WatchedAppointment};

/// A value bound to a placeholder. Nulls keep their type: PostgreSQL declares each
/// parameter's type when the statement is prepared.
#[derive(Debug, Clone)]
pub enum Value<'q> {
    Text(Option<Cow<'q, str>>),
    Int(Option<i64>),
    /// For `SMALLINT` columns, which PostgreSQL will not fill from a `BIGINT`.
    SmallInt(Option<i16>),
    Date(Option<NaiveDate>),
    Instant(Option<DateTime<Utc>>),
}

impl<'q> From<&'q str> for Value<'q> {
    fn from(v: &'q str) -> Self {
        Value::Text(Some(Cow::Borrowed(v)))
    }
}

impl<'q> From<&'q String> for Value<'q> {
    fn from(v: &'q String) -> Self {
        Value::Text(Some(Cow::Borrowed(v)))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Some(Cow::Owned(v)))
    }
}

impl<'q> From<Option<&'q str>> for Value<'q> {
    fn from(v: Option<&'q str>) -> Self {
        Value::Text(v.map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Value<'_> {
    fn from(v: Option<String>) -> Self {
        Value::Text(v.map(Cow::Owned))
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<i16> for Value<'_> {
    fn from(v: i16) -> Self {
        Value::SmallInt(Some(v))
    }
}

impl From<NaiveDate> for Value<'_> {
    fn from(v: NaiveDate) -> Self {
        Value::Date(Some(v))
    }
}

impl From<Option<NaiveDate>> for Value<'_> {
    fn from(v: Option<NaiveDate>) -> Self {
        Value::Date(v)
    }
}

impl From<DateTime<Utc>> for Value<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Value::Instant(Some(v))
    }
}

impl From<Option<DateTime<Utc>>> for Value<'_> {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Value::Instant(v)
    }
}

/// SQL text and the values of its placeholders, in order (`$1` first).
#[derive(Debug, Clone)]
pub struct Statement<'q> {
    pub text: Cow<'q, str>,
    pub values: Vec<Value<'q>>,
}

/// A statement with nothing bound yet.
pub fn query<'q>(text: impl Into<Cow<'q, str>>) -> Statement<'q> {
    Statement {
        text: text.into(),
        values: Vec::new(),
    }
}

impl<'q> Statement<'q> {
    pub fn bind(mut self, value: impl Into<Value<'q>>) -> Self {
        self.values.push(value.into());
        self
    }

    pub fn bind_all(mut self, values: impl IntoIterator<Item = Value<'q>>) -> Self {
        self.values.extend(values);
        self
    }

    /// Rows changed.
    pub async fn execute<E: Exec>(self, on: E) -> Result<u64, sqlx::Error> {
        on.execute(self).await
    }

    pub async fn fetch_all<E: Exec>(self, on: E) -> Result<Vec<E::Row>, sqlx::Error> {
        on.fetch_all(self).await
    }

    pub async fn fetch_optional<E: Exec>(self, on: E) -> Result<Option<E::Row>, sqlx::Error> {
        on.fetch_optional(self).await
    }

    pub async fn fetch_one<E: Exec>(self, on: E) -> Result<E::Row, sqlx::Error> {
        on.fetch_optional(self)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// Where a statement runs: `&pool` or `&mut transaction` of either backend.
pub trait Exec: Send {
    type Row: DecodeRow + Send + Sync;
    fn execute(self, s: Statement<'_>) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    fn fetch_all(
        self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
    fn fetch_optional(
        self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;
}

/// A backend's connection pool.
pub trait Reads: Send + Sync {
    type Row: DecodeRow + Send + Sync;
    fn execute(&self, s: Statement<'_>) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    fn fetch_all(
        &self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
    fn fetch_optional(
        &self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;
    /// Hands each row to `each` as it arrives, without holding them all.
    fn for_each_row<'a, F>(
        &'a self,
        s: Statement<'a>,
        each: F,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a
    where
        F: FnMut(&Self::Row) -> Result<(), StoreError> + Send + 'a;
}

/// An open transaction (or savepoint) of a backend; dropped without `commit`, it
/// rolls back.
pub trait Tx: Send {
    type Row: DecodeRow + Send + Sync;
    fn execute(
        &mut self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    fn fetch_all(
        &mut self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
    fn fetch_optional(
        &mut self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;
    fn commit(self) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

impl<P: Reads> Exec for &P {
    type Row = P::Row;
    fn execute(self, s: Statement<'_>) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        Reads::execute(self, s)
    }
    fn fetch_all(
        self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send {
        Reads::fetch_all(self, s)
    }
    fn fetch_optional(
        self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send {
        Reads::fetch_optional(self, s)
    }
}

impl<T: Tx> Exec for &mut T {
    type Row = T::Row;
    fn execute(self, s: Statement<'_>) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        Tx::execute(self, s)
    }
    fn fetch_all(
        self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send {
        Tx::fetch_all(self, s)
    }
    fn fetch_optional(
        self,
        s: Statement<'_>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send {
        Tx::fetch_optional(self, s)
    }
}

/// A statement as sqlx runs it, each value bound with its own type.
pub(super) fn sqlx_query<'q, D>(s: &'q Statement<'q>) -> sqlx::query::Query<'q, D, D::Arguments<'q>>
where
    D: sqlx::Database,
    &'q str: sqlx::Encode<'q, D> + Type<D>,
    Option<&'q str>: sqlx::Encode<'q, D> + Type<D>,
    Option<i64>: sqlx::Encode<'q, D> + Type<D>,
    Option<i16>: sqlx::Encode<'q, D> + Type<D>,
    Option<NaiveDate>: sqlx::Encode<'q, D> + Type<D>,
    Option<DateTime<Utc>>: sqlx::Encode<'q, D> + Type<D>,
{
    let mut q = sqlx::query(&s.text);
    for value in &s.values {
        q = match value {
            Value::Text(Some(v)) => q.bind(v.as_ref()),
            Value::Text(None) => q.bind(None::<&str>),
            Value::Int(v) => q.bind(*v),
            Value::SmallInt(v) => q.bind(*v),
            Value::Date(v) => q.bind(*v),
            Value::Instant(v) => q.bind(*v),
        };
    }
    q
}

/// Rows of either backend decode the same way: both map these Rust types to their
/// columns (TEXT dates on SQLite, DATE and TIMESTAMPTZ on PostgreSQL).
pub trait DecodeRow {
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn date(&self, col: &str) -> Result<NaiveDate, StoreError>;
    fn instant(&self, col: &str) -> Result<DateTime<Utc>, StoreError>;
    fn opt_instant(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
}

impl<R> DecodeRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> NaiveDate: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn date(&self, col: &str) -> Result<NaiveDate, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn instant(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_instant(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.try_get(col)?)
    }
}

/// What a backend is to the shared code: its pools and write transactions, and the
/// operations that differ between SQLite and PostgreSQL. `store::core`,
/// `store::detection`, `store::audit`, `store::metrics` and `store::dashboard`
/// implement the store's traits once for every `SqlBackend`.
pub trait SqlBackend: Send + Sync + 'static {
    const BACKEND: Backend;
    /// What locks a row read for update: `FOR UPDATE` on PostgreSQL, nothing on
    /// SQLite, whose `BEGIN IMMEDIATE` already holds the database's write lock.
    const LOCK_ROW: &'static str;
    type Row: DecodeRow + Send + Sync;
    type Pool: Reads<Row = Self::Row>;
    type Tx: Tx<Row = Self::Row>;

    /// For reads that may see a moment-old state.
    fn reader(&self) -> &Self::Pool;
    /// For writes, and reads that must see every committed write.
    fn writer(&self) -> &Self::Pool;
    fn begin_write(&self) -> impl Future<Output = Result<Self::Tx, sqlx::Error>> + Send;

    /// Commits a booking (SQLite: the group committer; PostgreSQL: a transaction
    /// of its own, retried on serialization failures).
    fn book_committed(&self, booking: Booking) -> impl Future<Output = BookingOutcome> + Send;
    /// Stores watched documents (SQLite: the watched-write committer).
    fn upsert_watched_committed(
        &self,
        source: &str,
        documents: &[WatchedAppointment],
        received_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Vec<bool>, Touched), StoreError>> + Send;
    /// Tells other instances a doctor-day changed (PostgreSQL NOTIFY).
    fn announce_group(&self, group: &Group) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Changed days announced by other instances, when the backend can hear them.
    fn listen_groups(
        &self,
    ) -> impl Future<Output = Option<tokio::sync::mpsc::UnboundedReceiver<Group>>> + Send;
}
