//! Blind transfer over real UDP sockets, with a test peer as the carrier: a phone transfers
//! its call out to another number (the edge places the leg through the trunk, tells the phone
//! how it goes, lets it go, and bills both legs to its account); and what a fraudster would
//! try — the carrier's party transferring at the account's expense, a phone transferring to a
//! number its tariff blocks — is refused, the call going on untouched.

use domain::call::{CallEvent, EndCause, LegRole, Side};
use ringledger_tests::carrier::{ANSWER, device_invite, edge_with_trunk, in_dialog};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{MAIN_NUMBER, REALM, UdpPeer, header, respond_to, status};

const DESTINATION: &str = "+442079460000";
const NEW_PARTY: &str = "+442079460001";

/// `request` (a request inside a dialog, no body) with a `Refer-To` naming `uri`.
fn with_refer_to(request: &str, uri: &str) -> String {
    request.replace(
        "Content-Length: 0",
        &format!("Refer-To: <{uri}>\r\nContent-Length: 0"),
    )
}

/// A request from the carrier's party inside the dialog of the edge's leg INVITE `out`,
/// which the carrier answered with tag `far`.
fn from_far_end(trunk: &UdpPeer, out: &str, method: &str, cseq: u32) -> String {
    let target = header(out, "Contact")
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKfar{method}{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: {to};tag=far\r\nTo: {from}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        me = trunk.addr,
        to = header(out, "To"),
        from = header(out, "From"),
        call_id = header(out, "Call-ID"),
    )
}

/// alice's phone calls `DESTINATION` through the trunk, which answers: the phone's INVITE,
/// the edge's 200 to it, and the leg's INVITE as the trunk got it.
async fn call_out(phone: &UdpPeer, trunk: &UdpPeer, call: &str) -> (String, String, String) {
    let invite = device_invite(phone, DESTINATION, call).await;
    phone.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    trunk
        .send(&respond_to(&out, 200, "far", Some(trunk.addr), ANSWER))
        .await;
    let ok = phone.expect_status(200).await;
    phone.send(&in_dialog(phone, &invite, &ok, "ACK", 2)).await;
    trunk.expect_request("ACK").await;
    (invite, ok, out)
}

/// The sipfrag status line of a NOTIFY the phone got, answered 200.
async fn notified(phone: &UdpPeer) -> String {
    let notify = phone.expect_request("NOTIFY").await;
    assert!(header(&notify, "Event").starts_with("refer"), "{notify}");
    phone.send(&respond_to(&notify, 200, "", None, "")).await;
    notify
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_transfers_its_call_out_to_another_number_and_both_legs_are_billed() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let phone = UdpPeer::new(edge.udp).await;
    let (invite, ok, first_leg) = call_out(&phone, &trunk, "xfer").await;

    let refer = with_refer_to(
        &in_dialog(&phone, &invite, &ok, "REFER", 3),
        &format!("sip:{NEW_PARTY}@{REALM}"),
    );
    phone.send(&refer).await;
    phone.expect_status(202).await;
    assert_eq!(notified(&phone).await, "SIP/2.0 100 Trying");
    // The edge places the new leg itself, through the trunk, as alice's call.
    let second_leg = trunk.expect_request("INVITE").await;
    assert!(
        second_leg.starts_with(&format!("INVITE sip:{NEW_PARTY}@")),
        "{second_leg}"
    );
    assert!(
        header(&second_leg, "From").contains(MAIN_NUMBER),
        "the account's number is shown: {second_leg}"
    );
    assert_ne!(
        header(&second_leg, "Call-ID"),
        header(&first_leg, "Call-ID")
    );
    trunk
        .send(&respond_to(&second_leg, 180, "new", None, ""))
        .await;
    assert!(notified(&phone).await.starts_with("SIP/2.0 180"));
    let new_party = ANSWER.replace("m=audio 40002", "m=audio 40004");
    trunk
        .send(&respond_to(
            &second_leg,
            200,
            "new",
            Some(trunk.addr),
            &new_party,
        ))
        .await;
    let ack = trunk.expect_request("ACK").await;
    assert_eq!(header(&ack, "Call-ID"), header(&second_leg, "Call-ID"));
    assert_eq!(notified(&phone).await, "SIP/2.0 200 OK");
    // The phone is let go; the two parties stay connected: with no relay between them, the
    // first party is sent the new party's session (a re-INVITE in its dialog).
    let bye = phone.expect_request("BYE").await;
    phone.send(&respond_to(&bye, 200, "", None, "")).await;
    let reinvite = trunk.expect_request("INVITE").await;
    assert_eq!(header(&reinvite, "Call-ID"), header(&first_leg, "Call-ID"));
    assert!(reinvite.contains("m=audio 40004"), "{reinvite}");
    trunk
        .send(&respond_to(&reinvite, 200, "far", Some(trunk.addr), ANSWER))
        .await;
    let ack = trunk.expect_request("ACK").await;
    assert_eq!(header(&ack, "Call-ID"), header(&first_leg, "Call-ID"));

    // The new party hangs up: the first party is hung up, the call ends.
    let hang_up = from_far_end(&trunk, &second_leg, "BYE", 2).replace("tag=far", "tag=new");
    trunk.send(&hang_up).await;
    trunk.expect_status(200).await;
    let bye = trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), header(&first_leg, "Call-ID"));
    trunk.send(&respond_to(&bye, 200, "", None, "")).await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        events.iter().any(|e| matches!(e,
            CallEvent::Transferred { by: Side::Caller, from_leg: None, to, .. } if to == NEW_PARTY)),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            CallEvent::LegStarted {
                role: LegRole::Caller,
                ..
            }
        )),
        "the new party takes the caller's place: {events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(CallEvent::Ended {
                cause: EndCause::NormalClearing,
                side: Side::Caller,
                ..
            })
        ),
        "{events:?}"
    );
    // Both legs are billed to alice's account, each as a call out through the trunk.
    let rated = edge.rated_legs().await;
    let mut reached: Vec<(&str, &str)> = rated
        .iter()
        .map(|r| (r.path.as_str(), r.destination.as_str()))
        .collect();
    reached.sort();
    assert_eq!(reached, [("pstn", DESTINATION), ("pstn", NEW_PARTY)]);
    assert!(
        rated
            .iter()
            .all(|r| r.account_id == edge.account_id.to_string() && r.charge_minor.is_some()),
        "{rated:?}"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_refused_to_the_carrier_and_to_numbers_the_account_may_not_call() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    edge.price_calls(&["449"], None).await;
    let phone = UdpPeer::new(edge.udp).await;
    let (invite, ok, out) = call_out(&phone, &trunk, "refused").await;

    // The party the carrier reached is nobody's phone here: its transfer would ring any
    // number at alice's expense.
    let refer = with_refer_to(
        &from_far_end(&trunk, &out, "REFER", 2),
        "sip:+449098790000@carrier",
    );
    let r = trunk.exchange(&refer).await;
    assert_eq!(status(&r), 403, "{r}");
    assert!(r.contains("may not transfer"), "{r}");
    // alice's phone meets the fraud controls of its own calls out, and what is not built.
    let refusals = [
        (
            "sip:+449098790000@ringledger.test",
            403,
            "destination blocked",
        ),
        ("sip:bob@ringledger.test", 404, "telephone number"),
        (
            "sip:+442079460001@ringledger.test?Replaces=other%40phone%3Bto-tag%3Da%3Bfrom-tag%3Db",
            501,
            "attended transfer",
        ),
    ];
    for (n, (uri, code, why)) in refusals.into_iter().enumerate() {
        let refer = with_refer_to(&in_dialog(&phone, &invite, &ok, "REFER", 3 + n as u32), uri);
        let r = phone.exchange(&refer).await;
        assert_eq!(status(&r), code, "{uri}: {r}");
        assert!(r.contains(why), "{uri}: {r}");
    }
    // Outside any dialog a REFER finds no call.
    let stray = with_refer_to(&in_dialog(&phone, &invite, &ok, "REFER", 9), DESTINATION)
        .replace(header(&invite, "Call-ID"), "stray@phone");
    assert_eq!(status(&phone.exchange(&stray).await), 481);
    // The call went on through all of it, and nothing new rang.
    let r = phone
        .exchange(&in_dialog(&phone, &invite, &ok, "BYE", 10))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    let bye = trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), header(&out, "Call-ID"));
    let calls = edge.ended_calls(1).await;
    assert_eq!(calls.len(), 1);
    assert!(
        !calls[0]
            .iter()
            .any(|e| matches!(e, CallEvent::Transferred { .. })),
        "{:?}",
        calls[0]
    );
    edge.shutdown().await;
}
