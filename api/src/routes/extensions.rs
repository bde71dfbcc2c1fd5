//! Extension telephones: register a number of another provider to an account, prove it is
//! held (a code sent to it), change its settings, remove it. Registering claims the number
//! (`number-{e164}`) and attaches the extension to the account (which enforces the account's
//! extension limit) before the extension's own stream is written.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::Aggregate;
use domain::account::{Account, AccountCommand};
use domain::extension::{
    AlternateMode, CallerIdShown, ChallengeMethod, Extension, ExtensionCommand, ExtensionKind,
    ExtensionStatus, PinChange, SettingsChange,
};
use domain::ids::ExtensionId;
use domain::number::NumberRole;
use infra::config::CodeDelivery;
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::accounts::{ListQuery, account_id, existing};
use super::{
    Page, created, list_response, page_limit, paginate, parse_e164, parse_uuid, versioned,
};
use crate::commands::{Loaded, create, execute, execute_on, load};
use crate::extract::{Admin, Ctx, IfMatch, JsonBody, Query};
use crate::holdings::{claim_number, give_back, release_number};
use crate::keys::random_hex;
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, Shared};

/// How long a verification code stays valid.
const CODE_TTL_SECS: u32 = 600;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterExtension {
    /// The phone's own number, E.164.
    pub number: String,
    /// Who serves the phone (a mobile operator, an office PBX).
    pub native_provider: String,
    /// `mobile` or `landline`.
    #[schema(value_type = String)]
    pub kind: ExtensionKind,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    pub ring_on_inbound: bool,
    pub ring_delay_secs: u16,
    pub may_call_out: bool,
    pub international_allowed: bool,
    /// Whether call-through needs a PIN (the PIN itself is never shown).
    pub has_pin: bool,
    /// `main` or `own`.
    pub caller_id: String,
    pub daily_limit_minor: Option<i64>,
    pub prefers_alternate_path: bool,
    /// `call_out` (the edge calls the extension) or `call_in` (the device is told over data
    /// to call an access number, and the edge bridges that call).
    pub alternate_path: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeView {
    /// `sms` or `flash_call`.
    pub method: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExtensionView {
    pub extension_id: String,
    pub account_id: String,
    pub number: String,
    pub native_provider: String,
    pub kind: String,
    /// pending, verified or removed.
    pub status: String,
    pub settings: SettingsView,
    pub challenge: Option<ChallengeView>,
    pub failed_attempts: u8,
    pub locked: bool,
    /// Wrong PINs keyed in a row at the access-number menu.
    pub keypad_failures: u8,
    /// Keypad access refused after too many wrong PINs, until an admin unlocks it.
    pub keypad_locked: bool,
    pub version: u64,
}

fn snake<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn view(id: ExtensionId, e: &Extension, version: u64) -> ExtensionView {
    let s = &e.settings;
    ExtensionView {
        extension_id: id.to_string(),
        account_id: e.account_id.map(|a| a.to_string()).unwrap_or_default(),
        number: e.number.as_ref().map(|n| n.to_string()).unwrap_or_default(),
        native_provider: e.native_provider.clone(),
        kind: e.kind.as_ref().map(snake).unwrap_or_default(),
        status: match e.status {
            ExtensionStatus::Unrequested => "unrequested",
            ExtensionStatus::Pending => "pending",
            ExtensionStatus::Verified => "verified",
            ExtensionStatus::Removed => "removed",
        }
        .to_owned(),
        settings: SettingsView {
            ring_on_inbound: s.ring_on_inbound,
            ring_delay_secs: s.ring_delay_secs,
            may_call_out: s.may_call_out,
            international_allowed: s.international_allowed,
            has_pin: s.pin_hash.is_some(),
            caller_id: snake(&s.caller_id),
            daily_limit_minor: s.daily_limit_minor,
            prefers_alternate_path: s.prefers_alternate_path,
            alternate_path: snake(&s.alternate_path),
        },
        challenge: e.challenge.as_ref().map(|c| ChallengeView {
            method: snake(&c.method),
            expires_at: c.expires_at,
        }),
        failed_attempts: e.failed_attempts,
        keypad_failures: e.keypad_failures,
        keypad_locked: e.keypad_locked,
        locked: e.locked,
        version,
    }
}

pub async fn extension(app: &AppState, id: &str) -> ApiResult<(ExtensionId, Loaded<Extension>)> {
    let id = ExtensionId(parse_uuid(id, "extension_id")?);
    let loaded = load::<Extension>(app, &id.stream_id()).await?;
    if loaded.state.status == ExtensionStatus::Unrequested {
        return Err(ApiError::NotFound("extension"));
    }
    Ok((id, loaded))
}

#[utoipa::path(post, path = "/v1/accounts/{account_id}/extensions", tag = "admin",
    params(("account_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = RegisterExtension,
    responses((status = 201, body = ExtensionView), (status = 409, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn register(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(account): Path<String>,
    JsonBody(body): JsonBody<RegisterExtension>,
) -> ApiResult<Response> {
    let account_id = account_id(&account)?;
    let number = parse_e164(&body.number, "number")?;
    let id = ExtensionId(Uuid::now_v7());
    let request = |account: &Account| ExtensionCommand::Request {
        extension_id: id,
        account: account.clone(),
        number: number.clone(),
        native_provider: body.native_provider.clone(),
        kind: body.kind,
    };
    let attach = AccountCommand::AttachExtension {
        extension_id: id,
        number: number.clone(),
    };
    // Both entities' rules first (account state and extension limit, provider name), so a
    // refused registration claims nothing. They are checked on the account as this process
    // last saw it when it keeps it (the attachment's append, made with that version, proves
    // it current), and on a fresh read when it keeps none or that refuses.
    let now = Utc::now();
    let rules = |account: &Account| -> ApiResult<()> {
        account.decide(&attach, now)?;
        Extension::default().decide(&request(account), now)?;
        Ok(())
    };
    let kept = app
        .folded
        .get::<Account>(&account_id.stream_id())
        .filter(|kept| rules(&kept.state).is_ok());
    let loaded = match kept {
        Some(kept) => kept,
        None => {
            let loaded = existing(&app, account_id).await?;
            rules(&loaded.state)?;
            loaded
        }
    };
    let request = request(&loaded.state);
    claim_number(
        &app,
        &ctx,
        &number,
        account_id,
        NumberRole::Extension { extension_id: id },
    )
    .await?;
    // With the number held, the account's attachment and the extension's own stream are
    // independent: write them together (two sequential commits instead of three).
    let stream = account_id.stream_id();
    let extension_stream = id.stream_id();
    let (attached, requested) = tokio::join!(
        execute_on(&app, &ctx, &stream, None, &attach, Some(loaded)),
        create::<Extension>(&app, &ctx, &extension_stream, &request),
    );
    match (attached, requested) {
        (Ok(_), Ok(w)) => Ok(created(
            format!("/v1/extensions/{id}"),
            w.version,
            view(id, &w.state, w.version),
        )),
        // The attachment lost a race for the account's last extension slot (or the account
        // changed meanwhile): remove the extension, which also releases its number.
        (Err(e), Ok(w)) => {
            let reason = "the account refused the extension while it was registered";
            let _ = remove_extension(&app, &ctx, id, &w.state, reason).await;
            Err(e)
        }
        (Ok(_), Err(e)) => {
            let detach = AccountCommand::DetachExtension { extension_id: id };
            let _ = execute::<Account>(&app, &ctx, &stream, None, &detach).await;
            release_number(&app, &ctx, &number, account_id).await;
            Err(e)
        }
        (Err(e), Err(_)) => {
            release_number(&app, &ctx, &number, account_id).await;
            Err(e)
        }
    }
}

#[utoipa::path(get, path = "/v1/extensions/{extension_id}", tag = "admin",
    params(("extension_id" = String, Path)),
    responses((status = 200, body = ExtensionView), (status = 404, body = crate::problem::Problem)))]
pub async fn get(
    State(app): State<Shared>,
    Admin(_): Admin,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, Loaded { state, version }) = extension(&app, &id).await?;
    Ok(versioned(version, view(id, &state, version)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartVerification {
    /// `sms` (a code sent to the phone) or `flash_call` (the edge calls the phone; the caller
    /// ID's last digits carry the code).
    #[schema(value_type = String)]
    pub method: ChallengeMethod,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerificationStarted {
    pub extension_id: String,
    pub method: String,
    pub expires_at: DateTime<Utc>,
    /// Present only when the server runs with `api.code_delivery = "response"` (tests), and
    /// never in a replay of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// A uniformly drawn code of `digits` decimal digits.
fn draw_code(digits: usize) -> String {
    random_hex(2)
        .bytes()
        .filter_map(|b| {
            let v = (b as char).to_digit(16)?;
            // Hex digits a-f would skew the distribution; keep 0-9 only.
            (v < 10).then(|| char::from(b'0' + v as u8))
        })
        .take(digits)
        .collect()
}

#[utoipa::path(post, path = "/v1/extensions/{extension_id}/verification", tag = "admin",
    params(("extension_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = StartVerification,
    responses((status = 202, body = VerificationStarted), (status = 409, body = crate::problem::Problem)))]
pub async fn start_verification(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StartVerification>,
) -> ApiResult<Response> {
    let (id, _) = extension(&app, &id).await?;
    let settings = &app.settings;
    let sender = match body.method {
        ChallengeMethod::Sms => settings.sms.clone(),
        ChallengeMethod::FlashCall => settings.flash_call.clone(),
    };
    if settings.code_delivery == CodeDelivery::Send
        && body.method == ChallengeMethod::FlashCall
        && sender.is_none()
    {
        return Err(ApiError::invalid(
            "method",
            "flash calls need the SIP edge in this process (ringledger serve with a trunk)",
        ));
    }
    let code = draw_code(match body.method {
        ChallengeMethod::Sms => 6,
        ChallengeMethod::FlashCall => 4,
    });
    let command = ExtensionCommand::IssueChallenge {
        method: body.method,
        code: code.clone(),
        ttl_secs: CODE_TTL_SECS,
    };
    let w = execute::<Extension>(&app, &ctx, &id.stream_id(), None, &command).await?;
    let expires_at = w
        .state
        .challenge
        .as_ref()
        .map_or_else(Utc::now, |c| c.expires_at);
    // The challenge is durable: now the code may leave, and only now.
    let shown = match (settings.code_delivery, sender) {
        (CodeDelivery::Send, Some(sender)) => {
            let number = w.state.number.clone();
            tokio::spawn(async move {
                let Some(number) = number else { return };
                match sender.send(&number, &code).await {
                    Ok(()) => tracing::info!(extension_id = %id, "verification code sent"),
                    Err(e) => {
                        tracing::warn!(extension_id = %id, error = %e, "verification code not delivered")
                    }
                }
            });
            None
        }
        (CodeDelivery::Send, None) => {
            tracing::info!(extension_id = %id, %code, "verification code (no SMS gateway: api.sms_webhook_url is empty)");
            None
        }
        (CodeDelivery::Log, _) => {
            tracing::info!(extension_id = %id, %code, "verification code (api.code_delivery = log)");
            None
        }
        (CodeDelivery::Response, _) => Some(code),
    };
    let started = VerificationStarted {
        extension_id: id.to_string(),
        method: snake(&body.method),
        expires_at,
        code: shown,
    };
    let kept = VerificationStarted {
        code: None,
        ..started.clone()
    };
    let mut r = axum::Json(started).into_response();
    *r.status_mut() = StatusCode::ACCEPTED;
    crate::idempotency::replay_as(&mut r, &kept);
    Ok(r)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmCode {
    pub code: String,
}

#[utoipa::path(post, path = "/v1/extensions/{extension_id}/verification/confirm", tag = "admin",
    params(("extension_id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ConfirmCode,
    responses((status = 200, body = ExtensionView), (status = 422, body = crate::problem::Problem,
        description = "Wrong code (the attempt is recorded)"), (status = 409, body = crate::problem::Problem)))]
pub async fn confirm(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ConfirmCode>,
) -> ApiResult<Response> {
    let (id, _) = extension(&app, &id).await?;
    let command = ExtensionCommand::SubmitCode { code: body.code };
    let w = execute::<Extension>(&app, &ctx, &id.stream_id(), None, &command).await?;
    if w.state.status != ExtensionStatus::Verified {
        let detail = if w.state.locked {
            "the code is wrong; verification is now locked".to_owned()
        } else {
            format!(
                "the code is wrong ({} of {} attempts used)",
                w.state.failed_attempts,
                domain::extension::MAX_CODE_ATTEMPTS
            )
        };
        return Err(ApiError::invalid("code", detail));
    }
    Ok(versioned(w.version, view(id, &w.state, w.version)))
}

/// `"pin"` absent keeps the PIN, `null` clears it, a string sets it.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    pub ring_on_inbound: bool,
    /// 0 to 120.
    pub ring_delay_secs: u16,
    pub may_call_out: bool,
    pub international_allowed: bool,
    /// 4 to 8 digits; absent keeps the current PIN, null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub pin: Option<Option<String>>,
    /// `main` or `own`.
    #[schema(value_type = String)]
    pub caller_id: CallerIdShown,
    pub daily_limit_minor: Option<i64>,
    pub prefers_alternate_path: bool,
    /// `call_out` (default) or `call_in`: how the alternate path reaches the extension.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub alternate_path: AlternateMode,
}

#[utoipa::path(put, path = "/v1/extensions/{extension_id}/settings", tag = "admin",
    params(("extension_id" = String, Path), ("If-Match" = Option<String>, Header)),
    request_body = SettingsBody,
    responses((status = 200, body = ExtensionView), (status = 412, body = crate::problem::Problem),
        (status = 422, body = crate::problem::Problem)))]
pub async fn settings(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(if_match): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SettingsBody>,
) -> ApiResult<Response> {
    let (id, _) = extension(&app, &id).await?;
    let command = ExtensionCommand::ChangeSettings(SettingsChange {
        ring_on_inbound: body.ring_on_inbound,
        ring_delay_secs: body.ring_delay_secs,
        may_call_out: body.may_call_out,
        international_allowed: body.international_allowed,
        pin: match body.pin {
            None => PinChange::Keep,
            Some(None) => PinChange::Clear,
            Some(Some(pin)) => PinChange::Set(pin),
        },
        caller_id: body.caller_id,
        daily_limit_minor: body.daily_limit_minor,
        prefers_alternate_path: body.prefers_alternate_path,
        alternate_path: body.alternate_path,
    });
    let w = execute::<Extension>(&app, &ctx, &id.stream_id(), if_match, &command).await?;
    Ok(versioned(w.version, view(id, &w.state, w.version)))
}

/// Lifts the keypad lock wrong PINs at the access-number menu put on the extension.
#[utoipa::path(post, path = "/v1/extensions/{extension_id}/keypad-unlock", tag = "admin",
    params(("extension_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = ExtensionView), (status = 404, body = crate::problem::Problem),
        (status = 412, body = crate::problem::Problem)))]
pub async fn keypad_unlock(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(if_match): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, _) = extension(&app, &id).await?;
    let command = ExtensionCommand::UnlockKeypad;
    let w = execute::<Extension>(&app, &ctx, &id.stream_id(), if_match, &command).await?;
    Ok(versioned(w.version, view(id, &w.state, w.version)))
}

/// Removes an extension: it leaves its account first (the detachment names the number, so a
/// process that dies after it leaves a `release` step the recovery pass finishes), then stops
/// serving, and its number is released.
pub async fn remove_extension(
    app: &AppState,
    ctx: &Ctx,
    id: ExtensionId,
    state: &Extension,
    reason: &str,
) -> ApiResult<()> {
    match (state.account_id, &state.number) {
        (Some(account_id), Some(number)) => {
            let detach = AccountCommand::DetachExtension { extension_id: id };
            execute::<Account>(app, ctx, &account_id.stream_id(), None, &detach).await?;
            give_back(app, ctx, account_id, id, number, reason).await?;
        }
        _ if state.status != ExtensionStatus::Removed => {
            let command = ExtensionCommand::Remove {
                reason: reason.to_owned(),
            };
            execute::<Extension>(app, ctx, &id.stream_id(), None, &command).await?;
        }
        _ => {}
    }
    Ok(())
}

#[utoipa::path(delete, path = "/v1/extensions/{extension_id}", tag = "admin",
    params(("extension_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 204), (status = 404, body = crate::problem::Problem),
        (status = 412, body = crate::problem::Problem)))]
pub async fn remove(
    State(app): State<Shared>,
    Admin(ctx): Admin,
    IfMatch(if_match): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (id, Loaded { state, version }) = extension(&app, &id).await?;
    // Checked before anything is written: the removal's first append is on the account.
    if let Some(expected) = if_match.filter(|v| *v != version) {
        return Err(ApiError::PreconditionFailed {
            expected,
            actual: version,
        });
    }
    remove_extension(&app, &ctx, id, &state, "removed by an admin").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExtensionSummary {
    pub extension_id: String,
    pub number: String,
    pub native_provider: String,
    pub kind: String,
    pub status: String,
}

#[utoipa::path(get, path = "/v1/accounts/{account_id}/extensions", tag = "admin",
    params(("account_id" = String, Path), ListQuery),
    responses((status = 200, body = Page<ExtensionSummary>, description = "JSON or CSV")))]
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
        "SELECT extension_id, number, native_provider, kind, status FROM routing_extensions \
         WHERE account_id = $1 AND extension_id > $2 ORDER BY extension_id LIMIT $3",
    )
    .bind(account_id.to_string())
    .bind(q.after.unwrap_or_default())
    .bind(limit as i64 + 1)
    .fetch_all(&app.db.pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(ExtensionSummary {
            extension_id: r.try_get(0)?,
            number: r.try_get(1)?,
            native_provider: r.try_get(2)?,
            kind: r.try_get(3)?,
            status: r.try_get(4)?,
        });
    }
    Ok(list_response(
        &headers,
        &[
            "extension_id",
            "number",
            "native_provider",
            "kind",
            "status",
        ],
        paginate(items, limit, |e| e.extension_id.clone()),
    ))
}
