//! Session timers (RFC 4028) and session refreshes. The edge is the answering side of two
//! kinds of dialog: the caller's, and a call-in's. When such a side asks for a session timer
//! (`Supported: timer` and `Session-Expires` on its INVITE), the edge's 2xx takes it with the
//! side as the refresher (`refresher=uac`, `Require: timer`), and a side that then stops
//! refreshing — a re-INVITE with the session unchanged, before the interval is out — has its
//! call hung up (`session_expired`). An interval under `MIN_SE` is refused 422 with `Min-SE`.
//! The legs the edge places offer a session timer (`Supported: timer`, `Session-Expires:
//! 1800`) when they carry an offer. A callee whose 2xx sets one with itself as refresher
//! (`refresher=uas`) is held to it the same way; one that makes the edge the refresher
//! (`refresher=uac`) gets a re-INVITE with the session unchanged every half interval, and the
//! call ends `session_expired` when a refresh meets 408 or 481 or goes unanswered, or none
//! succeeds before the interval is out (RFC 4028 §10). A refresh crossing the callee's own
//! re-INVITE (491) is tried again shortly; the callee's re-INVITE meanwhile gets 491.
//! Refreshes from either side are answered in `modify.rs`.

use std::time::{Duration, Instant};

use domain::call::EndCause;

use super::sessions::{EdgeRefresh, SessionTimer};
use super::{Call, Phase};
use crate::answer::Answer;
use crate::b2bua::call::interface::{Context, Output, Peer};
use crate::b2bua::call::rules::outcome_status;
use crate::message::RawMessage;
use crate::outgoing::{ClientKey, Outcome};

/// The shortest session interval the edge takes (RFC 4028 §5: never below 90 s).
pub(crate) const MIN_SE: Duration = Duration::from_secs(90);

/// The longest session interval the edge takes: a side asking for more is given this (RFC
/// 4028 §9 lets the answering side lower it). A day, the longest a call may be set to last.
pub(crate) const MAX_SE: Duration = Duration::from_secs(86_400);

/// The session interval a request asks for, if it supports session timers (`Supported` or
/// `Require: timer`) and asks for one.
fn requested_interval(request: &RawMessage) -> Option<Duration> {
    let supported = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Supported") || n.eq_ignore_ascii_case("Require"))
        .flat_map(|(_, v)| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("timer"));
    let value = request.header("Session-Expires")?;
    let secs = value.split(';').next()?.trim().parse::<u64>().ok()?;
    supported.then(|| Duration::from_secs(secs).min(MAX_SE))
}

/// The session interval the edge offers on the legs it places (RFC 4028 §4's recommended
/// 30 minutes).
pub(crate) const LEG_SESSION_INTERVAL: Duration = Duration::from_secs(1800);

/// How long a refresh that crossed the callee's own re-INVITE (491) waits before it is tried
/// again (RFC 3261 §14.1: 2.1 to 4 s for the dialog's initiator).
const GLARE_RETRY: Duration = Duration::from_secs(3);

/// The session timer a callee's 2xx sets: its interval, and whether the callee refreshes
/// (`refresher=uas`) or the edge, the leg's UAC, does (`uac`, or none named).
fn callee_session_timer(response: &RawMessage) -> Option<(Duration, bool)> {
    let value = response.header("Session-Expires")?;
    let mut parts = value.split(';');
    let secs = parts.next()?.trim().parse::<u64>().ok()?;
    let by_callee = parts.any(|p| p.trim().eq_ignore_ascii_case("refresher=uas"));
    Some((Duration::from_secs(secs).clamp(MIN_SE, MAX_SE), by_callee))
}

/// When a session of `interval` refreshed at `now` is given up: RFC 4028 §10's
/// `interval - min(32 s, interval / 3)`, the margin leaving a late refresh time to arrive.
fn expiry(now: Instant, interval: Duration) -> Instant {
    now + interval - (interval / 3).min(Duration::from_secs(32))
}

impl Call {
    /// 422 for a request asking for a session interval below `MIN_SE`.
    pub(super) fn interval_too_small(request: &RawMessage) -> Option<Answer> {
        let interval = requested_interval(request)?;
        (interval < MIN_SE).then(|| {
            Answer::with_reason(422, "Session Interval Too Small").header(rsip::Header::Other(
                "Min-SE".into(),
                MIN_SE.as_secs().to_string(),
            ))
        })
    }

    /// The 2xx to `request` from `side`, with the session timer it asked for taken (and armed
    /// from `now`); a side that asks for none has none (a refresh without one turns it off).
    pub(super) fn with_session_timer(
        &mut self,
        answer: Answer,
        side: Peer,
        request: &RawMessage,
        now: Instant,
    ) -> Answer {
        self.session_timers.retain(|t| t.side != side);
        let Some(interval) = requested_interval(request) else {
            return answer;
        };
        self.session_timers.push(SessionTimer {
            side,
            interval,
            expires: expiry(now, interval),
        });
        answer
            .header(rsip::Header::Other(
                "Session-Expires".into(),
                format!("{};refresher=uac", interval.as_secs()),
            ))
            .header(rsip::Header::Other("Require".into(), "timer".into()))
    }

    /// The session timer the winning callee's 2xx (or the 2xx to a refresh) sets, from `now`:
    /// the callee's refreshes expected, or the edge's own scheduled; none if it sets none.
    pub(super) fn take_callee_session_timer(
        &mut self,
        leg: usize,
        response: &RawMessage,
        now: Instant,
    ) {
        self.session_timers.retain(|t| t.side != Peer::Leg(leg));
        self.refresher = None;
        match callee_session_timer(response) {
            Some((interval, true)) => self.session_timers.push(SessionTimer {
                side: Peer::Leg(leg),
                interval,
                expires: expiry(now, interval),
            }),
            Some((interval, false)) => {
                self.refresher = Some(EdgeRefresh {
                    leg,
                    interval,
                    next: Some(now + interval / 2),
                    expires: expiry(now, interval),
                    pending: None,
                })
            }
            None => {}
        }
    }

    /// When the first side's session timer runs out, while the call is answered.
    pub(super) fn session_expires_at(&self) -> Option<Instant> {
        let Phase::Answered(_) = self.phase else {
            return None;
        };
        let edge = self.refresher.as_ref().map(|r| r.expires);
        self.session_timers
            .iter()
            .map(|t| t.expires)
            .chain(edge)
            .min()
    }

    /// When the edge next refreshes a callee's session, while the call is answered.
    pub(super) fn refresh_at(&self) -> Option<Instant> {
        let Phase::Answered(_) = self.phase else {
            return None;
        };
        self.refresher.as_ref()?.next
    }

    /// Sends the callee the refresh that is due: a re-INVITE with the session the edge gave it.
    pub(super) fn refresh_callee(&mut self, now: Instant, ctx: &dyn Context) {
        if self.refresh_at().is_none_or(|at| now < at) {
            return;
        }
        let passing = self.passing.is_some() || self.reoffer.is_some();
        let Some(refresher) = self.refresher.as_mut() else {
            return;
        };
        if passing {
            // A change of session is on its way (it refreshes the session if it succeeds):
            // one request at a time.
            refresher.next = Some(now + GLARE_RETRY);
            return;
        }
        let leg = refresher.leg;
        let (_, sent) = self.sessions.of(Peer::Leg(leg));
        let local = ctx.local();
        let extra = [
            ("Contact", format!("<sip:ringledger@{local}>")),
            ("Content-Type", "application/sdp".to_string()),
            ("Supported", "timer".to_string()),
            (
                "Session-Expires",
                format!("{};refresher=uac", refresher.interval.as_secs()),
            ),
        ];
        let Some((bytes, branch)) = self.legs[leg].request(local, "INVITE", None, &extra, sent)
        else {
            return;
        };
        refresher.next = None;
        refresher.pending = Some(branch.clone());
        self.out.push(Output::Request {
            to: Peer::Leg(leg),
            method: "INVITE",
            branch,
            bytes,
        });
    }

    /// Whether `key` is a refresh the edge sent (pending, or answered 2xx).
    pub(super) fn is_refresh(&self, key: &ClientKey) -> bool {
        self.refresher
            .as_ref()
            .is_some_and(|r| r.pending.as_ref() == Some(&key.branch))
    }

    /// What became of a refresh the edge sent to leg `leg`.
    pub(super) fn on_refresh_outcome(
        &mut self,
        leg: usize,
        key: &ClientKey,
        outcome: Outcome,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let Some(refresher) = self.refresher.as_mut() else {
            return;
        };
        let status = outcome_status(&outcome);
        match (status, outcome) {
            (..=199, _) => {}
            (200..=299, Outcome::Response(response)) => {
                self.ack_reinvite(Peer::Leg(leg), &key.branch, &response, ctx);
                self.take_callee_session_timer(leg, &response, now);
            }
            (491, _) => {
                refresher.pending = None;
                refresher.next = Some(now + GLARE_RETRY);
            }
            (408 | 481, _) => {
                // The callee no longer has the session (RFC 4028 §10).
                tracing::info!(call = %self.id, status, "session refresh failed; hanging up");
                if let Phase::Answered(winner) = self.phase {
                    self.hang_up(winner, EndCause::SessionExpired, now, ctx);
                }
            }
            _ => {
                // Not refreshed: tried again halfway to the expiry while there is time.
                refresher.pending = None;
                let left = refresher.expires.saturating_duration_since(now);
                refresher.next = (left > GLARE_RETRY * 4).then(|| now + left / 2);
            }
        }
    }

    /// The session-timer headers a request the edge sends `to` carries, so that the timer
    /// negotiated with that side goes on (RFC 4028 §7.4): with the edge as refresher, or
    /// with that side as refresher (the UAS of the edge's request); none without a timer.
    pub(super) fn timer_headers_toward(&self, to: Peer) -> Vec<(&'static str, String)> {
        let edge_refreshes = self
            .refresher
            .as_ref()
            .filter(|r| to == Peer::Leg(r.leg))
            .map(|r| (r.interval, "uac"));
        let side_refreshes = self
            .session_timers
            .iter()
            .find(|t| t.side == to)
            .map(|t| (t.interval, "uas"));
        match edge_refreshes.or(side_refreshes) {
            Some((interval, refresher)) => vec![
                ("Supported", "timer".to_string()),
                (
                    "Session-Expires",
                    format!("{};refresher={refresher}", interval.as_secs()),
                ),
            ],
            None => vec![],
        }
    }

    /// A change of session `to` took (its 2xx `response` at `now`) refreshes its session: the
    /// timer it names from now on (RFC 4028 §7.2; none named: none any more).
    pub(super) fn refreshed_by_change(&mut self, to: Peer, response: &RawMessage, now: Instant) {
        match to {
            Peer::Leg(leg) => self.take_callee_session_timer(leg, response, now),
            Peer::Caller => {
                if let Some(timer) = self.session_timers.iter_mut().find(|t| t.side == to) {
                    timer.expires = expiry(now, timer.interval);
                }
            }
        }
    }

    /// Whether the edge's refresh to `side` is pending (a re-INVITE from it now is glare).
    pub(super) fn refresh_pending(&self, side: Peer) -> bool {
        self.refresher
            .as_ref()
            .is_some_and(|r| r.pending.is_some() && side == Peer::Leg(r.leg))
    }

    /// Hangs the call up if a side's session timer ran out; true if it did.
    pub(super) fn end_expired_session(&mut self, now: Instant, ctx: &dyn Context) -> bool {
        let (Phase::Answered(winner), Some(at)) = (self.phase, self.session_expires_at()) else {
            return false;
        };
        if now < at {
            return false;
        }
        let timer = self.session_timers.iter().find(|t| t.expires <= now);
        tracing::info!(call = %self.id, side = ?timer.map(|t| t.side), interval = ?timer.map(|t| t.interval), "session not refreshed; hanging up");
        self.hang_up(winner, EndCause::SessionExpired, now, ctx);
        true
    }
}
