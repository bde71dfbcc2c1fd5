//! Catch-up-then-live subscriptions over `read_all`, woken by the writer's head position.
//! Because every backend makes positions visible only in order, reading after the last
//! delivered position never skips an event. Once live, a subscriber of the same process takes
//! the writer's committed batches from memory when they follow on from its position without a
//! gap, and reads the log otherwise (another process's appends, or a backlog it fell behind).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, watch};

use super::{EventStore, RecordedEvent, StoreError};

const PAGE: usize = 512;

type Batches = broadcast::Receiver<Arc<Vec<RecordedEvent>>>;

struct Cursor<S: ?Sized> {
    store: Arc<S>,
    head: watch::Receiver<u64>,
    committed: Option<Batches>,
    position: u64,
    buffer: VecDeque<RecordedEvent>,
    poll: Duration,
    /// The last read of the log found nothing after the position.
    caught_up: bool,
    failed: bool,
}

/// Reads `store` page by page after `after`. When caught up it waits for `head` (the last
/// position this process committed) to pass its position, or at most `poll`, which also
/// picks up appends made by other processes; this process's commits come from memory then,
/// so a live subscriber reads the log only for a gap, a backlog or another process's events.
pub fn poll_subscription<S: EventStore + ?Sized>(
    store: Arc<S>,
    head: watch::Receiver<u64>,
    committed: Option<Batches>,
    after: u64,
    poll: Duration,
) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
    let cursor = Cursor {
        store,
        head,
        committed,
        position: after,
        buffer: VecDeque::new(),
        poll,
        caught_up: false,
        failed: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        if c.failed {
            return None;
        }
        loop {
            if let Some(event) = c.buffer.pop_front() {
                c.position = event.global_position;
                return Some((Ok(event), c));
            }
            if c.take_committed() {
                continue;
            }
            // Caught up with the log and with everything this process committed: wait for its
            // next commit (taken from memory above, without asking the log) or, for other
            // processes' appends, until `poll` has passed.
            let position = c.position;
            if c.caught_up && *c.head.borrow() <= position {
                c.caught_up = false;
                let waited = tokio::time::timeout(c.poll, c.head.wait_for(|h| *h > position))
                    .await
                    .map(|moved| moved.is_ok());
                match waited {
                    Ok(true) => {
                        c.caught_up = true;
                        continue;
                    }
                    Ok(false) => tokio::time::sleep(c.poll).await,
                    Err(_) => {}
                }
            }
            match c.store.read_all(position, PAGE).await {
                Err(e) => {
                    c.failed = true;
                    return Some((Err(e), c));
                }
                Ok(page) if page.is_empty() => c.caught_up = true,
                Ok(page) => {
                    c.caught_up = false;
                    c.buffer.extend(page);
                }
            }
        }
    })
    .boxed()
}

impl<S: ?Sized> Cursor<S> {
    /// Takes the next committed batch from memory if it starts right after the position;
    /// batches at or before it are dropped. False when the log must be read instead.
    fn take_committed(&mut self) -> bool {
        let Some(rx) = self.committed.as_mut() else {
            return false;
        };
        loop {
            match rx.try_recv() {
                Ok(batch) => {
                    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                        continue;
                    };
                    if last.global_position <= self.position {
                        continue;
                    }
                    if first.global_position <= self.position + 1 {
                        // The batch reaches past the position (a page of the log may have
                        // ended inside it): take what follows the position.
                        let after = self.position;
                        self.buffer
                            .extend(batch.iter().filter(|e| e.global_position > after).cloned());
                        return true;
                    }
                    // A gap (another process's events, or batches missed): read the log.
                    return false;
                }
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return false,
            }
        }
    }
}
