//! Who holds a number, as requests and the recovery pass change it: claiming a number for an
//! account, giving it back (also after a later step of the same request failed), and the
//! steps after an extension leaves its account.

use domain::E164;
use domain::extension::{Extension, ExtensionCommand, ExtensionStatus};
use domain::ids::{AccountId, ExtensionId};
use domain::number::{Holder, NumberClaim, NumberCommand, NumberRole};

use crate::commands::{execute, execute_usually_new, load};
use crate::extract::Ctx;
use crate::problem::ApiResult;
use crate::state::AppState;

/// Claims `number` for `account` in `role`, refusing one another account holds.
pub async fn claim_number(
    app: &AppState,
    ctx: &Ctx,
    number: &E164,
    account_id: AccountId,
    role: NumberRole,
) -> ApiResult<()> {
    let command = NumberCommand::Claim {
        number: number.clone(),
        account_id,
        role,
    };
    execute_usually_new::<NumberClaim>(app, ctx, &domain::number::stream_id(number), &command)
        .await?;
    Ok(())
}

/// Gives `number` back from `account_id`.
pub async fn try_release_number(
    app: &AppState,
    ctx: &Ctx,
    number: &E164,
    account_id: AccountId,
) -> ApiResult<()> {
    let command = NumberCommand::Release {
        number: number.clone(),
        account_id,
    };
    execute::<NumberClaim>(app, ctx, &domain::number::stream_id(number), None, &command).await?;
    Ok(())
}

/// Gives a number back after a later step of the same request failed (best effort: a failure
/// here is logged, and the recovery pass releases the claim after its grace period).
pub async fn release_number(app: &AppState, ctx: &Ctx, number: &E164, account_id: AccountId) {
    if let Err(e) = try_release_number(app, ctx, number, account_id).await {
        tracing::error!(%number, error = %e, "could not release a number after a failed request");
    }
}

/// The steps after an extension left its account (removed by an admin, or its account
/// closed): the extension is removed if it is not yet, and its number released if the
/// extension still holds it. False when the number was not held for it (nothing to give back).
pub async fn give_back(
    app: &AppState,
    ctx: &Ctx,
    account_id: AccountId,
    id: ExtensionId,
    number: &E164,
    reason: &str,
) -> ApiResult<bool> {
    let state = load::<Extension>(app, &id.stream_id()).await?.state;
    if matches!(
        state.status,
        ExtensionStatus::Pending | ExtensionStatus::Verified
    ) {
        let command = ExtensionCommand::Remove {
            reason: reason.to_owned(),
        };
        execute::<Extension>(app, ctx, &id.stream_id(), None, &command).await?;
    }
    let holder = load::<NumberClaim>(app, &domain::number::stream_id(number))
        .await?
        .state
        .holder;
    let role = NumberRole::Extension { extension_id: id };
    if holder != Some(Holder { account_id, role }) {
        return Ok(false);
    }
    try_release_number(app, ctx, number, account_id).await?;
    Ok(true)
}
