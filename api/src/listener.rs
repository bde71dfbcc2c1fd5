//! Accepting HTTP connections with bounds: at most `max_connections` open, at most
//! `max_per_source` from one IP address (a connection past either is closed as soon as it is
//! accepted, and counted), and `header_read_timeout` for a request's headers — hyper starts
//! that timer when a connection opens and again whenever a kept-alive connection waits for its
//! next request, so it bounds idle connections too. Shutdown stops accepting, tells open live
//! tails to end and waits for requests in flight (at most 10 s).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::state::Shared;

/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    /// 0: no per-source cap.
    pub max_per_source: usize,
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_source: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Open connections per source address; an entry leaves with its last connection.
#[derive(Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in `Sources`, given back when the connection closes.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceSlot> {
        let mut open = self.0.lock().ok()?;
        let n = open.entry(ip).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.sources.0.lock()
            && let Some(n) = open.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves the API on `listener` within `limits` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Shared,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::router(app.clone());
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            app.metrics.connection_refused("max_connections");
            continue;
        };
        let Some(slot) = sources.take(peer.ip(), limits.max_per_source) else {
            app.metrics.connection_refused("max_connections_per_source");
            continue;
        };
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away or times out is not an error of the server.
            let _ = connection.await;
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    let _ = app.closing.send(true);
    // A client that stops reading its answer would hold shutdown for ever: bounded.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP connections still open {} s after shutdown began; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    Ok(())
}
