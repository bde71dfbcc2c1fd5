//! `ringledger events ...`: the log as NDJSON, one envelope per line.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use infra::config::Config;
use infra::store::transfer;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Print the last events of the log, oldest first; with --follow keep printing new ones.
    Tail {
        /// How many of the latest events to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
        /// Start after this global position instead (0 = the whole log).
        #[arg(long, conflicts_with = "lines")]
        after: Option<u64>,
        /// Keep printing events as they are committed, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },
    /// Fill an empty store with a realistic demo workload (accounts, devices, extensions,
    /// calls, tariffs) produced through the domain's rules. For demos and trials.
    Seed {
        #[arg(long, default_value_t = 5_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write the whole log (or what follows a position) as NDJSON to stdout.
    Export {
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Append an NDJSON export to an empty store, keeping ids, streams, versions and order.
    Import {
        /// The export file.
        file: std::path::PathBuf,
        /// Skip checking the export's own hash chain first.
        #[arg(long)]
        no_verify: bool,
    },
}

pub async fn run(config: &Config, command: EventsCommand) -> anyhow::Result<()> {
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", crate::redact(&config.store.url)))?;
    let (lines, after, follow) = match command {
        EventsCommand::Tail {
            lines,
            after,
            follow,
        } => (lines, after, follow),
        EventsCommand::Seed { events, seed } => {
            let head = store.head_position().await?;
            anyhow::ensure!(
                head == 0,
                "events seed fills only an empty store (this one is at position {head})"
            );
            let mut workload = projections::workload::Workload::new(seed, chrono::Utc::now());
            let mut written = 0;
            while written < events {
                for a in workload.step() {
                    written += a.events.len();
                    store
                        .append(
                            &a.stream_id,
                            infra::ExpectedVersion::Any,
                            a.new_events("seed"),
                        )
                        .await?;
                }
            }
            println!("appended {written} events");
            return Ok(());
        }
        EventsCommand::Export { after } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = transfer::export(store.as_ref(), after, &mut out).await?;
            out.flush()?;
            eprintln!("exported {n} events");
            return Ok(());
        }
        EventsCommand::Import { file, no_verify } => {
            let open = || -> anyhow::Result<_> {
                Ok(std::io::BufReader::new(
                    std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?,
                ))
            };
            let export = transfer::verify_export(open()?, !no_verify)?;
            eprintln!(
                "export verified: {} events{}, head hash {}",
                export.events,
                if no_verify { "" } else { ", hash chain intact" },
                export.head_hash
            );
            let report = transfer::import(store.as_ref(), &export, open()?).await?;
            if report.resumed_after > 0 {
                eprintln!(
                    "resumed an interrupted import after its first {} events",
                    report.resumed_after
                );
            }
            println!(
                "imported {} events in {} appends into {}",
                report.events,
                report.appends,
                store.backend()
            );
            return Ok(());
        }
    };
    let head = store.head_position().await?;
    let start = after.unwrap_or_else(|| first_of_last(&head, lines));
    let mut out = std::io::stdout().lock();
    if !follow {
        transfer::export(store.as_ref(), start, &mut out).await?;
        return Ok(());
    }
    drop(out);
    let mut events = store.subscribe_all(start);
    loop {
        tokio::select! {
            next = events.next() => match next {
                Some(e) => {
                    let line = serde_json::to_string(&e?)?;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}")?;
                    out.flush()?;
                }
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The position after which the last `n` events start, for dense positions. On EventStoreDB
/// positions are sparse, so this may print fewer; `--after 0` prints everything.
fn first_of_last(head: &u64, n: u64) -> u64 {
    head.saturating_sub(n)
}
