//! The embedded default: one SQLite file in WAL mode with `synchronous=FULL`, so a commit
//! is on disk (WAL fsynced) before any append is acknowledged. One writer task owns the
//! only writing connection and group-commits; readers use a pool of read-only connections.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::BoxStream;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::batch::{self, Append, BatchWriter, KnownEvent, Request, Tail};
use super::hash::canonical_json;
use super::{AppendResult, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

/// Rows per INSERT statement (14 parameters each, well under SQLite's variable limit).
const ROWS_PER_INSERT: usize = 64;
/// Ids per `IN (...)` lookup.
const IDS_PER_LOOKUP: usize = 500;

#[derive(Clone)]
pub struct SqliteStore {
    queue: mpsc::Sender<Request>,
    head: watch::Receiver<u64>,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, e.g. `sqlite://data/ringledger.db`,
    /// and applies migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let mut conn = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        let head_now: Option<i64> = sqlx::query_scalar("SELECT MAX(global_position) FROM events")
            .fetch_one(&mut conn)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let (head_tx, head) = watch::channel(head_now.unwrap_or(0) as u64);
        let (queue, rx) = mpsc::channel(8192);
        tokio::spawn(batch::run_writer(
            SqliteWriter { conn },
            rx,
            Arc::new(head_tx),
        ));
        tracing::info!(url, "sqlite event store open");
        Ok(Self {
            queue,
            head,
            readers,
        })
    }
}

/// Reads the log's tail inside the writing transaction, so another process appending to
/// the same file (an import next to a running server) cannot fork the chain.
struct SqliteWriter {
    conn: SqliteConnection,
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write_batch(
        &mut self,
        batch: &[Append],
    ) -> Result<Vec<Result<AppendResult, StoreError>>, StoreError> {
        // IMMEDIATE takes the write lock now, before the tail is read.
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let tail = sqlx::query_as::<_, (i64, String)>(
            "SELECT global_position, hash FROM events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?
        .map_or_else(Tail::genesis, Tail::from);

        let mut streams: Vec<&str> = batch.iter().map(|a| a.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let mut versions = HashMap::new();
        for chunk in streams.chunks(IDS_PER_LOOKUP) {
            let sql = format!(
                "SELECT stream_id, MAX(stream_version) FROM events WHERE stream_id IN ({}) GROUP BY stream_id",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for s in chunk {
                q = q.bind(*s);
            }
            for row in q.fetch_all(&mut *tx).await? {
                versions.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)? as u64);
            }
        }

        let ids: Vec<String> = batch
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.event_id.to_string()))
            .collect();
        let mut known = HashMap::new();
        for chunk in ids.chunks(IDS_PER_LOOKUP) {
            let sql = format!(
                "SELECT event_id, stream_id, stream_version, global_position FROM events WHERE event_id IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&mut *tx).await? {
                let id: String = row.try_get(0)?;
                known.insert(
                    Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    KnownEvent {
                        stream_id: row.try_get(1)?,
                        stream_version: row.try_get::<i64, _>(2)? as u64,
                        global_position: row.try_get::<i64, _>(3)? as u64,
                    },
                );
            }
        }

        let plan = batch::plan(batch, versions, known, tail, Utc::now());
        for chunk in plan.rows.chunks(ROWS_PER_INSERT) {
            let row = format!("({})", placeholders(14));
            let sql = format!(
                concat!("INSERT INTO events (", event_columns!(), ") VALUES {}"),
                vec![row.as_str(); chunk.len()].join(",")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.global_position as i64)
                    .bind(e.event_id.to_string())
                    .bind(e.stream_id.as_str())
                    .bind(e.stream_version as i64)
                    .bind(e.event_type.as_str())
                    .bind(i64::from(e.schema_version))
                    .bind(timestamp(e.occurred_at))
                    .bind(timestamp(e.recorded_at))
                    .bind(e.correlation_id.to_string())
                    .bind(e.causation_id.map(|c| c.to_string()))
                    .bind(e.actor.as_str())
                    .bind(canonical_json(&e.payload))
                    .bind(e.prev_hash.as_str())
                    .bind(e.hash.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(plan.results)
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position = row.try_get::<i64, _>("global_position")? as u64;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt {
        position,
        reason: format!("{what}: {e}"),
    };
    let uuid = |col: &str| -> Result<Uuid, StoreError> {
        let text: String = row.try_get(col)?;
        Uuid::parse_str(&text).map_err(|e| corrupt(col, &e))
    };
    let time = |col: &str| -> Result<DateTime<Utc>, StoreError> {
        let text: String = row.try_get(col)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| corrupt(col, &e))
    };
    let payload: String = row.try_get("payload")?;
    let causation: Option<String> = row.try_get("causation_id")?;
    Ok(RecordedEvent {
        event_id: uuid("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get::<i64, _>("stream_version")? as u64,
        global_position: position,
        event_type: row.try_get("event_type")?,
        schema_version: u16::try_from(row.try_get::<i64, _>("schema_version")?)
            .map_err(|e| corrupt("schema_version", &e))?,
        occurred_at: time("occurred_at")?,
        recorded_at: time("recorded_at")?,
        correlation_id: uuid("correlation_id")?,
        causation_id: causation
            .map(|c| Uuid::parse_str(&c).map_err(|e| corrupt("causation_id", &e)))
            .transpose()?,
        actor: row.try_get("actor")?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", &e))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        batch::submit(&self.queue, stream_id, expected, events).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = concat!("SELECT ", event_columns!(), " FROM events WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?");
        sqlx::query(sql)
            .bind(stream_id)
            .bind(from_version as i64)
            .bind(limit(max))
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn read_all(&self, after: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = concat!("SELECT ", event_columns!(), " FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?");
        sqlx::query(sql)
            .bind(after as i64)
            .bind(limit(max))
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(global_position) FROM events")
            .fetch_one(&self.readers)
            .await?;
        Ok(head.unwrap_or(0) as u64)
    }

    fn subscribe_all(&self, after: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        super::poll_subscription(
            Arc::new(self.clone()),
            self.head.clone(),
            after,
            Duration::from_millis(500),
        )
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
