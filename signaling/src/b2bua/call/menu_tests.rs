//! The access-number menu under simulated time: the edge answers, the PIN is checked, the
//! keyed number becomes the call's one leg, and each way out of the menu ends the call with
//! its reason recorded.

use std::time::Duration;

use domain::account::{Account, AccountStatus};
use domain::call::{CallCommand, Direction, EndCause, MenuExit, Origin, Path, Side};
use domain::extension::{Extension, ExtensionStatus};
use domain::ids::{AccountId, ExtensionId};

use super::tests::{OFFER, plan, relayed, target};
use super::*;
use crate::b2bua::plan::{MenuPlan, Plan};
use crate::b2bua::sim::*;
use crate::media::dtmf::keys::Way;
use crate::media::keypad::Sound;
use crate::media::prompts::Prompt;
use crate::media::tones::{Country, Tone};

fn keyed_plan(pin: bool) -> Plan {
    let account = Account {
        id: Some(AccountId(uuid::Uuid::from_u128(5))),
        main_number: Some(e164("+442071234567")),
        status: AccountStatus::Active,
        ..Account::default()
    };
    let extension = Extension {
        id: Some(ExtensionId(uuid::Uuid::from_u128(6))),
        account_id: account.id,
        status: ExtensionStatus::Verified,
        ..Extension::default()
    };
    Plan {
        direction: Direction::Outbound,
        origin: Origin::Extension {
            extension_id: extension.id.unwrap(),
        },
        path: Path::CallThrough,
        account,
        from: "+447700900123".into(),
        to: "+442071230000".into(),
        extension: Some(extension),
        menu: Some(MenuPlan {
            pin,
            tones: Country::Uk,
        }),
        ..plan(vec![])
    }
}

fn keys(sim: &mut Sim<Call>, way: Way, presses: &str) -> Vec<Output> {
    presses
        .chars()
        .flat_map(|key| {
            sim.give(Input::Key {
                way,
                key,
                cseq: None,
                call_id: None,
            })
        })
        .collect()
}

pub(super) fn cues(outputs: &[Output]) -> Vec<KeypadCue> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Keypad(cue) => Some(*cue),
            _ => None,
        })
        .collect()
}

fn menu_exit(outputs: &[Output]) -> Option<MenuExit> {
    commands(outputs).iter().find_map(|c| match c {
        CallCommand::AbandonMenu { reason } => Some(*reason),
        _ => None,
    })
}

fn pin_checks(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::CheckPin { pin, .. } => Some(pin.0.clone()),
            _ => None,
        })
        .collect()
}

/// The caller's answer: the edge's own 200 with its session.
fn answered_caller(outputs: &[Output]) -> Option<String> {
    outputs.iter().find_map(|o| match o {
        Output::Respond { answer, .. } if answer.status == 200 => {
            Some(String::from_utf8_lossy(&answer.body).into_owned())
        }
        _ => None,
    })
}

fn started(pin: bool) -> (Sim<Call>, Vec<Output>) {
    let (mut sim, out) = Sim::start(keyed_plan(pin), relayed(secs(30)));
    sim.edge.transfer_to = Some(target(1, Duration::ZERO));
    (sim, out)
}

#[test]
fn a_pin_then_a_number_then_hash_places_the_one_leg_and_the_caller_is_not_answered_twice() {
    let (mut sim, out) = started(true);
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::Start { keypad: true, .. }))
    );
    let session = answered_caller(&out).expect("the edge answers the caller itself");
    assert!(session.contains("m=audio 30000 RTP/AVP 0"), "{session}");
    assert!(matches!(
        cues(&out)[..],
        [KeypadCue::Open {
            sounds: [Sound::Say(Prompt::Pin)],
            ..
        }]
    ));
    assert!(invites(&out).is_empty(), "no leg before the destination");

    let out = keys(&mut sim, Way::Rfc4733, "2468#");
    assert_eq!(pin_checks(&out), vec!["2468".to_string()]);
    let out = sim.give(Input::PinChecked(PinCheck::Accepted));
    assert!(commands(&out).contains(&&CallCommand::MenuPin {
        accepted: true,
        locked: false
    }));
    assert!(matches!(
        cues(&out)[..],
        [KeypadCue::Play([
            Sound::Tone(Tone::Confirm),
            Sound::Say(Prompt::Number),
            Sound::Tone(Tone::Dial)
        ])]
    ));

    let out = keys(&mut sim, Way::Rfc4733, "02079460000#");
    assert!(
        matches!(cues(&out)[0], KeypadCue::Play([])),
        "the first key stops the tone"
    );
    let collected = commands(&out).into_iter().find_map(|c| match c {
        CallCommand::CollectDestination { destination, .. } => Some(destination.clone()),
        _ => None,
    });
    assert_eq!(collected, Some(e164("+442079460000")));
    assert!(matches!(cues(&out)[..], [_, KeypadCue::Close]));
    let invites = invites(&out);
    assert_eq!(invites.len(), 1);
    let offer = String::from_utf8_lossy(&invites[0].1.body).into_owned();
    assert!(
        offer.contains("m=audio 30002 RTP/AVP 0"),
        "the leg is offered the relay's other side: {offer}"
    );

    // The leg answers: ACKed and recorded; the caller hears no second answer.
    let leg_invite = invites[0].1.clone();
    let out = sim.give(response(0, &leg_invite, 200, ANSWER_SDP));
    assert_eq!(answered_legs(&out), 1);
    assert_eq!(acked(&out), vec![0]);
    assert!(answered_caller(&out).is_none());

    // The caller hangs up: the leg is hung up, the call ends normally.
    let out = sim.give(Input::Bye(super::tests::from_caller("BYE", 2)));
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
}

const ANSWER_SDP: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.21\r\ns=-\r\nc=IN IP4 127.0.0.21\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

#[test]
fn wrong_pins_get_reorder_and_the_locking_one_hangs_up() {
    let (mut sim, _) = started(true);
    keys(&mut sim, Way::Rfc4733, "1111#");
    let out = sim.give(Input::PinChecked(PinCheck::Refused { locked: false }));
    assert!(matches!(
        cues(&out)[..],
        [KeypadCue::Play([
            Sound::Say(Prompt::Refused),
            Sound::Tone(Tone::Reorder)
        ])]
    ));
    assert_eq!(menu_exit(&out), None);
    sim.run_for(secs(1));
    let out = keys(&mut sim, Way::InBand, "2222#");
    assert_eq!(pin_checks(&out), vec!["2222".to_string()]);
    let out = sim.give(Input::PinChecked(PinCheck::Refused { locked: true }));
    assert!(commands(&out).contains(&&CallCommand::MenuPin {
        accepted: false,
        locked: true
    }));
    assert_eq!(menu_exit(&out), Some(MenuExit::PinLocked));
    assert_eq!(byes(&out), vec![Peer::Caller]);
    assert_eq!(ended(&out), Some((EndCause::Rejected, Side::System)));
}

#[test]
fn star_restarts_and_a_pause_ends_the_number() {
    let (mut sim, _) = started(false);
    let out = keys(&mut sim, Way::Rfc4733, "0207*");
    assert!(matches!(
        cues(&out)[..],
        [
            KeypadCue::Play([]),
            KeypadCue::Play([Sound::Say(Prompt::Number), Sound::Tone(Tone::Dial)])
        ]
    ));
    keys(&mut sim, Way::Rfc4733, "02079460000");
    let out = sim.run_for(secs(4));
    assert!(invites(&out).is_empty());
    let out = sim.run_for(secs(2));
    assert_eq!(
        invites(&out).len(),
        1,
        "5 s after the last key the number is complete"
    );
}

#[test]
fn a_key_sent_two_ways_counts_once() {
    let (mut sim, _) = started(false);
    // Each key by RFC 4733 and by INFO (whose keys are held for reordering: they lag).
    for (n, key) in "02079460000".chars().enumerate() {
        for (way, cseq) in [(Way::Rfc4733, None), (Way::Info, Some(40 + n as u32))] {
            sim.give(Input::Key {
                way,
                key,
                cseq,
                call_id: None,
            });
        }
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_millis(400));
    let out = keys(&mut sim, Way::Rfc4733, "#");
    let collected = commands(&out).into_iter().find_map(|c| match c {
        CallCommand::CollectDestination { destination, .. } => Some(destination.clone()),
        _ => None,
    });
    assert_eq!(
        collected,
        Some(e164("+442079460000")),
        "11 digits keyed, not 22"
    );
}

#[test]
fn numbers_refused_three_times_or_silence_leave_the_menu() {
    let (mut sim, _) = started(false);
    let mut out = vec![];
    for _ in 0..3 {
        out = keys(&mut sim, Way::Rfc4733, "123#");
    }
    assert!(invites(&out).is_empty());
    assert_eq!(menu_exit(&out), Some(MenuExit::Timeout));
    assert_eq!(byes(&out), vec![Peer::Caller]);

    let (mut sim, _) = started(false);
    let out = sim.run_for(secs(16));
    assert_eq!(menu_exit(&out), Some(MenuExit::Timeout));
    assert_eq!(ended(&out), Some((EndCause::Rejected, Side::System)));
}

#[test]
fn a_destination_the_fraud_controls_refuse_is_not_called() {
    let (mut sim, _) = started(false);
    sim.edge.transfer_to = None;
    let out = keys(&mut sim, Way::Rfc4733, "02079460000#");
    assert!(invites(&out).is_empty());
    assert!(
        !commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::CollectDestination { .. }))
    );
    assert!(matches!(
        cues(&out)[..],
        [
            _,
            KeypadCue::Play([Sound::Say(Prompt::Refused), Sound::Tone(Tone::Reorder)])
        ]
    ));
}

#[test]
fn a_number_the_extension_may_not_call_takes_no_place_under_the_caps() {
    let (mut sim, _) = started(false);
    // Abroad, and international calls are not allowed for this extension.
    let out = keys(&mut sim, Way::Rfc4733, "0033142685300#");
    assert!(invites(&out).is_empty());
    assert_eq!(sim.edge.legs_asked.get(), 0);
    assert!(matches!(
        cues(&out)[..],
        [
            _,
            KeypadCue::Play([Sound::Say(Prompt::Refused), Sound::Tone(Tone::Reorder)])
        ]
    ));
    // A number it may call is asked for once.
    sim.run_for(secs(1));
    keys(&mut sim, Way::Rfc4733, "02079460000#");
    assert_eq!(sim.edge.legs_asked.get(), 1);
}

#[test]
fn a_flood_of_info_keys_stays_bounded_and_the_menu_still_ends() {
    let (mut sim, _) = started(false);
    // Thousands of INFOs, every CSeq leaving a gap before it: at most 64 are held.
    for n in 0..5_000u32 {
        sim.give(Input::Key {
            way: Way::Info,
            key: '1',
            cseq: Some(1_000 + 2 * n),
            call_id: None,
        });
    }
    // Taken in order once the oldest waited; the 20-digit entry ends; the menu gives up on
    // its numbers in time as ever.
    let out = sim.run_for(secs(130));
    assert_eq!(menu_exit(&out), Some(MenuExit::Timeout));
    assert!(invites(&out).is_empty());
}

#[test]
fn the_caller_hanging_up_in_the_menu_is_recorded_and_not_hung_up_again() {
    let (mut sim, _) = started(true);
    keys(&mut sim, Way::Rfc4733, "24");
    let out = sim.give(Input::Bye(super::tests::from_caller("BYE", 2)));
    assert_eq!(menu_exit(&out), Some(MenuExit::HungUp));
    assert!(byes(&out).is_empty());
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
    assert!(
        pin_checks(&out).is_empty(),
        "a PIN half keyed is not checked"
    );
}

#[test]
fn an_offer_without_g711_is_refused_before_anything_is_answered() {
    let offer = OFFER
        .replace("RTP/AVP 0", "RTP/AVP 9")
        .replace("0 PCMU/8000", "9 G722/8000");
    let invite = super::tests::caller_invite(&offer);
    let (_, out) = Sim::start_invite(
        keyed_plan(false),
        relayed(secs(30)),
        Box::new(|_| None),
        invite,
    );
    let refused = out.iter().find_map(|o| match o {
        Output::Respond { answer, .. } => Some(answer.status),
        _ => None,
    });
    assert_eq!(refused, Some(488));
    assert!(cues(&out).is_empty());
}

#[test]
fn keys_by_info_are_taken_in_cseq_order_however_they_arrive() {
    let (mut sim, _) = started(false);
    // A burst of INFOs (CSeq 10 to 21), handled in another order.
    let digits: Vec<char> = "02079460000#".chars().collect();
    let order = [3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10];
    let mut out = vec![];
    for i in order {
        out.extend(sim.give(Input::Key {
            way: Way::Info,
            key: digits[i],
            cseq: Some(10 + i as u32),
            call_id: None,
        }));
    }
    // Held for the INFOs before the first to arrive, then taken in order.
    assert!(invites(&out).is_empty());
    let out = sim.run_for(Duration::from_millis(400));
    let collected = commands(&out).into_iter().find_map(|c| match c {
        CallCommand::CollectDestination { destination, .. } => Some(destination.clone()),
        _ => None,
    });
    assert_eq!(collected, Some(e164("+442079460000")));
    // A late copy of an INFO already taken changes nothing.
    let out = sim.give(Input::Key {
        way: Way::Info,
        key: '5',
        cseq: Some(12),
        call_id: None,
    });
    assert!(cues(&out).is_empty());
}
