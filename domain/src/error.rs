//! Why a command was refused. Each variant is a rule of the service a caller can act on.

use crate::e164::E164;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{entity} does not exist")]
    NotFound { entity: &'static str },
    #[error("{entity} already exists")]
    AlreadyExists { entity: &'static str },
    #[error("the account is closed and accepts nothing")]
    AccountClosed,
    #[error("the account is suspended")]
    AccountSuspended,
    #[error("number {number} is held by another account")]
    NumberTaken { number: E164 },
    #[error("number {number} is not held by this account")]
    NumberNotHeld { number: E164 },
    #[error("the account already has its limit of {limit} extensions")]
    ExtensionLimitReached { limit: u8 },
    #[error("the device already holds its limit of {limit} bindings")]
    ContactLimitReached { limit: usize },
    #[error("the extension is not verified")]
    ExtensionNotVerified,
    #[error("the extension has been removed")]
    ExtensionRemoved,
    #[error("the extension is already verified")]
    ExtensionAlreadyVerified,
    #[error("the extension may not call out")]
    CallOutNotAllowed,
    #[error("international calls are not allowed from this extension")]
    InternationalNotAllowed,
    #[error("a PIN is required")]
    PinRequired,
    #[error("the PIN is wrong")]
    PinMismatch,
    #[error("keypad access is locked after too many wrong PINs; an admin must unlock it")]
    KeypadLocked,
    #[error("no verification challenge is outstanding")]
    NoChallenge,
    #[error("the verification challenge has expired")]
    ChallengeExpired,
    #[error("verification is locked after too many wrong codes")]
    ChallengeLocked,
    #[error("no more verification codes may be sent for this extension")]
    ChallengeResendLimit,
    #[error("the device has been removed")]
    DeviceRemoved,
    #[error("the call has ended")]
    CallEnded,
    #[error("leg {leg} is not part of this call")]
    UnknownLeg { leg: crate::ids::LegId },
    #[error("leg {leg} already exists")]
    DuplicateLeg { leg: crate::ids::LegId },
    #[error("leg {leg} is no longer active")]
    LegNotActive { leg: crate::ids::LegId },
    #[error("tariff version {got} is out of order (expected {expected})")]
    TariffVersionOutOfOrder { expected: u32, got: u32 },
    #[error("the dial intent was already used, cancelled or has expired")]
    DialIntentSpent,
    #[error("at most {limit} {what} may be pending at once")]
    TooManyPending { what: &'static str, limit: usize },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl DomainError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
