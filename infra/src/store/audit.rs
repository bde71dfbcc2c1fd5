//! Verifying the log: recompute every hash, follow the chain, and check that positions and
//! stream versions have no holes or swaps. Any altered, deleted or reordered stored event is
//! reported at the first position where the log stops being what was written.
//!
//! The chain proves the log is internally consistent; against someone who rewrites every hash
//! after a change, auditors keep the head hash this prints somewhere else and compare.

use std::collections::HashMap;

use futures::TryStreamExt;

pub use super::ChainScope;
use super::hash::{GENESIS, HashInput};
use super::{EventStore, RecordedEvent, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub position: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub events: u64,
    pub head_position: u64,
    pub head_hash: String,
    pub first_break: Option<ChainBreak>,
    /// The log is a copy (`events import`) that stopped part way.
    pub incomplete_import: Option<IncompleteImport>,
}

/// A copied log without its `import.completed`: `copied` of the export's `expected` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteImport {
    pub copied: u64,
    pub expected: u64,
}

/// Follows an `import.started` at the head of the log to its `import.completed`.
#[derive(Default)]
struct ImportFrame {
    /// The import's stream and the count its `import.started` announced.
    started: Option<(String, u64)>,
    copied: u64,
    completed: bool,
}

impl ImportFrame {
    fn see(&mut self, e: &RecordedEvent, first: bool) {
        if first && e.event_type == "import.started" {
            let expected = e.payload["source_events"].as_u64().unwrap_or(0);
            self.started = Some((e.stream_id.clone(), expected));
            return;
        }
        let Some((stream, _)) = &self.started else {
            return;
        };
        if self.completed {
            return;
        }
        if e.event_type == "import.completed" && &e.stream_id == stream {
            self.completed = true;
        } else {
            self.copied += 1;
        }
    }

    fn incomplete(&self) -> Option<IncompleteImport> {
        match &self.started {
            Some((_, expected)) if !self.completed => Some(IncompleteImport {
                copied: self.copied,
                expected: *expected,
            }),
            _ => None,
        }
    }
}

/// Checks events one by one in global order.
pub struct ChainVerifier {
    scope: ChainScope,
    events: u64,
    last_position: u64,
    last_hash: String,
    /// Per stream: last version and last hash.
    streams: HashMap<String, (u64, String)>,
}

impl ChainVerifier {
    pub fn new(scope: ChainScope) -> Self {
        Self {
            scope,
            events: 0,
            last_position: 0,
            last_hash: GENESIS.to_owned(),
            streams: HashMap::new(),
        }
    }

    pub fn check(&mut self, e: &RecordedEvent) -> Result<(), ChainBreak> {
        let broken = |reason: String| ChainBreak {
            position: e.global_position,
            reason,
        };
        if e.global_position <= self.last_position {
            return Err(broken(format!(
                "position does not increase (previous was {})",
                self.last_position
            )));
        }
        if self.scope == ChainScope::Global && e.global_position != self.last_position + 1 {
            return Err(broken(format!(
                "positions {} to {} are missing",
                self.last_position + 1,
                e.global_position - 1
            )));
        }
        let (last_version, stream_hash) = self
            .streams
            .get(&e.stream_id)
            .cloned()
            .unwrap_or((0, GENESIS.to_owned()));
        if e.stream_version != last_version + 1 {
            return Err(broken(format!(
                "{} jumps from version {last_version} to {}",
                e.stream_id, e.stream_version
            )));
        }
        let expected_prev = match self.scope {
            ChainScope::Global => &self.last_hash,
            ChainScope::PerStream => &stream_hash,
        };
        if e.prev_hash != *expected_prev {
            return Err(broken(
                "prev_hash does not match the preceding event's hash".into(),
            ));
        }
        let mut input = HashInput::from(e);
        if self.scope == ChainScope::PerStream {
            input.global_position = 0;
            input.recorded_at = e.occurred_at;
        }
        if input.hash() != e.hash {
            return Err(broken("the event's content does not match its hash".into()));
        }
        self.events += 1;
        self.last_position = e.global_position;
        self.last_hash = e.hash.clone();
        self.streams
            .insert(e.stream_id.clone(), (e.stream_version, e.hash.clone()));
        Ok(())
    }

    fn report(self, first_break: Option<ChainBreak>, frame: &ImportFrame) -> ChainReport {
        ChainReport {
            events: self.events,
            head_position: self.last_position,
            head_hash: self.last_hash,
            first_break,
            incomplete_import: frame.incomplete(),
        }
    }
}

/// Reads the whole log and verifies it. Stops at the first break.
pub async fn verify_log(store: &dyn EventStore) -> Result<ChainReport, StoreError> {
    let head = store.head_position().await?;
    let mut verifier = ChainVerifier::new(store.chain_scope());
    let mut frame = ImportFrame::default();
    let mut events = store.subscribe_all(0);
    while verifier.last_position < head {
        let e = match events.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            // A row that cannot be read is a break at its position, not a failure to verify.
            Err(StoreError::Corrupt { position, reason }) => {
                let b = ChainBreak { position, reason };
                return Ok(verifier.report(Some(b), &frame));
            }
            Err(e) => return Err(e),
        };
        if let Err(b) = verifier.check(&e) {
            return Ok(verifier.report(Some(b), &frame));
        }
        frame.see(&e, verifier.events == 1);
    }
    Ok(verifier.report(None, &frame))
}
