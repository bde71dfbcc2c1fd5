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

use crate::runner::{Projection, ProjectionError};
use crate::sql::{entity_id, flag, json, name, ts};

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
];

async fn exec(
    conn: &mut AnyConnection,
    q: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
) -> Result<(), ProjectionError> {
    q.execute(conn).await?;
    Ok(())
}

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

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        decoded: &Event,
    ) -> Result<(), ProjectionError> {
        use sqlx::query;
        let id = entity_id(&event.stream_id)?;
        match decoded {
            Event::Number(NumberEvent::Claimed { number, account_id, role }) => {
                let (role_name, extension_id, destination) = match role {
                    NumberRole::Main => ("main", None, None),
                    NumberRole::Extension { extension_id } => ("extension", Some(extension_id.to_string()), None),
                    NumberRole::Access { destination } => ("access", None, destination.as_ref().map(|d| d.to_string())),
                };
                exec(conn, query("INSERT INTO routing_numbers (number, account_id, role, extension_id, destination) VALUES ($1, $2, $3, $4, $5)")
                    .bind(number.to_string()).bind(account_id.to_string()).bind(role_name).bind(extension_id).bind(destination)).await
            }
            Event::Number(NumberEvent::Released { number, .. }) => {
                exec(conn, query("DELETE FROM routing_numbers WHERE number = $1").bind(number.to_string())).await
            }
            Event::Account(e) => match e {
                AccountEvent::Opened { account_id, name: n, main_number, tariff_id, currency, max_extensions } => {
                    let p = domain::account::RingPolicy::default();
                    exec(conn, query("INSERT INTO routing_accounts (account_id, name, main_number, status, tariff_id, currency, ring_timeout_secs, extension_delay_secs, prefer_alternate_path, daily_spend_limit_minor, max_extensions) VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, NULL, $9)")
                        .bind(account_id.to_string()).bind(n.clone()).bind(main_number.to_string()).bind(tariff_id.to_string()).bind(currency.to_string())
                        .bind(i64::from(p.ring_timeout_secs)).bind(i64::from(p.extension_delay_secs)).bind(flag(p.prefer_alternate_path)).bind(i64::from(*max_extensions))).await
                }
                AccountEvent::Suspended { .. } => exec(conn, query("UPDATE routing_accounts SET status = 'suspended' WHERE account_id = $1").bind(id)).await,
                AccountEvent::Reinstated {} => exec(conn, query("UPDATE routing_accounts SET status = 'active' WHERE account_id = $1").bind(id)).await,
                AccountEvent::Closed { .. } => exec(conn, query("UPDATE routing_accounts SET status = 'closed' WHERE account_id = $1").bind(id)).await,
                AccountEvent::RingPolicyChanged { policy } => exec(conn, query("UPDATE routing_accounts SET ring_timeout_secs = $2, extension_delay_secs = $3, prefer_alternate_path = $4 WHERE account_id = $1")
                    .bind(id).bind(i64::from(policy.ring_timeout_secs)).bind(i64::from(policy.extension_delay_secs)).bind(flag(policy.prefer_alternate_path))).await,
                AccountEvent::SpendLimitChanged { daily_limit_minor } => exec(conn, query("UPDATE routing_accounts SET daily_spend_limit_minor = $2 WHERE account_id = $1").bind(id).bind(*daily_limit_minor)).await,
                AccountEvent::TariffChanged { tariff_id } => exec(conn, query("UPDATE routing_accounts SET tariff_id = $2 WHERE account_id = $1").bind(id).bind(tariff_id.to_string())).await,
                AccountEvent::ExtensionAttached { .. } | AccountEvent::ExtensionDetached { .. } => Ok(()),
            },
            Event::Device(e) => match e {
                DeviceEvent::Provisioned { device_id, account_id, sip_username, realm, ha1 } => {
                    exec(conn, query("INSERT INTO routing_devices (device_id, account_id, sip_username, realm, ha1_md5, ha1_sha256, status) VALUES ($1, $2, $3, $4, $5, $6, 'active')")
                        .bind(device_id.to_string()).bind(account_id.to_string()).bind(sip_username.clone()).bind(realm.clone()).bind(ha1.md5.clone()).bind(ha1.sha256.clone())).await
                }
                DeviceEvent::CredentialsRotated { ha1 } => exec(conn, query("UPDATE routing_devices SET ha1_md5 = $2, ha1_sha256 = $3 WHERE device_id = $1")
                    .bind(id).bind(ha1.md5.clone()).bind(ha1.sha256.clone())).await,
                DeviceEvent::Removed {} => exec(conn, query("UPDATE routing_devices SET status = 'removed', ha1_md5 = NULL, ha1_sha256 = NULL WHERE device_id = $1").bind(id)).await,
                DeviceEvent::ContactBound { contact_uri, source, transport, user_agent, expires_at } => {
                    exec(conn, query("INSERT INTO routing_contacts (device_id, contact_uri, source, transport, user_agent, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                        .bind(id).bind(contact_uri.clone()).bind(source.clone()).bind(name(transport)).bind(user_agent.clone()).bind(ts(*expires_at))).await
                }
                DeviceEvent::ContactRefreshed { contact_uri, source, transport, expires_at } => {
                    exec(conn, query("UPDATE routing_contacts SET source = $3, transport = $4, expires_at = $5 WHERE device_id = $1 AND contact_uri = $2")
                        .bind(id).bind(contact_uri.clone()).bind(source.clone()).bind(name(transport)).bind(ts(*expires_at))).await
                }
                DeviceEvent::ContactUnbound { contact_uri, .. } => {
                    exec(conn, query("DELETE FROM routing_contacts WHERE device_id = $1 AND contact_uri = $2").bind(id).bind(contact_uri.clone())).await
                }
                DeviceEvent::DataPathReported { quality, at } => {
                    exec(conn, query("DELETE FROM routing_data_paths WHERE device_id = $1").bind(id.clone())).await?;
                    exec(conn, query("INSERT INTO routing_data_paths (device_id, quality, reported_at) VALUES ($1, $2, $3)")
                        .bind(id).bind(name(quality)).bind(ts(*at))).await
                }
            },
            Event::Extension(e) => match e {
                ExtensionEvent::Requested { extension_id, account_id, number, native_provider, kind } => {
                    exec(conn, query("INSERT INTO routing_extensions (extension_id, account_id, number, native_provider, kind, status, settings, failed_attempts, locked) VALUES ($1, $2, $3, $4, $5, 'pending', $6, 0, 0)")
                        .bind(extension_id.to_string()).bind(account_id.to_string()).bind(number.to_string()).bind(native_provider.clone()).bind(name(kind))
                        .bind(json(&domain::extension::ExtensionSettings::default()))).await
                }
                ExtensionEvent::ChallengeIssued { .. } => Ok(()),
                ExtensionEvent::Verified {} => exec(conn, query("UPDATE routing_extensions SET status = 'verified' WHERE extension_id = $1").bind(id)).await,
                ExtensionEvent::ChallengeFailed { attempts, locked } => exec(conn, query("UPDATE routing_extensions SET failed_attempts = $2, locked = $3 WHERE extension_id = $1")
                    .bind(id).bind(i64::from(*attempts)).bind(flag(*locked))).await,
                ExtensionEvent::SettingsChanged { settings } => exec(conn, query("UPDATE routing_extensions SET settings = $2 WHERE extension_id = $1").bind(id).bind(json(settings))).await,
                ExtensionEvent::Removed { .. } => exec(conn, query("UPDATE routing_extensions SET status = 'removed' WHERE extension_id = $1").bind(id)).await,
                ExtensionEvent::DialIntentStaged { intent_id, destination, expires_at } => {
                    exec(conn, query("INSERT INTO routing_dial_intents (intent_id, extension_id, destination, expires_at) VALUES ($1, $2, $3, $4)")
                        .bind(intent_id.to_string()).bind(id).bind(destination.to_string()).bind(ts(*expires_at))).await
                }
                ExtensionEvent::DialIntentCancelled { intent_id, .. } => {
                    exec(conn, query("DELETE FROM routing_dial_intents WHERE intent_id = $1").bind(intent_id.to_string())).await
                }
                ExtensionEvent::CallbackRequested { request_id, destination } => {
                    exec(conn, query("INSERT INTO routing_callbacks (request_id, extension_id, destination, requested_at) VALUES ($1, $2, $3, $4)")
                        .bind(request_id.to_string()).bind(id).bind(destination.to_string()).bind(ts(event.occurred_at))).await
                }
                ExtensionEvent::CallbackCancelled { request_id, .. } => {
                    exec(conn, query("DELETE FROM routing_callbacks WHERE request_id = $1").bind(request_id.to_string())).await
                }
            },
            Event::Call(e) => match e {
                CallEvent::CallInAwaited { token, access_number, expected_caller, expires_at, .. } => {
                    exec(conn, query("INSERT INTO routing_call_ins (token, call_id, access_number, expected_caller, expires_at) VALUES ($1, $2, $3, $4, $5)")
                        .bind(token.clone()).bind(id).bind(access_number.to_string()).bind(expected_caller.to_string()).bind(ts(*expires_at))).await
                }
                CallEvent::Bridged { .. } | CallEvent::Ended { .. } => {
                    exec(conn, query("DELETE FROM routing_call_ins WHERE call_id = $1").bind(id)).await
                }
                _ => Ok(()),
            },
            Event::Tariff(_) => Ok(()),
        }
    }
}
