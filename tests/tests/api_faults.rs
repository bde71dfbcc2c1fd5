//! The HTTP API under faults and hostile clients, over real sockets, on SQLite and PostgreSQL:
//! clients that hang up mid-request, workflows interrupted between their appends (as a killed
//! process leaves them), retryable conflicts and Idempotency-Keys, secrets shown once, made-up
//! methods against `/metrics`, idle and slow connections, readiness with a stuck projection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use api::extract::Ctx;
use api::workflows::{Recovered, RecoverySettings, recover};
use domain::E164;
use domain::account::{AccountCommand, AccountStatus};
use domain::extension::{ExtensionCommand, ExtensionKind};
use domain::ids::{AccountId, ExtensionId};
use domain::number::{NumberClaim, NumberCommand, NumberRole};
use reqwest::Method;
use ringledger_tests::api_app::{TestApp, account, extension, tariff};
use ringledger_tests::harness::Backend;
use ringledger_tests::on_both_backends;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use uuid::Uuid;

on_both_backends!(
    hung_up_clients_leave_no_orphan,
    interrupted_workflows_are_recovered,
    closing_an_account_gives_its_numbers_back,
    an_interrupted_closing_is_finished,
    secrets_are_not_kept,
    a_damaged_row_is_named,
    small_refusals,
    another_servers_writes_are_not_overlooked,
);

fn settle_now() -> RecoverySettings {
    RecoverySettings {
        grace: Duration::ZERO,
        ..RecoverySettings::default()
    }
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// Claims nobody owns, from the read models: main numbers of accounts that were never opened,
/// extension numbers of extensions never requested or not attached to their account.
async fn orphan_claims(app: &TestApp) -> i64 {
    count(
        app,
        "SELECT COUNT(*) FROM routing_numbers n WHERE (n.role = 'main' AND NOT EXISTS \
         (SELECT 1 FROM routing_accounts a WHERE a.account_id = n.account_id)) OR \
         (n.role = 'extension' AND NOT EXISTS (SELECT 1 FROM routing_extensions e \
         WHERE e.extension_id = n.extension_id AND e.status <> 'removed'))",
    )
    .await
}

/// Writes a whole request on a raw socket and hangs up `wait` after, without reading.
async fn post_and_hang_up(app: &TestApp, path: &str, key: &str, body: &Value, wait: Duration) {
    let addr = app.base.trim_start_matches("http://");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        app.admin,
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(wait).await;
    drop(s);
}

/// Waits until no request holds an Idempotency-Key and the log has stopped growing.
async fn quiet(app: &TestApp) {
    let mut last = u64::MAX;
    for _ in 0..300 {
        let running = count(
            app,
            "SELECT COUNT(*) FROM api_idempotency WHERE status IS NULL",
        )
        .await;
        let head = app.store.head_position().await.unwrap();
        if running == 0 && head == last {
            app.projections_caught_up().await;
            return;
        }
        last = head;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("requests were still running after 30 s");
}

/// 120 account openings and 120 extension registrations, each written whole and then hung up
/// on 0–5 ms later (between the number claim and the rest, often): every one finishes, nothing
/// is left claimed by nobody, no key stays claimed, and a retry with the same key gets the
/// request's own answer.
async fn hung_up_clients_leave_no_orphan(b: Backend) {
    let app = TestApp::spawn(b).await;
    let tariff_id = tariff(&app).await;
    let app_ref = &app;
    let owners: Vec<String> = futures::future::join_all(
        (0..24).map(|i| async move { account(app_ref, &format!("+44163296{i:04}")).await }),
    )
    .await;
    let mut requests = Vec::new();
    for i in 0..120 {
        let body = json!({"name": "Hangup", "main_number": format!("+44163297{i:04}"),
            "tariff_id": tariff_id, "currency": "GBP"});
        requests.push(("/v1/accounts".to_owned(), format!("open-{i}"), body));
        let owner = &owners[i % owners.len()];
        let body = json!({"number": format!("+44770090{i:04}"), "native_provider": "Vodafone UK",
            "kind": "mobile"});
        requests.push((
            format!("/v1/accounts/{owner}/extensions"),
            format!("ext-{i}"),
            body,
        ));
    }
    for chunk in requests.chunks(16) {
        futures::future::join_all(chunk.iter().enumerate().map(|(j, (path, key, body))| {
            post_and_hang_up(&app, path, key, body, Duration::from_millis(j as u64 % 6))
        }))
        .await;
    }
    quiet(&app).await;
    assert_eq!(orphan_claims(&app).await, 0, "numbers held by nothing");
    assert_eq!(
        count(&app, "SELECT COUNT(DISTINCT number) FROM workflow_steps").await,
        0,
        "workflows left half-done"
    );
    // Nothing for the recovery pass to do: the requests finished on their own.
    let done = recover(&app.state, &settle_now()).await.unwrap();
    assert_eq!(done, Recovered::default());
    // A retry after the hang-up gets the answer the client missed — or, where that answer
    // was a conflict a retry resolves (concurrent registrations on one account), runs again.
    let mut replayed = 0;
    for (path, key, body) in &requests {
        let r = app
            .request(Method::POST, path, Some(&app.admin))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        replayed += usize::from(r.headers().contains_key("idempotent-replayed"));
        assert_eq!(status, 201, "{path} {key}: {}", r.text().await.unwrap());
    }
    assert!(
        replayed >= 200,
        "only {replayed} of 240 retries were replays"
    );
    app.projections_caught_up().await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM routing_accounts WHERE name = 'Hangup'"
        )
        .await,
        120
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM routing_extensions WHERE status <> 'removed'"
        )
        .await,
        120
    );
    assert_eq!(orphan_claims(&app).await, 0);
    app.shutdown().await;
}

fn e164(s: &str) -> E164 {
    E164::parse(s).unwrap()
}

/// Claims `number` for `account_id` in `role`, as the first step of a workflow.
async fn claim(
    state: &api::AppState,
    ctx: &Ctx,
    number: &str,
    account_id: AccountId,
    role: NumberRole,
) {
    let command = NumberCommand::Claim {
        number: e164(number),
        account_id,
        role,
    };
    let stream = domain::number::stream_id(&e164(number));
    api::commands::execute::<NumberClaim>(state, ctx, &stream, None, &command)
        .await
        .unwrap();
}

/// The log as a process killed between a workflow's appends leaves it, written step by step:
/// the recovery pass leaves young workflows alone, then releases what has no owner, finishes
/// an extension whose attachment is missing, and frees a key whose request died.
async fn interrupted_workflows_are_recovered(b: Backend) {
    use api::commands::execute;
    let app = TestApp::spawn(b).await;
    let owner: AccountId = AccountId(account(&app, "+441632960001").await.parse().unwrap());
    let ctx = Ctx::system("test:crashed-request");
    let state = &app.state;
    // 1. An account's main number claimed; the process died before the account was opened.
    let never_opened = AccountId(Uuid::now_v7());
    claim(state, &ctx, "+441632960100", never_opened, NumberRole::Main).await;
    // 2. An extension's number claimed and the extension requested; not attached.
    let loaded = api::commands::load::<domain::account::Account>(state, &owner.stream_id())
        .await
        .unwrap();
    assert_eq!(loaded.state.status, AccountStatus::Active);
    let unattached = ExtensionId(Uuid::now_v7());
    claim(
        state,
        &ctx,
        "+447700900101",
        owner,
        NumberRole::Extension {
            extension_id: unattached,
        },
    )
    .await;
    let request = ExtensionCommand::Request {
        extension_id: unattached,
        account: loaded.state.clone(),
        number: e164("+447700900101"),
        native_provider: "Vodafone UK".into(),
        kind: ExtensionKind::Mobile,
    };
    execute::<domain::extension::Extension>(state, &ctx, &unattached.stream_id(), None, &request)
        .await
        .unwrap();
    // 3. An extension's number claimed and attached to the account; never requested.
    let unrequested = ExtensionId(Uuid::now_v7());
    claim(
        state,
        &ctx,
        "+447700900102",
        owner,
        NumberRole::Extension {
            extension_id: unrequested,
        },
    )
    .await;
    let attach = AccountCommand::AttachExtension {
        extension_id: unrequested,
        number: e164("+447700900102"),
    };
    execute::<domain::account::Account>(state, &ctx, &owner.stream_id(), None, &attach)
        .await
        .unwrap();
    // 4. An Idempotency-Key claimed by a request whose process died.
    let stale = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    sqlx::query(
        "INSERT INTO api_idempotency (key_id, idempotency_key, request_hash, created_at) \
         VALUES ($1, 'died', 'x', $2)",
    )
    .bind(&app.admin_key_id)
    .bind(&stale)
    .execute(&app.db.pool)
    .await
    .unwrap();
    app.projections_caught_up().await;
    assert_eq!(
        count(&app, "SELECT COUNT(DISTINCT number) FROM workflow_steps").await,
        3
    );

    // Young workflows may still be running elsewhere: left alone.
    let patient = RecoverySettings {
        grace: Duration::from_secs(3600),
        ..RecoverySettings::default()
    };
    let done = recover(state, &patient).await.unwrap();
    assert_eq!(
        (done.completed, done.compensated, done.keys_freed),
        (0, 0, 0)
    );

    let done = recover(state, &settle_now()).await.unwrap();
    assert_eq!(done.compensated, 2, "{done:?}");
    assert_eq!(done.completed, 1, "{done:?}");
    assert_eq!(done.keys_freed, 1, "{done:?}");
    app.projections_caught_up().await;
    assert_eq!(
        count(&app, "SELECT COUNT(DISTINCT number) FROM workflow_steps").await,
        0
    );
    assert_eq!(orphan_claims(&app).await, 0);
    // The released numbers can be used again, the finished extension is the account's, and
    // the freed key runs its request.
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"name": "Again", "main_number": "+441632960100",
                "tariff_id": tariff(&app).await, "currency": "GBP"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        ringledger_tests::api_app::extension(&app, &owner.to_string(), "+447700900102").await;
    assert_eq!(status, 201, "{body}");
    let (_, acc) = app.get(&format!("/v1/accounts/{owner}"), &app.admin).await;
    let ids: Vec<&str> = acc["extension_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ids.contains(&unattached.to_string().as_str()), "{acc}");
    assert!(!ids.contains(&unrequested.to_string().as_str()), "{acc}");
    let r = app
        .request(
            Method::POST,
            &format!("/v1/accounts/{owner}/suspend"),
            Some(&app.admin),
        )
        .header("Idempotency-Key", "died")
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    // What the pass wrote is in the log under its own name.
    let by_recovery: Vec<String> = app
        .store
        .read_all(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == api::workflows::ACTOR)
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        by_recovery,
        [
            "number.released",
            "account.extension_attached",
            "account.extension_detached",
            "number.released"
        ],
        "in the order the pass settled them (oldest claim first)"
    );
    let (_, metrics) = app.get("/metrics", &app.admin).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("ringledger_workflows_recovered_total{outcome=\"compensated\"} 2"),
        "{metrics}"
    );
    app.shutdown().await;
}

/// Who holds `number` now, from the log (`None`: free).
async fn holder(app: &TestApp, number: &str) -> Option<AccountId> {
    let stream = domain::number::stream_id(&e164(number));
    api::commands::load::<NumberClaim>(&app.state, &stream)
        .await
        .unwrap()
        .state
        .holder
        .map(|h| h.account_id)
}

/// Runs `command` on `stream` through `store` (another server's own handle on the log,
/// bypassing this server's kept states).
async fn elsewhere<A: domain::Aggregate>(
    store: &dyn infra::EventStore,
    stream: &str,
    command: &A::Command,
) {
    let origin = infra::command::Origin {
        actor: "test:another-server",
        correlation_id: None,
        observe_append: None,
    };
    infra::command::execute::<A>(store, &origin, stream, command, None, None)
        .await
        .unwrap_or_else(|e| panic!("{stream}: {e}"));
}

/// The API decides a registration on the account and number as it last wrote them, without
/// reading them again; another server writing the same log in between must not be overlooked:
/// an account it filled up refuses the next extension (and the number claimed for it is given
/// back), and a number it released can be registered again.
async fn another_servers_writes_are_not_overlooked(b: Backend) {
    let app = TestApp::spawn(b).await;
    let tariff_id = tariff(&app).await;
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"name": "Ada", "main_number": "+441632960001", "tariff_id": tariff_id,
                   "currency": "GBP", "max_extensions": 2}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let account_id = body["account_id"].as_str().unwrap().to_owned();
    let owner = AccountId(account_id.parse().unwrap());
    let (status, first) = extension(&app, &account_id, "+447700900301").await;
    assert_eq!(status, 201, "{first}");
    let first_id = ExtensionId(first["extension_id"].as_str().unwrap().parse().unwrap());

    // Another server removes that extension, gives its number back and fills the account.
    let other = app.backend.open().await;
    let other = other.as_ref();
    let reason = "removed elsewhere".to_owned();
    elsewhere::<domain::extension::Extension>(
        other,
        &first_id.stream_id(),
        &ExtensionCommand::Remove { reason },
    )
    .await;
    let detach = |extension_id| AccountCommand::DetachExtension { extension_id };
    elsewhere::<domain::account::Account>(other, &owner.stream_id(), &detach(first_id)).await;
    let release = NumberCommand::Release {
        number: e164("+447700900301"),
        account_id: owner,
    };
    let first_stream = domain::number::stream_id(&e164("+447700900301"));
    elsewhere::<NumberClaim>(other, &first_stream, &release).await;
    let filler: Vec<ExtensionId> = (0..2).map(|_| ExtensionId(Uuid::now_v7())).collect();
    for (i, id) in filler.iter().enumerate() {
        let attach = AccountCommand::AttachExtension {
            extension_id: *id,
            number: e164(&format!("+44770090039{i}")),
        };
        elsewhere::<domain::account::Account>(other, &owner.stream_id(), &attach).await;
    }

    // This server still keeps the account with one extension of two: the full account refuses.
    let (status, problem) = extension(&app, &account_id, "+447700900302").await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        holder(&app, "+447700900302").await,
        None,
        "claim not given back"
    );

    // Room again: the number this server keeps as claimed (it was released elsewhere) is free.
    elsewhere::<domain::account::Account>(other, &owner.stream_id(), &detach(filler[0])).await;
    let (status, again) = extension(&app, &account_id, "+447700900301").await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(holder(&app, "+447700900301").await, Some(owner));
    app.shutdown().await;
}

/// Closing an account removes its extensions and frees their numbers at once (another account
/// registers the same phone straight away); the main number is kept through the quarantine,
/// then the recovery pass releases it and a new account may open with it.
async fn closing_an_account_gives_its_numbers_back(b: Backend) {
    let app = TestApp::spawn(b).await;
    let owner = account(&app, "+441632960001").await;
    let mut extensions = Vec::new();
    for number in ["+447700900201", "+447700900202"] {
        let (status, body) = ringledger_tests::api_app::extension(&app, &owner, number).await;
        assert_eq!(status, 201, "{body}");
        extensions.push(body["extension_id"].as_str().unwrap().to_owned());
    }
    let (status, body) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{owner}/close"),
            json!({"reason": "customer left"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "closed");
    assert_eq!(body["extension_ids"], json!([]), "{body}");
    for id in &extensions {
        let (status, ext) = app.get(&format!("/v1/extensions/{id}"), &app.admin).await;
        assert_eq!(status, 200, "{ext}");
        assert_eq!(ext["status"], "removed", "{ext}");
    }
    assert_eq!(holder(&app, "+447700900201").await, None);
    assert_eq!(holder(&app, "+447700900202").await, None);
    // The user's phone joins another account at once.
    let other = account(&app, "+441632960002").await;
    let (status, body) = ringledger_tests::api_app::extension(&app, &other, "+447700900201").await;
    assert_eq!(status, 201, "{body}");
    // The main number waits out its quarantine.
    let opening = |number: &'static str| {
        let app = &app;
        async move {
            app.admin_json(
                Method::POST,
                "/v1/accounts",
                json!({"name": "Next", "main_number": number,
                    "tariff_id": tariff(app).await, "currency": "GBP"}),
            )
            .await
        }
    };
    let (status, body) = opening("+441632960001").await;
    assert_eq!(status, 409, "{body}");
    app.projections_caught_up().await;
    let in_quarantine = RecoverySettings {
        number_quarantine: Duration::from_secs(3600),
        ..settle_now()
    };
    let done = recover(&app.state, &in_quarantine).await.unwrap();
    assert_eq!(done, Recovered::default(), "nothing is due yet");
    assert!(holder(&app, "+441632960001").await.is_some());
    let over = RecoverySettings {
        number_quarantine: Duration::ZERO,
        ..settle_now()
    };
    let done = recover(&app.state, &over).await.unwrap();
    assert_eq!(done.released, 1, "{done:?}");
    assert_eq!(holder(&app, "+441632960001").await, None);
    let (status, body) = opening("+441632960001").await;
    assert_eq!(status, 201, "{body}");
    // Settled: the next pass finds nothing, and the release is counted.
    app.projections_caught_up().await;
    assert_eq!(
        recover(&app.state, &over).await.unwrap(),
        Recovered::default()
    );
    assert_eq!(count(&app, "SELECT COUNT(*) FROM workflow_steps").await, 0);
    let (_, metrics) = app.get("/metrics", &app.admin).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("ringledger_workflows_recovered_total{outcome=\"released\"} 1"),
        "{metrics}"
    );
    app.shutdown().await;
}

/// A process that dies right after `account.closed` (its extensions detached in the same
/// append, nothing after): the recovery pass removes the extensions and frees their numbers.
/// Removing an extension stopped after its detachment is finished the same way.
async fn an_interrupted_closing_is_finished(b: Backend) {
    use api::commands::execute;
    let app = TestApp::spawn(b).await;
    let owner = account(&app, "+441632960001").await;
    let owner_id = AccountId(owner.parse().unwrap());
    let mut extensions = Vec::new();
    for number in ["+447700900301", "+447700900302"] {
        let (status, body) = ringledger_tests::api_app::extension(&app, &owner, number).await;
        assert_eq!(status, 201, "{body}");
        extensions.push(body["extension_id"].as_str().unwrap().to_owned());
    }
    let second = account(&app, "+441632960002").await;
    let (status, body) = ringledger_tests::api_app::extension(&app, &second, "+447700900303").await;
    assert_eq!(status, 201, "{body}");
    let lone = ExtensionId(body["extension_id"].as_str().unwrap().parse().unwrap());
    let ctx = Ctx::system("test:crashed-request");
    let close = AccountCommand::Close {
        reason: "crashed".into(),
    };
    execute::<domain::account::Account>(&app.state, &ctx, &owner_id.stream_id(), None, &close)
        .await
        .unwrap();
    let detach = AccountCommand::DetachExtension { extension_id: lone };
    let second_id = AccountId(second.parse().unwrap());
    execute::<domain::account::Account>(&app.state, &ctx, &second_id.stream_id(), None, &detach)
        .await
        .unwrap();
    for number in ["+447700900301", "+447700900302", "+447700900303"] {
        assert!(holder(&app, number).await.is_some(), "{number}");
    }
    app.projections_caught_up().await;
    let patient = RecoverySettings {
        grace: Duration::from_secs(3600),
        ..RecoverySettings::default()
    };
    assert_eq!(
        recover(&app.state, &patient).await.unwrap(),
        Recovered::default()
    );
    let done = recover(&app.state, &settle_now()).await.unwrap();
    assert_eq!(done.completed, 3, "{done:?}");
    for number in ["+447700900301", "+447700900302", "+447700900303"] {
        assert_eq!(holder(&app, number).await, None, "{number}");
    }
    for id in extensions.iter().chain([&lone.to_string()]) {
        let (_, ext) = app.get(&format!("/v1/extensions/{id}"), &app.admin).await;
        assert_eq!(ext["status"], "removed", "{ext}");
    }
    // The main number stays in quarantine.
    assert_eq!(holder(&app, "+441632960001").await, Some(owner_id));
    app.projections_caught_up().await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM workflow_steps WHERE step <> 'quarantine'"
        )
        .await,
        0
    );
    app.shutdown().await;
}

/// A device's password and a verification code are shown once: a replay of the request says
/// null, and the password is nowhere in the database.
async fn secrets_are_not_kept(b: Backend) {
    let app = TestApp::spawn(b).await;
    let owner = account(&app, "+441632960001").await;
    let provision = || {
        app.request(
            Method::POST,
            &format!("/v1/accounts/{owner}/devices"),
            Some(&app.admin),
        )
        .header("Idempotency-Key", "device-1")
        .send()
    };
    let first: Value = provision().await.unwrap().json().await.unwrap();
    let password = first["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 16);
    let again = provision().await.unwrap();
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["device_id"], first["device_id"]);
    assert_eq!(again["password"], Value::Null);
    let device = first["device_id"].as_str().unwrap();
    let rotated: Value = app
        .request(
            Method::POST,
            &format!("/v1/devices/{device}/rotate"),
            Some(&app.admin),
        )
        .header("Idempotency-Key", "rotate-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rotated_password = rotated["password"].as_str().unwrap().to_owned();
    // Nowhere in the idempotency records, and (SQLite) nowhere in any file of the data
    // directory — log, projections, their write-ahead logs.
    let kept: Vec<String> = sqlx::query_scalar("SELECT COALESCE(body, '') FROM api_idempotency")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    for secret in [&password, &rotated_password] {
        assert!(
            kept.iter().all(|b| !b.contains(secret.as_str())),
            "{kept:?}"
        );
    }
    if let Some(path) = app.backend.url.strip_prefix("sqlite://") {
        let dir = std::path::Path::new(path).parent().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for secret in [&password, &rotated_password] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "a password is stored in plain text"
                );
            }
        }
    }
    app.shutdown().await;
}

/// A 409 a retry resolves ("kept changing… try again") is not kept under the key: the retry
/// runs again and gets its own outcome, which is then replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_conflicts_are_not_replayed() {
    use axum::response::IntoResponse;
    let app = TestApp::spawn(Backend::sqlite().await).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let handler = move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                api::problem::ApiError::Contended("account-x kept changing; try again".into())
                    .into_response()
            } else {
                (axum::http::StatusCode::CREATED, format!("run {n}")).into_response()
            }
        }
    };
    let caller = api::keys::Caller {
        key_id: app.admin_key_id.clone(),
        role: api::keys::Role::Admin,
    };
    let router = axum::Router::new()
        .route("/x", axum::routing::post(handler))
        .layer(axum::middleware::from_fn_with_state(
            app.state.idempotency.clone(),
            api::idempotency::idempotent,
        ))
        .layer(axum::middleware::from_fn(
            move |mut r: axum::extract::Request, next: axum::middleware::Next| {
                r.extensions_mut().insert(caller.clone());
                next.run(r)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let post = || {
        reqwest::Client::new()
            .post(&url)
            .header("Idempotency-Key", "same")
            .body("{}")
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status().as_u16(), 409);
    assert_eq!(first.headers().get("retry-after").unwrap(), "1");
    let second = post().await.unwrap();
    assert_eq!(second.status().as_u16(), 201);
    assert!(second.headers().get("idempotent-replayed").is_none());
    assert_eq!(second.text().await.unwrap(), "run 1");
    let third = post().await.unwrap();
    assert_eq!(third.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(third.text().await.unwrap(), "run 1");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    app.shutdown().await;
}

/// 3,000 requests with made-up methods are answered 405 and add nothing to `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_metrics() {
    let app = TestApp::spawn(Backend::sqlite().await).await;
    let before = app
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .len();
    for round in 0..30 {
        futures::future::join_all((0..100).map(|i| {
            let method =
                Method::from_bytes(format!("X{round}Y{i}Z{}", "Q".repeat(40)).as_bytes()).unwrap();
            app.request(method, "/v1/accounts", Some(&app.admin)).send()
        }))
        .await
        .into_iter()
        .for_each(|r| assert_eq!(r.unwrap().status().as_u16(), 405));
    }
    let metrics = app
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("QQQQ"), "a made-up method became a label");
    assert!(
        metrics.contains("ringledger_http_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 3000"),
        "{metrics}"
    );
    assert!(
        metrics.len() < before + 4096,
        "{} -> {}",
        before,
        metrics.len()
    );
    assert!(metrics.len() < 1024 * 1024);
    app.shutdown().await;
}

/// A socket from `source` to the API.
async fn connect_from(app: &TestApp, source: &str) -> std::io::Result<TcpStream> {
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// Whether the server has closed `s` (EOF or reset) within `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// 1,200 idle connections from one address and a slow-header client: a normal request from
/// elsewhere is answered, connections past the per-source cap are closed at once and counted,
/// and idle or slow ones are closed after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_bounded() {
    let settings = test_settings();
    let limits = api::HttpLimits {
        max_connections: 1024,
        max_per_source: 200,
        header_read_timeout: Duration::from_secs(2),
    };
    let app = TestApp::spawn_limited(Backend::sqlite().await, settings, limits).await;
    let mut idle = Vec::new();
    for _ in 0..1200 {
        idle.push(connect_from(&app, "127.0.0.7").await.unwrap());
    }
    // Past the per-source cap: closed as soon as accepted.
    let mut refused = 0;
    for s in idle.iter_mut().skip(400) {
        if closed_by_server(s, Duration::from_millis(200)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 750,
        "only {refused} of the connections past the cap were closed"
    );
    let r = app
        .request(Method::GET, "/v1/accounts", Some(&app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A slow-header client sends a byte every 300 ms: cut off at the header timeout.
    let mut slow = connect_from(&app, "127.0.0.8").await.unwrap();
    let started = std::time::Instant::now();
    let mut cut = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cut = cut || closed_by_server(&mut slow, Duration::from_secs(3)).await;
    assert!(cut, "a slow-header client kept its connection");
    assert!(started.elapsed() < Duration::from_secs(8));
    // The idle ones within the cap are closed after the header timeout.
    for s in idle.iter_mut().take(200) {
        assert!(
            closed_by_server(s, Duration::from_secs(5)).await,
            "an idle connection stayed open"
        );
    }
    // A kept-alive connection that goes idle after a request is closed too.
    let mut kept = connect_from(&app, "127.0.0.9").await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_by_server(&mut kept, Duration::from_secs(5)).await);
    let metrics = app
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "ringledger_http_connections_refused_total{limit=\"max_connections_per_source\"}",
            )
        })
        .unwrap()
        .to_owned();
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 750, "{line}");
    app.shutdown().await;
}

/// `/readyz` is 503, naming the projection, while one is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_stopped_projection() {
    let app = TestApp::spawn(Backend::sqlite().await).await;
    account(&app, "+441632960001").await;
    app.projections_caught_up().await;
    let (status, body) = app.get("/readyz", &app.admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reasons"], json!([]));
    sqlx::query(
        "UPDATE projection_checkpoints SET status = 'stopped', \
         error = 'cannot apply account.opened at position 3' WHERE name = 'billing'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (status, body) = app.get("/readyz", &app.admin).await;
    assert_eq!(status, 503, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("projection billing is stopped"), "{body}");
    assert!(reasons.contains("position 3"), "{body}");
    app.shutdown().await;
}

/// A log row that cannot be read: the verification names its position (200, not intact), the
/// events endpoint answers a problem naming it, and `/readyz` says a projection cannot get
/// past it.
async fn a_damaged_row_is_named(b: Backend) {
    let app = TestApp::spawn(b).await;
    account(&app, "+441632960001").await;
    account(&app, "+441632960002").await;
    app.projections_caught_up().await;
    let head = app.store.head_position().await.unwrap();
    let bad = head - 1;
    // Damage each backend can store but not read back.
    let damage = if app.backend.url.starts_with("sqlite:") {
        format!("UPDATE events SET payload = 'not json' WHERE global_position = {bad}")
    } else {
        // PostgreSQL's types and checks keep out most damage: remove one first.
        format!(
            "ALTER TABLE events DROP CONSTRAINT events_schema_version_check; \
             UPDATE events SET schema_version = 70000 WHERE global_position = {bad}"
        )
    };
    app.backend.execute_sql(&damage).await;
    let (status, body) = app.get("/v1/audit/verification", &app.auditor).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["intact"], false, "{body}");
    assert_eq!(body["first_bad_position"], bad, "{body}");
    let (status, body) = app.get("/v1/audit/events?limit=1000", &app.auditor).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "urn:ringledger:problem:corrupt-log", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("position {bad}")),
        "{body}"
    );
    // A projection whose next event is the damaged one (its checkpoint set just before it).
    sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE name = 'billing'")
        .bind((bad - 1) as i64)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, body) = app.get("/readyz", &app.admin).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reasons"].to_string().contains(&format!(
            "projection billing: the log cannot be read after position {}",
            bad - 1
        )),
        "{body}"
    );
    app.shutdown().await;
}

/// One server-sent event: its `id`, `event` and `data` fields.
#[derive(Debug, Default, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: String,
}

/// Reads server-sent events from `response` until `stop` says so, or 60 s pass.
async fn read_sse(response: reqwest::Response, mut stop: impl FnMut(&Sse) -> bool) -> Vec<Sse> {
    use futures::StreamExt;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut e = Sse::default();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    e.id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    e.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    e.data.push_str(v.trim());
                }
            }
            if e.event.is_empty() && e.data.is_empty() {
                continue; // a keep-alive comment
            }
            let done = stop(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) | Err(_) => return seen,
        }
    }
}

fn positions(events: &[Sse]) -> Vec<u64> {
    events.iter().filter_map(|e| e.id).collect()
}

async fn open_tail(app: &TestApp, after: u64, last_event_id: Option<u64>) -> reqwest::Response {
    // A client of its own: the test client's 30 s bound on a whole request would cut a tail
    // left unread while a loaded machine appends (`read_sse` bounds the reading).
    let mut r = reqwest::Client::new()
        .get(format!("{}/v1/audit/events/live?after={after}", app.base))
        .bearer_auth(&app.auditor);
    if let Some(id) = last_event_id {
        r = r.header("Last-Event-ID", id.to_string());
    }
    r.send().await.unwrap()
}

fn test_settings() -> api::ApiSettings {
    api::ApiSettings::new("ringledger.test", infra::config::CodeDelivery::Response)
}

/// An API on SQLite with `settings` (live tail bounds) and the default connection limits.
async fn tail_app(settings: api::ApiSettings) -> TestApp {
    TestApp::spawn_limited(
        Backend::sqlite().await,
        settings,
        api::HttpLimits::default(),
    )
    .await
}

/// The number in `metrics` of `ringledger_http_requests_busy_total` for `kind`.
fn busy(metrics: &Value, kind: &str) -> u64 {
    let prefix = format!("ringledger_http_requests_busy_total{{kind=\"{kind}\"}} ");
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
}

/// Reads stuck behind a lock on the accounts table (PostgreSQL, taken by the test) hold the
/// two read permits: the next read is refused 503 at once with Retry-After and counted, while
/// commands are served; once the lock goes, the stuck reads finish and reads are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_kind_over_its_cap_is_refused_while_the_others_are_served() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(
        Backend::postgres().await,
        api::ApiSettings {
            route_caps: api::RouteCaps {
                verifications: 1,
                reads: 2,
                writes: 4,
            },
            ..test_settings()
        },
    )
    .await;
    account(&app, "+441632960001").await;
    app.projections_caught_up().await;
    let mut lock = sqlx::PgConnection::connect(&app.backend.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE routing_accounts IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let list = || {
        app.request(Method::GET, "/v1/accounts", Some(&app.admin))
            .timeout(Duration::from_secs(1))
            .send()
    };
    let mut stuck = Vec::new();
    let mut refused = None;
    for _ in 0..20 {
        match list().await {
            Ok(r) if r.status().as_u16() == 503 => {
                refused = Some(r);
                break;
            }
            Ok(r) => panic!("a read went through the lock: {}", r.status()),
            // Took a permit and waits for the lock (the request goes on without its client).
            Err(e) if e.is_timeout() => stuck.push(e),
            Err(e) => panic!("{e}"),
        }
    }
    let refused = refused.expect("a read over the cap is refused");
    assert!(
        stuck.len() <= 2,
        "{} reads got past a cap of 2",
        stuck.len()
    );
    assert!(refused.headers().get("retry-after").is_some());
    let body = refused.text().await.unwrap();
    assert!(body.contains("too many read requests"), "{body}");
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/tariffs",
            ringledger_tests::api_app::tariff_body(),
        )
        .await;
    assert_eq!(
        status, 201,
        "commands are not held up by stuck reads: {body}"
    );
    let (_, metrics) = app.get("/metrics", &app.admin).await;
    assert!(busy(&metrics, "read") >= 1, "{metrics}");
    assert_eq!(busy(&metrics, "write"), 0, "{metrics}");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let mut served = false;
    for _ in 0..100 {
        if list().await.is_ok_and(|r| r.status().as_u16() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the stuck reads gave their permits back");
    app.shutdown().await;
}

/// Clients that stop sending their bodies hold no permit (a write cap of 1 still serves
/// others) and are answered 408 when the body read timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_refused_and_holds_no_permit() {
    let app = TestApp::spawn_with(
        Backend::sqlite().await,
        api::ApiSettings {
            route_caps: api::RouteCaps {
                writes: 1,
                ..api::RouteCaps::default()
            },
            body_read_timeout: Duration::from_secs(1),
            ..test_settings()
        },
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let head = format!(
            "POST /v1/tariffs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            app.admin
        );
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/tariffs",
            ringledger_tests::api_app::tariff_body(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for mut s in stalled {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer));
        read.await.expect("answered within the timeout").unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body-timeout"), "{answer}");
    }
    app.shutdown().await;
}

/// Three tails (the limit) each see every event once, in order, while writers append; a
/// fourth is refused 503 until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tails_are_capped_and_see_every_event_once() {
    let app = tail_app(api::ApiSettings {
        max_live_tails: 3,
        ..test_settings()
    })
    .await;
    let mut workload = projections::workload::Workload::new(7, chrono::Utc::now());
    ringledger_tests::harness::append_workload(app.store.as_ref(), &mut workload, 50).await;
    let mut tails = Vec::new();
    for _ in 0..3 {
        let r = open_tail(&app, 0, None).await;
        assert_eq!(r.status().as_u16(), 200);
        tails.push(r);
    }
    let refused = open_tail(&app, 0, None).await;
    assert_eq!(refused.status().as_u16(), 503);
    let (_, metrics) = app.get("/metrics", &app.admin).await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("\nringledger_live_tails_open 3\n"),
        "{metrics}"
    );
    assert_eq!(refused.headers().get("retry-after").unwrap(), "5");
    // Appends while the tails catch up and go live.
    ringledger_tests::harness::append_workload(app.store.as_ref(), &mut workload, 400).await;
    let head = app.store.head_position().await.unwrap();
    let readers = tails
        .into_iter()
        .map(|t| read_sse(t, move |e| e.id == Some(head)));
    for seen in futures::future::join_all(readers).await {
        assert_eq!(positions(&seen), (1..=head).collect::<Vec<_>>());
    }
    // The tails were dropped: their slots come back once the server notices.
    let mut reopened = false;
    for _ in 0..50 {
        ringledger_tests::harness::append_workload(app.store.as_ref(), &mut workload, 1).await;
        if open_tail(&app, head, None).await.status().as_u16() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "closed tails kept their slots");
    app.shutdown().await;
}

/// A tail whose client stops reading while the log grows is ended with a `lagged` event naming
/// its last position; reconnecting with that `Last-Event-ID` goes on without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tail_is_ended_with_a_resume_position() {
    let app = tail_app(api::ApiSettings {
        live_tail_buffer: 16,
        ..test_settings()
    })
    .await;
    let slow = open_tail(&app, 0, None).await;
    assert_eq!(slow.status().as_u16(), 200);
    // The client reads nothing while thousands of events go by (more than the socket buffers
    // and the hub's 16 hold).
    let mut workload = projections::workload::Workload::new(9, chrono::Utc::now());
    ringledger_tests::harness::append_workload(app.store.as_ref(), &mut workload, 8000).await;
    let head = app.store.head_position().await.unwrap();
    let seen = read_sse(slow, |e| e.event == "lagged").await;
    let lagged = seen.last().unwrap();
    assert_eq!(lagged.event, "lagged", "the slow tail was not ended");
    let resume_after: u64 = serde_json::from_str::<Value>(&lagged.data).unwrap()["resume_after"]
        .as_u64()
        .unwrap();
    let before = positions(&seen);
    assert_eq!(before, (1..=resume_after).collect::<Vec<_>>());
    assert!(resume_after < head);
    let again = open_tail(&app, 0, Some(resume_after)).await;
    let rest = read_sse(again, |e| e.id == Some(head)).await;
    assert_eq!(
        positions(&rest),
        (resume_after + 1..=head).collect::<Vec<_>>()
    );
    app.shutdown().await;
}

/// Numbers that are only a country code, NUL characters, missing fields, usage of an account
/// that does not exist, spreadsheet formulas in CSV exports, the invoice CSV.
async fn small_refusals(b: Backend) {
    let app = TestApp::spawn(b).await;
    let tariff_id = tariff(&app).await;
    let open = |name: Value, number: &str| json!({"name": name, "main_number": number, "tariff_id": tariff_id, "currency": "GBP"});
    let (status, body) = app
        .admin_json(Method::POST, "/v1/accounts", open(json!("Ada"), "+1"))
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("main_number")),
        "{body}"
    );
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            open(json!("Ada\u{0}Lovelace"), "+441632960001"),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("name")),
        "{body}"
    );
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"main_number": "+441632960001", "tariff_id": tariff_id, "currency": "GBP"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("name")),
        "{body}"
    );
    let nobody = Uuid::now_v7();
    for path in [
        format!("/v1/billing/accounts/{nobody}/usage?from=2026-01-01&to=2026-12-31"),
        format!("/v1/billing/accounts/{nobody}/invoices/2026-11"),
    ] {
        let (status, body) = app.get(&path, &app.billing).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // A name a spreadsheet would run is exported as text.
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            open(
                json!("=HYPERLINK(\"http://evil.example\",\"x\")"),
                "+441632960002",
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.projections_caught_up().await;
    let csv = app
        .request(Method::GET, "/v1/accounts", Some(&app.admin))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = csv.lines().find(|l| l.contains("HYPERLINK")).unwrap();
    assert!(row.contains(",\"'=HYPERLINK("), "{row}");
    assert!(
        row.contains(",+441632960002,"),
        "a phone number stays as it is: {row}"
    );
    // The invoice CSV is the CLI's: currency column and a total line (no usage yet: the
    // account's own currency).
    let account = body["account_id"].as_str().unwrap();
    let invoice = app
        .request(
            Method::GET,
            &format!("/v1/billing/accounts/{account}/invoices/2026-11"),
            Some(&app.billing),
        )
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = invoice.lines().collect();
    assert_eq!(
        lines,
        [
            "extension_id,path,legs,billable_secs,charge_minor,currency",
            "total,,,,0,GBP"
        ]
    );
    app.shutdown().await;
}
