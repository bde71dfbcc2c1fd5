//! Unauthenticated operational endpoints: liveness, readiness (store reachable, no projection
//! stopped or stuck behind the log), Prometheus metrics with projection lag, and the OpenAPI document.

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
    /// How long ago the oldest event the projection has not applied was recorded (0 when it
    /// is at the head).
    pub lag_secs: f64,
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
    /// Why the server is not ready, one line per cause (empty when ready).
    pub reasons: Vec<String>,
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
            lag_secs: 0.0,
            status: r.try_get(2)?,
            error: r.try_get(3)?,
        });
    }
    Ok(out)
}

/// Fills in each lagging projection's `lag_secs` from the first event it has not applied; a
/// log that cannot be read there is a reason not to be ready.
async fn measure_lag(
    app: &AppState,
    projections: &mut [ProjectionState],
    reasons: &mut Vec<String>,
) {
    let now = chrono::Utc::now();
    for p in projections.iter_mut().filter(|p| p.lag > 0) {
        let after = u64::try_from(p.position).unwrap_or(0);
        match app.store.read_all(after, 1).await {
            Ok(events) => {
                if let Some(e) = events.first() {
                    p.lag_secs = (now - e.recorded_at).as_seconds_f64().max(0.0);
                }
            }
            Err(e) => reasons.push(format!(
                "projection {}: the log cannot be read after position {after}: {e}",
                p.name
            )),
        }
    }
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(app): State<Shared>) -> Response {
    let mut reasons = Vec::new();
    let (store, head) = match app.store.head_position().await {
        Ok(h) => ("reachable".to_owned(), Some(h)),
        Err(e) => {
            reasons.push(format!("the event store is unreachable: {e}"));
            (format!("unreachable: {e}"), None)
        }
    };
    let mut projections = match projection_states(&app, head.unwrap_or(0)).await {
        Ok(p) => p,
        Err(e) => {
            reasons.push(format!("the projection database is unreachable: {e}"));
            Vec::new()
        }
    };
    if head.is_some() {
        measure_lag(&app, &mut projections, &mut reasons).await;
    }
    let max_lag = app.settings.ready_max_lag.as_secs_f64();
    for p in &projections {
        if p.status != "running" {
            reasons.push(format!(
                "projection {} is {}: {}",
                p.name,
                p.status,
                p.error.as_deref().unwrap_or("")
            ));
        } else if p.lag_secs > max_lag {
            reasons.push(format!(
                "projection {} is {} events ({:.0} s) behind the log (the bound is {max_lag:.0} s)",
                p.name, p.lag, p.lag_secs
            ));
        }
    }
    let ready = reasons.is_empty();
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
            reasons,
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
    out.push_str("# HELP ringledger_live_tails_open Live tails of the log open now.\n");
    out.push_str("# TYPE ringledger_live_tails_open gauge\n");
    let _ = writeln!(out, "ringledger_live_tails_open {}", app.live_tails.open());
    for source in &app.metrics_sources {
        source(&mut out);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
