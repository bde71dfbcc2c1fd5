//! The call's state machine: every decision the call makes, from its inputs and `now`.

mod call_in_leg;
mod call_in_token;
mod join;
mod legs;
mod menu;
mod modify;
mod session_timer;
mod sessions;
mod timers;
mod transfer;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use domain::E164;
use domain::call::{CallCommand, EndCause, LegFailure, MenuExit, Side};
use domain::ids::{CallId, LegId};

use super::change::{self, Passing, Unacked};
use super::interface::{
    Arrival, Caller, Context, Input, LINGER, Machine, MediaPorts, Outbox, Output, Peer, Reach,
    Refusal, Settings,
};
use super::leg::{Leg, LegState};
use super::rules::{caller_failure, status_of};
use crate::answer::Answer;
use crate::b2bua::plan::{CallInPlan, Plan, Target};
use crate::b2bua::{DialogKey, dialog_key};
use crate::dialog::Dialog;
use crate::media::relay::Side as RelaySide;
use crate::media::sdp::{self, Agreed};
use crate::media::tones::Country;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use menu::MenuState;
use sessions::{EdgeRefresh, SessionTimer, Sessions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Answered(usize),
    Over,
}

/// What every leg's INVITE shares.
#[derive(Clone)]
struct LegTemplate {
    caller_id: String,
    max_forwards: u8,
    content_type: Option<String>,
    /// The caller's session description as the legs are offered it.
    offer: Vec<u8>,
}

/// What the call goes on with once the recording it waits for is done.
enum Then {
    Started,
    DialIntentTaken,
    CallInAwaited {
        plan: Box<CallInPlan>,
        token: String,
        ttl: Duration,
    },
    LegPlaced {
        target: Box<Target>,
        leg_id: LegId,
        reach: Reach,
    },
    LegAnswered {
        leg: usize,
        response: RawMessage,
    },
    CallInStarted(Box<Bridging>),
    CallInAnswered(Box<Bridging>),
    /// A call-in keyed its token: its leg is being recorded answered.
    KeyedCallInAnswered(Box<menu::KeyedCallIn>),
    Transferring(Box<transfer::Asked>),
    Joining(Box<join::Joining>),
    JoinRecorded(Box<join::JoinRecording>),
    JoinAsked(Box<join::AskedToJoin>),
    TransferAnswered {
        leg: usize,
        response: Box<RawMessage>,
    },
    /// The PIN keyed at the menu is being checked ([`Input::PinChecked`] brings the result).
    PinChecked,
    DestinationCollected {
        target: Box<Target>,
        number: E164,
    },
}

/// A call-in being taken: the arrival and the session descriptions each side is to get.
struct Bridging {
    arrival: Arrival,
    leg_id: LegId,
    to_extension: Vec<u8>,
    to_caller: Vec<u8>,
    /// The call-in keys its token first, hearing these tones, with this session.
    keyed: Option<(Country, Agreed)>,
}

/// A call-in awaited: for which plan, until when, and the token it proves itself with.
struct AwaitedCallIn {
    plan: CallInPlan,
    until: Instant,
    token: String,
}

/// One call, from the caller's INVITE to its end (see the module above).
pub struct Call {
    id: CallId,
    plan: Plan,
    settings: Settings,
    caller: Caller,
    caller_dialog: Option<Dialog>,
    legs: Vec<Leg>,
    phase: Phase,
    rang: bool,
    ring_deadline: Instant,
    unacked: Vec<Unacked>,
    /// The call-in this call waits for (alternate path (b)).
    call_in: Option<AwaitedCallIn>,
    /// The relay's ports while the call has them.
    media: Option<MediaPorts>,
    /// What every leg's INVITE shares (set once the call is recorded).
    template: Option<LegTemplate>,
    /// Legs to place now, one after the other (each recorded before its INVITE leaves).
    to_place: VecDeque<Target>,
    /// Legs waiting for their ring delay.
    pending: Vec<(Instant, Target)>,
    /// The call-in was given up for this cause: with nothing ringing once the extension's
    /// call-out is placed (or could not be), the call ends so.
    gave_up: Option<EndCause>,
    over_at: Option<Instant>,
    /// The dialogs this call is registered under.
    dialogs: Vec<DialogKey>,
    /// When the call was answered: its media and duration limits count from here.
    answered_at: Option<Instant>,
    /// The edge is shutting down: the call is done once it has ended and its BYEs are
    /// answered.
    shutting_down: bool,
    /// BYEs sent and not yet answered (or timed out).
    byes_pending: usize,
    /// The recording the call waits for, and what it then goes on with.
    awaiting: Option<Then>,
    /// Once answered: each side's session description, heard and given.
    sessions: Sessions,
    /// The session timers the sides asked for (RFC 4028).
    session_timers: Vec<SessionTimer>,
    /// The callee's session the edge refreshes, if the callee made it the refresher.
    refresher: Option<EdgeRefresh>,
    /// A change of session one side asked for, being passed on to the other.
    passing: Option<Passing>,
    /// The last re-INVITE the edge sent inside a dialog (a refresh, a change passed on) that
    /// was answered 2xx: its branch, the side, and the ACK (sent again if the 2xx is).
    reinvite_ack: Option<(String, Peer, Vec<u8>)>,
    /// Whether media may go through the relay to the caller, and to the callee.
    flows: [bool; 2],
    /// Since when media is expected both ways: the answer, or the end of the last hold.
    media_since: Option<Instant>,
    /// A transfer under way.
    transfer: Option<transfer::Transfer>,
    /// The edge's offer of a transfer's new party to the side that stayed, pending.
    reoffer: Option<transfer::Reoffer>,
    /// The leg that took the caller's place (the caller transferred the call to it).
    caller_leg: Option<usize>,
    /// The call this one is joined with (attended transfer), by a dialog that reaches it.
    joined: Option<DialogKey>,
    /// The access-number menu, while the caller keys in the destination.
    menu: Option<MenuState>,
    /// The edge answered the caller itself (the menu): the session it gave, and the address
    /// its requests to the caller leave from.
    self_answered: Option<(Vec<u8>, std::net::SocketAddr)>,
    /// The longest the call rings (the account's ring timeout, capped by the edge's).
    ring: Duration,
    out: Outbox,
}

impl Machine for Call {
    fn id(&self) -> CallId {
        self.id
    }

    /// Every dialog the call has been registered under (forgotten when the task ends).
    fn dialogs(&self) -> &[DialogKey] {
        &self.dialogs
    }

    /// Starts the call: records it (or refuses it, the edge shutting down).
    fn start(&mut self, now: Instant) -> Vec<Output> {
        if self.shutting_down {
            // Taken just as the edge began to drain: not started.
            self.respond(Answer::with_reason(
                503,
                "Service Unavailable (shutting down)",
            ));
            self.over(now);
        } else if let Some(too_small) = Self::interval_too_small(&self.caller.invite) {
            // Negotiation, not a call: the caller asks again with a longer interval.
            self.respond(too_small);
            self.over(now);
        } else {
            let plan = &self.plan;
            let start = CallCommand::Start {
                call_id: self.id,
                direction: plan.direction,
                from: plan.from.clone(),
                to: plan.to.clone(),
                origin: plan.origin.clone(),
                path: plan.path,
                account: plan.account.clone(),
                extension: plan.extension.clone(),
                pin: None,
                dial_intent: plan.dial_intent,
                edge_id: Some(self.settings.edge_id),
                keypad: self.plan.menu.is_some(),
            };
            self.record_then(start, Then::Started);
        }
        self.out.take()
    }

    fn is_done(&self, now: Instant) -> bool {
        let Some(over_at) = self.over_at else {
            return false;
        };
        if self.shutting_down && self.byes_pending == 0 && !self.legs.iter().any(Leg::awaits_final)
        {
            // Shutting down, the call is done once its hangups and cancels are answered (a 2xx
            // that crossed a CANCEL is ACKed and hung up before the edge exits).
            return true;
        }
        if self.legs.is_empty() {
            // No leg was placed: no late answer to wait for.
            return true;
        }
        now >= over_at + LINGER
    }

    fn handle(&mut self, input: Input, now: Instant, ctx: &dyn Context) -> Vec<Output> {
        if let Input::Recorded(result) = input {
            match self.awaiting.take() {
                Some(then) => self.go_on(then, result, now, ctx),
                None => tracing::warn!(call = %self.id, "a recording nobody waits for"),
            }
            return self.out.take();
        }
        if let Input::PinChecked(check) = input {
            match self.awaiting.take() {
                Some(Then::PinChecked) => self.pin_checked(check, now, ctx),
                other => {
                    self.awaiting = other;
                    tracing::warn!(call = %self.id, "a PIN check nobody waits for");
                }
            }
            return self.out.take();
        }
        if let Input::JoinAnswered(answer) = input {
            match self.awaiting.take() {
                Some(Then::Joining(joining)) => self.join_answered(*joining, answer),
                other => {
                    self.awaiting = other;
                    tracing::warn!(call = %self.id, "a join answer nobody waits for");
                }
            }
            return self.out.take();
        }
        debug_assert!(
            self.awaiting.is_none(),
            "an input while a recording is awaited"
        );
        match input {
            Input::Outcome { key, outcome, .. } if self.is_reinvite_acked(&key) => {
                if let (Outcome::Response(r), Some((_, to, ack))) = (outcome, &self.reinvite_ack)
                    && status_of(&r).is_some_and(|s| (200..300).contains(&s))
                {
                    // The 2xx again: so is its ACK.
                    let (to, bytes) = (*to, ack.clone());
                    self.out.push(Output::Ack { to, bytes });
                }
            }
            Input::Outcome { key, outcome, .. } if self.is_reoffer(&key) => {
                self.on_reoffer_outcome(outcome, now, ctx)
            }
            Input::Outcome { key, outcome, .. } if self.is_passed_on(&key) => {
                self.on_passed_outcome(outcome, now, ctx)
            }
            Input::Outcome {
                leg: Some(leg),
                key,
                outcome,
            } if key.method == "INVITE" && self.is_refresh(&key) => {
                self.on_refresh_outcome(leg, &key, outcome, now, ctx)
            }
            Input::Outcome {
                leg: Some(leg),
                key,
                outcome,
            } if key.method == "INVITE" => match outcome {
                Outcome::Response(response) => self.on_leg_response(leg, response, now, ctx),
                Outcome::Timeout => {
                    if let Some(l) = self.legs.get_mut(leg) {
                        l.timed_out();
                    }
                    if self.is_transfer_leg(leg) {
                        let line = "SIP/2.0 408 Request Timeout";
                        self.transfer_failed(leg, 408, line, LegFailure::Timeout, now, ctx)
                    } else {
                        self.on_leg_failed(leg, 408, LegFailure::Timeout, now)
                    }
                }
            },
            // A BYE's final answer (or its timeout) is awaited only by a draining edge;
            // responses to CANCEL change nothing.
            Input::Outcome { key, outcome, .. } if key.method == "BYE" => {
                if outcome.is_final() {
                    self.byes_pending = self.byes_pending.saturating_sub(1);
                }
            }
            Input::Outcome { .. } => {}
            Input::Shutdown => self.shut_down(now, ctx),
            Input::Cancel => {
                // A caller the menu answered has no INVITE left to cancel.
                if self.phase == Phase::Setup && self.self_answered.is_none() {
                    self.cancel_legs(LegFailure::Cancelled);
                    self.end_setup(
                        Answer::status(487),
                        Some((EndCause::CallerCancelled, Side::Caller)),
                        now,
                    );
                }
            }
            Input::CallIn(arrival) => self.on_call_in(arrival, now, ctx),
            Input::Ack(ack) => self.on_ack(&ack, ctx),
            Input::Modify { key, request } => self.on_modify(key, request, now, ctx),
            Input::Refer { key, request } => self.on_refer(key, request, ctx),
            Input::JoinAsked(ask) => self.on_join_asked(ask),
            Input::PartnerEnded => self.partner_ended(now, ctx),
            Input::JoinAnswered(_) | Input::PinChecked(_) => unreachable!("handled above"),
            Input::Key {
                way,
                key,
                cseq,
                call_id,
            } => self.on_key(way, key, cseq, call_id.as_deref(), now, ctx),
            Input::Bye(bye) => {
                let answer = self.on_bye(&bye, now, ctx);
                self.out.push(Output::ByeAnswer(answer));
            }
            Input::Recorded(_) => unreachable!("handled above"),
        }
        self.out.take()
    }

    fn next_timeout(&self, now: Instant, media_idle: Option<Duration>) -> Option<Instant> {
        self.next_wake(now, media_idle)
    }

    fn on_timeout(
        &mut self,
        now: Instant,
        media_idle: Option<Duration>,
        ctx: &dyn Context,
    ) -> Vec<Output> {
        self.timers(now, media_idle, ctx);
        self.out.take()
    }
}

impl Call {
    /// A call for `plan`, from `caller`, begun at `now`; the edge has registered the caller's
    /// dialog (with no tag, and with `caller.tag`).
    pub fn new(id: CallId, plan: Plan, caller: Caller, settings: Settings, now: Instant) -> Self {
        let call_id = caller.invite.header("Call-ID").unwrap_or_default();
        let dialogs = vec![dialog_key(call_id, ""), dialog_key(call_id, &caller.tag)];
        let ring = plan
            .ring_timeout
            .map_or(settings.ring, |t| t.min(settings.ring));
        Self {
            id,
            ring_deadline: now + ring,
            media: settings.media,
            shutting_down: settings.draining,
            plan,
            settings,
            caller,
            caller_dialog: None,
            legs: vec![],
            phase: Phase::Setup,
            rang: false,
            unacked: vec![],
            call_in: None,
            template: None,
            to_place: VecDeque::new(),
            pending: vec![],
            gave_up: None,
            over_at: None,
            dialogs,
            ring,
            menu: None,
            self_answered: None,
            answered_at: None,
            byes_pending: 0,
            awaiting: None,
            sessions: Sessions::default(),
            session_timers: vec![],
            refresher: None,
            passing: None,
            reinvite_ack: None,
            flows: [true, true],
            media_since: None,
            transfer: None,
            reoffer: None,
            caller_leg: None,
            joined: None,
            out: Outbox::default(),
        }
    }

    fn record_then(&mut self, command: CallCommand, then: Then) {
        self.out.record_awaited(command);
        self.awaiting = Some(then);
    }

    /// The awaited recording is done (or refused): the call goes on from where it stopped.
    fn go_on(&mut self, then: Then, result: Result<(), Refusal>, now: Instant, ctx: &dyn Context) {
        match then {
            Then::Started => match result {
                Ok(()) => self.started(now, ctx),
                Err(refusal) => {
                    // The domain's refusal (account not active, extension not serving,
                    // destination not allowed, PIN required) is the caller's 403; a store
                    // failure is ours.
                    let answer = refused(refusal, "call not recorded");
                    self.end_setup(answer, None, now);
                }
            },
            Then::DialIntentTaken => match result {
                Ok(()) => self.set_up(now, ctx),
                Err(refusal) => {
                    // Another call took it first (or it expired meanwhile): this one is
                    // refused, and recorded as such.
                    let answer = refused(refusal, "dial intent not taken");
                    tracing::warn!(call = %self.id, reason = ?answer.reason, "dial intent not taken");
                    self.end_setup(answer, Some((EndCause::Rejected, Side::System)), now);
                }
            },
            Then::CallInAwaited { plan, token, ttl } => {
                if result.is_ok() {
                    self.notify_call_in(&plan, token, ttl, now, ctx);
                } else {
                    self.out.push(Output::ForgetCallIn {
                        access: plan.access_number.clone(),
                        number: plan.number.clone(),
                    });
                    tracing::info!(call = %self.id, "call-in not possible; calling the extension out");
                    self.to_place.push_back(plan.fallback);
                }
                self.queue_targets(now);
                self.pump(now, ctx);
            }
            Then::LegPlaced {
                target,
                leg_id,
                reach,
            } => {
                if result.is_ok() {
                    self.send_invite(&target, leg_id, reach, ctx);
                }
                self.pump(now, ctx);
            }
            Then::LegAnswered { leg, response } => match result {
                Ok(()) => self.won_by(leg, &response, now, ctx),
                Err(_) => {
                    // An answer that cannot be recorded cannot be billed: no call.
                    self.bye_leg(leg, ctx);
                    self.cancel_legs(LegFailure::Cancelled);
                    self.end_setup(
                        Answer::with_reason(500, "Server Internal Error (answer not recorded)"),
                        Some((EndCause::Failed, Side::System)),
                        now,
                    );
                }
            },
            Then::CallInStarted(bridging) => match result {
                Ok(()) if bridging.keyed.is_some() => self.answer_for_token(*bridging, now, ctx),
                Ok(()) => {
                    let leg_id = bridging.leg_id;
                    self.record_then(
                        CallCommand::LegAnswered { leg_id },
                        Then::CallInAnswered(bridging),
                    );
                }
                Err(refusal) => {
                    let answer = refused(refusal, "call not recorded");
                    self.answer_arrival(&bridging.arrival, answer);
                    self.give_up_call_in(EndCause::Rejected, now, ctx);
                }
            },
            Then::Transferring(asked) => self.transfer_recorded(*asked, result, ctx),
            Then::JoinRecorded(recording) => self.join_recorded(*recording, result, now, ctx),
            Then::JoinAsked(asked) => self.join_asked_recorded(*asked, result, now, ctx),
            Then::Joining(joining) => {
                // A recording came back where the other call's answer was awaited: not one.
                tracing::warn!(call = %self.id, "a recording while a join was awaited");
                self.awaiting = Some(Then::Joining(joining));
            }
            Then::TransferAnswered { leg, response } => {
                self.transfer_answered(leg, &response, result, now, ctx)
            }
            Then::PinChecked => {
                tracing::warn!(call = %self.id, "a recording while a PIN check was awaited");
                self.awaiting = Some(Then::PinChecked);
            }
            Then::DestinationCollected { target, number } => {
                self.destination_collected(result, *target, number, now, ctx)
            }
            Then::KeyedCallInAnswered(keyed) => self.token_proved(*keyed, result, now, ctx),
            Then::CallInAnswered(bridging) => match result {
                Ok(()) => self.bridge(*bridging, now, ctx),
                Err(_) => {
                    let answer =
                        Answer::with_reason(500, "Server Internal Error (answer not recorded)");
                    self.answer_arrival(&bridging.arrival, answer.clone());
                    self.stop_waiting_for_call_in();
                    self.cancel_legs(LegFailure::Cancelled);
                    self.end_setup(answer, Some((EndCause::Failed, Side::System)), now);
                }
            },
        }
    }

    /// The call is recorded: refused now if the plan says so, else set up.
    fn started(&mut self, now: Instant, ctx: &dyn Context) {
        tracing::info!(call = %self.id, from = %self.plan.from, to = %self.plan.to, legs = self.plan.targets.len(), "call started");
        if let Some((answer, cause)) = self.plan.refusal.clone() {
            // Recorded, so the account's history says why it was refused.
            self.end_setup(answer, Some((cause, Side::System)), now);
            return;
        }
        if let Some(menu) = self.plan.menu.clone() {
            return self.enter_menu(menu, now, ctx);
        }
        if let (Some(intent_id), Some(extension_id)) = (
            self.plan.dial_intent,
            self.plan.extension.as_ref().and_then(|e| e.id),
        ) {
            // A dial intent serves one call: it is taken (an event appended at the
            // extension's version) before any leg is placed.
            self.out.push(Output::UseDialIntent {
                extension_id,
                intent_id,
            });
            self.awaiting = Some(Then::DialIntentTaken);
            return;
        }
        self.set_up(now, ctx);
    }

    /// Places the call's legs (or awaits its call-in).
    fn set_up(&mut self, now: Instant, ctx: &dyn Context) {
        if let Some(reason) = self.plan.alternate {
            self.out.record(CallCommand::ChooseAlternatePath { reason });
        }
        // The legs are offered the caller's session, pointed at the relay when there is one.
        let offer = match &self.media {
            Some(media) => sdp::rebuild(
                &self.caller.invite.body,
                media.address,
                media.port(RelaySide::Callee),
            ),
            None => self.caller.invite.body.clone(),
        };
        let content_type = self
            .caller
            .invite
            .header("Content-Type")
            .map(str::to_string);
        self.template = Some(self.leg_template(offer, content_type));
        if let Some(plan) = self.plan.call_in.clone()
            && self.await_call_in(&plan, now, ctx)
        {
            return;
        }
        self.queue_targets(now);
        self.pump(now, ctx);
    }

    /// What every leg's INVITE shares, `offer` the session it carries.
    fn leg_template(&self, offer: Vec<u8>, content_type: Option<String>) -> LegTemplate {
        LegTemplate {
            caller_id: self.plan.caller_id.clone(),
            max_forwards: self
                .caller
                .invite
                .header("Max-Forwards")
                .and_then(|m| m.trim().parse::<u8>().ok())
                .unwrap_or(70)
                .saturating_sub(1),
            content_type,
            offer,
        }
    }

    /// The plan's legs: those rung at once to be placed, the others after their delay.
    fn queue_targets(&mut self, now: Instant) {
        for target in self.plan.targets.clone() {
            if target.delay.is_zero() {
                self.to_place.push_back(target);
            } else {
                self.pending.push((now + target.delay, target));
            }
        }
    }

    /// Places the legs queued, one at a time; then, with nothing ringing, ends the call.
    fn pump(&mut self, now: Instant, ctx: &dyn Context) {
        while self.awaiting.is_none() {
            let Some(target) = self.to_place.pop_front() else {
                break;
            };
            self.place_leg(target, ctx);
        }
        if self.awaiting.is_some() {
            return;
        }
        match self.gave_up.take() {
            Some(cause) => {
                if self.phase == Phase::Setup && self.nothing_rings() {
                    self.end_setup(
                        Answer::with_reason(480, "Temporarily Unavailable (no answer)"),
                        Some((cause, Side::System)),
                        now,
                    );
                }
            }
            None => self.end_if_nothing_rings(now),
        }
    }

    fn nothing_rings(&self) -> bool {
        self.pending.is_empty()
            && self.to_place.is_empty()
            && self.legs.iter().all(|l| l.state == LegState::Done)
    }

    /// With every leg failed and none waiting for its delay, the call ends: with the best
    /// refusal the legs got, or 480 when none could be placed.
    fn end_if_nothing_rings(&mut self, now: Instant) {
        if self.phase != Phase::Setup
            || self.call_in.is_some()
            || self.awaiting.is_some()
            || !self.nothing_rings()
        {
            return;
        }
        let statuses: Vec<u16> = self.legs.iter().filter_map(|l| l.failed_with).collect();
        if statuses.is_empty() {
            self.end_setup(
                Answer::with_reason(480, "Temporarily Unavailable (no device registered)"),
                Some((EndCause::NoAnswer, Side::System)),
                now,
            );
        } else {
            let (answer, cause) = caller_failure(&statuses);
            self.end_setup(answer, Some((cause, Side::Callee)), now);
        }
    }

    /// The edge is shutting down: a call still being set up is refused (its legs cancelled);
    /// an answered one is hung up on both sides. Either is recorded as `edge_shutdown`.
    fn shut_down(&mut self, now: Instant, ctx: &dyn Context) {
        self.shutting_down = true;
        match self.phase {
            Phase::Setup if self.at_access_menu() => {
                self.leave_menu(MenuExit::EdgeShutdown, EndCause::EdgeShutdown, now, ctx);
            }
            Phase::Setup => {
                self.cancel_legs(LegFailure::Cancelled);
                self.end_setup(
                    Answer::with_reason(503, "Service Unavailable (shutting down)"),
                    Some((EndCause::EdgeShutdown, Side::System)),
                    now,
                );
            }
            Phase::Answered(winner) => self.hang_up(winner, EndCause::EdgeShutdown, now, ctx),
            Phase::Over => {}
        }
    }

    /// The edge ends an answered call (won by `winner`) for `cause`: BYE to both sides, the
    /// end recorded.
    fn hang_up(&mut self, winner: usize, cause: EndCause, now: Instant, ctx: &dyn Context) {
        self.unacked.clear();
        self.bye_leg(winner, ctx);
        self.bye_caller(ctx);
        self.finish(cause, Side::System, now);
    }

    /// Marks the call answered by `leg` (its limits count from now).
    fn answered_by(&mut self, leg: usize, now: Instant) {
        self.phase = Phase::Answered(leg);
        self.answered_at = Some(now);
        self.media_since = Some(now);
    }

    /// A 2xx sent over UDP is repeated until its ACK comes (None: the caller's; Some: a
    /// call-in leg's).
    fn await_ack(&mut self, leg: Option<usize>, answer: Answer, now: Instant) {
        let inbound = leg.and_then(|l| {
            let leg = &self.legs[l];
            let (key, tag) = leg.inbound.clone()?;
            Some((key, leg.invite.clone(), tag))
        });
        let (key, request, tag) = inbound.unwrap_or_else(|| {
            let caller = &self.caller;
            (
                caller.key.clone(),
                caller.invite.clone(),
                caller.tag.clone(),
            )
        });
        self.await_ack_of(leg, key, request, tag, answer, now);
    }

    /// A 2xx to `request` (through `key`), from `leg` (None: the caller), repeated over UDP
    /// until its ACK comes.
    fn await_ack_of(
        &mut self,
        leg: Option<usize>,
        key: crate::transaction::TransactionKey,
        request: RawMessage,
        tag: String,
        answer: Answer,
        now: Instant,
    ) {
        let reach = match leg {
            Some(l) => self.legs[l].reach,
            None => self.caller.reach,
        };
        if reach.is_reliable() {
            return;
        }
        self.unacked
            .push(Unacked::new(leg, key, request, tag, answer, now));
    }

    /// Whether a 2xx the edge sent to `side` carried an offer (the request it answers had
    /// none) whose answer, in the ACK, has not come yet.
    fn offer_awaits_answer(&self, side: Peer) -> bool {
        let leg = side_leg(side);
        self.unacked
            .iter()
            .any(|u| u.leg == leg && u.request.body.is_empty())
    }

    /// A request inside the dialog from `side` shows it has the edge's earlier 2xx: those
    /// need repeating no longer (so at most one 2xx per side is ever repeated).
    fn superseded_2xx(&mut self, side: Peer) {
        let leg = side_leg(side);
        self.unacked.retain(|u| u.leg != leg);
    }

    fn on_ack(&mut self, ack: &RawMessage, ctx: &dyn Context) {
        // The caller first: a leg that took the caller's place is the caller.
        if !self.is_from_caller(ack) {
            if let Some(leg) = self.leg_of(ack) {
                self.unacked.retain(|u| u.leg != Some(leg));
            }
        } else {
            self.unacked.retain(|u| u.leg.is_some());
            if let Phase::Answered(winner) = self.phase
                && self.legs[winner].ack.is_none()
                && self.legs[winner].inbound.is_none()
            {
                // The caller's answer to a delayed offer goes on to the callee.
                let extra: Vec<(&str, String)> = ack
                    .header("Content-Type")
                    .filter(|_| !ack.body.is_empty())
                    .map(|ct| ("Content-Type", ct.to_string()))
                    .into_iter()
                    .collect();
                self.ack_leg(winner, &extra, &ack.body, ctx);
            }
        }
    }

    /// The leg an in-dialog request (an ACK, a re-INVITE) comes from, if it is one.
    fn leg_of(&self, request: &RawMessage) -> Option<usize> {
        self.legs
            .iter()
            .position(|l| l.dialog.as_ref().is_some_and(|d| d.matches(request)))
    }

    /// Whether an in-dialog request comes from the caller (rather than from a leg): the
    /// leg that took the caller's place, once one has.
    fn is_from_caller(&self, request: &RawMessage) -> bool {
        let dialog = match self.caller_leg {
            Some(leg) => self.legs[leg].dialog.as_ref(),
            None => self.caller_dialog.as_ref(),
        };
        dialog.is_some_and(|d| d.matches(request))
    }

    fn on_bye(&mut self, bye: &RawMessage, now: Instant, ctx: &dyn Context) -> Answer {
        if self.keyed_call_in_hung_up(bye, now, ctx) {
            return Answer::status(200);
        }
        if self.phase == Phase::Setup && self.self_answered.is_some() && self.is_from_caller(bye) {
            // The caller the menu answered hangs up: in the menu, or while its leg rings.
            self.unacked.clear();
            if self.menu.is_some() {
                self.leave_menu(MenuExit::HungUp, EndCause::NormalClearing, now, ctx);
            } else {
                self.finish(EndCause::CallerCancelled, Side::Caller, now);
            }
            return Answer::status(200);
        }
        let Phase::Answered(winner) = self.phase else {
            return Answer::status(481);
        };
        if self.transferor_left(bye) {
            return Answer::status(200);
        }
        if self.caller_leg.is_some() && self.caller_dialog.as_ref().is_some_and(|d| d.matches(bye))
        {
            // The caller that transferred the call, hanging up as the edge did.
            return Answer::status(200);
        }
        if self.is_from_caller(bye) {
            self.unacked.clear();
            self.bye_leg(winner, ctx);
            self.finish(EndCause::NormalClearing, Side::Caller, now);
            return Answer::status(200);
        }
        let call_id = bye.header("Call-ID");
        let Some(leg) = self.legs.iter().position(|l| {
            l.dialog
                .as_ref()
                .is_some_and(|d| Some(d.id.call_id.as_str()) == call_id)
        }) else {
            return Answer::status(481);
        };
        if leg == winner && self.legs[leg].bye_sent {
            // The party the edge let go (joined to another call), hanging up as it did.
            return Answer::status(200);
        }
        if leg == winner {
            self.legs[leg].hung_up();
            self.unacked.clear();
            self.bye_caller(ctx);
            self.finish(EndCause::NormalClearing, Side::Callee, now);
        }
        Answer::status(200)
    }

    /// Answers the caller's INVITE (through its server transaction, with the call's tag).
    fn respond(&mut self, answer: Answer) {
        self.out.push(Output::Respond {
            key: self.caller.key.clone(),
            request: self.caller.invite.clone(),
            answer,
            tag: self.caller.tag.clone(),
        });
    }

    /// The call ends before anyone answered: the caller gets `answer`; `end` is recorded.
    fn end_setup(&mut self, answer: Answer, end: Option<(EndCause, Side)>, now: Instant) {
        self.drop_keyed_call_in(LegFailure::Cancelled);
        if let Some((cause, side)) = end {
            self.out.record(CallCommand::End { cause, side });
        }
        // Over before the caller hears it: a call-in or a retry that follows the answer
        // finds no call waiting.
        self.over(now);
        match self.self_answered.clone() {
            // The menu answered the caller: it is hung up instead (the answer was the legs').
            Some((_, local)) => {
                tracing::info!(call = %self.id, status = answer.status, "the keyed call failed; hanging up the caller");
                self.unacked.clear();
                self.bye_caller_from(local);
            }
            None => self.respond(answer),
        }
    }

    fn finish(&mut self, cause: EndCause, side: Side, now: Instant) {
        // A transfer's leg still ringing is given up with the call; a call joined with it ends.
        self.cancel_legs(LegFailure::Cancelled);
        self.transfer = None;
        self.tell_partner();
        self.out.record(CallCommand::End { cause, side });
        self.over(now);
        tracing::info!(call = %self.id, ?cause, ?side, "call ended");
    }

    /// The call is over: its media ports go back to the pool now, not when the task ends
    /// after lingering for late answers.
    fn over(&mut self, now: Instant) {
        self.drop_passing();
        self.stop_waiting_for_call_in();
        self.to_place.clear();
        self.pending.clear();
        self.phase = Phase::Over;
        self.over_at = Some(now);
        self.media = None;
        self.out.push(Output::Release);
        // Nothing is to be CANCELled any more: a new INVITE with the same Call-ID (a caller
        // trying again) is a new call, not a loop.
        self.out.push(Output::Forget(self.dialogs[0].clone()));
    }
}

/// The caller's answer to a refused recording: the domain's reason as 403, a store failure as
/// 503 naming what was not done.
fn refused(refusal: Refusal, what: &str) -> Answer {
    match refusal {
        Refusal::Domain(why) => Answer::with_reason(403, format!("Forbidden ({why})")),
        Refusal::Store => Answer::with_reason(503, format!("Service Unavailable ({what})")),
    }
}

impl Call {
    /// ACKs the 2xx `to` answered a re-INVITE (branch `branch`) with, inside its dialog (the
    /// ACK names the re-INVITE's CSeq number), and keeps the ACK for the 2xx's repeats.
    pub(super) fn ack_reinvite(
        &mut self,
        to: Peer,
        branch: &str,
        response: &RawMessage,
        ctx: &dyn Context,
    ) {
        let cseq = change::cseq_number(response);
        if let Some((ack, _)) = self.in_dialog(to, ctx.local(), "ACK", Some(cseq), &[], &[]) {
            self.out.push(Output::Ack {
                to,
                bytes: ack.clone(),
            });
            self.reinvite_ack = Some((branch.to_string(), to, ack));
        }
    }

    /// Whether `key` is the re-INVITE whose 2xx the edge last ACKed.
    fn is_reinvite_acked(&self, key: &ClientKey) -> bool {
        self.reinvite_ack
            .as_ref()
            .is_some_and(|(branch, _, _)| *branch == key.branch)
    }

    /// A request inside `to`'s dialog (the caller's or a leg's), and its branch.
    pub(super) fn in_dialog(
        &mut self,
        to: Peer,
        local: std::net::SocketAddr,
        method: &str,
        ack_of: Option<u32>,
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Option<(Vec<u8>, String)> {
        match (to, self.caller_leg) {
            (Peer::Leg(l), _) | (Peer::Caller, Some(l)) => {
                self.legs[l].request(local, method, ack_of, extra, body)
            }
            (Peer::Caller, None) => {
                let branch = crate::requests::branch();
                let sent_by = local.to_string();
                let hop = crate::dialog::Hop {
                    transport: self.caller.reach.transport,
                    branch: &branch,
                    sent_by: &sent_by,
                };
                let dialog = self.caller_dialog.as_mut()?;
                Some((dialog.request(method, ack_of, hop, extra, body), branch))
            }
        }
    }
}

/// The leg a side is (None: the caller).
fn side_leg(side: Peer) -> Option<usize> {
    match side {
        Peer::Caller => None,
        Peer::Leg(l) => Some(l),
    }
}
