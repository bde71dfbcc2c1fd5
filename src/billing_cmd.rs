//! `ringledger billing ...`: what billing teams read from the billing projection.

use clap::Subcommand;
use infra::config::Config;

#[derive(Subcommand)]
pub enum BillingCommand {
    /// An account's invoice for one calendar month: lines per extension and path, and total.
    Invoice {
        #[arg(long)]
        account: uuid::Uuid,
        /// YYYY-MM (UTC, by the calls' start).
        #[arg(long)]
        month: String,
        /// CSV instead of JSON.
        #[arg(long)]
        csv: bool,
    },
}

pub async fn run(config: &Config, command: BillingCommand) -> anyhow::Result<()> {
    let BillingCommand::Invoice {
        account,
        month,
        csv,
    } = command;
    anyhow::ensure!(
        month.len() == 7
            && chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").is_ok(),
        "--month must look like 2026-11"
    );
    let db = crate::projections_cmd::projection_db(config).await?;
    let mut invoice = projections::billing::invoice(&db, &account.to_string(), &month).await?;
    if invoice.currency.is_none() {
        // A month without usage is in the account's currency all the same.
        let store = infra::open_store(&config.store.url).await?;
        let stream = domain::ids::AccountId(account).stream_id();
        let state = infra::command::load::<domain::account::Account>(store.as_ref(), &stream)
            .await?
            .state;
        invoice.currency = state.currency.map(|c| c.to_string());
    }
    if csv {
        print!("{}", api::routes::billing::invoice_csv(&invoice));
    } else {
        println!("{}", serde_json::to_string_pretty(&invoice)?);
    }
    Ok(())
}
