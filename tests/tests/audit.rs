//! `audit verify` catches every way of tampering with stored events, on SQLite and PostgreSQL:
//! rows altered, deleted, reordered, or altered with their own hash recomputed.

use infra::ExpectedVersion;
use infra::store::audit::verify_log;
use ringledger_tests::harness::{Backend, event};

async fn log_of_20(b: &Backend) {
    let store = b.open().await;
    for n in 0..20 {
        let stream = format!("test-{}", n % 4);
        store
            .append(&stream, ExpectedVersion::Any, vec![event(n % 4, n)])
            .await
            .unwrap();
    }
    let report = verify_log(store.as_ref()).await.unwrap();
    assert_eq!(report.first_break, None);
    assert_eq!((report.events, report.head_position), (20, 20));
}

async fn first_break(b: &Backend) -> (u64, String) {
    let store = b.open().await;
    let report = verify_log(store.as_ref()).await.unwrap();
    let brk = report.first_break.expect("tampering must be detected");
    (brk.position, brk.reason)
}

async fn altered_payload(b: Backend) {
    log_of_20(&b).await;
    b.execute_sql(r#"UPDATE events SET payload = '{"n": 999, "note": "x", "writer": 2}' WHERE global_position = 7"#)
        .await;
    let (position, reason) = first_break(&b).await;
    assert_eq!(position, 7, "{reason}");
    assert!(reason.contains("does not match its hash"), "{reason}");
}

async fn deleted_row(b: Backend) {
    log_of_20(&b).await;
    b.execute_sql("DELETE FROM events WHERE global_position = 7")
        .await;
    let (position, reason) = first_break(&b).await;
    assert_eq!(position, 8, "{reason}");
    assert!(reason.contains("missing"), "{reason}");
}

async fn reordered_rows(b: Backend) {
    log_of_20(&b).await;
    b.execute_sql(
        "UPDATE events SET global_position = -7 WHERE global_position = 7; \
         UPDATE events SET global_position = 7 WHERE global_position = 8; \
         UPDATE events SET global_position = 8 WHERE global_position = -7;",
    )
    .await;
    let (position, reason) = first_break(&b).await;
    assert_eq!(position, 7, "{reason}");
}

async fn altered_with_rehash(b: Backend) {
    log_of_20(&b).await;
    // Rewrite event 7's actor and replace its hash with one recomputed over the new content:
    // event 7 then checks out alone, and the chain breaks at event 8.
    let store = b.open().await;
    let mut e = store.read_all(6, 1).await.unwrap().remove(0);
    e.actor = "someone-else".into();
    e.hash = infra::store::hash::HashInput::from(&e).hash();
    b.execute_sql(&format!(
        "UPDATE events SET actor = 'someone-else', hash = '{}' WHERE global_position = 7",
        e.hash
    ))
    .await;
    let (position, reason) = first_break(&b).await;
    assert_eq!(position, 8, "{reason}");
    assert!(reason.contains("prev_hash"), "{reason}");
}

macro_rules! tamper_tests {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn an_altered_payload_is_caught() {
                altered_payload($make).await;
            }

            #[tokio::test]
            async fn a_deleted_row_is_caught() {
                deleted_row($make).await;
            }

            #[tokio::test]
            async fn reordered_rows_are_caught() {
                reordered_rows($make).await;
            }

            #[tokio::test]
            async fn an_alteration_with_a_recomputed_hash_is_caught() {
                altered_with_rehash($make).await;
            }
        }
    };
}

tamper_tests!(sqlite, Backend::sqlite().await);
tamper_tests!(postgres, Backend::postgres().await);
