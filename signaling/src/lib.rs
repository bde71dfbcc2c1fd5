//! The SIP signaling edge: transports, message handling around rsip, transactions, digest
//! authentication and the registrar. Stateless in the durable sense: it reads a `RoutingView`
//! and writes what it learns as events through domain commands.

pub mod digest;
pub mod message;
pub mod transaction;
