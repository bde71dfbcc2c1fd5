//! The edge's liveness, and the calls of edges that are gone. Every call names the edge
//! process running it (`call.started`'s `edge_id`); the edge records `edge.started` before it
//! serves, `edge.alive` every heartbeat while it has calls, and `edge.stopped` once it has
//! drained them. Each heartbeat, the edge also looks for open calls whose edge stopped or has
//! shown no sign of life for three heartbeats (killed, crashed, its machine lost) and ends
//! them with cause `edge_lost` at the last instant that edge was known alive, so they are
//! billed up to then and no longer count against the account's limits. The edge that ran
//! them sent no BYE: the carrier's leg stays up until its own timers end it (see OPERATIONS).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use domain::call::{Call, CallCommand};
use domain::edge::{self, EdgeEvent};
use domain::{DomainEvent, Instant};
use infra::command::{self, Origin};
use infra::store::{ExpectedVersion, NewEvent, StoreError};
use projections::routing_view::EdgeSeen;
use tokio::sync::watch;
use uuid::Uuid;

use crate::edge::Edge;

/// Heartbeats without a sign of life after which an edge is taken for gone.
const LOST_AFTER_HEARTBEATS: u32 = 3;

/// Lost calls ended per pass at most (the next pass takes the rest).
const PER_PASS: usize = 256;

/// Records that this edge process started serving (before any of its calls).
pub async fn record_start(edge: &Edge) -> Result<(), StoreError> {
    let at = chrono::Utc::now();
    let listen = edge.local.to_string();
    append(edge, &EdgeEvent::Started { listen, at }, at).await
}

/// Records that this edge drained its calls and stops: its calls still open (none, if the
/// drain finished) may be ended at once by any edge.
pub async fn record_stop(edge: &Edge) -> Result<(), StoreError> {
    let at = chrono::Utc::now();
    append(edge, &EdgeEvent::Stopped { at }, at).await
}

async fn append(edge: &Edge, event: &EdgeEvent, at: Instant) -> Result<(), StoreError> {
    let new = NewEvent::from_domain(event, at, &edge.actor);
    edge.store
        .append(&edge::stream_id(edge.id), ExpectedVersion::Any, vec![new])
        .await
        .map(|_| ())
}

/// Every `every`: a heartbeat while the edge has calls, then a look for lost calls; until
/// `stopped`.
pub async fn run(edge: Arc<Edge>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let lost_after = every * LOST_AFTER_HEARTBEATS;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        if edge.calls.running() > 0 {
            let at = chrono::Utc::now();
            if let Err(e) = append(&edge, &EdgeEvent::Alive { at }, at).await {
                tracing::warn!(error = %e, "heartbeat not recorded; other edges may take this edge's calls for lost");
            }
        }
        recover(&edge, lost_after).await;
    }
}

/// Ends the calls of edges that are gone, as far as the routing view shows them; each edge
/// is confirmed gone from its own stream first (the view may lag the log).
pub async fn recover(edge: &Edge, lost_after: Duration) {
    let now = chrono::Utc::now();
    let lost_after = chrono::Duration::from_std(lost_after).unwrap_or(chrono::Duration::MAX);
    // A call that names no edge (recorded before calls named theirs) cannot have outlived
    // the longest call.
    let legacy_after = chrono::Duration::from_std(edge.max_call_duration)
        .unwrap_or(chrono::Duration::MAX)
        + lost_after;
    let (candidates, seen): (Vec<_>, HashMap<Uuid, Option<EdgeSeen>>) = {
        let view = edge.view.read().expect("routing view");
        let candidates = view.lost_calls(now, edge.id, lost_after, legacy_after, PER_PASS);
        let seen = candidates
            .iter()
            .filter_map(|c| c.edge_id)
            .map(|id| (id, view.edge(id)))
            .collect();
        (candidates, seen)
    };
    let mut gone: HashMap<Uuid, Gone> = HashMap::new();
    for (id, seen) in seen {
        gone.insert(id, confirm_gone(edge, id, seen, now, lost_after).await);
    }
    let origin = Origin {
        actor: &edge.actor,
        correlation_id: None,
        observe_append: None,
    };
    for lost in candidates {
        let alive_until = match lost.edge_id {
            Some(id) => match gone.get(&id) {
                Some(Gone::At(at)) => *at,
                Some(Gone::Unrecorded) => lost.alive_until,
                _ => continue,
            },
            None => lost.alive_until,
        };
        let stream = lost.call_id.stream_id();
        let ended = command::execute::<Call>(
            edge.store.as_ref(),
            &origin,
            &stream,
            &CallCommand::EndLost { alive_until },
            None,
            None,
        )
        .await;
        match ended {
            Ok((_, events)) if !events.is_empty() => {
                edge.stats.calls_recovered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    call = %lost.call_id,
                    edge = ?lost.edge_id,
                    %alive_until,
                    "call of a lost edge ended (edge_lost); billed up to when its edge was last alive"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(call = %lost.call_id, error = %e, "lost call not ended; retried next pass")
            }
        }
    }
}

/// What an edge's own stream says of it.
enum Gone {
    /// Alive (or its stream could not be read): its calls are left alone.
    No,
    /// Stopped, or silent for too long since this instant.
    At(Instant),
    /// Its stream holds nothing: the call ends at its own last step.
    Unrecorded,
}

/// Whether edge `id` is gone, read from its stream: since its last event when it stopped or
/// that event is older than `lost_after`.
async fn confirm_gone(
    edge: &Edge,
    id: Uuid,
    seen: Option<EdgeSeen>,
    now: Instant,
    lost_after: chrono::Duration,
) -> Gone {
    let from = seen.map_or(1, |s| s.version.max(1));
    let events = match edge
        .store
        .read_stream(&edge::stream_id(id), from, 100_000)
        .await
    {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(edge = %id, error = %e, "an edge's liveness could not be read");
            return Gone::No;
        }
    };
    let last = events
        .last()
        .and_then(|e| EdgeEvent::decode(&e.event_type, e.schema_version, e.payload.clone()).ok());
    match (last, seen) {
        (Some(EdgeEvent::Stopped { at }), _) => Gone::At(at),
        (Some(event), _) if now - event.at() > lost_after => Gone::At(event.at()),
        (Some(_), _) => Gone::No,
        (None, None) => Gone::Unrecorded,
        (None, Some(seen)) if seen.stopped || now - seen.last_alive > lost_after => {
            Gone::At(seen.last_alive)
        }
        (None, Some(_)) => Gone::No,
    }
}
