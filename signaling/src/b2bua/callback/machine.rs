//! The callback's state machine: every decision a callback makes, from its inputs and `now`.
//! It rings the extension, then the destination, then bridges the two; each step is recorded
//! before the next leaves. Like the call, it holds no socket, timer or task: the call task
//! drives it ([`Machine`]).

mod modify;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use domain::E164;
use domain::account::Account;
use domain::call::{
    CallCommand, Direction, EndCause, LegFailure, LegRole, LegTarget, Origin, Path, Side,
};
use domain::device::Transport;
use domain::extension::{CallerIdShown, Extension};
use domain::ids::{CallId, ExtensionId, LegId};

use crate::answer::Answer;
use crate::b2bua::call::change::{Passing, Unacked};
use crate::b2bua::call::{
    Context, Input, LINGER, Leg, LegState, Machine, MediaPorts, Outbox, Output, Peer, Reach,
    Refusal, Settings, caller_failure, status_of,
};
use crate::b2bua::{DialogKey, dialog_key};
use crate::media::relay::Side as RelaySide;
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};
use crate::requests::{self, LegInvite};

/// The extension's leg, rung first.
const EXTENSION: usize = 0;
/// The destination's leg, rung once the extension answered.
const DESTINATION: usize = 1;

/// What a callback places.
#[derive(Debug, Clone)]
pub struct CallbackPlan {
    pub account: Account,
    /// The extension that asked, as it was when the request was taken.
    pub extension: Extension,
    pub extension_id: ExtensionId,
    /// The extension's number (rung first).
    pub number: E164,
    pub destination: E164,
    /// The trunk both legs leave through.
    pub trunk: SocketAddr,
    /// Why the callback may not be placed (the fraud controls): recorded as its end.
    pub refusal: Option<EndCause>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Recording the callback.
    Starting,
    /// The leg `n` rings (the extension, then the destination).
    Ringing(usize),
    /// Both answered and bridged.
    Talking,
    Over,
}

/// What the callback goes on with once the recording it waits for is done.
enum Then {
    Started,
    LegPlaced(Placing),
    LegAnswered(usize),
}

/// A leg recorded, whose INVITE is to leave.
struct Placing {
    leg: usize,
    leg_id: LegId,
    reach: Reach,
    caller_id: String,
    offer: Vec<u8>,
}

/// One callback, from taking the request to its end.
pub struct Callback {
    id: CallId,
    plan: CallbackPlan,
    settings: Settings,
    /// The relay both legs' media goes through.
    media: MediaPorts,
    step: Step,
    legs: Vec<Leg>,
    /// What the extension was offered, and what it answered.
    offer: Vec<u8>,
    extension_answer: Vec<u8>,
    /// By leg, once it answered: the last session description heard from it, and the one the
    /// edge gave it.
    sessions: [(Vec<u8>, Vec<u8>); 2],
    /// A change of session one leg asked for, being passed on to the other.
    passing: Option<Passing>,
    /// The last re-INVITE passed on and answered 2xx: its branch, the leg, and the ACK (sent
    /// again if the 2xx is).
    reinvite_ack: Option<(String, usize, Vec<u8>)>,
    /// The edge's 2xx to a leg's re-INVITE, repeated until ACKed.
    unacked: Vec<Unacked>,
    /// Whether media may go through the relay to the extension, and to the destination.
    flows: [bool; 2],
    /// Since when media is expected both ways: the bridge, or the end of the last hold.
    media_since: Option<Instant>,
    ring_deadline: Option<Instant>,
    /// When the destination answered: the duration limit counts from here.
    answered_at: Option<Instant>,
    over_at: Option<Instant>,
    shutting_down: bool,
    /// BYEs sent and not yet answered (or timed out).
    byes_pending: usize,
    awaiting: Option<Then>,
    dialogs: Vec<DialogKey>,
    out: Outbox,
}

impl Callback {
    /// A callback for `plan`, its media relayed through `media`.
    pub fn new(id: CallId, plan: CallbackPlan, settings: Settings, media: MediaPorts) -> Self {
        Self {
            id,
            offer: sdp::offer(media.address, media.port(RelaySide::Caller)),
            shutting_down: settings.draining,
            plan,
            settings,
            media,
            step: Step::Starting,
            legs: vec![],
            extension_answer: vec![],
            sessions: Default::default(),
            passing: None,
            reinvite_ack: None,
            unacked: vec![],
            flows: [true, true],
            media_since: None,
            ring_deadline: None,
            answered_at: None,
            over_at: None,
            byes_pending: 0,
            awaiting: None,
            dialogs: vec![],
            out: Outbox::default(),
        }
    }
}

impl Machine for Callback {
    fn id(&self) -> CallId {
        self.id
    }

    fn dialogs(&self) -> &[DialogKey] {
        &self.dialogs
    }

    /// Records the callback: the service calls, on the extension's behalf.
    fn start(&mut self, _now: Instant) -> Vec<Output> {
        let plan = &self.plan;
        let start = CallCommand::Start {
            call_id: self.id,
            direction: Direction::Outbound,
            from: plan.number.as_str().to_string(),
            to: plan.destination.as_str().to_string(),
            origin: Origin::Service,
            path: Path::Callback,
            account: plan.account.clone(),
            extension: Some(plan.extension.clone()),
            pin: None,
            dial_intent: None,
            edge_id: Some(self.settings.edge_id),
            keypad: false,
        };
        self.record_then(start, Then::Started);
        self.out.take()
    }

    fn handle(&mut self, input: Input, now: Instant, ctx: &dyn Context) -> Vec<Output> {
        if let Input::Recorded(result) = input {
            match self.awaiting.take() {
                Some(then) => self.go_on(then, result, now, ctx),
                None => tracing::warn!(call = %self.id, "a recording nobody waits for"),
            }
            return self.out.take();
        }
        match input {
            Input::Outcome { key, outcome, .. } if self.is_reinvite_acked(&key) => {
                self.ack_again(outcome)
            }
            Input::Outcome { key, outcome, .. } if self.is_passed_on(&key) => {
                self.on_passed_outcome(outcome, now, ctx)
            }
            Input::Outcome {
                leg: Some(leg),
                key,
                outcome,
            } if key.method == "INVITE" && leg < self.legs.len() => match outcome {
                Outcome::Response(response) => self.on_response(leg, response, now, ctx),
                Outcome::Timeout => {
                    self.legs[leg].timed_out();
                    self.on_failed(leg, 408, LegFailure::Timeout, now, ctx);
                }
            },
            Input::Outcome { key, outcome, .. } if key.method == "BYE" => {
                if outcome.is_final() {
                    self.byes_pending = self.byes_pending.saturating_sub(1);
                }
            }
            Input::Bye(bye) => {
                let answer = self.on_bye(&bye, now, ctx);
                self.out.push(Output::ByeAnswer(answer));
            }
            Input::Modify { key, request } => self.on_modify(key, request, now, ctx),
            Input::Ack(ack) => self.on_ack(&ack),
            // The service's own call, placed on a request for one destination: neither party
            // hands it on (whatever `sip.allow_extension_transfer` says for calls).
            Input::Refer { key, request } => {
                tracing::info!(call = %self.id, "transfer of a callback refused");
                self.out.push(Output::Respond {
                    key,
                    request,
                    answer: Answer::with_reason(403, "Forbidden (a callback is not transferred)"),
                    tag: String::new(),
                })
            }
            Input::JoinAsked(_) => self.out.push(Output::JoinAnswer(Err(Answer::with_reason(
                403,
                "Forbidden (a callback is not transferred)",
            )))),
            Input::Shutdown => self.shut_down(now, ctx),
            // No caller's INVITE to cancel or ACK, no call-in awaited.
            Input::Outcome { .. }
            | Input::Cancel
            | Input::CallIn(_)
            | Input::PartnerEnded
            | Input::JoinAnswered(_)
            | Input::Key { .. }
            | Input::PinChecked(_) => {}
            Input::Recorded(_) => unreachable!("handled above"),
        }
        self.out.take()
    }

    fn on_timeout(
        &mut self,
        now: Instant,
        media_idle: Option<Duration>,
        ctx: &dyn Context,
    ) -> Vec<Output> {
        if self.awaiting.is_none() {
            self.timers(now, media_idle, ctx);
        }
        self.out.take()
    }

    fn next_timeout(&self, now: Instant, media_idle: Option<Duration>) -> Option<Instant> {
        let ring = match self.step {
            Step::Ringing(_) => self.ring_deadline,
            _ => None,
        };
        let media = self.media_left(now, media_idle).map(|left| now + left);
        let longest = self.longest_at();
        let linger = self.over_at.map(|t| t + LINGER);
        let unacked = self.unacked.iter().map(Unacked::wake).min();
        [ring, media, longest, linger, unacked]
            .into_iter()
            .flatten()
            .min()
    }

    fn is_done(&self, now: Instant) -> bool {
        let Some(over_at) = self.over_at else {
            return false;
        };
        if self.legs.is_empty()
            || (self.shutting_down
                && self.byes_pending == 0
                && !self.legs.iter().any(Leg::awaits_final))
        {
            // Nothing placed; or shutting down, and the hangups and cancels are answered.
            return true;
        }
        now >= over_at + LINGER
    }
}

impl Callback {
    fn record_then(&mut self, command: CallCommand, then: Then) {
        self.out.record_awaited(command);
        self.awaiting = Some(then);
    }

    fn go_on(&mut self, then: Then, result: Result<(), Refusal>, now: Instant, ctx: &dyn Context) {
        match then {
            Then::Started => match result {
                Ok(()) if self.shutting_down => self.end(EndCause::EdgeShutdown, Side::System, now),
                Ok(()) => match self.plan.refusal {
                    Some(cause) => self.end(cause, Side::System, now),
                    None => self.place(EXTENSION, now, ctx),
                },
                Err(refusal) => {
                    tracing::warn!(call = %self.id, ?refusal, "callback not recorded; not placed");
                    self.over(now);
                }
            },
            Then::LegPlaced(placing) => match result {
                Ok(()) => self.send_invite(placing, now, ctx),
                Err(refusal) => {
                    let cause = match refusal {
                        Refusal::Domain(_) => EndCause::Rejected,
                        Refusal::Store => EndCause::Failed,
                    };
                    self.bye(EXTENSION, ctx);
                    self.end(cause, Side::System, now);
                }
            },
            Then::LegAnswered(leg) => match result {
                Ok(()) => {
                    self.legs[leg].state = LegState::Answered;
                    if leg == EXTENSION {
                        self.place(DESTINATION, now, ctx);
                    } else {
                        self.bridged(now);
                    }
                }
                Err(_) => {
                    // An answer that cannot be recorded cannot be billed: no call.
                    self.bye(DESTINATION, ctx);
                    self.bye(EXTENSION, ctx);
                    self.end(EndCause::Failed, Side::System, now);
                }
            },
        }
    }

    /// Records leg `leg`; its INVITE leaves once it is recorded. The extension sees the
    /// account's main number calling and is offered G.711 and DTMF events; the destination sees
    /// the caller ID the extension's settings choose and is offered only what the extension
    /// chose.
    fn place(&mut self, leg: usize, now: Instant, ctx: &dyn Context) {
        let plan = &self.plan;
        let main = plan
            .account
            .main_number
            .as_ref()
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        let (target, role, extension, caller_id, offer) = if leg == EXTENSION {
            let target = LegTarget::Extension {
                extension_id: plan.extension_id,
                number: plan.number.clone(),
            };
            let offer = self.offer.clone();
            (
                target,
                LegRole::Caller,
                Some(plan.extension.clone()),
                main,
                offer,
            )
        } else {
            let caller_id = match plan.extension.settings.caller_id {
                CallerIdShown::Main => main,
                CallerIdShown::Own => plan.number.as_str().to_string(),
            };
            let offer = sdp::answer(
                &self.offer,
                &self.extension_answer,
                self.media.address,
                self.media.port(RelaySide::Callee),
            );
            let Some(offer) = offer else {
                tracing::info!(call = %self.id, "the extension's answer shares no codec to offer on");
                self.bye(EXTENSION, ctx);
                return self.end(EndCause::Failed, Side::System, now);
            };
            let target = LegTarget::Pstn {
                number: plan.destination.clone(),
            };
            (target, LegRole::Callee, None, caller_id, offer)
        };
        let Some(reach) = ctx.reach(self.plan.trunk, Transport::Udp) else {
            tracing::warn!(call = %self.id, "no way to reach the trunk; callback failed");
            self.bye(EXTENSION, ctx);
            return self.end(EndCause::Failed, Side::System, now);
        };
        let leg_id = LegId(uuid::Uuid::now_v7());
        let account = self.plan.account.clone();
        self.record_then(
            CallCommand::StartLeg {
                leg_id,
                target,
                path: Path::Callback,
                role,
                account,
                extension,
            },
            Then::LegPlaced(Placing {
                leg,
                leg_id,
                reach,
                caller_id,
                offer,
            }),
        );
    }

    fn send_invite(&mut self, placing: Placing, now: Instant, ctx: &dyn Context) {
        let Placing {
            leg,
            leg_id,
            reach,
            caller_id,
            offer,
        } = placing;
        let number = if leg == EXTENSION {
            &self.plan.number
        } else {
            &self.plan.destination
        };
        let request_uri = format!("sip:{}@{}", number.as_str(), self.plan.trunk);
        let requests::NewLeg {
            invite,
            call_id,
            from_tag,
            branch,
        } = requests::new_leg(&LegInvite {
            request_uri: &request_uri,
            local: ctx.local(),
            transport: reach.transport,
            from_user: &caller_id,
            max_forwards: 70,
            content_type: Some("application/sdp"),
            body: &offer,
            // A callback offers no session timer (the edge refreshes no callback leg): media
            // silence and the longest a call may last end a callback whose legs are gone.
            session_expires: None,
            extra: &[],
        });
        let key = dialog_key(&call_id, &from_tag);
        self.out.push(Output::Register(key.clone()));
        self.dialogs.push(key);
        debug_assert_eq!(self.legs.len(), leg, "legs are placed in order");
        self.sessions[leg].1 = offer.clone();
        self.legs.push(Leg::placed(leg_id, invite.clone(), reach));
        self.step = Step::Ringing(leg);
        self.ring_deadline = Some(now + self.settings.ring);
        self.out.push(Output::Invite {
            leg,
            to: self.plan.trunk,
            transport: Transport::Udp,
            key: ClientKey {
                branch,
                method: "INVITE".into(),
            },
            request: invite,
        });
    }

    fn on_response(&mut self, leg: usize, response: RawMessage, now: Instant, ctx: &dyn Context) {
        let Some(status) = status_of(&response) else {
            return;
        };
        if let Some(cancel) = self.legs[leg].hear(leg, status) {
            self.out.push(cancel);
        }
        match status {
            100 => {}
            101..=199 => {
                if self.legs[leg].state == LegState::Trying {
                    self.legs[leg].state = LegState::Ringing;
                    let leg_id = self.legs[leg].id;
                    self.out.record(CallCommand::LegRinging { leg_id });
                }
            }
            200..=299 => self.on_answered(leg, response, ctx),
            _ => self.on_failed(leg, status, LegFailure::Rejected, now, ctx),
        }
    }

    fn on_answered(&mut self, leg: usize, response: RawMessage, ctx: &dyn Context) {
        if let Err(e) = self.legs[leg].answered_with(&response) {
            tracing::info!(call = %self.id, error = %e, "a leg's 2xx cannot start a dialog");
            return;
        }
        let answers_now = matches!(self.legs[leg].state, LegState::Trying | LegState::Ringing)
            && self.step == Step::Ringing(leg);
        let side = if leg == EXTENSION {
            RelaySide::Caller
        } else {
            RelaySide::Callee
        };
        // The relay learns where this side's media goes before the leg hears its ACK (and
        // starts sending), so its first packets are not dropped.
        if answers_now && let Some(rtp) = sdp::audio_endpoint(&response.body) {
            let from = self.legs[leg].reach.peer.ip();
            self.out.push(Output::MediaPeer { side, rtp, from });
        }
        // Every 2xx is ACKed (again, when it is repeated), whatever becomes of the leg.
        match self.legs[leg].ack.clone() {
            Some(bytes) => self.out.push(Output::Ack {
                to: Peer::Leg(leg),
                bytes,
            }),
            None => {
                if let Some(bytes) = self.legs[leg].ack(ctx.local(), &[], &[]) {
                    self.out.push(Output::Ack {
                        to: Peer::Leg(leg),
                        bytes,
                    });
                }
            }
        }
        let leg_id = self.legs[leg].id;
        match self.legs[leg].state {
            LegState::Trying | LegState::Ringing if answers_now => {
                if leg == EXTENSION {
                    self.extension_answer = response.body.clone();
                }
                self.sessions[leg].0 = response.body.clone();
                self.record_then(CallCommand::LegAnswered { leg_id }, Then::LegAnswered(leg));
            }
            LegState::Answered => {}
            _ => {
                // Answered after it was cancelled (the 2xx crossed the CANCEL), or after the
                // callback ended: hang it up.
                if !self.legs[leg].bye_sent && self.step != Step::Over {
                    self.out.record(CallCommand::LegAnswered { leg_id });
                }
                self.bye(leg, ctx);
            }
        }
    }

    /// Leg `leg` failed with `status`: a ringing leg ends the callback (the extension's with
    /// the extension as the side, the destination's hanging up the extension).
    fn on_failed(
        &mut self,
        leg: usize,
        status: u16,
        failure: LegFailure,
        now: Instant,
        ctx: &dyn Context,
    ) {
        if !self.legs[leg].is_ringing() {
            return;
        }
        self.legs[leg].state = LegState::Done;
        let leg_id = self.legs[leg].id;
        self.out.record(CallCommand::LegFailed {
            leg_id,
            sip_status: status,
            failure,
        });
        self.failed(leg, status, now, ctx);
    }

    /// The ringing leg `leg` failed with `status` (408: unanswered): the callback ends.
    fn failed(&mut self, leg: usize, status: u16, now: Instant, ctx: &dyn Context) {
        let (_, cause) = caller_failure(&[status]);
        let side = if leg == EXTENSION {
            Side::Caller
        } else {
            self.bye(EXTENSION, ctx);
            Side::Callee
        };
        self.end(cause, side, now);
    }

    /// Cancels leg `leg` if it still rings, recorded as cancelled.
    fn cancel_ringing(&mut self, leg: usize) {
        if !self.legs.get(leg).is_some_and(Leg::is_ringing) {
            return;
        }
        self.legs[leg].give_up(leg, LegFailure::Cancelled, &mut self.out);
    }

    /// BYE to leg `leg`, if it has a dialog and has not been hung up.
    fn bye(&mut self, leg: usize, ctx: &dyn Context) {
        let Some(l) = self.legs.get_mut(leg) else {
            return;
        };
        if let Some((bytes, branch)) = l.bye(ctx.local()) {
            self.byes_pending += 1;
            self.out.push(Output::Request {
                to: Peer::Leg(leg),
                method: "BYE",
                branch,
                bytes,
            });
        }
    }

    /// Both legs answered: bridged, and the call's limits count from now.
    fn bridged(&mut self, now: Instant) {
        let legs = self.legs.iter().map(|l| l.id).collect();
        self.out.record(CallCommand::Bridge { legs });
        self.step = Step::Talking;
        self.answered_at = Some(now);
        self.media_since = Some(now);
        tracing::info!(call = %self.id, "callback bridged");
    }

    fn on_bye(&mut self, bye: &RawMessage, now: Instant, ctx: &dyn Context) -> Answer {
        let Some(leg) = self.leg_of(bye).filter(|_| self.step != Step::Over) else {
            return Answer::status(481);
        };
        // Hung up by that side: no BYE goes back to it.
        self.legs[leg].hung_up();
        let side = if leg == EXTENSION {
            // The extension hung up: the destination is cancelled if it still rings.
            self.cancel_ringing(DESTINATION);
            self.bye(DESTINATION, ctx);
            Side::Caller
        } else {
            self.bye(EXTENSION, ctx);
            Side::Callee
        };
        self.end(EndCause::NormalClearing, side, now);
        Answer::status(200)
    }

    /// The edge is shutting down: a leg still ringing is cancelled, an answered one hung up,
    /// and the end is recorded as `edge_shutdown`.
    fn shut_down(&mut self, now: Instant, ctx: &dyn Context) {
        self.shutting_down = true;
        if matches!(self.step, Step::Over | Step::Starting) {
            return;
        }
        self.hang_up(EndCause::EdgeShutdown, now, ctx);
    }

    /// The edge ends the callback for `cause`: the ringing leg cancelled, the answered ones hung
    /// up, the end recorded.
    fn hang_up(&mut self, cause: EndCause, now: Instant, ctx: &dyn Context) {
        for leg in [DESTINATION, EXTENSION] {
            self.cancel_ringing(leg);
            self.bye(leg, ctx);
        }
        tracing::info!(call = %self.id, ?cause, "callback hung up");
        self.end(cause, Side::System, now);
    }

    fn end(&mut self, cause: EndCause, side: Side, now: Instant) {
        self.out.record(CallCommand::End { cause, side });
        tracing::info!(call = %self.id, ?cause, ?side, "callback ended");
        self.over(now);
    }

    /// Over: the relay's ports and the hold on the account go back now, not when the task
    /// ends after lingering for late answers.
    fn over(&mut self, now: Instant) {
        self.drop_passing();
        self.unacked.clear();
        self.step = Step::Over;
        self.over_at = Some(now);
        self.out.push(Output::Release);
    }

    /// How much longer the bridged callback's media may stay silent, counted from the bridge
    /// (or the end of the last hold) at the earliest; None while on hold either way.
    fn media_left(&self, now: Instant, media_idle: Option<Duration>) -> Option<Duration> {
        if self.step != Step::Talking || self.flows.contains(&false) {
            return None;
        }
        let since = now.saturating_duration_since(self.media_since?);
        let silent = media_idle?.min(since);
        Some(self.media.timeout.saturating_sub(silent))
    }

    fn longest_at(&self) -> Option<Instant> {
        if self.step != Step::Talking {
            return None;
        }
        Some(self.answered_at? + self.settings.max_duration)
    }

    fn timers(&mut self, now: Instant, media_idle: Option<Duration>, ctx: &dyn Context) {
        if let Step::Ringing(leg) = self.step
            && self.ring_deadline.is_some_and(|d| now >= d)
        {
            // Unanswered in time: cancelled, and as good as a 408 (no answer).
            self.cancel_ringing(leg);
            return self.failed(leg, 408, now, ctx);
        }
        if self.longest_at().is_some_and(|at| now >= at) {
            return self.hang_up(EndCause::MaxDuration, now, ctx);
        }
        if self.media_left(now, media_idle) == Some(Duration::ZERO) {
            return self.hang_up(EndCause::MediaTimeout, now, ctx);
        }
        self.repeat_2xx(now, ctx);
    }
}
