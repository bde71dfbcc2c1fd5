//! Unauthenticated operational endpoints: liveness, readiness (store reachable, no projection
//! stopped), Prometheus metrics with projection lag, and the OpenAPI document.

use std::fmt::Write;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use crate::problem::ApiResult;
use crate::state::{AppState, Shared};

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionState {
    pub name: String,
    pub position: i64,
    /// Events in the log the projection has not applied yet.
    pub lag: i64,
    /// running or stopped.
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub store: String,
    pub head_position: Option<u64>,
    pub projections: Vec<ProjectionState>,
}

async fn projection_states(app: &AppState, head: u64) -> Result<Vec<ProjectionState>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, position, status, error FROM projection_checkpoints ORDER BY name",
    )
    .fetch_all(&app.db.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let position: i64 = r.try_get(1)?;
        out.push(ProjectionState {
            name: r.try_get(0)?,
            position,
            lag: i64::try_from(head).unwrap_or(i64::MAX) - position,
            status: r.try_get(2)?,
            error: r.try_get(3)?,
        });
    }
    Ok(out)
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(app): State<Shared>) -> Response {
    let (store, head) = match app.store.head_position().await {
        Ok(h) => ("reachable".to_owned(), Some(h)),
        Err(e) => (format!("unreachable: {e}"), None),
    };
    let projections = match projection_states(&app, head.unwrap_or(0)).await {
        Ok(p) => p,
        Err(e) => vec![ProjectionState {
            name: "(projection database)".into(),
            position: 0,
            lag: 0,
            status: "unreachable".into(),
            error: Some(e.to_string()),
        }],
    };
    let ready = head.is_some() && projections.iter().all(|p| p.status == "running");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            store,
            head_position: head,
            projections,
        }),
    )
        .into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
pub async fn metrics(State(app): State<Shared>) -> ApiResult<Response> {
    let mut out = String::new();
    app.metrics.render(&mut out);
    let head = app.store.head_position().await?;
    out.push_str("# HELP ringledger_log_head_position The last committed global position.\n");
    out.push_str("# TYPE ringledger_log_head_position gauge\n");
    let _ = writeln!(out, "ringledger_log_head_position {head}");
    out.push_str(
        "# HELP ringledger_projection_lag_events Events not yet applied, per projection.\n",
    );
    out.push_str("# TYPE ringledger_projection_lag_events gauge\n");
    let states = projection_states(&app, head).await?;
    for p in &states {
        let _ = writeln!(
            out,
            "ringledger_projection_lag_events{{projection=\"{}\"}} {}",
            p.name, p.lag
        );
    }
    out.push_str("# HELP ringledger_projection_stopped 1 when the projection stopped on an event it cannot apply.\n");
    out.push_str("# TYPE ringledger_projection_stopped gauge\n");
    for p in &states {
        let _ = writeln!(
            out,
            "ringledger_projection_stopped{{projection=\"{}\"}} {}",
            p.name,
            u8::from(p.status == "stopped")
        );
    }
    for source in &app.metrics_sources {
        source(&mut out);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
