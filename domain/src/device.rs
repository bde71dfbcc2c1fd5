//! IP devices (softphones, desk phones) that register over SIP: their digest credentials
//! (HA1s only, never a password) and their contact bindings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::account::Account;
use crate::aggregate::Aggregate;
use crate::credentials::Ha1Digests;
use crate::error::DomainError;
use crate::event::{DecodeError, domain_events};
use crate::ids::{AccountId, DeviceId};
use crate::time::Instant;

/// How many contacts one device may keep bound unless configured otherwise.
pub const MAX_CONTACTS: usize = 5;

/// The bindings a device may hold (config `sip.max_contacts_per_aor`), and what binding one
/// more does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactLimit {
    pub max: usize,
    pub when_full: WhenFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The oldest binding is replaced (a phone that moved keeps working).
    ReplaceOldest,
    /// The new binding is refused.
    Refuse,
}

impl Default for ContactLimit {
    fn default() -> Self {
        Self {
            max: MAX_CONTACTS,
            when_full: WhenFull::ReplaceOldest,
        }
    }
}
/// The shortest password a device may be given.
pub const MIN_PASSWORD_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnbindReason {
    /// The device sent REGISTER with Expires: 0.
    Unregistered,
    /// The binding's expiry passed without a refresh (the sweeper).
    Expired,
    /// A newer binding took its place (contact limit).
    Replaced,
    /// The device itself was removed.
    DeviceRemoved,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactBinding {
    pub source: String,
    pub transport: Transport,
    pub user_agent: Option<String>,
    /// Order of binding within the device, to find the oldest.
    pub seq: u64,
    pub expires_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceStatus {
    #[default]
    Unprovisioned,
    Active,
    Removed,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Device {
    pub status: DeviceStatus,
    pub id: Option<DeviceId>,
    pub account_id: Option<AccountId>,
    pub sip_username: String,
    pub realm: String,
    pub ha1: Option<Ha1Digests>,
    /// Bound contacts by contact URI.
    pub contacts: BTreeMap<String, ContactBinding>,
    /// The device's last report of its data path, and when it was made.
    pub data_path: Option<(DataPath, Instant)>,
    binds: u64,
}

/// What a device says of its data connection (over the API, or on a REGISTER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPath {
    Good,
    /// Too poor for calls: set calls up over the alternate (cellular) network.
    Poor,
    /// No data at all (the device is about to lose its registration).
    None,
}

impl DataPath {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "good" => Some(Self::Good),
            "poor" => Some(Self::Poor),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// Whether calls should avoid the data path.
    pub fn is_unfit(self) -> bool {
        self != Self::Good
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceCommand {
    Provision {
        device_id: DeviceId,
        account: Account,
        sip_username: String,
        realm: String,
        password: String,
    },
    RotateCredentials {
        password: String,
    },
    Remove,
    /// A successful REGISTER for one contact (new or refresh).
    BindContact {
        contact_uri: String,
        source: String,
        transport: Transport,
        user_agent: Option<String>,
        expires_secs: u32,
        limit: ContactLimit,
    },
    UnbindContact {
        contact_uri: String,
    },
    /// REGISTER with `Contact: *` and Expires: 0.
    UnbindAll,
    /// The sweeper: unbind every contact whose expiry is at or before `now`.
    ExpireContacts,
    /// The device reports its data path; a report equal to the one in force changes nothing.
    ReportDataPath {
        quality: DataPath,
    },
}

domain_events! {
    upcast = crate::device::upcast;
    /// What happened to an IP device (stream `device-{id}`).
    pub enum DeviceEvent {
        Provisioned {
            device_id: DeviceId,
            account_id: AccountId,
            sip_username: String,
            realm: String,
            ha1: Ha1Digests,
        } = ("device.provisioned", 1),
        CredentialsRotated { ha1: Ha1Digests } = ("device.credentials_rotated", 1),
        Removed {} = ("device.removed", 1),
        /// Version 2 added `transport` and `user_agent` and renamed `contact` to
        /// `contact_uri` (see [`upcast`]).
        ContactBound {
            contact_uri: String,
            source: String,
            transport: Transport,
            user_agent: Option<String>,
            expires_at: Instant,
        } = ("device.contact_bound", 2),
        ContactRefreshed {
            contact_uri: String,
            source: String,
            transport: Transport,
            expires_at: Instant,
        } = ("device.contact_refreshed", 1),
        ContactUnbound { contact_uri: String, reason: UnbindReason } = ("device.contact_unbound", 1),
        DataPathReported { quality: DataPath, at: Instant } = ("device.data_path_reported", 1),
    }
}

/// Upcasters for device events. `device.contact_bound` v1 (written before the edge spoke
/// TCP) had `contact` and no transport or user agent; every v1 binding came over UDP.
pub(crate) fn upcast(event_type: &str, version: u16, payload: Value) -> Result<Value, DecodeError> {
    match (event_type, version, payload) {
        ("device.contact_bound", 1, Value::Object(mut v1)) => {
            if let Some(contact) = v1.remove("contact") {
                v1.insert("contact_uri".into(), contact);
            }
            v1.entry("transport").or_insert_with(|| "udp".into());
            v1.entry("user_agent").or_insert(Value::Null);
            Ok(Value::Object(v1))
        }
        (t, v, _) => Err(DecodeError::NoUpcaster {
            event_type: t.to_owned(),
            version: v,
        }),
    }
}

fn check_password(password: &str) -> Result<(), DomainError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(DomainError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

fn valid_sip_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'+".contains(&b))
}

impl Device {
    fn ensure_active(&self) -> Result<(), DomainError> {
        match self.status {
            DeviceStatus::Active => Ok(()),
            DeviceStatus::Removed => Err(DomainError::DeviceRemoved),
            DeviceStatus::Unprovisioned => Err(DomainError::NotFound { entity: "device" }),
        }
    }

    /// Contacts still bound at `now`.
    pub fn live_contacts(&self, now: Instant) -> impl Iterator<Item = (&String, &ContactBinding)> {
        self.contacts
            .iter()
            .filter(move |(_, c)| c.expires_at > now)
    }
}

impl Aggregate for Device {
    type Command = DeviceCommand;
    type Event = DeviceEvent;

    fn decide(
        &self,
        command: &DeviceCommand,
        now: Instant,
    ) -> Result<Vec<DeviceEvent>, DomainError> {
        use DeviceCommand as C;
        use DeviceEvent as E;
        if let C::Provision {
            device_id,
            account,
            sip_username,
            realm,
            password,
        } = command
        {
            if self.status != DeviceStatus::Unprovisioned {
                return Err(DomainError::AlreadyExists { entity: "device" });
            }
            account.ensure_active()?;
            if !valid_sip_token(sip_username) {
                return Err(DomainError::invalid(
                    "sip_username",
                    "must be 1 to 64 letters, digits or -_.!~*'+",
                ));
            }
            if realm.is_empty() {
                return Err(DomainError::invalid("realm", "must not be empty"));
            }
            check_password(password)?;
            let Some(account_id) = account.id else {
                return Err(DomainError::NotFound { entity: "account" });
            };
            return Ok(vec![E::Provisioned {
                device_id: *device_id,
                account_id,
                sip_username: sip_username.clone(),
                realm: realm.clone(),
                ha1: Ha1Digests::from_password(sip_username, realm, password),
            }]);
        }
        self.ensure_active()?;
        Ok(match command {
            C::Provision { .. } => unreachable!("handled above"),
            C::RotateCredentials { password } => {
                check_password(password)?;
                vec![E::CredentialsRotated {
                    ha1: Ha1Digests::from_password(&self.sip_username, &self.realm, password),
                }]
            }
            C::Remove => self
                .contacts
                .keys()
                .map(|uri| E::ContactUnbound {
                    contact_uri: uri.clone(),
                    reason: UnbindReason::DeviceRemoved,
                })
                .chain([E::Removed {}])
                .collect(),
            C::BindContact {
                contact_uri,
                source,
                transport,
                user_agent,
                expires_secs,
                limit,
            } => {
                if *expires_secs == 0 {
                    return Err(DomainError::invalid(
                        "expires_secs",
                        "a binding needs a positive expiry; use UnbindContact",
                    ));
                }
                if contact_uri.is_empty() {
                    return Err(DomainError::invalid("contact_uri", "must not be empty"));
                }
                let expires_at = now + chrono::Duration::seconds(i64::from(*expires_secs));
                if self.contacts.contains_key(contact_uri) {
                    return Ok(vec![E::ContactRefreshed {
                        contact_uri: contact_uri.clone(),
                        source: source.clone(),
                        transport: *transport,
                        expires_at,
                    }]);
                }
                // Past the limit: refused, or the oldest bindings replaced — as many as make
                // room (more than one when the limit was lowered below what a device holds).
                let excess = (self.contacts.len() + 1).saturating_sub(limit.max);
                if excess > 0 && limit.when_full == WhenFull::Refuse {
                    return Err(DomainError::ContactLimitReached { limit: limit.max });
                }
                let mut events = Vec::new();
                if excess > 0 {
                    let mut by_age: Vec<_> = self.contacts.iter().collect();
                    by_age.sort_by_key(|(_, c)| c.seq);
                    events.extend(by_age.into_iter().take(excess).map(|(oldest, _)| {
                        E::ContactUnbound {
                            contact_uri: oldest.clone(),
                            reason: UnbindReason::Replaced,
                        }
                    }));
                }
                events.push(E::ContactBound {
                    contact_uri: contact_uri.clone(),
                    source: source.clone(),
                    transport: *transport,
                    user_agent: user_agent.clone(),
                    expires_at,
                });
                events
            }
            C::UnbindContact { contact_uri } => {
                if self.contacts.contains_key(contact_uri) {
                    vec![E::ContactUnbound {
                        contact_uri: contact_uri.clone(),
                        reason: UnbindReason::Unregistered,
                    }]
                } else {
                    vec![]
                }
            }
            C::UnbindAll => self
                .contacts
                .keys()
                .map(|uri| E::ContactUnbound {
                    contact_uri: uri.clone(),
                    reason: UnbindReason::Unregistered,
                })
                .collect(),
            C::ExpireContacts => self
                .contacts
                .iter()
                .filter(|(_, c)| c.expires_at <= now)
                .map(|(uri, _)| E::ContactUnbound {
                    contact_uri: uri.clone(),
                    reason: UnbindReason::Expired,
                })
                .collect(),
            C::ReportDataPath { quality } => {
                if self.data_path.map(|(q, _)| q) == Some(*quality) {
                    vec![]
                } else {
                    vec![E::DataPathReported {
                        quality: *quality,
                        at: now,
                    }]
                }
            }
        })
    }

    fn apply(&mut self, event: &DeviceEvent) {
        use DeviceEvent as E;
        match event {
            E::Provisioned {
                device_id,
                account_id,
                sip_username,
                realm,
                ha1,
            } => {
                self.status = DeviceStatus::Active;
                self.id = Some(*device_id);
                self.account_id = Some(*account_id);
                self.sip_username = sip_username.clone();
                self.realm = realm.clone();
                self.ha1 = Some(ha1.clone());
            }
            E::CredentialsRotated { ha1 } => self.ha1 = Some(ha1.clone()),
            E::Removed {} => {
                self.status = DeviceStatus::Removed;
                self.contacts.clear();
                self.ha1 = None;
            }
            E::ContactBound {
                contact_uri,
                source,
                transport,
                user_agent,
                expires_at,
            } => {
                self.binds += 1;
                self.contacts.insert(
                    contact_uri.clone(),
                    ContactBinding {
                        source: source.clone(),
                        transport: *transport,
                        user_agent: user_agent.clone(),
                        seq: self.binds,
                        expires_at: *expires_at,
                    },
                );
            }
            E::ContactRefreshed {
                contact_uri,
                source,
                transport,
                expires_at,
            } => {
                if let Some(c) = self.contacts.get_mut(contact_uri) {
                    c.source = source.clone();
                    c.transport = *transport;
                    c.expires_at = *expires_at;
                }
            }
            E::ContactUnbound { contact_uri, .. } => {
                self.contacts.remove(contact_uri);
            }
            E::DataPathReported { quality, at } => self.data_path = Some((*quality, *at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::tests::{account_id, active_account};
    use crate::testing::{at, given};
    use uuid::Uuid;

    fn device_id() -> DeviceId {
        DeviceId(Uuid::from_u128(10))
    }

    fn provisioned() -> DeviceEvent {
        DeviceEvent::Provisioned {
            device_id: device_id(),
            account_id: account_id(),
            sip_username: "ada-desk".into(),
            realm: "ringledger".into(),
            ha1: Ha1Digests::from_password("ada-desk", "ringledger", "correct horse battery"),
        }
    }

    #[test]
    fn a_data_path_report_is_recorded_once_until_it_changes() {
        let poor = DeviceCommand::ReportDataPath {
            quality: DataPath::Poor,
        };
        assert_eq!(
            given::<Device>([provisioned()]).when(poor.clone()).events(),
            vec![DeviceEvent::DataPathReported {
                quality: DataPath::Poor,
                at: at(0),
            }]
        );
        let reported = DeviceEvent::DataPathReported {
            quality: DataPath::Poor,
            at: at(0),
        };
        assert!(
            given::<Device>([provisioned(), reported.clone()])
                .when(poor)
                .events()
                .is_empty()
        );
        assert_eq!(
            given::<Device>([provisioned(), reported])
                .when(DeviceCommand::ReportDataPath {
                    quality: DataPath::Good,
                })
                .events()
                .len(),
            1
        );
        assert_eq!(DataPath::parse(" None "), Some(DataPath::None));
        assert_eq!(DataPath::parse("bad"), None);
    }

    fn bind(uri: &str, expires_secs: u32) -> DeviceCommand {
        bind_within(uri, expires_secs, ContactLimit::default())
    }

    fn bind_within(uri: &str, expires_secs: u32, limit: ContactLimit) -> DeviceCommand {
        DeviceCommand::BindContact {
            contact_uri: uri.into(),
            source: "192.0.2.10:5060".into(),
            transport: Transport::Udp,
            user_agent: Some("baresip".into()),
            expires_secs,
            limit,
        }
    }

    fn bound(uri: &str, expires_at: Instant) -> DeviceEvent {
        DeviceEvent::ContactBound {
            contact_uri: uri.into(),
            source: "192.0.2.10:5060".into(),
            transport: Transport::Udp,
            user_agent: Some("baresip".into()),
            expires_at,
        }
    }

    #[test]
    fn provisioning_stores_ha1_digests_never_the_password() {
        let events = given::<Device>([])
            .when(DeviceCommand::Provision {
                device_id: device_id(),
                account: active_account(),
                sip_username: "ada-desk".into(),
                realm: "ringledger".into(),
                password: "correct horse battery".into(),
            })
            .events();
        assert_eq!(events, vec![provisioned()]);
        let json = serde_json::to_string(&events).unwrap();
        assert!(!json.contains("correct horse battery"));
    }

    #[test]
    fn short_passwords_are_refused() {
        given::<Device>([])
            .when(DeviceCommand::Provision {
                device_id: device_id(),
                account: active_account(),
                sip_username: "ada-desk".into(),
                realm: "ringledger".into(),
                password: "short".into(),
            })
            .then_error(DomainError::invalid(
                "password",
                "must be at least 12 characters",
            ));
    }

    #[test]
    fn a_device_cannot_be_provisioned_on_a_closed_account() {
        let mut account = active_account();
        account.status = crate::account::AccountStatus::Closed;
        given::<Device>([])
            .when(DeviceCommand::Provision {
                device_id: device_id(),
                account,
                sip_username: "ada-desk".into(),
                realm: "ringledger".into(),
                password: "correct horse battery".into(),
            })
            .then_error(DomainError::AccountClosed);
    }

    #[test]
    fn a_new_contact_is_bound_and_a_known_one_refreshed() {
        given::<Device>([provisioned()])
            .when(bind("sip:ada@192.0.2.10", 3600))
            .then([bound("sip:ada@192.0.2.10", at(3600))]);
        given::<Device>([provisioned(), bound("sip:ada@192.0.2.10", at(3600))])
            .at(at(1800))
            .when(bind("sip:ada@192.0.2.10", 3600))
            .then([DeviceEvent::ContactRefreshed {
                contact_uri: "sip:ada@192.0.2.10".into(),
                source: "192.0.2.10:5060".into(),
                transport: Transport::Udp,
                expires_at: at(5400),
            }]);
    }

    #[test]
    fn binding_beyond_the_limit_replaces_the_oldest() {
        let history: Vec<_> = std::iter::once(provisioned())
            .chain((0..MAX_CONTACTS).map(|i| bound(&format!("sip:ada@10.0.0.{i}"), at(3600))))
            .collect();
        given::<Device>(history)
            .when(bind("sip:ada@10.0.0.99", 60))
            .then([
                DeviceEvent::ContactUnbound {
                    contact_uri: "sip:ada@10.0.0.0".into(),
                    reason: UnbindReason::Replaced,
                },
                bound("sip:ada@10.0.0.99", at(60)),
            ]);
    }

    #[test]
    fn a_limit_lowered_below_what_a_device_holds_is_met_by_its_next_binding() {
        let history: Vec<_> = std::iter::once(provisioned())
            .chain((0..4).map(|i| bound(&format!("sip:ada@10.0.0.{i}"), at(3600))))
            .collect();
        let limit = ContactLimit {
            max: 2,
            when_full: WhenFull::ReplaceOldest,
        };
        let replaced = |i: u8| DeviceEvent::ContactUnbound {
            contact_uri: format!("sip:ada@10.0.0.{i}"),
            reason: UnbindReason::Replaced,
        };
        given::<Device>(history)
            .when(bind_within("sip:ada@10.0.0.99", 60, limit))
            .then([
                replaced(0),
                replaced(1),
                replaced(2),
                bound("sip:ada@10.0.0.99", at(60)),
            ]);
    }

    #[test]
    fn binding_beyond_a_refusing_limit_is_refused_and_a_refresh_is_not() {
        let history: Vec<_> = std::iter::once(provisioned())
            .chain((0..2).map(|i| bound(&format!("sip:ada@10.0.0.{i}"), at(3600))))
            .collect();
        let limit = ContactLimit {
            max: 2,
            when_full: WhenFull::Refuse,
        };
        let with_limit = |uri: &str| bind_within(uri, 60, limit);
        given::<Device>(history.clone())
            .when(with_limit("sip:ada@10.0.0.99"))
            .then_error(DomainError::ContactLimitReached { limit: 2 });
        given::<Device>(history)
            .when(with_limit("sip:ada@10.0.0.1"))
            .then([DeviceEvent::ContactRefreshed {
                contact_uri: "sip:ada@10.0.0.1".into(),
                source: "192.0.2.10:5060".into(),
                transport: Transport::Udp,
                expires_at: at(60),
            }]);
    }

    #[test]
    fn the_sweeper_unbinds_only_expired_contacts() {
        let state = given::<Device>([
            provisioned(),
            bound("sip:a@x", at(60)),
            bound("sip:b@x", at(600)),
        ])
        .at(at(60))
        .when(DeviceCommand::ExpireContacts)
        .then([DeviceEvent::ContactUnbound {
            contact_uri: "sip:a@x".into(),
            reason: UnbindReason::Expired,
        }]);
        assert_eq!(state.live_contacts(at(61)).count(), 1);
    }

    #[test]
    fn unregister_all_unbinds_every_contact() {
        given::<Device>([
            provisioned(),
            bound("sip:a@x", at(60)),
            bound("sip:b@x", at(60)),
        ])
        .when(DeviceCommand::UnbindAll)
        .then([
            DeviceEvent::ContactUnbound {
                contact_uri: "sip:a@x".into(),
                reason: UnbindReason::Unregistered,
            },
            DeviceEvent::ContactUnbound {
                contact_uri: "sip:b@x".into(),
                reason: UnbindReason::Unregistered,
            },
        ]);
    }

    #[test]
    fn a_removed_device_unbinds_its_contacts_and_refuses_registration() {
        let state = given::<Device>([provisioned(), bound("sip:a@x", at(60))])
            .when(DeviceCommand::Remove)
            .then([
                DeviceEvent::ContactUnbound {
                    contact_uri: "sip:a@x".into(),
                    reason: UnbindReason::DeviceRemoved,
                },
                DeviceEvent::Removed {},
            ]);
        assert_eq!(
            state.decide(&bind("sip:a@x", 60), at(0)),
            Err(DomainError::DeviceRemoved)
        );
    }

    #[test]
    fn rotation_changes_the_ha1() {
        let events = given::<Device>([provisioned()])
            .when(DeviceCommand::RotateCredentials {
                password: "another long secret".into(),
            })
            .events();
        assert_eq!(
            events,
            vec![DeviceEvent::CredentialsRotated {
                ha1: Ha1Digests::from_password("ada-desk", "ringledger", "another long secret"),
            }]
        );
    }

    #[test]
    fn contact_bound_v1_is_upcast_to_v2() {
        use crate::event::DomainEvent;
        let v1 = serde_json::json!({
            "contact": "sip:ada@192.0.2.10:5060",
            "source": "192.0.2.10:5060",
            "expires_at": "2026-11-01T13:00:00Z",
        });
        let event = DeviceEvent::decode("device.contact_bound", 1, v1).unwrap();
        assert_eq!(
            event,
            DeviceEvent::ContactBound {
                contact_uri: "sip:ada@192.0.2.10:5060".into(),
                source: "192.0.2.10:5060".into(),
                transport: Transport::Udp,
                user_agent: None,
                expires_at: at(3600),
            }
        );
        // Re-encoding writes the current version.
        assert_eq!(event.encode().schema_version, 2);
    }
}
