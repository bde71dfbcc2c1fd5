//! Interoperability with pjsua2 (PyPI `pjsua2-python`, the PJSIP stack with its null audio
//! device): it registers with the edge using MD5 and SHA-256 digest authentication (RFC 8760),
//! and its binding is recorded before the 200 it receives.

use std::path::Path;

use domain::device::DeviceEvent;
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{PASSWORD, REALM, SipEdge, USERNAME};
use signaling::digest::Algorithm;

async fn pjsua2_registers(algorithms: Vec<Algorithm>) {
    let edge = SipEdge::spawn(Backend::sqlite().await, algorithms).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pjsua2/phone.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            &edge.udp.to_string(),
            USERNAME,
            PASSWORD,
            REALM,
            "10",
            "register",
        ])
        .output()
        .await
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "pjsua2 did not register (pip install pjsua2-python; scripts/test installs it):\n{text}"
    );
    assert!(text.contains("registration: 200"), "{text}");
    // The 200 came after the binding was durable: it is in the log already.
    let bound = edge
        .device_events()
        .await
        .into_iter()
        .find_map(|e| match e {
            DeviceEvent::ContactBound { user_agent, .. } => Some(user_agent),
            _ => None,
        });
    assert_eq!(bound, Some(Some("pjsua2 ringledger-tests".to_string())));
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_registers_with_md5_digest() {
    pjsua2_registers(vec![Algorithm::Md5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_registers_with_sha256_digest() {
    // SHA-256 alone is offered: a 200 proves pjsua2 and the edge agree on RFC 8760 digests.
    pjsua2_registers(vec![Algorithm::Sha256]).await;
}
