//! SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state) as state machines without
//! I/O: they take a message or `now` and say what to send and when they next need to be woken.
//! The edge's transport layer owns sockets and clocks; these types only decide.

pub mod client;
pub mod key;
pub mod server;
mod timers;

pub use client::{ClientKind, ClientState, ClientTimer, ClientTransaction, OnResponse};
pub use key::TransactionKey;
pub use server::{ServerKind, ServerTransaction, TimerOutput};
pub use timers::{T1, T2, T4};
