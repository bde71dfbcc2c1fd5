//! Billing: one rated row per billable leg — every answered leg that reached a number through
//! a trunk — priced by the domain's rating under the version in force when the call started
//! of the tariff the call started on (`call.started` names it), and always billed to the call's main account, naming the extension it came
//! through. A leg that cannot be rated (no tariff version, no rate) is kept with its reason in
//! `rating_error` and no charge, for a billing team to see, rather than stopping billing.

use async_trait::async_trait;
use domain::account::AccountEvent;
use domain::call::{CallEvent, LegTarget};
use domain::rating::{BillableLeg, RatedCharge, rate};
use domain::tariff::{Tariff, TariffEvent, TariffVersion};
use domain::{E164, Event, Instant};
use infra::RecordedEvent;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row, query};

use crate::runner::{BatchError, Decoded, Projection, ProjectionError};
use crate::sql::{entity_id, json, name, ts};
use crate::writes::{Placeholders, Value, Writes, tuples};

pub struct Billing;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS billing_tariffs (tariff_id TEXT NOT NULL, version BIGINT NOT NULL, \
     body TEXT NOT NULL, PRIMARY KEY (tariff_id, version))",
    "CREATE TABLE IF NOT EXISTS billing_accounts (account_id TEXT PRIMARY KEY, tariff_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS billing_open_calls (call_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, \
     extension_id TEXT, started_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS billing_open_legs (leg_id TEXT PRIMARY KEY, call_id TEXT NOT NULL, \
     destination TEXT NOT NULL, path TEXT NOT NULL, answered_at TEXT)",
    // The extension an open leg rings (alternate call-out, call-in): the leg is usage through
    // it even when the call itself came to the main number.
    "CREATE TABLE IF NOT EXISTS billing_leg_extensions (leg_id TEXT PRIMARY KEY, call_id TEXT NOT NULL, \
     extension_id TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS billing_open_legs_by_call ON billing_open_legs (call_id)",
    // The tariff an open call started on (`call.started` v2): its legs are rated on it even
    // when the account moves to another tariff during the call.
    "CREATE TABLE IF NOT EXISTS billing_call_tariffs (call_id TEXT PRIMARY KEY, tariff_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rated_legs (leg_id TEXT PRIMARY KEY, call_id TEXT NOT NULL, \
     account_id TEXT NOT NULL, extension_id TEXT, path TEXT NOT NULL, destination TEXT NOT NULL, \
     call_started_at TEXT NOT NULL, answered_at TEXT NOT NULL, ended_at TEXT NOT NULL, \
     duration_secs BIGINT, billable_secs BIGINT, tariff_id TEXT NOT NULL, tariff_version BIGINT, \
     prefix TEXT, per_minute_millis BIGINT, connect_fee_minor BIGINT, charge_minor BIGINT, \
     currency TEXT, rating_error TEXT)",
    "CREATE INDEX IF NOT EXISTS rated_legs_by_account ON rated_legs (account_id, call_started_at, leg_id)",
    "CREATE INDEX IF NOT EXISTS rated_legs_by_tariff ON rated_legs (tariff_id, call_started_at)",
    "CREATE TABLE IF NOT EXISTS billing_usage (account_id TEXT NOT NULL, day TEXT NOT NULL, \
     extension_id TEXT NOT NULL, path TEXT NOT NULL, currency TEXT NOT NULL, legs BIGINT NOT NULL, \
     billable_secs BIGINT NOT NULL, charge_minor BIGINT NOT NULL, PRIMARY KEY (account_id, day, extension_id, path))",
    "CREATE TABLE IF NOT EXISTS billing_adjustments (tariff_id TEXT NOT NULL, tariff_version BIGINT NOT NULL, \
     account_id TEXT NOT NULL, legs BIGINT NOT NULL, old_charge_minor BIGINT NOT NULL, \
     new_charge_minor BIGINT NOT NULL, PRIMARY KEY (tariff_id, tariff_version, account_id))",
];

const TABLES: &[(&str, &str)] = &[
    ("billing_tariffs", "tariff_id, version"),
    ("billing_accounts", "account_id"),
    ("billing_open_calls", "call_id"),
    ("billing_open_legs", "leg_id"),
    ("billing_leg_extensions", "leg_id"),
    ("billing_call_tariffs", "call_id"),
    ("rated_legs", "leg_id"),
    ("billing_usage", "account_id, day, extension_id, path"),
    (
        "billing_adjustments",
        "tariff_id, tariff_version, account_id",
    ),
];

fn parse_ts(s: &str) -> Result<Instant, ProjectionError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| ProjectionError::Apply(format!("bad stored time {s:?}: {e}")))
}

/// The price of one leg (carried on `path`, as stored) under `tariff` (all versions known),
/// or why it has none.
fn rate_leg(
    tariff: &Tariff,
    tariff_id: &str,
    call_started_at: &str,
    path: &str,
    destination: &str,
    answered_at: &str,
    ended_at: Instant,
) -> Result<Result<RatedCharge, String>, ProjectionError> {
    let billable = BillableLeg {
        destination: E164::parse(destination).map_err(|e| ProjectionError::Apply(e.to_string()))?,
        on_net: path == "on_net",
        answered_at: Some(parse_ts(answered_at)?),
        ended_at,
    };
    Ok(match tariff.in_force_at(parse_ts(call_started_at)?) {
        Some(v) => rate(v, &billable).map_err(|e| e.to_string()),
        None => Err(format!(
            "tariff {tariff_id} has no version in force at {call_started_at}"
        )),
    })
}

/// A leg's rating columns, in table order from `duration_secs` to `rating_error`.
fn rating_values(r: Option<&RatedCharge>, error: Option<String>) -> [Value; 9] {
    [
        r.map(|r| r.duration_secs as i64).into(),
        r.map(|r| r.billable_secs as i64).into(),
        r.map(|r| i64::from(r.tariff_version)).into(),
        r.map(|r| r.prefix.clone()).into(),
        r.map(|r| r.per_minute_millis).into(),
        r.map(|r| r.connect_fee_minor).into(),
        r.map(|r| r.charge.minor).into(),
        r.map(|r| r.charge.currency.to_string()).into(),
        error.into(),
    ]
}

const RATING: &[&str] = &[
    "duration_secs",
    "billable_secs",
    "tariff_version",
    "prefix",
    "per_minute_millis",
    "connect_fee_minor",
    "charge_minor",
    "currency",
    "rating_error",
];

const RATED_LEG: &[&str] = &[
    "leg_id",
    "call_id",
    "account_id",
    "extension_id",
    "path",
    "destination",
    "call_started_at",
    "answered_at",
    "ended_at",
    "tariff_id",
    "duration_secs",
    "billable_secs",
    "tariff_version",
    "prefix",
    "per_minute_millis",
    "connect_fee_minor",
    "charge_minor",
    "currency",
    "rating_error",
];

const OPEN_CALLS: &str = "billing_open_calls";
const OPEN_LEGS: &str = "billing_open_legs";
const LEG_EXTENSIONS: &str = "billing_leg_extensions";
const CALL_TARIFFS: &str = "billing_call_tariffs";
const CALL_ID: &[&str] = &["call_id"];

/// A call still open, as `billing_open_calls` holds it.
#[derive(Debug, Clone)]
struct CallHead {
    account_id: String,
    extension_id: Option<String>,
    started_at: String,
    /// The tariff the call started on; `None` for calls of `call.started` v1, rated on the
    /// account's tariff when they end.
    tariff_id: Option<String>,
}

/// A leg to a number (`billing_open_legs`).
#[derive(Debug, Clone)]
struct OpenLeg {
    destination: String,
    path: String,
    answered_at: Option<String>,
}

/// What billing holds of one call while it is open: its rows in the three open tables.
#[derive(Debug, Default)]
struct OpenCall {
    head: Option<CallHead>,
    legs: BTreeMap<String, OpenLeg>,
    /// leg → the extension it rings (`billing_leg_extensions`).
    leg_extensions: BTreeMap<String, String>,
    /// Its rows were in the tables when the batch began (they are replaced at its end).
    stored: bool,
}

/// (account, day, extension or "", path) → (currency, legs, billable seconds, charge).
type Usage = BTreeMap<(String, String, String, String), (String, i64, i64, i64)>;

/// One batch of billing: the open calls it touches and the accounts they bill, loaded once at
/// its start; their state kept in memory while its events are applied; its rows written
/// together at its end.
#[derive(Default)]
struct BillingBatch {
    calls: HashMap<String, OpenCall>,
    /// account → its tariff.
    accounts: HashMap<String, String>,
    tariffs: HashMap<String, Tariff>,
    usage: Usage,
    writes: Writes,
}

/// Ids per `IN (VALUES …)` list.
const IDS_PER_QUERY: usize = 1000;

/// `SELECT {columns} FROM {table} WHERE {column} IN ids`, in chunks.
async fn select_in(
    conn: &mut AnyConnection,
    columns: &str,
    table: &str,
    column: &str,
    ids: &[String],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut rows = Vec::new();
    let placeholders = Placeholders::of(conn);
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE {column} IN (VALUES {})",
            tuples(chunk.len(), 1, placeholders)
        );
        let mut q = query(AssertSqlSafe(sql)).persistent(false);
        for id in chunk {
            q = q.bind(id.clone());
        }
        rows.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

/// Adds (or with `sign` -1, removes) one rated leg to the daily usage.
fn add_usage(
    usage: &mut Usage,
    account_id: &str,
    call_started_at: &str,
    extension_id: Option<&str>,
    path: &str,
    charge: &RatedCharge,
    sign: i64,
) {
    let key = (
        account_id.to_owned(),
        call_started_at
            .get(..10)
            .unwrap_or(call_started_at)
            .to_owned(),
        extension_id.unwrap_or("").to_owned(),
        path.to_owned(),
    );
    let entry = usage
        .entry(key)
        .or_insert_with(|| (charge.charge.currency.to_string(), 0, 0, 0));
    entry.1 += sign;
    entry.2 += sign * charge.billable_secs as i64;
    entry.3 += sign * charge.charge.minor;
}

impl BillingBatch {
    /// Loads the stored open state of every call the batch's events concern, and the tariff
    /// of every account those calls bill.
    async fn load(conn: &mut AnyConnection, events: &[Decoded<'_>]) -> Result<Self, sqlx::Error> {
        let mut batch = Self::default();
        let mut call_ids = BTreeSet::new();
        let mut account_ids = BTreeSet::new();
        for d in events {
            if let Event::Call(e) = &d.event {
                if let Ok(id) = entity_id(&d.recorded.stream_id) {
                    call_ids.insert(id);
                }
                if let CallEvent::Started { account_id, .. } = e {
                    account_ids.insert(account_id.to_string());
                }
            }
        }
        let call_ids: Vec<String> = call_ids.into_iter().collect();
        // Each open call with the tariff it started on (none for `call.started` v1).
        let heads = select_in(
            conn,
            "call_id, account_id, extension_id, started_at, tariff_id",
            "billing_open_calls LEFT JOIN billing_call_tariffs USING (call_id)",
            "call_id",
            &call_ids,
        )
        .await?;
        for r in heads {
            let head = CallHead {
                account_id: r.try_get(1)?,
                extension_id: r.try_get(2)?,
                started_at: r.try_get(3)?,
                tariff_id: r.try_get(4)?,
            };
            account_ids.insert(head.account_id.clone());
            let call = batch.calls.entry(r.try_get(0)?).or_default();
            call.head = Some(head);
            call.stored = true;
        }
        let legs = select_in(
            conn,
            "leg_id, call_id, destination, path, answered_at",
            OPEN_LEGS,
            "call_id",
            &call_ids,
        )
        .await?;
        for r in legs {
            let call = batch.calls.entry(r.try_get(1)?).or_default();
            call.stored = true;
            call.legs.insert(
                r.try_get(0)?,
                OpenLeg {
                    destination: r.try_get(2)?,
                    path: r.try_get(3)?,
                    answered_at: r.try_get(4)?,
                },
            );
        }
        let extensions = select_in(
            conn,
            "leg_id, call_id, extension_id",
            LEG_EXTENSIONS,
            "call_id",
            &call_ids,
        )
        .await?;
        for r in extensions {
            let call = batch.calls.entry(r.try_get(1)?).or_default();
            call.stored = true;
            call.leg_extensions.insert(r.try_get(0)?, r.try_get(2)?);
        }
        let account_ids: Vec<String> = account_ids.into_iter().collect();
        for r in select_in(
            conn,
            "account_id, tariff_id",
            "billing_accounts",
            "account_id",
            &account_ids,
        )
        .await?
        {
            batch.accounts.insert(r.try_get(0)?, r.try_get(1)?);
        }
        Ok(batch)
    }

    /// Makes sure every version of `tariff_id` is held (read once per batch).
    async fn load_tariff(
        &mut self,
        conn: &mut AnyConnection,
        tariff_id: &str,
    ) -> Result<(), ProjectionError> {
        if self.tariffs.contains_key(tariff_id) {
            return Ok(());
        }
        let rows = query("SELECT body FROM billing_tariffs WHERE tariff_id = $1 ORDER BY version")
            .bind(tariff_id)
            .fetch_all(&mut *conn)
            .await?;
        let mut t = Tariff::default();
        for r in rows {
            let body: String = r.try_get(0)?;
            let v: TariffVersion = serde_json::from_str(&body)
                .map_err(|e| ProjectionError::Apply(format!("stored tariff version: {e}")))?;
            t.versions.push(v);
        }
        self.tariffs.insert(tariff_id.to_owned(), t);
        Ok(())
    }

    /// Sends the writes held so far, the usage with them.
    async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for ((account_id, day, extension_id, path), (currency, legs, secs, charge)) in
            std::mem::take(&mut self.usage)
        {
            let entity = format!("{account_id} {day} {extension_id} {path}");
            self.writes.add(
                "billing_usage",
                &["account_id", "day", "extension_id", "path"],
                &["currency"],
                &["legs", "billable_secs", "charge_minor"],
                &entity,
                vec![
                    account_id.into(),
                    day.into(),
                    extension_id.into(),
                    path.into(),
                    currency.into(),
                    legs.into(),
                    secs.into(),
                    charge.into(),
                ],
            );
        }
        self.writes.flush(conn).await
    }

    /// Writes the open calls' state as it stands at the end of the batch, then everything.
    async fn finish(mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        let mut calls: Vec<_> = std::mem::take(&mut self.calls).into_iter().collect();
        calls.sort_by(|a, b| a.0.cmp(&b.0));
        let w = &mut self.writes;
        for (call_id, call) in calls {
            if call.stored {
                for table in [OPEN_CALLS, OPEN_LEGS, LEG_EXTENSIONS, CALL_TARIFFS] {
                    w.delete(table, CALL_ID, &call_id, vec![call_id.clone().into()]);
                }
            }
            if let Some(tariff_id) = call.head.as_ref().and_then(|h| h.tariff_id.clone()) {
                w.insert(
                    CALL_TARIFFS,
                    &["call_id", "tariff_id"],
                    &call_id,
                    vec![call_id.clone().into(), tariff_id.into()],
                );
            }
            if let Some(h) = call.head {
                w.insert(
                    OPEN_CALLS,
                    &["call_id", "account_id", "extension_id", "started_at"],
                    &call_id,
                    vec![
                        call_id.clone().into(),
                        h.account_id.into(),
                        h.extension_id.into(),
                        h.started_at.into(),
                    ],
                );
            }
            for (leg_id, l) in call.legs {
                w.insert(
                    OPEN_LEGS,
                    &["leg_id", "call_id", "destination", "path", "answered_at"],
                    &call_id,
                    vec![
                        leg_id.into(),
                        call_id.clone().into(),
                        l.destination.into(),
                        l.path.into(),
                        l.answered_at.into(),
                    ],
                );
            }
            for (leg_id, extension_id) in call.leg_extensions {
                w.insert(
                    LEG_EXTENSIONS,
                    &["leg_id", "call_id", "extension_id"],
                    &call_id,
                    vec![leg_id.into(), call_id.clone().into(), extension_id.into()],
                );
            }
        }
        self.flush(conn).await
    }

    /// Rates the answered open legs of a call that ended at `ended_at` (or, with `only`, that
    /// one leg, which left the call then), and forgets them (and the ended call). A call
    /// billing never saw start (or whose account it does not know) is left.
    async fn close_legs(
        &mut self,
        conn: &mut AnyConnection,
        call_id: &str,
        only: Option<&str>,
        ended_at: Instant,
    ) -> Result<(), ProjectionError> {
        let Some(call) = self.calls.get(call_id) else {
            return Ok(());
        };
        let Some(head) = call.head.clone() else {
            return Ok(());
        };
        let Some(tariff_id) = head
            .tariff_id
            .clone()
            .or_else(|| self.accounts.get(&head.account_id).cloned())
        else {
            return Ok(());
        };
        let closing = |leg_id: &str| only.is_none_or(|o| o == leg_id);
        if call
            .legs
            .iter()
            .any(|(id, l)| closing(id) && l.answered_at.is_some())
        {
            self.load_tariff(conn, &tariff_id).await?;
        }
        let call = self.calls.get_mut(call_id).expect("looked up above");
        let (legs, mut extensions) = match only {
            None => {
                call.head = None;
                (
                    std::mem::take(&mut call.legs),
                    std::mem::take(&mut call.leg_extensions),
                )
            }
            Some(leg_id) => (
                call.legs.remove_entry(leg_id).into_iter().collect(),
                call.leg_extensions
                    .remove_entry(leg_id)
                    .into_iter()
                    .collect(),
            ),
        };
        for (leg_id, leg) in legs {
            let Some(answered_at) = leg.answered_at else {
                continue;
            };
            let extension_id = extensions
                .remove(&leg_id)
                .or_else(|| head.extension_id.clone());
            let rated = rate_leg(
                &self.tariffs[&tariff_id],
                &tariff_id,
                &head.started_at,
                &leg.path,
                &leg.destination,
                &answered_at,
                ended_at,
            )?;
            if let Ok(r) = &rated {
                add_usage(
                    &mut self.usage,
                    &head.account_id,
                    &head.started_at,
                    extension_id.as_deref(),
                    &leg.path,
                    r,
                    1,
                );
            }
            let (ok, error) = match rated {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            };
            let mut values: Vec<Value> = vec![
                leg_id.clone().into(),
                call_id.into(),
                head.account_id.clone().into(),
                extension_id.into(),
                leg.path.into(),
                leg.destination.into(),
                head.started_at.clone().into(),
                answered_at.into(),
                ts(ended_at).into(),
                tariff_id.clone().into(),
            ];
            values.extend(rating_values(ok.as_ref(), error));
            self.writes.insert("rated_legs", RATED_LEG, &leg_id, values);
        }
        Ok(())
    }

    /// A tariff version published after calls it covers (a correction, or a late
    /// publication): re-rates the legs already rated under this tariff that started at or
    /// after its start, adjusts daily usage, and records per account how the total changed.
    async fn rerate(
        &mut self,
        conn: &mut AnyConnection,
        tariff_id: &str,
        version: &TariffVersion,
    ) -> Result<(), ProjectionError> {
        // The rated legs read here include this batch's, and the new version is stored.
        self.flush(conn).await?;
        self.tariffs.remove(tariff_id);
        let legs = query(
            "SELECT leg_id, account_id, extension_id, path, destination, call_started_at, answered_at, \
             ended_at, duration_secs, billable_secs, tariff_version, prefix, per_minute_millis, \
             connect_fee_minor, charge_minor, currency FROM rated_legs \
             WHERE tariff_id = $1 AND call_started_at >= $2 ORDER BY leg_id",
        )
        .bind(tariff_id)
        .bind(ts(version.effective_from))
        .fetch_all(&mut *conn)
        .await?;
        if legs.is_empty() {
            return Ok(());
        }
        self.load_tariff(conn, tariff_id).await?;
        let tariff = &self.tariffs[tariff_id];
        // account -> (legs changed, old total, new total)
        let mut changes: BTreeMap<String, (i64, i64, i64)> = Default::default();
        for leg in legs {
            let leg_id: String = leg.try_get(0)?;
            let account_id: String = leg.try_get(1)?;
            let extension_id: Option<String> = leg.try_get(2)?;
            let path: String = leg.try_get(3)?;
            let destination: String = leg.try_get(4)?;
            let started_at: String = leg.try_get(5)?;
            let answered_at: String = leg.try_get(6)?;
            let ended_at: String = leg.try_get(7)?;
            let old = match (
                leg.try_get::<Option<i64>, _>(10)?,
                leg.try_get::<Option<i64>, _>(14)?,
            ) {
                (Some(v), Some(charge)) => {
                    let currency: Option<String> = leg.try_get(15)?;
                    let currency = currency
                        .and_then(|c| domain::Currency::parse(&c).ok())
                        .ok_or_else(|| {
                            ProjectionError::Apply("rated leg without currency".into())
                        })?;
                    Some(RatedCharge {
                        tariff_version: v as u32,
                        prefix: leg.try_get::<Option<String>, _>(11)?.unwrap_or_default(),
                        duration_secs: leg.try_get::<Option<i64>, _>(8)?.unwrap_or(0) as u64,
                        billable_secs: leg.try_get::<Option<i64>, _>(9)?.unwrap_or(0) as u64,
                        per_minute_millis: leg.try_get::<Option<i64>, _>(12)?.unwrap_or(0),
                        connect_fee_minor: leg.try_get::<Option<i64>, _>(13)?.unwrap_or(0),
                        charge: domain::Money::new(charge, currency),
                    })
                }
                _ => None,
            };
            let new = rate_leg(
                tariff,
                tariff_id,
                &started_at,
                &path,
                &destination,
                &answered_at,
                parse_ts(&ended_at)?,
            )?
            .ok();
            if new == old {
                continue;
            }
            for (charge, sign) in [(&old, -1), (&new, 1)] {
                if let Some(c) = charge {
                    add_usage(
                        &mut self.usage,
                        &account_id,
                        &started_at,
                        extension_id.as_deref(),
                        &path,
                        c,
                        sign,
                    );
                }
            }
            let entry = changes.entry(account_id).or_default();
            entry.0 += 1;
            entry.1 += old.as_ref().map_or(0, |o| o.charge.minor);
            entry.2 += new.as_ref().map_or(0, |n| n.charge.minor);
            let error = new
                .is_none()
                .then(|| "no rate after tariff correction".to_owned());
            let mut values: Vec<Value> = vec![leg_id.clone().into()];
            values.extend(rating_values(new.as_ref(), error));
            self.writes
                .update("rated_legs", &["leg_id"], RATING, &leg_id, values);
        }
        for (account_id, (legs, old, new)) in changes {
            let entity = account_id.clone();
            self.writes.insert(
                "billing_adjustments",
                &[
                    "tariff_id",
                    "tariff_version",
                    "account_id",
                    "legs",
                    "old_charge_minor",
                    "new_charge_minor",
                ],
                &entity,
                vec![
                    tariff_id.into(),
                    i64::from(version.version).into(),
                    account_id.into(),
                    legs.into(),
                    old.into(),
                    new.into(),
                ],
            );
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        decoded: &Event,
    ) -> Result<(), ProjectionError> {
        match decoded {
            Event::Tariff(TariffEvent::Published {
                tariff_id, version, ..
            }) => {
                let t = tariff_id.to_string();
                self.writes.insert(
                    "billing_tariffs",
                    &["tariff_id", "version", "body"],
                    &t,
                    vec![
                        t.clone().into(),
                        i64::from(version.version).into(),
                        json(version).into(),
                    ],
                );
                self.rerate(conn, &t, version).await?;
            }
            Event::Account(AccountEvent::Opened {
                account_id,
                tariff_id,
                ..
            }) => {
                let a = account_id.to_string();
                self.writes.insert(
                    "billing_accounts",
                    &["account_id", "tariff_id"],
                    &a,
                    vec![a.clone().into(), tariff_id.to_string().into()],
                );
                self.accounts.insert(a, tariff_id.to_string());
            }
            Event::Account(AccountEvent::TariffChanged { tariff_id }) => {
                let a = entity_id(&event.stream_id)?;
                self.writes.update(
                    "billing_accounts",
                    &["account_id"],
                    &["tariff_id"],
                    &a,
                    vec![a.clone().into(), tariff_id.to_string().into()],
                );
                self.accounts.insert(a, tariff_id.to_string());
            }
            Event::Call(e) => {
                let call_id = entity_id(&event.stream_id)?;
                match e {
                    CallEvent::Started {
                        account_id,
                        extension_id,
                        tariff_id,
                        at,
                        ..
                    } => {
                        self.calls.entry(call_id).or_default().head = Some(CallHead {
                            account_id: account_id.to_string(),
                            extension_id: extension_id.map(|x| x.to_string()),
                            started_at: ts(*at),
                            tariff_id: tariff_id.map(|t| t.to_string()),
                        });
                    }
                    CallEvent::LegStarted {
                        leg_id,
                        target,
                        path,
                        ..
                    } => {
                        let call = self.calls.entry(call_id).or_default();
                        if let Some(number) = target.number() {
                            call.legs.insert(
                                leg_id.to_string(),
                                OpenLeg {
                                    destination: number.to_string(),
                                    path: name(path),
                                    answered_at: None,
                                },
                            );
                        }
                        if let LegTarget::Extension { extension_id, .. } = target {
                            call.leg_extensions
                                .insert(leg_id.to_string(), extension_id.to_string());
                        }
                    }
                    CallEvent::LegAnswered { leg_id, at } => {
                        if let Some(leg) = self
                            .calls
                            .get_mut(&call_id)
                            .and_then(|c| c.legs.get_mut(&leg_id.to_string()))
                        {
                            leg.answered_at = Some(ts(*at));
                        }
                    }
                    CallEvent::LegFailed { leg_id, .. } => {
                        if let Some(call) = self.calls.get_mut(&call_id) {
                            call.legs.remove(&leg_id.to_string());
                            call.leg_extensions.remove(&leg_id.to_string());
                        }
                    }
                    CallEvent::LegEnded { leg_id, at } => {
                        let leg_id = leg_id.to_string();
                        self.close_legs(conn, &call_id, Some(&leg_id), *at).await?
                    }
                    CallEvent::Ended { at, .. } => {
                        self.close_legs(conn, &call_id, None, *at).await?
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for Billing {
    fn name(&self) -> &'static str {
        "billing"
    }

    fn schema(&self) -> &'static [&'static str] {
        SCHEMA
    }

    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        TABLES
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("tariff.")
            || event_type.starts_with("account.")
            || event_type.starts_with("call.")
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[Decoded<'_>],
    ) -> Result<(), BatchError> {
        let mut batch = BillingBatch::load(conn, events).await?;
        for d in events {
            batch
                .apply(conn, d.recorded, &d.event)
                .await
                .map_err(|e| BatchError::at(d.index, e))?;
        }
        batch.finish(conn).await?;
        Ok(())
    }
}

/// One line of an invoice: the usage of one extension (or the account's own devices) over one
/// path in the period.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvoiceLine {
    pub extension_id: Option<String>,
    pub path: String,
    pub legs: i64,
    pub billable_secs: i64,
    pub charge_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Invoice {
    pub account_id: String,
    /// `YYYY-MM`, UTC calendar month of the calls' start.
    pub period: String,
    pub currency: Option<String>,
    pub lines: Vec<InvoiceLine>,
    pub total_minor: i64,
}

/// The invoice of `account_id` for calendar month `period` (`YYYY-MM`), from daily usage.
pub async fn invoice(
    db: &crate::db::ProjectionDb,
    account_id: &str,
    period: &str,
) -> Result<Invoice, sqlx::Error> {
    let rows = query(
        "SELECT extension_id, path, MIN(currency), CAST(SUM(legs) AS BIGINT), \
         CAST(SUM(billable_secs) AS BIGINT), CAST(SUM(charge_minor) AS BIGINT) FROM billing_usage \
         WHERE account_id = $1 AND day >= $2 AND day <= $3 GROUP BY extension_id, path \
         ORDER BY extension_id, path",
    )
    .bind(account_id)
    .bind(format!("{period}-01"))
    .bind(format!("{period}-31"))
    .fetch_all(&db.pool)
    .await?;
    let mut currency = None;
    let mut lines = Vec::with_capacity(rows.len());
    for r in rows {
        let extension: String = r.try_get(0)?;
        currency = r.try_get(2)?;
        lines.push(InvoiceLine {
            extension_id: (!extension.is_empty()).then_some(extension),
            path: r.try_get(1)?,
            legs: r.try_get(3)?,
            billable_secs: r.try_get(4)?,
            charge_minor: r.try_get(5)?,
        });
    }
    Ok(Invoice {
        account_id: account_id.to_owned(),
        period: period.to_owned(),
        currency,
        total_minor: lines.iter().map(|l| l.charge_minor).sum(),
        lines,
    })
}
