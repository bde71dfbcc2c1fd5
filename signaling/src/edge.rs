//! The edge: what happens to each message the transports receive. Requests go through their
//! server transaction (retransmissions are absorbed or answered from it, never handled
//! twice), then to the handler of their method; responses are sent through the transaction
//! and kept there for retransmission until its timers end it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::device::Transport;
use infra::EventStore;
use rsip::headers::UntypedHeader;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::answer::Answer;
use crate::auth::Authenticator;
use crate::b2bua::attempts::Attempts;
use crate::b2bua::call_in::CallIns;
use crate::b2bua::call_task::{self, Caller};
use crate::b2bua::host::{CallHost, CallTimes};
use crate::b2bua::on_net::OnNet;
use crate::b2bua::spending::{CallLimits, Spending};
use crate::b2bua::{Arrival, CallInput, Calls, DialogKey, INPUT_QUEUE, dialog_key, plan};
use crate::deadlines::{Deadlines, Slot};
use crate::media::Media;
use crate::message::{self, ALLOW, Message, ParseError, RawMessage, header};
use crate::outgoing::Outgoing;
use crate::peer_path::PeerPath;
use crate::registrar::Registrar;
use crate::transaction::{ServerKind, ServerTransaction, TimerOutput, TransactionKey};
use crate::transport::connections::{Connections, TcpLimits};
use crate::trunk::Trunks;
use crate::view::SharedView;

/// Responses larger than this are sent but not kept for retransmission (only a request
/// stuffed with Via or other echoed headers yields one).
const RETAIN_AT_MOST: usize = 8 * 1024;
/// Bytes of responses kept for retransmission, at most, across all server transactions
/// (config `security.kept_responses_max_mb`); past it, new responses are sent but not kept,
/// so a flood cannot make the edge hold its answers for Timer J's 32 s.
#[derive(Debug, Clone)]
pub struct KeptResponses {
    pub max_bytes: usize,
}

impl Default for KeptResponses {
    fn default() -> Self {
        Self {
            max_bytes: 128 * 1024 * 1024,
        }
    }
}
/// Kilobytes of received messages being handled at once, at most: past it the receive loops
/// wait (and the kernel's socket buffer drops what it cannot hold), so a flood of large
/// messages cannot pile up in memory.
pub const IN_FLIGHT_KB: usize = 32 * 1024;

/// How long a BYE waits for its call to record the end before it is answered 500.
const BYE_ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What the edge counts (reported in `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub refused: AtomicU64,
    pub retransmissions_absorbed: AtomicU64,
    /// Responses sent but not kept for retransmission (too large, or over the budget).
    pub responses_not_kept: AtomicU64,
    /// Calls refused by the fraud controls, by cause.
    pub calls_refused: CallRefusals,
    /// Calls of a lost edge this edge ended (`edge_lost`).
    pub calls_recovered: AtomicU64,
    /// Calls hung up while draining (`edge_shutdown`).
    pub calls_drained: AtomicU64,
    /// Calls hung up at the longest a call may last (`max_duration`).
    pub calls_at_max_duration: AtomicU64,
    /// Calls hung up because a session timer ran out (`session_expired`).
    pub calls_session_expired: AtomicU64,
}

impl Stats {
    /// Counts a call the edge ended itself, for the causes an operator watches.
    pub(crate) fn count_end(&self, cause: domain::call::EndCause) {
        use domain::call::EndCause as C;
        let counter = match cause {
            C::EdgeShutdown => &self.calls_drained,
            C::MaxDuration => &self.calls_at_max_duration,
            C::SessionExpired => &self.calls_session_expired,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Calls the fraud controls refused (each also a `call.ended` with its cause), by cause.
#[derive(Debug, Default)]
pub struct CallRefusals {
    rejected: AtomicU64,
    spend_limit: AtomicU64,
    no_rate: AtomicU64,
}

impl CallRefusals {
    fn count(&self, cause: domain::call::EndCause) {
        use domain::call::EndCause as C;
        let counter = match cause {
            C::SpendLimit => &self.spend_limit,
            C::NoRate => &self.no_rate,
            _ => &self.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// By cause: `rejected` (blocked destination, too many calls), `spend_limit`, `no_rate`.
    pub fn by_cause(&self) -> [(&'static str, u64); 3] {
        [
            ("rejected", self.rejected.load(Ordering::Relaxed)),
            ("spend_limit", self.spend_limit.load(Ordering::Relaxed)),
            ("no_rate", self.no_rate.load(Ordering::Relaxed)),
        ]
    }
}

struct Entry {
    tx: ServerTransaction,
    reply: PeerPath,
    deadline: Slot,
}

#[derive(Default)]
struct Transactions {
    by_key: HashMap<TransactionKey, Entry>,
    deadlines: Deadlines<TransactionKey>,
}

/// The server transactions, in shards by key: each shard's table stays small, so growing one
/// never stalls the edge (a single table of the ~500,000 transactions that 8,000 REGISTERs/s
/// keep for Timer J took long enough to grow that SIPp retransmitted), and requests on the two
/// cores rarely wait for the same lock.
struct TransactionShards {
    shards: Box<[Mutex<Transactions>]>,
    hasher: std::hash::RandomState,
}

const TRANSACTION_SHARDS: usize = 64;

impl Default for TransactionShards {
    fn default() -> Self {
        Self {
            shards: (0..TRANSACTION_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl TransactionShards {
    fn lock(&self, key: &TransactionKey) -> std::sync::MutexGuard<'_, Transactions> {
        use std::hash::BuildHasher;
        let shard = self.hasher.hash_one(key) as usize % self.shards.len();
        self.shards[shard].lock().expect("transactions")
    }
}

impl Transactions {
    fn reschedule(&mut self, key: &TransactionKey) {
        let Some(entry) = self.by_key.get_mut(key) else {
            return;
        };
        self.deadlines
            .schedule(&mut entry.deadline, entry.tx.poll_timeout(), key);
    }
}

/// What the edge is made of besides its handlers' state.
pub struct Parts {
    pub store: Arc<dyn EventStore>,
    pub view: SharedView,
    pub registrar: Registrar,
    pub auth: Arc<Authenticator>,
    pub trunks: Trunks,
    pub actor: String,
    /// The UDP socket requests from the edge leave on, and its address (sent-by, Contact).
    pub udp: Arc<UdpSocket>,
    pub local: SocketAddr,
    /// How long a call rings before it ends unanswered.
    pub ring_timeout: Duration,
    pub call_in_timeout: Duration,
    pub call_in_webhook: Option<Arc<infra::delivery::Webhook>>,
    /// The RTP relay; `None`: session descriptions pass through and media flows end to end.
    pub media: Option<Arc<Media>>,
    pub tcp_limits: TcpLimits,
    pub call_limits: CallLimits,
    pub kept_responses: KeptResponses,
    pub allow_unrated_calls: bool,
    /// An extension without a PIN may key a destination at the access-number menu.
    pub keypad_without_pin: bool,
    /// Call-ins are matched on the carrier's caller ID alone (no token proved).
    pub call_in_trusts_caller_id: bool,
    /// Extensions calling through a carrier may transfer their calls.
    pub extension_transfers: bool,
    /// The longest an answered call lasts.
    pub max_call_duration: Duration,
}

pub struct Edge {
    /// This edge process (a new id each start): calls name it, its liveness is stream
    /// `edge-{id}`.
    pub id: uuid::Uuid,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) view: SharedView,
    registrar: Registrar,
    auth: Arc<Authenticator>,
    pub(crate) trunks: Trunks,
    pub(crate) actor: String,
    udp: Arc<UdpSocket>,
    pub(crate) local: SocketAddr,
    pub(crate) ring_timeout: Duration,
    pub(crate) call_in_timeout: Duration,
    pub(crate) call_in_webhook: Option<Arc<infra::delivery::Webhook>>,
    pub(crate) media: Option<Arc<Media>>,
    transactions: TransactionShards,
    pub(crate) outgoing: Outgoing,
    pub(crate) calls: Calls,
    /// Calls waiting for an extension to call in.
    pub(crate) call_ins: CallIns,
    /// Call-through attempts per caller (a fraud control).
    attempts: Attempts,
    /// Calls to destinations with no price are placed (and listed unrated), not refused.
    allow_unrated_calls: bool,
    keypad_without_pin: bool,
    call_in_trusts_caller_id: bool,
    extension_transfers: bool,
    pub(crate) max_call_duration: Duration,
    /// Shutting down: new calls are refused while the ones in progress are ended.
    draining: std::sync::atomic::AtomicBool,
    /// Calls in progress and their reservations against daily limits (a fraud control).
    pub spending: Arc<Spending>,
    /// Calls to the service's own numbers, routed through the edge itself.
    on_net: OnNet,
    /// Open TCP connections by the peer's address: how the edge reaches a device registered
    /// over TCP (RFC 5626's connection reuse, without its flow tokens).
    connections: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    pub(crate) tcp_limits: TcpLimits,
    /// Open TCP connections, counted against `tcp_limits`.
    pub tcp_connections: Arc<Connections>,
    /// Bytes of responses kept in server transactions (against `retained_budget`).
    retained: AtomicUsize,
    retained_budget: usize,
    /// Received messages being handled, in kilobytes (against `IN_FLIGHT_KB`).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    pub stats: Stats,
}

impl Edge {
    pub fn new(parts: Parts) -> Arc<Self> {
        Arc::new(Self {
            id: uuid::Uuid::now_v7(),
            store: parts.store,
            view: parts.view,
            registrar: parts.registrar,
            auth: parts.auth,
            trunks: parts.trunks,
            actor: parts.actor,
            udp: parts.udp,
            local: parts.local,
            ring_timeout: parts.ring_timeout,
            call_in_timeout: parts.call_in_timeout,
            call_in_webhook: parts.call_in_webhook,
            media: parts.media,
            transactions: TransactionShards::default(),
            outgoing: Outgoing::default(),
            calls: Calls::default(),
            call_ins: CallIns::default(),
            attempts: Attempts::default(),
            allow_unrated_calls: parts.allow_unrated_calls,
            call_in_trusts_caller_id: parts.call_in_trusts_caller_id,
            keypad_without_pin: parts.keypad_without_pin,
            extension_transfers: parts.extension_transfers,
            max_call_duration: parts.max_call_duration,
            draining: std::sync::atomic::AtomicBool::new(false),
            spending: Spending::new(parts.call_limits),
            on_net: OnNet::new(parts.local),
            connections: Mutex::default(),
            tcp_limits: parts.tcp_limits,
            tcp_connections: Arc::default(),
            retained: AtomicUsize::new(0),
            retained_budget: parts.kept_responses.max_bytes,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_KB)),
            stats: Stats::default(),
        })
    }

    /// What the operator allows when calls are planned.
    pub(crate) fn policy(&self) -> plan::Policy {
        plan::Policy {
            call_in_webhook: self.call_in_webhook.is_some(),
            allow_unrated_calls: self.allow_unrated_calls,
            call_in_trusts_caller_id: self.call_in_trusts_caller_id,
            extension_transfers: self.extension_transfers,
            keypad_without_pin: self.keypad_without_pin,
        }
    }

    /// Whether the edge is shutting down (new calls are refused).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Shutting down: refuses new calls (503), ends every call in progress (BYE to both sides
    /// of an answered one, recorded with cause `edge_shutdown`), and waits up to `within` for
    /// their tasks to finish. Returns how many were still running at the deadline (their
    /// calls are left to the lost-call recovery of the next edge to look).
    pub async fn drain(&self, within: Duration) -> usize {
        self.draining.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + within;
        let running = self.calls.running();
        if running > 0 {
            tracing::info!(calls = running, "draining: ending the calls in progress");
        }
        let _ = tokio::time::timeout_at(deadline.into(), self.calls.shut_down_all()).await;
        while self.calls.running() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.calls.running();
        if left > 0 {
            tracing::warn!(calls = left, "drain time over with calls still running");
        }
        left
    }

    /// How to reach `to` over `transport`: UDP from the edge's socket, TCP only over a
    /// connection the peer opened and still holds.
    pub(crate) fn path_to(&self, to: SocketAddr, transport: Transport) -> Option<PeerPath> {
        match transport {
            Transport::Udp => Some(PeerPath::Udp(self.udp.clone(), to)),
            Transport::Tcp => self
                .connections
                .lock()
                .expect("connections")
                .get(&to)
                .filter(|tx| !tx.is_closed())
                .map(|tx| PeerPath::Stream(tx.clone(), to)),
            _ => None,
        }
    }

    pub(crate) fn connection_opened(&self, peer: SocketAddr, tx: mpsc::Sender<Vec<u8>>) {
        self.connections
            .lock()
            .expect("connections")
            .insert(peer, tx);
    }

    pub(crate) fn connection_closed(&self, peer: SocketAddr, tx: &mpsc::Sender<Vec<u8>>) {
        let mut connections = self.connections.lock().expect("connections");
        if connections.get(&peer).is_some_and(|t| t.same_channel(tx)) {
            connections.remove(&peer);
        }
    }

    /// One whole message from `source`; `reply` says how to answer it.
    pub async fn receive(self: &Arc<Self>, bytes: &[u8], source: SocketAddr, reply: PeerPath) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let request = match message::parse(bytes, source) {
            Ok(Message::Request(r)) => r,
            Ok(Message::Response(r)) => {
                if !self.outgoing.on_response(r.raw).await {
                    tracing::debug!(status = %r.sip.status_code, "stray response dropped");
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(ParseError::Dropped(reason)) => {
                tracing::debug!(%source, %reason, "unparseable message dropped");
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(ParseError::Refused {
                raw,
                status,
                reason,
            }) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%source, status, %reason, "request refused");
                if raw.method() != Some("ACK") {
                    let response = message::build_response(
                        &raw,
                        status,
                        Some(&reason),
                        Some(&tag()),
                        vec![],
                        vec![],
                    );
                    self.reply_to(&raw, source, reply)
                        .send(message::encode(&response))
                        .await;
                }
                return;
            }
        };
        let raw = request.raw;
        let reply = self.reply_to(&raw, source, reply);
        let Some(key) = TransactionKey::of_request(&raw) else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let method = request.sip.method;
        let now = Instant::now();
        enum Seen {
            New,
            Handled,
            Resend(PeerPath, Vec<u8>),
        }
        let seen = {
            let mut txs = self.transactions.lock(&key);
            if let Some(entry) = txs.by_key.get_mut(&key) {
                if method == rsip::Method::Ack {
                    entry.tx.on_ack(now);
                    txs.reschedule(&key);
                    Seen::Handled
                } else {
                    self.stats
                        .retransmissions_absorbed
                        .fetch_add(1, Ordering::Relaxed);
                    match entry.tx.on_retransmission() {
                        Some(bytes) => Seen::Resend(entry.reply.clone(), bytes.to_vec()),
                        None => Seen::Handled,
                    }
                }
            } else if method == rsip::Method::Ack {
                // An ACK for a 2xx belongs to a dialog: the call's, if there is one.
                self.calls
                    .deliver(&dialog_of(&raw), CallInput::Ack(raw.clone()));
                Seen::Handled
            } else {
                let kind = if method == rsip::Method::Invite {
                    ServerKind::Invite
                } else {
                    ServerKind::NonInvite
                };
                let reliable = reply.is_reliable();
                txs.by_key.insert(
                    key.clone(),
                    Entry {
                        tx: ServerTransaction::new(kind, reliable),
                        reply: reply.clone(),
                        deadline: None,
                    },
                );
                Seen::New
            }
        };
        match seen {
            Seen::New => {}
            Seen::Handled => return,
            Seen::Resend(reply, bytes) => return reply.send(bytes).await,
        }
        let answer = match precheck(&raw, &method) {
            Some(refusal) => refusal,
            None if method == rsip::Method::Invite => {
                match self.invite(&key, &raw, source, &reply).await {
                    Some(answer) => answer,
                    // A call took it and answers it.
                    None => return,
                }
            }
            None if method == rsip::Method::Update => match self.modify(&key, &raw) {
                Some(answer) => answer,
                None => return,
            },
            None if method == rsip::Method::Refer => match self.refer(&key, &raw) {
                Some(answer) => answer,
                None => return,
            },
            None => self.dispatch(&raw, &method, source, &reply).await,
        };
        self.respond(&key, &raw, answer, &tag()).await;
    }

    /// An INVITE: a new call gets its own task (and a 100 Trying at once); anything else
    /// gets its answer.
    async fn invite(
        self: &Arc<Self>,
        key: &TransactionKey,
        raw: &RawMessage,
        source: SocketAddr,
        reply: &PeerPath,
    ) -> Option<Answer> {
        let dialog = dialog_of(raw);
        if dialog.1.is_empty() && self.is_draining() {
            return Some(
                Answer::with_reason(503, "Service Unavailable (shutting down)").header(
                    rsip::Header::RetryAfter(rsip::headers::RetryAfter::new("5")),
                ),
            );
        }
        if !dialog.1.is_empty() {
            return self.modify(key, raw);
        }
        if self.calls.contains(&dialog) {
            // The same Call-ID with a new branch and no tag: a loop or a confused peer.
            return Some(Answer::status(482));
        }
        if let Some(waiting) = self.awaited_call_in(raw, source) {
            // The extension calling in to take a call that waits for it: that call answers.
            let arrival = Arrival {
                key: key.clone(),
                invite: raw.clone(),
                path: reply.clone(),
                tag: tag(),
            };
            let leg_dialog = dialog_key(&dialog.0, &arrival.tag);
            self.calls.register(leg_dialog.clone(), waiting.clone());
            self.respond(key, raw, Answer::status(100), "").await;
            if waiting.try_send(CallInput::CallIn(arrival)).is_err() {
                self.calls.forget(&leg_dialog);
                return Some(Answer::with_reason(
                    480,
                    "Temporarily Unavailable (the call has ended)",
                ));
            }
            return None;
        }
        let mut plan = match plan::plan(
            raw,
            source,
            &self.trunks,
            &self.auth,
            &self.view,
            &self.attempts,
            &self.on_net,
            self.policy(),
            chrono::Utc::now(),
        ) {
            Ok(plan) => plan,
            Err(answer) => return Some(answer),
        };
        let hold = if plan.refusal.is_none() {
            let view = self.view.read().expect("routing view");
            match self.spending.hold(&view, &plan, chrono::Utc::now()) {
                Ok(hold) => hold,
                Err(refusal) => {
                    // Recorded as a refused call, like the other fraud controls.
                    plan.refusal = Some(refusal);
                    None
                }
            }
        } else {
            None
        };
        if let Some((_, cause)) = &plan.refusal {
            self.stats.calls_refused.count(*cause);
        }
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let caller = Caller {
            key: key.clone(),
            invite: raw.clone(),
            path: reply.clone(),
            tag: tag(),
        };
        self.calls.register(dialog.clone(), tx.clone());
        self.calls
            .register(dialog_key(&dialog.0, &caller.tag), tx.clone());
        self.respond(key, raw, Answer::status(100), "").await;
        tokio::spawn(call_task::run(self.clone(), plan, caller, tx, rx, hold));
        None
    }

    /// The call waiting for this INVITE, if it is a carrier delivering an extension's call to
    /// the access number it was told to call in to.
    fn awaited_call_in(
        &self,
        raw: &RawMessage,
        source: SocketAddr,
    ) -> Option<mpsc::Sender<CallInput>> {
        self.trunks.of_source(source)?;
        let access = plan::dialled_number(raw)?;
        let caller = crate::trunk::telephone_number(plan::caller_user(raw)?)?;
        self.call_ins.take(&access, &caller)
    }

    /// The answer of the method's handler.
    async fn dispatch(
        &self,
        raw: &RawMessage,
        method: &rsip::Method,
        source: SocketAddr,
        reply: &PeerPath,
    ) -> Answer {
        match method {
            rsip::Method::Register => {
                self.registrar
                    .register(
                        self.store.as_ref(),
                        &self.view,
                        &self.actor,
                        raw,
                        source,
                        reply.transport(),
                    )
                    .await
            }
            rsip::Method::Options => Answer::status(200)
                .header(rsip::Header::Allow(rsip::headers::Allow::new(ALLOW)))
                .header(rsip::Header::Accept(rsip::headers::Accept::new(
                    "application/sdp",
                ))),
            rsip::Method::Cancel => self.cancel(raw),
            rsip::Method::Bye => self.bye(raw).await,
            rsip::Method::Info => self.info(raw),
            _ => Answer::status(405).header(rsip::Header::Allow(rsip::headers::Allow::new(ALLOW))),
        }
    }

    /// A re-INVITE or an UPDATE (RFC 3311): the call whose dialog it is answers it (a session
    /// refresh, RFC 4028, or a change of session passed on to the other side); None once
    /// delivered, 481 when no call has the dialog.
    fn modify(&self, key: &TransactionKey, raw: &RawMessage) -> Option<Answer> {
        let request = CallInput::Modify {
            key: key.clone(),
            request: raw.clone(),
        };
        self.to_dialog(raw, request)
    }

    /// Hands a request inside a dialog to the call that has the dialog (None), or answers it
    /// 481 when none has.
    fn to_dialog(&self, raw: &RawMessage, input: CallInput) -> Option<Answer> {
        let dialog = dialog_of(raw);
        if !dialog.1.is_empty() && self.calls.deliver(&dialog, input) {
            return None;
        }
        Some(Answer::status(481))
    }

    /// A REFER (RFC 3515): the call whose dialog it is answers it (a transfer); None once
    /// delivered, 481 when no call has the dialog (a REFER outside a dialog is not taken).
    fn refer(&self, key: &TransactionKey, raw: &RawMessage) -> Option<Answer> {
        let request = CallInput::Refer {
            key: key.clone(),
            request: raw.clone(),
        };
        self.to_dialog(raw, request)
    }

    /// CANCEL (RFC 3261 §9.2): it matches the INVITE transaction with its branch; one that
    /// finds none gets 481. The call ringing for that INVITE (if any) stops its legs and
    /// answers the INVITE 487.
    fn cancel(&self, raw: &RawMessage) -> Answer {
        let found = TransactionKey::of_request_as(raw, "INVITE")
            .is_some_and(|key| self.transactions.lock(&key).by_key.contains_key(&key));
        if !found {
            return Answer::status(481);
        }
        self.calls.deliver(&dialog_of(raw), CallInput::Cancel);
        Answer::status(200)
    }

    /// INFO (RFC 6086, in its legacy use for keys: `application/dtmf-relay`,
    /// `application/dtmf`): the key goes to the call whose dialog it is; 415 for a body that
    /// carries no key, 481 when no call has the dialog.
    fn info(&self, raw: &RawMessage) -> Answer {
        let content_type = raw.header("Content-Type").unwrap_or_default();
        let body = String::from_utf8_lossy(&raw.body);
        let Some(key) = crate::media::dtmf::info::key_in_info(content_type, &body) else {
            return Answer::status(415).header(rsip::Header::Accept(rsip::headers::Accept::new(
                "application/dtmf-relay, application/dtmf",
            )));
        };
        let cseq = raw
            .header("CSeq")
            .and_then(|c| c.split_whitespace().next()?.parse().ok());
        let input = CallInput::Key {
            way: crate::media::dtmf::keys::Way::Info,
            key,
            cseq,
            call_id: raw.header("Call-ID").map(str::to_string),
        };
        match self.to_dialog(raw, input) {
            Some(refused) => refused,
            None => Answer::status(200),
        }
    }

    /// BYE: the call it belongs to answers it, once its end is recorded.
    async fn bye(&self, raw: &RawMessage) -> Answer {
        let (tx, rx) = oneshot::channel();
        if !self
            .calls
            .deliver(&dialog_of(raw), CallInput::Bye(raw.clone(), tx))
        {
            return Answer::status(481);
        }
        match tokio::time::timeout(BYE_ANSWER_WITHIN, rx).await {
            Ok(Ok(answer)) => answer,
            _ => Answer::with_reason(500, "Server Internal Error (call did not answer)"),
        }
    }

    /// Sends the transaction user's answer through the transaction, with `to_tag` added to a
    /// To that has none.
    pub(crate) async fn respond(
        &self,
        key: &TransactionKey,
        raw: &RawMessage,
        answer: Answer,
        to_tag: &str,
    ) {
        let response = message::build_response(
            raw,
            answer.status,
            answer.reason.as_deref(),
            Some(to_tag).filter(|t| !t.is_empty()),
            answer.headers,
            answer.body,
        );
        let bytes = message::encode(&response);
        let now = Instant::now();
        let send = {
            let mut txs = self.transactions.lock(key);
            let Some(entry) = txs.by_key.get_mut(key) else {
                return;
            };
            let before = entry.tx.retained();
            let send = entry
                .tx
                .respond(answer.status, bytes.clone(), now)
                .then(|| entry.reply.clone());
            let after = entry.tx.retained();
            if after > before {
                // Reserved in one step: responders on other shards cannot both pass the check
                // and overshoot the budget together.
                let grow = after - before;
                let reserved = after <= RETAIN_AT_MOST
                    && self
                        .retained
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                            (total + grow <= self.retained_budget).then_some(total + grow)
                        })
                        .is_ok();
                if !reserved {
                    entry.tx.forget_response();
                    self.retained.fetch_sub(before, Ordering::Relaxed);
                    self.stats
                        .responses_not_kept
                        .fetch_add(1, Ordering::Relaxed);
                }
            } else {
                self.retained.fetch_sub(before - after, Ordering::Relaxed);
            }
            txs.reschedule(key);
            send
        };
        if let Some(reply) = send {
            reply.send(bytes).await;
        }
    }

    /// UDP replies go where RFC 3261 §18.2.2 / RFC 3581 say; stream replies go back down the
    /// connection.
    fn reply_to(&self, raw: &RawMessage, source: SocketAddr, reply: PeerPath) -> PeerPath {
        match reply {
            PeerPath::Udp(socket, _) => {
                PeerPath::Udp(socket, message::response_target(raw, source))
            }
            stream => stream,
        }
    }

    /// Fires due transaction timers; returns how long until the next one (at most `max`).
    pub async fn tick(&self, max: Duration) -> Duration {
        let now = Instant::now();
        let client_next = self.outgoing.tick(now).await;
        let mut sends = Vec::new();
        let mut next = None;
        for shard in self.transactions.shards.iter() {
            let mut txs = shard.lock().expect("transactions");
            while let Some(key) = txs.deadlines.pop_due(now) {
                let Some(entry) = txs.by_key.get_mut(&key) else {
                    continue;
                };
                match entry.tx.handle_timeout(now) {
                    Some(TimerOutput::Retransmit(bytes)) => {
                        sends.push((entry.reply.clone(), bytes));
                        txs.reschedule(&key);
                    }
                    Some(TimerOutput::AckTimeout | TimerOutput::Terminated) => {
                        if let Some(entry) = txs.by_key.remove(&key) {
                            self.retained
                                .fetch_sub(entry.tx.retained(), Ordering::Relaxed);
                        }
                    }
                    None => txs.reschedule(&key),
                }
            }
            next = next.into_iter().chain(txs.deadlines.next()).min();
        }
        for (reply, bytes) in sends {
            reply.send(bytes).await;
        }
        [next, client_next]
            .into_iter()
            .flatten()
            .min()
            .map_or(max, |at| at.saturating_duration_since(now).min(max))
    }

    /// RTP and RTCP packets relayed since start (0 with the relay off).
    pub fn packets_relayed(&self) -> u64 {
        self.media
            .as_ref()
            .map_or(0, |m| m.packets_relayed.load(Ordering::Relaxed))
    }

    /// Relay port pairs free for new calls (`None` with the relay off).
    pub fn media_ports_free(&self) -> Option<usize> {
        self.media.as_ref().map(|m| m.free_ports())
    }

    /// Bytes of responses kept for retransmission (for tests and metrics).
    pub fn retained_bytes(&self) -> usize {
        self.retained.load(Ordering::Relaxed)
    }

    /// Open server transactions (for tests and metrics).
    pub fn open_transactions(&self) -> usize {
        self.transactions
            .shards
            .iter()
            .map(|s| s.lock().expect("transactions").by_key.len())
            .sum()
    }

    /// The edge's counters in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let counters = [
            (
                "ringledger_sip_messages_received_total",
                "SIP messages received (UDP datagrams and framed TCP messages).",
                &self.stats.received,
            ),
            (
                "ringledger_sip_messages_dropped_total",
                "SIP messages dropped: unparseable, nothing to answer to, or broken framing.",
                &self.stats.dropped,
            ),
            (
                "ringledger_sip_requests_refused_total",
                "SIP requests answered 400/501/505 by the parser.",
                &self.stats.refused,
            ),
            (
                "ringledger_sip_retransmissions_absorbed_total",
                "Retransmitted requests answered from their transaction.",
                &self.stats.retransmissions_absorbed,
            ),
            (
                "ringledger_sip_responses_not_kept_total",
                "Responses sent but not kept for retransmission (too large, or the memory budget for kept responses was spent).",
                &self.stats.responses_not_kept,
            ),
            (
                "ringledger_calls_recovered_total",
                "Calls of a lost edge (killed, crashed) this edge ended at the last instant that edge was known alive.",
                &self.stats.calls_recovered,
            ),
            (
                "ringledger_calls_drained_total",
                "Calls this edge hung up while draining on shutdown.",
                &self.stats.calls_drained,
            ),
            (
                "ringledger_calls_max_duration_total",
                "Calls hung up at the longest a call may last.",
                &self.stats.calls_at_max_duration,
            ),
            (
                "ringledger_calls_session_expired_total",
                "Calls hung up because a side stopped refreshing its session timer (RFC 4028).",
                &self.stats.calls_session_expired,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let name = "ringledger_calls_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Calls refused by the fraud controls, by cause.\n# TYPE {name} counter"
        );
        for (cause, n) in self.stats.calls_refused.by_cause() {
            let _ = writeln!(out, "{name}{{cause=\"{cause}\"}} {n}");
        }
        let lockout = &self.auth.lockout.stats;
        let media = self.media.as_ref();
        let plain = [
            (
                "ringledger_rtp_packets_relayed_total",
                "RTP and RTCP packets relayed.",
                self.packets_relayed(),
            ),
            (
                "ringledger_rtp_packets_stray_total",
                "RTP and RTCP packets dropped for coming from an address the call's side may not send from.",
                media.map_or(0, |m| m.packets_stray.load(Ordering::Relaxed)),
            ),
            (
                "ringledger_sip_auth_failures_total",
                "SIP authentication failures (wrong password or unknown user).",
                lockout.failures.load(Ordering::Relaxed),
            ),
            (
                "ringledger_sip_auth_source_blocks_total",
                "Source addresses blocked for repeated SIP authentication failures.",
                lockout.source_blocks.load(Ordering::Relaxed),
            ),
            (
                "ringledger_sip_auth_username_blocks_total",
                "Usernames blocked for repeated SIP authentication failures.",
                lockout.username_blocks.load(Ordering::Relaxed),
            ),
            (
                "ringledger_sip_auth_blocked_requests_total",
                "SIP requests refused without a digest check because their source or username is blocked.",
                lockout.refused.load(Ordering::Relaxed),
            ),
            (
                "ringledger_sip_tcp_connections_refused_total",
                "TCP connections closed at once for the total or per-source connection limit.",
                self.tcp_connections.refused.load(Ordering::Relaxed),
            ),
            (
                "ringledger_sip_tcp_connections_timed_out_total",
                "TCP connections closed for a message that did not arrive in time, or for idling.",
                self.tcp_connections.timed_out.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in plain {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP ringledger_sip_responses_kept_bytes Bytes of responses kept for retransmission.\n\
             # TYPE ringledger_sip_responses_kept_bytes gauge\n\
             ringledger_sip_responses_kept_bytes {}",
            self.retained_bytes()
        );
        let _ = writeln!(
            out,
            "# HELP ringledger_sip_tcp_connections Open SIP TCP connections.\n\
             # TYPE ringledger_sip_tcp_connections gauge\n\
             ringledger_sip_tcp_connections {}",
            self.tcp_connections.open()
        );
        let _ = writeln!(
            out,
            "# HELP ringledger_sip_client_transactions Open SIP client transactions (requests the edge sent).\n\
             # TYPE ringledger_sip_client_transactions gauge\n\
             ringledger_sip_client_transactions {}",
            self.outgoing.len()
        );
        let _ = writeln!(
            out,
            "# HELP ringledger_sip_calls Dialog keys of calls in progress.\n\
             # TYPE ringledger_sip_calls gauge\n\
             ringledger_sip_calls {}",
            self.calls.len()
        );
        let _ = writeln!(
            out,
            "# HELP ringledger_sip_server_transactions Open SIP server transactions.\n\
             # TYPE ringledger_sip_server_transactions gauge\n\
             ringledger_sip_server_transactions {}",
            self.open_transactions()
        );
    }
}

/// The SIP extensions the edge supports (option tags a `Require` may name): session timers.
const SUPPORTED_EXTENSIONS: &[&str] = &["timer"];

/// What the UAS core refuses before any method handler sees the request (RFC 3261 §8.2.2):
/// extensions it is required to support but does not (420 with Unsupported naming them, so
/// `Require: 100rel` is refused cleanly; `timer` is supported), and an INVITE that may not be
/// forwarded one more hop (483).
fn precheck(raw: &RawMessage, method: &rsip::Method) -> Option<Answer> {
    if !matches!(method, rsip::Method::Ack | rsip::Method::Cancel) {
        let required: Vec<&str> = raw
            .headers_named("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .filter(|t| {
                !SUPPORTED_EXTENSIONS
                    .iter()
                    .any(|s| t.eq_ignore_ascii_case(s))
            })
            .collect();
        if !required.is_empty() {
            return Some(Answer::status(420).header(rsip::Header::Unsupported(
                rsip::headers::Unsupported::new(required.join(", ")),
            )));
        }
    }
    if *method == rsip::Method::Invite
        && let Some(refusal) = session_description_refusal(raw)
    {
        return Some(refusal);
    }
    let hops_left = raw
        .header("Max-Forwards")
        .and_then(|m| m.trim().parse::<u8>().ok());
    if *method == rsip::Method::Invite && hops_left == Some(0) {
        return Some(Answer::status(483));
    }
    None
}

/// An INVITE whose offer the edge cannot read, or whose sender would not accept the session
/// description the edge answers with (RFC 3261 §8.2.3, RFC 4475's invut and sdp01): refused
/// before any challenge, with the one type the edge speaks in Accept.
fn session_description_refusal(raw: &RawMessage) -> Option<Answer> {
    let sdp_only = || rsip::Header::Accept(rsip::headers::Accept::new("application/sdp"));
    let media_type = |value: &str| {
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    if !raw.body.is_empty()
        && let Some(content_type) = raw.header("Content-Type")
        && media_type(content_type) != "application/sdp"
    {
        return Some(Answer::status(415).header(sdp_only()));
    }
    // An empty Accept accepts nothing (RFC 3261 §20.1).
    let mut accepted = raw
        .headers_named("Accept")
        .flat_map(|v| v.split(','))
        .map(media_type);
    if raw.header("Accept").is_some()
        && !accepted.any(|t| matches!(t.as_str(), "application/sdp" | "application/*" | "*/*"))
    {
        return Some(Answer::status(406).header(sdp_only()));
    }
    None
}

/// The dialog a request received belongs to, from the edge's side: its Call-ID and its To
/// tag (the edge's own; none before the edge answered).
fn dialog_of(raw: &RawMessage) -> DialogKey {
    let tag = raw
        .header("To")
        .and_then(header::name_addr)
        .and_then(|n| header::param(n.params, "tag").flatten())
        .unwrap_or_default();
    dialog_key(raw.header("Call-ID").unwrap_or_default(), &tag)
}

/// A fresh To tag.
fn tag() -> String {
    let id = uuid::Uuid::new_v4();
    hex::encode(&id.as_bytes()[..6])
}

#[async_trait::async_trait]
impl CallHost for Edge {
    fn edge_id(&self) -> uuid::Uuid {
        self.id
    }
    fn store(&self) -> &dyn EventStore {
        self.store.as_ref()
    }
    fn actor(&self) -> &str {
        &self.actor
    }
    fn view(&self) -> &SharedView {
        &self.view
    }
    fn local(&self) -> SocketAddr {
        self.local
    }
    fn media(&self) -> Option<&Arc<Media>> {
        self.media.as_ref()
    }
    fn outgoing(&self) -> &Outgoing {
        &self.outgoing
    }
    fn calls(&self) -> &Calls {
        &self.calls
    }
    fn call_ins(&self) -> &CallIns {
        &self.call_ins
    }
    fn spending(&self) -> &Arc<Spending> {
        &self.spending
    }
    fn trunks(&self) -> &Trunks {
        &self.trunks
    }
    fn on_net(&self) -> &OnNet {
        &self.on_net
    }
    fn policy(&self) -> plan::Policy {
        Edge::policy(self)
    }
    fn times(&self) -> CallTimes {
        CallTimes {
            ring: self.ring_timeout,
            call_in: self.call_in_timeout,
            max_duration: self.max_call_duration,
        }
    }
    fn call_in_webhook(&self) -> Option<Arc<infra::delivery::Webhook>> {
        self.call_in_webhook.clone()
    }
    fn is_draining(&self) -> bool {
        Edge::is_draining(self)
    }
    fn path_to(&self, to: SocketAddr, transport: Transport) -> Option<PeerPath> {
        Edge::path_to(self, to, transport)
    }
    async fn respond(
        &self,
        key: &TransactionKey,
        request: &RawMessage,
        answer: Answer,
        to_tag: &str,
    ) {
        Edge::respond(self, key, request, answer, to_tag).await
    }
    fn count_end(&self, cause: domain::call::EndCause) {
        self.stats.count_end(cause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(extra: &str, body: &str) -> RawMessage {
        message::from_text(&format!(
            "INVITE sip:+441632960002@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKpre\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+441632960001@127.0.0.9>;tag=a\r\n\
             To: <sip:+441632960002@127.0.0.1>\r\n\
             Call-ID: pre@test\r\n\
             CSeq: 1 INVITE\r\n\
             {extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    fn status(raw: &RawMessage) -> Option<u16> {
        precheck(raw, &rsip::Method::Invite).map(|a| a.status)
    }

    #[test]
    fn only_extensions_the_edge_lacks_are_refused_420_and_named() {
        assert_eq!(status(&invite("Require: timer\r\n", "")), None);
        let refused = precheck(
            &invite("Require: 100rel, timer\r\n", ""),
            &rsip::Method::Invite,
        )
        .expect("refused");
        assert_eq!(refused.status, 420);
        let unsupported: Vec<String> = refused.headers.iter().map(|h| h.to_string()).collect();
        assert_eq!(unsupported, ["Unsupported: 100rel"]);
        // An ACK or CANCEL is never refused for what it requires.
        let ack = invite("Require: 100rel\r\n", "");
        assert!(precheck(&ack, &rsip::Method::Ack).is_none());
    }

    #[test]
    fn an_offer_the_edge_cannot_read_or_answer_is_refused_before_anything_else() {
        let html = invite("Content-Type: text/html\r\n", "<p>hi</p>");
        assert_eq!(status(&html), Some(415));
        assert_eq!(status(&invite("Accept: text/plain\r\n", "")), Some(406));
        assert_eq!(status(&invite("Accept: application/*\r\n", "")), None);
        assert_eq!(
            status(&invite("Content-Type: application/sdp\r\n", "v=0\r\n")),
            None
        );
        let last_hop = invite("", "");
        let mut last_hop = last_hop;
        for (name, value) in &mut last_hop.headers {
            if name == "Max-Forwards" {
                *value = "0".into();
            }
        }
        assert_eq!(status(&last_hop), Some(483));
    }

    #[test]
    fn a_request_belongs_to_the_dialog_of_its_call_id_and_the_edges_tag() {
        assert_eq!(dialog_of(&invite("", "")), dialog_key("pre@test", ""));
        let mut in_dialog = invite("", "");
        for (name, value) in &mut in_dialog.headers {
            if name == "To" {
                value.push_str(";tag=edge1");
            }
        }
        assert_eq!(dialog_of(&in_dialog), dialog_key("pre@test", "edge1"));
    }

    #[test]
    fn the_causes_an_operator_watches_are_counted_and_no_others() {
        use domain::call::EndCause;
        let stats = Stats::default();
        for cause in [
            EndCause::EdgeShutdown,
            EndCause::MaxDuration,
            EndCause::SessionExpired,
            EndCause::SessionExpired,
            EndCause::NormalClearing,
            EndCause::Busy,
        ] {
            stats.count_end(cause);
        }
        let counts = [
            &stats.calls_drained,
            &stats.calls_at_max_duration,
            &stats.calls_session_expired,
        ]
        .map(|c| c.load(Ordering::Relaxed));
        assert_eq!(counts, [1, 1, 2]);
        let refusals = CallRefusals::default();
        refusals.count(EndCause::SpendLimit);
        refusals.count(EndCause::Rejected);
        refusals.count(EndCause::Busy);
        assert_eq!(
            refusals.by_cause(),
            [("rejected", 2), ("spend_limit", 1), ("no_rate", 0)]
        );
    }
}
