//! The grammar a request is held to before any handler (and so before any challenge) sees it:
//! the Request-Line, the Request-URI, header fields that may appear once, the Vias, and the
//! name-addr headers the edge reads (From, To, Contact). Each rule is RFC 3261 §25's, checked
//! only as far as the edge acts on it; RFC 4475 and RFC 5118 are the cases it answers (see
//! tests/tests/torture.rs). Unknown headers are not looked into.

use std::net::Ipv6Addr;

use super::header;
use super::normalize::RawMessage;

/// Why a request is refused, and with which status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        reason: reason.into(),
    }
}

/// Header fields a request carries at most once (RFC 3261 §7.3.1: the others may repeat).
const SINGLE: [&str; 7] = [
    "Call-ID",
    "From",
    "To",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
];

/// `Method SP Request-URI SP SIP-Version`, with exactly one SP between them and none at the
/// ends (RFC 3261 §7.1); the three parts.
pub fn request_line(line: &str) -> Result<(&str, &str, &str), Refusal> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(uri), Some(version), None)
            if !method.is_empty()
                && !uri.is_empty()
                && !version.is_empty()
                && !line.contains(['\t', '\r', '\n']) =>
        {
            Ok((method, uri, version))
        }
        _ => Err(bad("Bad Request-Line")),
    }
}

/// The header rules: single-valued fields once, every Via value well formed, From, To and
/// Contact in name-addr or addr-spec form.
pub fn headers(raw: &RawMessage) -> Result<(), Refusal> {
    for name in SINGLE {
        if raw.headers_named(name).nth(1).is_some() {
            return Err(bad(format!("Duplicate {name}")));
        }
    }
    for via in raw.headers_named("Via") {
        for value in header::split_outside_keeping_empty(via, ',') {
            if value.is_empty() || !via_value(value) {
                return Err(bad("Bad Via"));
            }
        }
    }
    for name in ["From", "To"] {
        if let Some(value) = raw.header(name)
            && !address(value)
        {
            return Err(bad(format!("Bad {name}")));
        }
    }
    for contact in raw.headers_named("Contact") {
        let values = header::split_outside_keeping_empty(contact, ',');
        let ok = values == ["*"] || values.iter().all(|v| address(v));
        if !ok {
            return Err(bad("Bad Contact"));
        }
    }
    Ok(())
}

/// The Request-URI: a SIP, SIPS or tel URI the edge can serve (400 when it is no URI at all,
/// 416 for a scheme it does not serve, RFC 3261 §8.2.2.1).
pub fn request_uri(uri: &str) -> Result<(), Refusal> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(bad("Bad Request-URI"));
    };
    if !is_scheme(scheme) || rest.is_empty() {
        return Err(bad("Bad Request-URI"));
    }
    let ok = match scheme.to_ascii_lowercase().as_str() {
        "sip" | "sips" => sip_uri_rest(rest, false),
        "tel" => !rest.contains('?'),
        _ => {
            return Err(Refusal {
                status: 416,
                reason: format!("Unsupported URI Scheme ({scheme})"),
            });
        }
    };
    if ok {
        Ok(())
    } else {
        Err(bad("Bad Request-URI"))
    }
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// What follows `sip:`: `[userinfo "@"] hostport *(";" uri-parameter) ["?" headers]`, headers
/// allowed only where `headers_allowed` (a Contact may carry them, a Request-URI may not,
/// RFC 3261 §19.1.5). The userinfo ends at the first '@': a user part may hold '?' and ';'
/// (RFC 4475's intmeth and semiuri), never an unescaped '@'.
fn sip_uri_rest(rest: &str, headers_allowed: bool) -> bool {
    if rest.contains(char::is_whitespace) {
        return false;
    }
    let after_user = match rest.split_once('@') {
        Some((userinfo, host)) if !userinfo.is_empty() => host,
        Some(_) => return false,
        None => rest,
    };
    let (before_headers, headers) = match after_user.split_once('?') {
        Some((b, h)) => (b, Some(h)),
        None => (after_user, None),
    };
    if headers.is_some() && !headers_allowed {
        return false;
    }
    let (hostport, params) = match before_headers.split_once(';') {
        Some((h, p)) => (h, Some(p)),
        None => (before_headers, None),
    };
    hostport_ok(hostport)
        && params.is_none_or(|p| p.split(';').all(|p| !p.is_empty() && !p.starts_with('=')))
}

/// `host [":" port]`: a host name, an IPv4 address, or an IPv6 reference in brackets that is
/// a real IPv6 address (RFC 5118 §4.10: three colons are not).
fn hostport_ok(hostport: &str) -> bool {
    let (host_ok, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((address, after)) = v6.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (address.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        let name_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        (name_ok, port)
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok())
}

/// One Via value: `sent-protocol LWS sent-by *( SEMI via-params )`, every parameter present.
fn via_value(value: &str) -> bool {
    // The parameters start at the first ';' (sent-protocol and sent-by have none).
    let params = value.find(';').map_or("", |i| &value[i..]);
    header::via_parts(value).is_some() && params_ok(params)
}

/// A name-addr (`[display-name] <URI> *(;param)`) or an addr-spec (`URI *(;param)`, whose URI
/// then holds no ',', '?' or ';' of its own, RFC 3261 §20.10).
fn address(value: &str) -> bool {
    let value = value.trim();
    if !quotes_closed(value) {
        return false;
    }
    match header::find_outside_quotes(value, '<') {
        Some(open) => {
            let Some(close) = value[open..].find('>').map(|c| open + c) else {
                return false;
            };
            let uri = &value[open + 1..close];
            display_name(&value[..open]) && uri_ok(uri, true) && params_ok(&value[close + 1..])
        }
        None => {
            let end = value.find(';').unwrap_or(value.len());
            let uri = value[..end].trim_end();
            !uri.contains([',', '?']) && uri_ok(uri, false) && params_ok(&value[end..])
        }
    }
}

/// A URI in a header: a scheme, then no whitespace (RFC 4475's badaspec); SIP URIs parsed
/// further, other schemes taken as opaque (RFC 4475's unksm2 is well formed).
fn uri_ok(uri: &str, headers_allowed: bool) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    if !is_scheme(scheme) || rest.is_empty() || rest.contains(char::is_whitespace) {
        return false;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "sip" | "sips" => sip_uri_rest(rest, headers_allowed),
        _ => true,
    }
}

/// `[ *(token LWS) / quoted-string ]` before the '<'.
fn display_name(name: &str) -> bool {
    let name = name.trim();
    if name.is_empty() {
        return true;
    }
    if let Some(inner) = name.strip_prefix('"') {
        // One quoted string and nothing after it.
        return closing_quote(inner) == Some(inner.len() - 1);
    }
    name.split_whitespace().all(is_token)
}

/// Where the quoted string that `inner` continues ends (the index of its closing quote).
fn closing_quote(inner: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Every quoted string is closed (RFC 4475's quotbal).
fn quotes_closed(value: &str) -> bool {
    let mut rest = value;
    while let Some(open) = rest.find('"') {
        match closing_quote(&rest[open + 1..]) {
            Some(close) => rest = &rest[open + 1 + close + 1..],
            None => return false,
        }
    }
    true
}

/// `*( SEMI generic-param )`: each parameter a token name, with a value when '=' is written
/// (LWS around ';' and '=' allowed), none of them empty (RFC 4475's badinv01).
fn params_ok(params: &str) -> bool {
    let params = params.trim();
    if params.is_empty() {
        return true;
    }
    let Some(params) = params.strip_prefix(';') else {
        return false;
    };
    header::split_outside_keeping_empty(params, ';')
        .into_iter()
        .all(|param| {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (param.trim(), None),
            };
            is_token(name)
                && value.is_none_or(|v| match v.strip_prefix('"') {
                    Some(inner) => {
                        !inner.is_empty() && closing_quote(inner) == Some(inner.len() - 1)
                    }
                    None => {
                        !v.is_empty()
                            && !v.contains(char::is_whitespace)
                            && !v.contains(['<', '>', '"'])
                    }
                })
        })
}

/// `token` (RFC 3261 §25.1).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_has_one_space_between_three_parts() {
        assert!(request_line("OPTIONS sip:a@b SIP/2.0").is_ok());
        for line in [
            "INVITE  sip:a@b SIP/2.0",
            "OPTIONS sip:a@b SIP/2.0  ",
            "INVITE sip:a@b; lr SIP/2.0",
            " OPTIONS sip:a@b SIP/2.0",
            "OPTIONS\tsip:a@b SIP/2.0",
            "OPTIONS sip:a@b",
        ] {
            assert_eq!(request_line(line).map_err(|r| r.status), Err(400), "{line}");
        }
    }

    #[test]
    fn request_uris_in_schemes_the_edge_serves() {
        for ok in [
            "sip:alice@ringledger.test",
            "sip:user;par=u%40example.net@example.com",
            "sip:[2001:db8::10]:5070",
            "sip:[2001:db8::192.0.2.1]",
            "sip:[::ffff:192.0.2.10]",
            "sips:+442071838750@carrier.example;user=phone",
            "tel:+442071838750",
            "sip:1_odd.URI~(x!)&isn't+it$/odd?,/;;*:&pw=1,x@example.com",
        ] {
            assert_eq!(request_uri(ok), Ok(()), "{ok}");
        }
        for (uri, status) in [
            ("<sip:user@example.com>", 400),
            ("sip:user@example.com?Route=%3Csip:x%3E", 400),
            ("sip:2001:db8::10", 400),
            ("sip:[2001:db8:::192.0.2.1]", 400),
            ("sip:host:99999", 400),
            ("sip:@host", 400),
            ("nobodyKnowsThisScheme:opaque", 416),
            ("soap.beep://192.0.2.103:3002", 416),
            ("user@example.com", 400),
        ] {
            assert_eq!(request_uri(uri).map_err(|r| r.status), Err(status), "{uri}");
        }
    }

    #[test]
    fn addresses_in_name_addr_or_addr_spec_form() {
        for ok in [
            "sip:bob@example.com ;   tag    = 1918181833n",
            r#""J Rosenberg \\\"" <sip:jdrosen@example.com> ; tag = 98asjd8"#,
            "caller<sip:caller@example.com>;tag=323",
            "tok1~` tok2'+_ tok3*%!.- <sip:m@example.com>;p''~=\"v\";tag=_t~1'+`*%!-.",
            "isbn:2983792873",
            "<http://www.example.com>;tag=3234233",
            "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
            "sip:+19725552222@gw1.example.net;unknownparam",
            "\"Quoted string \\\"\\\"\" <sip:a@b> ; newparam = newvalue ; secondparam ; q = 0.33",
            "<sip:a@[2001:db8::1]:5060;transport=udp>;+sip.instance=\"<urn:uuid:1>\";reg-id=1",
        ] {
            assert!(address(ok), "{ok}");
        }
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:caller@example.net;;tag=1",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b",
            "<>",
        ] {
            assert!(!address(bad), "{bad}");
        }
    }

    #[test]
    fn via_values_have_every_parameter() {
        assert!(via_value(
            "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bK1"
        ));
        assert!(via_value(
            "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8"
        ));
        assert!(via_value(
            "SIP/2.0/UDP host;rport;branch=z9hG4bK-.!%66*_+`'~"
        ));
        assert!(!via_value("SIP/2.0/UDP 192.0.2.15;;"));
        assert!(!via_value(";"));
    }
}
