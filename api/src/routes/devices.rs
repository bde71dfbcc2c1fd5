//! IP devices: provisioning returns the SIP username and a generated password exactly once
//! (the log keeps only HA1 digests); rotate, remove, and read live contacts.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::device::{DataPath, Device, DeviceCommand, DeviceStatus};
use domain::ids::DeviceId;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::accounts::{ListQuery, account_id, existing};
use super::{Page, created, list_response, page_limit, paginate, parse_uuid, versioned};
use crate::commands::{Loaded, create, execute, load};
use crate::extract::{Admin, IfMatch, JsonBody, Query};
use crate::idempotency;
use crate::keys::random_hex;
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, Shared};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProvisionedDevice {
    pub device_id: String,
    pub account_id: String,
    pub sip_username: String,
    pub realm: String,
    /// Shown once: only HA1 digests are stored. A replay of the request (same
    /// `Idempotency-Key`) answers null here; rotate the credentials if it was lost.
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactView {
    pub contact_uri: String,
    /// Where the REGISTER really came from (`ip:port`).
    pub source: String,
    pub transport: String,
    pub user_agent: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    pub device_id: String,
    pub account_id: String,
    pub sip_username: String,
    pub realm: String,
    /// active or removed.
    pub status: String,
    pub live_contacts: Vec<ContactView>,
    pub version: u64,
}

fn contacts(d: &Device) -> Vec<ContactView> {
    d.live_contacts(Utc::now())
        .map(|(uri, c)| ContactView {
            contact_uri: uri.clone(),
            source: c.source.clone(),
            transport: serde_json::to_value(c.transport)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            user_agent: c.user_agent.clone(),
            expires_at: c.expires_at,
        })
        .collect()
}

fn view(id: DeviceId, d: &Device, version: u64) -> DeviceView {
    DeviceView {
        device_id: id.to_string(),
        account_id: d.account_id.map(|a| a.to_string()).unwrap_or_default(),
        sip_username: d.sip_username.clone(),
        realm: d.realm.clone(),
        status: if d.status == DeviceStatus::Removed {
            "removed"
        } else {
            "active"
        }
        .to_owned(),
        live_contacts: contacts(d),
        version,
    }
}

async fn device(app: &AppState, id: &str) -> ApiResult<(DeviceId, Loaded<Device>)> {
    let id = DeviceId(parse_uuid(id, "device_id")?);
    let loaded = load::<Device>(app, &id.stream_id()).await?;
    if loaded.state.status == DeviceStatus::Unprovisioned {
        return Err(ApiError::NotFound("device"));
    }
    Ok((id, loaded))
}

/// A fresh SIP username no device holds yet.
async fn fresh_username(app: &AppState) -> ApiResult<String> {
    for _ in 0..5 {
        let name = format!("d{}", &random_hex(1)[..11]);
        let taken = sqlx::query("SELECT 1 FROM routing_devices WHERE sip_username = $1")
            .bind(&name)
            .fetch_optional(&app.db.pool)
            .await?;
        if taken.is_none() {
            return Ok(name);
        }
    }
    Err(ApiError::Unexpected(
        "could not draw an unused SIP username".into(),
    ))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/devices", tag = "admin",
    params(("account_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ProvisionedDevice), (status = 404, body = crate::problem::Problem),
        (status = 409, body = crate::problem::Problem)))]
pub async fn provision(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(account): Path<String>,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    let account = existing(&app, account_id).await?.state;
    let id = DeviceId(Uuid::now_v7());
    let password = random_hex(1);
    let sip_username = fresh_username(&app).await?;
    let command = DeviceCommand::Provision {
        device_id: id,
        account,
        sip_username: sip_username.clone(),
        realm: app.settings.realm.clone(),
        password: password.clone(),
    };
    let w = create::<Device>(&app, &ctx, &id.stream_id(), &command).await?;
    let shown = ProvisionedDevice {
        device_id: id.to_string(),
        account_id: account_id.to_string(),
        sip_username,
        realm: app.settings.realm.clone(),
        password: Some(password),
    };
    let kept = ProvisionedDevice {
        password: None,
        ..shown.clone()
    };
    let mut response = created(format!("/v1/devices/{id}"), w.version, shown);
    idempotency::replay_as(&mut response, &kept);
    Ok(response)
}

#[utoipa::path(get, path = "/v1/devices/{device_id}", tag = "admin",
    params(("device_id" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, Loaded { state, version }) = device(&app, &id).await?;
    Ok(versioned(version, view(id, &state, version)))
}

#[utoipa::path(get, path = "/v1/devices/{device_id}/contacts", tag = "admin",
    params(("device_id" = String, Path)),
    responses((status = 200, body = Page<ContactView>, description = "Live contacts; JSON or CSV")))]
pub async fn live_contacts(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, Loaded { state, .. }) = device(&app, &id).await?;
    Ok(list_response(
        &headers,
        &[
            "contact_uri",
            "source",
            "transport",
            "user_agent",
            "expires_at",
        ],
        Page {
            items: contacts(&state),
            next: None,
        },
    ))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RotatedCredentials {
    pub device_id: String,
    pub sip_username: String,
    /// Shown once; null in a replay (same `Idempotency-Key`): rotate again if it was lost.
    pub password: Option<String>,
}

#[utoipa::path(post, path = "/v1/devices/{device_id}/rotate", tag = "admin",
    params(("device_id" = String, Path), ("If-Match" = Option<String>, Header), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = RotatedCredentials), (status = 404, body = crate::problem::Problem)))]
pub async fn rotate(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(if_match): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, Loaded { state, .. }) = device(&app, &id).await?;
    let password = random_hex(1);
    let command = DeviceCommand::RotateCredentials {
        password: password.clone(),
    };
    let w = execute::<Device>(&app, &ctx, &id.stream_id(), if_match, &command).await?;
    let shown = RotatedCredentials {
        device_id: id.to_string(),
        sip_username: state.sip_username,
        password: Some(password),
    };
    let kept = RotatedCredentials {
        password: None,
        ..shown.clone()
    };
    let mut response = versioned(w.version, shown);
    idempotency::replay_as(&mut response, &kept);
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataPathReport {
    /// `good`, `poor` or `none`: while `poor` or `none`, calls do not ring this device over
    /// data and go to the account's extensions over the alternate network instead.
    #[schema(value_type = String)]
    pub quality: DataPath,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DataPathView {
    pub device_id: String,
    pub quality: String,
    pub reported_at: DateTime<Utc>,
}

/// The device's own report of its data connection (its app calls this through the
/// provider's backend); the same as a REGISTER carrying `Ringledger-Data-Path`.
#[utoipa::path(post, path = "/v1/devices/{device_id}/data-path", tag = "admin",
    params(("device_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = DataPathReport,
    responses((status = 200, body = DataPathView), (status = 404, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn report_data_path(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DataPathReport>,
) -> ApiResult<Response> {
    let (id, _) = device(&app, &id).await?;
    let command = DeviceCommand::ReportDataPath {
        quality: body.quality,
    };
    let w = execute::<Device>(&app, &ctx, &id.stream_id(), None, &command).await?;
    let (quality, reported_at) = w.state.data_path.unwrap_or((body.quality, Utc::now()));
    Ok(versioned(
        w.version,
        DataPathView {
            device_id: id.to_string(),
            quality: serde_json::to_value(quality)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            reported_at,
        },
    ))
}

#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "admin",
    params(("device_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = crate::problem::Problem)))]
pub async fn remove(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(if_match): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, Loaded { state, .. }) = device(&app, &id).await?;
    if state.status != DeviceStatus::Removed {
        execute::<Device>(
            &app,
            &ctx,
            &id.stream_id(),
            if_match,
            &DeviceCommand::Remove,
        )
        .await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceSummary {
    pub device_id: String,
    pub sip_username: String,
    pub status: String,
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/devices", tag = "admin",
    params(("account_id" = String, Path), ListQuery),
    responses((status = 200, body = Page<DeviceSummary>, description = "JSON or CSV")))]
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
        "SELECT device_id, sip_username, status FROM routing_devices \
         WHERE account_id = $1 AND device_id > $2 ORDER BY device_id LIMIT $3",
    )
    .bind(account_id.to_string())
    .bind(q.after.unwrap_or_default())
    .bind(limit as i64 + 1)
    .fetch_all(&app.db.pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(DeviceSummary {
            device_id: r.try_get(0)?,
            sip_username: r.try_get(1)?,
            status: r.try_get(2)?,
        });
    }
    Ok(list_response(
        &headers,
        &["device_id", "sip_username", "status"],
        paginate(items, limit, |d| d.device_id.clone()),
    ))
}
