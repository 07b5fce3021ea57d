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
