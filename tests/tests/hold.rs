//! Hold and resume through the B2BUA over real sockets, with audio through the relay: the
//! carrier's caller holds (a re-INVITE with `a=sendonly`), the edge passes the change on to
//! the extension's leg pointed at the relay, answers the caller with the leg's answer, and
//! the relay stops the held side's audio until the caller resumes. A change the leg refuses
//! leaves the call as it was.

use std::time::Duration;

use domain::call::{EndCause, Side};
use ringledger_tests::carrier::{
    audio_of, edge_with_carrier_network, edge_with_trunk_and_media, ended, in_dialog, media_socket,
    not_relayed, relayed, sdp, with_body,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{
    MAIN_NUMBER, SipEdge, UdpPeer, header, relay_settings, respond_to,
};
use ringledger_tests::sipp::{carrier, succeeded};
use tokio::net::UdpSocket;

const EXTENSION: &str = "+447700900123";

/// The carrier's INVITE from its own media port.
fn invite(trunk: &UdpPeer, port: u16) -> String {
    let body = sdp("pstn", 1, port, "sendrecv");
    format!(
        "INVITE sip:{MAIN_NUMBER}@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKhold\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+441632960001@{me}>;tag=pstn-hold\r\n\
         To: <sip:{MAIN_NUMBER}@{edge}>\r\nCall-ID: hold@carrier\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:pstn@{me}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len(),
        me = trunk.addr,
        edge = trunk.edge,
    )
}

/// The carrier's caller asks for `body` (CSeq `cseq`); the leg (the trunk peer as the mobile)
/// answers `answer`, or refuses with `status`. The caller's final response.
async fn change(
    trunk: &UdpPeer,
    invite: &str,
    ok: &str,
    cseq: u32,
    body: &str,
    status: u16,
    answer: &str,
) -> String {
    trunk
        .send(&with_body(
            in_dialog(trunk, invite, ok, "INVITE", cseq),
            body,
        ))
        .await;
    let passed = trunk.expect_request("INVITE").await;
    assert!(
        header(&passed, "To").contains("tag=mob"),
        "inside the leg's dialog: {passed}"
    );
    let direction = body
        .lines()
        .find(|l| l.starts_with("a=") && !l.starts_with("a=rtpmap"));
    assert!(passed.contains(direction.unwrap()), "{passed}");
    trunk
        .send(&respond_to(
            &passed,
            status,
            "mob",
            Some(trunk.addr),
            answer,
        ))
        .await;
    if status == 200 {
        let ack = trunk.expect_request("ACK").await;
        assert_eq!(
            header(&ack, "CSeq"),
            format!("{} ACK", header(&passed, "CSeq").split(' ').next().unwrap())
        );
    }
    let reply = trunk.expect_status(status).await;
    assert_eq!(header(&reply, "CSeq"), format!("{cseq} INVITE"));
    reply
}

/// A carrier's call to alice answered by her extension's mobile (the trunk peer plays both),
/// audio checked both ways through the relay.
struct Talking {
    edge: SipEdge,
    trunk: UdpPeer,
    invite: String,
    ok: String,
    caller_media: UdpSocket,
    caller_port: u16,
    mobile_media: UdpSocket,
    mobile_port: u16,
    /// The relay's ports facing the mobile and the caller.
    to_mobile: u16,
    to_caller: u16,
}

async fn talking() -> Talking {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let (caller_media, caller_port) = media_socket().await;
    let (mobile_media, mobile_port) = media_socket().await;

    let invite = invite(&trunk, caller_port);
    trunk.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    let (_, to_mobile) = audio_of(&out);
    let answer = sdp("mobile", 1, mobile_port, "sendrecv");
    trunk
        .send(&respond_to(&out, 200, "mob", Some(trunk.addr), &answer))
        .await;
    trunk.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    let (_, to_caller) = audio_of(&ok);
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    relayed(&caller_media, to_caller, &mobile_media, b"hello mobile").await;
    relayed(&mobile_media, to_mobile, &caller_media, b"hello caller").await;
    Talking {
        edge,
        trunk,
        invite,
        ok,
        caller_media,
        caller_port,
        mobile_media,
        mobile_port,
        to_mobile,
        to_caller,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_stops_audio_to_the_held_side_until_it_is_resumed() {
    let Talking {
        edge,
        trunk,
        invite,
        ok,
        caller_media,
        caller_port,
        mobile_media,
        mobile_port,
        to_mobile,
        to_caller,
    } = talking().await;

    // Hold: the caller sends (music), hears nothing.
    let held = change(
        &trunk,
        &invite,
        &ok,
        2,
        &sdp("pstn", 2, caller_port, "sendonly"),
        200,
        &sdp("mobile", 2, mobile_port, "recvonly"),
    )
    .await;
    assert!(held.contains("a=recvonly"), "{held}");
    assert_eq!(audio_of(&held).1, to_caller, "the same relay port");
    trunk
        .send(&in_dialog(&trunk, &invite, &held, "ACK", 2))
        .await;
    relayed(&caller_media, to_caller, &mobile_media, b"music on hold").await;
    not_relayed(&mobile_media, to_mobile, &caller_media).await;

    // A change the mobile refuses: the call stays on hold.
    change(
        &trunk,
        &invite,
        &ok,
        3,
        &sdp("pstn", 3, caller_port, "inactive"),
        488,
        "",
    )
    .await;
    not_relayed(&mobile_media, to_mobile, &caller_media).await;

    // Resume: both ways again.
    let resumed = change(
        &trunk,
        &invite,
        &ok,
        4,
        &sdp("pstn", 4, caller_port, "sendrecv"),
        200,
        &sdp("mobile", 3, mobile_port, "sendrecv"),
    )
    .await;
    trunk
        .send(&in_dialog(&trunk, &invite, &resumed, "ACK", 4))
        .await;
    relayed(&mobile_media, to_mobile, &caller_media, b"back again").await;
    relayed(&caller_media, to_caller, &mobile_media, b"welcome back").await;

    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 5)).await;
    let bye = trunk.expect_request("BYE").await;
    trunk.send(&respond_to(&bye, 200, "mob", None, "")).await;
    trunk.expect_status(200).await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    edge.shutdown().await;
}

/// A phone that moves (its re-INVITE names a new media address) is re-latched by the relay
/// through the signalling: its audio comes from, and goes to, the new address only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_media_address_is_relatched_through_signalling() {
    let Talking {
        edge,
        trunk,
        invite,
        ok,
        caller_media,
        mobile_media,
        mobile_port,
        to_mobile,
        to_caller,
        ..
    } = talking().await;

    // The caller moves to another port.
    let (moved_media, moved_port) = media_socket().await;
    let moved = change(
        &trunk,
        &invite,
        &ok,
        2,
        &sdp("pstn", 2, moved_port, "sendrecv"),
        200,
        &sdp("mobile", 2, mobile_port, "sendrecv"),
    )
    .await;
    trunk
        .send(&in_dialog(&trunk, &invite, &moved, "ACK", 2))
        .await;
    relayed(
        &moved_media,
        to_caller,
        &mobile_media,
        b"from the new place",
    )
    .await;
    relayed(&mobile_media, to_mobile, &moved_media, b"to the new place").await;
    // The old address is no longer heard.
    not_relayed(&caller_media, to_caller, &mobile_media).await;
    edge.shutdown().await;
}

/// Glare with SIPp as the carrier's caller: its hold re-INVITE is passed on to the mobile
/// (this test), which has just sent a re-INVITE of its own. The edge answers the mobile's
/// 491 (a change is already under way); the mobile answers the edge's re-INVITE 491 too, and
/// SIPp gets that 491. SIPp retries after its own timer and the hold goes through; SIPp
/// checks each step and fails without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_meeting_glare_is_refused_491_and_goes_through_on_retry() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let edge = edge_with_carrier_network(Some(addr)).await;
    let mobile = UdpPeer {
        socket,
        addr,
        edge: edge.udp,
    };
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let sipp = carrier(
        edge.udp,
        dir.path(),
        "carrier_glare.xml",
        "+441632960001",
        MAIN_NUMBER,
        &["-m", "1"],
    );
    let out = mobile.expect_request("INVITE").await;
    let answer = sdp("mobile", 1, 40010, "sendrecv");
    mobile
        .send(&respond_to(&out, 200, "mob", Some(mobile.addr), &answer))
        .await;
    mobile.expect_request("ACK").await;
    // The hold arrives while the mobile's own change is on its way: each side gets 491.
    let hold = mobile
        .expect_request_within("INVITE", Duration::from_secs(10))
        .await;
    assert!(hold.contains("a=sendonly"), "{hold}");
    let theirs = format!(
        "INVITE sip:ringledger@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKmobglare\r\n\
         Max-Forwards: 70\r\nFrom: {to}\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:mobile@{me}>\r\n",
        edge = mobile.edge,
        me = mobile.addr,
        to = header(&hold, "To"),
        from = header(&hold, "From"),
        call_id = header(&hold, "Call-ID"),
    ) + "Content-Length: 0\r\n\r\n";
    let ours = with_body(theirs, &sdp("mobile", 2, 40010, "sendonly"));
    mobile.send(&ours).await;
    mobile.expect_status(491).await;
    mobile.send(&respond_to(&hold, 491, "mob", None, "")).await;
    mobile.expect_request("ACK").await;
    // SIPp tries again: this time the mobile takes it.
    let retry = mobile
        .expect_request_within("INVITE", Duration::from_secs(10))
        .await;
    assert!(retry.contains("a=sendonly"), "{retry}");
    mobile
        .send(&respond_to(
            &retry,
            200,
            "mob",
            Some(mobile.addr),
            &sdp("mobile", 3, 40010, "recvonly"),
        ))
        .await;
    mobile.expect_request("ACK").await;
    let bye = mobile
        .expect_request_within("BYE", Duration::from_secs(10))
        .await;
    mobile.send(&respond_to(&bye, 200, "mob", None, "")).await;
    succeeded(sipp, "the carrier holding through glare").await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    edge.shutdown().await;
}
