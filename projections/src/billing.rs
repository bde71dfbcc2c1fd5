//! Billing: one rated row per billable leg — every answered leg that reached a number through
//! a trunk — priced by the domain's rating under the tariff version in force when the call
//! started, and always billed to the call's main account, naming the extension it came
//! through. A leg that cannot be rated (no tariff version, no rate) is kept with its reason in
//! `rating_error` and no charge, for a billing team to see, rather than stopping billing.

use async_trait::async_trait;
use domain::account::AccountEvent;
use domain::call::{CallEvent, LegTarget};
use domain::rating::{BillableLeg, RatedCharge, rate};
use domain::tariff::{Tariff, TariffEvent, TariffVersion};
use domain::{E164, Event, Instant};
use infra::RecordedEvent;
use sqlx::{AnyConnection, Row, query};

use crate::runner::{Projection, ProjectionError};
use crate::sql::{entity_id, json, name, ts};

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

async fn tariff(conn: &mut AnyConnection, tariff_id: &str) -> Result<Tariff, ProjectionError> {
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
    Ok(t)
}

/// The price of one leg under `tariff` (all versions known), or why it has none.
fn rate_leg(
    tariff: &Tariff,
    tariff_id: &str,
    call_started_at: &str,
    destination: &str,
    answered_at: &str,
    ended_at: Instant,
) -> Result<Result<RatedCharge, String>, ProjectionError> {
    let billable = BillableLeg {
        destination: E164::parse(destination).map_err(|e| ProjectionError::Apply(e.to_string()))?,
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

/// Binds a leg's rating columns, in table order from `duration_secs` to `rating_error`.
fn bind_rating<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    r: Option<&RatedCharge>,
    error: Option<String>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(r.map(|r| r.duration_secs as i64))
        .bind(r.map(|r| r.billable_secs as i64))
        .bind(r.map(|r| i64::from(r.tariff_version)))
        .bind(r.map(|r| r.prefix.clone()))
        .bind(r.map(|r| r.per_minute_millis))
        .bind(r.map(|r| r.connect_fee_minor))
        .bind(r.map(|r| r.charge.minor))
        .bind(r.map(|r| r.charge.currency.to_string()))
        .bind(error)
}

/// Adds (or with negative figures, removes) one rated leg to the daily usage.
async fn add_usage(
    conn: &mut AnyConnection,
    account_id: &str,
    call_started_at: &str,
    extension_id: Option<&str>,
    path: &str,
    charge: &RatedCharge,
    sign: i64,
) -> Result<(), ProjectionError> {
    query(
        "INSERT INTO billing_usage (account_id, day, extension_id, path, currency, legs, billable_secs, charge_minor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account_id, day, extension_id, path) DO UPDATE SET \
         legs = billing_usage.legs + excluded.legs, billable_secs = billing_usage.billable_secs + excluded.billable_secs, \
         charge_minor = billing_usage.charge_minor + excluded.charge_minor",
    )
    .bind(account_id)
    .bind(call_started_at.get(..10).unwrap_or(call_started_at))
    .bind(extension_id.unwrap_or(""))
    .bind(path)
    .bind(charge.charge.currency.to_string())
    .bind(sign)
    .bind(sign * charge.billable_secs as i64)
    .bind(sign * charge.charge.minor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rates the answered open legs of a call that ended at `ended_at`, then forgets the call.
async fn close_call(
    conn: &mut AnyConnection,
    call_id: &str,
    ended_at: Instant,
) -> Result<(), ProjectionError> {
    let Some(call) = query(
        "SELECT c.account_id, c.extension_id, c.started_at, a.tariff_id FROM billing_open_calls c \
         JOIN billing_accounts a ON a.account_id = c.account_id WHERE c.call_id = $1",
    )
    .bind(call_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(());
    };
    let account_id: String = call.try_get(0)?;
    let extension_id: Option<String> = call.try_get(1)?;
    let started_at: String = call.try_get(2)?;
    let tariff_id: String = call.try_get(3)?;
    let legs = query(
        "SELECT l.leg_id, l.destination, l.path, l.answered_at, x.extension_id FROM billing_open_legs l \
         LEFT JOIN billing_leg_extensions x ON x.leg_id = l.leg_id \
         WHERE l.call_id = $1 AND l.answered_at IS NOT NULL ORDER BY l.leg_id",
    )
    .bind(call_id)
    .fetch_all(&mut *conn)
    .await?;
    let tariff = if legs.is_empty() {
        Tariff::default()
    } else {
        tariff(conn, &tariff_id).await?
    };
    for leg in legs {
        let leg_id: String = leg.try_get(0)?;
        let destination: String = leg.try_get(1)?;
        let path: String = leg.try_get(2)?;
        let answered_at: String = leg.try_get(3)?;
        let extension_id = leg
            .try_get::<Option<String>, _>(4)?
            .or_else(|| extension_id.clone());
        let rated = rate_leg(
            &tariff,
            &tariff_id,
            &started_at,
            &destination,
            &answered_at,
            ended_at,
        )?;
        if let Ok(r) = &rated {
            add_usage(
                conn,
                &account_id,
                &started_at,
                extension_id.as_deref(),
                &path,
                r,
                1,
            )
            .await?;
        }
        let (ok, error) = match rated {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        let insert = query(
            "INSERT INTO rated_legs (leg_id, call_id, account_id, extension_id, path, destination, \
             call_started_at, answered_at, ended_at, tariff_id, duration_secs, billable_secs, \
             tariff_version, prefix, per_minute_millis, connect_fee_minor, charge_minor, currency, rating_error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(leg_id)
        .bind(call_id)
        .bind(account_id.clone())
        .bind(extension_id.clone())
        .bind(path)
        .bind(destination)
        .bind(started_at.clone())
        .bind(answered_at)
        .bind(ts(ended_at))
        .bind(tariff_id.clone());
        bind_rating(insert, ok.as_ref(), error)
            .execute(&mut *conn)
            .await?;
    }
    for delete in [
        "DELETE FROM billing_open_legs WHERE call_id = $1",
        "DELETE FROM billing_leg_extensions WHERE call_id = $1",
    ] {
        query(delete).bind(call_id).execute(&mut *conn).await?;
    }
    query("DELETE FROM billing_open_calls WHERE call_id = $1")
        .bind(call_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A tariff version published after calls it covers (a correction, or a late publication):
/// re-rates the legs already rated under this tariff that started at or after its start,
/// adjusts daily usage, and records per account how the total changed.
async fn rerate(
    conn: &mut AnyConnection,
    tariff_id: &str,
    version: &TariffVersion,
) -> Result<(), ProjectionError> {
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
    let tariff = tariff(conn, tariff_id).await?;
    // account -> (legs changed, old total, new total)
    let mut changes: std::collections::BTreeMap<String, (i64, i64, i64)> = Default::default();
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
                    .ok_or_else(|| ProjectionError::Apply("rated leg without currency".into()))?;
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
            &tariff,
            tariff_id,
            &started_at,
            &destination,
            &answered_at,
            parse_ts(&ended_at)?,
        )?
        .ok();
        if new == old {
            continue;
        }
        if let Some(o) = &old {
            add_usage(
                conn,
                &account_id,
                &started_at,
                extension_id.as_deref(),
                &path,
                o,
                -1,
            )
            .await?;
        }
        if let Some(n) = &new {
            add_usage(
                conn,
                &account_id,
                &started_at,
                extension_id.as_deref(),
                &path,
                n,
                1,
            )
            .await?;
        }
        let entry = changes.entry(account_id).or_default();
        entry.0 += 1;
        entry.1 += old.as_ref().map_or(0, |o| o.charge.minor);
        entry.2 += new.as_ref().map_or(0, |n| n.charge.minor);
        let update = query(
            "UPDATE rated_legs SET duration_secs = $2, billable_secs = $3, tariff_version = $4, prefix = $5, \
             per_minute_millis = $6, connect_fee_minor = $7, charge_minor = $8, currency = $9, rating_error = $10 \
             WHERE leg_id = $1",
        )
        .bind(leg_id);
        let error = new
            .is_none()
            .then(|| "no rate after tariff correction".to_owned());
        bind_rating(update, new.as_ref(), error)
            .execute(&mut *conn)
            .await?;
    }
    for (account_id, (legs, old, new)) in changes {
        query(
            "INSERT INTO billing_adjustments (tariff_id, tariff_version, account_id, legs, old_charge_minor, new_charge_minor) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tariff_id)
        .bind(i64::from(version.version))
        .bind(account_id)
        .bind(legs)
        .bind(old)
        .bind(new)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
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

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
        decoded: &Event,
    ) -> Result<(), ProjectionError> {
        match decoded {
            Event::Tariff(TariffEvent::Published {
                tariff_id, version, ..
            }) => {
                query("INSERT INTO billing_tariffs (tariff_id, version, body) VALUES ($1, $2, $3)")
                    .bind(tariff_id.to_string())
                    .bind(i64::from(version.version))
                    .bind(json(version))
                    .execute(&mut *conn)
                    .await?;
                rerate(conn, &tariff_id.to_string(), version).await?;
            }
            Event::Account(AccountEvent::Opened {
                account_id,
                tariff_id,
                ..
            }) => {
                query("INSERT INTO billing_accounts (account_id, tariff_id) VALUES ($1, $2)")
                    .bind(account_id.to_string())
                    .bind(tariff_id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            Event::Account(AccountEvent::TariffChanged { tariff_id }) => {
                query("UPDATE billing_accounts SET tariff_id = $2 WHERE account_id = $1")
                    .bind(entity_id(&event.stream_id)?)
                    .bind(tariff_id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            Event::Call(e) => {
                let call_id = entity_id(&event.stream_id)?;
                match e {
                    CallEvent::Started {
                        account_id,
                        extension_id,
                        at,
                        ..
                    } => {
                        query("INSERT INTO billing_open_calls (call_id, account_id, extension_id, started_at) VALUES ($1, $2, $3, $4)")
                            .bind(call_id).bind(account_id.to_string()).bind(extension_id.map(|x| x.to_string())).bind(ts(*at))
                            .execute(&mut *conn).await?;
                    }
                    CallEvent::LegStarted {
                        leg_id,
                        target,
                        path,
                        ..
                    } => {
                        if let Some(number) = target.number() {
                            query("INSERT INTO billing_open_legs (leg_id, call_id, destination, path) VALUES ($1, $2, $3, $4)")
                                .bind(leg_id.to_string()).bind(call_id.clone()).bind(number.to_string()).bind(name(path))
                                .execute(&mut *conn).await?;
                        }
                        if let LegTarget::Extension { extension_id, .. } = target {
                            query("INSERT INTO billing_leg_extensions (leg_id, call_id, extension_id) VALUES ($1, $2, $3)")
                                .bind(leg_id.to_string()).bind(call_id).bind(extension_id.to_string())
                                .execute(&mut *conn).await?;
                        }
                    }
                    CallEvent::LegAnswered { leg_id, at } => {
                        query("UPDATE billing_open_legs SET answered_at = $2 WHERE leg_id = $1")
                            .bind(leg_id.to_string())
                            .bind(ts(*at))
                            .execute(&mut *conn)
                            .await?;
                    }
                    CallEvent::LegFailed { leg_id, .. } => {
                        for delete in [
                            "DELETE FROM billing_open_legs WHERE leg_id = $1",
                            "DELETE FROM billing_leg_extensions WHERE leg_id = $1",
                        ] {
                            query(delete)
                                .bind(leg_id.to_string())
                                .execute(&mut *conn)
                                .await?;
                        }
                    }
                    CallEvent::Ended { at, .. } => close_call(conn, &call_id, *at).await?,
                    _ => {}
                }
            }
            _ => {}
        }
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
