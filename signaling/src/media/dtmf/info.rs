//! Keys sent in SIP INFO requests, the fallback of phones and carriers without RFC 4733:
//! `application/dtmf-relay` (`Signal=5` and `Duration=160` lines) and `application/dtmf` (the
//! key alone). Both name a key by its character or by its RFC 4733 event number (`10` for `*`,
//! `11` for `#`).

use super::rfc4733::key_of_event;

/// The key an INFO body of `content_type` carries, if it carries one.
pub fn key_in_info(content_type: &str, body: &str) -> Option<char> {
    let media_type = content_type.split(';').next()?.trim();
    let value = if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
        body.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            name.trim().eq_ignore_ascii_case("signal").then_some(value)
        })?
    } else if media_type.eq_ignore_ascii_case("application/dtmf") {
        body
    } else {
        return None;
    };
    let value = value.trim();
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if super::tones_of(c).is_some() => Some(c.to_ascii_uppercase()),
        _ => value.parse::<u8>().ok().and_then(key_of_event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_body_types_and_both_ways_of_naming_a_key() {
        assert_eq!(
            key_in_info("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
            Some('5')
        );
        assert_eq!(
            key_in_info(
                "Application/DTMF-Relay; charset=x",
                "Duration=250\nsignal = #\n"
            ),
            Some('#')
        );
        assert_eq!(
            key_in_info("application/dtmf-relay", "Signal=10\r\n"),
            Some('*')
        );
        assert_eq!(key_in_info("application/dtmf", "11"), Some('#'));
        assert_eq!(key_in_info("application/dtmf", " b\r\n"), Some('B'));
    }

    #[test]
    fn anything_else_is_no_key() {
        assert_eq!(key_in_info("application/dtmf-relay", "Duration=160"), None);
        assert_eq!(key_in_info("application/dtmf-relay", "Signal=55"), None);
        assert_eq!(key_in_info("application/dtmf-relay", "Signal=E"), None);
        assert_eq!(key_in_info("application/dtmf", ""), None);
        assert_eq!(key_in_info("text/plain", "5"), None);
        assert_eq!(key_in_info("application/sdp", "Signal=5"), None);
    }
}
