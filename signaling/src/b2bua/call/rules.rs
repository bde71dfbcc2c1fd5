//! What a call decides by, apart from its state: how long to wait for a call-in, what the
//! caller hears when every leg failed, and the small SIP pieces the call's requests and
//! responses are read and made with (shared with the callback and the flash call).

use std::time::Duration;

use domain::call::EndCause;

use crate::answer::Answer;
use crate::dialog::{Dialog, Hop};
use crate::message::RawMessage;
use crate::outgoing::Outcome;
use crate::requests;

/// The shortest a call-in is waited for: less leaves the user no time to dial.
const MIN_CALL_IN_WAIT: Duration = Duration::from_secs(5);

/// How long a call waits for the extension to call in, with `ring_left` before the call
/// ends unanswered: `configured` (`sip.call_in_timeout_secs`), but never more than half the
/// ring time left, so that calling the extension out instead still has as long to ring; none
/// when that leaves less than `MIN_CALL_IN_WAIT` (the extension is called out at once).
pub(crate) fn call_in_wait(configured: Duration, ring_left: Duration) -> Option<Duration> {
    // In whole seconds (ring_left is a hair under the account's setting by the time the call
    // gets here): the user is told "within N s".
    let ring_left = Duration::from_secs(ring_left.as_millis().div_ceil(1000) as u64);
    Some(configured.min(ring_left / 2)).filter(|w| *w >= MIN_CALL_IN_WAIT)
}

/// A BYE inside `dialog` from the edge (`local`) over `transport`, and its branch.
pub(crate) fn bye_in(dialog: &mut Dialog, transport: &str, local: &str) -> (Vec<u8>, String) {
    let branch = requests::branch();
    let bye = dialog.request(
        "BYE",
        None,
        Hop {
            transport,
            sent_by: local,
            branch: &branch,
        },
        &[],
        &[],
    );
    (bye, branch)
}

pub(crate) fn status_of(response: &RawMessage) -> Option<u16> {
    response.start_line.split(' ').nth(1)?.parse().ok()
}

/// The status a request's outcome amounts to: its response's (500 when unreadable), or 408
/// for no answer.
pub(crate) fn outcome_status(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Response(r) => status_of(r).unwrap_or(500),
        Outcome::Timeout => 408,
    }
}

pub(crate) fn content_type(message: &RawMessage) -> String {
    message
        .header("Content-Type")
        .unwrap_or("application/sdp")
        .to_string()
}

/// What the caller hears when every leg failed (after RFC 3261 §16.7's choice of the best
/// response): a global refusal (6xx) or busy first, then the lowest status; a leg that never
/// answered reads as no answer.
pub(crate) fn caller_failure(statuses: &[u16]) -> (Answer, EndCause) {
    if let Some(&s) = statuses.iter().find(|s| **s >= 600) {
        return (Answer::status(s), EndCause::Rejected);
    }
    if statuses.contains(&486) {
        return (Answer::status(486), EndCause::Busy);
    }
    match statuses.iter().copied().filter(|s| *s != 408).min() {
        Some(s) => (Answer::status(s), EndCause::Rejected),
        None => (
            Answer::with_reason(480, "Temporarily Unavailable (no answer)"),
            EndCause::NoAnswer,
        ),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_is_waited_for_at_most_half_the_ring_time_left() {
        let secs = Duration::from_secs;
        // The defaults (15 s, an account ringing 30 s): 15 s to call in, 15 s to call out,
        // though the call reaches this a little after it started ringing.
        assert_eq!(call_in_wait(secs(15), secs(30)), Some(secs(15)));
        assert_eq!(
            call_in_wait(secs(15), Duration::from_millis(29_990)),
            Some(secs(15))
        );
        // A configured wait as long as the ring time is cut to half of it.
        assert_eq!(call_in_wait(secs(30), secs(30)), Some(secs(15)));
        assert_eq!(call_in_wait(secs(60), secs(20)), Some(secs(10)));
        // Too little ring time to wait at all: called out at once.
        assert_eq!(call_in_wait(secs(15), secs(8)), None);
    }

    #[test]
    fn the_caller_hears_a_refusal_or_busy_before_other_failures() {
        assert_eq!(caller_failure(&[480, 603]).0.status, 603);
        assert_eq!(caller_failure(&[404, 486, 480]).1, EndCause::Busy);
        assert_eq!(caller_failure(&[480, 404]).0.status, 404);
        let (answer, cause) = caller_failure(&[408, 408]);
        assert_eq!((answer.status, cause), (480, EndCause::NoAnswer));
    }
}
