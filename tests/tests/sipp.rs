//! Interoperability with SIPp (Debian package `sip-tester`), a SIP implementation we did not
//! write: its REGISTER-with-digest scenario (tests/sipp/register_auth.xml) against the edge,
//! over UDP and TCP, each 200 SIPp counts backed by an event in the device's stream; and calls
//! from a SIPp device (tests/sipp/call_auth_uac.xml) through the edge to SIPp's built-in uas
//! as the carrier, each recorded as an answered call the caller hung up.

use std::path::Path;
use std::process::Stdio;

use domain::call::{CallEvent, EndCause, Side};
use domain::device::DeviceEvent;
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{PASSWORD, REALM, SipEdge, USERNAME};
use ringledger_tests::sipp::sipp_uas;
use signaling::digest::Algorithm;

const CALLS: usize = 20;

/// Runs `scenario` for `CALLS` calls as alice (digests computed for `auth_uri`, the
/// Request-URI without `sip:`) and returns SIPp's exit code and output.
async fn run_sipp(
    edge: &SipEdge,
    scenario: &str,
    transport: &str,
    auth_uri: &str,
    extra: &[&str],
) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    std::fs::write(
        &users,
        format!("SEQUENTIAL\n{USERNAME};{PASSWORD};{REALM};\n"),
    )
    .unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join(scenario);
    let target = match transport {
        "t1" => edge.tcp,
        _ => edge.udp,
    };
    let out = tokio::process::Command::new("sipp")
        .arg(target.to_string())
        .args(["-sf", scenario.to_str().unwrap()])
        .args(["-inf", users.to_str().unwrap()])
        .args(["-au", "[field0]", "-ap", "[field1]"])
        // SIPp's digest uri is remote_ip:remote_port unless told: the edge wants the
        // Request-URI's (`sip:` is added by SIPp).
        .args(["-auth_uri", auth_uri])
        // No `-p`: SIPp binds a port the system picks, so parallel tests cannot collide (a port
        // picked here and handed over could be taken by the time SIPp binds it).
        .args(["-i", "127.0.0.1", "-t", transport])
        .args(["-m", &CALLS.to_string(), "-r", "10", "-l", "5"])
        .args(extra)
        .args([
            "-timeout",
            "30s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("sipp must be installed (Debian package sip-tester; scripts/test installs it)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.path().to_string_lossy().ends_with("_errors.log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    (out.status.code(), text)
}

async fn sipp_registers(transport: &str, algorithms: Vec<Algorithm>) {
    let edge = SipEdge::spawn(Backend::sqlite().await, algorithms).await;
    let before = edge.device_events().await.len();
    let (code, output) = run_sipp(&edge, "sipp/register_auth.xml", transport, REALM, &[]).await;
    assert_eq!(code, Some(0), "SIPp reported failed calls:\n{output}");
    let events = edge.device_events().await;
    let bound: Vec<_> = events[before..]
        .iter()
        .filter(|e| {
            matches!(
                e,
                DeviceEvent::ContactBound { .. } | DeviceEvent::ContactRefreshed { .. }
            )
        })
        .collect();
    assert_eq!(bound.len(), CALLS, "one binding event per 200: {events:?}");
    assert_eq!(events.len() - before, CALLS, "nothing else written");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_with_md5_digest_over_udp() {
    // SIPp 3.6 computes MD5 digests only and answers the first challenge it reads: MD5 first
    // then SHA-256 suits it (SHA-256 first does not).
    sipp_registers("u1", vec![Algorithm::Md5, Algorithm::Sha256]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_with_md5_digest_over_tcp() {
    sipp_registers("t1", vec![Algorithm::Md5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_device_calls_out_through_the_edge_to_a_sipp_trunk() {
    let (uas, trunk_addr) = sipp_uas("127.0.0.1", CALLS).await;
    let trunk = signaling::trunk::Trunk {
        name: "carrier".into(),
        address: trunk_addr,
        networks: vec![],
        numbers: vec!["+".into()],
    };
    let edge =
        SipEdge::spawn_with_trunks(Backend::sqlite().await, vec![Algorithm::Md5], vec![trunk])
            .await;
    let (code, output) = run_sipp(
        &edge,
        "sipp/call_auth_uac.xml",
        "u1",
        &format!("+33142278186@{REALM}"),
        &["-s", "+33142278186", "-d", "200"],
    )
    .await;
    assert_eq!(code, Some(0), "SIPp reported failed calls:\n{output}");
    let uas = tokio::time::timeout(std::time::Duration::from_secs(20), uas.wait_with_output())
        .await
        .expect("the uas took its calls and quit")
        .unwrap();
    assert_eq!(uas.status.code(), Some(0), "SIPp's uas saw failed calls");
    let calls = edge.ended_calls(CALLS).await;
    assert_eq!(calls.len(), CALLS);
    for events in &calls {
        assert!(
            events
                .iter()
                .any(|e| matches!(e, CallEvent::LegAnswered { .. })),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| matches!(
                e,
                CallEvent::Ended {
                    cause: EndCause::NormalClearing,
                    side: Side::Caller,
                    ..
                }
            )),
            "{events:?}"
        );
    }
    edge.shutdown().await;
}
