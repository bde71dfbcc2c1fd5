//! The mobile behind the carrier, played by pjsua2 (PyPI `pjsua2-python`,
//! `tests/pjsua2/mobile.py`): it calls `uri` as `from` from the carrier's network and plays
//! `steps` once answered (keys by RFC 4733 or SIP INFO, pauses, a hangup).

use crate::sipp::CARRIER_IP;

/// Runs the mobile (40 s at most); whether it saw its call answered and ended, and its output.
pub async fn mobile(from: String, uri: String, steps: Vec<String>) -> (bool, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pjsua2/mobile.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([CARRIER_IP, &from, &uri, "40"])
        .args(&steps)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
