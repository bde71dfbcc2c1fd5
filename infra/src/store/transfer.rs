//! Moving a log between stores (and backends) as NDJSON: one recorded envelope per line.
//! An import keeps every event's id, stream, version, type, schema version, times of
//! occurrence, correlation, causation, actor and payload, and the global order; the target
//! assigns its own positions, `recorded_at` and hash chain (and records nothing else).

use std::collections::HashMap;
use std::io::{BufRead, Write};

use super::audit::{ChainScope, ChainVerifier};
use super::{AppendResult, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("line {line}: {reason}")]
    Input { line: usize, reason: String },
    #[error(
        "the target store is not empty (head position {0}) and holds no unfinished import of this export; import only into an empty store"
    )]
    NotEmpty(u64),
    #[error("the target already holds this whole export (head position {0})")]
    AlreadyImported(u64),
    #[error("the input ended after {copied} of the export's {expected} events")]
    Incomplete { copied: u64, expected: u64 },
    #[error("writing: {0}")]
    Output(#[from] std::io::Error),
}

/// Writes every event after `after` as NDJSON; returns how many.
pub async fn export(
    store: &dyn EventStore,
    after: u64,
    out: &mut impl Write,
) -> Result<u64, TransferError> {
    let mut position = after;
    let mut n = 0;
    loop {
        let page = store.read_all(position, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        position = last.global_position;
        for e in &page {
            serde_json::to_writer(&mut *out, e).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    /// Events copied by this run.
    pub events: u64,
    pub appends: u64,
    /// Events an earlier, interrupted run had already copied.
    pub resumed_after: u64,
}

/// Appends per `append_in_order` call.
const CHUNK: usize = 1000;

fn parse_line(line_no: usize, line: &str) -> Result<RecordedEvent, TransferError> {
    serde_json::from_str(line).map_err(|err| TransferError::Input {
        line: line_no,
        reason: err.to_string(),
    })
}

/// What an export holds: the count and the hash of its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub events: u64,
    pub head_hash: String,
}

/// Reads a whole export without writing anything: every line parses, stream versions follow
/// on, every event is one any backend stores (`check_chain` also verifies the export's own
/// hash chain, global as the SQL backends write it). Run before `import`, which needs it.
pub fn verify_export(
    input: impl BufRead,
    check_chain: bool,
) -> Result<ExportSummary, TransferError> {
    let mut verifier = ChainVerifier::new(ChainScope::Global);
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut summary = ExportSummary {
        events: 0,
        head_hash: super::hash::GENESIS.to_owned(),
    };
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let refused = |reason: String| TransferError::Input {
            line: i + 1,
            reason,
        };
        let e = parse_line(i + 1, &line)?;
        if check_chain {
            verifier.check(&e).map_err(|b| {
                refused(format!(
                    "the export's chain breaks at position {}: {}",
                    b.position, b.reason
                ))
            })?;
        }
        let current = versions.entry(e.stream_id.clone()).or_default();
        if e.stream_version != *current + 1 {
            return Err(refused(format!(
                "{} jumps from version {current} to {}",
                e.stream_id, e.stream_version
            )));
        }
        *current = e.stream_version;
        if e.event_type.starts_with("import.") {
            return Err(refused(format!(
                "{} is the record of an earlier import; export the source's own events",
                e.event_type
            )));
        }
        let event = new_event(e.clone());
        super::validate_append(&e.stream_id, std::slice::from_ref(&event))
            .map_err(|err| refused(format!("no store would take this event: {err}")))?;
        summary.events += 1;
        summary.head_hash = e.hash;
    }
    Ok(summary)
}

fn new_event(e: RecordedEvent) -> NewEvent {
    NewEvent {
        event_id: e.event_id,
        event_type: e.event_type,
        schema_version: e.schema_version,
        payload: e.payload,
        occurred_at: e.occurred_at,
        correlation_id: e.correlation_id,
        causation_id: e.causation_id,
        actor: e.actor,
    }
}

/// Where an import into `store` stands.
enum Target {
    Empty,
    /// An earlier run of this import stopped after copying `copied` events, the last of them
    /// `last`.
    Resumable {
        stream: String,
        copied: u64,
        last: Option<uuid::Uuid>,
    },
}

/// An empty store, or one holding an unfinished import of this very export (its
/// `import.started` first, naming the export's count and head hash, and no `import.completed`).
async fn target(store: &dyn EventStore, export: &ExportSummary) -> Result<Target, TransferError> {
    let head = store.head_position().await?;
    if head == 0 {
        return Ok(Target::Empty);
    }
    let first = store.read_all(0, 1).await?;
    let started = first.first().filter(|e| e.event_type == "import.started");
    let Some(started) = started else {
        return Err(TransferError::NotEmpty(head));
    };
    let same_export = started.payload["source_events"].as_u64() == Some(export.events)
        && started.payload["source_head_hash"].as_str() == Some(export.head_hash.as_str());
    if !same_export {
        return Err(TransferError::NotEmpty(head));
    }
    let mut copied = 0;
    let mut last = None;
    let mut position = started.global_position;
    loop {
        let page = store.read_all(position, 1000).await?;
        let Some(end) = page.last() else { break };
        position = end.global_position;
        for e in &page {
            if e.event_type == "import.completed" {
                return Err(TransferError::AlreadyImported(head));
            }
            copied += 1;
            last = Some(e.event_id);
        }
    }
    Ok(Target::Resumable {
        stream: started.stream_id.clone(),
        copied,
        last,
    })
}

/// Imports a verified NDJSON export (`export` is what `verify_export` said of it) into an
/// empty store, or resumes an import of the same export that stopped part way. The copy is
/// framed by `import.started` (the export's count and head hash, written first) and
/// `import.completed` (written last), so a copy cut short is never taken for a whole one:
/// `audit verify` and `serve` report it, and running the import again finishes it. Stops at
/// the first append the target refuses.
pub async fn import(
    store: &dyn EventStore,
    export: &ExportSummary,
    input: impl BufRead,
) -> Result<ImportReport, TransferError> {
    let (stream, skip, last) = match target(store, export).await? {
        Target::Empty => {
            let id = uuid::Uuid::now_v7();
            let stream = domain::import::stream_id(id);
            let started = domain::import::ImportEvent::Started {
                source_events: export.events,
                source_head_hash: export.head_hash.clone(),
            };
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![framing(&started, id)],
                )
                .await?;
            (stream, 0, None)
        }
        Target::Resumable {
            stream,
            copied,
            last,
        } => (stream, copied, last),
    };
    let mut pending: Vec<(String, ExpectedVersion, Vec<NewEvent>)> = Vec::new();
    let mut lines_of: Vec<usize> = Vec::new();
    let mut report = ImportReport {
        events: 0,
        appends: 0,
        resumed_after: skip,
    };
    let mut seen = 0u64;
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        seen += 1;
        if seen < skip {
            continue;
        }
        let e = parse_line(line_no, &line)?;
        if seen == skip {
            // The target's last copied event must be this one, or it is another copy.
            if Some(e.event_id) != last {
                return Err(TransferError::Input {
                    line: line_no,
                    reason: "the target's unfinished import does not end with this event: \
                             it is not a copy of this export"
                        .into(),
                });
            }
            continue;
        }
        let stream_id = e.stream_id.clone();
        let version = e.stream_version;
        let event = new_event(e);
        // Consecutive events of one stream travel in one append, as they were most likely
        // written.
        match pending.last_mut() {
            Some((s, _, events))
                if *s == stream_id && events.len() < super::MAX_EVENTS_PER_APPEND =>
            {
                events.push(event)
            }
            _ => {
                if pending.len() >= CHUNK {
                    flush(store, &mut pending, &mut lines_of, &mut report).await?;
                }
                let expected = match version {
                    1 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v - 1),
                };
                pending.push((stream_id, expected, vec![event]));
                lines_of.push(line_no);
            }
        }
    }
    flush(store, &mut pending, &mut lines_of, &mut report).await?;
    let copied = skip + report.events;
    if copied != export.events {
        return Err(TransferError::Incomplete {
            copied,
            expected: export.events,
        });
    }
    let completed = domain::import::ImportEvent::Completed {
        events: export.events,
        source_head_hash: export.head_hash.clone(),
    };
    let id = uuid::Uuid::now_v7();
    store
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            vec![framing(&completed, id)],
        )
        .await?;
    Ok(report)
}

/// An `import.*` event as the importer writes it.
fn framing(event: &domain::import::ImportEvent, correlation_id: uuid::Uuid) -> NewEvent {
    use domain::DomainEvent;
    let encoded = event.encode();
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        payload: encoded.payload,
        occurred_at: chrono::Utc::now(),
        correlation_id,
        causation_id: None,
        actor: "cli:events-import".to_owned(),
    }
}

async fn flush(
    store: &dyn EventStore,
    pending: &mut Vec<(String, ExpectedVersion, Vec<NewEvent>)>,
    lines_of: &mut Vec<usize>,
    report: &mut ImportReport,
) -> Result<(), TransferError> {
    let sizes: Vec<u64> = pending.iter().map(|(_, _, e)| e.len() as u64).collect();
    let results: Vec<Result<AppendResult, StoreError>> =
        store.append_in_order(std::mem::take(pending)).await;
    for ((result, line), size) in results.into_iter().zip(lines_of.drain(..)).zip(sizes) {
        match result {
            Ok(_) => {
                report.events += size;
                report.appends += 1;
            }
            Err(e) => {
                return Err(TransferError::Input {
                    line,
                    reason: format!("the target refused the append starting here: {e}"),
                });
            }
        }
    }
    Ok(())
}
