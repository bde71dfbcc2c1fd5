//! Money that adds up (docs/BILLING.md): a call is rated on the tariff it started on, versions
//! are chosen to the microsecond, an account never mixes currencies, and the billing projection
//! agrees to the minor unit with an independent reference written from BILLING.md over random
//! tariffs (overlapping prefixes, connect fees, increments, corrections) and random calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{SubsecRound, TimeZone};
use domain::account::{Account, AccountCommand};
use domain::call::{Call, CallCommand, EndCause, LegTarget, Path, Side};
use domain::ids::{AccountId, CallId, LegId, TariffId};
use domain::tariff::{Rate, Tariff, TariffCommand, TariffVersion};
use domain::{Currency, E164, Instant};
use infra::EventStore;
use projections::billing::Billing;
use projections::db::ProjectionDb;
use projections::rebuild::rebuild;
use projections::routing_view::RoutingView;
use projections::runner::Runner;
use reqwest::Method;
use ringledger_tests::api_app::{TestApp, account};
use ringledger_tests::billing_reference::{Priced, reference};
use ringledger_tests::harness::{Backend, pstn_call_out, record};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

fn t0() -> Instant {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .unwrap()
}

fn rate(prefix: &str, per_minute_millis: i64, connect: i64, first: u32, next: u32) -> Rate {
    Rate {
        prefix: prefix.into(),
        description: format!("+{prefix}"),
        per_minute_millis,
        connect_fee_minor: connect,
        first_increment_secs: first,
        next_increment_secs: next,
    }
}

fn version(n: u32, from: Instant, rates: Vec<Rate>) -> TariffVersion {
    TariffVersion {
        version: n,
        currency: Currency::parse("GBP").unwrap(),
        effective_from: from,
        rates,
        blocked_prefixes: vec![],
        on_net: None,
    }
}

async fn publish(store: &dyn EventStore, id: TariffId, tariff: &mut Tariff, v: TariffVersion) {
    let command = TariffCommand::Publish {
        tariff_id: id,
        name: "Test".into(),
        version: v,
    };
    record(store, &id.stream_id(), tariff, command, t0()).await;
}

async fn open(store: &dyn EventStore, number: &str, tariff_id: TariffId) -> Account {
    let account_id = AccountId(Uuid::now_v7());
    let mut account = Account::default();
    let command = AccountCommand::Open {
        account_id,
        name: "Ada".into(),
        main_number: E164::parse(number).unwrap(),
        tariff_id,
        currency: Currency::parse("GBP").unwrap(),
        max_extensions: None,
    };
    record(store, &account_id.stream_id(), &mut account, command, t0()).await;
    account
}

async fn move_to(store: &dyn EventStore, account: &mut Account, tariff_id: TariffId, at: Instant) {
    let command = AccountCommand::ChangeTariff {
        tariff_id,
        currency: Currency::parse("GBP").unwrap(),
    };
    let stream = account.id.unwrap().stream_id();
    record(store, &stream, account, command, at).await;
}

/// A call out of an account: started (and its leg placed) by `start`, answered (or not) and
/// ended by `finish`; whatever the test records in between (a tariff change) happens during
/// the call.
struct CallOut {
    leg_id: LegId,
    stream: String,
    call: Call,
}

impl CallOut {
    async fn start(
        store: &dyn EventStore,
        account: &Account,
        destination: &str,
        start: Instant,
    ) -> Self {
        let call_id = CallId(Uuid::now_v7());
        let leg_id = LegId(Uuid::now_v7());
        let stream = call_id.stream_id();
        let mut call = Call::default();
        let commands = pstn_call_out(call_id, leg_id, account, destination);
        for command in commands {
            record(store, &stream, &mut call, command, start).await;
        }
        Self {
            leg_id,
            stream,
            call,
        }
    }

    async fn finish(mut self, store: &dyn EventStore, answered: Option<Instant>, ended: Instant) {
        if let Some(at) = answered {
            let answer = CallCommand::LegAnswered {
                leg_id: self.leg_id,
            };
            record(store, &self.stream, &mut self.call, answer, at).await;
        }
        let end = CallCommand::End {
            cause: EndCause::NormalClearing,
            side: Side::Caller,
        };
        record(store, &self.stream, &mut self.call, end, ended).await;
    }
}

/// The billing projection over `store`, caught up.
async fn billed(backend: &Backend, store: Arc<dyn EventStore>) -> ProjectionDb {
    let db = ProjectionDb::connect(&backend.url).await.unwrap();
    let runner = Runner::new(db.clone(), store, Arc::new(Billing))
        .await
        .unwrap();
    runner.catch_up().await.unwrap();
    db
}

/// leg → (tariff, version, charge) of every rated leg.
async fn charges(db: &ProjectionDb) -> BTreeMap<String, (String, Option<i64>, Option<i64>)> {
    sqlx::query("SELECT leg_id, tariff_id, tariff_version, charge_minor FROM rated_legs")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

async fn assert_rebuild_identical(store: Arc<dyn EventStore>, db: &ProjectionDb) {
    let report = rebuild(store, db, Arc::new(Billing), true).await.unwrap();
    for t in &report.tables {
        assert!(t.identical(), "{}: {:?}", t.table, t.first_difference);
    }
}

/// The call: 8 s started on T1 (22.5p a minute, 1/1), the account moved to T2
/// (97.5p) 4.5 s in. It costs 3 (T1), not 13; a call started after the move costs 13. The
/// edge's spend counting agrees with billing, and a rebuild too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tariff_change_mid_call_bills_the_tariff_the_call_started_on() {
    let backend = Backend::sqlite().await;
    let store = backend.open().await;
    let s = store.as_ref();
    let (t1, t2) = (TariffId(Uuid::now_v7()), TariffId(Uuid::now_v7()));
    let day_before = t0() - chrono::Duration::days(1);
    publish(
        s,
        t1,
        &mut Tariff::default(),
        version(1, day_before, vec![rate("44", 22_500, 0, 1, 1)]),
    )
    .await;
    publish(
        s,
        t2,
        &mut Tariff::default(),
        version(1, day_before, vec![rate("44", 97_500, 0, 1, 1)]),
    )
    .await;
    let mut ada = open(s, "+442071838750", t1).await;
    let secs = |ms: i64| t0() + chrono::Duration::milliseconds(ms);

    let during = CallOut::start(s, &ada, "+442079460000", t0()).await;
    move_to(s, &mut ada, t2, secs(4_500)).await;
    let first_leg = during.leg_id.to_string();
    during.finish(s, Some(t0()), secs(8_000)).await;
    let after = CallOut::start(s, &ada, "+442079460000", secs(5_000)).await;
    let second_leg = after.leg_id.to_string();
    after.finish(s, Some(secs(5_000)), secs(13_000)).await;

    let db = billed(&backend, store.clone()).await;
    let legs = charges(&db).await;
    assert_eq!(
        legs[&first_leg],
        (t1.to_string(), Some(1), Some(3)),
        "{legs:?}"
    );
    assert_eq!(
        legs[&second_leg],
        (t2.to_string(), Some(1), Some(13)),
        "{legs:?}"
    );
    let usage: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(charge_minor) AS BIGINT) FROM billing_usage")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(usage, 16);

    let mut view = RoutingView::default();
    for e in store.read_all(0, 10_000).await.unwrap() {
        view.apply(&e).unwrap();
    }
    let (spent, _) = view.spent_on_day_of(ada.id.unwrap(), None, t0());
    assert_eq!(spent, 16, "the edge's spend counting rates like billing");
    assert_rebuild_identical(store, &db).await;
}

/// A transfer: the callee's leg (answered at 0) hands its place to another number at 10 s,
/// which answers at 12 s, when the first leg ends; the call ends at 72 s. Each leg is billed
/// for its own time (12 s and 60 s at 1p a second), both to the call's account; the edge's
/// spend counting agrees, and a rebuild too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transferred_call_bills_each_leg_for_its_own_time() {
    let backend = Backend::sqlite().await;
    let store = backend.open().await;
    let s = store.as_ref();
    let tariff = TariffId(Uuid::now_v7());
    let day_before = t0() - chrono::Duration::days(1);
    publish(
        s,
        tariff,
        &mut Tariff::default(),
        version(1, day_before, vec![rate("44", 60_000, 0, 1, 1)]),
    )
    .await;
    let ada = open(s, "+442071838750", tariff).await;
    let at = |secs: i64| t0() + chrono::Duration::seconds(secs);
    let mut call = CallOut::start(s, &ada, "+442079460000", t0()).await;
    let first = call.leg_id;
    let second = LegId(Uuid::now_v7());
    let steps = [
        (CallCommand::LegAnswered { leg_id: first }, 0),
        (
            CallCommand::Transfer {
                by: Side::Callee,
                from_leg: Some(first),
                to: "+442079460001".into(),
                leg_id: second,
                target: LegTarget::Pstn {
                    number: E164::parse("+442079460001").unwrap(),
                },
                path: Path::Pstn,
                account: ada.clone(),
            },
            10,
        ),
        (CallCommand::LegAnswered { leg_id: second }, 12),
        (CallCommand::EndLeg { leg_id: first }, 12),
        (
            CallCommand::End {
                cause: EndCause::NormalClearing,
                side: Side::Callee,
            },
            72,
        ),
    ];
    for (command, secs) in steps {
        record(s, &call.stream, &mut call.call, command, at(secs)).await;
    }
    let db = billed(&backend, store.clone()).await;
    let legs = charges(&db).await;
    assert_eq!(
        legs[&first.to_string()],
        (tariff.to_string(), Some(1), Some(12))
    );
    assert_eq!(
        legs[&second.to_string()],
        (tariff.to_string(), Some(1), Some(60))
    );
    let ended: Vec<(String, String)> =
        sqlx::query("SELECT leg_id, ended_at FROM rated_legs ORDER BY ended_at")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(ended[0].0, first.to_string(), "the first leg ends first");
    let mut view = RoutingView::default();
    for e in store.read_all(0, 10_000).await.unwrap() {
        view.apply(&e).unwrap();
    }
    let (spent, _) = view.spent_on_day_of(ada.id.unwrap(), None, t0());
    assert_eq!(spent, 72, "the edge's spend counting rates like billing");
    assert_rebuild_identical(store, &db).await;
}

/// Version 2 starts on a microsecond; a call starting 300 ns after it is rated on version 2
/// (21p for 10 s at 126p a minute, not version 1's 1p), one starting 999 ns before the next
/// microsecond (to the microsecond, before the version) on version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_is_chosen_to_the_microsecond() {
    let backend = Backend::sqlite().await;
    let store = backend.open().await;
    let s = store.as_ref();
    let id = TariffId(Uuid::now_v7());
    let mut tariff = Tariff::default();
    let v2_from = t0() + chrono::Duration::microseconds(1);
    publish(
        s,
        id,
        &mut tariff,
        version(
            1,
            t0() - chrono::Duration::days(1),
            vec![rate("44", 6_000, 0, 1, 1)],
        ),
    )
    .await;
    publish(
        s,
        id,
        &mut tariff,
        version(2, v2_from, vec![rate("44", 126_000, 0, 1, 1)]),
    )
    .await;
    let ada = open(s, "+442071838750", id).await;
    let mut legs = Vec::new();
    for start in [
        v2_from + chrono::Duration::nanoseconds(300),
        v2_from - chrono::Duration::nanoseconds(1),
    ] {
        let call = CallOut::start(s, &ada, "+442079460000", start).await;
        legs.push(call.leg_id.to_string());
        call.finish(s, Some(start), start + chrono::Duration::seconds(10))
            .await;
    }
    let db = billed(&backend, store.clone()).await;
    let charged = charges(&db).await;
    assert_eq!(charged[&legs[0]], (id.to_string(), Some(2), Some(21)));
    assert_eq!(charged[&legs[1]], (id.to_string(), Some(1), Some(1)));
    assert_rebuild_identical(store, &db).await;
}

/// Over the API: a GBP account cannot move onto a EUR tariff (422 naming tariff_id), a
/// version cannot start between two microseconds (422 naming effective_from), and the
/// increments OpenAPI documents are the ones the API takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn currencies_never_mix_and_versions_start_on_a_microsecond() {
    let app = TestApp::spawn(Backend::sqlite().await).await;
    let owner = account(&app, "+441632960001").await;
    let tariff = |currency: &str, from: &str| {
        json!({"name": "T", "currency": currency, "effective_from": from,
            "rates": [{"prefix": "44", "description": "UK", "per_minute_millis": 2000,
                "connect_fee_minor": 0, "first_increment_secs": 60, "next_increment_secs": 60}]})
    };
    let (status, eur) = app
        .admin_json(
            Method::POST,
            "/v1/tariffs",
            tariff("EUR", "2026-01-01T00:00:00Z"),
        )
        .await;
    assert_eq!(status, 201, "{eur}");
    let (status, body) = app
        .admin_json(
            Method::PUT,
            &format!("/v1/accounts/{owner}/tariff"),
            json!({"tariff_id": eur["tariff_id"]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "tariff_id", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("EUR"), "{body}");
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/tariffs",
            tariff("GBP", "2026-01-01T00:00:00.0000005Z"),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "effective_from", "{body}");
    let (status, body) = app
        .admin_json(
            Method::POST,
            "/v1/tariffs",
            tariff("GBP", "2026-01-01T00:00:00.000001Z"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A month without calls is invoiced in the account's currency too.
    let invoice = format!("/v1/billing/accounts/{owner}/invoices/2026-01");
    let (status, body) = app.get(&invoice, &app.billing).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["currency"].as_str(), body["total_minor"].as_i64()),
        (Some("GBP"), Some(0)),
        "{body}"
    );
    let csv = app
        .request(Method::GET, &invoice, Some(&app.billing))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.ends_with("total,,,,0,GBP\r\n"), "{csv}");
    let (_, doc) = app.get("/openapi.json", &app.admin).await;
    let first = &doc["components"]["schemas"]["RateBody"]["properties"]["first_increment_secs"];
    assert_eq!(
        (first["minimum"].as_i64(), first["maximum"].as_i64()),
        (Some(1), Some(3600)),
        "{first}"
    );
    app.shutdown().await;
}

/// splitmix64: a fixed seed gives the same tariffs and calls on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const PREFIXES: &[&str] = &["4", "44", "447", "4477", "33", "331", "1", "1212"];
const DESTINATIONS: &[&str] = &[
    "+442079460000",
    "+447700900123",
    "+447712345678",
    "+331422781860",
    "+33612345678",
    "+12125550100",
    "+14155550100",
    "+4912345678",
    "+881234567890",
];

/// Random tariffs, versions (some correcting an earlier one at the same start) and calls,
/// some of them over a tariff change; every rated leg is what the reference says to the
/// minor unit (or unrated where it has no price), usage is the sum of the legs, and a rebuild
/// gives the same tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_agrees_with_the_reference_over_random_tariffs_and_calls() {
    for seed in [20_261_206_u64, 7, 1_234_567] {
        let mut rng = Rng(seed);
        let backend = Backend::sqlite().await;
        let store = backend.open().await;
        let s = store.as_ref();
        let base = t0();
        let mut tariffs: Vec<(TariffId, Vec<TariffVersion>)> = Vec::new();
        for _ in 0..3 {
            let id = TariffId(Uuid::now_v7());
            let mut state = Tariff::default();
            let mut from = base - chrono::Duration::seconds(rng.below(120) as i64);
            let mut versions = Vec::new();
            for n in 1..=(1 + rng.below(3) as u32) {
                if n > 1 && !rng.chance(30) {
                    // A later start; otherwise the same start: a correction.
                    from += chrono::Duration::microseconds(rng.below(900_000_000) as i64);
                }
                let mut rates: Vec<Rate> = Vec::new();
                for prefix in PREFIXES {
                    if rng.chance(55) {
                        rates.push(rate(
                            prefix,
                            rng.below(60_000) as i64,
                            if rng.chance(40) {
                                rng.below(30) as i64
                            } else {
                                0
                            },
                            *rng.pick(&[1, 1, 6, 30, 60, 60]),
                            *rng.pick(&[1, 1, 6, 60]),
                        ));
                    }
                }
                if rates.is_empty() {
                    rates.push(rate("44", 1_000, 0, 60, 60));
                }
                let v = version(n, from.trunc_subsecs(6), rates);
                publish(s, id, &mut state, v.clone()).await;
                versions.push(v);
            }
            tariffs.push((id, versions));
        }
        let mut accounts = Vec::new();
        for i in 0..4 {
            let (id, _) = rng.pick(&tariffs);
            accounts.push(open(s, &format!("+4420718387{i:02}"), *id).await);
        }
        // leg -> (account, expected) for every answered leg.
        let mut expected: BTreeMap<String, (AccountId, Option<Priced>, TariffId)> = BTreeMap::new();
        for _ in 0..120 {
            let a = rng.below(accounts.len() as u64) as usize;
            let start = base + chrono::Duration::nanoseconds(rng.below(1_200_000_000_000) as i64)
                - chrono::Duration::seconds(90);
            let destination = *rng.pick(DESTINATIONS);
            let tariff_id = accounts[a].tariff_id.unwrap();
            let call = CallOut::start(s, &accounts[a], destination, start).await;
            let leg = call.leg_id.to_string();
            if rng.chance(20) {
                // The account moves to another tariff during the call (or back).
                let (to, _) = rng.pick(&tariffs);
                if *to != accounts[a].tariff_id.unwrap() {
                    move_to(s, &mut accounts[a], *to, start).await;
                }
            }
            let answered = (!rng.chance(12))
                .then(|| start + chrono::Duration::nanoseconds(rng.below(20_000_000_000) as i64));
            let talk = match rng.below(10) {
                0 => chrono::Duration::zero(),
                1 => chrono::Duration::seconds(*rng.pick(&[1, 6, 30, 60, 61, 120]) as i64),
                _ => chrono::Duration::nanoseconds(rng.below(400_000_000_000) as i64),
            };
            let ended = answered.unwrap_or(start) + talk;
            call.finish(s, answered, ended).await;
            if let Some(answered) = answered {
                let versions = &tariffs.iter().find(|(id, _)| *id == tariff_id).unwrap().1;
                let priced = reference(versions, start, destination, answered, ended);
                expected.insert(leg, (accounts[a].id.unwrap(), priced, tariff_id));
            }
        }
        let db = billed(&backend, store.clone()).await;
        let rows = sqlx::query(
            "SELECT leg_id, tariff_id, tariff_version, prefix, duration_secs, billable_secs, \
             charge_minor, rating_error FROM rated_legs",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            rows.len(),
            expected.len(),
            "seed {seed}: one row per answered leg"
        );
        let mut totals: BTreeMap<String, i64> = BTreeMap::new();
        let mut unrated = 0;
        for r in &rows {
            let leg: String = r.get(0);
            let (account_id, want, tariff_id) = &expected[&leg];
            assert_eq!(
                r.get::<String, _>(1),
                tariff_id.to_string(),
                "seed {seed} leg {leg}"
            );
            match want {
                Some((v, prefix, duration, billable, charge)) => {
                    let got = (
                        r.get::<Option<i64>, _>(2),
                        r.get::<Option<String>, _>(3),
                        r.get::<Option<i64>, _>(4),
                        r.get::<Option<i64>, _>(5),
                        r.get::<Option<i64>, _>(6),
                    );
                    let want = (
                        Some(i64::from(*v)),
                        Some(prefix.clone()),
                        Some(*duration),
                        Some(*billable),
                        Some(*charge),
                    );
                    assert_eq!(got, want, "seed {seed} leg {leg}");
                    *totals.entry(account_id.to_string()).or_default() += charge;
                }
                None => {
                    unrated += 1;
                    assert!(
                        r.get::<Option<String>, _>(7).is_some(),
                        "seed {seed} leg {leg}"
                    );
                    assert_eq!(r.get::<Option<i64>, _>(6), None, "seed {seed} leg {leg}");
                }
            }
        }
        assert!(
            unrated > 0 && unrated < rows.len(),
            "seed {seed}: the mix covers unrated legs too"
        );
        let usage: BTreeMap<String, i64> = sqlx::query(
            "SELECT account_id, CAST(SUM(charge_minor) AS BIGINT) FROM billing_usage GROUP BY account_id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .filter(|(_, total): &(String, i64)| *total != 0)
        .collect();
        totals.retain(|_, total| *total != 0);
        assert_eq!(usage, totals, "seed {seed}: usage is the sum of the legs");
        assert_rebuild_identical(store, &db).await;
    }
}
