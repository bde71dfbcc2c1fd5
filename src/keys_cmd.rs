//! `ringledger keys ...`: API keys for admins, billing teams and auditors.

use clap::Subcommand;
use infra::config::Config;

use api::keys::{KeyStore, Role};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key; it is printed once and only its hash is kept.
    Create {
        /// admin, billing or auditor.
        #[arg(long)]
        role: String,
        /// Who or what holds the key (shown in audits).
        #[arg(long)]
        name: String,
    },
    /// Revoke a key by its id; a running server refuses it within 5 s (the time it trusts a
    /// key it has verified).
    Revoke { key_id: String },
}

pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<bool> {
    let db = crate::projections_cmd::projection_db(config).await?;
    let keys = KeyStore::open(db).await?;
    match command {
        KeysCommand::Create { role, name } => {
            let role = Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("--role {role:?}: must be admin, billing or auditor")
            })?;
            let key = keys.create(role, &name).await?;
            eprintln!(
                "created {} key {} ({}); the key below is shown only now:",
                role.name(),
                key.key_id,
                key.name
            );
            println!("{}", key.token);
            Ok(true)
        }
        KeysCommand::Revoke { key_id } => {
            if keys.revoke(&key_id).await? {
                println!(
                    "revoked {key_id}; a running server refuses it within 5 s (it trusts a \
                     verified key that long)"
                );
                Ok(true)
            } else {
                eprintln!("no live key {key_id}");
                Ok(false)
            }
        }
    }
}
