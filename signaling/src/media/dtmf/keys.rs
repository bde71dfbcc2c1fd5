//! One stream of keys per leg, whichever way they came. A phone or carrier may send the same
//! press two ways (RFC 4733 and SIP INFO, or RFC 4733 with the tones left in the audio): a key
//! that arrives by another way than the last key taken, equal to it and within `SAME_PRESS`
//! of it, is that press again and is dropped. Keys arriving the same way are always presses of
//! their own (each way reports a press once), so a quick "55" stays two keys.

use std::time::{Duration, Instant};

/// How long after a press its copy by another way may still arrive.
pub const SAME_PRESS: Duration = Duration::from_millis(500);

/// How a key reached the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Rfc4733,
    Info,
    InBand,
}

#[derive(Debug, Default)]
pub struct LegKeys {
    last: Option<(Way, char, Instant)>,
}

impl LegKeys {
    /// A key as one way reported it at `now`; the key to act on, or None for a copy.
    pub fn take(&mut self, way: Way, key: char, now: Instant) -> Option<char> {
        if let Some((last_way, last_key, at)) = self.last
            && last_way != way
            && last_key == key
            && now.saturating_duration_since(at) < SAME_PRESS
        {
            return None;
        }
        self.last = Some((way, key, now));
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_sent_two_ways_counts_once_and_quick_presses_all_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut leg = LegKeys::default();
        let presses = [
            (Way::Rfc4733, '5', 0),
            (Way::Info, '5', 40),      // the same press by INFO
            (Way::Rfc4733, '5', 150),  // a second press
            (Way::Info, '5', 190),     // its copy
            (Way::InBand, '5', 260),   // and its tones left in the audio
            (Way::Info, '7', 400),     // another key, by INFO only
            (Way::Rfc4733, '7', 1200), // the same key by another way, long after: a press
        ];
        let taken: String = presses
            .iter()
            .filter_map(|(way, key, at)| leg.take(*way, *key, ms(*at)))
            .collect();
        assert_eq!(taken, "5577");
    }
}
