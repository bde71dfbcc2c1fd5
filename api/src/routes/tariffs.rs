//! Tariffs: publish a price list and later versions of it, read one, list them. The server
//! numbers versions (1, 2, ...); a version with the same `effective_from` as an earlier one
//! corrects it, and the billing projection re-rates on rebuild.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use domain::Currency;
use domain::ids::TariffId;
use domain::tariff::{Rate, Tariff, TariffCommand, TariffVersion};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::accounts::ListQuery;
use super::{Page, created, list_response, page_limit, paginate, parse_uuid, versioned};
use crate::commands::{self, Loaded, execute, load};
use crate::extract::{Admin, IfMatch, JsonBody, Query};
use crate::problem::{ApiError, ApiResult};
use crate::state::Shared;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateBody {
    /// Destination digits after the `+` (longest prefix wins).
    pub prefix: String,
    pub description: String,
    /// Thousandths of a minor unit per minute (1250 = 1.25 pence a minute).
    #[schema(minimum = 0)]
    pub per_minute_millis: i64,
    /// Minor units, charged once per answered leg.
    #[schema(minimum = 0)]
    pub connect_fee_minor: i64,
    /// The first billing block, 1 to 3600 seconds (60 for 60/60, 1 for 1/1, 30 for 30/6).
    #[schema(minimum = 1, maximum = 3600)]
    pub first_increment_secs: u32,
    /// Every later block, 1 to 3600 seconds.
    #[schema(minimum = 1, maximum = 3600)]
    pub next_increment_secs: u32,
}

/// The price of calls to numbers the service's own accounts hold (routed on-net, no carrier).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnNetRateBody {
    pub description: String,
    /// Thousandths of a minor unit per minute.
    #[schema(minimum = 0)]
    pub per_minute_millis: i64,
    /// Minor units, charged once per answered leg.
    #[schema(minimum = 0)]
    pub connect_fee_minor: i64,
    #[schema(minimum = 1, maximum = 3600)]
    pub first_increment_secs: u32,
    #[schema(minimum = 1, maximum = 3600)]
    pub next_increment_secs: u32,
}

impl From<&RateBody> for Rate {
    fn from(r: &RateBody) -> Self {
        Rate {
            prefix: r.prefix.clone(),
            description: r.description.clone(),
            per_minute_millis: r.per_minute_millis,
            connect_fee_minor: r.connect_fee_minor,
            first_increment_secs: r.first_increment_secs,
            next_increment_secs: r.next_increment_secs,
        }
    }
}

impl From<&Rate> for RateBody {
    fn from(r: &Rate) -> Self {
        RateBody {
            prefix: r.prefix.clone(),
            description: r.description.clone(),
            per_minute_millis: r.per_minute_millis,
            connect_fee_minor: r.connect_fee_minor,
            first_increment_secs: r.first_increment_secs,
            next_increment_secs: r.next_increment_secs,
        }
    }
}

impl From<&OnNetRateBody> for Rate {
    fn from(r: &OnNetRateBody) -> Self {
        Rate {
            prefix: String::new(),
            description: r.description.clone(),
            per_minute_millis: r.per_minute_millis,
            connect_fee_minor: r.connect_fee_minor,
            first_increment_secs: r.first_increment_secs,
            next_increment_secs: r.next_increment_secs,
        }
    }
}

impl From<&Rate> for OnNetRateBody {
    fn from(r: &Rate) -> Self {
        OnNetRateBody {
            description: r.description.clone(),
            per_minute_millis: r.per_minute_millis,
            connect_fee_minor: r.connect_fee_minor,
            first_increment_secs: r.first_increment_secs,
            next_increment_secs: r.next_increment_secs,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishVersion {
    /// Required for a new tariff; a later version may rename it.
    pub name: Option<String>,
    pub currency: String,
    /// RFC 3339, at most microsecond precision (the instants calls are compared with).
    pub effective_from: DateTime<Utc>,
    pub rates: Vec<RateBody>,
    #[serde(default)]
    pub blocked_prefixes: Vec<String>,
    /// Calls to numbers of the service's own accounts; absent: they are free.
    #[serde(default)]
    pub on_net: Option<OnNetRateBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    pub currency: String,
    pub effective_from: DateTime<Utc>,
    pub rates: Vec<RateBody>,
    pub blocked_prefixes: Vec<String>,
    /// Absent: on-net calls are free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_net: Option<OnNetRateBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TariffView {
    pub tariff_id: String,
    pub name: String,
    pub versions: Vec<VersionView>,
    pub version: u64,
}

fn view(id: TariffId, t: &Tariff, version: u64) -> TariffView {
    TariffView {
        tariff_id: id.to_string(),
        name: t.name.clone(),
        versions: t
            .versions
            .iter()
            .map(|v| VersionView {
                version: v.version,
                currency: v.currency.to_string(),
                effective_from: v.effective_from,
                rates: v.rates.iter().map(RateBody::from).collect(),
                blocked_prefixes: v.blocked_prefixes.clone(),
                on_net: v.on_net.as_ref().map(OnNetRateBody::from),
            })
            .collect(),
        version,
    }
}

fn tariff_version(number: u32, body: &PublishVersion) -> ApiResult<TariffVersion> {
    Ok(TariffVersion {
        version: number,
        currency: Currency::parse(&body.currency)
            .map_err(|e| ApiError::invalid("currency", e.to_string()))?,
        effective_from: body.effective_from,
        rates: body.rates.iter().map(Rate::from).collect(),
        blocked_prefixes: body.blocked_prefixes.clone(),
        on_net: body.on_net.as_ref().map(Rate::from),
    })
}

#[utoipa::path(post, path = "/v1/tariffs", tag = "admin", request_body = PublishVersion,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TariffView), (status = 422, body = crate::problem::Problem)))]
pub async fn create(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    JsonBody(body): JsonBody<PublishVersion>,
) -> ApiResult<Response> {
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("name", "a new tariff needs a name"))?;
    let id = TariffId(Uuid::now_v7());
    let command = TariffCommand::Publish {
        tariff_id: id,
        name,
        version: tariff_version(1, &body)?,
    };
    let w = commands::create::<Tariff>(&app, &ctx, &id.stream_id(), &command).await?;
    Ok(created(
        format!("/v1/tariffs/{id}"),
        w.version,
        view(id, &w.state, w.version),
    ))
}

#[utoipa::path(post, path = "/v1/tariffs/{tariff_id}/versions", tag = "admin", request_body = PublishVersion,
    params(("tariff_id" = String, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TariffView), (status = 404, body = crate::problem::Problem),
        (status = 412, body = crate::problem::Problem)))]
pub async fn publish(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(if_match): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PublishVersion>,
) -> ApiResult<Response> {
    let id = TariffId(parse_uuid(&id, "tariff_id")?);
    let Loaded { state, version } = load::<Tariff>(&app, &id.stream_id()).await?;
    if state.versions.is_empty() {
        return Err(ApiError::NotFound("tariff"));
    }
    let if_match = if_match.or(Some(version));
    let next = state.versions.last().map_or(1, |v| v.version + 1);
    let command = TariffCommand::Publish {
        tariff_id: id,
        name: body.name.clone().unwrap_or(state.name.clone()),
        version: tariff_version(next, &body)?,
    };
    let w = execute::<Tariff>(&app, &ctx, &id.stream_id(), if_match, &command).await?;
    Ok(created(
        format!("/v1/tariffs/{id}"),
        w.version,
        view(id, &w.state, w.version),
    ))
}

#[utoipa::path(get, path = "/v1/tariffs/{tariff_id}", tag = "admin",
    params(("tariff_id" = String, Path)),
    responses((status = 200, body = TariffView), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = TariffId(parse_uuid(&id, "tariff_id")?);
    let Loaded { state, version } = load::<Tariff>(&app, &id.stream_id()).await?;
    if state.versions.is_empty() {
        return Err(ApiError::NotFound("tariff"));
    }
    Ok(versioned(version, view(id, &state, version)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TariffVersionRow {
    pub tariff_id: String,
    pub version: i64,
    pub currency: String,
    pub effective_from: String,
}

#[utoipa::path(get, path = "/v1/tariffs", tag = "admin", params(ListQuery),
    responses((status = 200, body = Page<TariffVersionRow>, description = "Every published version; JSON or CSV")))]
pub async fn list(
    State(app): State<Shared>,
    Admin(_): Admin,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let limit = page_limit(q.limit)?;
    // The cursor is "<tariff id>/<version>".
    let (after_id, after_version) = match q.after.as_deref().map(|a| a.split_once('/')) {
        None => (String::new(), 0),
        Some(Some((id, v))) => (
            id.to_owned(),
            v.parse::<i64>()
                .map_err(|_| ApiError::invalid("after", "not a cursor from this list"))?,
        ),
        Some(None) => return Err(ApiError::invalid("after", "not a cursor from this list")),
    };
    let rows = sqlx::query(
        "SELECT tariff_id, version, body FROM billing_tariffs \
         WHERE tariff_id > $1 OR (tariff_id = $1 AND version > $2) \
         ORDER BY tariff_id, version LIMIT $3",
    )
    .bind(after_id)
    .bind(after_version)
    .bind(limit as i64 + 1)
    .fetch_all(&app.db.pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let body: String = r.try_get(2)?;
        let v: TariffVersion = serde_json::from_str(&body)
            .map_err(|e| ApiError::Unexpected(format!("billing_tariffs body: {e}")))?;
        items.push(TariffVersionRow {
            tariff_id: r.try_get(0)?,
            version: r.try_get(1)?,
            currency: v.currency.to_string(),
            effective_from: v.effective_from.to_rfc3339(),
        });
    }
    Ok(list_response(
        &headers,
        &["tariff_id", "version", "currency", "effective_from"],
        paginate(items, limit, |t| format!("{}/{}", t.tariff_id, t.version)),
    ))
}
