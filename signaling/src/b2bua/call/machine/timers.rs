//! The call's clocks: the ring timeout, legs placed after a delay, the call-in wait, the
//! repeats of an unacknowledged 2xx, media silence and the longest a call may last. The call
//! asks to be woken at the earliest (`next_wake`) and acts on what is due (`timers`).

use std::time::{Duration, Instant};

use domain::call::{EndCause, LegFailure, Side};

use super::{Call, Phase};
use crate::answer::Answer;
use crate::b2bua::call::change;
use crate::b2bua::call::interface::{CALL_IN_RECHECK, Context, LINGER};

impl Call {
    /// When the call next wants to be woken, given how long its relay has been silent
    /// (`media_idle`).
    pub(super) fn next_wake(&self, now: Instant, media_idle: Option<Duration>) -> Option<Instant> {
        // The ring timeout counts once a leg can ring (after the menu, for a keyed call).
        let ring =
            (self.phase == Phase::Setup && !self.at_access_menu()).then_some(self.ring_deadline);
        let menu = self.menu_wake();
        let unacked = self.unacked.iter().map(|u| u.wake()).min();
        let linger = self.over_at.map(|t| t + LINGER);
        let media = self.media_left(now, media_idle).map(|left| now + left);
        let delayed = self.pending.iter().map(|(at, _)| *at).min();
        // While a call-in is awaited, the extension is looked at every second: one removed
        // meanwhile is waited for no longer.
        // A call-in keying its token is not bound by the wait.
        let keying = self.keyed_leg().is_some();
        let call_in = self.call_in.as_ref().map(|a| match keying {
            true => now + CALL_IN_RECHECK,
            false => a.until.min(now + CALL_IN_RECHECK),
        });
        let longest = self.max_duration_at();
        let session = self.session_expires_at();
        let refresh = self.refresh_at();
        [
            ring, unacked, linger, media, delayed, call_in, longest, session, refresh, menu,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// How much longer an answered call's media may stay silent (zero: it has been silent
    /// for the relay's timeout), counted from the answer (or the end of a hold) at the
    /// earliest: a leg that rang long before answering has had no media to relay.
    pub(super) fn media_left(
        &self,
        now: Instant,
        media_idle: Option<Duration>,
    ) -> Option<Duration> {
        let Phase::Answered(_) = self.phase else {
            return None;
        };
        let media = self.media.as_ref()?;
        if self.flows.contains(&false) {
            // On hold one way or both: silence is expected (the longest call duration and
            // the session timers still bound the call).
            return None;
        }
        let since = now.saturating_duration_since(self.media_since?);
        let silent = media_idle?.min(since);
        Some(media.timeout.saturating_sub(silent))
    }

    /// When an answered call reaches the longest a call may last.
    pub(super) fn max_duration_at(&self) -> Option<Instant> {
        let Phase::Answered(_) = self.phase else {
            return None;
        };
        Some(self.answered_at? + self.settings.max_duration)
    }

    pub(super) fn timers(&mut self, now: Instant, media_idle: Option<Duration>, ctx: &dyn Context) {
        if self.awaiting.is_some() {
            return;
        }
        self.menu_timers(now, ctx);
        if self.awaiting.is_some() {
            return;
        }
        if self.phase != Phase::Setup {
            self.pending.clear();
        } else if self.pending.iter().any(|(at, _)| *at <= now) {
            let (due, later) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition::<Vec<_>, _>(|(at, _)| *at <= now);
            self.pending = later;
            self.to_place
                .extend(due.into_iter().map(|(_, target)| target));
            self.pump(now, ctx);
            if self.awaiting.is_some() {
                // The rest once the legs are placed (the task wakes again at once).
                return;
            }
        }
        if self.phase == Phase::Setup
            && let Some(awaited) = &self.call_in
        {
            // A call-in keying its token has the menu's own limits (and the ring timeout).
            let until = awaited.until;
            let keying = self.keyed_leg().is_some();
            let plan = &awaited.plan;
            let serving = ctx
                .extension_now(plan.extension_id, &plan.number)
                .is_some_and(|e| e.status == domain::extension::ExtensionStatus::Verified);
            if !serving {
                tracing::info!(call = %self.id, "the extension awaited to call in no longer serves");
                return self.give_up_call_in(EndCause::Rejected, now, ctx);
            } else if now >= until && !keying {
                tracing::info!(call = %self.id, "the extension did not call in; calling it out");
                return self.give_up_call_in(EndCause::CallInTimeout, now, ctx);
            }
        }
        if let (Phase::Answered(winner), Some(longest)) = (self.phase, self.max_duration_at())
            && now >= longest
        {
            tracing::info!(call = %self.id, "the call reached the longest a call may last; hanging up");
            return self.hang_up(winner, EndCause::MaxDuration, now, ctx);
        }
        if self.end_expired_session(now, ctx) {
            return;
        }
        self.refresh_callee(now, ctx);
        if let (Phase::Answered(winner), Some(Duration::ZERO)) =
            (self.phase, self.media_left(now, media_idle))
        {
            tracing::info!(call = %self.id, "media stopped; hanging up");
            return self.hang_up(winner, EndCause::MediaTimeout, now, ctx);
        }
        if self.phase == Phase::Setup && !self.at_access_menu() && now >= self.ring_deadline {
            self.cancel_legs(LegFailure::Cancelled);
            self.end_setup(
                Answer::with_reason(480, "Temporarily Unavailable (no answer)"),
                Some((EndCause::NoAnswer, Side::System)),
                now,
            );
            return;
        }
        if let Some(leg) = self.keyed_leg()
            && self
                .unacked
                .iter()
                .any(|u| u.leg == Some(leg) && now >= u.give_up)
        {
            tracing::info!(call = %self.id, "no ACK for the call-in's 2xx; calling the extension out");
            self.drop_keyed_call_in(LegFailure::Timeout);
            return self.give_up_call_in(EndCause::CallInTimeout, now, ctx);
        }
        if self.unacked.iter().any(|u| now >= u.give_up) {
            // A 2xx never confirmed: hang up both sides.
            self.unacked.clear();
            tracing::info!(call = %self.id, "no ACK for the 2xx; hanging up");
            if let Phase::Answered(winner) = self.phase {
                self.bye_leg(winner, ctx);
            }
            self.bye_caller(ctx);
            self.finish(EndCause::Failed, Side::System, now);
            return;
        }
        let due = change::repeats(&mut self.unacked, now);
        self.out.extend(due);
    }
}
