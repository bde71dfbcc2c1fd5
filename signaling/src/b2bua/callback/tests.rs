//! The callback's state machine under simulated time: each step recorded before its leg is
//! rung, each leg failing in each way, hangups from either side, the timers in each state,
//! and a draining edge.

use std::time::{Duration, Instant};

use domain::account::Account;
use domain::call::{CallCommand, EndCause, LegFailure, LegRole, LegTarget, Side};
use domain::extension::{CallerIdShown, Extension};
use domain::ids::{CallId, ExtensionId};

use super::{Callback, CallbackPlan};
use crate::b2bua::call::{Input, LINGER, Machine, MediaPorts, Output, Peer, Refusal, Settings};
use crate::b2bua::sim::*;
use crate::media::relay::Side as RelaySide;
use crate::outgoing::{ClientKey, Outcome};

/// The extension's answer: PCMU only, and DTMF events.
const EXTENSION_ANSWER: &str = "v=0\r\no=- 3 3 IN IP4 127.0.0.30\r\ns=-\r\nc=IN IP4 127.0.0.30\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
const DESTINATION_ANSWER: &str = "v=0\r\no=- 4 4 IN IP4 127.0.0.40\r\ns=-\r\nc=IN IP4 127.0.0.40\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const TRUNK: &str = "127.0.0.50:5060";
const MEDIA_TIMEOUT: Duration = Duration::from_secs(20);

fn plan(refusal: Option<EndCause>) -> CallbackPlan {
    let extension_id = ExtensionId(uuid::Uuid::from_u128(5));
    let number = e164("+447700900123");
    CallbackPlan {
        account: Account {
            main_number: Some(e164("+4930111")),
            ..Account::default()
        },
        extension: Extension {
            id: Some(extension_id),
            number: Some(number.clone()),
            ..Extension::default()
        },
        extension_id,
        number,
        destination: e164("+442079460000"),
        trunk: addr(TRUNK),
        refusal,
    }
}

fn settings(draining: bool) -> Settings {
    Settings {
        edge_id: uuid::Uuid::from_u128(7),
        ring: secs(30),
        call_in: secs(15),
        max_duration: secs(3600),
        media: None,
        draining,
        call_in_webhook: false,
        extension_transfers: false,
    }
}

fn ports() -> MediaPorts {
    MediaPorts {
        address: "127.0.0.1".parse().expect("ip"),
        caller_port: 30000,
        callee_port: 30002,
        timeout: MEDIA_TIMEOUT,
    }
}

fn start_with(
    plan: CallbackPlan,
    settings: Settings,
    refuse: Refuser,
) -> (Sim<Callback>, Vec<Output>) {
    let callback = Callback::new(CallId(uuid::Uuid::from_u128(1)), plan, settings, ports());
    Sim::new(callback, Instant::now(), refuse)
}

fn start() -> (Sim<Callback>, Vec<Output>) {
    start_with(plan(None), settings(false), Box::new(|_| None))
}

fn body(request: &crate::message::RawMessage) -> String {
    String::from_utf8_lossy(&request.body).into_owned()
}

/// A callback whose extension rings (its INVITE returned).
fn extension_ringing() -> (Sim<Callback>, crate::message::RawMessage) {
    let (mut sim, out) = start();
    let (leg, invite) = invites(&out).remove(0);
    assert_eq!(leg, 0);
    sim.give(response(0, &invite, 180, ""));
    (sim, invite)
}

/// A callback whose extension answered and whose destination rings: both INVITEs.
fn destination_ringing() -> (Sim<Callback>, [crate::message::RawMessage; 2]) {
    let (mut sim, first) = extension_ringing();
    let out = sim.give(response(0, &first, 200, EXTENSION_ANSWER));
    let (leg, second) = invites(&out).remove(0);
    assert_eq!(leg, 1);
    sim.give(response(1, &second, 180, ""));
    (sim, [first, second])
}

/// A bridged callback: both INVITEs.
fn talking() -> (Sim<Callback>, [crate::message::RawMessage; 2]) {
    let (mut sim, invites) = destination_ringing();
    let out = sim.give(response(1, &invites[1], 200, DESTINATION_ANSWER));
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::Bridge { legs } if legs.len() == 2)),
        "{out:?}"
    );
    (sim, invites)
}

/// The answer to a BYE the callback sends to `to` (or its timeout), for each BYE in `out`.
fn answer_byes(sim: &mut Sim<Callback>, out: &[Output]) {
    for output in out {
        if let Output::Request {
            to: Peer::Leg(leg),
            branch,
            method: "BYE",
            ..
        } = output
        {
            sim.give(Input::Outcome {
                leg: Some(*leg),
                key: ClientKey {
                    branch: branch.clone(),
                    method: "BYE".into(),
                },
                outcome: Outcome::Timeout,
            });
        }
    }
}

#[test]
fn each_step_is_recorded_before_its_leg_is_rung_and_the_destination_gets_the_extensions_codec() {
    let (mut sim, out) = start();
    assert_eq!(steps(&out), ["start", "leg", "invite"]);
    let (_, first) = invites(&out).remove(0);
    // Rung through the trunk, from the account's main number, offered G.711 and DTMF events
    // at the relay's caller side.
    assert!(first.start_line.contains(&format!("+447700900123@{TRUNK}")));
    assert!(first.header("From").expect("From").contains("+4930111"));
    assert!(body(&first).contains("m=audio 30000 RTP/AVP 0 8 101"));
    let leg0 = commands(&out)
        .into_iter()
        .find_map(|c| match c {
            CallCommand::StartLeg { target, role, .. } => Some((target.clone(), *role)),
            _ => None,
        })
        .expect("a leg");
    assert!(matches!(
        leg0,
        (LegTarget::Extension { .. }, LegRole::Caller)
    ));
    let out = sim.give(response(0, &first, 180, ""));
    assert!(matches!(
        &commands(&out)[..],
        [CallCommand::LegRinging { .. }]
    ));
    // The extension answers: ACKed, its media learnt, recorded; then the destination.
    let out = sim.give(response(0, &first, 200, EXTENSION_ANSWER));
    assert_eq!(acked(&out), vec![0]);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::MediaPeer { rtp, .. } if rtp.port() == 6000))
    );
    assert_eq!(steps(&out), ["answered", "leg", "invite"]);
    let (leg, second) = invites(&out).remove(0);
    assert_eq!(leg, 1);
    assert!(
        second
            .start_line
            .contains(&format!("+442079460000@{TRUNK}"))
    );
    // Offered only what the extension chose, at the relay's callee side.
    let offer = body(&second);
    assert!(offer.contains("m=audio 30002"), "{offer}");
    assert!(offer.contains("PCMU") && !offer.contains("PCMA"), "{offer}");
    // The destination answers: bridged.
    sim.give(response(1, &second, 180, ""));
    let out = sim.give(response(1, &second, 200, DESTINATION_ANSWER));
    assert_eq!(acked(&out), vec![1]);
    assert_eq!(steps(&out), ["answered", "bridge"]);
}

#[test]
fn the_destination_shows_the_caller_id_the_extension_chose() {
    let mut own = plan(None);
    own.extension.settings.caller_id = CallerIdShown::Own;
    let (mut sim, out) = start_with(own, settings(false), Box::new(|_| None));
    let (_, first) = invites(&out).remove(0);
    let out = sim.give(response(0, &first, 200, EXTENSION_ANSWER));
    let (_, second) = invites(&out).remove(0);
    assert!(
        second
            .header("From")
            .expect("From")
            .contains("+447700900123")
    );
}

#[test]
fn a_refused_callback_is_recorded_with_its_cause_and_rings_no_one() {
    let (sim, out) = start_with(
        plan(Some(EndCause::SpendLimit)),
        settings(false),
        Box::new(|_| None),
    );
    assert!(invites(&out).is_empty());
    assert_eq!(ended(&out), Some((EndCause::SpendLimit, Side::System)));
    assert!(sim.call.is_done(sim.now));
}

#[test]
fn a_callback_that_cannot_be_recorded_rings_no_one() {
    let refuse: Refuser = Box::new(|c| match c {
        CallCommand::Start { .. } => Some(Refusal::Store),
        _ => None,
    });
    let (sim, out) = start_with(plan(None), settings(false), refuse);
    assert!(invites(&out).is_empty());
    assert!(sim.call.is_done(sim.now));
}

#[test]
fn a_busy_extension_ends_the_callback_before_the_destination_rings() {
    let (mut sim, first) = extension_ringing();
    let out = sim.give(response(0, &first, 486, ""));
    assert_eq!(leg_failures(&out), vec![(486, LegFailure::Rejected)]);
    assert_eq!(ended(&out), Some((EndCause::Busy, Side::Caller)));
    assert!(invites(&out).is_empty());
}

#[test]
fn a_destination_that_fails_hangs_up_the_extension() {
    let (mut sim, [_, second]) = destination_ringing();
    let out = sim.give(response(1, &second, 404, ""));
    assert_eq!(leg_failures(&out), vec![(404, LegFailure::Rejected)]);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::Rejected, Side::Callee)));
    // An INVITE that times out reads as no answer.
    let (mut sim, _) = destination_ringing();
    let out = sim.give(Input::Outcome {
        leg: Some(1),
        key: ClientKey {
            branch: "z9hG4bKx".into(),
            method: "INVITE".into(),
        },
        outcome: Outcome::Timeout,
    });
    assert_eq!(leg_failures(&out), vec![(408, LegFailure::Timeout)]);
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::Callee)));
}

#[test]
fn each_leg_rings_for_the_ring_time_from_its_own_invite() {
    // The extension: cancelled after 30 s.
    let (mut sim, _) = extension_ringing();
    assert!(sim.run_for(secs(29)).is_empty());
    let out = sim.run_for(secs(2));
    assert_eq!(cancelled(&out), vec![0]);
    assert_eq!(leg_failures(&out), vec![(487, LegFailure::Cancelled)]);
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::Caller)));
    // The destination: its 30 s count from its own INVITE, not the callback's start.
    let (mut sim, first) = extension_ringing();
    sim.run_for(secs(25));
    let out = sim.give(response(0, &first, 200, EXTENSION_ANSWER));
    let (_, second) = invites(&out).remove(0);
    sim.give(response(1, &second, 180, ""));
    assert!(sim.run_for(secs(29)).is_empty());
    let out = sim.run_for(secs(2));
    assert_eq!(cancelled(&out), vec![1]);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::Callee)));
}

#[test]
fn a_leg_that_never_answered_is_cancelled_only_once_it_is_heard() {
    let (mut sim, out) = start();
    let (_, first) = invites(&out).remove(0);
    let out = sim.run_for(secs(31));
    // Nothing heard yet: no CANCEL may be sent (RFC 3261 §9.1), though the callback is over.
    assert!(cancelled(&out).is_empty());
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::Caller)));
    let out = sim.give(response(0, &first, 180, ""));
    assert_eq!(cancelled(&out), vec![0]);
}

#[test]
fn the_extension_hanging_up_while_the_destination_rings_cancels_it() {
    let (mut sim, [first, _]) = destination_ringing();
    let out = sim.give(Input::Bye(from_leg("BYE", 0, &first, 1)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200))
    );
    assert_eq!(cancelled(&out), vec![1]);
    assert!(byes(&out).is_empty(), "no BYE back to who hung up");
    assert_eq!(leg_failures(&out), vec![(487, LegFailure::Cancelled)]);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
}

#[test]
fn a_200_crossing_the_cancel_is_acked_and_hung_up() {
    let (mut sim, [first, second]) = destination_ringing();
    sim.give(Input::Bye(from_leg("BYE", 0, &first, 1)));
    let out = sim.give(response(1, &second, 200, DESTINATION_ANSWER));
    assert_eq!(acked(&out), vec![1]);
    assert_eq!(byes(&out), vec![Peer::Leg(1)]);
    assert!(
        !commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::Bridge { .. })),
        "not bridged"
    );
}

#[test]
fn either_side_hanging_up_ends_a_bridged_callback() {
    let (mut sim, [_, second]) = talking();
    let out = sim.give(Input::Bye(from_leg("BYE", 1, &second, 1)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200))
    );
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Callee)));
    // A second BYE (a retransmission reaching a callback over) is not another hangup.
    let out = sim.give(Input::Bye(from_leg("BYE", 1, &second, 1)));
    assert!(matches!(&out[..], [Output::ByeAnswer(a)] if a.status == 481));
    let (mut sim, [first, _]) = talking();
    let out = sim.give(Input::Bye(from_leg("BYE", 0, &first, 1)));
    assert_eq!(byes(&out), vec![Peer::Leg(1)]);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
    assert!(!sim.call.is_done(sim.now));
    sim.run_for(LINGER);
    assert!(sim.call.is_done(sim.now));
}

#[test]
fn media_silence_counts_from_the_destinations_answer() {
    let (mut sim, first) = extension_ringing();
    // No media while the destination rings for 25 s: more than the relay's timeout since the
    // callback began.
    let out = sim.give(response(0, &first, 200, EXTENSION_ANSWER));
    let (_, second) = invites(&out).remove(0);
    sim.run_for(secs(25));
    sim.give(response(1, &second, 200, DESTINATION_ANSWER));
    assert!(
        sim.run_for(MEDIA_TIMEOUT - secs(1)).is_empty(),
        "not hung up at the answer"
    );
    let out = sim.run_for(secs(2));
    assert_eq!(byes(&out), vec![Peer::Leg(1), Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::MediaTimeout, Side::System)));
}

#[test]
fn a_callback_lasts_no_longer_than_the_longest_call() {
    let (mut sim, _) = talking();
    let answered = sim.now;
    let mut out = vec![];
    // Media flows all along.
    while sim.now < answered + secs(3601) && out.is_empty() {
        sim.media_at = sim.now;
        out = sim.run_for(secs(10));
    }
    assert_eq!(ended(&out), Some((EndCause::MaxDuration, Side::System)));
    assert!(sim.now >= answered + secs(3600));
    assert_eq!(byes(&out).len(), 2);
}

#[test]
fn a_repeated_2xx_is_acked_again_and_recorded_once() {
    let (mut sim, [first, _]) = destination_ringing();
    let out = sim.give(response(0, &first, 200, EXTENSION_ANSWER));
    assert_eq!(acked(&out), vec![0]);
    assert!(commands(&out).is_empty());
    assert!(invites(&out).is_empty());
}

/// The extension's session at `version`, in `direction`.
fn extension_session(version: u32, direction: &str) -> String {
    format!(
        "v=0\r\no=- 3 {version} IN IP4 127.0.0.30\r\ns=-\r\nc=IN IP4 127.0.0.30\r\nt=0 0\r\n\
         m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    )
}

/// The destination's session at `version`, in `direction`.
fn destination_session(version: u32, direction: &str) -> String {
    format!(
        "v=0\r\no=- 4 {version} IN IP4 127.0.0.40\r\ns=-\r\nc=IN IP4 127.0.0.40\r\nt=0 0\r\n\
         m=audio 7000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    )
}

/// A re-INVITE from leg `leg` (its INVITE `invite`) with `body`, handed to the callback.
fn reinvite(
    sim: &mut Sim<Callback>,
    leg: usize,
    invite: &crate::message::RawMessage,
    cseq: u32,
    body: &str,
) -> Vec<Output> {
    let extra = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let request = from_leg_with("INVITE", leg, invite, cseq, extra, body);
    sim.give(Input::Modify {
        key: crate::transaction::TransactionKey::of_request(&request).expect("a key"),
        request,
    })
}

#[test]
fn a_hold_from_either_leg_is_passed_to_the_other_and_the_relay_follows_it() {
    let (mut sim, [first, second]) = talking();
    // The extension holds: the destination gets the change inside its dialog, pointed at the
    // relay's side facing it; the extension hears nothing until the destination answers.
    let out = reinvite(&mut sim, 0, &first, 2, &extension_session(4, "sendonly"));
    assert!(reinvite_answers(&out).is_empty());
    let sent = requests_to_leg(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    let (method, hold, _) = &sent[0];
    assert_eq!(*method, "INVITE");
    assert_eq!(hold.header("Call-ID"), second.header("Call-ID"));
    let offered = body(hold);
    assert!(
        offered.contains("a=sendonly") && offered.contains("m=audio 30002"),
        "{offered}"
    );
    assert!(
        !offered.contains("127.0.0.30"),
        "the extension's address is hidden: {offered}"
    );
    let out = sim.give(answer_in_dialog(
        Some(1),
        &hold.to_bytes(),
        200,
        &destination_session(5, "recvonly"),
        &[],
    ));
    assert_eq!(acked(&out), vec![1]);
    assert_eq!(flows(&out), [(RelaySide::Caller, false)]);
    let answers = reinvite_answers(&out);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 200);
    let answered = String::from_utf8_lossy(&answers[0].body).into_owned();
    assert!(answered.contains("a=recvonly") && answered.contains("m=audio 30000"));
    // The 2xx again: ACKed again, and the extension not answered twice.
    let again = sim.give(answer_in_dialog(
        Some(1),
        &hold.to_bytes(),
        200,
        &destination_session(5, "recvonly"),
        &[],
    ));
    assert_eq!(acked(&again), vec![1]);
    assert!(reinvite_answers(&again).is_empty());
    sim.give(Input::Ack(from_leg("ACK", 0, &first, 2)));
    // On hold, silence is no reason to hang up.
    assert!(ended(&sim.run_for(MEDIA_TIMEOUT * 3)).is_none());
    // The destination resumes the call (its own change, the other way): media both ways,
    // silence timed from now.
    let out = reinvite(&mut sim, 1, &second, 2, &destination_session(6, "sendrecv"));
    let (_, resume, _) = requests_to_leg(&out).remove(0);
    assert_eq!(resume.header("Call-ID"), first.header("Call-ID"));
    assert!(body(&resume).contains("m=audio 30000"));
    let out = sim.give(answer_in_dialog(
        Some(0),
        &resume.to_bytes(),
        200,
        &extension_session(5, "sendrecv"),
        &[],
    ));
    assert_eq!(flows(&out), [(RelaySide::Caller, true)]);
    assert_eq!(reinvite_answers(&out)[0].status, 200);
    sim.give(Input::Ack(from_leg("ACK", 1, &second, 2)));
    assert!(ended(&sim.run_for(MEDIA_TIMEOUT - secs(1))).is_none());
    let out = sim.run_for(secs(2));
    assert_eq!(ended(&out), Some((EndCause::MediaTimeout, Side::System)));
}

#[test]
fn a_refresh_is_answered_by_the_edge_and_its_2xx_repeated_until_acked() {
    let (mut sim, [first, _]) = talking();
    let out = reinvite(&mut sim, 0, &first, 2, EXTENSION_ANSWER);
    assert!(
        requests_to_leg(&out).is_empty(),
        "a refresh is not passed on"
    );
    let answers = reinvite_answers(&out);
    assert_eq!(answers[0].status, 200);
    assert!(String::from_utf8_lossy(&answers[0].body).contains("m=audio 30000 RTP/AVP 0 8 101"));
    // Not ACKed: repeated, then given up on — the callback ends (its media still flowing).
    let out = sim.run_for(secs(2));
    assert!(!reinvite_answers(&out).is_empty(), "repeated: {out:?}");
    let mut out = vec![];
    for _ in 0..8 {
        sim.media_at = sim.now;
        out.extend(sim.run_for(secs(5)));
    }
    assert_eq!(ended(&out), Some((EndCause::Failed, Side::System)));
    assert_eq!(byes(&out), vec![Peer::Leg(1), Peer::Leg(0)]);
    // ACKed in time, it is repeated no more.
    let (mut sim, [first, _]) = talking();
    reinvite(&mut sim, 0, &first, 2, "");
    sim.give(Input::Ack(from_leg("ACK", 0, &first, 2)));
    assert!(reinvite_answers(&sim.run_for(secs(40))).is_empty());
}

#[test]
fn one_change_at_a_time_and_none_before_the_bridge() {
    let (mut sim, [first, _]) = destination_ringing();
    let out = reinvite(&mut sim, 0, &first, 2, &extension_session(4, "sendonly"));
    assert_eq!(reinvite_answers(&out)[0].status, 491);
    assert!(requests_to_leg(&out).is_empty());
    let (mut sim, [first, second]) = talking();
    reinvite(&mut sim, 0, &first, 2, &extension_session(4, "sendonly"));
    // The destination's own change crossing it (glare): 491.
    let out = reinvite(&mut sim, 1, &second, 2, &destination_session(5, "sendonly"));
    assert_eq!(reinvite_answers(&out)[0].status, 491);
    assert!(requests_to_leg(&out).is_empty());
}

#[test]
fn a_refused_change_leaves_the_callback_as_it_was_and_a_lost_dialog_ends_it() {
    let (mut sim, [first, _]) = talking();
    let out = reinvite(&mut sim, 0, &first, 2, &extension_session(4, "inactive"));
    let (_, change, _) = requests_to_leg(&out).remove(0);
    let out = sim.give(answer_in_dialog(Some(1), &change.to_bytes(), 488, "", &[]));
    assert_eq!(reinvite_answers(&out)[0].status, 488);
    assert!(flows(&out).is_empty() && ended(&out).is_none() && byes(&out).is_empty());
    // The next change goes on; the destination no longer knows the dialog: the callback ends.
    let out = reinvite(&mut sim, 0, &first, 3, &extension_session(5, "inactive"));
    let (_, change, _) = requests_to_leg(&out).remove(0);
    let out = sim.give(answer_in_dialog(Some(1), &change.to_bytes(), 481, "", &[]));
    assert_eq!(reinvite_answers(&out)[0].status, 481);
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
    assert_eq!(byes(&out), vec![Peer::Leg(1), Peer::Leg(0)]);
}

#[test]
fn a_change_pending_when_the_callback_ends_is_answered_487_and_a_transfer_refused() {
    let (mut sim, [first, second]) = talking();
    reinvite(&mut sim, 0, &first, 2, &extension_session(4, "sendonly"));
    let bye = from_leg("BYE", 1, &second, 3);
    let out = sim.give(Input::Bye(bye));
    assert_eq!(reinvite_answers(&out)[0].status, 487);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Callee)));
    let (mut sim, [first, _]) = talking();
    let refer = from_leg_with(
        "REFER",
        0,
        &first,
        2,
        "Refer-To: <sip:+442079460001@127.0.0.50>\r\n",
        "",
    );
    let out = sim.give(Input::Refer {
        key: crate::transaction::TransactionKey::of_request(&refer).expect("a key"),
        request: refer,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 403);
    assert!(commands(&out).is_empty() && invites(&out).is_empty());
}

#[test]
fn an_answer_that_cannot_be_recorded_hangs_up() {
    let refuse: Refuser = Box::new(|c| match c {
        CallCommand::LegAnswered { .. } => Some(Refusal::Store),
        _ => None,
    });
    let (mut sim, out) = start_with(plan(None), settings(false), refuse);
    let (_, first) = invites(&out).remove(0);
    let out = sim.give(response(0, &first, 200, EXTENSION_ANSWER));
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::Failed, Side::System)));
    assert!(invites(&out).is_empty());
}

#[test]
fn an_extension_answer_with_no_codec_to_offer_on_hangs_up() {
    let (mut sim, first) = extension_ringing();
    let g729 = EXTENSION_ANSWER
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace(
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
            "a=rtpmap:18 G729/8000\r\n",
        );
    let out = sim.give(response(0, &first, 200, &g729));
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::Failed, Side::System)));
    assert!(invites(&out).is_empty());
}

#[test]
fn shutting_down_ends_the_callback_in_every_state() {
    // The extension rings: cancelled; done once its INVITE is over.
    let (mut sim, first) = extension_ringing();
    let out = sim.give(Input::Shutdown);
    assert_eq!(cancelled(&out), vec![0]);
    assert_eq!(ended(&out), Some((EndCause::EdgeShutdown, Side::System)));
    assert!(!sim.call.is_done(sim.now), "the 487 is still to come");
    sim.give(response(0, &first, 487, ""));
    assert!(sim.call.is_done(sim.now));
    // The destination rings: cancelled, the extension hung up; a 200 crossing the CANCEL is
    // ACKed and hung up before the edge lets go.
    let (mut sim, [_, second]) = destination_ringing();
    let out = sim.give(Input::Shutdown);
    assert_eq!(cancelled(&out), vec![1]);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::EdgeShutdown, Side::System)));
    answer_byes(&mut sim, &out);
    assert!(!sim.call.is_done(sim.now));
    let out = sim.give(response(1, &second, 200, DESTINATION_ANSWER));
    assert_eq!(byes(&out), vec![Peer::Leg(1)]);
    assert!(!sim.call.is_done(sim.now));
    answer_byes(&mut sim, &out);
    assert!(sim.call.is_done(sim.now));
    // Bridged: both hung up; done once both BYEs are answered.
    let (mut sim, _) = talking();
    let out = sim.give(Input::Shutdown);
    assert_eq!(byes(&out), vec![Peer::Leg(1), Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::EdgeShutdown, Side::System)));
    assert!(!sim.call.is_done(sim.now));
    answer_byes(&mut sim, &out);
    assert!(sim.call.is_done(sim.now));
    // Taken just as the edge began to drain: recorded as ended, no one rung.
    let (sim, out) = start_with(plan(None), settings(true), Box::new(|_| None));
    assert!(invites(&out).is_empty());
    assert_eq!(ended(&out), Some((EndCause::EdgeShutdown, Side::System)));
    assert!(sim.call.is_done(sim.now));
}
