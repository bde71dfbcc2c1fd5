//! The SIP edge against a hostile network, over real sockets on loopback (other hosts are
//! other 127.0.0.0/8 addresses): digest replay and forged URIs place no call, password
//! guessing is blocked, counted and recorded, unknown users look like wrong passwords, the
//! RTP relay cannot be hijacked by spraying its ports, a forged Via cannot aim responses at a
//! third party, stalled TCP connections are bounded, and a REGISTER cannot bind without limit.

use std::time::{Duration, Instant};

use domain::account::AccountEvent;
use domain::call::{CallEvent, EndCause};
use domain::device::{ContactLimit, WhenFull};
use ringledger_tests::carrier::{
    ANSWER, OFFER, audio_of, carrier_invite, carrier_invite_from, edge_with_trunk, ended,
    in_dialog, media_socket, registered_phone, wait_for_contacts,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{
    MAIN_NUMBER, PASSWORD, REALM, SipEdge, USERNAME, UdpPeer, authorization, credentials, header,
    header_values, register, registrar_settings, relay_settings, respond_to, status,
};
use ringledger_tests::sipp::sipp_uas_traced;
use signaling::SecuritySettings;
use signaling::digest::Algorithm;
use signaling::edge::KeptResponses;
use signaling::lockout::LockoutSettings;
use signaling::transport::tcp::TcpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn trunk_at(address: std::net::SocketAddr) -> signaling::trunk::Trunk {
    signaling::trunk::Trunk {
        name: "carrier".into(),
        address,
        networks: vec![],
        numbers: vec!["+".into()],
    }
}

/// An INVITE from `phone` to `dialled` with `auth` (a whole header line, or empty).
fn invite(
    phone: &UdpPeer,
    dialled: &str,
    call: &str,
    branch: &str,
    cseq: u32,
    auth: &str,
) -> String {
    let uri = format!("sip:{dialled}@{REALM}");
    let me = phone.addr;
    format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{USERNAME}@{REALM}>;tag={call}\r\nTo: <{uri}>\r\n\
         Call-ID: {call}@phone\r\nCSeq: {cseq} INVITE\r\nContact: <sip:{USERNAME}@{me}>\r\n{auth}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
        OFFER.len(),
    )
}

/// The edge's 407 for an INVITE without credentials (the ACK for it sent).
async fn proxy_challenge(phone: &UdpPeer, dialled: &str, call: &str) -> String {
    let first = invite(phone, dialled, call, &format!("{call}c"), 1, "");
    let r = phone.exchange(&first).await;
    assert_eq!(status(&r), 407, "{r}");
    let ack = first
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            &format!("To: <sip:{dialled}@{REALM}>"),
            &format!("To: {}", header(&r, "To")),
        );
    phone.send(&ack).await;
    header(&r, "Proxy-Authenticate").to_string()
}

fn nonce_of(challenge: &str) -> &str {
    challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a nonce")
}

/// How many requests of `method` SIPp's message trace shows it received.
fn received_by_sipp(trace: &std::path::Path, method: &str) -> usize {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    text.split("message received")
        .skip(1)
        .filter(|m| {
            m.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('['))
                .is_some_and(|l| l.starts_with(&format!("{method} ")))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_legacy_digest_and_a_digest_for_another_uri_place_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("sipp-messages.log");
    // SIPp's uas is the carrier; it answers the one call that is allowed through.
    let (mut sipp, uas) = sipp_uas_traced("127.0.0.1", 1, &trace).await;
    let edge = SipEdge::spawn_secured(
        Backend::sqlite().await,
        vec![trunk_at(uas)],
        None,
        SecuritySettings::default(),
    )
    .await;
    let phone = UdpPeer::new(edge.udp).await;
    let allowed = "+441632960100";
    let elsewhere = "+881234567890";

    // A legacy (RFC 2069, no qop) response for the allowed destination, as a capture would
    // hold it; the fraudster resends it claiming qop=auth, for another destination.
    let challenge = proxy_challenge(&phone, allowed, "cap").await;
    let nonce = nonce_of(&challenge);
    let ha1 = Algorithm::Md5.hash(&format!("{USERNAME}:{REALM}:{PASSWORD}"));
    let ha2 = Algorithm::Md5.hash(&format!("INVITE:sip:{allowed}@{REALM}"));
    let legacy = Algorithm::Md5.hash(&format!("{ha1}:{nonce}:{ha2}"));
    let legacy_creds = format!(
        "Digest username=\"{USERNAME}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
         uri=\"sip:{allowed}@{REALM}\", response=\"{legacy}\", algorithm=MD5"
    );
    let downgraded = format!("Proxy-Authorization: {legacy_creds}, qop=auth, nc=00000002\r\n");
    for (n, dialled) in [allowed, elsewhere, elsewhere].into_iter().enumerate() {
        let r = phone
            .exchange(&invite(
                &phone,
                dialled,
                &format!("dg{n}"),
                &format!("dg{n}"),
                2,
                &downgraded,
            ))
            .await;
        assert_eq!(
            status(&r),
            400,
            "qop without cnonce is not a qop=auth response: {r}"
        );
    }
    // The legacy form as it was captured is challenged again (qop=auth is required).
    let r = phone
        .exchange(&invite(
            &phone,
            allowed,
            "legacy",
            "legacy",
            2,
            &format!("Proxy-Authorization: {legacy_creds}\r\n"),
        ))
        .await;
    assert_eq!(status(&r), 407, "{r}");

    // A correct qop=auth digest computed for the allowed destination, sent with another
    // Request-URI.
    let challenge = proxy_challenge(&phone, allowed, "uri").await;
    let creds = credentials(
        &challenge,
        Algorithm::Md5,
        PASSWORD,
        1,
        "INVITE",
        &format!("sip:{allowed}@{REALM}"),
    );
    let r = phone
        .exchange(&invite(
            &phone,
            elsewhere,
            "uri",
            "uri2",
            2,
            &format!("Proxy-Authorization: {creds}\r\n"),
        ))
        .await;
    assert_eq!(status(&r), 400, "{r}");
    assert!(r.contains("uri is not the Request-URI"), "{r}");

    // The same credentials with their own Request-URI place the call: the trunk was there.
    let good = invite(
        &phone,
        allowed,
        "good",
        "good2",
        2,
        &format!("Proxy-Authorization: {creds}\r\n"),
    );
    phone.send(&good).await;
    let ok = loop {
        let r = phone
            .recv(Duration::from_secs(10))
            .await
            .expect("an answer");
        if status(&r) >= 200 {
            break r;
        }
    };
    assert_eq!(status(&ok), 200, "{ok}");
    phone.send(&in_dialog(&phone, &good, &ok, "ACK", 2)).await;
    let r = phone
        .exchange(&in_dialog(&phone, &good, &ok, "BYE", 3))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    tokio::time::timeout(Duration::from_secs(15), sipp.wait())
        .await
        .expect("SIPp's uas ends after its one call")
        .unwrap();
    assert_eq!(
        received_by_sipp(&trace, "INVITE"),
        1,
        "only the honest INVITE reached the carrier"
    );
    let calls = edge.calls().await;
    assert_eq!(calls.len(), 1, "no call was even started for the forgeries");
    edge.shutdown().await;
}

fn lockout(per_source: u32, per_username: u32) -> SecuritySettings {
    SecuritySettings {
        lockout: LockoutSettings {
            failures_per_source: per_source,
            failures_per_username: per_username,
            window: Duration::from_secs(60),
            block: Duration::from_secs(120),
            max_tracked: 1000,
        },
        ..SecuritySettings::default()
    }
}

/// A REGISTER for `user` from `peer` with a response computed from `password`.
async fn try_password(peer: &UdpPeer, user: &str, password: &str, n: u32) -> String {
    let r = peer
        .exchange(&register(peer, &format!("g{n}a"), n * 2, ""))
        .await;
    if status(&r) != 401 {
        return r;
    }
    let auth = authorization(
        header(&r, "WWW-Authenticate"),
        Algorithm::Md5,
        password,
        1,
        &format!("sip:{REALM}"),
    )
    .replace(
        &format!("username=\"{USERNAME}\""),
        &format!("username=\"{user}\""),
    );
    let request = register(peer, &format!("g{n}b"), n * 2 + 1, &auth).replace(
        &format!("sip:{USERNAME}@{REALM}>"),
        &format!("sip:{user}@{REALM}>"),
    );
    peer.exchange(&request).await
}

fn metric(edge: &SipEdge, name: &str) -> u64 {
    let mut out = String::new();
    edge.edge.render_metrics(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_blocked_counted_and_recorded_on_the_account() {
    let edge = SipEdge::spawn_secured(Backend::sqlite().await, vec![], None, lockout(5, 8)).await;
    // alice's own phone registers before the attack.
    let own = UdpPeer::on("127.0.0.9", edge.udp).await;
    assert_eq!(
        status(&try_password(&own, USERNAME, PASSWORD, 1).await),
        200
    );

    // A scanner on one address: five wrong passwords, then it is blocked, so even the right
    // password gets 403 from there, with no digest computed.
    let scanner = UdpPeer::on("127.0.0.66", edge.udp).await;
    for n in 0..5 {
        let r = try_password(&scanner, USERNAME, &format!("guess{n}"), 10 + n).await;
        assert_eq!(status(&r), 403, "{r}");
    }
    let r = try_password(&scanner, USERNAME, PASSWORD, 20).await;
    assert_eq!(status(&r), 403, "the source is blocked: {r}");
    let r = scanner
        .exchange(&register(&scanner, "noauth", 99, ""))
        .await;
    assert_eq!(status(&r), 403, "blocked before any challenge: {r}");
    assert_eq!(metric(&edge, "ringledger_sip_auth_failures_total"), 5);
    assert_eq!(metric(&edge, "ringledger_sip_auth_source_blocks_total"), 1);
    assert!(metric(&edge, "ringledger_sip_auth_blocked_requests_total") >= 2);
    // Another address is not affected.
    let other = UdpPeer::on("127.0.0.10", edge.udp).await;
    assert_eq!(
        status(&try_password(&other, USERNAME, PASSWORD, 30).await),
        200
    );

    // A distributed guess at alice's password: each address stays under its own threshold,
    // together they pass the username's.
    for (i, ip) in ["127.0.0.67", "127.0.0.68", "127.0.0.69"]
        .into_iter()
        .enumerate()
    {
        let bot = UdpPeer::on(ip, edge.udp).await;
        for n in 0..2 {
            let r = try_password(&bot, USERNAME, "nope", 40 + (i as u32) * 10 + n).await;
            assert_eq!(status(&r), 403, "{r}");
        }
    }
    assert_eq!(
        metric(&edge, "ringledger_sip_auth_username_blocks_total"),
        1
    );
    // alice is blocked from new addresses, even with her password...
    let fresh = UdpPeer::on("127.0.0.11", edge.udp).await;
    assert_eq!(
        status(&try_password(&fresh, USERNAME, PASSWORD, 90).await),
        403
    );
    // ...but her phones keep registering from where they proved themselves.
    assert_eq!(
        status(&try_password(&own, USERNAME, PASSWORD, 91).await),
        200
    );
    assert_eq!(
        status(&try_password(&other, USERNAME, PASSWORD, 92).await),
        200
    );

    // The auditor sees the attack on the account's stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        let blocked: Vec<AccountEvent> = edge
            .account_events()
            .await
            .into_iter()
            .filter(|e| matches!(e, AccountEvent::SipAuthBlocked { .. }))
            .collect();
        if !blocked.is_empty() || Instant::now() > deadline {
            break blocked;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    match blocked.as_slice() {
        [
            AccountEvent::SipAuthBlocked {
                device_id,
                username,
                block_secs,
                ..
            },
        ] => {
            assert_eq!(*device_id, edge.device_id);
            assert_eq!(username, USERNAME);
            assert_eq!(*block_secs, 120);
        }
        other => panic!("one block recorded: {other:?}"),
    }
    edge.shutdown().await;
}

/// A response with what changes per response (tags, branches, nonces) taken out.
fn shape(response: &str) -> Vec<String> {
    response
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((name, _)) if !l.starts_with("SIP/2.0") => name.to_string(),
            _ => l.to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let edge =
        SipEdge::spawn_secured(Backend::sqlite().await, vec![], None, lockout(1000, 1000)).await;
    let peer = UdpPeer::new(edge.udp).await;
    let wrong = try_password(&peer, USERNAME, "not her password", 1).await;
    let unknown = try_password(&peer, "mallory", "anything", 2).await;
    assert_eq!(status(&wrong), 403, "{wrong}");
    assert_eq!(shape(&wrong), shape(&unknown), "{wrong}\n{unknown}");
    assert_eq!(
        wrong.lines().next(),
        Some("SIP/2.0 403 Forbidden"),
        "{wrong}"
    );
    // The same work: timed over many tries, neither answer is much faster than the other.
    let mut took = [Duration::ZERO; 2];
    for n in 0..40u32 {
        for (i, user) in [USERNAME, "mallory"].into_iter().enumerate() {
            let t = Instant::now();
            let r = try_password(&peer, user, "x", 10 + n * 2 + i as u32).await;
            took[i] += t.elapsed();
            assert_eq!(status(&r), 403);
        }
    }
    let ratio = took[0].as_secs_f64() / took[1].as_secs_f64();
    assert!(
        (0.2..5.0).contains(&ratio),
        "same order of magnitude: {took:?}"
    );
    edge.shutdown().await;
}

/// One packet to every port of the test relay's range but `skip` (the test's own sockets,
/// which may sit in that range too).
async fn spray(outsider: &tokio::net::UdpSocket, skip: &[u16]) {
    for port in (30000..40000u16).filter(|p| !skip.contains(p)) {
        let _ = outsider.send_to(b"hijack", ("127.0.0.1", port)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spraying_the_relay_ports_neither_hears_nor_speaks_into_a_call() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let trunk_addr = socket.local_addr().unwrap();
    let edge = SipEdge::spawn_secured(
        Backend::sqlite().await,
        vec![trunk_at(trunk_addr)],
        Some(relay_settings(Duration::from_secs(60))),
        SecuritySettings::default(),
    )
    .await;
    let trunk = UdpPeer {
        socket,
        addr: trunk_addr,
        edge: edge.udp,
    };
    let phone = registered_phone(&edge, "p1").await;
    wait_for_contacts(&edge, 1).await;
    let (caller_media, caller_port) = media_socket().await;
    let (phone_media, phone_port) = media_socket().await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "sprayed")
        .replace("m=audio 40000", &format!("m=audio {caller_port}"));
    trunk.send(&invite).await;
    let to_phone = phone.expect_request("INVITE").await;
    let (_, callee_side) = audio_of(&to_phone);
    let answer = ANSWER.replace("m=audio 40002", &format!("m=audio {phone_port}"));
    phone
        .send(&respond_to(&to_phone, 200, "ph", Some(phone.addr), &answer))
        .await;
    phone.expect_request("ACK").await;
    let ok = trunk.expect_status(200).await;
    let (_, caller_side) = audio_of(&ok);
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;

    // The outsider, on another host, sends one packet to every port of the relay's range
    // before either party has spoken, then listens.
    let outsider = tokio::net::UdpSocket::bind("127.0.0.66:0").await.unwrap();
    let ours = [
        caller_port,
        phone_port,
        phone.addr.port(),
        trunk.addr.port(),
        edge.udp.port(),
    ];
    spray(&outsider, &ours).await;
    // The parties speak: each hears the other, through the relay.
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        caller_media
            .send_to(b"caller audio", ("127.0.0.1", caller_side))
            .await
            .unwrap();
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(5), phone_media.recv_from(&mut buf))
                .await
                .expect("the phone hears the caller")
                .unwrap();
        assert_eq!(&buf[..n], b"caller audio");
        assert_eq!(from.port(), callee_side);
        phone_media
            .send_to(b"phone audio", ("127.0.0.1", callee_side))
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), caller_media.recv_from(&mut buf))
            .await
            .expect("the caller hears the phone")
            .unwrap();
        assert_eq!(&buf[..n], b"phone audio", "nothing the outsider sent");
    }
    // Sprayed again mid-call: still nothing reaches either party, nor the outsider.
    spray(&outsider, &ours).await;
    caller_media
        .send_to(b"caller again", ("127.0.0.1", caller_side))
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone_media.recv_from(&mut buf))
        .await
        .expect("the phone hears the caller")
        .unwrap();
    assert_eq!(&buf[..n], b"caller again");
    let heard =
        tokio::time::timeout(Duration::from_millis(500), outsider.recv_from(&mut buf)).await;
    assert!(heard.is_err(), "the outsider heard {heard:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), phone_media.recv_from(&mut buf))
            .await
            .is_err(),
        "the phone got something more"
    );
    assert!(metric(&edge, "ringledger_rtp_packets_stray_total") >= 8);
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_written_by_the_sender_does_not_aim_the_response_at_a_third_party() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let attacker = UdpPeer::new(edge.udp).await;
    let victim = tokio::net::UdpSocket::bind("127.0.0.77:0").await.unwrap();
    let victim_addr = victim.local_addr().unwrap();
    // OPTIONS (answered with no authentication) naming the victim in received, rport and
    // sent-by.
    let options = format!(
        "OPTIONS sip:{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {victim_addr};received={ip};rport={port};branch=z9hG4bKrefl\r\n\
         Max-Forwards: 70\r\nFrom: <sip:x@{REALM}>;tag=r\r\nTo: <sip:{REALM}>\r\n\
         Call-ID: reflect@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        ip = victim_addr.ip(),
        port = victim_addr.port(),
    );
    let r = attacker.exchange(&options).await;
    assert_eq!(
        status(&r),
        200,
        "the answer comes back to its real source: {r}"
    );
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), victim.recv_from(&mut buf))
            .await
            .is_err(),
        "the victim got nothing"
    );
    let via = header(&r, "Via");
    assert!(
        via.contains(&format!("received={}", attacker.addr.ip()))
            && via.contains(&format!("rport={}", attacker.addr.port())),
        "{via}"
    );
    edge.shutdown().await;
}

/// An OPTIONS from `peer` (answered without authentication), with `extra` headers.
fn options_with(peer: &UdpPeer, branch: &str, extra: &str) -> String {
    format!(
        "OPTIONS sip:{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {addr};rport;branch=z9hG4bK{branch}\r\n{extra}\
         Max-Forwards: 70\r\nFrom: <sip:x@{REALM}>;tag=o\r\nTo: <sip:{REALM}>\r\n\
         Call-ID: {branch}@flood\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        addr = peer.addr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_too_large_to_keep_are_sent_and_not_held_for_retransmissions() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let peer = UdpPeer::new(edge.udp).await;
    // Each request carries two lower Vias of ~7 KB of parameters, which its answer echoes:
    // ~14 KB answers, the kind the 64 KB flood made the edge hold for 32 s each.
    let params: String = (0..700).map(|i| format!(";p{i}=v")).collect();
    let vias =
        format!("Via: SIP/2.0/UDP 10.0.0.1{params}\r\nVia: SIP/2.0/UDP 10.0.0.2{params}\r\n");
    for i in 0..40 {
        let r = peer
            .exchange(&options_with(&peer, &format!("big{i}"), &vias))
            .await;
        assert_eq!(status(&r), 200, "{}", &r[..200]);
        assert!(r.len() > 8 * 1024, "the answer echoes the Vias");
    }
    assert_eq!(edge.edge.retained_bytes(), 0, "none of them is kept");
    assert_eq!(metric(&edge, "ringledger_sip_responses_not_kept_total"), 40);
    // A retransmission finds its transaction but no answer to resend: absorbed, unanswered.
    peer.send(&options_with(&peer, "big7", &vias)).await;
    assert_eq!(peer.recv(Duration::from_millis(300)).await, None);
    // A small answer is still kept and resent.
    let small = options_with(&peer, "small", "");
    assert_eq!(status(&peer.exchange(&small).await), 200);
    assert!(edge.edge.retained_bytes() > 0);
    assert_eq!(status(&peer.exchange(&small).await), 200, "resent");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_small_requests_keeps_answers_within_the_budget() {
    const BUDGET: usize = 64 * 1024;
    let security = SecuritySettings {
        kept_responses: KeptResponses { max_bytes: BUDGET },
        ..SecuritySettings::default()
    };
    let edge = SipEdge::spawn_secured(Backend::sqlite().await, vec![], None, security).await;
    let peer = UdpPeer::new(edge.udp).await;
    // 2,000 OPTIONS in bursts of 50 (each burst answered before the next): ~900 KB of answers
    // the edge would otherwise keep for 32 s.
    let mut answered = 0;
    for burst in 0..40 {
        for i in 0..50 {
            peer.send(&options_with(&peer, &format!("s{burst}-{i}"), ""))
                .await;
        }
        while answered < (burst + 1) * 50 {
            match peer.recv(Duration::from_secs(2)).await {
                Some(r) => {
                    assert_eq!(status(&r), 200, "{r}");
                    answered += 1;
                }
                None => panic!("{answered} of {} answered", (burst + 1) * 50),
            }
        }
        assert!(edge.edge.retained_bytes() <= BUDGET);
    }
    let not_kept = metric(&edge, "ringledger_sip_responses_not_kept_total");
    assert!(not_kept > 1_000, "most answers were not kept: {not_kept}");
    let mut out = String::new();
    edge.edge.render_metrics(&mut out);
    assert!(
        out.contains(&format!(
            "ringledger_sip_responses_kept_bytes {}",
            edge.edge.retained_bytes()
        )),
        "the gauge shows what is kept"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_with_too_many_vias_or_too_long_a_header_are_dropped_unread() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let peer = UdpPeer::new(edge.udp).await;
    let dropped_before = metric(&edge, "ringledger_sip_messages_dropped_total");
    // 250 Via lines full of parameters (the 64 KB message that cost ~10 ms to parse), a
    // single header of 60 KB, and 300 header lines.
    let many_vias: String = (0..250)
        .map(|i| {
            format!(
                "Via: SIP/2.0/UDP 10.0.{}.{};branch=z9hG4bKv{i};p1;p2;p3;p4;p5\r\n",
                i / 256,
                i % 256
            )
        })
        .collect();
    let long_header = format!("X-Pad: {}\r\n", "y".repeat(60_000));
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (branch, extra) in [
        ("vias", &many_vias),
        ("long", &long_header),
        ("lines", &many_headers),
    ] {
        let msg = options_with(&peer, branch, extra);
        assert!(msg.len() < 65_000);
        peer.send(&msg).await;
        assert_eq!(
            peer.recv(Duration::from_millis(300)).await,
            None,
            "{branch}: no answer"
        );
    }
    assert_eq!(
        metric(&edge, "ringledger_sip_messages_dropped_total"),
        dropped_before + 3
    );
    // The edge still serves.
    let r = peer.exchange(&options_with(&peer, "after", "")).await;
    assert_eq!(status(&r), 200, "{r}");
    edge.shutdown().await;
}

/// A REGISTER with `n` Contacts, in Contact headers of up to 100 each.
fn with_contacts(peer: &UdpPeer, branch: &str, cseq: u32, auth: &str, n: usize) -> String {
    let contacts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "<sip:{USERNAME}@10.{}.{}.{}:5060>",
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let lines: String = contacts
        .chunks(100)
        .map(|c| format!("Contact: {}\r\n", c.join(", ")))
        .collect();
    register(peer, branch, cseq, auth).replace(
        &format!("Contact: <sip:{USERNAME}@{}>\r\n", peer.addr),
        &lines,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_binds_a_bounded_number_of_contacts() {
    let edge = SipEdge::spawn(Backend::sqlite().await, vec![Algorithm::Md5]).await;
    let peer = UdpPeer::new(edge.udp).await;
    let before = edge.device_events().await.len();
    // 1,500 Contacts: refused as read, before any challenge, nothing written.
    let r = peer
        .exchange(&with_contacts(&peer, "big", 1, "", 1500))
        .await;
    assert_eq!(status(&r), 400, "{r}");
    assert!(r.contains("more than 5 Contacts"), "{r}");
    let uri = format!("sip:{REALM}");
    let challenge = peer.exchange(&with_contacts(&peer, "six1", 2, "", 6)).await;
    assert_eq!(status(&challenge), 400, "six in one request: {challenge}");
    // Five are fine; binding more from elsewhere replaces the oldest, so the device never
    // holds more than five.
    let challenge = peer
        .exchange(&with_contacts(&peer, "five1", 3, "", 5))
        .await;
    assert_eq!(status(&challenge), 401, "{challenge}");
    let www = header(&challenge, "WWW-Authenticate").to_string();
    let auth = authorization(&www, Algorithm::Md5, PASSWORD, 1, &uri);
    let r = peer
        .exchange(&with_contacts(&peer, "five2", 4, &auth, 5))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header_values(&r, "Contact").len(), 5, "{r}");
    assert_eq!(edge.device_events().await.len(), before + 5);
    let auth = authorization(&www, Algorithm::Md5, PASSWORD, 2, &uri);
    let r = peer.exchange(&register(&peer, "one-more", 5, &auth)).await;
    assert_eq!(status(&r), 200, "{r}");
    let contacts = header_values(&r, "Contact");
    assert_eq!(contacts.len(), 5, "{r}");
    assert!(
        contacts.iter().any(|c| c.contains(&peer.addr.to_string())),
        "{r}"
    );
    edge.shutdown().await;
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_at_a_refusing_binding_limit_gets_403_and_nothing_is_bound() {
    let registrar = signaling::RegistrarSettings {
        contact_limit: ContactLimit {
            max: 3,
            when_full: WhenFull::Refuse,
        },
        ..registrar_settings()
    };
    let edge = SipEdge::spawn_registrar(Backend::sqlite().await, registrar).await;
    let peer = UdpPeer::new(edge.udp).await;
    let uri = format!("sip:{REALM}");
    let challenge = peer.exchange(&with_contacts(&peer, "l1", 1, "", 2)).await;
    let www = header(&challenge, "WWW-Authenticate").to_string();
    let auth = |nc| authorization(&www, Algorithm::Md5, PASSWORD, nc, &uri);
    let r = peer
        .exchange(&with_contacts(&peer, "l2", 2, &auth(1), 2))
        .await;
    assert_eq!(status(&r), 200, "{r}");
    let bound = edge.device_events().await.len();
    // Two more would make four: refused whole, neither is bound.
    let more = with_contacts(&peer, "l3", 3, &auth(2), 2).replace("@10.0.0.", "@10.9.0.");
    let r = peer.exchange(&more).await;
    assert_eq!(status(&r), 403, "{r}");
    assert!(r.contains("more than 3 bindings"), "{r}");
    assert_eq!(edge.device_events().await.len(), bound, "nothing written");
    // One more fits; refreshing the ones held is never refused.
    let r = peer.exchange(&register(&peer, "l4", 4, &auth(3))).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header_values(&r, "Contact").len(), 3, "{r}");
    let r = peer
        .exchange(&with_contacts(&peer, "l5", 5, &auth(4), 2))
        .await;
    assert_eq!(status(&r), 200, "refreshes: {r}");
    let one_more = with_contacts(&peer, "l6", 6, &auth(5), 1).replace("@10.0.0.", "@10.9.0.");
    let r = peer.exchange(&one_more).await;
    assert_eq!(status(&r), 403, "still full: {r}");
    assert_eq!(
        edge.device_events().await.len(),
        bound + 3,
        "one bound, two refreshed"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tcp_connections_are_bounded_and_closed() {
    let security = SecuritySettings {
        tcp: TcpLimits {
            max_connections: 120,
            max_per_source: 40,
            message_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
        },
        ..SecuritySettings::default()
    };
    let edge = SipEdge::spawn_secured(Backend::sqlite().await, vec![], None, security).await;
    let fds_before = open_descriptors();
    // Attackers on four addresses open 400 connections and send half a request on each (the
    // test keeps under the common 1,024 descriptors a process may hold).
    let mut stalled = Vec::new();
    for i in 0..400 {
        let ip = format!("127.0.0.{}", 100 + i % 4);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        let Ok(mut conn) = socket.connect(edge.tcp).await else {
            continue;
        };
        let _ = conn
            .write_all(b"REGISTER sip:ringledger.test SIP/2.0\r\nVia: SIP/2.0/TCP ")
            .await;
        stalled.push(conn);
    }
    // The edge holds at most its caps: 40 per source here, 120 in all (other tests of this
    // binary hold a few descriptors of their own meanwhile).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = edge.edge.tcp_connections.open();
    assert!(open <= 120, "{open} connections held");
    let edge_fds = open_descriptors().saturating_sub(fds_before + stalled.len());
    assert!(edge_fds <= 200, "the edge holds {edge_fds} descriptors");
    assert!(metric(&edge, "ringledger_sip_tcp_connections_refused_total") >= 280);

    // A phone's fresh REGISTER over UDP is answered at once meanwhile.
    let phone = UdpPeer::new(edge.udp).await;
    let t = Instant::now();
    let r = phone.exchange(&register(&phone, "fresh", 1, "")).await;
    assert_eq!(status(&r), 401, "{r}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // The half-sent requests time out and their connections are closed by the edge.
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.edge.tcp_connections.open() > 0 {
        assert!(Instant::now() < deadline, "stalled connections still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(1), stalled[0].read(&mut buf))
        .await
        .expect("closed by the edge")
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop(stalled);

    // A fresh TCP REGISTER is answered in under a second.
    let t = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(edge.tcp).await.unwrap();
    let me = conn.local_addr().unwrap();
    let request = format!(
        "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKtcpfresh\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{USERNAME}@{REALM}>;tag=t\r\nTo: <sip:{USERNAME}@{REALM}>\r\n\
         Call-ID: tcp-fresh\r\nCSeq: 1 REGISTER\r\nContact: <sip:{USERNAME}@{me};transport=tcp>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut chunk))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        response.extend_from_slice(&chunk[..n]);
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        response.starts_with(b"SIP/2.0 401"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    edge.shutdown().await;
}

const DESTINATION: &str = "+442079460000";

/// One message per Call-ID.
fn by_call<'a>(messages: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut seen = std::collections::HashSet::new();
    messages
        .filter(|m| seen.insert(header(m, "Call-ID").to_string()))
        .collect()
}

/// The requests a peer receives within `quiet` of each other, until it has heard nothing for
/// that long.
async fn drain(peer: &UdpPeer, quiet: Duration) -> Vec<String> {
    let mut heard = Vec::new();
    while let Some(m) = peer.recv(quiet).await {
        heard.push(m);
    }
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_cannot_pass_the_daily_limit_together() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    // A call's first increment costs 31p (25p to connect, 6p its first minute): a limit of
    // 93p is worth three calls.
    edge.price_calls(&[], Some(93)).await;
    let phone = UdpPeer::new(edge.udp).await;
    let mut invites = Vec::new();
    for n in 0..12 {
        let call = format!("race{n}");
        let challenge = proxy_challenge(&phone, DESTINATION, &call).await;
        let creds = credentials(
            &challenge,
            Algorithm::Md5,
            PASSWORD,
            1,
            "INVITE",
            &format!("sip:{DESTINATION}@{REALM}"),
        );
        let auth = format!("Proxy-Authorization: {creds}\r\n");
        invites.push(invite(
            &phone,
            DESTINATION,
            &call,
            &format!("{call}a"),
            2,
            &auth,
        ));
    }
    // All twelve at once, before any is answered.
    for i in &invites {
        phone.send(i).await;
    }
    let answers = drain(&phone, Duration::from_millis(1500)).await;
    // Each refusal once (the edge repeats a final answer that is not ACKed).
    let refused = by_call(answers.iter().filter(|r| status(r) == 403));
    assert_eq!(refused.len(), 9, "{answers:#?}");
    assert!(
        refused
            .iter()
            .all(|r| r.contains("daily spend limit reached")),
        "{refused:#?}"
    );
    let at_trunk = drain(&trunk, Duration::from_millis(500)).await;
    let out = by_call(at_trunk.iter().filter(|m| m.starts_with("INVITE ")));
    assert_eq!(out.len(), 3, "three calls reach the carrier");
    // The refusals are on record, each ended for the spend limit.
    let calls = edge.ended_calls(9).await;
    let spend_limited = calls
        .iter()
        .filter(|c| ended(c) == Some((EndCause::SpendLimit, domain::call::Side::System)))
        .count();
    assert_eq!(spend_limited, 9);
    // When the three end, their places are given back.
    for o in &out {
        trunk.send(&respond_to(o, 486, "far", None, "")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.edge.spending.calls_of(edge.account_id) > 0 {
        assert!(Instant::now() < deadline, "places still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_dial_intent_serves_exactly_one_of_five_concurrent_call_throughs() {
    const EXTENSION: &str = "+447700900123";
    const ACCESS_NUMBER: &str = "+442071838799";
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.add_access_number(ACCESS_NUMBER, None).await;
    edge.stage_dial_intent(extension_id, DESTINATION).await;
    for n in 0..5 {
        trunk
            .send(&carrier_invite_from(
                &trunk,
                EXTENSION,
                ACCESS_NUMBER,
                &format!("through{n}"),
            ))
            .await;
    }
    let heard = drain(&trunk, Duration::from_millis(1500)).await;
    let out = by_call(
        heard
            .iter()
            .filter(|m| m.starts_with(&format!("INVITE sip:{DESTINATION}@"))),
    );
    assert_eq!(out.len(), 1, "one call took the intent: {heard:#?}");
    let refused = by_call(
        heard
            .iter()
            .filter(|m| m.starts_with("SIP/2.0 4") && header(m, "CSeq") == "1 INVITE"),
    );
    assert_eq!(refused.len(), 4, "{heard:#?}");
    // Three found the intent taken; the fifth was one call too many for the extension.
    assert_eq!(
        refused
            .iter()
            .filter(|r| r.contains("dial intent was already used"))
            .count(),
        3,
        "{refused:#?}"
    );
    let used = edge
        .extension_events(extension_id)
        .await
        .into_iter()
        .filter(|e| {
            matches!(e, domain::extension::ExtensionEvent::DialIntentCancelled { reason, .. } if reason == "used")
        })
        .count();
    assert_eq!(used, 1);
    trunk.send(&respond_to(out[0], 486, "far", None, "")).await;
    let calls = edge.calls().await;
    assert!(
        calls
            .iter()
            .filter(|c| c.iter().any(|e| matches!(e, CallEvent::LegStarted { .. })))
            .count()
            == 1,
        "{calls:#?}"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_one_caller_share_one_call_through_allowance() {
    const EXTENSION: &str = "+447700900123";
    const ACCESS_NUMBER: &str = "+442071838799";
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    edge.add_extension(EXTENSION).await;
    edge.add_access_number(ACCESS_NUMBER, None).await;
    let spellings = [
        "+447700900123",
        "447700900123",
        "+44-7700-900123",
        "%2B447700900123",
        "+44.7700.900.123",
        "+44(7700)900123",
        "%2b44%2d7700%2d900123",
    ];
    let mut too_many = 0;
    for (n, from) in spellings.iter().enumerate() {
        let r = trunk
            .exchange(&carrier_invite_from(
                &trunk,
                from,
                ACCESS_NUMBER,
                &format!("spell{n}"),
            ))
            .await;
        let r = if status(&r) == 100 {
            trunk.recv(Duration::from_secs(5)).await.expect("an answer")
        } else {
            r
        };
        if r.contains("too many call-through attempts") {
            too_many += 1;
        }
    }
    assert_eq!(
        too_many, 2,
        "five attempts a minute, however the number is written"
    );
    edge.shutdown().await;
}
