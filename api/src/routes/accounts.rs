//! Accounts: open, read, list, suspend, reinstate, close; ring policy, daily spend limit and
//! tariff. Opening claims the main number first (`number-{e164}`), so two accounts can never
//! hold one number.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use domain::account::{Account, AccountCommand, AccountEvent, AccountStatus, RingPolicy};
use domain::ids::{AccountId, TariffId};
use domain::number::NumberRole;
use domain::tariff::Tariff;
use domain::{Currency, E164};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    Page, created, list_response, page_limit, paginate, parse_e164, parse_uuid, versioned,
};
use crate::commands::{Loaded, Written, create, execute, execute_with_events, load};
use crate::extract::{Admin, Ctx, IfMatch, JsonBody, Query};
use crate::holdings::{claim_number, give_back, release_number};
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, Shared};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    pub name: String,
    /// E.164, e.g. `+441632960001`.
    pub main_number: String,
    pub tariff_id: String,
    /// ISO 4217, e.g. `GBP`.
    pub currency: String,
    /// Defaults to 5.
    pub max_extensions: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RingPolicyBody {
    /// 5 to 300.
    pub ring_timeout_secs: u16,
    /// Shorter than the ring timeout.
    pub extension_delay_secs: u16,
    pub prefer_alternate_path: bool,
}

impl From<&RingPolicy> for RingPolicyBody {
    fn from(p: &RingPolicy) -> Self {
        Self {
            ring_timeout_secs: p.ring_timeout_secs,
            extension_delay_secs: p.extension_delay_secs,
            prefer_alternate_path: p.prefer_alternate_path,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendLimit {
    /// Minor units per day; null for no limit.
    pub daily_limit_minor: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TariffChoice {
    pub tariff_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub account_id: String,
    /// active, suspended or closed.
    pub status: String,
    pub name: String,
    pub main_number: Option<String>,
    pub tariff_id: Option<String>,
    pub currency: Option<String>,
    pub ring_policy: RingPolicyBody,
    pub daily_spend_limit_minor: Option<i64>,
    pub max_extensions: u8,
    pub extension_ids: Vec<String>,
    /// The stream version; send it back in `If-Match` to update.
    pub version: u64,
}

fn view(id: AccountId, a: &Account, version: u64) -> AccountView {
    AccountView {
        account_id: id.to_string(),
        status: match a.status {
            AccountStatus::Unopened => "unopened",
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Closed => "closed",
        }
        .to_owned(),
        name: a.name.clone(),
        main_number: a.main_number.as_ref().map(E164::to_string),
        tariff_id: a.tariff_id.map(|t| t.to_string()),
        currency: a.currency.map(|c| c.to_string()),
        ring_policy: (&a.ring_policy).into(),
        daily_spend_limit_minor: a.daily_spend_limit_minor,
        max_extensions: a.max_extensions,
        extension_ids: a.extensions.keys().map(|e| e.to_string()).collect(),
        version,
    }
}

pub fn account_id(text: &str) -> ApiResult<AccountId> {
    parse_uuid(text, "account_id").map(AccountId)
}

/// The account, or 404 when it was never opened.
pub async fn existing(app: &AppState, id: AccountId) -> ApiResult<Loaded<Account>> {
    let loaded = load::<Account>(app, &id.stream_id()).await?;
    if loaded.state.status == AccountStatus::Unopened {
        return Err(ApiError::NotFound("account"));
    }
    Ok(loaded)
}

async fn tariff_exists(app: &AppState, id: TariffId) -> ApiResult<Tariff> {
    let t = load::<Tariff>(app, &id.stream_id()).await?.state;
    if t.versions.is_empty() {
        return Err(ApiError::invalid("tariff_id", "no such tariff"));
    }
    Ok(t)
}

#[utoipa::path(post, path = "/v1/accounts", tag = "admin", request_body = OpenAccount,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe")),
    responses((status = 201, body = AccountView), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn open(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    JsonBody(body): JsonBody<OpenAccount>,
) -> ApiResult<Response> {
    let main_number = parse_e164(&body.main_number, "main_number")?;
    let tariff_id = TariffId(parse_uuid(&body.tariff_id, "tariff_id")?);
    let currency = Currency::parse(&body.currency)
        .map_err(|e| ApiError::invalid("currency", e.to_string()))?;
    let tariff = tariff_exists(&app, tariff_id).await?;
    if tariff.versions.iter().all(|v| v.currency != currency) {
        return Err(ApiError::invalid(
            "currency",
            "the tariff has no version in this currency",
        ));
    }
    let id = AccountId(Uuid::now_v7());
    let command = AccountCommand::Open {
        account_id: id,
        name: body.name,
        main_number: main_number.clone(),
        tariff_id,
        currency,
        max_extensions: body.max_extensions,
    };
    // Check the command's own rules before claiming the number, so a bad name claims nothing.
    use domain::Aggregate;
    Account::default().decide(&command, chrono::Utc::now())?;
    claim_number(&app, &ctx, &main_number, id, NumberRole::Main).await?;
    let written = create::<Account>(&app, &ctx, &id.stream_id(), &command).await;
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            release_number(&app, &ctx, &main_number, id).await;
            return Err(e);
        }
    };
    Ok(created(
        format!("/v1/accounts/{id}"),
        written.version,
        view(id, &written.state, written.version),
    ))
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}", tag = "admin",
    params(("account_id" = String, Path)),
    responses((status = 200, body = AccountView), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = account_id(&id)?;
    let Loaded { state, version } = existing(&app, id).await?;
    Ok(versioned(version, view(id, &state, version)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountSummary {
    pub account_id: String,
    pub name: String,
    pub main_number: String,
    pub status: String,
}

#[utoipa::path(get, path = "/v1/accounts", tag = "admin", params(ListQuery),
    responses((status = 200, body = Page<AccountSummary>, description = "JSON, or CSV with Accept: text/csv")))]
pub async fn list(
    State(app): State<Shared>,
    Admin(_): Admin,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let limit = page_limit(q.limit)?;
    let rows = sqlx::query(
        "SELECT account_id, name, main_number, status FROM routing_accounts \
         WHERE account_id > $1 ORDER BY account_id LIMIT $2",
    )
    .bind(q.after.unwrap_or_default())
    .bind(limit as i64 + 1)
    .fetch_all(&app.db.pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(AccountSummary {
            account_id: r.try_get(0)?,
            name: r.try_get(1)?,
            main_number: r.try_get(2)?,
            status: r.try_get(3)?,
        });
    }
    Ok(list_response(
        &headers,
        &["account_id", "name", "main_number", "status"],
        paginate(items, limit, |a| a.account_id.clone()),
    ))
}

async fn change(
    app: &AppState,
    ctx: &Ctx,
    id: &str,
    if_match: Option<u64>,
    command: AccountCommand,
) -> ApiResult<Response> {
    let id = account_id(id)?;
    existing(app, id).await?;
    let Written { state, version, .. } =
        execute::<Account>(app, ctx, &id.stream_id(), if_match, &command).await?;
    Ok(versioned(version, view(id, &state, version)))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/suspend", tag = "admin",
    params(("account_id" = String, Path), ("If-Match" = Option<String>, Header)), request_body = Reason,
    responses((status = 200, body = AccountView), (status = 412, body = crate::problem::Problem)))]
pub async fn suspend(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(v): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Reason>,
) -> ApiResult<Response> {
    change(
        &app,
        &ctx,
        &id,
        v,
        AccountCommand::Suspend {
            reason: body.reason,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/reinstate", tag = "admin",
    params(("account_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = AccountView), (status = 412, body = crate::problem::Problem)))]
pub async fn reinstate(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(v): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    change(&app, &ctx, &id, v, AccountCommand::Reinstate).await
}

/// Closing detaches every extension in the same append as `account.closed`; then each
/// extension is removed and its number released (the phone is the user's own: another account
/// may register it at once). The main number is kept for `api.number_quarantine_days`, so
/// callers of the old customer do not reach a new one, then released by the recovery pass.
/// Steps a crash interrupts are finished by the pass after its grace period.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/close", tag = "admin",
    params(("account_id" = String, Path), ("If-Match" = Option<String>, Header)), request_body = Reason,
    responses((status = 200, body = AccountView), (status = 412, body = crate::problem::Problem)))]
pub async fn close(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(v): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Reason>,
) -> ApiResult<Response> {
    let id = account_id(&id)?;
    existing(&app, id).await?;
    let command = AccountCommand::Close {
        reason: body.reason,
    };
    let (Written { state, version }, events) =
        execute_with_events::<Account>(&app, &ctx, &id.stream_id(), v, &command).await?;
    for event in &events {
        if let AccountEvent::ExtensionDetached {
            extension_id,
            number: Some(number),
        } = event
        {
            let reason = "the account was closed";
            if let Err(e) = give_back(&app, &ctx, id, *extension_id, number, reason).await {
                tracing::warn!(account_id = %id, extension_id = %extension_id, error = %e,
                    "closing: an extension is left for the recovery pass to remove");
            }
        }
    }
    Ok(versioned(version, view(id, &state, version)))
}

#[utoipa::path(put, path = "/v1/accounts/{account_id}/ring-policy", tag = "admin",
    params(("account_id" = String, Path), ("If-Match" = Option<String>, Header)), request_body = RingPolicyBody,
    responses((status = 200, body = AccountView), (status = 412, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn ring_policy(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(v): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RingPolicyBody>,
) -> ApiResult<Response> {
    let policy = RingPolicy {
        ring_timeout_secs: body.ring_timeout_secs,
        extension_delay_secs: body.extension_delay_secs,
        prefer_alternate_path: body.prefer_alternate_path,
    };
    change(&app, &ctx, &id, v, AccountCommand::ChangeRingPolicy(policy)).await
}

#[utoipa::path(put, path = "/v1/accounts/{account_id}/spend-limit", tag = "admin",
    params(("account_id" = String, Path), ("If-Match" = Option<String>, Header)), request_body = SpendLimit,
    responses((status = 200, body = AccountView), (status = 412, body = crate::problem::Problem)))]
pub async fn spend_limit(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(v): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SpendLimit>,
) -> ApiResult<Response> {
    let command = AccountCommand::ChangeSpendLimit {
        daily_limit_minor: body.daily_limit_minor,
    };
    change(&app, &ctx, &id, v, command).await
}

#[utoipa::path(put, path = "/v1/accounts/{account_id}/tariff", tag = "admin",
    params(("account_id" = String, Path), ("If-Match" = Option<String>, Header)), request_body = TariffChoice,
    responses((status = 200, body = AccountView), (status = 422, body = crate::problem::Problem)))]
pub async fn tariff(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(v): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TariffChoice>,
) -> ApiResult<Response> {
    let tariff_id = TariffId(parse_uuid(&body.tariff_id, "tariff_id")?);
    let tariff = tariff_exists(&app, tariff_id).await?;
    // A tariff has one currency (its first version's; later ones must match).
    let currency = tariff.versions[0].currency;
    change(
        &app,
        &ctx,
        &id,
        v,
        AccountCommand::ChangeTariff {
            tariff_id,
            currency,
        },
    )
    .await
}
