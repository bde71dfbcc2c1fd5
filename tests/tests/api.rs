//! The HTTP API over real HTTP, on SQLite and on PostgreSQL: the admin walk-through, the role
//! matrix, idempotent retries, concurrent updates, bad input, billing and audit reads, and the
//! operational endpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::TimeZone;
use futures::StreamExt;
use projections::workload::Workload;
use reqwest::Method;
use ringledger_tests::api_app::{TestApp, account, extension, status_json, tariff, tariff_body};
use ringledger_tests::harness::{Backend, append_workload};
use ringledger_tests::on_both_backends;
use serde_json::{Value, json};

on_both_backends!(
    admin_walkthrough,
    role_matrix,
    idempotent_retries,
    concurrent_updates_one_wins,
    bad_input_writes_nothing,
    billing_reads,
    audit_reads,
    operations,
);

fn settings(pin: Option<&str>, ring_delay_secs: u16) -> Value {
    json!({
        "ring_on_inbound": true, "ring_delay_secs": ring_delay_secs, "may_call_out": true,
        "international_allowed": false, "pin": pin, "caller_id": "own",
        "daily_limit_minor": 500, "prefers_alternate_path": false
    })
}

async fn head(app: &TestApp) -> u64 {
    app.store.head_position().await.unwrap()
}

async fn admin_walkthrough(b: Backend) {
    let app = TestApp::spawn(b).await;
    let r = app
        .request(Method::POST, "/v1/tariffs", Some(&app.admin))
        .json(&tariff_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let (_, t) = status_json(r).await;
    assert_eq!(
        location,
        format!("/v1/tariffs/{}", t["tariff_id"].as_str().unwrap())
    );

    let r = app
        .request(Method::POST, "/v1/accounts", Some(&app.admin))
        .json(
            &json!({"name": "Ada Lovelace", "main_number": "+441632960001",
                      "tariff_id": t["tariff_id"], "currency": "GBP"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert!(r.headers().contains_key("x-request-id"));
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (_, acc) = status_json(r).await;
    let account_id = acc["account_id"].as_str().unwrap().to_owned();
    assert_eq!(acc["status"], "active");
    assert_eq!(acc["main_number"], "+441632960001");

    // The account's events carry the admin key as actor and the request id as correlation.
    let events = app
        .store
        .read_stream(&format!("account-{account_id}"), 1, 10)
        .await
        .unwrap();
    assert_eq!(events[0].event_type, "account.opened");
    assert_eq!(events[0].actor, format!("key:{}", app.admin_key_id));
    assert_eq!(events[0].correlation_id.to_string(), request_id);

    // A device: the password is shown once and never reaches the log.
    let (status, dev) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account_id}/devices"),
            json!(null),
        )
        .await;
    assert_eq!(status, 201, "{dev}");
    let password = dev["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 32);
    assert_eq!(dev["realm"], "ringledger.test");
    let device_id = dev["device_id"].as_str().unwrap();
    let (status, got) = app
        .get(&format!("/v1/devices/{device_id}"), &app.admin)
        .await;
    assert_eq!(status, 200);
    assert!(got.get("password").is_none());
    let all = app.store.read_all(0, 1000).await.unwrap();
    assert!(
        all.iter()
            .all(|e| !e.payload.to_string().contains(&password)),
        "the plain password reached the log"
    );
    let (status, rotated) = app
        .admin_json(
            Method::POST,
            &format!("/v1/devices/{device_id}/rotate"),
            json!(null),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(rotated["password"], password);
    // The device reports poor data; an unknown quality is a 422 naming the field.
    let (status, reported) = app
        .admin_json(
            Method::POST,
            &format!("/v1/devices/{device_id}/data-path"),
            json!({"quality": "poor"}),
        )
        .await;
    assert_eq!(
        (status, &reported["quality"]),
        (200, &json!("poor")),
        "{reported}"
    );
    let (status, problem) = app
        .admin_json(
            Method::POST,
            &format!("/v1/devices/{device_id}/data-path"),
            json!({"quality": "patchy"}),
        )
        .await;
    assert!(status == 422 || status == 400, "{status} {problem}");
    assert!(problem.to_string().contains("quality"), "{problem}");
    let (status, contacts) = app
        .get(&format!("/v1/devices/{device_id}/contacts"), &app.admin)
        .await;
    assert_eq!(
        (status, contacts["items"].as_array().unwrap().len()),
        (200, 0)
    );

    // An extension: registered, verified with the code, then its settings changed.
    let (status, ext) = extension(&app, &account_id, "+447700900123").await;
    assert_eq!(status, 201, "{ext}");
    assert_eq!(ext["status"], "pending");
    let ext_id = ext["extension_id"].as_str().unwrap().to_owned();
    let (status, started) = app
        .admin_json(
            Method::POST,
            &format!("/v1/extensions/{ext_id}/verification"),
            json!({"method": "sms"}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let code = started["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, problem) = app
        .admin_json(
            Method::POST,
            &format!("/v1/extensions/{ext_id}/verification/confirm"),
            json!({"code": wrong}),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("code")));
    let (status, verified) = app
        .admin_json(
            Method::POST,
            &format!("/v1/extensions/{ext_id}/verification/confirm"),
            json!({"code": code}),
        )
        .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["status"], "verified");
    assert_eq!(verified["failed_attempts"], 1);
    let version = verified["version"].as_u64().unwrap();
    let r = app
        .request(
            Method::PUT,
            &format!("/v1/extensions/{ext_id}/settings"),
            Some(&app.admin),
        )
        .header("if-match", format!("\"{version}\""))
        .json(&settings(Some("4321"), 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, changed) = status_json(r).await;
    assert_eq!(changed["settings"]["has_pin"], true);
    assert_eq!(changed["settings"]["caller_id"], "own");
    assert!(!changed.to_string().contains("4321"));

    // Three wrong PINs keyed at the access-number menu (as the edge checks them) lock keypad
    // access; an admin unlocks it, once (a second unlock changes nothing).
    let account_state = infra::command::load::<domain::account::Account>(
        app.store.as_ref(),
        &format!("account-{account_id}"),
    )
    .await
    .unwrap()
    .state;
    let origin = infra::command::Origin {
        actor: "edge",
        correlation_id: None,
        observe_append: None,
    };
    for _ in 0..3 {
        let check = domain::extension::ExtensionCommand::CheckPin {
            pin: "1111".into(),
            account: account_state.clone(),
        };
        infra::command::execute::<domain::extension::Extension>(
            app.store.as_ref(),
            &origin,
            &format!("extension-{ext_id}"),
            &check,
            None,
            None,
        )
        .await
        .unwrap();
    }
    let (_, locked) = app
        .get(&format!("/v1/extensions/{ext_id}"), &app.admin)
        .await;
    assert_eq!(
        (
            locked["keypad_locked"].as_bool(),
            locked["keypad_failures"].as_u64()
        ),
        (Some(true), Some(3))
    );
    let unlock = format!("/v1/extensions/{ext_id}/keypad-unlock");
    let (status, unlocked) = app.admin_json(Method::POST, &unlock, json!({})).await;
    assert_eq!(status, 200, "{unlocked}");
    assert_eq!(
        (
            unlocked["keypad_locked"].as_bool(),
            unlocked["keypad_failures"].as_u64()
        ),
        (Some(false), Some(0))
    );
    let (_, again) = app.admin_json(Method::POST, &unlock, json!({})).await;
    assert_eq!(
        again["version"], unlocked["version"],
        "nothing to unlock: no event"
    );

    app.projections_caught_up().await;
    let (status, list) = app
        .get(&format!("/v1/accounts/{account_id}/extensions"), &app.admin)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["extension_id"], ext_id.as_str());
    assert_eq!(list["items"][0]["status"], "verified");
    let (_, accounts) = app.get("/v1/accounts", &app.admin).await;
    assert_eq!(accounts["items"][0]["account_id"], account_id.as_str());

    // Dial intents and callback requests staged for the verified extension.
    let intents = format!("/v1/extensions/{ext_id}/dial-intents");
    let (status, intent) = app
        .admin_json(
            Method::POST,
            &intents,
            json!({"destination": "+442079460000", "ttl_secs": 120}),
        )
        .await;
    assert_eq!(status, 201, "{intent}");
    let (status, problem) = app
        .admin_json(
            Method::POST,
            &intents,
            json!({"destination": "+12025550100"}),
        )
        .await;
    assert_eq!(
        status, 409,
        "international is off for this extension: {problem}"
    );
    let (_, live) = app.get(&intents, &app.admin).await;
    assert_eq!(live["items"][0]["destination"], "+442079460000");
    app.projections_caught_up().await;
    let staged: Vec<(String, String)> =
        sqlx::query_as("SELECT intent_id, destination FROM routing_dial_intents")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        staged,
        vec![(
            intent["intent_id"].as_str().unwrap().to_owned(),
            "+442079460000".to_owned()
        )]
    );
    let callbacks = format!("/v1/extensions/{ext_id}/callbacks");
    let (status, callback) = app
        .admin_json(
            Method::POST,
            &callbacks,
            json!({"destination": "+442079460001"}),
        )
        .await;
    assert_eq!(status, 201, "{callback}");
    let (_, waiting) = app.get(&callbacks, &app.admin).await;
    assert_eq!(waiting["items"][0]["request_id"], callback["request_id"]);

    // The number is now held: another account cannot register it.
    let other = account(&app, "+441632960002").await;
    let (status, problem) = extension(&app, &other, "+447700900123").await;
    assert_eq!((status, problem["field"].as_str()), (409, Some("number")));
    let (_, other_view) = app.get(&format!("/v1/accounts/{other}"), &app.admin).await;
    assert_eq!(other_view["extension_ids"], json!([]));

    // Removing the extension frees the number.
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/extensions/{ext_id}"),
            Some(&app.admin),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, gone) = app
        .get(&format!("/v1/extensions/{ext_id}"), &app.admin)
        .await;
    assert_eq!(gone["status"], "removed");
    let (_, acc) = app
        .get(&format!("/v1/accounts/{account_id}"), &app.admin)
        .await;
    assert_eq!(acc["extension_ids"], json!([]));
    let (status, _) = extension(&app, &other, "+447700900123").await;
    assert_eq!(status, 201);

    // Access numbers, ring policy, spend limit, suspension.
    let (status, access) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account_id}/access-numbers"),
            json!({"number": "+441632960100", "destination": "+441632960999"}),
        )
        .await;
    assert_eq!(status, 201, "{access}");
    let (status, acc) = app
        .admin_json(
            Method::PUT,
            &format!("/v1/accounts/{account_id}/ring-policy"),
            json!({"ring_timeout_secs": 40, "extension_delay_secs": 5, "prefer_alternate_path": true}),
        )
        .await;
    assert_eq!(
        (status, &acc["ring_policy"]["ring_timeout_secs"]),
        (200, &json!(40))
    );
    let (status, acc) = app
        .admin_json(
            Method::PUT,
            &format!("/v1/accounts/{account_id}/spend-limit"),
            json!({"daily_limit_minor": 2000}),
        )
        .await;
    assert_eq!(
        (status, &acc["daily_spend_limit_minor"]),
        (200, &json!(2000))
    );
    let (status, acc) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account_id}/suspend"),
            json!({"reason": "unpaid"}),
        )
        .await;
    assert_eq!((status, acc["status"].as_str()), (200, Some("suspended")));
    let (status, _) = extension(&app, &account_id, "+447700900555").await;
    assert_eq!(status, 409, "a suspended account takes no new extension");
    app.projections_caught_up().await;
    let (_, numbers) = app
        .get(
            &format!("/v1/accounts/{account_id}/access-numbers"),
            &app.admin,
        )
        .await;
    assert_eq!(numbers["items"][0]["destination"], "+441632960999");
    app.shutdown().await;
}

/// Every route, the role allowed to call it, and a body for writes.
fn routes() -> Vec<(Method, String, &'static str)> {
    let id = "0190f000-0000-7000-8000-000000000001";
    let mut v = vec![];
    for (m, p) in [
        (Method::POST, "/v1/accounts".to_owned()),
        (Method::GET, "/v1/accounts".to_owned()),
        (Method::GET, format!("/v1/accounts/{id}")),
        (Method::POST, format!("/v1/accounts/{id}/suspend")),
        (Method::POST, format!("/v1/accounts/{id}/reinstate")),
        (Method::POST, format!("/v1/accounts/{id}/close")),
        (Method::PUT, format!("/v1/accounts/{id}/ring-policy")),
        (Method::PUT, format!("/v1/accounts/{id}/spend-limit")),
        (Method::PUT, format!("/v1/accounts/{id}/tariff")),
        (Method::POST, format!("/v1/accounts/{id}/devices")),
        (Method::GET, format!("/v1/accounts/{id}/devices")),
        (Method::GET, format!("/v1/devices/{id}")),
        (Method::DELETE, format!("/v1/devices/{id}")),
        (Method::GET, format!("/v1/devices/{id}/contacts")),
        (Method::POST, format!("/v1/devices/{id}/rotate")),
        (Method::POST, format!("/v1/devices/{id}/data-path")),
        (Method::POST, format!("/v1/accounts/{id}/extensions")),
        (Method::GET, format!("/v1/accounts/{id}/extensions")),
        (Method::GET, format!("/v1/extensions/{id}")),
        (Method::DELETE, format!("/v1/extensions/{id}")),
        (Method::POST, format!("/v1/extensions/{id}/verification")),
        (
            Method::POST,
            format!("/v1/extensions/{id}/verification/confirm"),
        ),
        (Method::PUT, format!("/v1/extensions/{id}/settings")),
        (Method::POST, format!("/v1/extensions/{id}/keypad-unlock")),
        (Method::POST, format!("/v1/extensions/{id}/dial-intents")),
        (Method::GET, format!("/v1/extensions/{id}/dial-intents")),
        (
            Method::DELETE,
            format!("/v1/extensions/{id}/dial-intents/{id}"),
        ),
        (Method::POST, format!("/v1/extensions/{id}/callbacks")),
        (Method::GET, format!("/v1/extensions/{id}/callbacks")),
        (
            Method::DELETE,
            format!("/v1/extensions/{id}/callbacks/{id}"),
        ),
        (Method::POST, format!("/v1/accounts/{id}/access-numbers")),
        (Method::GET, format!("/v1/accounts/{id}/access-numbers")),
        (
            Method::DELETE,
            format!("/v1/accounts/{id}/access-numbers/+441632960100"),
        ),
        (Method::POST, "/v1/tariffs".to_owned()),
        (Method::GET, "/v1/tariffs".to_owned()),
        (Method::GET, format!("/v1/tariffs/{id}")),
        (Method::POST, format!("/v1/tariffs/{id}/versions")),
    ] {
        v.push((m, p, "admin"));
    }
    for p in [
        format!("/v1/billing/accounts/{id}/usage?from=2026-11-01&to=2026-11-30"),
        format!("/v1/billing/accounts/{id}/rated-legs"),
        format!("/v1/billing/accounts/{id}/invoices/2026-11"),
    ] {
        v.push((Method::GET, p, "billing"));
    }
    for p in [
        "/v1/audit/events".to_owned(),
        format!("/v1/audit/streams/account-{id}/events"),
        "/v1/audit/events/live".to_owned(),
        format!("/v1/audit/calls/{id}/timeline"),
        format!("/v1/audit/accounts/{id}/as-of?at=2026-11-24T00:00:00Z"),
        "/v1/audit/verification".to_owned(),
    ] {
        v.push((Method::GET, p, "auditor"));
    }
    v
}

async fn role_matrix(b: Backend) {
    let app = TestApp::spawn(b).await;
    let before = head(&app).await;
    let keys = [
        ("admin", app.admin.clone()),
        ("billing", app.billing.clone()),
        ("auditor", app.auditor.clone()),
    ];
    let routes = routes();
    // The matrix covers every route the OpenAPI document lists.
    let documented: usize = api::openapi()
        .paths
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/v1/"))
        .map(|(_, item)| {
            [&item.get, &item.post, &item.put, &item.delete]
                .iter()
                .filter(|o| o.is_some())
                .count()
        })
        .sum();
    assert_eq!(routes.len(), documented);
    for (method, path, allowed) in &routes {
        let send = |key: Option<&str>| {
            let mut r = app.request(method.clone(), path, key);
            if *method != Method::GET && *method != Method::DELETE {
                r = r.json(&json!({}));
            }
            r.timeout(Duration::from_secs(10)).send()
        };
        let r = send(None).await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} without a key");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let r = send(Some("rlk_nosuchkey_0000")).await.unwrap();
        assert_eq!(r.status(), 401, "{method} {path} with an unknown key");
        for (role, key) in &keys {
            let status = send(Some(key)).await.unwrap().status().as_u16();
            if role == allowed {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} refused its own role {role}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} let {role} through");
            }
        }
    }
    assert_eq!(head(&app).await, before, "refused requests wrote events");
    app.shutdown().await;
}

async fn idempotent_retries(b: Backend) {
    let app = TestApp::spawn(b).await;
    let tariff_id = tariff(&app).await;
    let body = json!({"name": "Grace", "main_number": "+441632960050", "tariff_id": tariff_id, "currency": "GBP"});
    let post = |body: Value, key: &'static str| {
        app.request(Method::POST, "/v1/accounts", Some(&app.admin))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = post(body.clone(), "open-grace").await.unwrap();
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let (_, first_body) = status_json(first).await;
    let before = head(&app).await;
    for _ in 0..3 {
        let again = post(body.clone(), "open-grace").await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.headers()["location"], location);
        let (_, again_body) = status_json(again).await;
        assert_eq!(again_body, first_body);
    }
    assert_eq!(head(&app).await, before, "a replay wrote events");
    let opened = app
        .store
        .read_all(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "account.opened")
        .count();
    assert_eq!(opened, 1);
    // The same key with another body is refused; another key runs (and meets the held number).
    let mut other = body.clone();
    other["name"] = json!("Someone else");
    let (status, problem) = status_json(post(other, "open-grace").await.unwrap()).await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (422, Some("Idempotency-Key"))
    );
    let (status, _) = status_json(post(body, "open-grace-2").await.unwrap()).await;
    assert_eq!(status, 409);
    // A refusal is kept too: retrying it answers the same without running again.
    let (status, _) = status_json(post(json!({"name": "x"}), "bad-once").await.unwrap()).await;
    let (again, _) = status_json(post(json!({"name": "x"}), "bad-once").await.unwrap()).await;
    assert_eq!((status, again), (422, 422));
    // Keys are per API key: another admin key may use the same Idempotency-Key.
    assert_eq!(head(&app).await, before);
    app.shutdown().await;
}

async fn concurrent_updates_one_wins(b: Backend) {
    let app = TestApp::spawn(b).await;
    let account_id = account(&app, "+441632960070").await;
    let (_, ext) = extension(&app, &account_id, "+447700900070").await;
    let ext_id = ext["extension_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/extensions/{ext_id}/settings");
    for round in 0..8u16 {
        let (_, current) = app
            .get(&format!("/v1/extensions/{ext_id}"), &app.admin)
            .await;
        let version = current["version"].as_u64().unwrap();
        let put = |delay: u16| {
            app.request(Method::PUT, &path, Some(&app.admin))
                .header("if-match", format!("\"{version}\""))
                .json(&settings(None, delay))
                .send()
        };
        let (a, b) = tokio::join!(put(round * 2 + 1), put(round * 2 + 2));
        let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "round {round}");
        let (_, after) = app
            .get(&format!("/v1/extensions/{ext_id}"), &app.admin)
            .await;
        assert_eq!(after["version"].as_u64().unwrap(), version + 1);
    }
    app.shutdown().await;
}

async fn bad_input_writes_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    let account_id = account(&app, "+441632960080").await;
    let (_, ext) = extension(&app, &account_id, "+447700900080").await;
    let ext_id = ext["extension_id"].as_str().unwrap().to_owned();
    let before = head(&app).await;
    let tariff_id = tariff(&app).await;
    let before = before.max(head(&app).await);
    let open = |body: &str, content_type: &str| {
        app.request(Method::POST, "/v1/accounts", Some(&app.admin))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
    };
    let valid = json!({"name": "Ok", "main_number": "+441632960081", "tariff_id": tariff_id, "currency": "GBP"});
    let with = |k: &str, v: Value| {
        let mut b = valid.clone();
        b[k] = v;
        b.to_string()
    };
    let cases: Vec<(String, &str, u16, Option<&str>)> = vec![
        (r#"{"name": "#.into(), "application/json", 400, None),
        (
            with("name", json!(5)),
            "application/json",
            422,
            Some("name"),
        ),
        (
            with("nickname", json!("x")),
            "application/json",
            422,
            Some("nickname"),
        ),
        (
            with("main_number", json!("+0123")),
            "application/json",
            422,
            Some("main_number"),
        ),
        (
            with("main_number", json!("441632960081")),
            "application/json",
            422,
            Some("main_number"),
        ),
        (
            with("currency", json!("pounds")),
            "application/json",
            422,
            Some("currency"),
        ),
        (
            with("max_extensions", json!(-1)),
            "application/json",
            422,
            Some("max_extensions"),
        ),
        (
            with("tariff_id", json!("not-a-uuid")),
            "application/json",
            422,
            Some("tariff_id"),
        ),
        (
            with("name", json!("   ")),
            "application/json",
            422,
            Some("name"),
        ),
        (valid.to_string(), "text/plain", 415, Some("Content-Type")),
        (
            with("name", json!("x".repeat(100 * 1024))),
            "application/json",
            413,
            None,
        ),
    ];
    for (body, content_type, status, field) in cases {
        let r = open(&body, content_type).await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let (got, problem) = status_json(r).await;
        assert_eq!(got, status, "{problem}");
        assert_eq!(problem["field"].as_str(), field, "{problem}");
        assert_eq!(problem["status"], status);
    }
    let more = [
        (
            Method::PUT,
            format!("/v1/accounts/{account_id}/ring-policy"),
            json!({"ring_timeout_secs": 2, "extension_delay_secs": 0, "prefer_alternate_path": false}),
            "ring_timeout_secs",
        ),
        (
            Method::PUT,
            format!("/v1/accounts/{account_id}/ring-policy"),
            json!({"ring_timeout_secs": "30", "extension_delay_secs": 0, "prefer_alternate_path": false}),
            "ring_timeout_secs",
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account_id}/extensions"),
            json!({"number": "+44 7700 900123", "native_provider": "X", "kind": "mobile"}),
            "number",
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account_id}/extensions"),
            json!({"number": "+447700900124", "native_provider": "X", "kind": "satellite"}),
            "kind",
        ),
        (
            Method::PUT,
            format!("/v1/extensions/{ext_id}/settings"),
            settings(Some("12"), 0),
            "pin",
        ),
        (
            Method::POST,
            format!("/v1/accounts/{account_id}/access-numbers"),
            json!({"number": "+441632960200", "destination": "+441632960200"}),
            "destination",
        ),
    ];
    for (method, path, body, field) in more {
        let (status, problem) = app.admin_json(method, &path, body).await;
        assert_eq!(status, 422, "{path}: {problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let r = app
        .request(
            Method::PUT,
            &format!("/v1/extensions/{ext_id}/settings"),
            Some(&app.admin),
        )
        .header("if-match", "three")
        .json(&settings(None, 0))
        .send()
        .await
        .unwrap();
    let (status, problem) = status_json(r).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("If-Match")));
    let (status, problem) = app
        .get(
            &format!("/v1/accounts/{account_id}/devices?limit=0"),
            &app.admin,
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("limit")));
    assert_eq!(head(&app).await, before, "bad input wrote events");
    let (status, _) = app.get("/v1/nowhere", &app.admin).await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

/// Accounts of the workload with rated legs, and their legs as the billing table holds them.
async fn rated_legs_of(app: &TestApp, account_id: &str) -> Vec<(String, i64)> {
    sqlx::query_as::<_, (String, Option<i64>)>(
        "SELECT leg_id, charge_minor FROM rated_legs WHERE account_id = $1 \
         ORDER BY call_started_at, leg_id",
    )
    .bind(account_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(l, c)| (l, c.unwrap_or(0)))
    .collect()
}

async fn billing_reads(b: Backend) {
    let app = TestApp::spawn(b).await;
    let start = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap();
    append_workload(app.store.as_ref(), &mut Workload::new(5, start), 3_000).await;
    app.projections_caught_up().await;
    let account_id: String = sqlx::query_scalar(
        "SELECT account_id FROM rated_legs GROUP BY account_id ORDER BY COUNT(*) DESC, account_id LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let legs = rated_legs_of(&app, &account_id).await;
    assert!(legs.len() > 10, "the workload rated too few legs");
    let total: i64 = legs.iter().map(|(_, c)| c).sum();
    let usage = format!("/v1/billing/accounts/{account_id}/usage?from=2026-11-01&to=2026-12-31");
    for group in ["day", "month", "extension", "path"] {
        let (status, report) = app
            .get(&format!("{usage}&group_by={group}"), &app.billing)
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["total_charge_minor"], total, "grouped by {group}");
        assert_eq!(report["total_legs"], legs.len());
        let sum: i64 = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["charge_minor"].as_i64().unwrap())
            .sum();
        assert_eq!(sum, total);
    }
    let csv = app
        .request(
            Method::GET,
            &format!("{usage}&group_by=path"),
            Some(&app.billing),
        )
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("group,legs,billable_secs,charge_minor"));
    let csv_total: i64 = lines
        .map(|l| l.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(csv_total, total);

    // Rated legs in keyset pages of 7 are exactly the table's legs, in order, once each.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/billing/accounts/{account_id}/rated-legs?limit=7");
        if let Some(a) = &after {
            path.push_str(&format!(
                "&after={}",
                a.replace(' ', "%20").replace('+', "%2B")
            ));
        }
        let (status, page) = app.get(&path, &app.billing).await;
        assert_eq!(status, 200, "{page}");
        for leg in page["items"].as_array().unwrap() {
            seen.push((
                leg["leg_id"].as_str().unwrap().to_owned(),
                leg["charge_minor"].as_i64().unwrap_or(0),
            ));
        }
        match page.get("next").and_then(Value::as_str) {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, legs);
    let ids: BTreeSet<_> = seen.iter().map(|(l, _)| l).collect();
    assert_eq!(ids.len(), seen.len());
    let csv = app
        .request(
            Method::GET,
            &format!("/v1/billing/accounts/{account_id}/rated-legs?limit=5"),
            Some(&app.billing),
        )
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers().contains_key("x-next-cursor"));
    assert_eq!(csv.text().await.unwrap().lines().count(), 6);

    let (status, invoice) = app
        .get(
            &format!("/v1/billing/accounts/{account_id}/invoices/2026-11"),
            &app.billing,
        )
        .await;
    assert_eq!(status, 200);
    let november: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(charge_minor), 0) AS BIGINT) FROM rated_legs \
         WHERE account_id = $1 AND call_started_at >= '2026-11-01' AND call_started_at < '2026-12-01'",
    )
    .bind(&account_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(invoice["total_minor"], november);
    let (status, problem) = app
        .get(
            &format!("/v1/billing/accounts/{account_id}/invoices/2026-13"),
            &app.billing,
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("period")));
    app.shutdown().await;
}

async fn audit_reads(b: Backend) {
    let app = TestApp::spawn(b).await;
    let start = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap();
    append_workload(app.store.as_ref(), &mut Workload::new(9, start), 300).await;
    let account_id = account(&app, "+441632960090").await;
    let head_now = head(&app).await;

    // The whole log in keyset pages.
    let mut after = 0u64;
    let mut count = 0u64;
    loop {
        let (status, page) = app
            .get(
                &format!("/v1/audit/events?after={after}&limit=97"),
                &app.auditor,
            )
            .await;
        assert_eq!(status, 200);
        for e in page["items"].as_array().unwrap() {
            let p = e["global_position"].as_u64().unwrap();
            assert_eq!(p, after + 1, "a gap or repeat in the pages");
            after = p;
            count += 1;
        }
        if page.get("next").is_none() {
            break;
        }
    }
    assert_eq!(count, head_now);
    let (_, stream) = app
        .get(
            &format!("/v1/audit/streams/account-{account_id}/events"),
            &app.auditor,
        )
        .await;
    assert_eq!(stream["items"][0]["event_type"], "account.opened");

    // The live tail delivers an event written after it was opened.
    let r = app
        .request(
            Method::GET,
            &format!("/v1/audit/events/live?after={head_now}"),
            Some(&app.auditor),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (status, _) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account_id}/suspend"),
            json!({"reason": "audit test"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("event: account.suspended") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "live tail showed: {seen}");
    assert!(seen.contains(&format!("id: {}", head_now + 1)));

    // As of an hour ago the account did not exist; now it does, suspended.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let as_of = |at: String| {
        format!(
            "/v1/audit/accounts/{account_id}/as-of?at={}",
            at.replace('+', "%2B")
        )
    };
    let (status, _) = app.get(&as_of(hour_ago), &app.auditor).await;
    assert_eq!(status, 404);
    let (status, now) = app
        .get(&as_of(chrono::Utc::now().to_rfc3339()), &app.auditor)
        .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["status"], "suspended");

    // A call's timeline, and the chain verification.
    app.projections_caught_up().await;
    let call_id: String = sqlx::query_scalar("SELECT call_id FROM calls ORDER BY call_id LIMIT 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let (status, timeline) = app
        .get(&format!("/v1/audit/calls/{call_id}/timeline"), &app.auditor)
        .await;
    assert_eq!(status, 200, "{timeline}");
    let entries = timeline["timeline"].as_array().unwrap();
    assert!(!entries.is_empty());
    let recorded = app
        .store
        .read_stream(&format!("call-{call_id}"), 1, 100)
        .await
        .unwrap();
    assert_eq!(entries.len(), recorded.len());
    let (status, report) = app.get("/v1/audit/verification", &app.auditor).await;
    assert_eq!(status, 200);
    assert_eq!(report["intact"], true);
    assert_eq!(report["events"], head(&app).await);
    app.shutdown().await;
}

async fn operations(b: Backend) {
    let app = TestApp::spawn(b).await;
    account(&app, "+441632960095").await;
    let r = app
        .request(Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "ok".into())
    );
    app.projections_caught_up().await;
    let (status, ready) = app.get("/readyz", "").await;
    assert_eq!((status, &ready["ready"]), (200, &json!(true)), "{ready}");
    let metrics = app
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "ringledger_http_requests_total{method=\"POST\",route=\"/v1/accounts\",status=\"201\"} 1",
        "ringledger_http_request_duration_seconds_count{method=\"GET\",route=\"/readyz\"} 1",
        "ringledger_projection_lag_events{projection=\"billing\"} 0",
        "ringledger_projection_stopped{projection=\"routing\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains("ringledger_append_duration_seconds_count 3"));
    let (status, doc) = app.get("/openapi.json", "").await;
    assert_eq!(status, 200);
    assert_eq!(doc, serde_json::to_value(api::openapi()).unwrap());
    // A stopped projection makes the service not ready.
    sqlx::query("UPDATE projection_checkpoints SET status = 'stopped', error = 'test' WHERE name = 'billing'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, ready) = app.get("/readyz", "").await;
    assert_eq!((status, &ready["ready"]), (503, &json!(false)));
    app.shutdown().await;
}
