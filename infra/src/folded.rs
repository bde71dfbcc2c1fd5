//! Aggregate states recently folded from their streams, kept so the next command on a long
//! stream (an account with fifty extensions) folds only the events after the state it saw
//! last. A kept state is only ever a starting point: the events after its version are read
//! from the log every time, so nothing answered from here is stale, whoever else writes.
//!
//! Bounded: two generations of at most `capacity / 2` streams each. A state read from the
//! older one moves to the newer; when the newer is full, the older is dropped whole.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::command::Loaded;

type Kept = (u64, Arc<dyn Any + Send + Sync>);

pub struct FoldedStates {
    generations: Mutex<Generations>,
    half: usize,
}

#[derive(Default)]
struct Generations {
    newer: HashMap<String, Kept>,
    older: HashMap<String, Kept>,
}

impl Generations {
    fn insert(&mut self, half: usize, stream: &str, kept: Kept) {
        if self.newer.len() >= half && !self.newer.contains_key(stream) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(stream.to_owned(), kept);
    }
}

impl FoldedStates {
    /// Keeps at most `capacity` streams' states (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            generations: Mutex::default(),
            half: (capacity / 2).max(1),
        }
    }

    /// The state last kept for `stream`, if any, as a starting point to fold from.
    pub fn get<A: Clone + Send + Sync + 'static>(&self, stream: &str) -> Option<Loaded<A>> {
        let mut g = self.generations.lock().ok()?;
        let kept = match g.newer.get(stream) {
            Some(kept) => kept.clone(),
            None => {
                let kept = g.older.remove(stream)?;
                g.insert(self.half, stream, kept.clone());
                kept
            }
        };
        let state = kept.1.downcast_ref::<A>()?.clone();
        Some(Loaded {
            state,
            version: kept.0,
        })
    }

    /// Keeps `loaded` for `stream`, unless a later version of it is kept already (two
    /// requests on one stream may finish in either order).
    pub fn put<A: Clone + Send + Sync + 'static>(&self, stream: &str, loaded: &Loaded<A>) {
        let Ok(mut g) = self.generations.lock() else {
            return;
        };
        let kept_version = g
            .newer
            .get(stream)
            .or_else(|| g.older.get(stream))
            .map(|k| k.0);
        if kept_version.is_some_and(|v| v >= loaded.version) {
            return;
        }
        g.older.remove(stream);
        let kept: Kept = (loaded.version, Arc::new(loaded.state.clone()));
        g.insert(self.half, stream, kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(state: &str, version: u64) -> Loaded<String> {
        Loaded {
            state: state.to_owned(),
            version,
        }
    }

    fn kept(states: &FoldedStates) -> usize {
        let g = states.generations.lock().unwrap();
        g.newer.len() + g.older.len()
    }

    #[test]
    fn keeps_the_latest_version_whatever_the_order_of_puts() {
        let states = FoldedStates::new(8);
        states.put("s", &loaded("v3", 3));
        states.put("s", &loaded("v2", 2));
        let got = states.get::<String>("s").expect("kept");
        assert_eq!((got.state.as_str(), got.version), ("v3", 3));
        states.put("s", &loaded("v4", 4));
        assert_eq!(states.get::<String>("s").expect("kept").version, 4);
    }

    #[test]
    fn never_holds_more_than_its_capacity_and_keeps_what_is_used() {
        let states = FoldedStates::new(100);
        for i in 0..10_000 {
            states.put(&format!("s{i}"), &loaded("x", 1));
            // One stream used all along stays.
            states.put("hot", &loaded("hot", i + 1));
            assert!(states.get::<String>("hot").is_some());
            assert!(kept(&states) <= 100, "{} kept", kept(&states));
        }
        assert!(states.get::<String>("s0").is_none());
        assert_eq!(states.get::<String>("hot").expect("kept").version, 10_000);
    }

    #[test]
    fn a_state_of_another_type_is_a_miss() {
        let states = FoldedStates::new(8);
        states.put("s", &loaded("x", 1));
        assert!(states.get::<u32>("s").is_none());
    }
}
