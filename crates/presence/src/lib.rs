//! Presence: who is online, per user and per channel, across every edge.
//! Each replica takes in every edge's reports over NATS and holds the whole
//! view, so replicas can sit behind one Kubernetes Service; it answers
//! `herald.presence.v1.Presence` over gRPC.

mod announcer;
mod grpc;
mod intake;
mod state;

use std::collections::HashSet;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::api_key::ApiKeys;
use herald_core::bus::{Bus, BusError, NatsBus};
use herald_core::config::{Config, ConfigError};
use herald_core::presence::{PresenceError, PresenceLookup};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_proto::service::{self, Readiness, Running, Service, ServiceError, bind};
use herald_protocol::channel::Channel;
use tokio::task::JoinHandle;

pub use announcer::{Leadership, start as announce};
pub use grpc::grpc_service;
pub use intake::Intake;
pub use state::{EventKind, PresenceEvent, PresenceState, Stats, UserPresence};

/// The presence service's default gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50052";
/// Its default HTTP address (`/metrics`, `/healthz`).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8082";
/// The gRPC service name, for health checks.
pub const GRPC_SERVICE_NAME: &str = "herald.presence.v1.Presence";

/// Why the presence service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PresenceServiceError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS could not be reached or subscribed to.
    #[error("NATS")]
    Bus(#[from] BusError),
    /// A listener could not be bound or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The gRPC reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Grpc(String),
}

/// Starts taking in edge reports on `bus`: the state fills from here on.
pub async fn start(
    config: &Config,
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
) -> Result<(Arc<PresenceState>, Arc<Intake>, JoinHandle<()>), BusError> {
    let state = PresenceState::new(Duration::from_millis(config.presence.presence_grace_ms));
    let intake = Intake::new(
        state.clone(),
        bus,
        Subjects::new(&config.subject_prefix),
        Duration::from_secs(config.presence_heartbeat_secs),
    );
    let task = intake.start(shutdown).await?;
    Ok((state, intake, task))
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

/// Starts the presence service as its own process: the view of every
/// edge, join/leave announcements under a lease, `Presence` over gRPC.
pub async fn start_service(
    config: Arc<Config>,
    shutdown: Shutdown,
) -> Result<Running, PresenceServiceError> {
    check(&config)?;
    let keys = ApiKeys::new(config.api_keys(false)?);
    let node = config.node_id_or_generate("presence");
    let nats = NatsBus::connect(config.nats(), &node, Duration::from_secs(10)).await?;
    let client = nats.client().clone();
    let bus: Arc<dyn Bus> = Arc::new(nats);
    let (state, view, intake) = start(&config, bus.clone(), shutdown.clone()).await?;
    let readiness = Readiness::new().bus(bus.clone()).check("view", move || {
        let filled = view.view_filled();
        async move { filled }
    });
    let announcer = announce(
        &state,
        bus.clone(),
        config.clone(),
        &node,
        Leadership::Elected(client),
        shutdown.clone(),
    );
    let stats = publish_stats(
        state.clone(),
        bus,
        &Subjects::new(&config.subject_prefix),
        &node,
        shutdown.clone(),
    );
    let http = bind(config.http_listen(DEFAULT_HTTP_ADDR)?).await?;
    let grpc = bind(config.grpc_listen(DEFAULT_GRPC_ADDR)?).await?;
    let routes = tonic::service::Routes::new(grpc_service(state, keys));
    let (routes, health) = herald_proto::server::with_standard_services(
        routes,
        &[GRPC_SERVICE_NAME],
        readiness.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| PresenceServiceError::Grpc(e.to_string()))?;
    let app = herald_proto::http::ops_router().merge(readiness.router());
    Ok(Service::new("presence", shutdown)
        .limits(service::accept_limits(&config))
        .grace(Duration::from_secs(config.shutdown_grace_secs))
        .http(http, app)
        .grpc(grpc, routes)
        .tasks([intake, announcer, stats, health])
        .start()?)
}

/// Runs the presence service until `shutdown`.
pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), PresenceServiceError> {
    Ok(start_service(config, shutdown).await?.stopped().await?)
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
