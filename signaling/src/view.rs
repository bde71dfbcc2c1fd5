//! The edge's in-memory `RoutingView`, kept current by following the log.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use infra::EventStore;
use projections::RoutingView;
use tokio::sync::watch;

pub type SharedView = Arc<RwLock<RoutingView>>;

/// Follows the log from the view's position until `stopped` turns true. A store error is
/// retried from where the view stands; an event the view cannot apply stops the feed (the
/// edge would otherwise route on a view that silently skipped it) and is logged with its
/// position.
pub async fn follow(
    store: Arc<dyn EventStore>,
    view: SharedView,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let from = view.read().expect("routing view").position();
        let mut events = store.subscribe_all(from);
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = stopped.wait_for(|s| *s) => return,
            };
            match next {
                Some(Ok(event)) => {
                    if let Err(e) = view.write().expect("routing view").apply(&event) {
                        tracing::error!(error = %e, "the edge's routing view stopped");
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "routing view feed failed; resuming in 1 s");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// A view holding `log` (stream, event), applied in order, for unit tests of what reads it.
#[cfg(test)]
pub(crate) fn view_of(log: Vec<(String, domain::Event)>) -> SharedView {
    let at: domain::Instant = chrono::DateTime::parse_from_rfc3339("2026-11-01T09:00:00Z")
        .unwrap()
        .into();
    let mut view = RoutingView::default();
    for (position, (stream_id, event)) in (1..).zip(log) {
        let e = event.encode();
        let recorded = infra::RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id,
            stream_version: 1,
            global_position: position,
            event_type: e.event_type.to_owned(),
            schema_version: e.schema_version,
            occurred_at: at,
            recorded_at: at,
            correlation_id: uuid::Uuid::nil(),
            causation_id: None,
            actor: "test".into(),
            payload: e.payload,
            prev_hash: String::new(),
            hash: String::new(),
        };
        view.apply(&recorded).unwrap();
    }
    Arc::new(RwLock::new(view))
}
