//! Per-route concurrency: authenticated `/v1` requests in flight are capped by the kind of
//! work they ask for, so one kind cannot take every database connection and worker from the
//! others. A request over its kind's cap is answered at once with 503 and `Retry-After`
//! (nothing queues, nothing is written), logged and counted by kind. Live tails are not
//! counted here: they have their own cap (`api.max_live_tails`).

use std::sync::Arc;

use axum::http::Method;
use tokio::sync::Semaphore;

/// What a route costs the server, for its concurrency cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// The hash-chain verification reads the whole log.
    Verification,
    /// Reads of the projections and the log (pages, usage, invoices, as-of, timelines).
    Read,
    /// Commands: appends to the log.
    Write,
}

impl RouteKind {
    /// The kind of `method` on the route `path` (as the router matched it); `None` for routes
    /// this cap does not count.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        match path {
            "/v1/audit/events/live" => None,
            "/v1/audit/verification" => Some(Self::Verification),
            _ if method == Method::GET || method == Method::HEAD => Some(Self::Read),
            _ => Some(Self::Write),
        }
    }

    /// The metric label and the name in log lines.
    pub fn label(self) -> &'static str {
        match self {
            Self::Verification => "verification",
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// The caps, from `api.max_concurrent_verifications`, `api.max_concurrent_reads` and
/// `api.max_concurrent_writes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCaps {
    pub verifications: usize,
    pub reads: usize,
    pub writes: usize,
}

impl Default for RouteCaps {
    fn default() -> Self {
        Self {
            verifications: 2,
            reads: 64,
            writes: 256,
        }
    }
}

/// The permits of each kind.
pub struct RouteLimits {
    caps: RouteCaps,
    verifications: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

impl RouteLimits {
    pub fn new(caps: RouteCaps) -> Self {
        Self {
            caps,
            verifications: Arc::new(Semaphore::new(caps.verifications)),
            reads: Arc::new(Semaphore::new(caps.reads)),
            writes: Arc::new(Semaphore::new(caps.writes)),
        }
    }

    pub(crate) fn of(&self, kind: RouteKind) -> (&Arc<Semaphore>, usize) {
        match kind {
            RouteKind::Verification => (&self.verifications, self.caps.verifications),
            RouteKind::Read => (&self.reads, self.caps.reads),
            RouteKind::Write => (&self.writes, self.caps.writes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_counted_by_what_they_cost() {
        use RouteKind as K;
        let of = |m: Method, p: &str| RouteKind::of(&m, p);
        assert_eq!(
            of(Method::GET, "/v1/audit/verification"),
            Some(K::Verification)
        );
        assert_eq!(of(Method::GET, "/v1/audit/events/live"), None);
        assert_eq!(
            of(Method::GET, "/v1/accounts/{account_id}/usage"),
            Some(K::Read)
        );
        assert_eq!(of(Method::POST, "/v1/accounts"), Some(K::Write));
        assert_eq!(
            of(Method::DELETE, "/v1/extensions/{extension_id}"),
            Some(K::Write)
        );
    }
}
