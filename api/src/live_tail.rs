//! Live tails of the log (`GET /v1/audit/events/live`) fed by one reader: a hub follows the
//! log once and broadcasts each event, serialised once, to every open tail. A tail first
//! catches up by reading the log after its position, then takes the hub's events (skipping
//! what it already sent), so it never misses or repeats one. At most `max_tails` are open; a
//! tail that falls more than `buffer` events behind the hub is ended with a `lagged` event
//! naming the position to resume after (EventSource reconnects with `Last-Event-ID` and
//! catches up by reading).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use infra::{EventStore, RecordedEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};

use crate::event_view::EventView;
use crate::problem::ApiError;

/// Events a tail reads per page while catching up.
const CATCH_UP_PAGE: usize = 256;

/// One event as every tail sends it.
#[derive(Debug)]
pub struct TailEvent {
    pub position: u64,
    pub event_type: String,
    /// The `EventView` as JSON.
    pub json: String,
}

impl TailEvent {
    fn of(e: RecordedEvent) -> Self {
        let position = e.global_position;
        let event_type = e.event_type.clone();
        let json = serde_json::to_string(&EventView::from(e)).unwrap_or_default();
        Self {
            position,
            event_type,
            json,
        }
    }
}

/// What a tail yields.
#[derive(Debug)]
pub enum TailItem {
    Event(Arc<TailEvent>),
    /// The tail fell behind and ends; resume after this position.
    Lagged {
        resume_after: u64,
    },
    /// The log could not be read (the tail ends).
    Failed(String),
}

pub struct LiveTails {
    hub: tokio::sync::OnceCell<broadcast::Sender<Arc<TailEvent>>>,
    open: Arc<Semaphore>,
    max_tails: usize,
    buffer: usize,
}

impl LiveTails {
    pub fn new(max_tails: usize, buffer: usize) -> Self {
        Self {
            hub: tokio::sync::OnceCell::new(),
            open: Arc::new(Semaphore::new(max_tails)),
            max_tails,
            buffer: buffer.max(1),
        }
    }

    /// Tails open now.
    pub fn open(&self) -> usize {
        self.max_tails - self.open.available_permits()
    }

    /// The hub, started on first use at the log's head.
    async fn hub(
        &self,
        store: &Arc<dyn EventStore>,
        closing: &watch::Sender<bool>,
    ) -> Result<broadcast::Sender<Arc<TailEvent>>, ApiError> {
        let sender = self
            .hub
            .get_or_try_init(|| async {
                // The head is read before the hub exists, so a tail that subscribes after
                // this returns reads (while catching up) everything the hub will not send.
                let head = store.head_position().await?;
                let (sender, _) = broadcast::channel(self.buffer);
                tokio::spawn(follow(
                    store.clone(),
                    sender.clone(),
                    head,
                    closing.subscribe(),
                ));
                Ok::<_, ApiError>(sender)
            })
            .await?;
        Ok(sender.clone())
    }

    /// A tail from after `after`, or 503 when `max_tails` are open.
    pub async fn tail(
        &self,
        store: &Arc<dyn EventStore>,
        closing: &watch::Sender<bool>,
        after: u64,
    ) -> Result<BoxStream<'static, TailItem>, ApiError> {
        let permit = self.open.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(
                max = self.max_tails,
                "live tail refused: the limit is reached"
            );
            ApiError::Unavailable(format!(
                "{} live tails are open, the most this server keeps (api.max_live_tails)",
                self.max_tails
            ))
        })?;
        let live = self.hub(store, closing).await?.subscribe();
        let state = Tail {
            store: store.clone(),
            live,
            position: after,
            catching_up: true,
            read_to_end: false,
            page: std::collections::VecDeque::new(),
            done: false,
            _permit: permit,
        };
        Ok(futures::stream::unfold(state, Tail::next).boxed())
    }
}

/// Follows the log from `head` and broadcasts each event; after a read failure it resumes
/// from the last event it sent.
async fn follow(
    store: Arc<dyn EventStore>,
    sender: broadcast::Sender<Arc<TailEvent>>,
    mut position: u64,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        let mut events = store.subscribe_all(position);
        loop {
            tokio::select! {
                _ = closing.wait_for(|c| *c) => return,
                next = events.next() => match next {
                    Some(Ok(e)) => {
                        position = e.global_position;
                        // Serialised once for all tails, and not at all when none is open.
                        if sender.receiver_count() > 0 {
                            let _ = sender.send(Arc::new(TailEvent::of(e)));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(position, error = %e, "the live tails' reader failed; retrying in 1 s");
                        break;
                    }
                    None => return,
                },
            }
        }
        tokio::select! {
            _ = closing.wait_for(|c| *c) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct Tail {
    store: Arc<dyn EventStore>,
    live: broadcast::Receiver<Arc<TailEvent>>,
    /// The last position sent.
    position: u64,
    catching_up: bool,
    /// The last catch-up read came back short of a page.
    read_to_end: bool,
    page: std::collections::VecDeque<RecordedEvent>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Tail {
    async fn next(mut self) -> Option<(TailItem, Self)> {
        if self.done {
            return None;
        }
        while self.catching_up {
            if let Some(e) = self.page.pop_front() {
                self.position = e.global_position;
                return Some((TailItem::Event(Arc::new(TailEvent::of(e))), self));
            }
            if self.read_to_end {
                // The last page was short: the log's end as it was then. The hub's events
                // take over (those at or before `position` are skipped).
                self.catching_up = false;
                break;
            }
            match self.store.read_all(self.position, CATCH_UP_PAGE).await {
                Ok(page) => {
                    self.read_to_end = page.len() < CATCH_UP_PAGE;
                    self.page = page.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some((TailItem::Failed(e.to_string()), self));
                }
            }
        }
        loop {
            match self.live.recv().await {
                Ok(e) if e.position <= self.position => continue,
                Ok(e) => {
                    self.position = e.position;
                    return Some((TailItem::Event(e), self));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    let resume_after = self.position;
                    return Some((TailItem::Lagged { resume_after }, self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
