//! The edge's numbers. The hot path only bumps relaxed atomics; once a
//! second they are copied to Prometheus (`herald_edge_*` at `/metrics`) and
//! published on `herald.stats.<node>` for the `/admin` dashboard.

use std::sync::atomic::{AtomicU64, Ordering};

use herald_core::metrics::{LatencyHistogram, NodeStats, Transports};
use herald_protocol::ErrorCode;
use herald_protocol::presence::Transport;

/// Error replies to clients, by every edge of this process (the Prometheus
/// recorder is per process too).
static CLIENT_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts an error answered to a client (WebSocket reply or HTTP answer).
pub(crate) fn client_error(code: ErrorCode) {
    CLIENT_ERRORS.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("herald_edge_errors_total", "code" => code.as_u16().to_string()).increment(1);
}

/// Every labelled series the edge exports, at 0 until something happens
/// (a dashboard on a series that does not exist yet shows "no data").
pub(crate) fn register() {
    herald_core::metrics::install();
    for reason in [
        "origin",
        "draining",
        "limit",
        "rate",
        "address_rate",
        "user_limit",
    ] {
        metrics::counter!("herald_edge_connections_refused_total", "reason" => reason).increment(0);
    }
}

/// Counts a connection refused before any work (`reason`: `origin`,
/// `draining`, `limit`, `rate`, `user_limit`).
pub(crate) fn refused(reason: &'static str) {
    metrics::counter!("herald_edge_connections_refused_total", "reason" => reason).increment(1);
}

#[derive(Default)]
pub(crate) struct EdgeStats {
    /// Pushes written to clients.
    pub delivered: AtomicU64,
    /// Publish → deliver time, one sample per write batch.
    pub latency: LatencyHistogram,
    /// The latency counts at the last export.
    latency_before: parking_lot::Mutex<[u64; 24]>,
    /// Connections held now, by transport.
    transports: [AtomicU64; 3],
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Connections cut for not keeping up (4001).
    pub slow_consumers: AtomicU64,
}

impl EdgeStats {
    pub(crate) fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    fn transport(&self, kind: Transport) -> &AtomicU64 {
        &self.transports[match kind {
            Transport::Ws => 0,
            Transport::Sse => 1,
            Transport::Poll => 2,
        }]
    }

    /// A connection of `kind` opened…
    pub(crate) fn opened(&self, kind: Transport) {
        self.transport(kind).fetch_add(1, Ordering::Relaxed);
    }

    /// …and closed.
    pub(crate) fn closed(&self, kind: Transport) {
        self.transport(kind).fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one edge holds now, besides its counters.
pub(crate) struct Gauges {
    pub connections: u64,
    pub users: u64,
    pub channels: u64,
}

/// Copies the numbers to Prometheus and into `out` for the bus.
pub(crate) fn export(stats: &EdgeStats, now: Gauges, out: &mut NodeStats) {
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let errors = CLIENT_ERRORS.load(Ordering::Relaxed);
    metrics::gauge!("herald_edge_connections").set(now.connections as f64);
    metrics::gauge!("herald_edge_users").set(now.users as f64);
    metrics::gauge!("herald_edge_channels").set(now.channels as f64);
    metrics::counter!("herald_edge_deliveries_total").absolute(delivered);
    metrics::counter!("herald_edge_connections_accepted_total")
        .absolute(stats.accepted.load(Ordering::Relaxed));
    metrics::counter!("herald_edge_slow_consumers_total").absolute(stats.slow_consumers());
    out.connections = now.connections;
    out.users = now.users;
    out.delivered = delivered;
    out.errors = errors;
    let by = |kind| stats.transport(kind).load(Ordering::Relaxed);
    out.transports = Some(Transports {
        ws: by(Transport::Ws),
        sse: by(Transport::Sse),
        poll: by(Transport::Poll),
    });
    let latency = stats.latency.snapshot();
    let before = std::mem::replace(&mut *stats.latency_before.lock(), latency);
    out.latency = LatencyHistogram::between(&before, &latency);
}
