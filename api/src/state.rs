//! What every request handler shares: the event store, the projections' database (reads, API
//! keys, idempotency records), metrics and the settings the API needs.

use std::sync::Arc;

use infra::EventStore;
use infra::config::CodeDelivery;
use infra::delivery::CodeSender;
use infra::folded::FoldedStates;
use projections::db::ProjectionDb;

use crate::idempotency::IdempotencyRecords;
use crate::keys::KeyStore;
use crate::live_tail::LiveTails;
use crate::metrics::Metrics;
use crate::route_limits::{RouteCaps, RouteLimits};

/// Streams whose folded state the API keeps (accounts, numbers, extensions, devices): a few
/// KiB each at most, so a few tens of MiB in all.
const FOLDED_STATES: usize = 8192;

#[derive(Clone)]
pub struct ApiSettings {
    /// The SIP digest realm of provisioned devices.
    pub realm: String,
    pub code_delivery: CodeDelivery,
    /// Where codes go with `code_delivery = "send"`: the SMS gateway (None: the server log)
    /// and the SIP edge's flash calls (None: flash calls cannot be offered).
    pub sms: Option<Arc<dyn CodeSender>>,
    pub flash_call: Option<Arc<dyn CodeSender>>,
    /// `/readyz` is 503 while a projection's oldest unapplied event is older than this.
    pub ready_max_lag: std::time::Duration,
    /// Live tails open at once, and how far (in events) one may fall behind before it is
    /// ended with a position to resume from.
    pub max_live_tails: usize,
    pub live_tail_buffer: usize,
    /// Requests of each kind in flight at once (`route_limits`).
    pub route_caps: RouteCaps,
    /// How long a client has to send a request's body.
    pub body_read_timeout: std::time::Duration,
}

impl ApiSettings {
    /// `realm` and `code_delivery` with no SMS gateway or flash calls, and the configuration's
    /// default bounds.
    pub fn new(realm: &str, code_delivery: CodeDelivery) -> Self {
        Self {
            realm: realm.to_owned(),
            code_delivery,
            sms: None,
            flash_call: None,
            ready_max_lag: std::time::Duration::from_secs(30),
            max_live_tails: 64,
            live_tail_buffer: 1024,
            route_caps: RouteCaps::default(),
            body_read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Another part of the process that reports in `/metrics` (the SIP edge): it appends its
/// lines in the Prometheus text format.
pub type MetricsSource = Arc<dyn Fn(&mut String) + Send + Sync>;

pub struct AppState {
    pub store: Arc<dyn EventStore>,
    /// States the API's commands folded last, so the next one on a stream folds only newer
    /// events.
    pub folded: FoldedStates,
    pub db: ProjectionDb,
    pub keys: KeyStore,
    pub idempotency: IdempotencyRecords,
    pub metrics: Metrics,
    pub settings: ApiSettings,
    pub live_tails: LiveTails,
    pub route_limits: RouteLimits,
    /// Set when the server shuts down, so open live tails end.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Rendered after the API's own metrics.
    pub metrics_sources: Vec<MetricsSource>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    /// Prepares the API's own tables in `db`.
    pub async fn new(
        store: Arc<dyn EventStore>,
        db: ProjectionDb,
        settings: ApiSettings,
        metrics_sources: Vec<MetricsSource>,
    ) -> Result<Shared, sqlx::Error> {
        Ok(Arc::new(Self {
            keys: KeyStore::open(db.clone()).await?,
            idempotency: IdempotencyRecords::open(db.clone()).await?,
            store,
            folded: FoldedStates::new(FOLDED_STATES),
            db,
            metrics: Metrics::default(),
            live_tails: LiveTails::new(settings.max_live_tails, settings.live_tail_buffer),
            route_limits: RouteLimits::new(settings.route_caps),
            settings,
            closing: tokio::sync::watch::Sender::new(false),
            metrics_sources,
        }))
    }
}
