//! The edge's view of routing, in memory: who holds each number, accounts and their ring
//! policy, devices with their HA1s and live contacts, extensions with their settings, and
//! pending call-ins. Built by folding the same domain events the aggregates fold, so it can
//! never disagree with the rules; answers lookups without touching a database.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::NaiveDate;
use domain::account::Account;
use domain::call::{Call, CallEvent, LegTarget, Path};
use domain::device::{ContactBinding, Device, DeviceEvent, DeviceStatus};
use domain::edge::EdgeEvent;
use domain::extension::{Extension, ExtensionStatus};
use domain::ids::{AccountId, CallId, DeviceId, ExtensionId, TariffId};
use domain::number::{Holder, NumberEvent, NumberRole};
use domain::rating::{BillableLeg, rate};
use domain::tariff::{Tariff, TariffVersion};
use domain::{Aggregate, E164, Event, Instant};
use infra::RecordedEvent;
use uuid::Uuid;

use crate::ApplyError;

/// A caller the edge keeps ringing while the user's phone calls in through the alternate
/// network.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCallIn {
    pub call_id: CallId,
    pub access_number: E164,
    pub expected_caller: E164,
    pub expires_at: Instant,
}

/// What the view knows of one edge process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeSeen {
    /// Its latest event's instant: when it was last known alive.
    pub last_alive: Instant,
    /// The version of that event in the edge's stream.
    pub version: u64,
    /// It stopped after draining: its calls still open are lost at once.
    pub stopped: bool,
}

/// An open call whose edge seems gone, and the last instant that edge was known alive.
#[derive(Debug, Clone, PartialEq)]
pub struct LostCall {
    pub call_id: CallId,
    /// The call's edge (none for calls recorded before calls named their edge).
    pub edge_id: Option<Uuid>,
    pub alive_until: Instant,
}

#[derive(Debug, Default, PartialEq)]
pub struct RoutingView {
    position: u64,
    accounts: HashMap<AccountId, Account>,
    devices: HashMap<DeviceId, Device>,
    devices_by_username: HashMap<String, DeviceId>,
    devices_by_account: HashMap<AccountId, Vec<DeviceId>>,
    extensions: HashMap<ExtensionId, Extension>,
    numbers: HashMap<E164, Holder>,
    live_calls: HashMap<CallId, Call>,
    /// Edge processes by id (one entry per start; a stopped edge's entry goes with its last
    /// open call).
    edges: HashMap<Uuid, EdgeSeen>,
    call_ins: HashMap<String, PendingCallIn>,
    /// Per account, its access numbers not mapped to a destination (the ones to call in to).
    call_in_numbers: HashMap<AccountId, BTreeSet<E164>>,
    /// Extensions with callback requests waiting.
    with_callbacks: HashSet<ExtensionId>,
    tariffs: HashMap<TariffId, Tariff>,
    /// What ended calls cost, by the UTC day they started: per account, and per extension
    /// for calls through one (rated as billing rates them; for spend limits).
    spent_by_account: HashMap<(AccountId, NaiveDate), i64>,
    spent_by_extension: HashMap<(ExtensionId, NaiveDate), i64>,
}

fn entity_id(event: &RecordedEvent) -> Result<Uuid, ApplyError> {
    let (_, id) = event
        .stream_id
        .split_once('-')
        .ok_or_else(|| ApplyError::new(event, "stream id has no entity id"))?;
    Uuid::parse_str(id).map_err(|e| ApplyError::new(event, format!("stream id: {e}")))
}

impl RoutingView {
    /// The position of the last event applied.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// What the view knows of the edge process `id`.
    pub fn edge(&self, id: Uuid) -> Option<EdgeSeen> {
        self.edges.get(&id).copied()
    }

    /// Open calls run by another edge than `me` that look lost at `now`, at most `limit`: the
    /// edge stopped, or neither it nor the call has shown a sign of life for `lost_after`
    /// (the edge writes `edge.alive` while it has calls, so a live edge's call never looks
    /// so). A call that names no edge (recorded before calls named theirs) is lost once its
    /// last step is `legacy_after` old. The view may lag the log: the caller confirms with
    /// the edge's stream before ending anything.
    pub fn lost_calls(
        &self,
        now: Instant,
        me: Uuid,
        lost_after: chrono::Duration,
        legacy_after: chrono::Duration,
        limit: usize,
    ) -> Vec<LostCall> {
        let mut lost = Vec::new();
        for (id, call) in &self.live_calls {
            if lost.len() >= limit {
                break;
            }
            let (Some(last_step), Some(_)) = (call.last_at, call.started_at) else {
                continue;
            };
            let alive_until = match call.edge_id {
                Some(edge) if edge == me => continue,
                Some(edge) => match self.edges.get(&edge) {
                    Some(seen) if seen.stopped => Some(seen.last_alive),
                    Some(seen) => {
                        let latest = seen.last_alive.max(last_step);
                        (now - latest > lost_after).then_some(seen.last_alive)
                    }
                    // Stopped and forgotten.
                    None => Some(last_step),
                },
                None => (now - last_step > legacy_after).then_some(last_step),
            };
            if let Some(alive_until) = alive_until {
                lost.push(LostCall {
                    call_id: *id,
                    edge_id: call.edge_id,
                    alive_until,
                });
            }
        }
        lost
    }

    /// Applies one event. Returns `false` for an event at or before the current position (a
    /// redelivery, e.g. from Kafka), which changes nothing.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<bool, ApplyError> {
        if event.global_position <= self.position {
            return Ok(false);
        }
        let decoded = event.decode().map_err(|e| ApplyError::new(event, e))?;
        match decoded {
            Event::Account(e) => {
                let id = AccountId(entity_id(event)?);
                self.accounts.entry(id).or_default().apply(&e);
            }
            Event::Device(e) => self.apply_device(DeviceId(entity_id(event)?), &e),
            Event::Extension(e) => {
                let id = ExtensionId(entity_id(event)?);
                let extension = self.extensions.entry(id).or_default();
                extension.apply(&e);
                if extension.callbacks.is_empty() {
                    self.with_callbacks.remove(&id);
                } else {
                    self.with_callbacks.insert(id);
                }
            }
            Event::Number(NumberEvent::Claimed {
                number,
                account_id,
                role,
            }) => {
                if matches!(role, NumberRole::Access { destination: None }) {
                    self.call_in_numbers
                        .entry(account_id)
                        .or_default()
                        .insert(number.clone());
                }
                self.numbers.insert(number, Holder { account_id, role });
            }
            Event::Number(NumberEvent::Released { number, .. }) => {
                if let Some(holder) = self.numbers.remove(&number)
                    && let Some(numbers) = self.call_in_numbers.get_mut(&holder.account_id)
                {
                    numbers.remove(&number);
                }
            }
            Event::Call(e) => self.apply_call(CallId(entity_id(event)?), &e),
            Event::Tariff(e) => {
                let id = TariffId(entity_id(event)?);
                self.tariffs.entry(id).or_default().apply(&e);
            }
            Event::Edge(e) => {
                let id = entity_id(event)?;
                let seen = EdgeSeen {
                    last_alive: e.at(),
                    version: event.stream_version,
                    stopped: matches!(e, EdgeEvent::Stopped { .. }),
                };
                if seen.stopped && !self.live_calls.values().any(|c| c.edge_id == Some(id)) {
                    self.edges.remove(&id);
                } else {
                    self.edges.insert(id, seen);
                }
            }
            // The bounds of a copied log route nothing.
            Event::Import(_) => {}
        }
        self.position = event.global_position;
        Ok(true)
    }

    fn apply_device(&mut self, id: DeviceId, e: &DeviceEvent) {
        let device = self.devices.entry(id).or_default();
        device.apply(e);
        match e {
            DeviceEvent::Provisioned {
                sip_username,
                account_id,
                ..
            } => {
                self.devices_by_username.insert(sip_username.clone(), id);
                self.devices_by_account
                    .entry(*account_id)
                    .or_default()
                    .push(id);
            }
            DeviceEvent::Removed {} => {
                let username = device.sip_username.clone();
                let account = device.account_id;
                self.devices.remove(&id);
                self.devices_by_username.remove(&username);
                if let Some(list) = account.and_then(|a| self.devices_by_account.get_mut(&a)) {
                    list.retain(|d| *d != id);
                }
            }
            _ => {}
        }
    }

    fn apply_call(&mut self, id: CallId, e: &CallEvent) {
        match e {
            CallEvent::Ended { .. } | CallEvent::Bridged { .. } => {
                self.call_ins.retain(|_, c| c.call_id != id);
            }
            CallEvent::CallInAwaited {
                token,
                access_number,
                expected_caller,
                expires_at,
                ..
            } => {
                self.call_ins.insert(
                    token.clone(),
                    PendingCallIn {
                        call_id: id,
                        access_number: access_number.clone(),
                        expected_caller: expected_caller.clone(),
                        expires_at: *expires_at,
                    },
                );
            }
            _ => {}
        }
        if matches!(e, CallEvent::Ended { .. }) {
            if let Some(mut call) = self.live_calls.remove(&id) {
                call.apply(e);
                self.add_spend(&call);
                if let Some(edge) = call.edge_id
                    && self.edges.get(&edge).is_some_and(|s| s.stopped)
                    && !self.live_calls.values().any(|c| c.edge_id == Some(edge))
                {
                    self.edges.remove(&edge);
                }
            }
        } else {
            self.live_calls.entry(id).or_default().apply(e);
        }
    }

    /// Adds an ended call's answered trunk legs, rated with the version in force when the call
    /// started of the tariff it started on (the account's tariff then; its tariff now for calls
    /// recorded before calls named theirs), to what its account spent that day, and each leg's to what its
    /// extension spent (the leg's own, for a leg that rang one; else the call's).
    fn add_spend(&mut self, call: &Call) {
        let (Some(account_id), Some(started_at)) = (call.account_id, call.started_at) else {
            return;
        };
        let billable: Vec<(Option<ExtensionId>, BillableLeg)> = call
            .legs
            .values()
            .filter_map(|leg| {
                let extension = match &leg.target {
                    LegTarget::Extension { extension_id, .. } => Some(*extension_id),
                    _ => call.extension_id,
                };
                let leg = BillableLeg {
                    destination: leg.target.number()?.clone(),
                    on_net: leg.path == Path::OnNet,
                    answered_at: Some(leg.answered_at?),
                    ended_at: leg.ended_at?,
                };
                Some((extension, leg))
            })
            .collect();
        // A call with no billable leg (phone to phone over data) needs no tariff.
        if billable.is_empty() {
            return;
        }
        let tariff_id = call
            .tariff_id
            .or_else(|| self.accounts.get(&account_id)?.tariff_id);
        let Some(version) = tariff_id
            .and_then(|t| self.tariffs.get(&t))
            .and_then(|t| t.in_force_at(started_at))
        else {
            return;
        };
        let charges: Vec<_> = billable
            .iter()
            .filter_map(|(extension, leg)| {
                Some((*extension, rate(version, leg).ok()?.charge.minor))
            })
            .filter(|(_, charge)| *charge != 0)
            .collect();
        let day = started_at.date_naive();
        for (extension, charge) in charges {
            *self.spent_by_account.entry((account_id, day)).or_default() += charge;
            if let Some(extension_id) = extension {
                *self
                    .spent_by_extension
                    .entry((extension_id, day))
                    .or_default() += charge;
            }
        }
    }

    /// The account's tariff version in force at `at`.
    pub fn tariff_in_force(&self, account: AccountId, at: Instant) -> Option<&TariffVersion> {
        let tariff_id = self.accounts.get(&account)?.tariff_id?;
        self.tariffs.get(&tariff_id)?.in_force_at(at)
    }

    /// What the account (and, given, the extension) spent on calls that started on `at`'s UTC
    /// day and have ended, in minor units.
    pub fn spent_on_day_of(
        &self,
        account: AccountId,
        extension: Option<ExtensionId>,
        at: Instant,
    ) -> (i64, i64) {
        let day = at.date_naive();
        (
            self.spent_by_account
                .get(&(account, day))
                .copied()
                .unwrap_or(0),
            extension
                .and_then(|e| self.spent_by_extension.get(&(e, day)).copied())
                .unwrap_or(0),
        )
    }

    pub fn holder(&self, number: &E164) -> Option<&Holder> {
        self.numbers.get(number)
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// The account whose main number this is.
    pub fn account_by_main_number(&self, number: &E164) -> Option<&Account> {
        match self.numbers.get(number)? {
            Holder {
                account_id,
                role: NumberRole::Main,
            } => self.accounts.get(account_id),
            _ => None,
        }
    }

    /// An active device by SIP username, for digest authentication.
    pub fn device_by_username(&self, username: &str) -> Option<(DeviceId, &Device)> {
        let id = self.devices_by_username.get(username)?;
        let device = self.devices.get(id)?;
        (device.status == DeviceStatus::Active).then_some((*id, device))
    }

    /// Every contact of the account's devices still bound at `now`.
    pub fn live_contacts(
        &self,
        account: AccountId,
        now: Instant,
    ) -> Vec<(DeviceId, &str, &ContactBinding)> {
        let Some(ids) = self.devices_by_account.get(&account) else {
            return vec![];
        };
        ids.iter()
            .filter_map(|id| Some((*id, self.devices.get(id)?)))
            .flat_map(|(id, d)| {
                d.live_contacts(now)
                    .map(move |(uri, c)| (id, uri.as_str(), c))
            })
            .collect()
    }

    /// Active devices holding a contact whose expiry is at or before `now` (for the sweeper
    /// that records them as expired).
    pub fn devices_with_expired_contacts(&self, now: Instant) -> Vec<DeviceId> {
        self.devices
            .iter()
            .filter(|(_, d)| {
                d.status == DeviceStatus::Active && d.contacts.values().any(|c| c.expires_at <= now)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The extension registered with this number, whatever its state.
    pub fn extension_by_number(&self, number: &E164) -> Option<(ExtensionId, &Extension)> {
        match self.numbers.get(number)? {
            Holder {
                role: NumberRole::Extension { extension_id },
                ..
            } => Some((*extension_id, self.extensions.get(extension_id)?)),
            _ => None,
        }
    }

    /// The destination a calling extension staged over data for its call-through: the live
    /// dial intent staged last by the extension registered with `caller`.
    pub fn dial_intent_of_caller(&self, caller: &E164, now: Instant) -> Option<(Uuid, &E164)> {
        let (_, extension) = self.extension_by_number(caller)?;
        extension
            .live_dial_intent(now)
            .map(|(id, intent)| (id, &intent.destination))
    }

    /// The account's verified extensions.
    pub fn serving_extensions(&self, account: AccountId) -> Vec<(ExtensionId, &Extension)> {
        let mut out = self.extensions_of(account);
        out.retain(|(_, e)| e.status == ExtensionStatus::Verified);
        out
    }

    /// Who holds an access number and, for a mapped one, the destination it calls.
    pub fn access_number(&self, number: &E164) -> Option<(AccountId, Option<&E164>)> {
        match self.numbers.get(number)? {
            Holder {
                account_id,
                role: NumberRole::Access { destination },
            } => Some((*account_id, destination.as_ref())),
            _ => None,
        }
    }

    /// The access number an extension of the account calls in to (alternate path (b)): one
    /// of its access numbers not mapped to a destination, the lowest if it has several.
    pub fn call_in_number(&self, account: AccountId) -> Option<&E164> {
        self.call_in_numbers.get(&account)?.first()
    }

    /// Callback requests waiting for an edge to place them, of verified extensions:
    /// (extension, request, destination).
    pub fn pending_callbacks(&self) -> Vec<(ExtensionId, Uuid, E164)> {
        let mut out: Vec<_> = self
            .with_callbacks
            .iter()
            .filter_map(|id| Some((*id, self.extensions.get(id)?)))
            .filter(|(_, e)| e.status == ExtensionStatus::Verified)
            .flat_map(|(id, e)| {
                e.callbacks
                    .iter()
                    .map(move |(request, destination)| (id, *request, destination.clone()))
            })
            .collect();
        out.sort_by_key(|(_, request, _)| *request);
        out
    }

    /// The account's devices that have not been removed.
    pub fn devices_of(&self, account: AccountId) -> Vec<(DeviceId, &Device)> {
        let mut out: Vec<_> = self
            .devices_by_account
            .get(&account)
            .into_iter()
            .flatten()
            .filter_map(|id| Some((*id, self.devices.get(id)?)))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// The account's extensions in every state, removed ones included.
    pub fn extensions_of(&self, account: AccountId) -> Vec<(ExtensionId, &Extension)> {
        let mut out: Vec<_> = self
            .extensions
            .iter()
            .filter(|(_, e)| e.account_id == Some(account))
            .map(|(id, e)| (*id, e))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    pub fn pending_call_in(&self, token: &str) -> Option<&PendingCallIn> {
        self.call_ins.get(token)
    }

    pub fn live_call(&self, id: CallId) -> Option<&Call> {
        self.live_calls.get(&id)
    }

    pub fn live_call_count(&self) -> usize {
        self.live_calls.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload;
    use chrono::TimeZone;

    fn t0() -> Instant {
        chrono::Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap()
    }

    #[test]
    fn a_workload_folds_into_a_consistent_view() {
        let events = workload::recorded(7, t0(), 20_000);
        let mut view = RoutingView::default();
        for e in &events {
            assert!(view.apply(e).unwrap());
        }
        assert_eq!(view.position(), events.len() as u64);
        // Every account is reachable through its main number, and its first device by name.
        assert!(view.accounts.len() >= 3);
        for account in view.accounts.values() {
            let main = account.main_number.as_ref().unwrap();
            assert_eq!(
                view.account_by_main_number(main).map(|a| a.id),
                Some(account.id)
            );
        }
        assert!(view.device_by_username("user0").is_some());
        // Every call of the workload ends, so none is live.
        assert_eq!(view.live_call_count(), 0);
        // Redelivered events change nothing.
        assert!(!view.apply(&events[10]).unwrap());
    }

    #[test]
    fn contacts_are_live_until_they_expire() {
        let events = workload::recorded(3, t0(), 2_000);
        let mut view = RoutingView::default();
        for e in &events {
            view.apply(e).unwrap();
        }
        let (_, device) = view.device_by_username("user0").unwrap();
        let account = device.account_id.unwrap();
        let last = events.last().unwrap().occurred_at;
        let live_now = view.live_contacts(account, last).len();
        assert!(live_now > 0);
        assert_eq!(
            view.live_contacts(account, last + chrono::Duration::hours(2))
                .len(),
            0
        );
    }

    #[test]
    fn an_event_that_does_not_decode_names_itself() {
        let mut events = workload::recorded(1, t0(), 10);
        events[4].payload = serde_json::json!({"nonsense": true});
        let mut view = RoutingView::default();
        let err = events
            .iter()
            .map(|e| view.apply(e))
            .find_map(Result::err)
            .unwrap();
        assert_eq!(err.position, 5);
        assert!(err.to_string().contains(&events[4].event_type), "{err}");
        assert_eq!(view.position(), 4, "the view stops before the bad event");
    }

    fn rec(position: u64, stream_id: &str, event: &impl domain::DomainEvent) -> RecordedEvent {
        let e = event.encode();
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: stream_id.to_owned(),
            stream_version: 1,
            global_position: position,
            event_type: e.event_type.to_owned(),
            schema_version: e.schema_version,
            occurred_at: t0(),
            recorded_at: t0(),
            correlation_id: Uuid::nil(),
            causation_id: None,
            actor: "test".into(),
            payload: e.payload,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn call_in_numbers_and_waiting_callbacks_are_kept_as_the_log_changes() {
        use domain::extension::{ExtensionEvent, ExtensionKind};
        let n = |s: &str| E164::parse(s).unwrap();
        let account = AccountId(Uuid::from_u128(1));
        let ext = ExtensionId(Uuid::from_u128(2));
        let access = |position: u64, number: &str, destination: Option<E164>| {
            rec(
                position,
                &format!("number-{number}"),
                &NumberEvent::Claimed {
                    number: n(number),
                    account_id: account,
                    role: NumberRole::Access { destination },
                },
            )
        };
        let mut view = RoutingView::default();
        for e in [
            access(1, "+442030000009", None),
            access(2, "+442030000005", None),
            access(3, "+442030000001", Some(n("+33142685300"))),
        ] {
            view.apply(&e).unwrap();
        }
        assert_eq!(view.call_in_number(account), Some(&n("+442030000005")));
        let released = NumberEvent::Released {
            number: n("+442030000005"),
            account_id: account,
        };
        view.apply(&rec(4, "number-+442030000005", &released))
            .unwrap();
        assert_eq!(view.call_in_number(account), Some(&n("+442030000009")));

        let request = Uuid::from_u128(7);
        for (position, e) in (5..).zip([
            ExtensionEvent::Requested {
                extension_id: ext,
                account_id: account,
                number: n("+447700000001"),
                native_provider: "O2".into(),
                kind: ExtensionKind::Mobile,
            },
            ExtensionEvent::Verified {},
            ExtensionEvent::CallbackRequested {
                request_id: request,
                destination: n("+442079460000"),
            },
        ]) {
            view.apply(&rec(position, &ext.stream_id(), &e)).unwrap();
        }
        assert_eq!(
            view.pending_callbacks(),
            vec![(ext, request, n("+442079460000"))]
        );
        let taken = ExtensionEvent::CallbackCancelled {
            request_id: request,
            reason: "placed".into(),
        };
        view.apply(&rec(8, &ext.stream_id(), &taken)).unwrap();
        assert!(view.pending_callbacks().is_empty());
    }

    #[test]
    fn calls_look_lost_only_when_their_edge_stopped_or_fell_silent() {
        use domain::call::{Direction, Origin, Path};
        let secs = chrono::Duration::seconds;
        let started = |call: u128, edge: Option<Uuid>| CallEvent::Started {
            call_id: CallId(Uuid::from_u128(call)),
            direction: Direction::Inbound,
            from: "+14155550100".into(),
            to: "+442000000001".into(),
            origin: Origin::Pstn {
                trunk: "carrier".into(),
            },
            path: Path::Data,
            account_id: AccountId(Uuid::from_u128(1)),
            extension_id: None,
            tariff_id: None,
            edge_id: edge,
            at: t0(),
        };
        let [me, alive, silent, stopped] = [10, 11, 12, 13].map(Uuid::from_u128);
        let mut view = RoutingView::default();
        let mut position = 0;
        let mut apply =
            |view: &mut RoutingView, stream: String, event: &dyn Fn() -> RecordedEvent| {
                position += 1;
                let mut e = event();
                e.global_position = position;
                e.stream_id = stream;
                view.apply(&e).unwrap();
            };
        for edge in [me, alive, silent, stopped] {
            let e = EdgeEvent::Started {
                listen: "127.0.0.1:5060".into(),
                at: t0(),
            };
            apply(&mut view, domain::edge::stream_id(edge), &|| rec(0, "", &e));
        }
        for (call, edge) in [
            (1, Some(me)),
            (2, Some(alive)),
            (3, Some(silent)),
            (4, Some(stopped)),
            (5, None),
        ] {
            let e = started(call, edge);
            apply(
                &mut view,
                CallId(Uuid::from_u128(call)).stream_id(),
                &|| rec(0, "", &e),
            );
        }
        let heartbeat = EdgeEvent::Alive {
            at: t0() + secs(50),
        };
        apply(&mut view, domain::edge::stream_id(alive), &|| {
            rec(0, "", &heartbeat)
        });
        let stop = EdgeEvent::Stopped { at: t0() + secs(5) };
        apply(&mut view, domain::edge::stream_id(stopped), &|| {
            rec(0, "", &stop)
        });

        let lost = |now| {
            let mut calls: Vec<_> = view
                .lost_calls(now, me, secs(30), secs(3600), 100)
                .into_iter()
                .map(|l| (l.call_id.0.as_u128(), l.alive_until))
                .collect();
            calls.sort();
            calls
        };
        // A stopped edge's call at once; the rest are not silent long enough yet.
        assert_eq!(lost(t0() + secs(20)), vec![(4, t0() + secs(5))]);
        // Past 30 s of silence the silent edge's call too (at its last sign of life); the
        // edge still beating, and this edge's own call, never.
        assert_eq!(lost(t0() + secs(70)), vec![(3, t0()), (4, t0() + secs(5))]);
        // A call naming no edge only once older than the longest call.
        assert_eq!(lost(t0() + secs(3601)).len(), 4);
        assert!(!lost(t0() + secs(3601)).iter().any(|(c, _)| *c == 1));
    }

    #[test]
    fn lookups_the_edge_needs() {
        use domain::account::AccountEvent;
        use domain::call::{Direction, EndCause, Origin, Path, Side};
        use domain::extension::{ExtensionEvent, ExtensionKind};
        use domain::ids::TariffId;

        let n = |s: &str| E164::parse(s).unwrap();
        let account = AccountId(Uuid::from_u128(1));
        let ext = ExtensionId(Uuid::from_u128(2));
        let call = CallId(Uuid::from_u128(3));
        let claimed = |number: &str, role| NumberEvent::Claimed {
            number: n(number),
            account_id: account,
            role,
        };
        let events = [
            rec(
                1,
                "number-+442000000001",
                &claimed("+442000000001", NumberRole::Main),
            ),
            rec(
                2,
                &account.stream_id(),
                &AccountEvent::Opened {
                    account_id: account,
                    name: "Ada".into(),
                    main_number: n("+442000000001"),
                    tariff_id: TariffId(Uuid::from_u128(9)),
                    currency: domain::Currency::parse("GBP").unwrap(),
                    max_extensions: 5,
                },
            ),
            rec(
                3,
                "number-+447700000001",
                &claimed("+447700000001", NumberRole::Extension { extension_id: ext }),
            ),
            rec(
                4,
                &ext.stream_id(),
                &ExtensionEvent::Requested {
                    extension_id: ext,
                    account_id: account,
                    number: n("+447700000001"),
                    native_provider: "O2".into(),
                    kind: ExtensionKind::Mobile,
                },
            ),
            rec(5, &ext.stream_id(), &ExtensionEvent::Verified {}),
            rec(
                6,
                "number-+442030000000",
                &claimed(
                    "+442030000000",
                    NumberRole::Access {
                        destination: Some(n("+33142685300")),
                    },
                ),
            ),
            rec(
                7,
                &call.stream_id(),
                &CallEvent::Started {
                    edge_id: None,
                    call_id: call,
                    direction: Direction::Inbound,
                    from: "+14155550100".into(),
                    to: "+442000000001".into(),
                    origin: Origin::Pstn {
                        trunk: "carrier".into(),
                    },
                    path: Path::CallIn,
                    account_id: account,
                    extension_id: None,
                    tariff_id: None,
                    at: t0(),
                },
            ),
            rec(
                8,
                &call.stream_id(),
                &CallEvent::CallInAwaited {
                    token: "tok123".into(),
                    access_number: n("+442030000000"),
                    expected_caller: n("+447700000001"),
                    expires_at: t0() + chrono::Duration::seconds(30),
                    at: t0(),
                },
            ),
        ];
        let mut view = RoutingView::default();
        for e in &events {
            view.apply(e).unwrap();
        }
        assert_eq!(
            view.account_by_main_number(&n("+442000000001"))
                .and_then(|a| a.id),
            Some(account)
        );
        let (found, e) = view.extension_by_number(&n("+447700000001")).unwrap();
        assert_eq!((found, e.status), (ext, ExtensionStatus::Verified));
        assert_eq!(view.serving_extensions(account).len(), 1);
        assert_eq!(
            view.access_number(&n("+442030000000")),
            Some((account, Some(&n("+33142685300"))))
        );
        assert_eq!(
            view.pending_call_in("tok123").map(|c| c.call_id),
            Some(call)
        );
        assert!(view.live_call(call).is_some());

        view.apply(&rec(
            9,
            &call.stream_id(),
            &CallEvent::Ended {
                cause: EndCause::CallerCancelled,
                side: Side::Caller,
                at: t0(),
            },
        ))
        .unwrap();
        assert!(
            view.pending_call_in("tok123").is_none(),
            "the caller hung up: nothing to bridge"
        );
        assert!(view.live_call(call).is_none());
        view.apply(&rec(
            10,
            "number-+442030000000",
            &NumberEvent::Released {
                number: n("+442030000000"),
                account_id: account,
            },
        ))
        .unwrap();
        assert!(view.holder(&n("+442030000000")).is_none());

        // A dial intent staged over data names the call-through's destination until it expires.
        let intent = Uuid::from_u128(11);
        view.apply(&rec(
            11,
            &ext.stream_id(),
            &ExtensionEvent::DialIntentStaged {
                intent_id: intent,
                destination: n("+442079460000"),
                expires_at: t0() + chrono::Duration::seconds(60),
            },
        ))
        .unwrap();
        let caller = n("+447700000001");
        assert_eq!(
            view.dial_intent_of_caller(&caller, t0()),
            Some((intent, &n("+442079460000")))
        );
        assert_eq!(
            view.dial_intent_of_caller(&caller, t0() + chrono::Duration::seconds(60)),
            None
        );
        assert_eq!(view.dial_intent_of_caller(&n("+442000000001"), t0()), None);
    }
}
