//! For billing teams: an account's usage for a period grouped by day, month, extension or path;
//! its rated legs (filters, keyset pages); its invoice for a month. All from the billing
//! projection; every list also answers `Accept: text/csv`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use projections::sql::ts;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::accounts::{account_id, existing};
use super::{Page, csv_text, list_response, page_limit, paginate, to_csv, wants_csv};
use crate::extract::{Billing, Query};
use crate::problem::{ApiError, ApiResult};
use crate::state::Shared;

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Day,
    Month,
    Extension,
    Path,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "SUBSTR(day, 1, 7)",
            Self::Extension => "extension_id",
            Self::Path => "path",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub to: NaiveDate,
    /// day (default), month, extension or path.
    #[param(value_type = Option<String>)]
    pub group_by: Option<GroupBy>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    /// The day, month, extension id (empty for calls not made through an extension) or path.
    pub group: String,
    pub legs: i64,
    pub billable_secs: i64,
    pub charge_minor: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub account_id: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub group_by: String,
    pub currency: Option<String>,
    pub rows: Vec<UsageRow>,
    pub total_legs: i64,
    pub total_billable_secs: i64,
    pub total_charge_minor: i64,
}

const USAGE_COLUMNS: [&str; 4] = ["group", "legs", "billable_secs", "charge_minor"];

#[utoipa::path(get, path = "/v1/billing/accounts/{account_id}/usage", tag = "billing",
    params(("account_id" = String, Path), UsageQuery),
    responses((status = 200, body = UsageReport, description = "JSON, or CSV of the rows with Accept: text/csv"),
        (status = 422, body = crate::problem::Problem)))]
pub async fn usage(
    State(app): State<Shared>,
    Billing(_): Billing,
    Path(account): Path<String>,
    Query(q): Query<UsageQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    // An account that was never opened has no usage to report: 404, not an empty 200.
    existing(&app, account_id).await?;
    if q.to < q.from {
        return Err(ApiError::invalid("to", "must not be before from"));
    }
    let group_by = q.group_by.unwrap_or(GroupBy::Day);
    let column = group_by.column();
    let sql = format!(
        "SELECT {column}, MIN(currency), CAST(SUM(legs) AS BIGINT), \
         CAST(SUM(billable_secs) AS BIGINT), CAST(SUM(charge_minor) AS BIGINT) FROM billing_usage \
         WHERE account_id = $1 AND day >= $2 AND day <= $3 GROUP BY {column} ORDER BY {column}"
    );
    // `column` comes from the fixed list in `GroupBy::column`, never from the request text.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id.to_string())
        .bind(q.from.to_string())
        .bind(q.to.to_string())
        .fetch_all(&app.db.pool)
        .await?;
    let mut currency = None;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        currency = r.try_get(1)?;
        out.push(UsageRow {
            group: r.try_get(0)?,
            legs: r.try_get(2)?,
            billable_secs: r.try_get(3)?,
            charge_minor: r.try_get(4)?,
        });
    }
    if wants_csv(&headers) {
        return Ok(csv(to_csv(&USAGE_COLUMNS, &out)));
    }
    Ok(Json(UsageReport {
        account_id: account_id.to_string(),
        from: q.from,
        to: q.to,
        group_by: format!("{group_by:?}").to_lowercase(),
        currency,
        total_legs: out.iter().map(|r| r.legs).sum(),
        total_billable_secs: out.iter().map(|r| r.billable_secs).sum(),
        total_charge_minor: out.iter().map(|r| r.charge_minor).sum(),
        rows: out,
    })
    .into_response())
}

fn csv(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RatedLegsQuery {
    /// Calls started at or after this instant (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Calls started before this instant.
    pub to: Option<DateTime<Utc>>,
    pub extension_id: Option<String>,
    /// pstn, data, alternate_call_out, call_in, call_through or callback.
    pub path: Option<String>,
    /// true: only legs that could not be rated (no rate, or no tariff version, for the
    /// destination); false: only rated ones.
    pub unrated: Option<bool>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RatedLeg {
    pub leg_id: String,
    pub call_id: String,
    pub extension_id: Option<String>,
    pub path: String,
    pub destination: String,
    pub call_started_at: String,
    pub answered_at: String,
    pub ended_at: String,
    /// Answer to end, any part of a second counted as a whole second.
    pub duration_secs: Option<i64>,
    /// The duration rounded up to the rate's increments (docs/BILLING.md).
    pub billable_secs: Option<i64>,
    pub tariff_id: String,
    pub tariff_version: Option<i64>,
    pub prefix: Option<String>,
    pub per_minute_millis: Option<i64>,
    pub connect_fee_minor: Option<i64>,
    pub charge_minor: Option<i64>,
    pub currency: Option<String>,
    /// Why the leg could not be rated (no tariff version in force, no rate for the
    /// destination); such legs carry no charge.
    pub rating_error: Option<String>,
}

const LEG_COLUMNS: [&str; 18] = [
    "leg_id",
    "call_id",
    "extension_id",
    "path",
    "destination",
    "call_started_at",
    "answered_at",
    "ended_at",
    "duration_secs",
    "billable_secs",
    "tariff_id",
    "tariff_version",
    "prefix",
    "per_minute_millis",
    "connect_fee_minor",
    "charge_minor",
    "currency",
    "rating_error",
];

#[utoipa::path(get, path = "/v1/billing/accounts/{account_id}/rated-legs", tag = "billing",
    params(("account_id" = String, Path), RatedLegsQuery),
    responses((status = 200, body = Page<RatedLeg>, description = "Oldest first; JSON or CSV"),
        (status = 422, body = crate::problem::Problem)))]
pub async fn rated_legs(
    State(app): State<Shared>,
    Billing(_): Billing,
    Path(account): Path<String>,
    Query(q): Query<RatedLegsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    // An account that was never opened has no usage to report: 404, not an empty 200.
    existing(&app, account_id).await?;
    let limit = page_limit(q.limit)?;
    // The cursor is "<call_started_at> <leg_id>" of the last leg of the previous page.
    let (after_start, after_leg) = match q.after.as_deref() {
        None => (String::new(), String::new()),
        Some(c) => c
            .split_once(' ')
            .map(|(s, l)| (s.to_owned(), l.to_owned()))
            .ok_or_else(|| ApiError::invalid("after", "not a cursor from this list"))?,
    };
    let from = q.from.map(ts).unwrap_or_default();
    let to = q.to.map_or_else(|| "9999".to_owned(), ts);
    let rows = sqlx::query(
        "SELECT leg_id, call_id, extension_id, path, destination, call_started_at, answered_at, \
         ended_at, duration_secs, billable_secs, tariff_id, tariff_version, prefix, \
         per_minute_millis, connect_fee_minor, charge_minor, currency, rating_error FROM rated_legs \
         WHERE account_id = $1 AND call_started_at >= $2 AND call_started_at < $3 \
         AND (call_started_at > $4 OR (call_started_at = $4 AND leg_id > $5)) \
         AND ($6 = '' OR extension_id = $6) AND ($7 = '' OR path = $7) \
         AND ($8 = '' OR ($8 = 'true') = (rating_error IS NOT NULL)) \
         ORDER BY call_started_at, leg_id LIMIT $9",
    )
    .bind(account_id.to_string())
    .bind(from)
    .bind(to)
    .bind(after_start)
    .bind(after_leg)
    .bind(q.extension_id.unwrap_or_default())
    .bind(q.path.unwrap_or_default())
    .bind(q.unrated.map(|u| u.to_string()).unwrap_or_default())
    .bind(limit as i64 + 1)
    .fetch_all(&app.db.pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(RatedLeg {
            leg_id: r.try_get(0)?,
            call_id: r.try_get(1)?,
            extension_id: r.try_get(2)?,
            path: r.try_get(3)?,
            destination: r.try_get(4)?,
            call_started_at: r.try_get(5)?,
            answered_at: r.try_get(6)?,
            ended_at: r.try_get(7)?,
            duration_secs: r.try_get(8)?,
            billable_secs: r.try_get(9)?,
            tariff_id: r.try_get(10)?,
            tariff_version: r.try_get(11)?,
            prefix: r.try_get(12)?,
            per_minute_millis: r.try_get(13)?,
            connect_fee_minor: r.try_get(14)?,
            charge_minor: r.try_get(15)?,
            currency: r.try_get(16)?,
            rating_error: r.try_get(17)?,
        });
    }
    Ok(list_response(
        &headers,
        &LEG_COLUMNS,
        paginate(items, limit, |l| {
            format!("{} {}", l.call_started_at, l.leg_id)
        }),
    ))
}

#[utoipa::path(get, path = "/v1/billing/accounts/{account_id}/invoices/{period}", tag = "billing",
    params(("account_id" = String, Path), ("period" = String, Path, description = "YYYY-MM")),
    responses((status = 200, body = Object, description = "The invoice; CSV of its lines with Accept: text/csv"),
        (status = 422, body = crate::problem::Problem)))]
pub async fn invoice(
    State(app): State<Shared>,
    Billing(_): Billing,
    Path((account, period)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    // An account that was never opened has no usage to report: 404, not an empty 200.
    let account = existing(&app, account_id).await?.state;
    if NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").is_err() || period.len() != 7
    {
        return Err(ApiError::invalid("period", "must be a month, YYYY-MM"));
    }
    let mut invoice =
        projections::billing::invoice(&app.db, &account_id.to_string(), &period).await?;
    // A month without usage is in the account's currency all the same.
    if invoice.currency.is_none() {
        invoice.currency = account.currency.map(|c| c.to_string());
    }
    if wants_csv(&headers) {
        return Ok(csv(invoice_csv(&invoice)));
    }
    Ok(Json(invoice).into_response())
}

/// An invoice as CSV: a line per extension and path with the currency, then the total (the
/// API and `ringledger billing invoice --csv` give the same text).
pub fn invoice_csv(invoice: &projections::billing::Invoice) -> String {
    let currency = invoice.currency.clone().unwrap_or_default();
    let mut out = String::from("extension_id,path,legs,billable_secs,charge_minor,currency\r\n");
    for l in &invoice.lines {
        let cells = [
            csv_text(l.extension_id.as_deref().unwrap_or("")),
            csv_text(&l.path),
            l.legs.to_string(),
            l.billable_secs.to_string(),
            l.charge_minor.to_string(),
            csv_text(&currency),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "total,,,,{},{}\r\n",
        invoice.total_minor,
        csv_text(&currency)
    ));
    out
}
