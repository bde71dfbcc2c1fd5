//! `ringledger events ...`: the log as NDJSON, one envelope per line.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use infra::config::Config;

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
}

pub async fn run(config: &Config, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Tail {
        lines,
        after,
        follow,
    } = command;
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", crate::redact(&config.store.url)))?;
    let head = store.head_position().await?;
    let start = after.unwrap_or_else(|| first_of_last(&head, lines));
    let mut out = std::io::stdout().lock();
    if !follow {
        let mut position = start;
        loop {
            let page = store.read_all(position, 1000).await?;
            let Some(last) = page.last() else { break };
            position = last.global_position;
            for e in &page {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            }
        }
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
