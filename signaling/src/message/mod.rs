//! SIP messages at the edge: normalised bytes parsed by rsip, the header values the edge reads,
//! and responses built from the request they answer.

pub mod header;
pub mod normalize;
pub mod syntax;

use std::net::SocketAddr;

/// The methods the edge answers (the rest: 405 with this list, or 501 if unknown).
pub const ALLOW: &str = "REGISTER, OPTIONS, ACK, CANCEL, BYE, INVITE, UPDATE, REFER, INFO";

use rsip::headers::UntypedHeader;

pub use normalize::{MAX_MESSAGE, NormalizeError, RawMessage, normalize};

/// The headers every request must carry (RFC 3261 §8.1.1).
const MANDATORY: [&str; 5] = ["Via", "From", "To", "Call-ID", "CSeq"];
/// Via values a request may carry (hops it crossed), and the longest header value taken: the
/// edge reads Vias several times per request and copies them into every response, so their
/// size is bounded before any of that work.
const MAX_VIAS: usize = 70;
const MAX_HEADER_VALUE: usize = 8 * 1024;

/// A request as the edge sees it: rsip's model of it, and its normalised headers for the
/// values rsip keeps as plain strings.
#[derive(Debug, Clone)]
pub struct Request {
    pub sip: rsip::Request,
    pub raw: RawMessage,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub sip: rsip::Response,
    pub raw: RawMessage,
}

#[derive(Debug, Clone)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Why a message was not taken, and whether it can still be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseError {
    /// Nothing to answer to: dropped and counted.
    #[error("unparseable: {0}")]
    Dropped(String),
    /// A request that can be answered with this status (400, or 501 for a method the edge
    /// does not know), and the reason phrase's detail.
    #[error("{status}: {reason}")]
    Refused {
        raw: Box<RawMessage>,
        status: u16,
        reason: String,
    },
}

/// A whole message written out in a test, as the edge reads it from 127.0.0.9:5060.
#[cfg(test)]
pub(crate) fn from_text(text: &str) -> RawMessage {
    match parse(
        text.as_bytes(),
        "127.0.0.9:5060".parse().expect("an address"),
    ) {
        Ok(Message::Request(r)) => r.raw,
        Ok(Message::Response(r)) => r.raw,
        Err(e) => panic!("not a SIP message ({e}): {text}"),
    }
}

/// Parses one whole message received from `source`. The top Via of a request is stamped with
/// `received` and `rport` (RFC 3261 §18.2.1, RFC 3581) so responses find their way back.
pub fn parse(bytes: &[u8], source: SocketAddr) -> Result<Message, ParseError> {
    let (mut raw, rest) = normalize::head(bytes).map_err(|e| ParseError::Dropped(e.to_string()))?;
    let request = raw.is_request();
    if let Some((name, _)) = raw.headers.iter().find(|(_, v)| v.len() > MAX_HEADER_VALUE) {
        // Not even the Via is trusted enough to answer with a copy of it.
        return Err(ParseError::Dropped(format!(
            "{name} is longer than {MAX_HEADER_VALUE} bytes"
        )));
    }
    let vias: usize = raw
        .headers_named("Via")
        .map(|v| header::split_outside(v, ',').len())
        .sum();
    if vias > MAX_VIAS {
        return Err(ParseError::Dropped(format!("more than {MAX_VIAS} Vias")));
    }
    // The header grammar is checked on the Vias as sent, before this hop writes into the top
    // one (stamping would tidy away the empty parameters it refuses); it is reported after
    // the checks that come first.
    let header_syntax = if request {
        syntax::headers(&raw)
    } else {
        Ok(())
    };
    if request {
        stamp_via(&mut raw, source);
    }
    let refuse = |raw: &RawMessage, status, reason: String| {
        if request && raw.header("Via").is_some() {
            ParseError::Refused {
                raw: Box::new(raw.clone()),
                status,
                reason,
            }
        } else {
            ParseError::Dropped(reason)
        }
    };
    match normalize::body(&raw, rest) {
        Ok(body) => raw.body = body,
        Err(e) => return Err(refuse(&raw, 400, format!("Bad Request ({e})"))),
    }
    if request {
        let (_, request_uri, version) = match syntax::request_line(&raw.start_line) {
            Ok(parts) => parts,
            Err(r) => return Err(refuse(&raw, r.status, r.reason)),
        };
        if let Some(missing) = MANDATORY.iter().find(|h| raw.header(h).is_none()) {
            return Err(refuse(&raw, 400, format!("Missing {missing}")));
        }
        let method = raw.method().unwrap_or_default();
        let cseq = raw.header("CSeq").unwrap_or_default();
        let mut cseq_parts = cseq.split_whitespace();
        let number_ok = cseq_parts.next().is_some_and(|n| n.parse::<u32>().is_ok());
        if !number_ok || cseq_parts.next() != Some(method) || cseq_parts.next().is_some() {
            return Err(refuse(&raw, 400, "Bad CSeq".into()));
        }
        if raw
            .header("Max-Forwards")
            .is_some_and(|m| m.trim().parse::<u8>().is_err())
        {
            return Err(refuse(&raw, 400, "Bad Max-Forwards".into()));
        }
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            let looks_like_sip = version
                .get(..4)
                .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"));
            return Err(if looks_like_sip {
                refuse(&raw, 505, format!("Version {version} Not Supported"))
            } else {
                refuse(&raw, 400, "Bad Request-Line".into())
            });
        }
        if let Err(r) = header_syntax.and_then(|()| syntax::request_uri(request_uri)) {
            return Err(refuse(&raw, r.status, r.reason));
        }
    }
    let canonical = raw.to_rsip_bytes();
    match rsip::SipMessage::try_from(canonical.as_slice()) {
        Ok(rsip::SipMessage::Request(sip)) => Ok(Message::Request(Request { sip, raw })),
        Ok(rsip::SipMessage::Response(sip)) => Ok(Message::Response(Response { sip, raw })),
        Err(e) => {
            let method = raw.method().unwrap_or_default();
            let known = rsip::Method::all().iter().any(|m| m.to_string() == method);
            let is_token = !method.is_empty()
                && method
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
            if request && !known && is_token {
                Err(refuse(
                    &raw,
                    501,
                    format!("Method {method} Not Implemented"),
                ))
            } else {
                Err(refuse(&raw, 400, format!("Bad Request ({e})")))
            }
        }
    }
}

/// Writes this hop's view of the top Via (RFC 3261 §18.2.1, RFC 3581): `received` when the
/// source address differs from the sent-by host, and `rport` with the source port when the
/// client asked for it. What the sender wrote in `received` or `rport=` itself is replaced
/// (or removed): those parameters are the server's to write, and trusting them would let a
/// sender aim the edge's responses at a third party.
fn stamp_via(raw: &mut RawMessage, source: SocketAddr) {
    let Some((_, via)) = raw
        .headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case("Via"))
    else {
        return;
    };
    // Only the first value of a comma-separated Via is this hop's.
    let mut values = header::split_outside(via, ',');
    let Some(top) = values.first().copied() else {
        return;
    };
    let Some(parts) = header::via_parts(top) else {
        return;
    };
    let ip = source.ip().to_string();
    let rport = header::param(top, "rport").is_some();
    let mut stamped: Vec<String> = header::split_outside(top, ';')
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let name = p.split('=').next().unwrap_or_default().trim();
            match name.to_ascii_lowercase().as_str() {
                _ if i == 0 => Some(p.to_string()),
                "received" => None,
                "rport" => Some(format!("rport={}", source.port())),
                _ => Some(p.to_string()),
            }
        })
        .collect();
    if parts.host.trim_matches(['[', ']']) != ip || rport {
        stamped.push(format!("received={ip}"));
    }
    let top = stamped.join(";");
    values[0] = &top;
    *via = values.join(", ");
}

/// Where a response to this request goes (RFC 3261 §18.2.2 with RFC 3581): over UDP, to the
/// address the request came from, at the `rport` the edge stamped when the client asked for
/// it, else at the sent-by port (5060 when it names none). Never to an address the request
/// names: a forged Via cannot turn the edge into a reflector.
pub fn response_target(raw: &RawMessage, source: SocketAddr) -> SocketAddr {
    let Some(top) = raw
        .header("Via")
        .and_then(|v| header::split_outside(v, ',').first().map(|s| s.to_string()))
    else {
        return source;
    };
    let port = match header::param(&top, "rport") {
        Some(_) => Some(source.port()),
        None => header::via_parts(&top).map(|p| p.port.unwrap_or(5060)),
    }
    .unwrap_or(source.port());
    SocketAddr::new(source.ip(), port)
}

/// The standard reason phrase of a status the edge sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        505 => "Version Not Supported",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response to `request`: its Vias, From, To (with `to_tag` added when the To has none and
/// the status is above 100), Call-ID and CSeq, then `extra` headers and `body`.
pub fn build_response(
    request: &RawMessage,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
    extra: Vec<rsip::Header>,
    body: Vec<u8>,
) -> rsip::Response {
    let mut headers = rsip::Headers::default();
    for (name, value) in &request.headers {
        let header = match name.to_ascii_lowercase().as_str() {
            "via" => rsip::Header::Via(rsip::headers::Via::new(value.clone())),
            "from" => rsip::Header::From(rsip::headers::From::new(value.clone())),
            "to" => {
                let mut to = value.clone();
                if let Some(tag) = to_tag
                    && status > 100
                    && header::name_addr(value)
                        .is_some_and(|n| header::param(n.params, "tag").is_none())
                {
                    to.push_str(&format!(";tag={tag}"));
                }
                rsip::Header::To(rsip::headers::To::new(to))
            }
            "call-id" => rsip::Header::CallId(rsip::headers::CallId::new(value.clone())),
            "cseq" => rsip::Header::CSeq(rsip::headers::CSeq::new(value.clone())),
            _ => continue,
        };
        headers.push(header);
    }
    headers.extend(extra);
    headers.push(rsip::Header::ContentLength(
        rsip::headers::ContentLength::new(body.len().to_string()),
    ));
    rsip::Response {
        status_code: rsip::StatusCode::Other(status, clean_reason(reason, status)),
        version: rsip::Version::V2,
        headers,
        body,
    }
}

/// A reason phrase safe to put on the status line: printable, one line, at most 120 bytes.
fn clean_reason(reason: Option<&str>, status: u16) -> String {
    let mut out: String = reason
        .unwrap_or(reason_phrase(status))
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 120 {
        let mut cut = 120;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// The bytes on the wire.
pub fn encode(response: &rsip::Response) -> Vec<u8> {
    response.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SocketAddr {
        "198.51.100.7:40000".parse().unwrap()
    }

    const REGISTER: &str = "REGISTER sip:ringledger SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKabc\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@ringledger>;tag=1928\r\n\
To: <sip:alice@ringledger>\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 REGISTER\r\n\
Contact: <sip:alice@10.0.0.2:5060>\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn a_register_parses_and_its_via_learns_the_real_source() {
        let Message::Request(r) = parse(REGISTER.as_bytes(), src()).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.sip.method, rsip::Method::Register);
        assert_eq!(
            r.raw.header("Via"),
            Some("SIP/2.0/UDP 10.0.0.2:5060;rport=40000;branch=z9hG4bKabc;received=198.51.100.7")
        );
        assert_eq!(response_target(&r.raw, src()), src());
    }

    #[test]
    fn without_rport_responses_go_to_the_sent_by_port_at_the_source_address() {
        let msg = REGISTER.replace(";rport", "");
        let Message::Request(r) = parse(msg.as_bytes(), src()).unwrap() else {
            panic!()
        };
        assert_eq!(
            response_target(&r.raw, src()),
            "198.51.100.7:5060".parse().unwrap()
        );
    }

    #[test]
    fn a_response_copies_the_dialog_headers_and_tags_the_to() {
        let Message::Request(r) = parse(REGISTER.as_bytes(), src()).unwrap() else {
            panic!()
        };
        let resp = build_response(&r.raw, 423, None, Some("xyz"), vec![], vec![]);
        let text = String::from_utf8(encode(&resp)).unwrap();
        assert!(
            text.starts_with("SIP/2.0 423 Interval Too Brief\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:alice@ringledger>;tag=xyz\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 314159 REGISTER\r\n"), "{text}");
        assert!(text.contains("Content-Length: 0\r\n\r\n"), "{text}");
        // What the edge sends parses again.
        assert!(matches!(
            parse(text.as_bytes(), src()),
            Ok(Message::Response(_))
        ));
    }

    #[test]
    fn ipv6_hosts_are_accepted_and_kept_as_written() {
        let msg = "REGISTER sip:[2001:db8::1]:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::2]:5070;rport;branch=z9hG4bK1\r\n\
From: <sip:alice@[2001:db8::1]>;tag=1\r\nTo: <sip:alice@[2001:db8::1]>\r\n\
Call-ID: v6\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@[2001:db8::2]:5070>\r\n\r\n";
        let source: SocketAddr = "[2001:db8::2]:5070".parse().unwrap();
        let Message::Request(r) = parse(msg.as_bytes(), source).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.sip.method, rsip::Method::Register);
        assert_eq!(r.raw.start_line, "REGISTER sip:[2001:db8::1]:5060 SIP/2.0");
        assert_eq!(
            r.raw.header("Contact"),
            Some("<sip:alice@[2001:db8::2]:5070>")
        );
        assert_eq!(response_target(&r.raw, source), source);
        let resp = encode(&build_response(
            &r.raw,
            200,
            None,
            Some("t"),
            vec![],
            vec![],
        ));
        let text = String::from_utf8(resp).unwrap();
        assert!(
            text.contains("Via: SIP/2.0/UDP [2001:db8::2]:5070;rport=5070;branch=z9hG4bK1;received=2001:db8::2\r\n"),
            "{text}"
        );
    }

    #[test]
    fn reason_phrases_stay_on_one_line() {
        let Message::Request(r) = parse(REGISTER.as_bytes(), src()).unwrap() else {
            panic!()
        };
        let resp = build_response(
            &r.raw,
            400,
            Some("Bad\r\nVia: injected"),
            None,
            vec![],
            vec![],
        );
        let text = String::from_utf8(encode(&resp)).unwrap();
        assert!(
            text.starts_with("SIP/2.0 400 Bad  Via: injected\r\n"),
            "{text}"
        );
        let long = "x".repeat(500);
        let resp = build_response(&r.raw, 400, Some(&long), None, vec![], vec![]);
        assert_eq!(
            encode(&resp).split(|b| *b == b'\r').next().unwrap().len(),
            12 + 120
        );
    }

    #[test]
    fn missing_headers_bad_cseq_and_unknown_methods_are_refused_with_a_status() {
        let no_call_id = REGISTER.replace("Call-ID: a84b4c76e66710\r\n", "");
        match parse(no_call_id.as_bytes(), src()) {
            Err(ParseError::Refused { status, reason, .. }) => {
                assert_eq!((status, reason.as_str()), (400, "Missing Call-ID"))
            }
            other => panic!("{other:?}"),
        }
        let bad_cseq = REGISTER.replace("314159 REGISTER", "314159 INVITE");
        assert!(matches!(
            parse(bad_cseq.as_bytes(), src()),
            Err(ParseError::Refused { status: 400, .. })
        ));
        let unknown = REGISTER
            .replace("REGISTER sip:", "FROBNICATE sip:")
            .replace("314159 REGISTER", "314159 FROBNICATE");
        assert!(matches!(
            parse(unknown.as_bytes(), src()),
            Err(ParseError::Refused { status: 501, .. })
        ));
        let no_via = REGISTER.replace(
            "Via: SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bKabc\r\n",
            "",
        );
        assert!(matches!(
            parse(no_via.as_bytes(), src()),
            Err(ParseError::Dropped(_))
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage", src()),
            Err(ParseError::Dropped(_))
        ));
    }

    #[test]
    fn responses_with_odd_reason_phrases_parse_and_impossible_ones_are_dropped() {
        let response = |status_line: &str| {
            format!(
                "{status_line}\r\nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe\r\n\
                 Call-ID: r\r\nCSeq: 35 INVITE\r\nFrom: <sip:a@b>;tag=1\r\n\
                 To: <sip:a@c>;tag=2\r\nContent-Length: 0\r\n\r\n"
            )
        };
        // RFC 4475's unreason (UTF-8 and punctuation) and noreason (empty phrase).
        for line in [
            "SIP/2.0 200 = 2**3 * 5**2 \u{3c0}\u{3c1}\u{3ce}\u{3c4}\u{3bf}\u{3c2}",
            "SIP/2.0 100 ",
        ] {
            match parse(response(line).as_bytes(), src()) {
                Ok(Message::Response(r)) => assert!(r.raw.start_line.starts_with("SIP/2.0 ")),
                other => panic!("{line}: {other:?}"),
            }
        }
        // RFC 4475's bigcode: no status code has ten digits.
        assert!(matches!(
            parse(
                response("SIP/2.0 4294967301 better not break the receiver").as_bytes(),
                src()
            ),
            Err(ParseError::Dropped(_))
        ));
    }

    #[test]
    fn a_request_line_is_read_as_written_and_its_uri_checked_before_anything_else() {
        let refused = |msg: String| match parse(msg.as_bytes(), src()) {
            Err(ParseError::Refused { status, reason, .. }) => (status, reason),
            other => panic!("{msg}: {other:?}"),
        };
        let spaced = REGISTER.replace(
            "REGISTER sip:ringledger SIP/2.0",
            "REGISTER  sip:ringledger SIP/2.0",
        );
        assert_eq!(refused(spaced), (400, "Bad Request-Line".into()));
        let unknown_scheme = REGISTER.replace("REGISTER sip:ringledger", "REGISTER urn:ringledger");
        assert_eq!(refused(unknown_scheme).0, 416);
        // A ';' in the user part is a valid SIP URI rsip alone could not read.
        let semi = REGISTER.replace("REGISTER sip:ringledger", "REGISTER sip:a;b=c@ringledger");
        let Message::Request(r) = parse(semi.as_bytes(), src()).unwrap() else {
            panic!()
        };
        assert_eq!(r.raw.start_line, "REGISTER sip:a;b=c@ringledger SIP/2.0");
        assert_eq!(r.sip.method, rsip::Method::Register);
    }

    #[test]
    fn a_received_or_rport_written_by_the_sender_never_aims_the_response() {
        // The attacker (198.51.100.7) names a victim (192.0.2.99) in its own Via.
        let forged = REGISTER.replace(
            ";rport;branch=z9hG4bKabc",
            ";received=192.0.2.99;rport=9;branch=z9hG4bKabc",
        );
        let Message::Request(r) = parse(forged.as_bytes(), src()).unwrap() else {
            panic!()
        };
        assert_eq!(
            r.raw.header("Via"),
            Some("SIP/2.0/UDP 10.0.0.2:5060;rport=40000;branch=z9hG4bKabc;received=198.51.100.7")
        );
        assert_eq!(response_target(&r.raw, src()), src());
        // Without rport, the sent-by host is still not trusted; only its port is used.
        let forged = REGISTER.replace(
            "10.0.0.2:5060;rport;branch=z9hG4bKabc",
            "192.0.2.99:5062;received=192.0.2.99;branch=z9hG4bKabc",
        );
        let Message::Request(r) = parse(forged.as_bytes(), src()).unwrap() else {
            panic!()
        };
        assert_eq!(
            response_target(&r.raw, src()),
            "198.51.100.7:5062".parse().unwrap()
        );
        assert_eq!(
            r.raw.header("Via"),
            Some("SIP/2.0/UDP 192.0.2.99:5062;branch=z9hG4bKabc;received=198.51.100.7")
        );
    }
}
