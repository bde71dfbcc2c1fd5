//! ringledger's pure model: every business rule of the telephone service, written as
//! `decide(&state, command, now) -> events` and `apply(state, event)`, plus call rating.
//!
//! Nothing here does I/O or reads a clock: time is always an argument, so every rule is a
//! plain function that a given/when/then test pins down.

pub mod account;
pub mod aggregate;
pub mod call;
pub mod credentials;
pub mod device;
pub mod dialling;
pub mod e164;
pub mod edge;
pub mod error;
pub mod event;
pub mod events;
pub mod extension;
pub mod ids;
pub mod import;
pub mod money;
pub mod number;
pub mod rating;
pub mod tariff;
pub mod time;

#[cfg(test)]
mod testing;

pub use aggregate::Aggregate;
pub use e164::E164;
pub use error::DomainError;
pub use event::{DecodeError, DomainEvent, EncodedEvent};
pub use events::Event;
pub use money::{Currency, Money};
pub use time::{Instant, to_micros};
