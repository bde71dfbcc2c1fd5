//! `ringledger serve` and `ringledger migrate`.

use anyhow::Context;
use infra::config::Config;

use crate::redact;

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", redact(&config.store.url)))?;
    let head = store.head_position().await?;
    println!(
        "{} store at {} is migrated (head position {head})",
        store.backend(),
        redact(&config.store.url)
    );
    Ok(())
}

pub async fn run(config: &Config) -> anyhow::Result<()> {
    // Listen for signals before saying "ready", so a supervisor's stop is never missed.
    let shutdown = ShutdownSignal::install()?;
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", redact(&config.store.url)))?;
    let head = store.head_position().await?;
    tracing::info!(
        backend = store.backend(),
        store = %redact(&config.store.url),
        head_position = head,
        "ringledger ready"
    );
    shutdown.wait().await;
    tracing::info!("shutting down");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM (a service manager).
struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
