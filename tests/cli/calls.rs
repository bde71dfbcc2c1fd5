//! `ringledger serve` with 20 answered calls, as an operator stops it: SIGTERM hangs every
//! call up on both sides (the carrier, SIPp from 127.0.0.2, gets 20 BYEs on the calls it
//! delivered and 20 on the calls the edge placed to the extension) and records 20
//! `call.ended` with cause `edge_shutdown`; `kill -9` leaves them up, and the next start ends
//! the 20 as `edge_lost` at the dead process's last heartbeat, each billed up to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use domain::Event;
use domain::call::{CallEvent, EndCause};
use domain::edge::EdgeEvent;

use super::{http, ready_field, ringledger, serve_until_ready};

const MAIN: &str = "+441632960001";
const EXTENSION: &str = "+447700900123";
const CALLS: usize = 20;
const CARRIER_IP: &str = "127.0.0.2";
const TARIFF: &str = r#"{"name": "UK", "currency": "GBP", "effective_from": "2026-01-01T00:00:00Z",
    "rates": [{"prefix": "44", "description": "UK", "per_minute_millis": 2000,
    "connect_fee_minor": 0, "first_increment_secs": 1, "next_increment_secs": 1}]}"#;

struct Server {
    child: Child,
    api: String,
    sip: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let mut serve = ringledger(dir);
        serve.args(["--config", "ringledger.toml", "serve"]);
        let (child, ready) = serve_until_ready(serve);
        Self {
            api: ready_field(&ready, "api"),
            sip: ready_field(&ready, "sip"),
            child,
        }
    }

    /// SIGTERM, as a service manager stops it; its exit status (within 30 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// A test that fails leaves no server behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sipp(dir: &Path, args: &[&str]) -> Child {
    Command::new("sipp")
        .args(args)
        .args(["-nostdin", "-timeout", "60s"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp must be installed (Debian package sip-tester; scripts/test installs it)")
}

/// A UDP port free on the carrier's address (SIPp binds it just after).
fn free_port() -> u16 {
    std::net::UdpSocket::bind((CARRIER_IP, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The carrier's answering side: SIPp's uas on 127.0.0.2, answering `CALLS` calls.
fn uas(dir: &Path) -> (Child, u16) {
    let port = free_port();
    let child = sipp(
        dir,
        &[
            "-sn",
            "uas",
            "-i",
            CARRIER_IP,
            "-p",
            &port.to_string(),
            "-m",
            &CALLS.to_string(),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    (child, port)
}

/// The carrier (SIPp from 127.0.0.2, on a port of its own) calling alice's main number with
/// `scenario` (in tests/sipp/) and `extra` arguments (how many calls, how fast, how long).
fn carrier(dir: &Path, sip: &str, scenario: &str, extra: &[&str]) -> Child {
    let scenario: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/sipp", scenario]
        .iter()
        .collect();
    let port = free_port().to_string();
    let mut args = vec![
        sip,
        "-p",
        &port,
        "-sf",
        scenario.to_str().unwrap(),
        "-i",
        CARRIER_IP,
        "-key",
        "caller",
        "+442079460111",
        "-s",
        MAIN,
    ];
    args.extend_from_slice(extra);
    sipp(dir, &args)
}

/// The carrier delivering `CALLS` calls to alice's main number, each waiting for the far end
/// to hang up.
fn carrier_calls(dir: &Path, sip: &str) -> Child {
    let calls = CALLS.to_string();
    carrier(
        dir,
        sip,
        "carrier_call_hung_up.xml",
        &["-m", &calls, "-l", &calls, "-r", "10"],
    )
}

fn wait_ok(child: Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut child = child;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "SIPp ({what}) saw calls fail:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        assert!(Instant::now() < deadline, "SIPp ({what}) did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A store with alice's account (priced at 2p a minute by the second) and her verified
/// mobile extension, served with a trunk to `uas_port`, call-outs to the extension relayed,
/// and a heartbeat every second.
fn provisioned(dir: &Path, uas_port: u16) -> Server {
    provisioned_with(dir, uas_port, "heartbeat_secs = 1\n").0
}

/// The same with `sip` (lines of the `[sip]` table) instead of the one-second heartbeat;
/// also the admin key, and the account and the extension.
fn provisioned_with(dir: &Path, uas_port: u16, sip: &str) -> (Server, String, String, String) {
    std::fs::write(
        dir.join("ringledger.toml"),
        format!(
            "[api]\nlisten = \"127.0.0.1:0\"\ncode_delivery = \"response\"\n\
             [sip]\nlisten = \"127.0.0.1:0\"\n{sip}\
             [trunks.carrier]\naddress = \"{CARRIER_IP}:{uas_port}\"\n\
             allowed_networks = [\"{CARRIER_IP}/32\"]\nnumbers = [\"+\"]\n"
        ),
    )
    .unwrap();
    let created = ringledger(dir)
        .args(["--config", "ringledger.toml"])
        .args(["keys", "create", "--role", "admin", "--name", "calls test"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let server = Server::start(dir);
    let post = |path: &str, body: &str| {
        let (status, reply) = http(&server.api, "POST", path, Some(&key), body);
        assert!((200..300).contains(&status), "{path}: {status} {reply}");
        serde_json::from_str::<serde_json::Value>(&reply).unwrap()
    };
    let tariff = post("/v1/tariffs", TARIFF)["tariff_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let account = post(
        "/v1/accounts",
        &format!(
            r#"{{"name": "Ada", "main_number": "{MAIN}", "tariff_id": "{tariff}", "currency": "GBP"}}"#
        ),
    )["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ext = post(
        &format!("/v1/accounts/{account}/extensions"),
        &format!(r#"{{"number": "{EXTENSION}", "native_provider": "O2", "kind": "mobile"}}"#),
    )["extension_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = post(
        &format!("/v1/extensions/{ext}/verification"),
        r#"{"method": "sms"}"#,
    )["code"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        &format!("/v1/extensions/{ext}/verification/confirm"),
        &format!(r#"{{"code": "{code}"}}"#),
    );
    // The edge follows the log: give it a moment to see the extension serving.
    std::thread::sleep(Duration::from_millis(500));
    (server, key, account, ext)
}

/// Every event of the store, decoded, with its stream.
fn events(dir: &Path) -> Vec<(String, Event)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.join("data/ringledger.db").display()
        );
        let store = infra::open_store(&url).await.unwrap();
        store
            .read_all(0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.stream_id.clone(), e.decode().unwrap()))
            .collect()
    })
}

fn ends(events: &[(String, Event)]) -> Vec<(EndCause, domain::Instant)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Call(CallEvent::Ended { cause, at, .. }) => Some((*cause, *at)),
            _ => None,
        })
        .collect()
}

fn wait_answered(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = events(dir)
            .iter()
            .filter(|(_, e)| matches!(e, Event::Call(CallEvent::LegAnswered { .. })))
            .count();
        if answered >= CALLS {
            return;
        }
        assert!(Instant::now() < deadline, "only {answered} calls answered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sigterm_hangs_up_every_call_on_both_sides_and_records_why() {
    let dir = tempfile::tempdir().unwrap();
    let (uas, port) = uas(dir.path());
    let mut server = provisioned(dir.path(), port);
    let carrier = carrier_calls(dir.path(), &server.sip);
    wait_answered(dir.path());

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    // Both sides of every call heard BYE and answered it: SIPp counts each call done.
    wait_ok(carrier, "the carrier's calls to alice");
    wait_ok(uas, "the calls out to the extension");

    let log = events(dir.path());
    let ended = ends(&log);
    assert_eq!(ended.len(), CALLS, "{ended:?}");
    assert!(
        ended.iter().all(|(c, _)| *c == EndCause::EdgeShutdown),
        "{ended:?}"
    );
    assert!(
        log.iter()
            .any(|(_, e)| matches!(e, Event::Edge(EdgeEvent::Stopped { .. }))),
        "no edge.stopped after a complete drain"
    );
}

#[test]
fn after_kill_9_the_next_start_ends_the_calls_at_the_last_heartbeat_and_bills_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut uas, port) = uas(dir.path());
    let mut server = provisioned(dir.path(), port);
    let mut carrier = carrier_calls(dir.path(), &server.sip);
    wait_answered(dir.path());
    // A few heartbeats of talk, then the process is killed: nobody sends BYE.
    std::thread::sleep(Duration::from_millis(2500));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = carrier.kill();
    let _ = uas.kill();
    let _ = (carrier.wait(), uas.wait());
    let log = events(dir.path());
    assert!(
        ends(&log).is_empty(),
        "calls ended though the edge was killed"
    );
    let dead_edge = log
        .iter()
        .find_map(|(_, e)| match e {
            Event::Call(CallEvent::Started { edge_id, .. }) => *edge_id,
            _ => None,
        })
        .expect("calls name their edge");
    let last_alive = log
        .iter()
        .filter(|(stream, _)| *stream == domain::edge::stream_id(dead_edge))
        .filter_map(|(_, e)| match e {
            Event::Edge(e) => Some(e.at()),
            _ => None,
        })
        .max()
        .unwrap();

    let mut server = Server::start(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let ended = ends(&events(dir.path()));
        if ended.len() >= CALLS {
            break ended;
        }
        assert!(Instant::now() < deadline, "only {} ended", ended.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ended.len(), CALLS);
    for (cause, at) in &ended {
        assert_eq!(*cause, EndCause::EdgeLost);
        assert_eq!(*at, last_alive, "not billed up to the last heartbeat");
    }
    // Billed: 20 rated legs, each of the talk up to the last heartbeat (over a second).
    let key = {
        let created = ringledger(dir.path())
            .args(["--config", "ringledger.toml"])
            .args(["keys", "create", "--role", "billing", "--name", "billing"])
            .output()
            .unwrap();
        String::from_utf8(created.stdout).unwrap().trim().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let account = log
        .iter()
        .find_map(|(_, e)| match e {
            Event::Call(CallEvent::Started { account_id, .. }) => Some(account_id.to_string()),
            _ => None,
        })
        .unwrap();
    loop {
        let (status, body) = http(
            &server.api,
            "GET",
            &format!("/v1/billing/accounts/{account}/rated-legs"),
            Some(&key),
            "",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let items = v["items"].as_array().unwrap();
        if items.len() == CALLS {
            assert!(
                items
                    .iter()
                    .all(|l| l["billable_secs"].as_i64().unwrap_or(0) >= 1),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} rated legs: {body}",
            items.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(server.terminate().success());
}

/// The call-in fallback with the default timing (`sip.call_in_timeout_secs` 15, the account
/// ringing 30 s): the extension is asked to call in, does not, and 15 s later is called out
/// through the carrier, with 15 s left to ring; it answers and the call goes through.
#[test]
fn with_the_default_timing_an_extension_that_does_not_call_in_is_called_out() {
    let dir = tempfile::tempdir().unwrap();
    let (uas, port) = uas(dir.path());
    // Call-ins on (the carrier is trusted), told through a webhook nobody listens on (a
    // failed notice is only logged): no device is needed to be told.
    let (mut server, key, account, ext) = provisioned_with(
        dir.path(),
        port,
        "call_in_trust_caller_id = true\ncall_in_webhook_url = \"http://127.0.0.1:9/\"\n",
    );
    let put = |path: &str, body: &str| {
        let (status, reply) = http(&server.api, "PUT", path, Some(&key), body);
        assert!((200..300).contains(&status), "{path}: {status} {reply}");
    };
    let (status, reply) = http(
        &server.api,
        "POST",
        &format!("/v1/accounts/{account}/access-numbers"),
        Some(&key),
        r#"{"number": "+441632960999"}"#,
    );
    assert!((200..300).contains(&status), "{status} {reply}");
    put(
        &format!("/v1/extensions/{ext}/settings"),
        r#"{"ring_on_inbound": true, "ring_delay_secs": 0, "may_call_out": true,
            "international_allowed": false, "caller_id": "main", "daily_limit_minor": null,
            "prefers_alternate_path": false, "alternate_path": "call_in"}"#,
    );
    std::thread::sleep(Duration::from_millis(500));
    let caller = carrier(
        dir.path(),
        &server.sip,
        "carrier_call.xml",
        &["-m", "1", "-d", "500"],
    );
    wait_ok(caller, "the caller's call");
    let mut uas = uas;
    let _ = uas.kill();
    let _ = uas.wait();

    let log = events(dir.path());
    let calls: Vec<&CallEvent> = log
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Call(c) => Some(c),
            _ => None,
        })
        .collect();
    let (awaited_at, expires_at) = calls
        .iter()
        .find_map(|e| match e {
            CallEvent::CallInAwaited { at, expires_at, .. } => Some((*at, *expires_at)),
            _ => None,
        })
        .expect("a call-in was awaited");
    assert_eq!((expires_at - awaited_at).num_seconds(), 15);
    let called_out = calls
        .iter()
        .find_map(|e| match e {
            CallEvent::LegStarted {
                path: domain::call::Path::AlternateCallOut,
                at,
                ..
            } => Some(*at),
            _ => None,
        })
        .expect("the extension was called out");
    assert!(
        called_out >= expires_at,
        "called out before the wait was over"
    );
    assert!(
        calls
            .iter()
            .any(|e| matches!(e, CallEvent::LegAnswered { .. })),
        "the call-out was not answered"
    );
    assert!(calls.iter().any(|e| matches!(
        e,
        CallEvent::Ended {
            cause: EndCause::NormalClearing,
            ..
        }
    )));
    assert!(server.terminate().success());
}
