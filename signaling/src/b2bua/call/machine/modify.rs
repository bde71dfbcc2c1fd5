//! Requests that refresh or change an answered call's session: a re-INVITE or an UPDATE (RFC
//! 3311) from either side. One that keeps the session (the same `o=` version, or no body) is
//! a refresh, answered by the edge with the session description it gave that side (RFC 4028's
//! timer re-armed). One that changes it — hold (`a=sendonly`, `a=inactive`), resume, a new
//! address or codec — is passed on: the edge sends the other side the same change, pointed at
//! the relay, and answers the asking side with the other side's answer, pointed at the relay;
//! the relay then follows (where each side's media goes, re-latched when its address changed,
//! and which ways media may flow). One change at a time: a request while one is being passed
//! on (either way) or while the edge's own refresh or offer is pending gets 491 (RFC 3261
//! §14.1), which the asking side retries after its own timer. A change the other side refuses
//! is refused with its status and the call goes on as it was; one the other side no longer
//! knows (408, 481, no answer) ends the call `session_expired`.

use std::time::Instant;

use domain::call::EndCause;
use rsip::headers::UntypedHeader;

use super::{Call, Phase, side_leg};
use crate::answer::Answer;
use crate::b2bua::call::change::{self, Passing, Reply};
use crate::b2bua::call::interface::{Context, Output, Peer};
use crate::b2bua::call::rules::content_type;
use crate::media::relay::Side as RelaySide;
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use crate::transaction::TransactionKey;

/// Where a side is reached through the relay.
pub(super) fn relay_side(side: Peer) -> RelaySide {
    match side {
        Peer::Caller => RelaySide::Caller,
        Peer::Leg(_) => RelaySide::Callee,
    }
}

impl Call {
    /// A re-INVITE or an UPDATE inside one of the call's dialogs.
    pub(super) fn on_modify(
        &mut self,
        key: TransactionKey,
        request: RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let method = change::method_of(&request);
        let side = match self.phase {
            Phase::Answered(_) if self.is_from_caller(&request) => Some(Peer::Caller),
            Phase::Answered(winner) if self.leg_of(&request) == Some(winner) => {
                Some(Peer::Leg(winner))
            }
            _ => None,
        };
        let answer = match side {
            // RFC 3261 §14.2: a second INVITE before the first is answered (and nothing to
            // update yet).
            None if self.phase == Phase::Setup => {
                let wait = uuid::Uuid::new_v4().as_bytes()[0] % 11;
                Answer::status(500).header(rsip::Header::RetryAfter(
                    rsip::headers::RetryAfter::new(wait.to_string()),
                ))
            }
            None => Answer::status(481),
            // One change at a time, and none while the edge's own offer to that side (a 2xx
            // to a request without one, or a refresh) waits for its answer (RFC 3264 §4).
            Some(side)
                if self.passing.is_some()
                    || self.reoffer.is_some()
                    || self.offer_awaits_answer(side)
                    || self.refresh_pending(side) =>
            {
                Answer::with_reason(491, "Request Pending")
            }
            Some(side) => {
                if let Some(too_small) = Self::interval_too_small(&request) {
                    too_small
                } else if self.joined.is_some() && self.changes_session(side, &request) {
                    // The other side is another call's party: not passed on.
                    Answer::with_reason(488, "Not Acceptable Here (the call is joined to another)")
                } else if self.changes_session(side, &request) {
                    return self.pass_on(side, key, request, method, ctx);
                } else {
                    let (_, sent) = self.sessions.of(side).clone();
                    let answer = change::with_contact(Answer::status(200), ctx)
                        .body("application/sdp", sent);
                    let answer = self.with_session_timer(answer, side, &request, now);
                    return self.answer_side(side, key, request, method, answer, now);
                }
            }
        };
        self.out.push(Output::Respond {
            key,
            request,
            answer,
            tag: String::new(),
        });
    }

    /// Whether a request from `side` changes its session (a new `o=` version).
    fn changes_session(&self, side: Peer, request: &RawMessage) -> bool {
        change::changes_session(&self.sessions.of(side).0, request)
    }

    /// Answers `side`'s request with a 2xx (repeated until ACKed, for an INVITE).
    fn answer_side(
        &mut self,
        side: Peer,
        key: TransactionKey,
        request: RawMessage,
        method: &str,
        answer: Answer,
        now: Instant,
    ) {
        self.superseded_2xx(side);
        self.out.push(Output::Respond {
            key: key.clone(),
            request: request.clone(),
            answer: answer.clone(),
            tag: String::new(),
        });
        if method == "INVITE" {
            self.await_ack_of(side_leg(side), key, request, String::new(), answer, now);
        }
    }

    /// `body` as `to` is to see it: pointed at the relay's port facing it, when there is one,
    /// as the next version of the session the edge gave `to` (whoever is on the other side
    /// by now).
    pub(super) fn toward(&self, to: Peer, body: &[u8]) -> Vec<u8> {
        match &self.media {
            Some(media) => change::toward(body, media, relay_side(to), &self.sessions.of(to).1),
            None => body.to_vec(),
        }
    }

    /// The other side of an answered call.
    pub(super) fn other_side(&self, side: Peer) -> Option<Peer> {
        match (self.phase, side) {
            (Phase::Answered(winner), Peer::Caller) => Some(Peer::Leg(winner)),
            (Phase::Answered(_), Peer::Leg(_)) => Some(Peer::Caller),
            _ => None,
        }
    }

    /// Sends the change `from` asked for on to the other side.
    fn pass_on(
        &mut self,
        from: Peer,
        key: TransactionKey,
        request: RawMessage,
        method: &'static str,
        ctx: &dyn Context,
    ) {
        let Some(to) = self.other_side(from) else {
            return;
        };
        let offered = self.toward(to, &request.body);
        let local = ctx.local();
        let mut extra = vec![
            ("Contact", format!("<sip:ringledger@{local}>")),
            ("Content-Type", content_type(&request)),
        ];
        extra.extend(self.timer_headers_toward(to));
        let Some((bytes, branch)) = self.in_dialog(to, local, method, None, &extra, &offered)
        else {
            self.out.push(Output::Respond {
                key,
                request,
                answer: Answer::status(500),
                tag: String::new(),
            });
            return;
        };
        tracing::debug!(call = %self.id, ?from, method, "session change passed on");
        self.out.push(Output::Request {
            to,
            method,
            branch: branch.clone(),
            bytes,
        });
        self.passing = Some(Passing {
            from,
            key,
            request,
            method,
            to,
            branch,
            offered,
        });
    }

    /// Whether `key` is the change being passed on.
    pub(super) fn is_passed_on(&self, key: &ClientKey) -> bool {
        change::is_passed_on(&self.passing, key)
    }

    pub(super) fn on_passed_outcome(&mut self, outcome: Outcome, now: Instant, ctx: &dyn Context) {
        let Some((passing, reply)) = change::settle(&mut self.passing, outcome) else {
            return;
        };
        match reply {
            Reply::Took(response) => self.passed(passing, &response, now, ctx),
            Reply::Lost(status) => {
                tracing::info!(call = %self.id, status, "a session change met a lost dialog; hanging up");
                self.out.push(passing.refused(Answer::status(status)));
                if let Phase::Answered(winner) = self.phase {
                    self.hang_up(winner, EndCause::SessionExpired, now, ctx);
                }
            }
            Reply::Refused(status) => self.out.push(passing.refused(Answer::status(status))),
        }
    }

    /// The other side took the change: its 2xx ACKed, the relay pointed where each side's
    /// media now goes, and the asking side answered.
    fn passed(&mut self, passing: Passing, response: &RawMessage, now: Instant, ctx: &dyn Context) {
        if passing.method == "INVITE" {
            self.ack_reinvite(passing.to, &passing.branch, response, ctx);
        }
        self.refreshed_by_change(passing.to, response, now);
        let to_asker = self.toward(passing.from, &response.body);
        self.media_peer(passing.from, &passing.request.body);
        self.media_peer(passing.to, &response.body);
        self.sessions
            .set(passing.from, &passing.request.body, &to_asker);
        self.sessions
            .set(passing.to, &response.body, &passing.offered);
        self.update_flows(now);
        let answer =
            change::with_contact(Answer::status(200), ctx).body(&content_type(response), to_asker);
        let answer = self.with_session_timer(answer, passing.from, &passing.request, now);
        self.answer_side(
            passing.from,
            passing.key,
            passing.request,
            passing.method,
            answer,
            now,
        );
    }

    /// Points the relay at where `side` now receives, by its session description.
    pub(super) fn media_peer(&mut self, side: Peer, body: &[u8]) {
        if self.media.is_none() {
            return;
        }
        let Some(rtp) = sdp::audio_endpoint(body) else {
            return;
        };
        let from = match side {
            Peer::Caller => self.caller.reach.peer.ip(),
            Peer::Leg(l) => self.legs[l].reach.peer.ip(),
        };
        self.out.push(Output::MediaPeer {
            side: relay_side(side),
            rtp,
            from,
        });
    }

    /// Opens or closes each way through the relay as the two sides' session descriptions say:
    /// media goes to a side that receives, from one that sends.
    pub(super) fn update_flows(&mut self, now: Instant) {
        if self.media.is_none() {
            return;
        }
        let flows = change::flows(
            &self.sessions.of(Peer::Caller).0,
            &self.sessions.of(Peer::Leg(0)).0,
        );
        for (side, open) in [RelaySide::Caller, RelaySide::Callee]
            .into_iter()
            .zip(flows)
        {
            if self.flows[side as usize] != open {
                self.out.push(Output::MediaFlow { to: side, open });
            }
        }
        if flows != self.flows && !flows.contains(&false) {
            // Off hold: silence is timed from now.
            self.media_since = Some(now);
        }
        self.flows = flows;
    }

    /// A change still being passed on when the call ends is answered 487 (RFC 3261 §15.1.2).
    pub(super) fn drop_passing(&mut self) {
        if let Some(passing) = self.passing.take() {
            self.out.push(passing.refused(Answer::status(487)));
        }
    }
}
