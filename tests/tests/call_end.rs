//! Every call ends, and is billed: an edge shutting down hangs up its calls on both sides and
//! records why; the calls of an edge that died are ended by another at the edge's last
//! heartbeat; an answered call without audio to watch ends at the longest a call may last.
//! The carrier is SIPp (Debian `sip-tester`): its uac delivers calls to alice's main number
//! and its uas answers the edge's calls out to her extension.

use std::path::Path;
use std::time::Duration;

use domain::call::{
    Call, CallCommand, CallEvent, Direction, EndCause, LegRole, LegTarget, Origin,
    Path as CallPath, Side,
};
use domain::edge::EdgeEvent;
use domain::{E164, Event};
use infra::command::{self, Origin as Actor};
use infra::store::{ExpectedVersion, NewEvent};
use ringledger_tests::carrier::{
    ANSWER, carrier_invite, edge_with_carrier_network, edge_with_trunk_and_media,
    edge_with_trunk_secured, ended, in_dialog,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{MAIN_NUMBER, SipEdge, header, relay_settings, respond_to};
use ringledger_tests::sipp::{CARRIER_IP, carrier, sipp_uas, sipp_uas_scenario, succeeded};
use tokio::process::Child;

const EXTENSION: &str = "+447700900123";
/// Calls up when the edge shuts down.
const CALLS: usize = 20;

/// `calls` calls from the carrier to alice's main number, each waiting up to 60 s for the
/// far end to hang up (carrier_call_hung_up.xml).
fn carrier_calls(edge: &SipEdge, dir: &Path, calls: usize) -> Child {
    let calls = calls.to_string();
    carrier(
        edge.udp,
        dir,
        "carrier_call_hung_up.xml",
        "+441632960001",
        MAIN_NUMBER,
        &["-m", &calls, "-l", &calls, "-r", "10"],
    )
}

async fn answered_calls(edge: &SipEdge) -> usize {
    edge.calls()
        .await
        .iter()
        .filter(|c| c.iter().any(|e| matches!(e, CallEvent::LegAnswered { .. })))
        .count()
}

/// SIGTERM's drain: with 20 answered calls (the carrier to alice, the edge calling her
/// extension out through the carrier), the edge refuses new calls, sends BYE to both sides of
/// each call (the carrier's uac and uas both see every call hung up and answer 200), records
/// 20 `call.ended` with cause `edge_shutdown`, and every leg is billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_hangs_up_both_sides_of_every_call_and_records_why() {
    let (uas, trunk) = sipp_uas(CARRIER_IP, CALLS).await;
    let edge = edge_with_carrier_network(Some(trunk)).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let carrier = carrier_calls(&edge, dir.path(), CALLS);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while answered_calls(&edge).await < CALLS {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} calls answered",
            answered_calls(&edge).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let left = edge.edge.drain(Duration::from_secs(10)).await;
    assert_eq!(left, 0, "calls still running after the drain");
    succeeded(carrier, "the carrier's calls to alice").await;
    succeeded(uas, "the carrier answering the calls out").await;

    let calls = edge.ended_calls(CALLS).await;
    assert_eq!(calls.len(), CALLS);
    for events in &calls {
        assert_eq!(
            ended(events),
            Some((EndCause::EdgeShutdown, Side::System)),
            "{events:?}"
        );
    }
    let rated = edge.rated_legs().await;
    assert_eq!(rated.len(), CALLS, "{rated:?}");
    assert!(rated.iter().all(
        |r| r.extension_id == Some(extension_id.to_string()) && r.path == "alternate_call_out"
    ));
    let mut metrics = String::new();
    edge.edge.render_metrics(&mut metrics);
    assert!(
        metrics.contains(&format!("ringledger_calls_drained_total {CALLS}")),
        "{metrics}"
    );

    // Draining, the edge takes no new call.
    let probe = ringledger_tests::sip_edge::UdpPeer::on(CARRIER_IP, edge.udp).await;
    let invite = carrier_invite(&probe, MAIN_NUMBER, "late");
    probe.send(&invite).await;
    let refused = probe.expect_status(503).await;
    assert!(!header(&refused, "Retry-After").is_empty(), "{refused}");
    edge.shutdown().await;
}

/// Calls of an edge that died (no `edge.stopped`, no heartbeat for three heartbeats) are ended
/// by a live edge with cause `edge_lost` at the dead edge's last heartbeat, and billed up to
/// it; a second pass changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_a_dead_edge_end_at_its_last_heartbeat_and_are_billed() {
    // Nothing is called out here: the trunk points nowhere.
    let edge = edge_with_carrier_network(None).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let store = edge.store.as_ref();
    // The dead edge: it started, ran calls, was alive a while, then went silent (killed).
    let dead = uuid::Uuid::now_v7();
    let actor = Actor {
        actor: "edge:dead",
        correlation_id: None,
        observe_append: None,
    };
    let append = |event: EdgeEvent| {
        let at = event.at();
        NewEvent::from_domain(&event, at, "edge:dead")
    };
    store
        .append(
            &domain::edge::stream_id(dead),
            ExpectedVersion::Any,
            vec![append(EdgeEvent::Started {
                listen: "127.0.0.1:5999".into(),
                at: chrono::Utc::now(),
            })],
        )
        .await
        .unwrap();
    let account = command::load::<domain::account::Account>(store, &edge.account_id.stream_id())
        .await
        .unwrap()
        .state;
    let extension = command::load::<domain::extension::Extension>(store, &extension_id.stream_id())
        .await
        .unwrap()
        .state;
    let mut call_ids = vec![];
    for _ in 0..CALLS {
        let call_id = domain::ids::CallId::from(uuid::Uuid::now_v7());
        let leg_id = domain::ids::LegId(uuid::Uuid::now_v7());
        let stream = call_id.stream_id();
        for cmd in [
            CallCommand::Start {
                call_id,
                direction: Direction::Inbound,
                from: "+441632960001".into(),
                to: MAIN_NUMBER.into(),
                origin: Origin::Pstn {
                    trunk: "carrier".into(),
                },
                path: CallPath::Data,
                account: account.clone(),
                extension: None,
                pin: None,
                dial_intent: None,
                edge_id: Some(dead),
                keypad: false,
            },
            CallCommand::StartLeg {
                leg_id,
                target: LegTarget::Extension {
                    extension_id,
                    number: E164::parse(EXTENSION).unwrap(),
                },
                path: CallPath::AlternateCallOut,
                role: LegRole::Callee,
                account: account.clone(),
                extension: Some(extension.clone()),
            },
            CallCommand::LegAnswered { leg_id },
        ] {
            command::execute::<Call>(store, &actor, &stream, &cmd, None, None)
                .await
                .unwrap();
        }
        call_ids.push(call_id);
    }
    // Alive for two more seconds of talk, then gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last_alive = chrono::Utc::now();
    store
        .append(
            &domain::edge::stream_id(dead),
            ExpectedVersion::Any,
            vec![append(EdgeEvent::Alive { at: last_alive })],
        )
        .await
        .unwrap();

    // Three silent heartbeats later (and a pass of the live edge's), every call is ended.
    let calls = edge.ended_calls(CALLS).await;
    let ends: Vec<_> = calls
        .iter()
        .filter_map(|c| {
            c.iter().find_map(|e| match e {
                CallEvent::Ended { cause, side, at } => Some((*cause, *side, *at)),
                _ => None,
            })
        })
        .collect();
    assert_eq!(ends.len(), CALLS, "{calls:?}");
    let billed_until = domain::rating::to_micros(last_alive);
    for (cause, side, at) in &ends {
        assert_eq!((*cause, *side), (EndCause::EdgeLost, Side::System));
        assert_eq!(domain::rating::to_micros(*at), billed_until);
    }
    let rated = edge.rated_legs().await;
    assert_eq!(rated.len(), CALLS, "{rated:?}");
    for r in &rated {
        // About two seconds of talk, billed up to the heartbeat: not zero, not to "now".
        let secs = r.duration_secs.unwrap();
        assert!((2..=3).contains(&secs), "{r:?}");
    }
    let mut metrics = String::new();
    edge.edge.render_metrics(&mut metrics);
    assert!(
        metrics.contains(&format!("ringledger_calls_recovered_total {CALLS}")),
        "{metrics}"
    );
    // Found again by the next passes: nothing more is written.
    let before = edge.store.head_position().await.unwrap();
    tokio::time::sleep(ringledger_tests::sip_edge::HEARTBEAT * 2).await;
    let written: Vec<String> = edge
        .store
        .read_all(before, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.decode(), Ok(Event::Call(_))))
        .map(|e| e.event_type)
        .collect();
    assert!(written.is_empty(), "{written:?}");
    edge.shutdown().await;
}

/// An answered call with nothing for the media timer to watch — an INVITE without a session
/// description, or offering video only — still ends: at the longest a call may last, with
/// BYE to both sides and cause `max_duration`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_audio_end_at_the_longest_call_duration() {
    let security = signaling::SecuritySettings {
        max_call_duration: Duration::from_secs(2),
        ..Default::default()
    };
    let (edge, trunk) = edge_with_trunk_secured(Backend::sqlite().await, security).await;
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let video_only = "v=0\r\no=pstn 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 40004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    for (n, body) in [("nosdp", ""), ("video", video_only)] {
        let with_offer = carrier_invite(&trunk, MAIN_NUMBER, n);
        let invite = match body {
            "" => {
                with_offer.split("Content-Type").next().unwrap().to_string()
                    + "Content-Length: 0\r\n\r\n"
            }
            offer => with_offer.replace(
                &with_offer[with_offer.find("Content-Length").unwrap()..],
                &format!("Content-Length: {}\r\n\r\n{offer}", offer.len()),
            ),
        };
        trunk.send(&invite).await;
        let out = trunk.expect_request("INVITE").await;
        // The extension answers with audio to a delayed offer, with video to video.
        let answer = if body.is_empty() { ANSWER } else { body };
        trunk
            .send(&respond_to(&out, 200, "mob", Some(trunk.addr), answer))
            .await;
        if body.is_empty() {
            // Delayed offer: the caller gets the offer in the 200, answers in its ACK, which
            // the edge passes on in the leg's ACK.
            let ok = trunk.expect_status(200).await;
            assert_eq!(header(&ok, "Call-ID"), format!("{n}@carrier"));
            let ack = in_dialog(&trunk, &invite, &ok, "ACK", 1).replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{ANSWER}",
                    ANSWER.len()
                ),
            );
            trunk.send(&ack).await;
            trunk.expect_request("ACK").await;
        } else {
            trunk.expect_request("ACK").await;
            let ok = trunk.expect_status(200).await;
            assert_eq!(header(&ok, "Call-ID"), format!("{n}@carrier"));
            trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
        }
        // Both sides are hung up once the longest call duration is reached.
        let mut byes = vec![];
        for _ in 0..2 {
            let bye = trunk
                .expect_request_within("BYE", Duration::from_secs(6))
                .await;
            trunk.send(&respond_to(&bye, 200, "x", None, "")).await;
            byes.push(header(&bye, "Call-ID").to_string());
        }
        byes.sort();
        let mut expected = vec![format!("{n}@carrier"), header(&out, "Call-ID").to_string()];
        expected.sort();
        assert_eq!(byes, expected);
    }
    let calls = edge.ended_calls(2).await;
    assert_eq!(calls.len(), 2);
    for events in &calls {
        assert_eq!(
            ended(events),
            Some((EndCause::MaxDuration, Side::System)),
            "{events:?}"
        );
    }
    assert_eq!(edge.rated_legs().await.len(), 2);
    edge.shutdown().await;
}

/// A call-out the extension answers after ringing longer than the media timeout keeps its
/// media timer from the answer: it is not hung up at the answer, and only a media timeout
/// after it does a silent call end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_counts_media_silence_from_the_answer() {
    let timeout = Duration::from_secs(2);
    let (edge, trunk) =
        edge_with_trunk_and_media(Backend::sqlite().await, Some(relay_settings(timeout))).await;
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "late");
    trunk.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    trunk
        .send(&respond_to(&out, 180, "mob", Some(trunk.addr), ""))
        .await;
    trunk.expect_status(180).await;
    // Rings for longer than the media timeout, then answers.
    tokio::time::sleep(timeout + Duration::from_secs(1)).await;
    trunk
        .send(&respond_to(&out, 200, "mob", Some(trunk.addr), ANSWER))
        .await;
    trunk.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    let answered = std::time::Instant::now();
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    // Nothing for the first second after the answer (the old timer, counted from the relay's
    // set-up, hung up at once)...
    assert!(
        trunk.recv(Duration::from_secs(1)).await.is_none(),
        "hung up right after the answer"
    );
    // ...then, with no media at all, the call ends a media timeout after the answer.
    let bye = trunk
        .expect_request_within("BYE", Duration::from_secs(5))
        .await;
    // (The edge starts the timer just before its 200 leaves; the test sees the 200 a little
    // later.)
    let slack = Duration::from_millis(200);
    assert!(
        answered.elapsed() + slack >= timeout,
        "{:?}",
        answered.elapsed()
    );
    trunk.send(&respond_to(&bye, 200, "x", None, "")).await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::MediaTimeout, Side::System)),
        "{calls:?}"
    );
    edge.shutdown().await;
}

/// RFC 4028 over the wire: a carrier's INVITE asking for a 90 s session timer gets it in the
/// edge's 200 (the carrier refreshes, `Require: timer`); its refresh re-INVITE, with the
/// session unchanged, is answered 200 with the edge's session description and a fresh
/// interval; a re-INVITE that changes the session is passed on to the leg, which refuses it
/// 488, and the call goes on; an
/// interval under 90 s is refused 422 with `Min-SE` and records no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_timer_is_negotiated_and_refreshed() {
    let (edge, trunk) = edge_with_trunk_secured(Backend::sqlite().await, Default::default()).await;
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let timed = |call: &str, secs: u32| {
        carrier_invite(&trunk, MAIN_NUMBER, call).replace(
            "CSeq: 1 INVITE\r\n",
            &format!("CSeq: 1 INVITE\r\nSupported: timer\r\nSession-Expires: {secs}\r\n"),
        )
    };
    // Too short: 422, and nothing recorded.
    trunk.send(&timed("short", 30)).await;
    let refused = trunk.expect_status(422).await;
    assert_eq!(header(&refused, "Min-SE"), "90");
    let invite = timed("timer", 90);
    trunk.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    trunk
        .send(&respond_to(&out, 200, "mob", Some(trunk.addr), ANSWER))
        .await;
    trunk.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    assert_eq!(header(&ok, "Session-Expires"), "90;refresher=uac");
    assert_eq!(header(&ok, "Require"), "timer");
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    let with_body = |request: String, body: &str| {
        request.replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Supported: timer\r\nSession-Expires: 90\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    // The refresh: the session as it was offered, the extension required this time.
    let offer = &invite[invite.find("\r\n\r\n").unwrap() + 4..];
    let refresh = with_body(in_dialog(&trunk, &invite, &ok, "INVITE", 2), offer).replace(
        "Supported: timer\r\n",
        "Supported: timer\r\nRequire: timer\r\n",
    );
    assert!(refresh.contains("Require: timer"));
    trunk.send(&refresh).await;
    let refreshed = trunk.expect_status(200).await;
    assert_eq!(header(&refreshed, "CSeq"), "2 INVITE");
    assert_eq!(header(&refreshed, "Session-Expires"), "90;refresher=uac");
    let session = |m: &str| m[m.find("\r\n\r\n").unwrap() + 4..].to_string();
    assert_eq!(
        session(&refreshed),
        session(&ok),
        "the edge's session, unchanged"
    );
    trunk
        .send(&in_dialog(&trunk, &invite, &refreshed, "ACK", 2))
        .await;
    // A change (a new session version) is passed on to the leg; refused there, it is
    // refused to the carrier, and the call goes on as it was.
    let changed = offer.replacen(" 1 1 IN", " 1 2 IN", 1);
    assert_ne!(changed, offer);
    trunk
        .send(&with_body(
            in_dialog(&trunk, &invite, &ok, "INVITE", 3),
            &changed,
        ))
        .await;
    let passed = trunk.expect_request("INVITE").await;
    assert!(header(&passed, "To").contains("tag=mob"), "{passed}");
    trunk.send(&respond_to(&passed, 488, "mob", None, "")).await;
    trunk.expect_status(488).await;
    // The carrier hangs up: one call, ended normally (not by its timer).
    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 4)).await;
    trunk.expect_request("BYE").await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(calls.len(), 1, "the 422 recorded no call");
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    edge.shutdown().await;
}

/// A callee that makes the edge the refresher of its session timer (SIPp, answering through
/// the trunk with `Session-Expires: 90;refresher=uac`) gets the edge's refresh — a re-INVITE
/// with the session unchanged — within the interval (SIPp checks it and fails without it),
/// and the call lasts past the interval until the caller hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_refreshes_a_carrier_that_leaves_the_refreshing_to_it() {
    let (uas, trunk) = sipp_uas_scenario(CARRIER_IP, 1, "carrier_answer_edge_refreshes.xml").await;
    let edge = edge_with_carrier_network(Some(trunk)).await;
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    // Held 50 s: the refresh is due at 45 s, the session would expire at 60 s unrefreshed.
    let sipp = carrier(
        edge.udp,
        dir.path(),
        "carrier_call.xml",
        "+441632960001",
        MAIN_NUMBER,
        &["-m", "1", "-d", "50000"],
    );
    succeeded(sipp, "the carrier's call").await;
    succeeded(uas, "the carrier answering and refreshed by the edge").await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Caller)),
        "{:?}",
        calls[0]
    );
    edge.shutdown().await;
}

/// The same with SIPp as the carrier: five calls each asking for a 90 s session timer, each
/// checking that the edge's 200 takes it with SIPp as refresher, refreshing by re-INVITE a
/// second later (checking the 200 again), then hanging up. Every call ends normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_refreshes_its_session_timer_through_the_edge() {
    const REFRESHED: usize = 5;
    let (uas, trunk) = sipp_uas(CARRIER_IP, REFRESHED).await;
    let edge = edge_with_carrier_network(Some(trunk)).await;
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let calls = REFRESHED.to_string();
    let sipp = carrier(
        edge.udp,
        dir.path(),
        "carrier_session_refresh.xml",
        "+441632960001",
        MAIN_NUMBER,
        &["-m", &calls, "-l", &calls, "-r", "5", "-d", "1000"],
    );
    succeeded(sipp, "the carrier refreshing its session timer").await;
    succeeded(uas, "the carrier answering the calls out").await;
    let ended_calls = edge.ended_calls(REFRESHED).await;
    assert_eq!(ended_calls.len(), REFRESHED);
    for events in &ended_calls {
        assert_eq!(
            ended(events),
            Some((EndCause::NormalClearing, Side::Caller)),
            "{events:?}"
        );
    }
    edge.shutdown().await;
}
