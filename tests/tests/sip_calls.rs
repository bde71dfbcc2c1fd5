//! Calls through the edge's B2BUA over real UDP sockets: a carrier (a test peer at the trunk's
//! address) calls alice's main number and the edge rings her registered contacts at once; an
//! IP device calls out through the trunk. Each test checks what the phones hear and what the
//! call's stream records. Interop with phones we did not write is in baresip.rs / pjsua2.rs.

use std::net::SocketAddr;
use std::time::Duration;

use domain::call::{
    AlternateReason, CallEvent, Direction, EndCause, LegFailure, LegTarget, Origin, Path, Side,
};
use ringledger_tests::carrier::{
    ANSWER, OFFER, audio_of, cancel_of, carrier_invite, carrier_invite_from, device_invite,
    edge_with_trunk, edge_with_trunk_and_media, edge_with_trunk_secured, ended, in_dialog,
    leg_failures, media_socket, register_from, registered_phone, relayed, wait_for_contacts,
    wait_for_data_path_report,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{
    MAIN_NUMBER, REALM, SipEdge, UdpPeer, authorization, header, relay_settings, respond_to, status,
};
use signaling::digest::Algorithm;

/// The carrier calls alice; both her phones ring; the second answers, so the first is
/// cancelled; the caller hears ringing, then the answer with the second phone's session;
/// the caller hangs up and the edge hangs up the phone.
async fn a_call_forks_to_every_phone_and_the_first_answer_wins(backend: Backend) {
    let (edge, trunk) = edge_with_trunk(backend).await;
    let first = registered_phone(&edge, "p1").await;
    let second = registered_phone(&edge, "p2").await;
    wait_for_contacts(&edge, 2).await;

    let invite = carrier_invite(&trunk, MAIN_NUMBER, "fork");
    trunk.send(&invite).await;
    trunk.expect_status(100).await;
    let to_first = first.expect_request("INVITE").await;
    let to_second = second.expect_request("INVITE").await;
    for leg in [&to_first, &to_second] {
        assert!(
            leg.ends_with(OFFER),
            "the caller's offer is passed on: {leg}"
        );
        assert!(
            header(leg, "From").contains("+441632960001"),
            "the caller's number is shown: {leg}"
        );
    }
    assert_ne!(header(&to_first, "Call-ID"), header(&to_second, "Call-ID"));

    first
        .send(&respond_to(&to_first, 180, "one", Some(first.addr), ""))
        .await;
    trunk.expect_status(180).await;
    second
        .send(&respond_to(
            &to_second,
            200,
            "two",
            Some(second.addr),
            ANSWER,
        ))
        .await;
    // The winner is ACKed; the other phone is cancelled and its 487 ACKed by the edge.
    let ack = second.expect_request("ACK").await;
    assert_eq!(header(&ack, "Call-ID"), header(&to_second, "Call-ID"));
    let cancel = first.expect_request("CANCEL").await;
    first.send(&respond_to(&cancel, 200, "one", None, "")).await;
    first
        .send(&respond_to(&to_first, 487, "one", None, ""))
        .await;
    first.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    assert!(
        ok.ends_with(ANSWER),
        "the answer's session reaches the caller: {ok}"
    );
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;

    // The caller hangs up: its BYE is answered, and the phone gets one.
    let bye = in_dialog(&trunk, &invite, &ok, "BYE", 2);
    let r = trunk.exchange(&bye).await;
    assert_eq!(status(&r), 200, "{r}");
    let to_phone = second.expect_request("BYE").await;
    second
        .send(&respond_to(&to_phone, 200, "two", None, ""))
        .await;

    let calls = edge.ended_calls(1).await;
    assert_eq!(calls.len(), 1);
    let events = &calls[0];
    let CallEvent::Started {
        direction,
        origin,
        to,
        from,
        account_id,
        ..
    } = &events[0]
    else {
        panic!("a call starts with Started: {events:?}");
    };
    assert_eq!(*direction, Direction::Inbound);
    assert_eq!(
        *origin,
        Origin::Pstn {
            trunk: "carrier".into()
        }
    );
    assert_eq!((from.as_str(), to.as_str()), ("+441632960001", MAIN_NUMBER));
    assert_eq!(*account_id, edge.account_id);
    let legs = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                CallEvent::LegStarted {
                    target: LegTarget::Contact { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(legs, 2, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, CallEvent::LegAnswered { .. }))
            .count(),
        1
    );
    assert_eq!(
        leg_failures(events),
        vec![(487, LegFailure::AnsweredElsewhere)]
    );
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    assert_eq!(edge.history_paths().await, ["data"]);
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_forks_and_the_first_answer_wins_on_sqlite() {
    a_call_forks_to_every_phone_and_the_first_answer_wins(Backend::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_forks_and_the_first_answer_wins_on_postgres() {
    a_call_forks_to_every_phone_and_the_first_answer_wins(Backend::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_cancels_a_ringing_call() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let phone = registered_phone(&edge, "p1").await;
    wait_for_contacts(&edge, 1).await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "cancelled");
    trunk.send(&invite).await;
    // A retransmitted INVITE is absorbed by its transaction: still one call (invariant 7).
    trunk.send(&invite).await;
    let to_phone = phone.expect_request("INVITE").await;
    phone
        .send(&respond_to(&to_phone, 180, "ph", Some(phone.addr), ""))
        .await;
    trunk.expect_status(180).await;
    trunk.send(&cancel_of(&invite)).await;
    trunk.expect_status(200).await;
    trunk.expect_status(487).await;
    let c = phone.expect_request("CANCEL").await;
    phone.send(&respond_to(&c, 200, "ph", None, "")).await;
    phone
        .send(&respond_to(&to_phone, 487, "ph", None, ""))
        .await;
    phone.expect_request("ACK").await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(leg_failures(&calls[0]), vec![(487, LegFailure::Cancelled)]);
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::CallerCancelled, Side::Caller))
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_phone_makes_a_busy_call_and_a_phone_hangup_reaches_the_caller() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let phone = registered_phone(&edge, "p1").await;
    wait_for_contacts(&edge, 1).await;

    // Busy: the caller hears 486 and the call ends busy.
    trunk
        .send(&carrier_invite(&trunk, MAIN_NUMBER, "busy"))
        .await;
    let to_phone = phone.expect_request("INVITE").await;
    phone
        .send(&respond_to(&to_phone, 486, "ph", None, ""))
        .await;
    phone.expect_request("ACK").await;
    trunk.expect_status(486).await;

    // The caller tries again with the same Call-ID (a new transaction): a new call, not a
    // loop; the phone is busy again.
    trunk
        .send(
            &carrier_invite(&trunk, MAIN_NUMBER, "busy")
                .replace("branch=z9hG4bKbusy", "branch=z9hG4bKbusyagain")
                .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE"),
        )
        .await;
    let to_phone = phone.expect_request("INVITE").await;
    phone
        .send(&respond_to(&to_phone, 486, "ph", None, ""))
        .await;
    phone.expect_request("ACK").await;
    trunk.expect_status(486).await;

    // Answered, then the phone hangs up: the caller gets a BYE inside its dialog.
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "hangup");
    trunk.send(&invite).await;
    let to_phone = phone.expect_request("INVITE").await;
    phone
        .send(&respond_to(&to_phone, 200, "ph2", Some(phone.addr), ANSWER))
        .await;
    phone.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    let ok_to_phone = respond_to(&to_phone, 200, "ph2", Some(phone.addr), ANSWER);
    let bye = format!(
        "BYE sip:ringledger@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbye1\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        edge = edge.udp,
        me = phone.addr,
        from = header(&ok_to_phone, "To"),
        to = header(&to_phone, "From"),
        cid = header(&to_phone, "Call-ID"),
    );
    let r = phone.exchange(&bye).await;
    assert_eq!(status(&r), 200, "{r}");
    let to_caller = trunk.expect_request("BYE").await;
    assert_eq!(header(&to_caller, "Call-ID"), "hangup@carrier");
    assert_eq!(header(&to_caller, "To"), header(&invite, "From"));
    trunk
        .send(&respond_to(&to_caller, 200, "x", None, ""))
        .await;

    let calls = edge.ended_calls(3).await;
    assert_eq!(ended(&calls[0]), Some((EndCause::Busy, Side::Callee)));
    assert_eq!(leg_failures(&calls[0]), vec![(486, LegFailure::Rejected)]);
    assert_eq!(ended(&calls[1]), Some((EndCause::Busy, Side::Callee)));
    assert_eq!(
        ended(&calls[2]),
        Some((EndCause::NormalClearing, Side::Callee))
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_device_calls_out_through_the_trunk_as_its_main_number() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let phone = UdpPeer::new(edge.udp).await;
    let dialled = "+33142278186";
    let invite = device_invite(&phone, dialled, "out").await;
    phone.send(&invite).await;
    phone.expect_status(100).await;

    // The trunk gets the call from alice's main number, with her offer.
    let out = trunk.expect_request("INVITE").await;
    assert!(
        out.starts_with(&format!("INVITE sip:{dialled}@{} ", trunk.addr)),
        "{out}"
    );
    assert!(header(&out, "From").contains(MAIN_NUMBER), "{out}");
    assert!(out.ends_with(OFFER));
    trunk
        .send(&respond_to(&out, 200, "far", Some(trunk.addr), ANSWER))
        .await;
    trunk.expect_request("ACK").await;
    let ok = phone.expect_status(200).await;
    phone.send(&in_dialog(&phone, &invite, &ok, "ACK", 2)).await;
    let r = phone
        .exchange(&in_dialog(&phone, &invite, &ok, "BYE", 3))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    let bye = trunk.expect_request("BYE").await;
    trunk.send(&respond_to(&bye, 200, "far", None, "")).await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        matches!(
            &events[0],
            CallEvent::Started { direction: Direction::Outbound, origin: Origin::IpDevice { device_id }, from, to, .. }
                if *device_id == edge.device_id && from == MAIN_NUMBER && to == dialled
        ),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::LegStarted { target: LegTarget::Pstn { number }, .. } if number.as_str() == dialled
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::LegAnswered { .. }))
    );
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    edge.shutdown().await;
}

/// The `m=audio` port and `c=` address of a message's session description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_goes_through_the_relay_and_a_silent_call_is_ended() {
    let (edge, trunk) = edge_with_trunk_and_media(
        Backend::sqlite().await,
        Some(relay_settings(Duration::from_secs(2))),
    )
    .await;
    let phone = registered_phone(&edge, "p1").await;
    wait_for_contacts(&edge, 1).await;
    let (caller_media, caller_port) = media_socket().await;
    let (phone_media, phone_port) = media_socket().await;
    let free = edge.edge.media_ports_free().unwrap();

    let invite = carrier_invite(&trunk, MAIN_NUMBER, "relayed")
        .replace("m=audio 40000", &format!("m=audio {caller_port}"));
    trunk.send(&invite).await;
    let to_phone = phone.expect_request("INVITE").await;
    let (address, callee_side) = audio_of(&to_phone);
    assert_eq!(address, "127.0.0.1");
    assert!((30000..40000).contains(&callee_side), "{to_phone}");
    let answer = ANSWER.replace("m=audio 40002", &format!("m=audio {phone_port}"));
    phone
        .send(&respond_to(&to_phone, 200, "ph", Some(phone.addr), &answer))
        .await;
    phone.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    let (_, caller_side) = audio_of(&ok);
    assert!((30000..40000).contains(&caller_side), "{ok}");
    assert_ne!(
        caller_side, phone_port,
        "the caller is not told the phone's port"
    );
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;

    // Each side's packets reach the other from the relay's port facing it.
    let source = relayed(
        &caller_media,
        caller_side,
        &phone_media,
        b"rtp from the caller",
    )
    .await;
    assert_eq!(source.port(), callee_side);
    let source = relayed(
        &phone_media,
        callee_side,
        &caller_media,
        b"rtp from the phone",
    )
    .await;
    assert_eq!(source.port(), caller_side);
    // The relay counts a packet once its send returned, which may be after it arrived.
    for _ in 0..100 {
        if edge.edge.packets_relayed() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(edge.edge.packets_relayed(), 2);

    // Then nothing: after the media timeout both sides are hung up.
    let bye = trunk.expect_request("BYE").await;
    trunk.send(&respond_to(&bye, 200, "x", None, "")).await;
    let bye = phone.expect_request("BYE").await;
    phone.send(&respond_to(&bye, 200, "ph", None, "")).await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::MediaTimeout, Side::System))
    );
    // The call's two port pairs go back to the pool as it ends (not after its task lingers).
    for _ in 0..100 {
        if edge.edge.media_ports_free() == Some(free) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(edge.edge.media_ports_free(), Some(free));
    edge.shutdown().await;
}

const EXTENSION: &str = "+447700900123";

/// The carrier calls alice, who has no phone registered but a verified extension: the edge
/// takes the alternate path and calls the extension's number through the trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_phone_registered_the_call_goes_to_the_extension_over_the_cellular_network() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "alt");
    trunk.send(&invite).await;
    // The trunk plays the cellular network too: it gets the call for the extension's number,
    // from the caller's number.
    let out = trunk.expect_request("INVITE").await;
    assert!(
        out.starts_with(&format!("INVITE sip:{EXTENSION}@{} ", trunk.addr)),
        "{out}"
    );
    assert!(header(&out, "From").contains("+441632960001"), "{out}");
    trunk
        .send(&respond_to(&out, 180, "mob", Some(trunk.addr), ""))
        .await;
    trunk.expect_status(180).await;
    trunk
        .send(&respond_to(&out, 200, "mob", Some(trunk.addr), ANSWER))
        .await;
    trunk.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    // One socket plays both networks: the edge hangs up the cellular leg, then answers the
    // caller's BYE (once the end is recorded).
    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 2)).await;
    let bye = trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), header(&out, "Call-ID"));
    trunk.expect_status(200).await;
    trunk.send(&respond_to(&bye, 200, "mob", None, "")).await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        events.iter().any(|e| matches!(
            e,
            CallEvent::AlternatePathChosen {
                reason: AlternateReason::NoLiveContact,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::LegStarted {
            target: LegTarget::Extension { extension_id: id, number },
            path: Path::AlternateCallOut,
            ..
        } if *id == extension_id && number.as_str() == EXTENSION
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::LegAnswered { .. }))
    );
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    edge.shutdown().await;
}

/// With a phone registered, an extension that rings on inbound rings with it; the phone
/// answers first and the cellular leg is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_ring_with_the_phones_and_lose_to_a_phone_that_answers_first() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    edge.add_extension(EXTENSION).await;
    let phone = registered_phone(&edge, "p1").await;
    wait_for_contacts(&edge, 1).await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "both");
    trunk.send(&invite).await;
    let to_phone = phone.expect_request("INVITE").await;
    let to_mobile = trunk.expect_request("INVITE").await;
    assert!(
        to_mobile.starts_with(&format!("INVITE sip:{EXTENSION}@")),
        "{to_mobile}"
    );
    trunk
        .send(&respond_to(&to_mobile, 180, "mob", Some(trunk.addr), ""))
        .await;
    phone
        .send(&respond_to(&to_phone, 200, "ph", Some(phone.addr), ANSWER))
        .await;
    phone.expect_request("ACK").await;
    let cancel = trunk.expect_request("CANCEL").await;
    assert_eq!(header(&cancel, "Call-ID"), header(&to_mobile, "Call-ID"));
    trunk.send(&respond_to(&cancel, 200, "mob", None, "")).await;
    trunk
        .send(&respond_to(&to_mobile, 487, "mob", None, ""))
        .await;
    let ok = trunk.expect_status(200).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 2)).await;
    trunk.expect_status(200).await;
    let bye = phone.expect_request("BYE").await;
    phone.send(&respond_to(&bye, 200, "ph", None, "")).await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, CallEvent::AlternatePathChosen { .. })),
        "ringing alongside the phones is not the alternate path: {events:?}"
    );
    assert_eq!(
        leg_failures(events),
        vec![(487, LegFailure::AnsweredElsewhere)]
    );
    edge.shutdown().await;
}

const ACCESS_NUMBER: &str = "+442071838799";
const DESTINATION: &str = "+442079460000";

/// An INVITE from the carrier to `to`, from `from` (a caller its network vouches for).
/// Call-through (seeds 1 and 2): alice's extension dials an access number over its own
/// carrier; the edge finds the destination it staged over data and calls it through the
/// trunk with the main number as caller ID; the call is the account's, through the extension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_calls_through_an_access_number_to_the_destination_it_staged() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.add_access_number(ACCESS_NUMBER, None).await;

    // A stranger, and the extension before it staged anything, are turned away.
    trunk
        .send(&carrier_invite_from(
            &trunk,
            "+441632960999",
            ACCESS_NUMBER,
            "stranger",
        ))
        .await;
    let r = trunk.expect_status(403).await;
    assert!(r.contains("caller not recognised"), "{r}");
    trunk
        .send(&carrier_invite_from(
            &trunk,
            EXTENSION,
            ACCESS_NUMBER,
            "early",
        ))
        .await;
    // With nothing staged the destination would be keyed in at the menu, after a PIN this
    // extension does not have.
    let r = trunk.expect_status(403).await;
    assert!(r.contains("a PIN is needed"), "{r}");

    edge.stage_dial_intent(extension_id, DESTINATION).await;
    let invite = carrier_invite_from(&trunk, EXTENSION, ACCESS_NUMBER, "through");
    trunk.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    assert!(
        out.starts_with(&format!("INVITE sip:{DESTINATION}@{} ", trunk.addr)),
        "{out}"
    );
    assert!(
        header(&out, "From").contains(MAIN_NUMBER),
        "the main number is shown: {out}"
    );
    trunk
        .send(&respond_to(&out, 200, "far", Some(trunk.addr), ANSWER))
        .await;
    trunk.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 2)).await;
    let bye = trunk.expect_request("BYE").await;
    trunk.expect_status(200).await;
    trunk.send(&respond_to(&bye, 200, "far", None, "")).await;

    // The stranger's attempt is on record as a refused call to the access number; the
    // extension's attempt without a destination is not (nothing was wrong with the caller).
    let calls = edge.ended_calls(2).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        matches!(
            &calls[0][0],
            CallEvent::Started { direction: Direction::Inbound, path: Path::CallThrough, from, to, .. }
                if from == "+441632960999" && to == ACCESS_NUMBER
        ),
        "{:?}",
        calls[0]
    );
    assert_eq!(ended(&calls[0]), Some((EndCause::Rejected, Side::System)));
    let events = &calls[1];
    assert!(
        matches!(
            &events[0],
            CallEvent::Started {
                direction: Direction::Outbound,
                origin: Origin::Extension { extension_id: origin },
                path: Path::CallThrough,
                account_id,
                extension_id: Some(through),
                from,
                to,
                ..
            } if *origin == extension_id && *through == extension_id
                && *account_id == edge.account_id && from == EXTENSION && to == DESTINATION
        ),
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::LegStarted { target: LegTarget::Pstn { number }, path: Path::CallThrough, .. }
            if number.as_str() == DESTINATION
    )));
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );

    // The dial intent served that call: the next attempt would be the menu's, and is refused.
    trunk
        .send(&carrier_invite_from(
            &trunk,
            EXTENSION,
            ACCESS_NUMBER,
            "again",
        ))
        .await;
    let r = trunk.expect_status(403).await;
    assert!(r.contains("a PIN is needed"), "{r}");

    // A caller trying an access number over and over is cut off after its allowance, and
    // those extra attempts are not written to the log.
    let allowance = signaling::b2bua::attempts::ATTEMPTS;
    for n in 0..allowance {
        let call = format!("flood{n}");
        trunk
            .send(&carrier_invite_from(
                &trunk,
                "+441632960555",
                ACCESS_NUMBER,
                &call,
            ))
            .await;
        let r = trunk.expect_status(403).await;
        assert!(r.contains("caller not recognised"), "{r}");
    }
    trunk
        .send(&carrier_invite_from(
            &trunk,
            "+441632960555",
            ACCESS_NUMBER,
            "floodmore",
        ))
        .await;
    let r = trunk.expect_status(403).await;
    assert!(r.contains("too many call-through attempts"), "{r}");
    assert_eq!(edge.ended_calls(2 + allowance).await.len(), 2 + allowance);
    edge.shutdown().await;
}

/// A phone registered over TCP, holding its connection open.
struct TcpPhone {
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl TcpPhone {
    async fn send(&mut self, message: &str) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(message.as_bytes()).await.unwrap();
    }

    /// The next whole message on the connection (framed by Content-Length).
    async fn next(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let length: usize = header(&(head.clone() + "\r\n"), "Content-Length")
                    .parse()
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + length {
                    let message: Vec<u8> = self.buf.drain(..end + 4 + length).collect();
                    return String::from_utf8_lossy(&message).into_owned();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("a message on the connection")
                .unwrap();
            assert!(n > 0, "the edge closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn register(edge: &SipEdge) -> Self {
        let stream = tokio::net::TcpStream::connect(edge.tcp).await.unwrap();
        let addr = stream.local_addr().unwrap();
        let mut phone = Self {
            stream,
            addr,
            buf: vec![],
        };
        let register = |cseq: u32, auth: &str| {
            format!(
                "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/TCP {addr};branch=z9hG4bKtcp{cseq}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:alice@{REALM}>;tag=tcp\r\nTo: <sip:alice@{REALM}>\r\n\
                 Call-ID: tcp-reg@phone\r\nCSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:alice@{addr};transport=tcp>\r\n{auth}Content-Length: 0\r\n\r\n"
            )
        };
        phone.send(&register(1, "")).await;
        let r = phone.next().await;
        assert_eq!(status(&r), 401, "{r}");
        let auth = authorization(
            header(&r, "WWW-Authenticate"),
            Algorithm::Md5,
            ringledger_tests::sip_edge::PASSWORD,
            1,
            &format!("sip:{REALM}"),
        );
        phone.send(&register(2, &auth)).await;
        let r = phone.next().await;
        assert_eq!(status(&r), 200, "{r}");
        phone
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_over_tcp_is_rung_over_its_connection() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let mut phone = TcpPhone::register(&edge).await;
    wait_for_contacts(&edge, 1).await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "tcp");
    trunk.send(&invite).await;
    let to_phone = phone.next().await;
    assert!(to_phone.starts_with("INVITE "), "{to_phone}");
    assert!(
        header(&to_phone, "Via").starts_with("SIP/2.0/TCP "),
        "{to_phone}"
    );
    phone
        .send(&respond_to(&to_phone, 200, "tcp", Some(phone.addr), ANSWER))
        .await;
    let ack = phone.next().await;
    assert!(ack.starts_with("ACK "), "{ack}");
    assert!(header(&ack, "Via").starts_with("SIP/2.0/TCP "), "{ack}");
    let ok = trunk.expect_status(200).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 2)).await;
    let bye = phone.next().await;
    assert!(bye.starts_with("BYE "), "{bye}");
    phone.send(&respond_to(&bye, 200, "tcp", None, "")).await;
    trunk.expect_status(200).await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    edge.shutdown().await;
}

/// A phone that says on its REGISTER that its data path is poor is not rung over it: the call
/// goes to the extension over the cellular network, recorded as chosen for poor data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_reporting_poor_data_is_passed_over_for_the_cellular_network() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    edge.add_extension(EXTENSION).await;
    let phone = UdpPeer::new(edge.udp).await;
    let r = register_from(&phone, "pd1", "Ringledger-Data-Path: patchy\r\n").await;
    assert_eq!(status(&r), 400, "an unknown report is refused: {r}");
    let r = register_from(&phone, "pd2", "Ringledger-Data-Path: poor\r\n").await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(edge.device_events().await.iter().any(|e| matches!(
        e,
        domain::device::DeviceEvent::DataPathReported {
            quality: domain::device::DataPath::Poor,
            ..
        }
    )));
    wait_for_contacts(&edge, 1).await;
    wait_for_data_path_report(&edge).await;
    trunk
        .send(&carrier_invite(&trunk, MAIN_NUMBER, "poor"))
        .await;
    let out = trunk.expect_request("INVITE").await;
    assert!(
        out.starts_with(&format!("INVITE sip:{EXTENSION}@")),
        "{out}"
    );
    assert!(
        phone.recv(Duration::from_millis(300)).await.is_none(),
        "the phone with poor data is not rung"
    );
    trunk.send(&respond_to(&out, 486, "mob", None, "")).await;
    trunk.expect_status(486).await;
    let calls = edge.ended_calls(1).await;
    assert!(
        calls[0].iter().any(|e| matches!(
            e,
            CallEvent::AlternatePathChosen {
                reason: AlternateReason::PoorData,
                ..
            }
        )),
        "{:?}",
        calls[0]
    );
    edge.shutdown().await;
}

/// The number of `ringledger_calls_refused_total` with `cause` in the edge's metrics.
fn refused(edge: &SipEdge, cause: &str) -> u64 {
    let mut out = String::new();
    edge.edge.render_metrics(&mut out);
    let prefix = format!("ringledger_calls_refused_total{{cause=\"{cause}\"}} ");
    out.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{prefix} in {out}"))
}

/// No call without a price: a destination the tariff in force has no rate for (+881,
/// satellite) is refused before any leg leaves for the trunk, recorded with cause `no_rate`
/// and counted; a rated destination still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_without_a_price_is_refused_before_any_leg() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let phone = UdpPeer::new(edge.udp).await;
    let invite = device_invite(&phone, "+881234567890", "satellite").await;
    phone.send(&invite).await;
    let r = phone.expect_status(403).await;
    assert!(r.contains("no rate for this destination"), "{r}");
    let calls = edge.ended_calls(1).await;
    assert!(
        matches!(
            calls[0].last(),
            Some(CallEvent::Ended {
                cause: EndCause::NoRate,
                side: Side::System,
                ..
            })
        ),
        "{:?}",
        calls[0]
    );
    assert!(
        !calls[0]
            .iter()
            .any(|e| matches!(e, CallEvent::LegStarted { .. })),
        "no leg was placed: {:?}",
        calls[0]
    );
    assert_eq!(refused(&edge, "no_rate"), 1);
    // A destination with a price goes out as before.
    let invite = device_invite(&phone, DESTINATION, "priced").await;
    phone.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    assert!(out.contains(DESTINATION), "{out}");
    assert_eq!(refused(&edge, "no_rate"), 1);
    edge.shutdown().await;
}

/// An inbound call does not call out an extension whose number has no price in the tariff
/// in force (the account would pay for the cellular leg): with no phone registered either,
/// nothing rings and the caller is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_without_a_price_is_not_called_out() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    edge.add_extension("+881612345678").await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "satellite-ext");
    trunk.send(&invite).await;
    let mut seen = Vec::new();
    let mut last = None;
    while let Some(m) = trunk.recv(Duration::from_secs(5)).await {
        let done = m.starts_with("SIP/2.0 ") && status(&m) >= 300;
        seen.push(m.lines().next().unwrap_or_default().to_owned());
        if done {
            last = Some(m);
            break;
        }
    }
    let last = last.unwrap_or_else(|| panic!("no final answer: {seen:?}"));
    assert!(status(&last) >= 400, "{last}");
    assert!(
        !seen.iter().any(|m| m.starts_with("INVITE ")),
        "the unrated extension was called out: {seen:?}"
    );
    edge.shutdown().await;
}

/// With `security.allow_unrated_calls` the operator takes the risk: the unrated call goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_may_allow_unrated_calls() {
    let security = signaling::SecuritySettings {
        allow_unrated_calls: true,
        ..signaling::SecuritySettings::default()
    };
    let (edge, trunk) = edge_with_trunk_secured(Backend::sqlite().await, security).await;
    let phone = UdpPeer::new(edge.udp).await;
    let invite = device_invite(&phone, "+881234567890", "satellite").await;
    phone.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    assert!(out.contains("+881234567890"), "{out}");
    assert_eq!(refused(&edge, "no_rate"), 0);
    edge.shutdown().await;
}

/// Calls through the edge while alice's tariff gets new versions (a later start, a correction
/// at the same start, another later start) are billed as docs/BILLING.md says, to the minor
/// unit: the reference prices each leg from the instants in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_edge_over_tariff_versions_are_billed_as_the_reference_says() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let phone = UdpPeer::new(edge.udp).await;
    let rates = |per_minute_millis, connect_fee_minor, first, next| {
        vec![
            domain::tariff::Rate {
                prefix: "44".into(),
                description: "United Kingdom".into(),
                per_minute_millis,
                connect_fee_minor,
                first_increment_secs: first,
                next_increment_secs: next,
            },
            domain::tariff::Rate {
                prefix: "4420".into(),
                description: "London".into(),
                per_minute_millis: per_minute_millis / 2,
                connect_fee_minor,
                first_increment_secs: first,
                next_increment_secs: next,
            },
        ]
    };
    // (the version published before the call, whether it corrects the latest, talk time)
    let plan = [
        (Some((rates(90_000, 3, 1, 1), false)), 1_200),
        (Some((rates(60_000, 0, 30, 6), true)), 700),
        (None, 2_100),
        (Some((rates(12_000, 7, 60, 60), false)), 300),
    ];
    let mut versions = Vec::new();
    for (i, (version, talk_ms)) in plan.into_iter().enumerate() {
        if let Some((rates, correction)) = version {
            versions = edge.publish_version(rates, correction).await;
        }
        let invite = device_invite(&phone, DESTINATION, &format!("priced{i}")).await;
        phone.send(&invite).await;
        let out = trunk.expect_request("INVITE").await;
        trunk
            .send(&respond_to(&out, 200, "far", Some(trunk.addr), ANSWER))
            .await;
        trunk.expect_request("ACK").await;
        let ok = phone.expect_status(200).await;
        phone.send(&in_dialog(&phone, &invite, &ok, "ACK", 2)).await;
        tokio::time::sleep(Duration::from_millis(talk_ms)).await;
        // A CSeq of its own per call: the helper's branch is made of it, and a BYE with an
        // earlier BYE's branch is (rightly) taken for its retransmission.
        let cseq = 3 + 10 * i as u32;
        let r = phone
            .exchange(&in_dialog(&phone, &invite, &ok, "BYE", cseq))
            .await;
        assert_eq!(status(&r), 200, "{r}");
        let bye = trunk.expect_request("BYE").await;
        trunk.send(&respond_to(&bye, 200, "far", None, "")).await;
    }
    let calls = edge.ended_calls(4).await;
    let mut expected = Vec::new();
    for events in &calls {
        let started = events.iter().find_map(|e| match e {
            CallEvent::Started { at, .. } => Some(*at),
            _ => None,
        });
        let answered = events.iter().find_map(|e| match e {
            CallEvent::LegAnswered { at, .. } => Some(*at),
            _ => None,
        });
        let ended = events.iter().find_map(|e| match e {
            CallEvent::Ended { at, .. } => Some(*at),
            _ => None,
        });
        let (Some(started), Some(answered), Some(ended)) = (started, answered, ended) else {
            panic!("an answered call that ended: {events:?}")
        };
        let (version, _, duration, billable, charge) =
            ringledger_tests::billing_reference::reference(
                &versions,
                started,
                DESTINATION,
                answered,
                ended,
            )
            .expect("a priced destination");
        expected.push((
            answered,
            (
                Some(i64::from(version)),
                Some(duration),
                Some(billable),
                Some(charge),
            ),
        ));
    }
    expected.sort_by_key(|(answered, _)| *answered);
    let expected: Vec<_> = expected.into_iter().map(|(_, e)| e).collect();
    let rated: Vec<_> = edge
        .rated_legs()
        .await
        .iter()
        .map(|r| {
            (
                r.tariff_version,
                r.duration_secs,
                r.billable_secs,
                r.charge_minor,
            )
        })
        .collect();
    assert_eq!(rated, expected);
    // Calls out from a phone went over the public network.
    assert_eq!(edge.history_paths().await, ["pstn"; 4]);
    // The correction re-rated the first call: no leg is on version 2 any more.
    assert_eq!(
        rated.iter().map(|r| r.0).collect::<Vec<_>>(),
        [Some(3), Some(3), Some(3), Some(4)]
    );
    edge.shutdown().await;
}

/// Fraud controls before a call leaves for the public network: a destination the tariff
/// blocks is refused, and once the day's ended calls reach the account's daily spend limit
/// the next call is refused too; each refusal is a recorded call ending with its cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_destinations_and_a_spent_daily_limit_refuse_calls_out() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    // A call's first increment costs 31p (25p to connect, 6p for its first minute); the
    // limit is 31p: the first call may start (its first increment fits), and once it has
    // ended the limit is spent.
    edge.price_calls(&["449"], Some(31)).await;
    let phone = UdpPeer::new(edge.udp).await;

    let invite = device_invite(&phone, "+449098790000", "premium").await;
    phone.send(&invite).await;
    let r = phone.expect_status(403).await;
    assert!(r.contains("destination blocked"), "{r}");

    // Under the limit (nothing spent yet): the call goes out, is answered and hung up.
    let invite = device_invite(&phone, DESTINATION, "first").await;
    phone.send(&invite).await;
    let out = trunk.expect_request("INVITE").await;
    trunk
        .send(&respond_to(&out, 200, "far", Some(trunk.addr), ANSWER))
        .await;
    let ok = phone.expect_status(200).await;
    phone.send(&in_dialog(&phone, &invite, &ok, "ACK", 2)).await;
    let r = phone
        .exchange(&in_dialog(&phone, &invite, &ok, "BYE", 3))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    // Its cost reaches the edge's view with its end.
    for _ in 0..500 {
        let (spent, _) =
            edge.view
                .read()
                .unwrap()
                .spent_on_day_of(edge.account_id, None, chrono::Utc::now());
        if spent > 0 {
            assert!(spent >= 25, "{spent}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let invite = device_invite(&phone, DESTINATION, "second").await;
    phone.send(&invite).await;
    let r = phone.expect_status(403).await;
    assert!(r.contains("daily spend limit reached"), "{r}");

    // Nor is the account's extension called over the cellular network for an inbound call:
    // with no phone registered, nothing rings.
    edge.add_extension(EXTENSION).await;
    trunk
        .send(&carrier_invite(&trunk, MAIN_NUMBER, "inbound"))
        .await;
    let r = trunk.expect_status(480).await;
    assert!(r.contains("no device registered"), "{r}");

    let calls = edge.ended_calls(4).await;
    assert_eq!(ended(&calls[3]), Some((EndCause::NoAnswer, Side::System)));
    let calls = &calls[..3];
    let causes: Vec<_> = calls.iter().map(|c| ended(c)).collect();
    assert_eq!(
        causes,
        vec![
            Some((EndCause::Rejected, Side::System)),
            Some((EndCause::NormalClearing, Side::Caller)),
            Some((EndCause::SpendLimit, Side::System)),
        ]
    );
    for refused in [&calls[0], &calls[2]] {
        assert!(
            !refused
                .iter()
                .any(|e| matches!(e, CallEvent::LegStarted { .. })),
            "no leg is placed for a refused call: {refused:?}"
        );
    }
    edge.shutdown().await;
}

/// A delayed offer (RFC 3261 §13.2.1): the caller's INVITE has no session description, the
/// phone offers in its 200, and the caller answers in its ACK, which reaches the phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_offer_is_answered_in_the_acks() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let phone = registered_phone(&edge, "p1").await;
    wait_for_contacts(&edge, 1).await;
    let with_offer = carrier_invite(&trunk, MAIN_NUMBER, "delayed");
    let invite =
        with_offer.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\r\n\r\n";
    trunk.send(&invite).await;
    let to_phone = phone.expect_request("INVITE").await;
    assert!(
        to_phone.ends_with("\r\n\r\n"),
        "no offer to pass on: {to_phone}"
    );
    phone
        .send(&respond_to(&to_phone, 200, "ph", Some(phone.addr), ANSWER))
        .await;
    let ok = trunk.expect_status(200).await;
    assert!(
        ok.ends_with(ANSWER),
        "the phone's offer reaches the caller: {ok}"
    );
    assert!(
        phone.recv(Duration::from_millis(200)).await.is_none(),
        "the phone's ACK waits for the caller's answer"
    );
    let ack = in_dialog(&trunk, &invite, &ok, "ACK", 1).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        ),
    );
    trunk.send(&ack).await;
    let to_phone_ack = phone.expect_request("ACK").await;
    assert!(
        to_phone_ack.ends_with(OFFER),
        "the caller's answer reaches the phone: {to_phone_ack}"
    );
    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 2)).await;
    trunk.expect_status(200).await;
    edge.shutdown().await;
}
