//! `ringledger serve` and `ringledger migrate`.

use std::time::Duration;

use anyhow::Context;
use infra::config::Config;

use crate::redact;

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", redact(&config.store.url)))?;
    let head = store.head_position().await?;
    println!(
        "{} store at {} is migrated (head position {head})",
        store.backend(),
        redact(&config.store.url)
    );
    Ok(())
}

pub async fn run(config: &Config) -> anyhow::Result<()> {
    // Listen for signals before saying "ready", so a supervisor's stop is never missed.
    let shutdown = ShutdownSignal::install()?;
    let store = infra::open_store(&config.store.url)
        .await
        .with_context(|| format!("opening {}", redact(&config.store.url)))?;
    verify_chain(config, store.as_ref()).await?;
    let head = store.head_position().await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut runners = Vec::new();
    let mut api_addr = None;
    let edge = start_edge(config, store.clone(), stopped.clone()).await?;
    if config.projections_url().is_some() {
        let db = crate::projections_cmd::projection_db(config).await?;
        for p in projections::rebuild::all_projections() {
            let runner = projections::runner::Runner::new(db.clone(), store.clone(), p).await?;
            let mut stopped = stopped.clone();
            runners.push(tokio::spawn(async move {
                let name = runner.name();
                loop {
                    let mut stop = stopped.clone();
                    let shutdown = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    match runner.run(shutdown).await {
                        Ok(()) => return,
                        Err(e @ projections::runner::RunnerError::Stopped { .. }) => {
                            tracing::error!(projection = name, error = %e, "projection stopped");
                            return;
                        }
                        Err(e) => {
                            // A database or store hiccup: resume from the checkpoint shortly.
                            tracing::warn!(projection = name, error = %e, "projection failed; retrying in 1 s");
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = stopped.wait_for(|s| *s) => return,
                            }
                        }
                    }
                }
            }));
        }
        // After the runners have created their tables, which the API reads.
        let sip_edge = edge.edge.clone();
        let sip_metrics: api::MetricsSource =
            std::sync::Arc::new(move |out: &mut String| sip_edge.render_metrics(out));
        // Flash calls leave through the outbound trunk: offered only when there is one.
        let flash_call = (!config.trunks.is_empty()).then(|| {
            std::sync::Arc::new(signaling::flash_call::FlashCaller::new(
                edge.edge.clone(),
                config.sip.flash_call_prefix.clone(),
            )) as std::sync::Arc<dyn infra::delivery::CodeSender>
        });
        let (addr, task) = start_api(
            config,
            store.clone(),
            stopped.clone(),
            vec![sip_metrics],
            flash_call,
        )
        .await?;
        api_addr = Some(addr);
        runners.push(task);
    } else {
        tracing::warn!(
            "no SQL database for the projections (set projections.url): the SQL projections and \
             the HTTP API, which reads them, are not run"
        );
    }
    let sip_addr = edge.udp;
    let sip_edge = edge.edge.clone();
    runners.extend(edge.tasks);
    if !config.bus.kafka.brokers.is_empty() {
        let relay = crate::bus_cmd::relay(config, store.clone()).await?;
        let mut stopped = stopped.clone();
        runners.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = relay.run(shutdown).await {
                tracing::error!(error = %e, "kafka relay stopped");
            }
        }));
    }
    tracing::info!(
        backend = store.backend(),
        store = %redact(&config.store.url),
        projections = %config.projections_url().as_deref().map(redact).unwrap_or_default(),
        head_position = head,
        api = api_addr.map(|a| a.to_string()).unwrap_or_default(),
        sip = %sip_addr,
        background_tasks = runners.len(),
        "ringledger ready"
    );
    shutdown.wait().await;
    tracing::info!("shutting down");
    // Calls first, while the transports still carry their BYEs and the answers to them.
    let left = sip_edge
        .drain(Duration::from_secs(config.sip.drain_secs))
        .await;
    // With calls left running, no `edge.stopped`: they are ended as lost once the edge's
    // heartbeats stop.
    if left == 0
        && let Err(e) = signaling::liveness::record_stop(&sip_edge).await
    {
        tracing::warn!(error = %e, "the edge's stop was not recorded");
    }
    let _ = stop.send(true);
    for r in runners {
        let _ = r.await;
    }
    Ok(())
}

/// Verifies the log's hash chain as `store.verify_on_start` says: a break refuses the start
/// (or, with "warn", is logged as an error).
async fn verify_chain(config: &Config, store: &dyn infra::EventStore) -> anyhow::Result<()> {
    use infra::config::VerifyOnStart;
    let mode = config.store.verify_on_start;
    if mode == VerifyOnStart::Skip {
        tracing::warn!("store.verify_on_start = skip: the log's hash chain is not verified");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let report = infra::store::audit::verify_log(store).await?;
    if let Some(i) = &report.incomplete_import {
        let what = format!(
            "the log is a copy that stopped after {} of the export's {} events",
            i.copied, i.expected
        );
        if mode == VerifyOnStart::Warn {
            tracing::error!("{what}; serving anyway (store.verify_on_start = warn)");
        } else {
            anyhow::bail!(
                "{what}. Not starting: run `ringledger events import FILE` again to finish it, \
                 or set store.verify_on_start = \"warn\""
            );
        }
    }
    let Some(broken) = report.first_break else {
        tracing::info!(
            events = report.events,
            head_position = report.head_position,
            head_hash = %report.head_hash,
            millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "the log's hash chain is intact"
        );
        return Ok(());
    };
    let what = format!(
        "the log's hash chain is broken at position {}: {} ({} events before it verified)",
        broken.position, broken.reason, report.events
    );
    if mode == VerifyOnStart::Warn {
        tracing::error!(
            position = broken.position,
            "{what}; serving anyway (store.verify_on_start = warn)"
        );
        return Ok(());
    }
    anyhow::bail!(
        "{what}. Not starting: find the cause first (`ringledger audit verify`); to serve          this log anyway set store.verify_on_start = \"warn\" (RINGLEDGER_STORE__VERIFY_ON_START=warn)"
    )
}

/// Binds the HTTP API and serves it until `stopped` turns true.
async fn start_api(
    config: &Config,
    store: std::sync::Arc<dyn infra::EventStore>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    metrics_sources: Vec<api::MetricsSource>,
    flash_call: Option<std::sync::Arc<dyn infra::delivery::CodeSender>>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    // The API reads in parallel with the projection runners' writes: a pool of its own.
    let url = config
        .projections_url()
        .context("the API needs the projections' database")?;
    let db = projections::db::ProjectionDb::connect_pool(&url, 8)
        .await
        .with_context(|| format!("opening the API's database {}", redact(&url)))?;
    let settings = api::ApiSettings {
        realm: config.sip.realm.clone(),
        code_delivery: config.api.code_delivery,
        sms: (!config.api.sms_webhook_url.is_empty()).then(|| {
            std::sync::Arc::new(infra::delivery::SmsWebhook::new(
                &config.api.sms_webhook_url,
            )) as std::sync::Arc<dyn infra::delivery::CodeSender>
        }),
        flash_call,
        ready_max_lag: Duration::from_secs(config.api.ready_max_lag_secs),
        max_live_tails: config.api.max_live_tails as usize,
        live_tail_buffer: config.api.live_tail_buffer as usize,
        route_caps: api::RouteCaps {
            verifications: config.api.max_concurrent_verifications as usize,
            reads: config.api.max_concurrent_reads as usize,
            writes: config.api.max_concurrent_writes as usize,
        },
        body_read_timeout: Duration::from_secs(config.api.body_read_timeout_secs),
    };
    let state = api::AppState::new(store, db, settings, metrics_sources).await?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.api.listen))?;
    let addr = listener.local_addr()?;
    let c = &config.api;
    let limits = api::HttpLimits {
        max_connections: c.max_connections as usize,
        max_per_source: c.max_connections_per_source as usize,
        header_read_timeout: Duration::from_secs(c.header_read_timeout_secs),
    };
    let recovery = api::RecoverySettings {
        grace: Duration::from_secs(c.workflow_grace_secs),
        interval: Duration::from_secs(c.recovery_interval_secs),
        idempotency_retention: Duration::from_secs(c.idempotency_retention_hours * 3600),
        number_quarantine: Duration::from_secs(c.number_quarantine_days * 24 * 3600),
    };
    let recovering = tokio::spawn(api::workflows::run(
        state.clone(),
        recovery,
        stopped.clone(),
    ));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = api::serve(listener, state, limits, shutdown).await {
            tracing::error!(error = %e, "the HTTP API stopped");
        }
        let _ = recovering.await;
    });
    Ok((addr, task))
}

/// Binds the SIP edge (UDP and TCP) and serves it until `stopped` turns true.
async fn start_edge(
    config: &Config,
    store: std::sync::Arc<dyn infra::EventStore>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<signaling::RunningEdge> {
    let sip = &config.sip;
    let nonce_secret = if sip.nonce_secret.is_empty() {
        tracing::info!("sip.nonce_secret is empty: digest nonces use a random key of this process");
        uuid::Uuid::new_v4().as_bytes().to_vec()
    } else {
        sip.nonce_secret.as_bytes().to_vec()
    };
    let algorithms = sip
        .digest_algorithms
        .iter()
        .filter_map(|a| signaling::digest::Algorithm::parse(a))
        .collect();
    let trunks = config
        .trunks
        .iter()
        .map(|(name, t)| {
            Ok(signaling::trunk::Trunk {
                name: name.clone(),
                address: t.address,
                networks: t.networks()?,
                numbers: t.numbers.clone(),
            })
        })
        .collect::<Result<Vec<_>, infra::network::InvalidNetwork>>()?;
    let settings = signaling::EdgeSettings {
        listen: sip.listen,
        auth: signaling::AuthSettings {
            realm: sip.realm.clone(),
            algorithms,
        },
        registrar: signaling::RegistrarSettings {
            min_expires: sip.min_expires,
            max_expires: sip.max_expires,
            max_contacts_per_request: sip.max_contacts_per_request as usize,
            contact_limit: domain::device::ContactLimit {
                max: sip.max_contacts_per_aor as usize,
                when_full: if sip.replace_oldest_contact {
                    domain::device::WhenFull::ReplaceOldest
                } else {
                    domain::device::WhenFull::Refuse
                },
            },
        },
        trunks,
        nonce_secret,
        nonce_lifetime_secs: sip.nonce_lifetime_secs,
        ring_timeout: Duration::from_secs(sip.ring_timeout_secs),
        call_in_timeout: Duration::from_secs(u64::from(sip.call_in_timeout_secs)),
        call_in_webhook: (!sip.call_in_webhook_url.is_empty())
            .then(|| sip.call_in_webhook_url.clone()),
        heartbeat: Duration::from_secs(sip.heartbeat_secs),
        media: if config.media.relay {
            Some(signaling::media::MediaSettings {
                address: config.media.relay_address(sip.listen)?,
                ports: config.media.port_range()?,
                timeout: Duration::from_secs(config.media.timeout_secs),
                prompts: std::sync::Arc::new(prompts(&config.media)?),
            })
        } else {
            None
        },
        actor: format!("edge:{}", sip.listen),
        security: security_settings(config),
    };
    let view = signaling::SharedView::default();
    signaling::start(settings, store, view, stopped)
        .await
        .with_context(|| format!("binding the SIP edge to {} (UDP and TCP)", sip.listen))
}

/// The edge's defences as configured.
fn security_settings(config: &Config) -> signaling::SecuritySettings {
    let c = &config.security;
    signaling::SecuritySettings {
        lockout: signaling::lockout::LockoutSettings {
            failures_per_source: c.auth_failures_per_source,
            failures_per_username: c.auth_failures_per_username,
            window: Duration::from_secs(c.auth_failure_window_secs),
            block: Duration::from_secs(c.auth_block_secs),
            max_tracked: c.auth_tracked_max,
        },
        tcp: signaling::transport::tcp::TcpLimits {
            max_connections: c.tcp_max_connections,
            max_per_source: c.tcp_max_connections_per_source,
            message_timeout: Duration::from_secs(c.tcp_message_timeout_secs),
            idle_timeout: Duration::from_secs(c.tcp_idle_timeout_secs),
        },
        calls: signaling::b2bua::spending::CallLimits {
            per_account: c.max_calls_per_account,
            per_extension: c.max_calls_per_extension,
        },
        kept_responses: signaling::edge::KeptResponses {
            max_bytes: c.kept_responses_max_mb * 1024 * 1024,
        },
        allow_unrated_calls: c.allow_unrated_calls,
        keypad_without_pin: c.keypad_without_pin,
        max_call_duration: Duration::from_secs(config.sip.max_call_duration_secs),
        call_in_trusts_caller_id: config.sip.call_in_trust_caller_id,
        extension_transfers: config.sip.allow_extension_transfer,
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (a service manager).
struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// The operator's voice prompts for the keypad menu, read from the files `media.prompt_*` name.
fn prompts(
    media: &infra::config::MediaConfig,
) -> anyhow::Result<signaling::media::prompts::Prompts> {
    use signaling::media::prompts::{Prompt, Prompts};
    let prompts = Prompts::load(&[
        (Prompt::Pin, "media.prompt_pin", &media.prompt_pin),
        (Prompt::Number, "media.prompt_number", &media.prompt_number),
        (Prompt::Token, "media.prompt_token", &media.prompt_token),
        (
            Prompt::Refused,
            "media.prompt_refused",
            &media.prompt_refused,
        ),
    ])?;
    Ok(prompts)
}
