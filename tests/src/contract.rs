//! The event-store contract (docs/ARCHITECTURE.md, "The log"), as functions every backend's
//! test file runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use infra::store::hash::{GENESIS, HashInput};
use infra::{EventStore, ExpectedVersion, RecordedEvent, StoreError};
use uuid::Uuid;

use crate::harness::{Backend, event};

fn stream() -> String {
    format!("test-{}", Uuid::new_v4().simple())
}

/// Checks that `events` (consecutive in global order) chain their hashes.
pub fn assert_chained(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "chain broken at {}",
            pair[1].global_position
        );
    }
    for e in events {
        assert_eq!(
            HashInput::from(e).hash(),
            e.hash,
            "hash of {} does not match",
            e.global_position
        );
    }
}

pub async fn append_then_read_back_the_envelope(b: &Backend) {
    let store = b.open().await;
    let s = stream();
    let mut written = vec![event(0, 1), event(0, 2), event(0, 3)];
    written[1].causation_id = Some(written[0].event_id);
    let result = store
        .append(&s, ExpectedVersion::NoStream, written.clone())
        .await
        .unwrap();
    assert_eq!((result.first_version, result.last_version), (1, 3));
    assert_eq!(result.last_position - result.first_position, 2);

    let read = store.read_stream(&s, 1, 100).await.unwrap();
    assert_eq!(read.len(), 3);
    for (i, (r, w)) in read.iter().zip(&written).enumerate() {
        assert_eq!(r.event_id, w.event_id);
        assert_eq!(r.stream_id, s);
        assert_eq!(r.stream_version, i as u64 + 1);
        assert_eq!(r.event_type, w.event_type);
        assert_eq!(r.payload, w.payload);
        assert_eq!(r.actor, w.actor);
        assert_eq!(r.correlation_id, w.correlation_id);
        assert_eq!(r.causation_id, w.causation_id);
        assert_eq!(
            r.occurred_at.timestamp_micros(),
            w.occurred_at.timestamp_micros()
        );
        assert!(r.recorded_at >= r.occurred_at - chrono::Duration::seconds(5));
    }
    if b.global_chain {
        assert_eq!(
            read[0].prev_hash, GENESIS,
            "the first event of an empty log chains to genesis"
        );
        assert_chained(&read);
    } else {
        assert_eq!(
            read[0].prev_hash, GENESIS,
            "the first event of a stream chains to genesis"
        );
        assert!(read.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    }
    assert_eq!(store.read_stream(&s, 3, 100).await.unwrap().len(), 1);
    assert_eq!(
        store.read_stream(&s, 2, 1).await.unwrap()[0].stream_version,
        2
    );
    assert_eq!(store.head_position().await.unwrap(), result.last_position);
}

pub async fn expected_versions_are_enforced(b: &Backend) {
    let store = b.open().await;
    let s = stream();
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(0, 1)])
        .await
        .unwrap();
    let conflict = store
        .append(&s, ExpectedVersion::NoStream, vec![event(0, 2)])
        .await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict { actual: 1, .. })),
        "{conflict:?}"
    );
    let stale = store
        .append(&s, ExpectedVersion::Exact(5), vec![event(0, 2)])
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { actual: 1, .. })),
        "{stale:?}"
    );
    store
        .append(&s, ExpectedVersion::Exact(1), vec![event(0, 2)])
        .await
        .unwrap();
    let any = store
        .append(&s, ExpectedVersion::Any, vec![event(0, 3)])
        .await
        .unwrap();
    assert_eq!(any.last_version, 3);
    assert_eq!(store.read_stream(&s, 1, 100).await.unwrap().len(), 3);
}

/// Two writers race on one stream, many rounds: exactly one wins each version.
pub async fn two_writers_race_on_one_stream(b: &Backend) {
    let (one, two) = (b.open().await, b.open().await);
    let s = stream();
    for version in 0..40u64 {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let (a, c) = tokio::join!(
            one.append(&s, expected, vec![event(1, version as usize)]),
            two.append(&s, expected, vec![event(2, version as usize)]),
        );
        let wins = [&a, &c].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {version}: {a:?} / {c:?}");
        for r in [a, c] {
            if let Err(e) = r {
                assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
            }
        }
    }
    let events = one.read_stream(&s, 1, 1000).await.unwrap();
    assert_eq!(events.len(), 40);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1)
    );
}

/// 16 concurrent writers (spread over several store handles, as over several processes)
/// while a subscriber reads: every event exactly once, in strictly increasing position, no gap.
pub async fn concurrent_writers_and_a_subscriber(b: &Backend, rounds: usize) {
    const WRITERS: usize = 16;
    const APPENDS: usize = 25;
    let mut handles: Vec<Arc<dyn EventStore>> = Vec::new();
    for _ in 0..4 {
        handles.push(b.open().await);
    }
    for round in 0..rounds {
        let start = handles[0].head_position().await.unwrap();
        let mut subscription = handles[0].subscribe_all(start);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = handles[w % handles.len()].clone();
                tokio::spawn(async move {
                    let s = stream();
                    let mut ids = Vec::new();
                    for n in 0..APPENDS {
                        let batch: Vec<_> = (0..1 + n % 3).map(|k| event(w, n * 10 + k)).collect();
                        ids.extend(batch.iter().map(|e| e.event_id));
                        store.append(&s, ExpectedVersion::Any, batch).await.unwrap();
                    }
                    ids
                })
            })
            .collect();
        let mut written = HashSet::new();
        for w in writers {
            written.extend(w.await.unwrap());
        }
        let mut seen = Vec::with_capacity(written.len());
        while seen.len() < written.len() {
            let next = tokio::time::timeout(Duration::from_secs(20), subscription.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "round {round}: subscriber stalled after {} of {}",
                        seen.len(),
                        written.len()
                    )
                })
                .expect("subscription ended")
                .expect("subscription error");
            seen.push(next);
        }
        let ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
        assert_eq!(
            ids.len(),
            seen.len(),
            "round {round}: an event was delivered twice"
        );
        assert_eq!(
            ids, written,
            "round {round}: delivered events differ from written ones"
        );
        for pair in seen.windows(2) {
            assert!(
                pair[1].global_position > pair[0].global_position,
                "round {round}: out of order"
            );
        }
        if b.dense_positions {
            for (i, e) in seen.iter().enumerate() {
                assert_eq!(
                    e.global_position,
                    start + 1 + i as u64,
                    "round {round}: gap before {}",
                    e.global_position
                );
            }
            assert_chained(&seen);
        }
        let again = handles[1].read_all(start, 10_000).await.unwrap();
        assert_eq!(
            again.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            seen.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            "round {round}: read_all and the subscription disagree"
        );
    }
}

/// A client whose acknowledgement was lost retries the same events: no duplicates, and the
/// retry answers with the original result.
pub async fn idempotent_retry_after_a_lost_acknowledgement(b: &Backend) {
    let store = b.open().await;
    let s = stream();
    let events = vec![event(0, 1), event(0, 2)];
    let first = store
        .append(&s, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    // The stream moves on before the retry arrives; the retry still gets the original answer.
    store
        .append(&s, ExpectedVersion::Exact(2), vec![event(0, 3)])
        .await
        .unwrap();
    let retry = store
        .append(&s, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    assert_eq!(retry, first);
    assert_eq!(store.read_stream(&s, 1, 100).await.unwrap().len(), 3);

    // An append abandoned mid-flight (the caller's connection dropped) then retried.
    let s2 = stream();
    let lost = vec![event(1, 1), event(1, 2), event(1, 3)];
    let in_flight = {
        let store = store.clone();
        let (s2, lost) = (s2.clone(), lost.clone());
        tokio::spawn(async move { store.append(&s2, ExpectedVersion::NoStream, lost).await })
    };
    in_flight.abort();
    let _ = in_flight.await;
    let retried = store
        .append(&s2, ExpectedVersion::NoStream, lost.clone())
        .await
        .unwrap();
    assert_eq!((retried.first_version, retried.last_version), (1, 3));
    let stored = store.read_stream(&s2, 1, 100).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        lost.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
}

/// An append that fails in the middle leaves none of its events, and appends sharing its
/// group commit are unaffected.
pub async fn a_failure_mid_append_leaves_none_of_it(b: &Backend) {
    let store = b.open().await;
    let other = stream();
    let taken = event(9, 9);
    store
        .append(&other, ExpectedVersion::NoStream, vec![taken.clone()])
        .await
        .unwrap();

    if b.global_chain {
        // An id already used in another stream, third of four events.
        let s = stream();
        let attempt = vec![event(0, 1), event(0, 2), taken.clone(), event(0, 4)];
        let refused = store.append(&s, ExpectedVersion::NoStream, attempt).await;
        assert!(
            matches!(refused, Err(StoreError::DuplicateEventId { event_id }) if event_id == taken.event_id),
            "{refused:?}"
        );
        assert!(store.read_stream(&s, 1, 100).await.unwrap().is_empty());
    }

    if b.database_checks {
        // A refusal from the database itself (the event_type CHECK), queued together with
        // good appends so they share one transaction.
        let mut bad = vec![event(0, 1), event(0, 2), event(0, 3)];
        bad[1].event_type = "x".repeat(300);
        let bad_stream = stream();
        let good: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .append(&stream(), ExpectedVersion::NoStream, vec![event(i, 0)])
                        .await
                })
            })
            .collect();
        let result = store
            .append(&bad_stream, ExpectedVersion::NoStream, bad)
            .await;
        assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
        for g in good {
            g.await
                .unwrap()
                .expect("a good append sharing the batch must succeed");
        }
        assert!(
            store
                .read_stream(&bad_stream, 1, 100)
                .await
                .unwrap()
                .is_empty()
        );
        let head = store.head_position().await.unwrap();
        let all = store.read_all(0, 100_000).await.unwrap();
        assert_eq!(
            all.len() as u64,
            head,
            "no hole was left where the failed append was"
        );
        assert_chained(&all);
    }
}

pub async fn subscriptions_catch_up_then_go_live(b: &Backend) {
    let store = b.open().await;
    let start = store.head_position().await.unwrap();
    let s = stream();
    store
        .append(
            &s,
            ExpectedVersion::Any,
            (0..5).map(|n| event(0, n)).collect(),
        )
        .await
        .unwrap();
    let mut sub = store.subscribe_all(start);
    for n in 0..5 {
        let e = sub.next().await.unwrap().unwrap();
        assert_eq!(e.payload["n"], n);
    }
    let late = tokio::spawn({
        let store = store.clone();
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            store
                .append(
                    &s,
                    ExpectedVersion::Exact(5),
                    vec![event(0, 5), event(0, 6)],
                )
                .await
        }
    });
    let mut live = Vec::new();
    for n in 5..7 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.payload["n"], n);
        live.push(e);
    }
    late.await.unwrap().unwrap();
    let page = store.read_all(start, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = store.read_all(page[1].global_position, 100).await.unwrap();
    assert_eq!(rest.len(), 5);
    // Events delivered live (from the writer's memory in the same process) are exactly what
    // the log holds, envelope and all.
    assert_eq!(live, rest[3..].to_vec());
}

/// What was acknowledged is there after the store is closed and opened again, and the chain
/// continues from it.
pub async fn acknowledged_events_survive_a_reopen(b: &Backend) {
    let s = stream();
    let first = {
        let store = b.open().await;
        store
            .append(
                &s,
                ExpectedVersion::NoStream,
                vec![event(0, 1), event(0, 2)],
            )
            .await
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let store = b.open().await;
    let read = store.read_stream(&s, 1, 10).await.unwrap();
    assert_eq!(read.len(), 2);
    let next = store
        .append(&s, ExpectedVersion::Exact(2), vec![event(0, 3)])
        .await
        .unwrap();
    assert!(next.first_position > first.last_position);
    if b.global_chain {
        assert_chained(&store.read_all(0, 100_000).await.unwrap());
    }
}

pub async fn bad_appends_are_refused(b: &Backend) {
    let store = b.open().await;
    let empty = store.append(&stream(), ExpectedVersion::Any, vec![]).await;
    assert!(
        matches!(empty, Err(StoreError::InvalidAppend(_))),
        "{empty:?}"
    );
    let e = event(0, 0);
    let twice = store
        .append(&stream(), ExpectedVersion::Any, vec![e.clone(), e])
        .await;
    assert!(
        matches!(twice, Err(StoreError::DuplicateEventId { .. })),
        "{twice:?}"
    );
    let no_name = store
        .append("", ExpectedVersion::Any, vec![event(0, 0)])
        .await;
    assert!(
        matches!(no_name, Err(StoreError::InvalidAppend(_))),
        "{no_name:?}"
    );
}
