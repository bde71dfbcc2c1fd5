//! The SIP edge's registrar and message handling over real UDP and TCP sockets, on SQLite and
//! PostgreSQL: digest authentication, bindings recorded before the 200, retransmissions
//! absorbed, and bad input answered or dropped while the edge keeps serving.

use std::time::Duration;

use domain::device::{DeviceEvent, Transport, UnbindReason};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{
    REALM, SipEdge, UdpPeer, authorization, credentials, header_values, register, status,
};
use signaling::digest::{Algorithm, Nonces};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOTH: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

async fn challenge_of(peer: &UdpPeer, branch: &str, cseq: u32) -> Vec<String> {
    let r = peer.exchange(&register(peer, branch, cseq, "")).await;
    assert_eq!(status(&r), 401, "{r}");
    header_values(&r, "WWW-Authenticate")
        .into_iter()
        .map(str::to_string)
        .collect()
}

async fn register_with_both_algorithms(backend: Backend) {
    let edge = SipEdge::spawn(backend, BOTH.to_vec()).await;
    let peer = UdpPeer::new(edge.udp).await;
    let challenges = challenge_of(&peer, "a1", 1).await;
    assert_eq!(challenges.len(), 2, "one challenge per algorithm");
    assert!(
        challenges[0].contains("algorithm=SHA-256"),
        "{challenges:?}"
    );
    assert!(challenges[1].contains("algorithm=MD5"), "{challenges:?}");
    assert!(challenges[0].contains(&format!("realm=\"{REALM}\"")));
    assert!(challenges[0].contains("qop=\"auth\""));

    let uri = format!("sip:{REALM}");
    let auth = authorization(
        &challenges[0],
        Algorithm::Sha256,
        ringledger_tests::sip_edge::PASSWORD,
        1,
        &uri,
    );
    let ok = peer.exchange(&register(&peer, "a2", 2, &auth)).await;
    assert_eq!(status(&ok), 200, "{ok}");
    // The 200 lists the binding with its expiry, and the event was durable before it.
    let contacts = header_values(&ok, "Contact");
    assert_eq!(contacts.len(), 1, "{ok}");
    assert!(
        contacts[0].starts_with(&format!("<sip:alice@{}>;expires=", peer.addr)),
        "{ok}"
    );
    let events = edge.device_events().await;
    match events.last().unwrap() {
        DeviceEvent::ContactBound {
            contact_uri,
            source,
            transport,
            user_agent,
            ..
        } => {
            assert_eq!(contact_uri, &format!("sip:alice@{}", peer.addr));
            assert_eq!(source, &peer.addr.to_string(), "the real source address");
            assert_eq!(*transport, Transport::Udp);
            assert_eq!(user_agent.as_deref(), Some("ringledger-tests"));
        }
        other => panic!("{other:?}"),
    }

    // MD5 works on the same nonce with its own count; a refresh is recorded as such.
    let auth = authorization(
        &challenges[1],
        Algorithm::Md5,
        ringledger_tests::sip_edge::PASSWORD,
        2,
        &uri,
    );
    let ok = peer.exchange(&register(&peer, "a3", 3, &auth)).await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(matches!(
        edge.device_events().await.last().unwrap(),
        DeviceEvent::ContactRefreshed { .. }
    ));
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_sha256_and_md5_on_sqlite() {
    register_with_both_algorithms(Backend::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_sha256_and_md5_on_postgres() {
    register_with_both_algorithms(Backend::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_replayed_count_stale_and_foreign_nonces_write_nothing() {
    let edge = SipEdge::spawn(Backend::sqlite().await, BOTH.to_vec()).await;
    let peer = UdpPeer::new(edge.udp).await;
    let uri = format!("sip:{REALM}");
    let before = edge.device_events().await.len();

    let c = challenge_of(&peer, "b1", 1).await;
    let bad = authorization(&c[0], Algorithm::Sha256, "wrong password!", 1, &uri);
    let r = peer.exchange(&register(&peer, "b2", 2, &bad)).await;
    assert_eq!(status(&r), 403, "{r}");

    let c = challenge_of(&peer, "b3", 3).await;
    let good = authorization(
        &c[0],
        Algorithm::Sha256,
        ringledger_tests::sip_edge::PASSWORD,
        1,
        &uri,
    );
    assert_eq!(
        status(&peer.exchange(&register(&peer, "b4", 4, &good)).await),
        200
    );
    let after_ok = edge.device_events().await.len();
    assert_eq!(after_ok, before + 1);
    // The same response again (a captured REGISTER replayed in a new transaction).
    let r = peer.exchange(&register(&peer, "b5", 5, &good)).await;
    assert_eq!(status(&r), 401, "a reused nonce count is refused: {r}");

    // A nonce of ours that has outlived its lifetime: stale=true, so the phone retries quietly.
    let old = Nonces::new(b"test secret".to_vec(), 300)
        .issue(chrono::Utc::now().timestamp() as u64 - 400, peer.addr.ip());
    let stale_challenge = format!("Digest nonce=\"{old}\"");
    let auth = authorization(
        &stale_challenge,
        Algorithm::Md5,
        ringledger_tests::sip_edge::PASSWORD,
        1,
        &uri,
    );
    let r = peer.exchange(&register(&peer, "b6", 6, &auth)).await;
    assert_eq!(status(&r), 401, "{r}");
    assert!(
        header_values(&r, "WWW-Authenticate")
            .iter()
            .all(|c| c.contains("stale=true")),
        "{r}"
    );

    // A nonce some other secret signed.
    let foreign = Nonces::new(b"another edge".to_vec(), 300)
        .issue(chrono::Utc::now().timestamp() as u64, peer.addr.ip());
    let auth = authorization(
        &format!("nonce=\"{foreign}\""),
        Algorithm::Md5,
        ringledger_tests::sip_edge::PASSWORD,
        1,
        &uri,
    );
    let r = peer.exchange(&register(&peer, "b7", 7, &auth)).await;
    assert_eq!(status(&r), 401, "{r}");
    assert!(!r.contains("stale=true"), "{r}");

    assert_eq!(
        edge.device_events().await.len(),
        after_ok,
        "no event for any refusal"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_rules_retransmissions_and_unregistering() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let peer = UdpPeer::new(edge.udp).await;
    let uri = format!("sip:{REALM}");
    let pw = ringledger_tests::sip_edge::PASSWORD;
    let before = edge.device_events().await.len();

    // Too short an expiry: 423 with Min-Expires, nothing written.
    let c = challenge_of(&peer, "c1", 1).await;
    let auth = authorization(&c[0], Algorithm::Md5, pw, 1, &uri);
    let r = peer
        .exchange(&register(&peer, "c2", 2, &format!("Expires: 30\r\n{auth}")))
        .await;
    assert_eq!(status(&r), 423, "{r}");
    assert_eq!(header_values(&r, "Min-Expires"), vec!["60"]);
    assert_eq!(edge.device_events().await.len(), before);

    // A REGISTER sent three times in one transaction (UDP retransmissions): one answer each,
    // one event in all (invariant 7).
    let auth = authorization(&c[0], Algorithm::Md5, pw, 2, &uri);
    let msg = register(&peer, "c3", 3, &format!("Expires: 120\r\n{auth}"));
    for _ in 0..3 {
        peer.send(&msg).await;
    }
    let mut answers = vec![];
    while let Some(r) = peer.recv(Duration::from_millis(500)).await {
        answers.push(r);
    }
    assert!(!answers.is_empty());
    assert!(answers.iter().all(|r| status(r) == 200), "{answers:?}");
    // Over UDP the answered transaction is kept (Timer J, 32 s) to answer retransmissions.
    assert!(edge.edge.open_transactions() >= 1);
    let events = edge.device_events().await;
    assert_eq!(events.len(), before + 1, "{events:?}");
    match events.last().unwrap() {
        DeviceEvent::ContactBound { expires_at, .. } => {
            let left = (*expires_at - chrono::Utc::now()).num_seconds();
            assert!((100..=120).contains(&left), "{left}");
        }
        other => panic!("{other:?}"),
    }

    // Expires: 0 for that contact unbinds it...
    let auth = authorization(&c[0], Algorithm::Md5, pw, 3, &uri);
    let r = peer
        .exchange(&register(&peer, "c4", 4, &format!("Expires: 0\r\n{auth}")))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        header_values(&r, "Contact").is_empty(),
        "no bindings left: {r}"
    );
    assert!(matches!(
        edge.device_events().await.last().unwrap(),
        DeviceEvent::ContactUnbound {
            reason: UnbindReason::Unregistered,
            ..
        }
    ));
    // ...and `Contact: *` needs Expires: 0.
    let auth = authorization(&c[0], Algorithm::Md5, pw, 4, &uri);
    let star = register(&peer, "c5", 5, &auth)
        .replace(&format!("Contact: <sip:alice@{}>", peer.addr), "Contact: *");
    let r = peer.exchange(&star).await;
    assert_eq!(status(&r), 400, "{r}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_over_tcp_with_compact_folded_headers_and_two_messages_in_one_write() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let mut tcp = tokio::net::TcpStream::connect(edge.tcp).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let compact = |branch: &str, cseq: u32, extra: &str| {
        format!(
            "REGISTER sip:{REALM} SIP/2.0\r\n\
             v: SIP/2.0/TCP {me};branch=z9hG4bK{branch}\r\n\
             f: <sip:alice@{REALM}>;tag=x{branch}\r\n\
             t : <sip:alice@{REALM}>\r\n\
             i: tcp-{branch}\r\n\
             CSeq: {cseq}\r\n  REGISTER\r\n\
             m: <sip:alice@{me};transport=tcp>\r\n\
             {extra}l: 0\r\n\r\n"
        )
    };
    // Two requests in one write: an OPTIONS and the first REGISTER.
    let options = format!(
        "OPTIONS sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKo1\r\n\
         From: <sip:alice@{REALM}>;tag=o\r\nTo: <sip:{REALM}>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(format!("{options}{}", compact("t1", 1, "")).as_bytes())
        .await
        .unwrap();
    let replies = read_responses(&mut tcp, 2).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| status(r)).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 401], "{replies:?}");
    let challenge = replies.iter().find(|r| status(r) == 401).unwrap();
    let c = header_values(challenge, "WWW-Authenticate")[0].to_string();
    let auth = authorization(
        &c,
        Algorithm::Md5,
        ringledger_tests::sip_edge::PASSWORD,
        1,
        &format!("sip:{REALM}"),
    );
    tcp.write_all(compact("t2", 2, &auth).as_bytes())
        .await
        .unwrap();
    let ok = read_responses(&mut tcp, 1).await.remove(0);
    assert_eq!(status(&ok), 200, "{ok}");
    match edge.device_events().await.last().unwrap() {
        DeviceEvent::ContactBound {
            transport, source, ..
        } => {
            assert_eq!(*transport, Transport::Tcp);
            assert_eq!(source, &me.to_string());
        }
        other => panic!("{other:?}"),
    }
    // A double-CRLF keep-alive gets its single CRLF pong.
    tcp.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    // Over TCP nothing is retransmitted, so answered transactions end at once (Timer J = 0)
    // instead of being kept 32 s as over UDP.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while edge.edge.open_transactions() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "TCP transactions were kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edge.shutdown().await;
}

/// Reads `n` whole responses framed by Content-Length.
async fn read_responses(tcp: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        if let signaling::transport::tcp::Frame::Message(len) =
            signaling::transport::tcp::frame(&buf, &mut Default::default())
        {
            out.push(String::from_utf8(buf.drain(..len).collect()).unwrap());
            continue;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(read > 0, "the edge closed the connection");
        buf.extend_from_slice(&chunk[..read]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_400_or_are_dropped_and_the_edge_keeps_serving() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let peer = UdpPeer::new(edge.udp).await;
    let me = peer.addr;
    let options = |branch: &str, extra: &str| {
        format!(
            "OPTIONS sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
             From: <sip:probe@{REALM}>;tag=p\r\nTo: <sip:{REALM}>\r\nCall-ID: m-{branch}\r\n\
             CSeq: 7 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    // Unusual but valid: accepted.
    let valid = [
        // Header names in any case, LWS before the colon, a folded Via, bare LF line ends.
        options("v1", "").replace("Call-ID:", "call-id   :"),
        options("v2", "").replace(";branch=", "\r\n ;branch="),
        options("v3", "").replace("\r\n", "\n"),
        // Compact names and a tel: URI in To.
        options("v4", "")
            .replace("Call-ID:", "i:")
            .replace("To: <sip:ringledger.test>", "t: <tel:+442071838750>"),
        // Unknown headers and a Via with whitespace around its slashes.
        options("v5", "X-Anything: \"quoted, with comma\"\r\n")
            .replace("SIP/2.0/UDP", "SIP / 2.0 / UDP"),
    ];
    for msg in &valid {
        let r = peer.exchange(msg).await;
        assert_eq!(status(&r), 200, "refused a valid message:\n{msg}\n->\n{r}");
    }
    // Broken but answerable: 400 naming the fault, or 501 for an unknown method.
    let refused = [
        (
            options("x1", "").replace("Call-ID: m-x1\r\n", ""),
            400,
            "Missing Call-ID",
        ),
        (
            options("x2", "").replace("CSeq: 7 OPTIONS", "CSeq: seven OPTIONS"),
            400,
            "Bad CSeq",
        ),
        (
            options("x3", "").replace("CSeq: 7 OPTIONS", "CSeq: 7 INVITE"),
            400,
            "Bad CSeq",
        ),
        (
            options("x4", "").replace("Content-Length: 0", "Content-Length: 50"),
            400,
            "Bad Request",
        ),
        (
            options("x5", "")
                .replace("OPTIONS sip:", "BREW sip:")
                .replace("7 OPTIONS", "7 BREW"),
            501,
            "Not Implemented",
        ),
        (
            options("x6", "").replace("From: <sip:probe@ringledger.test>;tag=p\r\n", ""),
            400,
            "Missing From",
        ),
    ];
    for (msg, code, words) in &refused {
        let r = peer.exchange(msg).await;
        assert_eq!(status(r.as_str()), *code, "{msg}\n->\n{r}");
        assert!(r.lines().next().unwrap().contains(words), "{r}");
    }
    // Unanswerable: dropped, no reply.
    let dropped: [&[u8]; 4] = [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"hello world",
        b"OPTIONS sip:x SIP/2.0\r\nFrom: <sip:a@b>\r\n\r\n",
        b"\r\n\r\n",
    ];
    for msg in dropped {
        peer.socket.send_to(msg, edge.udp).await.unwrap();
    }
    assert_eq!(peer.recv(Duration::from_millis(300)).await, None);
    // An INVITE gets a clean final answer (a proxy challenge: the peer is no trunk) and its
    // ACK is absorbed by the transaction.
    let invite = options("i1", "")
        .replace("OPTIONS sip:", "INVITE sip:")
        .replace("7 OPTIONS", "7 INVITE");
    let r = peer.exchange(&invite).await;
    assert_eq!(status(&r), 407, "{r}");
    let ack = invite
        .replace("INVITE sip:", "ACK sip:")
        .replace("7 INVITE", "7 ACK");
    peer.send(&ack).await;
    assert_eq!(
        peer.recv(Duration::from_millis(700)).await,
        None,
        "no retransmission after the ACK"
    );
    // A CANCEL finds that INVITE's transaction (200, nothing left to cancel); one for an
    // INVITE the edge never saw gets 481.
    let cancel = invite
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("7 INVITE", "7 CANCEL");
    assert_eq!(status(&peer.exchange(&cancel).await), 200);
    let stray = cancel.replace("z9hG4bKi1", "z9hG4bKi9");
    assert_eq!(status(&peer.exchange(&stray).await), 481);
    // The UAS core refuses what it cannot honour before any handler: an extension it is
    // required to support (reliable provisionals: 420 naming it) and an INVITE out of hops.
    // Each failure is ACKed, as a phone would, so the edge stops retransmitting it.
    let as_invite = |m: String| {
        m.replace("OPTIONS sip:", "INVITE sip:")
            .replace("7 OPTIONS", "7 INVITE")
    };
    let ack_of = |m: &str| {
        m.replace("INVITE sip:", "ACK sip:")
            .replace("7 INVITE", "7 ACK")
    };
    let rel = as_invite(options("r1", "Require: 100rel\r\n"));
    let r = peer.exchange(&rel).await;
    assert_eq!(status(&r), 420, "{r}");
    assert_eq!(header_values(&r, "Unsupported"), vec!["100rel"], "{r}");
    peer.send(&ack_of(&rel)).await;
    let hops = as_invite(options("r2", "Max-Forwards: 0\r\n"));
    let r = peer.exchange(&hops).await;
    assert_eq!(status(&r), 483, "{r}");
    peer.send(&ack_of(&hops)).await;
    // Still serving.
    assert_eq!(status(&peer.exchange(&options("z1", "")).await), 200);
    assert!(
        edge.edge
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    edge.shutdown().await;
}

/// Sends an INVITE, returns the final answer, and ACKs it as a phone does (so the edge stops
/// retransmitting a failure).
async fn answered(peer: &UdpPeer, invite: &str) -> String {
    let r = peer.exchange(invite).await;
    let ack = invite
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    peer.send(&ack).await;
    r
}

/// An INVITE from `peer` to `target` (a request-URI user), with `extra` headers.
fn invite(peer: &UdpPeer, target: &str, branch: &str, extra: &str) -> String {
    let me = peer.addr;
    format!(
        "INVITE sip:{target}@{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
         From: <sip:caller@{me}>;tag=c{branch}\r\nTo: <sip:{target}@{REALM}>\r\n\
         Call-ID: inv-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\n\
         Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_from_trunks_and_devices_are_told_apart() {
    // The trunk is 127.0.0.2; the tests' device peers are on 127.0.0.1.
    let carrier = signaling::trunk::Trunk {
        name: "carrier".into(),
        address: "127.0.0.2:5060".parse().unwrap(),
        networks: vec!["127.0.0.2/32".parse().unwrap()],
        numbers: vec!["+4420".into()],
    };
    let edge =
        SipEdge::spawn_with_trunks(Backend::sqlite().await, vec![Algorithm::Md5], vec![carrier])
            .await;
    let before = edge.device_events().await.len();

    let trunk = {
        let socket = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        UdpPeer {
            socket,
            addr,
            edge: edge.udp,
        }
    };
    // The carrier delivers our main number (digits without '+', as many do): a call, which
    // with no device registered ends at once with 480.
    trunk.send(&invite(&trunk, "442071838750", "t1", "")).await;
    let r = trunk.expect_status(480).await;
    assert!(r.contains("no device registered"), "{r}");
    // A number it does not deliver, and one of its numbers nobody holds: 404.
    let r = answered(&trunk, &invite(&trunk, "+33142278186", "t2", "")).await;
    assert_eq!(status(&r), 404, "{r}");
    assert!(r.contains("not a number of this trunk"), "{r}");
    let r = answered(&trunk, &invite(&trunk, "+442000000000", "t3", "")).await;
    assert_eq!(status(&r), 404, "{r}");

    // Anyone else calling a telephone number is challenged (407), refused with credentials
    // that do not hold (403), and let through with alice's: the call goes out to the trunk
    // (nobody answers there; the caller gives up with a CANCEL).
    let device = UdpPeer::new(edge.udp).await;
    let r = answered(&device, &invite(&device, "+33142278186", "d1", "")).await;
    assert_eq!(status(&r), 407, "{r}");
    let challenge = header_values(&r, "Proxy-Authenticate")[0].to_string();
    let uri = format!("sip:+33142278186@{REALM}");
    let bad = invite_with_digest(&challenge, "wrong password!", 1, &uri);
    let r = answered(&device, &invite(&device, "+33142278186", "d2", &bad)).await;
    assert_eq!(status(&r), 403, "{r}");
    let good = invite_with_digest(&challenge, ringledger_tests::sip_edge::PASSWORD, 2, &uri);
    let call = invite(&device, "+33142278186", "d3", &good);
    let r = device.exchange(&call).await;
    assert_eq!(status(&r), 100, "{r}");
    let cancel = call
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    device.send(&cancel).await;
    device.expect_status(200).await;
    device.expect_status(487).await;
    assert_eq!(
        edge.device_events().await.len(),
        before,
        "an INVITE binds nothing"
    );
    edge.shutdown().await;
}

/// `Proxy-Authorization` for an INVITE to `uri`.
fn invite_with_digest(challenge: &str, password: &str, nc: u32, uri: &str) -> String {
    let credentials = credentials(challenge, Algorithm::Md5, password, nc, "INVITE", uri);
    format!("Proxy-Authorization: {credentials}\r\n")
}
