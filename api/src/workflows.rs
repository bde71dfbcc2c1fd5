//! The recovery pass of the API's multi-stream workflows (process managers whose state is
//! `workflow_steps`, see `projections::workflows`): a number claimed for an account or
//! extension whose other steps are not in the log after the grace period belongs to a
//! workflow whose process died between appends. The pass reads the streams themselves (the projection only names candidates) and
//! finishes what can be finished or undoes the rest:
//!
//! - main number claimed, account never opened: the claim is released;
//! - extension claimed, extension requested but not attached to the account: attached, or,
//!   when the account refuses now (closed, full), the extension is removed and its number
//!   released;
//! - extension claimed, never requested: the account's attachment (if any) is detached and the
//!   claim released;
//! - extension detached from its account (removed, or the account closed) but its number not
//!   released: the extension is removed if it is not yet, and the number released;
//! - a closed account's main number, once its quarantine is over: released (outcome
//!   `released`).
//!
//! Every change is an ordinary event written by actor `api:recovery`, logged and counted. The
//! same pass frees Idempotency-Keys whose request died with its process and forgets records
//! past their retention. It runs at start-up and then every `interval`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::E164;
use domain::account::{Account, AccountCommand, AccountStatus};
use domain::extension::{Extension, ExtensionStatus};
use domain::ids::{AccountId, ExtensionId};
use domain::number::{Holder, NumberClaim, NumberRole};
use sqlx::Row;

use crate::commands::{execute, load};
use crate::extract::Ctx;
use crate::holdings::{give_back, try_release_number};
use crate::problem::{ApiError, ApiResult};
use crate::routes::extensions::remove_extension;
use crate::state::AppState;

pub const ACTOR: &str = "api:recovery";

/// How the pass behaves (`[api]` settings).
#[derive(Debug, Clone, Copy)]
pub struct RecoverySettings {
    /// A workflow younger than this may still be running: left alone.
    pub grace: Duration,
    /// Between two passes.
    pub interval: Duration,
    /// Completed idempotency records older than this are forgotten.
    pub idempotency_retention: Duration,
    /// A closed account's main number is released this long after the closing.
    pub number_quarantine: Duration,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            idempotency_retention: Duration::from_secs(24 * 3600),
            number_quarantine: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Workflows finished (an extension attached to its account).
    pub completed: u64,
    /// Workflows undone (a claim released, an extension removed).
    pub compensated: u64,
    /// Main numbers of closed accounts released after their quarantine.
    pub released: u64,
    /// Idempotency-Keys freed because their request's process died.
    pub keys_freed: u64,
    /// Idempotency records forgotten after the retention period.
    pub keys_expired: u64,
}

enum Outcome {
    /// The log is consistent (the projection had not caught up) or someone else moved on.
    Nothing,
    Completed,
    Compensated,
    Released,
}

/// What a `workflow_steps` row asks of the pass.
enum Work {
    /// An account's main number claimed for an account being opened.
    Open,
    /// An extension's number claimed for an extension being registered.
    Register(ExtensionId),
    /// A detached extension's number to give back.
    GiveBack(ExtensionId),
    /// A closed account's main number, quarantine over.
    Quarantined,
}

/// `d` before `now`, as `workflow_steps.claimed_at` is written.
fn ago(now: DateTime<Utc>, d: Duration) -> String {
    let before = chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    projections::sql::ts(before)
}

/// The rows due, oldest first: steps that build something or give an extension's number back
/// after the grace period, quarantines once over.
async fn due(
    app: &AppState,
    now: DateTime<Utc>,
    settings: &RecoverySettings,
) -> ApiResult<Vec<(E164, AccountId, Work)>> {
    let build = sqlx::query(
        "SELECT number, MIN(account_id), MIN(extension_id), MIN(claimed_at) FROM workflow_steps \
         WHERE step IN ('open', 'request', 'attach') AND claimed_at < $1 \
         GROUP BY number ORDER BY MIN(claimed_at) LIMIT 1000",
    )
    .bind(ago(now, settings.grace))
    .fetch_all(&app.db.pool);
    let give_back = sqlx::query(
        "SELECT number, step, account_id, extension_id FROM workflow_steps \
         WHERE step = 'release' AND claimed_at < $1 \
         UNION ALL SELECT number, step, account_id, extension_id FROM workflow_steps \
         WHERE step = 'quarantine' AND claimed_at < $2 LIMIT 1000",
    )
    .bind(ago(now, settings.grace))
    .bind(ago(now, settings.number_quarantine))
    .fetch_all(&app.db.pool);
    let (build, give_back) = tokio::try_join!(build, give_back)?;
    let mut due = Vec::with_capacity(build.len() + give_back.len());
    let parsed = |number: String, account: String, extension: Option<String>| {
        let number = E164::parse(&number).ok()?;
        let account = AccountId(account.parse().ok()?);
        let extension = match extension {
            None => None,
            Some(e) => Some(ExtensionId(e.parse().ok()?)),
        };
        Some((number, account, extension))
    };
    for row in build {
        let Some((number, account, extension)) =
            parsed(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)
        else {
            tracing::error!("a workflow_steps row does not parse; skipped");
            continue;
        };
        let work = extension.map_or(Work::Open, Work::Register);
        due.push((number, account, work));
    }
    for row in give_back {
        let step: String = row.try_get(1)?;
        let Some((number, account, extension)) =
            parsed(row.try_get(0)?, row.try_get(2)?, row.try_get(3)?)
        else {
            tracing::error!("a workflow_steps row does not parse; skipped");
            continue;
        };
        let work = match (step.as_str(), extension) {
            ("release", Some(e)) => Work::GiveBack(e),
            ("quarantine", None) => Work::Quarantined,
            _ => {
                tracing::error!(%number, step, "a workflow_steps row does not fit its step; skipped");
                continue;
            }
        };
        due.push((number, account, work));
    }
    Ok(due)
}

/// One recovery pass.
pub async fn recover(app: &AppState, settings: &RecoverySettings) -> ApiResult<Recovered> {
    let now = Utc::now();
    let ctx = Ctx::system(ACTOR);
    let mut done = Recovered::default();
    for (number, account_id, work) in due(app, now, settings).await? {
        let outcome = match work {
            Work::Open => {
                let (unopened, undone) = (AccountStatus::Unopened, Outcome::Compensated);
                release_main(app, &ctx, &number, account_id, unopened, undone).await
            }
            Work::Register(e) => recover_extension(app, &ctx, &number, account_id, e).await,
            Work::GiveBack(e) => {
                let reason = "recovery: the extension had left its account";
                give_back(app, &ctx, account_id, e, &number, reason)
                    .await
                    .map(|given| {
                        if given {
                            Outcome::Completed
                        } else {
                            Outcome::Nothing
                        }
                    })
            }
            Work::Quarantined => {
                let (closed, released) = (AccountStatus::Closed, Outcome::Released);
                release_main(app, &ctx, &number, account_id, closed, released).await
            }
        };
        match outcome {
            Ok(Outcome::Nothing) => {}
            Ok(Outcome::Completed) => {
                done.completed += 1;
                app.metrics.workflow_recovered("completed");
                tracing::warn!(%number, %account_id, "recovery finished an interrupted workflow");
            }
            Ok(Outcome::Compensated) => {
                done.compensated += 1;
                app.metrics.workflow_recovered("compensated");
                tracing::warn!(%number, %account_id, "recovery undid an interrupted workflow: the number is free again");
            }
            Ok(Outcome::Released) => {
                done.released += 1;
                app.metrics.workflow_recovered("released");
                tracing::info!(%number, %account_id, "a closed account's main number is free again after its quarantine");
            }
            Err(e) => {
                tracing::error!(%number, %account_id, error = %e, "recovery could not settle a workflow; the next pass tries again");
            }
        }
    }
    let cutoff = now - chrono::Duration::from_std(settings.grace).unwrap_or_default();
    let retention = chrono::Duration::from_std(settings.idempotency_retention).unwrap_or_default();
    let (freed, expired) = app.idempotency.sweep(cutoff, now - retention).await?;
    if freed > 0 {
        tracing::warn!(
            keys = freed,
            "recovery freed Idempotency-Keys whose request died with its process"
        );
    }
    done.keys_freed = freed;
    done.keys_expired = expired;
    Ok(done)
}

/// Releases `number` from `account_id`'s main number if the account is (still) `status`:
/// never opened (a workflow to undo), or closed (its quarantine is over).
async fn release_main(
    app: &AppState,
    ctx: &Ctx,
    number: &E164,
    account_id: AccountId,
    status: AccountStatus,
    outcome: Outcome,
) -> ApiResult<Outcome> {
    if !still_held(app, number, account_id, NumberRole::Main).await? {
        return Ok(Outcome::Nothing);
    }
    let account = load::<Account>(app, &account_id.stream_id()).await?.state;
    if account.status != status {
        return Ok(Outcome::Nothing);
    }
    try_release_number(app, ctx, number, account_id).await?;
    Ok(outcome)
}

/// Whether `number` is still held for (`account_id`, `role`).
async fn still_held(
    app: &AppState,
    number: &E164,
    account_id: AccountId,
    role: NumberRole,
) -> ApiResult<bool> {
    let claim = load::<NumberClaim>(app, &domain::number::stream_id(number)).await?;
    Ok(claim.state.holder == Some(Holder { account_id, role }))
}

async fn recover_extension(
    app: &AppState,
    ctx: &Ctx,
    number: &E164,
    account_id: AccountId,
    extension_id: ExtensionId,
) -> ApiResult<Outcome> {
    let role = NumberRole::Extension { extension_id };
    if !still_held(app, number, account_id, role).await? {
        return Ok(Outcome::Nothing);
    }
    let extension = load::<Extension>(app, &extension_id.stream_id())
        .await?
        .state;
    let account = load::<Account>(app, &account_id.stream_id()).await?.state;
    let attached = account.extensions.contains_key(&extension_id);
    match extension.status {
        ExtensionStatus::Pending | ExtensionStatus::Verified if attached => Ok(Outcome::Nothing),
        ExtensionStatus::Pending | ExtensionStatus::Verified => {
            let attach = AccountCommand::AttachExtension {
                extension_id,
                number: number.clone(),
            };
            match execute::<Account>(app, ctx, &account_id.stream_id(), None, &attach).await {
                Ok(_) => Ok(Outcome::Completed),
                Err(ApiError::Rule(refused)) => {
                    let reason = format!("recovery: the account refused the extension ({refused})");
                    remove_extension(app, ctx, extension_id, &extension, &reason).await?;
                    Ok(Outcome::Compensated)
                }
                Err(e) => Err(e),
            }
        }
        ExtensionStatus::Unrequested | ExtensionStatus::Removed => {
            if attached {
                let detach = AccountCommand::DetachExtension { extension_id };
                execute::<Account>(app, ctx, &account_id.stream_id(), None, &detach).await?;
            }
            try_release_number(app, ctx, number, account_id).await?;
            Ok(Outcome::Compensated)
        }
    }
}

/// Runs a pass now and then every `settings.interval` until `stopped` turns true.
pub async fn run(
    app: crate::state::Shared,
    settings: RecoverySettings,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match recover(&app, &settings).await {
            Ok(done) if done != Recovered::default() => {
                tracing::info!(?done, "recovery pass");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "recovery pass failed; retrying later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}
