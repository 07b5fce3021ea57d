//! Routing's numbers: atomics and a cached histogram on the write path,
//! exported once a second to Prometheus (`herald_routing_*`) and to
//! `herald.stats.<node>`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::response::Response;
use herald_core::metrics::NodeStats;
use herald_protocol::channel::Channel;

static PUBLISHED: AtomicU64 = AtomicU64::new(0);
static PUSH_JOBS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);

fn publish_seconds() -> &'static metrics::Histogram {
    static HISTOGRAM: OnceLock<metrics::Histogram> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        herald_core::metrics::install();
        metrics::histogram!("herald_routing_publish_seconds")
    })
}

/// Publications per channel since the last export, for the busiest
/// channels on the dashboard; at most this many channels are counted
/// between two exports (a flood of new channels cannot grow it).
const COUNTED_CHANNELS: usize = 10_000;
/// The busiest channels each export names.
const TOP_CHANNELS: usize = 10;

fn by_channel() -> &'static parking_lot::Mutex<HashMap<Channel, u64>> {
    static BY_CHANNEL: OnceLock<parking_lot::Mutex<HashMap<Channel, u64>>> = OnceLock::new();
    BY_CHANNEL.get_or_init(Default::default)
}

/// Every series routing exports, at 0 until something happens (a
/// dashboard on a series that does not exist yet shows "no data").
pub(crate) fn register() {
    for api in ["http", "grpc", "edge"] {
        for side in ["server", "client"] {
            metrics::counter!("herald_routing_errors_total", "api" => api, "side" => side)
                .increment(0);
        }
    }
    metrics::counter!("herald_routing_publications_total").increment(0);
    metrics::counter!("herald_routing_push_jobs_total").increment(0);
    publish_seconds();
}

/// A new publication on `channel` was stored and sent live, in `took`.
pub(crate) fn published(channel: &Channel, took: Duration) {
    PUBLISHED.fetch_add(1, Ordering::Relaxed);
    publish_seconds().record(took.as_secs_f64());
    let mut counts = by_channel().lock();
    if let Some(n) = counts.get_mut(channel) {
        *n += 1;
    } else if counts.len() < COUNTED_CHANNELS {
        counts.insert(channel.clone(), 1);
    }
}

/// The busiest channels since the last call, busiest first.
fn take_top_channels() -> Vec<(String, u64)> {
    let counts = std::mem::take(&mut *by_channel().lock());
    let mut top: Vec<(String, u64)> = counts
        .into_iter()
        .map(|(channel, n)| (channel.to_string(), n))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_CHANNELS);
    top
}

pub(crate) fn push_jobs(n: usize) {
    PUSH_JOBS.fetch_add(n as u64, Ordering::Relaxed);
}

/// Whose an error is: `server` (Herald or JetStream could not: 503,
/// 504) or `client` (the caller's request was refused), so an alert can
/// watch the first alone.
pub(crate) fn side_of(code: herald_protocol::ErrorCode) -> &'static str {
    use herald_protocol::ErrorCode;
    match code {
        ErrorCode::Internal | ErrorCode::OutcomeUnknown => "server",
        _ => "client",
    }
}

/// An error answered over `api` (`http`, `grpc` or `edge`); `side` from
/// [`side_of`].
pub(crate) fn error(api: &'static str, side: &'static str) {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("herald_routing_errors_total", "api" => api, "side" => side).increment(1);
}

/// Counts the HTTP server API's error answers (a response middleware).
pub(crate) async fn count_http_errors(response: Response) -> Response {
    let status = response.status();
    if status.is_server_error() {
        error("http", "server");
    } else if status.is_client_error() {
        error("http", "client");
    }
    response
}

/// Copies the numbers to Prometheus and into `stats` for the bus.
pub(crate) fn export(stats: &mut NodeStats) {
    let published = PUBLISHED.load(Ordering::Relaxed);
    metrics::counter!("herald_routing_publications_total").absolute(published);
    metrics::counter!("herald_routing_push_jobs_total").absolute(PUSH_JOBS.load(Ordering::Relaxed));
    stats.published = published;
    stats.errors = ERRORS.load(Ordering::Relaxed);
    stats.top_channels = take_top_channels();
}
