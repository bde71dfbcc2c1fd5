//! The bus that fans committed events out to processes keeping views. In one process it is
//! the store's own subscription; beyond one process it is Kafka ([`kafka`]): a relay
//! publishes from its durable cursor in the store, consumers de-duplicate and re-order by
//! global position. Kafka is the fan-out, never the source of truth.

pub mod cursor;
pub mod kafka;
