//! The edge: what happens to each message the transports receive. Requests go through their
//! server transaction (retransmissions are absorbed or answered from it, never handled
//! twice), then to the handler of their method; responses are sent through the transaction
//! and kept there for retransmission until its timers end it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::device::Transport;
use infra::EventStore;
use rsip::headers::UntypedHeader;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::answer::Answer;
use crate::auth::Authenticator;
use crate::message::{self, Message, ParseError, RawMessage};
use crate::registrar::Registrar;
use crate::transaction::{ServerKind, ServerTransaction, TimerOutput, TransactionKey};
use crate::trunk::Trunks;
use crate::view::SharedView;

/// The methods the edge answers (the rest: 405 with this list, or 501 if unknown).
pub const ALLOW: &str = "REGISTER, OPTIONS, ACK, CANCEL, BYE, INVITE";

/// Where a response goes: a UDP address, or back down the TCP connection the request came on.
#[derive(Clone)]
pub enum ReplyPath {
    Udp(Arc<UdpSocket>, SocketAddr),
    Stream(mpsc::Sender<Vec<u8>>),
}

impl ReplyPath {
    fn transport(&self) -> Transport {
        match self {
            ReplyPath::Udp(..) => Transport::Udp,
            ReplyPath::Stream(_) => Transport::Tcp,
        }
    }

    async fn send(&self, bytes: Vec<u8>) {
        match self {
            ReplyPath::Udp(socket, to) => {
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::debug!(error = %e, %to, "UDP send failed");
                }
            }
            ReplyPath::Stream(tx) => {
                // A closed connection: the peer is gone and will retry on a new one.
                let _ = tx.send(bytes).await;
            }
        }
    }
}

/// What the edge counts (reported in `/metrics`).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub refused: AtomicU64,
    pub retransmissions_absorbed: AtomicU64,
}

struct Entry {
    tx: ServerTransaction,
    reply: ReplyPath,
    deadline: Option<(Instant, u64)>,
}

#[derive(Default)]
struct Transactions {
    by_key: HashMap<TransactionKey, Entry>,
    deadlines: BTreeMap<(Instant, u64), TransactionKey>,
    seq: u64,
}

impl Transactions {
    fn reschedule(&mut self, key: &TransactionKey) {
        let Some(entry) = self.by_key.get_mut(key) else {
            return;
        };
        if let Some(old) = entry.deadline.take() {
            self.deadlines.remove(&old);
        }
        if let Some(at) = entry.tx.poll_timeout() {
            self.seq += 1;
            let slot = (at, self.seq);
            entry.deadline = Some(slot);
            self.deadlines.insert(slot, key.clone());
        }
    }
}

pub struct Edge {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) view: SharedView,
    registrar: Registrar,
    auth: Arc<Authenticator>,
    trunks: Trunks,
    actor: String,
    transactions: Mutex<Transactions>,
    pub stats: Stats,
}

impl Edge {
    pub fn new(
        store: Arc<dyn EventStore>,
        view: SharedView,
        registrar: Registrar,
        auth: Arc<Authenticator>,
        trunks: Trunks,
        actor: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            view,
            registrar,
            auth,
            trunks,
            actor,
            transactions: Mutex::default(),
            stats: Stats::default(),
        })
    }

    /// One whole message from `source`; `reply` says how to answer it.
    pub async fn receive(self: &Arc<Self>, bytes: &[u8], source: SocketAddr, reply: ReplyPath) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let request = match message::parse(bytes, source) {
            Ok(Message::Request(r)) => r,
            Ok(Message::Response(r)) => {
                // No client transactions are open yet, so no response can match one.
                tracing::debug!(status = %r.sip.status_code, "stray response dropped");
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
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
            Resend(ReplyPath, Vec<u8>),
        }
        let seen = {
            let mut txs = self.transactions.lock().expect("transactions");
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
                // An ACK for a 2xx belongs to a dialog; the edge has none open yet.
                Seen::Handled
            } else {
                let kind = if method == rsip::Method::Invite {
                    ServerKind::Invite
                } else {
                    ServerKind::NonInvite
                };
                let reliable = matches!(reply, ReplyPath::Stream(_));
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
            None => self.dispatch(&raw, &method, source, &reply).await,
        };
        self.respond(&key, &raw, answer).await;
    }

    /// The answer of the method's handler.
    async fn dispatch(
        &self,
        raw: &RawMessage,
        method: &rsip::Method,
        source: SocketAddr,
        reply: &ReplyPath,
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
            rsip::Method::Invite => {
                crate::invite::invite(raw, source, &self.trunks, &self.auth, &self.view)
            }
            rsip::Method::Cancel => self.cancel(raw),
            // No dialogs exist yet for a BYE to belong to.
            rsip::Method::Bye => Answer::status(481),
            _ => Answer::status(405).header(rsip::Header::Allow(rsip::headers::Allow::new(ALLOW))),
        }
    }

    /// CANCEL (RFC 3261 §9.2): it matches the INVITE transaction with its branch. Every
    /// INVITE the edge takes is answered at once, so a CANCEL that finds one changes nothing
    /// and gets 200; one that finds none gets 481.
    fn cancel(&self, raw: &RawMessage) -> Answer {
        let found = TransactionKey::of_request_as(raw, "INVITE").is_some_and(|key| {
            self.transactions
                .lock()
                .expect("transactions")
                .by_key
                .contains_key(&key)
        });
        if found {
            Answer::status(200)
        } else {
            Answer::status(481)
        }
    }

    /// Sends the transaction user's answer through the transaction.
    async fn respond(&self, key: &TransactionKey, raw: &RawMessage, answer: Answer) {
        let response = message::build_response(
            raw,
            answer.status,
            answer.reason.as_deref(),
            Some(&tag()),
            answer.headers,
            vec![],
        );
        let bytes = message::encode(&response);
        let now = Instant::now();
        let send = {
            let mut txs = self.transactions.lock().expect("transactions");
            let Some(entry) = txs.by_key.get_mut(key) else {
                return;
            };
            let send = entry
                .tx
                .respond(answer.status, bytes.clone(), now)
                .then(|| entry.reply.clone());
            txs.reschedule(key);
            send
        };
        if let Some(reply) = send {
            reply.send(bytes).await;
        }
    }

    /// UDP replies go where RFC 3261 §18.2.2 / RFC 3581 say; stream replies go back down the
    /// connection.
    fn reply_to(&self, raw: &RawMessage, source: SocketAddr, reply: ReplyPath) -> ReplyPath {
        match reply {
            ReplyPath::Udp(socket, _) => {
                ReplyPath::Udp(socket, message::response_target(raw, source))
            }
            stream => stream,
        }
    }

    /// Fires due transaction timers; returns how long until the next one (at most `max`).
    pub async fn tick(&self, max: Duration) -> Duration {
        let now = Instant::now();
        let mut sends = Vec::new();
        let next = {
            let mut txs = self.transactions.lock().expect("transactions");
            while let Some((&slot, _)) = txs.deadlines.first_key_value() {
                if slot.0 > now {
                    break;
                }
                let key = txs.deadlines.remove(&slot).expect("due key");
                let Some(entry) = txs.by_key.get_mut(&key) else {
                    continue;
                };
                entry.deadline = None;
                match entry.tx.handle_timeout(now) {
                    Some(TimerOutput::Retransmit(bytes)) => {
                        sends.push((entry.reply.clone(), bytes));
                        txs.reschedule(&key);
                    }
                    Some(TimerOutput::AckTimeout | TimerOutput::Terminated) => {
                        txs.by_key.remove(&key);
                    }
                    None => txs.reschedule(&key),
                }
            }
            txs.deadlines
                .first_key_value()
                .map(|(slot, _)| slot.0.saturating_duration_since(now))
                .unwrap_or(max)
                .min(max)
        };
        for (reply, bytes) in sends {
            reply.send(bytes).await;
        }
        next
    }

    /// Open server transactions (for tests and metrics).
    pub fn open_transactions(&self) -> usize {
        self.transactions.lock().expect("transactions").by_key.len()
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
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP ringledger_sip_server_transactions Open SIP server transactions.\n\
             # TYPE ringledger_sip_server_transactions gauge\n\
             ringledger_sip_server_transactions {}",
            self.open_transactions()
        );
    }
}

/// What the UAS core refuses before any method handler sees the request (RFC 3261 §8.2.2):
/// extensions it is required to support but does not (420 with Unsupported; the edge supports
/// none yet, so `Require: 100rel` is refused cleanly), and an INVITE that may not be forwarded
/// one more hop (483).
fn precheck(raw: &RawMessage, method: &rsip::Method) -> Option<Answer> {
    if !matches!(method, rsip::Method::Ack | rsip::Method::Cancel) {
        let required: Vec<&str> = raw
            .headers_named("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if !required.is_empty() {
            return Some(Answer::status(420).header(rsip::Header::Unsupported(
                rsip::headers::Unsupported::new(required.join(", ")),
            )));
        }
    }
    let hops_left = raw
        .header("Max-Forwards")
        .and_then(|m| m.trim().parse::<u8>().ok());
    if *method == rsip::Method::Invite && hops_left == Some(0) {
        return Some(Answer::status(483));
    }
    None
}

/// A fresh To tag.
fn tag() -> String {
    let id = uuid::Uuid::new_v4();
    hex::encode(&id.as_bytes()[..6])
}
