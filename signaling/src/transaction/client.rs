//! Client transactions, INVITE and non-INVITE (RFC 3261 §17.1, RFC 6026 for INVITE 2xx), for
//! the requests the edge sends (legs of the B2BUA, CANCEL, BYE, MESSAGE).
//!
//! INVITE: Calling (Timer A retransmits over UDP, Timer B gives up) -> Proceeding (a
//! provisional) -> Completed (a 3xx-6xx: the transaction ACKs it, Timer D absorbs repeats) or
//! Accepted (a 2xx: the dialog layer ACKs; Timer M passes further 2xx up) -> Terminated.
//! Non-INVITE: Trying (Timer E retransmits, Timer F gives up) -> Proceeding -> Completed
//! (Timer K absorbs repeats) -> Terminated.

use std::time::{Duration, Instant};

use super::timers::{T1, T2, T4};

/// How long a completed INVITE client transaction absorbs repeated failures over UDP.
const TIMER_D: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard (Calling) / non-INVITE sent (Trying).
    Sent,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

/// What a response does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnResponse {
    /// Pass the response up to the transaction user.
    pub deliver: bool,
    /// Send these bytes (an ACK for a 3xx-6xx to an INVITE).
    pub send: Option<Vec<u8>>,
}

/// What a timer firing asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientTimer {
    /// Send the request again (Timer A or E).
    Retransmit(Vec<u8>),
    /// No final response in time (Timer B or F): the TU treats it as a 408.
    Timeout,
    /// The transaction ended; forget it.
    Terminated,
}

#[derive(Debug, Clone)]
pub struct ClientTransaction {
    kind: ClientKind,
    state: ClientState,
    reliable: bool,
    request: Vec<u8>,
    ack: Option<Vec<u8>>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
    end_at: Option<Instant>,
}

impl ClientTransaction {
    /// A transaction whose `request` the caller has just sent at `now`.
    pub fn new(kind: ClientKind, request: Vec<u8>, reliable: bool, now: Instant) -> Self {
        Self {
            kind,
            state: ClientState::Sent,
            reliable,
            request,
            ack: None,
            retransmit_at: (!reliable).then_some(now + T1),
            interval: T1,
            timeout_at: Some(now + 64 * T1),
            end_at: None,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    /// A response with `status` arrived; `ack` builds the ACK for a 3xx-6xx to an INVITE.
    pub fn on_response(
        &mut self,
        status: u16,
        now: Instant,
        ack: impl FnOnce() -> Vec<u8>,
    ) -> OnResponse {
        let deliver = |send| OnResponse {
            deliver: true,
            send,
        };
        let absorb = |send| OnResponse {
            deliver: false,
            send,
        };
        match (self.kind, self.state) {
            (_, ClientState::Sent | ClientState::Proceeding) if status < 200 => {
                self.state = ClientState::Proceeding;
                if self.kind == ClientKind::Invite {
                    // A provisional stops INVITE retransmissions and Timer B.
                    self.retransmit_at = None;
                    self.timeout_at = None;
                } else if self.retransmit_at.is_some() {
                    // Non-INVITE keeps retransmitting, at T2 (Timer E in Proceeding).
                    self.interval = T2;
                    self.retransmit_at = Some(now + T2);
                }
                deliver(None)
            }
            (ClientKind::Invite, ClientState::Sent | ClientState::Proceeding) if status < 300 => {
                self.state = ClientState::Accepted;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.end_at = Some(now + 64 * T1);
                deliver(None)
            }
            (ClientKind::Invite, ClientState::Sent | ClientState::Proceeding) => {
                self.state = ClientState::Completed;
                self.retransmit_at = None;
                self.timeout_at = None;
                let ack = ack();
                self.ack = Some(ack.clone());
                self.end_at = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        TIMER_D
                    },
                );
                deliver(Some(ack))
            }
            // Further 2xx (a retransmission, or another fork's answer) go up to the dialog
            // layer, which must ACK (and for another fork, BYE) them.
            (ClientKind::Invite, ClientState::Accepted) if (200..300).contains(&status) => {
                deliver(None)
            }
            (ClientKind::Invite, ClientState::Completed) if status >= 300 => {
                absorb(self.ack.clone())
            }
            (ClientKind::NonInvite, ClientState::Sent | ClientState::Proceeding) => {
                self.state = ClientState::Completed;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.end_at = Some(now + if self.reliable { Duration::ZERO } else { T4 });
                deliver(None)
            }
            _ => absorb(None),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<ClientTimer> {
        if self.end_at.is_some_and(|t| t <= now) {
            self.terminate();
            return Some(ClientTimer::Terminated);
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.terminate();
            return Some(ClientTimer::Timeout);
        }
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.interval = match self.kind {
                // Timer A doubles without a ceiling; Timer E stops at T2.
                ClientKind::Invite => self.interval * 2,
                ClientKind::NonInvite => (self.interval * 2).min(T2),
            };
            self.retransmit_at = Some(now + self.interval);
            return Some(ClientTimer::Retransmit(self.request.clone()));
        }
        None
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.end_at = None;
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs every timer up to `until`, returning (offset in ms, output) for each firing.
    fn run(tx: &mut ClientTransaction, t0: Instant, until: Duration) -> Vec<(u128, ClientTimer)> {
        let mut out = vec![];
        while let Some(at) = tx.poll_timeout() {
            if at > t0 + until {
                break;
            }
            if let Some(o) = tx.handle_timeout(at) {
                out.push(((at - t0).as_millis(), o));
            }
        }
        out
    }

    #[test]
    fn invite_over_udp_retransmits_doubling_until_timer_b() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(ClientKind::Invite, b"INVITE".to_vec(), false, t0);
        let fired = run(&mut tx, t0, Duration::from_secs(60));
        let retransmits: Vec<u128> = fired
            .iter()
            .filter(|(_, o)| matches!(o, ClientTimer::Retransmit(_)))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(retransmits, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(fired.last(), Some(&(32_000, ClientTimer::Timeout)));
        assert!(tx.is_terminated());
    }

    #[test]
    fn a_provisional_stops_invite_retransmissions_and_timer_b() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(ClientKind::Invite, b"INVITE".to_vec(), false, t0);
        let r = tx.on_response(180, t0 + Duration::from_millis(100), Vec::new);
        assert!(r.deliver);
        assert_eq!(tx.state(), ClientState::Proceeding);
        assert_eq!(tx.poll_timeout(), None, "the TU's ring timeout takes over");
    }

    #[test]
    fn an_invite_failure_is_acked_by_the_transaction_and_repeats_get_the_same_ack() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(ClientKind::Invite, b"INVITE".to_vec(), false, t0);
        let r = tx.on_response(486, t0, || b"ACK".to_vec());
        assert_eq!(
            r,
            OnResponse {
                deliver: true,
                send: Some(b"ACK".to_vec())
            }
        );
        let again = tx.on_response(486, t0 + Duration::from_millis(600), || {
            panic!("built once")
        });
        assert_eq!(
            again,
            OnResponse {
                deliver: false,
                send: Some(b"ACK".to_vec())
            }
        );
        // Timer D: 32 s over UDP.
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    }

    #[test]
    fn invite_2xx_is_accepted_and_later_2xx_go_up_until_timer_m() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(ClientKind::Invite, b"INVITE".to_vec(), true, t0);
        assert!(tx.on_response(200, t0, Vec::new).deliver);
        assert_eq!(tx.state(), ClientState::Accepted);
        // Another fork's 200: up to the dialog layer (which ACKs and BYEs it).
        assert!(
            tx.on_response(200, t0 + Duration::from_secs(1), Vec::new)
                .deliver
        );
        assert!(
            !tx.on_response(486, t0 + Duration::from_secs(1), Vec::new)
                .deliver
        );
        assert_eq!(
            run(&mut tx, t0, Duration::from_secs(40)),
            vec![(32_000, ClientTimer::Terminated)]
        );
    }

    #[test]
    fn non_invite_retransmits_capped_at_t2_then_times_out_with_timer_f() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(ClientKind::NonInvite, b"BYE".to_vec(), false, t0);
        let fired = run(&mut tx, t0, Duration::from_secs(60));
        let times: Vec<u128> = fired.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            &times[..6],
            &[500, 1500, 3500, 7500, 11500, 15500],
            "E doubles to T2 = 4 s"
        );
        assert_eq!(fired.last(), Some(&(32_000, ClientTimer::Timeout)));
    }

    #[test]
    fn non_invite_final_ends_after_timer_k_and_absorbs_repeats() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(ClientKind::NonInvite, b"BYE".to_vec(), false, t0);
        assert!(tx.on_response(100, t0, Vec::new).deliver);
        assert_eq!(
            tx.poll_timeout(),
            Some(t0 + T2),
            "Timer E at T2 while Proceeding"
        );
        assert!(tx.on_response(200, t0, Vec::new).deliver);
        assert!(
            !tx.on_response(200, t0, Vec::new).deliver,
            "a repeat is absorbed"
        );
        assert_eq!(
            run(&mut tx, t0, Duration::from_secs(10)),
            vec![(5_000, ClientTimer::Terminated)]
        );
    }

    #[test]
    fn over_tcp_nothing_is_retransmitted() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(ClientKind::NonInvite, b"BYE".to_vec(), true, t0);
        assert_eq!(
            run(&mut tx, t0, Duration::from_secs(60)),
            vec![(32_000, ClientTimer::Timeout)]
        );
    }
}
