//! What passes between a call and the task that runs it: the inputs the call takes, the
//! outputs it asks for, what it is set up with, and what it may ask of the edge at once.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use domain::E164;
use domain::account::Account;
use domain::call::CallCommand;
use domain::device::Transport;
use domain::extension::Extension;
use domain::ids::{AccountId, CallId, ExtensionId};
use infra::command::CommandError;

use crate::answer::Answer;
use crate::b2bua::DialogKey;
use crate::b2bua::plan::Target;
use crate::media::dtmf::keys::Way;
use crate::media::keypad::Sound;
use crate::media::relay::Side as RelaySide;
use crate::media::sdp::Agreed;
use crate::media::tones::Country;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use crate::transaction::TransactionKey;

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
    /// An extension calling through a carrier may transfer its calls
    /// (`sip.allow_extension_transfer`).
    pub extension_transfers: bool,
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
    /// The leg toward `number` that `account`'s phone at `phone` (or its extension) asks for
    /// (a transfer, a destination keyed in at the access-number menu), with its place among
    /// the account's calls in progress taken and its first increment reserved (given back
    /// when the call is over); the refusal (the fraud controls', a cap's, no trunk) otherwise.
    fn outbound_leg(
        &self,
        account: &Account,
        extension: Option<&Extension>,
        number: &E164,
        phone: SocketAddr,
    ) -> Result<Target, Answer>;
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

/// What one of two calls being joined (attended transfer) tells the other: who it is, how its
/// task is reached, where its relay takes the other's media, and the session of the party
/// that stays in it.
#[derive(Debug, Clone)]
pub struct Partner {
    pub call: CallId,
    /// The dialog of the party leaving it: messages to that key reach its task.
    pub dialog: DialogKey,
    /// Its relay's port that faced the leaving party, where the other call's media now goes.
    pub media: SocketAddr,
    /// The session description last heard from the party that stays.
    pub session: Vec<u8>,
}

/// A call's ask of another to be joined with it: the leaving party's dialog in the other call
/// (the `Replaces` of its REFER: the edge's tag as `to-tag`, the party's as `from-tag`), the
/// account both must be billed to, and the asking call as the other's partner.
#[derive(Debug, Clone)]
pub struct JoinAsk {
    pub dialog: DialogKey,
    pub from_tag: String,
    pub account: Option<AccountId>,
    pub partner: Partner,
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
    /// A re-INVITE or an UPDATE inside one of the call's dialogs, through its server
    /// transaction.
    Modify {
        key: TransactionKey,
        request: RawMessage,
    },
    /// The user's extension calling in to take this call (alternate path (b)).
    CallIn(Arrival),
    /// A REFER inside one of the call's dialogs (a transfer), through its server transaction.
    Refer {
        key: TransactionKey,
        request: RawMessage,
    },
    /// Another call asks to be joined with this one; answered with [`Output::JoinAnswer`].
    JoinAsked(JoinAsk),
    /// The other call's answer to this call's [`Output::AskJoin`].
    JoinAnswered(Result<Partner, Answer>),
    /// The call this one was joined with ended.
    PartnerEnded,
    /// The edge is shutting down: end the call now.
    Shutdown,
    /// The result of the awaited recording the call asked for last.
    Recorded(Result<(), Refusal>),
    /// A key pressed, and how it came (the access-number menu, a call-in keying its token);
    /// by SIP INFO, the INFO's CSeq number and Call-ID (keys heard in the media come from the
    /// side the edge's endpoint listens to).
    Key {
        way: Way,
        key: char,
        cseq: Option<u32>,
        call_id: Option<String>,
    },
    /// What the extension's stream said of the PIN the call asked to check.
    PinChecked(PinCheck),
}

/// The outcome of a PIN keyed in at the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    Accepted,
    /// Wrong; `locked`: that was one too many.
    Refused {
        locked: bool,
    },
    /// Keypad access was locked already.
    Locked,
    /// Not checked (the extension no longer serves, the store failed).
    Failed,
}

/// A PIN in clear, on its way to be checked: never shown in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(pub String);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// What the edge's own endpoint on one side of the relay is to do (the access-number menu
/// on the caller's side; a call-in keying its token on the callee's).
#[derive(Debug, Clone, Copy)]
pub enum KeypadCue {
    /// Take `side`'s media: listen for keys, play `sounds` (in `country`'s tones).
    Open {
        side: RelaySide,
        agreed: Agreed,
        country: Country,
        sounds: &'static [Sound],
    },
    /// Play `sounds` instead (none: silence).
    Play(&'static [Sound]),
    /// Give the side's media back to the relay.
    Close,
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
    /// Check a PIN keyed in at the menu on the extension's stream; the call goes on only with
    /// [`Input::PinChecked`] (the last output of a batch, as an awaited recording).
    CheckPin {
        extension_id: ExtensionId,
        pin: Pin,
        account: Box<Account>,
    },
    /// The edge's own endpoint on a side of the relay (keys heard, tones played).
    Keypad(KeypadCue),
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
    /// Send an ACK (of a 2xx: no transaction) to a side.
    Ack { to: Peer, bytes: Vec<u8> },
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
    /// Whether media may go to one side of the relay (closed while the call is on hold that
    /// way).
    MediaFlow { to: RelaySide, open: bool },
    /// Leg `leg` is the call-in just given: it is reached where its INVITE came from.
    AdoptArrival { leg: usize },
    /// Leg `leg` took the caller's place (the caller transferred the call to it): requests to
    /// the caller go where that leg is.
    CallerIs { leg: usize },
    /// Ask the call that has the dialog `ask.dialog` to be joined with this one; the call
    /// goes on only with [`Input::JoinAnswered`] (the last output of a batch, as an awaited
    /// recording).
    AskJoin(Box<JoinAsk>),
    /// Answer the join the call was just asked for.
    JoinAnswer(Result<Partner, Answer>),
    /// Tell the call joined with this one (reached by its dialog) that this one ended.
    TellPartner(DialogKey),
    /// Messages of this dialog are the call's.
    Register(DialogKey),
    /// ... no longer.
    Forget(DialogKey),
    /// The call no longer waits for a call-in from `number` to `access`.
    ForgetCallIn { access: E164, number: E164 },
    /// The call is over: its media ports and its hold on the account go back now.
    Release,
}

/// The outputs a call has asked for and not yet handed over, in order.
#[derive(Debug, Default)]
pub struct Outbox(Vec<Output>);

impl Outbox {
    pub fn push(&mut self, output: Output) {
        self.0.push(output);
    }

    pub fn extend(&mut self, outputs: impl IntoIterator<Item = Output>) {
        self.0.extend(outputs);
    }

    /// Appends `command` to the call's stream, not waited for.
    pub fn record(&mut self, command: CallCommand) {
        self.push(Output::Record {
            command: Box::new(command),
            awaited: false,
        });
    }

    /// Appends `command`; the call goes on only with its result (the last output of a batch).
    pub fn record_awaited(&mut self, command: CallCommand) {
        self.push(Output::Record {
            command: Box::new(command),
            awaited: true,
        });
    }

    /// Everything asked so far, handed over.
    pub fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.0)
    }
}

/// How long a finished call still answers late responses (a leg answering after it was
/// cancelled is ACKed and hung up): Timer B's span.
pub const LINGER: Duration = Duration::from_secs(32);

/// How often a call awaiting a call-in checks that the extension still serves.
pub const CALL_IN_RECHECK: Duration = Duration::from_secs(1);

/// A call's state machine as its task drives it: the call an INVITE starts ([`super::Call`])
/// and the callback the edge places itself both are one.
pub trait Machine: Send {
    fn id(&self) -> CallId;
    /// Its first steps.
    fn start(&mut self, now: Instant) -> Vec<Output>;
    fn handle(&mut self, input: Input, now: Instant, ctx: &dyn Context) -> Vec<Output>;
    /// Time has come to `now` (the relay silent for `media_idle`).
    fn on_timeout(
        &mut self,
        now: Instant,
        media_idle: Option<Duration>,
        ctx: &dyn Context,
    ) -> Vec<Output>;
    /// When it next wants [`Machine::on_timeout`].
    fn next_timeout(&self, now: Instant, media_idle: Option<Duration>) -> Option<Instant>;
    /// Over, and no longer waiting for late answers (or, shutting down, for its hangups and
    /// cancels to be answered).
    fn is_done(&self, now: Instant) -> bool;
    /// Every dialog it has been registered under (forgotten when its task ends).
    fn dialogs(&self) -> &[DialogKey];
}
