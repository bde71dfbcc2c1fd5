//! Running a domain command: fold the stream, `decide`, append what it decided with the version
//! it was decided on, and answer only once the append is durable. A concurrent writer makes the
//! append fail on its expected version; without `If-Match` the command is decided again on the
//! new state, with `If-Match` the caller gets 412.

use std::time::Instant as Clock;

use chrono::Utc;
use domain::{Aggregate, DomainEvent};
use infra::command::CommandError;
use infra::{ExpectedVersion, NewEvent, StoreError};

use crate::extract::Ctx;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

/// Decisions retried after losing a race, before giving up with 409.
const RETRIES: usize = 5;

pub use infra::command::Loaded;

/// What a command left behind.
pub struct Written<A> {
    pub state: A,
    pub version: u64,
}

/// Appends decided events with the caller as actor and the request id as correlation id.
async fn append<E: DomainEvent>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    expected: ExpectedVersion,
    events: &[E],
    now: chrono::DateTime<Utc>,
) -> Result<infra::AppendResult, StoreError> {
    let actor = ctx.caller.actor();
    let new: Vec<NewEvent> = events
        .iter()
        .map(|e| {
            let mut n = NewEvent::from_domain(e, now, &actor);
            n.correlation_id = ctx.request_id;
            n
        })
        .collect();
    let started = Clock::now();
    let result = app.store.append(stream, expected, new).await;
    app.metrics.append(started.elapsed());
    result
}

pub async fn load<A: Aggregate>(app: &AppState, stream: &str) -> ApiResult<Loaded<A>> {
    infra::command::load(app.store.as_ref(), stream)
        .await
        .map_err(|e| match e {
            CommandError::Store(e) => e.into(),
            CommandError::Domain(e) => e.into(),
            other => ApiError::Unexpected(other.to_string()),
        })
}

/// Starts a new stream (a freshly minted id): decides on the empty state and appends with
/// "no stream" expected, without reading first. A stream that exists after all is refused.
pub async fn create<A: Aggregate>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    command: &A::Command,
) -> ApiResult<Written<A>> {
    let now = Utc::now();
    let mut state = A::default();
    let events = state.decide(command, now)?;
    let result = append(app, ctx, stream, ExpectedVersion::NoStream, &events, now).await;
    match result {
        Ok(r) => {
            for e in &events {
                state.apply(e);
            }
            Ok(Written {
                state,
                version: r.last_version,
            })
        }
        Err(StoreError::Conflict { .. }) => {
            Err(ApiError::Conflict(format!("{stream} already exists")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads, decides and appends `command` on `stream`; `if_match` pins the version decided on.
pub async fn execute<A: Aggregate>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    if_match: Option<u64>,
    command: &A::Command,
) -> ApiResult<Written<A>> {
    execute_on(app, ctx, stream, if_match, command, None).await
}

/// As `execute`, deciding first on `loaded` (a state the caller has just read) instead of
/// reading it again; a lost race reloads as usual.
pub async fn execute_on<A: Aggregate>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    if_match: Option<u64>,
    command: &A::Command,
    mut loaded: Option<Loaded<A>>,
) -> ApiResult<Written<A>> {
    for _ in 0..RETRIES {
        let Loaded { mut state, version } = match loaded.take() {
            Some(l) => l,
            None => load::<A>(app, stream).await?,
        };
        if let Some(expected) = if_match
            && expected != version
        {
            return Err(ApiError::PreconditionFailed {
                expected,
                actual: version,
            });
        }
        let now = Utc::now();
        let events = state.decide(command, now)?;
        if events.is_empty() {
            return Ok(Written { state, version });
        }
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let result = append(app, ctx, stream, expected, &events, now).await;
        match result {
            Ok(r) => {
                for e in &events {
                    state.apply(e);
                }
                return Ok(Written {
                    state,
                    version: r.last_version,
                });
            }
            Err(StoreError::Conflict { actual, .. }) => {
                if let Some(expected) = if_match {
                    return Err(ApiError::PreconditionFailed { expected, actual });
                }
                tracing::debug!(stream, "lost a race on the stream; deciding again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(format!(
        "{stream} kept changing while the command was decided; try again"
    )))
}
