//! `ringledger audit ...`: checks an auditor runs against the log.

use anyhow::Context;
use clap::Subcommand;
use infra::config::Config;
use infra::store::audit::verify_log;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain over the whole log; name the first bad position.
    Verify,
}

/// Returns whether the log verified.
pub async fn run(config: &Config, command: AuditCommand) -> anyhow::Result<bool> {
    let AuditCommand::Verify = command;
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", crate::redact(&config.store.url)))?;
    let report = verify_log(store.as_ref()).await?;
    match report.first_break {
        None => {
            println!(
                "ok: {} events verified; head position {}, head hash {}",
                report.events, report.head_position, report.head_hash
            );
            Ok(true)
        }
        Some(b) => {
            println!(
                "BROKEN at position {}: {} ({} events verified before it)",
                b.position, b.reason, report.events
            );
            Ok(false)
        }
    }
}
