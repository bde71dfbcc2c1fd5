//! One stream of keys per leg, whichever way they came. A phone or carrier may send the same
//! press two or three ways (RFC 4733 and SIP INFO, or RFC 4733 with the tones left in the
//! audio), and one way may lag another (INFO keys are held to be put in CSeq order): a key
//! equal to a press taken from another way within `SAME_PRESS`, which that press has not yet
//! been matched by from this way, is that press again and is dropped. Keys arriving the same
//! way are always presses of their own (each way reports a press once), so a quick "55"
//! stays two keys.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long after a press its copy by another way may still arrive.
pub const SAME_PRESS: Duration = Duration::from_millis(500);
/// Presses remembered at most (a flood of keys does not grow the list).
const REMEMBERED: usize = 32;

/// How a key reached the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Rfc4733,
    Info,
    InBand,
}

impl Way {
    fn bit(self) -> u8 {
        match self {
            Way::Rfc4733 => 1,
            Way::Info => 2,
            Way::InBand => 4,
        }
    }
}

/// A press taken: its way, key and time, and the other ways its copies came by.
#[derive(Debug)]
struct Press {
    way: Way,
    key: char,
    at: Instant,
    copies: u8,
}

#[derive(Debug, Default)]
pub struct LegKeys {
    recent: VecDeque<Press>,
}

impl LegKeys {
    /// A key as one way reported it at `now`; the key to act on, or None for a copy.
    pub fn take(&mut self, way: Way, key: char, now: Instant) -> Option<char> {
        while self
            .recent
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.at) >= SAME_PRESS)
        {
            self.recent.pop_front();
        }
        let copy_of = self
            .recent
            .iter_mut()
            .find(|p| p.way != way && p.key == key && p.copies & way.bit() == 0);
        if let Some(press) = copy_of {
            press.copies |= way.bit();
            return None;
        }
        if self.recent.len() >= REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back(Press {
            way,
            key,
            at: now,
            copies: 0,
        });
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

    #[test]
    fn a_way_that_lags_still_matches_its_presses_in_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut leg = LegKeys::default();
        // "0207" by RFC 4733, every INFO copy 150 ms late (after the next key's event).
        let presses = [
            (Way::Rfc4733, '0', 0),
            (Way::Rfc4733, '2', 100),
            (Way::Info, '0', 150),
            (Way::Rfc4733, '0', 200),
            (Way::Info, '2', 250),
            (Way::Rfc4733, '7', 300),
            (Way::Info, '0', 350),
            (Way::Info, '7', 450),
        ];
        let taken: String = presses
            .iter()
            .filter_map(|(way, key, at)| leg.take(*way, *key, ms(*at)))
            .collect();
        assert_eq!(taken, "0207");
    }
}
