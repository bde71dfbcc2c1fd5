//! Session changes in a callback: a re-INVITE or an UPDATE from either leg (the extension or
//! the destination, both on the carrier's network), as the call passes them on. One that keeps
//! the session (the same `o=` version, or no body) is answered by the edge with the session it
//! gave that leg; one that changes it (hold, resume, a new address or codec) is sent to the
//! other leg, pointed at the relay, once the two are bridged, and the other leg's answer passed
//! back; the relay follows. One change at a time (491 meanwhile, and while the destination
//! still rings); a refusal is passed back and the callback goes on as it was; a lost dialog
//! (408, 481, no answer) ends it `session_expired`.

use std::time::Instant;

use domain::call::EndCause;

use super::{Callback, Step};
use crate::answer::Answer;
use crate::b2bua::call::change::{self, Passing, Reply, Unacked};
use crate::b2bua::call::{Context, LegState, Output, Peer, content_type};
use crate::media::relay::Side as RelaySide;
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use crate::transaction::TransactionKey;

/// The relay's side facing leg `leg` (the extension is rung first, as a call's caller).
fn relay_side(leg: usize) -> RelaySide {
    if leg == super::EXTENSION {
        RelaySide::Caller
    } else {
        RelaySide::Callee
    }
}

impl Callback {
    /// The answered leg an in-dialog request comes from, if it is one.
    pub(super) fn leg_of(&self, request: &RawMessage) -> Option<usize> {
        self.legs.iter().position(|l| {
            l.state == LegState::Answered && l.dialog.as_ref().is_some_and(|d| d.matches(request))
        })
    }

    /// A re-INVITE or an UPDATE inside one of the callback's dialogs.
    pub(super) fn on_modify(
        &mut self,
        key: TransactionKey,
        request: RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let method = change::method_of(&request);
        let answer = match self.leg_of(&request) {
            None => Answer::status(481),
            Some(_) if self.step == Step::Over => Answer::status(481),
            Some(leg) => {
                let changes = change::changes_session(&self.sessions[leg].0, &request);
                if self.passing.is_some() || (changes && self.step != Step::Talking) {
                    // One change at a time; and none before there is another side to take it.
                    Answer::with_reason(491, "Request Pending")
                } else if changes {
                    return self.pass_on(leg, key, request, method, ctx);
                } else {
                    let sent = self.sessions[leg].1.clone();
                    let answer = change::with_contact(Answer::status(200), ctx)
                        .body("application/sdp", sent);
                    return self.answer_leg(leg, key, request, method, answer, now);
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

    /// Answers leg `leg`'s request with a 2xx (repeated until ACKed, for an INVITE over UDP).
    fn answer_leg(
        &mut self,
        leg: usize,
        key: TransactionKey,
        request: RawMessage,
        method: &str,
        answer: Answer,
        now: Instant,
    ) {
        // A new request shows the leg has the edge's earlier 2xx.
        self.unacked.retain(|u| u.leg != Some(leg));
        self.out.push(Output::Respond {
            key: key.clone(),
            request: request.clone(),
            answer: answer.clone(),
            tag: String::new(),
        });
        if method == "INVITE" && !self.legs[leg].reach.is_reliable() {
            self.unacked.push(Unacked::new(
                Some(leg),
                key,
                request,
                String::new(),
                answer,
                now,
            ));
        }
    }

    /// Sends the change leg `from` asked for on to the other leg, pointed at the relay.
    fn pass_on(
        &mut self,
        from: usize,
        key: TransactionKey,
        request: RawMessage,
        method: &'static str,
        ctx: &dyn Context,
    ) {
        let to = 1 - from;
        let offered = change::toward(
            &request.body,
            &self.media,
            relay_side(to),
            &self.sessions[to].1,
        );
        let extra = [
            ("Contact", format!("<sip:ringledger@{}>", ctx.local())),
            ("Content-Type", content_type(&request)),
        ];
        let Some((bytes, branch)) =
            self.legs[to].request(ctx.local(), method, None, &extra, &offered)
        else {
            self.out.push(Output::Respond {
                key,
                request,
                answer: Answer::status(500),
                tag: String::new(),
            });
            return;
        };
        tracing::debug!(call = %self.id, from, method, "callback session change passed on");
        self.out.push(Output::Request {
            to: Peer::Leg(to),
            method,
            branch: branch.clone(),
            bytes,
        });
        self.passing = Some(Passing {
            from: Peer::Leg(from),
            key,
            request,
            method,
            to: Peer::Leg(to),
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
                tracing::info!(call = %self.id, status, "a callback's session change met a lost dialog; hanging up");
                self.out.push(passing.refused(Answer::status(status)));
                self.hang_up(EndCause::SessionExpired, now, ctx);
            }
            Reply::Refused(status) => self.out.push(passing.refused(Answer::status(status))),
        }
    }

    /// The other leg took the change: its 2xx ACKed, the relay pointed where each leg's media
    /// now goes, and the asking leg answered.
    fn passed(&mut self, passing: Passing, response: &RawMessage, now: Instant, ctx: &dyn Context) {
        let (Peer::Leg(from), Peer::Leg(to)) = (passing.from, passing.to) else {
            return;
        };
        if passing.method == "INVITE" {
            let cseq = change::cseq_number(response);
            if let Some((ack, _)) = self.legs[to].request(ctx.local(), "ACK", Some(cseq), &[], &[])
            {
                self.out.push(Output::Ack {
                    to: Peer::Leg(to),
                    bytes: ack.clone(),
                });
                self.reinvite_ack = Some((passing.branch.clone(), to, ack));
            }
        }
        let to_asker = change::toward(
            &response.body,
            &self.media,
            relay_side(from),
            &self.sessions[from].1,
        );
        self.media_peer(from, &passing.request.body);
        self.media_peer(to, &response.body);
        self.sessions[from] = (passing.request.body.clone(), to_asker.clone());
        self.sessions[to] = (response.body.clone(), passing.offered);
        self.update_flows(now);
        let answer =
            change::with_contact(Answer::status(200), ctx).body(&content_type(response), to_asker);
        self.answer_leg(
            from,
            passing.key,
            passing.request,
            passing.method,
            answer,
            now,
        );
    }

    /// Whether `key` is the re-INVITE whose 2xx the edge last ACKed.
    pub(super) fn is_reinvite_acked(&self, key: &ClientKey) -> bool {
        self.reinvite_ack
            .as_ref()
            .is_some_and(|(branch, _, _)| *branch == key.branch)
    }

    /// The 2xx to a passed-on re-INVITE came again: so does its ACK.
    pub(super) fn ack_again(&mut self, outcome: Outcome) {
        if let (Some(Reply::Took(_)), Some((_, leg, ack))) =
            (change::reply(outcome), &self.reinvite_ack)
        {
            self.out.push(Output::Ack {
                to: Peer::Leg(*leg),
                bytes: ack.clone(),
            });
        }
    }

    /// A leg's ACK of the edge's 2xx to its re-INVITE.
    pub(super) fn on_ack(&mut self, ack: &RawMessage) {
        if let Some(leg) = self.leg_of(ack) {
            self.unacked.retain(|u| u.leg != Some(leg));
        }
    }

    /// Points the relay at where leg `leg` now receives, by its session description.
    fn media_peer(&mut self, leg: usize, body: &[u8]) {
        if let Some(rtp) = sdp::audio_endpoint(body) {
            self.out.push(Output::MediaPeer {
                side: relay_side(leg),
                rtp,
                from: self.legs[leg].reach.peer.ip(),
            });
        }
    }

    /// Opens or closes each way through the relay as the legs' session descriptions say.
    fn update_flows(&mut self, now: Instant) {
        let flows = change::flows(&self.sessions[0].0, &self.sessions[1].0);
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

    /// A change still being passed on when the callback ends is answered 487.
    pub(super) fn drop_passing(&mut self) {
        if let Some(passing) = self.passing.take() {
            self.out.push(passing.refused(Answer::status(487)));
        }
    }

    /// The edge's 2xx to a re-INVITE again where it is due; never ACKed in 64·T1, the callback
    /// ends (RFC 3261 §13.3.1.4).
    pub(super) fn repeat_2xx(&mut self, now: Instant, ctx: &dyn Context) {
        if self.unacked.iter().any(|u| now >= u.give_up) {
            tracing::info!(call = %self.id, "no ACK for the 2xx to a re-INVITE; hanging up");
            return self.hang_up(EndCause::Failed, now, ctx);
        }
        let due = change::repeats(&mut self.unacked, now);
        self.out.extend(due);
    }
}
