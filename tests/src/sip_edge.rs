//! A SIP edge started on 127.0.0.1 port 0 over a fresh store, with one account and one IP
//! device provisioned, for tests that talk SIP to it over real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::account::{Account, AccountCommand};
use domain::call::CallEvent;
use domain::device::{Device, DeviceCommand, DeviceEvent};
use domain::extension::{
    AlternateMode, ChallengeMethod, Extension, ExtensionCommand, ExtensionKind, PinChange,
    SettingsChange,
};
use domain::ids::{AccountId, DeviceId, ExtensionId, TariffId};
use domain::{E164, Event};
use infra::EventStore;
use signaling::digest::Algorithm;
use signaling::media::MediaSettings;
use tokio::sync::watch;

use crate::harness::{Backend, record};

pub const REALM: &str = "ringledger.test";
pub const USERNAME: &str = "alice";
pub const PASSWORD: &str = "correct-horse-battery";
/// A row of the billing projection's `rated_legs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RatedRow {
    pub account_id: String,
    pub extension_id: Option<String>,
    pub path: String,
    pub destination: String,
    pub duration_secs: Option<i64>,
    pub billable_secs: Option<i64>,
    pub tariff_version: Option<i64>,
    pub charge_minor: Option<i64>,
}

impl RatedRow {
    /// What a bill shows of the leg: its path, the number it reached, the extension it went
    /// through, and its charge.
    pub fn summary(&self) -> (&str, &str, Option<String>, Option<i64>) {
        (
            self.path.as_str(),
            self.destination.as_str(),
            self.extension_id.clone(),
            self.charge_minor,
        )
    }
}

/// How long the test edge waits for an extension to call in.
pub const CALL_IN_TIMEOUT: Duration = Duration::from_secs(5);
/// The test edge's heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Alice's account's main number (claimed in the log).
pub const MAIN_NUMBER: &str = "+442071838750";

pub struct SipEdge {
    pub store: Arc<dyn EventStore>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub edge: Arc<signaling::Edge>,
    /// The routing view the edge reads.
    pub view: signaling::SharedView,
    pub device_id: DeviceId,
    pub account_id: AccountId,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub backend: Backend,
}

impl SipEdge {
    /// Starts an edge offering `algorithms`, with `alice` provisioned and visible to it.
    pub async fn spawn(backend: Backend, algorithms: Vec<Algorithm>) -> Self {
        Self::spawn_with_trunks(backend, algorithms, vec![]).await
    }

    /// The same, with carriers configured.
    pub async fn spawn_with_trunks(
        backend: Backend,
        algorithms: Vec<Algorithm>,
        trunks: Vec<signaling::trunk::Trunk>,
    ) -> Self {
        Self::spawn_with(backend, algorithms, trunks, None).await
    }

    /// The same, relaying media with `media` (None: session descriptions pass through).
    pub async fn spawn_with(
        backend: Backend,
        algorithms: Vec<Algorithm>,
        trunks: Vec<signaling::trunk::Trunk>,
        media: Option<MediaSettings>,
    ) -> Self {
        Self::spawn_notifying(backend, algorithms, trunks, media, None).await
    }

    /// The same, also POSTing call-in notices to `call_in_webhook`.
    pub async fn spawn_notifying(
        backend: Backend,
        algorithms: Vec<Algorithm>,
        trunks: Vec<signaling::trunk::Trunk>,
        media: Option<MediaSettings>,
        call_in_webhook: Option<String>,
    ) -> Self {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let addresses = || (listen, trunks.clone());
        let security = trusting_carriers();
        Self::spawn_on(
            backend,
            algorithms,
            media,
            call_in_webhook,
            security,
            registrar_settings(),
            addresses,
        )
        .await
    }

    /// An edge with MD5 digests, `trunks`, relaying media with `media`, holding `security`'s
    /// bounds (the hostile-network tests tighten them).
    pub async fn spawn_secured(
        backend: Backend,
        trunks: Vec<signaling::trunk::Trunk>,
        media: Option<MediaSettings>,
        security: signaling::SecuritySettings,
    ) -> Self {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let addresses = || (listen, trunks.clone());
        Self::spawn_on(
            backend,
            vec![Algorithm::Md5],
            media,
            None,
            security,
            registrar_settings(),
            addresses,
        )
        .await
    }

    /// An edge whose one trunk is itself (numbers: all): a call a device places out comes
    /// back in from the "carrier" and rings whoever holds the number called, as if it had
    /// crossed the public network. Media is relayed (`relay_settings`).
    pub async fn spawn_looped(backend: Backend) -> Self {
        // The trunk's address is the edge's own, so the port is chosen before the edge binds
        // it (and chosen again if another process took it meanwhile).
        let addresses = || {
            let listen = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let trunk = signaling::trunk::Trunk {
                name: "loop".into(),
                address: listen,
                networks: vec![],
                numbers: vec!["+".into()],
            };
            (listen, vec![trunk])
        };
        let media = Some(relay_settings(Duration::from_secs(60)));
        let security = trusting_carriers();
        Self::spawn_on(
            backend,
            vec![Algorithm::Md5],
            media,
            None,
            security,
            registrar_settings(),
            addresses,
        )
        .await
    }

    /// An edge with MD5 digests whose registrar holds `registrar`'s limits.
    pub async fn spawn_registrar(
        backend: Backend,
        registrar: signaling::RegistrarSettings,
    ) -> Self {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Self::spawn_on(
            backend,
            vec![Algorithm::Md5],
            None,
            None,
            trusting_carriers(),
            registrar,
            || (listen, vec![]),
        )
        .await
    }

    async fn spawn_on(
        backend: Backend,
        algorithms: Vec<Algorithm>,
        media: Option<MediaSettings>,
        call_in_webhook: Option<String>,
        security: signaling::SecuritySettings,
        registrar: signaling::RegistrarSettings,
        addresses: impl Fn() -> (SocketAddr, Vec<signaling::trunk::Trunk>),
    ) -> Self {
        let store = backend.open().await;
        let (account_id, device_id) =
            provision(store.as_ref(), USERNAME, PASSWORD, MAIN_NUMBER).await;
        let (stop, stopped) = watch::channel(false);
        let view = signaling::SharedView::default();
        let mut attempts = 0;
        let running = loop {
            let (listen, trunks) = addresses();
            let settings = signaling::EdgeSettings {
                listen,
                auth: signaling::AuthSettings {
                    realm: REALM.into(),
                    algorithms: algorithms.clone(),
                },
                registrar: registrar.clone(),
                trunks,
                nonce_secret: b"test secret".to_vec(),
                nonce_lifetime_secs: 300,
                security: security.clone(),
                ring_timeout: Duration::from_secs(60),
                call_in_timeout: CALL_IN_TIMEOUT,
                call_in_webhook: call_in_webhook.clone(),
                heartbeat: HEARTBEAT,
                media: media.clone(),
                actor: "edge:test".into(),
            };
            match signaling::start(settings, store.clone(), view.clone(), stopped.clone()).await {
                Ok(running) => break running,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 5 => {
                    attempts += 1;
                }
                Err(e) => panic!("the edge does not bind: {e}"),
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while view.read().unwrap().device_by_username(USERNAME).is_none() {
            assert!(Instant::now() < deadline, "the edge never saw the device");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            store,
            udp: running.udp,
            tcp: running.tcp,
            edge: running.edge,
            view,
            device_id,
            account_id,
            stop,
            tasks: running.tasks,
            backend,
        }
    }

    /// Another subscriber: an account holding `main_number` with one IP device.
    pub async fn add_subscriber(
        &self,
        username: &str,
        password: &str,
        main_number: &str,
    ) -> (AccountId, DeviceId) {
        let ids = provision(self.store.as_ref(), username, password, main_number).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .view
            .read()
            .unwrap()
            .device_by_username(username)
            .is_none()
        {
            assert!(Instant::now() < deadline, "the edge never saw {username}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ids
    }

    /// A verified extension of alice's account (default settings: rings on inbound), once the
    /// edge sees it serving.
    pub async fn add_extension(&self, number: &str) -> ExtensionId {
        self.add_extension_as(number, true).await
    }

    /// An extension of alice's account whose number was never proved, once the edge sees it.
    pub async fn add_unverified_extension(&self, number: &str) -> ExtensionId {
        self.add_extension_as(number, false).await
    }

    async fn add_extension_as(&self, number: &str, verified: bool) -> ExtensionId {
        let extension_id = self.request_extension(number, verified).await;
        let status = if verified {
            domain::extension::ExtensionStatus::Verified
        } else {
            domain::extension::ExtensionStatus::Pending
        };
        self.wait_for_view(|v| {
            v.extensions_of(self.account_id)
                .iter()
                .any(|(id, e)| *id == extension_id && e.status == status)
        })
        .await;
        extension_id
    }

    async fn request_extension(&self, number: &str, verify: bool) -> ExtensionId {
        let store = self.store.as_ref();
        let account = infra::command::load::<Account>(store, &self.account_id.stream_id())
            .await
            .unwrap()
            .state;
        let extension_id = ExtensionId::from(uuid::Uuid::now_v7());
        let number = E164::parse(number).unwrap();
        let now = chrono::Utc::now();
        let stream = extension_id.stream_id();
        let mut extension = Extension::default();
        for command in [
            ExtensionCommand::Request {
                extension_id,
                account,
                number: number.clone(),
                native_provider: "Other Mobile".into(),
                kind: ExtensionKind::Mobile,
            },
            ExtensionCommand::IssueChallenge {
                method: ChallengeMethod::Sms,
                code: "482913".into(),
                ttl_secs: 300,
            },
            ExtensionCommand::SubmitCode {
                code: "482913".into(),
            },
        ]
        .into_iter()
        .take(if verify { 3 } else { 1 })
        {
            record(store, &stream, &mut extension, command, now).await;
        }
        record(
            store,
            &domain::number::stream_id(&number),
            &mut domain::number::NumberClaim::default(),
            domain::number::NumberCommand::Claim {
                number,
                account_id: self.account_id,
                role: domain::number::NumberRole::Extension { extension_id },
            },
            now,
        )
        .await;
        extension_id
    }

    /// Sets how the alternate path reaches an extension (its other settings the defaults),
    /// once the edge sees it.
    pub async fn set_alternate_path(&self, extension_id: ExtensionId, mode: AlternateMode) {
        self.change_settings(extension_id, PinChange::Keep, mode, |e| {
            e.settings.alternate_path == mode
        })
        .await;
    }

    /// Gives an extension a PIN for call-through (its other settings the defaults), once the
    /// edge sees it.
    pub async fn set_pin(&self, extension_id: ExtensionId, pin: &str) {
        let mode = domain::extension::ExtensionSettings::default().alternate_path;
        self.change_settings(extension_id, PinChange::Set(pin.into()), mode, |e| {
            e.settings.pin_hash.is_some()
        })
        .await;
    }

    /// Changes an extension's settings to the defaults but `pin` and `mode`, and waits until
    /// the edge's view shows the extension as `seen` says.
    async fn change_settings(
        &self,
        extension_id: ExtensionId,
        pin: PinChange,
        mode: AlternateMode,
        seen: impl Fn(&domain::extension::Extension) -> bool,
    ) {
        let d = domain::extension::ExtensionSettings::default();
        let change = SettingsChange {
            ring_on_inbound: d.ring_on_inbound,
            ring_delay_secs: d.ring_delay_secs,
            may_call_out: d.may_call_out,
            international_allowed: d.international_allowed,
            pin,
            caller_id: d.caller_id,
            daily_limit_minor: d.daily_limit_minor,
            prefers_alternate_path: d.prefers_alternate_path,
            alternate_path: mode,
        };
        self.change_extension(extension_id, ExtensionCommand::ChangeSettings(change))
            .await;
        self.wait_for_view(|v| {
            v.extensions_of(self.account_id)
                .iter()
                .any(|(id, e)| *id == extension_id && seen(e))
        })
        .await;
    }

    /// alice's account prefers the alternate (cellular) path for her calls, once the edge
    /// sees it.
    pub async fn prefer_alternate_path(&self) {
        let store = self.store.as_ref();
        let stream = self.account_id.stream_id();
        let mut account = infra::command::load::<Account>(store, &stream)
            .await
            .unwrap()
            .state;
        let policy = domain::account::RingPolicy {
            prefer_alternate_path: true,
            ..Default::default()
        };
        let command = AccountCommand::ChangeRingPolicy(policy);
        record(store, &stream, &mut account, command, chrono::Utc::now()).await;
        let account_id = self.account_id;
        self.wait_for_view(|v| {
            v.account(account_id)
                .is_some_and(|a| a.ring_policy.prefer_alternate_path)
        })
        .await;
    }

    /// Removes an extension, once the edge sees it gone.
    pub async fn remove_extension(&self, extension_id: ExtensionId) {
        let command = ExtensionCommand::Remove {
            reason: "test".into(),
        };
        self.change_extension(extension_id, command).await;
        self.wait_for_view(|v| {
            !v.serving_extensions(self.account_id)
                .iter()
                .any(|(id, _)| *id == extension_id)
        })
        .await;
    }

    async fn change_extension(&self, extension_id: ExtensionId, command: ExtensionCommand) {
        let store = self.store.as_ref();
        let stream = extension_id.stream_id();
        let mut extension = infra::command::load::<Extension>(store, &stream)
            .await
            .unwrap()
            .state;
        record(store, &stream, &mut extension, command, chrono::Utc::now()).await;
    }

    /// An access number of alice's account (`mapped`: the destination it always calls).
    pub async fn add_access_number(&self, number: &str, mapped: Option<&str>) {
        let number = E164::parse(number).unwrap();
        record(
            self.store.as_ref(),
            &domain::number::stream_id(&number),
            &mut domain::number::NumberClaim::default(),
            domain::number::NumberCommand::Claim {
                number: number.clone(),
                account_id: self.account_id,
                role: domain::number::NumberRole::Access {
                    destination: mapped.map(|m| E164::parse(m).unwrap()),
                },
            },
            chrono::Utc::now(),
        )
        .await;
        self.wait_for_view(|v| v.access_number(&number).is_some())
            .await;
    }

    /// Stages `destination` for the extension's next call-through (as the API does).
    pub async fn stage_dial_intent(&self, extension_id: ExtensionId, destination: &str) {
        let store = self.store.as_ref();
        let account = infra::command::load::<Account>(store, &self.account_id.stream_id())
            .await
            .unwrap()
            .state;
        let stream = extension_id.stream_id();
        let mut extension = infra::command::load::<Extension>(store, &stream)
            .await
            .unwrap()
            .state;
        let destination = E164::parse(destination).unwrap();
        record(
            store,
            &stream,
            &mut extension,
            ExtensionCommand::StageDialIntent {
                intent_id: uuid::Uuid::now_v7(),
                account,
                destination: destination.clone(),
                ttl_secs: 120,
            },
            chrono::Utc::now(),
        )
        .await;
        let number = extension.number.clone().unwrap();
        self.wait_for_view(|v| {
            v.dial_intent_of_caller(&number, chrono::Utc::now())
                .is_some_and(|(_, d)| *d == destination)
        })
        .await;
    }

    /// Asks for a callback (as the API does): the edge is to ring the extension, then
    /// `destination`. The request's id.
    pub async fn request_callback(
        &self,
        extension_id: ExtensionId,
        destination: &str,
    ) -> uuid::Uuid {
        let store = self.store.as_ref();
        let account = infra::command::load::<Account>(store, &self.account_id.stream_id())
            .await
            .unwrap()
            .state;
        let request_id = uuid::Uuid::now_v7();
        let command = ExtensionCommand::RequestCallback {
            request_id,
            account,
            destination: E164::parse(destination).unwrap(),
        };
        self.change_extension(extension_id, command).await;
        request_id
    }

    /// The extension's events, decoded.
    pub async fn extension_events(
        &self,
        extension_id: ExtensionId,
    ) -> Vec<domain::extension::ExtensionEvent> {
        self.store
            .read_stream(&extension_id.stream_id(), 1, 10_000)
            .await
            .unwrap()
            .iter()
            .filter_map(|e| match e.decode().unwrap() {
                Event::Extension(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    async fn wait_for_view(&self, seen: impl Fn(&projections::routing_view::RoutingView) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen(&self.view.read().unwrap()) {
            assert!(Instant::now() < deadline, "the edge's view never caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Publishes a new version of alice's tariff (the one she opened with prices the same,
    /// blocks nothing): calls to +44 cost a 25p connect fee and 6p a minute (per second after
    /// the first minute), +33 and +1 1.5p a minute; `blocked` prefixes may not be called.
    /// Then sets her daily spend limit (minor units), if that changes it.
    pub async fn price_calls(&self, blocked: &[&str], daily_limit_minor: Option<i64>) {
        let store = self.store.as_ref();
        let stream = self.account_id.stream_id();
        let mut account = infra::command::load::<Account>(store, &stream)
            .await
            .unwrap()
            .state;
        let tariff_id = account.tariff_id.unwrap();
        let now = chrono::Utc::now();
        let mut tariff =
            infra::command::load::<domain::tariff::Tariff>(store, &tariff_id.stream_id())
                .await
                .unwrap()
                .state;
        let version = harness_tariff(
            tariff.versions.len() as u32 + 1,
            now - chrono::Duration::minutes(30),
            blocked,
        );
        record(
            store,
            &tariff_id.stream_id(),
            &mut tariff,
            domain::tariff::TariffCommand::Publish {
                tariff_id,
                name: "Standard".into(),
                version,
            },
            now,
        )
        .await;
        if account.daily_spend_limit_minor != daily_limit_minor {
            record(
                store,
                &stream,
                &mut account,
                AccountCommand::ChangeSpendLimit { daily_limit_minor },
                now,
            )
            .await;
        }
        let account_id = self.account_id;
        let versions = tariff.versions.len() as u32;
        self.wait_for_view(|v| {
            v.tariff_in_force(account_id, chrono::Utc::now())
                .is_some_and(|t| t.version == versions)
                && v.account(account_id)
                    .is_some_and(|a| a.daily_spend_limit_minor == daily_limit_minor)
        })
        .await;
    }

    /// Publishes the next version of alice's tariff with `rates`, in force from now, or with
    /// `correction` from the latest version's own start (so it corrects it); waits until the
    /// edge's view has it. Returns the tariff's versions.
    pub async fn publish_version(
        &self,
        rates: Vec<domain::tariff::Rate>,
        correction: bool,
    ) -> Vec<domain::tariff::TariffVersion> {
        let store = self.store.as_ref();
        let account = infra::command::load::<Account>(store, &self.account_id.stream_id())
            .await
            .unwrap()
            .state;
        let tariff_id = account.tariff_id.unwrap();
        let stream = tariff_id.stream_id();
        let mut tariff = infra::command::load::<domain::tariff::Tariff>(store, &stream)
            .await
            .unwrap()
            .state;
        let now = chrono::Utc::now();
        let latest = tariff
            .versions
            .last()
            .expect("the harness publishes version 1");
        let mut version = harness_tariff(latest.version + 1, now, &[]);
        version.rates = rates;
        if correction {
            version.effective_from = latest.effective_from;
        }
        let n = version.version;
        let publish = domain::tariff::TariffCommand::Publish {
            tariff_id,
            name: "Standard".into(),
            version,
        };
        record(store, &stream, &mut tariff, publish, now).await;
        let account_id = self.account_id;
        self.wait_for_view(|v| {
            v.tariff_in_force(account_id, chrono::Utc::now())
                .is_some_and(|t| t.version == n)
        })
        .await;
        tariff.versions
    }

    /// The account's events, decoded.
    pub async fn account_events(&self) -> Vec<domain::account::AccountEvent> {
        self.store
            .read_stream(&self.account_id.stream_id(), 1, 10_000)
            .await
            .unwrap()
            .iter()
            .filter_map(|e| match e.decode().unwrap() {
                Event::Account(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// The device's events, decoded.
    pub async fn device_events(&self) -> Vec<DeviceEvent> {
        self.store
            .read_stream(&self.device_id.stream_id(), 1, 10_000)
            .await
            .unwrap()
            .iter()
            .filter_map(|e| match e.decode().unwrap() {
                Event::Device(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// Every call's events, by call stream, in the order the calls started.
    pub async fn calls(&self) -> Vec<Vec<CallEvent>> {
        let mut calls: Vec<(String, Vec<CallEvent>)> = vec![];
        for e in self.store.read_all(0, 100_000).await.unwrap() {
            let Event::Call(c) = e.decode().unwrap() else {
                continue;
            };
            match calls.iter_mut().find(|(s, _)| *s == e.stream_id) {
                Some((_, events)) => events.push(c),
                None => calls.push((e.stream_id.clone(), vec![c])),
            }
        }
        calls.into_iter().map(|(_, events)| events).collect()
    }

    /// Waits until `n` calls have ended (up to 10 s) and returns every call's events.
    pub async fn ended_calls(&self, n: usize) -> Vec<Vec<CallEvent>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let calls = self.calls().await;
            let ended = calls
                .iter()
                .filter(|c| c.iter().any(|e| matches!(e, CallEvent::Ended { .. })))
                .count();
            if ended >= n || Instant::now() > deadline {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The billing projection brought up to date with the log: every rated leg, in the order
    /// the calls were answered.
    pub async fn rated_legs(&self) -> Vec<RatedRow> {
        use sqlx::Row;
        let db = projections::db::ProjectionDb::connect(&self.backend.url)
            .await
            .unwrap();
        let runner = projections::runner::Runner::new(
            db.clone(),
            self.store.clone(),
            Arc::new(projections::billing::Billing),
        )
        .await
        .unwrap();
        runner.catch_up().await.unwrap();
        let rows = sqlx::query(
            "SELECT account_id, extension_id, path, destination, duration_secs, billable_secs, \
             tariff_version, charge_minor FROM rated_legs ORDER BY answered_at, leg_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        rows.iter()
            .map(|r| RatedRow {
                account_id: r.get(0),
                extension_id: r.get(1),
                path: r.get(2),
                destination: r.get(3),
                duration_secs: r.get(4),
                billable_secs: r.get(5),
                tariff_version: r.get(6),
                charge_minor: r.get(7),
            })
            .collect()
    }

    /// The call history brought up to date with the log: each call's path (as an auditor
    /// reads it), in the order the calls started.
    pub async fn history_paths(&self) -> Vec<String> {
        let db = projections::db::ProjectionDb::connect(&self.backend.url)
            .await
            .unwrap();
        projections::runner::Runner::new(
            db.clone(),
            self.store.clone(),
            Arc::new(projections::call_history::CallHistory),
        )
        .await
        .unwrap()
        .catch_up()
        .await
        .unwrap();
        sqlx::query_scalar("SELECT path FROM calls ORDER BY started_at, call_id")
            .fetch_all(&db.pool)
            .await
            .unwrap()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The edge's default bounds, but trusting the carriers' caller ID for call-ins (the tests of
/// call-ins play a carrier that tells the truth; `call_in.rs` checks the default, where a
/// call-in keys its token).
pub fn trusting_carriers() -> signaling::SecuritySettings {
    signaling::SecuritySettings {
        call_in_trusts_caller_id: true,
        ..Default::default()
    }
}

/// Media relayed on 127.0.0.1 (ports 30000-39999; parallel tests skip ports another holds),
/// calls ended after `timeout` without media.
pub fn relay_settings(timeout: Duration) -> MediaSettings {
    MediaSettings {
        address: "127.0.0.1".parse().unwrap(),
        ports: (30000, 39999),
        timeout,
        prompts: Default::default(),
    }
}

/// The test edges' tariff version `n`, in force from `from` (to the microsecond): +44 at 6p a
/// minute with a 25p connect fee (60/1), +33 and +1 at 1.5p a minute (60/60).
fn harness_tariff(
    n: u32,
    from: chrono::DateTime<chrono::Utc>,
    blocked: &[&str],
) -> domain::tariff::TariffVersion {
    let rate = |prefix: &str, description: &str, per_minute_millis, connect_fee_minor, next| {
        domain::tariff::Rate {
            prefix: prefix.into(),
            description: description.into(),
            per_minute_millis,
            connect_fee_minor,
            first_increment_secs: 60,
            next_increment_secs: next,
        }
    };
    domain::tariff::TariffVersion {
        version: n,
        currency: domain::money::Currency::parse("GBP").unwrap(),
        effective_from: chrono::SubsecRound::trunc_subsecs(from, 6),
        rates: vec![
            rate("44", "United Kingdom", 6_000, 25, 1),
            rate("33", "France", 1_500, 0, 60),
            rate("1", "North America", 1_500, 0, 60),
        ],
        blocked_prefixes: blocked.iter().map(|p| p.to_string()).collect(),
        on_net: None,
    }
}

/// Records an account holding `main_number` (claimed) on a tariff of its own (version 1 of
/// `harness_tariff`) and one IP device of it.
async fn provision(
    store: &dyn EventStore,
    username: &str,
    password: &str,
    main_number: &str,
) -> (AccountId, DeviceId) {
    let account_id = AccountId::from(uuid::Uuid::now_v7());
    let device_id = DeviceId::from(uuid::Uuid::now_v7());
    let now = chrono::Utc::now();
    let number = E164::parse(main_number).unwrap();
    let tariff_id = TariffId::from(uuid::Uuid::now_v7());
    record(
        store,
        &tariff_id.stream_id(),
        &mut domain::tariff::Tariff::default(),
        domain::tariff::TariffCommand::Publish {
            tariff_id,
            name: "Standard".into(),
            version: harness_tariff(1, now - chrono::Duration::hours(1), &[]),
        },
        now,
    )
    .await;
    let mut account = Account::default();
    record(
        store,
        &account_id.stream_id(),
        &mut account,
        AccountCommand::Open {
            account_id,
            name: username.into(),
            main_number: number.clone(),
            tariff_id,
            currency: domain::money::Currency::parse("GBP").unwrap(),
            max_extensions: None,
        },
        now,
    )
    .await;
    record(
        store,
        &domain::number::stream_id(&number),
        &mut domain::number::NumberClaim::default(),
        domain::number::NumberCommand::Claim {
            number: number.clone(),
            account_id,
            role: domain::number::NumberRole::Main,
        },
        now,
    )
    .await;
    record(
        store,
        &device_id.stream_id(),
        &mut Device::default(),
        DeviceCommand::Provision {
            device_id,
            account,
            sip_username: username.into(),
            realm: REALM.into(),
            password: password.into(),
        },
        now,
    )
    .await;
    (account_id, device_id)
}

/// The registrar limits test edges run with (the shipped defaults but for expiries).
pub fn registrar_settings() -> signaling::RegistrarSettings {
    signaling::RegistrarSettings {
        min_expires: 60,
        max_expires: 3600,
        max_contacts_per_request: 5,
        contact_limit: domain::device::ContactLimit::default(),
    }
}

/// A minimal SIP user agent over UDP for tests of the edge's own rules; interop is proved with
/// SIPp, baresip and pjsua2 elsewhere.
pub struct UdpPeer {
    pub socket: tokio::net::UdpSocket,
    pub addr: SocketAddr,
    pub edge: SocketAddr,
}

impl UdpPeer {
    /// A peer on another loopback address (another host, as far as the edge can tell).
    pub async fn on(ip: &str, edge: SocketAddr) -> Self {
        let socket = tokio::net::UdpSocket::bind((ip, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        Self { socket, addr, edge }
    }

    pub async fn new(edge: SocketAddr) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        Self { socket, addr, edge }
    }

    pub async fn send(&self, message: &str) {
        self.socket
            .send_to(message.as_bytes(), self.edge)
            .await
            .unwrap();
    }

    /// The next message, or `None` after `wait`.
    pub async fn recv(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 65_536];
        match tokio::time::timeout(wait, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => None,
        }
    }

    pub async fn exchange(&self, message: &str) -> String {
        self.send(message).await;
        self.recv(Duration::from_secs(5))
            .await
            .expect("the edge answers")
    }
}

/// The status code of a response.
pub fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Every value of a header in a response (full names only; the edge writes full names).
pub fn header_values<'a>(response: &'a str, name: &str) -> Vec<&'a str> {
    response
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// A REGISTER from `peer` for alice; `extra` is inserted before Content-Length.
pub fn register(peer: &UdpPeer, branch: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {addr};rport;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{USERNAME}@{REALM}>;tag=t{branch}\r\n\
         To: <sip:{USERNAME}@{REALM}>\r\n\
         Call-ID: reg-{port}@127.0.0.1\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{USERNAME}@{addr}>\r\n\
         User-Agent: ringledger-tests\r\n\
         {extra}Content-Length: 0\r\n\r\n",
        addr = peer.addr,
        port = peer.addr.port(),
    )
}

/// The Authorization a client computes for `challenge` (a WWW-Authenticate value).
pub fn authorization(
    challenge: &str,
    algorithm: Algorithm,
    password: &str,
    nc: u32,
    uri: &str,
) -> String {
    format!(
        "Authorization: {}\r\n",
        credentials(challenge, algorithm, password, nc, "REGISTER", uri)
    )
}

/// The digest credentials (qop=auth) alice sends for `method` to `uri` under `challenge`.
pub fn credentials(
    challenge: &str,
    algorithm: Algorithm,
    password: &str,
    nc: u32,
    method: &str,
    uri: &str,
) -> String {
    credentials_of(USERNAME, challenge, algorithm, password, nc, method, uri)
}

/// The same for another user.
pub fn credentials_of(
    username: &str,
    challenge: &str,
    algorithm: Algorithm,
    password: &str,
    nc: u32,
    method: &str,
    uri: &str,
) -> String {
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a nonce");
    let ha1 = algorithm.hash(&format!("{username}:{REALM}:{password}"));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let cnonce = "0a4f113b";
    let nc = format!("{nc:08x}");
    let response = algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"{username}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
         uri=\"{uri}\", response=\"{response}\", algorithm={}, qop=auth, nc={nc}, \
         cnonce=\"{cnonce}\"",
        algorithm.name()
    )
}

/// The first value of a header in a message.
pub fn header<'a>(message: &'a str, name: &str) -> &'a str {
    header_values(message, name).first().copied().unwrap_or("")
}

/// A response to `request` as a user agent writes it: its Vias, From, To (tagged with
/// `to_tag` past 100), Call-ID and CSeq, a Contact when given, and `body` as SDP.
pub fn respond_to(
    request: &str,
    status: u16,
    to_tag: &str,
    contact: Option<SocketAddr>,
    body: &str,
) -> String {
    let mut out = format!("SIP/2.0 {status} Whatever\r\n");
    for via in header_values(request, "Via") {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    let to = header(request, "To");
    let to = if status > 100 && !to.contains(";tag=") {
        format!("{to};tag={to_tag}")
    } else {
        to.to_string()
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        header(request, "From"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
    ));
    if let Some(contact) = contact {
        out.push_str(&format!("Contact: <sip:callee@{contact}>\r\n"));
    }
    if !body.is_empty() {
        out.push_str("Content-Type: application/sdp\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

impl UdpPeer {
    /// Waits (up to 5 s) for a request with this method, passing over anything else.
    pub async fn expect_request(&self, method: &str) -> String {
        self.expect_request_within(method, Duration::from_secs(5))
            .await
    }

    /// The same, waiting up to `wait`.
    pub async fn expect_request_within(&self, method: &str, wait: Duration) -> String {
        self.expect(|m| m.starts_with(&format!("{method} ")), method, wait)
            .await
    }

    /// Waits (up to 5 s) for a response with this status, passing over anything else.
    pub async fn expect_status(&self, status_code: u16) -> String {
        self.expect(
            |m| m.starts_with("SIP/2.0 ") && status(m) == status_code,
            &status_code.to_string(),
            Duration::from_secs(5),
        )
        .await
    }

    async fn expect(&self, wanted: impl Fn(&str) -> bool, what: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        let mut seen = vec![];
        while let Some(m) = self
            .recv(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if wanted(&m) {
                return m;
            }
            seen.push(m.lines().next().unwrap_or_default().to_string());
        }
        panic!("{} never got {what}; it got {seen:?}", self.addr);
    }
}
