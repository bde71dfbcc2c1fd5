//! Calls and their legs. A call is what the caller experiences; each leg is one dialog the
//! edge places toward a target (an IP contact, an extension through a trunk, a PSTN number).
//! Every call is billed to one main account; a call made through an extension names it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::aggregate::Aggregate;
use crate::e164::E164;
use crate::error::DomainError;
use crate::event::domain_events;
use crate::extension::Extension;
use crate::ids::{AccountId, CallId, DeviceId, ExtensionId, LegId, TariffId};
use crate::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where the call came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Origin {
    IpDevice {
        device_id: DeviceId,
    },
    Extension {
        extension_id: ExtensionId,
    },
    Pstn {
        trunk: String,
    },
    /// Started by the service itself (a callback requested over the API).
    Service,
    /// A call from another account of the service (or the same one), routed on-net: the
    /// account that called.
    OnNet {
        account_id: AccountId,
    },
}

/// How a call or leg is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Over the data network to an IP device.
    Data,
    /// The edge calls the extension through the alternate (cellular) network.
    AlternateCallOut,
    /// The extension calls in to an access number through the alternate network.
    CallIn,
    /// The extension dialled an access number to place a call.
    CallThrough,
    /// The service rang the extension, then the destination.
    Callback,
    /// Through a trunk to the public network.
    Pstn,
    /// To a number an account of the service holds, routed inside the service (no carrier),
    /// rated with the tariff's on-net rate.
    OnNet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LegTarget {
    Contact {
        device_id: DeviceId,
        contact_uri: String,
    },
    Extension {
        extension_id: ExtensionId,
        number: E164,
    },
    Pstn {
        number: E164,
    },
}

impl LegTarget {
    /// The number a leg reaches through a trunk, which is what rating prices.
    pub fn number(&self) -> Option<&E164> {
        match self {
            Self::Contact { .. } => None,
            Self::Extension { number, .. } | Self::Pstn { number } => Some(number),
        }
    }
}

/// Which side of the call a leg serves. Among callee legs (a fork), the first answer wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegRole {
    /// Toward the party being called.
    Callee,
    /// Toward the party the service calls on the caller's behalf (the callback's first leg).
    Caller,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlternateReason {
    AccountPreference,
    ExtensionPreference,
    /// The device said its data path is poor or gone.
    PoorData,
    NoLiveContact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    NormalClearing,
    CallerCancelled,
    NoAnswer,
    Busy,
    Rejected,
    MediaTimeout,
    CallInTimeout,
    SpendLimit,
    /// Refused: the tariff in force has no rate for the destination (no call without a price).
    NoRate,
    /// The edge running the call stopped (or crashed) without ending it: ended by another
    /// edge, or the same one's next start, at the last instant the edge was known alive.
    EdgeLost,
    /// The edge was shut down (SIGTERM) and hung up the call while draining.
    EdgeShutdown,
    /// The call reached the longest an answered call may last (`sip.max_call_duration_secs`).
    MaxDuration,
    /// A session timer (RFC 4028) ran out: the side that was to refresh the session did not.
    SessionExpired,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Caller,
    Callee,
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegFailure {
    /// The target answered with a final error (busy, declined, unavailable...).
    Rejected,
    /// Cancelled because another leg of the fork answered first.
    AnsweredElsewhere,
    /// Cancelled because the caller gave up or the ring timeout passed.
    Cancelled,
    /// No response at all (transaction timeout).
    Timeout,
    /// A call-in that did not key its token right (the edge hung it up unproved).
    TokenRefused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegStatus {
    Trying,
    Ringing,
    Answered,
    Failed,
    Ended,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub target: LegTarget,
    pub path: Path,
    pub role: LegRole,
    pub status: LegStatus,
    pub started_at: Instant,
    pub answered_at: Option<Instant>,
    pub ended_at: Option<Instant>,
    /// Placed by a transfer: it takes the place of a party already answered, so the fork's
    /// first-answer rule does not apply to it.
    pub by_transfer: bool,
}

impl Leg {
    fn is_active(&self) -> bool {
        matches!(
            self.status,
            LegStatus::Trying | LegStatus::Ringing | LegStatus::Answered
        )
    }
}

/// Why a caller left the access-number menu without a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MenuExit {
    /// The caller hung up.
    HungUp,
    /// Nothing (or nothing usable) was keyed in time.
    Timeout,
    /// Too many wrong PINs: keypad access is locked.
    PinLocked,
    /// The edge was shutting down.
    EdgeShutdown,
}

/// Where a call started at the access-number menu stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Menu {
    /// Keys are being collected: no callee leg may be placed yet.
    Collecting,
    /// The destination was keyed in and allowed.
    Collected(E164),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallStatus {
    #[default]
    NotStarted,
    Setup,
    Answered,
    Ended,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    pub status: CallStatus,
    pub id: Option<CallId>,
    pub account_id: Option<AccountId>,
    /// The account's tariff when the call started: its legs are rated on it.
    pub tariff_id: Option<TariffId>,
    pub extension_id: Option<ExtensionId>,
    pub direction: Option<Direction>,
    pub started_at: Option<Instant>,
    /// The edge process running the call (null for calls recorded before edges were named).
    pub edge_id: Option<uuid::Uuid>,
    /// When the call's latest step was recorded.
    pub last_at: Option<Instant>,
    pub legs: BTreeMap<LegId, Leg>,
    pub ended: Option<(EndCause, Side, Instant)>,
    /// The leg the latest transfer placed.
    pub transfer_leg: Option<LegId>,
    /// The call this one was joined with (attended transfer).
    pub joined_with: Option<CallId>,
    /// The access-number menu, for a call whose destination is keyed in.
    pub menu: Option<Menu>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CallCommand {
    Start {
        call_id: CallId,
        direction: Direction,
        from: String,
        to: String,
        origin: Origin,
        path: Path,
        account: Account,
        /// The extension the call comes through (call-through, callback), if any.
        extension: Option<Extension>,
        /// The PIN the caller gave, for extensions that require one.
        pin: Option<String>,
        /// The dial intent an extension staged over data for this call-through: it names the
        /// destination, and stands in for the PIN (staging it took the account's API key).
        dial_intent: Option<uuid::Uuid>,
        /// The edge process running the call, if an edge runs it.
        edge_id: Option<uuid::Uuid>,
        /// The destination is keyed in at the access-number menu after the call starts (`to`
        /// is the access number): it is checked when collected, and no leg is placed before.
        keypad: bool,
    },
    /// The PIN keyed in at the menu was checked on the extension's stream: the call records
    /// the outcome (never the PIN).
    MenuPin {
        accepted: bool,
        locked: bool,
    },
    /// The destination keyed in at the menu, checked against the extension's settings.
    CollectDestination {
        destination: E164,
        account: Account,
        extension: Extension,
    },
    /// The caller left the menu without a destination.
    AbandonMenu {
        reason: MenuExit,
    },
    StartLeg {
        leg_id: LegId,
        target: LegTarget,
        path: Path,
        role: LegRole,
        account: Account,
        /// The extension a leg rings, which must be serving.
        extension: Option<Extension>,
    },
    LegRinging {
        leg_id: LegId,
    },
    LegAnswered {
        leg_id: LegId,
    },
    LegFailed {
        leg_id: LegId,
        sip_status: u16,
        failure: LegFailure,
    },
    ChooseAlternatePath {
        reason: AlternateReason,
    },
    AwaitCallIn {
        token: String,
        access_number: E164,
        expected_caller: E164,
        ttl_secs: u32,
    },
    Bridge {
        legs: Vec<LegId>,
    },
    End {
        cause: EndCause,
        side: Side,
    },
    /// The call's edge is gone: the call ends (cause `edge_lost`) at the last instant the edge
    /// was known alive, never before the call's last recorded step.
    EndLost {
        alive_until: Instant,
    },
    /// A party of the answered call asked (REFER) to hand its place to `to`: the new leg
    /// `leg_id` is placed toward `target`, billed to the call's account.
    Transfer {
        /// Which party transfers: the caller, or the callee on leg `from_leg`.
        by: Side,
        from_leg: Option<LegId>,
        /// The number transferred to, as the transferring party gave it.
        to: String,
        leg_id: LegId,
        target: LegTarget,
        path: Path,
        account: Account,
    },
    /// An answered leg left the call before the call ended (a party that transferred it).
    EndLeg {
        leg_id: LegId,
    },
    /// A party of the answered call, which also has call `with`, leaves both and joins the
    /// two parties left (attended transfer): recorded on both calls.
    Join {
        by: Side,
        from_leg: Option<LegId>,
        with: CallId,
        account: Account,
    },
}

domain_events! {
    upcast = crate::call::upcast;
    /// The life of one call (stream `call-{id}`).
    pub enum CallEvent {
        Started {
            call_id: CallId,
            direction: Direction,
            from: String,
            to: String,
            origin: Origin,
            path: Path,
            /// The main account every leg of this call is billed to.
            account_id: AccountId,
            extension_id: Option<ExtensionId>,
            /// The account's tariff when the call started, on which its legs are rated (null
            /// in version 1: those are rated on the account's tariff when the call ended).
            tariff_id: Option<TariffId>,
            /// The edge process running the call (its stream is `edge-{id}`; null before
            /// version 3 and for calls recorded outside an edge).
            edge_id: Option<uuid::Uuid>,
            at: Instant,
        } = ("call.started", 3),
        LegStarted { leg_id: LegId, target: LegTarget, path: Path, role: LegRole, at: Instant } = ("call.leg_started", 1),
        LegRinging { leg_id: LegId, at: Instant } = ("call.leg_ringing", 1),
        LegAnswered { leg_id: LegId, at: Instant } = ("call.leg_answered", 1),
        LegFailed { leg_id: LegId, sip_status: u16, failure: LegFailure, at: Instant } = ("call.leg_failed", 1),
        AlternatePathChosen { reason: AlternateReason, at: Instant } = ("call.alternate_path_chosen", 1),
        CallInAwaited {
            token: String,
            access_number: E164,
            expected_caller: E164,
            expires_at: Instant,
            at: Instant,
        } = ("call.call_in_awaited", 1),
        Bridged { legs: Vec<LegId>, at: Instant } = ("call.bridged", 1),
        /// A party handed its place to `to`; the leg toward it (`leg_id`) starts with the
        /// next event.
        Transferred {
            by: Side,
            from_leg: Option<LegId>,
            to: String,
            leg_id: LegId,
            at: Instant,
        } = ("call.transferred", 1),
        LegEnded { leg_id: LegId, at: Instant } = ("call.leg_ended", 1),
        /// The party `by` (on `from_leg`, for a callee) left this call and call `with`,
        /// whose remaining parties now talk to each other through both calls.
        Joined {
            by: Side,
            from_leg: Option<LegId>,
            with: CallId,
            at: Instant,
        } = ("call.joined", 1),
        Ended { cause: EndCause, side: Side, at: Instant } = ("call.ended", 1),
        /// The edge answered the caller itself to collect the destination by keypad (the
        /// access-number menu).
        MenuEntered { at: Instant } = ("call.menu_entered", 1),
        /// The PIN keyed in was right.
        MenuPinAccepted { at: Instant } = ("call.menu_pin_accepted", 1),
        /// The PIN keyed in was wrong (`locked`: keypad access is now locked).
        MenuPinRefused { locked: bool, at: Instant } = ("call.menu_pin_refused", 1),
        /// The destination keyed in, normalised to E.164 and allowed.
        DestinationCollected { destination: E164, at: Instant } = ("call.destination_collected", 1),
        /// The caller left the menu without a destination.
        MenuAbandoned { reason: MenuExit, at: Instant } = ("call.menu_abandoned", 1),
    }
}

impl CallEvent {
    /// When the step was recorded.
    pub fn at(&self) -> Instant {
        match self {
            Self::Started { at, .. }
            | Self::LegStarted { at, .. }
            | Self::LegRinging { at, .. }
            | Self::LegAnswered { at, .. }
            | Self::LegFailed { at, .. }
            | Self::AlternatePathChosen { at, .. }
            | Self::CallInAwaited { at, .. }
            | Self::Bridged { at, .. }
            | Self::Transferred { at, .. }
            | Self::LegEnded { at, .. }
            | Self::Joined { at, .. }
            | Self::MenuEntered { at }
            | Self::MenuPinAccepted { at }
            | Self::MenuPinRefused { at, .. }
            | Self::DestinationCollected { at, .. }
            | Self::MenuAbandoned { at, .. }
            | Self::Ended { at, .. } => *at,
        }
    }
}

impl Call {
    fn leg(&self, leg_id: LegId) -> Result<&Leg, DomainError> {
        self.legs
            .get(&leg_id)
            .ok_or(DomainError::UnknownLeg { leg: leg_id })
    }

    /// Whether party `by` (on `from_leg`, for a callee) may hand its place on (transfer, join)
    /// for `account`: the call answered, billed to that active account, the party one of its
    /// answered sides; the role the party's successor takes.
    fn transferable(
        &self,
        by: Side,
        from_leg: Option<LegId>,
        account: &Account,
    ) -> Result<LegRole, DomainError> {
        if self.status != CallStatus::Answered {
            return Err(DomainError::invalid(
                "call",
                "only an answered call is transferred",
            ));
        }
        account.ensure_active()?;
        if account.id.is_none() || account.id != self.account_id {
            return Err(DomainError::invalid(
                "account",
                "a transfer is billed to the call's account",
            ));
        }
        match (by, from_leg) {
            (Side::Caller, None) => Ok(LegRole::Caller),
            (Side::Callee, Some(from)) => {
                let leg = self.leg(from)?;
                if leg.role != LegRole::Callee || leg.status != LegStatus::Answered {
                    return Err(DomainError::LegNotActive { leg: from });
                }
                Ok(LegRole::Callee)
            }
            _ => Err(DomainError::invalid(
                "by",
                "the caller, or the callee on its answered leg",
            )),
        }
    }

    /// A transfer (see [`CallCommand::Transfer`]): only an answered call is transferred, by
    /// one of its parties, one transfer at a time, for the account the call is billed to, to
    /// a number or a phone (never an extension: its settings were not asked).
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &self,
        by: Side,
        from_leg: Option<LegId>,
        to: &str,
        leg_id: LegId,
        target: &LegTarget,
        path: Path,
        account: &Account,
        now: Instant,
    ) -> Result<Vec<CallEvent>, DomainError> {
        let role = self.transferable(by, from_leg, account)?;
        let pending = self
            .transfer_leg
            .and_then(|l| self.legs.get(&l))
            .is_some_and(|l| matches!(l.status, LegStatus::Trying | LegStatus::Ringing));
        if pending {
            return Err(DomainError::invalid("transfer", "one is already under way"));
        }
        if self.legs.contains_key(&leg_id) {
            return Err(DomainError::DuplicateLeg { leg: leg_id });
        }
        if matches!(target, LegTarget::Extension { .. }) {
            return Err(DomainError::invalid(
                "target",
                "a call is transferred to a number or a phone",
            ));
        }
        Ok(vec![
            CallEvent::Transferred {
                by,
                from_leg,
                to: to.to_string(),
                leg_id,
                at: now,
            },
            CallEvent::LegStarted {
                leg_id,
                target: target.clone(),
                path,
                role,
                at: now,
            },
        ])
    }

    fn ensure_collecting(&self) -> Result<(), DomainError> {
        if self.menu != Some(Menu::Collecting) {
            return Err(DomainError::invalid(
                "menu",
                "the call is not collecting keys at the access-number menu",
            ));
        }
        Ok(())
    }

    fn ensure_live(&self) -> Result<(), DomainError> {
        match self.status {
            CallStatus::NotStarted => Err(DomainError::NotFound { entity: "call" }),
            CallStatus::Ended => Err(DomainError::CallEnded),
            CallStatus::Setup | CallStatus::Answered => Ok(()),
        }
    }
}

fn start(command: &CallCommand, now: Instant) -> Result<Vec<CallEvent>, DomainError> {
    let CallCommand::Start {
        call_id,
        direction,
        from,
        to,
        origin,
        path,
        account,
        extension,
        pin,
        dial_intent,
        edge_id,
        keypad,
    } = command
    else {
        unreachable!("only called for Start");
    };
    account.ensure_active()?;
    let account_id = account
        .id
        .ok_or(DomainError::NotFound { entity: "account" })?;
    let extension_id = match (origin, extension) {
        (Origin::Extension { extension_id }, Some(ext)) => {
            if ext.id != Some(*extension_id) || ext.account_id != Some(account_id) {
                return Err(DomainError::invalid(
                    "extension",
                    "does not belong to the billed account",
                ));
            }
            if *keypad {
                // The destination comes later, by keypad: checked then.
                ext.ensure_serving(account)?;
                if !ext.settings.may_call_out {
                    return Err(DomainError::CallOutNotAllowed);
                }
            } else if *direction == Direction::Outbound {
                let destination =
                    E164::parse(to).map_err(|e| DomainError::invalid("to", e.to_string()))?;
                match dial_intent {
                    Some(intent) => {
                        let staged = ext
                            .live_dial_intent(now)
                            .is_some_and(|(id, i)| id == *intent && i.destination == destination);
                        if !staged {
                            return Err(DomainError::invalid(
                                "dial_intent",
                                "no such live dial intent for this destination",
                            ));
                        }
                        ext.authorize_destination(account, &destination)?;
                    }
                    None => ext.authorize_call_out(account, &destination, pin.as_deref())?,
                }
            } else {
                ext.ensure_serving(account)?;
            }
            Some(*extension_id)
        }
        (Origin::Extension { .. }, None) => {
            return Err(DomainError::NotFound {
                entity: "extension",
            });
        }
        // A callback: the service calls the extension, then `to`, at the request of someone
        // holding the account's API key (which stands in for the PIN, as a dial intent does).
        (Origin::Service, Some(ext)) => {
            let extension_id = ext.id.ok_or(DomainError::NotFound {
                entity: "extension",
            })?;
            if ext.account_id != Some(account_id) {
                return Err(DomainError::invalid(
                    "extension",
                    "does not belong to the billed account",
                ));
            }
            let destination =
                E164::parse(to).map_err(|e| DomainError::invalid("to", e.to_string()))?;
            ext.authorize_destination(account, &destination)?;
            Some(extension_id)
        }
        _ if *keypad => {
            return Err(DomainError::invalid(
                "keypad",
                "only an extension's call keys in its destination",
            ));
        }
        _ => None,
    };
    let started = CallEvent::Started {
        call_id: *call_id,
        direction: *direction,
        from: from.clone(),
        to: to.clone(),
        origin: origin.clone(),
        path: *path,
        account_id,
        extension_id,
        tariff_id: account.tariff_id,
        edge_id: *edge_id,
        at: now,
    };
    Ok(if *keypad {
        vec![started, CallEvent::MenuEntered { at: now }]
    } else {
        vec![started]
    })
}

/// Upcasters for call events: `call.started` version 1 did not name the tariff, version 2 not
/// the edge.
pub(crate) fn upcast(
    event_type: &str,
    version: u16,
    payload: serde_json::Value,
) -> Result<serde_json::Value, crate::event::DecodeError> {
    let field = match (event_type, version) {
        ("call.started", 1) => Some("tariff_id"),
        ("call.started", 2) => Some("edge_id"),
        _ => None,
    };
    crate::event::with_null_field(event_type, version, payload, field)
}

impl Aggregate for Call {
    type Command = CallCommand;
    type Event = CallEvent;

    fn decide(&self, command: &CallCommand, now: Instant) -> Result<Vec<CallEvent>, DomainError> {
        use CallCommand as C;
        use CallEvent as E;
        if let C::Start { .. } = command {
            if self.status != CallStatus::NotStarted {
                return Err(DomainError::AlreadyExists { entity: "call" });
            }
            return start(command, now);
        }
        if let C::End { cause, side } = command {
            // BYE and CANCEL are retransmitted and race each other: ending twice is a no-op.
            return match self.status {
                CallStatus::Ended => Ok(vec![]),
                CallStatus::NotStarted => Err(DomainError::NotFound { entity: "call" }),
                _ => Ok(vec![E::Ended {
                    cause: *cause,
                    side: *side,
                    at: now,
                }]),
            };
        }
        if let C::EndLost { alive_until } = command {
            // Several edges may find the same lost call: the first ends it, the others
            // change nothing.
            return match self.status {
                CallStatus::Ended => Ok(vec![]),
                CallStatus::NotStarted => Err(DomainError::NotFound { entity: "call" }),
                _ => Ok(vec![E::Ended {
                    cause: EndCause::EdgeLost,
                    side: Side::System,
                    at: (*alive_until)
                        .max(self.last_at.unwrap_or(*alive_until))
                        .min(now),
                }]),
            };
        }
        self.ensure_live()?;
        Ok(match command {
            C::Start { .. } | C::End { .. } | C::EndLost { .. } => {
                unreachable!("handled above")
            }
            C::StartLeg {
                leg_id,
                target,
                path,
                role,
                account,
                extension,
            } => {
                if self.legs.contains_key(leg_id) {
                    return Err(DomainError::DuplicateLeg { leg: *leg_id });
                }
                if self.menu == Some(Menu::Collecting) {
                    return Err(DomainError::invalid(
                        "leg",
                        "the destination has not been keyed in yet",
                    ));
                }
                if let LegTarget::Extension { extension_id, .. } = target {
                    let ext = extension.as_ref().ok_or(DomainError::NotFound {
                        entity: "extension",
                    })?;
                    if ext.id != Some(*extension_id) || ext.account_id != self.account_id {
                        return Err(DomainError::invalid(
                            "extension",
                            "does not belong to the billed account",
                        ));
                    }
                    ext.ensure_serving(account)?;
                }
                vec![E::LegStarted {
                    leg_id: *leg_id,
                    target: target.clone(),
                    path: *path,
                    role: *role,
                    at: now,
                }]
            }
            C::LegRinging { leg_id } => match self.leg(*leg_id)?.status {
                LegStatus::Trying => vec![E::LegRinging {
                    leg_id: *leg_id,
                    at: now,
                }],
                LegStatus::Ringing | LegStatus::Answered => vec![],
                LegStatus::Failed | LegStatus::Ended => {
                    return Err(DomainError::LegNotActive { leg: *leg_id });
                }
            },
            C::LegAnswered { leg_id } => {
                let leg = self.leg(*leg_id)?;
                match leg.status {
                    LegStatus::Answered => return Ok(vec![]),
                    LegStatus::Failed | LegStatus::Ended => {
                        return Err(DomainError::LegNotActive { leg: *leg_id });
                    }
                    LegStatus::Trying | LegStatus::Ringing => {}
                }
                let fork_already_won = leg.role == LegRole::Callee
                    && !leg.by_transfer
                    && self
                        .legs
                        .values()
                        .any(|l| l.role == LegRole::Callee && l.status == LegStatus::Answered);
                if fork_already_won {
                    // Two answered at once: the later one loses and the edge hangs it up.
                    vec![E::LegFailed {
                        leg_id: *leg_id,
                        sip_status: 200,
                        failure: LegFailure::AnsweredElsewhere,
                        at: now,
                    }]
                } else {
                    vec![E::LegAnswered {
                        leg_id: *leg_id,
                        at: now,
                    }]
                }
            }
            C::LegFailed {
                leg_id,
                sip_status,
                failure,
            } => {
                if !self.leg(*leg_id)?.is_active() {
                    return Ok(vec![]);
                }
                vec![E::LegFailed {
                    leg_id: *leg_id,
                    sip_status: *sip_status,
                    failure: *failure,
                    at: now,
                }]
            }
            C::ChooseAlternatePath { reason } => vec![E::AlternatePathChosen {
                reason: *reason,
                at: now,
            }],
            C::AwaitCallIn {
                token,
                access_number,
                expected_caller,
                ttl_secs,
            } => {
                if token.len() < 6 {
                    return Err(DomainError::invalid(
                        "token",
                        "must be at least 6 characters",
                    ));
                }
                if !(5..=300).contains(ttl_secs) {
                    return Err(DomainError::invalid(
                        "ttl_secs",
                        "must be between 5 and 300",
                    ));
                }
                vec![E::CallInAwaited {
                    token: token.clone(),
                    access_number: access_number.clone(),
                    expected_caller: expected_caller.clone(),
                    expires_at: now + chrono::Duration::seconds(i64::from(*ttl_secs)),
                    at: now,
                }]
            }
            C::Transfer {
                by,
                from_leg,
                to,
                leg_id,
                target,
                path,
                account,
            } => self.transfer(*by, *from_leg, to, *leg_id, target, *path, account, now)?,
            C::Join {
                by,
                from_leg,
                with,
                account,
            } => {
                self.transferable(*by, *from_leg, account)?;
                if self.joined_with.is_some() || self.id == Some(*with) {
                    return Err(DomainError::invalid("with", "joined already, or itself"));
                }
                vec![E::Joined {
                    by: *by,
                    from_leg: *from_leg,
                    with: *with,
                    at: now,
                }]
            }
            C::EndLeg { leg_id } => match self.leg(*leg_id)?.status {
                LegStatus::Answered => vec![E::LegEnded {
                    leg_id: *leg_id,
                    at: now,
                }],
                LegStatus::Ended | LegStatus::Failed => vec![],
                LegStatus::Trying | LegStatus::Ringing => {
                    return Err(DomainError::LegNotActive { leg: *leg_id });
                }
            },
            C::MenuPin { accepted, locked } => {
                self.ensure_collecting()?;
                if *accepted {
                    vec![E::MenuPinAccepted { at: now }]
                } else {
                    vec![E::MenuPinRefused {
                        locked: *locked,
                        at: now,
                    }]
                }
            }
            C::CollectDestination {
                destination,
                account,
                extension,
            } => {
                self.ensure_collecting()?;
                if extension.id.is_none() || extension.id != self.extension_id {
                    return Err(DomainError::invalid(
                        "extension",
                        "not the extension the call came through",
                    ));
                }
                extension.authorize_destination(account, destination)?;
                vec![E::DestinationCollected {
                    destination: destination.clone(),
                    at: now,
                }]
            }
            C::AbandonMenu { reason } => {
                self.ensure_collecting()?;
                vec![E::MenuAbandoned {
                    reason: *reason,
                    at: now,
                }]
            }
            C::Bridge { legs } => {
                if legs.is_empty() {
                    return Err(DomainError::invalid("legs", "nothing to bridge"));
                }
                for leg_id in legs {
                    if self.leg(*leg_id)?.status != LegStatus::Answered {
                        return Err(DomainError::LegNotActive { leg: *leg_id });
                    }
                }
                vec![E::Bridged {
                    legs: legs.clone(),
                    at: now,
                }]
            }
        })
    }

    fn apply(&mut self, event: &CallEvent) {
        use CallEvent as E;
        self.last_at = Some(event.at());
        match event {
            E::Started {
                call_id,
                direction,
                account_id,
                extension_id,
                tariff_id,
                edge_id,
                at,
                ..
            } => {
                self.edge_id = *edge_id;
                self.status = CallStatus::Setup;
                self.id = Some(*call_id);
                self.direction = Some(*direction);
                self.account_id = Some(*account_id);
                self.tariff_id = *tariff_id;
                self.extension_id = *extension_id;
                self.started_at = Some(*at);
            }
            E::LegStarted {
                leg_id,
                target,
                path,
                role,
                at,
            } => {
                self.legs.insert(
                    *leg_id,
                    Leg {
                        target: target.clone(),
                        path: *path,
                        role: *role,
                        status: LegStatus::Trying,
                        started_at: *at,
                        answered_at: None,
                        ended_at: None,
                        by_transfer: self.transfer_leg == Some(*leg_id),
                    },
                );
            }
            E::LegRinging { leg_id, .. } => {
                if let Some(l) = self.legs.get_mut(leg_id) {
                    l.status = LegStatus::Ringing;
                }
            }
            E::LegAnswered { leg_id, at } => {
                if let Some(l) = self.legs.get_mut(leg_id) {
                    l.status = LegStatus::Answered;
                    l.answered_at = Some(*at);
                    if l.role == LegRole::Callee {
                        self.status = CallStatus::Answered;
                    }
                }
            }
            E::LegFailed { leg_id, at, .. } => {
                if let Some(l) = self.legs.get_mut(leg_id) {
                    l.status = LegStatus::Failed;
                    l.ended_at = Some(*at);
                }
            }
            E::Transferred { leg_id, .. } => self.transfer_leg = Some(*leg_id),
            E::Joined { with, .. } => self.joined_with = Some(*with),
            E::LegEnded { leg_id, at } => {
                if let Some(l) = self.legs.get_mut(leg_id) {
                    l.status = LegStatus::Ended;
                    l.ended_at = Some(*at);
                }
            }
            E::MenuEntered { .. } => self.menu = Some(Menu::Collecting),
            E::DestinationCollected { destination, .. } => {
                self.menu = Some(Menu::Collected(destination.clone()));
            }
            E::AlternatePathChosen { .. }
            | E::CallInAwaited { .. }
            | E::Bridged { .. }
            | E::MenuPinAccepted { .. }
            | E::MenuPinRefused { .. }
            | E::MenuAbandoned { .. } => {}
            E::Ended { cause, side, at } => {
                self.status = CallStatus::Ended;
                self.ended = Some((*cause, *side, *at));
                for l in self.legs.values_mut().filter(|l| l.is_active()) {
                    l.status = LegStatus::Ended;
                    l.ended_at = Some(*at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::tests::{account_id, active_account};
    use crate::extension::ExtensionEvent;
    use crate::extension::tests::{extension_id, mobile, requested, verified_history};
    use crate::testing::{at, given, t0};
    use uuid::Uuid;

    fn call_id() -> CallId {
        CallId(Uuid::from_u128(500))
    }
    fn leg(n: u128) -> LegId {
        LegId(Uuid::from_u128(600 + n))
    }
    fn verified() -> Extension {
        Extension::from_events(&verified_history())
    }

    fn through(extension: Option<Extension>, to: &str) -> CallCommand {
        CallCommand::Start {
            edge_id: None,
            keypad: false,
            call_id: call_id(),
            direction: Direction::Outbound,
            from: mobile().to_string(),
            to: to.into(),
            origin: Origin::Extension {
                extension_id: extension_id(),
            },
            path: Path::CallThrough,
            account: active_account(),
            extension,
            pin: None,
            dial_intent: None,
        }
    }

    fn inbound_started() -> CallEvent {
        CallEvent::Started {
            call_id: call_id(),
            direction: Direction::Inbound,
            from: "+14155550100".into(),
            to: "+442071838750".into(),
            origin: Origin::Pstn {
                trunk: "carrier".into(),
            },
            path: Path::Data,
            account_id: account_id(),
            extension_id: None,
            tariff_id: Some(crate::account::tests::tariff_id()),
            edge_id: Some(Uuid::from_u128(900)),
            at: at(0),
        }
    }

    fn contact_leg(n: u128) -> CallEvent {
        CallEvent::LegStarted {
            leg_id: leg(n),
            target: LegTarget::Contact {
                device_id: DeviceId(Uuid::from_u128(10)),
                contact_uri: format!("sip:ada@10.0.0.{n}"),
            },
            path: Path::Data,
            role: LegRole::Callee,
            at: at(0),
        }
    }

    #[test]
    fn a_call_records_the_tariff_it_started_on_and_version_1_reads_without() {
        let events = given::<Call>([])
            .when(through(Some(verified()), "+442079460000"))
            .events();
        let [CallEvent::Started { tariff_id, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(*tariff_id, active_account().tariff_id);
        assert!(tariff_id.is_some());
        use crate::event::DomainEvent;
        let mut v1 = match inbound_started().encode().payload {
            serde_json::Value::Object(m) => m,
            other => panic!("{other:?}"),
        };
        v1.remove("tariff_id");
        let read = CallEvent::decode("call.started", 1, serde_json::Value::Object(v1)).unwrap();
        assert!(
            matches!(
                read,
                CallEvent::Started {
                    tariff_id: None,
                    ..
                }
            ),
            "{read:?}"
        );
    }

    #[test]
    fn a_call_through_a_verified_extension_is_billed_to_the_main_account() {
        let events = given::<Call>([])
            .when(through(Some(verified()), "+442079460000"))
            .events();
        let [
            CallEvent::Started {
                account_id: billed,
                extension_id: ext,
                path,
                ..
            },
        ] = &events[..]
        else {
            panic!("{events:?}")
        };
        assert_eq!(
            (*billed, *ext, *path),
            (account_id(), Some(extension_id()), Path::CallThrough)
        );
    }

    #[test]
    fn a_keypad_call_places_no_leg_before_its_destination_is_collected_and_allowed() {
        let mut start = through(Some(verified()), "+442071234567");
        if let CallCommand::Start { keypad, .. } = &mut start {
            *keypad = true;
        }
        let history = given::<Call>([]).when(start).events();
        assert!(matches!(
            history[..],
            [CallEvent::Started { .. }, CallEvent::MenuEntered { .. }]
        ));
        let place = CallCommand::StartLeg {
            leg_id: leg(1),
            target: LegTarget::Pstn {
                number: E164::parse("+442079460000").unwrap(),
            },
            path: Path::CallThrough,
            role: LegRole::Callee,
            account: active_account(),
            extension: None,
        };
        given::<Call>(history.clone())
            .when(place.clone())
            .then_error(DomainError::invalid(
                "leg",
                "the destination has not been keyed in yet",
            ));
        // Abroad is not allowed for this extension: refused, and still collecting.
        let collect = |to: &str| CallCommand::CollectDestination {
            destination: E164::parse(to).unwrap(),
            account: active_account(),
            extension: verified(),
        };
        given::<Call>(history.clone())
            .when(collect("+33142685300"))
            .then_error(DomainError::InternationalNotAllowed);
        let mut history = history;
        history.extend(
            given::<Call>(history.clone())
                .when(CallCommand::MenuPin {
                    accepted: true,
                    locked: false,
                })
                .events(),
        );
        history.extend(
            given::<Call>(history.clone())
                .when(collect("+442079460000"))
                .events(),
        );
        let state = given::<Call>(history.clone())
            .when(place)
            .then([CallEvent::LegStarted {
                leg_id: leg(1),
                target: LegTarget::Pstn {
                    number: E164::parse("+442079460000").unwrap(),
                },
                path: Path::CallThrough,
                role: LegRole::Callee,
                at: t0(),
            }]);
        assert_eq!(
            state.menu,
            Some(Menu::Collected(E164::parse("+442079460000").unwrap()))
        );
        // Collected: the menu takes no more keys.
        given::<Call>(history)
            .when(CallCommand::AbandonMenu {
                reason: MenuExit::Timeout,
            })
            .then_error(DomainError::invalid(
                "menu",
                "the call is not collecting keys at the access-number menu",
            ));
    }

    #[test]
    fn a_dial_intent_stands_in_for_the_pin_but_only_for_its_own_destination() {
        let destination = "+442079460000";
        let mut history = verified_history();
        history.push(ExtensionEvent::DialIntentStaged {
            intent_id: Uuid::from_u128(77),
            destination: E164::parse(destination).unwrap(),
            expires_at: at(60),
        });
        let mut ext = Extension::from_events(&history);
        ext.settings.pin_hash = Some("the extension requires a PIN".into());
        let with_intent = |to: &str, intent: u128| {
            let mut command = through(Some(ext.clone()), to);
            if let CallCommand::Start { dial_intent, .. } = &mut command {
                *dial_intent = Some(Uuid::from_u128(intent));
            }
            command
        };
        given::<Call>([])
            .when(through(Some(ext.clone()), destination))
            .then_error(DomainError::PinRequired);
        assert_eq!(
            given::<Call>([])
                .when(with_intent(destination, 77))
                .events()
                .len(),
            1
        );
        let no_intent = DomainError::invalid(
            "dial_intent",
            "no such live dial intent for this destination",
        );
        given::<Call>([])
            .when(with_intent("+442079460001", 77))
            .then_error(no_intent.clone());
        given::<Call>([])
            .when(with_intent(destination, 78))
            .then_error(no_intent.clone());
        given::<Call>([])
            .at(at(61))
            .when(with_intent(destination, 77))
            .then_error(no_intent);
    }

    #[test]
    fn an_unverified_extension_cannot_place_calls() {
        given::<Call>([])
            .when(through(
                Some(Extension::from_events(&[requested()])),
                "+442079460000",
            ))
            .then_error(DomainError::ExtensionNotVerified);
    }

    #[test]
    fn a_removed_extension_cannot_place_calls() {
        let mut history = verified_history();
        history.push(ExtensionEvent::Removed {
            reason: "sold".into(),
        });
        given::<Call>([])
            .when(through(
                Some(Extension::from_events(&history)),
                "+442079460000",
            ))
            .then_error(DomainError::ExtensionRemoved);
    }

    #[test]
    fn an_extension_of_another_account_is_refused() {
        let mut ext = verified();
        ext.account_id = Some(AccountId(Uuid::from_u128(999)));
        given::<Call>([])
            .when(through(Some(ext), "+442079460000"))
            .then_error(DomainError::invalid(
                "extension",
                "does not belong to the billed account",
            ));
    }

    #[test]
    fn a_suspended_account_places_no_calls() {
        let mut account = active_account();
        account.status = crate::account::AccountStatus::Suspended;
        let CallCommand::Start {
            call_id,
            direction,
            from,
            to,
            origin,
            path,
            extension,
            pin,
            ..
        } = through(Some(verified()), "+442079460000")
        else {
            unreachable!()
        };
        given::<Call>([])
            .when(CallCommand::Start {
                edge_id: None,
                keypad: false,
                call_id,
                direction,
                from,
                to,
                origin,
                path,
                account,
                extension,
                pin,
                dial_intent: None,
            })
            .then_error(DomainError::AccountSuspended);
    }

    #[test]
    fn the_first_answer_wins_and_a_second_answer_loses() {
        let state = given::<Call>([inbound_started(), contact_leg(1), contact_leg(2)])
            .at(at(5))
            .when(CallCommand::LegAnswered { leg_id: leg(1) })
            .then([CallEvent::LegAnswered {
                leg_id: leg(1),
                at: at(5),
            }]);
        assert_eq!(state.status, CallStatus::Answered);
        given::<Call>([
            inbound_started(),
            contact_leg(1),
            contact_leg(2),
            CallEvent::LegAnswered {
                leg_id: leg(1),
                at: at(5),
            },
        ])
        .at(at(5))
        .when(CallCommand::LegAnswered { leg_id: leg(2) })
        .then([CallEvent::LegFailed {
            leg_id: leg(2),
            sip_status: 200,
            failure: LegFailure::AnsweredElsewhere,
            at: at(5),
        }]);
    }

    fn callback(extension: Extension, to: &str) -> CallCommand {
        CallCommand::Start {
            edge_id: None,
            keypad: false,
            call_id: call_id(),
            direction: Direction::Outbound,
            from: mobile().to_string(),
            to: to.into(),
            origin: Origin::Service,
            path: Path::Callback,
            account: active_account(),
            extension: Some(extension),
            pin: None,
            dial_intent: None,
        }
    }

    #[test]
    fn a_callback_is_through_its_extension_and_needs_it_serving_and_allowed_there() {
        let events = given::<Call>([])
            .when(callback(verified(), "+442079460000"))
            .events();
        assert!(
            matches!(&events[..], [CallEvent::Started { extension_id: Some(e), path: Path::Callback, .. }] if *e == extension_id()),
            "{events:?}"
        );
        given::<Call>([])
            .when(callback(verified(), "+33142278186"))
            .then_error(DomainError::InternationalNotAllowed);
        given::<Call>([])
            .when(callback(
                Extension::from_events(&[requested()]),
                "+442079460000",
            ))
            .then_error(DomainError::ExtensionNotVerified);
    }

    #[test]
    fn a_callback_answers_both_its_legs() {
        let caller_leg = CallEvent::LegStarted {
            leg_id: leg(1),
            target: LegTarget::Extension {
                extension_id: extension_id(),
                number: mobile(),
            },
            path: Path::Callback,
            role: LegRole::Caller,
            at: at(0),
        };
        let callee_leg = CallEvent::LegStarted {
            leg_id: leg(2),
            target: LegTarget::Pstn {
                number: E164::parse("+442079460000").unwrap(),
            },
            path: Path::Pstn,
            role: LegRole::Callee,
            at: at(8),
        };
        given::<Call>([
            inbound_started(),
            caller_leg,
            CallEvent::LegAnswered {
                leg_id: leg(1),
                at: at(7),
            },
            callee_leg,
        ])
        .at(at(12))
        .when(CallCommand::LegAnswered { leg_id: leg(2) })
        .then([CallEvent::LegAnswered {
            leg_id: leg(2),
            at: at(12),
        }]);
    }

    #[test]
    fn ringing_an_unverified_extension_is_refused() {
        given::<Call>([inbound_started()])
            .when(CallCommand::StartLeg {
                leg_id: leg(1),
                target: LegTarget::Extension {
                    extension_id: extension_id(),
                    number: mobile(),
                },
                path: Path::AlternateCallOut,
                role: LegRole::Callee,
                account: active_account(),
                extension: Some(Extension::from_events(&[requested()])),
            })
            .then_error(DomainError::ExtensionNotVerified);
    }

    #[test]
    fn ending_twice_is_a_no_op_and_nothing_follows_the_end() {
        let ended = CallEvent::Ended {
            cause: EndCause::NormalClearing,
            side: Side::Caller,
            at: at(60),
        };
        given::<Call>([inbound_started(), ended.clone()])
            .when(CallCommand::End {
                cause: EndCause::NormalClearing,
                side: Side::Callee,
            })
            .then([]);
        given::<Call>([inbound_started(), ended])
            .when(CallCommand::ChooseAlternatePath {
                reason: AlternateReason::NoLiveContact,
            })
            .then_error(DomainError::CallEnded);
    }

    #[test]
    fn a_lost_call_ends_when_its_edge_was_last_alive_never_before_its_last_step() {
        let answered = CallEvent::LegAnswered {
            leg_id: leg(1),
            at: at(5),
        };
        let lost_at = |t| CallEvent::Ended {
            cause: EndCause::EdgeLost,
            side: Side::System,
            at: at(t),
        };
        // Alive until 40 s: billed to 40 s.
        given::<Call>([inbound_started(), contact_leg(1), answered.clone()])
            .at(at(100))
            .when(CallCommand::EndLost {
                alive_until: at(40),
            })
            .then([lost_at(40)]);
        // Last seen alive before the answer: the call ends at its answer (nothing billed),
        // not before it.
        given::<Call>([inbound_started(), contact_leg(1), answered.clone()])
            .at(at(100))
            .when(CallCommand::EndLost { alive_until: at(2) })
            .then([lost_at(5)]);
        // Found twice (two edges): the second changes nothing.
        given::<Call>([inbound_started(), contact_leg(1), answered, lost_at(40)])
            .at(at(100))
            .when(CallCommand::EndLost {
                alive_until: at(50),
            })
            .then([]);
        let state = Call::from_events(&[inbound_started()]);
        assert_eq!(state.edge_id, Some(Uuid::from_u128(900)));
    }

    #[test]
    fn the_end_closes_every_active_leg_at_the_end_time() {
        let state = Call::from_events(&[
            inbound_started(),
            contact_leg(1),
            CallEvent::LegAnswered {
                leg_id: leg(1),
                at: at(5),
            },
            CallEvent::Ended {
                cause: EndCause::NormalClearing,
                side: Side::Callee,
                at: at(65),
            },
        ]);
        let l = &state.legs[&leg(1)];
        assert_eq!(
            (l.status, l.answered_at, l.ended_at),
            (LegStatus::Ended, Some(at(5)), Some(at(65)))
        );
    }

    #[test]
    fn legs_of_unknown_id_or_failed_legs_do_not_answer() {
        given::<Call>([inbound_started()])
            .when(CallCommand::LegAnswered { leg_id: leg(9) })
            .then_error(DomainError::UnknownLeg { leg: leg(9) });
        given::<Call>([
            inbound_started(),
            contact_leg(1),
            CallEvent::LegFailed {
                leg_id: leg(1),
                sip_status: 486,
                failure: LegFailure::Rejected,
                at: at(1),
            },
        ])
        .when(CallCommand::LegAnswered { leg_id: leg(1) })
        .then_error(DomainError::LegNotActive { leg: leg(1) });
    }

    #[test]
    fn a_call_in_is_awaited_with_a_short_lived_token() {
        given::<Call>([inbound_started()])
            .at(at(2))
            .when(CallCommand::AwaitCallIn {
                token: "k3x9q2".into(),
                access_number: E164::parse("+442030000000").unwrap(),
                expected_caller: mobile(),
                ttl_secs: 30,
            })
            .then([CallEvent::CallInAwaited {
                token: "k3x9q2".into(),
                access_number: E164::parse("+442030000000").unwrap(),
                expected_caller: mobile(),
                expires_at: at(32),
                at: at(2),
            }]);
    }

    fn answered(n: u128) -> CallEvent {
        CallEvent::LegAnswered {
            leg_id: leg(n),
            at: at(5),
        }
    }

    fn transfer(by: Side, from_leg: Option<LegId>, n: u128) -> CallCommand {
        CallCommand::Transfer {
            by,
            from_leg,
            to: "+442079460000".into(),
            leg_id: leg(n),
            target: LegTarget::Pstn {
                number: E164::parse("+442079460000").unwrap(),
            },
            path: Path::Pstn,
            account: active_account(),
        }
    }

    #[test]
    fn a_callee_transfers_its_answered_call_and_the_new_leg_answers_besides_it() {
        let new_leg = CallEvent::LegStarted {
            leg_id: leg(3),
            target: LegTarget::Pstn {
                number: E164::parse("+442079460000").unwrap(),
            },
            path: Path::Pstn,
            role: LegRole::Callee,
            at: at(9),
        };
        let state = given::<Call>([inbound_started(), contact_leg(1), answered(1)])
            .at(at(9))
            .when(transfer(Side::Callee, Some(leg(1)), 3))
            .then([
                CallEvent::Transferred {
                    by: Side::Callee,
                    from_leg: Some(leg(1)),
                    to: "+442079460000".into(),
                    leg_id: leg(3),
                    at: at(9),
                },
                new_leg.clone(),
            ]);
        assert!(state.legs[&leg(3)].by_transfer);
        // The transfer target answers while the transferring leg is still up: not a fork
        // lost, the call goes on with it.
        let history = [
            inbound_started(),
            contact_leg(1),
            answered(1),
            CallEvent::Transferred {
                by: Side::Callee,
                from_leg: Some(leg(1)),
                to: "+442079460000".into(),
                leg_id: leg(3),
                at: at(9),
            },
            new_leg,
        ];
        given::<Call>(history.clone())
            .at(at(12))
            .when(CallCommand::LegAnswered { leg_id: leg(3) })
            .then([CallEvent::LegAnswered {
                leg_id: leg(3),
                at: at(12),
            }]);
        // A second transfer while this one rings is refused.
        given::<Call>(history.clone())
            .at(at(10))
            .when(transfer(Side::Caller, None, 4))
            .then_error(DomainError::invalid("transfer", "one is already under way"));
        // The transferring leg leaves: it ends then (billing stops it there), once.
        let mut answered_history = history.to_vec();
        answered_history.push(CallEvent::LegAnswered {
            leg_id: leg(3),
            at: at(12),
        });
        let state = given::<Call>(answered_history.clone())
            .at(at(13))
            .when(CallCommand::EndLeg { leg_id: leg(1) })
            .then([CallEvent::LegEnded {
                leg_id: leg(1),
                at: at(13),
            }]);
        assert_eq!(state.legs[&leg(1)].ended_at, Some(at(13)));
        assert_eq!(state.legs[&leg(3)].status, LegStatus::Answered);
        answered_history.push(CallEvent::LegEnded {
            leg_id: leg(1),
            at: at(13),
        });
        given::<Call>(answered_history)
            .at(at(14))
            .when(CallCommand::EndLeg { leg_id: leg(1) })
            .then([]);
    }

    #[test]
    fn only_an_answered_party_transfers_and_only_for_the_calls_account() {
        // Not answered yet.
        given::<Call>([inbound_started(), contact_leg(1)])
            .when(transfer(Side::Caller, None, 3))
            .then_error(DomainError::invalid(
                "call",
                "only an answered call is transferred",
            ));
        let up = [
            inbound_started(),
            contact_leg(1),
            contact_leg(2),
            answered(1),
        ];
        // A leg that did not answer does not transfer.
        given::<Call>(up.clone())
            .when(transfer(Side::Callee, Some(leg(2)), 3))
            .then_error(DomainError::LegNotActive { leg: leg(2) });
        // The callee names its leg; the caller has none.
        given::<Call>(up.clone())
            .when(transfer(Side::Callee, None, 3))
            .then_error(DomainError::invalid(
                "by",
                "the caller, or the callee on its answered leg",
            ));
        // Another account is not billed for this call's transfer.
        let mut other = active_account();
        other.id = Some(AccountId(Uuid::from_u128(4242)));
        let mut command = transfer(Side::Caller, None, 3);
        if let CallCommand::Transfer { account, .. } = &mut command {
            *account = other;
        }
        given::<Call>(up.clone())
            .when(command)
            .then_error(DomainError::invalid(
                "account",
                "a transfer is billed to the call's account",
            ));
        // A leg still ringing does not leave: it fails.
        given::<Call>(up)
            .when(CallCommand::EndLeg { leg_id: leg(2) })
            .then_error(DomainError::LegNotActive { leg: leg(2) });
    }

    #[test]
    fn a_party_joins_its_two_calls_once() {
        let other = CallId(Uuid::from_u128(501));
        let join = |with: CallId| CallCommand::Join {
            by: Side::Callee,
            from_leg: Some(leg(1)),
            with,
            account: active_account(),
        };
        let up = [inbound_started(), contact_leg(1), answered(1)];
        let state = given::<Call>(up.clone())
            .at(at(20))
            .when(join(other))
            .then([CallEvent::Joined {
                by: Side::Callee,
                from_leg: Some(leg(1)),
                with: other,
                at: at(20),
            }]);
        assert_eq!(state.joined_with, Some(other));
        // Once only, never with itself, only once answered.
        let mut joined = up.to_vec();
        joined.push(CallEvent::Joined {
            by: Side::Callee,
            from_leg: Some(leg(1)),
            with: other,
            at: at(20),
        });
        given::<Call>(joined)
            .when(join(CallId(Uuid::from_u128(502))))
            .then_error(DomainError::invalid("with", "joined already, or itself"));
        given::<Call>(up)
            .when(join(call_id()))
            .then_error(DomainError::invalid("with", "joined already, or itself"));
        given::<Call>([inbound_started(), contact_leg(1)])
            .when(join(other))
            .then_error(DomainError::invalid(
                "call",
                "only an answered call is transferred",
            ));
    }
}
