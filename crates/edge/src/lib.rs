//! The edge: where clients connect. It authenticates them, keeps their
//! subscriptions, forwards their publishes to routing and delivers live
//! publications. Edge processes hold no state but their connections.

mod commands;
mod control;
mod hub;
mod routing_client;
mod session;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use herald_core::auth::TokenVerifier;
use herald_core::bus::{Bus, NatsBus};
use herald_core::config::{Config, ConfigError};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use tokio_util::task::TaskTracker;

pub use hub::{Frame, Hub, Outbox};

/// The edge's default HTTP address.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8080";

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("bus: {0}")]
    Bus(#[from] herald_core::bus::BusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// What every connection of this edge shares.
pub struct Edge {
    pub(crate) config: Arc<Config>,
    pub(crate) verifier: TokenVerifier,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subjects: Subjects,
    pub(crate) hub: Hub,
    pub(crate) node_id: String,
    next_conn: AtomicU64,
    /// Fires on SIGTERM: connections are told to reconnect elsewhere.
    pub(crate) shutdown: Shutdown,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) connections: TaskTracker,
    /// Connected users and, per connection, the signal that closes it.
    pub(crate) users: control::Users,
}

impl Edge {
    pub fn new(
        config: Arc<Config>,
        verifier: TokenVerifier,
        bus: Arc<dyn Bus>,
        node_id: String,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        let subjects = Subjects::new(&config.subject_prefix);
        Arc::new(Edge {
            hub: Hub::new(bus.clone(), subjects.clone()),
            config,
            verifier,
            bus,
            subjects,
            node_id,
            next_conn: AtomicU64::new(1),
            shutdown,
            connections: TaskTracker::new(),
            users: control::Users::default(),
        })
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The client-facing routes: `/ws`, `/healthz`, `/readyz`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ws", get(ws::upgrade))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
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

async fn readyz(
    axum::extract::State(edge): axum::extract::State<Arc<Edge>>,
) -> (StatusCode, &'static str) {
    if edge.shutdown.is_triggered() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ready")
    }
}

/// Runs an edge as its own process: connects to NATS and serves clients
/// until `shutdown`, then closes every connection (code 4000, reconnect).
pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), EdgeError> {
    let verifier = config.token_verifier(false)?;
    let node = config.node_id_or_generate("edge");
    let bus: Arc<dyn Bus> =
        Arc::new(NatsBus::connect(&config.nats_url, &node, Duration::from_secs(10)).await?);
    let edge = Edge::new(config.clone(), verifier, bus, node, shutdown.clone());
    let control = edge.listen_to_control(shutdown.clone()).await?;
    let addr = match config.http_addr {
        Some(a) => a,
        None => DEFAULT_HTTP_ADDR
            .parse()
            .map_err(|_| ConfigError::new("http_addr", "bad built-in default"))?,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| EdgeError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(EdgeError::Http)?;
    tracing::info!(service = "edge", addr = %local, node = %edge.node_id, "listening");
    serve_http(listener, edge.router(), shutdown).await?;
    edge.drained(Duration::from_secs(config.shutdown_grace_secs))
        .await;
    let _ = control.await;
    Ok(())
}

/// Serves `app` until `shutdown`. Upgraded WebSockets are not waited for
/// here; their own tasks close them.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: Shutdown,
) -> Result<(), EdgeError> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .map_err(EdgeError::Http)
}
