//! Catch-up-then-live subscriptions over `read_all`, woken by the writer's head position.
//! Because every backend makes positions visible only in order, reading after the last
//! delivered position never skips an event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;

use super::{EventStore, RecordedEvent, StoreError};

const PAGE: usize = 512;

struct Cursor<S: ?Sized> {
    store: Arc<S>,
    head: watch::Receiver<u64>,
    position: u64,
    buffer: VecDeque<RecordedEvent>,
    poll: Duration,
    failed: bool,
}

/// Reads `store` page by page after `after`. When caught up it waits for `head` (the last
/// position this process committed) to pass its position, or at most `poll`, which also
/// picks up appends made by other processes.
pub fn poll_subscription<S: EventStore + ?Sized>(
    store: Arc<S>,
    head: watch::Receiver<u64>,
    after: u64,
    poll: Duration,
) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
    let cursor = Cursor {
        store,
        head,
        position: after,
        buffer: VecDeque::new(),
        poll,
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
            match c.store.read_all(c.position, PAGE).await {
                Err(e) => {
                    c.failed = true;
                    return Some((Err(e), c));
                }
                Ok(page) if page.is_empty() => {
                    let position = c.position;
                    let writer_gone = matches!(
                        tokio::time::timeout(c.poll, c.head.wait_for(|h| *h > position)).await,
                        Ok(Err(_))
                    );
                    if writer_gone {
                        tokio::time::sleep(c.poll).await;
                    }
                }
                Ok(page) => c.buffer.extend(page),
            }
        }
    })
    .boxed()
}
