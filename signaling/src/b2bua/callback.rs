//! Callback (docs/OPERATIONS.md, "Callback"): a callback request staged over the API is taken up by
//! an edge, which rings the extension through the trunk, and once it answers rings the
//! destination, then bridges the two through the media relay. The edge makes both offers
//! itself: the extension is offered G.711 and DTMF events; the destination only what the
//! extension chose. Both legs are billed to the main account through the extension (the
//! call's origin is the service; its extension is the one that asked).
//!
//! Taking a request up is here; the callback itself is a state machine ([`Callback`], sans IO)
//! that the call task drives, as it drives a call.

mod machine;
#[cfg(test)]
mod tests;

pub use machine::{Callback, CallbackPlan};

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::E164;
use domain::extension::{Extension, ExtensionCommand};
use domain::ids::{CallId, ExtensionId};
use infra::command;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::INPUT_QUEUE;
use super::call_task::{self, CallTask};
use super::host::CallHost;
use super::plan::fraud_check;
use super::spending::first_increment;
use crate::media::relay::Relay;

/// How long a request this edge tried to take may still show as waiting before it is tried
/// again (the store failed, or the edge had no media ports): the domain takes each request
/// once, so a second try of one that was taken meanwhile is refused, not placed twice.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Takes up the callback requests the routing view shows waiting, until `stopped`.
pub async fn run(host: Arc<dyn CallHost>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut tried: HashMap<Uuid, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let waiting = host
            .view()
            .read()
            .expect("routing view")
            .pending_callbacks();
        // Forget requests the view no longer shows (taken, cancelled; ids are never reused),
        // and those tried long enough ago to try again.
        let now = Instant::now();
        tried.retain(|id, at| now < *at + RETRY_AFTER && waiting.iter().any(|(_, r, _)| r == id));
        for (extension_id, request_id, destination) in waiting {
            if let Entry::Vacant(entry) = tried.entry(request_id) {
                entry.insert(now);
                tokio::spawn(place(host.clone(), extension_id, request_id, destination));
            }
        }
    }
}

/// Takes the request (an edge that loses the race to another leaves it), then places it.
async fn place(
    host: Arc<dyn CallHost>,
    extension_id: ExtensionId,
    request_id: Uuid,
    destination: E164,
) {
    let (Some(media), Some(trunk)) = (
        host.media().cloned(),
        host.trunks().outbound().map(|t| t.address),
    ) else {
        // Left waiting for an edge that can place it (or for the request to be cancelled).
        tracing::warn!(%request_id, "callbacks need the media relay and a trunk; not taken");
        return;
    };
    if host.is_draining() {
        return;
    }
    // The relay first: an edge out of media ports leaves the request for another.
    let relay = match Relay::start(&media) {
        Ok(relay) => relay,
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "no media ports for a callback; not taken");
            return;
        }
    };
    let Some(extension) = take(host.as_ref(), extension_id, request_id).await else {
        return;
    };
    let account = extension.account_id.and_then(|id| {
        host.view()
            .read()
            .expect("routing view")
            .account(id)
            .cloned()
    });
    let (Some(account), Some(number)) = (account, extension.number.clone()) else {
        tracing::warn!(%request_id, "callback for an account or extension the edge does not know");
        return;
    };
    let (refusal, hold) = {
        let view = host.view().read().expect("routing view");
        let now = chrono::Utc::now();
        let policy = host.policy();
        let extension = Some((extension_id, &extension));
        match fraud_check(&view, &account, extension, &destination, false, policy, now) {
            Some((_, cause)) => (Some(cause), None),
            None => {
                // Both legs are billed: the callback holds both first increments.
                let reserve = first_increment(&view, &account, &number, false, now)
                    + first_increment(&view, &account, &destination, false, now);
                let spending = host.spending();
                match spending.hold_for(&view, &account, extension.map(|e| e.1), reserve, now) {
                    Ok(hold) => (None, hold),
                    Err((_, cause)) => (Some(cause), None),
                }
            }
        }
    };
    let settings = call_task::settings(host.as_ref(), Some(&relay));
    let Some(ports) = settings.media else {
        return;
    };
    let plan = CallbackPlan {
        account,
        extension,
        extension_id,
        number,
        destination,
        trunk,
        refusal,
    };
    let callback = Callback::new(CallId::from(Uuid::now_v7()), plan, settings, ports);
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let enlisted = host.calls().enlist(tx.clone());
    CallTask::new(host, callback, None, Some(relay), hold, tx)
        .drive(rx, enlisted)
        .await;
}

/// Takes the request up: the extension as it then is, or None when another edge took it first
/// (the domain takes each request once) or it is gone.
async fn take(
    host: &dyn CallHost,
    extension_id: ExtensionId,
    request_id: Uuid,
) -> Option<Extension> {
    let origin = command::Origin {
        actor: host.actor(),
        correlation_id: Some(request_id),
        observe_append: None,
    };
    // Decided on the stream as it is when appended (another request of the extension taken
    // at the same moment is no conflict).
    let took = command::execute::<Extension>(
        host.store(),
        &origin,
        &extension_id.stream_id(),
        &ExtensionCommand::TakeCallback { request_id },
        None,
        None,
    )
    .await;
    match took {
        Ok((taken, _)) => Some(taken.state),
        Err(e) => {
            tracing::debug!(%request_id, error = %e, "callback not taken here");
            None
        }
    }
}
