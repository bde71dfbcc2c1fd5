//! The back-to-back user agent. Each call the edge takes runs as a task of its own that owns
//! the call's state: the caller's INVITE (answered through its server transaction), the legs
//! it places (each an INVITE client transaction, then a dialog), and the call's event stream,
//! written through the domain's `Call` commands before the caller is told (ringing, answer,
//! hangup). Messages reach the task through `Calls`, by Call-ID: the caller's, and the ones
//! the edge made up for its legs.

pub mod call;
pub mod plan;
pub mod requests;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use crate::answer::Answer;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};

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
}

/// Live calls by the Call-IDs their messages carry.
#[derive(Default)]
pub struct Calls {
    by_call_id: Mutex<HashMap<String, mpsc::Sender<CallInput>>>,
}

impl Calls {
    pub fn register(&self, call_id: &str, tx: mpsc::Sender<CallInput>) {
        self.lock().insert(call_id.to_string(), tx);
    }

    pub fn forget(&self, call_id: &str) {
        self.lock().remove(call_id);
    }

    pub fn contains(&self, call_id: &str) -> bool {
        self.lock().contains_key(call_id)
    }

    /// Hands `input` to the call with this Call-ID; false when there is none (or it is too
    /// far behind to take more).
    pub fn deliver(&self, call_id: &str, input: CallInput) -> bool {
        let tx = self.lock().get(call_id).cloned();
        tx.is_some_and(|tx| tx.try_send(input).is_ok())
    }

    /// Calls in progress (each counted once per Call-ID it answers to).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<CallInput>>> {
        self.by_call_id.lock().expect("calls")
    }
}
