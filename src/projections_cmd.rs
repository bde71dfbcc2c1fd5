//! `ringledger projections ...`: status, and rebuild with verification.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use infra::EventStore;
use infra::config::Config;
use projections::db::ProjectionDb;
use projections::rebuild::{all_projections, rebuild};
use projections::runner::{Projection, Runner};

#[derive(Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpoint and state against the log's head.
    Status,
    /// Rebuild from position 0 into a fresh file (SQLite) or schema (PostgreSQL).
    Rebuild {
        /// routing, billing or call_history; all when omitted.
        name: Option<String>,
        /// Compare with the live tables: a checksum per table, and the first differing row.
        #[arg(long)]
        verify: bool,
    },
}

/// Where projections live: `projections.url`, or next to the store (see the config).
pub async fn projection_db(config: &Config) -> anyhow::Result<ProjectionDb> {
    let url = config.projections_url().with_context(|| {
        format!(
            "SQL projections need a SQLite or PostgreSQL database: {} has none, set projections.url",
            crate::redact(&config.store.url)
        )
    })?;
    ProjectionDb::connect(&url)
        .await
        .with_context(|| format!("opening projections in {}", crate::redact(&url)))
}

fn selected(name: Option<&str>) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    let all = all_projections();
    match name {
        None => Ok(all),
        Some(n) => {
            let names: Vec<_> = all.iter().map(|p| p.name()).collect();
            let chosen: Vec<_> = all.into_iter().filter(|p| p.name() == n).collect();
            anyhow::ensure!(
                !chosen.is_empty(),
                "no projection named {n:?} (there are: {})",
                names.join(", ")
            );
            Ok(chosen)
        }
    }
}

/// Returns whether everything checked out.
pub async fn run(config: &Config, command: ProjectionsCommand) -> anyhow::Result<bool> {
    let store: Arc<dyn EventStore> = infra::open_store(&config.store.url).await?;
    let db = projection_db(config).await?;
    match command {
        ProjectionsCommand::Status => {
            let head = store.head_position().await?;
            let mut healthy = true;
            for p in all_projections() {
                let runner = Runner::new(db.clone(), store.clone(), p).await?;
                let cp = runner.checkpoint().await?;
                healthy &= cp.status == "running";
                println!(
                    "{:<13} {:<8} position {:>10} / head {head}{}",
                    runner.name(),
                    cp.status,
                    cp.position,
                    cp.error
                        .map(|e| format!("  error: {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(healthy)
        }
        ProjectionsCommand::Rebuild { name, verify } => {
            let mut identical = true;
            for p in selected(name.as_deref())? {
                let started = std::time::Instant::now();
                let report = rebuild(store.clone(), &db, p, verify).await?;
                println!(
                    "{}: rebuilt to position {} in {:.1} s into {}",
                    report.projection,
                    report.position,
                    started.elapsed().as_secs_f64(),
                    crate::redact(&report.target)
                );
                for t in &report.tables {
                    let verdict = if t.identical() {
                        "identical"
                    } else {
                        "DIFFERS"
                    };
                    println!(
                        "  {:<20} {verdict:<9} live {} rows {} / rebuilt {} rows {}",
                        t.table,
                        t.live_rows,
                        &t.live_checksum[..16],
                        t.rebuilt_rows,
                        &t.rebuilt_checksum[..16]
                    );
                    if let Some(d) = &t.first_difference {
                        println!("    first difference: {d}");
                    }
                }
                identical &= report.identical();
            }
            Ok(identical)
        }
    }
}
