//! A tariff correction re-rates the legs it covers, to the cent, reports the change per
//! account, keeps daily usage in step — and a rebuild from position 0 agrees.

use std::sync::Arc;

use chrono::TimeZone;
use domain::account::{Account, AccountCommand};
use domain::call::{Call, CallCommand, EndCause, Side};
use domain::ids::{AccountId, CallId, LegId, TariffId};
use domain::tariff::{Rate, Tariff, TariffCommand, TariffVersion};
use domain::{Currency, E164, Instant};
use infra::EventStore;
use projections::billing::Billing;
use projections::db::ProjectionDb;
use projections::rebuild::rebuild;
use projections::runner::Runner;
use ringledger_tests::harness::{Backend, pstn_call_out, record};
use sqlx::Row;
use uuid::Uuid;

fn version(n: u32, from: Instant, pence_per_minute: i64) -> TariffVersion {
    TariffVersion {
        version: n,
        currency: Currency::parse("GBP").unwrap(),
        effective_from: from,
        rates: vec![Rate {
            prefix: "44".into(),
            description: "UK".into(),
            per_minute_millis: pence_per_minute * 1000,
            connect_fee_minor: 0,
            first_increment_secs: 60,
            next_increment_secs: 60,
        }],
        blocked_prefixes: vec![],
        on_net: None,
    }
}

async fn call(store: &dyn EventStore, account: &Account, start: Instant, talk_secs: i64) {
    let call_id = CallId(Uuid::now_v7());
    let leg_id = LegId(Uuid::now_v7());
    let mut c = Call::default();
    let stream = call_id.stream_id();
    let [start_call, start_leg] = pstn_call_out(call_id, leg_id, account, "+442079460000");
    let commands = [
        (start_call, 0),
        (start_leg, 0),
        (CallCommand::LegAnswered { leg_id }, 5),
        (
            CallCommand::End {
                cause: EndCause::NormalClearing,
                side: Side::Caller,
            },
            5 + talk_secs,
        ),
    ];
    for (command, after) in commands {
        record(
            store,
            &stream,
            &mut c,
            command,
            start + chrono::Duration::seconds(after),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_re_rates_and_reports_the_difference_per_account() {
    let b = Backend::sqlite().await;
    let store = b.open().await;
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let tariff_id = TariffId(Uuid::now_v7());
    let mut tariff = Tariff::default();
    let tariff_stream = format!("tariff-{}", tariff_id.0);
    let publish = |v| TariffCommand::Publish {
        tariff_id,
        name: "Standard".into(),
        version: v,
    };
    record(
        store.as_ref(),
        &tariff_stream,
        &mut tariff,
        publish(version(1, t0, 10)),
        t0,
    )
    .await;

    let account_id = AccountId(Uuid::now_v7());
    let mut account = Account::default();
    record(
        store.as_ref(),
        &account_id.stream_id(),
        &mut account,
        AccountCommand::Open {
            account_id,
            name: "Ada".into(),
            main_number: E164::parse("+442071838750").unwrap(),
            tariff_id,
            currency: Currency::parse("GBP").unwrap(),
            max_extensions: None,
        },
        t0,
    )
    .await;
    let day = t0 + chrono::Duration::hours(10);
    call(store.as_ref(), &account, day, 61).await; // 120 billable s at 10p = 20p
    call(
        store.as_ref(),
        &account,
        day + chrono::Duration::minutes(5),
        30,
    )
    .await; // 60 s = 10p

    let db = ProjectionDb::connect(&b.url).await.unwrap();
    let runner = Runner::new(db.clone(), store.clone(), Arc::new(Billing))
        .await
        .unwrap();
    runner.catch_up().await.unwrap();
    let total = |db: ProjectionDb| async move {
        let r = sqlx::query(
            "SELECT CAST(SUM(charge_minor) AS BIGINT), MIN(tariff_version) FROM rated_legs",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (r.get::<i64, _>(0), r.get::<i64, _>(1))
    };
    assert_eq!(total(db.clone()).await, (30, 1));

    // The price was wrong from the start: 15p a minute. Same start, next version.
    record(
        store.as_ref(),
        &tariff_stream,
        &mut tariff,
        publish(version(2, t0, 15)),
        day + chrono::Duration::hours(1),
    )
    .await;
    runner.catch_up().await.unwrap();
    assert_eq!(
        total(db.clone()).await,
        (45, 2),
        "30p + 15p at the corrected price"
    );
    let adj = sqlx::query(
        "SELECT account_id, legs, old_charge_minor, new_charge_minor FROM billing_adjustments",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(adj.len(), 1);
    assert_eq!(adj[0].get::<String, _>(0), account_id.to_string());
    assert_eq!(
        (
            adj[0].get::<i64, _>(1),
            adj[0].get::<i64, _>(2),
            adj[0].get::<i64, _>(3)
        ),
        (2, 30, 45)
    );
    let usage = sqlx::query("SELECT day, legs, billable_secs, charge_minor FROM billing_usage")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].get::<String, _>(0), "2026-11-01");
    assert_eq!(
        (
            usage[0].get::<i64, _>(1),
            usage[0].get::<i64, _>(2),
            usage[0].get::<i64, _>(3)
        ),
        (2, 180, 45)
    );

    let invoice = projections::billing::invoice(&db, &account_id.to_string(), "2026-11")
        .await
        .unwrap();
    assert_eq!(invoice.total_minor, 45);
    assert_eq!(invoice.currency.as_deref(), Some("GBP"));
    assert_eq!(invoice.lines.len(), 1);
    assert_eq!(
        (
            invoice.lines[0].extension_id.as_deref(),
            invoice.lines[0].path.as_str(),
            invoice.lines[0].legs
        ),
        (None, "pstn", 2)
    );
    let next_month = projections::billing::invoice(&db, &account_id.to_string(), "2026-12")
        .await
        .unwrap();
    assert_eq!((next_month.lines.len(), next_month.total_minor), (0, 0));

    let report = rebuild(store.clone(), &db, Arc::new(Billing), true)
        .await
        .unwrap();
    for t in &report.tables {
        assert!(t.identical(), "{}: {:?}", t.table, t.first_difference);
    }
}
