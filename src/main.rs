//! `ringledger`: the command line of the IP telephony backend.

mod audit;
mod bench;
mod bench_api;
mod bench_dtmf;
mod bench_keypad;
mod bench_rtp;
mod bench_sip;
mod billing_cmd;
mod bus_cmd;
mod events;
mod keys_cmd;
mod projections_cmd;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infra::config::Config;

#[derive(Parser)]
#[command(
    name = "ringledger",
    version,
    about = "An event-sourced IP telephony backend"
)]
struct Cli {
    /// TOML configuration file; every key has a default and an environment override.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open the store, migrate it and serve until Ctrl-C.
    Serve,
    /// Create or upgrade the store's schema, then exit.
    Migrate,
    /// Read the event log.
    Events {
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Read models: status, rebuild and verification.
    Projections {
        #[command(subcommand)]
        command: projections_cmd::ProjectionsCommand,
    },
    /// The Kafka bus: relay and projection worker.
    Bus {
        #[command(subcommand)]
        command: bus_cmd::BusCommand,
    },
    /// Billing teams' reports.
    Billing {
        #[command(subcommand)]
        command: billing_cmd::BillingCommand,
    },
    /// Auditors' checks of the log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// API keys: create and revoke.
    Keys {
        #[command(subcommand)]
        command: keys_cmd::KeysCommand,
    },
    /// Print the HTTP API's OpenAPI document (the one served at /openapi.json).
    Openapi,
    /// Measure the system on this machine.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// mimalloc rather than the C library's allocator: under the edge's load (many small
/// allocations freed on other threads) glibc's arenas contended on their locks and its free
/// lists grew slower to search as the run went on (see docs/BENCHMARKS.md, REGISTER).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve::run(&config).await.map(|()| true),
            Command::Migrate => serve::migrate(&config).await.map(|()| true),
            Command::Events { command } => events::run(&config, command).await.map(|()| true),
            Command::Projections { command } => projections_cmd::run(&config, command).await,
            Command::Audit { command } => audit::run(&config, command).await,
            Command::Billing { command } => billing_cmd::run(&config, command).await.map(|()| true),
            Command::Bus { command } => bus_cmd::run(&config, command).await.map(|()| true),
            Command::Keys { command } => keys_cmd::run(&config, command).await,
            Command::Openapi => {
                println!("{}", api::openapi().to_pretty_json()?);
                Ok(true)
            }
            Command::Bench { command } => bench::run(command).await.map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A store URL fit for logs: any password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
