//! Access numbers: numbers extensions dial to reach the service (call-through, call-in). With a
//! destination, an access number is *mapped*: dialling it always calls that destination.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::number::{NumberClaim, NumberRole};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::accounts::{ListQuery, account_id, existing};
use super::{Page, created, list_response, page_limit, paginate, parse_e164};
use crate::commands::load;
use crate::extract::{Admin, JsonBody, Query};
use crate::holdings::{claim_number, release_number};
use crate::problem::{ApiError, ApiResult};
use crate::state::Shared;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddAccessNumber {
    /// E.164.
    pub number: String,
    /// E.164; makes this a mapped access number.
    pub destination: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccessNumberView {
    pub number: String,
    pub account_id: String,
    pub destination: Option<String>,
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/access-numbers", tag = "admin",
    params(("account_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = AddAccessNumber,
    responses((status = 201, body = AccessNumberView), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn add(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(account): Path<String>,
    JsonBody(body): JsonBody<AddAccessNumber>,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    let number = parse_e164(&body.number, "number")?;
    let destination = body
        .destination
        .as_deref()
        .map(|d| parse_e164(d, "destination"))
        .transpose()?;
    existing(&app, account_id).await?.state.ensure_active()?;
    claim_number(
        &app,
        &ctx,
        &number,
        account_id,
        NumberRole::Access {
            destination: destination.clone(),
        },
    )
    .await?;
    let version = load::<NumberClaim>(&app, &domain::number::stream_id(&number))
        .await?
        .version;
    Ok(created(
        format!("/v1/accounts/{account_id}/access-numbers/{number}"),
        version,
        AccessNumberView {
            number: number.to_string(),
            account_id: account_id.to_string(),
            destination: destination.map(|d| d.to_string()),
        },
    ))
}

#[utoipa::path(delete, path = "/v1/accounts/{account_id}/access-numbers/{number}", tag = "admin",
    params(("account_id" = String, Path), ("number" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn remove(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path((account, number)): Path<(String, String)>,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    let number = parse_e164(&number, "number")?;
    let holder = load::<NumberClaim>(&app, &domain::number::stream_id(&number))
        .await?
        .state
        .holder;
    match holder {
        Some(h) if h.account_id == account_id && matches!(h.role, NumberRole::Access { .. }) => {
            release_number(&app, &ctx, &number, account_id).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::NotFound("access number")),
    }
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/access-numbers", tag = "admin",
    params(("account_id" = String, Path), ListQuery),
    responses((status = 200, body = Page<AccessNumberView>, description = "JSON or CSV")))]
pub async fn list(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(account): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    let limit = page_limit(q.limit)?;
    let rows = sqlx::query(
        "SELECT number, destination FROM routing_numbers WHERE account_id = $1 \
         AND role = 'access' AND number > $2 ORDER BY number LIMIT $3",
    )
    .bind(account_id.to_string())
    .bind(q.after.unwrap_or_default())
    .bind(limit as i64 + 1)
    .fetch_all(&app.db.pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(AccessNumberView {
            number: r.try_get(0)?,
            account_id: account_id.to_string(),
            destination: r.try_get(1)?,
        });
    }
    Ok(list_response(
        &headers,
        &["number", "account_id", "destination"],
        paginate(items, limit, |n| n.number.clone()),
    ))
}
