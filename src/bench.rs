//! `ringledger bench append`: durable appends per second and append latency, one event per
//! append, with N concurrent writers each on its own stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use domain::DomainEvent;
use domain::device::{DeviceEvent, Transport};
use infra::{EventStore, ExpectedVersion, NewEvent};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable appends/s and latency percentiles for each writer count.
    Append {
        /// Store to measure; default: a fresh SQLite file in a temporary directory.
        #[arg(long)]
        store: Option<String>,
        /// Comma-separated concurrent writer counts.
        #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
        writers: Vec<usize>,
        /// Seconds to run each writer count.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Rebuild speed of the SQL projections: fills a log with a realistic workload, then
    /// rebuilds routing + billing from position 0 into a fresh schema (or file).
    Rebuild {
        /// Store (and projection database); default: a fresh SQLite file.
        #[arg(long)]
        store: Option<String>,
        #[arg(long, default_value_t = 200_000)]
        events: usize,
    },
    /// Lag from the start of an append to the event being visible in a RoutingView, at a
    /// steady append rate; in-process, or through Kafka (librdkafka's mock cluster, or the
    /// brokers given).
    Lag {
        #[arg(long, default_value_t = 5_000)]
        rate: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Go through Kafka: `mock` for an in-process mock cluster, or a bootstrap list.
        #[arg(long)]
        kafka: Option<String>,
    },
    /// Rebuild speed of the in-memory RoutingView over a generated realistic workload.
    RoutingView {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Fill one account's billing tables with rated legs, for benchmarking the billing reads
    /// (e.g. with wrk) against `ringledger serve` on the same store.
    SeedRatedLegs {
        #[arg(long)]
        store: String,
        #[arg(long)]
        account: String,
        #[arg(long, default_value_t = 1_000_000)]
        legs: usize,
    },
    /// Provision IP devices of one new account straight into the log, and write the SIPp
    /// injection file (`-inf`) naming them, for the REGISTER benchmark.
    SeedDevices {
        #[arg(long)]
        store: String,
        #[arg(long, default_value = "ringledger")]
        realm: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value = "sipp-users.csv")]
        csv: String,
    },
    /// Subscribers for the mixed extension benchmark (scripts/bench-extension-mix): each an
    /// account with a verified extension and a mapped access number, and SIPp's files.
    SeedExtensionMix {
        #[arg(long)]
        store: String,
        #[arg(long, default_value_t = 1_500)]
        count: usize,
        /// Where inbound.csv and through.csv are written.
        #[arg(long, default_value = ".")]
        dir: String,
    },
    /// The billing projection caught up with the log, then its rated legs per path.
    BillingTotals {
        #[arg(long)]
        store: String,
    },
    /// Packets one core relays: relays on a single-threaded runtime, fed by a generator on
    /// another thread.
    RtpRelay {
        /// Calls relayed at once (each two port pairs).
        #[arg(long, default_value_t = 100)]
        calls: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What in-band DTMF detection (Goertzel on decoded PCMU) costs per call, on one thread.
    DtmfInband {
        /// Callers keying at once, each with its own detector.
        #[arg(long, default_value_t = 1000)]
        calls: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// How many access-number menu calls one core serves: relays with the menu's endpoint
    /// (dial tone played, in-band detection on) on one thread, sockets included.
    KeypadMenu {
        #[arg(long, default_value_t = 1000)]
        calls: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Register extensions through a running server's API at a fixed rate; latency
    /// percentiles, then every 201 checked against the log.
    HttpExtensions {
        /// The API's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An admin API key.
        #[arg(long, env = "BENCH_KEY")]
        key: String,
        #[arg(long, default_value_t = 500)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Live tails kept open and read during the load (an auditor key in --auditor-key or
        /// BENCH_AUDITOR_KEY: a RINGLEDGER_* variable would be read as config), to measure
        /// what each costs the writers.
        #[arg(long, default_value_t = 0)]
        tails: usize,
        #[arg(long, env = "BENCH_AUDITOR_KEY", default_value = "")]
        auditor_key: String,
    },
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Append {
            store,
            writers,
            seconds,
        } => append(store, writers, seconds).await,
        BenchCommand::RoutingView { events } => routing_view(events),
        BenchCommand::Rebuild { store, events } => rebuild(store, events).await,
        BenchCommand::Lag {
            rate,
            seconds,
            kafka,
        } => lag(rate, seconds, kafka).await,
        BenchCommand::SeedRatedLegs {
            store,
            account,
            legs,
        } => crate::bench_api::seed_rated_legs(&store, &account, legs).await,
        BenchCommand::SeedDevices {
            store,
            realm,
            count,
            csv,
        } => crate::bench_sip::seed_devices(&store, &realm, count, &csv).await,
        BenchCommand::SeedExtensionMix { store, count, dir } => {
            crate::bench_sip::seed_extension_mix(&store, count, &dir).await
        }
        BenchCommand::BillingTotals { store } => crate::bench_sip::billing_totals(&store).await,
        BenchCommand::RtpRelay { calls, seconds } => {
            tokio::task::spawn_blocking(move || crate::bench_rtp::rtp_relay(calls, seconds)).await?
        }
        BenchCommand::DtmfInband { calls, seconds } => {
            tokio::task::spawn_blocking(move || crate::bench_dtmf::dtmf_inband(calls, seconds))
                .await?
        }
        BenchCommand::KeypadMenu { calls, seconds } => {
            tokio::task::spawn_blocking(move || crate::bench_keypad::keypad_menu(calls, seconds))
                .await?
        }
        BenchCommand::HttpExtensions {
            url,
            key,
            rate,
            seconds,
            tails,
            auditor_key,
        } => {
            let tails = crate::bench_api::LiveTails {
                count: tails,
                key: auditor_key,
            };
            crate::bench_api::http_extensions(&url, &key, rate, seconds, &tails).await
        }
    }
}

async fn rebuild(store: Option<String>, events: usize) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let url =
        store.unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("bench.db").display()));
    let store = infra::open_store(&url).await?;
    let fill = Instant::now();
    let mut workload = projections::workload::Workload::new(rand_seed(), chrono::Utc::now());
    let start_head = store.head_position().await?;
    let mut pending = Vec::new();
    let mut written = 0;
    // Streams the steps in flight append to: a step touching one of them waits for those to
    // commit first, so every stream's events reach the log in the order the workload made them.
    let mut in_flight = std::collections::HashSet::new();
    while written < events {
        // Appends of one step go in order; steps run up to 64 at a time.
        let steps: Vec<_> = (0..64).map(|_| workload.step()).collect();
        for step in steps {
            if step.iter().any(|a| in_flight.contains(&a.stream_id)) {
                for p in pending.drain(..) {
                    p.await??;
                }
                in_flight.clear();
            }
            in_flight.extend(step.iter().map(|a| a.stream_id.clone()));
            written += step.iter().map(|a| a.events.len()).sum::<usize>();
            let store = store.clone();
            pending.push(tokio::spawn(async move {
                for a in step {
                    store
                        .append(&a.stream_id, ExpectedVersion::Any, a.new_events("bench"))
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for p in pending.drain(..) {
            p.await??;
        }
        in_flight.clear();
    }
    let head = store.head_position().await?;
    println!(
        "filled: {} events in {:.1} s (log head {head}, {} events before)",
        head - start_head,
        fill.elapsed().as_secs_f64(),
        start_head
    );
    let db = projections::db::ProjectionDb::connect(&url).await?;
    for p in projections::rebuild::all_projections()
        .into_iter()
        .filter(|p| p.name() != "call_history")
    {
        let name = p.name();
        let target = projections::rebuild::fresh_target(&db, name).await?;
        let runner = projections::runner::Runner::new(target, store.clone(), p).await?;
        let started = Instant::now();
        let position = runner.catch_up().await?;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "rebuild {name:<8}: {position} events in {elapsed:.1} s = {:.0} events/s",
            position as f64 / elapsed
        );
    }
    Ok(())
}

async fn lag(rate: usize, seconds: u64, kafka: Option<String>) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let url = format!("sqlite://{}", tmp.path().join("lag.db").display());
    let store = infra::open_store(&url).await?;
    let total = rate * seconds as usize;
    // One warm-up event goes first and the timed run starts once the reader has it: the
    // figures are the steady path's, not the first connection's (reported apart).
    let (warm_tx, warm_rx) = tokio::sync::oneshot::channel::<Duration>();
    let mut warm_tx = Some(warm_tx);

    // The reader: a RoutingView fed in-process or from Kafka; it records each event's lag.
    // Kept alive to the end of the run when the bench brings its own cluster.
    let mut _mock_cluster = None;
    // Each event's lag, with when it was made (to see the lag over the run).
    let reader: tokio::task::JoinHandle<anyhow::Result<Vec<(Made, u32)>>> = match kafka.as_deref() {
        None => {
            let mut events = store.subscribe_all(0);
            tokio::spawn(async move {
                let mut view = projections::RoutingView::default();
                let mut lags = Vec::with_capacity(total);
                while lags.len() < total {
                    let Some(e) = futures::StreamExt::next(&mut events).await else {
                        break;
                    };
                    let e = e?;
                    view.apply(&e)?;
                    if let Some(tx) = warm_tx.take() {
                        let _ = tx.send(lag_of(e.occurred_at));
                        continue;
                    }
                    lags.push((e.occurred_at, lag_us(e.occurred_at)));
                }
                Ok(lags)
            })
        }
        Some(target) => {
            let brokers = if target == "mock" {
                let cluster = rdkafka::mocking::MockCluster::new(1)?;
                cluster.create_topic("ringledger.lag", 3, 1)?;
                let b = cluster.bootstrap_servers();
                _mock_cluster = Some(cluster);
                b
            } else {
                target.to_owned()
            };
            let cursor = infra::bus::cursor::RelayCursor::open(&url, "lag").await?;
            let relay =
                infra::bus::kafka::Relay::new(store.clone(), &brokers, "ringledger.lag", cursor)?;
            tokio::spawn(async move { relay.run(std::future::pending()).await });
            let mut consumer = infra::bus::kafka::BusConsumer::new(&brokers, "ringledger.lag", 0)?;
            tokio::spawn(async move {
                let mut view = projections::RoutingView::default();
                let mut lags = Vec::with_capacity(total);
                while lags.len() < total {
                    let e = consumer.next().await?;
                    view.apply(&e)?;
                    if let Some(tx) = warm_tx.take() {
                        let _ = tx.send(lag_of(e.occurred_at));
                        continue;
                    }
                    lags.push((e.occurred_at, lag_us(e.occurred_at)));
                }
                Ok(lags)
            })
        }
    };

    store
        .append(
            &format!("device-{}", uuid::Uuid::now_v7()),
            ExpectedVersion::NoStream,
            vec![registration(u64::MAX)?],
        )
        .await?;
    let first_lag = tokio::time::timeout(Duration::from_secs(30), warm_rx).await??;
    // The writer: every 10 ms, rate/100 appends of one registration each, concurrently.
    let per_tick = (rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    let mut sent = 0;
    let mut inflight = Vec::new();
    while sent < total {
        tick.tick().await;
        for _ in 0..per_tick.min(total - sent) {
            let store = store.clone();
            let event = registration(sent as u64)?;
            sent += 1;
            inflight.push(tokio::spawn(async move {
                store
                    .append(
                        &format!("device-{}", uuid::Uuid::now_v7()),
                        ExpectedVersion::NoStream,
                        vec![event],
                    )
                    .await
            }));
        }
        inflight.retain(|t: &tokio::task::JoinHandle<_>| !t.is_finished());
    }
    for t in inflight {
        t.await??;
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    let made = tokio::time::timeout(Duration::from_secs(60), reader).await???;
    let first = made
        .iter()
        .map(|(at, _)| *at)
        .min()
        .unwrap_or_else(chrono::Utc::now);
    let mut lags: Vec<u32> = made.iter().map(|(_, lag)| *lag).collect();
    lags.sort_unstable();
    // The tail by the second of the run the events were made in: a slow start shows apart
    // from a steady tail.
    let mut by_second: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for (at, lag) in &made {
        by_second
            .entry((*at - first).num_seconds())
            .or_default()
            .push(*lag);
    }
    let seconds_p99: Vec<String> = by_second
        .into_values()
        .map(|mut l| {
            l.sort_unstable();
            format!("{:.0}", percentile(&l, 0.99))
        })
        .collect();
    println!(
        "lag via {}: {} events at {:.0} events/s; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        kafka
            .as_deref()
            .map_or("in-process subscription".to_owned(), |k| format!(
                "kafka ({k})"
            )),
        lags.len(),
        achieved,
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0)
    );
    println!(
        "p99 ms by second of the run: {}; the warm-up event (first connection) took {:.0} ms",
        seconds_p99.join(" "),
        first_lag.as_secs_f64() * 1000.0
    );
    Ok(())
}

type Made = chrono::DateTime<chrono::Utc>;

fn lag_of(occurred_at: chrono::DateTime<chrono::Utc>) -> Duration {
    (chrono::Utc::now() - occurred_at)
        .to_std()
        .unwrap_or_default()
}

fn lag_us(occurred_at: chrono::DateTime<chrono::Utc>) -> u32 {
    u32::try_from(lag_of(occurred_at).as_micros()).unwrap_or(u32::MAX)
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn routing_view(events: usize) -> anyhow::Result<()> {
    let generated = Instant::now();
    let log = projections::workload::recorded(42, chrono::Utc::now(), events);
    let generated = generated.elapsed();
    let mut view = projections::RoutingView::default();
    let start = Instant::now();
    for e in &log {
        view.apply(e)?;
    }
    let elapsed = start.elapsed();
    println!(
        "routing-view: {} events applied in {:.2} s = {:.0} events/s (workload generated in {:.1} s, not counted)",
        log.len(),
        elapsed.as_secs_f64(),
        log.len() as f64 / elapsed.as_secs_f64(),
        generated.as_secs_f64()
    );
    Ok(())
}

async fn append(store: Option<String>, writers: Vec<usize>, seconds: u64) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let url =
        store.unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("bench.db").display()));
    let store = infra::open_store(&url)
        .await
        .with_context(|| format!("opening {}", crate::redact(&url)))?;
    println!(
        "backend  writers  seconds   appends   events/s   p50_ms   p99_ms   max_ms   ({})",
        crate::redact(&url)
    );
    for w in writers {
        let r = measure(store.clone(), w, Duration::from_secs(seconds)).await?;
        println!(
            "{:<8} {:>7} {:>8.1} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2}",
            store.backend(),
            w,
            r.elapsed.as_secs_f64(),
            r.latencies_us.len(),
            r.latencies_us.len() as f64 / r.elapsed.as_secs_f64(),
            percentile(&r.latencies_us, 0.50),
            percentile(&r.latencies_us, 0.99),
            percentile(&r.latencies_us, 1.0),
        );
    }
    Ok(())
}

struct Run {
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// A realistic event: a REGISTER binding a contact (the most frequent write of a live system).
fn registration(n: u64) -> anyhow::Result<NewEvent> {
    let now = chrono::Utc::now();
    let event = DeviceEvent::ContactBound {
        contact_uri: format!("sip:dev{n}@192.0.2.{}:5060;transport=udp", n % 250),
        source: format!("192.0.2.{}:5060", n % 250),
        transport: Transport::Udp,
        user_agent: Some("baresip v1.0.0 (x86_64/linux)".into()),
        expires_at: now + chrono::Duration::seconds(3600),
    };
    anyhow::ensure!(event.event_type() == "device.contact_bound");
    Ok(NewEvent::from_domain(&event, now, "bench"))
}

/// Upper bound on appends per writer, so a run is bounded in count as well as time.
const MAX_APPENDS_PER_WRITER: usize = 2_000_000;

async fn measure(
    store: Arc<dyn EventStore>,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = format!("device-{}", uuid::Uuid::now_v7());
                let mut latencies = Vec::new();
                let mut version = 0u64;
                while Instant::now() < deadline && latencies.len() < MAX_APPENDS_PER_WRITER {
                    let expected = match version {
                        0 => ExpectedVersion::NoStream,
                        v => ExpectedVersion::Exact(v),
                    };
                    let event = registration((w as u64) << 32 | version)?;
                    let t = Instant::now();
                    let r = store.append(&stream, expected, vec![event]).await?;
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    version = r.last_version;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await??);
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Ok(Run {
        elapsed,
        latencies_us,
    })
}

fn percentile(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[i]) / 1000.0
}
