//! Fresh, isolated stores: a SQLite file in a temporary directory, or a PostgreSQL database
//! created for the test and dropped after it (on the machine's server at 127.0.0.1:5432 unless
//! `RINGLEDGER_TEST_PG` names another), or EventStoreDB when `EVENTSTORE_URL` is set.

use std::sync::Arc;

use infra::{EventStore, NewEvent};
use uuid::Uuid;

/// Where tests find PostgreSQL: a server URL without a database name.
pub fn pg_server() -> String {
    std::env::var("RINGLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A backend under test: its url, what it guarantees beyond the contract, and what to clean.
pub struct Backend {
    pub url: String,
    /// Positions are 1, 2, 3... with no holes (the SQL backends).
    pub dense_positions: bool,
    /// Database constraints can refuse an event after it passed validation (the SQL backends).
    pub database_checks: bool,
    /// The hash chain runs over global order and event ids are unique across the whole log
    /// (the SQL backends; EventStoreDB chains and de-duplicates per stream).
    pub global_chain: bool,
    _cleanup: Cleanup,
}

enum Cleanup {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    PgDatabase(String),
    Nothing,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Cleanup::PgDatabase(name) = self {
            let name = name.clone();
            // Drop runs outside any runtime guarantee; use a private one on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    use sqlx::Connection;
                    let mut admin =
                        sqlx::PgConnection::connect(&format!("{}/postgres", pg_server())).await?;
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                })
                .map_err(std::io::Error::other)
            })
            .join();
        }
    }
}

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        Self {
            url,
            dense_positions: true,
            database_checks: true,
            global_chain: true,
            _cleanup: Cleanup::Dir(dir),
        }
    }

    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let name = format!("ringledger_test_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server()))
            .await
            .expect("PostgreSQL at RINGLEDGER_TEST_PG (default 127.0.0.1:5432) must be running");
        let sql = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("create test database");
        Self {
            url: format!("{}/{name}", pg_server()),
            dense_positions: true,
            database_checks: true,
            global_chain: true,
            _cleanup: Cleanup::PgDatabase(name),
        }
    }

    /// EventStoreDB when `EVENTSTORE_URL` is set (no server can be installed on the CI machines).
    pub fn eventstoredb() -> Option<Self> {
        let url = std::env::var("EVENTSTORE_URL").ok()?;
        Some(Self {
            url,
            dense_positions: false,
            database_checks: false,
            global_chain: false,
            _cleanup: Cleanup::Nothing,
        })
    }

    /// Runs raw SQL on the backend's database, behind the store's back (tamper tests).
    pub async fn execute_sql(&self, sql: &str) {
        use sqlx::Connection;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("connect sqlite");
            sqlx::raw_sql(sql)
                .execute(&mut c)
                .await
                .expect("tamper sql");
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect postgres");
            sqlx::raw_sql(sql)
                .execute(&mut c)
                .await
                .expect("tamper sql");
        }
    }

    /// A new handle on the backend: its own writer task and connections, like another process.
    pub async fn open(&self) -> Arc<dyn EventStore> {
        infra::open_store(&self.url).await.expect("open store")
    }
}

/// A test event with a payload that names its writer and sequence number.
pub fn event(writer: usize, n: usize) -> NewEvent {
    let event_id = Uuid::now_v7();
    NewEvent {
        event_id,
        event_type: "test.happened".into(),
        schema_version: 1,
        payload: serde_json::json!({ "writer": writer, "n": n, "note": "ünïcödé ☎" }),
        occurred_at: chrono::Utc::now(),
        correlation_id: event_id,
        causation_id: None,
        actor: format!("writer-{writer}"),
    }
}

/// Decides `command` against `state` at `at`, applies the events to `state` and appends them to
/// `stream` — the way a command handler records what the domain decided.
pub async fn record<A: domain::Aggregate>(
    store: &dyn EventStore,
    stream: &str,
    state: &mut A,
    command: A::Command,
    at: chrono::DateTime<chrono::Utc>,
) {
    let events = state
        .decide(&command, at)
        .expect("the domain accepts the command");
    let new: Vec<_> = events
        .iter()
        .map(|e| {
            state.apply(e);
            NewEvent::from_domain(e, at, "test")
        })
        .collect();
    store
        .append(stream, infra::ExpectedVersion::Any, new)
        .await
        .expect("append");
}

/// The first two steps of a call out from +442071838750 to `destination` through the carrier:
/// the call started on `account` (not through an edge), and its one leg to the public network.
pub fn pstn_call_out(
    call_id: domain::ids::CallId,
    leg_id: domain::ids::LegId,
    account: &domain::account::Account,
    destination: &str,
) -> [domain::call::CallCommand; 2] {
    use domain::call::{CallCommand, Direction, LegRole, LegTarget, Origin, Path};
    [
        CallCommand::Start {
            edge_id: None,
            keypad: false,
            call_id,
            direction: Direction::Outbound,
            from: "+442071838750".into(),
            to: destination.into(),
            origin: Origin::Pstn {
                trunk: "carrier".into(),
            },
            path: Path::Pstn,
            account: account.clone(),
            extension: None,
            pin: None,
            dial_intent: None,
        },
        CallCommand::StartLeg {
            leg_id,
            target: LegTarget::Pstn {
                number: domain::E164::parse(destination).expect("an E.164 destination"),
            },
            path: Path::Pstn,
            role: LegRole::Callee,
            account: account.clone(),
            extension: None,
        },
    ]
}

/// Appends the workload's next steps until at least `min_events` were written; returns how many.
pub async fn append_workload(
    store: &dyn EventStore,
    workload: &mut projections::workload::Workload,
    min_events: usize,
) -> usize {
    let mut written = 0;
    while written < min_events {
        for a in workload.step() {
            written += a.events.len();
            store
                .append(
                    &a.stream_id,
                    infra::ExpectedVersion::Any,
                    a.new_events("workload"),
                )
                .await
                .expect("append");
        }
    }
    written
}
