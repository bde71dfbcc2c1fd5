//! Every refusal the API gives, as an RFC 9457 problem (`application/problem+json`) naming the
//! offending field where there is one. Unexpected failures are logged in full and answered
//! with a bare 500 that leaks nothing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::DomainError;
use infra::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:ringledger:problem:<kind>`).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault (a JSON path such as `ring_policy.ring_timeout_secs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Invalid {
        field: Option<String>,
        detail: String,
    },
    #[error("{0}")]
    Malformed(String),
    #[error("missing or unknown API key")]
    Unauthenticated,
    #[error("this key's role ({role}) may not {action}")]
    Forbidden {
        role: &'static str,
        action: &'static str,
    },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A conflict that a retry of the same request resolves (the stream kept changing): sent
    /// with `Retry-After`, and never kept as an idempotent outcome.
    #[error("{0}")]
    Contended(String),
    #[error("the resource is at version {actual}; If-Match named {expected}")]
    PreconditionFailed { expected: u64, actual: u64 },
    #[error("{0}")]
    IdempotencyMismatch(String),
    #[error("this method is not served by any route")]
    MethodNotAllowed,
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout { secs: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Rule(DomainError),
    /// A bounded resource is full; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The log cannot be read at `position` (a damaged or tampered row).
    #[error("the event log cannot be read at position {position}: {reason}")]
    CorruptLog { position: u64, reason: String },
    #[error("unexpected: {0}")]
    Unexpected(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: Some(field.into()),
            detail: detail.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<String>) {
        use StatusCode as S;
        match self {
            Self::Invalid { field, .. } => (S::UNPROCESSABLE_ENTITY, "invalid", field.clone()),
            Self::Malformed(_) => (S::BAD_REQUEST, "malformed", None),
            Self::Unauthenticated => (S::UNAUTHORIZED, "unauthenticated", None),
            Self::Forbidden { .. } => (S::FORBIDDEN, "forbidden", None),
            Self::NotFound(_) => (S::NOT_FOUND, "not-found", None),
            Self::Conflict(_) => (S::CONFLICT, "conflict", None),
            Self::Contended(_) => (S::CONFLICT, "contended", None),
            Self::PreconditionFailed { .. } => (
                S::PRECONDITION_FAILED,
                "stale-version",
                Some("If-Match".into()),
            ),
            Self::IdempotencyMismatch(_) => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                Some("Idempotency-Key".into()),
            ),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed", None),
            Self::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "too-large", None),
            Self::BodyTimeout { .. } => (S::REQUEST_TIMEOUT, "body-timeout", None),
            Self::UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                Some("Content-Type".into()),
            ),
            Self::Rule(e) => rule_parts(e),
            Self::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", None),
            Self::CorruptLog { .. } => (S::SERVICE_UNAVAILABLE, "corrupt-log", None),
            Self::Unexpected(_) => (S::INTERNAL_SERVER_ERROR, "unexpected", None),
        }
    }
}

fn rule_parts(e: &DomainError) -> (StatusCode, &'static str, Option<String>) {
    use DomainError as D;
    use StatusCode as S;
    match e {
        D::NotFound { .. } => (S::NOT_FOUND, "not-found", None),
        D::AlreadyExists { .. } => (S::CONFLICT, "already-exists", None),
        D::NumberTaken { .. } => (S::CONFLICT, "number-taken", Some("number".into())),
        D::Invalid { field, .. } => (S::UNPROCESSABLE_ENTITY, "invalid", Some((*field).into())),
        D::ChallengeExpired | D::ChallengeLocked | D::NoChallenge => {
            (S::CONFLICT, "verification", Some("code".into()))
        }
        _ => (S::CONFLICT, "rule", None),
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        Self::Rule(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Conflict(e.to_string()),
            StoreError::Corrupt { position, reason } => {
                tracing::error!(position, %reason, "the event log cannot be read");
                Self::CorruptLog { position, reason }
            }
            other => Self::Unexpected(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unexpected(format!("database: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, field) = self.parts();
        let detail = match &self {
            Self::Unexpected(why) => {
                tracing::error!(error = %why, "request failed unexpectedly");
                "the server could not complete the request; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let problem = Problem {
            kind: format!("urn:ringledger:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail,
            field,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let retry_after = match &self {
            Self::Contended(_) => Some("1"),
            Self::Unavailable(_) => Some("5"),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
            response.extensions_mut().insert(Retryable);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ringledger\""),
            );
        }
        response
    }
}

/// Marks a response whose outcome is not final: a retry may succeed, so an idempotency record
/// must not keep it.
#[derive(Debug, Clone, Copy)]
pub struct Retryable;

pub type ApiResult<T> = Result<T, ApiError>;
