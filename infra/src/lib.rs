//! ringledger's infrastructure: the event log behind one contract with three backends
//! (SQLite embedded default, PostgreSQL, EventStoreDB), configuration and id minting.

pub mod bus;
pub mod command;
pub mod config;
pub mod delivery;
pub mod folded;
pub mod network;
pub mod open;
pub mod store;

pub use open::open_store;
pub use store::{AppendResult, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};
