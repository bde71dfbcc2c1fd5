//! Running a domain command against the log: fold the stream, `decide`, append what was
//! decided with the version it was decided on, and return only once the append is durable.
//! A writer that lost a race decides again on the new state, unless it pinned the version it
//! decided on (HTTP `If-Match`), which turns the race into `Stale`. Shared by the HTTP API,
//! the SIP edge and the edge's sweeper.

use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{Aggregate, DomainError, DomainEvent};
use uuid::Uuid;

use crate::{EventStore, ExpectedVersion, NewEvent, StoreError};

/// Decisions retried after losing a race.
const RETRIES: usize = 5;
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position} cannot be read: {message}")]
    Decode { position: u64, message: String },
    #[error("{0} kept changing while the command was decided")]
    Contended(String),
    /// The stream is not at the version the caller pinned.
    #[error("the stream is at version {actual}, not {expected}")]
    Stale { expected: u64, actual: u64 },
}

/// An aggregate as folded from its stream, with the stream's version (0: no stream).
pub struct Loaded<A> {
    pub state: A,
    pub version: u64,
}

impl<A: Default> Loaded<A> {
    /// A stream with nothing in it.
    pub fn empty() -> Self {
        Self {
            state: A::default(),
            version: 0,
        }
    }
}

pub async fn load<A: Aggregate>(
    store: &dyn EventStore,
    stream: &str,
) -> Result<Loaded<A>, CommandError> {
    load_after(store, stream, Loaded::empty()).await
}

/// Folds the events of `stream` after `from` (a state folded earlier, at its version) into it.
pub async fn load_after<A: Aggregate>(
    store: &dyn EventStore,
    stream: &str,
    from: Loaded<A>,
) -> Result<Loaded<A>, CommandError> {
    let Loaded {
        mut state,
        mut version,
    } = from;
    loop {
        let page = store.read_stream(stream, version + 1, PAGE).await?;
        for e in &page {
            let event = A::Event::decode(&e.event_type, e.schema_version, e.payload.clone())
                .map_err(|err| CommandError::Decode {
                    position: e.global_position,
                    message: err.to_string(),
                })?;
            state.apply(&event);
            version = e.stream_version;
        }
        if page.len() < PAGE {
            return Ok(Loaded { state, version });
        }
    }
}

/// Who writes, and under which correlation id.
pub struct Origin<'a> {
    pub actor: &'a str,
    pub correlation_id: Option<Uuid>,
    /// Told how long each append took to be durable (metrics).
    pub observe_append: Option<&'a (dyn Fn(Duration) + Sync)>,
}

/// Loads (unless `loaded` is given), decides and appends; returns the new state, its version
/// and the events written (none when the command was already satisfied). With `pin`, the
/// command is decided only on that stream version: any other is `Stale`, never retried.
pub async fn execute<A: Aggregate>(
    store: &dyn EventStore,
    origin: &Origin<'_>,
    stream: &str,
    command: &A::Command,
    mut loaded: Option<Loaded<A>>,
    pin: Option<u64>,
) -> Result<(Loaded<A>, Vec<A::Event>), CommandError> {
    for _ in 0..RETRIES {
        let Loaded { mut state, version } = match loaded.take() {
            Some(l) => l,
            None => load::<A>(store, stream).await?,
        };
        if let Some(expected) = pin
            && expected != version
        {
            return Err(CommandError::Stale {
                expected,
                actual: version,
            });
        }
        let now = Utc::now();
        let events = state.decide(command, now)?;
        if events.is_empty() {
            return Ok((Loaded { state, version }, events));
        }
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let new = events
            .iter()
            .map(|e| {
                let mut n = NewEvent::from_domain(e, now, origin.actor);
                if let Some(c) = origin.correlation_id {
                    n.correlation_id = c;
                }
                n
            })
            .collect();
        let started = Instant::now();
        let appended = store.append(stream, expected, new).await;
        if let Some(observe) = origin.observe_append {
            observe(started.elapsed());
        }
        match appended {
            Ok(r) => {
                for e in &events {
                    state.apply(e);
                }
                let version = r.last_version;
                return Ok((Loaded { state, version }, events));
            }
            Err(StoreError::Conflict { actual, .. }) => {
                if let Some(expected) = pin {
                    return Err(CommandError::Stale { expected, actual });
                }
                tracing::debug!(stream, "lost a race on the stream; deciding again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contended(stream.to_string()))
}
