//! Session timers (RFC 4028) and session refreshes. The edge is the answering side of two
//! kinds of dialog: the caller's, and a call-in's. When such a side asks for a session timer
//! (`Supported: timer` and `Session-Expires` on its INVITE), the edge's 2xx takes it with the
//! side as the refresher (`refresher=uac`, `Require: timer`), and a side that then stops
//! refreshing — a re-INVITE with the session unchanged, before the interval is out — has its
//! call hung up (`session_expired`). An interval under `MIN_SE` is refused 422 with `Min-SE`.
//! A callee whose 2xx sets a session timer with itself as refresher (`refresher=uas`) is held
//! to it the same way; the edge never asks a callee to be refreshed by it.
//! A re-INVITE from either side of an answered call that keeps the session is answered 200
//! with the session description the edge gave that side; one that changes it is refused 488,
//! which leaves the call as it was (RFC 3261 §14.2).

use std::time::{Duration, Instant};

use domain::call::EndCause;
use rsip::headers::UntypedHeader;

use super::sessions::SessionTimer;
use super::{Call, Phase};
use crate::answer::Answer;
use crate::b2bua::call::interface::{Context, Output, Peer};
use crate::message::RawMessage;
use crate::transaction::TransactionKey;

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

/// The session interval a callee's 2xx sets with itself as the refresher (`refresher=uas`,
/// which is all it may choose: the edge's INVITEs do not say `Supported: timer`).
fn callee_refreshes(response: &RawMessage) -> Option<Duration> {
    let value = response.header("Session-Expires")?;
    let mut parts = value.split(';');
    let secs = parts.next()?.trim().parse::<u64>().ok()?;
    let by_callee = parts.any(|p| p.trim().eq_ignore_ascii_case("refresher=uas"));
    by_callee.then(|| Duration::from_secs(secs).clamp(MIN_SE, MAX_SE))
}

/// When a session of `interval` refreshed at `now` is given up: RFC 4028 §10's
/// `interval - min(32 s, interval / 3)`, the margin leaving a late refresh time to arrive.
fn expiry(now: Instant, interval: Duration) -> Instant {
    now + interval - (interval / 3).min(Duration::from_secs(32))
}

/// The session's identity and version from a session description's `o=` line.
fn session_version(sdp: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(sdp).ok()?;
    let origin = text.lines().find_map(|l| l.strip_prefix("o="))?;
    let mut fields = origin.split_whitespace().skip(1);
    Some((fields.next()?.to_string(), fields.next()?.to_string()))
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

    /// A callee whose 2xx made itself the refresher: its refreshes are expected from `now`.
    pub(super) fn expect_callee_refreshes(
        &mut self,
        leg: usize,
        response: &RawMessage,
        now: Instant,
    ) {
        if let Some(interval) = callee_refreshes(response) {
            self.session_timers.push(SessionTimer {
                side: Peer::Leg(leg),
                interval,
                expires: expiry(now, interval),
            });
        }
    }

    /// When the first side's session timer runs out, while the call is answered.
    pub(super) fn session_expires_at(&self) -> Option<Instant> {
        let Phase::Answered(_) = self.phase else {
            return None;
        };
        self.session_timers.iter().map(|t| t.expires).min()
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

    /// A re-INVITE inside one of the call's dialogs.
    pub(super) fn on_reinvite(
        &mut self,
        key: TransactionKey,
        request: RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) {
        let side = match self.phase {
            Phase::Answered(_) if self.is_from_caller(&request) => Some(Peer::Caller),
            Phase::Answered(winner) if self.leg_of(&request) == Some(winner) => {
                Some(Peer::Leg(winner))
            }
            _ => None,
        };
        let answer = match side {
            // RFC 3261 §14.2: a second INVITE before the first is answered.
            None if self.phase == Phase::Setup => {
                let wait = uuid::Uuid::new_v4().as_bytes()[0] % 11;
                Answer::status(500).header(rsip::Header::RetryAfter(
                    rsip::headers::RetryAfter::new(wait.to_string()),
                ))
            }
            None => Answer::status(481),
            // RFC 3264 §4 / RFC 3261 §14.2: a new offer while the edge's own offer (a 2xx to
            // a request without one) waits for its answer in the ACK.
            Some(side) if self.offer_awaits_answer(side) => {
                Answer::with_reason(491, "Request Pending")
            }
            Some(side) => match self.refresh(side, &request, now, ctx) {
                Ok(answer) => {
                    self.superseded_2xx(side);
                    let leg = super::side_leg(side);
                    self.out.push(Output::Respond {
                        key: key.clone(),
                        request: request.clone(),
                        answer: answer.clone(),
                        tag: String::new(),
                    });
                    return self.await_ack_of(leg, key, request, String::new(), answer, now);
                }
                Err(refusal) => refusal,
            },
        };
        self.out.push(Output::Respond {
            key,
            request,
            answer,
            tag: String::new(),
        });
    }

    /// The 2xx to a re-INVITE from `side` that keeps the session (its timer refreshed), or why
    /// it is refused.
    fn refresh(
        &mut self,
        side: Peer,
        request: &RawMessage,
        now: Instant,
        ctx: &dyn Context,
    ) -> Result<Answer, Answer> {
        let (heard, sent) = self.sessions.of(side).clone();
        if !request.body.is_empty() && session_version(&request.body) != session_version(&heard) {
            return Err(Answer::with_reason(
                488,
                "Not Acceptable Here (session changes not supported)",
            ));
        }
        if let Some(too_small) = Self::interval_too_small(request) {
            return Err(too_small);
        }
        let answer = self
            .contact(Answer::status(200), ctx)
            .body("application/sdp", sent);
        Ok(self.with_session_timer(answer, side, request, now))
    }
}
