//! SQL projections over a real log on SQLite and PostgreSQL: a mixed workload projected live
//! (with a restart half way, then in small deliveries) equals a rebuild from position 0, table
//! by table; a batch's writes sent together leave the rows one statement each would; billing rates
//! every answered trunk leg to its main account; an event a projection cannot apply stops that
//! projection only, naming the event.

use std::sync::Arc;

use chrono::TimeZone;
use infra::{EventStore, ExpectedVersion};
use projections::db::ProjectionDb;
use projections::rebuild::{all_projections, rebuild};
use projections::runner::{Runner, RunnerError};
use projections::workload::Workload;
use ringledger_tests::harness::{Backend, append_workload};
use sqlx::Row;

async fn append_seeded(store: &Arc<dyn EventStore>, seed: u64, min_events: usize) -> usize {
    let start = chrono::Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap();
    append_workload(store.as_ref(), &mut Workload::new(seed, start), min_events).await
}

async fn live_equals_rebuild(b: Backend) {
    let store = b.open().await;
    let db = ProjectionDb::connect(&b.url).await.unwrap();
    append_seeded(&store, 11, 1_500).await;
    // Project half, stop (drop the runners), append more, resume with new runners.
    for p in all_projections() {
        Runner::new(db.clone(), store.clone(), p)
            .await
            .unwrap()
            .catch_up()
            .await
            .unwrap();
    }
    let total = append_seeded(&store, 12, 1_500).await;
    let head = store.head_position().await.unwrap();
    assert!(total > 0);
    // The second half arrives in small deliveries (as from the bus; the whole log is offered,
    // what a checkpoint holds is dropped), so calls, legs and usage cross many batch
    // boundaries; the rebuild takes it in one batch.
    let log = store.read_all(0, 100_000).await.unwrap();
    for p in all_projections() {
        let runner = Runner::new(db.clone(), store.clone(), p).await.unwrap();
        for delivery in log.chunks(37) {
            runner.apply_delivered(delivery).await.unwrap();
        }
        assert_eq!(runner.checkpoint().await.unwrap().position, head);
    }
    // The workload finishes every workflow it starts (as the API does): no step missing.
    let missing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workflow_steps")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(missing, 0);
    for p in all_projections() {
        let report = rebuild(store.clone(), &db, p, true).await.unwrap();
        assert_eq!(report.position, head);
        for t in &report.tables {
            assert!(
                t.identical(),
                "{}.{} differs: {:?}",
                report.projection,
                t.table,
                t.first_difference
            );
        }
        assert!(
            report.tables.iter().any(|t| t.live_rows > 0),
            "{} is empty",
            report.projection
        );
    }

    // Billing: every answered trunk leg is rated, to the account that owns the call.
    let rated = sqlx::query(
        "SELECT COUNT(*), CAST(COALESCE(SUM(charge_minor), 0) AS BIGINT), COUNT(rating_error) FROM rated_legs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (legs, charged, errors): (i64, i64, i64) = (rated.get(0), rated.get(1), rated.get(2));
    assert!(legs > 10 && charged > 0, "{legs} legs, {charged} charged");
    assert_eq!(errors, 0);
    let answered_trunk_legs: i64 = sqlx::query(
        "SELECT COUNT(*) FROM call_legs WHERE answered_at IS NOT NULL AND target NOT LIKE '%\"contact\"%'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(legs, answered_trunk_legs);
    let misbilled: i64 = sqlx::query(
        "SELECT COUNT(*) FROM rated_legs r JOIN calls c ON c.call_id = r.call_id WHERE c.account_id <> r.account_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(misbilled, 0);

    // A live row that drifted from the log is found, with the row.
    sqlx::query("UPDATE rated_legs SET charge_minor = charge_minor + 1 WHERE leg_id = (SELECT MIN(leg_id) FROM rated_legs)")
        .execute(&db.pool)
        .await
        .unwrap();
    let report = rebuild(
        store.clone(),
        &db,
        Arc::new(projections::billing::Billing),
        true,
    )
    .await
    .unwrap();
    assert!(!report.identical());
    let drifted: Vec<_> = report.tables.iter().filter(|t| !t.identical()).collect();
    assert_eq!(drifted.len(), 1);
    assert_eq!(drifted[0].table, "rated_legs");
    assert!(
        drifted[0]
            .first_difference
            .as_ref()
            .unwrap()
            .starts_with("live: ")
    );
}

async fn a_bad_event_stops_only_its_projection(b: Backend) {
    let store = b.open().await;
    let db = ProjectionDb::connect(&b.url).await.unwrap();
    append_seeded(&store, 5, 200).await;
    let mut bad = ringledger_tests::harness::event(0, 0);
    bad.event_type = "tariff.published".into();
    let stream = format!("tariff-{}", uuid::Uuid::new_v4());
    let at = store
        .append(&stream, ExpectedVersion::NoStream, vec![bad])
        .await
        .unwrap();
    append_seeded(&store, 6, 100).await;
    let head = store.head_position().await.unwrap();

    let billing = Runner::new(
        db.clone(),
        store.clone(),
        Arc::new(projections::billing::Billing),
    )
    .await
    .unwrap();
    let err = billing.catch_up().await.unwrap_err();
    let RunnerError::Stopped { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        error.contains(&format!("position {}", at.first_position)),
        "{error}"
    );
    assert!(error.contains("tariff.published"), "{error}");
    let cp = billing.checkpoint().await.unwrap();
    assert_eq!(
        (cp.status.as_str(), cp.position),
        ("stopped", at.first_position - 1)
    );
    // It stays stopped: a restart does not skip the event.
    assert!(matches!(
        billing.catch_up().await,
        Err(RunnerError::Stopped { .. })
    ));

    // The others do not care about tariffs and keep going to the head.
    for p in [
        Arc::new(projections::routing_tables::RoutingTables)
            as Arc<dyn projections::runner::Projection>,
        Arc::new(projections::call_history::CallHistory),
    ] {
        let r = Runner::new(db.clone(), store.clone(), p).await.unwrap();
        assert_eq!(r.catch_up().await.unwrap(), head);
    }
}

/// Writes of every shape, some touching one row several times, sent as one batch: the rows
/// end as the same writes made one statement at a time would leave them.
async fn batched_writes_keep_their_order(b: Backend) {
    use projections::writes::{Value, Writes};
    let db = ProjectionDb::connect(&b.url).await.unwrap();
    sqlx::query(
        "CREATE TABLE w (a TEXT NOT NULL, b TEXT NOT NULL, label TEXT, n BIGINT NOT NULL, \
         PRIMARY KEY (a, b))",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    const KEY: &[&str] = &["a", "b"];
    let row = |a: &str, b: &str, label: Option<&str>, n: i64| -> Vec<Value> {
        vec![
            a.into(),
            b.into(),
            label.map(str::to_owned).into(),
            n.into(),
        ]
    };
    let mut w = Writes::default();
    for i in 0..50 {
        let a = format!("k{i}");
        w.insert(
            "w",
            &["a", "b", "label", "n"],
            &a,
            row(&a, "x", Some("new"), i),
        );
    }
    // k0: updated, deleted, inserted again, updated; k1: deleted; k2: counted up three times;
    // k3: replaced twice, k4 once; z is new, made by an upsert.
    w.update(
        "w",
        KEY,
        &["label", "n"],
        "k0",
        vec![
            "k0".into(),
            "x".into(),
            Some("one".to_owned()).into(),
            10.into(),
        ],
    );
    w.delete("w", KEY, "k0", vec!["k0".into(), "x".into()]);
    w.insert(
        "w",
        &["a", "b", "label", "n"],
        "k0",
        row("k0", "x", None, 20),
    );
    w.update(
        "w",
        KEY,
        &["label"],
        "k0",
        vec!["k0".into(), "x".into(), Some("two".to_owned()).into()],
    );
    w.delete("w", KEY, "k1", vec!["k1".into(), "x".into()]);
    for _ in 0..3 {
        w.add(
            "w",
            KEY,
            &["label"],
            &["n"],
            "k2",
            row("k2", "x", Some("ignored"), 5),
        );
    }
    w.upsert(
        "w",
        KEY,
        &["label", "n"],
        "k3",
        row("k3", "x", Some("first"), 1),
    );
    w.upsert(
        "w",
        KEY,
        &["label", "n"],
        "k3",
        row("k3", "x", Some("second"), 2),
    );
    w.upsert("w", KEY, &["label", "n"], "k4", row("k4", "x", None, 4));
    w.upsert("w", KEY, &["label", "n"], "z", row("z", "x", Some("z"), 0));
    let mut tx = db.begin().await.unwrap();
    w.flush(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(w.statements < 15, "{} statements", w.statements);

    let rows: Vec<(String, Option<String>, i64)> = sqlx::query(
        "SELECT a, label, n FROM w WHERE a IN ('k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'z') ORDER BY a",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect();
    let expected = [
        ("k0", Some("two"), 20),
        ("k2", Some("new"), 17),
        ("k3", Some("second"), 2),
        ("k4", None, 4),
        ("k5", Some("new"), 5),
        ("z", Some("z"), 0),
    ];
    let expected: Vec<(String, Option<String>, i64)> = expected
        .iter()
        .map(|(a, l, n)| (a.to_string(), l.map(str::to_owned), *n))
        .collect();
    assert_eq!(rows, expected);
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM w")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 50);
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_writes_keep_their_order() {
        super::batched_writes_keep_their_order(Backend::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_projections_equal_a_rebuild() {
        live_equals_rebuild(Backend::sqlite().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_event_stops_only_its_projection() {
        super::a_bad_event_stops_only_its_projection(Backend::sqlite().await).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_writes_keep_their_order() {
        super::batched_writes_keep_their_order(Backend::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_projections_equal_a_rebuild() {
        live_equals_rebuild(Backend::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_event_stops_only_its_projection() {
        super::a_bad_event_stops_only_its_projection(Backend::postgres().await).await;
    }
}
