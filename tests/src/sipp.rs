//! SIPp (Debian `sip-tester`) as a peer of the edge in tests: its built-in uas answering as
//! a carrier.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where the test carrier's calls come from (the trunks' allowed network in these tests).
pub const CARRIER_IP: &str = "127.0.0.2";

/// SIPp playing the carrier from `CARRIER_IP`: `scenario` (in tests/sipp/) from `caller` to
/// `dialled` at the edge's `sip` address, with `extra` arguments (how many calls, how fast,
/// how long each is held), run in `dir`.
pub fn carrier(
    sip: SocketAddr,
    dir: &Path,
    scenario: &str,
    caller: &str,
    dialled: &str,
    extra: &[&str],
) -> Child {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(scenario);
    Command::new("sipp")
        .arg(sip.to_string())
        .args(["-sf", scenario.to_str().unwrap()])
        .args(["-i", CARRIER_IP, "-key", "caller", caller, "-s", dialled])
        .args(extra)
        .args([
            "-timeout",
            "60s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp must be installed (Debian package sip-tester; scripts/test installs it)")
}

/// Waits (up to 60 s) for SIPp to finish, and fails the test unless every call succeeded.
pub async fn succeeded(sipp: Child, what: &str) {
    let out = tokio::time::timeout(Duration::from_secs(60), sipp.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("SIPp ({what}) did not finish"))
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "SIPp ({what}) saw calls fail:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIPp's built-in uas on `ip`, answering `calls` calls, on a port picked here (and picked
/// again if another process takes it before SIPp binds it).
pub async fn sipp_uas(ip: &str, calls: usize) -> (tokio::process::Child, SocketAddr) {
    sipp_uas_with(ip, calls, &["-sn", "uas"]).await
}

/// The same playing `scenario` (in tests/sipp/) instead.
pub async fn sipp_uas_scenario(
    ip: &str,
    calls: usize,
    scenario: &str,
) -> (tokio::process::Child, SocketAddr) {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(scenario);
    let scenario = scenario.to_str().expect("a UTF-8 path");
    sipp_uas_with(ip, calls, &["-sf", scenario]).await
}

/// The same, writing every message SIPp receives and sends to `trace` (`-trace_msg`).
pub async fn sipp_uas_traced(
    ip: &str,
    calls: usize,
    trace: &std::path::Path,
) -> (tokio::process::Child, SocketAddr) {
    let trace = trace.to_str().expect("a UTF-8 path");
    let traced = ["-sn", "uas", "-trace_msg", "-message_file", trace];
    sipp_uas_with(ip, calls, &traced).await
}

async fn sipp_uas_with(
    ip: &str,
    calls: usize,
    extra: &[&str],
) -> (tokio::process::Child, SocketAddr) {
    for _ in 0..5 {
        let addr = std::net::UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = tokio::process::Command::new("sipp")
            .args(["-i", ip, "-p", &addr.port().to_string()])
            .args(["-m", &calls.to_string(), "-timeout", "60s", "-nostdin"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("sipp must be installed (Debian package sip-tester)");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if child.try_wait().unwrap().is_none() {
            return (child, addr);
        }
    }
    panic!("SIPp's uas could not bind a port");
}
