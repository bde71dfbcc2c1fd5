//! Topology hiding over real sockets: what one side of a call learns of the other through the
//! edge. Each side's messages carry markers (user parts, software names, its session's origin,
//! RTCP address, SSRC cname, ICE candidates and credentials); none of them may reach the other
//! side, in the INVITE, the answers or a change of session passed on.

use std::time::Duration;

use ringledger_tests::carrier::{edge_with_trunk_and_media, in_dialog};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{MAIN_NUMBER, UdpPeer, header, relay_settings};

const EXTENSION: &str = "+447700900123";

fn session(user: &str, version: u32) -> String {
    format!(
        "v=0\r\no={user}-origin 777{version} {version} IN IP4 127.0.0.1\r\ns={user}-softphone\r\n\
         i={user}-info\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:{user}-tool\r\n\
         m=audio 4{version}000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtcp:4{version}001 IN IP4 127.0.0.1\r\na=ssrc:42 cname:{user}-cname\r\n\
         a=candidate:1 1 UDP 2130706431 127.0.0.1 4{version}000 typ host\r\n\
         a=ice-ufrag:{user}-ufrag\r\na=sendrecv\r\n"
    )
}

/// The markers of one side: none may appear in what the other side receives.
fn markers(user: &str) -> Vec<String> {
    [
        "-origin",
        "-softphone",
        "-info",
        "-tool",
        "-cname",
        "-ufrag",
        "-agent",
        "-contact",
        "-route",
    ]
    .iter()
    .map(|m| format!("{user}{m}"))
    .chain(["candidate".into(), "a=rtcp".into(), "a=ssrc".into()])
    .collect()
}

fn assert_clean(message: &str, of: &str) {
    for marker in markers(of) {
        assert!(
            !message.contains(&marker),
            "{marker} of the {of} side reached the other:\n{message}"
        );
    }
}

/// A response from the side playing `user`, with its own headers and session.
fn answer(request: &str, status: u16, user: &str, trunk: &UdpPeer, version: u32) -> String {
    let body = session(user, version);
    let mut out = format!("SIP/2.0 {status} OK\r\n");
    for via in request.lines().filter(|l| l.starts_with("Via:")) {
        out.push_str(via);
        out.push_str("\r\n");
    }
    let to = header(request, "To");
    let to = if to.contains(";tag=") {
        to.to_string()
    } else {
        format!("{to};tag={user}-tag")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         Contact: <sip:{user}-contact@{}>\r\nServer: {user}-agent/1.0\r\n\
         Record-Route: <sip:{user}-route@127.0.0.1;lr>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        header(request, "From"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
        trunk.addr,
        body.len(),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_one_side_reaches_the_other() {
    let media = Some(relay_settings(Duration::from_secs(60)));
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, media).await;
    edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let body = session("caller", 1);
    let invite = format!(
        "INVITE sip:{MAIN_NUMBER}@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKtopo\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+441632960001@{me}>;tag=caller-tag\r\n\
         To: <sip:{MAIN_NUMBER}@{edge}>\r\nCall-ID: caller-callid@carrier\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:caller-contact@{me}>\r\nUser-Agent: caller-agent/9.1\r\n\
         Record-Route: <sip:caller-route@127.0.0.1;lr>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        me = trunk.addr,
        edge = trunk.edge,
    );
    trunk.send(&invite).await;
    let leg = trunk.expect_request("INVITE").await;
    assert_clean(&leg, "caller");
    assert!(!leg.contains("caller-callid"), "a Call-ID per leg: {leg}");
    trunk.send(&answer(&leg, 180, "callee", &trunk, 1)).await;
    let ringing = trunk.expect_status(180).await;
    assert_clean(&ringing, "callee");
    trunk.send(&answer(&leg, 200, "callee", &trunk, 1)).await;
    trunk.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    assert_clean(&ok, "callee");
    assert!(header(&ok, "Contact").contains("ringledger@"), "{ok}");
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;

    // A change of session passed on: the callee sees none of the caller in it, nor the caller
    // of the callee in the answer.
    let changed = session("caller", 2).replace("a=sendrecv", "a=sendonly");
    let reinvite = in_dialog(&trunk, &invite, &ok, "INVITE", 2).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "User-Agent: caller-agent/9.1\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{changed}",
            changed.len()
        ),
    );
    trunk.send(&reinvite).await;
    let passed = trunk.expect_request("INVITE").await;
    assert_clean(&passed, "caller");
    trunk.send(&answer(&passed, 200, "callee", &trunk, 2)).await;
    trunk.expect_request("ACK").await;
    let changed_ok = trunk.expect_status(200).await;
    assert_clean(&changed_ok, "callee");
    edge.shutdown().await;
}
