//! `Idempotency-Key` on every POST: the first request with a key runs and its response is kept
//! under (API key, Idempotency-Key); a retry with the same body gets that response again
//! (`Idempotent-Replayed: true`) and writes nothing; the same key with another body is refused
//! with 422; a retry while the first is still running gets 409.
//!
//! The record is claimed before the command runs and completed only with a final outcome: a
//! 5xx, or a 409 a retry may resolve (`Retryable`: the stream kept changing), releases the key
//! so the retry runs again. The work runs to its end even when the client goes away (see
//! `middleware::run_to_completion`), so a key stays claimed only when the process died
//! mid-request: the recovery pass (`sweep`) frees such keys once they are older than the
//! workflow grace period, and forgets completed records after the retention period.
//!
//! Secrets a response shows once (a device's SIP password, a verification code returned in
//! the response) are not kept: a handler hands the redacted body to keep in `ReplayBody`, and a
//! replay answers with that.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::extract::BODY_LIMIT;
use crate::keys::Caller;
use crate::problem::{ApiError, Retryable};
use projections::db::ProjectionDb;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS api_idempotency (key_id TEXT NOT NULL, \
    idempotency_key TEXT NOT NULL, request_hash TEXT NOT NULL, status BIGINT, headers TEXT, \
    body TEXT, created_at TEXT NOT NULL, PRIMARY KEY (key_id, idempotency_key))";

/// Response headers worth replaying.
const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

#[derive(Clone, Debug)]
pub struct IdempotencyRecords {
    db: ProjectionDb,
}

enum Claim {
    /// This request owns the key and must complete it.
    Owned,
    Replay {
        status: u16,
        headers: String,
        body: String,
    },
    InProgress,
    Mismatch,
}

impl IdempotencyRecords {
    pub async fn open(db: ProjectionDb) -> Result<Self, sqlx::Error> {
        sqlx::query(SCHEMA).execute(&db.pool).await?;
        Ok(Self { db })
    }

    async fn claim(&self, key_id: &str, key: &str, hash: &str) -> Result<Claim, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO api_idempotency (key_id, idempotency_key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(key_id)
        .bind(key)
        .bind(hash)
        .bind(Utc::now().to_rfc3339())
        .execute(&self.db.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Owned);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, headers, body FROM api_idempotency \
             WHERE key_id = $1 AND idempotency_key = $2",
        )
        .bind(key_id)
        .bind(key)
        .fetch_one(&self.db.pool)
        .await?;
        let stored_hash: String = row.try_get(0)?;
        if stored_hash != hash {
            return Ok(Claim::Mismatch);
        }
        let status: Option<i64> = row.try_get(1)?;
        Ok(match status {
            None => Claim::InProgress,
            Some(status) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                headers: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                body: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
            },
        })
    }

    async fn complete(
        &self,
        key_id: &str,
        key: &str,
        status: u16,
        headers: &str,
        body: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE api_idempotency SET status = $3, headers = $4, body = $5 \
             WHERE key_id = $1 AND idempotency_key = $2",
        )
        .bind(key_id)
        .bind(key)
        .bind(i64::from(status))
        .bind(headers)
        .bind(body)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Frees keys still claimed at `stale_before` (their request's process died) and forgets
    /// records created before `expire_before`; returns how many of each.
    pub async fn sweep(
        &self,
        stale_before: chrono::DateTime<Utc>,
        expire_before: chrono::DateTime<Utc>,
    ) -> Result<(u64, u64), sqlx::Error> {
        let stale =
            sqlx::query("DELETE FROM api_idempotency WHERE status IS NULL AND created_at < $1")
                .bind(stale_before.to_rfc3339())
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        let expired =
            sqlx::query("DELETE FROM api_idempotency WHERE status IS NOT NULL AND created_at < $1")
                .bind(expire_before.to_rfc3339())
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        Ok((stale, expired))
    }

    /// Frees a key whose request failed unexpectedly, so a retry runs it again.
    async fn release(&self, key_id: &str, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM api_idempotency WHERE key_id = $1 AND idempotency_key = $2 \
             AND status IS NULL",
        )
        .bind(key_id)
        .bind(key)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}

/// The body an idempotency record keeps instead of the response's own: the response with its
/// once-only secrets taken out.
#[derive(Debug, Clone)]
pub struct ReplayBody(pub String);

/// Keeps `body` (the response as it should be replayed) instead of the response's own body.
pub fn replay_as<T: serde::Serialize>(response: &mut Response, body: &T) {
    if let Ok(text) = serde_json::to_string(body) {
        response.extensions_mut().insert(ReplayBody(text));
    }
}

fn encode_headers(headers: &HeaderMap) -> String {
    let kept: Vec<(String, String)> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let v = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), v.to_owned()))
        })
        .collect();
    serde_json::to_string(&kept).unwrap_or_default()
}

fn replay(status: u16, headers: &str, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    let kept: Vec<(String, String)> = serde_json::from_str(headers).unwrap_or_default();
    let h = response.headers_mut();
    h.remove("content-type");
    for (name, value) in kept {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(&value),
        ) {
            h.insert(n, v);
        }
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The middleware. Runs after authentication, on POSTs carrying an `Idempotency-Key`.
pub async fn idempotent(
    State(records): State<IdempotencyRecords>,
    request: Request,
    next: Next,
) -> Response {
    match run(&records, request, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(
    records: &IdempotencyRecords,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(key) = request.headers().get("idempotency-key") else {
        return Ok(next.run(request).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?
        .to_owned();
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return Ok(next.run(request).await);
    };
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::TooLarge { limit: BODY_LIMIT })?;
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update([0]);
    h.update(parts.uri.path().as_bytes());
    h.update([0]);
    h.update(&bytes);
    let hash = hex::encode(h.finalize());
    match records.claim(&caller.key_id, &key, &hash).await? {
        Claim::Owned => {}
        Claim::Replay {
            status,
            headers,
            body,
        } => return Ok(replay(status, &headers, body)),
        Claim::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being processed".into(),
            ));
        }
        Claim::Mismatch => {
            return Err(ApiError::IdempotencyMismatch(
                "this Idempotency-Key was used with a different request".into(),
            ));
        }
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        records.release(&caller.key_id, &key).await?;
        return Err(ApiError::Unexpected(
            "response body could not be read".into(),
        ));
    };
    if parts.status.is_server_error() || parts.extensions.get::<Retryable>().is_some() {
        records.release(&caller.key_id, &key).await?;
    } else {
        let text = match parts.extensions.get::<ReplayBody>() {
            Some(ReplayBody(kept)) => kept.clone(),
            None => String::from_utf8_lossy(&bytes).into_owned(),
        };
        records
            .complete(
                &caller.key_id,
                &key,
                parts.status.as_u16(),
                &encode_headers(&parts.headers),
                &text,
            )
            .await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
