//! Number claims: the one place that makes a telephone number belong to a single account
//! (stream `number-{e164}`, appended with an expected version so two claims cannot both win).

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::e164::E164;
use crate::error::DomainError;
use crate::event::domain_events;
use crate::ids::{AccountId, ExtensionId};
use crate::time::Instant;

/// The stream that holds the claim history of `number`.
pub fn stream_id(number: &E164) -> String {
    format!("number-{number}")
}

/// What a held number is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
pub enum NumberRole {
    /// The account's own number: inbound calls to it ring the account.
    Main,
    /// A phone of another provider, registered as an extension of the account.
    Extension { extension_id: ExtensionId },
    /// A number extensions dial to reach the service (call-through, call-in). With a
    /// destination it is a mapped access number: dialling it always calls that destination.
    Access { destination: Option<E164> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub account_id: AccountId,
    pub role: NumberRole,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NumberClaim {
    pub holder: Option<Holder>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NumberCommand {
    Claim {
        number: E164,
        account_id: AccountId,
        role: NumberRole,
    },
    Release {
        number: E164,
        account_id: AccountId,
    },
}

domain_events! {
    /// Who holds a number (stream `number-{e164}`).
    pub enum NumberEvent {
        Claimed { number: E164, account_id: AccountId, role: NumberRole } = ("number.claimed", 1),
        Released { number: E164, account_id: AccountId } = ("number.released", 1),
    }
}

impl Aggregate for NumberClaim {
    type Command = NumberCommand;
    type Event = NumberEvent;

    fn decide(
        &self,
        command: &NumberCommand,
        _now: Instant,
    ) -> Result<Vec<NumberEvent>, DomainError> {
        match command {
            NumberCommand::Claim {
                number,
                account_id,
                role,
            } => {
                if let NumberRole::Access {
                    destination: Some(d),
                } = role
                    && d == number
                {
                    return Err(DomainError::invalid(
                        "destination",
                        "an access number cannot be mapped to itself",
                    ));
                }
                match &self.holder {
                    None => Ok(vec![NumberEvent::Claimed {
                        number: number.clone(),
                        account_id: *account_id,
                        role: role.clone(),
                    }]),
                    Some(h) if h.account_id == *account_id && h.role == *role => Ok(vec![]),
                    Some(_) => Err(DomainError::NumberTaken {
                        number: number.clone(),
                    }),
                }
            }
            NumberCommand::Release { number, account_id } => match &self.holder {
                Some(h) if h.account_id == *account_id => Ok(vec![NumberEvent::Released {
                    number: number.clone(),
                    account_id: *account_id,
                }]),
                _ => Err(DomainError::NumberNotHeld {
                    number: number.clone(),
                }),
            },
        }
    }

    fn apply(&mut self, event: &NumberEvent) {
        match event {
            NumberEvent::Claimed {
                account_id, role, ..
            } => {
                self.holder = Some(Holder {
                    account_id: *account_id,
                    role: role.clone(),
                })
            }
            NumberEvent::Released { .. } => self.holder = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use uuid::Uuid;

    fn n() -> E164 {
        E164::parse("+14155550100").unwrap()
    }
    fn alice() -> AccountId {
        AccountId(Uuid::from_u128(1))
    }
    fn bob() -> AccountId {
        AccountId(Uuid::from_u128(2))
    }
    fn claimed_by(a: AccountId) -> NumberEvent {
        NumberEvent::Claimed {
            number: n(),
            account_id: a,
            role: NumberRole::Main,
        }
    }

    #[test]
    fn a_free_number_can_be_claimed() {
        given::<NumberClaim>([])
            .when(NumberCommand::Claim {
                number: n(),
                account_id: alice(),
                role: NumberRole::Main,
            })
            .then([claimed_by(alice())]);
    }

    #[test]
    fn a_number_claimed_by_one_account_cannot_be_claimed_by_another() {
        given::<NumberClaim>([claimed_by(alice())])
            .when(NumberCommand::Claim {
                number: n(),
                account_id: bob(),
                role: NumberRole::Main,
            })
            .then_error(DomainError::NumberTaken { number: n() });
    }

    #[test]
    fn the_same_account_cannot_hold_a_number_in_two_roles() {
        given::<NumberClaim>([claimed_by(alice())])
            .when(NumberCommand::Claim {
                number: n(),
                account_id: alice(),
                role: NumberRole::Extension {
                    extension_id: ExtensionId(Uuid::from_u128(7)),
                },
            })
            .then_error(DomainError::NumberTaken { number: n() });
    }

    #[test]
    fn claiming_again_for_the_same_holder_is_a_no_op() {
        given::<NumberClaim>([claimed_by(alice())])
            .when(NumberCommand::Claim {
                number: n(),
                account_id: alice(),
                role: NumberRole::Main,
            })
            .then([]);
    }

    #[test]
    fn a_released_number_can_be_claimed_by_another_account() {
        given::<NumberClaim>([
            claimed_by(alice()),
            NumberEvent::Released {
                number: n(),
                account_id: alice(),
            },
        ])
        .when(NumberCommand::Claim {
            number: n(),
            account_id: bob(),
            role: NumberRole::Main,
        })
        .then([claimed_by(bob())]);
    }

    #[test]
    fn only_the_holder_can_release() {
        given::<NumberClaim>([claimed_by(alice())])
            .when(NumberCommand::Release {
                number: n(),
                account_id: bob(),
            })
            .then_error(DomainError::NumberNotHeld { number: n() });
    }

    #[test]
    fn an_access_number_cannot_map_to_itself() {
        given::<NumberClaim>([])
            .when(NumberCommand::Claim {
                number: n(),
                account_id: alice(),
                role: NumberRole::Access {
                    destination: Some(n()),
                },
            })
            .then_error(DomainError::invalid(
                "destination",
                "an access number cannot be mapped to itself",
            ));
    }
}
