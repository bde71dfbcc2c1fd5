//! Test support: a call's state machine (the call's, the callback's) driven as its task
//! drives it, on a clock the test moves, and what to read off its outputs.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use domain::E164;
use domain::account::Account;
use domain::call::{CallCommand, EndCause, LegFailure, Side};
use domain::device::Transport;
use domain::extension::Extension;
use domain::ids::ExtensionId;

use super::call::{Context, Input, Machine, Output, Partner, Peer, Reach, Refusal};
use super::plan::Target;
use crate::answer::Answer;
use crate::media::relay::Side as RelaySide;
use crate::message::{self, RawMessage};
use crate::outgoing::{ClientKey, Outcome};

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("address")
}

pub fn e164(text: &str) -> E164 {
    E164::parse(text).expect("number")
}

/// A leg's answer to the edge's INVITE.
pub fn reply(invite: &RawMessage, status: u16, tag: &str, body: &str) -> RawMessage {
    let mut headers: Vec<(String, String)> = ["Via", "From", "Call-ID", "CSeq"]
        .iter()
        .map(|h| (h.to_string(), invite.header(h).expect(h).to_string()))
        .collect();
    let to = invite.header("To").expect("To");
    headers.push(("To".into(), format!("{to};tag={tag}")));
    headers.push(("Contact".into(), "<sip:callee@127.0.0.20:5060>".into()));
    if !body.is_empty() {
        headers.push(("Content-Type".into(), "application/sdp".into()));
    }
    RawMessage {
        start_line: format!("SIP/2.0 {status} Whatever"),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// The edge as the call sees it: everything reachable over UDP, one extension in the view.
pub struct FakeEdge {
    pub extension: Option<Extension>,
    pub call_in_taken: Cell<bool>,
    /// Where a transfer goes (none: refused, no trunk).
    pub transfer_to: Option<Target>,
    /// What the other call answers an ask to be joined (none: no call has the dialog).
    pub join_answer: Option<Result<Partner, Answer>>,
    /// How many legs the call asked for (each would take a place under the account's caps).
    pub legs_asked: Cell<usize>,
}

impl Context for FakeEdge {
    fn local(&self) -> SocketAddr {
        addr("127.0.0.1:5060")
    }
    fn reach(&self, to: SocketAddr, _: Transport) -> Option<Reach> {
        Some(Reach {
            peer: to,
            transport: "UDP",
        })
    }
    fn extension_now(&self, _: ExtensionId, _: &E164) -> Option<Extension> {
        self.extension.clone()
    }
    fn wait_call_in(&self, _: &E164, _: &E164) -> bool {
        !self.call_in_taken.replace(true)
    }
    fn outbound_leg(
        &self,
        _: &Account,
        _: Option<&Extension>,
        _: &E164,
        _: SocketAddr,
    ) -> Result<Target, Answer> {
        self.legs_asked.set(self.legs_asked.get() + 1);
        self.transfer_to
            .clone()
            .ok_or_else(|| Answer::with_reason(503, "Service Unavailable (no trunk)"))
    }
}

/// Which recordings the store refuses.
pub type Refuser = Box<dyn Fn(&CallCommand) -> Option<Refusal>>;

/// A call driven as its task drives it, on a clock the test moves.
pub struct Sim<M> {
    pub call: M,
    pub now: Instant,
    pub edge: FakeEdge,
    refuse: Refuser,
    /// When media was last relayed (the relay starts with the call).
    pub media_at: Instant,
}

impl<M: Machine> Sim<M> {
    /// Starts `call` at `now`, the store refusing what `refuse` says; with its first outputs.
    pub fn new(call: M, now: Instant, refuse: Refuser) -> (Self, Vec<Output>) {
        let mut sim = Self {
            call,
            now,
            edge: FakeEdge {
                extension: None,
                call_in_taken: Cell::new(false),
                transfer_to: None,
                join_answer: None,
                legs_asked: Cell::new(0),
            },
            refuse,
            media_at: now,
        };
        let outputs = sim.call.start(now);
        let outputs = sim.settle(outputs);
        (sim, outputs)
    }

    pub fn media_idle(&self) -> Option<Duration> {
        Some(self.now - self.media_at)
    }

    /// Carries the outputs out as the task does: what an awaited output brings (a
    /// recording's result, refused if the test says so; the other call's answer to a join) is
    /// handed back, and what follows is appended.
    pub fn settle(&mut self, outputs: Vec<Output>) -> Vec<Output> {
        let mut done = vec![];
        let mut queue = std::collections::VecDeque::from(outputs);
        while let Some(output) = queue.pop_front() {
            let brought = match &output {
                Output::Record {
                    command,
                    awaited: true,
                } => Some(Input::Recorded((self.refuse)(command).map_or(Ok(()), Err))),
                Output::UseDialIntent { .. } => Some(Input::Recorded(Ok(()))),
                Output::AskJoin(_) => Some(Input::JoinAnswered(
                    self.edge
                        .join_answer
                        .clone()
                        .unwrap_or_else(|| Err(Answer::status(481))),
                )),
                _ => None,
            };
            done.push(output);
            if let Some(input) = brought {
                let next = self.call.handle(input, self.now, &self.edge);
                queue.extend(next);
            }
        }
        done
    }

    pub fn give(&mut self, input: Input) -> Vec<Output> {
        let outputs = self.call.handle(input, self.now, &self.edge);
        self.settle(outputs)
    }

    /// Moves the clock to `until`, firing each timer the call asks for on the way.
    pub fn run_until(&mut self, until: Instant) -> Vec<Output> {
        let mut all = vec![];
        let mut wakes = 0;
        while let Some(at) = self.call.next_timeout(self.now, self.media_idle()) {
            if at > until || self.call.is_done(at) {
                break;
            }
            wakes += 1;
            assert!(wakes < 10_000, "the call keeps waking at {at:?}");
            self.now = self.now.max(at);
            let outputs = self
                .call
                .on_timeout(self.now, self.media_idle(), &self.edge);
            all.extend(self.settle(outputs));
        }
        self.now = until;
        all
    }

    pub fn run_for(&mut self, span: Duration) -> Vec<Output> {
        self.run_until(self.now + span)
    }
}

/// The steps recorded and the INVITEs sent, in order: `start`, `leg`, `answered`, `bridge`,
/// `end` (`other` for the rest), `invite`.
pub fn steps(outputs: &[Output]) -> Vec<&'static str> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Record { command, .. } => Some(match **command {
                CallCommand::Start { .. } => "start",
                CallCommand::StartLeg { .. } => "leg",
                CallCommand::LegAnswered { .. } => "answered",
                CallCommand::Bridge { .. } => "bridge",
                CallCommand::End { .. } => "end",
                _ => "other",
            }),
            Output::Invite { .. } => Some("invite"),
            _ => None,
        })
        .collect()
}

pub fn commands(outputs: &[Output]) -> Vec<&CallCommand> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Record { command, .. } => Some(&**command),
            _ => None,
        })
        .collect()
}

pub fn ended(outputs: &[Output]) -> Option<(EndCause, Side)> {
    commands(outputs).into_iter().find_map(|c| match c {
        CallCommand::End { cause, side } => Some((*cause, *side)),
        _ => None,
    })
}

pub fn leg_failures(outputs: &[Output]) -> Vec<(u16, LegFailure)> {
    commands(outputs)
        .into_iter()
        .filter_map(|c| match c {
            CallCommand::LegFailed {
                sip_status,
                failure,
                ..
            } => Some((*sip_status, *failure)),
            _ => None,
        })
        .collect()
}

pub fn answered_legs(outputs: &[Output]) -> usize {
    commands(outputs)
        .into_iter()
        .filter(|c| matches!(c, CallCommand::LegAnswered { .. }))
        .count()
}

/// The INVITEs sent, by leg.
pub fn invites(outputs: &[Output]) -> Vec<(usize, RawMessage)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Invite { leg, request, .. } => Some((*leg, request.clone())),
            _ => None,
        })
        .collect()
}

pub fn cancelled(outputs: &[Output]) -> Vec<usize> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Cancel { leg, .. } => Some(*leg),
            _ => None,
        })
        .collect()
}

pub fn acked(outputs: &[Output]) -> Vec<usize> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Ack {
                to: Peer::Leg(leg), ..
            } => Some(*leg),
            _ => None,
        })
        .collect()
}

pub fn byes(outputs: &[Output]) -> Vec<Peer> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Request { to, method, .. } if *method == "BYE" => Some(*to),
            _ => None,
        })
        .collect()
}

pub fn response(leg: usize, invite: &RawMessage, status: u16, body: &str) -> Input {
    let response = reply(invite, status, &format!("leg{leg}"), body);
    Input::Outcome {
        leg: Some(leg),
        key: ClientKey::of_response(&response).expect("a client key"),
        outcome: Outcome::Response(response),
    }
}

/// A request from leg `leg` inside the dialog its 2xx to `invite` started (its tag `leg{n}`,
/// as [`response`] answers).
pub fn from_leg(method: &str, leg: usize, invite: &RawMessage, cseq: u32) -> RawMessage {
    from_leg_with(method, leg, invite, cseq, "", "")
}

/// As [`from_leg`], with `extra` header lines (each ending CRLF) and `body`.
pub fn from_leg_with(
    method: &str,
    leg: usize,
    invite: &RawMessage,
    cseq: u32,
    extra: &str,
    body: &str,
) -> RawMessage {
    crate::message::from_text(&format!(
        "{method} sip:ringledger@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.20:5060;branch=z9hG4bKleg{leg}{method}{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: {};tag=leg{leg}\r\n\
         To: {}\r\n\
         Call-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        invite.header("To").expect("To"),
        invite.header("From").expect("From"),
        invite.header("Call-ID").expect("Call-ID"),
        body.len(),
    ))
}

/// The answer of a side (leg `leg`, or the caller: None) to a request the edge sent it inside
/// its dialog (`bytes`): `status`, with `body` (and `extra` header lines).
pub fn answer_in_dialog(
    leg: Option<usize>,
    bytes: &[u8],
    status: u16,
    body: &str,
    extra: &[(&str, &str)],
) -> Input {
    let request = crate::message::from_text(&String::from_utf8_lossy(bytes));
    let mut headers: Vec<(String, String)> = ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .map(|h| (h.to_string(), request.header(h).expect(h).to_string()))
        .collect();
    headers.push(("Contact".into(), "<sip:peer@127.0.0.20:5060>".into()));
    if !body.is_empty() {
        headers.push(("Content-Type".into(), "application/sdp".into()));
    }
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let answer = RawMessage {
        start_line: format!("SIP/2.0 {status} Whatever"),
        headers,
        body: body.as_bytes().to_vec(),
    };
    Input::Outcome {
        leg,
        key: ClientKey::of_response(&answer).expect("a client key"),
        outcome: Outcome::Response(answer),
    }
}

/// The answers to requests inside a dialog (re-INVITEs, UPDATEs, REFERs): those sent without
/// a tag of their own.
pub fn reinvite_answers(outputs: &[Output]) -> Vec<&Answer> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Respond { answer, tag, .. } if tag.is_empty() => Some(answer),
            _ => None,
        })
        .collect()
}

/// Each way through the relay opened or closed.
pub fn flows(outputs: &[Output]) -> Vec<(RelaySide, bool)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::MediaFlow { to, open } => Some((*to, *open)),
            _ => None,
        })
        .collect()
}

/// The requests sent to legs inside their dialogs: method, message, branch.
pub fn requests_to_leg(outputs: &[Output]) -> Vec<(&'static str, RawMessage, String)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Request {
                to: Peer::Leg(_),
                method,
                bytes,
                branch,
            } => Some((
                *method,
                message::from_text(&String::from_utf8_lossy(bytes)),
                branch.clone(),
            )),
            _ => None,
        })
        .collect()
}
