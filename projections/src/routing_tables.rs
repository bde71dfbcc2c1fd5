//! The routing read model as SQL tables, for the API and for operators: numbers and who holds
//! them, accounts with ring policy, devices with HA1s, contacts with expiry, extensions with
//! settings, pending call-ins. (The edge itself uses the in-memory `RoutingView`.)

use async_trait::async_trait;
use domain::Event;
use domain::account::AccountEvent;
use domain::call::CallEvent;
use domain::device::DeviceEvent;
use domain::extension::ExtensionEvent;
use domain::number::{NumberEvent, NumberRole};
use infra::RecordedEvent;
use sqlx::AnyConnection;

use crate::runner::{BatchError, Decoded, Projection, ProjectionError};
use crate::sql::{entity_id, flag, json, name, ts};
use crate::writes::Writes;

pub struct RoutingTables;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS routing_numbers (number TEXT PRIMARY KEY, account_id TEXT NOT NULL, \
     role TEXT NOT NULL, extension_id TEXT, destination TEXT)",
    "CREATE TABLE IF NOT EXISTS routing_accounts (account_id TEXT PRIMARY KEY, name TEXT NOT NULL, \
     main_number TEXT NOT NULL, status TEXT NOT NULL, tariff_id TEXT NOT NULL, currency TEXT NOT NULL, \
     ring_timeout_secs BIGINT NOT NULL, extension_delay_secs BIGINT NOT NULL, \
     prefer_alternate_path BIGINT NOT NULL, daily_spend_limit_minor BIGINT, max_extensions BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS routing_devices (device_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, \
     sip_username TEXT NOT NULL, realm TEXT NOT NULL, ha1_md5 TEXT, ha1_sha256 TEXT, status TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS routing_contacts (device_id TEXT NOT NULL, contact_uri TEXT NOT NULL, \
     source TEXT NOT NULL, transport TEXT NOT NULL, user_agent TEXT, expires_at TEXT NOT NULL, \
     PRIMARY KEY (device_id, contact_uri))",
    "CREATE TABLE IF NOT EXISTS routing_extensions (extension_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, \
     number TEXT NOT NULL, native_provider TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL, \
     settings TEXT NOT NULL, failed_attempts BIGINT NOT NULL, locked BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS routing_call_ins (token TEXT PRIMARY KEY, call_id TEXT NOT NULL, \
     access_number TEXT NOT NULL, expected_caller TEXT NOT NULL, expires_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS routing_dial_intents (intent_id TEXT PRIMARY KEY, extension_id TEXT NOT NULL, \
     destination TEXT NOT NULL, expires_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS routing_callbacks (request_id TEXT PRIMARY KEY, extension_id TEXT NOT NULL, \
     destination TEXT NOT NULL, requested_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS routing_data_paths (device_id TEXT PRIMARY KEY, quality TEXT NOT NULL, \
     reported_at TEXT NOT NULL)",
    crate::workflows::CREATE_STEPS,
    crate::workflows::CREATE_STEPS_INDEX,
];

const TABLES: &[(&str, &str)] = &[
    ("routing_numbers", "number"),
    ("routing_accounts", "account_id"),
    ("routing_devices", "device_id"),
    ("routing_contacts", "device_id, contact_uri"),
    ("routing_extensions", "extension_id"),
    ("routing_call_ins", "token"),
    ("routing_dial_intents", "intent_id"),
    ("routing_callbacks", "request_id"),
    ("routing_data_paths", "device_id"),
    ("workflow_steps", "number, step"),
];

const NUMBERS: &str = "routing_numbers";
const ACCOUNTS: &str = "routing_accounts";
const DEVICES: &str = "routing_devices";
const CONTACTS: &str = "routing_contacts";
const EXTENSIONS: &str = "routing_extensions";
const CALL_INS: &str = "routing_call_ins";
const DIAL_INTENTS: &str = "routing_dial_intents";
const CALLBACKS: &str = "routing_callbacks";
const DATA_PATHS: &str = "routing_data_paths";

const ACCOUNT: &[&str] = &["account_id"];
const DEVICE: &[&str] = &["device_id"];
const CONTACT: &[&str] = &["device_id", "contact_uri"];
const EXTENSION: &[&str] = &["extension_id"];
const STATUS: &[&str] = &["status"];

#[async_trait]
impl Projection for RoutingTables {
    fn name(&self) -> &'static str {
        "routing"
    }

    fn schema(&self) -> &'static [&'static str] {
        SCHEMA
    }

    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        TABLES
    }

    fn handles(&self, event_type: &str) -> bool {
        ["account.", "device.", "extension.", "number.", "call."]
            .iter()
            .any(|c| event_type.starts_with(c))
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[Decoded<'_>],
    ) -> Result<(), BatchError> {
        let mut w = Writes::default();
        for d in events {
            write(&mut w, d.recorded, &d.event).map_err(|e| BatchError::at(d.index, e))?;
            crate::workflows::write(&mut w, d.recorded, &d.event)
                .map_err(|e| BatchError::at(d.index, e))?;
        }
        w.flush(conn).await?;
        Ok(())
    }
}

/// The rows one event changes. Entities: a number, an account, a device, a contact (device and
/// URI), an extension, a call (its call-ins), an intent, a callback request.
fn write(w: &mut Writes, event: &RecordedEvent, decoded: &Event) -> Result<(), ProjectionError> {
    let id = entity_id(&event.stream_id)?;
    match decoded {
        Event::Number(NumberEvent::Claimed {
            number,
            account_id,
            role,
        }) => {
            let (role_name, extension_id, destination) = match role {
                NumberRole::Main => ("main", None, None),
                NumberRole::Extension { extension_id } => {
                    ("extension", Some(extension_id.to_string()), None)
                }
                NumberRole::Access { destination } => {
                    ("access", None, destination.as_ref().map(|d| d.to_string()))
                }
            };
            let n = number.to_string();
            w.insert(
                NUMBERS,
                &[
                    "number",
                    "account_id",
                    "role",
                    "extension_id",
                    "destination",
                ],
                &n,
                vec![
                    n.clone().into(),
                    account_id.to_string().into(),
                    role_name.into(),
                    extension_id.into(),
                    destination.into(),
                ],
            );
        }
        Event::Number(NumberEvent::Released { number, .. }) => {
            let n = number.to_string();
            w.delete(NUMBERS, &["number"], &n, vec![n.clone().into()]);
        }
        Event::Account(e) => match e {
            AccountEvent::Opened {
                account_id,
                name: n,
                main_number,
                tariff_id,
                currency,
                max_extensions,
            } => {
                let p = domain::account::RingPolicy::default();
                let a = account_id.to_string();
                w.insert(
                    ACCOUNTS,
                    &[
                        "account_id",
                        "name",
                        "main_number",
                        "status",
                        "tariff_id",
                        "currency",
                        "ring_timeout_secs",
                        "extension_delay_secs",
                        "prefer_alternate_path",
                        "daily_spend_limit_minor",
                        "max_extensions",
                    ],
                    &a,
                    vec![
                        a.clone().into(),
                        n.clone().into(),
                        main_number.to_string().into(),
                        "active".into(),
                        tariff_id.to_string().into(),
                        currency.to_string().into(),
                        i64::from(p.ring_timeout_secs).into(),
                        i64::from(p.extension_delay_secs).into(),
                        flag(p.prefer_alternate_path).into(),
                        None::<i64>.into(),
                        i64::from(*max_extensions).into(),
                    ],
                );
            }
            AccountEvent::Suspended { .. } => w.update(
                ACCOUNTS,
                ACCOUNT,
                STATUS,
                &id,
                vec![id.clone().into(), "suspended".into()],
            ),
            AccountEvent::Reinstated {} => w.update(
                ACCOUNTS,
                ACCOUNT,
                STATUS,
                &id,
                vec![id.clone().into(), "active".into()],
            ),
            AccountEvent::Closed { .. } => w.update(
                ACCOUNTS,
                ACCOUNT,
                STATUS,
                &id,
                vec![id.clone().into(), "closed".into()],
            ),
            AccountEvent::RingPolicyChanged { policy } => w.update(
                ACCOUNTS,
                ACCOUNT,
                &[
                    "ring_timeout_secs",
                    "extension_delay_secs",
                    "prefer_alternate_path",
                ],
                &id,
                vec![
                    id.clone().into(),
                    i64::from(policy.ring_timeout_secs).into(),
                    i64::from(policy.extension_delay_secs).into(),
                    flag(policy.prefer_alternate_path).into(),
                ],
            ),
            AccountEvent::SpendLimitChanged { daily_limit_minor } => w.update(
                ACCOUNTS,
                ACCOUNT,
                &["daily_spend_limit_minor"],
                &id,
                vec![id.clone().into(), (*daily_limit_minor).into()],
            ),
            AccountEvent::TariffChanged { tariff_id } => w.update(
                ACCOUNTS,
                ACCOUNT,
                &["tariff_id"],
                &id,
                vec![id.clone().into(), tariff_id.to_string().into()],
            ),
            AccountEvent::ExtensionAttached { .. }
            | AccountEvent::ExtensionDetached { .. }
            | AccountEvent::SipAuthBlocked { .. } => {}
        },
        Event::Device(e) => match e {
            DeviceEvent::Provisioned {
                device_id,
                account_id,
                sip_username,
                realm,
                ha1,
            } => {
                let d = device_id.to_string();
                w.insert(
                    DEVICES,
                    &[
                        "device_id",
                        "account_id",
                        "sip_username",
                        "realm",
                        "ha1_md5",
                        "ha1_sha256",
                        "status",
                    ],
                    &d,
                    vec![
                        d.clone().into(),
                        account_id.to_string().into(),
                        sip_username.clone().into(),
                        realm.clone().into(),
                        ha1.md5.clone().into(),
                        ha1.sha256.clone().into(),
                        "active".into(),
                    ],
                );
            }
            DeviceEvent::CredentialsRotated { ha1 } => w.update(
                DEVICES,
                DEVICE,
                &["ha1_md5", "ha1_sha256"],
                &id,
                vec![
                    id.clone().into(),
                    ha1.md5.clone().into(),
                    ha1.sha256.clone().into(),
                ],
            ),
            DeviceEvent::Removed {} => w.update(
                DEVICES,
                DEVICE,
                &["status", "ha1_md5", "ha1_sha256"],
                &id,
                vec![
                    id.clone().into(),
                    "removed".into(),
                    None::<String>.into(),
                    None::<String>.into(),
                ],
            ),
            DeviceEvent::ContactBound {
                contact_uri,
                source,
                transport,
                user_agent,
                expires_at,
            } => {
                w.insert(
                    CONTACTS,
                    &[
                        "device_id",
                        "contact_uri",
                        "source",
                        "transport",
                        "user_agent",
                        "expires_at",
                    ],
                    &contact(&id, contact_uri),
                    vec![
                        id.clone().into(),
                        contact_uri.clone().into(),
                        source.clone().into(),
                        name(transport).into(),
                        user_agent.clone().into(),
                        ts(*expires_at).into(),
                    ],
                );
            }
            DeviceEvent::ContactRefreshed {
                contact_uri,
                source,
                transport,
                expires_at,
            } => {
                w.update(
                    CONTACTS,
                    CONTACT,
                    &["source", "transport", "expires_at"],
                    &contact(&id, contact_uri),
                    vec![
                        id.clone().into(),
                        contact_uri.clone().into(),
                        source.clone().into(),
                        name(transport).into(),
                        ts(*expires_at).into(),
                    ],
                );
            }
            DeviceEvent::ContactUnbound { contact_uri, .. } => {
                w.delete(
                    CONTACTS,
                    CONTACT,
                    &contact(&id, contact_uri),
                    vec![id.clone().into(), contact_uri.clone().into()],
                );
            }
            DeviceEvent::DataPathReported { quality, at } => {
                w.upsert(
                    DATA_PATHS,
                    DEVICE,
                    &["quality", "reported_at"],
                    &id,
                    vec![id.clone().into(), name(quality).into(), ts(*at).into()],
                );
            }
        },
        Event::Extension(e) => match e {
            ExtensionEvent::Requested {
                extension_id,
                account_id,
                number,
                native_provider,
                kind,
            } => {
                let x = extension_id.to_string();
                w.insert(
                    EXTENSIONS,
                    &[
                        "extension_id",
                        "account_id",
                        "number",
                        "native_provider",
                        "kind",
                        "status",
                        "settings",
                        "failed_attempts",
                        "locked",
                    ],
                    &x,
                    vec![
                        x.clone().into(),
                        account_id.to_string().into(),
                        number.to_string().into(),
                        native_provider.clone().into(),
                        name(kind).into(),
                        "pending".into(),
                        json(&domain::extension::ExtensionSettings::default()).into(),
                        0_i64.into(),
                        0_i64.into(),
                    ],
                );
            }
            ExtensionEvent::ChallengeIssued { .. } => {}
            ExtensionEvent::Verified {} => w.update(
                EXTENSIONS,
                EXTENSION,
                STATUS,
                &id,
                vec![id.clone().into(), "verified".into()],
            ),
            ExtensionEvent::ChallengeFailed { attempts, locked } => w.update(
                EXTENSIONS,
                EXTENSION,
                &["failed_attempts", "locked"],
                &id,
                vec![
                    id.clone().into(),
                    i64::from(*attempts).into(),
                    flag(*locked).into(),
                ],
            ),
            ExtensionEvent::SettingsChanged { settings } => w.update(
                EXTENSIONS,
                EXTENSION,
                &["settings"],
                &id,
                vec![id.clone().into(), json(settings).into()],
            ),
            ExtensionEvent::Removed { .. } => w.update(
                EXTENSIONS,
                EXTENSION,
                STATUS,
                &id,
                vec![id.clone().into(), "removed".into()],
            ),
            ExtensionEvent::DialIntentStaged {
                intent_id,
                destination,
                expires_at,
            } => {
                let i = intent_id.to_string();
                w.insert(
                    DIAL_INTENTS,
                    &["intent_id", "extension_id", "destination", "expires_at"],
                    &i,
                    vec![
                        i.clone().into(),
                        id.clone().into(),
                        destination.to_string().into(),
                        ts(*expires_at).into(),
                    ],
                );
            }
            // The PIN check (and its lock) is decided on the extension's own stream.
            ExtensionEvent::KeypadPinAccepted {}
            | ExtensionEvent::KeypadPinRefused { .. }
            | ExtensionEvent::KeypadUnlocked {} => {}
            ExtensionEvent::DialIntentCancelled { intent_id, .. } => {
                let i = intent_id.to_string();
                w.delete(DIAL_INTENTS, &["intent_id"], &i, vec![i.clone().into()]);
            }
            ExtensionEvent::CallbackRequested {
                request_id,
                destination,
            } => {
                let r = request_id.to_string();
                w.insert(
                    CALLBACKS,
                    &["request_id", "extension_id", "destination", "requested_at"],
                    &r,
                    vec![
                        r.clone().into(),
                        id.clone().into(),
                        destination.to_string().into(),
                        ts(event.occurred_at).into(),
                    ],
                );
            }
            ExtensionEvent::CallbackCancelled { request_id, .. } => {
                let r = request_id.to_string();
                w.delete(CALLBACKS, &["request_id"], &r, vec![r.clone().into()]);
            }
        },
        Event::Call(e) => match e {
            CallEvent::CallInAwaited {
                token,
                access_number,
                expected_caller,
                expires_at,
                ..
            } => {
                w.insert(
                    CALL_INS,
                    &[
                        "token",
                        "call_id",
                        "access_number",
                        "expected_caller",
                        "expires_at",
                    ],
                    &id,
                    vec![
                        token.clone().into(),
                        id.clone().into(),
                        access_number.to_string().into(),
                        expected_caller.to_string().into(),
                        ts(*expires_at).into(),
                    ],
                );
            }
            CallEvent::Bridged { .. } | CallEvent::Ended { .. } => {
                w.delete(CALL_INS, &["call_id"], &id, vec![id.clone().into()]);
            }
            _ => {}
        },
        Event::Tariff(_) | Event::Import(_) | Event::Edge(_) => {}
    }
    Ok(())
}

/// A contact's entity: its device and URI.
fn contact(device_id: &str, uri: &str) -> String {
    format!("{device_id} {uri}")
}
