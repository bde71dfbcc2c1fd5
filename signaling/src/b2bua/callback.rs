//! Callback (docs/OPERATIONS.md, "Callback"): a callback request staged over the API is taken up by
//! an edge, which rings the extension through the trunk, and once it answers rings the
//! destination, then bridges the two through the media relay. The edge makes both offers
//! itself: the extension is offered G.711 and DTMF events; the destination only what the
//! extension chose. Both legs are billed to the main account through the extension (the
//! call's origin is the service; its extension is the one that asked).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::E164;
use domain::account::Account;
use domain::call::{
    CallCommand, Direction, EndCause, LegFailure, LegRole, LegTarget, Origin, Path, Side,
};
use domain::extension::{CallerIdShown, Extension, ExtensionCommand};
use domain::ids::{CallId, ExtensionId, LegId};
use infra::command;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::call::{bye_in, caller_failure, status_of};
use super::host::CallHost;
use super::stream::CallStream;
use super::{CallInput, DialogKey, Enlisted, INPUT_QUEUE, dialog_key};
use crate::answer::Answer;
use crate::dialog::{Dialog, Hop};
use crate::media::relay::{Relay, Side as RelaySide};
use crate::media::sdp;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Notify, Outcome};
use crate::peer_path::PeerPath;
use crate::requests::{self, LegInvite};
use crate::transaction::TransactionKey;

/// Takes up the callback requests the routing view shows waiting, each once, until `stopped`.
pub async fn run(host: Arc<dyn CallHost>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut taken: HashSet<Uuid> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let waiting = host
            .view()
            .read()
            .expect("routing view")
            .pending_callbacks();
        // Forget requests the view no longer shows (taken, cancelled): ids are never reused.
        taken.retain(|id| waiting.iter().any(|(_, r, _)| r == id));
        for (extension_id, request_id, destination) in waiting {
            if taken.insert(request_id) {
                tokio::spawn(place(host.clone(), extension_id, request_id, destination));
            }
        }
    }
}

/// One leg the callback placed.
struct Leg {
    id: LegId,
    invite: RawMessage,
    dialog: Option<Dialog>,
    /// The ACK of its 2xx, sent again if the 2xx is.
    ack: Option<Vec<u8>>,
    /// The session description it answered with.
    answer: Vec<u8>,
}

/// How waiting for a leg ended.
enum Waited {
    Answered,
    /// With the status the caller's side reads (408: no answer).
    Failed(u16),
    /// The extension hung up while the destination was being rung.
    CallerLeft,
    /// The edge is shutting down: the leg was cancelled.
    ShuttingDown,
}

struct Callback {
    host: Arc<dyn CallHost>,
    id: CallId,
    log: CallStream,
    account: Account,
    path: PeerPath,
    relay: Relay,
    tx: mpsc::Sender<CallInput>,
    rx: mpsc::Receiver<CallInput>,
    dialogs: Vec<DialogKey>,
    /// Counts the callback among the edge's running calls until it ends.
    _enlisted: Enlisted,
}

/// Takes the request (an edge that loses the race to another leaves it), then places it.
async fn place(
    host: Arc<dyn CallHost>,
    extension_id: ExtensionId,
    request_id: Uuid,
    destination: E164,
) {
    if host.media().is_none() || host.trunks().outbound().is_none() {
        // Left waiting for an edge that can place it (or for the request to be cancelled).
        tracing::warn!(%request_id, "callbacks need the media relay and a trunk; not taken");
        return;
    }
    let stream = extension_id.stream_id();
    let Ok(loaded) = command::load::<Extension>(host.store(), &stream).await else {
        return;
    };
    let before = loaded.state.clone();
    let version = loaded.version;
    let origin = command::Origin {
        actor: host.actor(),
        correlation_id: Some(request_id),
        observe_append: None,
    };
    let took = command::execute::<Extension>(
        host.store(),
        &origin,
        &stream,
        &ExtensionCommand::TakeCallback { request_id },
        Some(loaded),
        Some(version),
    )
    .await;
    if let Err(e) = took {
        tracing::debug!(%request_id, error = %e, "callback not taken here");
        return;
    }
    let account = before.account_id.and_then(|id| {
        host.view()
            .read()
            .expect("routing view")
            .account(id)
            .cloned()
    });
    let Some(account) = account else {
        tracing::warn!(%request_id, "callback for an account the edge does not know");
        return;
    };
    let Some(mut call) = Callback::new(host, account) else {
        return;
    };
    call.run(&before, destination).await;
    for key in &call.dialogs {
        call.host.calls().forget(key);
    }
}

impl Callback {
    fn new(host: Arc<dyn CallHost>, account: Account) -> Option<Self> {
        let media = host.media().cloned()?;
        let trunk = host.trunks().outbound()?.address;
        let path = host.path_to(trunk, domain::device::Transport::Udp)?;
        let relay = match Relay::start(&media) {
            Ok(relay) => relay,
            Err(e) => {
                tracing::warn!(error = %e, "no media relay for a callback");
                return None;
            }
        };
        let id = CallId::from(Uuid::now_v7());
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        Some(Self {
            _enlisted: host.calls().enlist(tx.clone()),
            log: CallStream::new(id),
            id,
            account,
            path,
            relay,
            tx,
            rx,
            dialogs: vec![],
            host,
        })
    }

    async fn record(&mut self, command: CallCommand) -> bool {
        self.log.record(self.host.as_ref(), command).await.is_ok()
    }

    async fn end(&mut self, cause: EndCause, side: Side) {
        self.record(CallCommand::End { cause, side }).await;
        tracing::info!(call = %self.id, ?cause, ?side, "callback ended");
    }

    async fn run(&mut self, extension: &Extension, destination: E164) {
        let (Some(extension_id), Some(number)) = (extension.id, extension.number.clone()) else {
            return;
        };
        let started = self
            .record(CallCommand::Start {
                call_id: self.id,
                direction: Direction::Outbound,
                from: number.as_str().to_string(),
                to: destination.as_str().to_string(),
                origin: Origin::Service,
                path: Path::Callback,
                account: self.account.clone(),
                extension: Some(extension.clone()),
                pin: None,
                dial_intent: None,
                edge_id: Some(self.host.edge_id()),
            })
            .await;
        if !started {
            return;
        }
        let refusal = {
            let view = self.host.view().read().expect("routing view");
            super::plan::fraud_check(
                &view,
                &self.account,
                Some((extension_id, extension)),
                &destination,
                self.host.policy(),
                chrono::Utc::now(),
            )
        };
        if let Some((_, cause)) = refusal {
            return self.end(cause, Side::System).await;
        }
        let main = self
            .account
            .main_number
            .as_ref()
            .map(|n| n.as_str().to_string())
            .unwrap_or_default();
        let address = self.relay_address();
        let offer = sdp::offer(address, self.relay.port(RelaySide::Caller));
        // The extension first: it sees the account's main number calling.
        let target = LegTarget::Extension {
            extension_id,
            number: number.clone(),
        };
        let Some(mut first) = self
            .place_leg(target, LegRole::Caller, Some(extension), &main, &offer)
            .await
        else {
            return self.end(EndCause::Failed, Side::System).await;
        };
        match self.wait(&mut first, RelaySide::Caller, None).await {
            Waited::Answered => {}
            Waited::Failed(status) => {
                let (_, cause) = caller_failure(&[status]);
                return self.end(cause, Side::Caller).await;
            }
            Waited::CallerLeft => return self.end(EndCause::NormalClearing, Side::Caller).await,
            Waited::ShuttingDown => return self.end(EndCause::EdgeShutdown, Side::System).await,
        }
        // Then the destination, offered only the codecs the extension chose.
        let Some(offer) = sdp::answer(
            &offer,
            &first.answer,
            address,
            self.relay.port(RelaySide::Callee),
        ) else {
            self.bye(&mut first).await;
            return self.end(EndCause::Failed, Side::System).await;
        };
        let caller_id = match extension.settings.caller_id {
            CallerIdShown::Main => main.clone(),
            CallerIdShown::Own => number.as_str().to_string(),
        };
        let target = LegTarget::Pstn {
            number: destination,
        };
        let Some(mut second) = self
            .place_leg(target, LegRole::Callee, None, &caller_id, &offer)
            .await
        else {
            self.bye(&mut first).await;
            return self.end(EndCause::Failed, Side::System).await;
        };
        match self
            .wait(&mut second, RelaySide::Callee, Some(&mut first))
            .await
        {
            Waited::Answered => {}
            Waited::Failed(status) => {
                self.bye(&mut first).await;
                let (_, cause) = caller_failure(&[status]);
                return self.end(cause, Side::Callee).await;
            }
            Waited::CallerLeft => {
                self.cancel_ringing(&second).await;
                return self.end(EndCause::NormalClearing, Side::Caller).await;
            }
            Waited::ShuttingDown => {
                self.bye(&mut first).await;
                self.end(EndCause::EdgeShutdown, Side::System).await;
                return self.await_byes(1).await;
            }
        }
        self.record(CallCommand::Bridge {
            legs: vec![first.id, second.id],
        })
        .await;
        tracing::info!(call = %self.id, "callback bridged");
        self.talk(&mut first, &mut second).await;
    }

    fn relay_address(&self) -> std::net::IpAddr {
        self.host
            .media()
            .as_ref()
            .map_or(self.host.local().ip(), |m| m.settings.address)
    }

    fn notify(&self) -> Notify {
        let tx = self.tx.clone();
        Arc::new(move |key: &ClientKey, outcome: Outcome| {
            let _ = tx.try_send(CallInput::Outcome {
                leg: None,
                key: key.clone(),
                outcome,
            });
        })
    }

    /// A callback keeps the sessions it set up: a re-INVITE is refused (488 leaves the call as
    /// it was, RFC 3261 §14.2), and a callback offers no session timer to refresh.
    async fn refuse_reinvite(&self, key: &TransactionKey, request: &RawMessage) {
        let answer =
            Answer::with_reason(488, "Not Acceptable Here (session changes not supported)");
        self.host.respond(key, request, answer, "").await;
    }

    /// Records a leg and sends its INVITE (None: the domain refused it).
    async fn place_leg(
        &mut self,
        target: LegTarget,
        role: LegRole,
        extension: Option<&Extension>,
        caller_id: &str,
        offer: &[u8],
    ) -> Option<Leg> {
        let request_uri = match &target {
            LegTarget::Extension { number, .. } | LegTarget::Pstn { number } => {
                format!(
                    "sip:{}@{}",
                    number.as_str(),
                    self.host.trunks().outbound()?.address
                )
            }
            LegTarget::Contact { .. } => return None,
        };
        let id = LegId(Uuid::now_v7());
        let placed = self
            .record(CallCommand::StartLeg {
                leg_id: id,
                target,
                path: Path::Callback,
                role,
                account: self.account.clone(),
                extension: extension.cloned(),
            })
            .await;
        if !placed {
            return None;
        }
        let requests::NewLeg {
            invite,
            call_id,
            from_tag,
            branch,
        } = requests::new_leg(&LegInvite {
            request_uri: &request_uri,
            local: self.host.local(),
            transport: "UDP",
            from_user: caller_id,
            max_forwards: 70,
            content_type: Some("application/sdp"),
            body: offer,
        });
        let key = dialog_key(&call_id, &from_tag);
        self.host.calls().register(key.clone(), self.tx.clone());
        self.dialogs.push(key);
        let client = ClientKey {
            branch,
            method: "INVITE".into(),
        };
        self.host
            .outgoing()
            .send(client, invite.clone(), self.path.clone(), self.notify())
            .await;
        Some(Leg {
            id,
            invite,
            dialog: None,
            ack: None,
            answer: vec![],
        })
    }

    /// Waits for `leg` to answer (within the ring timeout), recording what it does; its
    /// media is relayed on `side` from the moment it answers. `first` is the extension's
    /// answered leg while the destination rings (its hangup ends that).
    async fn wait(
        &mut self,
        leg: &mut Leg,
        side: RelaySide,
        mut first: Option<&mut Leg>,
    ) -> Waited {
        let deadline = Instant::now() + self.host.times().ring;
        let mut rang = false;
        loop {
            let input = tokio::time::timeout_at(deadline.into(), self.rx.recv()).await;
            let input = match input {
                Ok(Some(input)) => input,
                Ok(None) => return Waited::Failed(500),
                Err(_) => {
                    self.cancel_ringing(leg).await;
                    // Unanswered in time: as good as a 408 (no answer).
                    return Waited::Failed(408);
                }
            };
            match input {
                CallInput::Outcome { key, outcome, .. } if key.method == "INVITE" => {
                    let response = match outcome {
                        Outcome::Response(r) => r,
                        Outcome::Timeout => {
                            self.record(CallCommand::LegFailed {
                                leg_id: leg.id,
                                sip_status: 408,
                                failure: LegFailure::Timeout,
                            })
                            .await;
                            return Waited::Failed(408);
                        }
                    };
                    if response.header("Call-ID") != leg.invite.header("Call-ID") {
                        // A 2xx repeated by the leg already answered: ACK it again.
                        if let Some(first) = first.as_deref_mut() {
                            self.ack_again(first).await;
                        }
                        continue;
                    }
                    match status_of(&response).unwrap_or(500) {
                        100 => {}
                        101..=199 => {
                            if !rang {
                                rang = true;
                                self.record(CallCommand::LegRinging { leg_id: leg.id })
                                    .await;
                            }
                        }
                        200..=299 => {
                            if leg.dialog.is_some() {
                                self.ack_again(leg).await;
                                continue;
                            }
                            let Ok(dialog) = Dialog::as_caller(&leg.invite, &response) else {
                                continue;
                            };
                            leg.dialog = Some(dialog);
                            leg.answer = response.body.clone();
                            if let Some(rtp) = sdp::audio_endpoint(&leg.answer) {
                                self.relay.peer_from_sdp(side, rtp, self.path.peer().ip());
                            }
                            self.ack(leg).await;
                            if !self
                                .record(CallCommand::LegAnswered { leg_id: leg.id })
                                .await
                            {
                                // Not recorded, not billable: no call.
                                self.bye(leg).await;
                                return Waited::Failed(500);
                            }
                            return Waited::Answered;
                        }
                        status => {
                            self.record(CallCommand::LegFailed {
                                leg_id: leg.id,
                                sip_status: status,
                                failure: LegFailure::Rejected,
                            })
                            .await;
                            return Waited::Failed(status);
                        }
                    }
                }
                CallInput::Bye(bye, reply) => {
                    let from_first = first
                        .as_deref()
                        .and_then(|f| f.dialog.as_ref())
                        .is_some_and(|d| d.matches(&bye));
                    if from_first {
                        let _ = reply.send(Answer::status(200));
                        return Waited::CallerLeft;
                    }
                    let _ = reply.send(Answer::status(481));
                }
                CallInput::Shutdown => {
                    self.cancel_ringing(leg).await;
                    return Waited::ShuttingDown;
                }
                CallInput::Reinvite { key, request } => self.refuse_reinvite(&key, &request).await,
                _ => {}
            }
        }
    }

    /// Both legs answered and bridged: until either hangs up, the media stops (counted from
    /// the destination's answer), the call reaches the longest a call may last, or the edge
    /// shuts down.
    async fn talk(&mut self, first: &mut Leg, second: &mut Leg) {
        let timeout = self
            .host
            .media()
            .as_ref()
            .map_or(Duration::from_secs(60), |m| m.settings.timeout);
        let answered = Instant::now();
        let longest = answered + self.host.times().max_duration;
        loop {
            let silent = self.relay.idle_for().min(answered.elapsed());
            let left = timeout.saturating_sub(silent);
            let ending = if left.is_zero() {
                Some(EndCause::MediaTimeout)
            } else if Instant::now() >= longest {
                Some(EndCause::MaxDuration)
            } else {
                None
            };
            if let Some(cause) = ending {
                tracing::info!(call = %self.id, ?cause, "callback hung up");
                return self.hang_up(first, second, cause).await;
            }
            let wait = left.min(longest.saturating_duration_since(Instant::now()));
            let input = tokio::time::timeout(wait, self.rx.recv()).await;
            match input {
                Ok(Some(CallInput::Shutdown)) => {
                    self.hang_up(first, second, EndCause::EdgeShutdown).await;
                    return self.await_byes(2).await;
                }
                Ok(Some(CallInput::Bye(bye, reply))) => {
                    let by_first = first.dialog.as_ref().is_some_and(|d| d.matches(&bye));
                    let by_second = second.dialog.as_ref().is_some_and(|d| d.matches(&bye));
                    if !by_first && !by_second {
                        let _ = reply.send(Answer::status(481));
                        continue;
                    }
                    let (other, side) = if by_first {
                        (&mut *second, Side::Caller)
                    } else {
                        (&mut *first, Side::Callee)
                    };
                    self.bye(other).await;
                    self.end(EndCause::NormalClearing, side).await;
                    let _ = reply.send(Answer::status(200));
                    return;
                }
                Ok(Some(CallInput::Outcome {
                    key,
                    outcome: Outcome::Response(r),
                    ..
                })) if key.method == "INVITE"
                    && status_of(&r).is_some_and(|s| (200..300).contains(&s)) =>
                {
                    for leg in [&mut *first, &mut *second] {
                        if r.header("Call-ID") == leg.invite.header("Call-ID") {
                            self.ack_again(leg).await;
                        }
                    }
                }
                Ok(Some(CallInput::Reinvite { key, request })) => {
                    self.refuse_reinvite(&key, &request).await
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => return,
            }
        }
    }

    async fn ack(&mut self, leg: &mut Leg) {
        let local = self.host.local().to_string();
        let branch = requests::branch();
        let Some(dialog) = leg.dialog.as_mut() else {
            return;
        };
        let hop = Hop {
            transport: "UDP",
            branch: &branch,
            sent_by: &local,
        };
        let ack = dialog.request("ACK", Some(1), hop, &[], &[]);
        leg.ack = Some(ack.clone());
        self.path.send(ack).await;
    }

    async fn ack_again(&self, leg: &Leg) {
        if let Some(ack) = leg.ack.clone() {
            self.path.send(ack).await;
        }
    }

    async fn bye(&mut self, leg: &mut Leg) {
        let local = self.host.local().to_string();
        let Some(dialog) = leg.dialog.as_mut() else {
            return;
        };
        let (bye, branch) = bye_in(dialog, "UDP", &local);
        self.host
            .outgoing()
            .send_bytes(&bye, branch, "BYE", self.path.clone(), self.notify())
            .await;
    }

    /// The edge ends the bridged callback for `cause`: BYE to both legs, the end recorded.
    async fn hang_up(&mut self, first: &mut Leg, second: &mut Leg, cause: EndCause) {
        self.bye(first).await;
        self.bye(second).await;
        self.end(cause, Side::System).await;
    }

    /// Waits (at most Timer F's 32 s) for the final answers to the last `n` BYEs it sent: a
    /// draining edge exits only once its hangups are answered (or given up on).
    async fn await_byes(&mut self, mut n: usize) {
        let deadline = Instant::now() + Duration::from_secs(32);
        while n > 0 {
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(CallInput::Outcome { key, outcome, .. })) if key.method == "BYE" => {
                    let done = match &outcome {
                        Outcome::Response(r) => status_of(r).is_some_and(|s| s >= 200),
                        Outcome::Timeout => true,
                    };
                    if done {
                        n -= 1;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Cancels a leg still ringing, recorded as cancelled.
    async fn cancel_ringing(&mut self, leg: &Leg) {
        self.cancel(leg).await;
        self.record(CallCommand::LegFailed {
            leg_id: leg.id,
            sip_status: 487,
            failure: LegFailure::Cancelled,
        })
        .await;
    }

    async fn cancel(&self, leg: &Leg) {
        self.host
            .outgoing()
            .cancel(&leg.invite, self.path.clone(), self.notify())
            .await;
    }
}
