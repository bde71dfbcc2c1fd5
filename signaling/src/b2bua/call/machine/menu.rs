//! The access-number menu (docs/OPERATIONS.md, "Keypad call-through"): the edge answers the
//! caller itself, its endpoint on the caller's side of the relay plays the tones and hears
//! the keys; a PIN (when the extension has one) is checked on the extension's stream; the
//! number keyed is normalised with the account's dialling rules, checked as any call out of
//! the account is, recorded, and the leg to it placed as the call's only target. Until then
//! no leg exists; the caller, already answered, is hung up (BYE) when the menu gives up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use domain::E164;
use domain::call::{CallCommand, EndCause, LegFailure, MenuExit, Path, Side};
use domain::dialling::DiallingRules;

use super::{Call, Then};
use crate::answer::Answer;
use crate::b2bua::call::change;
use crate::b2bua::call::interface::{Context, KeypadCue, Output, Pin, PinCheck, Refusal};
use crate::b2bua::call::menu::{Asking, Entered, Keys, NUMBER_TRIES};
use crate::b2bua::plan::{MenuPlan, Target};
use crate::dialog::Dialog;
use crate::media::dtmf::keys::{LegKeys, Way};
use crate::media::keypad::Sound;
use crate::media::prompts::Prompt;
use crate::media::relay::Side as RelaySide;
use crate::media::sdp;
use crate::media::tones::Tone;

/// How long a key sent by SIP INFO waits for the INFOs sent before it: a phone may send a
/// burst of them at once, and the edge may take them in any order; keys by INFO are taken in
/// CSeq order.
const INFO_REORDER: Duration = Duration::from_millis(300);

/// A menu in progress.
pub(in crate::b2bua::call) struct MenuState {
    pub(super) keys: Keys,
    heard: LegKeys,
    /// Keys by INFO held for reordering, by CSeq number; since when the oldest waits.
    info: BTreeMap<u32, char>,
    info_since: Option<Instant>,
    /// The CSeq number the next INFO key should have (the one after the last taken).
    info_next: Option<u32>,
    /// The call-in keying its token (None: the caller at the access-number menu).
    pub(super) call_in: Option<KeyedCallIn>,
}

impl MenuState {
    pub(super) fn new(asking: Asking, call_in: Option<KeyedCallIn>, now: Instant) -> Self {
        Self {
            keys: Keys::new(asking, now),
            heard: LegKeys::default(),
            info: BTreeMap::new(),
            info_since: None,
            info_next: None,
            call_in,
        }
    }
}

/// A call-in the edge answered itself for its token to be keyed (docs/OPERATIONS.md,
/// "Call-in"): its leg, what it was answered with, and what the caller will be.
pub(super) struct KeyedCallIn {
    pub leg: usize,
    pub to_extension: Vec<u8>,
    pub to_caller: Vec<u8>,
    /// Where the edge's requests to it leave from.
    pub local: std::net::SocketAddr,
}

impl Call {
    /// The call is recorded with its destination to be keyed in: the edge answers the caller
    /// with its own session (G.711 and telephone-events, at the relay's caller side) and
    /// prompts for the PIN (silence) or the number (dial tone).
    pub(super) fn enter_menu(&mut self, plan: MenuPlan, now: Instant, ctx: &dyn Context) {
        let Some(media) = self.media else {
            tracing::warn!(call = %self.id, "no media relay: the menu cannot answer");
            return self.end_setup(
                Answer::with_reason(503, "Service Unavailable (no media relay for the menu)"),
                Some((EndCause::Failed, Side::System)),
                now,
            );
        };
        let offer = &self.caller.invite.body;
        let Some((body, agreed)) =
            sdp::answer_as_endpoint(offer, media.address, media.port(RelaySide::Caller))
        else {
            return self.end_setup(
                Answer::with_reason(488, "Not Acceptable Here (the menu speaks G.711 only)"),
                Some((EndCause::Rejected, Side::System)),
                now,
            );
        };
        self.caller_dialog = Dialog::as_callee(&self.caller.invite, &self.caller.tag).ok();
        let answer =
            change::with_contact(Answer::status(200), ctx).body("application/sdp", body.clone());
        self.respond(answer.clone());
        self.await_ack(None, answer, now);
        self.self_answered = Some((body, ctx.local()));
        let asking = if plan.pin {
            Asking::Pin
        } else {
            Asking::Number
        };
        self.out.push(Output::Keypad(KeypadCue::Open {
            side: RelaySide::Caller,
            agreed,
            country: plan.tones,
            sounds: prompt(asking),
        }));
        self.menu = Some(MenuState::new(asking, None, now));
        tracing::info!(call = %self.id, pin = plan.pin, "menu answered");
    }

    /// The caller at the access-number menu (not a call-in keying its token).
    pub(super) fn at_access_menu(&self) -> bool {
        self.menu.as_ref().is_some_and(|m| m.call_in.is_none())
    }

    /// A key pressed (by INFO: with the INFO's CSeq number and Call-ID).
    pub(super) fn on_key(
        &mut self,
        way: Way,
        key: char,
        cseq: Option<u32>,
        call_id: Option<&str>,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let Some(menu) = self.menu.as_ref() else {
            // Keys once the destination is known are the call's (none are used yet).
            return;
        };
        if let Some(call_id) = call_id {
            // By INFO, only from the dialog being keyed in: a caller left ringing must not
            // key a call-in's token.
            let keyed = match &menu.call_in {
                Some(entry) => &self.legs[entry.leg].invite,
                None => &self.caller.invite,
            };
            if keyed.header("Call-ID") != Some(call_id) {
                return;
            }
        }
        let Some(menu) = self.menu.as_mut() else {
            return;
        };
        match cseq {
            Some(cseq) => {
                if menu.info_next.is_some_and(|next| cseq < next) || menu.info.len() >= 64 {
                    // Older than a key already taken (or a flood): dropped.
                    return;
                }
                menu.info.insert(cseq, key);
                menu.info_since.get_or_insert(now);
                self.release_info(now, ctx);
            }
            None => self.take_key(way, key, now, ctx),
        }
    }

    /// Takes the held INFO keys that are next in CSeq order, and all of them once the
    /// oldest has waited `INFO_REORDER`.
    fn release_info(&mut self, now: Instant, ctx: &dyn Context) {
        while self.awaiting.is_none() {
            let Some(menu) = self.menu.as_mut() else {
                return;
            };
            let Some((&cseq, &key)) = menu.info.first_key_value() else {
                menu.info_since = None;
                return;
            };
            let due = menu.info_since.is_some_and(|t| now >= t + INFO_REORDER);
            if menu.info_next != Some(cseq) && !due {
                return;
            }
            menu.info.remove(&cseq);
            menu.info_next = Some(cseq.wrapping_add(1));
            if menu.info.is_empty() {
                menu.info_since = None;
            }
            self.take_key(Way::Info, key, now, ctx);
        }
    }

    fn take_key(&mut self, way: Way, key: char, now: Instant, ctx: &dyn Context) {
        let Some(menu) = self.menu.as_mut() else {
            return;
        };
        let Some(key) = menu.heard.take(way, key, now) else {
            return;
        };
        let entered = menu.keys.key(key, now);
        self.on_entered(entered, now, ctx);
    }

    /// When the menu next wants to be woken.
    pub(super) fn menu_wake(&self) -> Option<Instant> {
        let menu = self.menu.as_ref()?;
        let info = menu.info_since.map(|t| t + INFO_REORDER);
        Some(info.map_or(menu.keys.next_timeout(), |i| {
            i.min(menu.keys.next_timeout())
        }))
    }

    /// Time has come to `now` for the menu.
    pub(super) fn menu_timers(&mut self, now: Instant, ctx: &dyn Context) {
        self.release_info(now, ctx);
        if self.awaiting.is_some() {
            return;
        }
        if let Some(menu) = self.menu.as_mut() {
            let entered = menu.keys.timeout(now);
            self.on_entered(entered, now, ctx);
        }
    }

    fn on_entered(&mut self, entered: Entered, now: Instant, ctx: &dyn Context) {
        match entered {
            Entered::Nothing => {}
            Entered::FirstKey => self.out.push(Output::Keypad(KeypadCue::Play(&[]))),
            Entered::Cleared => {
                let asking = self
                    .menu
                    .as_ref()
                    .map_or(Asking::Number, |m| m.keys.asking());
                self.out
                    .push(Output::Keypad(KeypadCue::Play(prompt(asking))));
            }
            Entered::Done(Asking::Pin, pin) => self.check_pin(pin),
            Entered::Done(Asking::Number, digits) => self.number_keyed(&digits, now, ctx),
            Entered::Done(Asking::Token, digits) => self.token_keyed(&digits, now, ctx),
            Entered::GaveUp if !self.at_access_menu() => {
                tracing::info!(call = %self.id, "no call-in token keyed in time");
                self.drop_keyed_call_in(LegFailure::Timeout);
                self.give_up_call_in(EndCause::CallInTimeout, now, ctx);
            }
            Entered::GaveUp => {
                tracing::info!(call = %self.id, "nothing usable keyed in time; leaving the menu");
                self.leave_menu(MenuExit::Timeout, EndCause::Rejected, now, ctx);
            }
        }
    }

    fn check_pin(&mut self, pin: String) {
        let (Some(extension_id), Some(_)) = (
            self.plan.extension.as_ref().and_then(|e| e.id),
            self.menu.as_ref(),
        ) else {
            return;
        };
        self.out.push(Output::CheckPin {
            extension_id,
            pin: Pin(pin),
            account: Box::new(self.plan.account.clone()),
        });
        self.awaiting = Some(Then::PinChecked);
    }

    /// The extension's stream said what it thinks of the PIN keyed in.
    pub(super) fn pin_checked(&mut self, check: PinCheck, now: Instant, ctx: &dyn Context) {
        let record = |accepted, locked| CallCommand::MenuPin { accepted, locked };
        match check {
            PinCheck::Accepted => {
                self.out.record(record(true, false));
                self.prompt_again(Asking::Number, Some(PIN_ACCEPTED), now);
            }
            PinCheck::Refused { locked: false } => {
                tracing::info!(call = %self.id, "wrong PIN keyed at the menu");
                self.out.record(record(false, false));
                self.prompt_again(Asking::Pin, Some(REFUSED), now);
            }
            PinCheck::Refused { locked: true } | PinCheck::Locked => {
                tracing::warn!(call = %self.id, "keypad access locked after wrong PINs");
                if check != PinCheck::Locked {
                    self.out.record(record(false, true));
                }
                self.leave_menu(MenuExit::PinLocked, EndCause::Rejected, now, ctx);
            }
            PinCheck::Failed => {
                tracing::warn!(call = %self.id, "the PIN could not be checked; ending the call");
                self.leave_menu(MenuExit::Timeout, EndCause::Failed, now, ctx);
            }
        }
    }

    /// Prompts for another entry: with `sounds` (after a refusal, or an accepted PIN), else
    /// the entry's own.
    pub(super) fn prompt_again(
        &mut self,
        asking: Asking,
        sounds: Option<&'static [Sound]>,
        now: Instant,
    ) {
        if let Some(menu) = self.menu.as_mut() {
            menu.keys.ask(asking, now);
            let sounds = sounds.unwrap_or(prompt(asking));
            self.out.push(Output::Keypad(KeypadCue::Play(sounds)));
        }
    }

    /// The caller keyed a number: normalised, checked as any call out of the account (fraud
    /// controls, caps, a trunk), then recorded; the leg follows once it is.
    fn number_keyed(&mut self, digits: &str, now: Instant, ctx: &dyn Context) {
        let number = self
            .plan
            .account
            .main_number
            .as_ref()
            .and_then(|home| DiallingRules::of(home).normalise(digits));
        let Some(number) = number else {
            tracing::info!(call = %self.id, digits, "keyed digits are no number");
            return self.number_refused(now, ctx);
        };
        let Some(extension) = self.plan.extension.clone() else {
            return self.number_refused(now, ctx);
        };
        // The extension's own rules first (the check the recording makes again), so a number
        // it may not call takes no place under the account's caps.
        if let Err(why) = extension.authorize_destination(&self.plan.account, &number) {
            tracing::info!(call = %self.id, to = %number, reason = %why, "keyed destination not allowed");
            return self.number_refused(now, ctx);
        }
        let leg = ctx.outbound_leg(
            &self.plan.account,
            Some(&extension),
            &number,
            self.caller.reach.peer,
        );
        let mut target = match leg {
            Ok(target) => target,
            Err(answer) => {
                tracing::info!(call = %self.id, to = %number, reason = ?answer.reason, "keyed destination refused");
                return self.number_refused(now, ctx);
            }
        };
        if target.path != Path::OnNet {
            target.path = Path::CallThrough;
        }
        self.record_then(
            CallCommand::CollectDestination {
                destination: number.clone(),
                account: self.plan.account.clone(),
                extension,
            },
            Then::DestinationCollected {
                target: Box::new(target),
                number,
            },
        );
    }

    fn number_refused(&mut self, now: Instant, ctx: &dyn Context) {
        let Some(menu) = self.menu.as_mut() else {
            return;
        };
        menu.keys.refused += 1;
        if menu.keys.refused >= NUMBER_TRIES {
            tracing::info!(call = %self.id, "too many numbers refused; leaving the menu");
            return self.leave_menu(MenuExit::Timeout, EndCause::Rejected, now, ctx);
        }
        self.prompt_again(Asking::Number, Some(REFUSED), now);
    }

    /// The keyed destination is recorded (or refused by the domain: not allowed for this
    /// extension): the menu is over and the leg to it is placed.
    pub(super) fn destination_collected(
        &mut self,
        result: Result<(), Refusal>,
        target: Target,
        number: E164,
        now: Instant,
        ctx: &dyn Context,
    ) {
        if let Err(refusal) = result {
            tracing::info!(call = %self.id, to = %number, ?refusal, "keyed destination not allowed");
            return match refusal {
                Refusal::Domain(_) => self.number_refused(now, ctx),
                Refusal::Store => self.leave_menu(MenuExit::Timeout, EndCause::Failed, now, ctx),
            };
        }
        self.menu = None;
        self.out.push(Output::Keypad(KeypadCue::Close));
        tracing::info!(call = %self.id, to = %number, "destination keyed");
        self.plan.to = number.as_str().to_string();
        self.plan.targets = vec![target];
        self.ring_deadline = now + self.ring;
        // The legs are offered the session the edge agreed with the caller, at the relay's
        // other side: no transcoding, and the caller's keys pass as they came.
        let offer = match (&self.self_answered, self.media) {
            (Some((session, _)), Some(media)) => {
                sdp::rebuild(session, media.address, media.port(RelaySide::Callee))
            }
            _ => Vec::new(),
        };
        self.template = Some(self.leg_template(offer, Some("application/sdp".into())));
        self.queue_targets(now);
        self.pump(now, ctx);
    }

    /// The caller leaves the menu without a destination: recorded, hung up (unless it hung
    /// up itself) and ended.
    pub(super) fn leave_menu(
        &mut self,
        exit: MenuExit,
        cause: EndCause,
        now: Instant,
        ctx: &dyn Context,
    ) {
        if self.menu.take().is_none() {
            return;
        }
        self.out.push(Output::Keypad(KeypadCue::Close));
        self.out.record(CallCommand::AbandonMenu { reason: exit });
        let side = if exit == MenuExit::HungUp {
            Side::Caller
        } else {
            self.unacked.clear();
            self.bye_caller(ctx);
            Side::System
        };
        self.finish(cause, side, now);
    }
}

/// What the caller hears while keying an entry: the operator's prompt for it (where set),
/// then silence for a PIN, dial tone for a number or a call-in's token.
pub(super) fn prompt(asking: Asking) -> &'static [Sound] {
    match asking {
        Asking::Pin => &[Sound::Say(Prompt::Pin)],
        Asking::Number => &[Sound::Say(Prompt::Number), Sound::Tone(Tone::Dial)],
        Asking::Token => &[Sound::Say(Prompt::Token), Sound::Tone(Tone::Dial)],
    }
}

/// After a refused entry: the operator's "not right" (where set), then reorder tone until
/// the next key.
pub(super) const REFUSED: &[Sound] = &[Sound::Say(Prompt::Refused), Sound::Tone(Tone::Reorder)];

/// After the PIN: confirmation tone, then the prompt for the number.
const PIN_ACCEPTED: &[Sound] = &[
    Sound::Tone(Tone::Confirm),
    Sound::Say(Prompt::Number),
    Sound::Tone(Tone::Dial),
];
