//! The life of one SIP edge process (stream `edge-{uuid}`, a new id each start): that it
//! started, that it was still alive while it had calls in progress, and that it stopped after
//! draining them. Calls name the edge that runs them, so when an edge is gone without its
//! `edge.stopped` (killed, crashed, its machine lost), any other edge — or its own next start —
//! can end its calls at the last instant it was known alive and have them billed.

use crate::event::domain_events;
use crate::time::Instant;

/// The stream of the edge process `id`.
pub fn stream_id(id: uuid::Uuid) -> String {
    format!("edge-{id}")
}

domain_events! {
    /// One edge process's liveness (stream `edge-{uuid}`).
    pub enum EdgeEvent {
        /// The process started serving SIP on `listen`.
        Started { listen: String, at: Instant } = ("edge.started", 1),
        /// Still alive (written periodically while the edge has calls in progress).
        Alive { at: Instant } = ("edge.alive", 1),
        /// Stopped after draining its calls: none of its calls is still up.
        Stopped { at: Instant } = ("edge.stopped", 1),
    }
}

impl EdgeEvent {
    /// When the edge was last known alive by this event.
    pub fn at(&self) -> Instant {
        match self {
            Self::Started { at, .. } | Self::Alive { at } | Self::Stopped { at } => *at,
        }
    }
}
