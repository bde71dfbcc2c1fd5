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
use sqlx::{ConnectOptions, Row};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use super::batch::{self, Append, BatchWriter, KnownEvent, Request, Tail};
use super::hash::canonical_json;
use super::{AppendResult, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

#[derive(Clone)]
pub struct SqliteStore {
    queue: mpsc::Sender<Request>,
    head: watch::Receiver<u64>,
    committed: batch::CommittedBatches,
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
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-65536");
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
        // Readers keep a small page cache and read through mmap instead: SQLite empties a
        // connection's cache whenever another connection has written, and emptying a large one
        // on every read transaction cost more than the reads themselves under write load.
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                options
                    .clone()
                    .read_only(true)
                    .pragma("cache_size", "-2048")
                    .pragma("mmap_size", "1073741824"),
            )
            .await?;
        let (head_tx, head) = watch::channel(head_now.unwrap_or(0) as u64);
        let (queue, rx) = mpsc::channel(8192);
        let (committed, _) = broadcast::channel(batch::COMMITTED_BACKLOG);
        tokio::spawn(batch::run_writer(
            SqliteWriter { conn },
            rx,
            Arc::new(head_tx),
            committed.clone(),
        ));
        tracing::info!(url, "sqlite event store open");
        Ok(Self {
            queue,
            head,
            committed,
            readers,
        })
    }
}

/// Reads the log's tail inside the writing transaction, so another process appending to
/// the same file (an import next to a running server) cannot fork the chain.
struct SqliteWriter {
    conn: SqliteConnection,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    /// One transaction in two round trips to SQLite's thread: `BEGIN IMMEDIATE` (the write
    /// lock, taken before the tail is read) with the reads the batch is decided on, then the
    /// inserts ending in `COMMIT`. Any failure rolls the transaction back.
    async fn write_batch(&mut self, batch: &[Append]) -> Result<batch::Written, StoreError> {
        let written = self.write_in_transaction(batch).await;
        if written.is_err() {
            // Also when BEGIN itself failed (then there is nothing to roll back).
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        written
    }
}

impl SqliteWriter {
    async fn write_in_transaction(
        &mut self,
        batch: &[Append],
    ) -> Result<batch::Written, StoreError> {
        // What the batch is decided on, in one statement: the log's tail, the version of each
        // stream written, and which of the batch's events are in the log already. Whole batches
        // travel as JSON parameters (`json_each`), so the statement is prepared once.
        let mut streams: Vec<&str> = batch.iter().map(|a| a.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let ids: Vec<String> = batch
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.event_id.to_string()))
            .collect();
        let rows = sqlx::query_as::<_, (String, i64, Option<i64>, String, Option<String>)>(
            BEGIN_AND_READ_SQL,
        )
        .bind(json_list(&streams)?)
        .bind(json_list(&ids)?)
        .fetch_all(&mut self.conn)
        .await?;
        let mut tail = Tail::genesis();
        let mut versions = HashMap::new();
        let mut known = HashMap::new();
        for (kind, number, stream_version, text, stream_id) in rows {
            match kind.as_str() {
                "tail" => tail = Tail::from((number, text)),
                "version" => {
                    versions.insert(text, number as u64);
                }
                _ => {
                    known.insert(
                        Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                        KnownEvent {
                            stream_id: stream_id.unwrap_or_default(),
                            stream_version: stream_version.unwrap_or_default() as u64,
                            global_position: number as u64,
                        },
                    );
                }
            }
        }

        let plan = batch::plan(batch, versions, known, tail, Utc::now());
        let mut rows = plan.rows.as_slice();
        while !rows.is_empty() {
            // A few fixed statement shapes, each prepared once and cached by sqlx; the last
            // one commits.
            let take = INSERT_SHAPES
                .into_iter()
                .find(|n| *n <= rows.len())
                .unwrap_or(1);
            let (chunk, rest) = rows.split_at(take);
            rows = rest;
            let mut q = sqlx::query(insert_sql(take, rows.is_empty()));
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
            q.execute(&mut self.conn).await?;
        }
        if plan.rows.is_empty() {
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
        }
        Ok((plan.results, plan.rows))
    }
}

/// Takes the write lock, then reads a batch's starting point as rows `(kind, number, stream_version, text, stream_id)`:
/// `tail` (global position, hash), `version` (a stream's last version, the stream; streams
/// not in the log have no row) and `known` (global position, stream version, event id, stream)
/// for events of the batch already in the log. `?1`: the streams, `?2`: the event ids.
const BEGIN_AND_READ_SQL: &str = "BEGIN IMMEDIATE; \
    SELECT * FROM (SELECT 'tail', global_position, NULL, hash, NULL FROM events \
        ORDER BY global_position DESC LIMIT 1) \
    UNION ALL \
    SELECT 'version', v, NULL, stream, NULL FROM (SELECT s.value AS stream, \
        (SELECT stream_version FROM events WHERE stream_id = s.value \
         ORDER BY stream_version DESC LIMIT 1) AS v FROM json_each(?1) AS s) WHERE v IS NOT NULL \
    UNION ALL \
    SELECT 'known', global_position, stream_version, event_id, stream_id FROM events \
        WHERE event_id IN (SELECT value FROM json_each(?2))";

fn json_list<T: serde::Serialize>(items: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(items).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Rows per INSERT statement: a batch is written in the fewest statements of these shapes.
const INSERT_SHAPES: [usize; 6] = [64, 16, 4, 3, 2, 1];

/// `INSERT ... VALUES (14 placeholders) x rows`, followed by `COMMIT` when `last`; built once
/// per shape.
fn insert_sql(rows: usize, last: bool) -> &'static str {
    type Shapes = Vec<(usize, bool, &'static str)>;
    static SHAPES: std::sync::OnceLock<Shapes> = std::sync::OnceLock::new();
    let shapes = SHAPES.get_or_init(|| {
        let row = format!("({})", ["?"; 14].join(","));
        INSERT_SHAPES
            .into_iter()
            .flat_map(|n| [(n, false), (n, true)])
            .map(|(n, last)| {
                let sql = format!(
                    concat!("INSERT INTO events (", event_columns!(), ") VALUES {}{}"),
                    vec![row.as_str(); n].join(","),
                    if last { "; COMMIT" } else { "" }
                );
                (n, last, &*Box::leak(sql.into_boxed_str()))
            })
            .collect()
    });
    shapes
        .iter()
        .find(|(n, l, _)| *n == rows && *l == last)
        .map(|(_, _, sql)| *sql)
        .expect("a statement is built for every shape")
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

    async fn append_in_order(
        &self,
        appends: Vec<(String, ExpectedVersion, Vec<NewEvent>)>,
    ) -> Vec<Result<AppendResult, StoreError>> {
        batch::submit_in_order(&self.queue, appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        sqlx::query(super::READ_STREAM_SQL)
            .bind(stream_id)
            .bind(from_version as i64)
            .bind(super::sql_limit(max))
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn read_all(&self, after: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        sqlx::query(super::READ_ALL_SQL)
            .bind(after as i64)
            .bind(super::sql_limit(max))
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
        super::subscription::poll_subscription(
            Arc::new(self.clone()),
            self.head.clone(),
            Some(self.committed.subscribe()),
            after,
            Duration::from_millis(500),
        )
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
