//! What the edge does to a message before rsip sees it. rsip 0.4 rejects folded header lines
//! and whitespace before ':', ignores compact header names and Content-Length; RFC 3261 allows
//! all of them. This module unfolds, trims, expands compact names, cuts the body to its
//! Content-Length (RFC 3261 §18.3) and writes the message back out in the one canonical form
//! rsip parses.

/// RFC 3261 §7.3.3 and the registry of compact forms.
const COMPACT: &[(u8, &str)] = &[
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
];

/// The largest message the edge accepts (UDP datagrams and framed TCP messages alike).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Header lines a message may have (after unfolding); past it the message is not read on.
pub const MAX_HEADERS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the message has no end of headers")]
    Unterminated,
    #[error("the message has no start line")]
    NoStartLine,
    #[error("header line {0:?} has no ':'")]
    NoColon(String),
    #[error("header line {0:?} has an empty name")]
    EmptyName(String),
    #[error("a continuation line comes before any header")]
    LeadingContinuation,
    #[error("Content-Length {0:?} is not a number")]
    BadContentLength(String),
    #[error("the body is {actual} bytes, shorter than its Content-Length {declared}")]
    ShortBody { declared: usize, actual: usize },
    #[error("the message is not UTF-8 in its start line or headers")]
    NotUtf8,
    #[error("the message is larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("the message has more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
}

/// A message taken apart into its start line, headers in their full names and body, before
/// any SIP-specific interpretation. Enough to answer 400 when rsip refuses the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawMessage {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_request(&self) -> bool {
        !self.start_line.starts_with("SIP/")
    }

    /// The method of a request's start line, as written.
    pub fn method(&self) -> Option<&str> {
        self.is_request()
            .then(|| self.start_line.split(' ').next())
            .flatten()
    }

    /// The canonical bytes: CRLF line ends, one header per line, `Name: value`, and a
    /// Content-Length that is exactly the body's length.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.write(&self.start_line)
    }

    /// The canonical bytes as rsip is given them. rsip reads only the method and status code
    /// the edge asks of it, and cannot read every Request-URI RFC 3261 allows (an IPv6
    /// reference, a ';' in the user part) nor a status line without a reason phrase, so a
    /// request's start line names a placeholder URI and an empty phrase is written as '-';
    /// the edge checks and reads the real one from `start_line` (message::syntax). Headers
    /// reach rsip untouched (it keeps them as strings).
    pub fn to_rsip_bytes(&self) -> Vec<u8> {
        match self.method() {
            Some(method) => self.write(&format!("{method} sip:request-uri.invalid SIP/2.0")),
            // rsip wants a reason phrase; an empty one is valid (RFC 4475's noreason).
            None if self.start_line.split(' ').nth(2).is_none() => {
                self.write(&format!("{} -", self.start_line))
            }
            None => self.write(&self.start_line),
        }
    }

    fn write(&self, start_line: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(start_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// Where the header section ends: the index just past the blank line, accepting bare LF line
/// ends as well as CRLF.
pub fn header_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            match bytes.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if bytes.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// The value of a Content-Length header (full or compact name) in a header section, if any.
pub fn declared_length(head: &[u8]) -> Result<Option<usize>, NormalizeError> {
    let text = std::str::from_utf8(head).map_err(|_| NormalizeError::NotUtf8)?;
    for line in text.split('\n').skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            let value = value.trim();
            return value
                .parse()
                .map(Some)
                .map_err(|_| NormalizeError::BadContentLength(value.into()));
        }
    }
    Ok(None)
}

/// Takes a whole message (one UDP datagram, or one message framed off a stream) apart.
/// Leading blank lines (keep-alives, RFC 3261 §7.5) are skipped; bytes past the declared
/// Content-Length are dropped; a body shorter than it is an error.
pub fn normalize(bytes: &[u8]) -> Result<RawMessage, NormalizeError> {
    let (mut raw, rest) = head(bytes)?;
    raw.body = body(&raw, rest)?;
    Ok(raw)
}

/// The start line and headers (with an empty body), and the bytes after the blank line.
pub fn head(bytes: &[u8]) -> Result<(RawMessage, &[u8]), NormalizeError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(NormalizeError::TooLarge);
    }
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .ok_or(NormalizeError::NoStartLine)?;
    let bytes = &bytes[start..];
    let end = header_end(bytes).ok_or(NormalizeError::Unterminated)?;
    let text = std::str::from_utf8(&bytes[..end]).map_err(|_| NormalizeError::NotUtf8)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty());
    let start_line = lines.next().ok_or(NormalizeError::NoStartLine)?;
    // A request line is kept as written: its spacing is part of its grammar (message::syntax
    // refuses anything but single spaces). A status line's runs of whitespace become one.
    let start_line = if start_line.starts_with("SIP/") {
        start_line.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        start_line.to_string()
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // A folded line continues the previous header's value (RFC 3261 §7.3.1).
            let (_, value) = headers
                .last_mut()
                .ok_or(NormalizeError::LeadingContinuation)?;
            let more = line.trim();
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        if headers.len() == MAX_HEADERS {
            return Err(NormalizeError::TooManyHeaders);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| NormalizeError::NoColon(line.into()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(NormalizeError::EmptyName(line.into()));
        }
        headers.push((full_name(name), value.trim().to_string()));
    }
    let raw = RawMessage {
        start_line,
        headers,
        body: Vec::new(),
    };
    Ok((raw, &bytes[end..]))
}

/// The body: `rest` cut to the declared Content-Length (all of it without one).
pub fn body(raw: &RawMessage, rest: &[u8]) -> Result<Vec<u8>, NormalizeError> {
    let Some(value) = raw.header("Content-Length") else {
        return Ok(rest.to_vec());
    };
    let declared: usize = value
        .parse()
        .map_err(|_| NormalizeError::BadContentLength(value.to_string()))?;
    if rest.len() < declared {
        return Err(NormalizeError::ShortBody {
            declared,
            actual: rest.len(),
        });
    }
    Ok(rest[..declared].to_vec())
}

/// A header's full name: compact forms expanded, the others as written.
fn full_name(name: &str) -> String {
    if let [c] = name.as_bytes()
        && let Some((_, full)) = COMPACT.iter().find(|(k, _)| k.eq_ignore_ascii_case(c))
    {
        return (*full).to_string();
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_lines_compact_names_and_space_before_colon_become_canonical() {
        let raw = b"REGISTER sip:ringledger SIP/2.0\r\n\
v : SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
f: <sip:alice@ringledger>;tag=1\r\n\
t: <sip:alice@ringledger>\r\n\
i: abc@host\r\n\
CSeq: 1\r\n   REGISTER\r\n\
m: <sip:alice@127.0.0.1:5070>\r\n\
l: 0\r\n\r\n";
        let m = normalize(raw).unwrap();
        assert_eq!(m.start_line, "REGISTER sip:ringledger SIP/2.0");
        assert_eq!(
            m.header("via"),
            Some("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1")
        );
        assert_eq!(m.header("Call-ID"), Some("abc@host"));
        assert_eq!(m.header("CSeq"), Some("1 REGISTER"));
        assert_eq!(m.header("Contact"), Some("<sip:alice@127.0.0.1:5070>"));
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.contains("\r\nVia: SIP/2.0/UDP"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }

    #[test]
    fn bare_lf_line_ends_and_leading_keepalive_crlfs_are_accepted() {
        let raw = b"\r\n\r\nOPTIONS sip:x SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\nCall-ID: c\n\nbody";
        let m = normalize(raw).unwrap();
        assert_eq!(m.method(), Some("OPTIONS"));
        assert_eq!(m.body, b"body");
    }

    #[test]
    fn the_body_is_cut_to_content_length_and_a_short_body_is_refused() {
        let raw = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(normalize(raw).unwrap().body, b"abc");
        let short = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 30\r\n\r\nabc";
        assert_eq!(
            normalize(short),
            Err(NormalizeError::ShortBody {
                declared: 30,
                actual: 3
            })
        );
        let bad = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: ten\r\n\r\n";
        assert!(matches!(
            normalize(bad),
            Err(NormalizeError::BadContentLength(_))
        ));
    }

    #[test]
    fn broken_header_sections_are_refused() {
        assert_eq!(
            normalize(b"INVITE sip:x SIP/2.0\r\nVia x\r\n\r\n"),
            Err(NormalizeError::NoColon("Via x".into()))
        );
        assert_eq!(
            normalize(b"INVITE sip:x SIP/2.0\r\n: x\r\n\r\n"),
            Err(NormalizeError::EmptyName(": x".into()))
        );
        assert_eq!(
            normalize(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n"),
            Err(NormalizeError::Unterminated)
        );
        assert_eq!(normalize(b"\r\n\r\n"), Err(NormalizeError::NoStartLine));
        assert_eq!(
            normalize(&[b'A'; MAX_MESSAGE + 1]),
            Err(NormalizeError::TooLarge)
        );
    }

    #[test]
    fn header_end_and_declared_length_find_the_frame() {
        let m = b"OPTIONS sip:x SIP/2.0\r\nl: 4\r\n\r\nbodyNEXT";
        let end = header_end(m).unwrap();
        assert_eq!(&m[end..], b"bodyNEXT");
        assert_eq!(declared_length(&m[..end]).unwrap(), Some(4));
        assert_eq!(header_end(b"OPTIONS sip:x SIP/2.0\r\n"), None);
    }
}
