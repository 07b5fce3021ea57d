//! The edge: where clients connect. It authenticates them, keeps their
//! subscriptions, forwards their publishes to routing and delivers live
//! publications. Edge processes hold no state but their connections.

mod admin;
mod admission;
mod budget;
mod commands;
mod connection;
mod control;
pub mod cursor;
mod http_client;
mod http_commands;
mod hub;
mod outbox;
mod presence_report;
mod rate;
mod routing_client;
mod stats;
pub mod transport;

/// The WebSocket framing, for the fuzzer (`fuzz/fuzz_targets/websocket.rs`).
#[doc(hidden)]
pub mod websocket {
    pub use crate::transport::ws::frame::{Message, WebSocket, WsError};
}
mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use herald_core::auth::TokenVerifier;
use herald_core::bus::BusError;
use herald_core::bus::{Bus, NatsBus};
use herald_core::config::{Config, ConfigError};
use herald_core::presence::PresenceLookup;
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_proto::service::{self, Running, Service};
use herald_protocol::channel::Channel;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use cursor::{Cursor, StreamCursor};
pub use hub::{ConnId, Hub};
pub use outbox::{Delivery, Inbox, Outbox, PushKind};
pub use routing_client::RoutingClient;
pub use web::demo_tokens;

/// (user, channel) typing buckets kept at most.
const TYPING_LIMITS_KEPT: usize = 100_000;

/// The edge's default HTTP address.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

/// Why an edge could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bus could not be reached or subscribed to.
    #[error("NATS")]
    Bus(#[from] herald_core::bus::BusError),
    /// A listener could not be bound or failed.
    #[error(transparent)]
    Service(#[from] herald_proto::service::ServiceError),
}

/// What every connection of this edge shares.
pub struct Edge {
    pub(crate) config: Arc<Config>,
    pub(crate) verifier: TokenVerifier,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subjects: Subjects,
    pub(crate) routing: RoutingClient,
    pub(crate) hub: Hub,
    pub(crate) node_id: String,
    next_conn: AtomicU64,
    /// Fires on SIGTERM: connections are told to reconnect elsewhere.
    pub(crate) shutdown: Shutdown,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) connections: TaskTracker,
    /// Connected users and, per connection, the signal that closes it.
    pub(crate) users: control::Users,
    pub(crate) admission: Arc<admission::Admission>,
    /// Counters of the hot path, exported once a second.
    pub(crate) stats: stats::EdgeStats,
    /// Every node's numbers, for the dashboard.
    pub(crate) cluster: admin::Cluster,
    /// Keys that open the dashboard (the server API keys).
    pub(crate) admin_keys: std::sync::OnceLock<herald_core::api_key::ApiKeys>,
    /// What this edge tells the presence service.
    pub(crate) reporter: Arc<presence_report::PresenceReporter>,
    /// Where `presence` queries go (the presence service).
    presence: std::sync::OnceLock<Arc<dyn PresenceLookup>>,
    /// Typing events per (user, channel).
    typing_limits: rate::KeyedLimiter<(String, Channel)>,
    /// The HTTP commands' rate, per user (WebSocket commands have theirs
    /// per connection).
    pub(crate) http_commands: rate::KeyedLimiter,
    /// Long-poll sessions, by the id their cursors carry.
    pub(crate) polls: transport::poll::PollSessions,
    /// New connections per client address.
    arrivals_by_address: rate::KeyedLimiter<std::net::IpAddr>,
    /// Who may speak for clients (`X-Forwarded-For`).
    pub(crate) accept_limits: service::AcceptLimits,
}

impl Edge {
    /// The edge's shared state over `bus`; nothing runs until
    /// [`Edge::start`].
    pub fn new(
        config: Arc<Config>,
        verifier: TokenVerifier,
        bus: Arc<dyn Bus>,
        node_id: String,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let subjects = Subjects::new(&config.subject_prefix);
        let routing = RoutingClient::new(bus.clone(), subjects.clone(), config.route_timeout());
        let reporter = Arc::new(presence_report::PresenceReporter::new(&node_id));
        Arc::new(Edge {
            hub: Hub::new(bus.clone(), subjects.clone(), routing.clone()),
            routing,
            verifier,
            bus,
            subjects,
            node_id,
            next_conn: AtomicU64::new(1),
            shutdown,
            connections: TaskTracker::new(),
            users: control::Users::default(),
            admission: {
                let budget = budget::ConnectionBudget::of(&config);
                if budget.limited_by != "max_connections" {
                    tracing::warn!(
                        connections = budget.connections,
                        limited_by = budget.limited_by,
                        max_connections = config.edge.max_connections,
                        "fewer connections than max_connections: the process could not hold more"
                    );
                }
                // the recorder first: a gauge set before it is lost
                herald_core::metrics::install();
                metrics::gauge!("herald_edge_connection_budget").set(budget.connections as f64);
                admission::Admission::new(budget.connections, config.edge.connection_rate)
            },
            stats: stats::EdgeStats::default(),
            cluster: admin::Cluster::default(),
            admin_keys: std::sync::OnceLock::new(),
            reporter,
            presence: std::sync::OnceLock::new(),
            typing_limits: rate::KeyedLimiter::new(config.edge.typing_rate, 3, TYPING_LIMITS_KEPT),
            http_commands: rate::KeyedLimiter::new(
                config.edge.command_rate,
                config.edge.command_burst,
                config.edge.max_connections,
            ),
            polls: transport::poll::PollSessions::default(),
            arrivals_by_address: rate::KeyedLimiter::new(
                config.edge.connection_rate_per_ip,
                config.edge.connection_rate_per_ip,
                config.edge.max_connections,
            ),
            accept_limits: service::accept_limits(&config),
            config,
        })
    }

    /// Decides whether a new client connection may open: not while
    /// draining, only from allowed origins, within the connection limits.
    /// Refusals are cheap HTTP answers, given before any other work.
    pub(crate) fn admit(
        &self,
        headers: &HeaderMap,
        client: &ClientAddress,
    ) -> Result<admission::Permit, Refusal> {
        if self.shutdown.is_triggered() {
            stats::refused("draining");
            return Err(Refusal::Unavailable(admission::Refused {
                reason: "draining; connect to another server",
                retry_after: Duration::from_secs(1),
                kind: "draining",
            }));
        }
        if !origin_allowed(&self.config.edge.allowed_origins, headers) {
            stats::refused("origin");
            return Err(Refusal::Origin);
        }
        // One address's share of the arrival rate, before the edge's own.
        if let Some(ip) = client.0
            && !self.arrivals_by_address.take(&ip)
        {
            stats::refused("address_rate");
            return Err(Refusal::Unavailable(admission::Refused {
                reason: "too many new connections from this address; retry later",
                retry_after: Duration::from_millis(rand::random_range(1000..3000)),
                kind: "address_rate",
            }));
        }
        let permit = self.admission.admit().map_err(|refused| {
            stats::refused(refused.kind);
            Refusal::Unavailable(refused)
        })?;
        self.stats.accepted();
        Ok(permit)
    }

    /// The API keys that open the `/admin` dashboard; set once. Without
    /// them the dashboard's data stays closed.
    pub fn set_admin_keys(&self, keys: herald_core::api_key::ApiKeys) {
        let _ = self.admin_keys.set(keys);
    }

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.admission.open_connections()
    }

    /// What this edge holds for its clients now: everything a connection
    /// takes, and gives back when it ends.
    pub fn census(&self) -> Census {
        Census {
            connections: self.open_connections(),
            users: self.users.count(),
            channels: self.hub.channel_count(),
            reported: self.reporter.connections(),
            poll_sessions: self.polls.count(),
        }
    }

    /// Where `presence` queries go; set once.
    pub fn set_presence_lookup(&self, lookup: Arc<dyn PresenceLookup>) {
        let _ = self.presence.set(lookup);
    }

    pub(crate) fn presence_lookup(&self) -> Option<&Arc<dyn PresenceLookup>> {
        self.presence.get()
    }

    /// Starts the edge's background work — control messages (disconnect)
    /// and presence reports — until `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        shutdown: Shutdown,
    ) -> Result<Vec<JoinHandle<()>>, BusError> {
        let control = self.listen_to_control(shutdown.clone()).await?;
        let cluster = self.listen_to_stats(shutdown.clone()).await?;
        let presence = self
            .reporter
            .run(
                self.bus.clone(),
                self.subjects.clone(),
                Duration::from_secs(self.config.presence_heartbeat_secs),
                shutdown.clone(),
            )
            .await?;
        stats::register();
        let stats = {
            let edge = self.clone();
            herald_core::metrics::publish_stats(
                self.bus.clone(),
                &self.subjects,
                &self.node_id,
                "edge",
                move |out: &mut herald_core::metrics::NodeStats| edge.export_stats(out),
                shutdown.clone(),
            )
        };
        Ok(vec![control, cluster, presence, stats])
    }

    /// The numbers of this edge, copied to Prometheus on the way.
    fn export_stats(&self, out: &mut herald_core::metrics::NodeStats) {
        let now = stats::Gauges {
            connections: self.open_connections() as u64,
            users: self.users.count() as u64,
            channels: self.hub.channel_count() as u64,
        };
        stats::export(&self.stats, now, out);
    }

    /// Whether `user` may send another typing event to `channel` now.
    pub(crate) fn typing_allowed(&self, user: &str, channel: &Channel) -> bool {
        self.typing_limits.take(&(user.to_owned(), channel.clone()))
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The client-facing routes: `/ws`, `/sse`, `/poll`, `/publish`,
    /// `/typing`, `/presence`, `/readyz`, the SDK and the pages.
    pub fn router(self: &Arc<Self>) -> Router {
        let clients = Router::new()
            .route("/sse", get(transport::sse::stream))
            .route("/poll", get(transport::poll::poll))
            .route("/publish", post(http_commands::publish))
            .route("/typing", post(http_commands::typing))
            .route("/presence", post(http_commands::presence))
            .route("/herald.js", get(web::sdk))
            .route("/", get(web::demo))
            .route("/admin", get(web::admin))
            .route("/admin/events", get(admin::events))
            .layer(self.cors());
        Router::new()
            .route("/ws", get(transport::ws::upgrade))
            .merge(clients)
            .route("/readyz", get(readyz))
            .route("/stats", get(stats))
            // for the demo and admin pages, which a production Ingress
            // does not expose
            .route("/favicon.ico", get(web::favicon))
            .with_state(self.clone())
    }

    /// Browsers on other origins may use the HTTP transports when
    /// `allowed_origins` lists them (any origin when it is empty).
    fn cors(&self) -> CorsLayer {
        let origins = &self.config.edge.allowed_origins;
        let allow = if origins.is_empty() || origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            )
        };
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
            ])
    }

    /// Waits for every connection to close after shutdown was triggered,
    /// at most `limit`.
    pub async fn drained(&self, limit: Duration) -> bool {
        self.connections.close();
        tokio::time::timeout(limit, self.connections.wait())
            .await
            .is_ok()
    }
}

/// What an edge holds for its clients (`GET /stats`, and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Census {
    /// Connections admitted and not yet ended (long-poll sessions too).
    pub connections: usize,
    /// Users with at least one connection.
    pub users: usize,
    /// Channels with a local subscriber (each one bus subscription).
    pub channels: usize,
    /// Connections presence is told of.
    pub reported: usize,
    /// Long-poll sessions.
    pub poll_sessions: usize,
}

/// The client's address: the peer's, or the one a trusted proxy names.
pub(crate) struct ClientAddress(pub Option<std::net::IpAddr>);

impl axum::extract::FromRequestParts<Arc<Edge>> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        edge: &Arc<Edge>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        Ok(ClientAddress(service::client_address(
            peer,
            &parts.headers,
            &edge.accept_limits,
        )))
    }
}

/// Why a new client connection was not accepted.
pub(crate) enum Refusal {
    /// 403: the browser's origin is not allowed.
    Origin,
    /// 503 with `Retry-After`: draining, or over a connection limit.
    Unavailable(admission::Refused),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Origin => (StatusCode::FORBIDDEN, "origin not allowed").into_response(),
            Refusal::Unavailable(refused) => {
                let seconds = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, seconds.to_string())],
                    refused.reason,
                )
                    .into_response()
            }
        }
    }
}

/// Browsers send `Origin`; other clients usually do not, and are allowed.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() || allowed.iter().any(|a| a == "*") {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
    }
}

/// This edge at a glance: `{"node","connections","channels","draining"}`.
async fn stats(
    axum::extract::State(edge): axum::extract::State<Arc<Edge>>,
) -> axum::Json<serde_json::Value> {
    let census = edge.census();
    axum::Json(serde_json::json!({
        "node": edge.node_id,
        "connections": census.connections,
        "users": census.users,
        "channels": census.channels,
        "poll_sessions": census.poll_sessions,
        "draining": edge.shutdown.is_triggered(),
        "slow_consumers": edge.stats.slow_consumers(),
    }))
}

async fn readyz(
    axum::extract::State(edge): axum::extract::State<Arc<Edge>>,
) -> (StatusCode, &'static str) {
    if edge.shutdown.is_triggered() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !edge.bus.is_connected() {
        // Clients here would hear nothing: send new ones to an edge that
        // can deliver (the ones here stay, and catch up on resume).
        (StatusCode::SERVICE_UNAVAILABLE, "NATS disconnected")
    } else {
        (StatusCode::OK, "ready")
    }
}

/// What an edge needs of its configuration before it connects to anything
/// (`herald check edge`, and the first thing `serve` does): a real token
/// key. API keys are optional (they open the dashboard).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.token_verifier(false)?;
    Ok(())
}

/// Starts an edge as its own process: connects to NATS and serves clients.
/// On shutdown its clients are told to reconnect elsewhere (4000), each at
/// its own moment of the drain window, while it still answers.
pub async fn start_service(config: Arc<Config>, shutdown: Shutdown) -> Result<Running, EdgeError> {
    check(&config)?;
    let verifier = config.token_verifier(false)?;
    let node = config.node_id_or_generate("edge");
    let bus: Arc<dyn Bus> =
        Arc::new(NatsBus::connect(config.nats(), &node, Duration::from_secs(10)).await?);
    let edge = Edge::new(config.clone(), verifier, bus, node, shutdown.clone());
    if let Some(url) = &config.presence_url {
        let key = config.api_keys.first().map(String::as_str);
        let client = herald_proto::client::PresenceClient::new(url, key, config.presence_timeout())
            .map_err(|e| ConfigError::new("presence_url", e.0))?;
        edge.set_presence_lookup(Arc::new(client));
    }
    if let Ok(keys) = config.api_keys(false) {
        edge.set_admin_keys(herald_core::api_key::ApiKeys::new(keys));
    }
    let background = edge.start(shutdown.clone()).await?;
    let listener = service::bind(config.http_listen(DEFAULT_HTTP_ADDR)?).await?;
    let app = edge.router().merge(herald_proto::http::ops_router());
    Ok(edge
        .service("edge", shutdown)
        .http(listener, app)
        .tasks(background)
        .start()?)
}

/// Runs an edge until `shutdown` and its drain.
pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), EdgeError> {
    Ok(start_service(config, shutdown).await?.stopped().await?)
}

impl Edge {
    /// A service that drains this edge's clients before it stops: the
    /// lifecycle of `herald edge` and of `standalone` alike.
    pub fn service(self: &Arc<Self>, name: &'static str, shutdown: Shutdown) -> Service {
        let config = &self.config;
        let edge = self.clone();
        let limit = Duration::from_secs(config.edge.drain_window_secs + config.shutdown_grace_secs);
        Service::new(name, shutdown)
            .limits(self.accept_limits.clone())
            .stream_paths(&["/sse", "/ws"])
            .grace(Duration::from_secs(config.shutdown_grace_secs))
            .drain(async move {
                edge.drained(limit).await;
            })
    }
}
