//! A call-in proving itself by keypad (docs/OPERATIONS.md, "Call-in"): unless the carrier's
//! caller ID is trusted, the edge answers the extension's call to the access number alone,
//! plays dial tone on it and listens for the token its device was sent. The right token
//! bridges it to the caller; a wrong one three times, no token in time, or a hangup leaves
//! the leg failed (never answered, so never billed) and the extension is called out instead.

use std::time::Instant;

use domain::call::{CallCommand, EndCause, LegFailure};

use super::menu::{KeyedCallIn, MenuState, REFUSED, prompt};
use super::{Bridging, Call, Then};
use crate::answer::Answer;
use crate::b2bua::call::interface::{Context, KeypadCue, Output, Peer, Refusal};
use crate::b2bua::call::menu::Asking;
use crate::b2bua::call_in::token_matches;
use crate::media::relay::Side as RelaySide;
use crate::message::RawMessage;

/// Wrong tokens keyed in one call-in before the edge hangs it up.
pub const TOKEN_TRIES: u8 = 3;

impl Call {
    /// The call-in's leg is recorded (not answered): the edge answers its INVITE itself and
    /// asks for the token with dial tone.
    pub(super) fn answer_for_token(&mut self, bridging: Bridging, now: Instant, ctx: &dyn Context) {
        let Some((country, agreed)) = bridging.keyed else {
            return;
        };
        let leg_id = bridging.leg_id;
        let leg = self.take_call_in(bridging.arrival, leg_id, &bridging.to_extension, now, ctx);
        self.out.push(Output::Keypad(KeypadCue::Open {
            side: RelaySide::Callee,
            agreed,
            country,
            sounds: prompt(Asking::Token),
        }));
        let entry = KeyedCallIn {
            leg,
            to_extension: bridging.to_extension,
            to_caller: bridging.to_caller,
            local: ctx.local(),
        };
        self.menu = Some(MenuState::new(Asking::Token, Some(entry), now));
        tracing::info!(call = %self.id, leg = %leg_id, "call-in answered for its token");
    }

    /// The leg of the call-in keying its token, if one is.
    pub(super) fn keyed_leg(&self) -> Option<usize> {
        self.menu.as_ref()?.call_in.as_ref().map(|e| e.leg)
    }

    /// Eight digits (or fewer and `#`) keyed on the call-in: the right token records its leg
    /// answered; a wrong one plays reorder tone and asks again, up to [`TOKEN_TRIES`].
    pub(super) fn token_keyed(&mut self, digits: &str, now: Instant, ctx: &dyn Context) {
        // The token the call waits with (it waits until the call-in is proved or given up).
        let right = self
            .call_in
            .as_ref()
            .is_some_and(|a| token_matches(digits, &a.token));
        let Some(menu) = self.menu.as_mut().filter(|m| m.call_in.is_some()) else {
            return;
        };
        if right {
            let Some(entry) = self.menu.take().and_then(|m| m.call_in) else {
                return;
            };
            self.out.push(Output::Keypad(KeypadCue::Close));
            let leg_id = self.legs[entry.leg].id;
            tracing::info!(call = %self.id, leg = %leg_id, "call-in token keyed");
            return self.record_then(
                CallCommand::LegAnswered { leg_id },
                Then::KeyedCallInAnswered(Box::new(entry)),
            );
        }
        menu.keys.refused += 1;
        let refused = menu.keys.refused;
        let extension = self.call_in.as_ref().map(|a| a.plan.number.clone());
        tracing::warn!(
            target: "ringledger::security",
            call = %self.id,
            extension = extension.as_ref().map_or("", |e| e.as_str()),
            refused,
            "wrong call-in token keyed"
        );
        if refused >= TOKEN_TRIES {
            self.drop_keyed_call_in(LegFailure::TokenRefused);
            return self.give_up_call_in(EndCause::Rejected, now, ctx);
        }
        self.prompt_again(Asking::Token, Some(REFUSED), now);
    }

    /// The keyed call-in's answer is recorded (or not): it is bridged to the caller.
    pub(super) fn token_proved(
        &mut self,
        entry: KeyedCallIn,
        result: Result<(), Refusal>,
        now: Instant,
        ctx: &dyn Context,
    ) {
        match result {
            Ok(()) => self.bridge_caller(entry.leg, &entry.to_extension, entry.to_caller, now, ctx),
            Err(_) => {
                // An answer that cannot be recorded cannot be billed: no call.
                self.bye_leg(entry.leg, ctx);
                self.stop_waiting_for_call_in();
                self.cancel_legs(LegFailure::Cancelled);
                self.end_setup(
                    Answer::with_reason(500, "Server Internal Error (answer not recorded)"),
                    Some((EndCause::Failed, domain::call::Side::System)),
                    now,
                );
            }
        }
    }

    /// Whether `bye` hangs up the call-in keying its token: its leg failed, the extension is
    /// called out instead.
    pub(super) fn keyed_call_in_hung_up(
        &mut self,
        bye: &RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) -> bool {
        let Some(leg) = self.keyed_leg() else {
            return false;
        };
        if !self.legs[leg]
            .dialog
            .as_ref()
            .is_some_and(|d| d.matches(bye))
        {
            return false;
        }
        tracing::info!(call = %self.id, "the call-in hung up before keying its token");
        self.legs[leg].hung_up();
        self.drop_keyed_call_in(LegFailure::Cancelled);
        self.give_up_call_in(EndCause::CallInTimeout, now, ctx);
        true
    }

    /// Ends the call-in keying its token, if one is: its keypad closed, hung up (unless it hung
    /// up itself), its leg recorded failed for `failure`.
    pub(super) fn drop_keyed_call_in(&mut self, failure: LegFailure) {
        if self.keyed_leg().is_none() {
            return;
        }
        let Some(entry) = self.menu.take().and_then(|m| m.call_in) else {
            return;
        };
        self.out.push(Output::Keypad(KeypadCue::Close));
        self.unacked.retain(|u| u.leg != Some(entry.leg));
        if let Some((bytes, branch)) = self.legs[entry.leg].bye(entry.local) {
            self.send_bye(Peer::Leg(entry.leg), bytes, branch);
        }
        let sip_status = match failure {
            LegFailure::TokenRefused => 403,
            LegFailure::Timeout => 408,
            _ => 487,
        };
        self.out.record(CallCommand::LegFailed {
            leg_id: self.legs[entry.leg].id,
            sip_status,
            failure,
        });
    }
}
