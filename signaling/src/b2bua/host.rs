//! What a call needs of the edge that runs it, and nothing more: the log and the routing view,
//! the transactions it sends through and answers with, the registries calls are found by, and
//! the settings calls obey. The edge implements it; calls never see the edge itself, so the
//! edge depends on the calls and not the other way round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use domain::call::EndCause;
use domain::device::Transport;
use infra::EventStore;
use infra::delivery::Webhook;
use uuid::Uuid;

use super::Calls;
use super::call_in::CallIns;
use super::on_net::OnNet;
use super::plan::Policy;
use super::spending::Spending;
use crate::answer::Answer;
use crate::media::Media;
use crate::message::RawMessage;
use crate::outgoing::Outgoing;
use crate::peer_path::PeerPath;
use crate::transaction::TransactionKey;
use crate::trunk::Trunks;
use crate::view::SharedView;

/// How long calls may ring, wait for a call-in, and last.
#[derive(Debug, Clone, Copy)]
pub struct CallTimes {
    /// The longest a call rings before it ends unanswered.
    pub ring: Duration,
    /// The longest a call waits for an extension to call in.
    pub call_in: Duration,
    /// The longest an answered call lasts.
    pub max_duration: Duration,
}

#[async_trait::async_trait]
pub trait CallHost: Send + Sync {
    /// The edge process running the calls (`call.started` names it).
    fn edge_id(&self) -> Uuid;
    fn store(&self) -> &dyn EventStore;
    /// Who the calls' events name as their actor.
    fn actor(&self) -> &str;
    fn view(&self) -> &SharedView;
    /// The address requests leave from (Via sent-by, Contact).
    fn local(&self) -> SocketAddr;
    /// The RTP relay, if media is relayed.
    fn media(&self) -> Option<&Arc<Media>>;
    fn outgoing(&self) -> &Outgoing;
    fn calls(&self) -> &Calls;
    fn call_ins(&self) -> &CallIns;
    /// The calls in progress and reservations the money limits count.
    fn spending(&self) -> &Arc<Spending>;
    fn trunks(&self) -> &Trunks;
    /// How calls to the service's own numbers are routed.
    fn on_net(&self) -> &OnNet;
    /// What the operator allows when calls are planned.
    fn policy(&self) -> Policy;
    fn times(&self) -> CallTimes;
    /// Where call-in notices are also POSTed.
    fn call_in_webhook(&self) -> Option<Arc<Webhook>>;
    /// Shutting down: no new call starts.
    fn is_draining(&self) -> bool;
    /// How to reach `to` over `transport`, if the edge can.
    fn path_to(&self, to: SocketAddr, transport: Transport) -> Option<PeerPath>;
    /// Answers `request` through its server transaction, with `to_tag`.
    async fn respond(
        &self,
        key: &TransactionKey,
        request: &RawMessage,
        answer: Answer,
        to_tag: &str,
    );
    /// Counts a call the edge ended itself (for the causes an operator watches).
    fn count_end(&self, cause: EndCause);
}
