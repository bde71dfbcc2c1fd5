//! The hash chain: each event's SHA-256 covers its whole envelope and the previous event's
//! hash in global order, so altering, deleting or reordering any stored event breaks every
//! hash after it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of the first event in the log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields an event's hash covers.
pub struct HashInput<'a> {
    pub prev_hash: &'a str,
    pub event_id: Uuid,
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub global_position: u64,
    pub event_type: &'a str,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor: &'a str,
    pub payload: &'a Value,
}

impl HashInput<'_> {
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            // Length-prefixed, so no two different envelopes share an encoding.
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.prev_hash.as_bytes());
        field(self.event_id.as_bytes());
        field(self.stream_id.as_bytes());
        field(&self.stream_version.to_be_bytes());
        field(&self.global_position.to_be_bytes());
        field(self.event_type.as_bytes());
        field(&self.schema_version.to_be_bytes());
        field(timestamp(self.occurred_at).as_bytes());
        field(timestamp(self.recorded_at).as_bytes());
        field(self.correlation_id.as_bytes());
        field(
            self.causation_id
                .map(|c| *c.as_bytes())
                .unwrap_or_default()
                .as_slice(),
        );
        field(self.actor.as_bytes());
        field(canonical_json(self.payload).as_bytes());
        hex::encode(h.finalize())
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// JSON with object keys sorted and no whitespace: the same text whichever database
/// stored the payload (PostgreSQL's jsonb reorders keys).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

impl<'a> From<&'a crate::RecordedEvent> for HashInput<'a> {
    fn from(e: &'a crate::RecordedEvent) -> Self {
        Self {
            prev_hash: &e.prev_hash,
            event_id: e.event_id,
            stream_id: &e.stream_id,
            stream_version: e.stream_version,
            global_position: e.global_position,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            occurred_at: e.occurred_at,
            recorded_at: e.recorded_at,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            actor: &e.actor,
            payload: &e.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":"x"}}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
