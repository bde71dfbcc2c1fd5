//! RFC 4733 telephone-events: keys sent as RTP packets of their own payload type. A press is
//! one event: its packets share an RTP timestamp (the first has the marker bit, the last three
//! the end bit), so each event is reported once however many packets carry it, a late or
//! repeated packet of an earlier event is not a new press, and a long press split into segments
//! (new timestamps, no marker, same event, the previous not ended) stays one press.

use super::KEYS;

/// One telephone-event payload (the first four octets of the RTP payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0–9 the digits, 10 `*`, 11 `#`, 12–15 `A`–`D`, 16 flash; others are not keys.
    pub event: u8,
    pub end: bool,
    /// −dBm0 (0–63).
    pub volume: u8,
    /// In RTP timestamp units since the event began.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let [event, flags, hi, lo, ..] = *payload else {
            return None;
        };
        Some(Self {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([hi, lo]),
        })
    }

    /// The keypad key this event is, if it is one.
    pub fn key(&self) -> Option<char> {
        key_of_event(self.event)
    }
}

/// The key RFC 4733 numbers `event` (also the numbering some SIP INFO bodies use).
pub fn key_of_event(event: u8) -> Option<char> {
    match event {
        0 => Some('0'),
        1..=9 => Some(KEYS[usize::from((event - 1) / 3)][usize::from((event - 1) % 3)]),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(KEYS[usize::from(event - 12)][3]),
        _ => None,
    }
}

/// One RTP stream's telephone-events, as presses.
#[derive(Debug, Default)]
pub struct EventReceiver {
    /// The current event: its RTP timestamp, its code, whether its end was seen.
    current: Option<(u32, u8, bool)>,
}

impl EventReceiver {
    /// One telephone-event packet: its RTP marker bit, RTP timestamp and payload. Returns the
    /// key it starts, if it starts a press of a key.
    pub fn receive(&mut self, marker: bool, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = TelephoneEvent::parse(payload)?;
        if let Some((at, code, ended)) = self.current {
            // RTP timestamps wrap: compare them as serial numbers.
            let ahead = timestamp.wrapping_sub(at) as i32;
            if ahead == 0 {
                self.current = Some((at, code, ended || event.end));
                return None;
            }
            if ahead < 0 {
                return None;
            }
            if !marker && !ended && code == event.event {
                self.current = Some((timestamp, code, event.end));
                return None;
            }
        }
        self.current = Some((timestamp, event.event, event.end));
        event.key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let [hi, lo] = duration.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, hi, lo]
    }

    #[test]
    fn parses_the_payload_and_names_every_key() {
        let e = TelephoneEvent::parse(&[11, 0x8A, 0x03, 0x20, 0xFF]).unwrap();
        assert_eq!(
            e,
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
        let keys: String = (0..=16).filter_map(key_of_event).collect();
        assert_eq!(keys, "0123456789*#ABCD");
    }

    #[test]
    fn a_press_is_reported_once_whatever_repeats_and_arrives_late() {
        let mut rx = EventReceiver::default();
        let mut keys = String::new();
        let mut feed = |marker, ts, p: [u8; 4]| {
            if let Some(k) = rx.receive(marker, ts, &p) {
                keys.push(k);
            }
        };
        // '5': start, updates, three end packets.
        feed(true, 1000, payload(5, false, 160));
        feed(false, 1000, payload(5, false, 320));
        for _ in 0..3 {
            feed(false, 1000, payload(5, true, 640));
        }
        // '5' again: a new press (new timestamp, marker).
        feed(true, 3000, payload(5, false, 160));
        feed(false, 3000, payload(5, true, 480));
        // A late packet of the first press is not a press.
        feed(false, 1000, payload(5, true, 640));
        // Its start packet lost: the first packet seen of '#' still starts it.
        feed(false, 5000, payload(11, false, 320));
        feed(false, 5000, payload(11, true, 800));
        assert_eq!(keys, "55#");
    }

    #[test]
    fn a_long_press_in_segments_is_one_press_and_timestamps_may_wrap() {
        let mut rx = EventReceiver::default();
        let start = u32::MAX - 100;
        assert_eq!(
            rx.receive(true, start, &payload(9, false, 65_535)),
            Some('9')
        );
        // The next segment: a new timestamp (past the wrap), no marker, same event.
        assert_eq!(
            rx.receive(false, start.wrapping_add(65_535), &payload(9, false, 160)),
            None
        );
        assert_eq!(
            rx.receive(false, start.wrapping_add(65_535), &payload(9, true, 400)),
            None
        );
        // After its end, the same key with a new timestamp is a new press even without the
        // marker (the marker packet was lost).
        assert_eq!(
            rx.receive(false, start.wrapping_add(80_000), &payload(9, false, 160)),
            Some('9')
        );
        // Flash and unknown events are not keys.
        assert_eq!(rx.receive(true, 200_000, &payload(16, false, 160)), None);
    }
}
