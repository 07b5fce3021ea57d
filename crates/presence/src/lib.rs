//! Presence: who is online, per user and per channel, across every edge.
//! Each replica takes in every edge's reports over NATS and holds the whole
//! view, so replicas can sit behind one Kubernetes Service; it answers
//! `herald.presence.v1.Presence` over gRPC.

mod announcer;
mod client;
mod grpc;
mod intake;
mod state;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::api_key::ApiKeys;
use herald_core::bus::{Bus, BusError, NatsBus};
use herald_core::channel::Channel;
use herald_core::config::{Config, ConfigError};
use herald_core::presence::{PresenceError, PresenceLookup};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use tokio::task::JoinHandle;

pub use announcer::{Leadership, start as announce};
pub use client::PresenceClient;
pub use grpc::grpc_service;
pub use intake::Intake;
pub use state::{EventKind, PresenceEvent, PresenceState, Stats, UserPresence};

/// The presence service's default gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50052";
/// Its default HTTP address (`/metrics`, `/healthz`).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8082";
pub const GRPC_SERVICE_NAME: &str = "herald.presence.v1.Presence";

#[derive(Debug, thiserror::Error)]
pub enum PresenceServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(String),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Starts taking in edge reports on `bus`: the state fills from here on.
pub async fn start(
    config: &Config,
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
) -> Result<(Arc<PresenceState>, JoinHandle<()>), BusError> {
    let state = PresenceState::new(Duration::from_millis(config.presence_grace_ms));
    let intake = Intake::new(
        state.clone(),
        bus,
        Subjects::new(&config.subject_prefix),
        Duration::from_secs(config.presence_heartbeat_secs),
    );
    let task = intake.start(shutdown).await?;
    Ok((state, task))
}

/// Publishes what this replica sees on `herald.stats.<node>` once a second,
/// and keeps the Prometheus gauges current.
pub fn publish_stats(
    state: Arc<PresenceState>,
    bus: Arc<dyn Bus>,
    subjects: &Subjects,
    node: &str,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    herald_core::metrics::publish_stats(
        bus,
        subjects,
        node,
        "presence",
        move |stats: &mut herald_core::metrics::NodeStats| {
            let now = state.stats();
            metrics::gauge!("herald_presence_users").set(now.users as f64);
            metrics::gauge!("herald_presence_connections").set(now.connections as f64);
            metrics::gauge!("herald_presence_channels").set(now.channels as f64);
            stats.users = now.users;
            stats.connections = now.connections;
        },
        shutdown,
    )
}

/// Runs a presence replica as its own process: NATS in, gRPC out.
/// What presence needs of its configuration before it connects to anything
/// (`herald check presence`, and the first thing `serve` does).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.api_keys(false)?;
    Ok(())
}

pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), PresenceServiceError> {
    check(&config)?;
    let keys = ApiKeys::new(config.api_keys(false)?);
    let node = config.node_id_or_generate("presence");
    let nats = NatsBus::connect(&config.nats_url, &node, Duration::from_secs(10)).await?;
    let client = nats.client().clone();
    let bus: Arc<dyn Bus> = Arc::new(nats);
    let (state, intake) = start(&config, bus.clone(), shutdown.clone()).await?;
    let announcer = announce(
        &state,
        bus.clone(),
        config.clone(),
        &node,
        Leadership::Elected(client),
        shutdown.clone(),
    );
    let _stats = publish_stats(
        state.clone(),
        bus,
        &Subjects::new(&config.subject_prefix),
        &node,
        shutdown.clone(),
    );
    let addr = config.grpc_listen(DEFAULT_GRPC_ADDR)?;
    let http_addr = config.http_listen(DEFAULT_HTTP_ADDR)?;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| PresenceServiceError::Listen {
            addr: http_addr,
            source,
        })?;
    let http_local = http
        .local_addr()
        .map_err(|source| PresenceServiceError::Listen {
            addr: http_addr,
            source,
        })?;
    let app = herald_proto::http::ops_router();
    let stop_http = shutdown.clone();
    let http_server = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(async move { stop_http.wait().await })
            .await
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| PresenceServiceError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| PresenceServiceError::Listen { addr, source })?;
    tracing::info!(service = "presence", addr = %http_local, grpc = %local, "listening");
    let routes = tonic::service::Routes::new(grpc_service(state, keys));
    let routes = herald_proto::server::with_standard_services(routes, &[GRPC_SERVICE_NAME])
        .await
        .map_err(|e| PresenceServiceError::Grpc(e.to_string()))?;
    let stop = shutdown.clone();
    herald_proto::server::serve(listener, routes, async move { stop.wait().await })
        .await
        .map_err(|e| PresenceServiceError::Grpc(e.to_string()))?;
    if let Ok(Err(e)) = http_server.await {
        return Err(PresenceServiceError::Http(e));
    }
    let _ = intake.await;
    let _ = announcer.await;
    Ok(())
}

/// In one process (standalone) routing and edges ask the state directly.
#[async_trait]
impl PresenceLookup for PresenceState {
    async fn online(&self, users: &[String]) -> Result<HashSet<String>, PresenceError> {
        Ok(
            PresenceState::online(self, users.iter().map(String::as_str))
                .into_iter()
                .collect(),
        )
    }

    async fn channel_users(&self, channel: &Channel) -> Result<Vec<String>, PresenceError> {
        Ok(self.channel(channel).into_iter().map(|(u, _)| u).collect())
    }
}
