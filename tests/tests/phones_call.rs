//! Two softphones nobody here wrote call each other through the edge: baresip (Debian),
//! registered as alice, dials bob's main number; the call leaves through the trunk, which in
//! this test is the edge itself, comes back in as a carrier's call to bob, and rings pjsua2
//! (PyPI `pjsua2-python`), registered as bob, which answers. baresip hangs up after a few
//! seconds: both calls (alice's out, bob's in) end, each recorded with its answer and end.
//! Media flows through the edge's RTP relay (both calls' relays, one after the other).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::call::{CallEvent, Direction, EndCause, Origin, Side};
use projections::call_history::CallHistory;
use projections::db::ProjectionDb;
use projections::runner::Runner;
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{PASSWORD, REALM, SipEdge, USERNAME};
use sqlx::Row;

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bobs-own-long-password";
const BOB_NUMBER: &str = "+442071838751";
/// How long baresip stays up (it hangs up as it quits).
const BARESIP_SECONDS: u64 = 8;

/// baresip's microphone: a WAV file of silence (8 kHz, 16-bit mono) longer than the call;
/// its end would end the call.
fn silence_wav(path: &Path, seconds: u32) {
    let data_len = seconds * 8000 * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(44 + data_len as usize, 0);
    std::fs::write(path, wav).unwrap();
}

fn baresip_config(dir: &Path, edge: std::net::SocketAddr) {
    let wav = dir.join("silence.wav");
    silence_wav(&wav, 4 * BARESIP_SECONDS as u32);
    let wav = wav.display();
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\n\
         sip_listen 127.0.0.1:0\n\
         net_interface 127.0.0.1\n\
         sip_transports udp\n\
         audio_player aufile,/dev/null\n\
         audio_source aufile,{wav}\n\
         audio_alert aufile,/dev/null\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module aufile.so\n\
         module menu.so\n\
         module account.so\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:{USERNAME}@{REALM}>;auth_pass={PASSWORD};outbound=\"sip:{edge}\";regint=0\n"),
    )
    .unwrap();
}

fn talk_time(events: &[CallEvent]) -> Option<chrono::Duration> {
    let answered = events.iter().find_map(|e| match e {
        CallEvent::LegAnswered { at, .. } => Some(*at),
        _ => None,
    })?;
    let ended = events.iter().find_map(|e| match e {
        CallEvent::Ended { at, .. } => Some(*at),
        _ => None,
    })?;
    Some(ended - answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_pjsua2_through_the_edge_and_hangs_up() {
    let edge = SipEdge::spawn_looped(Backend::sqlite().await).await;
    let (bob_account, _) = edge.add_subscriber(BOB, BOB_PASSWORD, BOB_NUMBER).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pjsua2/answer.py");
    let pjsua2 = tokio::process::Command::new("python3")
        .arg(script)
        .args([&edge.udp.to_string(), BOB, BOB_PASSWORD, REALM, "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let deadline = Instant::now() + Duration::from_secs(15);
    while edge
        .view
        .read()
        .unwrap()
        .live_contacts(bob_account, chrono::Utc::now())
        .is_empty()
    {
        assert!(Instant::now() < deadline, "pjsua2 never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp);
    let baresip = tokio::process::Command::new("baresip")
        .args(["-f", dir.path().to_str().unwrap()])
        .args(["-e", &format!("/dial sip:{BOB_NUMBER}@{REALM}")])
        .args(["-t", &BARESIP_SECONDS.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("baresip must be installed (Debian package baresip; scripts/test installs it)");

    let bob_out = tokio::time::timeout(Duration::from_secs(40), pjsua2.wait_with_output())
        .await
        .expect("pjsua2 finishes")
        .unwrap();
    let alice_out = tokio::time::timeout(Duration::from_secs(20), baresip.wait_with_output())
        .await
        .expect("baresip quits")
        .unwrap();
    let bob_text = String::from_utf8_lossy(&bob_out.stdout).into_owned()
        + &String::from_utf8_lossy(&bob_out.stderr);
    let alice_text = String::from_utf8_lossy(&alice_out.stdout).into_owned()
        + &String::from_utf8_lossy(&alice_out.stderr);
    assert!(
        bob_out.status.success(),
        "pjsua2 did not answer a call and see it hung up:\n{bob_text}\n--- baresip:\n{alice_text}"
    );
    assert!(bob_text.contains("confirmed"), "{bob_text}");
    assert!(
        bob_text.contains(&format!("incoming: <sip:{}", "+442071838750")),
        "bob sees alice's main number: {bob_text}"
    );

    // The media went through the edge's relay: baresip's 50 packets a second, for seconds,
    // through both calls' relays.
    assert!(
        edge.edge.packets_relayed() > 100,
        "{} packets relayed",
        edge.edge.packets_relayed()
    );

    let calls = edge.ended_calls(2).await;
    assert_eq!(
        calls.len(),
        2,
        "alice's call out and bob's call in: {calls:?}"
    );
    let started = |events: &[CallEvent]| match &events[0] {
        CallEvent::Started {
            direction,
            origin,
            account_id,
            ..
        } => (*direction, origin.clone(), *account_id),
        other => panic!("a call starts with Started, not {other:?}"),
    };
    let (out_dir, out_origin, out_account) = started(&calls[0]);
    assert_eq!(out_dir, Direction::Outbound);
    assert_eq!(
        out_origin,
        Origin::IpDevice {
            device_id: edge.device_id
        }
    );
    assert_eq!(out_account, edge.account_id, "billed to alice");
    let (in_dir, in_origin, in_account) = started(&calls[1]);
    assert_eq!(in_dir, Direction::Inbound);
    assert_eq!(
        in_origin,
        Origin::Pstn {
            trunk: "loop".into()
        }
    );
    assert_eq!(in_account, bob_account);
    for events in &calls {
        assert!(
            events.iter().any(|e| matches!(
                e,
                CallEvent::Ended {
                    cause: EndCause::NormalClearing,
                    side: Side::Caller,
                    ..
                }
            )),
            "the caller's hangup ends the call: {events:?}"
        );
        let talk = talk_time(events).expect("answered and ended");
        // Answered within the seconds baresip was up, and hung up when it quit.
        assert!(
            talk > chrono::Duration::seconds(1)
                && talk < chrono::Duration::seconds(BARESIP_SECONDS as i64),
            "talk time {talk} for {events:?}\n--- baresip:\n{alice_text}\n--- pjsua2:\n{bob_text}"
        );
    }

    // The call history an auditor reads shows both calls, answered and ended, with the times
    // the log recorded.
    let db = ProjectionDb::connect(&edge.backend.url).await.unwrap();
    Runner::new(db.clone(), edge.store.clone(), Arc::new(CallHistory))
        .await
        .unwrap()
        .catch_up()
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT direction, answered_at, ended_at, end_cause FROM calls ORDER BY started_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    for (row, events) in rows.iter().zip(&calls) {
        let answered: String = row.get("answered_at");
        let ended: String = row.get("ended_at");
        let answered = chrono::DateTime::parse_from_rfc3339(&answered).unwrap();
        let ended = chrono::DateTime::parse_from_rfc3339(&ended).unwrap();
        // The table keeps microseconds; the events, nanoseconds.
        let drift = (ended - answered) - talk_time(events).unwrap();
        assert!(drift.num_microseconds().unwrap().abs() <= 1, "{events:?}");
        assert_eq!(row.get::<String, _>("end_cause"), "normal_clearing");
    }
    edge.shutdown().await;
}
