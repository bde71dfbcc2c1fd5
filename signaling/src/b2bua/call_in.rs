//! Alternate path (b), call-in (docs/OPERATIONS.md, "Call-in"): a caller kept ringing while the
//! user's extension calls one of the account's access numbers through its own carrier. The
//! waiting call is found by the pair (access number, extension number) a carrier's INVITE
//! carries; the device is told over data with a SIP MESSAGE.
//!
//! The notice is a MESSAGE (RFC 3428) to each of the account's live contacts: a `text/plain`
//! line a person can read on any softphone, and the header
//! `Ringledger-Call-In: access-number=+44...;from=+44...;token=12345678;expires=30;proof=keypad`
//! (call the access number from the extension `from` within `expires` seconds; with
//! `proof=keypad`, key the token when the edge answers and plays dial tone; with
//! `proof=caller-id` the carrier's caller ID is trusted and the call is bridged at once) for
//! an app that dials the access number itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use domain::E164;
use tokio::sync::mpsc;

use super::CallInput;
use crate::message::RawMessage;
use crate::requests;

/// Calls waiting for an extension to call in, by (access number, extension number).
#[derive(Default)]
pub struct CallIns {
    waiting: Mutex<HashMap<(E164, E164), mpsc::Sender<CallInput>>>,
}

impl CallIns {
    /// Makes the call on `tx` the one a call-in from `caller` to `access` reaches; false when
    /// another call already waits for that same pair (the extension can take one at a time).
    pub fn wait(&self, access: &E164, caller: &E164, tx: mpsc::Sender<CallInput>) -> bool {
        let mut waiting = self.lock();
        let key = (access.clone(), caller.clone());
        if waiting.get(&key).is_some_and(|t| !t.is_closed()) {
            return false;
        }
        waiting.insert(key, tx);
        true
    }

    /// The call waiting for this pair, which stops waiting.
    pub fn take(&self, access: &E164, caller: &E164) -> Option<mpsc::Sender<CallInput>> {
        self.lock()
            .remove(&(access.clone(), caller.clone()))
            .filter(|tx| !tx.is_closed())
    }

    /// Stops waiting for this pair, if the call on `tx` is the one waiting.
    pub fn forget(&self, access: &E164, caller: &E164, tx: &mpsc::Sender<CallInput>) {
        let mut waiting = self.lock();
        let key = (access.clone(), caller.clone());
        if waiting.get(&key).is_some_and(|t| t.same_channel(tx)) {
            waiting.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(E164, E164), mpsc::Sender<CallInput>>> {
        self.waiting.lock().expect("call-ins")
    }
}

/// Digits in a call-in token.
pub const TOKEN_DIGITS: usize = 8;

/// A token for a call-in: eight random digits, keyed in on the phone to prove the call-in.
pub fn token() -> String {
    let n = u128::from_be_bytes(*uuid::Uuid::new_v4().as_bytes());
    format!("{:08}", n % 100_000_000)
}

/// Whether `keyed` is `token`, compared in time that does not depend on where they differ.
pub fn token_matches(keyed: &str, token: &str) -> bool {
    keyed.len() == token.len()
        && keyed
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// What the device is told.
pub struct Notice<'a> {
    pub contact_uri: &'a str,
    pub local: SocketAddr,
    pub transport: &'a str,
    pub access_number: &'a E164,
    pub extension: &'a E164,
    pub caller: &'a str,
    pub token: &'a str,
    pub expires_secs: u64,
    /// The token is to be keyed in (else the caller ID is trusted).
    pub keyed: bool,
}

/// The MESSAGE telling a device to call in, and its branch.
pub fn message(notice: &Notice<'_>) -> (RawMessage, String) {
    let (call_id, from_tag, branch) = requests::new_dialog();
    let how = if notice.keyed {
        format!("and key {} at the tone to take it.", notice.token)
    } else {
        format!("to take it (token {}).", notice.token)
    };
    let body = format!(
        "Incoming call from {caller}: call {access} from {extension} within {secs} s {how}",
        caller = notice.caller,
        access = notice.access_number.as_str(),
        extension = notice.extension.as_str(),
        secs = notice.expires_secs,
    );
    let headers = [
        (
            "Via",
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                notice.transport, notice.local
            ),
        ),
        ("Max-Forwards", "70".into()),
        (
            "From",
            format!("<sip:ringledger@{}>;tag={from_tag}", notice.local),
        ),
        ("To", format!("<{}>", notice.contact_uri)),
        ("Call-ID", call_id),
        ("CSeq", "1 MESSAGE".into()),
        (
            "Ringledger-Call-In",
            format!(
                "access-number={};from={};token={};expires={};proof={}",
                notice.access_number.as_str(),
                notice.extension.as_str(),
                notice.token,
                notice.expires_secs,
                if notice.keyed { "keypad" } else { "caller-id" }
            ),
        ),
        ("Content-Type", "text/plain".into()),
    ];
    let message = RawMessage {
        start_line: format!("MESSAGE {} SIP/2.0", notice.contact_uri),
        headers: headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        body: body.into_bytes(),
    };
    (message, branch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_reaches_the_call_waiting_for_its_pair_once() {
        let calls = CallIns::default();
        let access = E164::parse("+442071838799").unwrap();
        let mobile = E164::parse("+447700900123").unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let (other, _other_rx) = mpsc::channel(1);
        assert!(calls.wait(&access, &mobile, tx.clone()));
        assert!(
            !calls.wait(&access, &mobile, other.clone()),
            "one at a time"
        );
        calls.forget(&access, &mobile, &other);
        assert!(
            calls
                .take(&access, &mobile)
                .is_some_and(|t| t.same_channel(&tx))
        );
        assert!(calls.take(&access, &mobile).is_none(), "taken once");
    }

    #[test]
    fn tokens_are_eight_digits() {
        let t = token();
        assert_eq!(t.len(), TOKEN_DIGITS);
        assert!(t.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn a_keyed_token_matches_only_itself() {
        assert!(token_matches("12345678", "12345678"));
        assert!(!token_matches("12345679", "12345678"));
        assert!(!token_matches("1234567", "12345678"));
        assert!(!token_matches("123456789", "12345678"));
        assert!(!token_matches("", "12345678"));
    }
}
