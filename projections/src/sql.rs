//! Small helpers for projection SQL: how values are written so SQLite and PostgreSQL store
//! them alike.

use domain::Instant;

/// RFC 3339 with microseconds, UTC: sorts as text in time order.
pub fn ts(t: Instant) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// A serde enum's wire name (`"snake_case"` without quotes).
pub fn name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The uuid after `category-` in a stream id.
pub fn entity_id(stream_id: &str) -> Result<String, crate::runner::ProjectionError> {
    stream_id
        .split_once('-')
        .map(|(_, id)| id.to_owned())
        .ok_or_else(|| crate::runner::ProjectionError::Apply("stream id has no entity id".into()))
}
