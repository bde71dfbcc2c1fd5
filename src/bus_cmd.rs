//! `ringledger bus ...`: the Kafka relay, and a worker that keeps SQL projections in another
//! database from the topic.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use infra::bus::cursor::RelayCursor;
use infra::bus::kafka::{BusConsumer, Relay};
use infra::config::Config;
use projections::db::ProjectionDb;
use projections::rebuild::all_projections;
use projections::runner::Runner;

#[derive(Subcommand)]
pub enum BusCommand {
    /// Publish committed events to Kafka from the relay's durable cursor, until Ctrl-C.
    Relay,
    /// Keep the SQL projections in another database from the Kafka topic, until Ctrl-C.
    Worker {
        /// Where the projections live (sqlite://… or postgres://…).
        #[arg(long)]
        projections_db: String,
        /// Exit once every projection has reached this position (for scripts and tests).
        #[arg(long)]
        until: Option<u64>,
    },
}

fn brokers(config: &Config) -> anyhow::Result<&str> {
    let b = config.bus.kafka.brokers.as_str();
    anyhow::ensure!(
        !b.is_empty(),
        "bus.kafka.brokers is empty (set RINGLEDGER_BUS__KAFKA__BROKERS)"
    );
    Ok(b)
}

pub async fn relay(config: &Config, store: Arc<dyn infra::EventStore>) -> anyhow::Result<Relay> {
    let cursor = RelayCursor::open(&config.store.url, "kafka")
        .await
        .context("opening the relay cursor in the store's database")?;
    Ok(Relay::new(
        store,
        brokers(config)?,
        &config.bus.kafka.topic,
        cursor,
    )?)
}

pub async fn run(config: &Config, command: BusCommand) -> anyhow::Result<()> {
    match command {
        BusCommand::Relay => {
            let store = infra::open_store(&config.store.url).await?;
            let relay = relay(config, store).await?;
            tracing::info!(cursor = relay.cursor().await?, topic = %config.bus.kafka.topic, "relay running");
            relay
                .run(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(())
        }
        BusCommand::Worker {
            projections_db,
            until,
        } => {
            let db = ProjectionDb::connect(&projections_db).await?;
            // The worker never reads the log: the store handle is only for schema set-up.
            let store = infra::open_store(&config.store.url).await?;
            let mut runners = Vec::new();
            for p in all_projections() {
                runners.push(Runner::new(db.clone(), store.clone(), p).await?);
            }
            let mut lowest = u64::MAX;
            for r in &runners {
                lowest = lowest.min(r.checkpoint().await?.position);
            }
            let mut consumer = BusConsumer::new(brokers(config)?, &config.bus.kafka.topic, lowest)?;
            tracing::info!(from = lowest, "worker consuming");
            loop {
                let mut chunk = vec![consumer.next().await?];
                // Take whatever else is already there, up to a batch.
                while chunk.len() < 500 {
                    match tokio::time::timeout(Duration::from_millis(5), consumer.next()).await {
                        Ok(e) => chunk.push(e?),
                        Err(_) => break,
                    }
                }
                let mut reached = u64::MAX;
                for r in &runners {
                    reached = reached.min(r.apply_delivered(&chunk).await?);
                }
                if until.is_some_and(|u| reached >= u) {
                    println!("caught up to position {reached}");
                    return Ok(());
                }
            }
        }
    }
}
