//! Matching a request to its server transaction (RFC 3261 §17.2.3): the top Via's branch
//! (with the `z9hG4bK` cookie), its sent-by and the method, an ACK matching its INVITE; for
//! older peers without the cookie, the Call-ID, CSeq number, From tag and top Via.

use crate::message::RawMessage;
use crate::message::header::{self, split_outside};

const COOKIE: &str = "z9hG4bK";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    Rfc2543 {
        call_id: String,
        cseq: u32,
        from_tag: String,
        via: String,
        method: String,
    },
}

impl TransactionKey {
    /// The key of the server transaction a request belongs to; `None` when the request lacks
    /// what a key needs (the parser refuses such requests before they get here).
    pub fn of_request(raw: &RawMessage) -> Option<Self> {
        Self::of_request_as(raw, raw.method()?)
    }

    /// The key the request would have with another method: a CANCEL's INVITE transaction.
    pub fn of_request_as(raw: &RawMessage, method: &str) -> Option<Self> {
        // An ACK belongs to the INVITE transaction it acknowledges (a non-2xx final).
        let method = if method == "ACK" { "INVITE" } else { method }.to_string();
        let via = split_outside(raw.header("Via")?, ',').first()?.to_string();
        let branch = header::param(&via, "branch").flatten();
        match branch {
            // A branch that is only the cookie identifies nothing (RFC 4475's badbranch): such a
            // request is matched the RFC 2543 way.
            Some(branch) if branch.len() > COOKIE.len() && branch.starts_with(COOKIE) => {
                let parts = header::via_parts(&via)?;
                let sent_by = match parts.port {
                    Some(p) => format!("{}:{p}", parts.host.to_ascii_lowercase()),
                    None => parts.host.to_ascii_lowercase(),
                };
                Some(TransactionKey::Rfc3261 {
                    branch,
                    sent_by,
                    method,
                })
            }
            _ => {
                let from = raw.header("From")?;
                let from_tag = header::name_addr(from)
                    .and_then(|n| header::param(n.params, "tag").flatten())
                    .unwrap_or_default();
                let cseq = raw
                    .header("CSeq")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(TransactionKey::Rfc2543 {
                    call_id: raw.header("Call-ID")?.to_string(),
                    cseq,
                    from_tag,
                    via,
                    method,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::normalize;

    fn key(msg: &str) -> TransactionKey {
        TransactionKey::of_request(&normalize(msg.as_bytes()).unwrap()).unwrap()
    }

    const INVITE: &str = "INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP Host.Example:5070;branch=z9hG4bKx1\r\nFrom: <sip:a@h>;tag=f\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";

    #[test]
    fn an_ack_and_a_retransmission_match_the_invite_and_a_cancel_does_not() {
        let invite = key(INVITE);
        assert_eq!(key(INVITE), invite);
        assert_eq!(
            key(&INVITE
                .replacen("INVITE sip", "ACK sip", 1)
                .replace("1 INVITE", "1 ACK")),
            invite
        );
        assert_ne!(
            key(&INVITE
                .replacen("INVITE sip", "CANCEL sip", 1)
                .replace("1 INVITE", "1 CANCEL")),
            invite
        );
        assert_ne!(key(&INVITE.replace("z9hG4bKx1", "z9hG4bKx2")), invite);
        // Host names compare case-insensitively.
        assert_eq!(key(&INVITE.replace("Host.Example", "host.example")), invite);
    }

    #[test]
    fn requests_without_the_cookie_are_keyed_by_dialog_and_cseq() {
        let old = INVITE.replace(";branch=z9hG4bKx1", "");
        assert!(matches!(key(&old), TransactionKey::Rfc2543 { cseq: 1, .. }));
        assert_ne!(
            key(&old),
            key(&old.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE"))
        );
        assert_ne!(key(&old), key(&old.replace("tag=f", "tag=g")));
    }
}
