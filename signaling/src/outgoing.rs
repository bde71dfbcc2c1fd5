//! Requests the edge sends as a user agent client (the B2BUA's INVITEs, their CANCELs, BYEs):
//! each has a client transaction that the edge's timer loop retransmits and times out, and
//! responses find their way back to it by the branch the edge put in the top Via and the
//! CSeq method. What a response or a timeout means is told to the request's owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::deadlines::{Deadlines, Slot};
use crate::message::RawMessage;
use crate::message::header::{self, split_outside};
use crate::peer_path::PeerPath;
use crate::transaction::{ClientKind, ClientTimer, ClientTransaction};

/// A client transaction: the branch the edge chose and the method (a CANCEL shares its
/// INVITE's branch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    pub method: String,
}

impl ClientKey {
    /// The transaction a response answers: its top Via's branch and its CSeq method.
    pub fn of_response(response: &RawMessage) -> Option<Self> {
        let via = split_outside(response.header("Via")?, ',')
            .first()?
            .to_string();
        let branch = header::param(&via, "branch").flatten()?;
        let method = response.header("CSeq")?.split_whitespace().nth(1)?;
        Some(Self {
            branch,
            method: method.to_ascii_uppercase(),
        })
    }
}

/// What happened to a request the edge sent.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(RawMessage),
    /// No final response in time (Timer B or F): as good as a 408.
    Timeout,
}

impl Outcome {
    /// Whether the request's transaction is over: a final response, or none in time.
    pub fn is_final(&self) -> bool {
        match self {
            Outcome::Response(r) => r
                .start_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|s| s >= 200),
            Outcome::Timeout => true,
        }
    }
}

/// Told each outcome of a request (called under no lock; must not block).
pub type Notify = Arc<dyn Fn(&ClientKey, Outcome) + Send + Sync>;

struct Entry {
    tx: ClientTransaction,
    request: RawMessage,
    path: PeerPath,
    notify: Notify,
    deadline: Slot,
}

#[derive(Default)]
struct Table {
    by_key: HashMap<ClientKey, Entry>,
    deadlines: Deadlines<ClientKey>,
}

impl Table {
    fn reschedule(&mut self, key: &ClientKey) {
        if let Some(entry) = self.by_key.get_mut(key) {
            self.deadlines
                .schedule(&mut entry.deadline, entry.tx.poll_timeout(), key);
        }
    }
}

#[derive(Default)]
pub struct Outgoing {
    table: Mutex<Table>,
}

impl Outgoing {
    /// Sends `request` on `path` inside a new client transaction whose outcomes go to
    /// `notify`. An ACK has no transaction: it is only sent.
    pub async fn send(&self, key: ClientKey, request: RawMessage, path: PeerPath, notify: Notify) {
        let bytes = request.to_bytes();
        if key.method != "ACK" {
            let kind = if key.method == "INVITE" {
                ClientKind::Invite
            } else {
                ClientKind::NonInvite
            };
            let tx =
                ClientTransaction::new(kind, bytes.clone(), path.is_reliable(), Instant::now());
            let mut table = self.table.lock().expect("client transactions");
            table.by_key.insert(
                key.clone(),
                Entry {
                    tx,
                    request,
                    path: path.clone(),
                    notify,
                    deadline: None,
                },
            );
            table.reschedule(&key);
        }
        path.send(bytes).await;
    }

    /// Sends a request the edge wrote as bytes (inside a dialog: `Dialog::request`), with the
    /// branch it put in its Via, in a new client transaction.
    pub async fn send_bytes(
        &self,
        bytes: &[u8],
        branch: String,
        method: &str,
        path: PeerPath,
        notify: Notify,
    ) {
        let Ok(request) = crate::message::normalize::normalize(bytes) else {
            tracing::warn!(method, "the edge built a request it cannot read");
            return;
        };
        let key = ClientKey {
            branch,
            method: method.into(),
        };
        self.send(key, request, path, notify).await;
    }

    /// Sends the CANCEL of `invite` (RFC 3261 §9.1), in a client transaction of its own.
    pub async fn cancel(&self, invite: &RawMessage, path: PeerPath, notify: Notify) {
        let cancel = crate::requests::cancel(invite);
        let branch = cancel
            .header("Via")
            .and_then(|v| header::param(v, "branch").flatten())
            .unwrap_or_default();
        let key = ClientKey {
            branch,
            method: "CANCEL".into(),
        };
        self.send(key, cancel, path, notify).await;
    }

    /// A response arrived: false when it matches no transaction (a stray, dropped).
    pub async fn on_response(&self, response: RawMessage) -> bool {
        let Some(key) = ClientKey::of_response(&response) else {
            return false;
        };
        let Some(status) = response
            .start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
        else {
            return false;
        };
        let (send, deliver) = {
            let mut table = self.table.lock().expect("client transactions");
            let Some(entry) = table.by_key.get_mut(&key) else {
                return false;
            };
            let request = &entry.request;
            let result = entry.tx.on_response(status, Instant::now(), || {
                crate::requests::ack_for_failure(request, &response).to_bytes()
            });
            let send = result.send.map(|bytes| (entry.path.clone(), bytes));
            let deliver = result.deliver.then(|| entry.notify.clone());
            table.reschedule(&key);
            (send, deliver)
        };
        if let Some((path, bytes)) = send {
            path.send(bytes).await;
        }
        if let Some(notify) = deliver {
            notify(&key, Outcome::Response(response));
        }
        true
    }

    /// Fires due timers at `now`; returns when the next one falls.
    pub async fn tick(&self, now: Instant) -> Option<Instant> {
        let mut sends = Vec::new();
        let mut timeouts = Vec::new();
        let next = {
            let mut table = self.table.lock().expect("client transactions");
            while let Some(key) = table.deadlines.pop_due(now) {
                let Some(entry) = table.by_key.get_mut(&key) else {
                    continue;
                };
                match entry.tx.handle_timeout(now) {
                    Some(ClientTimer::Retransmit(bytes)) => {
                        sends.push((entry.path.clone(), bytes));
                        table.reschedule(&key);
                    }
                    Some(ClientTimer::Timeout) => {
                        timeouts.push((key.clone(), entry.notify.clone()));
                        table.by_key.remove(&key);
                    }
                    Some(ClientTimer::Terminated) => {
                        table.by_key.remove(&key);
                    }
                    None => table.reschedule(&key),
                }
            }
            table.deadlines.next()
        };
        for (path, bytes) in sends {
            path.send(bytes).await;
        }
        for (key, notify) in timeouts {
            notify(&key, Outcome::Timeout);
        }
        next
    }

    /// Open client transactions.
    pub fn len(&self) -> usize {
        self.table.lock().expect("client transactions").by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
