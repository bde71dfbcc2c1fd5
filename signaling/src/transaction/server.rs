//! Server transactions, INVITE and non-INVITE (RFC 3261 §17.2, RFC 6026 for INVITE 2xx).
//!
//! Non-INVITE: Trying -> Proceeding (a provisional sent) -> Completed (a final sent; Timer J
//! absorbs retransmissions for 64*T1 over UDP) -> Terminated.
//! INVITE: Proceeding -> Completed (3xx-6xx sent; Timer G retransmits it until an ACK, Timer H
//! gives up) -> Confirmed (ACK seen; Timer I absorbs further ACKs) -> Terminated; or
//! Proceeding -> Accepted (2xx sent; Timer L absorbs retransmitted INVITEs while the dialog
//! layer retransmits the 2xx) -> Terminated.

use std::time::{Duration, Instant};

use super::timers::{T1, T2, T4};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// What a timer firing asks of the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOutput {
    /// Send these bytes again (Timer G).
    Retransmit(Vec<u8>),
    /// No ACK came for a final non-2xx response (Timer H): the peer is gone.
    AckTimeout,
    /// The transaction ended; forget it.
    Terminated,
}

#[derive(Debug, Clone)]
pub struct ServerTransaction {
    kind: ServerKind,
    state: State,
    reliable: bool,
    last_response: Option<Vec<u8>>,
    /// When the next timer fires, and which.
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    end_at: Option<Instant>,
}

impl ServerTransaction {
    /// A transaction for a request that just arrived over a reliable (TCP) or unreliable (UDP)
    /// transport.
    pub fn new(kind: ServerKind, reliable: bool) -> Self {
        Self {
            kind,
            state: match kind {
                ServerKind::Invite => State::Proceeding,
                ServerKind::NonInvite => State::Trying,
            },
            reliable,
            last_response: None,
            retransmit_at: None,
            retransmit_interval: T1,
            end_at: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The request came again: what to send back, if anything.
    pub fn on_retransmission(&self) -> Option<&[u8]> {
        match self.state {
            State::Proceeding | State::Completed => self.last_response.as_deref(),
            State::Trying | State::Confirmed | State::Accepted | State::Terminated => None,
        }
    }

    /// An ACK for this INVITE's non-2xx final response.
    pub fn on_ack(&mut self, now: Instant) {
        if self.kind == ServerKind::Invite && self.state == State::Completed {
            self.state = State::Confirmed;
            self.retransmit_at = None;
            self.end_at = Some(now + if self.reliable { Duration::ZERO } else { T4 });
        }
    }

    /// The transaction user answers with `status`; returns whether the bytes should be sent
    /// (a response after the final one is not).
    pub fn respond(&mut self, status: u16, bytes: Vec<u8>, now: Instant) -> bool {
        let provisional = status < 200;
        match (self.kind, self.state) {
            (_, State::Trying | State::Proceeding) if provisional => {
                self.state = State::Proceeding;
                self.last_response = Some(bytes);
                true
            }
            (ServerKind::NonInvite, State::Trying | State::Proceeding) => {
                self.state = State::Completed;
                self.last_response = Some(bytes);
                self.end_at = Some(
                    now + if self.reliable {
                        Duration::ZERO
                    } else {
                        64 * T1
                    },
                );
                true
            }
            (ServerKind::Invite, State::Proceeding) if status < 300 => {
                self.state = State::Accepted;
                self.last_response = Some(bytes);
                self.end_at = Some(now + 64 * T1);
                true
            }
            (ServerKind::Invite, State::Proceeding) => {
                self.state = State::Completed;
                self.last_response = Some(bytes);
                if !self.reliable {
                    self.retransmit_interval = T1;
                    self.retransmit_at = Some(now + T1);
                }
                self.end_at = Some(now + 64 * T1);
                true
            }
            // A 2xx retransmitted by the dialog layer passes while Accepted.
            (ServerKind::Invite, State::Accepted) => status < 300 && !provisional,
            _ => false,
        }
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retransmit_at, self.end_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TimerOutput> {
        if self.end_at.is_some_and(|t| t <= now) {
            let timed_out = self.state == State::Completed && self.kind == ServerKind::Invite;
            self.state = State::Terminated;
            self.retransmit_at = None;
            self.end_at = None;
            return Some(if timed_out {
                TimerOutput::AckTimeout
            } else {
                TimerOutput::Terminated
            });
        }
        if self.retransmit_at.is_some_and(|t| t <= now) {
            self.retransmit_interval = (self.retransmit_interval * 2).min(T2);
            self.retransmit_at = Some(now + self.retransmit_interval);
            return self.last_response.clone().map(TimerOutput::Retransmit);
        }
        None
    }

    /// Bytes of the last response kept for retransmission.
    pub fn retained(&self) -> usize {
        self.last_response.as_ref().map_or(0, Vec::len)
    }

    /// Stops keeping the last response: a retransmitted request is then absorbed unanswered
    /// (the edge's memory budget for kept responses is spent, or this one is too large).
    pub fn forget_response(&mut self) {
        self.last_response = None;
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn non_invite_absorbs_retransmissions_until_it_answers_then_repeats_the_answer() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(ServerKind::NonInvite, false);
        assert_eq!(tx.on_retransmission(), None, "Trying absorbs");
        assert!(tx.respond(200, b"200".to_vec(), t0));
        assert_eq!(tx.state(), State::Completed);
        assert_eq!(tx.on_retransmission(), Some(&b"200"[..]));
        assert!(!tx.respond(500, b"500".to_vec(), t0), "one final only");
        // Timer J = 64*T1 over UDP.
        assert_eq!(tx.poll_timeout(), Some(t0 + ms(32_000)));
        assert_eq!(tx.handle_timeout(t0 + ms(31_999)), None);
        assert_eq!(
            tx.handle_timeout(t0 + ms(32_000)),
            Some(TimerOutput::Terminated)
        );
        assert!(tx.is_terminated());
    }

    #[test]
    fn non_invite_over_tcp_ends_at_once() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(ServerKind::NonInvite, true);
        assert!(tx.respond(100, b"100".to_vec(), t0));
        assert_eq!(
            tx.on_retransmission(),
            Some(&b"100"[..]),
            "Proceeding resends"
        );
        assert!(tx.respond(401, b"401".to_vec(), t0));
        assert_eq!(tx.handle_timeout(t0), Some(TimerOutput::Terminated));
    }

    #[test]
    fn invite_failure_is_retransmitted_doubling_to_t2_until_acked() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(ServerKind::Invite, false);
        assert!(tx.respond(100, b"100".to_vec(), t0));
        assert!(tx.respond(486, b"486".to_vec(), t0));
        let mut now = t0;
        let mut intervals = vec![];
        for _ in 0..6 {
            let next = tx.poll_timeout().unwrap();
            intervals.push((next - now).as_millis());
            now = next;
            assert_eq!(
                tx.handle_timeout(now),
                Some(TimerOutput::Retransmit(b"486".to_vec()))
            );
        }
        assert_eq!(intervals, vec![500, 1000, 2000, 4000, 4000, 4000]);
        tx.on_ack(now);
        assert_eq!(tx.state(), State::Confirmed);
        assert_eq!(tx.on_retransmission(), None, "Confirmed absorbs");
        assert_eq!(tx.poll_timeout(), Some(now + T4), "Timer I");
        assert_eq!(tx.handle_timeout(now + T4), Some(TimerOutput::Terminated));
    }

    #[test]
    fn invite_failure_without_ack_times_out_after_timer_h() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(ServerKind::Invite, false);
        tx.respond(480, b"480".to_vec(), t0);
        let mut now = t0;
        let mut last = None;
        while let Some(next) = tx.poll_timeout() {
            now = next;
            last = tx.handle_timeout(now);
        }
        assert_eq!(last, Some(TimerOutput::AckTimeout));
        assert_eq!(now, t0 + 64 * T1);
    }

    #[test]
    fn invite_2xx_moves_to_accepted_and_absorbs_retransmitted_invites_for_timer_l() {
        let t0 = Instant::now();
        let mut tx = ServerTransaction::new(ServerKind::Invite, true);
        assert!(tx.respond(180, b"180".to_vec(), t0));
        assert!(tx.respond(200, b"200".to_vec(), t0));
        assert_eq!(tx.state(), State::Accepted);
        assert_eq!(tx.on_retransmission(), None);
        assert!(
            tx.respond(200, b"200".to_vec(), t0 + ms(500)),
            "2xx retransmits pass"
        );
        assert!(!tx.respond(486, b"486".to_vec(), t0 + ms(500)));
        assert_eq!(tx.poll_timeout(), Some(t0 + 64 * T1));
        assert_eq!(
            tx.handle_timeout(t0 + 64 * T1),
            Some(TimerOutput::Terminated)
        );
    }
}
