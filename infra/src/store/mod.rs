//! The event log contract every backend keeps (docs/ARCHITECTURE.md, "The log"):
//! atomic appends per stream with an expected version, idempotent retries by event id,
//! a global order readers can trust, catch-up-then-live subscriptions and a SHA-256 hash
//! chained over the global order.

/// The envelope's columns, in the order both SQL backends store them.
macro_rules! event_columns {
    () => {
        "global_position, event_id, stream_id, stream_version, event_type, schema_version, \
         occurred_at, recorded_at, correlation_id, causation_id, actor, payload, prev_hash, hash"
    };
}

pub mod audit;
/// Reads shared by the SQL backends (`$n` placeholders work on both through sqlx).
const READ_STREAM_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3"
);
const READ_ALL_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2"
);

mod batch;
pub mod hash;
pub mod postgres;
pub mod sqlite;
mod subscription;
pub mod transfer;

#[cfg(feature = "eventstoredb")]
pub mod eventstoredb;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the writer expects the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version (1-based).
    Exact(u64),
}

impl ExpectedVersion {
    pub fn admits(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::Exact(v) => current == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// An event as a writer hands it to the store. The store adds versions, positions,
/// `recorded_at` and the hash chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u16,
    pub payload: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// Who caused it: an API key id, an edge id, a device.
    pub actor: String,
}

impl NewEvent {
    /// Wraps a domain event with a fresh UUIDv7 id, itself as its correlation id.
    pub fn from_domain(
        event: &impl domain::DomainEvent,
        occurred_at: DateTime<Utc>,
        actor: &str,
    ) -> Self {
        let encoded = event.encode();
        let event_id = Uuid::now_v7();
        Self {
            event_id,
            event_type: encoded.event_type.to_owned(),
            schema_version: encoded.schema_version,
            payload: encoded.payload,
            occurred_at,
            correlation_id: event_id,
            causation_id: None,
            actor: actor.to_owned(),
        }
    }
}

/// An event as the log holds it: the full envelope (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: u64,
    pub global_position: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor: String,
    pub payload: serde_json::Value,
    /// Hex SHA-256 of the previous event in global order (64 zeros for the first).
    pub prev_hash: String,
    pub hash: String,
}

impl RecordedEvent {
    /// The domain event, upcast to its current schema version.
    pub fn decode(&self) -> Result<domain::Event, domain::DecodeError> {
        domain::Event::decode(&self.event_type, self.schema_version, self.payload.clone())
    }
}

/// Where an append landed. A retried append returns the original result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
    pub first_position: u64,
    pub last_position: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("event id {event_id} is already in the log as part of another append")]
    DuplicateEventId { event_id: Uuid },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("the store's writer has stopped")]
    WriterStopped,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored event at position {position} cannot be read: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("unsupported store url {0:?} (expected sqlite://, postgres:// or esdb://)")]
    UnsupportedUrl(String),
    #[error("EventStoreDB: {0}")]
    EventStoreDb(String),
}

/// The log's contract, identical for every backend.
/// What a backend's hash chain runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainScope {
    /// One chain over the global order, with dense positions (the SQL backends).
    Global,
    /// One chain per stream; hashes cover `global_position = 0`, `recorded_at = occurred_at`
    /// (EventStoreDB, whose `$all` position is assigned after the write).
    PerStream,
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream_id` atomically, if the stream is at `expected`.
    /// Re-appending events whose ids are already in the log returns the original result.
    /// Returns only once the events are durable.
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Several appends made in the given order, as if one after another, but without waiting
    /// for each before queueing the next (group commit takes them together). Used by imports,
    /// where global order must be kept. Each append succeeds or fails on its own.
    async fn append_in_order(
        &self,
        appends: Vec<(String, ExpectedVersion, Vec<NewEvent>)>,
    ) -> Vec<Result<AppendResult, StoreError>> {
        let mut out = Vec::with_capacity(appends.len());
        for (stream_id, expected, events) in appends {
            out.push(self.append(&stream_id, expected, events).await);
        }
        out
    }

    /// Events of one stream with version >= `from_version`, in order, at most `limit`.
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Events with global position > `after`, in global order, at most `limit`.
    /// Position 0 is "before the first event".
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last committed event (0 when empty).
    async fn head_position(&self) -> Result<u64, StoreError>;

    /// Every event after `after`: first the history, then live as events commit. Never skips,
    /// never reorders, never repeats. The stream ends only on an error.
    fn subscribe_all(&self, after: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>>;

    /// Which backend this is, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// What the hash chain runs over.
    fn chain_scope(&self) -> ChainScope {
        ChainScope::Global
    }
}

/// The largest number of events one append may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;

/// Validates what every backend refuses before touching storage.
pub(crate) fn validate_append(stream_id: &str, events: &[NewEvent]) -> Result<(), StoreError> {
    if stream_id.is_empty() || stream_id.len() > 200 {
        return Err(StoreError::InvalidAppend(
            "stream id must be 1 to 200 characters".into(),
        ));
    }
    if events.is_empty() {
        return Err(StoreError::InvalidAppend(
            "an append needs at least one event".into(),
        ));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(StoreError::InvalidAppend(format!(
            "an append may carry at most {MAX_EVENTS_PER_APPEND} events"
        )));
    }
    for e in events {
        if e.event_type.contains('\0') || e.actor.contains('\0') || holds_nul(&e.payload) {
            return Err(StoreError::InvalidAppend(format!(
                "event {} holds a NUL character, which not every backend can store",
                e.event_id
            )));
        }
    }
    let mut ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(StoreError::DuplicateEventId { event_id: w[0] });
    }
    Ok(())
}

fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A row limit as SQL wants it.
pub(crate) fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Timestamps are kept to the microsecond (PostgreSQL's precision) so that what is hashed
/// is exactly what is stored.
pub(crate) fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}
