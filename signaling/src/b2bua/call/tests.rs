//! The call's state machine under simulated time: every race the socket tests cover, and the
//! ones a network rarely shows on demand (CANCEL crossing a 200, two answers at once, a BYE
//! before the ACK, each timer in each state, a recording that fails).

use std::time::{Duration, Instant};

use domain::account::Account;
use domain::call::{CallCommand, Direction, EndCause, LegFailure, LegTarget, Origin, Path, Side};
use domain::device::Transport;
use domain::extension::{Extension, ExtensionStatus};
use domain::ids::{CallId, ExtensionId};

use super::*;
use crate::answer::Answer;
use crate::b2bua::plan::{CallInPlan, Plan, Target};
use crate::b2bua::sim::*;
use crate::media::relay::Side as RelaySide;
use crate::message::{self, RawMessage};
use crate::outgoing::{ClientKey, Outcome};
use crate::transaction::{T1, TransactionKey};

pub(super) const CALLER_TAG: &str = "edge-tag";
pub(super) const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
pub(super) const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

pub(super) fn caller_invite(body: &str) -> RawMessage {
    let content = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    message::from_text(&format!(
        "INVITE sip:+4930123@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKcaller\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+4915111@127.0.0.9>;tag=caller\r\n\
         To: <sip:+4930123@127.0.0.1>\r\n\
         Call-ID: caller-call\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@127.0.0.9:5060>\r\n\
         {content}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// A request from the caller inside the call's dialog.
pub(super) fn from_caller(method: &str, cseq: u32) -> RawMessage {
    from_caller_with(method, cseq, "")
}

/// As [`from_caller`], with `extra` header lines (each ending CRLF).
pub(super) fn from_caller_with(method: &str, cseq: u32, extra: &str) -> RawMessage {
    message::from_text(&format!(
        "{method} sip:ringledger@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bK{method}{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+4915111@127.0.0.9>;tag=caller\r\n\
         To: <sip:+4930123@127.0.0.1>;tag={CALLER_TAG}\r\n\
         Call-ID: caller-call\r\n\
         CSeq: {cseq} {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    ))
}

pub(super) fn target(n: u8, delay: Duration) -> Target {
    Target {
        target: LegTarget::Pstn {
            number: e164(&format!("+49301234{n:02}")),
        },
        path: Path::Data,
        request_uri: format!("sip:leg{n}@127.0.0.{}:5060", 20 + n),
        destination: addr(&format!("127.0.0.{}:5060", 20 + n)),
        transport: Transport::Udp,
        delay,
        extension: None,
        headers: vec![],
    }
}

pub(super) fn plan(targets: Vec<Target>) -> Plan {
    Plan {
        direction: Direction::Inbound,
        origin: Origin::Pstn {
            trunk: "carrier".into(),
        },
        path: Path::Data,
        account: Account::default(),
        from: "+4915111".into(),
        to: "+4930123".into(),
        caller_id: "+4915111".into(),
        targets,
        alternate: None,
        ring_timeout: Some(secs(30)),
        extension: None,
        dial_intent: None,
        refusal: None,
        call_in: None,
        menu: None,
    }
}

pub(super) fn settings() -> Settings {
    Settings {
        edge_id: uuid::Uuid::from_u128(7),
        ring: secs(60),
        call_in: secs(15),
        max_duration: secs(3600),
        media: None,
        draining: false,
        call_in_webhook: false,
        extension_transfers: false,
    }
}

pub(super) fn relayed(timeout: Duration) -> Settings {
    Settings {
        media: Some(MediaPorts {
            address: "127.0.0.1".parse().expect("ip"),
            caller_port: 30000,
            callee_port: 30002,
            timeout,
        }),
        ..settings()
    }
}

/// A call started by the caller's INVITE.
impl Sim<Call> {
    pub(super) fn start(plan: Plan, settings: Settings) -> (Self, Vec<Output>) {
        Self::start_with(plan, settings, Box::new(|_| None))
    }

    fn start_with(plan: Plan, settings: Settings, refuse: Refuser) -> (Self, Vec<Output>) {
        Self::start_invite(plan, settings, refuse, caller_invite(OFFER))
    }

    pub(super) fn start_invite(
        plan: Plan,
        settings: Settings,
        refuse: Refuser,
        invite: RawMessage,
    ) -> (Self, Vec<Output>) {
        let now = Instant::now();
        let caller = Caller {
            key: TransactionKey::of_request(&invite).expect("a transaction"),
            invite,
            reach: Reach {
                peer: addr("127.0.0.9:5060"),
                transport: "UDP",
            },
            tag: CALLER_TAG.into(),
        };
        let call = Call::new(
            CallId(uuid::Uuid::from_u128(1)),
            plan,
            caller,
            settings,
            now,
        );
        Sim::new(call, now, refuse)
    }
}

/// The statuses the caller was answered with.
pub(super) fn to_caller(outputs: &[Output]) -> Vec<u16> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Respond { answer, tag, .. } if tag == CALLER_TAG => Some(answer.status),
            _ => None,
        })
        .collect()
}

/// A call with `n` legs placed at once, each ringing.
pub(super) fn ringing(n: u8, settings: Settings) -> (Sim<Call>, Vec<(usize, RawMessage)>) {
    let targets = (0..n).map(|i| target(i, Duration::ZERO)).collect();
    let (mut sim, out) = Sim::start(plan(targets), settings);
    let legs = invites(&out);
    assert_eq!(legs.len(), usize::from(n));
    for (leg, invite) in &legs {
        sim.give(response(*leg, invite, 180, ""));
    }
    (sim, legs)
}

/// A call answered by its only leg (and the caller's ACK not yet in).
pub(super) fn answered(settings: Settings) -> (Sim<Call>, RawMessage) {
    let (mut sim, legs) = ringing(1, settings);
    let out = sim.give(response(0, &legs[0].1, 200, ANSWER));
    assert_eq!(to_caller(&out), vec![200]);
    (sim, legs[0].1.clone())
}

#[test]
fn each_step_is_recorded_before_anyone_hears_of_it() {
    let (mut sim, out) = Sim::start(plan(vec![target(0, Duration::ZERO)]), settings());
    // The call, then its leg, are recorded before the leg's INVITE leaves.
    assert_eq!(steps(&out), ["start", "leg", "invite"]);
    let invite = invites(&out).remove(0).1;
    let out = sim.give(response(0, &invite, 200, ANSWER));
    let recorded = out
        .iter()
        .position(|o| {
            matches!(o, Output::Record { command, .. }
                if matches!(**command, CallCommand::LegAnswered { .. }))
        })
        .expect("the answer recorded");
    let told = out
        .iter()
        .position(|o| matches!(o, Output::Respond { tag, .. } if tag == CALLER_TAG))
        .expect("the caller told");
    assert!(recorded < told, "{out:?}");
    assert_eq!(acked(&out), vec![0]);
}

#[test]
fn the_first_answer_wins_and_the_other_legs_are_cancelled() {
    let (mut sim, legs) = ringing(2, settings());
    let out = sim.give(response(1, &legs[1].1, 200, ANSWER));
    assert_eq!(to_caller(&out), vec![200]);
    assert_eq!(cancelled(&out), vec![0]);
    assert_eq!(
        leg_failures(&out),
        vec![(487, LegFailure::AnsweredElsewhere)]
    );
    // The cancelled leg's 487 changes nothing.
    let out = sim.give(response(0, &legs[0].1, 487, ""));
    assert!(
        to_caller(&out).is_empty() && commands(&out).is_empty(),
        "{out:?}"
    );
}

#[test]
fn two_answers_at_once_make_one_call_and_the_second_is_hung_up() {
    let (mut sim, legs) = ringing(2, settings());
    let first = sim.give(response(0, &legs[0].1, 200, ANSWER));
    let second = sim.give(response(1, &legs[1].1, 200, ANSWER));
    assert_eq!(to_caller(&first), vec![200]);
    assert!(to_caller(&second).is_empty(), "the caller answered twice");
    // The loser's 2xx is ACKed (it opened a dialog) and hung up at once.
    assert_eq!(acked(&second), vec![1]);
    assert_eq!(byes(&second), vec![Peer::Leg(1)]);
    assert!(ended(&second).is_none(), "the winner's call goes on");
    // Its 200, repeated, is ACKed again and not hung up twice.
    let again = sim.give(response(1, &legs[1].1, 200, ANSWER));
    assert_eq!((acked(&again), byes(&again)), (vec![1], vec![]));
}

#[test]
fn a_cancel_crossing_the_answer_ends_the_call_and_hangs_up_the_late_leg() {
    let (mut sim, legs) = ringing(1, settings());
    let out = sim.give(Input::Cancel);
    assert_eq!(to_caller(&out), vec![487]);
    assert_eq!(ended(&out), Some((EndCause::CallerCancelled, Side::Caller)));
    assert_eq!(cancelled(&out), vec![0]);
    // The leg's 200 crossed the CANCEL: ACKed and hung up, never answered to the caller,
    // nor billed.
    let out = sim.give(response(0, &legs[0].1, 200, ANSWER));
    assert!(to_caller(&out).is_empty());
    assert_eq!(answered_legs(&out), 0, "{out:?}");
    assert_eq!((acked(&out), byes(&out)), (vec![0], vec![Peer::Leg(0)]));
    // A CANCEL for a call answered already does nothing.
    let (mut sim, _) = answered(settings());
    let out = sim.give(Input::Cancel);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_cancel_before_any_response_is_sent_only_once_the_leg_is_heard() {
    let (mut sim, out) = Sim::start(plan(vec![target(0, Duration::ZERO)]), settings());
    let invite = invites(&out).remove(0).1;
    let out = sim.give(Input::Cancel);
    // RFC 3261 §9.1: no CANCEL before a provisional response.
    assert!(cancelled(&out).is_empty());
    let out = sim.give(response(0, &invite, 100, ""));
    assert_eq!(cancelled(&out), vec![0]);
}

#[test]
fn a_bye_before_the_ack_ends_the_call_and_stops_the_200s() {
    let (mut sim, _) = answered(settings());
    let out = sim.give(Input::Bye(from_caller("BYE", 2)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200))
    );
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
    // No 200 repeated after the call ended, and no second end.
    let out = sim.run_for(secs(40));
    assert!(
        to_caller(&out).is_empty() && ended(&out).is_none(),
        "{out:?}"
    );
    assert!(sim.call.is_done(sim.now));
}

#[test]
fn an_unacked_200_is_repeated_at_doubling_intervals_then_the_call_is_hung_up() {
    let (mut sim, _) = answered(settings());
    let start = sim.now;
    let mut repeats = vec![];
    let mut end = None;
    while end.is_none() && sim.now < start + secs(40) {
        let next = sim.call.next_timeout(sim.now, None).expect("a timer");
        let out = sim.run_until(next);
        if !to_caller(&out).is_empty() {
            repeats.push(sim.now - start);
        }
        end = ended(&out).map(|e| (e, sim.now - start, byes(&out)));
    }
    // After T1, then at doubling intervals up to T2 (4 s, 8 T1) each.
    let expected: Vec<Duration> = [1, 3, 7, 15, 23, 31, 39, 47]
        .iter()
        .map(|n| T1 * *n)
        .collect();
    assert_eq!(&repeats[..expected.len()], &expected[..]);
    let (cause, at, byes) = end.expect("hung up");
    assert_eq!(cause, (EndCause::Failed, Side::System));
    assert_eq!(at, 64 * T1);
    assert_eq!(byes, vec![Peer::Leg(0), Peer::Caller]);
}

#[test]
fn the_ack_stops_the_repeats_and_the_call_goes_on() {
    let (mut sim, _) = answered(settings());
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let out = sim.run_for(secs(60));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn an_unanswered_call_ends_at_the_ring_timeout_and_not_before() {
    let (mut sim, _) = ringing(2, settings());
    // The plan's ring timeout (30 s) is below the edge's (60 s).
    let out = sim.run_for(secs(30) - Duration::from_millis(1));
    assert!(out.is_empty(), "{out:?}");
    let out = sim.run_for(Duration::from_millis(1));
    assert_eq!(to_caller(&out), vec![480]);
    assert_eq!(cancelled(&out), vec![0, 1]);
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::System)));
}

#[test]
fn an_answered_call_ends_at_the_longest_duration() {
    let settings = Settings {
        max_duration: secs(100),
        ..settings()
    };
    let (mut sim, _) = answered(settings);
    sim.give(Input::Ack(from_caller("ACK", 1)));
    assert!(sim.run_for(secs(99)).is_empty());
    let out = sim.run_for(secs(1));
    assert_eq!(byes(&out), vec![Peer::Leg(0), Peer::Caller]);
    assert_eq!(ended(&out), Some((EndCause::MaxDuration, Side::System)));
}

#[test]
fn media_silence_counts_from_the_answer() {
    let (mut sim, legs) = ringing(1, relayed(secs(10)));
    // Rings for 20 s with no media, which is no reason to hang up.
    assert!(sim.run_for(secs(20)).is_empty());
    sim.give(response(0, &legs[0].1, 200, ANSWER));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    assert!(
        sim.run_for(secs(5)).is_empty(),
        "hung up soon after the answer"
    );
    // A packet now: the call ends 10 s after it, not 10 s after the answer.
    sim.media_at = sim.now;
    let out = sim.run_for(secs(9));
    assert!(out.is_empty(), "{out:?}");
    let out = sim.run_for(secs(1));
    assert_eq!(ended(&out), Some((EndCause::MediaTimeout, Side::System)));
}

#[test]
fn a_delayed_leg_is_placed_after_its_delay_unless_the_call_was_answered() {
    let (mut sim, out) = Sim::start(
        plan(vec![target(0, Duration::ZERO), target(1, secs(5))]),
        settings(),
    );
    assert_eq!(invites(&out).len(), 1);
    assert_eq!(
        sim.call.next_timeout(sim.now, None),
        Some(sim.now + secs(5))
    );
    let out = sim.run_for(secs(5));
    assert_eq!(invites(&out).iter().map(|i| i.0).collect::<Vec<_>>(), [1]);
    // Answered before the delay: never placed.
    let (mut sim, out) = Sim::start(
        plan(vec![target(0, Duration::ZERO), target(1, secs(5))]),
        settings(),
    );
    let invite = invites(&out).remove(0).1;
    sim.give(response(0, &invite, 200, ANSWER));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    assert!(invites(&sim.run_for(secs(10))).is_empty());
}

#[test]
fn with_every_leg_failed_the_caller_hears_the_best_refusal() {
    let (mut sim, legs) = ringing(2, settings());
    let out = sim.give(response(0, &legs[0].1, 404, ""));
    assert!(to_caller(&out).is_empty(), "another leg still rings");
    let out = sim.give(response(1, &legs[1].1, 486, ""));
    assert_eq!(to_caller(&out), vec![486]);
    assert_eq!(ended(&out), Some((EndCause::Busy, Side::Callee)));
    // A leg that never answers (Timer B) reads as no answer.
    let (mut sim, legs) = ringing(1, settings());
    let out = sim.give(Input::Outcome {
        leg: Some(0),
        key: ClientKey::of_response(&reply(&legs[0].1, 200, "x", "")).expect("key"),
        outcome: Outcome::Timeout,
    });
    assert_eq!(to_caller(&out), vec![480]);
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::Callee)));
}

#[test]
fn an_answer_that_cannot_be_recorded_is_no_call() {
    let refuse: Refuser =
        Box::new(|c| matches!(c, CallCommand::LegAnswered { .. }).then_some(Refusal::Store));
    let (mut sim, out) = Sim::start_with(plan(vec![target(0, Duration::ZERO)]), settings(), refuse);
    let invite = invites(&out).remove(0).1;
    let out = sim.give(response(0, &invite, 200, ANSWER));
    // The callee is hung up; the caller hears 500, never 200.
    assert_eq!(to_caller(&out), vec![500]);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::Failed, Side::System)));
}

#[test]
fn a_call_the_domain_refuses_is_answered_403_and_places_no_leg() {
    let refuse: Refuser = Box::new(|c| {
        matches!(c, CallCommand::Start { .. })
            .then(|| Refusal::Domain("the account is suspended".into()))
    });
    let (_, out) = Sim::start_with(plan(vec![target(0, Duration::ZERO)]), settings(), refuse);
    assert_eq!(to_caller(&out), vec![403]);
    assert!(invites(&out).is_empty());
    // A store failure is ours: 503.
    let refuse: Refuser =
        Box::new(|c| matches!(c, CallCommand::Start { .. }).then_some(Refusal::Store));
    let (_, out) = Sim::start_with(plan(vec![target(0, Duration::ZERO)]), settings(), refuse);
    assert_eq!(to_caller(&out), vec![503]);
}

#[test]
fn a_leg_that_cannot_be_recorded_is_not_rung() {
    let refuse: Refuser = Box::new(|c| match c {
        CallCommand::StartLeg { target, .. } => (target == &target_of(0)).then_some(Refusal::Store),
        _ => None,
    });
    let targets = vec![target(0, Duration::ZERO), target(1, Duration::ZERO)];
    let (_, out) = Sim::start_with(plan(targets), settings(), refuse);
    let rung: Vec<String> = invites(&out)
        .iter()
        .map(|(_, i)| i.start_line.clone())
        .collect();
    assert_eq!(rung, ["INVITE sip:leg1@127.0.0.21:5060 SIP/2.0"]);
}

fn target_of(n: u8) -> LegTarget {
    target(n, Duration::ZERO).target
}

#[test]
fn shutting_down_ends_the_call_in_every_state() {
    // Ringing: the legs are cancelled and the caller refused; done once the cancelled leg's
    // INVITE is over (a 200 crossing the CANCEL would still be ACKed and hung up).
    let (mut sim, legs) = ringing(1, settings());
    let out = sim.give(Input::Shutdown);
    assert_eq!(to_caller(&out), vec![503]);
    assert_eq!(cancelled(&out), vec![0]);
    assert_eq!(ended(&out), Some((EndCause::EdgeShutdown, Side::System)));
    assert!(!sim.call.is_done(sim.now), "the leg's 487 is still to come");
    sim.give(response(0, &legs[0].1, 487, ""));
    assert!(sim.call.is_done(sim.now));
    // Answered: BYE both sides; done once both BYEs are answered, not before.
    let (mut sim, _) = answered(settings());
    let out = sim.give(Input::Shutdown);
    assert_eq!(byes(&out), vec![Peer::Leg(0), Peer::Caller]);
    assert_eq!(ended(&out), Some((EndCause::EdgeShutdown, Side::System)));
    assert!(!sim.call.is_done(sim.now));
    for output in &out {
        if let Output::Request { to, branch, .. } = output {
            assert!(!sim.call.is_done(sim.now));
            let leg = match to {
                Peer::Caller => None,
                Peer::Leg(l) => Some(*l),
            };
            sim.give(Input::Outcome {
                leg,
                key: ClientKey {
                    branch: branch.clone(),
                    method: "BYE".into(),
                },
                outcome: Outcome::Timeout,
            });
        }
    }
    assert!(sim.call.is_done(sim.now));
    // Over already: nothing more.
    assert!(sim.give(Input::Shutdown).is_empty());
    // Taken as the edge began to drain: refused unrecorded.
    let (sim, out) = Sim::start(
        plan(vec![target(0, Duration::ZERO)]),
        Settings {
            draining: true,
            ..settings()
        },
    );
    assert_eq!(to_caller(&out), vec![503]);
    assert!(commands(&out).is_empty());
    assert!(sim.call.is_done(sim.now));
}

#[test]
fn the_callee_hanging_up_ends_the_call_and_a_stranger_bye_is_refused() {
    let (mut sim, invite) = answered(settings());
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let mut stranger = from_caller("BYE", 2);
    stranger.headers.retain(|(n, _)| n != "Call-ID");
    stranger.headers.push(("Call-ID".into(), "nobody".into()));
    let out = sim.give(Input::Bye(stranger));
    assert!(
        matches!(&out[..], [Output::ByeAnswer(a)] if a.status == 481),
        "{out:?}"
    );
    let from_leg = from_leg("BYE", 0, &invite, 1);
    let out = sim.give(Input::Bye(from_leg));
    assert_eq!(byes(&out), vec![Peer::Caller]);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Callee)));
    // It lingers for late answers, then is done.
    assert!(!sim.call.is_done(sim.now));
    sim.run_for(LINGER);
    assert!(sim.call.is_done(sim.now));
}

pub(super) fn call_in_plan() -> CallInPlan {
    let mut fallback = target(9, Duration::ZERO);
    fallback.path = Path::AlternateCallOut;
    CallInPlan {
        extension_id: ExtensionId(uuid::Uuid::from_u128(5)),
        number: e164("+4915199"),
        access_number: e164("+4930999"),
        notify: vec![(
            "sip:alice@127.0.0.30:5060".into(),
            addr("127.0.0.30:5060"),
            Transport::Udp,
        )],
        fallback,
        keyed: None,
    }
}

pub(super) fn serving() -> Extension {
    Extension {
        status: ExtensionStatus::Verified,
        ..Extension::default()
    }
}

fn awaiting_call_in() -> (Sim<Call>, Vec<Output>) {
    let plan = Plan {
        call_in: Some(call_in_plan()),
        ..plan(vec![])
    };
    let (mut sim, out) = Sim::start(plan, relayed(secs(30)));
    sim.edge.extension = Some(serving());
    (sim, out)
}

pub(super) fn arrival(body: &str) -> Arrival {
    let invite = message::from_text(&format!(
        "INVITE sip:+4930999@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.40:5060;branch=z9hG4bKcallin\r\n\
         From: <sip:+4915199@127.0.0.40>;tag=ext\r\n\
         To: <sip:+4930999@127.0.0.1>\r\n\
         Call-ID: call-in\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:ext@127.0.0.40:5060>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    Arrival {
        key: TransactionKey::of_request(&invite).expect("a transaction"),
        invite,
        reach: Reach {
            peer: addr("127.0.0.40:5060"),
            transport: "UDP",
        },
        tag: "in-tag".into(),
    }
}

#[test]
fn a_call_in_is_awaited_then_the_extension_is_called_out_at_the_wait() {
    let (mut sim, out) = awaiting_call_in();
    // Half the ring time (30 s) at most: 15 s, which the device is told.
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::AwaitCallIn { ttl_secs: 15, .. }))
    );
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Notice { .. }))
            .count(),
        1
    );
    assert_eq!(to_caller(&out), vec![180]);
    assert!(invites(&out).is_empty());
    assert!(invites(&sim.run_for(secs(14))).is_empty());
    let out = sim.run_for(secs(1));
    let placed = invites(&out);
    assert_eq!(placed.len(), 1, "the extension called out");
    assert!(placed[0].1.start_line.contains("leg9"));
    assert!(out.iter().any(|o| matches!(o, Output::ForgetCallIn { .. })));
    // ...and the call-out has the rest of the ring time: it ends at 30 s.
    assert!(ended(&sim.run_for(secs(14))).is_none());
    let out = sim.run_for(secs(1));
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::System)));
}

#[test]
fn an_extension_removed_while_awaited_is_not_called_out() {
    let (mut sim, _) = awaiting_call_in();
    sim.edge.extension = None;
    let out = sim.run_for(secs(1));
    assert!(invites(&out).is_empty());
    assert_eq!(to_caller(&out), vec![480]);
    assert_eq!(ended(&out), Some((EndCause::Rejected, Side::System)));
}

#[test]
fn a_call_in_is_bridged_after_its_leg_is_recorded_answered() {
    let (mut sim, _) = awaiting_call_in();
    let out = sim.give(Input::CallIn(arrival(OFFER)));
    let statuses: Vec<(String, u16)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Respond { tag, answer, .. } => Some((tag.clone(), answer.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [("in-tag".to_string(), 200), (CALLER_TAG.to_string(), 200)]
    );
    let started = commands(&out).iter().position(|c| {
        matches!(
            c,
            CallCommand::StartLeg {
                path: Path::CallIn,
                ..
            }
        )
    });
    assert!(started.is_some(), "{out:?}");
    assert_eq!(answered_legs(&out), 1);
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::Bridge { .. }))
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::AdoptArrival { leg: 0 }))
    );
    // A second call-in finds the call taken.
    let out = sim.give(Input::CallIn(arrival(OFFER)));
    assert!(
        matches!(&out[..], [Output::Forget(_), Output::Respond { answer, .. }] if answer.status == 480),
        "{out:?}"
    );
}

#[test]
fn a_call_in_with_no_codec_in_common_is_refused_and_the_extension_called_out() {
    let (mut sim, _) = awaiting_call_in();
    let video = "v=0\r\no=- 1 1 IN IP4 127.0.0.40\r\ns=-\r\nc=IN IP4 127.0.0.40\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let out = sim.give(Input::CallIn(arrival(video)));
    assert!(out.iter().any(|o| matches!(o, Output::Respond { tag, answer, .. } if tag == "in-tag" && answer.status == 488)));
    assert_eq!(invites(&out).len(), 1, "called out instead");
}

#[test]
fn without_a_relay_the_extension_is_called_out_at_once() {
    let plan = Plan {
        call_in: Some(call_in_plan()),
        ..plan(vec![])
    };
    let (_, out) = Sim::start(plan, settings());
    assert!(
        !commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::AwaitCallIn { .. }))
    );
    assert_eq!(invites(&out).len(), 1);
}

#[test]
fn a_caller_cancel_while_a_call_in_is_awaited_stops_the_wait() {
    let (mut sim, _) = awaiting_call_in();
    let out = sim.give(Input::Cancel);
    assert!(out.iter().any(|o| matches!(o, Output::ForgetCallIn { .. })));
    assert_eq!(to_caller(&out), vec![487]);
    // No call-out later.
    assert!(invites(&sim.run_for(secs(40))).is_empty());
}

/// A call from a caller asking for a session timer of `secs`.
fn timed_caller(secs: u64) -> (Sim<Call>, Vec<Output>) {
    let refuse: Refuser = Box::new(|_| None);
    let plan = plan(vec![target(0, Duration::ZERO)]);
    Sim::start_invite(plan, settings(), refuse, caller_invite_timed(secs))
}

fn caller_invite_timed(secs: u64) -> RawMessage {
    let mut invite = caller_invite(OFFER);
    invite
        .headers
        .push(("Supported".into(), "100rel, timer".into()));
    invite
        .headers
        .push(("Session-Expires".into(), format!("{secs};refresher=uac")));
    invite
}

/// A re-INVITE from the caller, with `body` and these extra headers.
pub(super) fn caller_reinvite(
    cseq: u32,
    body: &str,
    extra: &[(&str, String)],
) -> (TransactionKey, RawMessage) {
    let mut request = from_caller("INVITE", cseq);
    for (name, value) in extra {
        request.headers.push((name.to_string(), value.clone()));
    }
    if !body.is_empty() {
        request
            .headers
            .push(("Content-Type".into(), "application/sdp".into()));
        request.body = body.as_bytes().to_vec();
    }
    (
        TransactionKey::of_request(&request).expect("a transaction"),
        request,
    )
}

fn refresh_headers(secs: u64) -> Vec<(&'static str, String)> {
    vec![
        ("Supported", "timer".into()),
        ("Session-Expires", format!("{secs};refresher=uac")),
    ]
}

/// The answers given to re-INVITEs (responses without the caller's INVITE tag).
fn header_of(answer: &Answer, name: &str) -> Option<String> {
    answer.headers.iter().find_map(|h| {
        let text = h.to_string();
        let (n, v) = text.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn timed_answered(secs: u64) -> Sim<Call> {
    let (mut sim, out) = timed_caller(secs);
    let invite = invites(&out).remove(0).1;
    let out = sim.give(response(0, &invite, 200, ANSWER));
    let ok = out
        .iter()
        .find_map(|o| match o {
            Output::Respond { answer, tag, .. } if tag == CALLER_TAG => Some(answer.clone()),
            _ => None,
        })
        .expect("the caller's 200");
    assert_eq!(ok.status, 200);
    assert_eq!(
        header_of(&ok, "Session-Expires"),
        Some(format!("{secs};refresher=uac"))
    );
    assert_eq!(header_of(&ok, "Require"), Some("timer".into()));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    sim
}

#[test]
fn a_session_timer_is_taken_and_a_caller_that_stops_refreshing_is_hung_up() {
    let mut sim = timed_answered(120);
    // RFC 4028 §10: given up at 120 - min(32, 40) = 88 s without a refresh.
    assert!(sim.run_for(secs(87)).is_empty());
    let out = sim.run_for(secs(1));
    assert_eq!(byes(&out), vec![Peer::Leg(0), Peer::Caller]);
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
}

#[test]
fn a_refresh_keeps_the_call_and_is_answered_with_the_same_session() {
    let mut sim = timed_answered(120);
    assert!(sim.run_for(secs(60)).is_empty());
    // The caller refreshes with its session unchanged (same o= version).
    let (key, reinvite) = caller_reinvite(2, OFFER, &refresh_headers(120));
    let out = sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    let answers = reinvite_answers(&out);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 200);
    assert_eq!(
        header_of(answers[0], "Session-Expires"),
        Some("120;refresher=uac".into())
    );
    // The edge's own session description, pointing where the first 200 pointed.
    assert!(String::from_utf8_lossy(&answers[0].body).contains("m=audio"));
    sim.give(Input::Ack(from_caller("ACK", 2)));
    // Not hung up at the old expiry; 88 s after the refresh it is.
    assert!(
        sim.run_for(secs(87))
            .iter()
            .all(|o| ended(std::slice::from_ref(o)).is_none())
    );
    let out = sim.run_for(secs(1));
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
}

#[test]
fn a_refresh_2xx_is_repeated_until_its_ack() {
    let mut sim = timed_answered(120);
    let (key, reinvite) = caller_reinvite(2, OFFER, &refresh_headers(120));
    sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    let out = sim.run_for(T1);
    assert_eq!(reinvite_answers(&out).len(), 1, "{out:?}");
    sim.give(Input::Ack(from_caller("ACK", 2)));
    let out = sim.run_for(secs(10));
    assert!(reinvite_answers(&out).is_empty(), "{out:?}");
}

#[test]
fn a_refresh_without_a_timer_asked_for_arms_none() {
    let (mut sim, _) = answered(settings());
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let (key, reinvite) = caller_reinvite(2, OFFER, &[]);
    let out = sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    let answers = reinvite_answers(&out);
    assert_eq!(answers[0].status, 200);
    assert_eq!(header_of(answers[0], "Session-Expires"), None);
    assert!(
        requests_to_leg(&out).is_empty(),
        "a refresh is not passed on"
    );
}

/// The caller's session put on hold (`a=sendonly`, a new version) or taken off it.
fn caller_session(version: u32, direction: &str) -> String {
    OFFER.replace("o=- 1 1", &format!("o=- 1 {version}")) + &format!("a={direction}\r\n")
}

fn callee_session(version: u32, direction: &str) -> String {
    ANSWER.replace("o=- 2 2", &format!("o=- 2 {version}")) + &format!("a={direction}\r\n")
}

/// The caller asks for a change (`body`): what the edge sent the callee.
fn caller_changes(sim: &mut Sim<Call>, cseq: u32, body: &str) -> (Vec<Output>, RawMessage) {
    let (key, reinvite) = caller_reinvite(cseq, body, &[]);
    let out = sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    let sent = requests_to_leg(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    (out, sent[0].1.clone())
}

#[test]
fn a_hold_is_passed_on_and_the_relay_follows_it() {
    let timeout = secs(20);
    let (mut sim, invite) = answered(relayed(timeout));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    // The caller holds: the callee gets the same change inside its dialog, pointed at the
    // relay; the caller hears nothing until the callee answers.
    let (out, hold) = caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    assert!(reinvite_answers(&out).is_empty());
    assert_eq!(hold.header("Call-ID"), invite.header("Call-ID"));
    assert_eq!(hold.header("CSeq"), Some("2 INVITE"));
    let offered = String::from_utf8_lossy(&hold.body).into_owned();
    assert!(offered.contains("a=sendonly"), "{offered}");
    assert!(offered.contains("c=IN IP4 127.0.0.1") && offered.contains("m=audio 30002"));
    // The callee takes it: its 2xx ACKed (CSeq 2), media to the caller stopped, the caller
    // answered with the callee's answer pointed at the relay.
    let out = sim.give(answer_in_dialog(
        Some(0),
        &hold.to_bytes(),
        200,
        &callee_session(3, "recvonly"),
        &[],
    ));
    let ack = out
        .iter()
        .find_map(|o| match o {
            Output::Ack {
                to: Peer::Leg(0),
                bytes,
            } => Some(message::from_text(&String::from_utf8_lossy(bytes))),
            _ => None,
        })
        .expect("the ACK of the callee's 2xx");
    assert_eq!(ack.header("CSeq"), Some("2 ACK"));
    assert_eq!(flows(&out), [(RelaySide::Caller, false)]);
    let again = sim.give(answer_in_dialog(
        Some(0),
        &hold.to_bytes(),
        200,
        &callee_session(3, "recvonly"),
        &[],
    ));
    assert_eq!(acked(&again), vec![0], "a repeated 2xx is ACKed again");
    assert!(reinvite_answers(&again).is_empty());
    let answers = reinvite_answers(&out);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, 200);
    let answered = String::from_utf8_lossy(&answers[0].body).into_owned();
    assert!(answered.contains("a=recvonly") && answered.contains("m=audio 30000"));
    sim.give(Input::Ack(from_caller("ACK", 2)));
    // On hold, silence is no reason to hang up.
    assert!(ended(&sim.run_for(secs(600))).is_none());
    // Resumed: media flows both ways again, and silence is timed from now.
    let (_, resume) = caller_changes(&mut sim, 3, &caller_session(3, "sendrecv"));
    assert_eq!(resume.header("CSeq"), Some("3 INVITE"));
    let out = sim.give(answer_in_dialog(
        Some(0),
        &resume.to_bytes(),
        200,
        &callee_session(4, "sendrecv"),
        &[],
    ));
    assert_eq!(flows(&out), [(RelaySide::Caller, true)]);
    sim.give(Input::Ack(from_caller("ACK", 3)));
    assert!(ended(&sim.run_for(timeout - secs(1))).is_none());
    let out = sim.run_for(secs(2));
    assert_eq!(ended(&out), Some((EndCause::MediaTimeout, Side::System)));
}

#[test]
fn a_change_the_other_side_refuses_leaves_the_call_as_it_was() {
    let (mut sim, _) = answered(relayed(secs(60)));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let (_, hold) = caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    let out = sim.give(answer_in_dialog(Some(0), &hold.to_bytes(), 488, "", &[]));
    assert_eq!(reinvite_answers(&out)[0].status, 488);
    assert!(flows(&out).is_empty() && ended(&out).is_none() && byes(&out).is_empty());
    // The next change goes through as if the first never was.
    let (_, again) = caller_changes(&mut sim, 3, &caller_session(3, "sendonly"));
    assert_eq!(again.header("CSeq"), Some("3 INVITE"));
}

#[test]
fn one_change_at_a_time() {
    let (mut sim, invite) = answered(relayed(secs(60)));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let (_, hold) = caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    // The callee's own change crossing it (glare): 491, and so is the caller's next.
    let theirs = from_leg_with(
        "INVITE",
        0,
        &invite,
        1,
        "Content-Type: application/sdp\r\n",
        &callee_session(3, "sendonly"),
    );
    let key = TransactionKey::of_request(&theirs).expect("a transaction");
    let out = sim.give(Input::Modify {
        key,
        request: theirs,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 491);
    let (key, second) = caller_reinvite(3, &caller_session(3, "inactive"), &[]);
    let out = sim.give(Input::Modify {
        key,
        request: second,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 491);
    assert!(requests_to_leg(&out).is_empty());
    // The callee answers the edge's 491: so is the caller answered, to retry on its timer.
    let out = sim.give(answer_in_dialog(Some(0), &hold.to_bytes(), 491, "", &[]));
    assert_eq!(reinvite_answers(&out)[0].status, 491);
    assert!(ended(&out).is_none());
}

#[test]
fn a_change_the_other_side_no_longer_knows_ends_the_call() {
    let (mut sim, _) = answered(relayed(secs(60)));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let (_, hold) = caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    let out = sim.give(answer_in_dialog(Some(0), &hold.to_bytes(), 481, "", &[]));
    assert_eq!(reinvite_answers(&out)[0].status, 481);
    assert_eq!(byes(&out), vec![Peer::Leg(0), Peer::Caller]);
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
    // A callee gone without a word (its network dropped mid-change): the change times out,
    // the caller hears 408, and the call ends the same way.
    let (mut sim, _) = answered(relayed(secs(60)));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let (out, _) = caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    let (_, _, branch) = requests_to_leg(&out).remove(0);
    let out = sim.give(Input::Outcome {
        leg: Some(0),
        key: ClientKey {
            branch,
            method: "INVITE".into(),
        },
        outcome: Outcome::Timeout,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 408);
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
}

#[test]
fn an_update_from_the_callee_reaches_the_caller_and_needs_no_ack() {
    let (mut sim, invite) = answered(relayed(secs(60)));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let update = from_leg_with(
        "UPDATE",
        0,
        &invite,
        1,
        "Content-Type: application/sdp\r\n",
        &callee_session(3, "sendonly"),
    );
    let key = TransactionKey::of_request(&update).expect("a transaction");
    let out = sim.give(Input::Modify {
        key,
        request: update,
    });
    let (bytes, method) = out
        .iter()
        .find_map(|o| match o {
            Output::Request {
                to: Peer::Caller,
                method,
                bytes,
                ..
            } => Some((bytes.clone(), *method)),
            _ => None,
        })
        .expect("the change sent to the caller");
    assert_eq!(method, "UPDATE");
    let sent = message::from_text(&String::from_utf8_lossy(&bytes));
    assert_eq!(sent.header("Call-ID"), Some("caller-call"));
    assert!(String::from_utf8_lossy(&sent.body).contains("m=audio 30000"));
    let out = sim.give(answer_in_dialog(
        None,
        &bytes,
        200,
        &caller_session(2, "recvonly"),
        &[],
    ));
    assert!(acked(&out).is_empty(), "no ACK for an UPDATE");
    assert_eq!(flows(&out), [(RelaySide::Callee, false)]);
    let answers = reinvite_answers(&out);
    assert_eq!(answers[0].status, 200);
    // An UPDATE's 2xx is not repeated.
    assert!(
        sim.run_for(secs(2))
            .iter()
            .all(|o| !matches!(o, Output::Respond { .. }))
    );
}

#[test]
fn a_change_pending_when_the_call_ends_is_answered_487() {
    let (mut sim, invite) = answered(relayed(secs(60)));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    let out = sim.give(Input::Bye(from_leg("BYE", 0, &invite, 2)));
    let statuses: Vec<u16> = reinvite_answers(&out).iter().map(|a| a.status).collect();
    assert_eq!(statuses, [487]);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Callee)));
}

#[test]
fn a_session_interval_under_90_s_is_refused_422() {
    let (sim, out) = timed_caller(30);
    let answer = out
        .iter()
        .find_map(|o| match o {
            Output::Respond { answer, .. } => Some(answer),
            _ => None,
        })
        .expect("an answer");
    assert_eq!(answer.status, 422);
    assert_eq!(header_of(answer, "Min-SE"), Some("90".into()));
    assert!(commands(&out).is_empty(), "a negotiation is not a call");
    assert!(sim.call.is_done(sim.now));
    // The same in a refresh: refused, the call untouched.
    let mut sim = timed_answered(120);
    let (key, reinvite) = caller_reinvite(2, OFFER, &refresh_headers(60));
    let out = sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 422);
    assert!(ended(&out).is_none());
}

#[test]
fn a_reinvite_before_the_answer_or_after_the_end_is_refused() {
    let (mut sim, _) = ringing(1, settings());
    let (key, reinvite) = caller_reinvite(2, OFFER, &[]);
    let out = sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    let answers = reinvite_answers(&out);
    assert_eq!(answers[0].status, 500);
    assert!(header_of(answers[0], "Retry-After").is_some());
    sim.give(Input::Cancel);
    let (key, reinvite) = caller_reinvite(3, OFFER, &[]);
    let out = sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 481);
}

#[test]
fn a_callee_that_set_itself_as_refresher_is_held_to_it() {
    let (mut sim, legs) = ringing(1, settings());
    let invite = legs[0].1.clone();
    let mut ok = reply(&invite, 200, "leg0", ANSWER);
    ok.headers
        .push(("Session-Expires".into(), "120;refresher=uas".into()));
    let out = sim.give(Input::Outcome {
        leg: Some(0),
        key: ClientKey::of_response(&ok).expect("key"),
        outcome: Outcome::Response(ok),
    });
    assert_eq!(to_caller(&out), vec![200]);
    sim.give(Input::Ack(from_caller("ACK", 1)));
    // The callee refreshes at 60 s (its session unchanged): answered 200 with the offer the
    // edge made it, the timer re-armed.
    assert!(sim.run_for(secs(60)).is_empty());
    let refresh = from_leg_with(
        "INVITE",
        0,
        &invite,
        1,
        "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\nContent-Type: application/sdp\r\n",
        ANSWER,
    );
    let key = TransactionKey::of_request(&refresh).expect("a transaction");
    let out = sim.give(Input::Modify {
        key,
        request: refresh,
    });
    let answers = reinvite_answers(&out);
    assert_eq!(answers[0].status, 200, "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&answers[0].body),
        OFFER,
        "the session the edge offered the callee"
    );
    sim.give(Input::Ack(from_leg_with("ACK", 0, &invite, 1, "", "")));
    // Then it stops: hung up 88 s after its refresh, not before.
    assert!(sim.run_for(secs(87)).is_empty());
    let out = sim.run_for(secs(1));
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
    // A callee that sets no timer is given none.
    let (mut sim, legs) = ringing(1, settings());
    sim.give(response(0, &legs[0].1, 200, ANSWER));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let out = sim.run_for(secs(3000));
    assert!(ended(&out).is_none());
    assert!(requests_to_leg(&out).is_empty(), "{out:?}");
}

/// The in-dialog requests (method, bytes) the call sent to a leg.
/// The outcome of the edge's refresh (branch `branch`) to leg 0: `status` from the callee.
fn refresh_answer(refresh: &RawMessage, status: u16, extra: Option<&str>) -> Input {
    let body = if status == 200 { ANSWER } else { "" };
    let extra: Vec<(&str, &str)> = extra.map(|v| ("Session-Expires", v)).into_iter().collect();
    answer_in_dialog(Some(0), &refresh.to_bytes(), status, body, &extra)
}

/// An answered call whose callee made the edge the refresher of a 120 s session.
fn edge_refreshes() -> (Sim<Call>, RawMessage) {
    let (mut sim, legs) = ringing(1, settings());
    let invite = legs[0].1.clone();
    // The edge offers the callee a session timer.
    assert_eq!(invite.header("Supported"), Some("timer"));
    assert_eq!(invite.header("Session-Expires"), Some("1800"));
    let mut ok = reply(&invite, 200, "leg0", ANSWER);
    ok.headers
        .push(("Session-Expires".into(), "120;refresher=uac".into()));
    sim.give(Input::Outcome {
        leg: Some(0),
        key: ClientKey::of_response(&ok).expect("key"),
        outcome: Outcome::Response(ok),
    });
    sim.give(Input::Ack(from_caller("ACK", 1)));
    (sim, invite)
}

#[test]
fn the_edge_refreshes_a_callee_that_made_it_the_refresher() {
    let (mut sim, invite) = edge_refreshes();
    // Every half interval: a re-INVITE with the session the edge gave the callee, unchanged.
    assert!(sim.run_for(secs(59)).is_empty());
    let out = sim.run_for(secs(1));
    let sent = requests_to_leg(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    let (method, refresh, _) = &sent[0];
    assert_eq!(*method, "INVITE");
    assert_eq!(refresh.header("Call-ID"), invite.header("Call-ID"));
    assert_eq!(refresh.header("CSeq"), Some("2 INVITE"));
    assert_eq!(refresh.header("Session-Expires"), Some("120;refresher=uac"));
    assert!(refresh.header("Contact").is_some());
    assert_eq!(String::from_utf8_lossy(&refresh.body), OFFER);
    // Its 2xx is ACKed with its CSeq, and again if repeated; the next refresh 60 s on.
    let ok = refresh_answer(refresh, 200, Some("120;refresher=uac"));
    let out = sim.give(ok);
    let ack = out
        .iter()
        .find_map(|o| match o {
            Output::Ack {
                to: Peer::Leg(0),
                bytes,
            } => Some(bytes.clone()),
            _ => None,
        })
        .expect("the ACK of the refresh");
    let ack = message::from_text(&String::from_utf8_lossy(&ack));
    assert_eq!(ack.header("CSeq"), Some("2 ACK"));
    let again = sim.give(refresh_answer(refresh, 200, Some("120;refresher=uac")));
    assert_eq!(acked(&again), vec![0]);
    assert!(ended(&again).is_none());
    assert!(sim.run_for(secs(59)).is_empty());
    let out = sim.run_for(secs(1));
    assert_eq!(requests_to_leg(&out).len(), 1);
    assert!(ended(&out).is_none());
}

#[test]
fn a_refresh_the_callee_no_longer_knows_ends_the_call() {
    for failure in [481, 408] {
        let (mut sim, _) = edge_refreshes();
        let out = sim.run_for(secs(60));
        let (_, refresh, _) = requests_to_leg(&out).remove(0);
        let out = sim.give(refresh_answer(&refresh, failure, None));
        assert_eq!(byes(&out), vec![Peer::Leg(0), Peer::Caller], "{failure}");
        assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
    }
    // Unanswered (Timer B) likewise.
    let (mut sim, _) = edge_refreshes();
    let out = sim.run_for(secs(60));
    let (_, _, branch) = requests_to_leg(&out).remove(0);
    let out = sim.give(Input::Outcome {
        leg: Some(0),
        key: ClientKey {
            branch,
            method: "INVITE".into(),
        },
        outcome: Outcome::Timeout,
    });
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
}

#[test]
fn a_refresh_crossing_the_callees_reinvite_is_tried_again() {
    let (mut sim, invite) = edge_refreshes();
    let out = sim.run_for(secs(60));
    let (_, refresh, _) = requests_to_leg(&out).remove(0);
    // The callee's own re-INVITE while the edge's is pending: 491.
    let theirs = from_leg_with(
        "INVITE",
        0,
        &invite,
        1,
        "Content-Type: application/sdp\r\n",
        ANSWER,
    );
    let key = TransactionKey::of_request(&theirs).expect("a transaction");
    let out = sim.give(Input::Modify {
        key,
        request: theirs,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 491);
    // The callee answers the edge's 491 too: the edge tries again 3 s later.
    sim.give(refresh_answer(&refresh, 491, None));
    assert!(sim.run_for(secs(2)).is_empty());
    let out = sim.run_for(secs(1));
    let sent = requests_to_leg(&out);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.header("CSeq"), Some("3 INVITE"));
}

#[test]
fn a_session_no_refresh_succeeds_in_expires() {
    let (mut sim, _) = edge_refreshes();
    let out = sim.run_for(secs(60));
    let (_, refresh, _) = requests_to_leg(&out).remove(0);
    // Refused (not 408/481): tried again halfway to the expiry (88 s after the answer) while
    // more than 12 s are left: at 74 s and 81 s.
    let mut refresh = refresh;
    sim.give(refresh_answer(&refresh, 500, None));
    for wait in [14, 7] {
        let out = sim.run_for(secs(wait));
        let sent = requests_to_leg(&out);
        assert_eq!(sent.len(), 1, "{out:?}");
        refresh = sent[0].1.clone();
        sim.give(refresh_answer(&refresh, 500, None));
    }
    // Then the session runs out: hung up at 88 s.
    let out = sim.run_for(secs(6));
    assert!(ended(&out).is_none(), "{out:?}");
    assert!(requests_to_leg(&out).is_empty());
    let out = sim.run_for(secs(1));
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
}

#[test]
fn a_leg_without_an_offer_is_offered_no_session_timer() {
    let (_, out) = Sim::start_invite(
        plan(vec![target(0, Duration::ZERO)]),
        settings(),
        Box::new(|_| None),
        caller_invite(""),
    );
    let (_, invite) = invites(&out).remove(0);
    assert_eq!(invite.header("Session-Expires"), None);
}

#[test]
fn a_session_interval_past_a_day_is_lowered_not_trusted() {
    // u64::MAX seconds would overflow the clock: the edge takes at most a day.
    let (mut sim, out) = timed_caller(u64::MAX);
    let invite = invites(&out).remove(0).1;
    let out = sim.give(response(0, &invite, 200, ANSWER));
    let ok = out
        .iter()
        .find_map(|o| match o {
            Output::Respond { answer, tag, .. } if tag == CALLER_TAG => Some(answer.clone()),
            _ => None,
        })
        .expect("the caller's 200");
    assert_eq!(
        header_of(&ok, "Session-Expires"),
        Some("86400;refresher=uac".into())
    );
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let (key, reinvite) = caller_reinvite(
        2,
        OFFER,
        &[
            ("Supported", "timer".into()),
            ("Session-Expires", u64::MAX.to_string()),
        ],
    );
    let out = sim.give(Input::Modify {
        key,
        request: reinvite,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 200);
}

#[test]
fn a_flood_of_reinvites_leaves_one_2xx_repeated_and_an_open_offer_gets_491() {
    let mut sim = timed_answered(120);
    // A thousand refreshes, none ACKed: each is answered, and each shows the caller has the
    // edge's earlier 2xx, so only the latest is repeated.
    for cseq in 2..1002 {
        let (key, again) = caller_reinvite(cseq, OFFER, &refresh_headers(120));
        let out = sim.give(Input::Modify {
            key,
            request: again,
        });
        assert_eq!(reinvite_answers(&out)[0].status, 200);
    }
    let out = sim.run_for(T1);
    assert_eq!(
        reinvite_answers(&out).len(),
        1,
        "one 2xx repeated, not 1,000"
    );
    sim.give(Input::Ack(from_caller("ACK", 1001)));
    // A re-INVITE without an offer gets the edge's offer in the 200; a new offer before the
    // ACK brings the answer is refused 491 (RFC 3264), and goes through once it has.
    let (key, offerless) = caller_reinvite(1002, "", &refresh_headers(120));
    let out = sim.give(Input::Modify {
        key,
        request: offerless,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 200);
    let (key, early) = caller_reinvite(1003, OFFER, &refresh_headers(120));
    let out = sim.give(Input::Modify {
        key,
        request: early,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 491);
    sim.give(Input::Ack(from_caller("ACK", 1002)));
    let (key, later) = caller_reinvite(1004, OFFER, &refresh_headers(120));
    let out = sim.give(Input::Modify {
        key,
        request: later,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 200);
    // A re-INVITE from outside the call's dialogs is not the call's.
    let mut stranger = caller_reinvite(1005, OFFER, &[]).1;
    for (name, value) in &mut stranger.headers {
        if name == "From" {
            *value = "<sip:+4915111@127.0.0.9>;tag=someone-else".into();
        }
    }
    let key = TransactionKey::of_request(&stranger).expect("a transaction");
    let out = sim.give(Input::Modify {
        key,
        request: stranger,
    });
    assert_eq!(reinvite_answers(&out)[0].status, 481);
}

#[test]
fn a_change_passed_to_a_callee_the_edge_refreshes_keeps_and_rearms_its_timer() {
    let (mut sim, _) = edge_refreshes();
    sim.run_for(secs(30));
    // The caller's hold reaches the callee with the timer the edge keeps with it.
    let (_, hold) = caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    assert_eq!(hold.header("Session-Expires"), Some("120;refresher=uac"));
    assert_eq!(hold.header("Supported"), Some("timer"));
    // Its 2xx at 30 s refreshes the session: the next refresh is due 60 s later, at 90 s.
    sim.give(answer_in_dialog(
        Some(0),
        &hold.to_bytes(),
        200,
        &callee_session(3, "recvonly"),
        &[("Session-Expires", "120;refresher=uac")],
    ));
    sim.give(Input::Ack(from_caller("ACK", 2)));
    assert!(requests_to_leg(&sim.run_for(secs(59))).is_empty());
    let out = sim.run_for(secs(1));
    assert_eq!(requests_to_leg(&out).len(), 1, "{out:?}");
    assert!(ended(&out).is_none());
}

#[test]
fn a_refresh_due_while_a_change_is_pending_waits_for_it() {
    let (mut sim, _) = edge_refreshes();
    sim.run_for(secs(59));
    let (_, hold) = caller_changes(&mut sim, 2, &caller_session(2, "sendonly"));
    // Due at 60 s, but the change is on its way: no second re-INVITE to the callee.
    let out = sim.run_for(secs(2));
    assert!(requests_to_leg(&out).is_empty(), "{out:?}");
    sim.give(answer_in_dialog(
        Some(0),
        &hold.to_bytes(),
        200,
        &callee_session(3, "recvonly"),
        &[("Session-Expires", "120;refresher=uac")],
    ));
    sim.give(Input::Ack(from_caller("ACK", 2)));
    // The change refreshed the session at 61 s: the next refresh goes at 121 s.
    let out = sim.run_for(secs(59));
    assert!(requests_to_leg(&out).is_empty() && ended(&out).is_none());
    assert_eq!(requests_to_leg(&sim.run_for(secs(2))).len(), 1);
}
