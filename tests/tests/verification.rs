//! Proving an extension's number is held, with the code really delivered (`api.code_delivery
//! = "send"`): by a flash call the SIP edge places through the trunk (the caller ID's last
//! four digits are the code; the edge cancels once it rings), and by SMS through a gateway's
//! webhook (a real HTTP server on 127.0.0.1). The code never reaches the log.

use std::sync::Arc;
use std::time::Duration;

use domain::E164;
use infra::config::CodeDelivery;
use infra::delivery::{CodeSender, SmsWebhook};
use reqwest::Method;
use ringledger_tests::api_app::{TestApp, account, extension};
use ringledger_tests::carrier::edge_with_trunk;
use ringledger_tests::harness::Backend;
use ringledger_tests::http_sink::one_post;
use ringledger_tests::sip_edge::{header, respond_to};
use serde_json::{Value, json};
use signaling::flash_call::FlashCaller;

const EXTENSION: &str = "+447700900123";
const PREFIX: &str = "+4480055";

async fn api_with(sms: Option<Arc<dyn CodeSender>>, flash: Option<Arc<dyn CodeSender>>) -> TestApp {
    let settings = api::ApiSettings {
        sms,
        flash_call: flash,
        ..api::ApiSettings::new("ringledger.test", CodeDelivery::Send)
    };
    TestApp::spawn_with(Backend::sqlite().await, settings).await
}

/// An extension of a fresh account, pending verification: its id.
async fn pending_extension(app: &TestApp) -> String {
    let account_id = account(app, "+442071838750").await;
    let (status, ext) = extension(app, &account_id, EXTENSION).await;
    assert_eq!(status, 201, "{ext}");
    ext["extension_id"].as_str().unwrap().to_owned()
}

async fn start(app: &TestApp, ext: &str, method: &str) -> (u16, Value) {
    app.admin_json(
        Method::POST,
        &format!("/v1/extensions/{ext}/verification"),
        json!({ "method": method }),
    )
    .await
}

async fn confirm(app: &TestApp, ext: &str, code: &str) -> Value {
    let (status, body) = app
        .admin_json(
            Method::POST,
            &format!("/v1/extensions/{ext}/verification/confirm"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Whether any event's payload holds `code` as a value of its own.
async fn code_in_log(app: &TestApp, code: &str) -> bool {
    let quoted = format!("\"{code}\"");
    let events = app.store.read_all(0, 10_000).await.unwrap();
    events
        .iter()
        .any(|e| e.payload.to_string().contains(&quoted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_call_carries_the_code_in_its_caller_id_and_is_cancelled_once_it_rings() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let flash: Arc<dyn CodeSender> = Arc::new(FlashCaller::new(edge.edge.clone(), PREFIX));
    let app = api_with(None, Some(flash)).await;
    let ext = pending_extension(&app).await;
    let (status, started) = start(&app, &ext, "flash_call").await;
    assert_eq!(status, 202, "{started}");
    assert!(started.get("code").is_none(), "{started}");

    // The carrier gets the call for the extension's number; the caller ID ends in the code.
    let invite = trunk.expect_request("INVITE").await;
    assert!(
        invite.starts_with(&format!("INVITE sip:{EXTENSION}@")),
        "{invite}"
    );
    let from = header(&invite, "From");
    let caller_id = from
        .split("sip:")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .unwrap()
        .to_string();
    let code = caller_id
        .strip_prefix(PREFIX)
        .expect("the prefix, then the code");
    assert_eq!(code.len(), 4, "{from}");
    assert!(
        !invite.contains("m=audio"),
        "nobody is meant to talk: {invite}"
    );
    trunk
        .send(&respond_to(&invite, 180, "mob", Some(trunk.addr), ""))
        .await;
    let cancel = trunk.expect_request("CANCEL").await;
    trunk.send(&respond_to(&cancel, 200, "mob", None, "")).await;
    trunk.send(&respond_to(&invite, 487, "mob", None, "")).await;
    trunk.expect_request("ACK").await;

    assert!(
        !code_in_log(&app, &caller_id).await,
        "the code reached the log"
    );
    let verified = confirm(&app, &ext, code).await;
    assert_eq!(verified["status"], "verified");
    // Without the edge in the process, a flash call cannot be offered: refused, naming the
    // field, and nothing recorded.
    let without = api_with(None, None).await;
    let other = pending_extension(&without).await;
    let before = without.store.head_position().await.unwrap();
    let (status, problem) = start(&without, &other, "flash_call").await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("method")));
    assert_eq!(without.store.head_position().await.unwrap(), before);
    edge.shutdown().await;
}

/// A flash call answered before the CANCEL takes is hung up at once; one the network
/// refuses is a delivery failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_flash_call_is_hung_up_and_a_refused_one_fails() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let flash = FlashCaller::new(edge.edge.clone(), PREFIX);
    let number = E164::parse(EXTENSION).unwrap();
    let (sent, ()) = tokio::join!(flash.send(&number, "1234"), async {
        let invite = trunk.expect_request("INVITE").await;
        trunk
            .send(&respond_to(&invite, 200, "mob", Some(trunk.addr), ""))
            .await;
        trunk.expect_request("ACK").await;
        let bye = trunk.expect_request("BYE").await;
        trunk.send(&respond_to(&bye, 200, "mob", None, "")).await;
    });
    sent.expect("an answered flash call rang");
    let (refused, ()) = tokio::join!(flash.send(&number, "1234"), async {
        let invite = trunk.expect_request("INVITE").await;
        trunk.send(&respond_to(&invite, 404, "mob", None, "")).await;
        trunk.expect_request("ACK").await;
    });
    let e = refused.expect_err("a refused flash call did not reach the phone");
    assert!(e.to_string().contains("404"), "{e}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_code_goes_through_the_gateway_webhook() {
    let (url, gateway) = one_post("/sms").await;
    let sms: Arc<dyn CodeSender> = Arc::new(SmsWebhook::new(url));
    let app = api_with(Some(sms), None).await;
    let ext = pending_extension(&app).await;
    let (status, started) = start(&app, &ext, "sms").await;
    assert_eq!(status, 202, "{started}");
    assert!(started.get("code").is_none(), "{started}");
    let body = tokio::time::timeout(Duration::from_secs(10), gateway)
        .await
        .expect("the gateway was called")
        .unwrap();
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sent["to"], EXTENSION);
    let code = sent["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    assert!(sent["text"].as_str().unwrap().contains(&code));
    assert!(!code_in_log(&app, &code).await, "the code reached the log");
    assert_eq!(confirm(&app, &ext, &code).await["status"], "verified");
}
