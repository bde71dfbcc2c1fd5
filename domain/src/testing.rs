//! given / when / then for aggregate specifications.

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::time::Instant;
use chrono::TimeZone;

pub fn t0() -> Instant {
    chrono::Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

pub fn at(seconds_after_t0: i64) -> Instant {
    t0() + chrono::Duration::seconds(seconds_after_t0)
}

pub struct Given<A: Aggregate> {
    state: A,
    now: Instant,
}

pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let events: Vec<_> = events.into_iter().collect();
    Given {
        state: A::from_events(&events),
        now: t0(),
    }
}

impl<A: Aggregate> Given<A>
where
    A::Event: std::fmt::Debug + PartialEq,
{
    pub fn at(mut self, now: Instant) -> Self {
        self.now = now;
        self
    }

    pub fn when(self, command: A::Command) -> Outcome<A> {
        let result = self.state.decide(&command, self.now);
        Outcome {
            state: self.state,
            result,
        }
    }
}

pub struct Outcome<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, DomainError>,
}

impl<A: Aggregate> Outcome<A>
where
    A::Event: std::fmt::Debug + PartialEq,
{
    /// Asserts the events and returns the state after them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected);
                events.iter().fold(self.state, |s, e| s.evolve(e))
            }
            Err(e) => panic!("expected events {expected:?}, got error {e:?}"),
        }
    }

    #[track_caller]
    pub fn then_error(self, expected: DomainError) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }

    /// For events whose content is computed (hashes): returns them for closer inspection.
    #[track_caller]
    pub fn events(self) -> Vec<A::Event> {
        self.result.expect("expected events")
    }
}
