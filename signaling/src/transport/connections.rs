//! The TCP transport's bounds and the count of open connections they are checked against.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The TCP transport's bounds (config `security.tcp_*`).
#[derive(Debug, Clone)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    /// A message must arrive whole within this of its first byte.
    pub message_timeout: Duration,
    /// A connection with nothing received for this long is closed (keep-alives count).
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_source: 128,
            message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The open connections, counted in total and per source.
#[derive(Default)]
pub struct Connections {
    by_source: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicU64,
    /// Connections closed at once for a cap, and for a timeout (reported in `/metrics`).
    pub refused: AtomicU64,
    pub timed_out: AtomicU64,
}

impl Connections {
    /// Takes a place for a connection from `source`, if the caps allow it.
    pub(super) fn admit(self: &Arc<Self>, source: IpAddr, limits: &TcpLimits) -> Option<Place> {
        let mut by_source = self.by_source.lock().expect("tcp connections");
        let mine = by_source.get(&source).copied().unwrap_or(0);
        if self.total.load(Ordering::Relaxed) as usize >= limits.max_connections
            || mine >= limits.max_per_source
        {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        by_source.insert(source, mine + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Place {
            connections: self.clone(),
            source,
        })
    }

    /// Open connections.
    pub fn open(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// A connection's place in the counts, given back when the connection ends.
pub(super) struct Place {
    connections: Arc<Connections>,
    source: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut by_source = self.connections.by_source.lock().expect("tcp connections");
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
    }
}
