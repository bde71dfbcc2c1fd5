//! Kafka through rdkafka. The relay publishes each committed event, in global order, to one
//! topic keyed by `stream_id` (so a stream's events share a partition) with the idempotent
//! producer, and advances its cursor only after Kafka acknowledged everything before it.
//! A relay that dies between publishing and saving its cursor publishes some events again on
//! restart; consumers drop what they have seen and re-assemble global order across partitions.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::cursor::RelayCursor;
use crate::{EventStore, RecordedEvent, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("relay cursor: {0}")]
    Cursor(#[from] sqlx::Error),
    #[error("message at partition {partition} offset {offset} is not an event: {reason}")]
    BadMessage {
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("topic {0} has no partitions (create it first)")]
    NoTopic(String),
}

/// Events published per round before the cursor moves.
const ROUND: usize = 1000;

pub struct Relay {
    store: Arc<dyn EventStore>,
    producer: FutureProducer,
    topic: String,
    cursor: RelayCursor,
}

impl Relay {
    pub fn new(
        store: Arc<dyn EventStore>,
        brokers: &str,
        topic: &str,
        cursor: RelayCursor,
    ) -> Result<Self, BusError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self {
            store,
            producer,
            topic: topic.to_owned(),
            cursor,
        })
    }

    /// The position the relay has published up to (durably).
    pub async fn cursor(&self) -> Result<u64, BusError> {
        Ok(self.cursor.get().await?)
    }

    /// Queues `events` (consecutive, in order) with the producer; the future completes when
    /// Kafka acknowledged all of them.
    fn enqueue(
        &self,
        events: &[RecordedEvent],
    ) -> Result<impl Future<Output = Result<(), BusError>> + use<>, BusError> {
        let mut deliveries = Vec::with_capacity(events.len());
        for e in events {
            let payload = serde_json::to_vec(e).map_err(|err| StoreError::Corrupt {
                position: e.global_position,
                reason: err.to_string(),
            })?;
            let mut record = FutureRecord::to(&self.topic)
                .key(&e.stream_id)
                .payload(&payload);
            // A full local queue: give librdkafka a moment to drain it, then try again.
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(d) => break d,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            };
            deliveries.push(delivery);
        }
        Ok(async move {
            for d in futures::future::join_all(deliveries).await {
                match d {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(e.into()),
                    Err(_canceled) => return Err(KafkaError::Canceled.into()),
                }
            }
            Ok(())
        })
    }

    /// Publishes `events` and waits until Kafka acknowledged all.
    async fn publish(&self, events: &[RecordedEvent]) -> Result<(), BusError> {
        self.enqueue(events)?.await
    }

    /// Publishes everything committed after the cursor, then returns the new cursor.
    pub async fn publish_pending(&self) -> Result<u64, BusError> {
        let mut position = self.cursor.get().await?;
        loop {
            let page = self.store.read_all(position, ROUND).await?;
            let Some(last) = page.last().map(|e| e.global_position) else {
                return Ok(position);
            };
            self.publish(&page).await?;
            self.cursor.set(last).await?;
            position = last;
        }
    }

    /// Follows the log until `shutdown` completes. Chunks are queued as they commit without
    /// waiting for the previous chunk's acknowledgement (the idempotent producer keeps their
    /// order); `published` moves as acknowledgements arrive, in order. The cursor is written
    /// at most every `CURSOR_EVERY` (each write is a durable commit) and on shutdown; what a
    /// crash loses is only republished, never skipped.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), BusError> {
        const CURSOR_EVERY: Duration = Duration::from_millis(250);
        let mut saved = self.cursor.get().await?;
        let mut published = saved;
        let mut last_save = tokio::time::Instant::now();
        let mut events = self.store.subscribe_all(saved).ready_chunks(ROUND);
        let mut acks = futures::stream::FuturesOrdered::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(CURSOR_EVERY), if published > saved => {}
                acked = acks.next(), if !acks.is_empty() => {
                    if let Some(acked) = acked {
                        let (last, result): (u64, Result<(), BusError>) = acked;
                        result?;
                        published = last;
                    }
                }
                chunk = events.next(), if acks.len() < 64 => {
                    let Some(chunk) = chunk else { break };
                    let chunk = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
                    if let Some(last) = chunk.last().map(|e| e.global_position) {
                        let delivered = self.enqueue(&chunk)?;
                        acks.push_back(async move { (last, delivered.await) });
                    }
                }
            }
            if published > saved && last_save.elapsed() >= CURSOR_EVERY {
                self.cursor.set(published).await?;
                saved = published;
                last_save = tokio::time::Instant::now();
            }
        }
        while let Some((last, result)) = acks.next().await {
            if result.is_err() {
                break;
            }
            published = last;
        }
        if published > saved {
            self.cursor.set(published).await?;
        }
        Ok(())
    }
}

/// Reads the topic's partitions and yields events exactly once, in global order. Relies on
/// dense positions (the SQL backends): position N is yielded only after N-1.
pub struct BusConsumer {
    consumer: StreamConsumer,
    applied: u64,
    waiting: BTreeMap<u64, RecordedEvent>,
    /// Messages dropped as already seen.
    pub duplicates: u64,
}

impl BusConsumer {
    /// Starts a consumer that yields events after position `after`. It reads every partition
    /// from its beginning (no consumer group, so no rebalancing wait) and drops what is at or
    /// before `after`.
    pub fn new(brokers: &str, topic: &str, after: u64) -> Result<Self, BusError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "ringledger-views")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            return Err(BusError::NoTopic(topic.to_owned()));
        }
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(Self {
            consumer,
            applied: after,
            waiting: BTreeMap::new(),
            duplicates: 0,
        })
    }

    /// The next event in global order.
    pub async fn next(&mut self) -> Result<RecordedEvent, BusError> {
        loop {
            if let Some(e) = self.waiting.remove(&(self.applied + 1)) {
                self.applied = e.global_position;
                return Ok(e);
            }
            let m = self.consumer.recv().await?;
            let bad = |reason: String| BusError::BadMessage {
                partition: m.partition(),
                offset: m.offset(),
                reason,
            };
            let payload = m.payload().ok_or_else(|| bad("no payload".into()))?;
            let e: RecordedEvent =
                serde_json::from_slice(payload).map_err(|err| bad(err.to_string()))?;
            if e.global_position <= self.applied || self.waiting.contains_key(&e.global_position) {
                self.duplicates += 1;
            } else {
                self.waiting.insert(e.global_position, e);
            }
        }
    }
}
