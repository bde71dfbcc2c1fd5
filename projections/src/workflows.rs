//! The state of the API's multi-stream workflows, from the log (table `workflow_claims`, kept
//! by the routing projection in its own transactions: a projection of its own would add a
//! commit, and a disk flush, per batch): every number claimed for an
//! owner that is not complete yet. Opening an account claims its main number, then opens the
//! account; registering an extension claims the number, then writes the extension's request
//! and the account's attachment. A claim is in `workflow_claims` from its `number.claimed` until
//! the owner's steps are all in the log (or the number is released). A row that stays past the
//! grace period is a workflow whose process died between its appends: the API's recovery pass
//! finishes or undoes it. `claimed_at` is the claim's `occurred_at` (which an import keeps, so
//! a copied log projects the same rows).

use domain::Event;
use domain::account::AccountEvent;
use domain::extension::ExtensionEvent;
use domain::number::{NumberEvent, NumberRole};
use sqlx::AnyConnection;

use crate::runner::Decoded;
use crate::sql::ts;

/// The table's statements, part of the routing projection's schema.
pub const CREATE_CLAIMS: &str = "CREATE TABLE IF NOT EXISTS workflow_claims (number TEXT PRIMARY KEY, \
    account_id TEXT NOT NULL, extension_id TEXT, claimed_at TEXT NOT NULL, requested BIGINT NOT NULL, \
    attached BIGINT NOT NULL)";
pub const CREATE_CLAIMS_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS workflow_claims_by_age ON workflow_claims (claimed_at)";

/// Forgets an extension's claim once both of its other steps are in.
const EXTENSION_DONE: &str =
    "DELETE FROM workflow_claims WHERE number = $1 AND requested = 1 AND attached = 1";

/// Applies the events of a batch that concern workflows, in the batch's transaction.
pub async fn apply_batch(
    conn: &mut AnyConnection,
    events: &[Decoded<'_>],
) -> Result<(), sqlx::Error> {
    for d in events {
        apply(conn, d).await?;
    }
    Ok(())
}

async fn apply(conn: &mut AnyConnection, d: &Decoded<'_>) -> Result<(), sqlx::Error> {
    match &d.event {
        Event::Number(NumberEvent::Claimed {
            number,
            account_id,
            role,
        }) => {
            let extension_id = match role {
                NumberRole::Main => None,
                NumberRole::Extension { extension_id } => Some(extension_id.to_string()),
                // An access number is one step: nothing to finish.
                NumberRole::Access { .. } => return Ok(()),
            };
            sqlx::query(
                "INSERT INTO workflow_claims (number, account_id, extension_id, claimed_at, \
                 requested, attached) VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT (number) DO UPDATE \
                 SET account_id = excluded.account_id, extension_id = excluded.extension_id, \
                 claimed_at = excluded.claimed_at, requested = 0, attached = 0",
            )
            .bind(number.to_string())
            .bind(account_id.to_string())
            .bind(extension_id)
            .bind(ts(d.recorded.occurred_at))
            .execute(&mut *conn)
            .await?;
        }
        Event::Number(NumberEvent::Released { number, .. }) => {
            sqlx::query("DELETE FROM workflow_claims WHERE number = $1")
                .bind(number.to_string())
                .execute(&mut *conn)
                .await?;
        }
        Event::Account(AccountEvent::Opened {
            account_id,
            main_number,
            ..
        }) => {
            sqlx::query(
                "DELETE FROM workflow_claims WHERE number = $1 AND account_id = $2 \
                 AND extension_id IS NULL",
            )
            .bind(main_number.to_string())
            .bind(account_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
        Event::Account(AccountEvent::ExtensionAttached {
            extension_id,
            number,
        }) => step(conn, "attached", &number.to_string(), extension_id).await?,
        Event::Extension(ExtensionEvent::Requested {
            extension_id,
            number,
            ..
        }) => step(conn, "requested", &number.to_string(), extension_id).await?,
        _ => {}
    }
    Ok(())
}

/// Records one of an extension's two steps, and forgets the claim when both are in.
async fn step(
    conn: &mut AnyConnection,
    column: &'static str,
    number: &str,
    extension_id: &domain::ids::ExtensionId,
) -> Result<(), sqlx::Error> {
    let sql =
        format!("UPDATE workflow_claims SET {column} = 1 WHERE number = $1 AND extension_id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(number)
        .bind(extension_id.to_string())
        .execute(&mut *conn)
        .await?;
    sqlx::query(EXTENSION_DONE)
        .bind(number)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
