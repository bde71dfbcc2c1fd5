//! A log moves between backends: exported from SQLite as NDJSON, imported into an empty
//! PostgreSQL store, both projected from position 0 — every projection table is identical.
//! A tampered export is refused before anything is written.

use chrono::TimeZone;
use infra::ExpectedVersion;
use infra::store::audit::verify_log;
use infra::store::transfer::{TransferError, export, import, verify_export};
use projections::db::ProjectionDb;
use projections::rebuild::{all_projections, compare_tables};
use projections::runner::Runner;
use projections::workload::Workload;
use ringledger_tests::harness::{Backend, append_workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_gives_identical_projections() {
    let (from, to) = (Backend::sqlite().await, Backend::postgres().await);
    let source = from.open().await;
    let mut w = Workload::new(
        31,
        chrono::Utc.with_ymd_and_hms(2026, 11, 3, 7, 0, 0).unwrap(),
    );
    append_workload(source.as_ref(), &mut w, 2_500).await;
    let mut ndjson = Vec::new();
    let exported = export(source.as_ref(), 0, &mut ndjson).await.unwrap();
    assert_eq!(exported, source.head_position().await.unwrap());

    let target = to.open().await;
    assert_eq!(verify_export(ndjson.as_slice()).unwrap(), exported);
    let report = import(target.as_ref(), ndjson.as_slice()).await.unwrap();
    assert_eq!(report.events, exported);
    assert_eq!(target.head_position().await.unwrap(), exported);
    assert_eq!(verify_log(target.as_ref()).await.unwrap().first_break, None);
    // Same events, same order, same streams and versions.
    let (a, b) = (
        source.read_all(0, 10_000).await.unwrap(),
        target.read_all(0, 10_000).await.unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| (
        x.event_id,
        &x.stream_id,
        x.stream_version,
        x.global_position
    ) == (
        y.event_id,
        &y.stream_id,
        y.stream_version,
        y.global_position
    )));

    // Importing twice is refused: the target is no longer empty.
    assert!(matches!(
        import(target.as_ref(), ndjson.as_slice()).await,
        Err(TransferError::NotEmpty(_))
    ));

    let (db_a, db_b) = (
        ProjectionDb::connect(&from.url).await.unwrap(),
        ProjectionDb::connect(&to.url).await.unwrap(),
    );
    for p in all_projections() {
        Runner::new(db_a.clone(), source.clone(), p.clone())
            .await
            .unwrap()
            .catch_up()
            .await
            .unwrap();
        Runner::new(db_b.clone(), target.clone(), p.clone())
            .await
            .unwrap()
            .catch_up()
            .await
            .unwrap();
        for t in compare_tables(&db_a, &db_b, p.as_ref()).await.unwrap() {
            assert!(
                t.identical(),
                "{}.{}: {:?}",
                p.name(),
                t.table,
                t.first_difference
            );
            assert_eq!(t.live_rows, t.rebuilt_rows);
        }
    }
}

#[tokio::test]
async fn a_tampered_export_fails_verification_at_the_altered_line() {
    let from = Backend::sqlite().await;
    let source = from.open().await;
    for i in 0..10 {
        source
            .append(
                "test-a",
                ExpectedVersion::Any,
                vec![ringledger_tests::harness::event(0, i)],
            )
            .await
            .unwrap();
    }
    let mut ndjson = Vec::new();
    export(source.as_ref(), 0, &mut ndjson).await.unwrap();
    let text = String::from_utf8(ndjson)
        .unwrap()
        .replace("\"n\":6", "\"n\":60");
    let err = verify_export(text.as_bytes()).unwrap_err();
    assert!(matches!(err, TransferError::Input { line: 7, .. }), "{err}");
    assert!(err.to_string().contains("does not match its hash"), "{err}");
}
