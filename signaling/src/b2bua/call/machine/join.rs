//! Attended transfer (RFC 5589 §7). A phone of the account has two calls through the edge —
//! say with B (usually on hold by now) and with C — and sends, in its call with B, REFER whose
//! `Refer-To` carries `Replaces` naming its dialog with the edge in the call with C. The two
//! calls are joined, not merged: the call with B asks the call that has that dialog (found by
//! its Call-ID and the edge's tag, through the edge's registry of dialogs) to join it. That
//! call checks that the dialog is the same phone's (its tag), that the phone may transfer
//! there too and that both calls are billed to one account; records `call.joined` and
//! answers. Then the asking call records `call.joined`, answers the REFER 202 and NOTIFYs its
//! success at once. Each call lets the phone go (BYE; a callee's leg ends in the log) and
//! points its relay's port that faced the phone at the other call's: B's media goes through
//! both relays to C and back. C is offered B's session (a re-INVITE: both ends then use the
//! codec B chose among the phone's, which C was offered too; the relays do not transcode), B
//! its own back when it was on hold (off hold). Each call goes on
//! being billed as it was; when either ends, it tells the other, which ends too. Joined calls
//! take no more session changes (488: the other call would have to pass them on) nor
//! transfers. Attended transfer needs the media relay (501 without it).

use std::net::SocketAddr;
use std::time::Instant;

use domain::call::{CallCommand, EndCause};

use super::modify::relay_side;
use super::transfer::{party, refer_id};
use super::{Call, Phase, Then, refused, side_leg};
use crate::answer::Answer;
use crate::b2bua::call::interface::{Context, JoinAsk, Output, Partner, Peer, Refusal};
use crate::b2bua::{DialogKey, dialog_key};
use crate::media::sdp;
use crate::message::RawMessage;
use crate::transaction::TransactionKey;

/// A REFER with `Replaces` waiting for the other call's answer.
pub(super) struct Joining {
    key: TransactionKey,
    request: RawMessage,
    by: Peer,
}

/// The other call's answer, waiting for this call's recording of the join.
pub(super) struct JoinRecording {
    joining: Joining,
    partner: Partner,
}

/// A join this call was asked for, waiting for its recording.
pub(super) struct AskedToJoin {
    leaving: Peer,
    partner: Partner,
    /// This call as the asking call is to know it.
    mine: Partner,
}

impl Call {
    /// Where the relay takes the media for `side`.
    fn relay_address(&self, side: Peer) -> Option<SocketAddr> {
        let media = self.media?;
        Some(SocketAddr::new(media.address, media.port(relay_side(side))))
    }

    /// The dialog of `side`, as the edge registered it (Call-ID, the edge's tag).
    fn dialog_of_side(&self, side: Peer) -> Option<&crate::dialog::Dialog> {
        match (side, self.caller_leg) {
            (Peer::Caller, None) => self.caller_dialog.as_ref(),
            (Peer::Caller, Some(l)) | (Peer::Leg(l), _) => self.legs[l].dialog.as_ref(),
        }
    }

    /// This call as a partner knows it, once `leaving` has left it.
    fn partner_for(&self, leaving: Peer) -> Option<Partner> {
        let stays = self.other_side(leaving)?;
        let dialog = self.dialog_of_side(leaving)?;
        Some(Partner {
            call: self.id,
            dialog: dialog_key(&dialog.id.call_id, &dialog.id.local_tag),
            media: self.relay_address(leaving)?,
            session: self.sessions.of(stays).0.clone(),
        })
    }

    /// A REFER with `Replaces` from `by`: the call with the dialog it names (`dialog`, the
    /// party's tag there `from_tag`) is asked to join this one.
    pub(super) fn ask_join(
        &mut self,
        by: Peer,
        dialog: DialogKey,
        from_tag: String,
        key: TransactionKey,
        request: RawMessage,
    ) -> Result<(), Answer> {
        if self.media.is_none() {
            return Err(Answer::with_reason(
                501,
                "Not Implemented (attended transfer without the media relay)",
            ));
        }
        if self.dialogs.contains(&dialog) {
            return Err(Answer::with_reason(
                400,
                "Bad Request (Replaces names this call)",
            ));
        }
        let partner = self.partner_for(by).ok_or_else(|| Answer::status(500))?;
        let ask = JoinAsk {
            dialog,
            from_tag,
            account: self.plan.account.id,
            partner,
        };
        self.out.push(Output::AskJoin(Box::new(ask)));
        self.awaiting = Some(Then::Joining(Box::new(Joining { key, request, by })));
        Ok(())
    }

    /// The other call's answer to this call's ask.
    pub(super) fn join_answered(&mut self, joining: Joining, answer: Result<Partner, Answer>) {
        let partner = match answer {
            Err(answer) => {
                tracing::info!(call = %self.id, status = answer.status, "attended transfer refused");
                return self.out.push(Output::Respond {
                    key: joining.key,
                    request: joining.request,
                    answer,
                    tag: String::new(),
                });
            }
            Ok(partner) => partner,
        };
        if !matches!(self.phase, Phase::Answered(_)) {
            // Ended meanwhile: the other call, joined already, ends too.
            self.out.push(Output::TellPartner(partner.dialog));
            return self.out.push(Output::Respond {
                key: joining.key,
                request: joining.request,
                answer: Answer::status(481),
                tag: String::new(),
            });
        }
        let (by, from_leg) = party(self, joining.by);
        let command = CallCommand::Join {
            by,
            from_leg,
            with: partner.call,
            account: self.plan.account.clone(),
        };
        self.record_then(
            command,
            Then::JoinRecorded(Box::new(JoinRecording { joining, partner })),
        );
    }

    /// The join is recorded here too: the REFER succeeded, the phone is let go, and the
    /// party that stays is offered the other party's session.
    pub(super) fn join_recorded(
        &mut self,
        recording: JoinRecording,
        result: Result<(), Refusal>,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let JoinRecording { joining, partner } = recording;
        if let Err(refusal) = result {
            // Not recorded here: the other call, joined already, is ended; this one goes on.
            self.out.push(Output::TellPartner(partner.dialog));
            let answer = refused(refusal, "join not recorded");
            return self.out.push(Output::Respond {
                key: joining.key,
                request: joining.request,
                answer,
                tag: String::new(),
            });
        }
        let notify = self.accept_refer(joining.key, &joining.request, ctx);
        if notify {
            let id = refer_id(&joining.request);
            self.notify_refer(joining.by, &id, "SIP/2.0 200 OK", true, ctx);
        }
        self.leave_for(joining.by, &partner, now, ctx);
        // The party that stays here (usually held by the phone) comes off hold, offered its
        // own session back: the other call offers its party this one's codec.
        if let Some(stays) = self.other_side(joining.by) {
            let (heard, _) = self.sessions.of(stays).clone();
            let way = sdp::direction(&heard);
            if !(way.sends && way.receives) {
                self.reoffer_to(stays, &sdp::both_ways(&heard), ctx);
            }
        }
        tracing::info!(call = %self.id, with = %partner.call, "calls joined (attended transfer)");
    }

    /// Another call asks to be joined with this one.
    pub(super) fn on_join_asked(&mut self, ask: JoinAsk) {
        match self.may_join(&ask) {
            Ok((leaving, mine)) => {
                let (by, from_leg) = party(self, leaving);
                let command = CallCommand::Join {
                    by,
                    from_leg,
                    with: ask.partner.call,
                    account: self.plan.account.clone(),
                };
                let asked = AskedToJoin {
                    leaving,
                    partner: ask.partner,
                    mine,
                };
                self.record_then(command, Then::JoinAsked(Box::new(asked)));
            }
            Err(answer) => {
                tracing::info!(call = %self.id, status = answer.status, "join refused");
                self.out.push(Output::JoinAnswer(Err(answer)));
            }
        }
    }

    /// Whether this call may be joined as `ask` asks: the side that leaves, and this call as
    /// the asking call is to know it.
    fn may_join(&self, ask: &JoinAsk) -> Result<(Peer, Partner), Answer> {
        let Phase::Answered(winner) = self.phase else {
            return Err(Answer::status(481));
        };
        let leaving = [Peer::Caller, Peer::Leg(winner)]
            .into_iter()
            .find(|side| {
                self.dialog_of_side(*side).is_some_and(|d| {
                    dialog_key(&d.id.call_id, &d.id.local_tag) == ask.dialog
                        && d.id.remote_tag == ask.from_tag
                })
            })
            .ok_or_else(|| {
                Answer::with_reason(
                    481,
                    "Call/Transaction Does Not Exist (no such dialog to replace)",
                )
            })?;
        if ask.account.is_none() || ask.account != self.plan.account.id {
            return Err(Answer::with_reason(
                403,
                "Forbidden (the calls are not the same account's)",
            ));
        }
        if !self.may_transfer(leaving) {
            return Err(Answer::with_reason(
                403,
                "Forbidden (this party may not transfer the call)",
            ));
        }
        if self.transfer.is_some() || self.reoffer.is_some() || self.joined.is_some() {
            return Err(Answer::with_reason(
                491,
                "Request Pending (the other call is being transferred)",
            ));
        }
        let mine = self.partner_for(leaving).ok_or_else(|| {
            Answer::with_reason(
                501,
                "Not Implemented (attended transfer without the media relay)",
            )
        })?;
        Ok((leaving, mine))
    }

    /// The join this call was asked for is recorded (or refused): answered, and the phone
    /// let go.
    pub(super) fn join_asked_recorded(
        &mut self,
        asked: AskedToJoin,
        result: Result<(), Refusal>,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let AskedToJoin {
            leaving,
            partner,
            mine,
        } = asked;
        if let Err(refusal) = result {
            let answer = refused(refusal, "join not recorded");
            return self.out.push(Output::JoinAnswer(Err(answer)));
        }
        self.out.push(Output::JoinAnswer(Ok(mine)));
        self.leave_for(leaving, &partner, now, ctx);
        // The party that stays here is offered the other party's session, so that both use
        // the codec the other party chose (it chose among the phone's, which this party was
        // offered too): no transcoding on the way.
        if let Some(stays) = self.other_side(leaving) {
            self.reoffer_to(stays, &sdp::both_ways(&partner.session), ctx);
        }
    }

    /// `leaving` leaves this call, joined with `partner`: hung up (its leg ended in the log),
    /// its timers and repeats dropped, and the relay's port that faced it sending to, and
    /// taking from, the partner's relay.
    fn leave_for(&mut self, leaving: Peer, partner: &Partner, now: Instant, ctx: &dyn Context) {
        match leaving {
            Peer::Caller => {
                self.bye_caller(ctx);
                if self.caller_leg.is_none() {
                    // Hung up: no second BYE when the call ends.
                    self.caller_dialog = None;
                }
            }
            Peer::Leg(l) => {
                self.bye_leg(l, ctx);
                let leg_id = self.legs[l].id;
                self.out.record(CallCommand::EndLeg { leg_id });
            }
        }
        self.session_timers.retain(|t| t.side != leaving);
        if self
            .refresher
            .as_ref()
            .is_some_and(|r| Peer::Leg(r.leg) == leaving)
        {
            self.refresher = None;
        }
        let gone = side_leg(leaving);
        self.unacked.retain(|u| u.leg != gone);
        self.out.push(Output::MediaPeer {
            side: relay_side(leaving),
            rtp: partner.media,
            from: partner.media.ip(),
        });
        // That side of the relay now speaks for the other call's party, both ways.
        let (_, given) = self.sessions.of(leaving).clone();
        self.sessions
            .set(leaving, &sdp::both_ways(&partner.session), &given);
        self.update_flows(now);
        self.joined = Some(partner.dialog.clone());
    }

    /// The call this one was joined with ended: so does this one.
    pub(super) fn partner_ended(&mut self, now: Instant, ctx: &dyn Context) {
        if self.joined.take().is_some()
            && let Phase::Answered(winner) = self.phase
        {
            tracing::info!(call = %self.id, "the joined call ended; hanging up");
            self.hang_up(winner, EndCause::NormalClearing, now, ctx);
        }
    }

    /// The call ends: the call joined with it is told.
    pub(super) fn tell_partner(&mut self) {
        if let Some(partner) = self.joined.take() {
            self.out.push(Output::TellPartner(partner));
        }
    }
}
