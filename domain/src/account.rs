//! Accounts: the paying customer, with a main number, a tariff, a ring policy, a daily spend
//! limit and the set of extension phones attached to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::e164::E164;
use crate::error::DomainError;
use crate::event::domain_events;
use crate::ids::{AccountId, DeviceId, ExtensionId, TariffId};
use crate::money::Currency;
use crate::time::Instant;

/// How many extensions an account may hold unless it is opened with another limit.
pub const DEFAULT_MAX_EXTENSIONS: u8 = 5;

/// How an inbound call to the main number rings the account's phones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingPolicy {
    /// Seconds before an unanswered inbound call ends with `no_answer`.
    pub ring_timeout_secs: u16,
    /// Seconds after the IP devices start ringing before extensions that ring on inbound join.
    pub extension_delay_secs: u16,
    /// Set up inbound calls over the alternate (cellular) network rather than over data.
    pub prefer_alternate_path: bool,
}

impl Default for RingPolicy {
    fn default() -> Self {
        Self {
            ring_timeout_secs: 30,
            extension_delay_secs: 0,
            prefer_alternate_path: false,
        }
    }
}

impl RingPolicy {
    fn validate(&self) -> Result<(), DomainError> {
        if !(5..=300).contains(&self.ring_timeout_secs) {
            return Err(DomainError::invalid(
                "ring_timeout_secs",
                "must be between 5 and 300",
            ));
        }
        if self.extension_delay_secs >= self.ring_timeout_secs {
            return Err(DomainError::invalid(
                "extension_delay_secs",
                "must be shorter than the ring timeout",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    #[default]
    Unopened,
    Active,
    Suspended,
    Closed,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub id: Option<AccountId>,
    pub status: AccountStatus,
    pub name: String,
    pub main_number: Option<E164>,
    pub tariff_id: Option<TariffId>,
    pub currency: Option<Currency>,
    pub ring_policy: RingPolicy,
    /// Daily spend limit in minor units of the account currency; `None` is unlimited.
    pub daily_spend_limit_minor: Option<i64>,
    pub max_extensions: u8,
    /// The attached extensions and their numbers.
    pub extensions: BTreeMap<ExtensionId, E164>,
}

impl Account {
    /// Refuses anything but an active account: usage and new attachments need one.
    pub fn ensure_active(&self) -> Result<(), DomainError> {
        match self.status {
            AccountStatus::Active => Ok(()),
            AccountStatus::Suspended => Err(DomainError::AccountSuspended),
            AccountStatus::Closed => Err(DomainError::AccountClosed),
            AccountStatus::Unopened => Err(DomainError::NotFound { entity: "account" }),
        }
    }

    /// The event that detaches `extension_id`, if it is attached.
    fn detach(&self, extension_id: ExtensionId) -> Option<AccountEvent> {
        let number = self.extensions.get(&extension_id)?;
        Some(AccountEvent::ExtensionDetached {
            extension_id,
            number: Some(number.clone()),
        })
    }

    /// Refuses only what is gone: admin changes are allowed on a suspended account.
    fn ensure_open(&self) -> Result<(), DomainError> {
        match self.status {
            AccountStatus::Active | AccountStatus::Suspended => Ok(()),
            AccountStatus::Closed => Err(DomainError::AccountClosed),
            AccountStatus::Unopened => Err(DomainError::NotFound { entity: "account" }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    Open {
        account_id: AccountId,
        name: String,
        main_number: E164,
        tariff_id: TariffId,
        currency: Currency,
        max_extensions: Option<u8>,
    },
    Suspend {
        reason: String,
    },
    Reinstate,
    Close {
        reason: String,
    },
    ChangeRingPolicy(RingPolicy),
    ChangeSpendLimit {
        daily_limit_minor: Option<i64>,
    },
    ChangeTariff {
        tariff_id: TariffId,
        /// The tariff's currency: an account bills in one currency for ever.
        currency: Currency,
    },
    AttachExtension {
        extension_id: ExtensionId,
        number: E164,
    },
    DetachExtension {
        extension_id: ExtensionId,
    },
    /// The SIP edge blocked one of the account's usernames after repeated authentication
    /// failures (a password-guessing attack), for auditors to see.
    RecordSipAuthBlock {
        device_id: DeviceId,
        username: String,
        last_source: String,
        block_secs: u64,
    },
}

domain_events! {
    upcast = crate::account::upcast;
    /// What happened to an account (stream `account-{id}`).
    pub enum AccountEvent {
        Opened {
            account_id: AccountId,
            name: String,
            main_number: E164,
            tariff_id: TariffId,
            currency: Currency,
            max_extensions: u8,
        } = ("account.opened", 1),
        Suspended { reason: String } = ("account.suspended", 1),
        Reinstated {} = ("account.reinstated", 1),
        /// Closing detaches every extension first (in the same append) and names the main
        /// number, which is released after the quarantine. `main_number` is null in events
        /// written before schema version 2.
        Closed { reason: String, main_number: Option<E164> } = ("account.closed", 2),
        RingPolicyChanged { policy: RingPolicy } = ("account.ring_policy_changed", 1),
        SpendLimitChanged { daily_limit_minor: Option<i64> } = ("account.spend_limit_changed", 1),
        TariffChanged { tariff_id: TariffId } = ("account.tariff_changed", 1),
        ExtensionAttached { extension_id: ExtensionId, number: E164 } = ("account.extension_attached", 1),
        /// `number` is null in events written before schema version 2.
        ExtensionDetached { extension_id: ExtensionId, number: Option<E164> } = ("account.extension_detached", 2),
        SipAuthBlocked {
            device_id: DeviceId,
            username: String,
            last_source: String,
            block_secs: u64,
        } = ("account.sip_auth_blocked", 1),
    }
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn decide(
        &self,
        command: &AccountCommand,
        _now: Instant,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        use AccountCommand as C;
        use AccountEvent as E;
        if let C::Open {
            account_id,
            name,
            main_number,
            tariff_id,
            currency,
            max_extensions,
        } = command
        {
            if self.status != AccountStatus::Unopened {
                return Err(DomainError::AlreadyExists { entity: "account" });
            }
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                return Err(DomainError::invalid("name", "must be 1 to 200 characters"));
            }
            let max_extensions = max_extensions.unwrap_or(DEFAULT_MAX_EXTENSIONS);
            if max_extensions > 50 {
                return Err(DomainError::invalid("max_extensions", "must be at most 50"));
            }
            return Ok(vec![E::Opened {
                account_id: *account_id,
                name: name.to_owned(),
                main_number: main_number.clone(),
                tariff_id: *tariff_id,
                currency: *currency,
                max_extensions,
            }]);
        }
        // Detaching only gives something up, so a closed account takes it too (an account
        // closed before closing detached its extensions still holds some).
        if let C::DetachExtension { extension_id } = command {
            if self.status == AccountStatus::Unopened {
                return Err(DomainError::NotFound { entity: "account" });
            }
            return Ok(self.detach(*extension_id).into_iter().collect());
        }
        self.ensure_open()?;
        Ok(match command {
            C::Open { .. } | C::DetachExtension { .. } => unreachable!("handled above"),
            C::Suspend { reason } => match self.status {
                AccountStatus::Suspended => vec![],
                _ => vec![E::Suspended {
                    reason: reason.clone(),
                }],
            },
            C::Reinstate => match self.status {
                AccountStatus::Suspended => vec![E::Reinstated {}],
                _ => vec![],
            },
            C::Close { reason } => {
                let mut events: Vec<_> = self
                    .extensions
                    .keys()
                    .filter_map(|e| self.detach(*e))
                    .collect();
                events.push(E::Closed {
                    reason: reason.clone(),
                    main_number: self.main_number.clone(),
                });
                events
            }
            C::ChangeRingPolicy(policy) => {
                policy.validate()?;
                if *policy == self.ring_policy {
                    vec![]
                } else {
                    vec![E::RingPolicyChanged {
                        policy: policy.clone(),
                    }]
                }
            }
            C::ChangeSpendLimit { daily_limit_minor } => {
                if daily_limit_minor.is_some_and(|l| l < 0) {
                    return Err(DomainError::invalid(
                        "daily_limit_minor",
                        "must not be negative",
                    ));
                }
                if *daily_limit_minor == self.daily_spend_limit_minor {
                    vec![]
                } else {
                    vec![E::SpendLimitChanged {
                        daily_limit_minor: *daily_limit_minor,
                    }]
                }
            }
            C::ChangeTariff {
                tariff_id,
                currency,
            } => {
                if let Some(own) = self.currency
                    && own != *currency
                {
                    return Err(DomainError::invalid(
                        "tariff_id",
                        format!("the tariff is priced in {currency}; the account bills in {own}"),
                    ));
                }
                if Some(*tariff_id) == self.tariff_id {
                    vec![]
                } else {
                    vec![E::TariffChanged {
                        tariff_id: *tariff_id,
                    }]
                }
            }
            C::AttachExtension {
                extension_id,
                number,
            } => {
                self.ensure_active()?;
                if self.extensions.contains_key(extension_id) {
                    return Ok(vec![]);
                }
                if Some(number) == self.main_number.as_ref() {
                    return Err(DomainError::invalid(
                        "number",
                        "the main number cannot be its own extension",
                    ));
                }
                if self.extensions.len() >= usize::from(self.max_extensions) {
                    return Err(DomainError::ExtensionLimitReached {
                        limit: self.max_extensions,
                    });
                }
                vec![E::ExtensionAttached {
                    extension_id: *extension_id,
                    number: number.clone(),
                }]
            }
            C::RecordSipAuthBlock {
                device_id,
                username,
                last_source,
                block_secs,
            } => vec![E::SipAuthBlocked {
                device_id: *device_id,
                username: username.clone(),
                last_source: last_source.clone(),
                block_secs: *block_secs,
            }],
        })
    }

    fn apply(&mut self, event: &AccountEvent) {
        use AccountEvent as E;
        match event {
            E::Opened {
                account_id,
                name,
                main_number,
                tariff_id,
                currency,
                max_extensions,
            } => {
                self.id = Some(*account_id);
                self.status = AccountStatus::Active;
                self.name = name.clone();
                self.main_number = Some(main_number.clone());
                self.tariff_id = Some(*tariff_id);
                self.currency = Some(*currency);
                self.max_extensions = *max_extensions;
            }
            E::Suspended { .. } => self.status = AccountStatus::Suspended,
            E::Reinstated {} => self.status = AccountStatus::Active,
            E::Closed { .. } => self.status = AccountStatus::Closed,
            E::RingPolicyChanged { policy } => self.ring_policy = policy.clone(),
            E::SpendLimitChanged { daily_limit_minor } => {
                self.daily_spend_limit_minor = *daily_limit_minor
            }
            E::TariffChanged { tariff_id } => self.tariff_id = Some(*tariff_id),
            E::ExtensionAttached {
                extension_id,
                number,
            } => {
                self.extensions.insert(*extension_id, number.clone());
            }
            E::ExtensionDetached { extension_id, .. } => {
                self.extensions.remove(extension_id);
            }
            E::SipAuthBlocked { .. } => {}
        }
    }
}

/// Upcasters for account events: version 1 of `account.closed` and `account.extension_detached`
/// did not name the numbers they leave (closing did not detach extensions then).
pub(crate) fn upcast(
    event_type: &str,
    version: u16,
    payload: serde_json::Value,
) -> Result<serde_json::Value, crate::event::DecodeError> {
    let field = match (event_type, version) {
        ("account.closed", 1) => Some("main_number"),
        ("account.extension_detached", 1) => Some("number"),
        _ => None,
    };
    crate::event::with_null_field(event_type, version, payload, field)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::given;
    use uuid::Uuid;

    pub fn account_id() -> AccountId {
        AccountId(Uuid::from_u128(1))
    }

    pub fn tariff_id() -> TariffId {
        TariffId(Uuid::from_u128(2))
    }

    fn main_number() -> E164 {
        E164::parse("+442071838750").unwrap()
    }

    pub fn opened() -> AccountEvent {
        AccountEvent::Opened {
            account_id: account_id(),
            name: "Ada Lovelace".into(),
            main_number: main_number(),
            tariff_id: tariff_id(),
            currency: Currency::parse("GBP").unwrap(),
            max_extensions: 5,
        }
    }

    /// An account folded from `opened()`, for other aggregates' rules.
    pub fn active_account() -> Account {
        Account::from_events(&[opened()])
    }

    fn ext(n: u128) -> (ExtensionId, E164) {
        (
            ExtensionId(Uuid::from_u128(100 + n)),
            E164::parse(&format!("+4477009001{n:02}")).unwrap(),
        )
    }

    fn attach(n: u128) -> AccountCommand {
        let (extension_id, number) = ext(n);
        AccountCommand::AttachExtension {
            extension_id,
            number,
        }
    }

    fn attached(n: u128) -> AccountEvent {
        let (extension_id, number) = ext(n);
        AccountEvent::ExtensionAttached {
            extension_id,
            number,
        }
    }

    fn detached(n: u128) -> AccountEvent {
        let (extension_id, number) = ext(n);
        AccountEvent::ExtensionDetached {
            extension_id,
            number: Some(number),
        }
    }

    #[test]
    fn opening_an_account_records_its_main_number_and_tariff() {
        let AccountEvent::Opened {
            main_number,
            max_extensions,
            ..
        } = opened()
        else {
            unreachable!()
        };
        let state = given::<Account>([])
            .when(AccountCommand::Open {
                account_id: account_id(),
                name: "  Ada Lovelace ".into(),
                main_number,
                tariff_id: tariff_id(),
                currency: Currency::parse("GBP").unwrap(),
                max_extensions: None,
            })
            .then([opened()]);
        assert_eq!(state.status, AccountStatus::Active);
        assert_eq!(max_extensions, DEFAULT_MAX_EXTENSIONS);
    }

    #[test]
    fn an_account_cannot_be_opened_twice() {
        let AccountEvent::Opened { main_number, .. } = opened() else {
            unreachable!()
        };
        given::<Account>([opened()])
            .when(AccountCommand::Open {
                account_id: account_id(),
                name: "Again".into(),
                main_number,
                tariff_id: tariff_id(),
                currency: Currency::parse("GBP").unwrap(),
                max_extensions: None,
            })
            .then_error(DomainError::AlreadyExists { entity: "account" });
    }

    #[test]
    fn a_blank_name_is_refused() {
        let AccountEvent::Opened { main_number, .. } = opened() else {
            unreachable!()
        };
        given::<Account>([])
            .when(AccountCommand::Open {
                account_id: account_id(),
                name: "   ".into(),
                main_number,
                tariff_id: tariff_id(),
                currency: Currency::parse("GBP").unwrap(),
                max_extensions: None,
            })
            .then_error(DomainError::invalid("name", "must be 1 to 200 characters"));
    }

    #[test]
    fn commands_on_a_missing_account_are_refused() {
        given::<Account>([])
            .when(AccountCommand::Reinstate)
            .then_error(DomainError::NotFound { entity: "account" });
    }

    #[test]
    fn suspend_and_reinstate() {
        let s = given::<Account>([opened()])
            .when(AccountCommand::Suspend {
                reason: "unpaid".into(),
            })
            .then([AccountEvent::Suspended {
                reason: "unpaid".into(),
            }]);
        assert_eq!(s.status, AccountStatus::Suspended);
        assert_eq!(s.ensure_active(), Err(DomainError::AccountSuspended));
        given::<Account>([opened(), AccountEvent::Suspended { reason: "x".into() }])
            .when(AccountCommand::Reinstate)
            .then([AccountEvent::Reinstated {}]);
    }

    #[test]
    fn suspending_twice_is_a_no_op() {
        given::<Account>([opened(), AccountEvent::Suspended { reason: "x".into() }])
            .when(AccountCommand::Suspend { reason: "y".into() })
            .then([]);
    }

    #[test]
    fn a_closed_account_accepts_nothing() {
        let closed = || {
            [
                opened(),
                AccountEvent::Closed {
                    reason: "moved".into(),
                    main_number: Some(main_number()),
                },
            ]
        };
        let commands = [
            AccountCommand::Suspend { reason: "x".into() },
            AccountCommand::Reinstate,
            AccountCommand::Close {
                reason: "again".into(),
            },
            AccountCommand::ChangeRingPolicy(RingPolicy::default()),
            AccountCommand::ChangeSpendLimit {
                daily_limit_minor: Some(100),
            },
            AccountCommand::ChangeTariff {
                tariff_id: TariffId(Uuid::from_u128(9)),
                currency: Currency::parse("GBP").unwrap(),
            },
            attach(1),
        ];
        for command in commands {
            given::<Account>(closed())
                .when(command)
                .then_error(DomainError::AccountClosed);
        }
    }

    #[test]
    fn closing_detaches_every_extension_and_names_the_main_number() {
        given::<Account>([opened(), attached(1), attached(2)])
            .when(AccountCommand::Close {
                reason: "moved".into(),
            })
            .then([
                detached(1),
                detached(2),
                AccountEvent::Closed {
                    reason: "moved".into(),
                    main_number: Some(main_number()),
                },
            ]);
    }

    #[test]
    fn an_account_closed_with_extensions_still_attached_can_detach_them() {
        // Accounts closed before closing detached their extensions (schema version 1).
        let v1_closed = AccountEvent::Closed {
            reason: "moved".into(),
            main_number: None,
        };
        given::<Account>([opened(), attached(1), v1_closed.clone()])
            .when(AccountCommand::DetachExtension {
                extension_id: ext(1).0,
            })
            .then([detached(1)]);
        given::<Account>([opened(), v1_closed])
            .when(AccountCommand::DetachExtension {
                extension_id: ext(1).0,
            })
            .then([]);
        given::<Account>([])
            .when(AccountCommand::DetachExtension {
                extension_id: ext(1).0,
            })
            .then_error(DomainError::NotFound { entity: "account" });
    }

    #[test]
    fn version_1_close_and_detach_read_with_no_number() {
        use crate::event::DomainEvent;
        let closed = AccountEvent::decode(
            "account.closed",
            1,
            serde_json::json!({ "reason": "moved" }),
        )
        .unwrap();
        assert_eq!(
            closed,
            AccountEvent::Closed {
                reason: "moved".into(),
                main_number: None
            }
        );
        let detached = AccountEvent::decode(
            "account.extension_detached",
            1,
            serde_json::json!({ "extension_id": ext(1).0 }),
        )
        .unwrap();
        assert_eq!(
            detached,
            AccountEvent::ExtensionDetached {
                extension_id: ext(1).0,
                number: None
            }
        );
    }

    #[test]
    fn an_account_never_moves_to_a_tariff_in_another_currency() {
        let to = |currency: &str| AccountCommand::ChangeTariff {
            tariff_id: TariffId(Uuid::from_u128(9)),
            currency: Currency::parse(currency).unwrap(),
        };
        given::<Account>([opened()])
            .when(to("EUR"))
            .then_error(DomainError::invalid(
                "tariff_id",
                "the tariff is priced in EUR; the account bills in GBP",
            ));
        given::<Account>([opened()])
            .when(to("GBP"))
            .then([AccountEvent::TariffChanged {
                tariff_id: TariffId(Uuid::from_u128(9)),
            }]);
    }

    #[test]
    fn the_sixth_extension_is_refused_when_the_limit_is_five() {
        let history: Vec<_> = std::iter::once(opened())
            .chain((1..=5).map(attached))
            .collect();
        given::<Account>(history)
            .when(attach(6))
            .then_error(DomainError::ExtensionLimitReached { limit: 5 });
    }

    #[test]
    fn a_detached_extension_frees_its_slot() {
        let mut history: Vec<_> = std::iter::once(opened())
            .chain((1..=5).map(attached))
            .collect();
        history.push(detached(3));
        given::<Account>(history)
            .when(attach(6))
            .then([attached(6)]);
    }

    #[test]
    fn a_suspended_account_cannot_attach_extensions() {
        given::<Account>([opened(), AccountEvent::Suspended { reason: "x".into() }])
            .when(attach(1))
            .then_error(DomainError::AccountSuspended);
    }

    #[test]
    fn the_main_number_cannot_be_an_extension() {
        given::<Account>([opened()])
            .when(AccountCommand::AttachExtension {
                extension_id: ext(1).0,
                number: E164::parse("+442071838750").unwrap(),
            })
            .then_error(DomainError::invalid(
                "number",
                "the main number cannot be its own extension",
            ));
    }

    #[test]
    fn ring_policy_is_validated() {
        given::<Account>([opened()])
            .when(AccountCommand::ChangeRingPolicy(RingPolicy {
                ring_timeout_secs: 2,
                ..RingPolicy::default()
            }))
            .then_error(DomainError::invalid(
                "ring_timeout_secs",
                "must be between 5 and 300",
            ));
        let policy = RingPolicy {
            ring_timeout_secs: 40,
            extension_delay_secs: 10,
            prefer_alternate_path: true,
        };
        given::<Account>([opened()])
            .when(AccountCommand::ChangeRingPolicy(policy.clone()))
            .then([AccountEvent::RingPolicyChanged { policy }]);
    }

    #[test]
    fn spend_limit_cannot_be_negative() {
        given::<Account>([opened()])
            .when(AccountCommand::ChangeSpendLimit {
                daily_limit_minor: Some(-1),
            })
            .then_error(DomainError::invalid(
                "daily_limit_minor",
                "must not be negative",
            ));
        given::<Account>([opened()])
            .when(AccountCommand::ChangeSpendLimit {
                daily_limit_minor: Some(5_00),
            })
            .then([AccountEvent::SpendLimitChanged {
                daily_limit_minor: Some(5_00),
            }]);
    }
}
