//! Read models projected from the event log: the edge's in-memory `RoutingView`, and SQL
//! projections (routing with the API's open workflows, billing, call history) kept by a runner that commits each batch of
//! rows with its checkpoint in one transaction.

pub mod as_of;
pub mod billing;
pub mod call_history;
pub mod db;
pub mod rebuild;
pub mod routing_tables;
pub mod routing_view;
pub mod runner;
pub mod sql;
pub mod workflows;
pub mod workload;
pub mod writes;

pub use routing_view::RoutingView;

/// Why an event could not be applied to a read model. Names the event, so a stopped
/// projection says exactly where it stopped.
#[derive(Debug, thiserror::Error)]
#[error("cannot apply {event_type} at position {position} (stream {stream_id}): {reason}")]
pub struct ApplyError {
    pub position: u64,
    pub stream_id: String,
    pub event_type: String,
    pub reason: String,
}

impl ApplyError {
    pub fn new(event: &infra::RecordedEvent, reason: impl std::fmt::Display) -> Self {
        Self {
            position: event.global_position,
            stream_id: event.stream_id.clone(),
            event_type: event.event_type.clone(),
            reason: reason.to_string(),
        }
    }
}
