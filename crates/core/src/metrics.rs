//! Operational numbers, two ways out of every process:
//! - Prometheus: one recorder per process (standalone's services share it;
//!   every metric name starts with `herald_<service>_`), rendered at
//!   `/metrics`;
//! - `herald.stats.<node>`: once a second each service publishes a
//!   [`NodeStats`] on the bus, which every edge aggregates for the `/admin`
//!   dashboard — across all nodes, with no Prometheus in between.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::bus::{Bus, Headers};
use crate::shutdown::Shutdown;
use crate::subjects::Subjects;

/// Latency buckets (seconds) of every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How often a service publishes its [`NodeStats`].
pub const STATS_EVERY: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder on first use. Services call
/// it before registering their metrics, so nothing registered early is lost.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // (fails only for an empty bucket list)
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// The Prometheus text exposition of everything this process recorded.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// One service instance's numbers, published once a second on
/// `herald.stats.<node>`. Counters only grow; readers derive rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node id of the instance.
    pub node: String,
    /// `edge`, `routing`, `presence` or `notify`.
    pub service: String,
    /// When sampled, Unix milliseconds.
    pub ts: u64,
    /// Client connections held now (edge).
    #[serde(default)]
    pub connections: u64,
    /// Users with a connection now (edge: on this node; presence: everywhere).
    #[serde(default)]
    pub users: u64,
    /// Publications accepted, since start (routing).
    #[serde(default)]
    pub published: u64,
    /// Pushes written to clients, since start (edge).
    #[serde(default)]
    pub delivered: u64,
    /// Push notifications sent to APNs / FCM / Web Push, since start (notify).
    #[serde(default)]
    pub notifications: u64,
    /// Requests and commands answered with an error, since start.
    #[serde(default)]
    pub errors: u64,
    /// Client connections by transport now (edge): `ws`, `sse`, `poll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Transports>,
    /// Publish → deliver time over the last second (edge), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// The busiest channels over the last second (routing): channel and
    /// publications, busiest first, at most ten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_channels: Vec<(String, u64)>,
}

/// Connections by transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transports {
    /// WebSocket.
    pub ws: u64,
    /// Server-Sent Events.
    pub sse: u64,
    /// Long polling.
    pub poll: u64,
}

/// Percentiles of publish → deliver time, ms (the upper edge of the
/// bucket each falls in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Half the deliveries took at most this.
    pub p50_ms: f64,
    /// 99 in 100 took at most this.
    pub p99_ms: f64,
    /// Deliveries sampled.
    pub samples: u64,
}

/// Upper edges of the latency buckets, ms (the last is open).
const LATENCY_EDGES_MS: [u64; 24] = [
    1,
    2,
    3,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    70,
    100,
    150,
    200,
    300,
    500,
    700,
    1000,
    1500,
    2000,
    3000,
    5000,
    10000,
    u64::MAX,
];

/// A latency histogram the hot path bumps with one relaxed atomic; read
/// as the difference between two snapshots.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [std::sync::atomic::AtomicU64; 24],
}

impl LatencyHistogram {
    /// Counts one delivery that took `ms`.
    pub fn record(&self, ms: u64) {
        let bucket = LATENCY_EDGES_MS.partition_point(|&edge| edge <= ms);
        let bucket = bucket.min(LATENCY_EDGES_MS.len() - 1);
        self.buckets[bucket].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> [u64; 24] {
        std::array::from_fn(|i| self.buckets[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The percentiles of what was counted between `before` and `now`
    /// (`None` when nothing was).
    pub fn between(before: &[u64; 24], now: &[u64; 24]) -> Option<Latency> {
        let counts: Vec<u64> = now
            .iter()
            .zip(before)
            .map(|(n, b)| n.saturating_sub(*b))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let at = |share: f64| {
            let rank = ((total as f64) * share).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    // the open last bucket reports its lower edge
                    return match LATENCY_EDGES_MS[i] {
                        u64::MAX => LATENCY_EDGES_MS[i - 1] as f64,
                        edge => edge as f64,
                    };
                }
            }
            LATENCY_EDGES_MS[LATENCY_EDGES_MS.len() - 2] as f64
        };
        Some(Latency {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            samples: total,
        })
    }
}

/// Publishes a `service`'s numbers on `herald.stats.<node>` every
/// [`STATS_EVERY`] until `shutdown`: `sample` fills them in (node, service
/// and time are filled here). Also keeps the Prometheus recorder tidy
/// (histogram upkeep), so memory stays bounded when nobody scrapes.
pub fn publish_stats(
    bus: std::sync::Arc<dyn Bus>,
    subjects: &Subjects,
    node: &str,
    service: &'static str,
    sample: impl Fn(&mut NodeStats) + Send + Sync + 'static,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    install();
    let subject = subjects.stats(node);
    let node = node.to_owned();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            install().run_upkeep();
            let mut stats = NodeStats {
                node: node.clone(),
                service: service.into(),
                ts: crate::time::unix_millis(),
                ..NodeStats::default()
            };
            sample(&mut stats);
            let Ok(payload) = serde_json::to_vec(&stats) else {
                continue;
            };
            if let Err(e) = bus
                .publish(&subject, Headers::new(), Bytes::from(payload))
                .await
            {
                tracing::debug!(error = %e, "stats not published");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_deliveries_between_two_snapshots() {
        let histogram = LatencyHistogram::default();
        histogram.record(40_000);
        let before = histogram.snapshot();
        assert_eq!(LatencyHistogram::between(&before, &before), None);
        for _ in 0..98 {
            histogram.record(0);
        }
        histogram.record(4);
        histogram.record(120);
        let latency =
            LatencyHistogram::between(&before, &histogram.snapshot()).expect("deliveries counted");
        assert_eq!(latency.samples, 100, "the earlier one is not counted");
        assert_eq!(latency.p50_ms, 1.0, "under a millisecond");
        assert_eq!(latency.p99_ms, 5.0, "the 99th of 100 took 4 ms");
        histogram.record(60_000);
        let slow =
            LatencyHistogram::between(&before, &histogram.snapshot()).expect("deliveries counted");
        assert_eq!(slow.p99_ms, 150.0);
    }
}
