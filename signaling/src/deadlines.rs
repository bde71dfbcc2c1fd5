//! A queue of timer deadlines keyed by what they belong to (a transaction), in firing order.
//! Each owner remembers its slot so a rescheduled timer replaces its old deadline.

use std::collections::BTreeMap;
use std::time::Instant;

/// Where one owner's deadline sits in the queue.
pub type Slot = Option<(Instant, u64)>;

pub struct Deadlines<K> {
    queue: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            queue: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<K: Clone> Deadlines<K> {
    /// Moves `key`'s deadline (held in `slot`) to `at`; `None` removes it.
    pub fn schedule(&mut self, slot: &mut Slot, at: Option<Instant>, key: &K) {
        if let Some(old) = slot.take() {
            self.queue.remove(&old);
        }
        if let Some(at) = at {
            self.seq += 1;
            let new = (at, self.seq);
            *slot = Some(new);
            self.queue.insert(new, key.clone());
        }
    }

    /// The key of the earliest deadline at or before `now`, taken off the queue.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let (&slot, _) = self.queue.first_key_value()?;
        if slot.0 > now {
            return None;
        }
        self.queue.remove(&slot)
    }

    /// When the earliest deadline falls.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|(slot, _)| slot.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_fire_in_order_and_a_rescheduled_one_fires_once() {
        let t0 = Instant::now();
        let mut q = Deadlines::default();
        let (mut a, mut b) = (None, None);
        q.schedule(&mut a, Some(t0 + Duration::from_millis(30)), &"a");
        q.schedule(&mut b, Some(t0 + Duration::from_millis(10)), &"b");
        q.schedule(&mut a, Some(t0 + Duration::from_millis(5)), &"a");
        assert_eq!(q.next(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(q.pop_due(t0), None);
        let later = t0 + Duration::from_millis(40);
        assert_eq!(q.pop_due(later), Some("a"));
        assert_eq!(q.pop_due(later), Some("b"));
        assert_eq!(q.pop_due(later), None);
        q.schedule(&mut b, None, &"b");
        assert_eq!(q.next(), None);
    }
}
