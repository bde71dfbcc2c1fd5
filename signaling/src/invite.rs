//! INVITE as far as the edge takes it today: who is calling (a carrier, by source network, or
//! an IP device, by digest) and whether the number called is one of ours. Placing the legs
//! (the B2BUA) is not built yet, so a call that passes these checks is answered 480.

use std::net::SocketAddr;

use crate::answer::Answer;
use crate::auth::{Authenticator, Scheme};
use crate::message::RawMessage;
use crate::message::header::uri_user;
use crate::trunk::{Trunks, telephone_number};
use crate::view::SharedView;

/// The answer for a call the checks let through, until call control exists.
fn not_routed() -> Answer {
    Answer::with_reason(480, "Temporarily Unavailable (call routing not enabled)")
}

pub fn invite(
    request: &RawMessage,
    source: SocketAddr,
    trunks: &Trunks,
    auth: &Authenticator,
    view: &SharedView,
) -> Answer {
    let target = request
        .start_line
        .split(' ')
        .nth(1)
        .and_then(uri_user)
        .unwrap_or_default();
    let number = telephone_number(target);
    if let Some(trunk) = trunks.of_source(source.ip()) {
        // A carrier delivers a call: it must be for a number it serves, held by an account.
        let Some(number) = number else {
            return Answer::with_reason(404, "Not Found (not a telephone number)");
        };
        if !trunk.delivers(&number) {
            return Answer::with_reason(404, "Not Found (not a number of this trunk)");
        }
        if view.read().expect("routing view").holder(&number).is_none() {
            return Answer::with_reason(404, "Not Found (number not in service)");
        }
        return not_routed();
    }
    // Anyone else calls out only as an IP device that proves who it is (invariant 8): a 407
    // challenge first, 403 for credentials that do not hold.
    let now_secs = chrono::Utc::now().timestamp().max(0) as u64;
    match auth.authenticate(request, Scheme::Proxy, view, now_secs) {
        Err(answer) => answer,
        Ok(_) => not_routed(),
    }
}
