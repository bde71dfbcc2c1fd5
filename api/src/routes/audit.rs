//! For auditors: the log itself (by stream or from a position, in keyset pages), a live tail
//! as Server-Sent Events, a call's timeline, an account as it stood at an instant, and the
//! hash-chain verification.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::ids::AccountId;
use futures::StreamExt;
use projections::as_of::{AsOfError, account_as_of};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Page, list_response, page_limit, paginate, parse_uuid};
use crate::event_view::EventView;
use crate::extract::{Auditor, Query};
use crate::live_tail::TailItem;
use crate::problem::{ApiError, ApiResult};
use crate::state::Shared;

const EVENT_COLUMNS: [&str; 13] = [
    "global_position",
    "stream_id",
    "stream_version",
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "actor",
    "payload",
    "prev_hash",
    "hash",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    /// Start after this position (events) or version (a stream); 0 for the beginning.
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(AfterQuery),
    responses((status = 200, body = Page<EventView>, description = "Global order; JSON or CSV")))]
pub async fn events(
    State(app): State<Shared>,
    Auditor(_): Auditor,
    Query(q): Query<AfterQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let limit = page_limit(q.limit)?;
    let events = app.store.read_all(q.after.unwrap_or(0), limit + 1).await?;
    let items: Vec<EventView> = events.into_iter().map(EventView::from).collect();
    Ok(list_response(
        &headers,
        &EVENT_COLUMNS,
        paginate(items, limit, |e| e.global_position.to_string()),
    ))
}

#[utoipa::path(get, path = "/v1/audit/streams/{stream_id}/events", tag = "audit",
    params(("stream_id" = String, Path, description = "e.g. account-<uuid>"), AfterQuery),
    responses((status = 200, body = Page<EventView>, description = "Stream order; JSON or CSV")))]
pub async fn stream_events(
    State(app): State<Shared>,
    Auditor(_): Auditor,
    Path(stream_id): Path<String>,
    Query(q): Query<AfterQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let limit = page_limit(q.limit)?;
    let from_version = q.after.unwrap_or(0) + 1;
    let events = app
        .store
        .read_stream(&stream_id, from_version, limit + 1)
        .await?;
    let items: Vec<EventView> = events.into_iter().map(EventView::from).collect();
    Ok(list_response(
        &headers,
        &EVENT_COLUMNS,
        paginate(items, limit, |e| e.stream_version.to_string()),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TailQuery {
    /// Start after this position; `Last-Event-ID` (sent by reconnecting clients) wins.
    pub after: Option<u64>,
}

#[utoipa::path(get, path = "/v1/audit/events/live", tag = "audit", params(TailQuery),
    responses((status = 200, content_type = "text/event-stream",
        description = "Server-Sent Events: `id` is the global position, `event` the event type, `data` the envelope")))]
pub async fn live(
    State(app): State<Shared>,
    Auditor(_): Auditor,
    Query(q): Query<TailQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a global position"))
        })
        .transpose()?;
    let after = last_event_id.or(q.after).unwrap_or(0);
    let mut closing = app.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let tail = app
        .live_tails
        .tail(&app.store, &app.closing, after)
        .await?
        .take_until(closed)
        .map(|item| {
            let event = match item {
                TailItem::Event(e) => SseEvent::default()
                    .id(e.position.to_string())
                    .event(&e.event_type)
                    .data(&e.json),
                TailItem::Lagged { resume_after } => SseEvent::default()
                    .event("lagged")
                    .data(format!("{{\"resume_after\":{resume_after}}}")),
                TailItem::Failed(why) => {
                    tracing::warn!(error = %why, "live tail failed");
                    SseEvent::default().event("error").data(why)
                }
            };
            Ok::<_, Infallible>(event)
        });
    Ok(Sse::new(tail)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub position: i64,
    pub at: String,
    pub event_type: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallTimeline {
    pub call_id: String,
    pub account_id: String,
    pub extension_id: Option<String>,
    pub direction: String,
    pub from_number: String,
    pub to_number: String,
    pub path: String,
    pub started_at: String,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_cause: Option<String>,
    pub timeline: Vec<TimelineEntry>,
}

#[utoipa::path(get, path = "/v1/audit/calls/{call_id}/timeline", tag = "audit",
    params(("call_id" = String, Path)),
    responses((status = 200, body = CallTimeline), (status = 404, body = crate::problem::Problem)))]
pub async fn call_timeline(
    State(app): State<Shared>,
    Auditor(_): Auditor,
    Path(call_id): Path<String>,
) -> ApiResult<Response> {
    let call_id = parse_uuid(&call_id, "call_id")?.to_string();
    let call = sqlx::query(
        "SELECT account_id, extension_id, direction, from_number, to_number, path, started_at, \
         answered_at, ended_at, end_cause FROM calls WHERE call_id = $1",
    )
    .bind(&call_id)
    .fetch_optional(&app.db.pool)
    .await?
    .ok_or(ApiError::NotFound("call"))?;
    let rows = sqlx::query(
        "SELECT position, at, event_type, detail FROM call_timeline WHERE call_id = $1 \
         ORDER BY position",
    )
    .bind(&call_id)
    .fetch_all(&app.db.pool)
    .await?;
    let mut timeline = Vec::with_capacity(rows.len());
    for r in &rows {
        timeline.push(TimelineEntry {
            position: r.try_get(0)?,
            at: r.try_get(1)?,
            event_type: r.try_get(2)?,
            detail: r.try_get(3)?,
        });
    }
    Ok(Json(CallTimeline {
        call_id,
        account_id: call.try_get(0)?,
        extension_id: call.try_get(1)?,
        direction: call.try_get(2)?,
        from_number: call.try_get(3)?,
        to_number: call.try_get(4)?,
        path: call.try_get(5)?,
        started_at: call.try_get(6)?,
        answered_at: call.try_get(7)?,
        ended_at: call.try_get(8)?,
        end_cause: call.try_get(9)?,
        timeline,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    /// The instant, RFC 3339 (e.g. `2026-11-24T09:00:00Z`).
    pub at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/v1/audit/accounts/{account_id}/as-of", tag = "audit",
    params(("account_id" = String, Path), AsOfQuery),
    responses((status = 200, body = Object, description = "The account, its devices, extensions, settings and usage as they stood then"),
        (status = 404, body = crate::problem::Problem)))]
pub async fn as_of(
    State(app): State<Shared>,
    Auditor(_): Auditor,
    Path(account): Path<String>,
    Query(q): Query<AsOfQuery>,
) -> ApiResult<Response> {
    let id = AccountId(parse_uuid(&account, "account_id")?);
    match account_as_of(app.store.as_ref(), id, q.at, Some(&app.db)).await {
        Ok(v) => Ok(Json(v).into_response()),
        Err(AsOfError::NoSuchAccount(_)) => Err(ApiError::NotFound("account at that instant")),
        Err(e) => Err(ApiError::Unexpected(e.to_string())),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainVerification {
    /// True when every event's hash and link checks out.
    pub intact: bool,
    pub events: u64,
    pub head_position: u64,
    pub head_hash: String,
    pub first_bad_position: Option<u64>,
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit/verification", tag = "audit",
    responses((status = 200, body = ChainVerification)))]
pub async fn verification(State(app): State<Shared>, Auditor(_): Auditor) -> ApiResult<Response> {
    let report = infra::store::audit::verify_log(app.store.as_ref()).await?;
    let incomplete = report.incomplete_import.map(|i| {
        format!(
            "the log is a copy that stopped after {} of the export's {} events",
            i.copied, i.expected
        )
    });
    Ok(Json(ChainVerification {
        intact: report.first_break.is_none() && incomplete.is_none(),
        events: report.events,
        head_position: report.head_position,
        head_hash: report.head_hash,
        first_bad_position: report.first_break.as_ref().map(|b| b.position),
        reason: report.first_break.map(|b| b.reason).or(incomplete),
    })
    .into_response())
}
