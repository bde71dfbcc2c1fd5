//! EventStoreDB / KurrentDB through the `eventstore` gRPC client (cargo feature
//! `eventstoredb`). Stream revision + 1 = stream version; the `$all` commit position is the
//! global position (increasing, not dense).
//!
//! Differences from the SQL backends, all forced by the server's model:
//! - The hash chain runs per stream, not over `$all`: the `$all` position of an event is
//!   assigned by the server after the write, so it cannot be hashed in. Each event's hash
//!   covers its envelope with `global_position = 0` and `recorded_at = occurred_at`.
//! - Event ids are de-duplicated per stream (idempotent retries work), not across streams.
//! - Group commit is the server's own.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::{
    AppendToStreamOptions, Client, ClientSettings, EventData, ExpectedRevision, Position,
    ReadAllOptions, ReadStreamOptions, ResolvedEvent, StreamPosition,
};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use super::hash::{GENESIS, HashInput};
use super::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, to_micros,
};

/// How often an `Any` append retries when another writer moved the stream meanwhile.
const ANY_RETRIES: usize = 10;
const PAGE: usize = 512;

/// The envelope fields EventStoreDB has no place for, kept in each event's custom metadata.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    schema_version: u16,
    occurred_at: DateTime<Utc>,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    actor: String,
    prev_hash: String,
    hash: String,
}

#[derive(Clone)]
pub struct EventStoreDbStore {
    client: Client,
    head: Arc<watch::Sender<u64>>,
}

fn esdb(e: impl std::fmt::Display) -> StoreError {
    StoreError::EventStoreDb(e.to_string())
}

impl EventStoreDbStore {
    /// Connects to an `esdb://` or `esdb+discover://` connection string.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let settings: ClientSettings = url.parse().map_err(esdb)?;
        let client = Client::new(settings).map_err(esdb)?;
        let store = Self {
            client,
            head: Arc::new(watch::channel(0).0),
        };
        let head = store.head_position().await?;
        store.head.send_replace(head);
        tracing::info!("eventstoredb event store open");
        Ok(store)
    }

    /// The stream's last event as (version, hash), or (0, genesis).
    async fn stream_tail(&self, stream_id: &str) -> Result<(u64, String), StoreError> {
        let options = ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(1);
        let last = self.read_events(stream_id, &options).await?.pop();
        Ok(last.map_or((0, GENESIS.to_owned()), |e| (e.stream_version, e.hash)))
    }

    async fn read_events(
        &self,
        stream_id: &str,
        options: &ReadStreamOptions,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut read = match self.client.read_stream(stream_id, options).await {
            Ok(r) => r,
            Err(eventstore::Error::ResourceNotFound) => return Ok(vec![]),
            Err(e) => return Err(esdb(e)),
        };
        let mut out = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(e)) => {
                    if let Some(r) = convert(&e)? {
                        out.push(r);
                    }
                }
                Ok(None) => return Ok(out),
                Err(eventstore::Error::ResourceNotFound) => return Ok(out),
                Err(e) => return Err(esdb(e)),
            }
        }
    }

    /// If `events` are already in `stream_id` as one append, the original result.
    async fn replay_of(
        &self,
        stream_id: &str,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, StoreError> {
        let mut from = 1;
        loop {
            let page = self.read_stream(stream_id, from, PAGE).await?;
            if let Some(i) = page.iter().position(|e| e.event_id == events[0].event_id) {
                let stored = self
                    .read_stream(stream_id, page[i].stream_version, events.len())
                    .await?;
                let same = stored.len() == events.len()
                    && stored
                        .iter()
                        .zip(events)
                        .all(|(s, e)| s.event_id == e.event_id);
                return Ok(same.then(|| AppendResult {
                    first_version: stored[0].stream_version,
                    last_version: stored[stored.len() - 1].stream_version,
                    first_position: stored[0].global_position,
                    last_position: stored[stored.len() - 1].global_position,
                }));
            }
            match page.last() {
                Some(last) if page.len() == PAGE => from = last.stream_version + 1,
                _ => return Ok(None),
            }
        }
    }
}

fn convert(resolved: &ResolvedEvent) -> Result<Option<RecordedEvent>, StoreError> {
    let Some(e) = resolved.event.as_ref() else {
        return Ok(None);
    };
    if e.stream_id.starts_with('$') || e.event_type.starts_with('$') {
        return Ok(None);
    }
    let position = e.position.commit;
    let corrupt = |what: &str, err: serde_json::Error| StoreError::Corrupt {
        position,
        reason: format!("{what}: {err}"),
    };
    let envelope: Envelope =
        serde_json::from_slice(&e.custom_metadata).map_err(|err| corrupt("metadata", err))?;
    Ok(Some(RecordedEvent {
        event_id: e.id,
        stream_id: e.stream_id.clone(),
        stream_version: e.revision + 1,
        global_position: position,
        event_type: e.event_type.clone(),
        schema_version: envelope.schema_version,
        occurred_at: envelope.occurred_at,
        recorded_at: e.created,
        correlation_id: envelope.correlation_id,
        causation_id: envelope.causation_id,
        actor: envelope.actor,
        payload: serde_json::from_slice(&e.data).map_err(|err| corrupt("payload", err))?,
        prev_hash: envelope.prev_hash,
        hash: envelope.hash,
    }))
}

/// Builds the events with their per-stream chain, starting after (`version`, `prev_hash`).
fn encode(
    stream_id: &str,
    version: u64,
    mut prev_hash: String,
    events: &[NewEvent],
) -> Result<Vec<EventData>, StoreError> {
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let occurred_at = to_micros(e.occurred_at);
        let hash = HashInput {
            prev_hash: &prev_hash,
            event_id: e.event_id,
            stream_id,
            stream_version: version + 1 + i as u64,
            global_position: 0,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            occurred_at,
            recorded_at: occurred_at,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            actor: &e.actor,
            payload: &e.payload,
        }
        .hash();
        let envelope = Envelope {
            schema_version: e.schema_version,
            occurred_at,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            actor: e.actor.clone(),
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        };
        let data = EventData::json(&e.event_type, &e.payload)
            .and_then(|d| d.id(e.event_id).metadata_as_json(&envelope))
            .map_err(|err| StoreError::InvalidAppend(err.to_string()))?;
        out.push(data);
    }
    Ok(out)
}

#[async_trait]
impl EventStore for EventStoreDbStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        super::validate_append(stream_id, &events)?;
        if let Some(original) = self.replay_of(stream_id, &events).await? {
            return Ok(original);
        }
        for _ in 0..ANY_RETRIES {
            let (current, prev_hash) = self.stream_tail(stream_id).await?;
            if !expected.admits(current) {
                return Err(StoreError::Conflict {
                    stream_id: stream_id.to_owned(),
                    expected,
                    actual: current,
                });
            }
            // Always write with the exact revision read, so the chain cannot fork.
            let revision = match current {
                0 => ExpectedRevision::NoStream,
                v => ExpectedRevision::Exact(v - 1),
            };
            let data = encode(stream_id, current, prev_hash, &events)?;
            let options = AppendToStreamOptions::default().expected_revision(revision);
            match self
                .client
                .append_to_stream(stream_id, &options, data)
                .await
            {
                Ok(_) => {
                    let written = self
                        .read_stream(stream_id, current + 1, events.len())
                        .await?;
                    let (Some(first), Some(last)) = (written.first(), written.last()) else {
                        return Err(esdb("appended events could not be read back"));
                    };
                    let result = AppendResult {
                        first_version: first.stream_version,
                        last_version: last.stream_version,
                        first_position: first.global_position,
                        last_position: last.global_position,
                    };
                    self.head.send_if_modified(|h| {
                        let advanced = result.last_position > *h;
                        *h = (*h).max(result.last_position);
                        advanced
                    });
                    return Ok(result);
                }
                Err(eventstore::Error::WrongExpectedVersion { .. }) => {
                    if let Some(original) = self.replay_of(stream_id, &events).await? {
                        return Ok(original);
                    }
                    if expected != ExpectedVersion::Any {
                        let (actual, _) = self.stream_tail(stream_id).await?;
                        return Err(StoreError::Conflict {
                            stream_id: stream_id.to_owned(),
                            expected,
                            actual,
                        });
                    }
                }
                Err(e) => return Err(esdb(e)),
            }
        }
        Err(esdb("the stream kept moving; gave up after retries"))
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(from_version.saturating_sub(1)))
            .max_count(limit);
        self.read_events(stream_id, &options).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        let mut from = after;
        while out.len() < limit {
            let start = if from == 0 {
                StreamPosition::Start
            } else {
                StreamPosition::Position(Position {
                    commit: from,
                    prepare: from,
                })
            };
            let options = ReadAllOptions::default()
                .forwards()
                .position(start)
                .max_count(PAGE);
            let mut read = self.client.read_all(&options).await.map_err(esdb)?;
            let mut seen = 0;
            while let Some(e) = read.next().await.map_err(esdb)? {
                seen += 1;
                let commit = e.event.as_ref().map_or(0, |r| r.position.commit);
                from = from.max(commit);
                if commit <= after {
                    continue;
                }
                if let Some(r) = convert(&e)? {
                    out.push(r);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            if seen < PAGE {
                break;
            }
        }
        Ok(out)
    }

    async fn head_position(&self) -> Result<u64, StoreError> {
        let options = ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(PAGE);
        let mut read = self.client.read_all(&options).await.map_err(esdb)?;
        while let Some(e) = read.next().await.map_err(esdb)? {
            if let Some(r) = convert(&e)? {
                return Ok(r.global_position);
            }
        }
        Ok(0)
    }

    fn subscribe_all(&self, after: u64) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        super::subscription::poll_subscription(
            Arc::new(self.clone()),
            self.head.subscribe(),
            None,
            after,
            Duration::from_millis(250),
        )
    }

    fn backend(&self) -> &'static str {
        "eventstoredb"
    }

    fn chain_scope(&self) -> super::ChainScope {
        super::ChainScope::PerStream
    }
}
