//! Running a domain command for an HTTP request, through `infra::command`: fold the stream,
//! `decide`, append what it decided with the version it was decided on, and answer only once
//! the append is durable. Events name the calling key and carry the request id; without
//! `If-Match` a lost race is decided again, with `If-Match` the caller gets 412. Without
//! `If-Match`, a stream whose state this process keeps (`AppState::folded`) is decided on that
//! state without reading it: the append, made with the kept version, proves it current.

use std::time::Duration;

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

/// Folds `stream`, from the state kept in `app.folded` when there is one (the events after it
/// are read from the log, so the answer is as fresh as a full fold).
pub async fn load<A: Aggregate + Send + Sync + 'static>(
    app: &AppState,
    stream: &str,
) -> ApiResult<Loaded<A>> {
    let loaded = match app.folded.get::<A>(stream) {
        Some(kept) => command::load_after(app.store.as_ref(), stream, kept).await?,
        None => command::load(app.store.as_ref(), stream).await?,
    };
    if loaded.version > 0 {
        app.folded.put(stream, &loaded);
    }
    Ok(loaded)
}

/// Starts a new stream (a freshly minted id): decides on the empty state and appends with
/// "no stream" expected, without reading first. A stream that exists after all is refused.
pub async fn create<A: Aggregate + Send + Sync + 'static>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    command: &A::Command,
) -> ApiResult<Written<A>> {
    execute_on(app, ctx, stream, Some(0), command, Some(Loaded::empty()))
        .await
        .map_err(|e| match e {
            ApiError::PreconditionFailed { .. } => {
                ApiError::Conflict(format!("{stream} already exists"))
            }
            e => e,
        })
}

/// Loads, decides and appends `command` on `stream`; `if_match` pins the version decided on.
pub async fn execute<A: Aggregate + Send + Sync + 'static>(
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
pub async fn execute_on<A: Aggregate + Send + Sync + 'static>(
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
pub async fn execute_with_events<A: Aggregate + Send + Sync + 'static>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    if_match: Option<u64>,
    command: &A::Command,
) -> ApiResult<(Written<A>, Vec<A::Event>)> {
    decide_and_append(app, ctx, stream, if_match, command, None).await
}

/// As `execute` without `If-Match`, for a stream that is usually new (a number claimed for the
/// first time): when this process keeps no state for it, the command is first decided on the
/// empty stream instead of reading it.
pub async fn execute_usually_new<A: Aggregate + Send + Sync + 'static>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    command: &A::Command,
) -> ApiResult<Written<A>> {
    let guess = app.folded.get::<A>(stream).unwrap_or_else(Loaded::empty);
    if let Some(done) = try_on_guess(app, ctx, stream, command, guess).await? {
        return Ok(done.0);
    }
    execute_on(app, ctx, stream, None, command, None).await
}

fn origin<'a>(ctx: &'a Ctx, observe: &'a (dyn Fn(Duration) + Sync)) -> Origin<'a> {
    Origin {
        actor: &ctx.actor,
        correlation_id: Some(ctx.request_id),
        observe_append: Some(observe),
    }
}

/// Decides `command` on `guess` (a state not read just now) and appends what it decided with
/// the guess's version, so only a successful append proves the guess was current (a lost
/// race is decided again on a fresh read, as always). None when the command refused or
/// changed nothing (nothing was appended, so nothing proved the guess): that must be decided
/// again on a fresh read.
async fn try_on_guess<A: Aggregate + Send + Sync + 'static>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    command: &A::Command,
    guess: Loaded<A>,
) -> ApiResult<Option<(Written<A>, Vec<A::Event>)>> {
    let observe = |took| app.metrics.append(took);
    match command::execute(
        app.store.as_ref(),
        &origin(ctx, &observe),
        stream,
        command,
        Some(guess),
        None,
    )
    .await
    {
        Ok((written, events)) if !events.is_empty() => {
            app.folded.put(stream, &written);
            Ok(Some((written, events)))
        }
        Ok(_) | Err(CommandError::Domain(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn decide_and_append<A: Aggregate + Send + Sync + 'static>(
    app: &AppState,
    ctx: &Ctx,
    stream: &str,
    if_match: Option<u64>,
    command: &A::Command,
    loaded: Option<Loaded<A>>,
) -> ApiResult<(Written<A>, Vec<A::Event>)> {
    // Unpinned, on a stream this process wrote or read lately: decided on the state kept from
    // then, without reading the stream first.
    if loaded.is_none()
        && if_match.is_none()
        && let Some(kept) = app.folded.get::<A>(stream)
        && let Some(done) = try_on_guess(app, ctx, stream, command, kept).await?
    {
        return Ok(done);
    }
    let loaded = match loaded {
        Some(l) => l,
        None => load(app, stream).await?,
    };
    let observe = |took| app.metrics.append(took);
    let (written, events) = command::execute(
        app.store.as_ref(),
        &origin(ctx, &observe),
        stream,
        command,
        Some(loaded),
        if_match,
    )
    .await?;
    app.folded.put(stream, &written);
    Ok((written, events))
}
