//! Dialogs (RFC 3261 §12): the state two user agents share once an INVITE is answered — Call-ID,
//! tags, the remote target, the route set and the CSeq numbers — and the requests sent inside
//! one (ACK for a 2xx, BYE, re-INVITE). Plain data: the B2BUA keeps one per leg.

use crate::message::RawMessage;
use crate::message::header::{self, name_addr, split_outside};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error("the message has no {0}")]
    Missing(&'static str),
    #[error("the {0} header has no tag")]
    NoTag(&'static str),
}

/// The Via this side puts on a request: transport, sent-by and a fresh branch.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    pub transport: &'a str,
    pub sent_by: &'a str,
    pub branch: &'a str,
}

/// What identifies a dialog from this side: Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    /// Our address-of-record header value (From as we send it), without its tag.
    pub local_uri: String,
    /// The peer's (To as we send it), without its tag.
    pub remote_uri: String,
    /// Where requests inside the dialog go: the peer's Contact.
    pub remote_target: String,
    /// Route headers to put on every request, in order.
    pub route_set: Vec<String>,
    /// The last CSeq number we used.
    pub local_cseq: u32,
    /// The last CSeq number the peer used, once it sent a request.
    pub remote_cseq: Option<u32>,
}

/// A header value's name-addr without the header's `tag` parameter.
fn without_tag(value: &str) -> String {
    let parts: Vec<&str> = split_outside(value, ';');
    parts
        .iter()
        .filter(|p| !p.trim_start().to_ascii_lowercase().starts_with("tag="))
        .copied()
        .collect::<Vec<_>>()
        .join(";")
}

fn required<'a>(message: &'a RawMessage, name: &'static str) -> Result<&'a str, DialogError> {
    message.header(name).ok_or(DialogError::Missing(name))
}

fn tag_of(value: &str) -> Option<String> {
    name_addr(value).and_then(|n| header::param(n.params, "tag").flatten())
}

fn contact_uri(message: &RawMessage) -> Result<String, DialogError> {
    message
        .header("Contact")
        .and_then(|c| split_outside(c, ',').first().and_then(|c| name_addr(c)))
        .map(|n| n.uri.to_string())
        .ok_or(DialogError::Missing("Contact"))
}

fn cseq_number(message: &RawMessage) -> Result<u32, DialogError> {
    message
        .header("CSeq")
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or(DialogError::Missing("CSeq"))
}

/// Every Record-Route value, one route per entry, in the order the message lists them.
fn record_routes(message: &RawMessage) -> Vec<String> {
    message
        .headers_named("Record-Route")
        .flat_map(|v| split_outside(v, ','))
        .map(str::to_string)
        .collect()
}

impl Dialog {
    /// The caller's side: from the INVITE we sent and the 2xx (or tagged 1xx) it got.
    pub fn as_caller(invite: &RawMessage, response: &RawMessage) -> Result<Self, DialogError> {
        let from = required(invite, "From")?;
        let to = required(response, "To")?;
        let mut route_set = record_routes(response);
        route_set.reverse();
        Ok(Self {
            id: DialogId {
                call_id: required(invite, "Call-ID")?.to_string(),
                local_tag: tag_of(from).ok_or(DialogError::NoTag("From"))?,
                remote_tag: tag_of(to).ok_or(DialogError::NoTag("To"))?,
            },
            local_uri: without_tag(from),
            remote_uri: without_tag(to),
            remote_target: contact_uri(response)?,
            route_set,
            local_cseq: cseq_number(invite)?,
            remote_cseq: None,
        })
    }

    /// The callee's side: from the INVITE we received and the To tag we answer with.
    pub fn as_callee(invite: &RawMessage, local_tag: &str) -> Result<Self, DialogError> {
        let from = required(invite, "From")?;
        let to = required(invite, "To")?;
        Ok(Self {
            id: DialogId {
                call_id: required(invite, "Call-ID")?.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag: tag_of(from).ok_or(DialogError::NoTag("From"))?,
            },
            local_uri: without_tag(to),
            remote_uri: without_tag(from),
            remote_target: contact_uri(invite)?,
            route_set: record_routes(invite),
            local_cseq: 0,
            remote_cseq: Some(cseq_number(invite)?),
        })
    }

    /// Whether a request from the peer belongs to this dialog (its From tag is the remote
    /// tag and its To tag ours).
    pub fn matches(&self, request: &RawMessage) -> bool {
        request.header("Call-ID") == Some(self.id.call_id.as_str())
            && request.header("From").and_then(tag_of).as_deref()
                == Some(self.id.remote_tag.as_str())
            && request.header("To").and_then(tag_of).as_deref() == Some(self.id.local_tag.as_str())
    }

    /// A request from the peer with this CSeq: it must be above the last one (RFC 3261
    /// §12.2.2; a lower one is answered 500). ACK and CANCEL reuse their INVITE's number and
    /// are not checked here.
    pub fn accept_remote_cseq(&mut self, cseq: u32) -> bool {
        if self.remote_cseq.is_some_and(|last| cseq <= last) {
            return false;
        }
        self.remote_cseq = Some(cseq);
        true
    }

    /// A request inside the dialog, sent through `hop`: BYE,
    /// re-INVITE, UPDATE... (a new CSeq number), or ACK for a 2xx (`ack_of` = the INVITE's
    /// CSeq number). Loose routing (RFC 3261 §12.2.1.1): the request-URI is the remote target
    /// and the route set becomes Route headers; a strict first route takes the request-URI
    /// and the remote target goes last.
    pub fn request(
        &mut self,
        method: &str,
        ack_of: Option<u32>,
        hop: Hop<'_>,
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let cseq = match ack_of {
            Some(n) => n,
            None => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        let strict = self
            .route_set
            .first()
            .and_then(|r| name_addr(r))
            .is_some_and(|n| header::param(n.uri, "lr").is_none() && !n.uri.contains(";lr"));
        let (uri, routes) = if strict {
            let first = name_addr(&self.route_set[0])
                .map(|n| n.uri.to_string())
                .unwrap_or_default();
            let mut rest: Vec<String> = self.route_set[1..].to_vec();
            rest.push(format!("<{}>", self.remote_target));
            (first, rest)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        let mut text = format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{} {};branch={};rport\r\n\
             Max-Forwards: 70\r\n\
             From: {};tag={}\r\n\
             To: {};tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n",
            hop.transport,
            hop.sent_by,
            hop.branch,
            self.local_uri,
            self.id.local_tag,
            self.remote_uri,
            self.id.remote_tag,
            self.id.call_id,
        );
        for route in routes {
            text.push_str(&format!("Route: {route}\r\n"));
        }
        for (name, value) in extra {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::normalize;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP edge.example.com:5060;branch=z9hG4bKnashds8\r\n\
From: \"Edge\" <sip:+442071838750@edge.example.com>;tag=1928301774\r\n\
To: <sip:bob@biloxi.example.com>\r\n\
Call-ID: a84b4c76e66710@edge\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:edge@192.0.2.1:5060>\r\n\
Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\r\n";

    const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP edge.example.com:5060;branch=z9hG4bKnashds8\r\n\
From: \"Edge\" <sip:+442071838750@edge.example.com>;tag=1928301774\r\n\
To: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
Call-ID: a84b4c76e66710@edge\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4:5062;transport=udp>\r\n\
Record-Route: <sip:p2.example.com;lr>\r\n\
Record-Route: <sip:p1.example.com;lr>\r\n\r\n";

    fn hop(branch: &str) -> Hop<'_> {
        Hop {
            transport: "UDP",
            sent_by: "192.0.2.1:5060",
            branch,
        }
    }

    fn raw(s: &str) -> RawMessage {
        normalize(s.as_bytes()).unwrap()
    }

    #[test]
    fn the_caller_builds_its_dialog_from_the_2xx_and_routes_through_the_reversed_record_route() {
        let mut d = Dialog::as_caller(&raw(INVITE), &raw(OK)).unwrap();
        assert_eq!(d.id.local_tag, "1928301774");
        assert_eq!(d.id.remote_tag, "a6c85cf");
        assert_eq!(d.remote_target, "sip:bob@192.0.2.4:5062;transport=udp");
        assert_eq!(
            d.route_set,
            vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        let ack =
            String::from_utf8(d.request("ACK", Some(314159), hop("z9hG4bKa1"), &[], b"")).unwrap();
        assert!(
            ack.starts_with("ACK sip:bob@192.0.2.4:5062;transport=udp SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(ack.contains("CSeq: 314159 ACK\r\n"), "{ack}");
        assert!(
            ack.contains("Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2.example.com;lr>\r\n"),
            "{ack}"
        );
        let bye = String::from_utf8(d.request("BYE", None, hop("z9hG4bKa2"), &[], b"")).unwrap();
        assert!(bye.contains("CSeq: 314160 BYE\r\n"), "{bye}");
        assert!(
            bye.contains("From: \"Edge\" <sip:+442071838750@edge.example.com>;tag=1928301774\r\n"),
            "{bye}"
        );
        assert!(
            bye.contains("To: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"),
            "{bye}"
        );
        // What the dialog writes is a request the edge's own parser accepts.
        let parsed = crate::message::parse(bye.as_bytes(), "192.0.2.4:5062".parse().unwrap());
        assert!(
            matches!(parsed, Ok(crate::message::Message::Request(_))),
            "{parsed:?}"
        );
    }

    #[test]
    fn the_callee_matches_the_callers_requests_and_wants_rising_cseqs() {
        let mut d = Dialog::as_callee(&raw(INVITE), "b2b-77").unwrap();
        assert_eq!(d.id.remote_tag, "1928301774");
        assert_eq!(d.remote_target, "sip:edge@192.0.2.1:5060");
        assert_eq!(
            d.route_set,
            vec!["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        let bye = INVITE
            .replace("INVITE sip:", "BYE sip:")
            .replace("314159 INVITE", "314160 BYE")
            .replace(
                "To: <sip:bob@biloxi.example.com>",
                "To: <sip:bob@biloxi.example.com>;tag=b2b-77",
            );
        assert!(d.matches(&raw(&bye)));
        assert!(!d.matches(&raw(&bye.replace("tag=b2b-77", "tag=other"))));
        assert!(d.accept_remote_cseq(314160));
        assert!(!d.accept_remote_cseq(314160), "a repeated CSeq is refused");
        assert!(!d.accept_remote_cseq(1));
    }

    #[test]
    fn a_strict_first_route_takes_the_request_uri() {
        let ok = OK
            .replace("Record-Route: <sip:p2.example.com;lr>\r\n", "")
            .replace("<sip:p1.example.com;lr>", "<sip:p1.example.com>");
        let mut d = Dialog::as_caller(&raw(INVITE), &raw(&ok)).unwrap();
        let bye = String::from_utf8(d.request("BYE", None, hop("z9hG4bKs"), &[], b"")).unwrap();
        assert!(
            bye.starts_with("BYE sip:p1.example.com SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(
            bye.contains("Route: <sip:bob@192.0.2.4:5062;transport=udp>\r\n"),
            "{bye}"
        );
    }

    #[test]
    fn a_2xx_without_a_to_tag_or_contact_makes_no_dialog() {
        let untagged = OK.replace(";tag=a6c85cf", "");
        assert_eq!(
            Dialog::as_caller(&raw(INVITE), &raw(&untagged)),
            Err(DialogError::NoTag("To"))
        );
        let no_contact = OK.replace("Contact: <sip:bob@192.0.2.4:5062;transport=udp>\r\n", "");
        assert_eq!(
            Dialog::as_caller(&raw(INVITE), &raw(&no_contact)),
            Err(DialogError::Missing("Contact"))
        );
    }
}
