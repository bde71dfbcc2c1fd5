//! One leg of a call, as the machines that place legs (the call, the callback) keep it: what
//! was sent, what was heard, and the requests the edge makes inside its dialog (the ACK of its
//! 2xx, a CANCEL only once something was heard, one BYE).

use std::net::SocketAddr;

use domain::call::{CallCommand, LegFailure, LegTarget};
use domain::ids::LegId;

use super::interface::{Outbox, Output, Reach};
use crate::dialog::{Dialog, Hop};
use crate::message::RawMessage;
use crate::requests;
use crate::transaction::TransactionKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegState {
    Trying,
    Ringing,
    Answered,
    /// Failed, cancelled or hung up: nothing more is expected of it.
    Done,
}

pub(crate) struct Leg {
    pub id: LegId,
    /// What the edge placed it toward (None for a call-in, which placed itself).
    pub target: Option<LegTarget>,
    /// The leg called the edge (a call-in): the edge answered its INVITE, with this tag,
    /// through this server transaction.
    pub inbound: Option<(TransactionKey, String)>,
    pub invite: RawMessage,
    pub reach: Reach,
    pub state: LegState,
    /// Any response heard: a CANCEL may be sent (RFC 3261 §9.1).
    heard: bool,
    cancel_wanted: bool,
    cancel_sent: bool,
    /// A final response (or the INVITE's timeout) came: its transaction is over.
    pub finished: bool,
    pub dialog: Option<Dialog>,
    /// The ACK of its 2xx, sent again when the 2xx is.
    pub ack: Option<Vec<u8>>,
    pub bye_sent: bool,
    /// The final status a failed leg got.
    pub failed_with: Option<u16>,
}

impl Leg {
    /// A leg the edge INVITEd.
    pub fn placed(id: LegId, invite: RawMessage, reach: Reach) -> Self {
        Self {
            id,
            target: None,
            inbound: None,
            invite,
            reach,
            state: LegState::Trying,
            heard: false,
            cancel_wanted: false,
            cancel_sent: false,
            finished: false,
            dialog: None,
            ack: None,
            bye_sent: false,
            failed_with: None,
        }
    }

    /// A leg that INVITEd the edge (a call-in) and was answered, through `key` with `tag`.
    pub fn arrived(
        id: LegId,
        key: TransactionKey,
        tag: String,
        invite: RawMessage,
        reach: Reach,
    ) -> Self {
        Self {
            dialog: Dialog::as_callee(&invite, &tag).ok(),
            inbound: Some((key, tag)),
            state: LegState::Answered,
            heard: true,
            finished: true,
            ..Self::placed(id, invite, reach)
        }
    }

    /// Still waiting for an answer.
    pub fn is_ringing(&self) -> bool {
        matches!(self.state, LegState::Trying | LegState::Ringing)
    }

    /// A response with `status` was heard from the leg (number `index`): the CANCEL wanted
    /// earlier, if it may leave now.
    pub fn hear(&mut self, index: usize, status: u16) -> Option<Output> {
        self.heard = true;
        if status >= 200 {
            self.finished = true;
        }
        (self.cancel_wanted && status < 200)
            .then(|| self.send_cancel(index))
            .flatten()
    }

    /// The INVITE went unanswered (Timer B).
    pub fn timed_out(&mut self) {
        self.finished = true;
    }

    /// The leg (number `index`) is given up while ringing: its CANCEL if it may leave now
    /// (else it leaves once a provisional response is heard).
    pub fn cancel(&mut self, index: usize) -> Option<Output> {
        self.state = LegState::Done;
        self.cancel_wanted = true;
        self.heard.then(|| self.send_cancel(index)).flatten()
    }

    /// Gives the ringing leg (number `index`) up for `why`: its CANCEL (now, or once heard)
    /// and its failure (487) recorded.
    pub fn give_up(&mut self, index: usize, why: LegFailure, out: &mut Outbox) {
        if let Some(cancel) = self.cancel(index) {
            out.push(cancel);
        }
        out.record(CallCommand::LegFailed {
            leg_id: self.id,
            sip_status: 487,
            failure: why,
        });
    }

    fn send_cancel(&mut self, index: usize) -> Option<Output> {
        if self.cancel_sent {
            return None;
        }
        self.cancel_sent = true;
        Some(Output::Cancel {
            leg: index,
            invite: self.invite.clone(),
        })
    }

    /// A cancelled leg whose INVITE is not over yet (its 487, or a 2xx that crossed the
    /// CANCEL, is still to come).
    pub fn awaits_final(&self) -> bool {
        self.cancel_wanted && !self.finished
    }

    /// The dialog a 2xx starts (kept from the first 2xx); false when the 2xx cannot start one.
    pub fn answered_with(
        &mut self,
        response: &RawMessage,
    ) -> Result<(), crate::dialog::DialogError> {
        if self.dialog.is_none() {
            self.dialog = Some(Dialog::as_caller(&self.invite, response)?);
        }
        Ok(())
    }

    /// A request the edge (at `local`) sends inside the leg's dialog, and its branch (none
    /// before the leg has a dialog): `ack_of` names the INVITE an ACK is for, by CSeq number.
    pub fn request(
        &mut self,
        local: SocketAddr,
        method: &str,
        ack_of: Option<u32>,
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Option<(Vec<u8>, String)> {
        let branch = requests::branch();
        let sent_by = local.to_string();
        let hop = Hop {
            transport: self.reach.transport,
            branch: &branch,
            sent_by: &sent_by,
        };
        let bytes = self
            .dialog
            .as_mut()?
            .request(method, ack_of, hop, extra, body);
        Some((bytes, branch))
    }

    /// The ACK of the leg's 2xx inside its dialog, with `body` when it completes a delayed
    /// offer; kept to be sent again should the 2xx be.
    pub fn ack(
        &mut self,
        local: SocketAddr,
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let (ack, _) = self.request(local, "ACK", Some(1), extra, body)?;
        self.ack = Some(ack.clone());
        Some(ack)
    }

    /// The leg's one BYE and its branch (none before it has a dialog, or once sent).
    pub fn bye(&mut self, local: SocketAddr) -> Option<(Vec<u8>, String)> {
        if self.bye_sent || self.dialog.is_none() {
            return None;
        }
        self.bye_sent = true;
        self.state = LegState::Done;
        self.request(local, "BYE", None, &[], &[])
    }

    /// The leg hung up itself: no BYE goes to it.
    pub fn hung_up(&mut self) {
        self.bye_sent = true;
        self.state = LegState::Done;
    }
}
