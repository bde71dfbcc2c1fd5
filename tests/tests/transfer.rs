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
    let summary = verify_export(ndjson.as_slice(), true).unwrap();
    assert_eq!(summary.events, exported);
    let report = import(target.as_ref(), &summary, ndjson.as_slice())
        .await
        .unwrap();
    assert_eq!(report.events, exported);
    // The copy is framed: import.started first, import.completed last.
    assert_eq!(target.head_position().await.unwrap(), exported + 2);
    let chain = verify_log(target.as_ref()).await.unwrap();
    assert_eq!(chain.first_break, None);
    assert_eq!(chain.incomplete_import, None);
    // Same events, same order, same streams and versions; positions are the target's own
    // (one after the source's, behind import.started).
    let (a, b) = (
        source.read_all(0, 10_000).await.unwrap(),
        target.read_all(0, 10_000).await.unwrap(),
    );
    assert_eq!(b.first().unwrap().event_type, "import.started");
    assert_eq!(b.last().unwrap().event_type, "import.completed");
    let copied = &b[1..b.len() - 1];
    assert_eq!(copied.len(), a.len());
    assert!(a.iter().zip(copied).all(|(x, y)| (
        x.event_id,
        &x.stream_id,
        x.stream_version,
        x.global_position + 1
    ) == (
        y.event_id,
        &y.stream_id,
        y.stream_version,
        y.global_position
    )));

    // Importing twice is refused: the target already holds the whole export.
    assert!(matches!(
        import(target.as_ref(), &summary, ndjson.as_slice()).await,
        Err(TransferError::AlreadyImported(_))
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
            if t.table == "call_timeline" {
                // Keyed by global position, one apart: compared without it below.
                continue;
            }
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
    let timeline = |db: ProjectionDb| async move {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT call_id, at, event_type, detail FROM call_timeline ORDER BY position",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        rows
    };
    let (ta, tb) = (timeline(db_a).await, timeline(db_b).await);
    assert!(!ta.is_empty());
    assert_eq!(ta, tb);
}

/// An import cut short (here: the copy stopped after 300 of the export's events, as a killed
/// process leaves it) is reported by the verification, not taken for a whole log; running the
/// import again finishes it. An event the target cannot store stops the import before it
/// writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_is_recognised_and_resumed() {
    let (from, to) = (Backend::sqlite().await, Backend::postgres().await);
    let source = from.open().await;
    let mut w = Workload::new(
        41,
        chrono::Utc.with_ymd_and_hms(2026, 11, 3, 7, 0, 0).unwrap(),
    );
    append_workload(source.as_ref(), &mut w, 1_000).await;
    let mut ndjson = Vec::new();
    let exported = export(source.as_ref(), 0, &mut ndjson).await.unwrap();
    let summary = verify_export(ndjson.as_slice(), true).unwrap();
    let target = to.open().await;
    // The first 300 lines only: what a process killed part way leaves.
    let text = String::from_utf8(ndjson.clone()).unwrap();
    let cut: String = text.lines().take(300).map(|l| format!("{l}\n")).collect();
    let partial = import(target.as_ref(), &summary, cut.as_bytes()).await;
    assert!(
        matches!(partial, Err(TransferError::Incomplete { copied: 300, .. })),
        "{partial:?}"
    );
    let chain = verify_log(target.as_ref()).await.unwrap();
    assert_eq!(chain.first_break, None);
    let incomplete = chain
        .incomplete_import
        .expect("an incomplete copy is reported");
    assert_eq!((incomplete.copied, incomplete.expected), (300, exported));
    // Run again with the whole export: it resumes after the 300 and completes.
    let report = import(target.as_ref(), &summary, ndjson.as_slice())
        .await
        .unwrap();
    assert_eq!((report.resumed_after, report.events), (300, exported - 300));
    let chain = verify_log(target.as_ref()).await.unwrap();
    assert_eq!(chain.incomplete_import, None);
    assert_eq!(chain.first_break, None);
    assert_eq!(target.head_position().await.unwrap(), exported + 2);

    // A NUL character (PostgreSQL cannot store one) is refused while verifying: nothing written.
    let empty = Backend::postgres().await;
    let fresh = empty.open().await;
    let bad = text.replacen("\"workload\"", "\"work\\u0000load\"", 1);
    assert_ne!(bad, text);
    let err = verify_export(bad.as_bytes(), false).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    assert_eq!(fresh.head_position().await.unwrap(), 0);
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
    let err = verify_export(text.as_bytes(), true).unwrap_err();
    assert!(matches!(err, TransferError::Input { line: 7, .. }), "{err}");
    assert!(err.to_string().contains("does not match its hash"), "{err}");
}
