//! SIPp (Debian `sip-tester`) as a peer of the edge in tests: its built-in uas answering as
//! a carrier.

use std::net::SocketAddr;
use std::process::Stdio;

/// SIPp's built-in uas on `ip`, answering `calls` calls, on a port picked here (and picked
/// again if another process takes it before SIPp binds it).
pub async fn sipp_uas(ip: &str, calls: usize) -> (tokio::process::Child, SocketAddr) {
    sipp_uas_with(ip, calls, &[]).await
}

/// The same, writing every message SIPp receives and sends to `trace` (`-trace_msg`).
pub async fn sipp_uas_traced(
    ip: &str,
    calls: usize,
    trace: &std::path::Path,
) -> (tokio::process::Child, SocketAddr) {
    let trace = trace.to_str().expect("a UTF-8 path");
    sipp_uas_with(ip, calls, &["-trace_msg", "-message_file", trace]).await
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
            .args(["-sn", "uas", "-i", ip, "-p", &addr.port().to_string()])
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
