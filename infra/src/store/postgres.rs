//! The production backend. Each process runs one writer task that group-commits; across
//! processes, every batch takes a transaction-scoped advisory lock before reading the log's
//! tail and assigning positions. The lock is released only after the commit is visible, so
//! a reader can never see position N+1 while N can still commit, whoever writes.
//! `synchronous_commit` is left on: a commit returns once its WAL is flushed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use super::batch::{self, Append, BatchWriter, KnownEvent, Request, Tail};
use super::{AppendResult, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

/// The advisory lock key that serialises position assignment ("ringledger" in ASCII, folded).
const APPEND_LOCK: i64 = 0x7269_6e67_6c65_6467;
const NOTIFY_CHANNEL: &str = "ringledger_events";

#[derive(Clone)]
pub struct PostgresStore {
    queue: mpsc::Sender<Request>,
    head: watch::Receiver<u64>,
    committed: batch::CommittedBatches,
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` and applies migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let head_now: Option<i64> = sqlx::query_scalar("SELECT MAX(global_position) FROM events")
            .fetch_one(&pool)
            .await?;
        let (head_tx, head) = watch::channel(head_now.unwrap_or(0) as u64);
        let head_tx = Arc::new(head_tx);
        let (queue, rx) = mpsc::channel(8192);
        let (committed, _) = broadcast::channel(batch::COMMITTED_BACKLOG);
        tokio::spawn(batch::run_writer(
            PostgresWriter { pool: pool.clone() },
            rx,
            head_tx.clone(),
            committed.clone(),
        ));
        tokio::spawn(listen_for_commits(pool.clone(), head_tx));
        tracing::info!("postgres event store open");
        Ok(Self {
            queue,
            head,
            committed,
            pool,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Wakes this process's subscribers when another process commits (NOTIFY is delivered only
/// after commit). Subscribers also poll, so a lost notification only delays them.
async fn listen_for_commits(pool: PgPool, head: Arc<watch::Sender<u64>>) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "no LISTEN connection; subscribers will poll");
            return;
        }
    };
    if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
        tracing::warn!(error = %e, "LISTEN failed; subscribers will poll");
        return;
    }
    loop {
        tokio::select! {
            _ = head.closed() => return,
            n = listener.recv() => match n {
                Ok(n) => {
                    if let Ok(position) = n.payload().parse::<u64>() {
                        head.send_if_modified(|h| {
                            let advanced = position > *h;
                            *h = (*h).max(position);
                            advanced
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

struct PostgresWriter {
    pool: PgPool,
}

#[async_trait]
impl BatchWriter for PostgresWriter {
    async fn write_batch(&mut self, batch: &[Append]) -> Result<batch::Written, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
        let tail = sqlx::query_as::<_, (i64, String)>(
            "SELECT global_position, hash FROM events ORDER BY global_position DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?
        .map_or_else(Tail::genesis, Tail::from);

        let mut streams: Vec<&str> = batch.iter().map(|a| a.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        // One index probe per stream (its last version), however long the stream is.
        // Both lookups are planned afresh each time (`persistent(false)`): a prepared
        // statement's generic plan, chosen while the table was small, was a sequential scan
        // and stayed one as the log grew (measured: 1M-event fill slowed to ~300 events/s).
        let versions: HashMap<String, u64> = sqlx::query(
            "SELECT s.id, v.stream_version FROM UNNEST($1::text[]) AS s(id) \
             CROSS JOIN LATERAL (SELECT stream_version FROM events WHERE stream_id = s.id \
             ORDER BY stream_version DESC LIMIT 1) AS v",
        )
        .persistent(false)
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u64)))
        .collect::<Result<_, sqlx::Error>>()?;

        let ids: Vec<Uuid> = batch
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.event_id))
            .collect();
        let known: HashMap<Uuid, KnownEvent> = sqlx::query(
            "SELECT event_id, stream_id, stream_version, global_position FROM events WHERE event_id = ANY($1)",
        )
        .persistent(false)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                KnownEvent {
                    stream_id: r.try_get(1)?,
                    stream_version: r.try_get::<i64, _>(2)? as u64,
                    global_position: r.try_get::<i64, _>(3)? as u64,
                },
            ))
        })
        .collect::<Result<_, sqlx::Error>>()?;

        let plan = batch::plan(batch, versions, known, tail, Utc::now());
        if !plan.rows.is_empty() {
            let rows = &plan.rows;
            sqlx::query(
                concat!("INSERT INTO events (", event_columns!(), ") \
                 SELECT g, e, s, v, t, sv, o, r, c, ca, a, p::jsonb, ph, h FROM UNNEST( \
                 $1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[], \
                 $7::timestamptz[], $8::timestamptz[], $9::uuid[], $10::uuid[], $11::text[], \
                 $12::text[], $13::text[], $14::text[]) AS u(g, e, s, v, t, sv, o, r, c, ca, a, p, ph, h)"),
            )
            .bind(rows.iter().map(|e| e.global_position as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.stream_version as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| i32::from(e.schema_version)).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.correlation_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.causation_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.payload.to_string()).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.prev_hash.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|e| e.hash.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(plan.tail.position.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((plan.results, plan.rows))
    }
}

fn decode(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position = row.try_get::<i64, _>("global_position")? as u64;
    Ok(RecordedEvent {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get::<i64, _>("stream_version")? as u64,
        global_position: position,
        event_type: row.try_get("event_type")?,
        schema_version: u16::try_from(row.try_get::<i32, _>("schema_version")?).map_err(|e| {
            StoreError::Corrupt {
                position,
                reason: format!("schema_version: {e}"),
            }
        })?,
        occurred_at: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        actor: row.try_get("actor")?,
        payload: row.try_get("payload")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[async_trait]
impl EventStore for PostgresStore {
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
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn read_all(&self, after: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        sqlx::query(super::READ_ALL_SQL)
            .bind(after as i64)
            .bind(super::sql_limit(max))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(global_position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(head.unwrap_or(0) as u64)
    }

    fn subscribe_all(&self, after: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        super::subscription::poll_subscription(
            Arc::new(self.clone()),
            self.head.clone(),
            Some(self.committed.subscribe()),
            after,
            Duration::from_millis(250),
        )
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
