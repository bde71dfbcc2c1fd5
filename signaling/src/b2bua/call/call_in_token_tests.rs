//! A call-in proving itself by keypad, under simulated time: the edge answers the call-in
//! alone, the right token bridges it to the caller, and every other way (wrong tokens,
//! silence, a hangup, the caller giving up, a keypad on the caller's side) leaves its leg
//! failed, unanswered and unbilled, with the extension called out instead where time is left.

use std::time::Duration;

use domain::call::{CallCommand, EndCause, LegFailure, Path, Side};

use super::menu_tests::cues;
use super::tests::{
    OFFER, arrival, call_in_plan, caller_invite, plan, relayed, serving, target, to_caller,
};
use super::*;
use crate::b2bua::plan::{CallInPlan, Plan};
use crate::b2bua::sim::*;
use crate::media::dtmf::keys::Way;
use crate::media::keypad::Sound;
use crate::media::prompts::Prompt;
use crate::media::relay::Side as RelaySide;
use crate::media::tones::{Country, Tone};
use crate::message;

/// A call (its caller offering `offer`) awaiting a call-in whose token is keyed; the token it
/// was given.
fn awaiting_keyed_from(offer: &str) -> (Sim<Call>, String) {
    let (sim, token, _) = awaiting_keyed_with(offer, vec![]);
    (sim, token)
}

/// The same, ringing `targets` meanwhile: the INVITEs placed to them too.
fn awaiting_keyed_with(
    offer: &str,
    targets: Vec<crate::b2bua::plan::Target>,
) -> (Sim<Call>, String, Vec<(usize, message::RawMessage)>) {
    let plan = Plan {
        call_in: Some(CallInPlan {
            keyed: Some(Country::Uk),
            ..call_in_plan()
        }),
        ..plan(targets)
    };
    let refuse: Refuser = Box::new(|_| None);
    let (mut sim, out) = Sim::start_invite(plan, relayed(secs(30)), refuse, caller_invite(offer));
    sim.edge.extension = Some(serving());
    let token = commands(&out)
        .iter()
        .find_map(|c| match c {
            CallCommand::AwaitCallIn { token, .. } => Some(token.clone()),
            _ => None,
        })
        .expect("a call-in awaited");
    (sim, token, invites(&out))
}

fn awaiting_keyed() -> (Sim<Call>, String) {
    awaiting_keyed_from(OFFER)
}

/// The call-in arrives: answered alone, dial tone on the callee's side of the relay.
fn called_in() -> (Sim<Call>, String) {
    let (mut sim, token) = awaiting_keyed();
    let out = sim.give(Input::CallIn(arrival(OFFER)));
    assert_eq!(
        responses(&out),
        vec![("in-tag".to_string(), 200)],
        "{out:?}"
    );
    assert!(
        commands(&out).iter().any(|c| matches!(
            c,
            CallCommand::StartLeg {
                path: Path::CallIn,
                ..
            }
        )),
        "the call-in is a leg from the start"
    );
    assert_eq!(answered_legs(&out), 0, "not answered before its token");
    assert!(
        matches!(
            cues(&out)[..],
            [KeypadCue::Open {
                side: RelaySide::Callee,
                sounds: [Sound::Say(Prompt::Token), Sound::Tone(Tone::Dial)],
                ..
            }]
        ),
        "{out:?}"
    );
    (sim, token)
}

fn responses(outputs: &[Output]) -> Vec<(String, u16)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Respond { tag, answer, .. } => Some((tag.clone(), answer.status)),
            _ => None,
        })
        .collect()
}

fn key_in(sim: &mut Sim<Call>, digits: &str) -> Vec<Output> {
    digits
        .chars()
        .flat_map(|key| {
            sim.give(Input::Key {
                way: Way::Rfc4733,
                key,
                cseq: None,
                call_id: None,
            })
        })
        .collect()
}

/// A wrong token: the right one with its last digit changed.
fn wrong(token: &str) -> String {
    let last = token.as_bytes()[7];
    let other = if last == b'9' {
        '0'
    } else {
        (last + 1) as char
    };
    format!("{}{other}", &token[..7])
}

#[test]
fn the_right_token_bridges_the_call_in_to_the_caller() {
    let (mut sim, token) = called_in();
    let out = key_in(&mut sim, &token[..7]);
    assert!(to_caller(&out).is_empty(), "not before the eighth digit");
    let out = key_in(&mut sim, &token[7..]);
    assert_eq!(answered_legs(&out), 1);
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::Bridge { .. }))
    );
    assert_eq!(to_caller(&out), vec![200]);
    assert!(matches!(cues(&out)[..], [KeypadCue::Close]), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, Output::ForgetCallIn { .. })));
    // No call-out follows: the call is the call-in's.
    assert!(invites(&sim.run_for(secs(40))).is_empty());
}

#[test]
fn three_wrong_tokens_hang_up_the_call_in_and_call_the_extension_out() {
    let (mut sim, token) = called_in();
    let out = key_in(&mut sim, &wrong(&token));
    assert!(
        cues(&out).iter().any(|c| matches!(
            c,
            KeypadCue::Play([Sound::Say(Prompt::Refused), Sound::Tone(Tone::Reorder)])
        )),
        "{out:?}"
    );
    assert!(leg_failures(&out).is_empty(), "a second try");
    // `*` clears a half-keyed entry: it is not a try.
    let out = key_in(&mut sim, "123*");
    assert!(leg_failures(&out).is_empty());
    key_in(&mut sim, &wrong(&token));
    let out = key_in(&mut sim, &wrong(&token));
    assert_eq!(leg_failures(&out), vec![(403, LegFailure::TokenRefused)]);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(answered_legs(&out), 0);
    let placed = invites(&out);
    assert_eq!(placed.len(), 1, "the extension is called out");
    assert!(placed[0].1.start_line.contains("leg9"));
    assert!(to_caller(&out).is_empty(), "the caller still rings");
    // The right token now reaches nothing.
    let out = key_in(&mut sim, &token);
    assert_eq!(answered_legs(&out), 0);
}

#[test]
fn a_caller_keying_the_token_by_info_is_not_heard() {
    let (mut sim, token) = called_in();
    let caller_call_id = "caller-call";
    let mut out = vec![];
    for (n, key) in token.chars().enumerate() {
        out.extend(sim.give(Input::Key {
            way: Way::Info,
            key,
            cseq: Some(2 + n as u32),
            call_id: Some(caller_call_id.into()),
        }));
    }
    out.extend(sim.run_for(Duration::from_millis(400)));
    assert_eq!(answered_legs(&out), 0);
    // The call-in's own INFOs are.
    let mut out = vec![];
    for (n, key) in token.chars().enumerate() {
        out.extend(sim.give(Input::Key {
            way: Way::Info,
            key,
            cseq: Some(2 + n as u32),
            call_id: Some("call-in".into()),
        }));
    }
    out.extend(sim.run_for(Duration::from_millis(400)));
    assert_eq!(answered_legs(&out), 1, "{out:?}");
}

#[test]
fn nothing_keyed_in_time_fails_the_leg_and_calls_the_extension_out() {
    let (mut sim, _) = called_in();
    // The call-in wait (15 s) does not cut the keying short; the first key may take 15 s.
    assert!(leg_failures(&sim.run_for(secs(14))).is_empty());
    let out = sim.run_for(secs(1));
    assert_eq!(leg_failures(&out), vec![(408, LegFailure::Timeout)]);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(invites(&out).len(), 1, "called out");
}

#[test]
fn a_call_in_hanging_up_before_its_token_calls_the_extension_out() {
    let (mut sim, _) = called_in();
    let bye = message::from_text(
        "BYE sip:ringledger@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.40:5060;branch=z9hG4bKbye\r\n\
         From: <sip:+4915199@127.0.0.40>;tag=ext\r\n\
         To: <sip:+4930999@127.0.0.1>;tag=in-tag\r\n\
         Call-ID: call-in\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
    );
    let out = sim.give(Input::Bye(bye));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200)),
        "{out:?}"
    );
    assert_eq!(leg_failures(&out), vec![(487, LegFailure::Cancelled)]);
    assert!(byes(&out).is_empty(), "it hung up itself");
    assert_eq!(invites(&out).len(), 1, "called out");
}

#[test]
fn the_caller_giving_up_hangs_up_the_call_in_keying_its_token() {
    let (mut sim, _) = called_in();
    let out = sim.give(Input::Cancel);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(leg_failures(&out), vec![(487, LegFailure::Cancelled)]);
    assert_eq!(to_caller(&out), vec![487]);
    assert_eq!(ended(&out), Some((EndCause::CallerCancelled, Side::Caller)));
    // The leg failed before the call ended (the domain takes nothing after the end).
    let order: Vec<&str> = commands(&out)
        .iter()
        .filter_map(|c| match c {
            CallCommand::LegFailed { .. } => Some("failed"),
            CallCommand::End { .. } => Some("end"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["failed", "end"]);
}

#[test]
fn the_ring_timeout_ends_the_keying_too() {
    let (mut sim, _) = called_in();
    // Keys keep the entry alive, but the caller rings 30 s at most.
    let mut out = vec![];
    for _ in 0..40 {
        out.extend(key_in(&mut sim, "1*"));
        out.extend(sim.run_for(secs(1)));
    }
    assert_eq!(leg_failures(&out), vec![(487, LegFailure::Cancelled)]);
    assert_eq!(ended(&out), Some((EndCause::NoAnswer, Side::System)));
    assert_eq!(to_caller(&out), vec![480]);
}

#[test]
fn a_call_in_without_g711_in_common_cannot_key_and_is_refused() {
    let g722 = "v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n";
    let (mut sim, _) = awaiting_keyed_from(g722);
    let out = sim.give(Input::CallIn(arrival(g722)));
    assert_eq!(responses(&out), vec![("in-tag".to_string(), 488)]);
    assert_eq!(invites(&out).len(), 1, "called out instead");
}

#[test]
fn a_device_answering_while_the_token_is_keyed_takes_the_call() {
    let (mut sim, _, placed) = awaiting_keyed_with(OFFER, vec![target(0, Duration::ZERO)]);
    let [(0, device)] = &placed[..] else {
        panic!("the device rings meanwhile: {placed:?}");
    };
    let out = sim.give(Input::CallIn(arrival(OFFER)));
    assert_eq!(responses(&out), vec![("in-tag".to_string(), 200)]);
    let out = sim.give(response(0, device, 200, OFFER));
    assert_eq!(to_caller(&out), vec![200]);
    assert_eq!(byes(&out), vec![Peer::Leg(1)], "the call-in is hung up");
    assert_eq!(
        leg_failures(&out),
        vec![(487, LegFailure::AnsweredElsewhere)]
    );
    assert!(matches!(cues(&out)[..], [KeypadCue::Close]), "{out:?}");
}
