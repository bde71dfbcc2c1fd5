//! Alternate path (b), call-in (docs/OPERATIONS.md, "Call-in"), over real UDP sockets: a carrier
//! calls alice's main number while her phone reports poor data; her extension is set to take
//! such calls by calling in. The edge keeps the caller ringing, records the call-in awaited,
//! tells the phone over data (SIP MESSAGE), and bridges the extension's call to the access
//! number through the media relay. The trunk peer plays the public and the cellular networks.

use std::time::Duration;

use domain::call::{AlternateReason, CallEvent, EndCause, LegFailure, LegTarget, Path, Side};
use domain::extension::AlternateMode;
use domain::ids::ExtensionId;
use ringledger_tests::carrier::{
    audio_of, cancel_of, carrier_invite, carrier_invite_from, edge_with_carrier_network_secured,
    edge_with_trunk_and_media_secured, ended, in_dialog, leg_failures, media_socket, register_from,
    relayed, wait_for_data_path_report,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::http_sink::one_post;
use ringledger_tests::sip_edge::{
    CALL_IN_TIMEOUT, MAIN_NUMBER, SipEdge, UdpPeer, header, relay_settings, respond_to, status,
    trusting_carriers,
};
use ringledger_tests::sipp::CARRIER_IP;
use signaling::digest::Algorithm;

const EXTENSION: &str = "+447700900123";
/// An access number of alice's account, not mapped to a destination: the one to call in to.
const ACCESS: &str = "+442071838799";

struct Setup {
    edge: SipEdge,
    trunk: UdpPeer,
    phone: UdpPeer,
    extension_id: ExtensionId,
}

/// alice's extension takes alternate-path calls by calling in; her one phone is registered
/// but says its data path is poor; her calls are priced (25p to connect, 6p a minute).
async fn setup() -> Setup {
    setup_holding(trusting_carriers()).await
}

/// alice's extension set to call in, an access number, prices, and her one phone registered
/// and reporting poor data.
async fn set_to_call_in(edge: &SipEdge) -> (ExtensionId, UdpPeer) {
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.set_alternate_path(extension_id, AlternateMode::CallIn)
        .await;
    edge.add_access_number(ACCESS, None).await;
    edge.price_calls(&[], None).await;
    let phone = UdpPeer::new(edge.udp).await;
    let r = register_from(&phone, "ci", "Ringledger-Data-Path: poor\r\n").await;
    assert_eq!(status(&r), 200, "{r}");
    wait_for_data_path_report(edge).await;
    (extension_id, phone)
}

/// The same on an edge holding `security`'s settings.
async fn setup_holding(security: signaling::SecuritySettings) -> Setup {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) =
        edge_with_trunk_and_media_secured(Backend::sqlite().await, media, security).await;
    let (extension_id, phone) = set_to_call_in(&edge).await;
    Setup {
        edge,
        trunk,
        phone,
        extension_id,
    }
}

/// The carrier's call to alice: it keeps ringing while the phone is told to call in. The
/// MESSAGE the phone got.
async fn call_alice(s: &Setup, invite: &str) -> String {
    s.trunk.send(invite).await;
    s.trunk.expect_status(180).await;
    let message = s.phone.expect_request("MESSAGE").await;
    s.phone
        .send(&respond_to(&message, 200, "ph", None, ""))
        .await;
    message
}

/// The extension's call to the access number, as its own carrier delivers it.
fn call_in_invite(s: &Setup, call: &str) -> String {
    carrier_invite_from(&s.trunk, EXTENSION, ACCESS, call)
}

fn awaited(events: &[CallEvent]) -> Option<(String, String)> {
    events.iter().find_map(|e| match e {
        CallEvent::CallInAwaited {
            access_number,
            expected_caller,
            ..
        } => Some((
            access_number.as_str().to_string(),
            expected_caller.as_str().to_string(),
        )),
        _ => None,
    })
}

/// The call-in leg, and only it, billed to alice's main account through the extension on the
/// call-in path: a first minute (6p) and the 25p connect fee.
async fn assert_call_in_billed(edge: &SipEdge, extension_id: ExtensionId) {
    let rated = edge.rated_legs().await;
    assert_eq!(rated.len(), 1, "{rated:?}");
    let leg = &rated[0];
    assert_eq!(leg.account_id, edge.account_id.to_string());
    assert_eq!(leg.extension_id, Some(extension_id.to_string()));
    assert_eq!(
        (leg.path.as_str(), leg.destination.as_str()),
        ("call_in", EXTENSION)
    );
    assert_eq!((leg.billable_secs, leg.charge_minor), (Some(60), Some(31)));
}

fn leg_paths(events: &[CallEvent]) -> Vec<Path> {
    events
        .iter()
        .filter_map(|e| match e {
            CallEvent::LegStarted { path, .. } => Some(*path),
            _ => None,
        })
        .collect()
}

/// The whole flow: told over data, the extension calls in, both sides are answered with the
/// relay's media address, audio flows both ways, the caller's hangup ends both, and the
/// call-in leg is billed to alice's account through the extension, on the call-in path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_calls_in_and_is_bridged_to_the_caller() {
    let s = setup().await;
    let (caller_media, caller_port) = media_socket().await;
    let (mobile_media, mobile_port) = media_socket().await;
    let invite = carrier_invite(&s.trunk, MAIN_NUMBER, "callin")
        .replace("m=audio 40000", &format!("m=audio {caller_port}"));
    let message = call_alice(&s, &invite).await;
    let notice = header(&message, "Ringledger-Call-In");
    assert!(
        notice.contains(&format!("access-number={ACCESS}"))
            && notice.contains(&format!("from={EXTENSION}")),
        "{message}"
    );
    assert!(message.contains(&format!("call {ACCESS} from {EXTENSION}")));

    let call_in =
        call_in_invite(&s, "mobile-in").replace("m=audio 40000", &format!("m=audio {mobile_port}"));
    s.trunk.send(&call_in).await;
    let mut answers = [
        s.trunk.expect_status(200).await,
        s.trunk.expect_status(200).await,
    ];
    answers.sort_by_key(|a| header(a, "Call-ID") != "mobile-in@carrier");
    let [ok_in, ok_caller] = &answers;
    assert_eq!(header(ok_in, "Call-ID"), "mobile-in@carrier");
    assert_eq!(header(ok_caller, "Call-ID"), "callin@carrier");
    let (address, mobile_side) = audio_of(ok_in);
    let (_, caller_side) = audio_of(ok_caller);
    assert_eq!(address, "127.0.0.1");
    assert!(
        (30000..40000).contains(&mobile_side) && (30000..40000).contains(&caller_side),
        "{ok_in}\n{ok_caller}"
    );
    assert_ne!(mobile_side, caller_side);
    s.trunk
        .send(&in_dialog(&s.trunk, &call_in, ok_in, "ACK", 1))
        .await;
    s.trunk
        .send(&in_dialog(&s.trunk, &invite, ok_caller, "ACK", 1))
        .await;
    relayed(&caller_media, caller_side, &mobile_media, b"to the mobile").await;
    relayed(&mobile_media, mobile_side, &caller_media, b"to the caller").await;

    // The caller hangs up: the edge hangs up the extension's call, then answers the BYE.
    s.trunk
        .send(&in_dialog(&s.trunk, &invite, ok_caller, "BYE", 2))
        .await;
    let bye = s.trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), "mobile-in@carrier");
    s.trunk.send(&respond_to(&bye, 200, "x", None, "")).await;
    s.trunk.expect_status(200).await;

    let calls = s.edge.ended_calls(1).await;
    assert_eq!(
        calls.len(),
        1,
        "the call-in is a leg of the call: {calls:?}"
    );
    let events = &calls[0];
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::AlternatePathChosen {
            reason: AlternateReason::PoorData,
            ..
        }
    )));
    assert_eq!(awaited(events), Some((ACCESS.into(), EXTENSION.into())));
    assert_eq!(leg_paths(events), vec![Path::CallIn], "{events:?}");
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::LegStarted { target: LegTarget::Extension { extension_id, .. }, .. }
            if *extension_id == s.extension_id
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Bridged { .. }))
    );
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    // Billed to the main account through the extension, on the path it took: a first minute
    // (6p) and the 25p connect fee.
    assert_call_in_billed(&s.edge, s.extension_id).await;
    // The history tells the auditor how the call was set up.
    assert_eq!(s.edge.history_paths().await, ["call_in"]);
    s.edge.shutdown().await;
}

/// No call-in in time: the edge calls the extension out instead (here it is busy); a call-in
/// that comes after is no call-in any more (nothing staged for it: 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_call_in_in_time_the_extension_is_called_out() {
    let s = setup().await;
    let invite = carrier_invite(&s.trunk, MAIN_NUMBER, "late");
    call_alice(&s, &invite).await;
    let out = s
        .trunk
        .expect_request_within("INVITE", CALL_IN_TIMEOUT + Duration::from_secs(5))
        .await;
    assert!(
        out.starts_with(&format!("INVITE sip:{EXTENSION}@")),
        "{out}"
    );
    s.trunk.send(&respond_to(&out, 486, "mob", None, "")).await;
    s.trunk.expect_status(486).await;
    let calls = s.edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(awaited(events).is_some(), "{events:?}");
    assert_eq!(leg_paths(events), vec![Path::AlternateCallOut]);
    assert_eq!(ended(events), Some((EndCause::Busy, Side::Callee)));

    // A late call-in reaches no call: it is an ordinary call to the access number (the
    // keypad menu, refused to an extension without a PIN).
    s.trunk.send(&call_in_invite(&s, "too-late")).await;
    let late = s.trunk.expect_status(403).await;
    assert_eq!(header(&late, "Call-ID"), "too-late@carrier");
    assert_eq!(s.edge.calls().await.len(), 1);
    s.edge.shutdown().await;
}

/// The caller gives up while the call-in is awaited: 487, ended by the caller, and the
/// extension's call-in that follows reaches no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_while_the_call_in_is_awaited_ends_the_call() {
    let s = setup().await;
    let invite = carrier_invite(&s.trunk, MAIN_NUMBER, "gaveup");
    call_alice(&s, &invite).await;
    s.trunk.send(&cancel_of(&invite)).await;
    s.trunk.expect_status(487).await;
    let calls = s.edge.ended_calls(1).await;
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::CallerCancelled, Side::Caller))
    );
    assert!(leg_paths(&calls[0]).is_empty(), "{:?}", calls[0]);

    s.trunk.send(&call_in_invite(&s, "after-cancel")).await;
    s.trunk.expect_status(403).await;
    assert_eq!(s.edge.calls().await.len(), 1);
    s.edge.shutdown().await;
}

/// The extension is removed while the caller waits for it: the call stops waiting, does not
/// call it out either, and ends, refused, with 480 to the caller; the call-in that follows
/// reaches no call (a removed extension is a stranger at the access number: 403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_removed_mid_setup_is_not_bridged() {
    let s = setup().await;
    let invite = carrier_invite(&s.trunk, MAIN_NUMBER, "removed");
    call_alice(&s, &invite).await;
    s.edge.remove_extension(s.extension_id).await;
    let refused = s.trunk.expect_status(480).await;
    assert_eq!(header(&refused, "Call-ID"), "removed@carrier");
    s.trunk.send(&call_in_invite(&s, "removed-in")).await;
    s.trunk.expect_status(403).await;
    let calls = s.edge.ended_calls(2).await;
    let events = &calls[0];
    assert!(leg_paths(events).is_empty(), "{events:?}");
    assert_eq!(ended(events), Some((EndCause::Rejected, Side::System)));
    assert_eq!(calls.len(), 2, "the stranger's attempt is on record too");
    assert!(s.edge.rated_legs().await.is_empty());
    s.edge.shutdown().await;
}

/// With a call-in webhook (a push gateway for the user's app) a call-in is offered even with
/// no device registered: the notice is POSTed, and the extension's call-in is bridged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_tells_the_app_to_call_in_when_no_device_is_registered() {
    let (url, gateway) = one_post("/push").await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let carrier = signaling::trunk::Trunk {
        name: "carrier".into(),
        address: addr,
        networks: vec![],
        numbers: vec!["+".into()],
    };
    let media = Some(relay_settings(Duration::from_secs(60)));
    let edge = SipEdge::spawn_notifying(
        Backend::sqlite().await,
        vec![Algorithm::Md5],
        vec![carrier],
        media,
        Some(url),
    )
    .await;
    let trunk = UdpPeer {
        socket,
        addr,
        edge: edge.udp,
    };
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.set_alternate_path(extension_id, AlternateMode::CallIn)
        .await;
    edge.add_access_number(ACCESS, None).await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "pushed");
    trunk.send(&invite).await;
    trunk.expect_status(180).await;
    let body = tokio::time::timeout(Duration::from_secs(10), gateway)
        .await
        .expect("the webhook was called")
        .unwrap();
    let notice: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(notice["access_number"], ACCESS);
    assert_eq!(notice["extension"], EXTENSION);
    assert_eq!(notice["extension_id"], extension_id.to_string());
    assert_eq!(notice["token"].as_str().map(str::len), Some(8));
    let call_in = carrier_invite_from(&trunk, EXTENSION, ACCESS, "pushed-in");
    trunk.send(&call_in).await;
    let mut answers = [
        trunk.expect_status(200).await,
        trunk.expect_status(200).await,
    ];
    answers.sort_by_key(|a| header(a, "Call-ID") != "pushed-in@carrier");
    let [ok_in, ok_caller] = &answers;
    trunk
        .send(&in_dialog(&trunk, &call_in, ok_in, "ACK", 1))
        .await;
    trunk
        .send(&in_dialog(&trunk, &invite, ok_caller, "ACK", 1))
        .await;
    // The extension hangs up this time: the edge hangs up the caller.
    let bye = in_dialog(&trunk, &call_in, ok_in, "BYE", 2);
    trunk.send(&bye).await;
    let to_caller = trunk.expect_request("BYE").await;
    assert_eq!(header(&to_caller, "Call-ID"), "pushed@carrier");
    trunk
        .send(&respond_to(&to_caller, 200, "x", None, ""))
        .await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(leg_paths(&calls[0]), vec![Path::CallIn]);
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Callee))
    );
    edge.shutdown().await;
}

/// A call-in offering no codec the caller offered (G.722 only, against the caller's PCMU)
/// cannot be bridged by a relay that passes packets unchanged: 488, and the extension is
/// called out instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_with_no_codec_in_common_is_refused_and_the_extension_called_out() {
    let s = setup().await;
    let invite = carrier_invite(&s.trunk, MAIN_NUMBER, "codecs");
    call_alice(&s, &invite).await;
    let call_in = call_in_invite(&s, "g722-in").replace("RTP/AVP 0", "RTP/AVP 9");
    s.trunk.send(&call_in).await;
    let refused = s.trunk.expect_status(488).await;
    assert_eq!(header(&refused, "Call-ID"), "g722-in@carrier");
    let out = s.trunk.expect_request("INVITE").await;
    assert!(
        out.starts_with(&format!("INVITE sip:{EXTENSION}@")),
        "{out}"
    );
    s.trunk.send(&respond_to(&out, 486, "mob", None, "")).await;
    s.trunk.expect_status(486).await;
    let calls = s.edge.ended_calls(1).await;
    assert_eq!(leg_paths(&calls[0]), vec![Path::AlternateCallOut]);
    assert_eq!(ended(&calls[0]), Some((EndCause::Busy, Side::Callee)));
    s.edge.shutdown().await;
}

/// The token the MESSAGE told the phone to key (`Ringledger-Call-In: ...;token=...`), after
/// checking the notice asks for it by keypad.
fn keyed_token(message: &str) -> String {
    let notice = header(message, "Ringledger-Call-In");
    assert!(notice.contains("proof=keypad"), "{message}");
    assert!(message.contains("at the tone"), "{message}");
    notice
        .split(';')
        .find_map(|p| p.strip_prefix("token="))
        .expect("a token")
        .to_string()
}

/// A token that is not `token` (its last digit changed).
fn wrong(token: &str) -> String {
    let last = token.as_bytes()[token.len() - 1];
    let other = if last == b'9' {
        '0'
    } else {
        (last + 1) as char
    };
    format!("{}{other}", &token[..token.len() - 1])
}

/// The next final response from the edge to `method` in the dialog `call_id`, passing over
/// anything else (up to 10 s).
async fn final_answer(peer: &UdpPeer, call_id: &str, method: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = peer
            .recv(deadline.saturating_duration_since(std::time::Instant::now()))
            .await
            .unwrap_or_else(|| panic!("no final answer to {method} {call_id}"));
        if m.starts_with("SIP/2.0 ")
            && status(&m) >= 200
            && header(&m, "Call-ID") == call_id
            && header(&m, "CSeq").ends_with(method)
        {
            return m;
        }
    }
}

/// Keys `digits` by SIP INFO (application/dtmf-relay) inside the call-in's dialog, from CSeq
/// `cseq` on, each answered 200 before the next.
async fn key_by_info(peer: &UdpPeer, invite: &str, ok: &str, digits: &str, cseq: &mut u32) {
    for digit in digits.chars() {
        let body = format!("Signal={digit}\r\nDuration=160\r\n");
        let info = in_dialog(peer, invite, ok, "INFO", *cseq).replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        peer.send(&info).await;
        let answer = final_answer(peer, header(invite, "Call-ID"), "INFO").await;
        assert_eq!(status(&answer), 200, "{answer}");
        *cseq += 1;
    }
}

/// By default the carrier's caller ID proves nothing (it is easily spoofed): the call-in is
/// awaited and the phone told, but the edge answers the call from the extension's number
/// alone and waits for the token. Keyed wrong three times (as anyone spoofing the number
/// would), the edge hangs it up, nothing is answered or billed for it, and the extension is
/// called out instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_call_in_keys_its_token_and_a_spoofed_one_takes_nothing() {
    let s = setup_holding(signaling::SecuritySettings::default()).await;
    let invite = carrier_invite(&s.trunk, MAIN_NUMBER, "untrusted");
    let message = call_alice(&s, &invite).await;
    let token = keyed_token(&message);

    let spoof = carrier_invite_from(&s.trunk, EXTENSION, ACCESS, "spoof");
    s.trunk.send(&spoof).await;
    let ok = final_answer(&s.trunk, "spoof@carrier", "INVITE").await;
    assert_eq!(status(&ok), 200, "answered alone, to key the token: {ok}");
    s.trunk
        .send(&in_dialog(&s.trunk, &spoof, &ok, "ACK", 1))
        .await;
    let mut cseq = 2;
    for _ in 0..3 {
        key_by_info(&s.trunk, &spoof, &ok, &wrong(&token), &mut cseq).await;
    }
    let bye = s.trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), "spoof@carrier");
    s.trunk.send(&respond_to(&bye, 200, "x", None, "")).await;
    // The extension is called out; the caller still rings (it never heard 200).
    let out = s.trunk.expect_request("INVITE").await;
    assert!(
        out.starts_with(&format!("INVITE sip:{EXTENSION}@")),
        "{out}"
    );
    s.trunk
        .send(&respond_to(&out, 486, "mob", Some(s.trunk.addr), ""))
        .await;
    let refused = final_answer(&s.trunk, "untrusted@carrier", "INVITE").await;
    assert_eq!(status(&refused), 486, "{refused}");

    let calls = s.edge.ended_calls(1).await;
    let events = &calls[0];
    assert_eq!(awaited(events), Some((ACCESS.into(), EXTENSION.into())));
    assert_eq!(
        leg_paths(events),
        vec![Path::CallIn, Path::AlternateCallOut],
        "{events:?}"
    );
    assert!(
        leg_failures(events).contains(&(403, LegFailure::TokenRefused)),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, CallEvent::LegAnswered { .. } | CallEvent::Bridged { .. })),
        "{events:?}"
    );
    assert_eq!(ended(events), Some((EndCause::Busy, Side::Callee)));
    assert!(s.edge.rated_legs().await.is_empty(), "nothing billed");
    s.edge.shutdown().await;
}

/// The whole keypad flow with a real phone: alice's mobile (pjsua2, behind the carrier on
/// 127.0.0.2) calls the access number it was told and keys the token as RFC 4733
/// telephone-events; the edge bridges it to the caller, audio flows, and the call-in leg is
/// billed to alice's main account on the call-in path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_keys_its_token_by_rfc4733_and_is_bridged_to_the_caller() {
    let edge =
        edge_with_carrier_network_secured(None, signaling::SecuritySettings::default()).await;
    let (extension_id, phone) = set_to_call_in(&edge).await;
    let carrier = UdpPeer::on(CARRIER_IP, edge.udp).await;
    let (caller_media, caller_port) = media_socket().await;
    let invite = carrier_invite(&carrier, MAIN_NUMBER, "rfc4733")
        .replace("m=audio 40000", &format!("m=audio {caller_port}"));
    carrier.send(&invite).await;
    carrier.expect_status(180).await;
    let message = phone.expect_request("MESSAGE").await;
    phone.send(&respond_to(&message, 200, "ph", None, "")).await;
    let token = keyed_token(&message);

    let uri = format!("sip:{ACCESS}@{}", edge.udp);
    let steps = vec![format!("rfc4733:{token}"), "wait:3".into(), "hangup".into()];
    let mobile = tokio::spawn(ringledger_tests::pjsua2::mobile(
        EXTENSION.into(),
        uri,
        steps,
    ));

    let ok = final_answer(&carrier, "rfc4733@carrier", "INVITE").await;
    assert_eq!(status(&ok), 200, "{ok}");
    carrier
        .send(&in_dialog(&carrier, &invite, &ok, "ACK", 1))
        .await;
    // The mobile's audio reaches the caller through the relay.
    let mut buf = [0u8; 2048];
    let got = tokio::time::timeout(Duration::from_secs(5), caller_media.recv_from(&mut buf)).await;
    assert!(got.is_ok(), "no audio from the mobile reached the caller");
    // The mobile hangs up: the edge hangs up the caller.
    let bye = carrier
        .expect_request_within("BYE", Duration::from_secs(15))
        .await;
    assert_eq!(header(&bye, "Call-ID"), "rfc4733@carrier");
    carrier.send(&respond_to(&bye, 200, "x", None, "")).await;
    let (ok, text) = mobile.await.expect("the mobile ran");
    assert!(ok, "the mobile's call did not go through:\n{text}");

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert_eq!(leg_paths(events), vec![Path::CallIn], "{events:?}");
    assert!(leg_failures(events).is_empty(), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Bridged { .. }))
    );
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Callee))
    );
    assert_call_in_billed(&edge, extension_id).await;
    edge.shutdown().await;
}
