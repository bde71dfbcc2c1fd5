//! Callback (docs/OPERATIONS.md, "Callback") over real UDP sockets: a callback request staged for
//! alice's extension is taken up by the edge, which rings the extension through the trunk
//! with its own offer, then the destination with the codec the extension chose, bridges the
//! two through the media relay, and bills both legs to alice's account through the
//! extension. The trunk peer plays the cellular and the public networks; SIPp's uas answers
//! both legs in the interop case.

use std::time::Duration;

use domain::call::{CallEvent, EndCause, LegRole, LegTarget, Origin, Path, Side};
use domain::extension::ExtensionEvent;
use ringledger_tests::carrier::{
    audio_of, edge_with_trunk_and_media, ended, from_callee, media_socket, not_relayed, relayed,
    sdp, with_body,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{MAIN_NUMBER, SipEdge, header, relay_settings, respond_to};
use ringledger_tests::sipp::sipp_uas;
use signaling::digest::Algorithm;

const EXTENSION: &str = "+447700900123";
const DESTINATION: &str = "+442079460000";

fn answer_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=far 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

fn legs(events: &[CallEvent]) -> Vec<(LegRole, Path, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            CallEvent::LegStarted {
                role, path, target, ..
            } => Some((
                *role,
                *path,
                target.number().map(|n| n.as_str().to_string()),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_rings_the_extension_then_the_destination_and_bridges_them() {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    edge.request_callback(extension_id, DESTINATION).await;
    let (mobile_media, mobile_port) = media_socket().await;
    let (far_media, far_port) = media_socket().await;

    // The extension first, called from the main number with the edge's own offer.
    let first = trunk.expect_request("INVITE").await;
    assert!(
        first.starts_with(&format!("INVITE sip:{EXTENSION}@")),
        "{first}"
    );
    assert!(header(&first, "From").contains(MAIN_NUMBER), "{first}");
    assert!(first.contains("RTP/AVP 0 8 101"), "{first}");
    let (_, mobile_side) = audio_of(&first);
    trunk
        .send(&respond_to(&first, 180, "mob", Some(trunk.addr), ""))
        .await;
    trunk
        .send(&respond_to(
            &first,
            200,
            "mob",
            Some(trunk.addr),
            &answer_sdp(mobile_port),
        ))
        .await;
    trunk.expect_request("ACK").await;
    // Then the destination, offered only what the extension chose.
    let second = trunk.expect_request("INVITE").await;
    assert!(
        second.starts_with(&format!("INVITE sip:{DESTINATION}@")),
        "{second}"
    );
    assert!(second.contains("RTP/AVP 0\r\n"), "{second}");
    let (_, far_side) = audio_of(&second);
    assert_ne!(mobile_side, far_side);
    trunk
        .send(&respond_to(
            &second,
            200,
            "far",
            Some(trunk.addr),
            &answer_sdp(far_port),
        ))
        .await;
    trunk.expect_request("ACK").await;
    relayed(
        &mobile_media,
        mobile_side,
        &far_media,
        b"to the destination",
    )
    .await;
    relayed(&far_media, far_side, &mobile_media, b"to the extension").await;

    // The extension hangs up: the edge hangs up the destination, then answers.
    trunk
        .send(&from_callee(&trunk, &first, "mob", "BYE", 1))
        .await;
    let bye = trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), header(&second, "Call-ID"));
    trunk.send(&respond_to(&bye, 200, "far", None, "")).await;
    trunk.expect_status(200).await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        matches!(
            &events[0],
            CallEvent::Started { origin: Origin::Service, path: Path::Callback, extension_id: Some(e), .. }
                if *e == extension_id
        ),
        "{events:?}"
    );
    assert_eq!(
        legs(events),
        vec![
            (LegRole::Caller, Path::Callback, Some(EXTENSION.into())),
            (LegRole::Callee, Path::Callback, Some(DESTINATION.into())),
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Bridged { legs, .. } if legs.len() == 2))
    );
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    assert!(
        edge.extension_events(extension_id)
            .await
            .iter()
            .any(|e| matches!(
                e,
                ExtensionEvent::CallbackCancelled { reason, .. } if reason == "placed"
            ))
    );
    // Both legs billed to alice through the extension: each a first minute and a connect fee.
    let rated = edge.rated_legs().await;
    let seen: Vec<_> = rated.iter().map(|r| r.summary()).collect();
    let ext = Some(extension_id.to_string());
    assert_eq!(
        seen,
        vec![
            ("callback", EXTENSION, ext.clone(), Some(31)),
            ("callback", DESTINATION, ext, Some(31)),
        ]
    );
    assert_eq!(edge.calls().await.len(), 1, "the request was placed once");
    edge.shutdown().await;
}

/// The extension does not take the callback (busy): the destination is never rung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_extension_ends_the_callback_before_the_destination_rings() {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.request_callback(extension_id, DESTINATION).await;
    let first = trunk.expect_request("INVITE").await;
    trunk.send(&respond_to(&first, 486, "mob", None, "")).await;
    trunk.expect_request("ACK").await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(ended(&calls[0]), Some((EndCause::Busy, Side::Caller)));
    assert_eq!(legs(&calls[0]).len(), 1, "{:?}", calls[0]);
    assert!(trunk.recv(Duration::from_millis(300)).await.is_none());
    edge.shutdown().await;
}

/// SIPp's uas (a carrier we did not write) answers both legs; it sends no media, so the edge
/// hangs both up once the media timeout passes, and SIPp counts both calls successful.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_answers_both_legs_of_a_callback() {
    let (uas, trunk_addr) = sipp_uas("127.0.0.1", 2).await;
    let trunk = signaling::trunk::Trunk {
        name: "carrier".into(),
        address: trunk_addr,
        networks: vec![],
        numbers: vec!["+".into()],
    };
    let media = Some(relay_settings(Duration::from_secs(2)));
    let edge = SipEdge::spawn_with(
        Backend::sqlite().await,
        vec![Algorithm::Md5],
        vec![trunk],
        media,
    )
    .await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.request_callback(extension_id, DESTINATION).await;
    let uas = tokio::time::timeout(Duration::from_secs(30), uas.wait_with_output())
        .await
        .expect("the uas took both legs and quit")
        .unwrap();
    assert_eq!(uas.status.code(), Some(0), "SIPp's uas saw failed calls");
    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Bridged { legs, .. } if legs.len() == 2)),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::LegStarted { target: LegTarget::Pstn { number }, .. } if number.as_str() == DESTINATION
    )));
    assert_eq!(ended(events), Some((EndCause::MediaTimeout, Side::System)));
    edge.shutdown().await;
}

/// SIGTERM's drain with a callback bridged: the edge hangs up both legs (both go to the
/// carrier), records `edge_shutdown`, and the drain waits until the carrier has answered both
/// BYEs, so neither leg is left up at the carrier if a BYE is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_hangs_up_both_legs_of_a_callback_and_waits_for_their_answers() {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    edge.request_callback(extension_id, DESTINATION).await;
    for (tag, port) in [("mob", 40010), ("far", 40012)] {
        let invite = trunk.expect_request("INVITE").await;
        trunk
            .send(&respond_to(
                &invite,
                200,
                tag,
                Some(trunk.addr),
                &answer_sdp(port),
            ))
            .await;
        trunk.expect_request("ACK").await;
    }
    let sip_edge = edge.edge.clone();
    let drain = tokio::spawn(async move { sip_edge.drain(Duration::from_secs(10)).await });
    let byes = [
        trunk.expect_request("BYE").await,
        trunk.expect_request("BYE").await,
    ];
    // The BYEs are out but not answered: the drain is still waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !drain.is_finished(),
        "the drain did not wait for the BYEs' answers"
    );
    for bye in &byes {
        trunk.send(&respond_to(bye, 200, "x", None, "")).await;
    }
    let left = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the drain ends once the BYEs are answered")
        .unwrap();
    assert_eq!(left, 0);
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::EdgeShutdown, Side::System)),
        "{calls:?}"
    );
    edge.shutdown().await;
}

/// Callbacks count against the money limits as calls do, both legs reserved: three requested
/// at once on a daily limit worth one callback's first minutes place one; the others are
/// recorded as ended for the spend limit, and ring no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_at_once_hold_the_daily_limit_between_them() {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    // A first minute to +44 costs 31p: a callback holds 62p of the 100p limit.
    edge.price_calls(&[], Some(100)).await;
    for _ in 0..3 {
        edge.request_callback(extension_id, DESTINATION).await;
    }
    let first = trunk.expect_request("INVITE").await;
    assert!(first.starts_with(&format!("INVITE sip:{EXTENSION}@")));
    let calls = edge.ended_calls(2).await;
    let refused: Vec<_> = calls.iter().filter_map(|c| ended(c)).collect();
    assert_eq!(refused, vec![(EndCause::SpendLimit, Side::System); 2]);
    assert_eq!(calls.len(), 3, "{calls:?}");
    let placed: Vec<_> = calls.iter().filter(|c| !legs(c).is_empty()).collect();
    assert_eq!(placed.len(), 1, "only the one placed has a leg: {calls:?}");
    assert!(
        trunk.recv(Duration::from_millis(300)).await.is_none(),
        "one callback rings"
    );
    // The one placed ends; its hold is given back, and a new request is placed.
    trunk.send(&respond_to(&first, 486, "mob", None, "")).await;
    trunk.expect_request("ACK").await;
    edge.ended_calls(3).await;
    edge.request_callback(extension_id, DESTINATION).await;
    let again = trunk.expect_request("INVITE").await;
    assert_ne!(header(&again, "Call-ID"), header(&first, "Call-ID"));
    edge.shutdown().await;
}

/// A bridged callback put on hold by the extension and resumed by the destination, over real
/// sockets: each change goes to the other leg inside its dialog, pointed at the relay, and the
/// relay stops audio to the held side until the resume (OPERATIONS.md, "Callback").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_is_held_by_one_leg_and_resumed_by_the_other_with_audio_through_the_relay() {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    edge.request_callback(extension_id, DESTINATION).await;
    let (mobile_media, mobile_port) = media_socket().await;
    let (far_media, far_port) = media_socket().await;
    let first = trunk.expect_request("INVITE").await;
    let (_, to_mobile) = audio_of(&first);
    let answer = sdp("mobile", 1, mobile_port, "sendrecv");
    trunk
        .send(&respond_to(&first, 200, "mob", Some(trunk.addr), &answer))
        .await;
    trunk.expect_request("ACK").await;
    let second = trunk.expect_request("INVITE").await;
    let (_, to_far) = audio_of(&second);
    let answer = sdp("far", 1, far_port, "sendrecv");
    trunk
        .send(&respond_to(&second, 200, "far", Some(trunk.addr), &answer))
        .await;
    trunk.expect_request("ACK").await;
    relayed(&mobile_media, to_mobile, &far_media, b"hello far").await;

    // The extension holds: the destination is asked inside its own dialog.
    let hold = with_body(
        from_callee(&trunk, &first, "mob", "INVITE", 1),
        &sdp("mobile", 2, mobile_port, "sendonly"),
    );
    trunk.send(&hold).await;
    let passed = trunk.expect_request("INVITE").await;
    assert_eq!(header(&passed, "Call-ID"), header(&second, "Call-ID"));
    assert!(passed.contains("a=sendonly"), "{passed}");
    assert_eq!(
        audio_of(&passed).1,
        to_far,
        "pointed at the relay: {passed}"
    );
    assert!(
        !passed.contains("o=mobile"),
        "the extension's origin hidden: {passed}"
    );
    let held = sdp("far", 2, far_port, "recvonly");
    trunk
        .send(&respond_to(&passed, 200, "far", Some(trunk.addr), &held))
        .await;
    trunk.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    assert_eq!(header(&ok, "CSeq"), "1 INVITE");
    assert!(ok.contains("a=recvonly"), "{ok}");
    trunk
        .send(&from_callee(&trunk, &first, "mob", "ACK", 1))
        .await;
    relayed(&mobile_media, to_mobile, &far_media, b"music on hold").await;
    not_relayed(&far_media, to_far, &mobile_media).await;

    // The destination resumes: the extension is asked inside its dialog; both ways again.
    let resume = with_body(
        from_callee(&trunk, &second, "far", "INVITE", 1),
        &sdp("far", 3, far_port, "sendrecv"),
    );
    trunk.send(&resume).await;
    let passed = trunk.expect_request("INVITE").await;
    assert_eq!(header(&passed, "Call-ID"), header(&first, "Call-ID"));
    assert_eq!(audio_of(&passed).1, to_mobile);
    let back = sdp("mobile", 3, mobile_port, "sendrecv");
    trunk
        .send(&respond_to(&passed, 200, "mob", Some(trunk.addr), &back))
        .await;
    trunk.expect_request("ACK").await;
    trunk.expect_status(200).await;
    trunk
        .send(&from_callee(&trunk, &second, "far", "ACK", 1))
        .await;
    relayed(&far_media, to_far, &mobile_media, b"welcome back").await;
    relayed(&mobile_media, to_mobile, &far_media, b"thanks").await;

    trunk
        .send(&from_callee(&trunk, &first, "mob", "BYE", 2))
        .await;
    let bye = trunk.expect_request("BYE").await;
    trunk.send(&respond_to(&bye, 200, "far", None, "")).await;
    trunk.expect_status(200).await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    edge.shutdown().await;
}
