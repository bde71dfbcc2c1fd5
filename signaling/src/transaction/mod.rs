//! SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state) as state machines without
//! I/O: they take a message or `now` and say what to send and when they next need to be woken.
//! The edge's transport layer owns sockets and clocks; these types only decide.

pub mod client;
pub mod key;
pub mod server;

use std::time::Duration;

pub use client::{ClientKind, ClientState, ClientTimer, ClientTransaction, OnResponse};
pub use key::TransactionKey;
pub use server::{ServerKind, ServerTransaction, TimerOutput};

/// RTT estimate (RFC 3261 §17.1.1.1).
pub const T1: Duration = Duration::from_millis(500);
/// The longest retransmit interval for non-INVITE requests and INVITE responses.
pub const T2: Duration = Duration::from_secs(4);
/// How long a message may remain in the network.
pub const T4: Duration = Duration::from_secs(5);
