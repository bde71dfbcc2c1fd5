//! Just enough SDP (RFC 8866) for a relay: where a session description says its audio goes
//! (the connection address and the first audio stream's port), which ways it goes, and the
//! description rebuilt for the other side with the relay's address and port in their place
//! and nothing that names the side that wrote it (topology hiding).
//! When the edge itself answers two offers and bridges them (call-in), `answer` writes the
//! answer to one offer with the codecs the other offer shares (RFC 3264 §6);
//! `answer_as_endpoint` answers a leg the edge terminates itself (G.711 and telephone-events).

use std::net::{IpAddr, SocketAddr};

use super::tones::Codec;

fn lines(sdp: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(sdp)
        .unwrap_or_default()
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
}

fn connection_address(line: &str) -> Option<IpAddr> {
    // c=IN IP4 192.0.2.1  (a multicast TTL suffix, "/127", is dropped)
    let address = line.strip_prefix("c=")?.split_whitespace().nth(2)?;
    address.split('/').next()?.parse().ok()
}

/// Where the first audio stream of `sdp` is to be sent: its `c=` (media-level first, else
/// session-level) and its `m=audio` port. `None` for a description without audio, with
/// port 0 (a stream declined) or unreadable.
pub fn audio_endpoint(sdp: &[u8]) -> Option<SocketAddr> {
    let mut session_address = None;
    let mut audio: Option<(u16, Option<IpAddr>)> = None;
    for line in lines(sdp) {
        if let Some(rest) = line.strip_prefix("m=") {
            if audio.is_some() {
                break;
            }
            let mut parts = rest.split_whitespace();
            if parts.next() == Some("audio") {
                let port = parts.next()?.split('/').next()?.parse().ok()?;
                audio = Some((port, None));
            }
        } else if line.starts_with("c=") {
            match audio.as_mut() {
                Some((_, address)) => *address = connection_address(line),
                None => session_address = connection_address(line),
            }
        }
    }
    let (port, address) = audio?;
    (port != 0).then_some(SocketAddr::new(address.or(session_address)?, port))
}

/// Which ways a side's audio goes, by its session description (RFC 3264 §6.1): whether it
/// sends, and whether it will receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    pub sends: bool,
    pub receives: bool,
}

/// The direction of the first audio stream of `sdp`: its own `a=sendrecv`, `a=sendonly`,
/// `a=recvonly` or `a=inactive`, else the session-level one, else both ways. A connection
/// address of `0.0.0.0` (RFC 2543's hold) receives nothing; no audio stream (or port 0) goes
/// neither way.
pub fn direction(sdp: &[u8]) -> Direction {
    let parse = |line: &str| match line {
        "a=sendrecv" => Some((true, true)),
        "a=sendonly" => Some((true, false)),
        "a=recvonly" => Some((false, true)),
        "a=inactive" => Some((false, false)),
        _ => None,
    };
    let mut session = None;
    let mut audio = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in lines(sdp) {
        if let Some(rest) = line.strip_prefix("m=") {
            if seen_audio {
                break;
            }
            let mut parts = rest.split_whitespace();
            in_audio = parts.next() == Some("audio") && parts.next() != Some("0");
            seen_audio = in_audio;
        } else if let Some(way) = parse(line) {
            if in_audio {
                audio = Some(way);
            } else if !seen_audio {
                session = Some(way);
            }
        }
    }
    if !seen_audio {
        return Direction {
            sends: false,
            receives: false,
        };
    }
    let (sends, receives) = audio.or(session).unwrap_or((true, true));
    let held = audio_endpoint(sdp).is_none_or(|a| a.ip().is_unspecified());
    Direction {
        sends,
        receives: receives && !held,
    }
}

/// Media-level attributes a rebuilt description keeps (RFC 8866, RFC 3264, RFC 4568): the
/// formats, packetisation, direction and SDES keys. Anything else (`a=ssrc` with its cname,
/// ICE candidates and credentials, `a=rtcp`, `a=rtcp-mux`, DTLS fingerprints, tool names)
/// names the other side, its addresses or its software, or needs a path the relay does not
/// give, and is left out.
const KEPT_ATTRIBUTES: &[&str] = &[
    "rtpmap", "fmtp", "ptime", "maxptime", "sendrecv", "sendonly", "recvonly", "inactive", "crypto",
];

/// Whether an attribute (an `a=` line's value) is one a rebuilt description keeps.
fn kept_attribute(value: &str) -> bool {
    let name = value.split([':', ' ']).next().unwrap_or_default();
    KEPT_ATTRIBUTES.contains(&name)
}

/// A stable stand-in for the origin's user and session id (RFC 8866 §5.2): the same for the
/// same session, so a refresh keeps its identity, and naming nothing of the side that wrote it.
fn session_id(user: &str, id: &str) -> u64 {
    // FNV-1a: stable across processes and releases (unlike the standard library's hasher).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.bytes().chain([0]).chain(id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash >> 1
}

/// `sdp` rebuilt for the other side of the relay (topology hiding): the origin is the edge's
/// (`o=ringledger`, a stand-in session id, the same version, the relay's address), the session
/// name `-`, every connection address the relay's, the first audio stream at `port` with only
/// the attributes in `KEPT_ATTRIBUTES`, and every other stream (which the relay does not
/// carry) disabled with port 0. Bandwidth and timing lines are kept; `i=`, `u=`, `e=`, `p=`
/// and the like are left out.
pub fn rebuild(sdp: &[u8], address: IpAddr, port: u16) -> Vec<u8> {
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::with_capacity(sdp.len() + 16);
    let mut audio_done = false;
    let mut in_media = false;
    let mut in_audio = false;
    for line in lines(sdp) {
        // `<type>=<value>` (RFC 8866 §5); anything else is left out.
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "v" => out.push_str("v=0\r\n"),
            "o" => {
                let mut fields = value.split_whitespace();
                let (user, id, version) = (fields.next(), fields.next(), fields.next());
                let id = session_id(user.unwrap_or_default(), id.unwrap_or_default());
                let version = version.unwrap_or("1");
                out.push_str(&format!(
                    "o=ringledger {id} {version} IN {family} {address}\r\n"
                ));
            }
            "s" => out.push_str("s=-\r\n"),
            "c" => out.push_str(&format!("c=IN {family} {address}\r\n")),
            "t" | "b" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "m" => {
                in_media = true;
                // Read as `audio_endpoint` reads it: the media, its port, the rest.
                let mut parts = value.split_whitespace();
                let (media, old_port) = (parts.next(), parts.next());
                let tail = parts.collect::<Vec<_>>().join(" ");
                let carried = old_port
                    .and_then(|p| p.split('/').next()?.parse::<u16>().ok())
                    .is_some_and(|p| p != 0);
                in_audio = media == Some("audio") && !audio_done && carried;
                if in_audio {
                    audio_done = true;
                    out.push_str(&format!("m=audio {port} {tail}\r\n"));
                } else {
                    out.push_str(&format!("m={} 0 {tail}\r\n", media.unwrap_or_default()));
                }
            }
            "a" if (in_audio || !in_media) && kept_attribute(value) => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.into_bytes()
}

/// `sdp` with its direction attributes taken out: media both ways (RFC 3264 §6.1's default),
/// as a session is offered to a party that joins it afresh (a transfer's new party) whatever
/// hold the party it replaces was in.
pub fn both_ways(sdp: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(sdp.len());
    for line in lines(sdp).filter(|l| !l.is_empty()) {
        if !matches!(
            line,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.into_bytes()
}

/// `sdp` as the next version of the session `given` was (RFC 3264 §8): `given`'s origin user
/// and session id, its version one up, so that a side sees one session from the edge however
/// the other side changes (a new phone after a transfer). Without an origin in both, `sdp`.
pub fn continuing(sdp: &[u8], given: &[u8]) -> Vec<u8> {
    let origin = |text: &[u8]| -> Option<(String, String, u64)> {
        let line = lines(text).find_map(|l| l.strip_prefix("o="))?;
        let mut fields = line.split_whitespace();
        let (user, id) = (fields.next()?.to_string(), fields.next()?.to_string());
        Some((user, id, fields.next()?.parse().ok()?))
    };
    let (Some((user, id, version)), Some(_)) = (origin(given), origin(sdp)) else {
        return sdp.to_vec();
    };
    let mut out = String::with_capacity(sdp.len());
    for line in lines(sdp).filter(|l| !l.is_empty()) {
        match line.strip_prefix("o=") {
            Some(rest) => {
                let rest: Vec<&str> = rest.split_whitespace().skip(3).collect();
                out.push_str(&format!(
                    "o={user} {id} {} {}",
                    version.wrapping_add(1),
                    rest.join(" ")
                ));
            }
            None => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The edge's own offer of audio at `address`:`port`, for a call it sets up itself (a
/// callback's first leg): G.711 (PCMU, PCMA) and DTMF events.
pub fn offer(address: IpAddr, port: u16) -> Vec<u8> {
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    let session = chrono::Utc::now().timestamp_micros();
    format!(
        "v=0\r\no=ringledger {session} {session} IN {family} {address}\r\ns=ringledger\r\n\
         c=IN {family} {address}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// One audio format of an offer: its payload type, and the lines that describe it.
struct Format<'a> {
    payload_type: &'a str,
    rtpmap: Option<&'a str>,
    fmtp: Option<&'a str>,
}

impl Format<'_> {
    /// What the format is, for comparing across offers: the encoding and clock rate of its
    /// `a=rtpmap`, or RFC 3551's static assignment.
    fn codec(&self) -> Option<String> {
        if let Some(map) = self.rtpmap {
            let encoding = map.split_whitespace().nth(1)?;
            return Some(encoding.to_ascii_lowercase());
        }
        let fixed = match self.payload_type {
            "0" => "pcmu/8000",
            "3" => "gsm/8000",
            "8" => "pcma/8000",
            "9" => "g722/8000",
            "18" => "g729/8000",
            _ => return None,
        };
        Some(fixed.into())
    }
}

/// The formats of the first audio stream of `sdp`, in the offer's order of preference, and
/// its `a=ptime`.
fn audio_formats(sdp: &[u8]) -> Option<(Vec<Format<'_>>, Option<&str>)> {
    let mut formats: Vec<Format> = vec![];
    let mut ptime = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in lines(sdp) {
        if let Some(rest) = line.strip_prefix("m=") {
            if seen_audio {
                break;
            }
            let mut parts = rest.split_whitespace();
            if parts.next() == Some("audio") && parts.next().is_some_and(|p| p != "0") {
                in_audio = true;
                seen_audio = true;
                formats = parts
                    .skip(1)
                    .map(|payload_type| Format {
                        payload_type,
                        rtpmap: None,
                        fmtp: None,
                    })
                    .collect();
            }
        } else if in_audio && let Some(rest) = line.strip_prefix("a=") {
            let (name, value) = rest.split_once(':').unwrap_or((rest, ""));
            let pt = value.split_whitespace().next().unwrap_or_default();
            let format = formats.iter_mut().find(|f| f.payload_type == pt);
            match (name, format) {
                ("rtpmap", Some(f)) => f.rtpmap = Some(line),
                ("fmtp", Some(f)) => f.fmtp = Some(line),
                ("ptime", _) => ptime = Some(line),
                _ => {}
            }
        }
    }
    seen_audio.then_some((formats, ptime))
}

/// The edge's answer to `offer` for a call it bridges to the party that made `other`: audio
/// at `address`:`port`, with the formats of `offer` that `other` offers too under the same
/// payload type (the relay passes packets on unchanged, so both sides must number a codec
/// alike). `None` when they share none (the offer is refused with 488).
pub fn answer(offer: &[u8], other: &[u8], address: IpAddr, port: u16) -> Option<Vec<u8>> {
    answer_keeping(offer, other, address, port, false)
}

/// As [`answer`], keeping the offer's `telephone-event/8000` even when `other` lacks it: the
/// edge itself listens for keys on that side first (a call-in keying its token), and a
/// party that never agreed to events ignores any that pass later.
pub fn answer_with_events(
    offer: &[u8],
    other: &[u8],
    address: IpAddr,
    port: u16,
) -> Option<Vec<u8>> {
    answer_keeping(offer, other, address, port, true)
}

fn answer_keeping(
    offer: &[u8],
    other: &[u8],
    address: IpAddr,
    port: u16,
    events: bool,
) -> Option<Vec<u8>> {
    let (formats, ptime) = audio_formats(offer)?;
    let (theirs, _) = audio_formats(other)?;
    let shared: Vec<&Format> = formats
        .iter()
        .filter(|f| {
            let codec = f.codec();
            (events && codec.as_deref() == Some("telephone-event/8000"))
                || codec.is_some()
                    && theirs
                        .iter()
                        .any(|t| t.payload_type == f.payload_type && t.codec() == codec)
        })
        .collect();
    // DTMF events alone are no call.
    let voice = shared
        .iter()
        .any(|f| !f.codec().is_some_and(|c| c.starts_with("telephone-event")));
    if !voice {
        return None;
    }
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    let session = chrono::Utc::now().timestamp_micros();
    let types: Vec<&str> = shared.iter().map(|f| f.payload_type).collect();
    let mut out = format!(
        "v=0\r\no=ringledger {session} {session} IN {family} {address}\r\ns=ringledger\r\n\
         c=IN {family} {address}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
        types.join(" ")
    );
    for f in &shared {
        for line in [f.rtpmap, f.fmtp].into_iter().flatten() {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if let Some(ptime) = ptime {
        out.push_str(ptime);
        out.push_str("\r\n");
    }
    out.push_str("a=sendrecv\r\n");
    Some(out.into_bytes())
}

/// What the edge and a leg it answers itself (the keypad menu) agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The voice codec, and its payload type.
    pub codec: Codec,
    pub voice_payload_type: u8,
    /// RFC 4733 telephone-events' payload type, when the offer has them at 8 kHz (otherwise
    /// keys can only come by SIP INFO or in the audio).
    pub event_payload_type: Option<u8>,
}

/// What an endpoint of the edge's would use of `sdp`'s audio: its first G.711 format (PCMU or
/// PCMA, in its order of preference) and its `telephone-event/8000`. `None` without G.711.
pub fn agreed(sdp: &[u8]) -> Option<Agreed> {
    let (formats, _) = audio_formats(sdp)?;
    let payload_type = |f: &Format| f.payload_type.parse::<u8>().ok().filter(|pt| *pt < 128);
    let (codec, voice_payload_type) = formats.iter().find_map(|f| {
        let codec = match f.codec()?.as_str() {
            "pcmu/8000" => Codec::Pcmu,
            "pcma/8000" => Codec::Pcma,
            _ => return None,
        };
        Some((codec, payload_type(f)?))
    })?;
    let event_payload_type = formats.iter().find_map(|f| {
        (f.codec()? == "telephone-event/8000")
            .then(|| payload_type(f))
            .flatten()
    });
    Some(Agreed {
        codec,
        voice_payload_type,
        event_payload_type,
    })
}

/// The edge's answer to `offer` for a leg it terminates itself: the offer's first G.711
/// format (PCMU or PCMA, in the offer's order of preference) and its `telephone-event/8000`,
/// at `address`:`port`. `None` when the offer has no G.711 (refused with 488).
pub fn answer_as_endpoint(offer: &[u8], address: IpAddr, port: u16) -> Option<(Vec<u8>, Agreed)> {
    let Agreed {
        codec,
        voice_payload_type: voice,
        event_payload_type: events,
    } = agreed(offer)?;
    let family = if address.is_ipv4() { "IP4" } else { "IP6" };
    let session = chrono::Utc::now().timestamp_micros();
    let name = match codec {
        Codec::Pcmu => "PCMU",
        Codec::Pcma => "PCMA",
    };
    let mut out = format!(
        "v=0\r\no=ringledger {session} {session} IN {family} {address}\r\ns=ringledger\r\n\
         c=IN {family} {address}\r\nt=0 0\r\nm=audio {port} RTP/AVP {voice}"
    );
    if let Some(pt) = events {
        out.push_str(&format!(" {pt}"));
    }
    out.push_str(&format!("\r\na=rtpmap:{voice} {name}/8000\r\n"));
    if let Some(pt) = events {
        out.push_str(&format!(
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\n"
        ));
    }
    out.push_str("a=ptime:20\r\na=sendrecv\r\n");
    let agreed = Agreed {
        codec,
        voice_payload_type: voice,
        event_payload_type: events,
    };
    Some((out.into_bytes(), agreed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n\
t=0 0\r\nm=audio 49170 RTP/AVP 0 8\r\na=rtcp:49171\r\na=rtpmap:0 PCMU/8000\r\n\
m=video 51372 RTP/AVP 31\r\nc=IN IP4 192.0.2.11\r\n";

    #[test]
    fn a_call_in_keying_its_token_keeps_its_telephone_events() {
        let address: IpAddr = "198.51.100.1".parse().unwrap();
        let call_in = "v=0\r\no=m 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n";
        let caller = "v=0\r\no=c 1 1 IN IP4 192.0.2.6\r\ns=-\r\nc=IN IP4 192.0.2.6\r\nt=0 0\r\n\
m=audio 5000 RTP/AVP 0\r\n";
        let plain = String::from_utf8(
            answer(call_in.as_bytes(), caller.as_bytes(), address, 30000).unwrap(),
        )
        .unwrap();
        assert!(plain.contains("m=audio 30000 RTP/AVP 0\r\n"), "{plain}");
        let keyed =
            answer_with_events(call_in.as_bytes(), caller.as_bytes(), address, 30000).unwrap();
        let keyed = String::from_utf8(keyed).unwrap();
        assert!(keyed.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{keyed}");
        assert!(
            keyed.contains("a=rtpmap:101 telephone-event/8000"),
            "{keyed}"
        );
        assert_eq!(
            agreed(keyed.as_bytes()).unwrap().event_payload_type,
            Some(101)
        );
        // Events alone are still no call.
        let video_caller = caller.replace("RTP/AVP 0", "RTP/AVP 31");
        assert!(
            answer_with_events(call_in.as_bytes(), video_caller.as_bytes(), address, 1).is_none()
        );
    }

    #[test]
    fn the_edge_answers_a_leg_it_terminates_with_g711_and_telephone_events() {
        let address: IpAddr = "198.51.100.1".parse().unwrap();
        let offer = "v=0\r\no=m 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 18 8 0 97 96\r\na=rtpmap:18 G729/8000\r\na=rtpmap:97 telephone-event/48000\r\n\
a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\n";
        let (answer, agreed) = answer_as_endpoint(offer.as_bytes(), address, 30000).unwrap();
        assert_eq!(
            agreed,
            Agreed {
                codec: Codec::Pcma,
                voice_payload_type: 8,
                event_payload_type: Some(96)
            }
        );
        let text = String::from_utf8(answer.clone()).unwrap();
        assert!(text.contains("m=audio 30000 RTP/AVP 8 96\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:8 PCMA/8000\r\n"), "{text}");
        assert!(
            text.contains("a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"),
            "{text}"
        );
        assert_eq!(
            audio_endpoint(&answer),
            Some("198.51.100.1:30000".parse().unwrap())
        );
        // PCMU by its static number, no events: keys only by INFO or in the audio.
        let plain = "v=0\r\nc=IN IP4 192.0.2.5\r\nm=audio 4000 RTP/AVP 0\r\n";
        let (_, agreed) = answer_as_endpoint(plain.as_bytes(), address, 30002).unwrap();
        assert_eq!(
            (
                agreed.codec,
                agreed.voice_payload_type,
                agreed.event_payload_type
            ),
            (Codec::Pcmu, 0, None)
        );
        // No G.711: nothing to answer with.
        let g729 = "v=0\r\nc=IN IP4 192.0.2.5\r\nm=audio 4000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(answer_as_endpoint(g729.as_bytes(), address, 30004), None);
    }

    #[test]
    fn the_audio_endpoint_is_read_from_session_or_media_connection() {
        assert_eq!(
            audio_endpoint(OFFER.as_bytes()),
            Some("192.0.2.10:49170".parse().unwrap())
        );
        let media_level =
            "v=0\nc=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 0\nc=IN IP4 198.51.100.7\n";
        assert_eq!(
            audio_endpoint(media_level.as_bytes()),
            Some("198.51.100.7:4000".parse().unwrap())
        );
        assert_eq!(
            audio_endpoint(b"v=0\r\nm=audio 0 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\n"),
            None
        );
        assert_eq!(audio_endpoint(b"v=0\r\nm=video 5000 RTP/AVP 31\r\n"), None);
        assert_eq!(audio_endpoint(b"\xff\xfe"), None);
    }

    #[test]
    fn a_rebuilt_description_points_audio_at_the_relay_and_names_nothing_of_its_writer() {
        let written = "v=0\r\no=alice 1234 7 IN IP4 192.0.2.10\r\ns=Talk on a pjsip phone\r\n\
i=alice's desk\r\ne=alice@example.com\r\np=+441632960001\r\nc=IN IP4 192.0.2.10\r\n\
t=0 0\r\na=tool:pjmedia\r\na=group:BUNDLE 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtcp:49171 IN IP4 192.0.2.10\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n\
a=ssrc:1234 cname:alice@192.0.2.10\r\na=candidate:1 1 UDP 2130706431 192.0.2.10 49170 typ host\r\n\
a=ice-ufrag:abcd\r\na=sendonly\r\nm=video 51372 RTP/AVP 31\r\nc=IN IP4 192.0.2.11\r\n\
a=rtpmap:31 H261/90000\r\n";
        let out = rebuild(written.as_bytes(), "127.0.0.1".parse().unwrap(), 20000);
        let out = String::from_utf8(out).unwrap();
        // Nothing of the writer: not its user, addresses, software, contact or ICE.
        for leak in [
            "alice",
            "192.0.2.",
            "pjsip",
            "pjmedia",
            "1234 ",
            "example",
            "+4416",
            "candidate",
            "ice-",
            "ssrc",
            "rtcp",
            "BUNDLE",
        ] {
            assert!(!out.contains(leak), "{leak} in {out}");
        }
        assert!(out.starts_with("v=0\r\no=ringledger "), "{out}");
        assert!(
            out.contains(" 7 IN IP4 127.0.0.1\r\ns=-\r\n"),
            "the version kept: {out}"
        );
        assert!(out.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"), "{out}");
        for kept in [
            "a=rtpmap:0 PCMU/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendonly",
        ] {
            assert!(out.contains(kept), "{kept} in {out}");
        }
        // The video stream, which the relay does not carry, is disabled.
        assert!(out.contains("m=video 0 RTP/AVP 31\r\n"), "{out}");
        assert_eq!(
            audio_endpoint(out.as_bytes()),
            Some("127.0.0.1:20000".parse().unwrap())
        );
        // The same session rebuilt again is the same (a refresh keeps its identity); another
        // session's id differs.
        let again = rebuild(written.as_bytes(), "127.0.0.1".parse().unwrap(), 20000);
        assert_eq!(String::from_utf8(again).unwrap(), out);
        let other = written.replace("o=alice 1234 7", "o=alice 1235 7");
        let other = String::from_utf8(rebuild(
            other.as_bytes(),
            "127.0.0.1".parse().unwrap(),
            20000,
        ))
        .unwrap();
        assert_ne!(other.lines().nth(1), out.lines().nth(1));
    }

    #[test]
    fn a_rebuilt_description_reads_its_media_line_as_the_endpoint_does() {
        // Found by fuzzing: a carriage return inside the media line (whitespace to
        // `audio_endpoint`) left the audio stream out of the rebuilt description.
        let odd = b"\r\n\nm=\raudio 401\r\nc=IN IP4 192.0.1.1\rn";
        assert!(audio_endpoint(odd).is_some());
        let relay: IpAddr = "198.51.100.1".parse().unwrap();
        let rebuilt = rebuild(odd, relay, 20000);
        assert_eq!(audio_endpoint(&rebuilt).map(|e| e.ip()), Some(relay));
    }

    #[test]
    fn an_answer_keeps_the_codecs_both_offers_share_numbered_alike() {
        let caller = "v=0\r\nc=IN IP4 192.0.2.10\r\nm=audio 4000 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n";
        let mobile = "v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 6000 RTP/AVP 0 18 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";
        let out = answer(
            caller.as_bytes(),
            mobile.as_bytes(),
            "127.0.0.1".parse().unwrap(),
            30000,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{out}");
        assert!(out.contains("a=fmtp:101 0-15\r\n"), "{out}");
        assert!(out.contains("a=ptime:20\r\n"), "{out}");
        assert!(!out.contains("PCMA"), "{out}");
        assert_eq!(
            audio_endpoint(out.as_bytes()),
            Some("127.0.0.1:30000".parse().unwrap())
        );
        // The same event codec under another number, and nothing else in common: refused.
        let other = "v=0\r\nc=IN IP4 198.51.100.7\r\nm=audio 6000 RTP/AVP 9 96\r\n\
a=rtpmap:96 telephone-event/8000\r\n";
        assert_eq!(
            answer(
                caller.as_bytes(),
                other.as_bytes(),
                "127.0.0.1".parse().unwrap(),
                30000
            ),
            None
        );
    }

    #[test]
    fn a_joining_party_is_offered_media_both_ways_under_the_session_it_continues() {
        let held = OFFER.replace(
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
        );
        let fresh = both_ways(held.as_bytes());
        let d = direction(&fresh);
        assert!(d.sends && d.receives);
        assert!(!String::from_utf8_lossy(&fresh).contains("sendonly"));
        // The next version of what one side was given: its origin, the version one up.
        let given = b"v=0\r\no=ringledger 77 4 IN IP4 127.0.0.1\r\ns=-\r\n";
        let next = continuing(OFFER.as_bytes(), given);
        let text = String::from_utf8_lossy(&next);
        assert!(
            text.contains("o=ringledger 77 5 IN IP4 192.0.2.10\r\n"),
            "{text}"
        );
        assert!(text.contains("m=audio 49170 "), "{text}");
        // Nothing to continue: as it was.
        assert_eq!(continuing(OFFER.as_bytes(), b""), OFFER.as_bytes());
    }
}
