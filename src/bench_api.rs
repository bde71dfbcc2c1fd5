//! HTTP API benchmarks, run as a second process against `ringledger serve`:
//! `bench seed-rated-legs` fills the billing tables of one account with N rated legs (so wrk can
//! measure the billing reads), and `bench http-extensions` registers extensions at a fixed rate
//! (open loop), reports latency percentiles, then checks every 201 against the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeZone, Utc};
use projections::db::ProjectionDb;
use projections::runner::Projection;
use projections::sql::ts;
use serde_json::{Value, json};
use sqlx::Arguments;
use sqlx::any::AnyArguments;
use uuid::Uuid;

const LEG_COLUMNS: &str = "leg_id, call_id, account_id, extension_id, path, destination, \
    call_started_at, answered_at, ended_at, duration_secs, billable_secs, tariff_id, \
    tariff_version, prefix, per_minute_millis, connect_fee_minor, charge_minor, currency, \
    rating_error";
const PER_INSERT: usize = 400;

/// Writes `legs` rated legs of `account` straight into the billing tables of the store at
/// `store_url` (rated legs and the daily usage they add up to), one every 30 s from 2026-01-01, over three extensions and three
/// paths. These rows stand in for what the billing projection would have written; only the
/// read path is being measured.
pub async fn seed_rated_legs(store_url: &str, account: &str, legs: usize) -> anyhow::Result<()> {
    let projections = infra::config::projections_next_to(store_url)
        .context("rated legs need a SQLite or PostgreSQL store")?;
    let db = ProjectionDb::connect(&projections).await?;
    db.execute_schema(projections::billing::Billing.schema())
        .await?;
    let extensions = [
        Some(Uuid::now_v7().to_string()),
        Some(Uuid::now_v7().to_string()),
        None,
    ];
    let paths = ["data", "alternate_call_out", "call_through"];
    let tariff = Uuid::now_v7().to_string();
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut usage: std::collections::BTreeMap<(String, String, String), (i64, i64, i64)> =
        Default::default();
    let began = Instant::now();
    let mut written = 0;
    while written < legs {
        let n = PER_INSERT.min(legs - written);
        let mut args = AnyArguments::default();
        let mut rows = Vec::with_capacity(n);
        for i in written..written + n {
            let started = start + chrono::Duration::seconds(30 * i as i64);
            let answered = started + chrono::Duration::seconds(5);
            let ended = answered + chrono::Duration::seconds(42);
            let extension = extensions[i % 3].clone();
            let path = paths[(i / 3) % 3];
            let charge = 2_i64;
            let day = started.format("%Y-%m-%d").to_string();
            let u = usage
                .entry((day, extension.clone().unwrap_or_default(), path.to_owned()))
                .or_default();
            *u = (u.0 + 1, u.1 + 60, u.2 + charge);
            let base = rows.len() * 19;
            rows.push(format!(
                "({})",
                (1..=19)
                    .map(|k| format!("${}", base + k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            args.add(Uuid::now_v7().to_string())
                .map_err(anyhow::Error::msg)?;
            args.add(Uuid::now_v7().to_string())
                .map_err(anyhow::Error::msg)?;
            args.add(account.to_owned()).map_err(anyhow::Error::msg)?;
            args.add(extension).map_err(anyhow::Error::msg)?;
            args.add(path.to_owned()).map_err(anyhow::Error::msg)?;
            args.add(format!("+44207946{:04}", i % 10_000))
                .map_err(anyhow::Error::msg)?;
            args.add(ts(started)).map_err(anyhow::Error::msg)?;
            args.add(ts(answered)).map_err(anyhow::Error::msg)?;
            args.add(ts(ended)).map_err(anyhow::Error::msg)?;
            args.add(42_i64).map_err(anyhow::Error::msg)?;
            args.add(60_i64).map_err(anyhow::Error::msg)?;
            args.add(tariff.clone()).map_err(anyhow::Error::msg)?;
            args.add(1_i64).map_err(anyhow::Error::msg)?;
            args.add("44".to_owned()).map_err(anyhow::Error::msg)?;
            args.add(2000_i64).map_err(anyhow::Error::msg)?;
            args.add(0_i64).map_err(anyhow::Error::msg)?;
            args.add(charge).map_err(anyhow::Error::msg)?;
            args.add("GBP".to_owned()).map_err(anyhow::Error::msg)?;
            args.add(None::<String>).map_err(anyhow::Error::msg)?;
        }
        let sql = format!(
            "INSERT INTO rated_legs ({LEG_COLUMNS}) VALUES {}",
            rows.join(", ")
        );
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .execute(&db.pool)
            .await
            .context("inserting rated legs")?;
        written += n;
        if written % 100_000 < PER_INSERT {
            eprintln!(
                "{written} legs ({:.0}/s)",
                written as f64 / began.elapsed().as_secs_f64()
            );
        }
    }
    for ((day, extension, path), (count, secs, charge)) in usage {
        sqlx::query(
            "INSERT INTO billing_usage (account_id, day, extension_id, path, currency, legs, \
             billable_secs, charge_minor) VALUES ($1, $2, $3, $4, 'GBP', $5, $6, $7)",
        )
        .bind(account)
        .bind(day)
        .bind(extension)
        .bind(path)
        .bind(count)
        .bind(secs)
        .bind(charge)
        .execute(&db.pool)
        .await?;
    }
    println!(
        "seeded {legs} rated legs for account {account} in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Live tails to hold open during a load.
pub struct LiveTails {
    pub count: usize,
    /// An auditor key.
    pub key: String,
}

/// Opens `tails.count` live tails (from the log's start) and reads them until the process ends;
/// returns a counter of the events they received.
async fn open_tails(
    url: &str,
    tails: &LiveTails,
) -> anyhow::Result<Arc<std::sync::atomic::AtomicU64>> {
    use futures::StreamExt;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let http = reqwest::Client::new();
    for _ in 0..tails.count {
        let r = http
            .get(format!(
                "{}/v1/audit/events/live",
                url.trim_end_matches('/')
            ))
            .bearer_auth(&tails.key)
            .send()
            .await?;
        if r.status() != 200 {
            bail!("opening a live tail: {}", r.status());
        }
        let received = received.clone();
        tokio::spawn(async move {
            let mut body = r.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                let events = chunk.windows(3).filter(|w| w == b"id:").count() as u64;
                received.fetch_add(events, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    Ok(received)
}

/// Registers extensions at `rate` per second for `seconds` (open loop: requests start on
/// schedule whether or not earlier ones answered), then checks each 201 against the log.
pub async fn http_extensions(
    url: &str,
    key: &str,
    rate: u32,
    seconds: u64,
    tails: &LiveTails,
) -> anyhow::Result<()> {
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()?,
        base: url.trim_end_matches('/').to_owned(),
        key: key.to_owned(),
    });
    let total = rate as usize * seconds as usize;
    let (status, tariff) = client
        .post(
            "/v1/tariffs",
            json!({"name": "bench", "currency": "GBP", "effective_from": "2026-01-01T00:00:00Z",
                   "rates": [{"prefix": "44", "description": "UK", "per_minute_millis": 1000,
                              "connect_fee_minor": 0, "first_increment_secs": 60, "next_increment_secs": 60}]}),
        )
        .await?;
    if status != 201 {
        bail!("creating the tariff: {status} {tariff}");
    }
    // Accounts hold at most 50 extensions; spread the load so no account takes two at once.
    let per_account = 50;
    let accounts_needed = total.div_ceil(per_account);
    let run = Uuid::new_v4().as_u128() % 9_000 + 1_000;
    let mut accounts = Vec::with_capacity(accounts_needed);
    for a in 0..accounts_needed {
        let (status, acc) = client
            .post(
                "/v1/accounts",
                json!({"name": format!("bench {a}"), "main_number": format!("+4420{run:04}{a:05}"),
                       "tariff_id": tariff["tariff_id"], "currency": "GBP", "max_extensions": 50}),
            )
            .await?;
        if status != 201 {
            bail!("creating account {a}: {status} {acc}");
        }
        accounts.push(acc["account_id"].as_str().unwrap_or_default().to_owned());
    }
    let tailed = open_tails(url, tails).await?;
    eprintln!(
        "{accounts_needed} accounts ready, {} live tails open; {total} extensions at {rate}/s",
        tails.count
    );
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = began + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let account = accounts[i % accounts_needed].clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = client
                .post(
                    &format!("/v1/accounts/{account}/extensions"),
                    json!({"number": format!("+447{run:04}{i:06}"), "native_provider": "bench",
                           "kind": "mobile"}),
                )
                .await;
            (sent.elapsed(), r)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut created = Vec::new();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let (took, r) = t.await?;
        latencies.push(took);
        match r {
            Ok((201, body)) => {
                created.push(body["extension_id"].as_str().unwrap_or_default().to_owned())
            }
            Ok((status, body)) => {
                *failures
                    .entry(format!("{status} {}", body["type"]))
                    .or_default() += 1
            }
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let elapsed = began.elapsed();
    latencies.sort_unstable();
    println!(
        "{total} requests in {:.1} s ({:.0}/s offered {rate}/s): {} created, failures {failures:?}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        created.len()
    );
    println!(
        "latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 0.999).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if tails.count > 0 {
        println!(
            "{} live tails received {} events in all",
            tails.count,
            tailed.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    // Every 201 must be backed by the extension's events in the log (read back by folding its
    // stream through the API).
    let mut missing = 0;
    for id in &created {
        let r = client
            .http
            .get(format!("{}/v1/extensions/{id}", client.base))
            .bearer_auth(&client.key)
            .send()
            .await?;
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if body["status"] != "pending" || body["version"] != 1 {
            missing += 1;
        }
    }
    println!(
        "durability: {} of {} created extensions read back from the log",
        created.len() - missing,
        created.len()
    );
    if missing > 0 || !failures.is_empty() {
        bail!("{missing} created extensions missing from the log, failures {failures:?}");
    }
    Ok(())
}
