//! What the call and the callback share to carry a session change — a re-INVITE or an UPDATE
//! with a new `o=` version — from one side of an answered call to the other (RFC 3261 §14,
//! RFC 3311): the change in flight, how a request is told from a refresh, the session
//! description the other side is offered, which ways media may then flow, and the 2xx the
//! edge repeats over UDP until the asking side ACKs it.

use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;

use super::interface::{Context, MediaPorts, Output, Peer};
use super::rules::outcome_status;
use crate::answer::Answer;
use crate::media::relay::Side as RelaySide;
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use crate::transaction::{T1, T2, TransactionKey};

/// A change of session one side asked for, sent on to the other side.
pub(crate) struct Passing {
    pub from: Peer,
    pub key: TransactionKey,
    pub request: RawMessage,
    pub method: &'static str,
    pub to: Peer,
    /// The branch of the request sent to `to`.
    pub branch: String,
    /// The session description `to` was offered.
    pub offered: Vec<u8>,
}

impl Passing {
    /// The asking side's answer when the change does not go through: `answer`.
    pub fn refused(self, answer: Answer) -> Output {
        Output::Respond {
            key: self.key,
            request: self.request,
            answer,
            tag: String::new(),
        }
    }
}

/// What became of a change passed on to the other side.
pub(crate) enum Reply {
    /// Taken: the other side's 2xx.
    Took(RawMessage),
    /// The other side no longer has the session (408, 481, or no answer: RFC 3261 §14.1):
    /// the call ends.
    Lost(u16),
    /// Refused (491 included, which the asking side retries): the call goes on as it was.
    Refused(u16),
}

/// What `outcome` makes of a change passed on; None while it is provisional.
pub(crate) fn reply(outcome: Outcome) -> Option<Reply> {
    let status = outcome_status(&outcome);
    match (status, outcome) {
        (0..=199, _) => None,
        (200..=299, Outcome::Response(response)) => Some(Reply::Took(response)),
        (408 | 481, _) => Some(Reply::Lost(status)),
        (status, _) => Some(Reply::Refused(status)),
    }
}

/// Whether `key` is the request `passing` sent on (pending, or answered 2xx).
pub(crate) fn is_passed_on(passing: &Option<Passing>, key: &ClientKey) -> bool {
    passing.as_ref().is_some_and(|p| p.branch == key.branch)
}

/// The change in flight, taken out once `outcome` settles it, with what became of it (None
/// while it is provisional, or when nothing is in flight).
pub(crate) fn settle(passing: &mut Option<Passing>, outcome: Outcome) -> Option<(Passing, Reply)> {
    let reply = reply(outcome)?;
    Some((passing.take()?, reply))
}

/// `INVITE` or `UPDATE`: the method of a request that may change a session.
pub(crate) fn method_of(request: &RawMessage) -> &'static str {
    if request.start_line.starts_with("UPDATE ") {
        "UPDATE"
    } else {
        "INVITE"
    }
}

/// The session's identity and version from a session description's `o=` line.
fn session_version(sdp: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(sdp).ok()?;
    let origin = text.lines().find_map(|l| l.strip_prefix("o="))?;
    let mut fields = origin.split_whitespace().skip(1);
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
}

/// Whether `request` changes the session last `heard` from its side (a new `o=` version);
/// one without a body, or with the same version, only refreshes it.
pub(crate) fn changes_session(heard: &[u8], request: &RawMessage) -> bool {
    !request.body.is_empty() && session_version(&request.body) != session_version(heard)
}

/// `body` as the side behind the relay's `side` is to see it: pointed at the relay's port
/// facing it, as the next version of the session the edge last gave it (`last`).
pub(crate) fn toward(body: &[u8], media: &MediaPorts, side: RelaySide, last: &[u8]) -> Vec<u8> {
    if body.is_empty() {
        return vec![];
    }
    let rebuilt = sdp::rebuild(body, media.address, media.port(side));
    sdp::continuing(&rebuilt, last)
}

/// Which ways media may flow through the relay, by the session descriptions heard from its
/// two sides: `[to the caller's side, to the callee's side]` — media goes to a side that
/// receives, from one that sends.
pub(crate) fn flows(caller: &[u8], callee: &[u8]) -> [bool; 2] {
    let caller = sdp::direction(caller);
    let callee = sdp::direction(callee);
    [
        caller.receives && callee.sends,
        callee.receives && caller.sends,
    ]
}

/// `answer` naming the edge (at the context's local address) as the contact.
pub(crate) fn with_contact(answer: Answer, ctx: &dyn Context) -> Answer {
    answer.header(rsip::Header::Contact(rsip::headers::Contact::new(format!(
        "<sip:ringledger@{}>",
        ctx.local()
    ))))
}

/// The CSeq number of the request `response` answers (the number its ACK carries).
pub(crate) fn cseq_number(response: &RawMessage) -> u32 {
    response
        .header("CSeq")
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap_or(1)
}

/// A 2xx the edge sent, repeated over UDP until it is ACKed (RFC 3261 §13.3.1.4).
pub(crate) struct Unacked {
    /// None: the caller; Some: a leg.
    pub leg: Option<usize>,
    /// The server transaction the 2xx answers, and its request.
    pub key: TransactionKey,
    pub request: RawMessage,
    pub tag: String,
    pub answer: Answer,
    pub next: Instant,
    interval: Duration,
    pub give_up: Instant,
}

impl Unacked {
    /// `answer`, sent now to `request` (through `key`, with `tag`) from `leg`.
    pub fn new(
        leg: Option<usize>,
        key: TransactionKey,
        request: RawMessage,
        tag: String,
        answer: Answer,
        now: Instant,
    ) -> Self {
        Self {
            leg,
            key,
            request,
            tag,
            answer,
            next: now + T1,
            interval: T1,
            give_up: now + 64 * T1,
        }
    }

    /// The 2xx again, if it is due (each interval twice the last, at most T2).
    pub fn repeat(&mut self, now: Instant) -> Option<Output> {
        if now < self.next {
            return None;
        }
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
        Some(Output::Respond {
            key: self.key.clone(),
            request: self.request.clone(),
            answer: self.answer.clone(),
            tag: self.tag.clone(),
        })
    }

    /// When it next wants the clock: the next repeat, or giving up.
    pub fn wake(&self) -> Instant {
        self.next.min(self.give_up)
    }
}

/// The 2xx of `unacked` that are due again now.
pub(crate) fn repeats(unacked: &mut [Unacked], now: Instant) -> Vec<Output> {
    unacked.iter_mut().filter_map(|u| u.repeat(now)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: &[u8] = b"v=0\r\no=a 1 2 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    const OPEN: &[u8] = b"v=0\r\no=b 7 7 IN IP4 127.0.0.8\r\ns=-\r\nc=IN IP4 127.0.0.8\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

    #[test]
    fn media_flows_only_from_a_side_that_sends_to_one_that_receives() {
        // The caller holds (sends only): nothing goes to it; its music goes to the callee.
        assert_eq!(flows(HELD, OPEN), [false, true]);
        assert_eq!(flows(OPEN, HELD), [true, false]);
        assert_eq!(flows(OPEN, OPEN), [true, true]);
    }

    #[test]
    fn only_a_new_session_version_is_a_change() {
        let request = |body: &[u8]| RawMessage {
            start_line: "INVITE sip:x@127.0.0.1 SIP/2.0".into(),
            headers: vec![],
            body: body.to_vec(),
        };
        assert!(!changes_session(HELD, &request(HELD)), "a refresh");
        assert!(!changes_session(HELD, &request(b"")), "no body");
        let next = String::from_utf8_lossy(HELD).replace("1 2 IN", "1 3 IN");
        assert!(changes_session(HELD, &request(next.as_bytes())));
    }

    #[test]
    fn an_unacknowledged_2xx_is_repeated_at_doubling_intervals_up_to_t2() {
        let now = Instant::now();
        let request = crate::message::from_text(
            "INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9;branch=z9hG4bKu\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.9>;tag=a\r\nTo: <sip:x@127.0.0.1>;tag=x\r\n\
             Call-ID: u\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n",
        );
        let key = TransactionKey::of_request(&request).expect("a key");
        let mut unacked = Unacked::new(None, key, request, "t".into(), Answer::status(200), now);
        assert!(unacked.repeat(now).is_none(), "sent once already");
        let mut at = now;
        let mut gaps = vec![];
        while at < now + 64 * T1 {
            at += Duration::from_millis(10);
            let before = unacked.next;
            if unacked.repeat(at).is_some() {
                gaps.push(unacked.next - before);
            }
        }
        assert_eq!(gaps[0], 2 * T1);
        assert!(gaps.iter().all(|g| *g <= T2 + Duration::from_millis(10)));
        assert!(unacked.wake() <= now + 64 * T1);
    }
}
