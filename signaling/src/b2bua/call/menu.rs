//! The access-number menu's key entry, sans IO: what one key (or the passing of time) means
//! while the caller keys a PIN or a number. Digits collect until `#`, a pause after the last
//! one, or the longest entry; `*` clears the entry to start it again; `A`–`D` mean nothing.

use std::time::{Duration, Instant};

/// How long after a prompt the first key may take.
pub const FIRST_KEY_WITHIN: Duration = Duration::from_secs(15);
/// How long a pause between keys ends the entry (as `#` would).
pub const NEXT_KEY_WITHIN: Duration = Duration::from_secs(5);
/// The longest a caller may stay in the menu, whatever they key.
pub const MENU_AT_MOST: Duration = Duration::from_secs(120);
/// Digits in one entry at most: an international prefix and 15 digits fit.
pub const MAX_DIGITS: usize = 20;
/// Numbers refused (not a number, not allowed) before the menu gives up.
pub const NUMBER_TRIES: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asking {
    Pin,
    Number,
    /// A call-in's token: complete at its eighth digit.
    Token,
}

impl Asking {
    /// The most digits the entry takes: it is complete at that many.
    fn longest(self) -> usize {
        match self {
            Asking::Token => crate::b2bua::call_in::TOKEN_DIGITS,
            Asking::Pin | Asking::Number => MAX_DIGITS,
        }
    }
}

/// What a key or a timeout amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entered {
    /// Nothing to act on yet.
    Nothing,
    /// The entry's first key: the prompt's tone stops.
    FirstKey,
    /// `*`: the entry starts again (the prompt's tone again).
    Cleared,
    /// An entry is complete.
    Done(Asking, String),
    /// Nothing usable was keyed in time.
    GaveUp,
}

/// One caller's entry.
#[derive(Debug)]
pub struct Keys {
    asking: Asking,
    digits: String,
    /// The prompt, or the last key: pauses count from it.
    last: Instant,
    /// When the menu gives up, whatever is keyed.
    ends: Instant,
    /// Entry ends: until the next prompt, keys are ignored.
    waiting: bool,
    /// Entries refused so far (numbers, or a call-in's tokens).
    pub refused: u8,
}

impl Keys {
    pub fn new(asking: Asking, now: Instant) -> Self {
        Self {
            asking,
            digits: String::new(),
            last: now,
            ends: now + MENU_AT_MOST,
            waiting: false,
            refused: 0,
        }
    }

    /// Prompts for a new entry at `now`.
    pub fn ask(&mut self, asking: Asking, now: Instant) {
        self.asking = asking;
        self.digits.clear();
        self.last = now;
        self.waiting = false;
    }

    pub fn asking(&self) -> Asking {
        self.asking
    }

    pub fn key(&mut self, key: char, now: Instant) -> Entered {
        if self.waiting {
            return Entered::Nothing;
        }
        match key {
            '*' => {
                self.digits.clear();
                self.last = now;
                Entered::Cleared
            }
            '#' if self.digits.is_empty() => Entered::Nothing,
            '#' => self.done(),
            '0'..='9' => {
                self.digits.push(key);
                self.last = now;
                if self.digits.len() >= self.asking.longest() {
                    self.done()
                } else if self.digits.len() == 1 {
                    Entered::FirstKey
                } else {
                    Entered::Nothing
                }
            }
            _ => Entered::Nothing,
        }
    }

    /// Time has come to `now`.
    pub fn timeout(&mut self, now: Instant) -> Entered {
        if now >= self.ends {
            self.waiting = true;
            return Entered::GaveUp;
        }
        if self.waiting {
            return Entered::Nothing;
        }
        match self.digits.is_empty() {
            false if now >= self.last + NEXT_KEY_WITHIN => self.done(),
            true if now >= self.last + FIRST_KEY_WITHIN => {
                self.waiting = true;
                Entered::GaveUp
            }
            _ => Entered::Nothing,
        }
    }

    /// When the entry next wants [`Keys::timeout`].
    pub fn next_timeout(&self) -> Instant {
        if self.waiting {
            return self.ends;
        }
        let pause = if self.digits.is_empty() {
            FIRST_KEY_WITHIN
        } else {
            NEXT_KEY_WITHIN
        };
        (self.last + pause).min(self.ends)
    }

    fn done(&mut self) -> Entered {
        self.waiting = true;
        Entered::Done(self.asking, std::mem::take(&mut self.digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(keys: &mut Keys, at: Instant, presses: &str) -> Vec<Entered> {
        presses
            .chars()
            .map(|k| keys.key(k, at))
            .filter(|e| *e != Entered::Nothing)
            .collect()
    }

    #[test]
    fn digits_end_with_hash_and_star_starts_again() {
        let t0 = Instant::now();
        let mut keys = Keys::new(Asking::Number, t0);
        assert_eq!(
            keyed(&mut keys, t0, "0207*02079460000#5"),
            vec![
                Entered::FirstKey,
                Entered::Cleared,
                Entered::FirstKey,
                Entered::Done(Asking::Number, "02079460000".into()),
            ],
            "the 5 after # waits for the next prompt"
        );
        keys.ask(Asking::Pin, t0);
        assert_eq!(
            keyed(&mut keys, t0, "#A1B2"),
            vec![Entered::FirstKey],
            "# alone and A-D mean nothing"
        );
        assert_eq!(keys.key('#', t0), Entered::Done(Asking::Pin, "12".into()));
    }

    #[test]
    fn a_pause_ends_the_entry_and_silence_gives_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut keys = Keys::new(Asking::Number, t0);
        keys.key('0', t0);
        keys.key('1', t0 + s(4));
        assert_eq!(keys.next_timeout(), t0 + s(9));
        assert_eq!(keys.timeout(t0 + s(8)), Entered::Nothing);
        assert_eq!(
            keys.timeout(t0 + s(9)),
            Entered::Done(Asking::Number, "01".into())
        );
        keys.ask(Asking::Number, t0 + s(10));
        assert_eq!(keys.timeout(t0 + s(24)), Entered::Nothing);
        assert_eq!(keys.timeout(t0 + s(25)), Entered::GaveUp);
    }

    #[test]
    fn the_menu_ends_at_its_longest_however_busy_the_keypad() {
        let t0 = Instant::now();
        let mut keys = Keys::new(Asking::Number, t0);
        let mut at = t0;
        while at < t0 + MENU_AT_MOST {
            keys.key('*', at);
            at += Duration::from_secs(1);
        }
        assert_eq!(keys.next_timeout(), t0 + MENU_AT_MOST);
        assert_eq!(keys.timeout(at), Entered::GaveUp);
    }

    #[test]
    fn a_token_is_complete_at_its_eighth_digit() {
        let t0 = Instant::now();
        let mut keys = Keys::new(Asking::Token, t0);
        assert_eq!(
            keyed(&mut keys, t0, "12*87654321"),
            vec![
                Entered::FirstKey,
                Entered::Cleared,
                Entered::FirstKey,
                Entered::Done(Asking::Token, "87654321".into()),
            ]
        );
    }

    #[test]
    fn an_entry_stops_at_its_longest() {
        let t0 = Instant::now();
        let mut keys = Keys::new(Asking::Number, t0);
        let entered = keyed(&mut keys, t0, &"9".repeat(MAX_DIGITS + 3));
        assert_eq!(
            entered.last(),
            Some(&Entered::Done(Asking::Number, "9".repeat(MAX_DIGITS)))
        );
    }
}
