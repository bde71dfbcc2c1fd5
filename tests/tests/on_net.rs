//! On-net calls over real sockets, on an edge with no trunk at all: alice's phone calls bob's
//! main number and bob's phone rings — the call never reaches a carrier. alice's account
//! records its call out (its leg on path `on_net`, rated at the on-net rate: free on the
//! harness tariff, which prices +44 calls at 31p a first minute), bob's records its call in
//! (origin: alice's account). A phone calling its own account's number rings the account's
//! other phones, never itself, and gets 486 when there is none.

use std::time::Duration;

use domain::call::{CallEvent, Direction, EndCause, LegTarget, Origin, Path, Side};
use ringledger_tests::carrier::{
    device_invite, ended, in_dialog, registered_phone, wait_for_contacts,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{
    MAIN_NUMBER, REALM, SipEdge, UdpPeer, credentials_of, header, respond_to, status,
};
use signaling::digest::Algorithm;

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bobs-own-long-password";
const BOB_NUMBER: &str = "+442071838751";

/// bob's phone, registered (digest) with the edge.
async fn bobs_phone(edge: &SipEdge) -> UdpPeer {
    let phone = UdpPeer::new(edge.udp).await;
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bKbob{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{BOB}@{REALM}>;tag=bob\r\nTo: <sip:{BOB}@{REALM}>\r\n\
             Call-ID: reg-bob@127.0.0.1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{BOB}@{me}>\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            me = phone.addr
        )
    };
    let challenge = phone.exchange(&register(1, "")).await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let creds = credentials_of(
        BOB,
        header(&challenge, "WWW-Authenticate"),
        Algorithm::Md5,
        BOB_PASSWORD,
        1,
        "REGISTER",
        &format!("sip:{REALM}"),
    );
    let ok = phone
        .exchange(&register(2, &format!("Authorization: {creds}\r\n")))
        .await;
    assert_eq!(status(&ok), 200, "{ok}");
    phone
}

/// The ACK of a failure response to a phone's `invite` (RFC 3261 §17.1.1.3).
fn ack_of_failure(invite: &str, response: &str) -> String {
    let uri = invite.split(' ').nth(1).unwrap();
    format!(
        "ACK {uri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
         Call-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
        header(invite, "Via"),
        header(invite, "From"),
        header(response, "To"),
        header(invite, "Call-ID"),
        header(invite, "CSeq").split(' ').next().unwrap(),
    )
}

fn started(events: &[CallEvent]) -> (Direction, Origin) {
    match &events[0] {
        CallEvent::Started {
            direction, origin, ..
        } => (*direction, origin.clone()),
        other => panic!("a call starts with Started, not {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_another_accounts_number_stays_on_net() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    edge.price_calls(&[], None).await;
    let (bob_account, bob_device) = edge.add_subscriber(BOB, BOB_PASSWORD, BOB_NUMBER).await;
    let bob = bobs_phone(&edge).await;
    let alice = UdpPeer::new(edge.udp).await;

    let invite = device_invite(&alice, BOB_NUMBER, "onnet").await;
    alice.send(&invite).await;
    let ring = bob.expect_request("INVITE").await;
    assert!(
        header(&ring, "From").contains(MAIN_NUMBER),
        "bob sees alice's number: {ring}"
    );
    assert!(
        !ring.contains("Ringledger-On-Net"),
        "the on-net mark stays inside the edge: {ring}"
    );
    bob.send(&respond_to(&ring, 180, "bob", Some(bob.addr), ""))
        .await;
    alice.expect_status(180).await;
    let answer = "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40004 RTP/AVP 0\r\n";
    bob.send(&respond_to(&ring, 200, "bob", Some(bob.addr), answer))
        .await;
    bob.expect_request("ACK").await;
    let ok = alice.expect_status(200).await;
    alice.send(&in_dialog(&alice, &invite, &ok, "ACK", 2)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    alice.send(&in_dialog(&alice, &invite, &ok, "BYE", 3)).await;
    let bye = bob.expect_request("BYE").await;
    bob.send(&respond_to(&bye, 200, "bob", None, "")).await;
    alice.expect_status(200).await;

    let calls = edge.ended_calls(2).await;
    assert_eq!(
        calls.len(),
        2,
        "alice's call out and bob's call in: {calls:?}"
    );
    assert_eq!(
        started(&calls[0]),
        (
            Direction::Outbound,
            Origin::IpDevice {
                device_id: edge.device_id
            }
        )
    );
    assert!(
        calls[0].iter().any(|e| matches!(
            e,
            CallEvent::LegStarted { target: LegTarget::Pstn { number }, path: Path::OnNet, .. }
                if number.as_str() == BOB_NUMBER
        )),
        "{:?}",
        calls[0]
    );
    assert_eq!(
        started(&calls[1]),
        (
            Direction::Inbound,
            Origin::OnNet {
                account_id: edge.account_id
            }
        )
    );
    assert!(calls[1].iter().any(|e| matches!(
        e,
        CallEvent::LegStarted { target: LegTarget::Contact { device_id, .. }, .. } if *device_id == bob_device
    )));
    for call in &calls {
        assert_eq!(
            ended(call),
            Some((EndCause::NormalClearing, Side::Caller)),
            "{call:?}"
        );
    }
    // alice pays the on-net rate (none on this tariff: free), not the +44 rate.
    let rated = edge.rated_legs().await;
    let seen: Vec<_> = rated.iter().map(|r| r.summary()).collect();
    assert_eq!(
        seen,
        vec![("on_net", BOB_NUMBER, None, Some(0))],
        "{rated:?}"
    );
    let _ = bob_account;
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_calling_its_own_number_rings_the_other_phones_only() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    edge.price_calls(&[], None).await;
    // Alone: nothing else to ring, 486.
    let first = registered_phone(&edge, "first").await;
    wait_for_contacts(&edge, 1).await;
    let invite = device_invite(&first, MAIN_NUMBER, "self").await;
    first.send(&invite).await;
    let busy = first.expect_status(486).await;
    first.send(&ack_of_failure(&invite, &busy)).await;
    // Recorded: the call out, its on-net leg refused 486 (nothing was rung).
    let calls = edge.ended_calls(1).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(ended(&calls[0]), Some((EndCause::Busy, Side::Callee)));
    // With a second phone: it rings, the caller does not.
    let second = registered_phone(&edge, "second").await;
    wait_for_contacts(&edge, 2).await;
    let invite = device_invite(&first, MAIN_NUMBER, "self2").await;
    first.send(&invite).await;
    let ring = second.expect_request("INVITE").await;
    assert!(header(&ring, "From").contains(MAIN_NUMBER), "{ring}");
    assert!(
        first
            .recv(Duration::from_millis(500))
            .await
            .is_none_or(|m| !m.starts_with("INVITE")),
        "the calling phone is not rung"
    );
    second
        .send(&respond_to(&ring, 486, "second", None, ""))
        .await;
    second.expect_request("ACK").await;
    let busy = first.expect_status(486).await;
    first.send(&ack_of_failure(&invite, &busy)).await;
    edge.shutdown().await;
}
