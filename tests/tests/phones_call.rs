//! Two softphones nobody here wrote call each other through the edge: baresip (Debian),
//! registered as alice, and pjsua2 (PyPI `pjsua2-python`), registered as bob. One dials the
//! other's main number; the call stays on-net: the edge sends the leg to itself and it comes
//! back in as a call to the other account (origin: the caller's account), which rings the
//! other phone, which answers. The
//! caller hangs up after a few seconds: both calls (the caller's out, the callee's in) end,
//! each recorded with its answer and end, and call history shows them. Media flows through
//! the edge's RTP relay (both calls' relays, one after the other).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::call::{self, CallEvent, Direction, EndCause, Origin, Side};
use domain::ids::{AccountId, DeviceId};
use projections::call_history::CallHistory;
use projections::db::ProjectionDb;
use projections::runner::Runner;
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{MAIN_NUMBER, PASSWORD, REALM, SipEdge, USERNAME};
use sqlx::Row;

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bobs-own-long-password";
const BOB_NUMBER: &str = "+442071838751";
/// How long baresip stays up (it hangs up as it quits).
const BARESIP_SECONDS: u64 = 8;

/// baresip's microphone: a WAV file of silence (8 kHz, 16-bit mono) longer than the call;
/// its end would end the call.
fn silence_wav(path: &Path, seconds: u32) {
    let data_len = seconds * 8000 * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(44 + data_len as usize, 0);
    std::fs::write(path, wav).unwrap();
}

/// baresip's configuration for alice; `answer`: registered, answering calls at once.
fn baresip_config(dir: &Path, edge: std::net::SocketAddr, answer: bool) {
    let wav = dir.join("silence.wav");
    silence_wav(&wav, 4 * BARESIP_SECONDS as u32);
    let wav = wav.display();
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\n\
         sip_listen 127.0.0.1:0\n\
         net_interface 127.0.0.1\n\
         sip_transports udp\n\
         audio_player aufile,/dev/null\n\
         audio_source aufile,{wav}\n\
         audio_alert aufile,/dev/null\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module aufile.so\n\
         module menu.so\n\
         module account.so\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!(
            "<sip:{USERNAME}@{REALM}>;auth_pass={PASSWORD};outbound=\"sip:{edge}\";{}\n",
            if answer {
                "answermode=auto;regint=600"
            } else {
                "regint=0"
            }
        ),
    )
    .unwrap();
}

fn talk_time(events: &[CallEvent]) -> Option<chrono::Duration> {
    let answered = events.iter().find_map(|e| match e {
        CallEvent::LegAnswered { at, .. } => Some(*at),
        _ => None,
    })?;
    let ended = events.iter().find_map(|e| match e {
        CallEvent::Ended { at, .. } => Some(*at),
        _ => None,
    })?;
    Some(ended - answered)
}

/// Starts baresip as alice with `args`.
fn baresip(dir: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new("baresip")
        .args(["-f", dir.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("baresip must be installed (Debian package baresip; scripts/test installs it)")
}

/// Starts pjsua2 as bob: `phone.py SERVER bob PASSWORD REALM 30 <args>`.
fn pjsua2(edge: &SipEdge, args: &[&str]) -> tokio::process::Child {
    pjsua2_as(edge, (BOB, BOB_PASSWORD), args)
}

/// Starts pjsua2 as `user` (name, password) with `args`.
fn pjsua2_as(edge: &SipEdge, user: (&str, &str), args: &[&str]) -> tokio::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pjsua2/phone.py");
    tokio::process::Command::new("python3")
        .arg(script)
        .args([&edge.udp.to_string(), user.0, user.1, REALM, "30"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs")
}

/// Waits (up to `secs`) for a phone to exit; its success and what it printed.
async fn finished(child: tokio::process::Child, secs: u64) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(secs), child.wait_with_output())
        .await
        .expect("the phone finishes")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn wait_registered(edge: &SipEdge, account: AccountId, who: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while edge
        .view
        .read()
        .unwrap()
        .live_contacts(account, chrono::Utc::now())
        .is_empty()
    {
        assert!(Instant::now() < deadline, "{who} never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The two calls a call between the phones makes: the caller's out (from its device, billed
/// to its account) and the callee's in (on-net, from the caller's account), both answered and
/// ended by the
/// caller after a talk time under `max_talk`; call history agrees with the log.
async fn check_calls(
    edge: &SipEdge,
    caller: (AccountId, DeviceId),
    callee: AccountId,
    max_talk: i64,
    context: &str,
) {
    let calls = edge.ended_calls(2).await;
    assert_eq!(
        calls.len(),
        2,
        "the caller's call out and the callee's in: {calls:?}"
    );
    let started = |events: &[CallEvent]| match &events[0] {
        CallEvent::Started {
            direction,
            origin,
            account_id,
            ..
        } => (*direction, origin.clone(), *account_id),
        other => panic!("a call starts with Started, not {other:?}"),
    };
    assert_eq!(
        started(&calls[0]),
        (
            Direction::Outbound,
            Origin::IpDevice {
                device_id: caller.1
            },
            caller.0
        ),
        "billed to the caller's account"
    );
    assert_eq!(
        started(&calls[1]),
        (
            Direction::Inbound,
            Origin::OnNet {
                account_id: caller.0
            },
            callee
        )
    );
    for events in &calls {
        assert!(
            events.iter().any(|e| matches!(
                e,
                CallEvent::Ended {
                    cause: EndCause::NormalClearing,
                    side: Side::Caller,
                    ..
                }
            )),
            "the caller's hangup ends the call: {events:?}"
        );
        let talk = talk_time(events).expect("answered and ended");
        assert!(
            talk > chrono::Duration::seconds(1) && talk < chrono::Duration::seconds(max_talk),
            "talk time {talk} for {events:?}\n{context}"
        );
    }

    // The call history an auditor reads shows both calls, answered and ended, with the times
    // the log recorded.
    let db = ProjectionDb::connect(&edge.backend.url).await.unwrap();
    Runner::new(db.clone(), edge.store.clone(), Arc::new(CallHistory))
        .await
        .unwrap()
        .catch_up()
        .await
        .unwrap();
    let rows =
        sqlx::query("SELECT answered_at, ended_at, end_cause FROM calls ORDER BY started_at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for (row, events) in rows.iter().zip(&calls) {
        let answered: String = row.get("answered_at");
        let ended: String = row.get("ended_at");
        let answered = chrono::DateTime::parse_from_rfc3339(&answered).unwrap();
        let ended = chrono::DateTime::parse_from_rfc3339(&ended).unwrap();
        // The table keeps microseconds; the events, nanoseconds.
        let drift = (ended - answered) - talk_time(events).unwrap();
        assert!(drift.num_microseconds().unwrap().abs() <= 1, "{events:?}");
        assert_eq!(row.get::<String, _>("end_cause"), "normal_clearing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_pjsua2_through_the_edge_and_hangs_up() {
    let edge = SipEdge::spawn_looped(Backend::sqlite().await).await;
    let (bob_account, _) = edge.add_subscriber(BOB, BOB_PASSWORD, BOB_NUMBER).await;
    let bob = pjsua2(&edge, &["answer"]);
    wait_registered(&edge, bob_account, "pjsua2").await;

    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp, false);
    let alice = baresip(
        dir.path(),
        &[
            "-e",
            &format!("/dial sip:{BOB_NUMBER}@{REALM}"),
            "-t",
            &BARESIP_SECONDS.to_string(),
        ],
    );
    let (bob_ok, bob_text) = finished(bob, 40).await;
    let (_, alice_text) = finished(alice, 20).await;
    let context = format!("--- pjsua2:\n{bob_text}\n--- baresip:\n{alice_text}");
    assert!(
        bob_ok,
        "pjsua2 did not answer a call and see it hung up:\n{context}"
    );
    assert!(
        bob_text.contains(&format!("incoming: <sip:{MAIN_NUMBER}")),
        "bob sees alice's main number: {context}"
    );
    // The media went through the edge's relay: baresip's 50 packets a second, for seconds,
    // through both calls' relays.
    assert!(
        edge.edge.packets_relayed() > 100,
        "{} packets relayed",
        edge.edge.packets_relayed()
    );
    check_calls(
        &edge,
        (edge.account_id, edge.device_id),
        bob_account,
        BARESIP_SECONDS as i64,
        &context,
    )
    .await;
    edge.shutdown().await;
}

/// pjsua2 (bob) calls alice's main number, where baresip answers; pjsua2 runs with `args`
/// after its own. What pjsua2 made of it (success, its output) and both phones' output.
async fn pjsua2_calls_baresip(edge: &SipEdge, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp, true);
    let mut alice = baresip(dir.path(), &["-t", "30"]);
    wait_registered(edge, edge.account_id, "baresip").await;
    let bob = pjsua2(edge, args);
    let (bob_ok, bob_text) = finished(bob, 40).await;
    let _ = alice.start_kill();
    let (_, alice_text) = finished(alice, 20).await;
    let context = format!("--- pjsua2:\n{bob_text}\n--- baresip:\n{alice_text}");
    (bob_ok, bob_text, context)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_calls_baresip_through_the_edge_and_hangs_up() {
    let edge = SipEdge::spawn_looped(Backend::sqlite().await).await;
    let bob_ids = edge.add_subscriber(BOB, BOB_PASSWORD, BOB_NUMBER).await;
    let talk = 3;
    let alice_uri = format!("sip:{MAIN_NUMBER}@{REALM}");
    let (bob_ok, bob_text, context) =
        pjsua2_calls_baresip(&edge, &["call", &alice_uri, &talk.to_string()]).await;
    assert!(
        bob_ok,
        "pjsua2's call was not set up and hung up:\n{context}"
    );
    assert!(
        bob_text.contains("disconnected: 200"),
        "pjsua2 hung up an answered call: {context}"
    );
    check_calls(&edge, bob_ids, edge.account_id, talk + 2, &context).await;
    edge.shutdown().await;
}

/// The count pjsua2 printed for a span (`rx talking: N`).
fn received(text: &str, span: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("rx {span}: ")))
        .and_then(|n| n.trim().parse().ok())
}

/// Hold through two B2BUA calls (pjsua2 → edge → on-net → edge → baresip): pjsua2 holds
/// (re-INVITE, `a=sendonly`), the change passes through both calls to baresip and back, and
/// pjsua2 hears nothing while it holds; it resumes (a re-INVITE, `a=sendrecv`), and hears
/// baresip again. Both calls go on through the hold and end normally when pjsua2 hangs up.
/// (pjsua2 counts nothing while it holds whatever arrives: that the relay itself stops audio
/// to a held side is shown in hold.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_holds_and_resumes_a_call_to_baresip() {
    let edge = SipEdge::spawn_looped(Backend::sqlite().await).await;
    let bob_ids = edge.add_subscriber(BOB, BOB_PASSWORD, BOB_NUMBER).await;
    let step = 2;
    let alice_uri = format!("sip:{MAIN_NUMBER}@{REALM}");
    let (bob_ok, bob_text, context) =
        pjsua2_calls_baresip(&edge, &["hold", &alice_uri, &step.to_string()]).await;
    assert!(
        bob_ok,
        "pjsua2 did not hold, resume and hang up:\n{context}"
    );
    // baresip sends 50 packets a second: about 100 in each 2 s span it is heard.
    let talking = received(&bob_text, "talking").unwrap_or(0);
    let held = received(&bob_text, "held").unwrap_or(u64::MAX);
    let resumed = received(&bob_text, "resumed").unwrap_or(0);
    assert!(talking > 50, "heard while talking: {talking}\n{context}");
    assert_eq!(held, 0, "heard on hold\n{context}");
    assert!(resumed > 50, "heard after resuming: {resumed}\n{context}");
    check_calls(&edge, bob_ids, edge.account_id, 3 * step + 4, &context).await;
    edge.shutdown().await;
}

const CAROL: &str = "carol";
const CAROL_PASSWORD: &str = "carols-own-long-password";
const CAROL_NUMBER: &str = "+442071838752";

/// An edge with bob's and carol's accounts besides alice's: the edge and their accounts.
async fn edge_with_bob_and_carol() -> (SipEdge, AccountId, AccountId) {
    let edge = SipEdge::spawn_looped(Backend::sqlite().await).await;
    let (bob, _) = edge.add_subscriber(BOB, BOB_PASSWORD, BOB_NUMBER).await;
    let (carol, _) = edge
        .add_subscriber(CAROL, CAROL_PASSWORD, CAROL_NUMBER)
        .await;
    (edge, bob, carol)
}

/// Waits for the three phones of a transfer (bob's and carol's pjsua2, alice's baresip) and
/// checks that carol answered, saw her call end and heard more than `packets` RTP packets
/// (50 a second): bob's success, what he printed, and every phone's output.
async fn carol_heard_alice(
    bob: tokio::process::Child,
    carol: tokio::process::Child,
    alice: tokio::process::Child,
    packets: u64,
) -> (bool, String, String) {
    let (bob_ok, bob_text) = finished(bob, 40).await;
    let (carol_ok, carol_text) = finished(carol, 40).await;
    let (_, alice_text) = finished(alice, 20).await;
    let context = format!(
        "--- bob (pjsua2):\n{bob_text}\n--- carol (pjsua2):\n{carol_text}\n--- alice (baresip):\n{alice_text}"
    );
    assert!(
        carol_ok,
        "carol did not answer and see the call end:\n{context}"
    );
    let heard = received(&carol_text, "call").unwrap_or(0);
    assert!(
        heard > packets,
        "carol heard {heard} packets from baresip\n{context}"
    );
    (bob_ok, bob_text, context)
}

/// The call of `account` among `calls` (its events), by the account it is billed to.
fn call_of(calls: &[Vec<CallEvent>], account: AccountId) -> &[CallEvent] {
    calls
        .iter()
        .find(|events| {
            matches!(&events[0], CallEvent::Started { account_id, .. } if *account_id == account)
        })
        .expect("a call billed to the account")
}

/// What a blind transfer from bob's pjsua2 leaves in the log: bob's account's call records
/// the transfer by `by` to carol's number, the leg to it on-net, answered, billed to bob's
/// account; carol's call comes in on-net from bob's account and is answered; every call ends.
fn check_transfer(
    calls: &[Vec<CallEvent>],
    bob: AccountId,
    carol: AccountId,
    by: Side,
    context: &str,
) {
    let bobs = call_of(calls, bob);
    let new_leg = bobs
        .iter()
        .find_map(|e| match e {
            CallEvent::Transferred {
                by: who,
                to,
                leg_id,
                ..
            } if *who == by && to == CAROL_NUMBER => Some(*leg_id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no transfer by {by:?} to carol: {bobs:?}\n{context}"));
    assert!(
        bobs.iter().any(|e| matches!(e, CallEvent::LegStarted { leg_id, path: call::Path::OnNet, .. } if *leg_id == new_leg)),
        "the transfer's leg goes on-net: {bobs:?}"
    );
    assert!(
        bobs.iter()
            .any(|e| matches!(e, CallEvent::LegAnswered { leg_id, .. } if *leg_id == new_leg)),
        "carol answered the transfer: {bobs:?}\n{context}"
    );
    let carols = call_of(calls, carol);
    assert!(
        matches!(&carols[0], CallEvent::Started { origin: Origin::OnNet { account_id }, .. } if *account_id == bob),
        "carol's call comes from bob's account: {carols:?}"
    );
    for events in calls {
        assert!(
            events.iter().any(|e| matches!(e, CallEvent::Ended { .. })),
            "every call ends: {events:?}\n{context}"
        );
    }
}

/// Blind transfer by the callee: baresip (alice) calls bob's number, pjsua2 (bob) answers
/// and after 2 s transfers the call (REFER) to carol's number, where a second pjsua2 answers.
/// Bob hears the transfer's progress (NOTIFY, final 200) and is let go; carol hears baresip
/// through the relays until baresip hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_transfers_a_call_it_answered_to_a_third_phone() {
    let (edge, bob_account, carol_account) = edge_with_bob_and_carol().await;
    let carol_uri = format!("sip:{CAROL_NUMBER}@{REALM}");
    let bob = pjsua2(&edge, &["transfer", "-", &carol_uri, "2"]);
    let carol = pjsua2_as(&edge, (CAROL, CAROL_PASSWORD), &["answer"]);
    wait_registered(&edge, bob_account, "bob's pjsua2").await;
    wait_registered(&edge, carol_account, "carol's pjsua2").await;
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp, false);
    let alice = baresip(
        dir.path(),
        &[
            "-e",
            &format!("/dial sip:{BOB_NUMBER}@{REALM}"),
            "-t",
            &BARESIP_SECONDS.to_string(),
        ],
    );
    let (bob_ok, bob_text, context) = carol_heard_alice(bob, carol, alice, 50).await;
    assert!(bob_ok, "bob's transfer did not complete:\n{context}");
    assert!(bob_text.contains("transfer: 200"), "{context}");
    let calls = edge.ended_calls(3).await;
    check_transfer(&calls, bob_account, carol_account, Side::Callee, &context);
    edge.shutdown().await;
}

/// Blind transfer by the caller: pjsua2 (bob) calls alice's number, where baresip answers,
/// and after 2 s transfers alice to carol's number (a second pjsua2), which takes bob's
/// place: carol hears baresip until it hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_transfers_a_call_it_placed_to_a_third_phone() {
    let (edge, bob_account, carol_account) = edge_with_bob_and_carol().await;
    let carol = pjsua2_as(&edge, (CAROL, CAROL_PASSWORD), &["answer"]);
    wait_registered(&edge, carol_account, "carol's pjsua2").await;
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp, true);
    let alice = baresip(dir.path(), &["-t", &BARESIP_SECONDS.to_string()]);
    wait_registered(&edge, edge.account_id, "baresip").await;
    let alice_uri = format!("sip:{MAIN_NUMBER}@{REALM}");
    let carol_uri = format!("sip:{CAROL_NUMBER}@{REALM}");
    let bob = pjsua2(&edge, &["transfer", &alice_uri, &carol_uri, "2"]);
    let (bob_ok, _, context) = carol_heard_alice(bob, carol, alice, 50).await;
    assert!(bob_ok, "bob's transfer did not complete:\n{context}");
    let calls = edge.ended_calls(3).await;
    check_transfer(&calls, bob_account, carol_account, Side::Caller, &context);
    edge.shutdown().await;
}

/// Attended transfer: baresip (alice) calls bob's number, pjsua2 (bob) answers, holds alice,
/// calls carol (a second pjsua2), and once carol answers transfers alice to her (REFER with
/// `Replaces` naming bob's call with carol). The edge joins bob's two calls and lets bob go:
/// carol hears baresip through the joined calls' relays, and when baresip hangs up every call
/// ends. Both of bob's calls record the join, each naming the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_transfers_a_call_to_a_phone_it_consulted_first() {
    let (edge, bob_account, carol_account) = edge_with_bob_and_carol().await;
    let carol_uri = format!("sip:{CAROL_NUMBER}@{REALM}");
    let bob = pjsua2(&edge, &["attended", &carol_uri, "2"]);
    let carol = pjsua2_as(&edge, (CAROL, CAROL_PASSWORD), &["answer"]);
    wait_registered(&edge, bob_account, "bob's pjsua2").await;
    wait_registered(&edge, carol_account, "carol's pjsua2").await;
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp, false);
    let alice = baresip(
        dir.path(),
        &[
            "-e",
            &format!("/dial sip:{BOB_NUMBER}@{REALM}"),
            "-t",
            &(BARESIP_SECONDS + 2).to_string(),
        ],
    );
    // Carol hears bob for the second before the transfer (50 packets), then baresip.
    let (bob_ok, _, context) = carol_heard_alice(bob, carol, alice, 150).await;
    assert!(
        bob_ok,
        "bob's attended transfer did not complete:\n{context}"
    );
    let calls = edge.ended_calls(4).await;
    assert_eq!(calls.len(), 4, "{calls:?}");
    let id_of = |events: &[CallEvent]| match &events[0] {
        CallEvent::Started { call_id, .. } => *call_id,
        other => panic!("{other:?}"),
    };
    let joins: Vec<(domain::ids::CallId, domain::ids::CallId, Side)> = calls
        .iter()
        .flat_map(|events| {
            events.iter().filter_map(|e| match e {
                CallEvent::Joined { with, by, .. } => Some((id_of(events), *with, *by)),
                _ => None,
            })
        })
        .collect();
    assert_eq!(joins.len(), 2, "{joins:?}\n{context}");
    assert_eq!(
        (joins[0].0, joins[0].1),
        (joins[1].1, joins[1].0),
        "{joins:?}"
    );
    for (call, _, _) in &joins {
        let events = calls.iter().find(|e| id_of(e) == *call).unwrap();
        assert!(
            matches!(&events[0], CallEvent::Started { account_id, .. } if *account_id == bob_account),
            "both joined calls are bob's: {events:?}"
        );
    }
    for events in &calls {
        assert!(
            events.iter().any(|e| matches!(e, CallEvent::Ended { .. })),
            "every call ends: {events:?}"
        );
    }
    edge.shutdown().await;
}

/// linphonec's configuration for bob in `dir` (also its HOME: liblinphone does not start
/// without a writable data directory): UDP only, on 127.0.0.1, the edge as registrar and as
/// the route of every request (`reg_route`), no soundcard.
fn linphone_config(dir: &Path, edge: std::net::SocketAddr) {
    std::fs::create_dir_all(dir.join(".local/share/linphone")).unwrap();
    std::fs::write(
        dir.join("linphonerc"),
        format!(
            "[sip]\nsip_port=-1\nsip_tcp_port=-1\nsip_tls_port=-1\ndefault_proxy=0\n\
             [net]\nbind_address=127.0.0.1\n\
             [proxy_0]\nreg_proxy=<sip:{edge};transport=udp>\n\
             reg_route=<sip:{edge};transport=udp;lr>\nreg_identity=sip:{BOB}@{REALM}\n\
             reg_expires=600\nreg_sendregister=1\n\
             [auth_info_0]\nusername={BOB}\npasswd={BOB_PASSWORD}\nrealm={REALM}\n"
        ),
    )
    .unwrap();
}

/// linphonec (Debian `linphone-cli`) as bob, driven through its standard input.
fn linphonec(dir: &Path) -> tokio::process::Child {
    tokio::process::Command::new("linphonec")
        .arg("-c")
        .arg(dir.join("linphonerc"))
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "linphonec must be installed (Debian package linphone-cli; scripts/test installs it)",
        )
}

/// linphone (bob) calls alice's number, where baresip answers; linphone holds the call
/// (pause), resumes it and hangs up. Both holds pass through both calls to baresip (a
/// re-INVITE each), and both calls end normally, bob's hangup ending them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_calls_baresip_holds_resumes_and_hangs_up() {
    use tokio::io::AsyncWriteExt;
    let edge = SipEdge::spawn_looped(Backend::sqlite().await).await;
    let bob_ids = edge.add_subscriber(BOB, BOB_PASSWORD, BOB_NUMBER).await;
    let dir = tempfile::tempdir().unwrap();
    baresip_config(dir.path(), edge.udp, true);
    let alice = baresip(dir.path(), &["-t", "30"]);
    wait_registered(&edge, edge.account_id, "baresip").await;
    let home = tempfile::tempdir().unwrap();
    linphone_config(home.path(), edge.udp);
    let mut bob = linphonec(home.path());
    wait_registered(&edge, bob_ids.0, "linphone").await;
    let mut input = bob.stdin.take().unwrap();
    let mut say = async |line: &str| {
        input
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        input.flush().await.unwrap();
    };
    say(&format!("call sip:{MAIN_NUMBER}@{REALM}")).await;
    let answered = async {
        loop {
            let calls = edge.calls().await;
            if calls
                .iter()
                .filter(|c| c.iter().any(|e| matches!(e, CallEvent::LegAnswered { .. })))
                .count()
                == 2
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), answered)
        .await
        .expect("linphone's call answered");
    tokio::time::sleep(Duration::from_secs(2)).await;
    say("pause").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    say("resume").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    say("terminate").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    say("quit").await;
    drop(input);
    let (_, bob_text) = finished(bob, 20).await;
    let mut alice = alice;
    let _ = alice.start_kill();
    let (_, alice_text) = finished(alice, 20).await;
    let context = format!("--- linphone:\n{bob_text}\n--- baresip:\n{alice_text}");
    assert!(
        bob_text.contains("is now paused") && bob_text.contains("ended (No error)"),
        "linphone held, resumed and hung up its call:\n{context}"
    );
    assert_eq!(
        alice_text.matches("got re-INVITE").count(),
        2,
        "the hold and the resume reach baresip:\n{context}"
    );
    check_calls(&edge, bob_ids, edge.account_id, 10, &context).await;
    edge.shutdown().await;
}
