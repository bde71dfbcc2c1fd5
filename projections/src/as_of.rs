//! An account as it stood at a past instant: its state, devices, extensions and settings,
//! folded from every event the log had recorded by then, plus its rated usage up to then from
//! the billing projection.

use chrono::SecondsFormat;
use domain::Instant;
use domain::account::AccountStatus;
use domain::extension::ExtensionStatus;
use domain::ids::AccountId;
use futures::TryStreamExt;
use infra::{EventStore, StoreError};
use serde_json::{Value, json};
use sqlx::Row;

use crate::db::ProjectionDb;
use crate::{ApplyError, RoutingView};

#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("account {0} did not exist at that instant")]
    NoSuchAccount(AccountId),
}

fn text(t: Instant) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Folds the log up to `at` (by `recorded_at`: what the service knew then) and describes the
/// account. `billing` adds the usage rated up to `at`.
pub async fn account_as_of(
    store: &dyn EventStore,
    account_id: AccountId,
    at: Instant,
    billing: Option<&ProjectionDb>,
) -> Result<Value, AsOfError> {
    let head = store.head_position().await?;
    let mut view = RoutingView::default();
    let mut events = store.subscribe_all(0);
    let mut seen = 0;
    while seen < head {
        let Some(e) = events.try_next().await? else {
            break;
        };
        seen = e.global_position;
        if e.recorded_at <= at {
            view.apply(&e)?;
        }
    }
    let account = view
        .account(account_id)
        .filter(|a| a.status != AccountStatus::Unopened)
        .ok_or(AsOfError::NoSuchAccount(account_id))?;
    let devices: Vec<Value> = view
        .devices_of(account_id)
        .into_iter()
        .map(|(id, d)| {
            let contacts: Vec<Value> = d
                .live_contacts(at)
                .map(|(uri, c)| json!({ "contact_uri": uri, "source": c.source, "expires_at": text(c.expires_at) }))
                .collect();
            json!({ "device_id": id, "sip_username": d.sip_username, "live_contacts": contacts })
        })
        .collect();
    let extensions: Vec<Value> = view
        .extensions_of(account_id)
        .into_iter()
        .map(|(id, e)| {
            let status = match e.status {
                ExtensionStatus::Unrequested => "unrequested",
                ExtensionStatus::Pending => "pending",
                ExtensionStatus::Verified => "verified",
                ExtensionStatus::Removed => "removed",
            };
            json!({
                "extension_id": id,
                "number": e.number,
                "native_provider": e.native_provider,
                "status": status,
                "locked": e.locked,
                "settings": e.settings,
            })
        })
        .collect();
    let usage = match billing {
        Some(db) => {
            let row = sqlx::query(
                "SELECT COUNT(*), CAST(COALESCE(SUM(charge_minor), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(billable_secs), 0) AS BIGINT) FROM rated_legs \
                 WHERE account_id = $1 AND ended_at <= $2",
            )
            .bind(account_id.to_string())
            .bind(crate::sql::ts(at))
            .fetch_one(&db.pool)
            .await?;
            json!({
                "rated_legs": row.try_get::<i64, _>(0)?,
                "charge_minor": row.try_get::<i64, _>(1)?,
                "billable_secs": row.try_get::<i64, _>(2)?,
                "currency": account.currency,
            })
        }
        None => Value::Null,
    };
    let status = match account.status {
        AccountStatus::Unopened => "unopened",
        AccountStatus::Active => "active",
        AccountStatus::Suspended => "suspended",
        AccountStatus::Closed => "closed",
    };
    Ok(json!({
        "account_id": account_id,
        "as_of": text(at),
        "log_position": view.position(),
        "status": status,
        "name": account.name,
        "main_number": account.main_number,
        "tariff_id": account.tariff_id,
        "ring_policy": account.ring_policy,
        "daily_spend_limit_minor": account.daily_spend_limit_minor,
        "devices": devices,
        "extensions": extensions,
        "usage": usage,
    }))
}
