//! The extension call flows with user agents we did not write: SIPp (Debian `sip-tester`)
//! plays the carrier — the public network delivering a call to alice's main number, and the
//! cellular network delivering her extension's call to an access number — from 127.0.0.2,
//! the trunk's allowed network; pjsua2 (PyPI `pjsua2-python`) is alice's softphone, told over
//! data to call in; SIPp's built-in uas answers what the edge sends to the carrier. The
//! scenarios are tests/sipp/carrier_call*.xml, also used in the README walk-through.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use domain::call::{CallEvent, EndCause, Path as CallPath, Side};
use domain::extension::AlternateMode;
use ringledger_tests::carrier::{edge_with_carrier_network, ended, wait_for_contacts};
use ringledger_tests::sip_edge::{MAIN_NUMBER, PASSWORD, REALM, SipEdge, USERNAME};
use ringledger_tests::sipp::{CARRIER_IP, carrier, sipp_uas, succeeded};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const EXTENSION: &str = "+447700900123";
const ACCESS: &str = "+442071838799";

/// One call from the carrier: SIPp running `scenario` from `caller` to `dialled`, holding
/// the call `hold_ms` before it hangs up (carrier_call.xml).
fn carrier_call(
    edge: &SipEdge,
    dir: &Path,
    scenario: &str,
    caller: &str,
    dialled: &str,
    hold_ms: u64,
) -> Child {
    let hold = hold_ms.to_string();
    carrier(
        edge.udp,
        dir,
        scenario,
        caller,
        dialled,
        &["-m", "1", "-d", &hold],
    )
}

/// Alternate path (b) end to end: the carrier calls alice, whose account prefers the
/// alternate path; her softphone is told over data to call in; her extension calls the
/// access number through the carrier; the edge bridges it, and the caller's hangup ends
/// both. The call-in leg is billed to alice's account through the extension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_softphone_is_told_to_call_in_and_the_carrier_call_is_bridged() {
    let edge = edge_with_carrier_network(None).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.set_alternate_path(extension_id, AlternateMode::CallIn)
        .await;
    edge.add_access_number(ACCESS, None).await;
    edge.prefer_alternate_path().await;
    edge.price_calls(&[], None).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pjsua2/phone.py");
    let mut phone = Command::new("python3")
        .arg(script)
        .args([
            &edge.udp.to_string(),
            USERNAME,
            PASSWORD,
            REALM,
            "40",
            "message",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    wait_for_contacts(&edge, 1).await;

    let dir = tempfile::tempdir().unwrap();
    let caller = carrier_call(
        &edge,
        dir.path(),
        "carrier_call.xml",
        "+441632960001",
        MAIN_NUMBER,
        1500,
    );
    let mut lines = BufReader::new(phone.stdout.take().unwrap()).lines();
    let notice = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(notice) = line.strip_prefix("call-in: ") {
                return notice.to_string();
            }
        }
        panic!("pjsua2 exited without a MESSAGE");
    })
    .await
    .expect("the softphone is told to call in");
    assert!(
        notice.contains(&format!("access-number={ACCESS}")),
        "{notice}"
    );
    assert!(notice.contains(&format!("from={EXTENSION}")), "{notice}");
    let call_in = carrier_call(
        &edge,
        dir.path(),
        "carrier_call_hung_up.xml",
        EXTENSION,
        ACCESS,
        0,
    );
    succeeded(caller, "the caller").await;
    succeeded(call_in, "the call-in").await;
    let status = phone.wait().await.unwrap();
    assert!(status.success(), "pjsua2 saw no MESSAGE");

    let calls = edge.ended_calls(1).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let events = &calls[0];
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::LegStarted {
            path: CallPath::CallIn,
            ..
        }
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Bridged { .. }))
    );
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    let rated = edge.rated_legs().await;
    assert_eq!(rated.len(), 1, "{rated:?}");
    assert_eq!(
        (rated[0].path.as_str(), rated[0].extension_id.clone()),
        ("call_in", Some(extension_id.to_string()))
    );
    // 1.5 s of talk: the first minute (6p) and the 25p connect fee.
    assert_eq!(rated[0].charge_minor, Some(31));
    edge.shutdown().await;
}

/// Seeds 1-3 over the carrier: a call to alice, with no phone of hers registered, goes to her
/// extension over the cellular network (alternate call-out); then her extension dials an
/// access number over its own carrier and reaches the destination it staged over data
/// (call-through). SIPp's uas answers both legs the edge places; each is billed to alice's
/// account through the extension, on its own path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carrier_reaches_the_extension_and_the_extension_calls_through() {
    let (uas, trunk) = sipp_uas(CARRIER_IP, 2).await;
    let edge = edge_with_carrier_network(Some(trunk)).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.add_access_number(ACCESS, None).await;
    edge.price_calls(&[], None).await;
    let dir = tempfile::tempdir().unwrap();

    let inbound = carrier_call(
        &edge,
        dir.path(),
        "carrier_call.xml",
        "+441632960001",
        MAIN_NUMBER,
        500,
    );
    succeeded(inbound, "the call to alice").await;
    let destination = "+442079460000";
    edge.stage_dial_intent(extension_id, destination).await;
    let through = carrier_call(
        &edge,
        dir.path(),
        "carrier_call.xml",
        EXTENSION,
        ACCESS,
        500,
    );
    succeeded(through, "the call-through").await;
    let uas = tokio::time::timeout(Duration::from_secs(20), uas.wait_with_output())
        .await
        .expect("the uas took its calls and quit")
        .unwrap();
    assert_eq!(uas.status.code(), Some(0), "SIPp's uas saw failed calls");

    let calls = edge.ended_calls(2).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    for events in &calls {
        assert_eq!(
            ended(events),
            Some((EndCause::NormalClearing, Side::Caller)),
            "{events:?}"
        );
    }
    let rated = edge.rated_legs().await;
    let seen: Vec<_> = rated.iter().map(|r| r.summary()).collect();
    let ext = Some(extension_id.to_string());
    assert_eq!(
        seen,
        vec![
            ("alternate_call_out", EXTENSION, ext.clone(), Some(31)),
            ("call_through", destination, ext, Some(31)),
        ]
    );
    assert!(
        rated
            .iter()
            .all(|r| r.account_id == edge.account_id.to_string())
    );
    edge.shutdown().await;
}
