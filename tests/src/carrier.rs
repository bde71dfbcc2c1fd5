//! A carrier and phones for call tests: the trunk is a test peer known by its address alone
//! (it plays the public and the cellular networks), phones are test peers registered with
//! digest auth; helpers to write the requests they send and read what the edge sends them.

use std::net::SocketAddr;
use std::time::Duration;

use domain::call::{CallEvent, EndCause, LegFailure, Side};
use signaling::digest::Algorithm;
use signaling::media::MediaSettings;

use crate::harness::Backend;
use crate::sip_edge::{
    PASSWORD, REALM, SipEdge, UdpPeer, authorization, credentials, header, register,
    relay_settings, status,
};
use crate::sipp::CARRIER_IP;

pub const OFFER: &str = "v=0\r\no=pstn 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
pub const ANSWER: &str = "v=0\r\no=alice 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n";

/// An edge whose trunk is a test peer (known by its address alone).
pub async fn edge_with_trunk(backend: Backend) -> (SipEdge, UdpPeer) {
    edge_with_trunk_and_media(backend, None).await
}

/// A socket on loopback for the carrier, and the trunk that names it (serving every number).
async fn carrier_socket() -> (tokio::net::UdpSocket, signaling::trunk::Trunk) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let trunk = signaling::trunk::Trunk {
        name: "carrier".into(),
        address: socket.local_addr().unwrap(),
        networks: vec![],
        numbers: vec!["+".into()],
    };
    (socket, trunk)
}

/// As `edge_with_trunk`, relaying media with `media`.
pub async fn edge_with_trunk_and_media(
    backend: Backend,
    media: Option<MediaSettings>,
) -> (SipEdge, UdpPeer) {
    let (socket, trunk) = carrier_socket().await;
    let addr = trunk.address;
    let edge = SipEdge::spawn_with(backend, vec![Algorithm::Md5], vec![trunk], media).await;
    let peer = UdpPeer {
        socket,
        addr,
        edge: edge.udp,
    };
    (edge, peer)
}

/// As `edge_with_trunk`, holding `security`'s settings.
pub async fn edge_with_trunk_secured(
    backend: Backend,
    security: signaling::SecuritySettings,
) -> (SipEdge, UdpPeer) {
    edge_with_trunk_and_media_secured(backend, None, security).await
}

/// As `edge_with_trunk_and_media`, holding `security`'s settings.
pub async fn edge_with_trunk_and_media_secured(
    backend: Backend,
    media: Option<MediaSettings>,
    security: signaling::SecuritySettings,
) -> (SipEdge, UdpPeer) {
    let (socket, trunk) = carrier_socket().await;
    let addr = trunk.address;
    let edge = SipEdge::spawn_secured(backend, vec![trunk], media, security).await;
    let peer = UdpPeer {
        socket,
        addr,
        edge: edge.udp,
    };
    (edge, peer)
}

/// alice's REGISTER from `phone` as phones send it: challenged, then sent again with
/// credentials and `extra` headers. The final response.
pub async fn register_from(phone: &UdpPeer, branch: &str, extra: &str) -> String {
    let r = phone
        .exchange(&register(phone, &format!("{branch}a"), 1, ""))
        .await;
    assert_eq!(status(&r), 401, "{r}");
    let auth = authorization(
        header(&r, "WWW-Authenticate"),
        Algorithm::Md5,
        PASSWORD,
        1,
        &format!("sip:{REALM}"),
    );
    phone
        .exchange(&register(
            phone,
            &format!("{branch}b"),
            2,
            &format!("{auth}{extra}"),
        ))
        .await
}

/// A phone of alice's, registered with the edge from its own socket.
pub async fn registered_phone(edge: &SipEdge, name: &str) -> UdpPeer {
    let phone = UdpPeer::new(edge.udp).await;
    let r = register_from(&phone, name, "").await;
    assert_eq!(status(&r), 200, "{r}");
    phone
}

/// Waits until the edge's routing view shows `n` live contacts for alice.
pub async fn wait_for_contacts(edge: &SipEdge, n: usize) {
    for _ in 0..500 {
        let live = edge
            .view
            .read()
            .unwrap()
            .live_contacts(edge.account_id, chrono::Utc::now())
            .len();
        if live >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the edge never saw {n} contacts");
}

/// An INVITE from the carrier to `number`, offering audio.
pub fn carrier_invite(trunk: &UdpPeer, number: &str, call: &str) -> String {
    let me = trunk.addr;
    format!(
        "INVITE sip:{number}@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+441632960001@{me}>;tag=pstn-{call}\r\n\
         To: <sip:{number}@{edge}>\r\nCall-ID: {call}@carrier\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:pstn@{me}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{OFFER}",
        OFFER.len(),
        edge = trunk.edge,
    )
}

/// A request inside the dialog the edge's `ok` (a 2xx to `invite`) set up with `peer`.
pub fn in_dialog(peer: &UdpPeer, invite: &str, ok: &str, method: &str, cseq: u32) -> String {
    let target = header(ok, "Contact")
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{method}{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        me = peer.addr,
        from = header(invite, "From"),
        to = header(ok, "To"),
        call_id = header(invite, "Call-ID"),
    )
}

pub fn leg_failures(events: &[CallEvent]) -> Vec<(u16, LegFailure)> {
    events
        .iter()
        .filter_map(|e| match e {
            CallEvent::LegFailed {
                sip_status,
                failure,
                ..
            } => Some((*sip_status, *failure)),
            _ => None,
        })
        .collect()
}

pub fn ended(events: &[CallEvent]) -> Option<(EndCause, Side)> {
    events.iter().find_map(|e| match e {
        CallEvent::Ended { cause, side, .. } => Some((*cause, *side)),
        _ => None,
    })
}

pub fn audio_of(message: &str) -> (String, u16) {
    let body = message.split("\r\n\r\n").nth(1).unwrap_or_default();
    let address = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_default()
        .to_string();
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (address, port)
}

pub async fn media_socket() -> (tokio::net::UdpSocket, u16) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

pub async fn relayed(
    from: &tokio::net::UdpSocket,
    to_port: u16,
    at: &tokio::net::UdpSocket,
    payload: &[u8],
) -> SocketAddr {
    from.send_to(payload, ("127.0.0.1", to_port)).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, source) = tokio::time::timeout(Duration::from_secs(5), at.recv_from(&mut buf))
        .await
        .expect("the packet is relayed")
        .unwrap();
    assert_eq!(&buf[..n], payload);
    source
}

pub fn carrier_invite_from(trunk: &UdpPeer, from: &str, to: &str, call: &str) -> String {
    carrier_invite(trunk, to, call).replace("+441632960001", from)
}

/// The CANCEL of a carrier's `invite` (same branch, CSeq number, From, To and Call-ID).
pub fn cancel_of(invite: &str) -> String {
    let cancel = invite
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    cancel.split("Content-Type").next().unwrap().to_string() + "Content-Length: 0\r\n\r\n"
}

/// Waits until the edge's routing view holds a data-path report from one of alice's devices
/// (a report is appended after the binding it came with).
pub async fn wait_for_data_path_report(edge: &SipEdge) {
    for _ in 0..500 {
        let reported = edge
            .view
            .read()
            .unwrap()
            .devices_of(edge.account_id)
            .iter()
            .any(|(_, d)| d.data_path.is_some());
        if reported {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the edge never saw the data-path report");
}

/// An edge relaying media whose trunk is whoever calls from 127.0.0.2; its calls out go to
/// `calls_out` (None: nowhere that answers).
pub async fn edge_with_carrier_network(calls_out: Option<SocketAddr>) -> SipEdge {
    edge_with_carrier_network_secured(calls_out, crate::sip_edge::trusting_carriers()).await
}

/// As `edge_with_carrier_network`, holding `security`'s settings.
pub async fn edge_with_carrier_network_secured(
    calls_out: Option<SocketAddr>,
    security: signaling::SecuritySettings,
) -> SipEdge {
    let trunk = signaling::trunk::Trunk {
        name: "carrier".into(),
        address: calls_out.unwrap_or_else(|| format!("{CARRIER_IP}:9").parse().unwrap()),
        networks: vec![format!("{CARRIER_IP}/32").parse().unwrap()],
        numbers: vec!["+".into()],
    };
    let media = Some(relay_settings(Duration::from_secs(60)));
    SipEdge::spawn_secured(Backend::sqlite().await, vec![trunk], media, security).await
}

/// alice's phone calls `dialled` as phones do: an INVITE, the edge's 407 (ACKed), then the
/// INVITE with credentials, which is returned for the caller to send (Call-ID `call`).
pub async fn device_invite(phone: &UdpPeer, dialled: &str, call: &str) -> String {
    let uri = format!("sip:{dialled}@{REALM}");
    let invite = |branch: &str, auth: &str| {
        let me = phone.addr;
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{REALM}>;tag={call}\r\nTo: <{uri}>\r\n\
             Call-ID: {call}@phone\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{me}>\r\n{auth}\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len(),
            cseq = if auth.is_empty() { 1 } else { 2 },
        )
    };
    let r = phone.exchange(&invite(&format!("{call}1"), "")).await;
    assert_eq!(status(&r), 407, "{r}");
    let ack = format!(
        "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{call}1\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@{REALM}>;tag={call}\r\nTo: {}\r\nCall-ID: {call}@phone\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        phone.addr,
        header(&r, "To"),
    );
    phone.send(&ack).await;
    let creds = credentials(
        header(&r, "Proxy-Authenticate"),
        Algorithm::Md5,
        PASSWORD,
        1,
        "INVITE",
        &uri,
    );
    invite(
        &format!("{call}2"),
        &format!("Proxy-Authorization: {creds}\r\n"),
    )
}

/// A session description from `user` at 127.0.0.1:`port` (PCMU), version `version`, in
/// `direction` (`sendrecv`, `sendonly`, …).
pub fn sdp(user: &str, version: u32, port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no={user} 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    )
}

/// `request`, written without a body, carrying `body` as its session description.
pub fn with_body(request: String, body: &str) -> String {
    request.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Nothing reaches `at` within half a second after `from` sends to the relay's `to_port`.
pub async fn not_relayed(from: &tokio::net::UdpSocket, to_port: u16, at: &tokio::net::UdpSocket) {
    from.send_to(b"held", ("127.0.0.1", to_port)).await.unwrap();
    let mut buf = [0u8; 64];
    let heard = tokio::time::timeout(Duration::from_millis(500), at.recv_from(&mut buf)).await;
    assert!(heard.is_err(), "audio reached a held side");
}

/// A request (`method`, CSeq `cseq`, no body) from the party the edge called with `invite`
/// and which answered it with tag `tag`, inside that dialog.
pub fn from_callee(peer: &UdpPeer, invite: &str, tag: &str, method: &str, cseq: u32) -> String {
    format!(
        "{method} sip:ringledger@{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{method}{tag}{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: {to};tag={tag}\r\nTo: {from}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        edge = peer.edge,
        me = peer.addr,
        to = header(invite, "To"),
        from = header(invite, "From"),
        call_id = header(invite, "Call-ID"),
    )
}
