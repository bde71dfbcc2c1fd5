//! Blind transfer under simulated time: a phone on either side hands its place to a number,
//! the new party rings and answers (or not), the transferor is told and let go; and what is
//! refused.

use std::time::Duration;

use domain::call::{CallCommand, EndCause, LegFailure, LegTarget, Origin, Path, Side};
use domain::device::Transport;
use domain::ids::DeviceId;

use super::tests::{
    ANSWER, CALLER_TAG, OFFER, answered, caller_reinvite, from_caller, from_caller_with, plan,
    relayed, settings, target, to_caller,
};
use super::*;
use crate::answer::Answer;
use crate::b2bua::plan::Target;
use crate::b2bua::sim::*;
use crate::media::relay::Side as RelaySide;
use crate::message::{self, RawMessage};
use crate::transaction::TransactionKey;

/// The new party's session: another address than the first callee's.
const NEW_PARTY: &str = "v=0\r\no=- 7 7 IN IP4 127.0.0.40\r\ns=-\r\nc=IN IP4 127.0.0.40\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// Where transfers go in these tests: a number through the trunk at 127.0.0.40.
fn transfer_target() -> Target {
    Target {
        target: LegTarget::Pstn {
            number: e164("+442079460000"),
        },
        path: Path::Pstn,
        request_uri: "sip:+442079460000@127.0.0.40:5060".into(),
        destination: addr("127.0.0.40:5060"),
        transport: Transport::Udp,
        delay: Duration::ZERO,
        extension: None,
        headers: vec![],
    }
}

/// A phone of the account (a contact leg) as the callee.
fn phone_target() -> Target {
    Target {
        target: LegTarget::Contact {
            device_id: DeviceId(uuid::Uuid::from_u128(3)),
            contact_uri: "sip:ada@127.0.0.20:5060".into(),
        },
        ..target(0, Duration::ZERO)
    }
}

fn refer_to(uri: &str) -> String {
    format!("Refer-To: <{uri}>\r\n")
}

/// An inbound call from the network answered by the account's phone (leg 0); transfers go
/// where `transfer_target` says.
fn answered_by_phone(settings: Settings) -> (Sim<Call>, RawMessage) {
    let (mut sim, out) = Sim::start(plan(vec![phone_target()]), settings);
    sim.edge.transfer_to = Some(transfer_target());
    let invite = invites(&out).remove(0).1;
    let out = sim.give(response(0, &invite, 200, ANSWER));
    assert_eq!(to_caller(&out), vec![200]);
    sim.give(Input::Ack(from_caller("ACK", 1)));
    (sim, invite)
}

/// A REFER from leg `leg` (whose INVITE was `invite`) with `extra` header lines.
fn refer_from_leg(leg: usize, invite: &RawMessage, cseq: u32, extra: &str) -> Input {
    let request = from_leg_with("REFER", leg, invite, cseq, extra, "");
    Input::Refer {
        key: TransactionKey::of_request(&request).expect("a transaction"),
        request,
    }
}

/// The phone (leg 0, whose INVITE was `invite`) transfers the call to +442079460000 (REFER
/// of CSeq `cseq`): what the edge did, and the new leg's INVITE.
fn transfer_from_phone(
    sim: &mut Sim<Call>,
    invite: &RawMessage,
    cseq: u32,
) -> (Vec<Output>, RawMessage) {
    let out = sim.give(refer_from_leg(
        0,
        invite,
        cseq,
        &refer_to("sip:+442079460000@ringledger.test"),
    ));
    let new_invite = invites(&out).remove(0).1;
    (out, new_invite)
}

/// A REFER from the caller with `extra` header lines.
fn refer_from_caller(cseq: u32, extra: &str) -> Input {
    let request = from_caller_with("REFER", cseq, extra);
    Input::Refer {
        key: TransactionKey::of_request(&request).expect("a transaction"),
        request,
    }
}

/// The answers the edge gave to requests inside a dialog (REFER, re-INVITE), by status.
fn in_dialog_answers(outputs: &[Output]) -> Vec<(u16, Option<String>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Respond { answer, tag, .. } if tag.is_empty() => {
                Some((answer.status, answer.reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The NOTIFYs sent: to whom, and the sipfrag status line each carries.
fn notifies(outputs: &[Output]) -> Vec<(Peer, String, bool)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Request {
                to, method, bytes, ..
            } if *method == "NOTIFY" => {
                let request = message::from_text(&String::from_utf8_lossy(bytes));
                assert_eq!(request.header("Event"), Some("refer;id=2"));
                assert_eq!(
                    request.header("Content-Type"),
                    Some("message/sipfrag;version=2.0")
                );
                let done = request
                    .header("Subscription-State")
                    .is_some_and(|s| s.starts_with("terminated"));
                let line = String::from_utf8_lossy(&request.body).trim().to_string();
                Some((*to, line, done))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_callees_phone_transfers_the_call_to_a_number() {
    let (mut sim, invite) = answered_by_phone(relayed(secs(60)));
    let out = sim.give(refer_from_leg(
        0,
        &invite,
        2,
        &refer_to("sip:+442079460000@ringledger.test"),
    ));
    // Recorded first (the transfer and its leg), then accepted, the transferor told, and
    // the new leg INVITEd.
    let transfer = commands(&out)
        .into_iter()
        .find_map(|c| match c {
            CallCommand::Transfer {
                by, from_leg, to, ..
            } => Some((*by, from_leg.is_some(), to.clone())),
            _ => None,
        })
        .expect("the transfer recorded");
    assert_eq!(transfer, (Side::Callee, true, "+442079460000".into()));
    assert_eq!(
        in_dialog_answers(&out),
        vec![(202, Some("Accepted".into()))]
    );
    assert_eq!(
        notifies(&out),
        vec![(Peer::Leg(0), "SIP/2.0 100 Trying".into(), false)]
    );
    let (leg, new_invite) = invites(&out).remove(0);
    assert_eq!(leg, 1);
    assert!(
        new_invite
            .start_line
            .starts_with("INVITE sip:+442079460000@127.0.0.40")
    );
    // Offered the caller's session, pointed at the relay's port that faced the transferor;
    // the caller's address is not in it.
    let offer = String::from_utf8_lossy(&new_invite.body).to_string();
    assert!(offer.contains("m=audio 30002 "), "{offer}");
    assert!(!offer.contains("127.0.0.9"), "{offer}");
    // Ringing reaches the transferor.
    let out = sim.give(response(1, &new_invite, 180, ""));
    assert_eq!(
        notifies(&out),
        vec![(Peer::Leg(0), "SIP/2.0 180 Whatever".into(), false)]
    );
    // The new party answers: recorded, ACKed, the transferor told and hung up (its leg
    // ends in the log), the relay pointed at the new party.
    let out = sim.give(response(1, &new_invite, 200, NEW_PARTY));
    assert_eq!(answered_legs(&out), 1);
    assert_eq!(acked(&out), vec![1]);
    assert_eq!(
        notifies(&out),
        vec![(Peer::Leg(0), "SIP/2.0 200 OK".into(), true)]
    );
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::EndLeg { .. })),
        "{out:?}"
    );
    assert!(
        out.iter().any(|o| matches!(o,
        Output::MediaPeer { side: RelaySide::Callee, rtp, .. } if *rtp == addr("127.0.0.40:6000")))
    );
    assert!(ended(&out).is_none());
    // The caller never heard of it; the old phone's BYE crossing the edge's is answered 200
    // and changes nothing.
    assert!(to_caller(&out).is_empty());
    let bye = sim.give(Input::Bye(from_leg("BYE", 0, &invite, 3)));
    assert!(
        bye.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200))
    );
    assert!(ended(&bye).is_none());
    // The new party hangs up: the call ends, the caller is hung up.
    let out = sim.give(Input::Bye(from_leg("BYE", 1, &new_invite, 1)));
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Callee)));
    assert_eq!(byes(&out), vec![Peer::Caller]);
}

#[test]
fn the_callers_phone_transfers_the_call_and_the_new_party_takes_its_place() {
    let mut outbound = plan(vec![target(0, Duration::ZERO)]);
    outbound.origin = Origin::IpDevice {
        device_id: DeviceId(uuid::Uuid::from_u128(4)),
    };
    let (mut sim, out) = Sim::start(outbound, relayed(secs(60)));
    sim.edge.transfer_to = Some(transfer_target());
    let invite = invites(&out).remove(0).1;
    sim.give(response(0, &invite, 200, ANSWER));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let out = sim.give(refer_from_caller(2, &refer_to("tel:+44-20-7946-0000")));
    assert_eq!(
        in_dialog_answers(&out),
        vec![(202, Some("Accepted".into()))]
    );
    assert_eq!(
        notifies(&out),
        vec![(Peer::Caller, "SIP/2.0 100 Trying".into(), false)]
    );
    let new_invite = invites(&out).remove(0).1;
    // Offered the callee's session, pointed at the port that faced the caller.
    assert!(String::from_utf8_lossy(&new_invite.body).contains("m=audio 30000 "));
    let out = sim.give(response(1, &new_invite, 200, NEW_PARTY));
    assert_eq!(
        notifies(&out),
        vec![(Peer::Caller, "SIP/2.0 200 OK".into(), true)]
    );
    // The caller is hung up and the new party is the caller from now on.
    assert_eq!(byes(&out), vec![Peer::Caller]);
    assert!(out.iter().any(|o| matches!(o, Output::CallerIs { leg: 1 })));
    assert!(
        out.iter().any(|o| matches!(o,
        Output::MediaPeer { side: RelaySide::Caller, rtp, .. } if *rtp == addr("127.0.0.40:6000")))
    );
    // Its hold passes on to the callee, in the callee's dialog.
    let hold = NEW_PARTY
        .replace("o=- 7 7", "o=- 7 8")
        .replace("PCMU/8000\r\n", "PCMU/8000\r\na=sendonly\r\n");
    let reinvite = from_leg_with(
        "INVITE",
        1,
        &new_invite,
        2,
        "Content-Type: application/sdp\r\n",
        &hold,
    );
    let out = sim.give(Input::Modify {
        key: TransactionKey::of_request(&reinvite).expect("a transaction"),
        request: reinvite,
    });
    let passed: Vec<Peer> = out
        .iter()
        .filter_map(|o| match o {
            Output::Request { to, method, .. } if *method == "INVITE" => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(passed, vec![Peer::Leg(0)], "{out:?}");
    // The old caller's BYE crossing the edge's is answered 200 and ends nothing; the new
    // party's BYE ends the call as the caller's.
    let out = sim.give(Input::Bye(from_caller("BYE", 3)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200))
    );
    assert!(ended(&out).is_none());
    let out = sim.give(Input::Bye(from_leg("BYE", 1, &new_invite, 3)));
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
}

#[test]
fn a_transfer_the_new_party_refuses_leaves_the_call_as_it_was() {
    let (mut sim, invite) = answered_by_phone(settings());
    let (_, new_invite) = transfer_from_phone(&mut sim, &invite, 2);
    let out = sim.give(response(1, &new_invite, 486, ""));
    assert_eq!(
        notifies(&out),
        vec![(Peer::Leg(0), "SIP/2.0 486 Whatever".into(), true)]
    );
    assert_eq!(leg_failures(&out), vec![(486, LegFailure::Rejected)]);
    assert!(ended(&out).is_none() && byes(&out).is_empty(), "{out:?}");
    // The phone still has its call, and may try again.
    let out = sim.give(refer_from_leg(
        0,
        &invite,
        4,
        &refer_to("sip:+442079460000@ringledger.test"),
    ));
    assert_eq!(in_dialog_answers(&out)[0].0, 202);
}

#[test]
fn a_transferor_that_hangs_up_first_leaves_the_call_to_the_new_party() {
    let (mut sim, invite) = answered_by_phone(settings());
    let (_, new_invite) = transfer_from_phone(&mut sim, &invite, 2);
    // The phone hangs up at once (a blind transfer): its leg ends, the call does not.
    let out = sim.give(Input::Bye(from_leg("BYE", 0, &invite, 3)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200))
    );
    assert!(ended(&out).is_none(), "{out:?}");
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::EndLeg { .. }))
    );
    // The new party is busy: nobody to go back to, the caller is hung up.
    let out = sim.give(response(1, &new_invite, 486, ""));
    assert!(notifies(&out).is_empty(), "the transferor is gone");
    assert_eq!(ended(&out), Some((EndCause::Busy, Side::System)));
    assert_eq!(byes(&out), vec![Peer::Caller]);
}

#[test]
fn the_caller_hanging_up_during_a_transfer_cancels_the_new_leg() {
    let (mut sim, invite) = answered_by_phone(settings());
    let (_, new_invite) = transfer_from_phone(&mut sim, &invite, 2);
    sim.give(response(1, &new_invite, 180, ""));
    let out = sim.give(Input::Bye(from_caller("BYE", 2)));
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
    assert_eq!(cancelled(&out), vec![1]);
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    // The cancellation is recorded before the end (nothing is recorded after it).
    let steps: Vec<_> = commands(&out)
        .into_iter()
        .filter_map(|c| match c {
            CallCommand::LegFailed { .. } => Some("failed"),
            CallCommand::End { .. } => Some("end"),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["failed", "end"]);
}

#[test]
fn transfers_are_refused_to_whoever_may_not_make_them_and_while_one_is_under_way() {
    let up = "sip:+442079460000@ringledger.test";
    // The caller from the public network is not a phone of the account.
    let (mut sim, _) = answered_by_phone(settings());
    let out = sim.give(refer_from_caller(2, &refer_to(up)));
    assert_eq!(in_dialog_answers(&out)[0].0, 403);
    assert!(invites(&out).is_empty() && commands(&out).is_empty());
    // Nor is a callee reached through the trunk.
    let (mut sim, invite) = answered(settings());
    sim.edge.transfer_to = Some(transfer_target());
    let out = sim.give(refer_from_leg(0, &invite, 2, &refer_to(up)));
    assert_eq!(in_dialog_answers(&out)[0].0, 403);
    // The phone: attended transfer is not taken, nor a name instead of a number, nor two
    // Refer-To; the fraud controls' refusal is passed on.
    let (mut sim, invite) = answered_by_phone(settings());
    let replaces =
        "sip:+442079460000@ringledger.test?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2";
    for (extra, status) in [
        (refer_to(replaces), 501),
        (refer_to("sip:bob@ringledger.test"), 404),
        (format!("{}{}", refer_to(up), refer_to(up)), 400),
        (String::new(), 400),
    ] {
        let out = sim.give(refer_from_leg(0, &invite, 2, &extra));
        assert_eq!(in_dialog_answers(&out)[0].0, status, "{extra}");
        assert!(invites(&out).is_empty());
    }
    sim.edge.transfer_to = None;
    let out = sim.give(refer_from_leg(0, &invite, 3, &refer_to(up)));
    assert_eq!(in_dialog_answers(&out)[0].0, 503);
    // One at a time.
    sim.edge.transfer_to = Some(transfer_target());
    let out = sim.give(refer_from_leg(0, &invite, 4, &refer_to(up)));
    assert_eq!(in_dialog_answers(&out)[0].0, 202);
    let out = sim.give(refer_from_leg(0, &invite, 5, &refer_to(up)));
    assert_eq!(in_dialog_answers(&out)[0].0, 491);
    // Before the answer there is nothing to transfer.
    let (mut sim, out) = Sim::start(plan(vec![phone_target()]), settings());
    sim.edge.transfer_to = Some(transfer_target());
    let invite = invites(&out).remove(0).1;
    sim.give(response(0, &invite, 180, ""));
    let out = sim.give(refer_from_caller(2, &refer_to(up)));
    assert_eq!(in_dialog_answers(&out)[0].0, 403);
}

/// The edge's re-INVITEs to the caller: their bytes.
fn reinvites_to_caller(outputs: &[Output]) -> Vec<Vec<u8>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Request {
                to: Peer::Caller,
                method: "INVITE",
                bytes,
                ..
            } => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

/// The origin line of a session description.
fn origin(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .find(|l| l.starts_with("o="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_caller_on_hold_when_transferred_is_taken_off_hold_with_the_new_party() {
    let (mut sim, invite) = answered_by_phone(relayed(secs(60)));
    // The phone holds the caller first (as desk phones do before a transfer).
    let hold = ANSWER.replace("o=- 2 2", "o=- 2 3") + "a=sendonly\r\n";
    let reinvite = from_leg_with(
        "INVITE",
        0,
        &invite,
        2,
        "Content-Type: application/sdp\r\n",
        &hold,
    );
    let out = sim.give(Input::Modify {
        key: TransactionKey::of_request(&reinvite).expect("a transaction"),
        request: reinvite,
    });
    let held = reinvites_to_caller(&out).remove(0);
    let held_answer = OFFER.replace("o=- 1 1", "o=- 1 2") + "a=recvonly\r\n";
    sim.give(answer_in_dialog(None, &held, 200, &held_answer, &[]));
    let given_origin = origin(&message::from_text(&String::from_utf8_lossy(&held)).body);
    // The transfer: the new party is offered media both ways, not the hold.
    let (_, new_invite) = transfer_from_phone(&mut sim, &invite, 3);
    let way = crate::media::sdp::direction(&new_invite.body);
    assert!(way.sends && way.receives, "{new_invite:?}");
    // Answered: the caller is offered the new party's session, as the next version of the
    // session it has from the edge, pointed at the relay.
    let out = sim.give(response(1, &new_invite, 200, NEW_PARTY));
    let offer = reinvites_to_caller(&out).remove(0);
    let body = message::from_text(&String::from_utf8_lossy(&offer)).body;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        text.contains("m=audio 30000 ") && !text.contains("127.0.0.40"),
        "{text}"
    );
    assert!(
        !text.contains("sendonly") && !text.contains("recvonly"),
        "{text}"
    );
    let (given, now) = (given_origin.split(' ').collect::<Vec<_>>(), origin(&body));
    let now: Vec<&str> = now.split(' ').collect();
    assert_eq!((now[0], now[1]), (given[0], given[1]), "the same session");
    assert_eq!(
        now[2].parse::<u64>().unwrap(),
        given[2].parse::<u64>().unwrap() + 1,
        "its next version"
    );
    // The caller takes it: ACKed, and it sends again, so media flows from it to the new
    // party.
    let out = sim.give(answer_in_dialog(
        None,
        &offer,
        200,
        &(OFFER.replace("o=- 1 1", "o=- 1 3") + "a=sendrecv\r\n"),
        &[],
    ));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Ack {
            to: Peer::Caller,
            ..
        }
    )));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::MediaFlow {
            to: RelaySide::Callee,
            open: true
        }
    )));
    assert!(ended(&out).is_none());
}

#[test]
fn without_a_relay_the_party_that_stays_is_pointed_at_the_new_party() {
    let (mut sim, invite) = answered_by_phone(settings());
    let (_, new_invite) = transfer_from_phone(&mut sim, &invite, 2);
    let out = sim.give(response(1, &new_invite, 200, NEW_PARTY));
    let offer = reinvites_to_caller(&out).remove(0);
    let body = message::from_text(&String::from_utf8_lossy(&offer)).body;
    assert!(
        String::from_utf8_lossy(&body).contains("c=IN IP4 127.0.0.40"),
        "media goes straight to the new party: {offer:?}"
    );
    // A change from either side meanwhile is glare.
    let reinvite = from_leg_with(
        "INVITE",
        1,
        &new_invite,
        2,
        "Content-Type: application/sdp\r\n",
        &NEW_PARTY.replace("o=- 7 7", "o=- 7 8"),
    );
    let out = sim.give(Input::Modify {
        key: TransactionKey::of_request(&reinvite).expect("a transaction"),
        request: reinvite,
    });
    assert_eq!(in_dialog_answers(&out)[0].0, 491);
    // The caller no longer knows the dialog: the call ends.
    let out = sim.give(answer_in_dialog(None, &offer, 481, "", &[]));
    assert_eq!(ended(&out), Some((EndCause::SessionExpired, Side::System)));
}

/// The account the calls of the attended-transfer tests are billed to.
fn account_id() -> domain::ids::AccountId {
    domain::ids::AccountId(uuid::Uuid::from_u128(77))
}

fn joined_partner() -> Partner {
    Partner {
        call: domain::ids::CallId(uuid::Uuid::from_u128(2)),
        dialog: ("other-call@phone".into(), "edge-2".into()),
        media: addr("127.0.0.1:31000"),
        session: NEW_PARTY.as_bytes().to_vec(),
    }
}

const REPLACES: &str = "sip:+442079460000@ringledger.test?Replaces=other-call%40phone%3Bto-tag%3Dedge-2%3Bfrom-tag%3Dphone-2";

#[test]
fn an_attended_transfer_joins_the_call_with_the_one_its_replaces_names() {
    let mut inbound = plan(vec![phone_target()]);
    inbound.account.id = Some(account_id());
    let (mut sim, out) = Sim::start(inbound, relayed(secs(60)));
    let invite = invites(&out).remove(0).1;
    sim.give(response(0, &invite, 200, ANSWER));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    sim.edge.join_answer = Some(Ok(joined_partner()));
    let out = sim.give(refer_from_leg(0, &invite, 2, &refer_to(REPLACES)));
    // The call with the dialog Replaces names is asked, as this phone's, for this account,
    // with where this call's relay takes its media and the caller's session.
    let ask = out
        .iter()
        .find_map(|o| match o {
            Output::AskJoin(ask) => Some(ask.clone()),
            _ => None,
        })
        .expect("the other call asked");
    assert_eq!(
        ask.dialog,
        ("other-call@phone".to_string(), "edge-2".to_string())
    );
    assert_eq!(
        (ask.from_tag.as_str(), ask.account),
        ("phone-2", Some(account_id()))
    );
    assert_eq!(ask.partner.media, addr("127.0.0.1:30002"));
    assert_eq!(ask.partner.session, OFFER.as_bytes());
    // Joined: recorded, the REFER accepted and its success NOTIFYed, the phone let go (its
    // leg ended), the relay's port that faced it sending to the other call's relay; the
    // caller, not on hold, is left as it is.
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::Join { with, .. } if *with == joined_partner().call))
    );
    assert_eq!(
        in_dialog_answers(&out),
        vec![(202, Some("Accepted".into()))]
    );
    assert_eq!(
        notifies(&out),
        vec![(Peer::Leg(0), "SIP/2.0 200 OK".into(), true)]
    );
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::EndLeg { .. }))
    );
    assert!(
        out.iter().any(|o| matches!(o,
        Output::MediaPeer { side: RelaySide::Callee, rtp, .. } if *rtp == addr("127.0.0.1:31000")))
    );
    assert!(reinvites_to_caller(&out).is_empty(), "{out:?}");
    // The phone's BYE crossing the edge's ends nothing; a change from the caller is not
    // passed on (the other side is another call's party).
    let out = sim.give(Input::Bye(from_leg("BYE", 0, &invite, 3)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::ByeAnswer(a) if a.status == 200))
    );
    assert!(ended(&out).is_none());
    let hold = OFFER.replace("o=- 1 1", "o=- 1 3") + "a=sendonly\r\n";
    let (key, request) = caller_reinvite(3, &hold, &[]);
    let out = sim.give(Input::Modify { key, request });
    assert_eq!(in_dialog_answers(&out)[0].0, 488);
    // The caller hangs up: the call ends and the joined call is told.
    let out = sim.give(Input::Bye(from_caller("BYE", 4)));
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::Caller)));
    assert!(out.iter().any(|o| matches!(o,
        Output::TellPartner(d) if *d == joined_partner().dialog)));
}

#[test]
fn a_call_asked_to_join_checks_the_phone_and_the_account_then_lets_the_phone_go() {
    let mut outbound = plan(vec![target(0, Duration::ZERO)]);
    outbound.origin = Origin::IpDevice {
        device_id: DeviceId(uuid::Uuid::from_u128(4)),
    };
    outbound.account.id = Some(account_id());
    let (mut sim, out) = Sim::start(outbound, relayed(secs(60)));
    let invite = invites(&out).remove(0).1;
    sim.give(response(0, &invite, 200, ANSWER));
    sim.give(Input::Ack(from_caller("ACK", 1)));
    let ask = |from_tag: &str, account| JoinAsk {
        dialog: ("caller-call".into(), CALLER_TAG.into()),
        from_tag: from_tag.into(),
        account,
        partner: joined_partner(),
    };
    let answer = |out: &[Output]| {
        out.iter()
            .find_map(|o| match o {
                Output::JoinAnswer(a) => Some(a.clone()),
                _ => None,
            })
            .expect("an answer")
    };
    // Another phone's tag, or another account: refused, nothing recorded.
    let out = sim.give(Input::JoinAsked(ask("someone-else", Some(account_id()))));
    assert_eq!(answer(&out).unwrap_err().status, 481);
    let other = domain::ids::AccountId(uuid::Uuid::from_u128(78));
    let out = sim.give(Input::JoinAsked(ask("caller", Some(other))));
    assert_eq!(answer(&out).unwrap_err().status, 403);
    assert!(commands(&out).is_empty() && byes(&out).is_empty());
    // The phone's own dialog: joined, answered with where this call's relay takes media
    // and the callee's session; the phone let go, the relay pointed at the other call's.
    let out = sim.give(Input::JoinAsked(ask("caller", Some(account_id()))));
    assert!(
        commands(&out)
            .iter()
            .any(|c| matches!(c, CallCommand::Join { .. }))
    );
    let mine = answer(&out).expect("joined");
    assert_eq!(mine.media, addr("127.0.0.1:30000"));
    assert_eq!(
        mine.dialog,
        ("caller-call".to_string(), CALLER_TAG.to_string())
    );
    assert_eq!(mine.session, ANSWER.as_bytes());
    assert_eq!(byes(&out), vec![Peer::Caller]);
    assert!(
        out.iter().any(|o| matches!(o,
        Output::MediaPeer { side: RelaySide::Caller, rtp, .. } if *rtp == addr("127.0.0.1:31000")))
    );
    // The callee is offered the other call's party's session (its codec), at the relay.
    let offers: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Request {
                to: Peer::Leg(0),
                method: "INVITE",
                bytes,
                ..
            } => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(offers.len(), 1, "{out:?}");
    assert!(offers[0].contains("m=audio 30002 ") && !offers[0].contains("127.0.0.40"));
    // The joined call ends: so does this one, hanging up the callee, telling nobody back.
    let out = sim.give(Input::PartnerEnded);
    assert_eq!(ended(&out), Some((EndCause::NormalClearing, Side::System)));
    assert_eq!(byes(&out), vec![Peer::Leg(0)]);
    assert!(!out.iter().any(|o| matches!(o, Output::TellPartner(_))));
}

#[test]
fn an_attended_transfer_the_other_call_refuses_is_refused() {
    let (mut sim, invite) = answered_by_phone(relayed(secs(60)));
    sim.edge.join_answer = Some(Err(Answer::with_reason(403, "Forbidden (not yours)")));
    let out = sim.give(refer_from_leg(0, &invite, 2, &refer_to(REPLACES)));
    assert_eq!(
        in_dialog_answers(&out),
        vec![(403, Some("Forbidden (not yours)".into()))]
    );
    assert!(byes(&out).is_empty() && commands(&out).is_empty());
    // Replaces naming this very call is refused before anyone is asked.
    let own = "sip:+44@x?Replaces=caller-call%3Bto-tag%3Dedge-tag%3Bfrom-tag%3Dcaller";
    let out = sim.give(refer_from_leg(0, &invite, 3, &refer_to(own)));
    assert_eq!(in_dialog_answers(&out)[0].0, 400);
    assert!(!out.iter().any(|o| matches!(o, Output::AskJoin(_))));
}
