//! Keeps one SQL projection up to date: reads the log from the projection's checkpoint and
//! commits each batch of rows together with the new checkpoint, so a restart resumes exactly
//! where the last commit left it (effectively exactly-once). An event the projection cannot
//! apply stops that projection — recorded with the event and its position — never skipped.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use infra::{EventStore, RecordedEvent, StoreError};
use sqlx::{AnyConnection, Row};

use crate::ApplyError;
use crate::db::ProjectionDb;

/// Why a projection could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event is not what this projection can apply: the projection must stop.
    #[error("{0}")]
    Apply(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One event of a batch, decoded, with its index in the batch.
pub struct Decoded<'a> {
    pub index: usize,
    pub recorded: &'a RecordedEvent,
    pub event: domain::Event,
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The event at `index` of the batch is not what the projection can apply.
    #[error("event {index} of the batch: {reason}")]
    Refused { index: usize, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl BatchError {
    /// `error` met while applying the event at `index`.
    pub fn at(index: usize, error: ProjectionError) -> Self {
        match error {
            ProjectionError::Apply(reason) => BatchError::Refused { index, reason },
            ProjectionError::Database(e) => BatchError::Database(e),
        }
    }
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// `CREATE TABLE IF NOT EXISTS` statements.
    fn schema(&self) -> &'static [&'static str];
    /// Every table, with the columns that order its rows, for rebuild verification.
    fn tables(&self) -> &'static [(&'static str, &'static str)];
    /// Whether events of this type concern the projection (others are not even decoded).
    fn handles(&self, _event_type: &str) -> bool {
        true
    }
    /// Applies the events of one batch, in order, inside the batch's transaction (the runner
    /// commits it with the checkpoint, or rolls it back on any error).
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[Decoded<'_>],
    ) -> Result<(), BatchError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("projection {name} is stopped: {error}")]
    Stopped { name: &'static str, error: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: u64,
    /// `running` or `stopped`.
    pub status: String,
    pub error: Option<String>,
}

pub struct Runner {
    db: ProjectionDb,
    store: Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
}

/// Events per transaction while following the live log.
const BATCH: usize = 500;
/// Events per transaction while catching up (a rebuild, a start behind the head): larger
/// batches mean fewer statements, as the writes of a batch are sent together.
const CATCH_UP_BATCH: usize = 5000;
/// While following the live log, commit at most this often: a transaction per trickle of
/// events would take the (SQLite) write lock from the event log's writer hundreds of times
/// a second, and every append would queue behind those commits.
const LIVE_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(25);

impl Runner {
    /// Prepares the projection's tables.
    pub async fn new(
        db: ProjectionDb,
        store: Arc<dyn EventStore>,
        projection: Arc<dyn Projection>,
    ) -> Result<Self, sqlx::Error> {
        db.execute_schema(projection.schema()).await?;
        Ok(Self {
            db,
            store,
            projection,
        })
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    pub async fn checkpoint(&self) -> Result<Checkpoint, sqlx::Error> {
        let row = sqlx::query(
            "SELECT position, status, error FROM projection_checkpoints WHERE name = $1",
        )
        .bind(self.name())
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(match row {
            Some(r) => Checkpoint {
                position: r.try_get::<i64, _>(0)? as u64,
                status: r.try_get(1)?,
                error: r.try_get(2)?,
            },
            None => Checkpoint {
                position: 0,
                status: "running".into(),
                error: None,
            },
        })
    }

    async fn ensure_running(&self) -> Result<u64, RunnerError> {
        let cp = self.checkpoint().await?;
        if cp.status == "stopped" {
            return Err(RunnerError::Stopped {
                name: self.name(),
                error: cp.error.unwrap_or_default(),
            });
        }
        Ok(cp.position)
    }

    /// Applies everything up to the log's current head, then returns the checkpoint.
    pub async fn catch_up(&self) -> Result<u64, RunnerError> {
        let mut position = self.ensure_running().await?;
        let mut page = self.store.read_all(position, CATCH_UP_BATCH).await?;
        while let Some(last) = page.last().map(|e| e.global_position) {
            // The next page is read while this one is applied.
            let (next, applied) = tokio::join!(
                self.store.read_all(last, CATCH_UP_BATCH),
                self.apply_batch(&page)
            );
            applied?;
            position = last;
            page = next?;
        }
        Ok(position)
    }

    /// Follows the log until `shutdown` completes or the projection stops.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), RunnerError> {
        let position = self.ensure_running().await?;
        let mut events = self.store.subscribe_all(position).ready_chunks(BATCH);
        tokio::pin!(shutdown);
        let mut last_commit = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                chunk = events.next() => {
                    let Some(chunk) = chunk else { return Ok(()) };
                    let mut batch = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
                    if batch.len() < BATCH {
                        // A trickle: let more arrive before taking the write lock again.
                        tokio::time::sleep_until(last_commit + LIVE_COMMIT_INTERVAL).await;
                        while batch.len() < BATCH {
                            match futures::FutureExt::now_or_never(events.next()) {
                                Some(Some(more)) => {
                                    for e in more {
                                        batch.push(e?);
                                    }
                                }
                                Some(None) | None => break,
                            }
                        }
                    }
                    self.apply_batch(&batch).await?;
                    last_commit = tokio::time::Instant::now();
                }
            }
        }
    }

    /// Applies events that arrive from elsewhere (the Kafka bus): those at or before the
    /// checkpoint are dropped, the rest must follow it in order.
    pub async fn apply_delivered(&self, events: &[RecordedEvent]) -> Result<u64, RunnerError> {
        let position = self.ensure_running().await?;
        let fresh: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| e.global_position > position)
            .cloned()
            .collect();
        self.apply_batch(&fresh).await?;
        Ok(fresh.last().map_or(position, |e| e.global_position))
    }

    async fn apply_batch(&self, events: &[RecordedEvent]) -> Result<(), RunnerError> {
        match self.try_batch(events).await? {
            Ok(()) => Ok(()),
            Err((index, error)) => {
                // Keep what came before the bad event, then stop at it.
                if index > 0 {
                    match self.try_batch(&events[..index]).await? {
                        Ok(()) => {}
                        // Cannot happen for events that just applied; stop anyway.
                        Err((_, again)) => {
                            tracing::error!(%again, "the good part of a failed batch failed too")
                        }
                    }
                }
                sqlx::query(
                    "INSERT INTO projection_checkpoints (name, position, status, error) \
                     VALUES ($1, $2, 'stopped', $3) ON CONFLICT (name) DO UPDATE \
                     SET status = 'stopped', error = excluded.error",
                )
                .bind(self.name())
                // A first insert has applied nothing; an existing row keeps its position.
                .bind(0_i64)
                .bind(error.to_string())
                .execute(&self.db.pool)
                .await?;
                tracing::error!(projection = self.name(), %error, "projection stopped");
                Err(RunnerError::Stopped {
                    name: self.name(),
                    error: error.to_string(),
                })
            }
        }
    }

    /// One transaction: the rows of every event and the checkpoint. The inner error is the
    /// index and reason of an event the projection refused (nothing was committed).
    async fn try_batch(
        &self,
        events: &[RecordedEvent],
    ) -> Result<Result<(), (usize, ApplyError)>, RunnerError> {
        let Some(last) = events.last() else {
            return Ok(Ok(()));
        };
        let mut decoded = Vec::with_capacity(events.len());
        for (index, recorded) in events.iter().enumerate() {
            if !self.projection.handles(&recorded.event_type) {
                continue;
            }
            match recorded.decode() {
                Ok(event) => decoded.push(Decoded {
                    index,
                    recorded,
                    event,
                }),
                Err(e) => return Ok(Err((index, ApplyError::new(recorded, e)))),
            }
        }
        let mut tx = self.db.begin().await?;
        match self.projection.apply_batch(&mut tx, &decoded).await {
            Ok(()) => {}
            Err(BatchError::Refused { index, reason }) => {
                return Ok(Err((index, ApplyError::new(&events[index], reason))));
            }
            Err(BatchError::Database(e)) => return Err(e.into()),
        }
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, position, status, error) \
             VALUES ($1, $2, 'running', NULL) ON CONFLICT (name) DO UPDATE \
             SET position = excluded.position, status = 'running', error = NULL",
        )
        .bind(self.name())
        .bind(last.global_position as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }
}
