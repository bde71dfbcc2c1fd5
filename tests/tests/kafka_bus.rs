//! The Kafka bus over librdkafka's in-process mock cluster (the real Kafka protocol): a
//! RoutingView fed from the topic equals one folded from the log, including when the relay
//! dies mid-stream and publishes some events twice, and across several partitions.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use infra::EventStore;
use infra::bus::cursor::RelayCursor;
use infra::bus::kafka::{BusConsumer, Relay};
use projections::RoutingView;
use projections::workload::Workload;
use rdkafka::mocking::MockCluster;
use ringledger_tests::harness::{Backend, append_workload};

async fn local_view(store: &dyn EventStore) -> RoutingView {
    let mut view = RoutingView::default();
    for e in store.read_all(0, 1_000_000).await.unwrap() {
        view.apply(&e).unwrap();
    }
    view
}

async fn view_from_kafka(brokers: &str, topic: &str, head: u64) -> (RoutingView, u64) {
    let mut consumer = BusConsumer::new(brokers, topic, 0).unwrap();
    let mut view = RoutingView::default();
    while view.position() < head {
        let e = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("stalled at {} of {head}", view.position()))
            .unwrap();
        view.apply(&e).unwrap();
    }
    (view, consumer.duplicates)
}

async fn relay(store: &Arc<dyn EventStore>, b: &Backend, brokers: &str) -> Relay {
    let cursor = RelayCursor::open(&b.url, "kafka").await.unwrap();
    Relay::new(store.clone(), brokers, "ringledger.events", cursor).unwrap()
}

fn workload(seed: u64) -> Workload {
    Workload::new(
        seed,
        chrono::Utc.with_ymd_and_hms(2026, 11, 4, 6, 0, 0).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_fed_from_kafka_equals_the_log() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("ringledger.events", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let b = Backend::sqlite().await;
    let store = b.open().await;
    let mut w = workload(41);
    append_workload(store.as_ref(), &mut w, 1_500).await;

    let relay = relay(&store, &b, &brokers).await;
    let head = store.head_position().await.unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), head);
    assert_eq!(relay.cursor().await.unwrap(), head, "the cursor is durable");

    let (view, duplicates) = view_from_kafka(&brokers, "ringledger.events", head).await;
    assert_eq!(duplicates, 0);
    assert!(
        view == local_view(store.as_ref()).await,
        "the Kafka-fed view differs from the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_resumes_and_consumers_drop_the_repeats() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("ringledger.events", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let b = Backend::sqlite().await;
    let store = b.open().await;
    let mut w = workload(42);
    append_workload(store.as_ref(), &mut w, 800).await;

    // A relay follows the log while appends go on, and is killed part way.
    let relay = relay(&store, &b, &brokers).await;
    let running = tokio::spawn(async move { relay.run(std::future::pending()).await });
    append_workload(store.as_ref(), &mut w, 800).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.abort();
    let _ = running.await;

    // The crash also lost the last cursor write: rewind it, as if it had never been saved.
    let cursor = RelayCursor::open(&b.url, "kafka").await.unwrap();
    let saved = cursor.get().await.unwrap();
    assert!(
        saved > 0,
        "the relay published something before it was killed"
    );
    cursor.set(saved / 2).await.unwrap();

    append_workload(store.as_ref(), &mut w, 400).await;
    let restarted = Relay::new(store.clone(), &brokers, "ringledger.events", cursor).unwrap();
    let head = store.head_position().await.unwrap();
    assert_eq!(restarted.publish_pending().await.unwrap(), head);

    let (view, duplicates) = view_from_kafka(&brokers, "ringledger.events", head).await;
    assert!(
        duplicates > 0,
        "events published twice were delivered twice and dropped"
    );
    assert!(
        view == local_view(store.as_ref()).await,
        "the Kafka-fed view differs from the log"
    );
}
