//! A fraud control on call-through: how often one caller may try an access number. Kept per
//! edge, in memory (a caller spread over several edges gets each edge's allowance).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts allowed per caller within `WINDOW`.
pub const ATTEMPTS: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Past this many callers tracked, the ones with no attempt in the window are forgotten.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct Attempts {
    by_caller: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Attempts {
    /// Counts an attempt by `caller` at `now`; false when it is one too many.
    pub fn allow(&self, caller: &str, now: Instant) -> bool {
        let mut map = self.by_caller.lock().expect("attempts");
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, seen| seen.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let seen = map.entry(caller.to_string()).or_default();
        while seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            seen.pop_front();
        }
        if seen.len() >= ATTEMPTS {
            return false;
        }
        seen.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_allowance_per_window_and_others_are_unaffected() {
        let attempts = Attempts::default();
        let t0 = Instant::now();
        for _ in 0..ATTEMPTS {
            assert!(attempts.allow("+447700900123", t0));
        }
        assert!(!attempts.allow("+447700900123", t0 + Duration::from_secs(1)));
        assert!(attempts.allow("+447700900999", t0 + Duration::from_secs(1)));
        assert!(attempts.allow("+447700900123", t0 + WINDOW));
    }
}
