//! Blind transfer (RFC 3515 REFER, as RFC 5589 §6 uses it). A party of an answered call —
//! the caller or the callee, when it is one of the account's phones (or, with
//! `sip.allow_extension_transfer`, its extension) — sends REFER naming a telephone number.
//! The edge routes that number as the account's own call (on-net or through the trunk, with
//! the fraud controls, the calls-in-progress cap and a reservation of the first increment),
//! records the transfer with the new leg, answers 202 and places the leg itself, offered the
//! session of the party that stays, pointed at the relay's port facing the transferor. The
//! transferor hears how it goes in NOTIFYs (`message/sipfrag`: 100, the ringing, then the
//! final status) unless it asked for none (`Refer-Sub: false`, RFC 4488). When the new party
//! answers, it takes the transferor's place (the relay re-latched toward it) and the edge
//! hangs the transferor up; the transferor's own leg, if it had one, ends then in the log.
//! When the new party does not answer, the transferor is told and the call goes on as it was
//! — unless the transferor has hung up meanwhile, in which case the call ends. The
//! transferred leg is billed to the call's account, like any of its legs; one transfer at a
//! time. Attended transfer (`Replaces`) joins two calls instead: see `join.rs`.

use std::time::Instant;

use domain::call::{CallCommand, EndCause, LegFailure, LegTarget, Origin, Side};
use domain::ids::LegId;

use super::modify::relay_side;
use super::{Call, LegState, Phase, Then, refused};
use crate::answer::Answer;
use crate::b2bua::call::change;
use crate::b2bua::call::interface::{Context, Output, Peer, Reach, Refusal};
use crate::b2bua::call::rules::{caller_failure, outcome_status};
use crate::b2bua::plan::Target;
use crate::b2bua::{DialogKey, dialog_key};
use crate::media::sdp;
use crate::message::RawMessage;
use crate::message::header::{name_addr, uri_user};
use crate::outgoing::{ClientKey, Outcome};
use crate::requests::LegInvite;
use crate::transaction::TransactionKey;
use crate::trunk::telephone_number;

/// A transfer under way.
pub(super) struct Transfer {
    /// The side that asked (it leaves once the new party answers).
    by: Peer,
    /// The new leg's index.
    leg: usize,
    /// Whether the transferor is told how it goes (RFC 3515's implicit subscription).
    notify: bool,
    /// The REFER's CSeq number, which the NOTIFYs name (`Event: refer;id=`).
    id: String,
    /// The transferor hung up before the new party answered.
    left: bool,
    /// The session description the new party was offered.
    offered: Vec<u8>,
}

/// The edge's re-INVITE offering a transfer's new party to the side that stayed.
pub(super) struct Reoffer {
    to: Peer,
    branch: String,
    offered: Vec<u8>,
}

/// A REFER the call took, waiting for its transfer to be recorded.
pub(super) struct Asked {
    key: TransactionKey,
    request: RawMessage,
    by: Peer,
    target: Target,
    leg_id: LegId,
    reach: Reach,
}

/// What a REFER's `Refer-To` names: a number (blind transfer), or a dialog to replace
/// (attended transfer: `Replaces`, RFC 3891) by its Call-ID and tags.
enum Referred {
    Number(domain::E164),
    Dialog { key: DialogKey, from_tag: String },
}

/// `%XX` escapes decoded (a `Replaces` inside a URI is escaped); malformed ones kept.
fn unescaped(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a REFER transfers to, or the answer refusing it.
fn referred(request: &RawMessage) -> Result<Referred, Answer> {
    let mut refer_to = request.headers_named("Refer-To");
    let (Some(value), None) = (refer_to.next(), refer_to.next()) else {
        return Err(Answer::with_reason(400, "Bad Request (one Refer-To)"));
    };
    let uri = name_addr(value).map(|n| n.uri).unwrap_or_default();
    let replaces = uri.split_once('?').and_then(|(_, headers)| {
        headers.split('&').find_map(|h| {
            let (name, value) = h.split_once('=')?;
            name.eq_ignore_ascii_case("Replaces")
                .then(|| unescaped(value))
        })
    });
    if let Some(replaces) = replaces {
        // call-id;to-tag=…;from-tag=… (the to-tag is the edge's in that dialog).
        let mut parts = replaces.split(';').map(str::trim);
        let call_id = parts.next().unwrap_or_default().to_string();
        let (mut to_tag, mut from_tag) = (None, None);
        for part in parts {
            match part.split_once('=') {
                Some((name, tag)) if name.eq_ignore_ascii_case("to-tag") => to_tag = Some(tag),
                Some((name, tag)) if name.eq_ignore_ascii_case("from-tag") => from_tag = Some(tag),
                _ => {}
            }
        }
        return match (call_id.is_empty(), to_tag, from_tag) {
            (false, Some(to_tag), Some(from_tag)) => Ok(Referred::Dialog {
                key: dialog_key(&call_id, to_tag),
                from_tag: from_tag.to_string(),
            }),
            _ => Err(Answer::with_reason(400, "Bad Request (Replaces)")),
        };
    }
    uri_user(uri)
        .and_then(telephone_number)
        .map(Referred::Number)
        .ok_or_else(|| {
            Answer::with_reason(
                404,
                "Not Found (a call is transferred to a telephone number)",
            )
        })
}

/// The domain's name for a side that hands its place on, and its leg (a callee's).
pub(super) fn party(call: &Call, side: Peer) -> (Side, Option<LegId>) {
    match side {
        Peer::Caller => (Side::Caller, None),
        Peer::Leg(l) => (Side::Callee, Some(call.legs[l].id)),
    }
}

/// The REFER's CSeq number, which its NOTIFYs name (`Event: refer;id=`).
pub(super) fn refer_id(request: &RawMessage) -> String {
    request
        .header("CSeq")
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or("1")
        .to_string()
}

impl Call {
    /// Answers a REFER 202 Accepted; whether its progress is to be NOTIFYed (not after
    /// `Refer-Sub: false`, RFC 4488, which the 202 then echoes).
    pub(super) fn accept_refer(
        &mut self,
        key: TransactionKey,
        request: &RawMessage,
        ctx: &dyn Context,
    ) -> bool {
        let no_notify = request
            .header("Refer-Sub")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let mut accepted = change::with_contact(Answer::with_reason(202, "Accepted"), ctx);
        if no_notify {
            accepted = accepted.header(rsip::Header::Other("Refer-Sub".into(), "false".into()));
        }
        self.out.push(Output::Respond {
            key,
            request: request.clone(),
            answer: accepted,
            tag: String::new(),
        });
        !no_notify
    }

    /// A REFER inside one of the call's dialogs.
    pub(super) fn on_refer(&mut self, key: TransactionKey, request: RawMessage, ctx: &dyn Context) {
        let side = match self.phase {
            Phase::Answered(_) if self.is_from_caller(&request) => Some(Peer::Caller),
            Phase::Answered(winner) if self.leg_of(&request) == Some(winner) => {
                Some(Peer::Leg(winner))
            }
            _ => None,
        };
        let answer = match side {
            None if self.phase == Phase::Setup => {
                Answer::with_reason(403, "Forbidden (only an answered call is transferred)")
            }
            None => Answer::status(481),
            Some(_) if self.transfer.is_some() || self.reoffer.is_some() => {
                Answer::with_reason(491, "Request Pending (a transfer is under way)")
            }
            Some(_) if self.joined.is_some() => {
                Answer::with_reason(403, "Forbidden (the call is joined to another)")
            }
            Some(by) if !self.may_transfer(by) => {
                Answer::with_reason(403, "Forbidden (this party may not transfer the call)")
            }
            Some(by) => match referred(&request) {
                Err(answer) => answer,
                Ok(Referred::Dialog {
                    key: dialog,
                    from_tag,
                }) => match self.ask_join(by, dialog, from_tag, key.clone(), request.clone()) {
                    Ok(()) => return,
                    Err(answer) => answer,
                },
                Ok(Referred::Number(number)) => match self.place_transfer(by, &number, ctx) {
                    Ok((target, reach)) => {
                        let leg_id = LegId(uuid::Uuid::now_v7());
                        let (side, from_leg) = party(self, by);
                        let command = CallCommand::Transfer {
                            by: side,
                            from_leg,
                            to: number.as_str().to_string(),
                            leg_id,
                            target: target.target.clone(),
                            path: target.path,
                            account: self.plan.account.clone(),
                        };
                        let asked = Asked {
                            key,
                            request,
                            by,
                            target,
                            leg_id,
                            reach,
                        };
                        self.record_then(command, Then::Transferring(Box::new(asked)));
                        return;
                    }
                    Err(answer) => answer,
                },
            },
        };
        self.out.push(Output::Respond {
            key,
            request,
            answer,
            tag: String::new(),
        });
    }

    /// Whether `by` may hand its place on: one of the account's phones (an extension only
    /// with `sip.allow_extension_transfer`); a refusal is logged.
    pub(super) fn may_transfer(&self, by: Peer) -> bool {
        let (allowed, phone) = match by {
            Peer::Caller => (
                match self.plan.origin {
                    Origin::IpDevice { .. } => true,
                    Origin::Extension { .. } => self.settings.extension_transfers,
                    _ => false,
                },
                self.caller.reach.peer,
            ),
            Peer::Leg(l) => (
                match &self.legs[l].target {
                    Some(LegTarget::Contact { .. }) => true,
                    // An extension rung through the carrier, or calling in.
                    Some(LegTarget::Extension { .. }) | None => self.settings.extension_transfers,
                    Some(LegTarget::Pstn { .. }) => false,
                },
                self.legs[l].reach.peer,
            ),
        };
        if !allowed {
            tracing::warn!(
                target: "ringledger::security",
                call = %self.id, ?by, from = %phone,
                "transfer refused: not a phone of the call's account"
            );
        }
        allowed
    }

    /// Where a transfer from `by` to `number` goes, and the leg that goes there.
    fn place_transfer(
        &self,
        by: Peer,
        number: &domain::E164,
        ctx: &dyn Context,
    ) -> Result<(Target, Reach), Answer> {
        let (extension, phone) = match by {
            Peer::Caller => (self.plan.extension.as_ref(), self.caller.reach.peer),
            Peer::Leg(l) => (None, self.legs[l].reach.peer),
        };
        let target = ctx
            .outbound_leg(&self.plan.account, extension, number, phone)
            .inspect_err(|answer| {
                tracing::info!(call = %self.id, to = %number.as_str(), status = answer.status, "transfer refused");
            })?;
        let reach = ctx
            .reach(target.destination, target.transport)
            .ok_or_else(|| {
                Answer::with_reason(503, "Service Unavailable (no way to the target)")
            })?;
        Ok((target, reach))
    }

    /// The transfer is recorded (or refused): accepted, the transferor told, the leg placed.
    pub(super) fn transfer_recorded(
        &mut self,
        asked: Asked,
        result: Result<(), Refusal>,
        ctx: &dyn Context,
    ) {
        let Asked {
            key,
            request,
            by,
            target,
            leg_id,
            reach,
        } = asked;
        if let Err(refusal) = result {
            let answer = refused(refusal, "transfer not recorded");
            self.out.push(Output::Respond {
                key,
                request,
                answer,
                tag: String::new(),
            });
            return;
        }
        let Some(stays) = self.other_side(by) else {
            return;
        };
        let notify = self.accept_refer(key, &request, ctx);
        // The new party is offered the session of the side that stays, both ways (whatever
        // hold the transferor had it in), pointed at the relay's port that faced the
        // transferor.
        let heard = sdp::both_ways(&self.sessions.of(stays).0);
        let offered = match &self.media {
            Some(media) => sdp::rebuild(&heard, media.address, media.port(relay_side(by))),
            None => heard,
        };
        let from_user = self
            .plan
            .account
            .main_number
            .as_ref()
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|| self.plan.caller_id.clone());
        let leg = self.invite_leg(
            &LegInvite {
                request_uri: &target.request_uri,
                local: ctx.local(),
                transport: reach.transport,
                from_user: &from_user,
                max_forwards: 70,
                content_type: Some("application/sdp"),
                body: &offered,
                session_expires: None,
                extra: &target.headers,
            },
            &target,
            leg_id,
            reach,
        );
        self.transfer = Some(Transfer {
            by,
            leg,
            notify,
            id: refer_id(&request),
            left: false,
            offered,
        });
        tracing::info!(call = %self.id, ?by, to = %target.request_uri, "transfer accepted");
        self.notify_transferor("SIP/2.0 100 Trying", false, ctx);
    }

    /// Whether `leg` is the one a transfer under way placed.
    pub(super) fn is_transfer_leg(&self, leg: usize) -> bool {
        self.transfer.as_ref().is_some_and(|t| t.leg == leg)
    }

    /// A response on the transfer's leg.
    pub(super) fn on_transfer_response(
        &mut self,
        leg: usize,
        status: u16,
        response: RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) {
        match status {
            100 => {}
            101..=199 => {
                if self.legs[leg].state == LegState::Trying {
                    self.legs[leg].state = LegState::Ringing;
                    let leg_id = self.legs[leg].id;
                    self.out.record(CallCommand::LegRinging { leg_id });
                    self.notify_transferor(&response.start_line, false, ctx);
                }
            }
            200..=299 => {
                if let Err(e) = self.legs[leg].answered_with(&response) {
                    tracing::info!(call = %self.id, error = %e, "a transfer's 2xx cannot start a dialog");
                    return;
                }
                match self.legs[leg].ack.clone() {
                    Some(bytes) => self.out.push(Output::Ack {
                        to: Peer::Leg(leg),
                        bytes,
                    }),
                    None => self.ack_leg(leg, &[], &[], ctx),
                }
                if self.legs[leg].is_ringing() {
                    let leg_id = self.legs[leg].id;
                    self.record_then(
                        CallCommand::LegAnswered { leg_id },
                        Then::TransferAnswered {
                            leg,
                            response: Box::new(response),
                        },
                    );
                }
            }
            _ => {
                let line = response.start_line.clone();
                self.transfer_failed(leg, status, &line, LegFailure::Rejected, now, ctx);
            }
        }
    }

    /// The transfer's leg failed with `status`: the transferor is told and keeps the call, or,
    /// gone already, the call ends.
    pub(super) fn transfer_failed(
        &mut self,
        leg: usize,
        status: u16,
        line: &str,
        failure: LegFailure,
        now: Instant,
        ctx: &dyn Context,
    ) {
        self.on_leg_failed(leg, status, failure, now);
        self.notify_transferor(line, true, ctx);
        let Some(transfer) = self.transfer.take() else {
            return;
        };
        tracing::info!(call = %self.id, status, left = transfer.left, "transfer failed");
        if transfer.left
            && let Phase::Answered(winner) = self.phase
        {
            // Nobody to go back to: the party left waiting is hung up.
            let (_, cause) = caller_failure(&[status]);
            self.hang_up(winner, cause, now, ctx);
        }
    }

    /// The new party's answer is recorded: it takes the transferor's place.
    pub(super) fn transfer_answered(
        &mut self,
        leg: usize,
        response: &RawMessage,
        result: Result<(), Refusal>,
        now: Instant,
        ctx: &dyn Context,
    ) {
        if result.is_err() {
            // Not recorded, not billed: the new party is hung up, the call goes on as it was.
            self.notify_transferor("SIP/2.0 500 Server Internal Error", true, ctx);
            self.legs[leg].state = LegState::Done;
            self.bye_leg(leg, ctx);
            if let Some(transfer) = self.transfer.take()
                && transfer.left
                && let Phase::Answered(winner) = self.phase
            {
                self.hang_up(winner, EndCause::Failed, now, ctx);
            }
            return;
        }
        self.notify_transferor("SIP/2.0 200 OK", true, ctx);
        let Some(transfer) = self.transfer.take() else {
            return;
        };
        self.legs[leg].state = LegState::Answered;
        // A session change between the transferor and the other side is moot now.
        self.drop_passing();
        let side = match transfer.by {
            Peer::Leg(old) => {
                if !transfer.left {
                    self.bye_leg(old, ctx);
                    let leg_id = self.legs[old].id;
                    self.out.record(CallCommand::EndLeg { leg_id });
                }
                self.session_timers.retain(|t| t.side != Peer::Leg(old));
                self.phase = Phase::Answered(leg);
                self.take_callee_session_timer(leg, response, now);
                Peer::Leg(leg)
            }
            Peer::Caller => {
                if !transfer.left {
                    self.bye_caller(ctx);
                }
                self.session_timers.retain(|t| t.side != Peer::Caller);
                self.unacked.retain(|u| u.leg.is_some());
                self.caller_leg = Some(leg);
                self.caller.reach = self.legs[leg].reach;
                self.out.push(Output::CallerIs { leg });
                Peer::Caller
            }
        };
        self.media_peer(side, &response.body);
        self.sessions.set(side, &response.body, &transfer.offered);
        self.update_flows(now);
        tracing::info!(call = %self.id, leg = %self.legs[leg].id, "call transferred");
        // The side that stayed learns of the new party when it must: without a relay its
        // media goes to the new party's address, and a side on hold (held by the transferor,
        // or holding it) is taken off hold.
        if let Some(stays) = self.other_side(side) {
            let way = sdp::direction(&self.sessions.of(stays).0);
            if self.media.is_none() || !(way.sends && way.receives) {
                self.reoffer_to(stays, &response.body, ctx);
            }
        }
    }

    /// Offers `to` the new party's session (`body`): a re-INVITE from the edge.
    pub(super) fn reoffer_to(&mut self, to: Peer, body: &[u8], ctx: &dyn Context) {
        let offered = self.toward(to, body);
        let local = ctx.local();
        let mut extra = vec![
            ("Contact", format!("<sip:ringledger@{local}>")),
            ("Content-Type", "application/sdp".to_string()),
        ];
        extra.extend(self.timer_headers_toward(to));
        let Some((bytes, branch)) = self.in_dialog(to, local, "INVITE", None, &extra, &offered)
        else {
            return;
        };
        self.out.push(Output::Request {
            to,
            method: "INVITE",
            branch: branch.clone(),
            bytes,
        });
        self.reoffer = Some(Reoffer {
            to,
            branch,
            offered,
        });
    }

    /// Whether `key` is the edge's re-INVITE to the side that stayed.
    pub(super) fn is_reoffer(&self, key: &ClientKey) -> bool {
        self.reoffer
            .as_ref()
            .is_some_and(|r| r.branch == key.branch)
    }

    /// What the side that stayed made of the new party's session.
    pub(super) fn on_reoffer_outcome(&mut self, outcome: Outcome, now: Instant, ctx: &dyn Context) {
        let status = outcome_status(&outcome);
        if status < 200 {
            return;
        }
        let Some(reoffer) = self.reoffer.take() else {
            return;
        };
        match (status, outcome) {
            (200..=299, Outcome::Response(response)) => {
                self.ack_reinvite(reoffer.to, &reoffer.branch, &response, ctx);
                if self.phase == Phase::Over {
                    return;
                }
                self.refreshed_by_change(reoffer.to, &response, now);
                self.media_peer(reoffer.to, &response.body);
                self.sessions
                    .set(reoffer.to, &response.body, &reoffer.offered);
                self.update_flows(now);
            }
            (408 | 481, _) => {
                tracing::info!(call = %self.id, status, "the party left after a transfer is gone; hanging up");
                if let Phase::Answered(winner) = self.phase {
                    self.hang_up(winner, EndCause::SessionExpired, now, ctx);
                }
            }
            // Refused: the call goes on with the session that side had.
            (status, _) => {
                tracing::info!(call = %self.id, status, "the party left after a transfer kept its session");
            }
        }
    }

    /// The transferor hung up before the new party answered: its leg (if it had one) ends,
    /// the call waits for the new party. True if the BYE was the transferor's.
    pub(super) fn transferor_left(&mut self, bye: &RawMessage) -> bool {
        let Some(transfer) = &self.transfer else {
            return false;
        };
        match transfer.by {
            Peer::Caller if self.is_from_caller(bye) => {
                self.caller_dialog = None;
                self.unacked.retain(|u| u.leg.is_some());
            }
            Peer::Leg(l) if self.leg_of(bye) == Some(l) => {
                self.legs[l].hung_up();
                let leg_id = self.legs[l].id;
                self.out.record(CallCommand::EndLeg { leg_id });
            }
            _ => return false,
        }
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.left = true;
        }
        tracing::info!(call = %self.id, "the transferor hung up; waiting for the new party");
        true
    }

    /// Tells the transferor how its transfer goes (a NOTIFY with `status_line` as sipfrag);
    /// `done`: the last one.
    fn notify_transferor(&mut self, status_line: &str, done: bool, ctx: &dyn Context) {
        let Some(transfer) = &self.transfer else {
            return;
        };
        if !transfer.notify || transfer.left {
            return;
        }
        let (to, id) = (transfer.by, transfer.id.clone());
        self.notify_refer(to, &id, status_line, done, ctx);
    }

    /// A NOTIFY of a REFER's progress (RFC 3515 §2.4.4) to `to`: `status_line` as sipfrag,
    /// for the REFER of CSeq `id`; `done`: the subscription ends with it.
    pub(super) fn notify_refer(
        &mut self,
        to: Peer,
        id: &str,
        status_line: &str,
        done: bool,
        ctx: &dyn Context,
    ) {
        let local = ctx.local();
        let state = if done {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let extra = [
            ("Contact", format!("<sip:ringledger@{local}>")),
            ("Event", format!("refer;id={id}")),
            ("Subscription-State", state.to_string()),
            ("Content-Type", "message/sipfrag;version=2.0".to_string()),
        ];
        let body = format!("{}\r\n", status_line.trim());
        if let Some((bytes, branch)) =
            self.in_dialog(to, local, "NOTIFY", None, &extra, body.as_bytes())
        {
            self.out.push(Output::Request {
                to,
                method: "NOTIFY",
                branch,
                bytes,
            });
        }
    }
}
