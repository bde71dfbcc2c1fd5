//! The shape every entity of the model shares: a state folded from its events, and a pure
//! `decide` that turns a command into new events or a refusal.

use crate::error::DomainError;
use crate::event::DomainEvent;
use crate::time::Instant;

pub trait Aggregate: Default + Clone {
    type Command;
    type Event: DomainEvent;

    /// The rules: what `command` produces given this state at instant `now`.
    /// An empty vector means the command is already satisfied (an idempotent no-op).
    fn decide(
        &self,
        command: &Self::Command,
        now: Instant,
    ) -> Result<Vec<Self::Event>, DomainError>;

    /// Folds one event into the state. Never fails: events are facts.
    fn apply(&mut self, event: &Self::Event);

    fn evolve(mut self, event: &Self::Event) -> Self {
        self.apply(event);
        self
    }

    fn from_events<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::default(), Self::evolve)
    }
}
