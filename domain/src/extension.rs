//! Extension telephones: phones served by another provider (a mobile, an office line) that a
//! user registers as extensions of their account. An extension serves only once the user has
//! proved they hold the number; calls through it are billed to the main account.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::Account;
use crate::aggregate::Aggregate;
use crate::credentials::secret_hash;
use crate::e164::E164;
use crate::error::DomainError;
use crate::event::domain_events;
use crate::ids::{AccountId, ExtensionId};
use crate::time::Instant;

/// Wrong codes allowed before verification locks.
pub const MAX_CODE_ATTEMPTS: u8 = 5;
/// Verification codes that may be sent to one extension in its lifetime.
pub const MAX_CHALLENGES: u8 = 5;
/// Wrong PINs in a row at the access-number menu before keypad access locks.
pub const MAX_PIN_ATTEMPTS: u8 = 3;
/// Dial intents one extension may hold live at once.
pub const MAX_LIVE_DIAL_INTENTS: usize = 3;
/// The longest a dial intent stays usable.
pub const MAX_DIAL_INTENT_TTL_SECS: u32 = 300;
/// Callback requests one extension may have waiting at once.
pub const MAX_PENDING_CALLBACKS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionKind {
    Mobile,
    Landline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeMethod {
    /// The edge calls the number; the caller ID's last digits carry the code.
    FlashCall,
    /// The code goes out through the configured SMS gateway webhook.
    Sms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerIdShown {
    /// The account's main number (the default: the extension acts as the account).
    #[default]
    Main,
    /// The extension's own number.
    Own,
}

/// How a call for the user reaches this extension over the alternate (cellular) network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlternateMode {
    /// The edge calls the extension's number through the trunk.
    #[default]
    CallOut,
    /// The edge tells the user's device over data which access number to call, and bridges
    /// the extension's call to it (the user's own carrier carries, and may bill, that call).
    CallIn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionSettings {
    pub ring_on_inbound: bool,
    pub ring_delay_secs: u16,
    pub may_call_out: bool,
    pub international_allowed: bool,
    /// Hash of the PIN required for call-through, if any (never the PIN).
    pub pin_hash: Option<String>,
    pub caller_id: CallerIdShown,
    pub daily_limit_minor: Option<i64>,
    pub prefers_alternate_path: bool,
    pub alternate_path: AlternateMode,
}

impl Default for ExtensionSettings {
    fn default() -> Self {
        Self {
            ring_on_inbound: true,
            ring_delay_secs: 0,
            may_call_out: true,
            international_allowed: false,
            pin_hash: None,
            caller_id: CallerIdShown::Main,
            daily_limit_minor: None,
            prefers_alternate_path: false,
            alternate_path: AlternateMode::CallOut,
        }
    }
}

/// What an admin may change; the PIN travels in clear only inside the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsChange {
    pub ring_on_inbound: bool,
    pub ring_delay_secs: u16,
    pub may_call_out: bool,
    pub international_allowed: bool,
    pub pin: PinChange,
    pub caller_id: CallerIdShown,
    pub daily_limit_minor: Option<i64>,
    pub prefers_alternate_path: bool,
    pub alternate_path: AlternateMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinChange {
    Keep,
    Clear,
    Set(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExtensionStatus {
    #[default]
    Unrequested,
    Pending,
    Verified,
    Removed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Challenge {
    pub method: ChallengeMethod,
    pub code_hash: String,
    pub expires_at: Instant,
}

/// A destination staged over data before the extension dials an access number through its own
/// carrier (call-through): the edge calls this destination when the call arrives in time.
#[derive(Debug, Clone, PartialEq)]
pub struct DialIntent {
    pub destination: E164,
    pub expires_at: Instant,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extension {
    pub status: ExtensionStatus,
    pub id: Option<ExtensionId>,
    pub account_id: Option<AccountId>,
    pub number: Option<E164>,
    pub native_provider: String,
    pub kind: Option<ExtensionKind>,
    pub settings: ExtensionSettings,
    pub challenge: Option<Challenge>,
    pub challenges_issued: u8,
    pub failed_attempts: u8,
    pub locked: bool,
    /// Wrong PINs keyed in a row at the access-number menu.
    pub keypad_failures: u8,
    /// Keypad access refused until an admin unlocks it (after `MAX_PIN_ATTEMPTS` wrong PINs).
    pub keypad_locked: bool,
    /// Staged dial intents by id (expired ones linger until pruned by a later staging).
    pub dial_intents: BTreeMap<Uuid, DialIntent>,
    /// Callback requests not yet taken up by the edge, by id, with their destination.
    pub callbacks: BTreeMap<Uuid, E164>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionCommand {
    Request {
        extension_id: ExtensionId,
        account: Account,
        number: E164,
        native_provider: String,
        kind: ExtensionKind,
    },
    /// `code` is drawn at random by the caller; only its hash is kept.
    IssueChallenge {
        method: ChallengeMethod,
        code: String,
        ttl_secs: u32,
    },
    SubmitCode {
        code: String,
    },
    ChangeSettings(SettingsChange),
    Remove {
        reason: String,
    },
    /// Stage `destination` for the extension's next call-through, for `ttl_secs`.
    StageDialIntent {
        intent_id: Uuid,
        account: Account,
        destination: E164,
        ttl_secs: u32,
    },
    CancelDialIntent {
        intent_id: Uuid,
    },
    /// A call-through takes the intent's destination: it serves one call only. Refused when
    /// the intent is no longer live (used by another call, cancelled or expired), so of calls
    /// racing for one intent exactly one gets it.
    UseDialIntent {
        intent_id: Uuid,
    },
    /// Ask the edge to ring the extension, then `destination`, and bridge them.
    RequestCallback {
        request_id: Uuid,
        account: Account,
        destination: E164,
    },
    CancelCallback {
        request_id: Uuid,
    },
    /// A PIN keyed in at the access-number menu, checked against the extension's: accepted,
    /// or refused and counted (the `MAX_PIN_ATTEMPTS`th refusal in a row locks keypad access).
    /// Only the outcome is recorded, never the PIN.
    CheckPin {
        pin: String,
        account: Account,
    },
    /// An admin lifts the keypad lock (and the count of wrong PINs).
    UnlockKeypad,
    /// The edge takes a waiting callback request up to place it: it serves one callback, and
    /// of edges racing for it only one takes it (the others find it gone).
    TakeCallback {
        request_id: Uuid,
    },
}

domain_events! {
    upcast = crate::extension::upcast;
    /// What happened to an extension telephone (stream `extension-{id}`).
    pub enum ExtensionEvent {
        Requested {
            extension_id: ExtensionId,
            account_id: AccountId,
            number: E164,
            native_provider: String,
            kind: ExtensionKind,
        } = ("extension.requested", 1),
        ChallengeIssued {
            method: ChallengeMethod,
            code_hash: String,
            expires_at: Instant,
        } = ("extension.challenge_issued", 1),
        Verified {} = ("extension.verified", 1),
        ChallengeFailed { attempts: u8, locked: bool } = ("extension.challenge_failed", 1),
        SettingsChanged { settings: ExtensionSettings } = ("extension.settings_changed", 2),
        Removed { reason: String } = ("extension.removed", 1),
        DialIntentStaged {
            intent_id: Uuid,
            destination: E164,
            expires_at: Instant,
        } = ("extension.dial_intent_staged", 1),
        DialIntentCancelled { intent_id: Uuid, reason: String } = ("extension.dial_intent_cancelled", 1),
        CallbackRequested { request_id: Uuid, destination: E164 } = ("extension.callback_requested", 1),
        CallbackCancelled { request_id: Uuid, reason: String } = ("extension.callback_cancelled", 1),
        /// The PIN keyed in at the access-number menu was right (the count of wrong ones
        /// starts again).
        KeypadPinAccepted {} = ("extension.keypad_pin_accepted", 1),
        /// A wrong PIN at the menu: `failures` in a row; `locked` once keypad access is
        /// refused until an admin unlocks it.
        KeypadPinRefused { failures: u8, locked: bool } = ("extension.keypad_pin_refused", 1),
        KeypadUnlocked {} = ("extension.keypad_unlocked", 1),
    }
}

/// Upcasters for extension events. `extension.settings_changed` v1 (written before call-in
/// existed) had no `alternate_path`: every extension was reached by calling it out.
pub(crate) fn upcast(
    event_type: &str,
    version: u16,
    payload: serde_json::Value,
) -> Result<serde_json::Value, crate::event::DecodeError> {
    use serde_json::Value;
    match (event_type, version, payload) {
        ("extension.settings_changed", 1, Value::Object(mut v1)) => {
            if let Some(Value::Object(settings)) = v1.get_mut("settings") {
                settings
                    .entry("alternate_path")
                    .or_insert_with(|| "call_out".into());
            }
            Ok(Value::Object(v1))
        }
        (t, v, _) => Err(crate::event::DecodeError::NoUpcaster {
            event_type: t.to_owned(),
            version: v,
        }),
    }
}

fn code_hash(extension_id: Option<ExtensionId>, code: &str) -> String {
    let salt = extension_id.map(|id| id.to_string()).unwrap_or_default();
    secret_hash("verification-code", &salt, code)
}

fn pin_hash(extension_id: Option<ExtensionId>, pin: &str) -> String {
    let salt = extension_id.map(|id| id.to_string()).unwrap_or_default();
    secret_hash("pin", &salt, pin)
}

fn all_digits(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl Extension {
    fn ensure_present(&self) -> Result<(), DomainError> {
        match self.status {
            ExtensionStatus::Unrequested => Err(DomainError::NotFound {
                entity: "extension",
            }),
            ExtensionStatus::Removed => Err(DomainError::ExtensionRemoved),
            ExtensionStatus::Pending | ExtensionStatus::Verified => Ok(()),
        }
    }

    /// Whether this extension may be rung for an inbound call or an alternate-path call-out:
    /// only verified extensions of an active account serve.
    pub fn ensure_serving(&self, account: &Account) -> Result<(), DomainError> {
        self.ensure_present()?;
        if self.status != ExtensionStatus::Verified {
            return Err(DomainError::ExtensionNotVerified);
        }
        account.ensure_active()
    }

    /// Whether this extension may call `destination` at all: serving, allowed to call out,
    /// and international only if its settings allow.
    pub fn authorize_destination(
        &self,
        account: &Account,
        destination: &E164,
    ) -> Result<(), DomainError> {
        self.ensure_serving(account)?;
        if !self.settings.may_call_out {
            return Err(DomainError::CallOutNotAllowed);
        }
        if let Some(home) = &account.main_number
            && destination.is_international_from(home)
            && !self.settings.international_allowed
        {
            return Err(DomainError::InternationalNotAllowed);
        }
        Ok(())
    }

    /// Whether this extension may place a call to `destination` dialled from the phone itself
    /// (call-through without a dial intent): as `authorize_destination`, plus the PIN if one
    /// is set.
    pub fn authorize_call_out(
        &self,
        account: &Account,
        destination: &E164,
        pin: Option<&str>,
    ) -> Result<(), DomainError> {
        self.authorize_destination(account, destination)?;
        if let Some(expected) = &self.settings.pin_hash {
            let given = pin.ok_or(DomainError::PinRequired)?;
            if pin_hash(self.id, given) != *expected {
                return Err(DomainError::PinMismatch);
            }
        }
        Ok(())
    }
    /// The live dial intent staged last, if any.
    pub fn live_dial_intent(&self, now: Instant) -> Option<(Uuid, &DialIntent)> {
        self.dial_intents
            .iter()
            .filter(|(_, i)| i.expires_at > now)
            .max_by_key(|(id, i)| (i.expires_at, **id))
            .map(|(id, i)| (*id, i))
    }
}

impl Aggregate for Extension {
    type Command = ExtensionCommand;
    type Event = ExtensionEvent;

    fn decide(
        &self,
        command: &ExtensionCommand,
        now: Instant,
    ) -> Result<Vec<ExtensionEvent>, DomainError> {
        use ExtensionCommand as C;
        use ExtensionEvent as E;
        if let C::Request {
            extension_id,
            account,
            number,
            native_provider,
            kind,
        } = command
        {
            if self.status != ExtensionStatus::Unrequested {
                return Err(DomainError::AlreadyExists {
                    entity: "extension",
                });
            }
            account.ensure_active()?;
            let Some(account_id) = account.id else {
                return Err(DomainError::NotFound { entity: "account" });
            };
            let native_provider = native_provider.trim();
            if native_provider.is_empty() || native_provider.len() > 100 {
                return Err(DomainError::invalid(
                    "native_provider",
                    "must be 1 to 100 characters",
                ));
            }
            return Ok(vec![E::Requested {
                extension_id: *extension_id,
                account_id,
                number: number.clone(),
                native_provider: native_provider.to_owned(),
                kind: *kind,
            }]);
        }
        self.ensure_present()?;
        Ok(match command {
            C::Request { .. } => unreachable!("handled above"),
            C::IssueChallenge {
                method,
                code,
                ttl_secs,
            } => {
                if self.status == ExtensionStatus::Verified {
                    return Err(DomainError::ExtensionAlreadyVerified);
                }
                if self.locked {
                    return Err(DomainError::ChallengeLocked);
                }
                if self.challenges_issued >= MAX_CHALLENGES {
                    return Err(DomainError::ChallengeResendLimit);
                }
                if !all_digits(code, 4..=8) {
                    return Err(DomainError::invalid("code", "must be 4 to 8 digits"));
                }
                if !(30..=3600).contains(ttl_secs) {
                    return Err(DomainError::invalid(
                        "ttl_secs",
                        "must be between 30 and 3600",
                    ));
                }
                vec![E::ChallengeIssued {
                    method: *method,
                    code_hash: code_hash(self.id, code),
                    expires_at: now + chrono::Duration::seconds(i64::from(*ttl_secs)),
                }]
            }
            C::SubmitCode { code } => {
                if self.status == ExtensionStatus::Verified {
                    return Err(DomainError::ExtensionAlreadyVerified);
                }
                if self.locked {
                    return Err(DomainError::ChallengeLocked);
                }
                let challenge = self.challenge.as_ref().ok_or(DomainError::NoChallenge)?;
                if now >= challenge.expires_at {
                    return Err(DomainError::ChallengeExpired);
                }
                if code_hash(self.id, code) == challenge.code_hash {
                    vec![E::Verified {}]
                } else {
                    let attempts = self.failed_attempts + 1;
                    vec![E::ChallengeFailed {
                        attempts,
                        locked: attempts >= MAX_CODE_ATTEMPTS,
                    }]
                }
            }
            C::ChangeSettings(change) => {
                if change.ring_delay_secs > 120 {
                    return Err(DomainError::invalid(
                        "ring_delay_secs",
                        "must be at most 120",
                    ));
                }
                if change.daily_limit_minor.is_some_and(|l| l < 0) {
                    return Err(DomainError::invalid(
                        "daily_limit_minor",
                        "must not be negative",
                    ));
                }
                let pin_hash = match &change.pin {
                    PinChange::Keep => self.settings.pin_hash.clone(),
                    PinChange::Clear => None,
                    PinChange::Set(pin) if all_digits(pin, 4..=8) => Some(pin_hash(self.id, pin)),
                    PinChange::Set(_) => {
                        return Err(DomainError::invalid("pin", "must be 4 to 8 digits"));
                    }
                };
                let settings = ExtensionSettings {
                    ring_on_inbound: change.ring_on_inbound,
                    ring_delay_secs: change.ring_delay_secs,
                    may_call_out: change.may_call_out,
                    international_allowed: change.international_allowed,
                    pin_hash,
                    caller_id: change.caller_id,
                    daily_limit_minor: change.daily_limit_minor,
                    prefers_alternate_path: change.prefers_alternate_path,
                    alternate_path: change.alternate_path,
                };
                if settings == self.settings {
                    vec![]
                } else {
                    vec![E::SettingsChanged { settings }]
                }
            }
            C::Remove { reason } => {
                // Nothing staged for an extension outlives it.
                let intents = self
                    .dial_intents
                    .iter()
                    .filter(|(_, i)| i.expires_at > now)
                    .map(|(id, _)| E::DialIntentCancelled {
                        intent_id: *id,
                        reason: "extension_removed".into(),
                    });
                let callbacks = self.callbacks.keys().map(|id| E::CallbackCancelled {
                    request_id: *id,
                    reason: "extension_removed".into(),
                });
                intents
                    .chain(callbacks)
                    .chain([E::Removed {
                        reason: reason.clone(),
                    }])
                    .collect()
            }
            C::StageDialIntent {
                intent_id,
                account,
                destination,
                ttl_secs,
            } => {
                self.authorize_destination(account, destination)?;
                if !(10..=MAX_DIAL_INTENT_TTL_SECS).contains(ttl_secs) {
                    return Err(DomainError::invalid(
                        "ttl_secs",
                        format!("must be between 10 and {MAX_DIAL_INTENT_TTL_SECS}"),
                    ));
                }
                if self.dial_intents.contains_key(intent_id) {
                    return Ok(vec![]);
                }
                let live = self
                    .dial_intents
                    .values()
                    .filter(|i| i.expires_at > now)
                    .count();
                if live >= MAX_LIVE_DIAL_INTENTS {
                    return Err(DomainError::TooManyPending {
                        what: "dial intents",
                        limit: MAX_LIVE_DIAL_INTENTS,
                    });
                }
                vec![E::DialIntentStaged {
                    intent_id: *intent_id,
                    destination: destination.clone(),
                    expires_at: now + chrono::Duration::seconds(i64::from(*ttl_secs)),
                }]
            }
            C::CancelDialIntent { intent_id } => match self.dial_intents.get(intent_id) {
                Some(i) if i.expires_at > now => vec![E::DialIntentCancelled {
                    intent_id: *intent_id,
                    reason: "cancelled".into(),
                }],
                Some(_) => vec![],
                None => {
                    return Err(DomainError::NotFound {
                        entity: "dial intent",
                    });
                }
            },
            C::UseDialIntent { intent_id } => match self.dial_intents.get(intent_id) {
                Some(i) if i.expires_at > now => vec![E::DialIntentCancelled {
                    intent_id: *intent_id,
                    reason: "used".into(),
                }],
                _ => return Err(DomainError::DialIntentSpent),
            },
            C::RequestCallback {
                request_id,
                account,
                destination,
            } => {
                self.authorize_destination(account, destination)?;
                if self.callbacks.contains_key(request_id) {
                    return Ok(vec![]);
                }
                if self.callbacks.len() >= MAX_PENDING_CALLBACKS {
                    return Err(DomainError::TooManyPending {
                        what: "callback requests",
                        limit: MAX_PENDING_CALLBACKS,
                    });
                }
                vec![E::CallbackRequested {
                    request_id: *request_id,
                    destination: destination.clone(),
                }]
            }
            C::CheckPin { pin, account } => {
                self.ensure_serving(account)?;
                if self.keypad_locked {
                    return Err(DomainError::KeypadLocked);
                }
                let expected = self.settings.pin_hash.as_ref().ok_or_else(|| {
                    DomainError::invalid("pin", "the extension has no PIN to check")
                })?;
                if pin_hash(self.id, pin) == *expected {
                    vec![E::KeypadPinAccepted {}]
                } else {
                    let failures = self.keypad_failures.saturating_add(1);
                    vec![E::KeypadPinRefused {
                        failures,
                        locked: failures >= MAX_PIN_ATTEMPTS,
                    }]
                }
            }
            C::UnlockKeypad => {
                if self.keypad_locked || self.keypad_failures > 0 {
                    vec![E::KeypadUnlocked {}]
                } else {
                    vec![]
                }
            }
            C::CancelCallback { request_id } | C::TakeCallback { request_id } => {
                if !self.callbacks.contains_key(request_id) {
                    return Err(DomainError::NotFound {
                        entity: "callback request",
                    });
                }
                let reason = match command {
                    C::TakeCallback { .. } => "placed",
                    _ => "cancelled",
                };
                vec![E::CallbackCancelled {
                    request_id: *request_id,
                    reason: reason.into(),
                }]
            }
        })
    }

    fn apply(&mut self, event: &ExtensionEvent) {
        use ExtensionEvent as E;
        match event {
            E::Requested {
                extension_id,
                account_id,
                number,
                native_provider,
                kind,
            } => {
                self.status = ExtensionStatus::Pending;
                self.id = Some(*extension_id);
                self.account_id = Some(*account_id);
                self.number = Some(number.clone());
                self.native_provider = native_provider.clone();
                self.kind = Some(*kind);
            }
            E::ChallengeIssued {
                method,
                code_hash,
                expires_at,
            } => {
                self.challenges_issued += 1;
                self.challenge = Some(Challenge {
                    method: *method,
                    code_hash: code_hash.clone(),
                    expires_at: *expires_at,
                });
            }
            E::Verified {} => {
                self.status = ExtensionStatus::Verified;
                self.challenge = None;
            }
            E::ChallengeFailed { attempts, locked } => {
                self.failed_attempts = *attempts;
                self.locked = *locked;
            }
            E::SettingsChanged { settings } => self.settings = settings.clone(),
            E::Removed { .. } => {
                self.status = ExtensionStatus::Removed;
                self.challenge = None;
            }
            E::DialIntentStaged {
                intent_id,
                destination,
                expires_at,
            } => {
                // Anything that expired before this one could have been staged is gone for good.
                let staged_no_earlier_than =
                    *expires_at - chrono::Duration::seconds(i64::from(MAX_DIAL_INTENT_TTL_SECS));
                self.dial_intents
                    .retain(|_, i| i.expires_at > staged_no_earlier_than);
                self.dial_intents.insert(
                    *intent_id,
                    DialIntent {
                        destination: destination.clone(),
                        expires_at: *expires_at,
                    },
                );
            }
            E::DialIntentCancelled { intent_id, .. } => {
                self.dial_intents.remove(intent_id);
            }
            E::CallbackRequested {
                request_id,
                destination,
            } => {
                self.callbacks.insert(*request_id, destination.clone());
            }
            E::CallbackCancelled { request_id, .. } => {
                self.callbacks.remove(request_id);
            }
            E::KeypadPinAccepted {} | E::KeypadUnlocked {} => {
                self.keypad_failures = 0;
                self.keypad_locked = false;
            }
            E::KeypadPinRefused { failures, locked } => {
                self.keypad_failures = *failures;
                self.keypad_locked = *locked;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::account::tests::{account_id, active_account};
    use crate::testing::{at, given};
    use uuid::Uuid;

    pub fn extension_id() -> ExtensionId {
        ExtensionId(Uuid::from_u128(100))
    }

    pub fn mobile() -> E164 {
        E164::parse("+447700900123").unwrap()
    }

    pub fn requested() -> ExtensionEvent {
        ExtensionEvent::Requested {
            extension_id: extension_id(),
            account_id: account_id(),
            number: mobile(),
            native_provider: "Vodafone UK".into(),
            kind: ExtensionKind::Mobile,
        }
    }

    fn issued(code: &str) -> ExtensionEvent {
        ExtensionEvent::ChallengeIssued {
            method: ChallengeMethod::Sms,
            code_hash: code_hash(Some(extension_id()), code),
            expires_at: at(300),
        }
    }

    pub fn verified_history() -> Vec<ExtensionEvent> {
        vec![requested(), issued("4821"), ExtensionEvent::Verified {}]
    }

    fn submit(code: &str) -> ExtensionCommand {
        ExtensionCommand::SubmitCode { code: code.into() }
    }

    fn change(pin: PinChange) -> SettingsChange {
        let d = ExtensionSettings::default();
        SettingsChange {
            ring_on_inbound: d.ring_on_inbound,
            ring_delay_secs: d.ring_delay_secs,
            may_call_out: d.may_call_out,
            international_allowed: d.international_allowed,
            pin,
            caller_id: d.caller_id,
            daily_limit_minor: d.daily_limit_minor,
            prefers_alternate_path: d.prefers_alternate_path,
            alternate_path: d.alternate_path,
        }
    }

    #[test]
    fn settings_changed_v1_is_upcast_to_call_out() {
        use crate::event::DomainEvent;
        let v1 = serde_json::json!({ "settings": {
            "ring_on_inbound": false, "ring_delay_secs": 5, "may_call_out": true,
            "international_allowed": false, "pin_hash": null, "caller_id": "own",
            "daily_limit_minor": 900, "prefers_alternate_path": true,
        }});
        let event = ExtensionEvent::decode("extension.settings_changed", 1, v1).unwrap();
        let ExtensionEvent::SettingsChanged { settings } = &event else {
            panic!("{event:?}")
        };
        assert_eq!(settings.alternate_path, AlternateMode::CallOut);
        assert_eq!(
            (settings.ring_delay_secs, settings.daily_limit_minor),
            (5, Some(900))
        );
        assert_eq!(event.encode().schema_version, 2);
    }

    #[test]
    fn requesting_an_extension_needs_an_active_account() {
        let command = |account| ExtensionCommand::Request {
            extension_id: extension_id(),
            account,
            number: mobile(),
            native_provider: "Vodafone UK".into(),
            kind: ExtensionKind::Mobile,
        };
        given::<Extension>([])
            .when(command(active_account()))
            .then([requested()]);
        let mut suspended = active_account();
        suspended.status = crate::account::AccountStatus::Suspended;
        given::<Extension>([])
            .when(command(suspended))
            .then_error(DomainError::AccountSuspended);
    }

    #[test]
    fn the_right_code_verifies() {
        let state = given::<Extension>([requested(), issued("4821")])
            .at(at(60))
            .when(submit("4821"))
            .then([ExtensionEvent::Verified {}]);
        assert_eq!(state.status, ExtensionStatus::Verified);
    }

    #[test]
    fn a_code_is_stored_only_as_a_hash() {
        let events = given::<Extension>([requested()])
            .when(ExtensionCommand::IssueChallenge {
                method: ChallengeMethod::FlashCall,
                code: "4821".into(),
                ttl_secs: 300,
            })
            .events();
        let json = serde_json::to_string(&events).unwrap();
        assert!(!json.contains("4821"), "{json}");
    }

    #[test]
    fn an_expired_code_is_refused() {
        given::<Extension>([requested(), issued("4821")])
            .at(at(300))
            .when(submit("4821"))
            .then_error(DomainError::ChallengeExpired);
    }

    #[test]
    fn a_wrong_code_is_recorded_as_a_failed_attempt() {
        given::<Extension>([requested(), issued("4821")])
            .when(submit("0000"))
            .then([ExtensionEvent::ChallengeFailed {
                attempts: 1,
                locked: false,
            }]);
    }

    #[test]
    fn a_challenge_locks_after_five_wrong_codes() {
        let mut history = vec![requested(), issued("4821")];
        for attempts in 1..=4 {
            history.push(ExtensionEvent::ChallengeFailed {
                attempts,
                locked: false,
            });
        }
        let state = given::<Extension>(history).when(submit("0000")).then([
            ExtensionEvent::ChallengeFailed {
                attempts: 5,
                locked: true,
            },
        ]);
        // Even the right code no longer works, and no new code can be sent.
        assert_eq!(
            state.decide(&submit("4821"), at(1)),
            Err(DomainError::ChallengeLocked)
        );
        assert_eq!(
            state.decide(
                &ExtensionCommand::IssueChallenge {
                    method: ChallengeMethod::Sms,
                    code: "1111".into(),
                    ttl_secs: 300
                },
                at(1)
            ),
            Err(DomainError::ChallengeLocked)
        );
    }

    #[test]
    fn resends_are_limited() {
        let history: Vec<_> = std::iter::once(requested())
            .chain((0..MAX_CHALLENGES).map(|_| issued("1234")))
            .collect();
        given::<Extension>(history)
            .when(ExtensionCommand::IssueChallenge {
                method: ChallengeMethod::Sms,
                code: "5678".into(),
                ttl_secs: 300,
            })
            .then_error(DomainError::ChallengeResendLimit);
    }

    #[test]
    fn an_unverified_extension_cannot_place_calls() {
        let state = Extension::from_events(&[requested(), issued("4821")]);
        assert_eq!(
            state.authorize_call_out(
                &active_account(),
                &E164::parse("+442079460000").unwrap(),
                None
            ),
            Err(DomainError::ExtensionNotVerified)
        );
    }

    #[test]
    fn a_removed_extension_cannot_place_calls_or_change() {
        let mut history = verified_history();
        history.push(ExtensionEvent::Removed {
            reason: "lost phone".into(),
        });
        let state = Extension::from_events(&history);
        assert_eq!(
            state.authorize_call_out(
                &active_account(),
                &E164::parse("+442079460000").unwrap(),
                None
            ),
            Err(DomainError::ExtensionRemoved)
        );
        given::<Extension>(history)
            .when(ExtensionCommand::ChangeSettings(change(PinChange::Keep)))
            .then_error(DomainError::ExtensionRemoved);
    }

    #[test]
    fn an_extension_of_a_suspended_account_does_not_serve() {
        let state = Extension::from_events(&verified_history());
        let mut account = active_account();
        account.status = crate::account::AccountStatus::Suspended;
        assert_eq!(
            state.ensure_serving(&account),
            Err(DomainError::AccountSuspended)
        );
    }

    #[test]
    fn a_verified_extension_calls_domestic_but_not_international_by_default() {
        let state = Extension::from_events(&verified_history());
        let account = active_account();
        assert_eq!(
            state.authorize_call_out(&account, &E164::parse("+442079460000").unwrap(), None),
            Ok(())
        );
        assert_eq!(
            state.authorize_call_out(&account, &E164::parse("+14155550100").unwrap(), None),
            Err(DomainError::InternationalNotAllowed)
        );
    }

    #[test]
    fn a_pin_once_set_is_required_and_checked() {
        let mut history = verified_history();
        let events = given::<Extension>(history.clone())
            .when(ExtensionCommand::ChangeSettings(change(PinChange::Set(
                "2468".into(),
            ))))
            .events();
        history.extend(events);
        let state = Extension::from_events(&history);
        let dest = E164::parse("+442079460000").unwrap();
        let account = active_account();
        assert_eq!(
            state.authorize_call_out(&account, &dest, None),
            Err(DomainError::PinRequired)
        );
        assert_eq!(
            state.authorize_call_out(&account, &dest, Some("1357")),
            Err(DomainError::PinMismatch)
        );
        assert_eq!(
            state.authorize_call_out(&account, &dest, Some("2468")),
            Ok(())
        );
    }

    #[test]
    fn three_wrong_keypad_pins_in_a_row_lock_keypad_access_until_an_admin_unlocks_it() {
        let mut history = verified_history();
        history.extend(
            given::<Extension>(history.clone())
                .when(ExtensionCommand::ChangeSettings(change(PinChange::Set(
                    "2468".into(),
                ))))
                .events(),
        );
        let check = |pin: &str| ExtensionCommand::CheckPin {
            pin: pin.into(),
            account: active_account(),
        };
        let keyed = |history: &mut Vec<ExtensionEvent>, pin: &str| {
            let events = given::<Extension>(history.clone())
                .when(check(pin))
                .events();
            history.extend(events.clone());
            events
        };
        // A right PIN between wrong ones starts the count again.
        for pin in ["1111", "2222", "2468", "1111", "2222"] {
            keyed(&mut history, pin);
        }
        let refused = keyed(&mut history, "3333");
        assert_eq!(
            refused,
            vec![ExtensionEvent::KeypadPinRefused {
                failures: 3,
                locked: true
            }]
        );
        // Locked: even the right PIN is refused, and nothing is recorded.
        given::<Extension>(history.clone())
            .when(check("2468"))
            .then_error(DomainError::KeypadLocked);
        history.extend(
            given::<Extension>(history.clone())
                .when(ExtensionCommand::UnlockKeypad)
                .events(),
        );
        given::<Extension>(history.clone())
            .when(check("2468"))
            .then([ExtensionEvent::KeypadPinAccepted {}]);
        // Nothing to unlock: a no-op.
        given::<Extension>(history)
            .when(ExtensionCommand::UnlockKeypad)
            .then([]);
        // No event carries the PIN.
        let json = serde_json::to_string(&refused[0]).unwrap();
        assert!(!json.contains("3333"), "{json}");
    }

    #[test]
    fn an_extension_that_may_not_call_out_cannot() {
        let mut c = change(PinChange::Keep);
        c.may_call_out = false;
        let mut history = verified_history();
        history.extend(
            given::<Extension>(history.clone())
                .when(ExtensionCommand::ChangeSettings(c))
                .events(),
        );
        let state = Extension::from_events(&history);
        assert_eq!(
            state.authorize_call_out(
                &active_account(),
                &E164::parse("+442079460000").unwrap(),
                None
            ),
            Err(DomainError::CallOutNotAllowed)
        );
    }

    #[test]
    fn unchanged_settings_are_a_no_op() {
        given::<Extension>(verified_history())
            .when(ExtensionCommand::ChangeSettings(change(PinChange::Keep)))
            .then([]);
    }

    #[test]
    fn a_malformed_pin_is_refused() {
        given::<Extension>(verified_history())
            .when(ExtensionCommand::ChangeSettings(change(PinChange::Set(
                "12ab".into(),
            ))))
            .then_error(DomainError::invalid("pin", "must be 4 to 8 digits"));
    }

    fn uk(n: &str) -> E164 {
        E164::parse(n).unwrap()
    }

    fn stage(id: u128, destination: &str, ttl_secs: u32) -> ExtensionCommand {
        ExtensionCommand::StageDialIntent {
            intent_id: Uuid::from_u128(id),
            account: active_account(),
            destination: uk(destination),
            ttl_secs,
        }
    }

    fn staged(id: u128, destination: &str, expires_at: Instant) -> ExtensionEvent {
        ExtensionEvent::DialIntentStaged {
            intent_id: Uuid::from_u128(id),
            destination: uk(destination),
            expires_at,
        }
    }

    #[test]
    fn a_dial_intent_serves_one_call() {
        let mut history = verified_history();
        history.push(staged(1, "+442079460000", at(60)));
        let used = ExtensionCommand::UseDialIntent {
            intent_id: Uuid::from_u128(1),
        };
        let state = given::<Extension>(history.clone())
            .when(used.clone())
            .then([ExtensionEvent::DialIntentCancelled {
                intent_id: Uuid::from_u128(1),
                reason: "used".into(),
            }]);
        assert!(state.live_dial_intent(at(1)).is_none());
        // Used up, expired or unknown: refused, so a second call racing for it gets nothing.
        history.push(ExtensionEvent::DialIntentCancelled {
            intent_id: Uuid::from_u128(1),
            reason: "used".into(),
        });
        given::<Extension>(history)
            .when(used.clone())
            .then_error(DomainError::DialIntentSpent);
        let mut expired = verified_history();
        expired.push(staged(1, "+442079460000", at(60)));
        given::<Extension>(expired)
            .at(at(61))
            .when(used)
            .then_error(DomainError::DialIntentSpent);
    }

    #[test]
    fn a_verified_extension_stages_a_dial_intent_that_expires() {
        let state = given::<Extension>(verified_history())
            .at(at(100))
            .when(stage(1, "+442079460000", 60))
            .then([staged(1, "+442079460000", at(160))]);
        assert_eq!(
            state
                .live_dial_intent(at(159))
                .map(|(id, i)| (id, i.destination.clone())),
            Some((Uuid::from_u128(1), uk("+442079460000")))
        );
        assert_eq!(state.live_dial_intent(at(160)), None);
    }

    #[test]
    fn dial_intents_need_a_verified_extension_and_an_allowed_destination() {
        given::<Extension>([requested()])
            .when(stage(1, "+442079460000", 60))
            .then_error(DomainError::ExtensionNotVerified);
        given::<Extension>(verified_history())
            .when(stage(1, "+12025550100", 60))
            .then_error(DomainError::InternationalNotAllowed);
        given::<Extension>(verified_history())
            .when(stage(1, "+442079460000", 301))
            .then_error(DomainError::invalid(
                "ttl_secs",
                "must be between 10 and 300",
            ));
    }

    #[test]
    fn live_dial_intents_are_limited_but_expired_ones_do_not_count() {
        let mut history = verified_history();
        history.extend((1..=3).map(|i| staged(i, "+442079460000", at(60))));
        given::<Extension>(history.clone())
            .at(at(30))
            .when(stage(9, "+442079460001", 60))
            .then_error(DomainError::TooManyPending {
                what: "dial intents",
                limit: MAX_LIVE_DIAL_INTENTS,
            });
        let state = given::<Extension>(history)
            .at(at(61))
            .when(stage(9, "+442079460001", 60))
            .then([staged(9, "+442079460001", at(121))]);
        assert_eq!(
            state.live_dial_intent(at(100)).unwrap().0,
            Uuid::from_u128(9)
        );
    }

    #[test]
    fn removing_an_extension_cancels_what_it_staged() {
        let mut history = verified_history();
        history.push(staged(1, "+442079460000", at(60)));
        history.push(staged(2, "+442079460001", at(500)));
        history.push(ExtensionEvent::CallbackRequested {
            request_id: Uuid::from_u128(7),
            destination: uk("+442079460002"),
        });
        let state = given::<Extension>(history)
            .at(at(100))
            .when(ExtensionCommand::Remove {
                reason: "lost phone".into(),
            })
            .then([
                ExtensionEvent::DialIntentCancelled {
                    intent_id: Uuid::from_u128(2),
                    reason: "extension_removed".into(),
                },
                ExtensionEvent::CallbackCancelled {
                    request_id: Uuid::from_u128(7),
                    reason: "extension_removed".into(),
                },
                ExtensionEvent::Removed {
                    reason: "lost phone".into(),
                },
            ]);
        assert!(state.callbacks.is_empty());
        assert_eq!(state.live_dial_intent(at(100)), None);
    }

    #[test]
    fn a_callback_request_needs_a_serving_extension_and_can_be_cancelled() {
        let request = ExtensionCommand::RequestCallback {
            request_id: Uuid::from_u128(7),
            account: active_account(),
            destination: uk("+442079460002"),
        };
        given::<Extension>([requested()])
            .when(request.clone())
            .then_error(DomainError::ExtensionNotVerified);
        let requested_cb = ExtensionEvent::CallbackRequested {
            request_id: Uuid::from_u128(7),
            destination: uk("+442079460002"),
        };
        given::<Extension>(verified_history())
            .when(request.clone())
            .then([requested_cb.clone()]);
        let mut history = verified_history();
        history.push(requested_cb);
        given::<Extension>(history.clone()).when(request).then([]);
        given::<Extension>(history)
            .when(ExtensionCommand::CancelCallback {
                request_id: Uuid::from_u128(7),
            })
            .then([ExtensionEvent::CallbackCancelled {
                request_id: Uuid::from_u128(7),
                reason: "cancelled".into(),
            }]);
        given::<Extension>(verified_history())
            .when(ExtensionCommand::CancelCallback {
                request_id: Uuid::from_u128(8),
            })
            .then_error(DomainError::NotFound {
                entity: "callback request",
            });
    }

    #[test]
    fn a_callback_request_is_taken_up_once() {
        let mut history = verified_history();
        history.push(ExtensionEvent::CallbackRequested {
            request_id: Uuid::from_u128(7),
            destination: uk("+442079460002"),
        });
        let take = ExtensionCommand::TakeCallback {
            request_id: Uuid::from_u128(7),
        };
        let taken = ExtensionEvent::CallbackCancelled {
            request_id: Uuid::from_u128(7),
            reason: "placed".into(),
        };
        given::<Extension>(history.clone())
            .when(take.clone())
            .then([taken.clone()]);
        history.push(taken);
        given::<Extension>(history)
            .when(take)
            .then_error(DomainError::NotFound {
                entity: "callback request",
            });
    }
}
