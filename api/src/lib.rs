//! ringledger's HTTP API (axum): admins drive accounts, devices, extensions, tariffs and access
//! numbers through domain commands; billing teams read the billing projection; auditors read
//! the log, call history, as-of state and the hash-chain verification. Errors are RFC 9457
//! problems; the OpenAPI document is generated from the handlers (`GET /openapi.json`).

pub mod commands;
pub mod event_view;
pub mod extract;
pub mod holdings;
pub mod idempotency;
pub mod keys;
pub mod listener;
pub mod live_tail;
pub mod metrics;
pub mod middleware;
pub mod openapi_errors;
pub mod problem;
pub mod route_limits;
pub mod routes;
pub mod state;
pub mod workflows;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::listener::{HttpLimits, serve};
use crate::problem::ApiError;
pub use crate::route_limits::RouteCaps;
use crate::routes::{
    accounts, audit, billing, devices, extensions, health, intents, numbers, tariffs,
};
pub use crate::state::{ApiSettings, AppState, MetricsSource, Shared};
pub use crate::workflows::RecoverySettings;

#[derive(OpenApi)]
#[openapi(
    info(title = "ringledger", description = "Admin, billing and audit API of ringledger. \
        Every /v1 route needs `Authorization: Bearer <API key>` of the role its tag names."),
    modifiers(&BearerKeys),
    tags(
        (name = "admin", description = "Role admin: accounts, devices, extensions, tariffs, access numbers"),
        (name = "billing", description = "Role billing: usage, rated legs, invoices"),
        (name = "audit", description = "Role auditor: events, live tail, call timelines, as-of, verification"),
        (name = "operations", description = "No key needed"),
    )
)]
struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// Every `/v1` route, each with its OpenAPI operation.
fn v1() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(accounts::open, accounts::list))
        .routes(routes!(accounts::get))
        .routes(routes!(accounts::suspend))
        .routes(routes!(accounts::reinstate))
        .routes(routes!(accounts::close))
        .routes(routes!(accounts::ring_policy))
        .routes(routes!(accounts::spend_limit))
        .routes(routes!(accounts::tariff))
        .routes(routes!(devices::provision, devices::list))
        .routes(routes!(devices::get, devices::remove))
        .routes(routes!(devices::live_contacts))
        .routes(routes!(devices::rotate))
        .routes(routes!(devices::report_data_path))
        .routes(routes!(extensions::register, extensions::list))
        .routes(routes!(extensions::get, extensions::remove))
        .routes(routes!(extensions::start_verification))
        .routes(routes!(extensions::confirm))
        .routes(routes!(extensions::settings))
        .routes(routes!(extensions::keypad_unlock))
        .routes(routes!(intents::stage, intents::list_intents))
        .routes(routes!(intents::cancel_intent))
        .routes(routes!(intents::request_callback, intents::list_callbacks))
        .routes(routes!(intents::cancel_callback))
        .routes(routes!(numbers::add, numbers::list))
        .routes(routes!(numbers::remove))
        .routes(routes!(tariffs::create, tariffs::list))
        .routes(routes!(tariffs::get))
        .routes(routes!(tariffs::publish))
        .routes(routes!(billing::usage))
        .routes(routes!(billing::rated_legs))
        .routes(routes!(billing::invoice))
        .routes(routes!(audit::events))
        .routes(routes!(audit::stream_events))
        .routes(routes!(audit::live))
        .routes(routes!(audit::call_timeline))
        .routes(routes!(audit::as_of))
        .routes(routes!(audit::verification))
}

fn operations() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The OpenAPI document of every route, generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = OpenApiRouter::<Shared>::with_openapi(ApiDoc::openapi())
        .merge(v1())
        .merge(operations())
        .into_openapi();
    openapi_errors::document_refusals(&mut doc);
    doc
}

/// The whole API as an axum router.
pub fn router(app: Shared) -> Router {
    let (v1, _) = v1().split_for_parts();
    let v1 = v1
        .layer(axum::middleware::from_fn_with_state(
            app.idempotency.clone(),
            idempotency::idempotent,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::limit_route,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::authenticate,
        ))
        .layer(axum::middleware::from_fn(middleware::run_to_completion));
    let (ops, _) = operations().split_for_parts();
    let document = openapi().to_pretty_json().unwrap_or_default();
    Router::new()
        .merge(v1)
        .merge(ops)
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    document,
                )
            }),
        )
        .fallback(|| async { ApiError::NotFound("route").into_response() })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::request_context,
        ))
        .with_state(app)
}
