//! One call's state, sans IO: the caller's side (the INVITE the edge answers) and the legs
//! the edge places. The first leg to answer wins; the others are cancelled (or, answering too
//! late, ACKed and hung up). Each step is recorded in the call's stream before the caller
//! hears of it.
//!
//! [`Call`] holds no socket, no timer and no task: it takes an [`Input`] (a message from a
//! leg, the caller's CANCEL, a command such as "the edge is shutting down", the result of a
//! recording it asked for) together with `now`, and answers with [`Output`]s (record this,
//! send that on a leg, answer the caller) and the next instant it wants to be woken at
//! ([`Call::next_timeout`]). The call task (`call_task.rs`) carries the outputs out, in
//! order. An output that records a step the call cannot go on without (`Record` with
//! `awaited`, `UseDialIntent`) is the last of its batch: the task records it and hands the
//! result back as [`Input::Recorded`], and only then does the call go on (or, refused,
//! unwind).

mod machine;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use domain::E164;
use domain::call::{CallCommand, EndCause};
use domain::device::Transport;
use domain::extension::Extension;
use domain::ids::ExtensionId;
use infra::command::CommandError;

use super::DialogKey;
use crate::answer::Answer;
use crate::dialog::{Dialog, Hop};
use crate::media::relay::Side as RelaySide;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use crate::requests;
use crate::transaction::TransactionKey;

pub use machine::Call;

/// How the edge reaches a peer, as far as the call needs to know: where, and over which
/// transport (`UDP` or `TCP`, as a Via names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub peer: SocketAddr,
    pub transport: &'static str,
}

impl Reach {
    /// Whether the transport delivers reliably (a 2xx need not be repeated).
    pub fn is_reliable(&self) -> bool {
        self.transport != "UDP"
    }
}

/// The caller's side of the call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The server transaction of the caller's INVITE.
    pub key: TransactionKey,
    pub invite: RawMessage,
    /// Where the caller is.
    pub reach: Reach,
    /// The To tag the edge answers with.
    pub tag: String,
}

/// A carrier's INVITE that is the awaited call-in.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Its server transaction, answered by the call.
    pub key: TransactionKey,
    pub invite: RawMessage,
    pub reach: Reach,
    /// The To tag the edge answers it with.
    pub tag: String,
}

/// The call's media relay: the address and ports the session descriptions are pointed at,
/// and how long media may stop before the call is ended.
#[derive(Debug, Clone, Copy)]
pub struct MediaPorts {
    pub address: IpAddr,
    /// The port facing the caller.
    pub caller_port: u16,
    /// The port facing the callee.
    pub callee_port: u16,
    pub timeout: Duration,
}

impl MediaPorts {
    pub(crate) fn port(&self, side: RelaySide) -> u16 {
        match side {
            RelaySide::Caller => self.caller_port,
            RelaySide::Callee => self.callee_port,
        }
    }
}

/// What the call is set up with besides its plan.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The edge running the call (`call.started` names it).
    pub edge_id: uuid::Uuid,
    /// The longest the call rings (the account's ring timeout, capped by the edge's).
    pub ring: Duration,
    /// The longest a call-in is waited for (`sip.call_in_timeout_secs`).
    pub call_in: Duration,
    /// The longest an answered call lasts.
    pub max_duration: Duration,
    /// The relay, when the edge relays the call's media.
    pub media: Option<MediaPorts>,
    /// The edge is already shutting down: the call is refused.
    pub draining: bool,
    /// Call-in notices also go to a webhook.
    pub call_in_webhook: bool,
}

/// What the call asks of the edge it runs on, answered at once (no IO behind it that the call
/// would wait for).
pub trait Context {
    /// The address requests leave from (Via sent-by, Contact).
    fn local(&self) -> SocketAddr;
    /// Whether, and how, the edge can reach `to` over `transport` now.
    fn reach(&self, to: SocketAddr, transport: Transport) -> Option<Reach>;
    /// The extension as the routing view has it now (it may have been removed since the call
    /// began), if `number` is still this extension's.
    fn extension_now(&self, id: ExtensionId, number: &E164) -> Option<Extension>;
    /// Makes this call the one an extension's call-in to `access` from `number` reaches;
    /// false when another call waits for that already.
    fn wait_call_in(&self, access: &E164, number: &E164) -> bool;
}

/// Why a recording the call waited for did not happen: the domain refused the step (its
/// reason), or the store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Domain(String),
    Store,
}

impl From<CommandError> for Refusal {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(why) => Refusal::Domain(why.to_string()),
            _ => Refusal::Store,
        }
    }
}

/// What the call is told.
#[derive(Debug)]
pub enum Input {
    /// What became of a request the call sent: toward leg `leg`, or toward the caller (None).
    Outcome {
        leg: Option<usize>,
        key: ClientKey,
        outcome: Outcome,
    },
    /// The caller's CANCEL (the edge has answered it 200).
    Cancel,
    /// An ACK inside one of the call's dialogs.
    Ack(RawMessage),
    /// A BYE inside one of the call's dialogs; answered with [`Output::ByeAnswer`].
    Bye(RawMessage),
    /// The user's extension calling in to take this call (alternate path (b)).
    CallIn(Arrival),
    /// The edge is shutting down: end the call now.
    Shutdown,
    /// The result of the awaited recording the call asked for last.
    Recorded(Result<(), Refusal>),
}

/// Who a request inside a dialog goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Caller,
    Leg(usize),
}

/// What the call asks to be done, in this order.
#[derive(Debug)]
pub enum Output {
    /// Append `command` to the call's stream. When `awaited`, the call goes on only once
    /// [`Input::Recorded`] brings the result (and nothing follows it in this batch).
    Record {
        command: Box<CallCommand>,
        awaited: bool,
    },
    /// Take the extension's dial intent for this call (awaited, as above).
    UseDialIntent {
        extension_id: ExtensionId,
        intent_id: uuid::Uuid,
    },
    /// Answer a request through its server transaction, with the edge's To tag.
    Respond {
        key: TransactionKey,
        request: RawMessage,
        answer: Answer,
        tag: String,
    },
    /// Send a new leg's INVITE (a client transaction) to `to` over `transport`.
    Invite {
        leg: usize,
        to: SocketAddr,
        transport: Transport,
        key: ClientKey,
        request: RawMessage,
    },
    /// CANCEL a leg's INVITE.
    Cancel { leg: usize, invite: RawMessage },
    /// Send an ACK on a leg (no transaction).
    Ack { leg: usize, bytes: Vec<u8> },
    /// Send a request inside a dialog (a BYE) as a client transaction.
    Request {
        to: Peer,
        method: &'static str,
        branch: String,
        bytes: Vec<u8>,
    },
    /// Answer the BYE the call was just given.
    ByeAnswer(Answer),
    /// Tell a device where to call in (a MESSAGE, as a client transaction).
    Notice {
        to: SocketAddr,
        transport: Transport,
        key: ClientKey,
        request: RawMessage,
    },
    /// Post a call-in notice to the operator's webhook (the task adds `expires_at`, `ttl`
    /// from now by the wall clock).
    Webhook {
        notice: serde_json::Value,
        ttl: Duration,
    },
    /// Where one side of the relay sends its media, from its session description, and the IP
    /// that description came from.
    MediaPeer {
        side: RelaySide,
        rtp: SocketAddr,
        from: IpAddr,
    },
    /// Leg `leg` is the call-in just given: it is reached where its INVITE came from.
    AdoptArrival { leg: usize },
    /// Messages of this dialog are the call's.
    Register(DialogKey),
    /// ... no longer.
    Forget(DialogKey),
    /// The call no longer waits for a call-in from `number` to `access`.
    ForgetCallIn { access: E164, number: E164 },
    /// The call is over: its media ports and its hold on the account go back now.
    Release,
}

/// How long a finished call still answers late responses (a leg answering after it was
/// cancelled is ACKed and hung up): Timer B's span.
pub const LINGER: Duration = Duration::from_secs(32);

/// How often a call awaiting a call-in checks that the extension still serves.
const CALL_IN_RECHECK: Duration = Duration::from_secs(1);

/// The shortest a call-in is waited for: less leaves the user no time to dial.
const MIN_CALL_IN_WAIT: Duration = Duration::from_secs(5);

/// How long a call waits for the extension to call in, with `ring_left` before the call
/// ends unanswered: `configured` (`sip.call_in_timeout_secs`), but never more than half the
/// ring time left, so that calling the extension out instead still has as long to ring; none
/// when that leaves less than `MIN_CALL_IN_WAIT` (the extension is called out at once).
pub(super) fn call_in_wait(configured: Duration, ring_left: Duration) -> Option<Duration> {
    // In whole seconds (ring_left is a hair under the account's setting by the time the call
    // gets here): the user is told "within N s".
    let ring_left = Duration::from_secs(ring_left.as_millis().div_ceil(1000) as u64);
    Some(configured.min(ring_left / 2)).filter(|w| *w >= MIN_CALL_IN_WAIT)
}

/// A BYE inside `dialog` from the edge (`local`) over `transport`, and its branch.
pub(super) fn bye_in(dialog: &mut Dialog, transport: &str, local: &str) -> (Vec<u8>, String) {
    let branch = requests::branch();
    let bye = dialog.request(
        "BYE",
        None,
        Hop {
            transport,
            sent_by: local,
            branch: &branch,
        },
        &[],
        &[],
    );
    (bye, branch)
}

pub(crate) fn status_of(response: &RawMessage) -> Option<u16> {
    response.start_line.split(' ').nth(1)?.parse().ok()
}

fn content_type(message: &RawMessage) -> String {
    message
        .header("Content-Type")
        .unwrap_or("application/sdp")
        .to_string()
}

/// What the caller hears when every leg failed (after RFC 3261 §16.7's choice of the best
/// response): a global refusal (6xx) or busy first, then the lowest status; a leg that never
/// answered reads as no answer.
pub(super) fn caller_failure(statuses: &[u16]) -> (Answer, EndCause) {
    if let Some(&s) = statuses.iter().find(|s| **s >= 600) {
        return (Answer::status(s), EndCause::Rejected);
    }
    if statuses.contains(&486) {
        return (Answer::status(486), EndCause::Busy);
    }
    match statuses.iter().copied().filter(|s| *s != 408).min() {
        Some(s) => (Answer::status(s), EndCause::Rejected),
        None => (
            Answer::with_reason(480, "Temporarily Unavailable (no answer)"),
            EndCause::NoAnswer,
        ),
    }
}
