//! What a user stages for an extension over data: dial intents (the destination of the
//! extension's next call-through, for a short while) and callback requests (the edge rings the
//! extension, then the destination, and bridges them). The SIP edge acts on both.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::account::Account;
use domain::extension::{Extension, ExtensionCommand};
use domain::ids::ExtensionId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::accounts::existing;
use super::extensions::extension;
use super::{Page, created, list_response, parse_e164, parse_uuid};
use crate::commands::execute;
use crate::extract::{Admin, JsonBody};
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, Shared};

/// How long a dial intent lives unless the request says otherwise.
const DEFAULT_TTL_SECS: u32 = 60;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageDialIntent {
    /// E.164.
    pub destination: String,
    /// 10 to 300; default 60.
    pub ttl_secs: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DialIntentView {
    pub intent_id: String,
    pub extension_id: String,
    pub destination: String,
    pub expires_at: DateTime<Utc>,
}

fn live_intents(id: &str, e: &Extension) -> Vec<DialIntentView> {
    let now = Utc::now();
    e.dial_intents
        .iter()
        .filter(|(_, i)| i.expires_at > now)
        .map(|(intent_id, i)| DialIntentView {
            intent_id: intent_id.to_string(),
            extension_id: id.to_owned(),
            destination: i.destination.to_string(),
            expires_at: i.expires_at,
        })
        .collect()
}

/// The extension named in the path and the account it belongs to (whose state the rules need).
async fn extension_and_account(app: &AppState, id: &str) -> ApiResult<(ExtensionId, Account)> {
    let (id, loaded) = extension(app, id).await?;
    let account_id = loaded
        .state
        .account_id
        .ok_or(ApiError::NotFound("account"))?;
    Ok((id, existing(app, account_id).await?.state))
}

#[utoipa::path(post, path = "/v1/extensions/{extension_id}/dial-intents", tag = "admin",
    params(("extension_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = StageDialIntent,
    responses((status = 201, body = DialIntentView), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn stage(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StageDialIntent>,
) -> ApiResult<Response> {
    let destination = parse_e164(&body.destination, "destination")?;
    let (id, account) = extension_and_account(&app, &id).await?;
    let intent_id = Uuid::now_v7();
    let command = ExtensionCommand::StageDialIntent {
        intent_id,
        account,
        destination: destination.clone(),
        ttl_secs: body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
    };
    let w = execute::<Extension>(&app, &ctx, &id.stream_id(), None, &command).await?;
    let expires_at = w
        .state
        .dial_intents
        .get(&intent_id)
        .map_or_else(Utc::now, |i| i.expires_at);
    Ok(created(
        format!("/v1/extensions/{id}/dial-intents/{intent_id}"),
        w.version,
        DialIntentView {
            intent_id: intent_id.to_string(),
            extension_id: id.to_string(),
            destination: destination.to_string(),
            expires_at,
        },
    ))
}

#[utoipa::path(get, path = "/v1/extensions/{extension_id}/dial-intents", tag = "admin",
    params(("extension_id" = String, Path)),
    responses((status = 200, body = Page<DialIntentView>, description = "Live dial intents; JSON or CSV")))]
pub async fn list_intents(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (id, loaded) = extension(&app, &id).await?;
    Ok(list_response(
        &headers,
        &["intent_id", "extension_id", "destination", "expires_at"],
        Page {
            items: live_intents(&id.to_string(), &loaded.state),
            next: None,
        },
    ))
}

#[utoipa::path(delete, path = "/v1/extensions/{extension_id}/dial-intents/{intent_id}", tag = "admin",
    params(("extension_id" = String, Path), ("intent_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn cancel_intent(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path((id, intent)): Path<(String, String)>,
) -> ApiResult<Response> {
    let intent_id = parse_uuid(&intent, "intent_id")?;
    let (id, _) = extension(&app, &id).await?;
    let command = ExtensionCommand::CancelDialIntent { intent_id };
    execute::<Extension>(&app, &ctx, &id.stream_id(), None, &command).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestCallback {
    /// E.164: who the extension is to be connected to.
    pub destination: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackView {
    pub request_id: String,
    pub extension_id: String,
    pub destination: String,
}

#[utoipa::path(post, path = "/v1/extensions/{extension_id}/callbacks", tag = "admin",
    params(("extension_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = RequestCallback,
    responses((status = 201, body = CallbackView), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn request_callback(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RequestCallback>,
) -> ApiResult<Response> {
    let destination = parse_e164(&body.destination, "destination")?;
    let (id, account) = extension_and_account(&app, &id).await?;
    let request_id = Uuid::now_v7();
    let command = ExtensionCommand::RequestCallback {
        request_id,
        account,
        destination: destination.clone(),
    };
    let w = execute::<Extension>(&app, &ctx, &id.stream_id(), None, &command).await?;
    Ok(created(
        format!("/v1/extensions/{id}/callbacks/{request_id}"),
        w.version,
        CallbackView {
            request_id: request_id.to_string(),
            extension_id: id.to_string(),
            destination: destination.to_string(),
        },
    ))
}

#[utoipa::path(get, path = "/v1/extensions/{extension_id}/callbacks", tag = "admin",
    params(("extension_id" = String, Path)),
    responses((status = 200, body = Page<CallbackView>, description = "Waiting callback requests; JSON or CSV")))]
pub async fn list_callbacks(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (id, loaded) = extension(&app, &id).await?;
    let items = loaded
        .state
        .callbacks
        .iter()
        .map(|(request_id, destination)| CallbackView {
            request_id: request_id.to_string(),
            extension_id: id.to_string(),
            destination: destination.to_string(),
        })
        .collect();
    Ok(list_response(
        &headers,
        &["request_id", "extension_id", "destination"],
        Page { items, next: None },
    ))
}

#[utoipa::path(delete, path = "/v1/extensions/{extension_id}/callbacks/{request_id}", tag = "admin",
    params(("extension_id" = String, Path), ("request_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn cancel_callback(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path((id, request)): Path<(String, String)>,
) -> ApiResult<Response> {
    let request_id = parse_uuid(&request, "request_id")?;
    let (id, _) = extension(&app, &id).await?;
    let command = ExtensionCommand::CancelCallback { request_id };
    execute::<Extension>(&app, &ctx, &id.stream_id(), None, &command).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
