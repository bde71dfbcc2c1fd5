//! Cross-cutting request handling: a request id on every response and log line, metrics by
//! route, bearer-key authentication for `/v1`, and `/v1` work that runs to its end whatever
//! the client does.

use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use uuid::Uuid;

use crate::extract::{BODY_LIMIT, RequestId};
use crate::problem::ApiError;
use crate::route_limits::RouteKind;
use crate::state::Shared;

/// The methods any route serves; the name is a metric label.
fn served_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => return None,
    })
}

/// Takes the caller's `X-Request-Id` when it is a sane token, else mints one; logs the request
/// in a span carrying it, counts it, and returns the id in the response.
pub async fn request_context(
    State(app): State<Shared>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .unwrap_or_else(Uuid::now_v7);
    request.extensions_mut().insert(RequestId(id));
    // Metric labels come from fixed sets only: a made-up method is answered here, counted
    // as `other`.
    let Some(method) = served_method(request.method()) else {
        let mut response = ApiError::MethodNotAllowed.into_response();
        app.metrics.request(
            "other",
            "unmatched",
            response.status().as_u16(),
            started.elapsed(),
        );
        if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
            response.headers_mut().insert("x-request-id", v);
        }
        return response;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, %route, key_id = tracing::field::Empty);
    let mut response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            "answered"
        )
    });
    app.metrics.request(method, &route, status, took);
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Requires `Authorization: Bearer <key>` naming a live API key; the handler checks the role.
pub async fn authenticate(State(app): State<Shared>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    let Some(token) = token else {
        return ApiError::Unauthenticated.into_response();
    };
    match app.keys.authenticate(&token).await {
        Ok(Some(caller)) => {
            tracing::Span::current().record("key_id", caller.key_id.as_str());
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Ok(None) => ApiError::Unauthenticated.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Reads the whole body (at most `BODY_LIMIT`) before the request takes a permit of its
/// route's kind or runs: a client has `api.body_read_timeout_secs` to send it (408 after,
/// logged), so one that stops mid-body holds only its connection, and not for long.
pub async fn read_body(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let timeout = app.settings.body_read_timeout;
    match tokio::time::timeout(timeout, to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        // Longer than the limit, or a client that hung up mid-body (nobody reads that answer).
        Ok(Err(_)) => ApiError::TooLarge { limit: BODY_LIMIT }.into_response(),
        Err(_) => {
            tracing::warn!(
                secs = timeout.as_secs(),
                "slow body: refused a request whose body did not arrive in time"
            );
            ApiError::BodyTimeout {
                secs: timeout.as_secs(),
            }
            .into_response()
        }
    }
}

/// Runs the rest of a `/v1` request (idempotency record, handler) as a task of its own: a
/// client that disconnects mid-request no longer cancels a workflow between two of its
/// appends (which left numbers claimed by nothing and Idempotency-Keys claimed for ever). The
/// answer is dropped when nobody waits for it; what was written stays written and finished.
pub async fn run_to_completion(request: Request, next: Next) -> Response {
    let work = next.run(request).instrument(tracing::Span::current());
    match tokio::spawn(work).await {
        Ok(response) => response,
        Err(e) => ApiError::Unexpected(format!("the request's task failed: {e}")).into_response(),
    }
}

/// Runs the request if its kind has a free permit, holding it until the answer is ready.
pub async fn limit_route(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    let Some(kind) = RouteKind::of(request.method(), path) else {
        return next.run(request).await;
    };
    let (permits, cap) = app.route_limits.of(kind);
    match permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            app.metrics.route_busy(kind.label());
            tracing::warn!(
                kind = kind.label(),
                route = path,
                cap,
                "busy: refused a request over its route's concurrency cap"
            );
            ApiError::Unavailable(format!(
                "too many {} requests at once (at most {cap}); retry later",
                kind.label()
            ))
            .into_response()
        }
    }
}
