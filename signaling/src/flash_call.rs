//! Flash-call verification: to prove a user holds an extension's number, the edge calls it
//! through the outbound trunk with a caller ID whose last four digits are the code, and
//! cancels the call as soon as it rings. The phone shows a missed call; the user (or an app
//! reading the call log) enters those digits. Nothing is answered, so nothing is billed; the
//! challenge itself is the extension's `extension.challenge_issued` event.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::E164;
use infra::delivery::{CodeSender, DeliveryError};
use tokio::sync::mpsc;

use crate::dialog::{Dialog, Hop};
use crate::edge::Edge;
use crate::outgoing::{ClientKey, Notify, Outcome};
use crate::requests::{self, LegInvite};

/// How long the flash call may take to ring before the edge gives up on it.
const RING_WITHIN: Duration = Duration::from_secs(30);

/// How a flash call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flashed {
    /// It rang (or was answered, and hung up at once): the caller ID reached the phone.
    Rang,
    /// The network refused it with this status before it rang.
    Refused(u16),
}

/// Places flash calls for verification codes (the API's `CodeSender` for `flash_call`).
pub struct FlashCaller {
    edge: Arc<Edge>,
    /// The caller ID before the code (`sip.flash_call_prefix`).
    prefix: String,
}

impl FlashCaller {
    pub fn new(edge: Arc<Edge>, prefix: impl Into<String>) -> Self {
        Self {
            edge,
            prefix: prefix.into(),
        }
    }
}

#[async_trait]
impl CodeSender for FlashCaller {
    async fn send(&self, number: &E164, code: &str) -> Result<(), DeliveryError> {
        let failed = |reason: String| DeliveryError::FlashCall {
            number: number.as_str().to_string(),
            reason,
        };
        let caller_id = format!("{}{code}", self.prefix);
        match flash(&self.edge, number, &caller_id).await {
            Ok(Flashed::Rang) => Ok(()),
            Ok(Flashed::Refused(status)) => Err(failed(format!("refused with {status}"))),
            Err(reason) => Err(failed(reason.to_string())),
        }
    }
}

/// Calls `number` through the outbound trunk from `caller_id` and hangs up once it rings.
pub async fn flash(
    edge: &Arc<Edge>,
    number: &E164,
    caller_id: &str,
) -> Result<Flashed, &'static str> {
    let trunk = edge.trunks.outbound().ok_or("no trunk is configured")?;
    let path = edge
        .path_to(trunk.address, domain::device::Transport::Udp)
        .ok_or("the trunk cannot be reached")?;
    let request_uri = format!("sip:{}@{}", number.as_str(), trunk.address);
    // No session description: nobody is meant to talk (a delayed offer, never completed).
    let requests::NewLeg { invite, branch, .. } = requests::new_leg(&LegInvite {
        request_uri: &request_uri,
        local: edge.local,
        transport: "UDP",
        from_user: caller_id,
        max_forwards: 70,
        content_type: None,
        body: &[],
        session_expires: None,
        extra: &[],
    });
    let (tx, mut rx) = mpsc::channel(16);
    let notify: Notify = Arc::new(move |key: &ClientKey, outcome: Outcome| {
        let _ = tx.try_send((key.method.clone(), outcome));
    });
    let key = ClientKey {
        branch,
        method: "INVITE".into(),
    };
    edge.outgoing
        .send(key, invite.clone(), path.clone(), notify.clone())
        .await;
    let deadline = tokio::time::Instant::now() + RING_WITHIN;
    let mut cancelled = false;
    let mut rang = false;
    loop {
        let next = tokio::time::timeout_at(deadline, rx.recv()).await;
        let response = match next {
            Ok(Some((method, Outcome::Response(r)))) if method == "INVITE" => r,
            Ok(Some((method, Outcome::Timeout))) if method == "INVITE" => {
                return if rang {
                    Ok(Flashed::Rang)
                } else {
                    Err("no answer from the trunk")
                };
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err("the trunk's answers were lost"),
            Err(_) if !cancelled => {
                // Not ringing in time: give up on it.
                edge.outgoing
                    .cancel(&invite, path.clone(), notify.clone())
                    .await;
                cancelled = true;
                continue;
            }
            Err(_) => return Err("the trunk never finished the call"),
        };
        let status = crate::b2bua::call::status_of(&response).unwrap_or(0);
        match status {
            100 => {}
            101..=199 => {
                rang = true;
                if !cancelled {
                    edge.outgoing
                        .cancel(&invite, path.clone(), notify.clone())
                        .await;
                    cancelled = true;
                }
            }
            200..=299 => {
                // Answered before the CANCEL took: ACK and hang up at once.
                if let Ok(mut dialog) = Dialog::as_caller(&invite, &response) {
                    let local = edge.local.to_string();
                    for method in ["ACK", "BYE"] {
                        let branch = requests::branch();
                        let hop = Hop {
                            transport: "UDP",
                            branch: &branch,
                            sent_by: &local,
                        };
                        let ack_of = (method == "ACK").then_some(1);
                        let bytes = dialog.request(method, ack_of, hop, &[], &[]);
                        edge.outgoing
                            .send_bytes(&bytes, branch, method, path.clone(), notify.clone())
                            .await;
                    }
                }
                return Ok(Flashed::Rang);
            }
            _ if rang => return Ok(Flashed::Rang),
            _ => return Ok(Flashed::Refused(status)),
        }
    }
}
