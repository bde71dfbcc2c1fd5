//! The legs the call places: each recorded, then INVITEd; its answers (ringing, answered,
//! failed), its CANCEL, the ACK of its 2xx and its BYE.

use std::time::Instant;

use domain::call::{CallCommand, LegFailure, LegRole};
use domain::ids::LegId;

use super::session_timer::LEG_SESSION_INTERVAL;
use super::{Call, Leg, LegState, Phase, Then};
use crate::answer::Answer;
use crate::b2bua::call::change;
use crate::b2bua::call::interface::{Context, Output, Peer, Reach};
use crate::b2bua::call::rules::{bye_in, content_type, status_of};
use crate::b2bua::dialog_key;
use crate::b2bua::plan::Target;
use crate::dialog::Dialog;
use crate::media::relay::Side as RelaySide;
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::ClientKey;
use crate::requests::{self, LegInvite};

impl Call {
    /// Records a leg; its INVITE leaves once it is recorded.
    pub(super) fn place_leg(&mut self, target: Target, ctx: &dyn Context) {
        if self.template.is_none() || self.phase != Phase::Setup {
            return;
        }
        let Some(reach) = ctx.reach(target.destination, target.transport) else {
            tracing::debug!(call = %self.id, to = %target.destination, "no way to reach a contact; not rung");
            return;
        };
        let leg_id = LegId(uuid::Uuid::now_v7());
        let account = self.plan.account.clone();
        self.record_then(
            CallCommand::StartLeg {
                leg_id,
                target: target.target.clone(),
                path: target.path,
                role: LegRole::Callee,
                account,
                extension: target.extension.clone(),
            },
            Then::LegPlaced {
                target: Box::new(target),
                leg_id,
                reach,
            },
        );
    }

    /// Sends the INVITE of a recorded leg, with the caller's offer (and a session timer).
    pub(super) fn send_invite(
        &mut self,
        target: &Target,
        leg_id: LegId,
        reach: Reach,
        ctx: &dyn Context,
    ) {
        let Some(template) = self.template.clone() else {
            return;
        };
        self.invite_leg(
            &LegInvite {
                request_uri: &target.request_uri,
                local: ctx.local(),
                transport: reach.transport,
                from_user: &template.caller_id,
                max_forwards: template.max_forwards,
                content_type: template.content_type.as_deref(),
                body: &template.offer,
                // A leg without an offer (the caller's came without one) is not refreshed: a
                // re-INVITE would have to answer the callee's new offer.
                session_expires: (!template.offer.is_empty()).then_some(LEG_SESSION_INTERVAL),
                extra: &target.headers,
            },
            target,
            leg_id,
            reach,
        );
    }

    /// Sends a leg's INVITE as `invite` describes it; the leg's index.
    pub(super) fn invite_leg(
        &mut self,
        invite: &LegInvite,
        target: &Target,
        leg_id: LegId,
        reach: Reach,
    ) -> usize {
        let requests::NewLeg {
            invite,
            call_id,
            from_tag,
            branch,
        } = requests::new_leg(invite);
        let key = dialog_key(&call_id, &from_tag);
        self.out.push(Output::Register(key.clone()));
        self.dialogs.push(key);
        let leg = self.legs.len();
        let mut placed = Leg::placed(leg_id, invite.clone(), reach);
        placed.target = Some(target.target.clone());
        self.legs.push(placed);
        self.out.push(Output::Invite {
            leg,
            to: target.destination,
            transport: target.transport,
            key: ClientKey {
                branch,
                method: "INVITE".into(),
            },
            request: invite,
        });
        leg
    }

    pub(super) fn on_leg_response(
        &mut self,
        leg: usize,
        response: RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let Some(status) = status_of(&response) else {
            return;
        };
        if leg >= self.legs.len() {
            return;
        }
        if let Some(cancel) = self.legs[leg].hear(leg, status) {
            self.out.push(cancel);
        }
        if self.is_transfer_leg(leg) {
            return self.on_transfer_response(leg, status, response, now, ctx);
        }
        match status {
            100 => {}
            101..=199 => self.on_leg_ringing(leg, status, response, ctx),
            200..=299 => self.on_leg_answered(leg, response, ctx),
            _ => self.on_leg_failed(leg, status, LegFailure::Rejected, now),
        }
    }

    pub(super) fn on_leg_ringing(
        &mut self,
        leg: usize,
        status: u16,
        response: RawMessage,
        ctx: &dyn Context,
    ) {
        if self.legs[leg].state != LegState::Trying {
            return;
        }
        self.legs[leg].state = LegState::Ringing;
        let leg_id = self.legs[leg].id;
        self.out.record(CallCommand::LegRinging { leg_id });
        if self.phase == Phase::Setup && self.self_answered.is_some() {
            // The menu answered the caller: the callee's early media (a carrier's ringback)
            // goes straight to it through the relay.
            self.callee_session(leg, &response.body);
        } else if self.phase == Phase::Setup && !self.rang {
            self.rang = true;
            // Early media (a 183 with a session description) is passed on as it came.
            let status = if status == 183 && !response.body.is_empty() {
                183
            } else {
                180
            };
            let body = self.callee_session(leg, &response.body);
            let answer = change::with_contact(Answer::status(status), ctx)
                .body(&content_type(&response), body);
            self.respond(answer);
        }
    }

    pub(super) fn on_leg_answered(&mut self, leg: usize, response: RawMessage, ctx: &dyn Context) {
        // Every 2xx is ACKed, whatever becomes of the leg.
        if let Err(e) = self.legs[leg].answered_with(&response) {
            tracing::info!(call = %self.id, error = %e, "a leg's 2xx cannot start a dialog");
            return;
        }
        // A delayed offer (the caller's INVITE had no session description, so the 2xx carries
        // the offer): the winner's ACK waits for the caller's, which carries the answer.
        let delayed_offer = self.caller.invite.body.is_empty() && !response.body.is_empty();
        match self.legs[leg].ack.clone() {
            Some(bytes) => self.out.push(Output::Ack {
                to: Peer::Leg(leg),
                bytes,
            }),
            None if delayed_offer && self.phase == Phase::Setup => {}
            None if delayed_offer && self.phase == Phase::Answered(leg) => {}
            None => self.ack_leg(leg, &[], &[], ctx),
        }
        match self.phase {
            Phase::Setup if self.legs[leg].state != LegState::Done => {
                let leg_id = self.legs[leg].id;
                self.record_then(
                    CallCommand::LegAnswered { leg_id },
                    Then::LegAnswered { leg, response },
                );
            }
            Phase::Answered(winner) if winner == leg || self.caller_leg == Some(leg) => {}
            _ => {
                // Answered after another leg won, after it was cancelled, or after the call
                // ended: hang it up.
                if !self.legs[leg].bye_sent {
                    let leg_id = self.legs[leg].id;
                    if self.phase != Phase::Over {
                        self.out.record(CallCommand::LegAnswered { leg_id });
                    }
                    self.bye_leg(leg, ctx);
                }
            }
        }
    }

    /// The answer of `leg` is recorded: it wins the call, the others are cancelled and the
    /// caller hears 200.
    pub(super) fn won_by(
        &mut self,
        leg: usize,
        response: &RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) {
        self.legs[leg].state = LegState::Answered;
        self.answered_by(leg, now);
        self.take_callee_session_timer(leg, response, now);
        self.drop_keyed_call_in(LegFailure::AnsweredElsewhere);
        self.stop_waiting_for_call_in();
        self.to_place.clear();
        self.pending.clear();
        self.cancel_legs(LegFailure::AnsweredElsewhere);
        let body = self.callee_session(leg, &response.body);
        let caller_invite = self.caller.invite.clone();
        let offered = self
            .template
            .as_ref()
            .map(|t| t.offer.clone())
            .unwrap_or_default();
        self.sessions.set(Peer::Leg(leg), &response.body, &offered);
        if let Some((session, _)) = self.self_answered.clone() {
            // The menu answered the caller: its session stays as agreed then, and media now
            // passes between the two through the relay.
            self.sessions
                .set(Peer::Caller, &caller_invite.body, &session);
            self.update_flows(now);
            tracing::info!(call = %self.id, leg = %self.legs[leg].id, "keyed call answered");
            return;
        }
        self.caller_dialog = Dialog::as_callee(&self.caller.invite, &self.caller.tag).ok();
        self.sessions.set(Peer::Caller, &caller_invite.body, &body);
        self.update_flows(now);
        let answer =
            change::with_contact(Answer::status(200), ctx).body(&content_type(response), body);
        let answer = self.with_session_timer(answer, Peer::Caller, &caller_invite, now);
        self.respond(answer.clone());
        self.await_ack(None, answer, now);
        tracing::info!(call = %self.id, leg = %self.legs[leg].id, "call answered");
    }

    pub(super) fn on_leg_failed(
        &mut self,
        leg: usize,
        status: u16,
        failure: LegFailure,
        now: Instant,
    ) {
        if leg >= self.legs.len() {
            return;
        }
        if self.legs[leg].is_ringing() {
            self.legs[leg].state = LegState::Done;
            self.legs[leg].failed_with = Some(status);
            let leg_id = self.legs[leg].id;
            self.out.record(CallCommand::LegFailed {
                leg_id,
                sip_status: status,
                failure,
            });
        }
        self.end_if_nothing_rings(now);
    }

    /// Cancels every leg still ringing, recording why.
    pub(super) fn cancel_legs(&mut self, why: LegFailure) {
        for leg in 0..self.legs.len() {
            if !self.legs[leg].is_ringing() {
                continue;
            }
            self.legs[leg].give_up(leg, why, &mut self.out);
        }
    }

    /// ACKs a leg's 2xx (inside its dialog), with `body` when it completes a delayed offer.
    pub(super) fn ack_leg(
        &mut self,
        leg: usize,
        extra: &[(&str, String)],
        body: &[u8],
        ctx: &dyn Context,
    ) {
        if let Some(bytes) = self.legs[leg].ack(ctx.local(), extra, body) {
            self.out.push(Output::Ack {
                to: Peer::Leg(leg),
                bytes,
            });
        }
    }

    pub(super) fn bye_leg(&mut self, leg: usize, ctx: &dyn Context) {
        if let Some((bytes, branch)) = self.legs[leg].bye(ctx.local()) {
            self.send_bye(Peer::Leg(leg), bytes, branch);
        }
    }

    pub(super) fn bye_caller(&mut self, ctx: &dyn Context) {
        if let Some(leg) = self.caller_leg {
            // The caller's place was taken by a leg (a transfer).
            return self.bye_leg(leg, ctx);
        }
        self.bye_caller_from(ctx.local());
    }

    /// A BYE to the caller (in its own dialog), leaving from `local`.
    pub(super) fn bye_caller_from(&mut self, local: std::net::SocketAddr) {
        let local = local.to_string();
        let transport = self.caller.reach.transport;
        let Some(dialog) = self.caller_dialog.as_mut() else {
            return;
        };
        let (bytes, branch) = bye_in(dialog, transport, &local);
        self.send_bye(Peer::Caller, bytes, branch);
    }

    pub(super) fn send_bye(&mut self, to: Peer, bytes: Vec<u8>, branch: String) {
        self.byes_pending += 1;
        self.out.push(Output::Request {
            to,
            method: "BYE",
            branch,
            bytes,
        });
    }

    /// The callee's session description (from `leg`) as the caller is to see it: pointed at
    /// the relay (which learns where the callee's media goes) when there is one.
    pub(super) fn callee_session(&mut self, leg: usize, body: &[u8]) -> Vec<u8> {
        let Some(media) = self.media else {
            return body.to_vec();
        };
        let Some(rtp) = sdp::audio_endpoint(body) else {
            return body.to_vec();
        };
        self.out.push(Output::MediaPeer {
            side: RelaySide::Callee,
            rtp,
            from: self.legs[leg].reach.peer.ip(),
        });
        sdp::rebuild(body, media.address, media.port(RelaySide::Caller))
    }
}
