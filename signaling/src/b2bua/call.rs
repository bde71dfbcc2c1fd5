//! One call: the caller's side (the INVITE the edge answers) and the legs the edge places.
//! The first leg to answer wins; the others are cancelled (or, answering too late, ACKed and
//! hung up). Each step is recorded in the call's stream before the caller hears of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::call::{CallCommand, EndCause, LegFailure, LegRole, LegTarget, Path, Side};
use domain::extension::{Extension, ExtensionCommand};
use domain::ids::{CallId, LegId};
use infra::command::{self, CommandError, Origin};
use rsip::headers::UntypedHeader;
use tokio::sync::mpsc;

use super::call_in::{self, Arrival, Notice};
use super::host::CallHost;
use super::plan::{CallInPlan, Plan, Target};
use super::spending::Hold;
use super::stream::CallStream;
use super::{CallInput, DialogKey, Enlisted, dialog_key};
use crate::answer::Answer;
use crate::dialog::{Dialog, Hop};
use crate::media::relay::{Relay, Side as RelaySide};
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Notify, Outcome};
use crate::peer_path::PeerPath;
use crate::requests::{self, LegInvite};
use crate::transaction::{T1, T2, TransactionKey};

/// How long a finished call still answers late responses (a leg answering after it was
/// cancelled is ACKed and hung up): Timer B's span.
const LINGER: Duration = Duration::from_secs(32);

/// How often a call awaiting a call-in checks that the extension still serves.
const CALL_IN_RECHECK: Duration = Duration::from_secs(1);

/// The caller's side of the call.
pub struct Caller {
    /// The server transaction of the caller's INVITE.
    pub key: TransactionKey,
    pub invite: RawMessage,
    /// Where requests to the caller go (its source address, or its connection).
    pub path: PeerPath,
    /// The To tag the edge answers with.
    pub tag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Trying,
    Ringing,
    Answered,
    /// Failed, cancelled or hung up: nothing more is expected of it.
    Done,
}

struct Leg {
    id: LegId,
    /// The leg called the edge (a call-in): the edge answered its INVITE, with this tag,
    /// through this server transaction.
    inbound: Option<(TransactionKey, String)>,
    /// `UDP` or `TCP`: how the leg is reached (for the Via of requests inside its dialog).
    transport: &'static str,
    invite: RawMessage,
    path: PeerPath,
    state: LegState,
    /// Any response heard: a CANCEL may be sent (RFC 3261 §9.1).
    heard: bool,
    cancel_wanted: bool,
    cancel_sent: bool,
    dialog: Option<Dialog>,
    ack: Option<Vec<u8>>,
    bye_sent: bool,
    /// The final status a failed leg got.
    failed_with: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Answered(usize),
    Over,
}

/// A 2xx the edge sent, repeated over UDP until it is ACKed (RFC 3261 §13.3.1.4): to the
/// caller, or to an extension whose call-in the edge answered.
struct Unacked {
    /// None: the caller; Some: the call-in leg.
    leg: Option<usize>,
    answer: Answer,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// What every leg's INVITE shares.
#[derive(Clone)]
struct LegTemplate {
    account: domain::account::Account,
    caller_id: String,
    max_forwards: u8,
    content_type: Option<String>,
    /// The caller's session description as the legs are offered it.
    offer: Vec<u8>,
}

struct CallTask {
    host: Arc<dyn CallHost>,
    /// The call's place among its account's calls in progress and its reservation against
    /// the daily limits (a call with a billable leg): given back when the call is over.
    hold: Option<Hold>,
    id: CallId,
    log: CallStream,
    caller: Caller,
    caller_dialog: Option<Dialog>,
    legs: Vec<Leg>,
    phase: Phase,
    rang: bool,
    ring_deadline: Instant,
    unacked: Vec<Unacked>,
    /// The call-in this call waits for (alternate path (b)), and until when.
    call_in: Option<(CallInPlan, Instant)>,
    /// The call's media relay, when the edge relays media.
    relay: Option<Relay>,
    /// What every leg's INVITE shares (set once the call is recorded).
    template: Option<LegTemplate>,
    /// Legs waiting for their ring delay.
    pending: Vec<(Instant, Target)>,
    over_at: Option<Instant>,
    /// The dialogs this call is registered under.
    dialogs: Vec<DialogKey>,
    tx: mpsc::Sender<CallInput>,
    /// When the call was answered: its media and duration limits count from here.
    answered_at: Option<Instant>,
    /// The edge is shutting down: the task ends once the call has and its BYEs are answered.
    shutting_down: bool,
    /// BYEs sent and not yet answered (or timed out).
    byes_pending: usize,
    /// Counts the task among the edge's running calls until it ends.
    _enlisted: Enlisted,
}

/// Runs one call from the caller's INVITE to its end.
pub async fn run(
    host: Arc<dyn CallHost>,
    plan: Plan,
    caller: Caller,
    tx: mpsc::Sender<CallInput>,
    mut rx: mpsc::Receiver<CallInput>,
    hold: Option<Hold>,
) {
    let id = CallId::from(uuid::Uuid::now_v7());
    let caller_call_id = caller.invite.header("Call-ID").unwrap_or_default();
    let dialogs = vec![
        dialog_key(caller_call_id, ""),
        dialog_key(caller_call_id, &caller.tag),
    ];
    let enlisted = host.calls().enlist(tx.clone());
    let mut task = CallTask {
        answered_at: None,
        shutting_down: host.is_draining(),
        byes_pending: 0,
        _enlisted: enlisted,
        log: CallStream::new(id),
        id,
        caller_dialog: None,
        legs: vec![],
        phase: Phase::Setup,
        rang: false,
        ring_deadline: Instant::now()
            + plan
                .ring_timeout
                .map_or(host.times().ring, |t| t.min(host.times().ring)),
        unacked: vec![],
        call_in: None,
        relay: None,
        template: None,
        pending: vec![],
        over_at: None,
        dialogs,
        caller,
        tx,
        host,
        hold,
    };
    if task.shutting_down {
        // Taken just as the edge began to drain: not started.
        task.respond(Answer::with_reason(
            503,
            "Service Unavailable (shutting down)",
        ))
        .await;
        task.over();
    } else {
        task.start(&plan).await;
    }
    while !task.done() {
        let wake = task.next_wake();
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => task.handle(input).await,
                None => break,
            },
            _ = tokio::time::sleep_until(wake.into()) => task.on_timer().await,
        }
    }
    for key in &task.dialogs {
        task.host.calls().forget(key);
    }
}

impl CallTask {
    /// Over, and no longer waiting for late answers (or, shutting down, for its hangups to be
    /// answered).
    fn done(&self) -> bool {
        let Some(over_at) = self.over_at else {
            return false;
        };
        if self.shutting_down {
            return self.byes_pending == 0 || Instant::now() >= over_at + LINGER;
        }
        Instant::now() >= over_at + LINGER
    }

    /// The edge is shutting down: a call still being set up is refused (its legs cancelled);
    /// an answered one is hung up on both sides. Either is recorded as `edge_shutdown`.
    async fn shut_down(&mut self) {
        self.shutting_down = true;
        match self.phase {
            Phase::Setup => {
                self.cancel_legs(LegFailure::Cancelled).await;
                self.end_setup(
                    Answer::with_reason(503, "Service Unavailable (shutting down)"),
                    Some((EndCause::EdgeShutdown, Side::System)),
                )
                .await;
            }
            Phase::Answered(winner) => self.hang_up(winner, EndCause::EdgeShutdown).await,
            Phase::Over => {}
        }
    }

    /// The edge ends an answered call (won by `winner`) for `cause`: BYE to both sides, the
    /// end recorded.
    async fn hang_up(&mut self, winner: usize, cause: EndCause) {
        self.unacked.clear();
        self.bye_leg(winner).await;
        self.bye_caller().await;
        self.finish(cause, Side::System).await;
    }

    /// Marks the call answered by `leg` (its limits count from now).
    fn answered_by(&mut self, leg: usize) {
        self.phase = Phase::Answered(leg);
        self.answered_at = Some(Instant::now());
    }

    /// When an answered call reaches the longest a call may last.
    fn max_duration_at(&self) -> Option<Instant> {
        let Phase::Answered(_) = self.phase else {
            return None;
        };
        Some(self.answered_at? + self.host.times().max_duration)
    }

    async fn record(&mut self, command: CallCommand) -> bool {
        self.try_record(command).await.is_ok()
    }

    async fn try_record(&mut self, command: CallCommand) -> Result<(), CommandError> {
        self.log.record(self.host.as_ref(), command).await
    }

    async fn start(&mut self, plan: &Plan) {
        if let Some(media) = self.host.media().cloned()
            && let Some(caller_rtp) = sdp::audio_endpoint(&self.caller.invite.body)
        {
            match Relay::start(&media) {
                Ok(relay) => {
                    relay.peer_from_sdp(
                        RelaySide::Caller,
                        caller_rtp,
                        self.caller.path.peer().ip(),
                    );
                    self.relay = Some(relay);
                }
                Err(e) => {
                    tracing::warn!(call = %self.id, error = %e, "no media relay for the call");
                    self.end_setup(
                        Answer::with_reason(503, "Service Unavailable (no media ports)"),
                        None,
                    )
                    .await;
                    return;
                }
            }
        }
        let started = self
            .try_record(CallCommand::Start {
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
                edge_id: Some(self.host.edge_id()),
            })
            .await;
        if let Err(e) = started {
            // The domain's refusal (account not active, extension not serving, destination
            // not allowed, PIN required) is the caller's 403; a store failure is ours.
            let refusal = match e {
                CommandError::Domain(why) => Answer::with_reason(403, format!("Forbidden ({why})")),
                _ => Answer::with_reason(503, "Service Unavailable (call not recorded)"),
            };
            self.end_setup(refusal, None).await;
            return;
        }
        tracing::info!(call = %self.id, from = %plan.from, to = %plan.to, legs = plan.targets.len(), "call started");
        if let Some((answer, cause)) = plan.refusal.clone() {
            // Recorded, so the account's history says why it was refused.
            self.end_setup(answer, Some((cause, Side::System))).await;
            return;
        }
        if let (Some(intent_id), Some(extension_id)) =
            (plan.dial_intent, plan.extension.as_ref().and_then(|e| e.id))
        {
            // A dial intent serves one call: it is taken (an event appended at the extension's
            // version) before any leg is placed.
            let origin = Origin {
                actor: self.host.actor(),
                correlation_id: Some(self.id.0),
                observe_append: None,
            };
            let used = command::execute::<Extension>(
                self.host.store(),
                &origin,
                &extension_id.stream_id(),
                &ExtensionCommand::UseDialIntent { intent_id },
                None,
                None,
            )
            .await;
            if let Err(e) = used {
                // Another call took it first (or it expired meanwhile): this one is refused,
                // and recorded as such.
                let answer = match e {
                    CommandError::Domain(why) => {
                        Answer::with_reason(403, format!("Forbidden ({why})"))
                    }
                    _ => Answer::with_reason(503, "Service Unavailable (dial intent not taken)"),
                };
                tracing::warn!(call = %self.id, %intent_id, reason = ?answer.reason, "dial intent not taken");
                self.end_setup(answer, Some((EndCause::Rejected, Side::System)))
                    .await;
                return;
            }
        }
        if let Some(reason) = plan.alternate {
            self.record(CallCommand::ChooseAlternatePath { reason })
                .await;
        }
        // The legs are offered the caller's session, pointed at the relay when there is one.
        let offer = match (&self.relay, &self.host.media()) {
            (Some(relay), Some(media)) => sdp::rewrite(
                &self.caller.invite.body,
                media.settings.address,
                relay.port(RelaySide::Callee),
            ),
            _ => self.caller.invite.body.clone(),
        };
        self.template = Some(LegTemplate {
            account: plan.account.clone(),
            caller_id: plan.caller_id.clone(),
            max_forwards: self
                .caller
                .invite
                .header("Max-Forwards")
                .and_then(|m| m.trim().parse::<u8>().ok())
                .unwrap_or(70)
                .saturating_sub(1),
            content_type: self
                .caller
                .invite
                .header("Content-Type")
                .map(str::to_string),
            offer,
        });
        if let Some(call_in) = &plan.call_in {
            self.await_call_in(call_in, &plan.from).await;
        }
        let now = Instant::now();
        for target in &plan.targets {
            if target.delay.is_zero() {
                self.place_leg(target).await;
            } else {
                self.pending.push((now + target.delay, target.clone()));
            }
        }
        self.end_if_nothing_rings().await;
    }

    /// With every leg failed and none waiting for its delay, the call ends: with the best
    /// refusal the legs got, or 480 when none could be placed.
    async fn end_if_nothing_rings(&mut self) {
        if self.phase != Phase::Setup
            || !self.pending.is_empty()
            || self.call_in.is_some()
            || self.legs.iter().any(|l| l.state != LegState::Done)
        {
            return;
        }
        let statuses: Vec<u16> = self.legs.iter().filter_map(|l| l.failed_with).collect();
        if statuses.is_empty() {
            self.end_setup(
                Answer::with_reason(480, "Temporarily Unavailable (no device registered)"),
                Some((EndCause::NoAnswer, Side::System)),
            )
            .await;
        } else {
            let (answer, cause) = caller_failure(&statuses);
            self.end_setup(answer, Some((cause, Side::Callee))).await;
        }
    }

    /// Records a leg and sends its INVITE.
    async fn place_leg(&mut self, target: &Target) {
        let Some(template) = self.template.clone() else {
            return;
        };
        let Some(path) = self.host.path_to(target.destination, target.transport) else {
            tracing::debug!(call = %self.id, to = %target.destination, "no way to reach a contact; not rung");
            return;
        };
        let transport = path.transport_name();
        let leg_id = LegId(uuid::Uuid::now_v7());
        let placed = self
            .record(CallCommand::StartLeg {
                leg_id,
                target: target.target.clone(),
                path: target.path,
                role: LegRole::Callee,
                account: template.account.clone(),
                extension: target.extension.clone(),
            })
            .await;
        if !placed {
            return;
        }
        let (call_id, from_tag, branch) = requests::new_dialog();
        let invite = requests::invite(&LegInvite {
            request_uri: &target.request_uri,
            local: self.host.local(),
            transport,
            branch: &branch,
            call_id: &call_id,
            from_user: &template.caller_id,
            from_tag: &from_tag,
            max_forwards: template.max_forwards,
            content_type: template.content_type.as_deref(),
            body: &template.offer,
        });
        let key = dialog_key(&call_id, &from_tag);
        self.host.calls().register(key.clone(), self.tx.clone());
        self.dialogs.push(key);
        let leg = self.legs.len();
        self.legs.push(Leg {
            id: leg_id,
            inbound: None,
            transport,
            invite: invite.clone(),
            path: path.clone(),
            state: LegState::Trying,
            heard: false,
            cancel_wanted: false,
            cancel_sent: false,
            dialog: None,
            ack: None,
            bye_sent: false,
            failed_with: None,
        });
        let key = ClientKey {
            branch,
            method: "INVITE".into(),
        };
        self.host
            .outgoing()
            .send(key, invite, path, self.notify(Some(leg)))
            .await;
    }

    /// Where outcomes of a request toward `leg` (None: the caller) go.
    fn notify(&self, leg: Option<usize>) -> Notify {
        let tx = self.tx.clone();
        Arc::new(move |key: &ClientKey, outcome: Outcome| {
            let _ = tx.try_send(CallInput::Outcome {
                leg,
                key: key.clone(),
                outcome,
            });
        })
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let ring = (self.phase == Phase::Setup).then_some(self.ring_deadline);
        let unacked = self.unacked.iter().map(|u| u.next.min(u.give_up)).min();
        let linger = self.over_at.map(|t| t + LINGER);
        let media = self.media_left().map(|left| Instant::now() + left);
        let delayed = self.pending.iter().map(|(at, _)| *at).min();
        // While a call-in is awaited, the extension is looked at every second: one removed
        // meanwhile is waited for no longer.
        let call_in = self
            .call_in
            .as_ref()
            .map(|(_, until)| (*until).min(Instant::now() + CALL_IN_RECHECK));
        let longest = self.max_duration_at();
        [ring, unacked, linger, media, delayed, call_in, longest]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far)
    }

    /// How much longer an answered call's media may stay silent (zero: it has been silent
    /// for `media.timeout`), counted from the answer at the earliest: a leg that rang long
    /// before answering has had no media to relay.
    fn media_left(&self) -> Option<Duration> {
        let Phase::Answered(_) = self.phase else {
            return None;
        };
        let relay = self.relay.as_ref()?;
        let timeout = self.host.media()?.settings.timeout;
        let silent = relay.idle_for().min(self.answered_at?.elapsed());
        Some(timeout.saturating_sub(silent))
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.phase != Phase::Setup {
            self.pending.clear();
        } else if self.pending.iter().any(|(at, _)| *at <= now) {
            let (due, later) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition::<Vec<_>, _>(|(at, _)| *at <= now);
            self.pending = later;
            for (_, target) in due {
                self.place_leg(&target).await;
            }
            self.end_if_nothing_rings().await;
        }
        if self.phase == Phase::Setup
            && let Some((plan, until)) = &self.call_in
        {
            let serving = self
                .current_extension(plan)
                .is_some_and(|e| e.status == domain::extension::ExtensionStatus::Verified);
            if !serving {
                tracing::info!(call = %self.id, "the extension awaited to call in no longer serves");
                self.give_up_call_in(EndCause::Rejected).await;
            } else if now >= *until {
                tracing::info!(call = %self.id, "the extension did not call in; calling it out");
                self.give_up_call_in(EndCause::CallInTimeout).await;
            }
        }
        if let (Phase::Answered(winner), Some(longest)) = (self.phase, self.max_duration_at())
            && now >= longest
        {
            tracing::info!(call = %self.id, "the call reached the longest a call may last; hanging up");
            return self.hang_up(winner, EndCause::MaxDuration).await;
        }
        if let (Phase::Answered(winner), Some(Duration::ZERO)) = (self.phase, self.media_left()) {
            tracing::info!(call = %self.id, "media stopped; hanging up");
            return self.hang_up(winner, EndCause::MediaTimeout).await;
        }
        if self.phase == Phase::Setup && now >= self.ring_deadline {
            self.cancel_legs(LegFailure::Cancelled).await;
            self.end_setup(
                Answer::with_reason(480, "Temporarily Unavailable (no answer)"),
                Some((EndCause::NoAnswer, Side::System)),
            )
            .await;
            return;
        }
        if self.unacked.iter().any(|u| now >= u.give_up) {
            // A 2xx never confirmed: hang up both sides.
            self.unacked.clear();
            tracing::info!(call = %self.id, "no ACK for the 2xx; hanging up");
            if let Phase::Answered(winner) = self.phase {
                self.bye_leg(winner).await;
            }
            self.bye_caller().await;
            self.finish(EndCause::Failed, Side::System).await;
            return;
        }
        let mut due = vec![];
        for unacked in self.unacked.iter_mut().filter(|u| now >= u.next) {
            unacked.interval = (unacked.interval * 2).min(T2);
            unacked.next = now + unacked.interval;
            due.push((unacked.leg, unacked.answer.clone()));
        }
        for (leg, answer) in due {
            match leg.and_then(|l| self.legs[l].inbound.clone().map(|i| (l, i))) {
                Some((l, (key, tag))) => {
                    let invite = self.legs[l].invite.clone();
                    self.host.respond(&key, &invite, answer, &tag).await;
                }
                None => self.respond(answer).await,
            }
        }
    }

    async fn handle(&mut self, input: CallInput) {
        match input {
            CallInput::Outcome {
                leg: Some(leg),
                key,
                outcome,
            } if key.method == "INVITE" => match outcome {
                Outcome::Response(response) => self.on_leg_response(leg, response).await,
                Outcome::Timeout => self.on_leg_failed(leg, 408, LegFailure::Timeout).await,
            },
            // A BYE's final answer (or its timeout) is awaited only by a draining edge;
            // responses to CANCEL change nothing.
            CallInput::Outcome { key, outcome, .. } if key.method == "BYE" => {
                let fin = match &outcome {
                    Outcome::Response(r) => status_of(r).is_some_and(|s| s >= 200),
                    Outcome::Timeout => true,
                };
                if fin {
                    self.byes_pending = self.byes_pending.saturating_sub(1);
                }
            }
            CallInput::Outcome { .. } => {}
            CallInput::Shutdown => self.shut_down().await,
            CallInput::Cancel => {
                if self.phase == Phase::Setup {
                    self.cancel_legs(LegFailure::Cancelled).await;
                    self.end_setup(
                        Answer::status(487),
                        Some((EndCause::CallerCancelled, Side::Caller)),
                    )
                    .await;
                }
            }
            CallInput::CallIn(arrival) => self.on_call_in(arrival).await,
            CallInput::Ack(ack) => {
                if let Some(leg) = self.inbound_leg_of(&ack) {
                    self.unacked.retain(|u| u.leg != Some(leg));
                } else if self.is_from_caller(&ack) {
                    self.unacked.retain(|u| u.leg.is_some());
                    if let Phase::Answered(winner) = self.phase
                        && self.legs[winner].ack.is_none()
                        && self.legs[winner].inbound.is_none()
                    {
                        // The caller's answer to a delayed offer goes on to the callee.
                        let content_type = ack.header("Content-Type").map(str::to_string);
                        let extra: Vec<(&str, String)> = content_type
                            .filter(|_| !ack.body.is_empty())
                            .map(|ct| ("Content-Type", ct))
                            .into_iter()
                            .collect();
                        self.ack_leg(winner, &extra, &ack.body).await;
                    }
                }
            }
            CallInput::Bye(bye, reply) => {
                let answer = self.on_bye(&bye).await;
                let _ = reply.send(answer);
            }
        }
    }

    /// A 2xx sent over UDP is repeated until its ACK comes (None: the caller's; Some: a
    /// call-in leg's).
    fn await_ack(&mut self, leg: Option<usize>, answer: Answer) {
        let path = match leg {
            Some(l) => &self.legs[l].path,
            None => &self.caller.path,
        };
        if path.is_reliable() {
            return;
        }
        let now = Instant::now();
        self.unacked.push(Unacked {
            leg,
            answer,
            next: now + T1,
            interval: T1,
            give_up: now + 64 * T1,
        });
    }

    /// Alternate path (b): records the call-in awaited, makes the call the one the
    /// extension's call to the access number reaches, tells the device over data, and keeps
    /// the caller ringing. Without the media relay (needed to bridge two offers) or when the
    /// extension already has a call-in pending, the extension is called out instead.
    async fn await_call_in(&mut self, plan: &CallInPlan, caller: &str) {
        let ttl = call_in_wait(
            self.host.times().call_in,
            self.ring_deadline.saturating_duration_since(Instant::now()),
        );
        let token = call_in::token();
        let waiting = ttl.is_some()
            && self.relay.is_some()
            && self
                .host
                .call_ins()
                .wait(&plan.access_number, &plan.number, self.tx.clone());
        let recorded = waiting
            && self
                .record(CallCommand::AwaitCallIn {
                    token: token.clone(),
                    access_number: plan.access_number.clone(),
                    expected_caller: plan.number.clone(),
                    ttl_secs: ttl.map_or(0, |t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX)),
                })
                .await;
        let Some(ttl) = ttl.filter(|_| recorded) else {
            if waiting {
                self.host
                    .call_ins()
                    .forget(&plan.access_number, &plan.number, &self.tx);
            }
            tracing::info!(call = %self.id, "call-in not possible; calling the extension out");
            self.place_leg(&plan.fallback).await;
            return;
        };
        self.call_in = Some((plan.clone(), Instant::now() + ttl));
        for (uri, to, transport) in &plan.notify {
            let Some(path) = self.host.path_to(*to, *transport) else {
                continue;
            };
            let (message, branch) = call_in::message(&Notice {
                contact_uri: uri,
                local: self.host.local(),
                transport: path.transport_name(),
                access_number: &plan.access_number,
                extension: &plan.number,
                caller,
                token: &token,
                expires_secs: ttl.as_secs(),
            });
            let key = ClientKey {
                branch,
                method: "MESSAGE".into(),
            };
            self.host
                .outgoing()
                .send(key, message, path, self.notify(None))
                .await;
        }
        if let Some(webhook) = self.host.call_in_webhook() {
            let notice = serde_json::json!({
                "call_id": self.id.to_string(),
                "account_id": self.template.as_ref().and_then(|t| t.account.id).map(|a| a.to_string()),
                "extension_id": plan.extension_id.to_string(),
                "extension": plan.number.as_str(),
                "access_number": plan.access_number.as_str(),
                "caller": caller,
                "token": token,
                "expires_at": (chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default()).to_rfc3339(),
            });
            let call = self.id;
            tokio::spawn(async move {
                if let Err(e) = webhook.post(&notice).await {
                    tracing::warn!(%call, error = %e, "call-in notice not delivered to the webhook");
                }
            });
        }
        if !self.rang {
            self.rang = true;
            let ringing = self.contact(Answer::status(180));
            self.respond(ringing).await;
        }
        tracing::info!(call = %self.id, access_number = %plan.access_number.as_str(), "call-in awaited");
    }

    /// The call-in did not come in time (or could not be taken): the extension is called out
    /// instead, as it is now (a removed extension is not); with nothing left ringing the call
    /// ends with `cause`.
    async fn give_up_call_in(&mut self, cause: EndCause) {
        let Some((plan, _)) = self.call_in.take() else {
            return;
        };
        self.host
            .call_ins()
            .forget(&plan.access_number, &plan.number, &self.tx);
        let mut fallback = plan.fallback.clone();
        fallback.extension = self.current_extension(&plan);
        let before = self.legs.len();
        if fallback.extension.is_some() {
            self.place_leg(&fallback).await;
        }
        let nothing_rings =
            self.pending.is_empty() && self.legs.iter().all(|l| l.state == LegState::Done);
        if self.legs.len() == before && nothing_rings && self.phase == Phase::Setup {
            self.end_setup(
                Answer::with_reason(480, "Temporarily Unavailable (no answer)"),
                Some((cause, Side::System)),
            )
            .await;
        }
    }

    /// The extension of a call-in as the edge sees it now (it may have been removed since the
    /// call began).
    fn current_extension(&self, plan: &CallInPlan) -> Option<Extension> {
        let view = self.host.view().read().expect("routing view");
        view.extension_by_number(&plan.number)
            .filter(|(id, _)| *id == plan.extension_id)
            .map(|(_, e)| e.clone())
    }

    /// The awaited extension calls in: the edge answers its INVITE and the caller's, each with
    /// the relay's address and the codecs both offered, and bridges them. The call-in is a
    /// leg like any other: recorded (path `call_in`, refused for an extension no longer
    /// serving) and answered before either side hears 200.
    async fn on_call_in(&mut self, arrival: Arrival) {
        let refuse = |status: u16, why: &'static str| Answer::with_reason(status, why);
        let Some((plan, _)) = self.call_in.clone().filter(|_| self.phase == Phase::Setup) else {
            let answer = refuse(480, "Temporarily Unavailable (the call has ended)");
            return self.answer_arrival(&arrival, answer).await;
        };
        let relayed = self.relay.as_ref().zip(self.host.media()).map(|(r, m)| {
            let address = m.settings.address;
            let to_extension = sdp::answer(
                &arrival.invite.body,
                &self.caller.invite.body,
                address,
                r.port(RelaySide::Callee),
            );
            let to_caller = sdp::answer(
                &self.caller.invite.body,
                &arrival.invite.body,
                address,
                r.port(RelaySide::Caller),
            );
            (to_extension, to_caller)
        });
        let Some((to_extension, to_caller)) = relayed else {
            return self.answer_arrival(&arrival, Answer::status(500)).await;
        };
        let (Some(to_extension), Some(to_caller)) = (to_extension, to_caller) else {
            let answer = refuse(
                488,
                "Not Acceptable Here (no codec in common with the caller)",
            );
            self.answer_arrival(&arrival, answer).await;
            return self.give_up_call_in(EndCause::Rejected).await;
        };
        let Some(template) = self.template.clone() else {
            return self.answer_arrival(&arrival, Answer::status(500)).await;
        };
        let leg_id = LegId(uuid::Uuid::now_v7());
        let started = self
            .try_record(CallCommand::StartLeg {
                leg_id,
                target: LegTarget::Extension {
                    extension_id: plan.extension_id,
                    number: plan.number.clone(),
                },
                path: Path::CallIn,
                role: LegRole::Callee,
                account: template.account.clone(),
                extension: self.current_extension(&plan),
            })
            .await;
        if let Err(e) = started {
            let answer = match e {
                CommandError::Domain(why) => Answer::with_reason(403, format!("Forbidden ({why})")),
                _ => Answer::with_reason(503, "Service Unavailable (call not recorded)"),
            };
            self.answer_arrival(&arrival, answer).await;
            return self.give_up_call_in(EndCause::Rejected).await;
        }
        if !self.record(CallCommand::LegAnswered { leg_id }).await {
            let answer = refuse(500, "Server Internal Error (answer not recorded)");
            self.answer_arrival(&arrival, answer).await;
            self.call_in = None;
            self.cancel_legs(LegFailure::Cancelled).await;
            return self
                .end_setup(
                    Answer::with_reason(500, "Server Internal Error (answer not recorded)"),
                    Some((EndCause::Failed, Side::System)),
                )
                .await;
        }
        self.call_in = None;
        if let (Some(relay), Some(rtp)) = (&self.relay, sdp::audio_endpoint(&arrival.invite.body)) {
            relay.peer_from_sdp(RelaySide::Callee, rtp, arrival.path.peer().ip());
        }
        let call_id = arrival.invite.header("Call-ID").unwrap_or_default();
        self.dialogs.push(dialog_key(call_id, &arrival.tag));
        let leg = self.legs.len();
        self.legs.push(Leg {
            id: leg_id,
            inbound: Some((arrival.key.clone(), arrival.tag.clone())),
            transport: arrival.path.transport_name(),
            dialog: Dialog::as_callee(&arrival.invite, &arrival.tag).ok(),
            invite: arrival.invite.clone(),
            path: arrival.path.clone(),
            state: LegState::Answered,
            heard: true,
            cancel_wanted: false,
            cancel_sent: false,
            ack: None,
            bye_sent: false,
            failed_with: None,
        });
        self.answered_by(leg);
        self.cancel_legs(LegFailure::AnsweredElsewhere).await;
        let answer = self
            .contact(Answer::status(200))
            .body("application/sdp", to_extension);
        self.answer_arrival(&arrival, answer.clone()).await;
        self.await_ack(Some(leg), answer);
        self.caller_dialog = Dialog::as_callee(&self.caller.invite, &self.caller.tag).ok();
        let answer = self
            .contact(Answer::status(200))
            .body("application/sdp", to_caller);
        self.respond(answer.clone()).await;
        self.await_ack(None, answer);
        self.record(CallCommand::Bridge { legs: vec![leg_id] })
            .await;
        tracing::info!(call = %self.id, leg = %leg_id, "call-in bridged");
    }

    async fn answer_arrival(&self, arrival: &Arrival, answer: Answer) {
        self.host
            .respond(&arrival.key, &arrival.invite, answer, &arrival.tag)
            .await;
    }

    /// The call-in leg an in-dialog request (an ACK) comes from, if it is one.
    fn inbound_leg_of(&self, request: &RawMessage) -> Option<usize> {
        self.legs.iter().position(|l| {
            l.inbound.is_some() && l.dialog.as_ref().is_some_and(|d| d.matches(request))
        })
    }

    /// Whether an in-dialog request comes from the caller (rather than from a leg).
    fn is_from_caller(&self, request: &RawMessage) -> bool {
        self.caller_dialog
            .as_ref()
            .is_some_and(|d| d.matches(request))
    }

    async fn on_bye(&mut self, bye: &RawMessage) -> Answer {
        let Phase::Answered(winner) = self.phase else {
            return Answer::status(481);
        };
        if self.is_from_caller(bye) {
            self.unacked.clear();
            self.bye_leg(winner).await;
            self.finish(EndCause::NormalClearing, Side::Caller).await;
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
        if leg == winner {
            self.legs[leg].state = LegState::Done;
            self.unacked.clear();
            self.bye_caller().await;
            self.finish(EndCause::NormalClearing, Side::Callee).await;
        }
        Answer::status(200)
    }

    async fn on_leg_response(&mut self, leg: usize, response: RawMessage) {
        let Some(status) = status_of(&response) else {
            return;
        };
        self.legs[leg].heard = true;
        if self.legs[leg].cancel_wanted && !self.legs[leg].cancel_sent && status < 200 {
            self.send_cancel(leg).await;
        }
        match status {
            100 => {}
            101..=199 => self.on_leg_ringing(leg, status, response).await,
            200..=299 => self.on_leg_answered(leg, response).await,
            _ => self.on_leg_failed(leg, status, LegFailure::Rejected).await,
        }
    }

    async fn on_leg_ringing(&mut self, leg: usize, status: u16, response: RawMessage) {
        if self.legs[leg].state != LegState::Trying {
            return;
        }
        self.legs[leg].state = LegState::Ringing;
        let leg_id = self.legs[leg].id;
        self.record(CallCommand::LegRinging { leg_id }).await;
        if self.phase == Phase::Setup && !self.rang {
            self.rang = true;
            // Early media (a 183 with a session description) is passed on as it came.
            let status = if status == 183 && !response.body.is_empty() {
                183
            } else {
                180
            };
            let body = self.callee_session(leg, &response.body);
            let answer = self
                .contact(Answer::status(status))
                .body(&content_type(&response), body);
            self.respond(answer).await;
        }
    }

    async fn on_leg_answered(&mut self, leg: usize, response: RawMessage) {
        // Every 2xx is ACKed, whatever becomes of the leg.
        if self.legs[leg].dialog.is_none() {
            match Dialog::as_caller(&self.legs[leg].invite, &response) {
                Ok(d) => self.legs[leg].dialog = Some(d),
                Err(e) => {
                    tracing::info!(call = %self.id, error = %e, "a leg's 2xx cannot start a dialog");
                    return;
                }
            }
        }
        // A delayed offer (the caller's INVITE had no session description, so the 2xx carries
        // the offer): the winner's ACK waits for the caller's, which carries the answer.
        let delayed_offer = self.caller.invite.body.is_empty() && !response.body.is_empty();
        match self.legs[leg].ack.clone() {
            Some(ack) => self.legs[leg].path.send(ack).await,
            None if delayed_offer && self.phase == Phase::Setup => {}
            None if delayed_offer && self.phase == Phase::Answered(leg) => {}
            None => self.ack_leg(leg, &[], &[]).await,
        }
        match self.phase {
            Phase::Setup => {
                let leg_id = self.legs[leg].id;
                if !self.record(CallCommand::LegAnswered { leg_id }).await {
                    // An answer that cannot be recorded cannot be billed: no call.
                    self.bye_leg(leg).await;
                    self.cancel_legs(LegFailure::Cancelled).await;
                    self.end_setup(
                        Answer::with_reason(500, "Server Internal Error (answer not recorded)"),
                        Some((EndCause::Failed, Side::System)),
                    )
                    .await;
                    return;
                }
                self.legs[leg].state = LegState::Answered;
                self.answered_by(leg);
                self.cancel_legs(LegFailure::AnsweredElsewhere).await;
                self.caller_dialog = Dialog::as_callee(&self.caller.invite, &self.caller.tag).ok();
                let body = self.callee_session(leg, &response.body);
                let answer = self
                    .contact(Answer::status(200))
                    .body(&content_type(&response), body);
                self.respond(answer.clone()).await;
                self.await_ack(None, answer);
                tracing::info!(call = %self.id, leg = %leg_id, "call answered");
            }
            Phase::Answered(winner) if winner == leg => {}
            _ => {
                // Answered after another leg won, or after the call ended: hang it up.
                if !self.legs[leg].bye_sent {
                    let leg_id = self.legs[leg].id;
                    if self.phase != Phase::Over {
                        self.record(CallCommand::LegAnswered { leg_id }).await;
                    }
                    self.bye_leg(leg).await;
                }
            }
        }
    }

    async fn on_leg_failed(&mut self, leg: usize, status: u16, failure: LegFailure) {
        if matches!(self.legs[leg].state, LegState::Trying | LegState::Ringing) {
            self.legs[leg].state = LegState::Done;
            self.legs[leg].failed_with = Some(status);
            let leg_id = self.legs[leg].id;
            self.record(CallCommand::LegFailed {
                leg_id,
                sip_status: status,
                failure,
            })
            .await;
        }
        self.end_if_nothing_rings().await;
    }

    /// Cancels every leg still ringing, recording why.
    async fn cancel_legs(&mut self, why: LegFailure) {
        for leg in 0..self.legs.len() {
            if !matches!(self.legs[leg].state, LegState::Trying | LegState::Ringing) {
                continue;
            }
            self.legs[leg].state = LegState::Done;
            self.legs[leg].cancel_wanted = true;
            if self.legs[leg].heard {
                self.send_cancel(leg).await;
            }
            let leg_id = self.legs[leg].id;
            self.record(CallCommand::LegFailed {
                leg_id,
                sip_status: 487,
                failure: why,
            })
            .await;
        }
    }

    async fn send_cancel(&mut self, leg: usize) {
        self.legs[leg].cancel_sent = true;
        let path = self.legs[leg].path.clone();
        self.host
            .outgoing()
            .cancel(&self.legs[leg].invite, path, self.notify(Some(leg)))
            .await;
    }

    /// ACKs a leg's 2xx (inside its dialog), with `body` when it completes a delayed offer.
    async fn ack_leg(&mut self, leg: usize, extra: &[(&str, String)], body: &[u8]) {
        let local = self.host.local().to_string();
        let branch = requests::branch();
        let transport = self.legs[leg].transport;
        let Some(dialog) = self.legs[leg].dialog.as_mut() else {
            return;
        };
        let ack = dialog.request(
            "ACK",
            Some(1),
            Hop {
                transport,
                sent_by: &local,
                branch: &branch,
            },
            extra,
            body,
        );
        self.legs[leg].ack = Some(ack.clone());
        self.legs[leg].path.send(ack).await;
    }

    async fn bye_leg(&mut self, leg: usize) {
        if self.legs[leg].bye_sent {
            return;
        }
        self.legs[leg].bye_sent = true;
        self.legs[leg].state = LegState::Done;
        let local = self.host.local().to_string();
        let transport = self.legs[leg].transport;
        let Some(dialog) = self.legs[leg].dialog.as_mut() else {
            return;
        };
        let (bye, branch) = bye_in(dialog, transport, &local);
        let path = self.legs[leg].path.clone();
        self.send_request(bye, branch, "BYE", path, Some(leg)).await;
    }

    async fn bye_caller(&mut self) {
        let local = self.host.local().to_string();
        let transport = self.caller.path.transport_name();
        let Some(dialog) = self.caller_dialog.as_mut() else {
            return;
        };
        let (bye, branch) = bye_in(dialog, transport, &local);
        let path = self.caller.path.clone();
        self.send_request(bye, branch, "BYE", path, None).await;
    }

    async fn send_request(
        &mut self,
        bytes: Vec<u8>,
        branch: String,
        method: &str,
        path: PeerPath,
        leg: Option<usize>,
    ) {
        if method == "BYE" {
            self.byes_pending += 1;
        }
        self.host
            .outgoing()
            .send_bytes(&bytes, branch, method, path, self.notify(leg))
            .await;
    }

    /// Answers the caller's INVITE (through its server transaction, with the call's tag).
    async fn respond(&self, answer: Answer) {
        self.host
            .respond(
                &self.caller.key,
                &self.caller.invite,
                answer,
                &self.caller.tag,
            )
            .await;
    }

    /// The callee's session description (from `leg`) as the caller is to see it: pointed at
    /// the relay (which learns where the callee's media goes) when there is one.
    fn callee_session(&self, leg: usize, body: &[u8]) -> Vec<u8> {
        let (Some(relay), Some(media)) = (&self.relay, &self.host.media()) else {
            return body.to_vec();
        };
        let Some(callee_rtp) = sdp::audio_endpoint(body) else {
            return body.to_vec();
        };
        relay.peer_from_sdp(
            RelaySide::Callee,
            callee_rtp,
            self.legs[leg].path.peer().ip(),
        );
        sdp::rewrite(body, media.settings.address, relay.port(RelaySide::Caller))
    }

    fn contact(&self, answer: Answer) -> Answer {
        answer.header(rsip::Header::Contact(rsip::headers::Contact::new(format!(
            "<sip:ringledger@{}>",
            self.host.local()
        ))))
    }

    /// The call ends before anyone answered: the caller gets `answer`; `end` is recorded.
    async fn end_setup(&mut self, answer: Answer, end: Option<(EndCause, Side)>) {
        if let Some((cause, side)) = end {
            self.record(CallCommand::End { cause, side }).await;
        }
        // Over before the caller hears it: a call-in or a retry that follows the answer
        // finds no call waiting.
        self.over();
        self.respond(answer).await;
    }

    async fn finish(&mut self, cause: EndCause, side: Side) {
        self.record(CallCommand::End { cause, side }).await;
        self.over();
        tracing::info!(call = %self.id, ?cause, ?side, "call ended");
    }

    /// The call is over: its media ports go back to the pool now, not when the task ends
    /// after lingering for late answers.
    fn over(&mut self) {
        if let Some((plan, _)) = self.call_in.take() {
            self.host
                .call_ins()
                .forget(&plan.access_number, &plan.number, &self.tx);
        }
        self.phase = Phase::Over;
        self.over_at = Some(Instant::now());
        self.relay = None;
        self.hold = None;
        // Nothing is to be CANCELled any more: a new INVITE with the same Call-ID (a caller
        // trying again) is a new call, not a loop.
        self.host.calls().forget(&self.dialogs[0]);
    }
}

/// The shortest a call-in is waited for: less leaves the user no time to dial.
const MIN_CALL_IN_WAIT: Duration = Duration::from_secs(5);

/// How long a call waits for the extension to call in, with `ring_left` before the call
/// ends unanswered: `configured` (`sip.call_in_timeout_secs`), but never more than half the
/// ring time left, so that calling the extension out instead still has as long to ring; none
/// when that leaves less than `MIN_CALL_IN_WAIT` (the extension is called out at once).
pub(super) fn call_in_wait(configured: Duration, ring_left: Duration) -> Option<Duration> {
    // In whole seconds (ring_left is a hair under the account's setting by the time the call
    // gets here): the user is told "within N s".
    let ring_left = Duration::from_secs(ring_left.as_millis().div_ceil(1000) as u64);
    Some(configured.min(ring_left / 2)).filter(|w| *w >= MIN_CALL_IN_WAIT)
}

/// A BYE inside `dialog` from the edge (`local`) over `transport`, and its branch.
pub(super) fn bye_in(dialog: &mut Dialog, transport: &str, local: &str) -> (Vec<u8>, String) {
    let branch = requests::branch();
    let bye = dialog.request(
        "BYE",
        None,
        Hop {
            transport,
            sent_by: local,
            branch: &branch,
        },
        &[],
        &[],
    );
    (bye, branch)
}

pub(crate) fn status_of(response: &RawMessage) -> Option<u16> {
    response.start_line.split(' ').nth(1)?.parse().ok()
}

fn content_type(message: &RawMessage) -> String {
    message
        .header("Content-Type")
        .unwrap_or("application/sdp")
        .to_string()
}

/// What the caller hears when every leg failed (after RFC 3261 §16.7's choice of the best
/// response): a global refusal (6xx) or busy first, then the lowest status; a leg that never
/// answered reads as no answer.
pub(super) fn caller_failure(statuses: &[u16]) -> (Answer, EndCause) {
    if let Some(&s) = statuses.iter().find(|s| **s >= 600) {
        return (Answer::status(s), EndCause::Rejected);
    }
    if statuses.contains(&486) {
        return (Answer::status(486), EndCause::Busy);
    }
    match statuses.iter().copied().filter(|s| *s != 408).min() {
        Some(s) => (Answer::status(s), EndCause::Rejected),
        None => (
            Answer::with_reason(480, "Temporarily Unavailable (no answer)"),
            EndCause::NoAnswer,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_is_waited_for_at_most_half_the_ring_time_left() {
        let secs = Duration::from_secs;
        // The defaults (15 s, an account ringing 30 s): 15 s to call in, 15 s to call out,
        // though the call reaches this a little after it started ringing.
        assert_eq!(call_in_wait(secs(15), secs(30)), Some(secs(15)));
        assert_eq!(
            call_in_wait(secs(15), Duration::from_millis(29_990)),
            Some(secs(15))
        );
        // A configured wait as long as the ring time is cut to half of it.
        assert_eq!(call_in_wait(secs(30), secs(30)), Some(secs(15)));
        assert_eq!(call_in_wait(secs(60), secs(20)), Some(secs(10)));
        // Too little ring time to wait at all: called out at once.
        assert_eq!(call_in_wait(secs(15), secs(8)), None);
    }

    #[test]
    fn the_caller_hears_a_refusal_or_busy_before_other_failures() {
        assert_eq!(caller_failure(&[480, 603]).0.status, 603);
        assert_eq!(caller_failure(&[404, 486, 480]).1, EndCause::Busy);
        assert_eq!(caller_failure(&[480, 404]).0.status, 404);
        let (answer, cause) = caller_failure(&[408, 408]);
        assert_eq!((answer.status, cause), (480, EndCause::NoAnswer));
    }
}
