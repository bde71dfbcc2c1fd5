//! Request extractors: the caller's role, JSON bodies that name the offending field, `If-Match`
//! versions and query strings, each refusing bad input as a problem.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::keys::{Caller, Role};
use crate::problem::ApiError;

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Set by the request-id middleware on every request.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

/// Who is calling, with the request's id (the correlation id of what it writes).
#[derive(Debug, Clone)]
pub struct Ctx {
    pub caller: Caller,
    pub request_id: Uuid,
    /// The `actor` of the events it writes: `key:<key id>` for a request.
    pub actor: String,
}

impl Ctx {
    /// The server acting on its own (the recovery pass): events name `actor`, e.g.
    /// `api:recovery`.
    pub fn system(actor: &str) -> Self {
        Self {
            caller: Caller {
                key_id: actor.to_owned(),
                role: Role::Admin,
            },
            request_id: Uuid::now_v7(),
            actor: actor.to_owned(),
        }
    }
}

fn ctx(parts: &Parts, role: Role, action: &'static str) -> Result<Ctx, ApiError> {
    let caller = parts
        .extensions
        .get::<Caller>()
        .cloned()
        .ok_or(ApiError::Unauthenticated)?;
    if caller.role != role {
        return Err(ApiError::Forbidden {
            role: caller.role.name(),
            action,
        });
    }
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map_or_else(Uuid::now_v7, |r| r.0);
    Ok(Ctx {
        actor: caller.actor(),
        caller,
        request_id,
    })
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr, $action:literal) => {
        $(#[$doc])*
        pub struct $name(pub Ctx);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                ctx(parts, $role, $action).map($name)
            }
        }
    };
}

role_extractor!(
    /// A caller holding the `admin` role.
    Admin,
    Role::Admin,
    "change or read accounts, devices, extensions, tariffs or access numbers"
);
role_extractor!(
    /// A caller holding the `billing` role.
    Billing,
    Role::Billing,
    "read billing"
);
role_extractor!(
    /// A caller holding the `auditor` role.
    Auditor,
    Role::Auditor,
    "read the audit trail"
);

/// `If-Match: "<stream version>"`: the version the caller last saw, when given.
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let bad = || ApiError::invalid("If-Match", "must be a version in quotes, like \"3\"");
        let text = value.to_str().map_err(|_| bad())?.trim();
        let text = text.strip_prefix("W/").unwrap_or(text);
        let version = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .ok_or_else(bad)?
            .parse::<u64>()
            .map_err(|_| bad())?;
        Ok(Self(Some(version)))
    }
}

/// Names the field a serde error is about (for an unknown field, the path ends with it).
fn field_of(path: &serde_path_to_error::Path) -> String {
    match path.to_string() {
        p if p == "." => "body".to_owned(),
        p => p,
    }
}

/// The path of the first string (or key) in `value` holding a NUL character.
fn nul_at(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(k))
            } else {
                nul_at(v, &join(k))
            }
        }),
        _ => None,
    }
}

/// Parses `bytes` as JSON into `T`, naming the field at fault on failure. Text may not hold
/// NUL characters (no backend stores them alike; PostgreSQL refuses them).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.windows(6).any(|w| w == b"\\u0000")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(field) = nul_at(&value, "")
    {
        return Err(ApiError::invalid(field, "must not contain a NUL character"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Malformed(format!("the body is not valid JSON: {inner}"));
        }
        let message = inner.to_string();
        // serde_json appends " at line L column C"; the field name says more.
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_owned();
        // A missing field is reported at the object that lacks it: name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name.to_owned());
        let field = match (missing, field_of(e.path())) {
            (Some(name), at) if at == "body" => name,
            (Some(name), at) => format!("{at}.{name}"),
            (None, at) => at,
        };
        ApiError::invalid(field, message)
    })
}

/// A JSON body (`Content-Type: application/json`), refused with the field at fault.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::TooLarge { limit: BODY_LIMIT },
            other => ApiError::Malformed(other.body_text()),
        })?;
        parse_json(&bytes).map(Self)
    }
}

/// A query string, refused with the parameter at fault.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded_deserializer(query);
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let message = e.inner().to_string();
            ApiError::invalid(field_of(e.path()), message)
        })
    }
}

fn serde_urlencoded_deserializer(query: &str) -> serde_urlencoded::Deserializer<'_> {
    serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Policy {
        ring_timeout_secs: u16,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        policy: Policy,
    }

    fn field(json: &str) -> Option<String> {
        match parse_json::<Body>(json.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            Err(ApiError::Malformed(_)) => None,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(
            field(r#"{"name": 3, "policy": {"ring_timeout_secs": 5}}"#).as_deref(),
            Some("name")
        );
        assert_eq!(
            field(r#"{"name": "a", "policy": {"ring_timeout_secs": "x"}}"#).as_deref(),
            Some("policy.ring_timeout_secs")
        );
        assert_eq!(
            field(r#"{"name": "a", "policy": {"ring_timeout_secs": 5, "extra": 1}}"#).as_deref(),
            Some("policy.extra")
        );
        assert_eq!(field(r#"{"name": "a", "nme": 1}"#).as_deref(), Some("nme"));
        assert_eq!(field(r#"{"name": "a""#), None);
    }

    #[test]
    fn names_a_missing_field_not_the_body() {
        assert_eq!(
            field(r#"{"policy": {"ring_timeout_secs": 5}}"#).as_deref(),
            Some("name")
        );
        assert_eq!(
            field(r#"{"name": "a", "policy": {}}"#).as_deref(),
            Some("policy.ring_timeout_secs")
        );
    }

    #[test]
    fn refuses_nul_characters_naming_the_field() {
        assert_eq!(
            field(r#"{"name": "a\u0000b", "policy": {"ring_timeout_secs": 5}}"#).as_deref(),
            Some("name")
        );
        // An escaped backslash before "u0000" is text, not a NUL.
        let ok = parse_json::<Body>(br#"{"name": "a\\u0000", "policy": {"ring_timeout_secs": 5}}"#);
        assert_eq!(ok.map(|b| b.name).ok().as_deref(), Some("a\\u0000"));
    }
}
