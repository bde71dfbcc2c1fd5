//! Group commit, shared by the SQL backends: one writer task per store takes every append
//! waiting in its queue, decides each against the log in memory, writes them all in one
//! transaction (one fsync) and only then answers each caller.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use uuid::Uuid;

use super::hash::HashInput;
use super::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent, StoreError, to_micros};

/// The most events one transaction carries.
pub(crate) const MAX_BATCH_EVENTS: usize = 4096;

pub(crate) struct Append {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

pub(crate) struct Request {
    pub append: Append,
    pub reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// Where an already-stored event id sits.
#[derive(Debug, Clone)]
pub(crate) struct KnownEvent {
    pub stream_id: String,
    pub stream_version: u64,
    pub global_position: u64,
}

/// The log's tail as the writer sees it inside its transaction.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    pub position: u64,
    pub hash: String,
}

impl Tail {
    pub fn genesis() -> Self {
        Self {
            position: 0,
            hash: super::hash::GENESIS.to_owned(),
        }
    }
}

impl From<(i64, String)> for Tail {
    fn from((position, hash): (i64, String)) -> Self {
        Self {
            position: position as u64,
            hash,
        }
    }
}

/// What a batch will write, decided in memory.
pub(crate) struct Plan {
    pub rows: Vec<RecordedEvent>,
    pub results: Vec<Result<AppendResult, StoreError>>,
    pub tail: Tail,
}

/// Decides every append of a batch in order: idempotent replays, expected versions,
/// versions, positions and hashes. `versions` holds the current version of each stream the
/// batch touches (absent = 0); `known` every batch event id already in the log.
pub(crate) fn plan(
    batch: &[Append],
    mut versions: HashMap<String, u64>,
    mut known: HashMap<Uuid, KnownEvent>,
    mut tail: Tail,
    recorded_at: DateTime<Utc>,
) -> Plan {
    let recorded_at = to_micros(recorded_at);
    let mut rows = Vec::new();
    let mut results = Vec::with_capacity(batch.len());
    for append in batch {
        if let Some(replay) = replay_of(append, &known) {
            results.push(replay);
            continue;
        }
        let current = versions.get(&append.stream_id).copied().unwrap_or(0);
        if !append.expected.admits(current) {
            results.push(Err(StoreError::Conflict {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual: current,
            }));
            continue;
        }
        let first_position = tail.position + 1;
        for (i, e) in append.events.iter().enumerate() {
            let stream_version = current + 1 + i as u64;
            let global_position = tail.position + 1;
            let mut row = RecordedEvent {
                event_id: e.event_id,
                stream_id: append.stream_id.clone(),
                stream_version,
                global_position,
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                occurred_at: to_micros(e.occurred_at),
                recorded_at,
                correlation_id: e.correlation_id,
                causation_id: e.causation_id,
                actor: e.actor.clone(),
                payload: e.payload.clone(),
                prev_hash: std::mem::take(&mut tail.hash),
                hash: String::new(),
            };
            row.hash = HashInput::from(&row).hash();
            tail = Tail {
                position: global_position,
                hash: row.hash.clone(),
            };
            known.insert(
                e.event_id,
                KnownEvent {
                    stream_id: append.stream_id.clone(),
                    stream_version,
                    global_position,
                },
            );
            rows.push(row);
        }
        let n = append.events.len() as u64;
        versions.insert(append.stream_id.clone(), current + n);
        results.push(Ok(AppendResult {
            first_version: current + 1,
            last_version: current + n,
            first_position,
            last_position: tail.position,
        }));
    }
    Plan {
        rows,
        results,
        tail,
    }
}

/// `Some` when some of the append's event ids are already stored: the original result if
/// the whole append is there as it was written, otherwise a duplicate-id refusal.
fn replay_of(
    append: &Append,
    known: &HashMap<Uuid, KnownEvent>,
) -> Option<Result<AppendResult, StoreError>> {
    let stored: Vec<Option<&KnownEvent>> = append
        .events
        .iter()
        .map(|e| known.get(&e.event_id))
        .collect();
    let found = stored.iter().position(Option::is_some)?;
    let refuse = Err(StoreError::DuplicateEventId {
        event_id: append.events[found].event_id,
    });
    let Some(Some(head)) = stored.first().copied().map(|k| k.cloned()) else {
        return Some(refuse);
    };
    let mut last = head.clone();
    for (i, k) in stored.into_iter().enumerate() {
        let i = i as u64;
        match k {
            Some(k)
                if k.stream_id == append.stream_id
                    && k.stream_version == head.stream_version + i
                    && k.global_position == head.global_position + i =>
            {
                last = k.clone();
            }
            _ => return Some(refuse),
        }
    }
    Some(Ok(AppendResult {
        first_version: head.stream_version,
        last_version: last.stream_version,
        first_position: head.global_position,
        last_position: last.global_position,
    }))
}

/// A backend's half of group commit: write a batch in one transaction.
#[async_trait]
pub(crate) trait BatchWriter: Send + 'static {
    /// Writes `batch` in one transaction and returns each append's outcome and the events
    /// written, in position order. Appends refused by the contract write nothing; an `Err`
    /// means the transaction was rolled back.
    async fn write_batch(&mut self, batch: &[Append]) -> Result<Written, StoreError>;
}

/// What one transaction wrote: each append's outcome, and the events committed.
pub(crate) type Written = (Vec<Result<AppendResult, StoreError>>, Vec<RecordedEvent>);

/// Committed events as the writer made them, for this process's subscribers (who use them
/// instead of reading the log again when they follow on without a gap).
pub(crate) type CommittedBatches = broadcast::Sender<Arc<Vec<RecordedEvent>>>;

/// Batches a subscriber may fall behind by before it reads the log instead.
pub(crate) const COMMITTED_BACKLOG: usize = 1024;

/// The writer task: drains the queue into batches until every sender is gone.
pub(crate) async fn run_writer<W: BatchWriter>(
    mut writer: W,
    mut queue: mpsc::Receiver<Request>,
    head: Arc<watch::Sender<u64>>,
    committed_batches: CommittedBatches,
) {
    while let Some(first) = queue.recv().await {
        let mut events = first.append.events.len();
        let mut requests = vec![first];
        while events < MAX_BATCH_EVENTS {
            match queue.try_recv() {
                Ok(next) => {
                    events += next.append.events.len();
                    requests.push(next);
                }
                Err(_) => break,
            }
        }
        let (appends, replies): (Vec<_>, Vec<_>) =
            requests.into_iter().map(|r| (r.append, r.reply)).unzip();
        let started = std::time::Instant::now();
        let (outcomes, rows) = match writer.write_batch(&appends).await {
            Ok(written) => written,
            Err(e) if appends.len() == 1 => (vec![Err(e)], vec![]),
            Err(e) => {
                // One append broke the shared transaction (a database-level refusal): retry
                // each alone so only the offending one fails.
                tracing::warn!(error = %e, appends = appends.len(), "batch failed; retrying appends one by one");
                let mut outcomes = Vec::with_capacity(appends.len());
                let mut rows = Vec::new();
                for append in appends.chunks(1) {
                    match writer.write_batch(append).await {
                        Ok((mut one, written)) => {
                            outcomes.push(one.pop().unwrap_or(Err(StoreError::WriterStopped)));
                            rows.extend(written);
                        }
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                (outcomes, rows)
            }
        };
        tracing::debug!(
            appends = outcomes.len(),
            events,
            elapsed_us = started.elapsed().as_micros() as u64,
            "batch committed"
        );
        let committed = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().map(|r| r.last_position))
            .max();
        if !rows.is_empty() {
            // No subscriber listening is not an error.
            let _ = committed_batches.send(Arc::new(rows));
        }
        if let Some(position) = committed {
            head.send_if_modified(|h| {
                let advanced = position > *h;
                *h = (*h).max(position);
                advanced
            });
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up waiting is not an error: its events are durable.
            let _ = reply.send(outcome);
        }
    }
}

/// Queues every append in order, then waits for all the answers.
pub(crate) async fn submit_in_order(
    queue: &mpsc::Sender<Request>,
    appends: Vec<(String, ExpectedVersion, Vec<NewEvent>)>,
) -> Vec<Result<AppendResult, StoreError>> {
    let mut answers = Vec::with_capacity(appends.len());
    for (stream_id, expected, events) in appends {
        if let Err(e) = super::validate_append(&stream_id, &events) {
            answers.push(Err(e));
            continue;
        }
        let (reply, answer) = oneshot::channel();
        let request = Request {
            append: Append {
                stream_id,
                expected,
                events,
            },
            reply,
        };
        if queue.send(request).await.is_err() {
            answers.push(Err(StoreError::WriterStopped));
            continue;
        }
        answers.push(Ok(answer));
    }
    let mut out = Vec::with_capacity(answers.len());
    for a in answers {
        out.push(match a {
            Ok(answer) => answer.await.unwrap_or(Err(StoreError::WriterStopped)),
            Err(e) => Err(e),
        });
    }
    out
}

/// The front half: queue an append and wait for the writer's answer.
pub(crate) async fn submit(
    queue: &mpsc::Sender<Request>,
    stream_id: &str,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AppendResult, StoreError> {
    submit_in_order(queue, vec![(stream_id.to_owned(), expected, events)])
        .await
        .pop()
        .unwrap_or(Err(StoreError::WriterStopped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "test.happened".into(),
            schema_version: 1,
            payload: serde_json::json!({"n": 1}),
            occurred_at: Utc::now(),
            correlation_id: Uuid::nil(),
            causation_id: None,
            actor: "test".into(),
        }
    }

    fn genesis() -> Tail {
        Tail::genesis()
    }

    #[test]
    fn appends_in_one_batch_see_each_other() {
        let batch = vec![
            Append {
                stream_id: "s".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![event(), event()],
            },
            Append {
                stream_id: "s".into(),
                expected: ExpectedVersion::Exact(2),
                events: vec![event()],
            },
            Append {
                stream_id: "s".into(),
                expected: ExpectedVersion::Exact(2),
                events: vec![event()],
            },
        ];
        let p = plan(
            &batch,
            HashMap::new(),
            HashMap::new(),
            genesis(),
            Utc::now(),
        );
        assert_eq!(p.rows.len(), 3);
        assert_eq!(p.results[1].as_ref().unwrap().last_version, 3);
        assert!(matches!(
            p.results[2],
            Err(StoreError::Conflict { actual: 3, .. })
        ));
        assert_eq!(p.rows[2].prev_hash, p.rows[1].hash);
        assert_eq!(p.tail.position, 3);
    }

    #[test]
    fn a_retry_inside_the_same_batch_is_a_replay() {
        let events = vec![event(), event()];
        let batch = vec![
            Append {
                stream_id: "s".into(),
                expected: ExpectedVersion::NoStream,
                events: events.clone(),
            },
            Append {
                stream_id: "s".into(),
                expected: ExpectedVersion::NoStream,
                events,
            },
        ];
        let p = plan(
            &batch,
            HashMap::new(),
            HashMap::new(),
            genesis(),
            Utc::now(),
        );
        assert_eq!(p.rows.len(), 2);
        assert_eq!(
            p.results[0].as_ref().unwrap(),
            p.results[1].as_ref().unwrap()
        );
    }

    #[test]
    fn a_partly_stored_append_is_refused() {
        let stored = event();
        let mut known = HashMap::new();
        known.insert(
            stored.event_id,
            KnownEvent {
                stream_id: "s".into(),
                stream_version: 1,
                global_position: 1,
            },
        );
        let batch = vec![Append {
            stream_id: "s".into(),
            expected: ExpectedVersion::Any,
            events: vec![event(), stored.clone()],
        }];
        let p = plan(&batch, HashMap::new(), known, genesis(), Utc::now());
        assert!(p.rows.is_empty());
        assert!(
            matches!(p.results[0], Err(StoreError::DuplicateEventId { event_id }) if event_id == stored.event_id)
        );
    }
}
