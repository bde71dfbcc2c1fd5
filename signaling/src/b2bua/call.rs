//! One call's state, sans IO: the caller's side (the INVITE the edge answers) and the legs
//! the edge places. The first leg to answer wins; the others are cancelled (or, answering too
//! late, ACKed and hung up). Each step is recorded in the call's stream before the caller
//! hears of it.
//!
//! [`Call`] holds no socket, no timer and no task: it takes an [`Input`] (a message from a
//! leg, the caller's CANCEL, a command such as "the edge is shutting down", the result of a
//! recording it asked for) together with `now`, and answers with [`Output`]s (record this,
//! send that on a leg, answer the caller) and the next instant it wants to be woken at
//! ([`Call::next_timeout`]). The call task (`call_task.rs`) carries the outputs out, in
//! order. An output that records a step the call cannot go on without (`Record` with
//! `awaited`, `UseDialIntent`) is the last of its batch: the task records it and hands the
//! result back as [`Input::Recorded`], and only then does the call go on (or, refused,
//! unwind).

#[cfg(test)]
mod call_in_token_tests;
pub(crate) mod change;
mod interface;
mod leg;
mod machine;
mod menu;
#[cfg(test)]
mod menu_tests;
mod rules;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod transfer_tests;

pub use interface::*;
pub(crate) use leg::{Leg, LegState};
pub use machine::Call;
pub(crate) use rules::{caller_failure, content_type, status_of};
