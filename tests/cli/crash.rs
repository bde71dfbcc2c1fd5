//! `kill -9` of `ringledger serve` under 16 writers opening accounts and registering
//! extensions, three times over one store, on SQLite and on PostgreSQL: after each restart
//! every acknowledged write is there, and once the recovery pass has run no number is held by
//! nothing and no Idempotency-Key stays claimed.

use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ready_field, ringledger, serve_until_ready, try_http};

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path, url: &str) -> Self {
        let mut serve = ringledger(dir);
        serve
            .arg("serve")
            .env("RINGLEDGER_STORE__URL", url)
            .env("RINGLEDGER_API__LISTEN", "127.0.0.1:0")
            .env("RINGLEDGER_SIP__LISTEN", "127.0.0.1:0")
            .env("RINGLEDGER_API__WORKFLOW_GRACE_SECS", "1")
            .env("RINGLEDGER_API__RECOVERY_INTERVAL_SECS", "1");
        let (child, ready) = serve_until_ready(serve);
        Self {
            child,
            addr: ready_field(&ready, "api"),
        }
    }

    fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TARIFF: &str = r#"{"name": "UK", "currency": "GBP", "effective_from": "2026-01-01T00:00:00Z",
    "rates": [{"prefix": "44", "description": "UK", "per_minute_millis": 2000,
    "connect_fee_minor": 0, "first_increment_secs": 60, "next_increment_secs": 60}]}"#;

fn field(body: &str, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v[name].as_str().unwrap_or_default().to_owned()
}

#[derive(Default)]
struct Acked {
    accounts: Vec<String>,
    extensions: Vec<String>,
}

/// Writer `w` of run `run` opens accounts (and an extension on every other one) until a
/// request fails because the server is gone or `stop` is set.
fn writer(
    addr: &str,
    key: &str,
    tariff: &str,
    run: usize,
    w: usize,
    acked: &Mutex<Acked>,
    stop: &AtomicBool,
) {
    for i in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let number = format!("+4420{run}{w:02}{i:05}");
        let body = format!(
            r#"{{"name": "Crash", "main_number": "{number}", "tariff_id": "{tariff}", "currency": "GBP"}}"#
        );
        let idem = format!("open-{run}-{w}-{i}");
        let Ok((status, reply)) = try_http(
            addr,
            "POST",
            "/v1/accounts",
            Some(key),
            &[("Idempotency-Key", &idem)],
            &body,
        ) else {
            return;
        };
        if status != 201 {
            continue;
        }
        let account = field(&reply, "account_id");
        acked.lock().unwrap().accounts.push(account.clone());
        if i % 2 == 1 {
            continue;
        }
        let body = format!(
            r#"{{"number": "+447{run}{w:02}{i:06}", "native_provider": "O2", "kind": "mobile"}}"#
        );
        let idem = format!("ext-{run}-{w}-{i}");
        let path = format!("/v1/accounts/{account}/extensions");
        let Ok((status, reply)) = try_http(
            addr,
            "POST",
            &path,
            Some(key),
            &[("Idempotency-Key", &idem)],
            &body,
        ) else {
            return;
        };
        if status == 201 {
            acked
                .lock()
                .unwrap()
                .extensions
                .push(field(&reply, "extension_id"));
        }
    }
}

async fn scalar(db: &projections::db::ProjectionDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Numbers held by nothing, workflows half-done, keys still claimed.
async fn leftovers(db: &projections::db::ProjectionDb) -> (i64, i64, i64) {
    let orphans = scalar(
        db,
        "SELECT COUNT(*) FROM routing_numbers n WHERE (n.role = 'main' AND NOT EXISTS \
         (SELECT 1 FROM routing_accounts a WHERE a.account_id = n.account_id)) OR \
         (n.role = 'extension' AND NOT EXISTS (SELECT 1 FROM routing_extensions e \
         WHERE e.extension_id = n.extension_id AND e.status <> 'removed'))",
    )
    .await;
    let open = scalar(db, "SELECT COUNT(DISTINCT number) FROM workflow_steps").await;
    let keys = scalar(
        db,
        "SELECT COUNT(*) FROM api_idempotency WHERE status IS NULL",
    )
    .await;
    (orphans, open, keys)
}

fn kill_9_three_times(dir: &Path, url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let projections_url = infra::config::projections_next_to(url).unwrap_or_else(|| url.to_owned());
    let mut server = Server::start(dir, url);
    let created = ringledger(dir)
        .env("RINGLEDGER_STORE__URL", url)
        .args(["keys", "create", "--role", "admin", "--name", "crash test"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let (status, reply) =
        try_http(&server.addr, "POST", "/v1/tariffs", Some(&key), &[], TARIFF).unwrap();
    assert_eq!(status, 201, "{reply}");
    let tariff = field(&reply, "tariff_id");
    let acked = Arc::new(Mutex::new(Acked::default()));
    for run in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let (addr, key, tariff) = (server.addr.clone(), key.clone(), tariff.clone());
                let (acked, stop) = (acked.clone(), stop.clone());
                std::thread::spawn(move || writer(&addr, &key, &tariff, run, w, &acked, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1200 + 400 * run as u64));
        server.kill_9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        server = Server::start(dir, url);
        let a = acked.lock().unwrap();
        assert!(
            a.accounts.len() > 20 * (run + 1),
            "only {} writes acked",
            a.accounts.len()
        );
        for (what, path, ids) in [
            ("account", "accounts", &a.accounts),
            ("extension", "extensions", &a.extensions),
        ] {
            for id in ids {
                let url = format!("/v1/{path}/{id}");
                let (status, body) =
                    try_http(&server.addr, "GET", &url, Some(&key), &[], "").unwrap();
                assert_eq!(
                    status, 200,
                    "acked {what} {id} lost after kill -9 run {run}: {body}"
                );
            }
        }
        eprintln!(
            "run {run}: {} accounts and {} extensions acked so far",
            a.accounts.len(),
            a.extensions.len()
        );
        drop(a);
        // The recovery pass (grace 1 s, every 1 s) settles what the kill interrupted.
        let settled = rt.block_on(async {
            let db = projections::db::ProjectionDb::connect(&projections_url)
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            eprintln!("run {run}: left by the kill {:?}", leftovers(&db).await);
            loop {
                let left = leftovers(&db).await;
                if left == (0, 0, 0) || Instant::now() > deadline {
                    db.pool.close().await;
                    return left;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        assert_eq!(
            settled,
            (0, 0, 0),
            "orphan claims, open workflows, stuck keys after run {run}"
        );
    }
    server.kill_9();
}

#[test]
fn kill_9_under_writers_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    kill_9_three_times(dir.path(), &url);
}

#[test]
fn kill_9_under_writers_postgres() {
    use sqlx::Connection;
    let server = std::env::var("RINGLEDGER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("ringledger_crash_{}", uuid::Uuid::new_v4().simple());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin_url = format!("{server}/postgres");
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    kill_9_three_times(dir.path(), &format!("{server}/{name}"));
    rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await;
    });
}
