//! On-net routing: a call from a device to a number an account of the service holds (its main
//! number) goes to no carrier. The edge places the call's leg to itself, marked with a key only
//! this process knows; the marked INVITE is then planned as a call in to the account that holds
//! the number — its devices and extensions rung as for a carrier's call — with the calling
//! account as its origin. So each account's history shows its own call (the caller's out, the
//! callee's in), and the caller's leg is billed at the tariff's on-net rate (free without one).

use std::net::SocketAddr;

use domain::ids::AccountId;

use crate::message::RawMessage;

/// The header that marks an on-net leg, with the key, the calling account and phone.
pub const ON_NET_HEADER: &str = "Ringledger-On-Net";

/// The edge's on-net routing: its own address, and the key its on-net legs carry.
#[derive(Clone)]
pub struct OnNet {
    /// Where on-net legs go: the edge's own SIP address.
    pub local: SocketAddr,
    key: String,
}

impl std::fmt::Debug for OnNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnNet").field("local", &self.local).finish()
    }
}

/// Who placed an on-net leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnNetCaller {
    pub account_id: AccountId,
    /// Where the calling phone is (not rung when it calls its own account's number).
    pub phone: Option<SocketAddr>,
}

/// Whether two strings are equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

impl OnNet {
    /// On-net routing for an edge at `local`, with a fresh random key.
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            key: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The header that marks a leg `caller` places on-net (sent to `local`, the edge itself).
    pub fn mark(&self, caller: OnNetCaller) -> (String, String) {
        let phone = caller.phone.map(|p| p.to_string()).unwrap_or_default();
        let value = format!(
            "key={};account={};phone={phone}",
            self.key, caller.account_id
        );
        (ON_NET_HEADER.to_string(), value)
    }

    /// The caller of an on-net leg this edge placed, if `request` (from `source`) is one: it
    /// comes from this host and carries this process's key. Anything else marked so is a
    /// forgery and is planned as what it otherwise is.
    pub fn caller(&self, request: &RawMessage, source: SocketAddr) -> Option<OnNetCaller> {
        let value = request.header(ON_NET_HEADER)?;
        if source.ip() != self.local.ip() && !source.ip().is_loopback() {
            tracing::warn!(target: "ringledger::security", %source, "an on-net mark from elsewhere; ignored");
            return None;
        }
        let mut key = None;
        let mut account = None;
        let mut phone = None;
        for param in value.split(';') {
            match param.trim().split_once('=') {
                Some(("key", v)) => key = Some(v),
                Some(("account", v)) => account = v.parse::<uuid::Uuid>().ok(),
                Some(("phone", v)) => phone = v.parse::<SocketAddr>().ok(),
                _ => {}
            }
        }
        if !key.is_some_and(|k| same(k, &self.key)) {
            tracing::warn!(target: "ringledger::security", %source, "an on-net mark with a wrong key; ignored");
            return None;
        }
        Some(OnNetCaller {
            account_id: AccountId(account?),
            phone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked((name, value): (String, String)) -> RawMessage {
        crate::message::from_text(&format!(
            "INVITE sip:+4930222@192.0.2.5:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKon\r\n\
             From: <sip:+4930111@127.0.0.1>;tag=a\r\nTo: <sip:+4930222@192.0.2.5:5060>\r\n\
             Call-ID: on-net\r\nCSeq: 1 INVITE\r\n{name}: {value}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn only_this_edges_own_mark_from_this_host_makes_an_on_net_call() {
        let local: SocketAddr = "192.0.2.5:5060".parse().unwrap();
        let edge = OnNet::new(local);
        let caller = OnNetCaller {
            account_id: AccountId(uuid::Uuid::from_u128(1)),
            phone: Some("198.51.100.7:5062".parse().unwrap()),
        };
        let invite = marked(edge.mark(caller));
        assert_eq!(edge.caller(&invite, local), Some(caller));
        // From anywhere else: ignored.
        assert_eq!(
            edge.caller(&invite, "198.51.100.9:5060".parse().unwrap()),
            None
        );
        // Another process's key (or a guessed one): ignored.
        let other = OnNet::new(local).mark(caller);
        assert_eq!(edge.caller(&marked(other), local), None);
        // No mark: not on-net.
        let mut plain = invite.clone();
        plain.headers.retain(|(n, _)| n != ON_NET_HEADER);
        assert_eq!(edge.caller(&plain, local), None);
    }
}
