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
    #[error("the target store is not empty (head position {0}); import only into an empty store")]
    NotEmpty(u64),
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
    pub events: u64,
    pub appends: u64,
}

/// Appends per `append_in_order` call.
const CHUNK: usize = 1000;

fn parse_line(line_no: usize, line: &str) -> Result<RecordedEvent, TransferError> {
    serde_json::from_str(line).map_err(|err| TransferError::Input {
        line: line_no,
        reason: err.to_string(),
    })
}

/// Checks an export's own hash chain (global, as the SQL backends write it) without writing
/// anything; returns how many events it holds. Run it before `import`.
pub fn verify_export(input: impl BufRead) -> Result<u64, TransferError> {
    let mut verifier = ChainVerifier::new(ChainScope::Global);
    let mut n = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e = parse_line(i + 1, &line)?;
        verifier.check(&e).map_err(|b| TransferError::Input {
            line: i + 1,
            reason: format!(
                "the export's chain breaks at position {}: {}",
                b.position, b.reason
            ),
        })?;
        n += 1;
    }
    Ok(n)
}

/// Imports an NDJSON export into an empty store.
pub async fn import(
    store: &dyn EventStore,
    input: impl BufRead,
) -> Result<ImportReport, TransferError> {
    let head = store.head_position().await?;
    if head != 0 {
        return Err(TransferError::NotEmpty(head));
    }
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut pending: Vec<(String, ExpectedVersion, Vec<NewEvent>)> = Vec::new();
    let mut lines_of: Vec<usize> = Vec::new();
    let mut report = ImportReport {
        events: 0,
        appends: 0,
    };
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e = parse_line(line_no, &line)?;
        let current = versions.entry(e.stream_id.clone()).or_default();
        if e.stream_version != *current + 1 {
            return Err(TransferError::Input {
                line: line_no,
                reason: format!(
                    "{} jumps from version {current} to {}",
                    e.stream_id, e.stream_version
                ),
            });
        }
        *current = e.stream_version;
        let event = NewEvent {
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            occurred_at: e.occurred_at,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            actor: e.actor,
        };
        // Consecutive events of one stream travel in one append, as they were most likely
        // written.
        match pending.last_mut() {
            Some((stream, _, events))
                if *stream == e.stream_id && events.len() < super::MAX_EVENTS_PER_APPEND =>
            {
                events.push(event)
            }
            _ => {
                if pending.len() >= CHUNK {
                    flush(store, &mut pending, &mut lines_of, &mut report).await?;
                }
                let expected = match e.stream_version {
                    1 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v - 1),
                };
                pending.push((e.stream_id, expected, vec![event]));
                lines_of.push(line_no);
            }
        }
    }
    flush(store, &mut pending, &mut lines_of, &mut report).await?;
    Ok(report)
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
