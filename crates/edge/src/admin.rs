//! The admin dashboard: `/admin` (a page) and `/admin/events` (SSE, once a
//! second: every node's numbers and the cluster's totals). Every service
//! publishes its numbers on `herald.stats.<node>`; every edge listens, so
//! any edge can show the whole cluster without Prometheus.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use herald_core::bus::BusError;
use herald_core::metrics::{Latency, NodeStats, STATS_EVERY, Transports};
use herald_core::shutdown::Shutdown;
use herald_core::time::unix_millis;
use herald_protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::Edge;
use crate::http_client::HttpError;

/// A node not heard from for this long has left the view.
const FORGET_AFTER: Duration = Duration::from_secs(5);
/// Nodes the view holds at most (a bound against a flood of made-up ones).
const MAX_NODES: usize = 4096;

/// The latest two samples of every node, by (node, service).
#[derive(Default)]
pub(crate) struct Cluster {
    nodes: Mutex<HashMap<(String, String), Samples>>,
}

struct Samples {
    last: NodeStats,
    previous: Option<NodeStats>,
    heard: Instant,
}

/// One node as the dashboard shows it: gauges as they are, counters as
/// rates per second.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct NodeView {
    pub node: String,
    pub service: String,
    pub connections: u64,
    pub users: u64,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub notifications_per_s: f64,
    pub errors_per_s: f64,
    /// Edges: connections by transport.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transports: Option<Transports>,
    /// Edges: publish → deliver time over the last second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Totals {
    /// Processes (a standalone is one, with every service in it).
    pub nodes: usize,
    pub connections: u64,
    /// Users online in the cluster: the presence service's count when one
    /// reports, else the sum over edges (a user on two edges counts twice).
    pub users: u64,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub notifications_per_s: f64,
    pub errors_per_s: f64,
    pub transports: Transports,
    /// The slowest edge's percentiles (`None`: nothing delivered live).
    pub latency: Option<Latency>,
    /// The busiest channels across routing, publications per second.
    pub top_channels: Vec<ChannelRate>,
}

/// A channel and its publications per second.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ChannelRate {
    pub channel: String,
    pub per_s: f64,
}

/// What `/admin/events` sends once a second.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ClusterView {
    pub ts: u64,
    pub nodes: Vec<NodeView>,
    pub totals: Totals,
}

impl Cluster {
    pub(crate) fn record(&self, stats: NodeStats) {
        let mut nodes = self.nodes.lock();
        let key = (stats.node.clone(), stats.service.clone());
        let room = nodes.len() < MAX_NODES;
        match nodes.get_mut(&key) {
            Some(samples) => {
                let last = std::mem::replace(&mut samples.last, stats);
                samples.previous = Some(last);
                samples.heard = Instant::now();
            }
            None if room => {
                nodes.insert(
                    key,
                    Samples {
                        last: stats,
                        previous: None,
                        heard: Instant::now(),
                    },
                );
            }
            None => {}
        }
    }

    pub(crate) fn view(&self) -> ClusterView {
        let mut nodes = self.nodes.lock();
        nodes.retain(|_, s| s.heard.elapsed() < FORGET_AFTER);
        let mut views: Vec<NodeView> = nodes.values().map(Samples::view).collect();
        let mut top: HashMap<String, u64> = HashMap::new();
        for samples in nodes.values() {
            for (channel, n) in &samples.last.top_channels {
                *top.entry(channel.clone()).or_default() += n;
            }
        }
        drop(nodes);
        views.sort_by(|a, b| (&a.node, &a.service).cmp(&(&b.node, &b.service)));
        let distinct: std::collections::HashSet<&str> =
            views.iter().map(|v| v.node.as_str()).collect();
        let mut totals = Totals {
            nodes: distinct.len(),
            ..Totals::default()
        };
        let interval = STATS_EVERY.as_secs_f64();
        let mut top: Vec<ChannelRate> = top
            .into_iter()
            .map(|(channel, n)| ChannelRate {
                channel,
                per_s: n as f64 / interval,
            })
            .collect();
        top.sort_by(|a, b| {
            b.per_s
                .total_cmp(&a.per_s)
                .then_with(|| a.channel.cmp(&b.channel))
        });
        top.truncate(10);
        totals.top_channels = top;
        let mut presence_users = None;
        for v in &views {
            if v.service == "edge" {
                totals.connections += v.connections;
                totals.users += v.users;
            }
            if let Some(t) = v.transports {
                totals.transports.ws += t.ws;
                totals.transports.sse += t.sse;
                totals.transports.poll += t.poll;
            }
            if let Some(l) = v.latency {
                let slowest = totals.latency.get_or_insert(l);
                if l.p99_ms > slowest.p99_ms {
                    *slowest = l;
                }
            }
            if v.service == "presence" {
                // every replica sees everyone: take one, not the sum
                presence_users = Some(presence_users.unwrap_or(0).max(v.users));
            }
            totals.published_per_s += v.published_per_s;
            totals.delivered_per_s += v.delivered_per_s;
            totals.notifications_per_s += v.notifications_per_s;
            totals.errors_per_s += v.errors_per_s;
        }
        if let Some(users) = presence_users {
            totals.users = users;
        }
        ClusterView {
            ts: unix_millis(),
            nodes: views,
            totals,
        }
    }
}

impl Samples {
    fn view(&self) -> NodeView {
        let last = &self.last;
        let rate = |counter: fn(&NodeStats) -> u64| -> f64 {
            let Some(previous) = &self.previous else {
                return 0.0;
            };
            let seconds = last.ts.saturating_sub(previous.ts) as f64 / 1000.0;
            if seconds <= 0.0 {
                return 0.0;
            }
            let (now, before) = (counter(last), counter(previous));
            // a restarted node counts again from 0 (as Prometheus' rate())
            let grew = if now >= before { now - before } else { now };
            grew as f64 / seconds
        };
        NodeView {
            node: last.node.clone(),
            service: last.service.clone(),
            connections: last.connections,
            users: last.users,
            published_per_s: rate(|s| s.published),
            delivered_per_s: rate(|s| s.delivered),
            notifications_per_s: rate(|s| s.notifications),
            errors_per_s: rate(|s| s.errors),
            transports: last.transports,
            latency: last.latency,
        }
    }
}

impl Edge {
    /// Takes in every node's stats until `shutdown`.
    pub(crate) async fn listen_to_stats(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Result<JoinHandle<()>, BusError> {
        let mut stats = self.bus.subscribe(&self.subjects.stats_all()).await?;
        let edge = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = shutdown.wait() => break,
                    m = stats.next() => m,
                };
                let Some(message) = message else { break };
                match serde_json::from_slice::<NodeStats>(&message.payload) {
                    Ok(s) => edge.cluster.record(s),
                    Err(e) => tracing::debug!(error = %e, "bad stats message"),
                }
            }
        }))
    }
}

#[derive(Deserialize)]
pub(crate) struct EventsParams {
    key: Option<String>,
}

/// `GET /admin/events` with the API key (`Authorization: Bearer` or
/// `key=`, since `EventSource` cannot send headers).
pub(crate) async fn events(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    Query(params): Query<EventsParams>,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or(params.key);
    let allowed = match (edge.admin_keys.get(), presented) {
        (None, _) => Err("the dashboard needs HERALD_API_KEYS on this edge"),
        (Some(_), None) => Err("missing API key: `Authorization: Bearer <key>` or `key=`"),
        (Some(keys), Some(key)) if !keys.accepts(key.trim()) => Err("invalid API key"),
        _ => Ok(()),
    };
    if let Err(why) = allowed {
        return HttpError(ErrorBody::new(ErrorCode::Unauthorized, why)).into_response();
    }
    let shutdown = edge.shutdown.clone();
    let ticks = futures::stream::unfold(
        (edge, tokio::time::interval(STATS_EVERY)),
        |(edge, mut tick)| async move {
            tick.tick().await;
            let event = Event::default()
                .event("stats")
                .json_data(edge.cluster.view())
                .unwrap_or_else(|_| Event::default().comment("unencodable"));
            Some((Ok::<_, Infallible>(event), (edge, tick)))
        },
    );
    // a draining edge ends the stream; the page reconnects elsewhere
    let ticks = futures::StreamExt::take_until(ticks, async move { shutdown.wait().await });
    Sse::new(ticks)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: &str, service: &str, ts: u64, delivered: u64, users: u64) -> NodeStats {
        NodeStats {
            node: node.into(),
            service: service.into(),
            ts,
            connections: 10,
            users,
            delivered,
            ..NodeStats::default()
        }
    }

    #[test]
    fn rates_from_two_samples_and_totals_across_nodes() {
        let cluster = Cluster::default();
        cluster.record(sample("e1", "edge", 1_000, 100, 7));
        cluster.record(sample("e1", "edge", 2_000, 400, 7));
        cluster.record(sample("e2", "edge", 1_000, 0, 5));
        cluster.record(sample("e2", "edge", 1_500, 50, 5));
        let view = cluster.view();
        assert_eq!(view.nodes.len(), 2);
        assert_eq!(view.nodes[0].delivered_per_s, 300.0);
        assert_eq!(view.nodes[1].delivered_per_s, 100.0);
        assert_eq!(view.totals.delivered_per_s, 400.0);
        assert_eq!(view.totals.connections, 20);
        // no presence service: the edges' sum
        assert_eq!(view.totals.users, 12);
        // with one, its count (users on two edges count once)
        cluster.record(sample("p1", "presence", 2_000, 0, 9));
        assert_eq!(cluster.view().totals.users, 9);
    }

    #[test]
    fn a_restarted_node_does_not_show_a_negative_rate() {
        let cluster = Cluster::default();
        cluster.record(sample("e1", "edge", 1_000, 500, 0));
        cluster.record(sample("e1", "edge", 2_000, 3, 0));
        assert_eq!(cluster.view().nodes[0].delivered_per_s, 3.0);
    }
}
