//! An event as the API shows it: the log's whole envelope (audit listings and live tails).

use chrono::{DateTime, Utc};
use infra::RecordedEvent;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// One event with its full envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub global_position: u64,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    /// `key:<id>` for API keys, the edge's id, or a device.
    pub actor: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<RecordedEvent> for EventView {
    fn from(e: RecordedEvent) -> Self {
        Self {
            global_position: e.global_position,
            stream_id: e.stream_id,
            stream_version: e.stream_version,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            occurred_at: e.occurred_at,
            recorded_at: e.recorded_at,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            actor: e.actor,
            payload: e.payload,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}
