//! Counters and latency histograms the API exposes at `/metrics` in the Prometheus text format:
//! requests by route and status, request latency by route, append latency. Projection lag is
//! read at scrape time (see `health.rs`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (le, c) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
    append: Histogram,
    /// Interrupted workflows the recovery pass settled, by outcome.
    recovered: BTreeMap<&'static str, u64>,
    /// Connections closed at accept, by the limit they hit.
    refused: BTreeMap<&'static str, u64>,
    /// Requests refused over their route's concurrency cap, by kind.
    busy: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        m.latency
            .entry((method.to_owned(), route.to_owned()))
            .or_default()
            .observe(took);
    }

    pub fn append(&self, took: Duration) {
        if let Ok(mut m) = self.inner.lock() {
            m.append.observe(took);
        }
    }

    pub fn route_busy(&self, kind: &'static str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.busy.entry(kind).or_default() += 1;
        }
    }

    pub fn connection_refused(&self, limit: &'static str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.refused.entry(limit).or_default() += 1;
        }
    }

    pub fn workflow_recovered(&self, outcome: &'static str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.recovered.entry(outcome).or_default() += 1;
        }
    }

    /// The counters and histograms in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let Ok(m) = self.inner.lock() else { return };
        out.push_str("# HELP ringledger_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE ringledger_http_requests_total counter\n");
        for ((method, route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "ringledger_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP ringledger_http_request_duration_seconds HTTP request latency by route.\n",
        );
        out.push_str("# TYPE ringledger_http_request_duration_seconds histogram\n");
        for ((method, route), h) in &m.latency {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            h.render(out, "ringledger_http_request_duration_seconds", &labels);
        }
        out.push_str(
            "# HELP ringledger_append_duration_seconds Time from append call to durable acknowledgement.\n",
        );
        out.push_str("# TYPE ringledger_append_duration_seconds histogram\n");
        m.append
            .render(out, "ringledger_append_duration_seconds", "");
        labelled_counter(
            out,
            "ringledger_workflows_recovered_total",
            "Interrupted workflows the recovery pass finished or undid.",
            "outcome",
            &["completed", "compensated", "released"],
            &m.recovered,
        );
        labelled_counter(
            out,
            "ringledger_http_requests_busy_total",
            "Requests refused (503) over their route's concurrency cap, by kind of route.",
            "kind",
            &["verification", "read", "write"],
            &m.busy,
        );
        labelled_counter(
            out,
            "ringledger_http_connections_refused_total",
            "Connections closed at accept, by the limit they hit.",
            "limit",
            &["max_connections", "max_connections_per_source"],
            &m.refused,
        );
    }
}

/// A counter with one label of a fixed set of values, each rendered (0 when never counted).
fn labelled_counter(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: &[&'static str],
    counts: &BTreeMap<&'static str, u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for v in values {
        let n = counts.get(v).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}{{{label}=\"{v}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("GET", "/v1/accounts", 200, Duration::from_millis(2));
        m.request("GET", "/v1/accounts", 200, Duration::from_millis(30));
        m.append(Duration::from_millis(3));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "ringledger_http_requests_total{method=\"GET\",route=\"/v1/accounts\",status=\"200\"} 2"
        ));
        assert!(out.contains(
            "ringledger_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/accounts\",le=\"0.0025\"} 1"
        ));
        assert!(out.contains(
            "ringledger_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/accounts\",le=\"0.05\"} 2"
        ));
        assert!(out.contains("ringledger_append_duration_seconds_count 1"));
    }
}
