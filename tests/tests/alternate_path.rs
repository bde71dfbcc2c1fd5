//! The extension flows' failure cases over real UDP sockets: both paths answering at once
//! (the phone over data and the extension over the cellular network), and an extension that
//! was never verified (never rung, and a stranger at the access number). Billing is checked
//! to the penny.

use domain::call::{CallEvent, EndCause, LegFailure, Path, Side};
use ringledger_tests::carrier::{
    ANSWER, carrier_invite, carrier_invite_from, edge_with_trunk, ended, in_dialog,
    registered_phone, wait_for_contacts,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{MAIN_NUMBER, header, respond_to};

const EXTENSION: &str = "+447700900123";
const ACCESS: &str = "+442071838799";

/// The extension (rung through the trunk with the phone) answers; the phone answers a moment
/// later, its answer crossing the edge's: the extension's wins, the phone's is ACKed and hung
/// up, and only the cellular leg is billed — once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_both_paths_answer_at_once_the_first_wins_and_the_other_is_hung_up() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.price_calls(&[], None).await;
    let phone = registered_phone(&edge, "p1").await;
    wait_for_contacts(&edge, 1).await;
    let invite = carrier_invite(&trunk, MAIN_NUMBER, "race");
    trunk.send(&invite).await;
    let to_phone = phone.expect_request("INVITE").await;
    let to_mobile = trunk.expect_request("INVITE").await;
    assert!(to_mobile.starts_with(&format!("INVITE sip:{EXTENSION}@")));
    trunk
        .send(&respond_to(
            &to_mobile,
            200,
            "mob",
            Some(trunk.addr),
            ANSWER,
        ))
        .await;
    trunk.expect_request("ACK").await;
    // The phone answers too, before any CANCEL could reach it (it had sent no provisional,
    // so none was sent): its answer crosses, is confirmed, and is hung up at once.
    phone
        .send(&respond_to(&to_phone, 200, "ph", Some(phone.addr), ANSWER))
        .await;
    phone.expect_request("ACK").await;
    let bye = phone.expect_request("BYE").await;
    phone.send(&respond_to(&bye, 200, "ph", None, "")).await;
    let ok = trunk.expect_status(200).await;
    assert_eq!(header(&ok, "Call-ID"), "race@carrier");
    trunk.send(&in_dialog(&trunk, &invite, &ok, "ACK", 1)).await;
    trunk.send(&in_dialog(&trunk, &invite, &ok, "BYE", 2)).await;
    let bye = trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), header(&to_mobile, "Call-ID"));
    trunk.send(&respond_to(&bye, 200, "mob", None, "")).await;
    trunk.expect_status(200).await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    let answered = events
        .iter()
        .filter(|e| matches!(e, CallEvent::LegAnswered { .. }))
        .count();
    assert_eq!(answered, 1, "{events:?}");
    // The phone's leg was recorded as lost to the other answer when the extension won.
    assert!(events.iter().any(|e| matches!(
        e,
        CallEvent::LegFailed {
            failure: LegFailure::AnsweredElsewhere,
            ..
        }
    )));
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    let rated = edge.rated_legs().await;
    let seen: Vec<_> = rated.iter().map(|r| r.summary()).collect();
    assert_eq!(
        seen,
        vec![(
            "alternate_call_out",
            EXTENSION,
            Some(extension_id.to_string()),
            Some(31)
        )]
    );
    assert_eq!(edge.history_paths().await, ["alternate_call_out"]);
    edge.shutdown().await;
}

/// An extension whose number was never proved does not serve: with no phone registered, the
/// call is not sent to it, and the caller hears 480 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_extension_is_never_rung() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    edge.add_unverified_extension(EXTENSION).await;
    trunk
        .send(&carrier_invite(&trunk, MAIN_NUMBER, "unverified"))
        .await;
    let refused = trunk.expect_status(480).await;
    assert_eq!(header(&refused, "Call-ID"), "unverified@carrier");
    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        !events.iter().any(|e| matches!(
            e,
            CallEvent::LegStarted {
                path: Path::AlternateCallOut,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(ended(events), Some((EndCause::NoAnswer, Side::System)));
    assert!(edge.rated_legs().await.is_empty());
    edge.shutdown().await;
}

/// An extension whose number was never proved, dialling an access number of its account, is
/// a stranger there: 403, recorded as a refused call, and nothing is placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_extension_cannot_call_through() {
    let (edge, trunk) = edge_with_trunk(Backend::sqlite().await).await;
    edge.add_unverified_extension(EXTENSION).await;
    edge.add_access_number(ACCESS, Some("+442079460000")).await;
    trunk
        .send(&carrier_invite_from(&trunk, EXTENSION, ACCESS, "through"))
        .await;
    let refused = trunk.expect_status(403).await;
    assert!(refused.contains("caller not recognised"), "{refused}");
    let calls = edge.ended_calls(1).await;
    assert_eq!(calls.len(), 1);
    assert!(
        !calls[0]
            .iter()
            .any(|e| matches!(e, CallEvent::LegStarted { .. })),
        "{:?}",
        calls[0]
    );
    assert_eq!(ended(&calls[0]), Some((EndCause::Rejected, Side::System)));
    edge.shutdown().await;
}
