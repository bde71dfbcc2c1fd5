//! Money limits that hold under concurrency. A daily spend limit counted on ended calls alone
//! lets any number of calls start at once (a fraudster's twelve simultaneous calls on a limit
//! worth three). So an outbound call (an IP device's, an extension's call-through, a callback)
//! that will place a billable leg holds, from before its legs are placed until it is over, a
//! place among the account's (and the extension's) calls in progress and a reservation of its
//! first billing increment against the daily limits (a callback, billed for both its legs,
//! reserves both); a call is refused when either cap is full or when the day's spend plus what calls in progress
//! hold plus its own reservation would pass a limit.
//!
//! Held per edge, in memory: calls spread over several edges each see the others only once
//! their events reach the edge's routing view.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use domain::E164;
use domain::account::Account;
use domain::call::{Direction, EndCause, Path};
use domain::extension::Extension;
use domain::ids::{AccountId, ExtensionId};
use domain::rating::{BillableLeg, rate};
use projections::routing_view::RoutingView;

use super::plan::Plan;
use crate::answer::Answer;

/// Calls in progress allowed at once (config `security.max_calls_per_*`).
#[derive(Debug, Clone)]
pub struct CallLimits {
    pub per_account: usize,
    pub per_extension: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            per_account: 20,
            per_extension: 4,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Held {
    calls: usize,
    reserved_minor: i64,
}

#[derive(Default)]
struct State {
    accounts: HashMap<AccountId, Held>,
    extensions: HashMap<ExtensionId, Held>,
}

pub struct Spending {
    limits: CallLimits,
    state: Mutex<State>,
}

/// A call's place and reservation, given back when it is dropped (the call's task ended).
pub struct Hold {
    spending: Arc<Spending>,
    account: AccountId,
    extension: Option<ExtensionId>,
    reserved_minor: i64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = self.spending.state.lock().expect("spending");
        release(&mut state.accounts, self.account, self.reserved_minor);
        if let Some(e) = self.extension {
            release(&mut state.extensions, e, self.reserved_minor);
        }
    }
}

fn release<K: std::hash::Hash + Eq>(table: &mut HashMap<K, Held>, key: K, minor: i64) {
    if let Some(held) = table.get_mut(&key) {
        held.calls = held.calls.saturating_sub(1);
        held.reserved_minor -= minor;
        if held.calls == 0 {
            table.remove(&key);
        }
    }
}

impl Spending {
    pub fn new(limits: CallLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::default(),
        })
    }

    /// Takes `plan`'s place and reservation; `Ok(None)` for an inbound call (whose extension
    /// legs are left out once their extension spent its limit, by the plan) or one with no
    /// billable leg, `Err` with the refusal when a cap or limit is reached.
    pub fn hold(
        self: &Arc<Self>,
        view: &RoutingView,
        plan: &Plan,
        now: DateTime<Utc>,
    ) -> Result<Option<Hold>, (Answer, EndCause)> {
        if plan.direction != Direction::Outbound {
            return Ok(None);
        }
        let numbers: Vec<_> = plan
            .targets
            .iter()
            .filter_map(|t| Some((t.target.number()?, t.path == Path::OnNet)))
            .collect();
        if numbers.is_empty() {
            return Ok(None);
        }
        // One leg answers: the dearest first increment among them is what the call holds.
        let reserve = numbers
            .iter()
            .map(|(n, on_net)| first_increment(view, &plan.account, n, *on_net, now))
            .max()
            .unwrap_or(0);
        self.hold_for(view, &plan.account, plan.extension.as_ref(), reserve, now)
    }

    /// Takes a place among `account`'s (and `extension`'s) calls in progress for a call that
    /// reserves `reserve` minor units against their daily limits; `Ok(None)` for an account
    /// not yet known by id.
    pub fn hold_for(
        self: &Arc<Self>,
        view: &RoutingView,
        account: &Account,
        extension: Option<&Extension>,
        reserve: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Hold>, (Answer, EndCause)> {
        let Some(account_id) = account.id else {
            return Ok(None);
        };
        let extension = extension.and_then(|e| Some((e.id?, e)));
        let (account_spent, extension_spent) =
            view.spent_on_day_of(account_id, extension.map(|(id, _)| id), now);
        let mut state = self.state.lock().expect("spending");
        let held_account = state.accounts.get(&account_id).copied().unwrap_or_default();
        let held_extension = extension
            .and_then(|(id, _)| state.extensions.get(&id).copied())
            .unwrap_or_default();
        let too_many = held_account.calls >= self.limits.per_account
            || (extension.is_some() && held_extension.calls >= self.limits.per_extension);
        if too_many {
            tracing::warn!(
                target: "ringledger::security",
                account = %account_id, extension = ?extension.map(|(id, _)| id),
                "call refused: too many calls in progress"
            );
            return Err((
                Answer::with_reason(403, "Forbidden (too many calls in progress)"),
                EndCause::Rejected,
            ));
        }
        let over = |limit: Option<i64>, spent: i64, held: Held| {
            limit.is_some_and(|l| spent + held.reserved_minor + reserve.max(1) > l)
        };
        if over(account.daily_spend_limit_minor, account_spent, held_account)
            || extension.is_some_and(|(_, e)| {
                over(
                    e.settings.daily_limit_minor,
                    extension_spent,
                    held_extension,
                )
            })
        {
            tracing::warn!(
                target: "ringledger::security",
                account = %account_id, extension = ?extension.map(|(id, _)| id),
                "call refused: daily spend limit (with calls in progress) reached"
            );
            return Err((
                Answer::with_reason(403, "Forbidden (daily spend limit reached)"),
                EndCause::SpendLimit,
            ));
        }
        let held = state.accounts.entry(account_id).or_default();
        held.calls += 1;
        held.reserved_minor += reserve;
        if let Some((id, _)) = extension {
            let held = state.extensions.entry(id).or_default();
            held.calls += 1;
            held.reserved_minor += reserve;
        }
        Ok(Some(Hold {
            spending: self.clone(),
            account: account_id,
            extension: extension.map(|(id, _)| id),
            reserved_minor: reserve,
        }))
    }

    /// Calls held for `account` (for tests).
    pub fn calls_of(&self, account: AccountId) -> usize {
        let state = self.state.lock().expect("spending");
        state.accounts.get(&account).map_or(0, |h| h.calls)
    }
}

/// What the first billing increment of a call to `number` (routed on-net or not) costs
/// `account` by its tariff in force (0 when it has none, or the tariff does not rate it).
pub fn first_increment(
    view: &RoutingView,
    account: &Account,
    number: &E164,
    on_net: bool,
    now: DateTime<Utc>,
) -> i64 {
    let Some(version) = account.id.and_then(|id| view.tariff_in_force(id, now)) else {
        return 0;
    };
    let leg = BillableLeg {
        destination: number.clone(),
        on_net,
        answered_at: Some(now),
        ended_at: now + chrono::Duration::seconds(1),
    };
    rate(version, &leg).map_or(0, |r| r.charge.minor)
}
