//! The requests the B2BUA writes as a client: a leg's INVITE, the CANCEL of an INVITE still
//! ringing (RFC 3261 §9.1) and the ACK a client transaction sends for a 3xx-6xx (§17.1.1.3).
//! In-dialog requests (ACK for a 2xx, BYE) come from `Dialog::request`.

use std::net::SocketAddr;

use crate::message::RawMessage;

/// Random hex for tags, branches and Call-IDs.
pub fn token(bytes: usize) -> String {
    let id = uuid::Uuid::new_v4();
    hex::encode(&id.as_bytes()[..bytes.min(16)])
}

/// A fresh branch with RFC 3261's magic cookie.
pub fn branch() -> String {
    format!("z9hG4bK{}", token(10))
}

/// What a new dialog the edge opens is known by: its Call-ID, the edge's From tag, and the
/// branch of its first request.
pub fn new_dialog() -> (String, String, String) {
    (format!("{}@ringledger", token(12)), token(6), branch())
}

fn headers(pairs: Vec<(&str, String)>) -> Vec<(String, String)> {
    pairs.into_iter().map(|(n, v)| (n.to_string(), v)).collect()
}

/// What a leg's INVITE carries; its Call-ID, From tag and branch are new.
pub struct LegInvite<'a> {
    pub request_uri: &'a str,
    /// The edge's own address: sent-by, From host and Contact.
    pub local: SocketAddr,
    /// `UDP` or `TCP`, for the Via.
    pub transport: &'a str,
    pub from_user: &'a str,
    pub max_forwards: u8,
    /// The caller's offer, passed on.
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// The session interval offered (RFC 4028: `Supported: timer`, `Session-Expires`), if the
    /// edge keeps the leg's session alive with refreshes.
    pub session_expires: Option<std::time::Duration>,
    /// Headers besides the edge's own (the on-net mark).
    pub extra: &'a [(String, String)],
}

/// A leg the edge places (a call's, a callback's, a flash call's): its INVITE, which opens a
/// new dialog, known by the Call-ID and the edge's From tag, and the INVITE's branch (its
/// client transaction).
pub struct NewLeg {
    pub invite: RawMessage,
    pub call_id: String,
    pub from_tag: String,
    pub branch: String,
}

/// The one way a leg's INVITE is made.
pub fn new_leg(leg: &LegInvite<'_>) -> NewLeg {
    let (call_id, from_tag, branch) = new_dialog();
    NewLeg {
        invite: invite(leg, &call_id, &from_tag, &branch),
        call_id,
        from_tag,
        branch,
    }
}

fn invite(leg: &LegInvite<'_>, call_id: &str, from_tag: &str, branch: &str) -> RawMessage {
    let mut h = headers(vec![
        (
            "Via",
            format!(
                "SIP/2.0/{} {};branch={};rport",
                leg.transport, leg.local, branch
            ),
        ),
        ("Max-Forwards", leg.max_forwards.to_string()),
        (
            "From",
            format!("<sip:{}@{}>;tag={from_tag}", leg.from_user, leg.local),
        ),
        ("To", format!("<{}>", leg.request_uri)),
        ("Call-ID", call_id.to_string()),
        ("CSeq", "1 INVITE".into()),
        ("Contact", format!("<sip:ringledger@{}>", leg.local)),
        ("Allow", crate::message::ALLOW.into()),
    ]);
    if let Some(ct) = leg.content_type.filter(|_| !leg.body.is_empty()) {
        h.push(("Content-Type".into(), ct.to_string()));
    }
    if let Some(interval) = leg.session_expires {
        h.push(("Supported".into(), "timer".into()));
        h.push(("Session-Expires".into(), interval.as_secs().to_string()));
    }
    h.extend(leg.extra.iter().cloned());
    RawMessage {
        start_line: format!("INVITE {} SIP/2.0", leg.request_uri),
        headers: h,
        body: leg.body.to_vec(),
    }
}

/// The CANCEL of a ringing INVITE: its request-URI, top Via, Call-ID, From, To, Route and
/// CSeq number, with the method CANCEL.
pub fn cancel(invite: &RawMessage) -> RawMessage {
    same_transaction(invite, "CANCEL", invite.header("To").unwrap_or_default())
}

/// The ACK of a 3xx-6xx final response to `invite`: like the CANCEL, but with the To (and
/// its tag) of the response.
pub fn ack_for_failure(invite: &RawMessage, response: &RawMessage) -> RawMessage {
    let to = response
        .header("To")
        .or(invite.header("To"))
        .unwrap_or_default();
    same_transaction(invite, "ACK", to)
}

fn same_transaction(invite: &RawMessage, method: &str, to: &str) -> RawMessage {
    let uri = invite.start_line.split(' ').nth(1).unwrap_or_default();
    let cseq = invite
        .header("CSeq")
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or("1");
    let mut h = headers(vec![
        ("Via", invite.header("Via").unwrap_or_default().to_string()),
        ("Max-Forwards", "70".into()),
        (
            "From",
            invite.header("From").unwrap_or_default().to_string(),
        ),
        ("To", to.to_string()),
        (
            "Call-ID",
            invite.header("Call-ID").unwrap_or_default().to_string(),
        ),
        ("CSeq", format!("{cseq} {method}")),
    ]);
    h.extend(
        invite
            .headers_named("Route")
            .map(|r| ("Route".to_string(), r.to_string())),
    );
    RawMessage {
        start_line: format!("{method} {uri} SIP/2.0"),
        headers: h,
        body: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg_invite() -> RawMessage {
        let leg = LegInvite {
            request_uri: "sip:alice-1@192.0.2.7:5062",
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: "UDP",
            from_user: "+441632960001",
            max_forwards: 69,
            content_type: Some("application/sdp"),
            body: b"v=0\r\n",
            session_expires: None,
            extra: &[],
        };
        invite(&leg, "c1@edge", "t1", "z9hG4bKabc")
    }

    #[test]
    fn a_leg_invite_carries_the_offer_and_the_edge_as_contact() {
        let raw = leg_invite();
        let text = String::from_utf8(raw.to_bytes()).unwrap();
        assert!(text.starts_with("INVITE sip:alice-1@192.0.2.7:5062 SIP/2.0\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport\r\n"));
        assert!(text.contains("From: <sip:+441632960001@127.0.0.1:5060>;tag=t1\r\n"));
        assert!(text.contains("Contact: <sip:ringledger@127.0.0.1:5060>\r\n"));
        assert!(text.contains("Max-Forwards: 69\r\n"));
        assert!(text.contains("Content-Type: application/sdp\r\n"));
        assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
        // It is a message the edge's own parser accepts.
        crate::message::parse(&raw.to_bytes(), "127.0.0.1:5060".parse().unwrap()).unwrap();
    }

    #[test]
    fn cancel_and_failure_ack_stay_in_the_invite_transaction() {
        let inv = leg_invite();
        let cancel = cancel(&inv);
        assert_eq!(
            cancel.start_line,
            "CANCEL sip:alice-1@192.0.2.7:5062 SIP/2.0"
        );
        assert_eq!(cancel.header("Via"), inv.header("Via"));
        assert_eq!(cancel.header("CSeq"), Some("1 CANCEL"));
        assert_eq!(cancel.header("To"), Some("<sip:alice-1@192.0.2.7:5062>"));
        let mut busy = inv.clone();
        busy.start_line = "SIP/2.0 486 Busy Here".into();
        for (n, v) in &mut busy.headers {
            if n == "To" {
                v.push_str(";tag=callee");
            }
        }
        let ack = ack_for_failure(&inv, &busy);
        assert_eq!(ack.start_line, "ACK sip:alice-1@192.0.2.7:5062 SIP/2.0");
        assert_eq!(ack.header("CSeq"), Some("1 ACK"));
        assert_eq!(
            ack.header("To"),
            Some("<sip:alice-1@192.0.2.7:5062>;tag=callee")
        );
        assert_eq!(ack.header("Via"), inv.header("Via"));
    }
}
