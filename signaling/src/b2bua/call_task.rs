//! The task that runs one call: it owns what the call's state machine ([`Call`], or the
//! callback's) may not — the paths to each side, the media relay, the call's place among the
//! account's calls, the clock and the channel the call's messages arrive on — and carries out
//! what the machine asks, in order, recording each step before the next leaves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::E164;
use domain::account::Account;
use domain::call::Path;
use domain::device::Transport;
use domain::error::DomainError;
use domain::extension::{Extension, ExtensionCommand, ExtensionEvent};
use domain::ids::{CallId, ExtensionId};
use infra::command::{self, Origin};
use tokio::sync::{mpsc, oneshot};

use super::call::{
    self, Call, Context, Input, KeypadCue, Machine, MediaPorts, Output, Peer, PinCheck, Reach,
    Refusal, Settings,
};
use super::host::CallHost;
use super::plan::{self, Dialling, Plan, Target};
use super::spending::{Hold, first_increment};
use super::stream::CallStream;
use super::{CallInput, Enlisted};
use crate::answer::Answer;
use crate::media::keypad::{Keypad, Voice};
use crate::media::relay::{Relay, Side as RelaySide};
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Notify, Outcome};
use crate::peer_path::PeerPath;
use crate::transaction::TransactionKey;

/// How long a call waits for another to answer its ask to be joined.
const JOIN_ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The caller's side of the call as the edge took it.
pub struct Caller {
    /// The server transaction of the caller's INVITE.
    pub key: TransactionKey,
    pub invite: RawMessage,
    /// Where requests to the caller go (its source address, or its connection).
    pub path: PeerPath,
    /// The To tag the edge answers with.
    pub tag: String,
}

/// How the call sees a path: where, and over which transport.
fn reach_of(path: &PeerPath) -> Reach {
    Reach {
        peer: path.peer(),
        transport: path.transport_name(),
    }
}

/// What the call asks of the edge, answered from the edge's registries and routing view.
struct EdgeContext<'a> {
    host: &'a dyn CallHost,
    tx: &'a mpsc::Sender<CallInput>,
    /// Where the places and reservations taken for the call's transfers are kept.
    holds: &'a Mutex<Vec<Hold>>,
}

impl Context for EdgeContext<'_> {
    fn local(&self) -> SocketAddr {
        self.host.local()
    }

    fn reach(&self, to: SocketAddr, transport: Transport) -> Option<Reach> {
        self.host.path_to(to, transport).as_ref().map(reach_of)
    }

    fn extension_now(&self, id: ExtensionId, number: &E164) -> Option<Extension> {
        let view = self.host.view().read().expect("routing view");
        view.extension_by_number(number)
            .filter(|(found, _)| *found == id)
            .map(|(_, e)| e.clone())
    }

    fn wait_call_in(&self, access: &E164, number: &E164) -> bool {
        self.host.call_ins().wait(access, number, self.tx.clone())
    }

    fn outbound_leg(
        &self,
        account: &Account,
        extension: Option<&Extension>,
        number: &E164,
        phone: SocketAddr,
    ) -> Result<Target, Answer> {
        let now = chrono::Utc::now();
        let view = self.host.view().read().expect("routing view");
        let dialling = Dialling {
            trunks: self.host.trunks(),
            on_net: self.host.on_net(),
            account,
            extension: extension.and_then(|e| Some((e.id?, e))),
            phone,
        };
        let placed = plan::outbound_target(&view, &dialling, number, self.host.policy(), now)?;
        if let Some((answer, _)) = placed.refusal {
            return Err(answer);
        }
        let on_net = placed.target.path == Path::OnNet;
        let reserve = first_increment(&view, account, number, on_net, now);
        let hold = self
            .host
            .spending()
            .hold_for(&view, account, extension, reserve, now)
            .map_err(|(answer, _)| answer)?;
        self.holds.lock().expect("holds").extend(hold);
        Ok(placed.target)
    }
}

pub(super) struct CallTask<M> {
    host: Arc<dyn CallHost>,
    call: M,
    log: CallStream,
    /// Where requests to the caller go (a call an INVITE started).
    caller_path: Option<PeerPath>,
    /// Each leg's path, by the leg's index in the call.
    legs: Vec<Option<PeerPath>>,
    /// The path of the call-in being taken, until the call adopts it as a leg.
    arrival: Option<PeerPath>,
    relay: Option<Relay>,
    /// The edge's own endpoint on the caller's side of the relay (the access-number menu).
    /// The edge's own endpoint on a side of the relay, and that side.
    keypad: Option<(Keypad, RelaySide)>,
    /// The call's place among its account's calls in progress and its reservation against
    /// the daily limits (a call with a billable leg): given back when the call is over.
    hold: Option<Hold>,
    /// Those its transfers took, given back with it.
    transfer_holds: Mutex<Vec<Hold>>,
    /// Where the answer to the BYE being handled goes.
    bye_reply: Option<oneshot::Sender<Answer>>,
    /// Where the answer to the join being asked goes.
    join_reply: Option<oneshot::Sender<Result<call::Partner, Answer>>>,
    tx: mpsc::Sender<CallInput>,
}

/// Runs one call from the caller's INVITE to its end.
pub async fn run(
    host: Arc<dyn CallHost>,
    plan: Plan,
    caller: Caller,
    tx: mpsc::Sender<CallInput>,
    rx: mpsc::Receiver<CallInput>,
    hold: Option<Hold>,
) {
    let enlisted = host.calls().enlist(tx.clone());
    let id = CallId::from(uuid::Uuid::now_v7());
    let mut relay = None;
    if let Some(media) = host.media().cloned()
        && let Some(caller_rtp) = sdp::audio_endpoint(&caller.invite.body)
    {
        match Relay::start(&media) {
            Ok(started) => {
                started.peer_from_sdp(RelaySide::Caller, caller_rtp, caller.path.peer().ip());
                relay = Some(started);
            }
            Err(e) => {
                tracing::warn!(call = %id, error = %e, "no media relay for the call");
                let answer = Answer::with_reason(503, "Service Unavailable (no media ports)");
                host.respond(&caller.key, &caller.invite, answer, &caller.tag)
                    .await;
                let call_id = caller.invite.header("Call-ID").unwrap_or_default();
                for tag in ["", caller.tag.as_str()] {
                    host.calls().forget(&super::dialog_key(call_id, tag));
                }
                return;
            }
        }
    }
    let settings = settings(host.as_ref(), relay.as_ref());
    let caller_path = caller.path.clone();
    let core_caller = call::Caller {
        reach: reach_of(&caller.path),
        key: caller.key,
        invite: caller.invite,
        tag: caller.tag,
    };
    let call = Call::new(id, plan, core_caller, settings, Instant::now());
    CallTask::new(host, call, Some(caller_path), relay, hold, tx)
        .drive(rx, enlisted)
        .await;
}

/// What a call on this edge is set up with, `relay` its media relay if it has one.
pub(super) fn settings(host: &dyn CallHost, relay: Option<&Relay>) -> Settings {
    let times = host.times();
    Settings {
        edge_id: host.edge_id(),
        ring: times.ring,
        call_in: times.call_in,
        max_duration: times.max_duration,
        media: relay.zip(host.media()).map(|(relay, media)| MediaPorts {
            address: media.settings.address,
            caller_port: relay.port(RelaySide::Caller),
            callee_port: relay.port(RelaySide::Callee),
            timeout: media.settings.timeout,
        }),
        draining: host.is_draining(),
        call_in_webhook: host.call_in_webhook().is_some(),
        extension_transfers: host.policy().extension_transfers,
    }
}

impl<M: Machine> CallTask<M> {
    pub(super) fn new(
        host: Arc<dyn CallHost>,
        call: M,
        caller_path: Option<PeerPath>,
        relay: Option<Relay>,
        hold: Option<Hold>,
        tx: mpsc::Sender<CallInput>,
    ) -> Self {
        Self {
            log: CallStream::new(call.id()),
            call,
            caller_path,
            legs: vec![],
            arrival: None,
            relay,
            keypad: None,
            hold,
            transfer_holds: Mutex::default(),
            bye_reply: None,
            join_reply: None,
            tx,
            host,
        }
    }

    /// Runs the call from its first step until it is done, counted among the edge's running
    /// calls (`enlisted`) until then.
    pub(super) async fn drive(mut self, mut rx: mpsc::Receiver<CallInput>, enlisted: Enlisted) {
        let outputs = self.call.start(Instant::now());
        self.carry_out(outputs).await;
        while !self.call.is_done(Instant::now()) {
            let idle = self.relay.as_ref().map(Relay::idle_for);
            let far = Instant::now() + Duration::from_secs(3600);
            let wake = self.call.next_timeout(Instant::now(), idle).unwrap_or(far);
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.give(input).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.into()) => {
                    let idle = self.relay.as_ref().map(Relay::idle_for);
                    let host = self.host.clone();
                    let outputs = {
                        let ctx = EdgeContext {
                            host: host.as_ref(),
                            tx: &self.tx,
                            holds: &self.transfer_holds,
                        };
                        self.call.on_timeout(Instant::now(), idle, &ctx)
                    };
                    self.carry_out(outputs).await;
                }
            }
        }
        for key in self.call.dialogs() {
            self.host.calls().forget(key);
        }
        drop(enlisted);
    }

    /// Hands one message to the call and carries out what it asks.
    async fn give(&mut self, input: CallInput) {
        let input = match input {
            CallInput::Outcome { leg, key, outcome } => Input::Outcome { leg, key, outcome },
            CallInput::Cancel => Input::Cancel,
            CallInput::Ack(ack) => Input::Ack(ack),
            CallInput::Bye(bye, reply) => {
                self.bye_reply = Some(reply);
                Input::Bye(bye)
            }
            CallInput::CallIn(arrival) => {
                let reach = reach_of(&arrival.path);
                self.arrival = Some(arrival.path);
                Input::CallIn(call::Arrival {
                    key: arrival.key,
                    invite: arrival.invite,
                    reach,
                    tag: arrival.tag,
                })
            }
            CallInput::Shutdown => Input::Shutdown,
            CallInput::Modify { key, request } => Input::Modify { key, request },
            CallInput::Refer { key, request } => Input::Refer { key, request },
            CallInput::JoinAsked(ask, reply) => {
                self.join_reply = Some(reply);
                Input::JoinAsked(ask)
            }
            CallInput::PartnerEnded => Input::PartnerEnded,
            CallInput::Key {
                way,
                key,
                cseq,
                call_id,
            } => Input::Key {
                way,
                key,
                cseq,
                call_id,
            },
        };
        let outputs = self.step(input);
        self.carry_out(outputs).await;
        self.arrival = None;
    }

    fn step(&mut self, input: Input) -> Vec<Output> {
        let host = self.host.clone();
        let ctx = EdgeContext {
            host: host.as_ref(),
            tx: &self.tx,
            holds: &self.transfer_holds,
        };
        self.call.handle(input, Instant::now(), &ctx)
    }

    /// Carries out the call's outputs in order; what an awaited output brings (a recording's
    /// result, another call's answer) goes back to the call, and what it then asks follows.
    async fn carry_out(&mut self, outputs: Vec<Output>) {
        let mut queue = std::collections::VecDeque::from(outputs);
        while let Some(output) = queue.pop_front() {
            if let Some(input) = self.execute(output).await {
                queue.extend(self.step(input));
            }
        }
    }

    /// Does one output; for an awaited one, returns what it brought.
    async fn execute(&mut self, output: Output) -> Option<Input> {
        match output {
            Output::Record { command, awaited } => {
                let result = self.log.record(self.host.as_ref(), *command).await;
                return awaited.then(|| Input::Recorded(result.map_err(Refusal::from)));
            }
            Output::AskJoin(ask) => return Some(Input::JoinAnswered(self.ask_join(*ask).await)),
            Output::JoinAnswer(answer) => {
                let joined = answer.is_ok();
                let delivered = self
                    .join_reply
                    .take()
                    .is_some_and(|reply| reply.send(answer).is_ok());
                if joined && !delivered {
                    // The asking call gave up waiting: this one, its phone let go, is joined
                    // to nothing, and ends.
                    tracing::warn!(call = %self.call.id(), "a join answered too late; ending the call");
                    return Some(Input::PartnerEnded);
                }
            }
            Output::TellPartner(dialog) => {
                self.host.calls().deliver(&dialog, CallInput::PartnerEnded);
            }
            Output::UseDialIntent {
                extension_id,
                intent_id,
            } => {
                let origin = Origin {
                    actor: self.host.actor(),
                    correlation_id: Some(self.call.id().0),
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
                return Some(Input::Recorded(used.map(|_| ()).map_err(Refusal::from)));
            }
            Output::CheckPin {
                extension_id,
                pin,
                account,
            } => {
                return Some(Input::PinChecked(
                    self.check_pin(extension_id, pin.0, *account).await,
                ));
            }
            Output::Keypad(cue) => self.keypad(cue),
            Output::Respond {
                key,
                request,
                answer,
                tag,
            } => self.host.respond(&key, &request, answer, &tag).await,
            Output::Invite {
                leg,
                to,
                transport,
                key,
                request,
            } => {
                let path = self.host.path_to(to, transport);
                self.set_leg_path(leg, path.clone());
                match path {
                    Some(path) => {
                        let notify = self.notify(Some(leg));
                        self.host.outgoing().send(key, request, path, notify).await;
                    }
                    // Gone since the call looked (a connection closed): as good as no answer.
                    None => self.notify(Some(leg))(&key, Outcome::Timeout),
                }
            }
            Output::Cancel { leg, invite } => {
                if let Some(path) = self.leg_path(leg) {
                    let notify = self.notify(Some(leg));
                    self.host.outgoing().cancel(&invite, path, notify).await;
                }
            }
            Output::Ack { to, bytes } => {
                if let Some(path) = self.path_of(to) {
                    path.send(bytes).await;
                }
            }
            Output::MediaFlow { to, open } => {
                if let Some(relay) = &self.relay {
                    relay.set_open(to, open);
                }
            }
            Output::Request {
                to,
                method,
                branch,
                bytes,
            } => {
                let path = self.path_of(to);
                let leg = match to {
                    Peer::Caller => None,
                    Peer::Leg(l) => Some(l),
                };
                match path {
                    Some(path) => {
                        let notify = self.notify(leg);
                        self.host
                            .outgoing()
                            .send_bytes(&bytes, branch, method, path, notify)
                            .await;
                    }
                    None => {
                        // Nowhere to send it: as good as unanswered.
                        let key = ClientKey {
                            branch,
                            method: method.into(),
                        };
                        self.notify(leg)(&key, Outcome::Timeout);
                    }
                }
            }
            Output::ByeAnswer(answer) => {
                if let Some(reply) = self.bye_reply.take() {
                    let _ = reply.send(answer);
                }
            }
            Output::Notice {
                to,
                transport,
                key,
                request,
            } => {
                if let Some(path) = self.host.path_to(to, transport) {
                    let notify = self.notify(None);
                    self.host.outgoing().send(key, request, path, notify).await;
                }
            }
            Output::Webhook { mut notice, ttl } => {
                if let Some(webhook) = self.host.call_in_webhook() {
                    let expires =
                        chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
                    notice["expires_at"] = expires.to_rfc3339().into();
                    let call = self.call.id();
                    tokio::spawn(async move {
                        if let Err(e) = webhook.post(&notice).await {
                            tracing::warn!(%call, error = %e, "call-in notice not delivered to the webhook");
                        }
                    });
                }
            }
            Output::MediaPeer { side, rtp, from } => {
                if let Some(relay) = &self.relay {
                    relay.peer_from_sdp(side, rtp, from);
                }
            }
            Output::AdoptArrival { leg } => {
                let path = self.arrival.take();
                self.set_leg_path(leg, path);
            }
            Output::CallerIs { leg } => self.caller_path = self.leg_path(leg),
            Output::Register(key) => self.host.calls().register(key, self.tx.clone()),
            Output::Forget(key) => self.host.calls().forget(&key),
            Output::ForgetCallIn { access, number } => {
                self.host.call_ins().forget(&access, &number, &self.tx)
            }
            Output::Release => {
                self.keypad = None;
                self.relay = None;
                self.hold = None;
                self.transfer_holds.lock().expect("holds").clear();
            }
        }
        None
    }

    /// Checks a PIN keyed at the menu on the extension's stream (which records the outcome,
    /// never the PIN, and locks keypad access at the last wrong one).
    async fn check_pin(
        &self,
        extension_id: ExtensionId,
        pin: String,
        account: Account,
    ) -> PinCheck {
        let origin = Origin {
            actor: self.host.actor(),
            correlation_id: Some(self.call.id().0),
            observe_append: None,
        };
        let checked = command::execute::<Extension>(
            self.host.store(),
            &origin,
            &extension_id.stream_id(),
            &ExtensionCommand::CheckPin { pin, account },
            None,
            None,
        )
        .await;
        match checked {
            Ok((_, events)) => match events.last() {
                Some(ExtensionEvent::KeypadPinAccepted {}) => PinCheck::Accepted,
                Some(ExtensionEvent::KeypadPinRefused { locked, .. }) => {
                    PinCheck::Refused { locked: *locked }
                }
                _ => PinCheck::Failed,
            },
            Err(command::CommandError::Domain(DomainError::KeypadLocked)) => PinCheck::Locked,
            Err(e) => {
                tracing::warn!(call = %self.call.id(), error = %e, "PIN not checked");
                PinCheck::Failed
            }
        }
    }

    /// Starts, steers or stops the edge's own endpoint on a side of the relay.
    fn keypad(&mut self, cue: KeypadCue) {
        match cue {
            KeypadCue::Open {
                side,
                agreed,
                country,
                sounds,
            } => {
                let Some(relay) = &self.relay else {
                    return;
                };
                let (out, packets) = relay.tap(side);
                let tx = self.tx.clone();
                let keys = move |way, key| {
                    // A call too far behind to take a key loses it, as a bad line would.
                    let _ = tx.try_send(CallInput::Key {
                        way,
                        key,
                        cseq: None,
                        call_id: None,
                    });
                };
                let prompts = self
                    .host
                    .media()
                    .map(|m| m.settings.prompts.clone())
                    .unwrap_or_default();
                let voice = Voice { country, prompts };
                let keypad = Keypad::start(out, packets, agreed, voice, sounds, keys);
                self.keypad = Some((keypad, side));
            }
            KeypadCue::Play(sounds) => {
                if let Some((keypad, _)) = &self.keypad {
                    keypad.play(sounds);
                }
            }
            KeypadCue::Close => {
                if let (Some((_, side)), Some(relay)) = (self.keypad.take(), &self.relay) {
                    relay.untap(side);
                }
            }
        }
    }

    /// Asks the call that has `ask.dialog` to be joined with this one, and waits (a little)
    /// for its answer.
    async fn ask_join(&self, ask: call::JoinAsk) -> Result<call::Partner, Answer> {
        let (tx, rx) = oneshot::channel();
        let dialog = ask.dialog.clone();
        if !self
            .host
            .calls()
            .deliver(&dialog, CallInput::JoinAsked(ask, tx))
        {
            return Err(Answer::with_reason(
                481,
                "Call/Transaction Does Not Exist (no call has the dialog to replace)",
            ));
        }
        match tokio::time::timeout(JOIN_ANSWER_WITHIN, rx).await {
            Ok(Ok(answer)) => answer,
            _ => Err(Answer::with_reason(
                500,
                "Server Internal Error (the other call did not answer)",
            )),
        }
    }

    fn path_of(&self, side: Peer) -> Option<PeerPath> {
        match side {
            Peer::Caller => self.caller_path.clone(),
            Peer::Leg(l) => self.leg_path(l),
        }
    }

    fn leg_path(&self, leg: usize) -> Option<PeerPath> {
        self.legs.get(leg).cloned().flatten()
    }

    fn set_leg_path(&mut self, leg: usize, path: Option<PeerPath>) {
        if self.legs.len() <= leg {
            self.legs.resize(leg + 1, None);
        }
        self.legs[leg] = path;
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
}
