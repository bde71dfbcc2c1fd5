//! Records what the edge's defences did to an account in that account's log: a username
//! blocked after repeated authentication failures becomes `account.sip_auth_blocked`, so an
//! auditor replaying the account sees the attack and when it was held off.

use std::sync::Arc;

use domain::account::{Account, AccountCommand};
use infra::EventStore;
use infra::command::{self, Origin};
use tokio::sync::{mpsc, watch};

use crate::auth::UsernameBlocked;

/// Appends one event per username block, until the edge stops.
pub async fn record_blocks(
    store: Arc<dyn EventStore>,
    actor: String,
    mut blocks: mpsc::Receiver<UsernameBlocked>,
    mut stopped: watch::Receiver<bool>,
) {
    let origin = Origin {
        actor: &actor,
        correlation_id: None,
        observe_append: None,
    };
    loop {
        let block = tokio::select! {
            b = blocks.recv() => match b {
                Some(b) => b,
                None => return,
            },
            _ = stopped.wait_for(|s| *s) => return,
        };
        let stream = block.account_id.stream_id();
        let cmd = AccountCommand::RecordSipAuthBlock {
            device_id: block.device_id,
            username: block.username,
            last_source: block.last_source.to_string(),
            block_secs: block.block_secs,
        };
        if let Err(e) =
            command::execute::<Account>(store.as_ref(), &origin, &stream, &cmd, None, None).await
        {
            tracing::error!(
                target: "ringledger::security",
                error = %e, %stream,
                "a username block could not be recorded on its account"
            );
        }
    }
}
