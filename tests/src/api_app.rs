//! The HTTP API started for a test the way `ringledger serve` starts it: a fresh store (SQLite
//! file or PostgreSQL database), the projection runners following it, the API bound to
//! 127.0.0.1:0, and one key per role. Requests go over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use infra::EventStore;
use infra::config::CodeDelivery;
use projections::db::ProjectionDb;
use projections::rebuild::all_projections;
use projections::runner::Runner;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::harness::Backend;

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub admin: String,
    pub billing: String,
    pub auditor: String,
    /// The admin key's id (the `actor` of what it writes is `key:<id>`).
    pub admin_key_id: String,
    pub store: Arc<dyn EventStore>,
    pub db: ProjectionDb,
    /// The API's state, for calling its recovery pass directly.
    pub state: api::Shared,
    pub backend: Backend,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// With verification codes returned in the API's responses.
    pub async fn spawn(backend: Backend) -> Self {
        let settings = api::ApiSettings::new("ringledger.test", CodeDelivery::Response);
        Self::spawn_with(backend, settings).await
    }

    pub async fn spawn_with(backend: Backend, settings: api::ApiSettings) -> Self {
        Self::spawn_limited(backend, settings, api::HttpLimits::default()).await
    }

    /// With the HTTP connection limits `limits`.
    pub async fn spawn_limited(
        backend: Backend,
        settings: api::ApiSettings,
        limits: api::HttpLimits,
    ) -> Self {
        let store = backend.open().await;
        let db = ProjectionDb::connect(&backend.url)
            .await
            .expect("projection db");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for p in all_projections() {
            let runner = Runner::new(db.clone(), store.clone(), p)
                .await
                .expect("runner");
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let _ = runner
                    .run(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        }
        let api_db = ProjectionDb::connect_pool(&backend.url, 8)
            .await
            .expect("api db");
        let state = api::AppState::new(store.clone(), api_db, settings, vec![])
            .await
            .expect("api state");
        let admin = state
            .keys
            .create(api::keys::Role::Admin, "test admin")
            .await
            .unwrap();
        let billing = state
            .keys
            .create(api::keys::Role::Billing, "test billing")
            .await
            .unwrap();
        let auditor = state
            .keys
            .create(api::keys::Role::Auditor, "test auditor")
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut stopped = stopped.clone();
        let served = state.clone();
        tasks.push(tokio::spawn(async move {
            let _ = api::serve(listener, served, limits, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        }));
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            admin: admin.token,
            admin_key_id: admin.key_id,
            billing: billing.token,
            auditor: auditor.token,
            store,
            db,
            state,
            backend,
            stop,
            tasks,
        }
    }

    pub fn request(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// An admin request with a JSON body; returns status and body.
    pub async fn admin_json(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .request(method, path, Some(&self.admin))
            .json(&body)
            .send()
            .await
            .expect("request");
        status_json(r).await
    }

    /// A GET with `key`; returns status and JSON body.
    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .request(Method::GET, path, Some(key))
            .send()
            .await
            .expect("request");
        status_json(r).await
    }

    /// Waits (at most 10 s) until every projection has applied the log's head.
    pub async fn projections_caught_up(&self) {
        let head = self.store.head_position().await.unwrap();
        let expected = all_projections().len() as i64;
        for _ in 0..1000 {
            let caught_up: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM projection_checkpoints WHERE position >= $1",
            )
            .bind(head as i64)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            if caught_up == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("projections did not reach position {head} within 10 s");
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

pub async fn status_json(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A tariff for UK numbers (20p a minute, per minute), blocking 449 (premium rate).
pub fn tariff_body() -> Value {
    json!({
        "name": "UK retail",
        "currency": "GBP",
        "effective_from": "2026-01-01T00:00:00Z",
        "rates": [{"prefix": "44", "description": "UK", "per_minute_millis": 2000,
                   "connect_fee_minor": 0, "first_increment_secs": 60, "next_increment_secs": 60}],
        "blocked_prefixes": ["449"]
    })
}

pub async fn tariff(app: &TestApp) -> String {
    let (status, body) = app
        .admin_json(Method::POST, "/v1/tariffs", tariff_body())
        .await;
    assert_eq!(status, 201, "{body}");
    body["tariff_id"].as_str().unwrap().to_owned()
}

/// Opens an account on a fresh tariff; returns its id.
pub async fn account(app: &TestApp, main_number: &str) -> String {
    let tariff_id = tariff(app).await;
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"name": "Ada", "main_number": main_number, "tariff_id": tariff_id, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["account_id"].as_str().unwrap().to_owned()
}

pub async fn extension(app: &TestApp, account_id: &str, number: &str) -> (u16, Value) {
    app.admin_json(
        Method::POST,
        &format!("/v1/accounts/{account_id}/extensions"),
        json!({"number": number, "native_provider": "Vodafone UK", "kind": "mobile"}),
    )
    .await
}
