//! `ringledger audit ...`: checks an auditor runs against the log.

use anyhow::Context;
use clap::Subcommand;
use infra::config::Config;
use infra::store::audit::verify_log;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain over the whole log; name the first bad position.
    Verify,
    /// An account (devices, extensions, settings, usage so far) as it stood at an instant.
    AsOf {
        /// The account id.
        #[arg(long)]
        account: uuid::Uuid,
        /// RFC 3339 instant, e.g. 2026-11-24T09:00:00Z.
        #[arg(long)]
        at: chrono::DateTime<chrono::Utc>,
    },
}

/// Returns whether the check passed.
pub async fn run(config: &Config, command: AuditCommand) -> anyhow::Result<bool> {
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", crate::redact(&config.store.url)))?;
    if let AuditCommand::AsOf { account, at } = command {
        let billing = crate::projections_cmd::projection_db(config).await.ok();
        let snapshot =
            projections::as_of::account_as_of(store.as_ref(), account.into(), at, billing.as_ref())
                .await?;
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
        return Ok(true);
    }
    let report = verify_log(store.as_ref()).await?;
    match (report.first_break, report.incomplete_import) {
        (Some(b), _) => {
            println!(
                "BROKEN at position {}: {} ({} events verified before it)",
                b.position, b.reason, report.events
            );
            Ok(false)
        }
        (None, Some(i)) => {
            println!(
                "INCOMPLETE: this log is a copy that stopped after {} of the export's {} events \
                 (hash chain intact over its {} events); run `ringledger events import FILE` \
                 again to finish it",
                i.copied, i.expected, report.events
            );
            Ok(false)
        }
        (None, None) => {
            println!(
                "ok: {} events verified; head position {}, head hash {}",
                report.events, report.head_position, report.head_hash
            );
            Ok(true)
        }
    }
}
