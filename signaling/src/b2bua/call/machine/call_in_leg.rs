//! Alternate path (b) inside a call: waiting for the extension to call in, telling its
//! devices, taking the call-in as the call's leg and bridging it, or calling the extension
//! out when it does not come.

use std::time::{Duration, Instant};

use domain::call::{CallCommand, EndCause, LegFailure, LegRole, LegTarget, Path};
use domain::ids::LegId;

use super::{AwaitedCallIn, Bridging, Call, Leg, Phase, Then};
use crate::answer::Answer;
use crate::b2bua::call::change;
use crate::b2bua::call::interface::{Arrival, Context, Output, Peer};
use crate::b2bua::call::rules::call_in_wait;
use crate::b2bua::call_in::{self, Notice};
use crate::b2bua::dialog_key;
use crate::b2bua::plan::CallInPlan;
use crate::dialog::Dialog;
use crate::media::relay::Side as RelaySide;
use crate::media::sdp;
use crate::outgoing::ClientKey;

impl Call {
    /// Alternate path (b): records the call-in awaited, makes the call the one the
    /// extension's call to the access number reaches, tells the device over data, and keeps
    /// the caller ringing. Without the media relay (needed to bridge two offers) or when the
    /// extension already has a call-in pending, the extension is called out instead (queued
    /// first; false is returned, the caller going on to place the legs).
    pub(super) fn await_call_in(
        &mut self,
        plan: &CallInPlan,
        now: Instant,
        ctx: &dyn Context,
    ) -> bool {
        let ttl = call_in_wait(
            self.settings.call_in,
            self.ring_deadline.saturating_duration_since(now),
        );
        let waiting = ttl.is_some()
            && self.media.is_some()
            && ctx.wait_call_in(&plan.access_number, &plan.number);
        match ttl.filter(|_| waiting) {
            Some(ttl) => {
                let token = call_in::token();
                self.record_then(
                    CallCommand::AwaitCallIn {
                        token: token.clone(),
                        access_number: plan.access_number.clone(),
                        expected_caller: plan.number.clone(),
                        ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
                    },
                    Then::CallInAwaited {
                        plan: Box::new(plan.clone()),
                        token,
                        ttl,
                    },
                );
                true
            }
            None => {
                tracing::info!(call = %self.id, "call-in not possible; calling the extension out");
                self.to_place.push_back(plan.fallback.clone());
                false
            }
        }
    }

    /// The call-in is recorded as awaited: the device is told, and the caller hears ringing.
    pub(super) fn notify_call_in(
        &mut self,
        plan: &CallInPlan,
        token: String,
        ttl: Duration,
        now: Instant,
        ctx: &dyn Context,
    ) {
        self.call_in = Some(AwaitedCallIn {
            plan: plan.clone(),
            until: now + ttl,
            token: token.clone(),
        });
        for (uri, to, transport) in &plan.notify {
            let Some(reach) = ctx.reach(*to, *transport) else {
                continue;
            };
            let (request, branch) = call_in::message(&Notice {
                contact_uri: uri,
                local: ctx.local(),
                transport: reach.transport,
                access_number: &plan.access_number,
                extension: &plan.number,
                caller: &self.plan.from,
                token: &token,
                expires_secs: ttl.as_secs(),
                keyed: plan.keyed.is_some(),
            });
            self.out.push(Output::Notice {
                to: *to,
                transport: *transport,
                key: ClientKey {
                    branch,
                    method: "MESSAGE".into(),
                },
                request,
            });
        }
        if self.settings.call_in_webhook {
            self.out.push(Output::Webhook {
                ttl,
                notice: serde_json::json!({
                "call_id": self.id.to_string(),
                "account_id": self.plan.account.id.map(|a| a.to_string()),
                "extension_id": plan.extension_id.to_string(),
                "extension": plan.number.as_str(),
                "access_number": plan.access_number.as_str(),
                "caller": self.plan.from,
                "token": token,
                "proof": if plan.keyed.is_some() { "keypad" } else { "caller_id" },
                }),
            });
        }
        if !self.rang {
            self.rang = true;
            let ringing = change::with_contact(Answer::status(180), ctx);
            self.respond(ringing);
        }
        tracing::info!(call = %self.id, access_number = %plan.access_number.as_str(), "call-in awaited");
    }

    /// The call no longer waits for its call-in (if it did).
    pub(super) fn stop_waiting_for_call_in(&mut self) -> Option<CallInPlan> {
        let AwaitedCallIn { plan, .. } = self.call_in.take()?;
        self.out.push(Output::ForgetCallIn {
            access: plan.access_number.clone(),
            number: plan.number.clone(),
        });
        Some(plan)
    }

    /// The call-in did not come in time (or could not be taken): the extension is called out
    /// instead, as it is now (a removed extension is not); with nothing left ringing the call
    /// ends with `cause`.
    pub(super) fn give_up_call_in(&mut self, cause: EndCause, now: Instant, ctx: &dyn Context) {
        self.drop_keyed_call_in(LegFailure::Cancelled);
        let Some(plan) = self.stop_waiting_for_call_in() else {
            return;
        };
        let mut fallback = plan.fallback.clone();
        fallback.extension = ctx.extension_now(plan.extension_id, &plan.number);
        if fallback.extension.is_some() {
            self.to_place.push_back(fallback);
        }
        self.gave_up = Some(cause);
        self.pump(now, ctx);
    }

    /// The awaited extension calls in: the edge answers its INVITE and the caller's, each with
    /// the relay's address and the codecs both offered, and bridges them. The call-in is a
    /// leg like any other: recorded (path `call_in`, refused for an extension no longer
    /// serving) and answered before either side hears 200. Unless the carrier's caller ID is
    /// trusted, the edge answers the call-in alone first and bridges it once its token is
    /// keyed (`call_in_token.rs`).
    pub(super) fn on_call_in(&mut self, arrival: Arrival, now: Instant, ctx: &dyn Context) {
        let call_id = arrival.invite.header("Call-ID").unwrap_or_default();
        let leg_dialog = dialog_key(call_id, &arrival.tag);
        let awaited = self.call_in.as_ref().filter(|_| self.phase == Phase::Setup);
        let Some(plan) = awaited
            .map(|a| a.plan.clone())
            .filter(|_| self.menu.is_none())
        else {
            self.out.push(Output::Forget(leg_dialog));
            let answer = Answer::with_reason(480, "Temporarily Unavailable (the call has ended)");
            return self.answer_arrival(&arrival, answer);
        };
        let Some(media) = self.media else {
            self.out.push(Output::Forget(leg_dialog));
            return self.answer_arrival(&arrival, Answer::status(500));
        };
        // A call-in keying its token keeps its telephone-events (the edge hears the keys).
        let answer = match plan.keyed {
            Some(_) => sdp::answer_with_events,
            None => sdp::answer,
        };
        let to_extension = answer(
            &arrival.invite.body,
            &self.caller.invite.body,
            media.address,
            media.port(RelaySide::Callee),
        );
        let to_caller = sdp::answer(
            &self.caller.invite.body,
            &arrival.invite.body,
            media.address,
            media.port(RelaySide::Caller),
        );
        let (Some(to_extension), Some(to_caller)) = (to_extension, to_caller) else {
            self.out.push(Output::Forget(leg_dialog));
            let answer = Answer::with_reason(
                488,
                "Not Acceptable Here (no codec in common with the caller)",
            );
            self.answer_arrival(&arrival, answer);
            return self.give_up_call_in(EndCause::Rejected, now, ctx);
        };
        let keyed = match plan
            .keyed
            .map(|country| (country, sdp::agreed(&to_extension)))
        {
            None => None,
            Some((country, Some(agreed))) => Some((country, agreed)),
            Some((_, None)) => {
                self.out.push(Output::Forget(leg_dialog));
                let answer = Answer::with_reason(
                    488,
                    "Not Acceptable Here (a call-in keys its token over G.711)",
                );
                self.answer_arrival(&arrival, answer);
                return self.give_up_call_in(EndCause::Rejected, now, ctx);
            }
        };
        self.dialogs.push(leg_dialog);
        let leg_id = LegId(uuid::Uuid::now_v7());
        let start = CallCommand::StartLeg {
            leg_id,
            target: LegTarget::Extension {
                extension_id: plan.extension_id,
                number: plan.number.clone(),
            },
            path: Path::CallIn,
            role: LegRole::Callee,
            account: self.plan.account.clone(),
            extension: ctx.extension_now(plan.extension_id, &plan.number),
        };
        let bridging = Bridging {
            arrival,
            leg_id,
            to_extension,
            to_caller,
            keyed,
        };
        self.record_then(start, Then::CallInStarted(Box::new(bridging)));
    }

    /// The call-in leg is recorded answered: both sides get 200 and the relay joins them.
    pub(super) fn bridge(&mut self, bridging: Bridging, now: Instant, ctx: &dyn Context) {
        let leg = self.take_call_in(
            bridging.arrival,
            bridging.leg_id,
            &bridging.to_extension,
            now,
            ctx,
        );
        self.bridge_caller(leg, &bridging.to_extension, bridging.to_caller, now, ctx);
    }

    /// Answers the call-in's INVITE (200 with `to_extension`, at the relay's callee side) and
    /// keeps it as the leg `leg_id`, whose number is returned.
    pub(super) fn take_call_in(
        &mut self,
        arrival: Arrival,
        leg_id: LegId,
        to_extension: &[u8],
        now: Instant,
        ctx: &dyn Context,
    ) -> usize {
        if let Some(rtp) = sdp::audio_endpoint(&arrival.invite.body) {
            self.out.push(Output::MediaPeer {
                side: RelaySide::Callee,
                rtp,
                from: arrival.reach.peer.ip(),
            });
        }
        let leg = self.legs.len();
        self.legs.push(Leg::arrived(
            leg_id,
            arrival.key.clone(),
            arrival.tag.clone(),
            arrival.invite.clone(),
            arrival.reach,
        ));
        self.out.push(Output::AdoptArrival { leg });
        let answer = change::with_contact(Answer::status(200), ctx)
            .body("application/sdp", to_extension.to_vec());
        let answer = self.with_session_timer(answer, Peer::Leg(leg), &arrival.invite, now);
        self.answer_arrival(&arrival, answer.clone());
        self.await_ack(Some(leg), answer, now);
        leg
    }

    /// The caller is answered (200 with `to_caller`) and joined through the relay with the
    /// call-in on `leg` (answered with `to_extension`); whatever else rang is given up.
    pub(super) fn bridge_caller(
        &mut self,
        leg: usize,
        to_extension: &[u8],
        to_caller: Vec<u8>,
        now: Instant,
        ctx: &dyn Context,
    ) {
        self.stop_waiting_for_call_in();
        self.answered_by(leg, now);
        self.to_place.clear();
        self.pending.clear();
        self.cancel_legs(LegFailure::AnsweredElsewhere);
        let caller_invite = self.caller.invite.clone();
        let leg_offer = self.legs[leg].invite.body.clone();
        self.sessions.set(Peer::Leg(leg), &leg_offer, to_extension);
        self.sessions
            .set(Peer::Caller, &caller_invite.body, &to_caller);
        self.update_flows(now);
        self.caller_dialog = Dialog::as_callee(&caller_invite, &self.caller.tag).ok();
        let answer =
            change::with_contact(Answer::status(200), ctx).body("application/sdp", to_caller);
        let answer = self.with_session_timer(answer, Peer::Caller, &caller_invite, now);
        self.respond(answer.clone());
        self.await_ack(None, answer, now);
        let leg_id = self.legs[leg].id;
        self.out.record(CallCommand::Bridge { legs: vec![leg_id] });
        tracing::info!(call = %self.id, leg = %leg_id, "call-in bridged");
    }

    pub(super) fn answer_arrival(&mut self, arrival: &Arrival, answer: Answer) {
        self.out.push(Output::Respond {
            key: arrival.key.clone(),
            request: arrival.invite.clone(),
            answer,
            tag: arrival.tag.clone(),
        });
    }
}
