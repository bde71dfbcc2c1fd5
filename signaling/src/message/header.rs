//! Reading the parts of header values the edge acts on: Via parameters, name-addr URIs and
//! their parameters, and comma-separated lists that may hold quoted strings. rsip keeps these
//! headers as strings; the edge reads them here, tolerant of what RFC 3261 allows.

/// The characters of `value` that are not inside a quoted string (the quotes themselves
/// included), with their byte offsets.
fn outside_quotes(value: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut quoted, mut escaped) = (false, false);
    value.char_indices().filter(move |&(_, c)| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if quoted => {
                escaped = true;
                false
            }
            '"' => {
                quoted = !quoted;
                true
            }
            _ => !quoted,
        }
    })
}

/// Splits a header value on `sep` outside double quotes and angle brackets, parts trimmed and
/// empty ones dropped.
pub fn split_outside(value: &str, sep: char) -> Vec<&str> {
    let mut parts = split_outside_keeping_empty(value, sep);
    parts.retain(|p| !p.is_empty());
    parts
}

/// The same, keeping empty parts (`a;;b` is three parts): for checking a list's syntax.
pub fn split_outside_keeping_empty(value: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut angle = false;
    let mut start = 0;
    for (i, c) in outside_quotes(value) {
        match c {
            '<' => angle = true,
            '>' => angle = false,
            c if c == sep && !angle => {
                parts.push(value[start..i].trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts
}

/// `;name=value` parameters after the first `;`-separated part (or all of them when `value`
/// starts with `;`), names lowercased, quotes kept.
pub fn params(value: &str) -> Vec<(String, Option<String>)> {
    let skip = usize::from(!value.trim_start().starts_with(';'));
    split_outside(value, ';')
        .into_iter()
        .skip(skip)
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (p.trim().to_ascii_lowercase(), None),
        })
        .collect()
}

/// One parameter's value (`Some(None)` when present without a value).
pub fn param(value: &str, name: &str) -> Option<Option<String>> {
    params(value)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// A name-addr or addr-spec (`"Alice" <sip:a@h>;tag=x`, `sip:a@h;tag=x`): the URI, and the
/// header parameters after it.
pub struct NameAddr<'a> {
    pub uri: &'a str,
    pub params: &'a str,
}

pub fn name_addr(value: &str) -> Option<NameAddr<'_>> {
    let value = value.trim();
    if let Some(open) = find_outside_quotes(value, '<') {
        let close = value[open..].find('>')? + open;
        Some(NameAddr {
            uri: value[open + 1..close].trim(),
            params: &value[close + 1..],
        })
    } else {
        // Without angle brackets, parameters after the URI belong to the header (RFC 3261
        // §20.10), so the URI ends at the first ';'.
        let end = value.find(';').unwrap_or(value.len());
        Some(NameAddr {
            uri: value[..end].trim(),
            params: &value[end..],
        })
    }
    .filter(|n| !n.uri.is_empty())
}

pub fn find_outside_quotes(value: &str, needle: char) -> Option<usize> {
    outside_quotes(value)
        .find(|&(_, c)| c == needle)
        .map(|(i, _)| i)
}

/// The user part of a SIP URI (`sip:alice@host` -> `alice`), percent-escapes left as written.
pub fn uri_user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"))?;
    let user = match rest.split_once('@') {
        Some((user, _)) => user,
        None if uri.starts_with("tel:") => rest,
        None => return None,
    };
    let user = user.split([';', ':']).next().unwrap_or(user);
    (!user.is_empty()).then_some(user)
}

/// The sent-by host and port of a Via value (`SIP/2.0/UDP host:port;params`), and its
/// transport.
pub struct ViaParts<'a> {
    pub transport: String,
    pub host: &'a str,
    pub port: Option<u16>,
}

pub fn via_parts(value: &str) -> Option<ViaParts<'_>> {
    // sent-protocol may carry whitespace around its slashes: `SIP / 2.0 / UDP`.
    let mut rest = value.trim();
    let mut protocol = String::new();
    loop {
        let (token, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        protocol.push_str(token);
        rest = after.trim_start();
        if protocol.matches('/').count() >= 2 && !protocol.ends_with('/') && !rest.starts_with('/')
        {
            break;
        }
        if rest.is_empty() {
            return None;
        }
    }
    let transport = protocol.rsplit('/').next()?.to_ascii_uppercase();
    let sent_by = rest.split(';').next()?.trim();
    let (host, port) = if let Some(v6) = sent_by.strip_prefix('[') {
        let close = v6.find(']')?;
        let port = v6[close + 1..]
            .strip_prefix(':')
            .map(str::parse)
            .transpose();
        (&sent_by[..close + 2], port.ok()?)
    } else {
        match sent_by.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (sent_by, None),
        }
    };
    (!host.is_empty()).then_some(ViaParts {
        transport,
        host,
        port,
    })
}

/// Strips one level of double quotes.
pub fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_outside_quotes_and_brackets() {
        let v = r#""Smith, J" <sip:j@h;a=1>;q=0.5, <sip:k@h>;expires=60"#;
        assert_eq!(
            split_outside(r#""a \" , b", c"#, ','),
            vec![r#""a \" , b""#, "c"]
        );
        assert_eq!(
            split_outside(v, ','),
            vec![r#""Smith, J" <sip:j@h;a=1>;q=0.5"#, "<sip:k@h>;expires=60"]
        );
    }

    #[test]
    fn name_addr_separates_uri_and_header_params() {
        let n = name_addr(r#""A <b>" <sip:alice@10.0.0.1:5060;transport=tcp>;expires=30"#).unwrap();
        assert_eq!(n.uri, "sip:alice@10.0.0.1:5060;transport=tcp");
        assert_eq!(param(n.params, "expires"), Some(Some("30".into())));
        let n = name_addr("sip:bob@h;tag=77").unwrap();
        assert_eq!(n.uri, "sip:bob@h");
        assert_eq!(param(n.params, "tag"), Some(Some("77".into())));
        assert!(name_addr("<>").is_none());
    }

    #[test]
    fn uri_user_reads_sip_and_tel_uris() {
        assert_eq!(uri_user("sip:alice@h:5060"), Some("alice"));
        assert_eq!(uri_user("sip:+4420;npdi@h"), Some("+4420"));
        assert_eq!(uri_user("tel:+4420"), Some("+4420"));
        assert_eq!(uri_user("sip:h"), None);
    }

    #[test]
    fn via_parts_read_host_port_and_rport() {
        let v = "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport";
        let p = via_parts(v).unwrap();
        assert_eq!(
            (p.transport.as_str(), p.host, p.port),
            ("UDP", "192.0.2.1", Some(5070))
        );
        assert_eq!(param(v, "rport"), Some(None));
        assert_eq!(param(v, "branch"), Some(Some("z9hG4bK1".into())));
        let p = via_parts("SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK2").unwrap();
        assert_eq!((p.host, p.port), ("[2001:db8::1]", Some(5061)));
        let p = via_parts("SIP / 2.0 / udp host ;branch=z9hG4bK3").unwrap();
        assert_eq!(
            (p.transport.as_str(), p.host, p.port),
            ("UDP", "host", None)
        );
        assert!(via_parts("SIP/2.0/UDP").is_none());
    }
}
