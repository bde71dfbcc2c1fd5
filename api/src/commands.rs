//! Running a domain command for an HTTP request, through `infra::command`: fold the stream,
//! `decide`, append what it decided with the version it was decided on, and answer only once
//! the append is durable. Events name the calling key and carry the request id; without
//! `If-Match` a lost race is decided again, with `If-Match` the caller gets 412.

use domain::Aggregate;
use infra::command::{self, CommandError, Origin};

use crate::extract::Ctx;
use crate::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub use infra::command::Loaded;

/// What a command left behind: the new state and the stream's version.
pub type Written<A> = Loaded<A>;

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(e) => e.into(),
            CommandError::Store(e) => e.into(),
            CommandError::Stale { expected, actual } => {
                ApiError::PreconditionFailed { expected, actual }
            }
            CommandError::Contended(stream) => ApiError::Contended(format!(
                "{stream} kept changing while the command was decided; try again"
            )),
            e @ CommandError::Decode { .. } => ApiError::Unexpected(e.to_string()),
        }
    }
}

pub async fn load<A: Aggregate>(app: &AppState, stream: &str) -> ApiResult<Loaded<A>> {
    Ok(command::load(app.store.as_ref(), stream).await?)
}

/// Starts a new stream (a freshly minted id): decides on the empty state and appends with
/// "no stream" expected, without reading first. A stream that exists after all is refused.
pub async fn create<A: Aggregate>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    command: &A::Command,
) -> ApiResult<Written<A>> {
    let empty = Loaded {
        state: A::default(),
        version: 0,
    };
    execute_on(app, ctx, stream, Some(0), command, Some(empty))
        .await
        .map_err(|e| match e {
            ApiError::PreconditionFailed { .. } => {
                ApiError::Conflict(format!("{stream} already exists"))
            }
            e => e,
        })
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
    loaded: Option<Loaded<A>>,
) -> ApiResult<Written<A>> {
    Ok(
        decide_and_append(app, ctx, stream, if_match, command, loaded)
            .await?
            .0,
    )
}

/// As `execute`, with the events the command wrote (none when it changed nothing).
pub async fn execute_with_events<A: Aggregate>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    if_match: Option<u64>,
    command: &A::Command,
) -> ApiResult<(Written<A>, Vec<A::Event>)> {
    decide_and_append(app, ctx, stream, if_match, command, None).await
}

async fn decide_and_append<A: Aggregate>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    if_match: Option<u64>,
    command: &A::Command,
    loaded: Option<Loaded<A>>,
) -> ApiResult<(Written<A>, Vec<A::Event>)> {
    let actor = &ctx.actor;
    let observe = |took| app.metrics.append(took);
    let origin = Origin {
        actor,
        correlation_id: Some(ctx.request_id),
        observe_append: Some(&observe),
    };
    Ok(command::execute(
        app.store.as_ref(),
        &origin,
        stream,
        command,
        loaded,
        if_match,
    )
    .await?)
}
