//! Any bytes as what a caller at the keypad menu sends: an RTP packet (`rtp::Packet::parse`),
//! its payload as a telephone-event (`EventReceiver`) and as G.711 audio (`InbandDetector`),
//! and the bytes as a SIP INFO body under each content type the edge reads
//! (`key_in_info`). None may panic; a parsed packet's payload lies inside the packet, and every
//! key reported is one of the sixteen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::media::dtmf::info::key_in_info;
use signaling::media::dtmf::inband::InbandDetector;
use signaling::media::dtmf::rfc4733::EventReceiver;
use signaling::media::g711;
use signaling::media::rtp::Packet;

const KEYS: &str = "0123456789*#ABCD";

fuzz_target!(|data: &[u8]| {
    if let Some(p) = Packet::parse(data) {
        assert!(p.payload.len() <= data.len().saturating_sub(12));
        let mut events = EventReceiver::default();
        // The same packet twice, then shifted in time: a repeat and a new press at most.
        for ts in [p.timestamp, p.timestamp, p.timestamp.wrapping_add(160)] {
            if let Some(key) = events.receive(p.marker, ts, p.payload) {
                assert!(KEYS.contains(key), "{key:?}");
            }
        }
        let mut detector = InbandDetector::default();
        let mut found = Vec::new();
        for decode in [g711::ulaw_to_linear, g711::alaw_to_linear] {
            let samples: Vec<i16> = p.payload.iter().map(|c| decode(*c)).collect();
            detector.push(&samples, &mut found);
        }
        assert!(found.iter().all(|k| KEYS.contains(*k)), "{found:?}");
    }
    let body = String::from_utf8_lossy(data);
    for content_type in ["application/dtmf-relay", "application/dtmf", "text/plain"] {
        if let Some(key) = key_in_info(content_type, &body) {
            assert!(KEYS.contains(key), "{key:?}");
        }
    }
});
