//! Interoperability with baresip (Debian package `baresip`), a softphone we did not write: it
//! registers with the edge using digest authentication against the default challenge (MD5
//! alone) and its binding is recorded with the real source address. (baresip 1.0 gives up with
//! ENOSYS when any challenge offered is SHA-256, whatever the order: why the default
//! `sip.digest_algorithms` is MD5 alone.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use domain::device::DeviceEvent;
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{PASSWORD, REALM, SipEdge, USERNAME};
use signaling::digest::Algorithm;

/// A baresip configuration directory: UDP on a port of its own choosing, file audio (no sound
/// card), one account sending everything to the edge.
fn baresip_config(dir: &std::path::Path, edge: std::net::SocketAddr) {
    std::fs::write(
        dir.join("config"),
        "poll_method epoll\n\
         sip_listen 127.0.0.1:0\n\
         sip_transports udp\n\
         audio_player aufile,/dev/null\n\
         audio_source aufile,/dev/null\n\
         audio_alert aufile,/dev/null\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module aufile.so\n\
         module account.so\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!(
            "<sip:{USERNAME}@{REALM}>;auth_pass={PASSWORD};outbound=\"sip:{edge}\";regint=600\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_digest_auth() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp);
    let mut child = tokio::process::Command::new("baresip")
        .args(["-f", dir.path().to_str().unwrap(), "-t", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("baresip must be installed (Debian package baresip; scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(15);
    let bound = loop {
        let bound = edge
            .device_events()
            .await
            .into_iter()
            .find_map(|e| match e {
                DeviceEvent::ContactBound {
                    contact_uri,
                    source,
                    user_agent,
                    ..
                } => Some((contact_uri, source, user_agent)),
                _ => None,
            });
        if let Some(b) = bound {
            break b;
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "baresip did not register:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    let (contact_uri, source, user_agent) = bound;
    // baresip writes its contact as `sip:alice-<instance>@127.0.0.1:<port>`.
    assert!(
        contact_uri.starts_with(&format!("sip:{USERNAME}")),
        "{contact_uri}"
    );
    assert!(contact_uri.contains("@127.0.0.1:"), "{contact_uri}");
    assert!(source.starts_with("127.0.0.1:"), "{source}");
    assert!(
        user_agent
            .as_deref()
            .unwrap_or_default()
            .contains("baresip"),
        "{user_agent:?}"
    );
    edge.shutdown().await;
}
