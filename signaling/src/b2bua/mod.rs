//! The back-to-back user agent. Each call the edge takes runs as a task of its own that owns
//! the call's state: the caller's INVITE (answered through its server transaction), the legs
//! it places (each an INVITE client transaction, then a dialog), and the call's event stream,
//! written through the domain's `Call` commands before the caller is told (ringing, answer,
//! hangup). Messages reach the task through `Calls`, by Call-ID and the edge's own tag in
//! that dialog (a request's To tag): the caller's Call-ID with the tag the edge answers with
//! (and with no tag, for the caller's CANCEL), and each leg's Call-ID with the From tag the
//! edge gave it. The tag tells apart the two calls that share a Call-ID when a call leaves
//! through a trunk that brings it back to the edge.

pub mod attempts;
pub mod call;
pub mod call_in;
pub mod call_task;
pub mod callback;
pub mod host;
pub mod on_net;
pub mod plan;
#[cfg(test)]
mod sim;
pub mod spending;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::answer::Answer;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use crate::peer_path::PeerPath;
use crate::transaction::TransactionKey;

/// How many messages may wait for one call's task before more are dropped (UDP peers
/// retransmit; a call that far behind is stuck anyway).
pub const INPUT_QUEUE: usize = 64;

/// What a call's task is told.
#[derive(Debug)]
pub enum CallInput {
    /// What became of a request the call sent: toward leg `leg`, or toward the caller (None).
    Outcome {
        leg: Option<usize>,
        key: ClientKey,
        outcome: Outcome,
    },
    /// The caller's CANCEL (the edge has answered it 200).
    Cancel,
    /// An ACK inside one of the call's dialogs (the caller's, for the edge's 2xx).
    Ack(RawMessage),
    /// A BYE inside one of the call's dialogs; its answer goes back on the channel.
    Bye(RawMessage, oneshot::Sender<Answer>),
    /// A re-INVITE or an UPDATE inside one of the call's dialogs (its server transaction,
    /// answered by the call): a session refresh (RFC 4028), or a change of session (hold,
    /// resume, a new address or codec) passed on to the other side.
    Modify {
        key: TransactionKey,
        request: RawMessage,
    },
    /// The user's extension calling in to take this call (alternate path (b)).
    CallIn(Arrival),
    /// A REFER inside one of the call's dialogs (its server transaction, answered by the
    /// call): a transfer.
    Refer {
        key: TransactionKey,
        request: RawMessage,
    },
    /// Another call asks to be joined with this one (attended transfer); the answer goes back
    /// on the channel.
    JoinAsked(
        call::JoinAsk,
        oneshot::Sender<Result<call::Partner, Answer>>,
    ),
    /// The call this one was joined with ended.
    PartnerEnded,
    /// The edge is shutting down: end the call now (hang up both sides of an answered call,
    /// refuse one still ringing), record why, and finish once the hangups are answered.
    Shutdown,
    /// A key the caller pressed (the access-number menu): from the call's own media
    /// endpoint, or a SIP INFO in the caller's dialog (answered 200 by the edge).
    Key {
        way: crate::media::dtmf::keys::Way,
        key: char,
        /// The INFO's CSeq number (keys by INFO are taken in that order).
        cseq: Option<u32>,
        /// The INFO's Call-ID (a key counts only from the dialog being keyed in).
        call_id: Option<String>,
    },
}

/// A carrier's INVITE that is the awaited call-in, handed to the waiting call.
#[derive(Debug)]
pub struct Arrival {
    /// Its server transaction, answered by the call.
    pub key: TransactionKey,
    pub invite: RawMessage,
    pub path: PeerPath,
    /// The To tag the edge answers it with.
    pub tag: String,
}

/// A Call-ID and the edge's tag in that dialog ("" before the edge has answered).
pub type DialogKey = (String, String);

pub fn dialog_key(call_id: &str, local_tag: &str) -> DialogKey {
    (call_id.to_string(), local_tag.to_string())
}

/// Live calls by the dialogs their messages belong to, and the tasks that run them.
#[derive(Default)]
pub struct Calls {
    by_dialog: Mutex<HashMap<DialogKey, mpsc::Sender<CallInput>>>,
    tasks: Arc<Tasks>,
}

/// Every call task running, so a shutdown reaches each once.
#[derive(Default)]
struct Tasks {
    next: AtomicU64,
    running: Mutex<HashMap<u64, mpsc::Sender<CallInput>>>,
}

/// A call task's place among the running ones, given back when the task ends (dropped).
pub struct Enlisted {
    tasks: Arc<Tasks>,
    id: u64,
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        self.tasks
            .running
            .lock()
            .expect("call tasks")
            .remove(&self.id);
    }
}

impl Calls {
    /// Counts a call task as running until the returned guard is dropped.
    pub fn enlist(&self, tx: mpsc::Sender<CallInput>) -> Enlisted {
        let id = self.tasks.next.fetch_add(1, Ordering::Relaxed);
        self.tasks
            .running
            .lock()
            .expect("call tasks")
            .insert(id, tx);
        Enlisted {
            tasks: self.tasks.clone(),
            id,
        }
    }

    /// Call tasks running (lingering ones included).
    pub fn running(&self) -> usize {
        self.tasks.running.lock().expect("call tasks").len()
    }

    /// Tells every running call task that the edge is shutting down.
    pub async fn shut_down_all(&self) {
        let tasks: Vec<_> = self
            .tasks
            .running
            .lock()
            .expect("call tasks")
            .values()
            .cloned()
            .collect();
        for tx in tasks {
            // Waits for room rather than dropping: every call must hear it.
            let _ = tx.send(CallInput::Shutdown).await;
        }
    }

    pub fn register(&self, key: DialogKey, tx: mpsc::Sender<CallInput>) {
        self.lock().insert(key, tx);
    }

    pub fn forget(&self, key: &DialogKey) {
        self.lock().remove(key);
    }

    pub fn contains(&self, key: &DialogKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Hands `input` to the call of this dialog; false when there is none (or it is too far
    /// behind to take more).
    pub fn deliver(&self, key: &DialogKey, input: CallInput) -> bool {
        let tx = self.lock().get(key).cloned();
        tx.is_some_and(|tx| tx.try_send(input).is_ok())
    }

    /// Dialog keys of calls in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DialogKey, mpsc::Sender<CallInput>>> {
        self.by_dialog.lock().expect("calls")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_running_call_hears_the_shutdown_once_and_leaves_the_count_when_it_ends() {
        let calls = Calls::default();
        let (tx1, mut rx1) = mpsc::channel(INPUT_QUEUE);
        let (tx2, mut rx2) = mpsc::channel(INPUT_QUEUE);
        let first = calls.enlist(tx1.clone());
        let second = calls.enlist(tx2);
        // One call answers to several dialogs, but is one task.
        calls.register(dialog_key("a", ""), tx1.clone());
        calls.register(dialog_key("a", "tag"), tx1);
        assert_eq!(calls.running(), 2);
        calls.shut_down_all().await;
        for rx in [&mut rx1, &mut rx2] {
            assert!(matches!(rx.try_recv(), Ok(CallInput::Shutdown)));
            assert!(rx.try_recv().is_err(), "told twice");
        }
        drop(first);
        assert_eq!(calls.running(), 1);
        drop(second);
        assert_eq!(calls.running(), 0);
    }
}
