//! Interoperability with baresip (Debian package `baresip`), a softphone we did not write: it
//! registers with the edge using digest authentication against the default challenge (MD5
//! alone) and its binding is recorded with the real source address. (baresip 1.0 gives up with
//! ENOSYS when any challenge offered is SHA-256, whatever the order: why the default
//! `sip.digest_algorithms` is MD5 alone.) With the README's configuration (its `menu` module
//! listens for SIP MESSAGE; without one baresip answers 501) it takes the call-in notice and
//! shows it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use domain::device::DeviceEvent;
use domain::extension::AlternateMode;
use ringledger_tests::carrier::{cancel_of, carrier_invite, edge_with_trunk_and_media};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{MAIN_NUMBER, PASSWORD, REALM, SipEdge, USERNAME, relay_settings};
use signaling::digest::Algorithm;

/// A baresip configuration directory as the README's walk-through writes it: UDP on a port of
/// its own choosing, file audio (no sound card), the `menu` module (which takes SIP MESSAGEs
/// and prints them), one account sending everything to the edge.
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
         module menu.so\n\
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

/// baresip with the configuration in `dir`, for at most 20 s, with `extra` arguments.
fn baresip(dir: &std::path::Path, extra: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new("baresip")
        .args(extra)
        .args(["-f", dir.to_str().unwrap(), "-t", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("baresip must be installed (Debian package baresip; scripts/test installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_digest_auth() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp);
    let mut child = baresip(dir.path(), &[]);
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

/// baresip, configured as in the README, is told over data to call in: it takes the edge's
/// MESSAGE (200, not 501) and shows the notice, with the access number to call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_takes_the_call_in_notice_and_shows_it() {
    const EXTENSION: &str = "+447700900123";
    const ACCESS: &str = "+442071838799";
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.set_alternate_path(extension_id, AlternateMode::CallIn)
        .await;
    edge.add_access_number(ACCESS, None).await;
    edge.price_calls(&[], None).await;
    edge.prefer_alternate_path().await;
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp);
    // -s: the SIP it sends and gets is printed too.
    let mut child = baresip(dir.path(), &["-s"]);
    ringledger_tests::carrier::wait_for_contacts(&edge, 1).await;

    let invite = carrier_invite(&trunk, MAIN_NUMBER, "notice");
    trunk.send(&invite).await;
    trunk.expect_status(180).await;
    // The notice is sent at once; give baresip a moment to answer and print it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    trunk.send(&cancel_of(&invite)).await;
    let _ = child.start_kill();
    let out = child.wait_with_output().await.unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!shown.contains("501 Not Implemented"), "{shown}");
    assert!(
        shown.contains("SIP/2.0 200 OK") && shown.contains("CSeq: 1 MESSAGE"),
        "{shown}"
    );
    assert!(
        shown.contains(ACCESS),
        "the notice names the access number: {shown}"
    );
    edge.shutdown().await;
}
