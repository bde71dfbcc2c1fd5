//! End to end through a real broker process (Tansu, a Kafka-compatible broker): the test
//! appends a workload to the log while a `ringledger bus relay` process publishes it; the relay
//! is killed mid-stream and restarted; a `ringledger bus worker` process keeps the SQL
//! projections in its own database from the topic. Its tables must equal a local projection of
//! the log, table by table.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infra::ExpectedVersion;
use projections::db::ProjectionDb;
use projections::rebuild::{all_projections, compare_tables};
use projections::runner::Runner;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tansu() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = format!("{home}/.cargo/bin/tansu");
    if std::path::Path::new(&installed).exists() {
        installed
    } else {
        "tansu".into()
    }
}

fn ringledger(dir: &std::path::Path, store: &str, brokers: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringledger"));
    c.current_dir(dir)
        .env("RINGLEDGER_STORE__URL", store)
        .env("RINGLEDGER_BUS__KAFKA__BROKERS", brokers)
        .env("RINGLEDGER_BUS__KAFKA__TOPIC", "ringledger.e2e")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_worker_processes_through_a_broker_process() {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let broker = Killed(
        Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Tansu broker must be installed (scripts/test installs it)"),
    );
    let brokers = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&brokers).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(
                "ringledger.e2e",
                3,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("log.db").display());
    let store = infra::open_store(&store_url).await.unwrap();
    let mut w = projections::workload::Workload::new(77, chrono::Utc::now());
    let mut fill = async |n: usize| {
        let mut written = 0;
        while written < n {
            for a in w.step() {
                written += a.events.len();
                store
                    .append(&a.stream_id, ExpectedVersion::Any, a.new_events("e2e"))
                    .await
                    .unwrap();
            }
        }
    };

    fill(600).await;
    let relay = ringledger(dir.path(), &store_url, &brokers)
        .args(["bus", "relay"])
        .spawn()
        .unwrap();
    fill(1_200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(Killed(relay)); // SIGKILL mid-stream: no clean shutdown, no final cursor write
    fill(600).await;
    let _relay = Killed(
        ringledger(dir.path(), &store_url, &brokers)
            .args(["bus", "relay"])
            .spawn()
            .unwrap(),
    );
    let head = store.head_position().await.unwrap();

    let worker_db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("worker.db").display()
    );
    let mut worker = Killed(
        ringledger(dir.path(), &store_url, &brokers)
            .args([
                "bus",
                "worker",
                "--projections-db",
                &worker_db,
                "--until",
                &head.to_string(),
            ])
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never reached position {head}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "worker failed: {status:?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut worker.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(
        stdout.contains(&format!("caught up to position {head}")),
        "{stdout}"
    );

    let local = ProjectionDb::connect(&store_url).await.unwrap();
    let remote = ProjectionDb::connect(&worker_db).await.unwrap();
    for p in all_projections() {
        Runner::new(local.clone(), store.clone(), p.clone())
            .await
            .unwrap()
            .catch_up()
            .await
            .unwrap();
        for t in compare_tables(&local, &remote, p.as_ref()).await.unwrap() {
            assert!(
                t.identical(),
                "{}.{}: {:?}",
                p.name(),
                t.table,
                t.first_difference
            );
        }
    }
    drop(broker);
}
