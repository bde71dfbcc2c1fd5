//! Records contacts whose expiry passed without a refresh as unbound (`expired`). Routing
//! already ignores them; the events make the log say so. Several edges may sweep the same
//! device: the command is idempotent, so the loser of a race writes nothing.

use std::sync::Arc;
use std::time::Duration;

use domain::device::{Device, DeviceCommand};
use tokio::sync::watch;

use crate::edge::Edge;
use infra::command::{self, Origin};

pub async fn run(
    edge: Arc<Edge>,
    actor: String,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let due = edge
            .view
            .read()
            .expect("routing view")
            .devices_with_expired_contacts(chrono::Utc::now());
        let origin = Origin {
            actor: &actor,
            correlation_id: None,
            observe_append: None,
        };
        for device in due {
            let stream = device.stream_id();
            let result = command::execute::<Device>(
                edge.store.as_ref(),
                &origin,
                &stream,
                &DeviceCommand::ExpireContacts,
                None,
                None,
            )
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, %stream, "expired contacts not recorded; next sweep retries");
            }
        }
    }
}
