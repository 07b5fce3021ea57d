//! Routing: the single write path. A publication — from the server API or a
//! client through an edge — is validated here, gets its per-channel offset
//! from the history, is stored, is published live for the edges, and the
//! recipients who are not connected are handed to notify as push jobs.

mod api;
mod edge_requests;
mod grpc;
mod idempotency;
mod routing;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use herald_core::bus::{Bus, NatsBus};
use herald_core::config::{Config, ConfigError, HistoryStorage};
use herald_core::history::{JetStreamHistory, Storage};
use herald_core::presence::{NoPresence, PresenceLookup};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_core::work_queue::JetStreamWorkQueue;
use herald_proto::service::{self, Readiness, Running, Service, ServiceError, bind};

pub use api::{api_router, docs_router};
pub use grpc::{grpc_service, status_of};
pub use herald_core::api_key::ApiKeys;
pub use routing::{
    BroadcastAnswer, BroadcastRequest, BroadcastResult, Deps, NotifyOutcome, PublishAnswer,
    PublishRequest, Routing, SendAnswer, SendRequest, SendResult,
};

/// The server API's default HTTP address in distributed mode.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8081";
/// The default gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50051";
/// The gRPC service name, for health checks.
pub const GRPC_SERVICE_NAME: &str = "herald.routing.v1.Routing";

/// Why routing could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS could not be reached or subscribed to.
    #[error("NATS")]
    Bus(#[from] herald_core::bus::BusError),
    /// The history streams could not be opened.
    #[error(transparent)]
    History(#[from] herald_core::history::HistoryError),
    /// The push job stream could not be opened.
    #[error(transparent)]
    Queue(#[from] herald_core::work_queue::QueueError),
    /// A listener could not be bound or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The gRPC reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Grpc(String),
}

/// What routing needs of its configuration before it connects to anything
/// (`herald check routing`, and the first thing `serve` does).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.api_keys(false)?;
    config.http_listen(DEFAULT_HTTP_ADDR)?;
    config.grpc_listen(DEFAULT_GRPC_ADDR)?;
    Ok(())
}

/// Starts routing as its own process: history in JetStream, push jobs on
/// the JetStream work queue, the server API over HTTP and gRPC, and answers
/// to edges on the bus.
pub async fn start_service(
    config: Arc<Config>,
    shutdown: Shutdown,
) -> Result<Running, RoutingError> {
    check(&config)?;
    let keys = ApiKeys::new(config.api_keys(false)?);
    let node = config.node_id_or_generate("routing");
    let nats = NatsBus::connect(config.nats(), &node, Duration::from_secs(10)).await?;
    let subjects = Subjects::new(&config.subject_prefix);
    let storage = match config.routing.history_storage {
        HistoryStorage::File => Storage::File,
        HistoryStorage::Memory => Storage::Memory,
    };
    let history = JetStreamHistory::open(
        nats.client().clone(),
        subjects.clone(),
        &config.namespaces,
        config.idempotency_window(),
        storage,
        config.history_streams(),
    )
    .await?
    .with_append_timeout(config.publish_timeout());
    let queue = JetStreamWorkQueue::open(
        nats.client().clone(),
        &subjects,
        Duration::from_secs(config.push_ack_wait_secs),
        config.queue_streams(),
    )
    .await?;
    // Without a presence service offline hand-offs report users as unknown
    // rather than pushing blindly.
    let presence: Arc<dyn PresenceLookup> = match &config.presence_url {
        Some(url) => Arc::new(
            herald_proto::client::PresenceClient::new(
                url,
                config.api_keys.first().map(String::as_str),
                config.presence_timeout(),
            )
            .map_err(|e| ConfigError::new("presence_url", e.0))?,
        ),
        None => {
            tracing::warn!("no HERALD_PRESENCE_URL: offline users cannot be told apart; no pushes");
            Arc::new(NoPresence)
        }
    };
    let history = Arc::new(history);
    let queue = Arc::new(queue);
    let readiness = readiness_router(nats.clone(), history.clone(), queue.clone());
    let bus: Arc<dyn Bus> = Arc::new(nats);
    let nats_for_health = bus.clone();
    let mut routing = Routing::new(
        config.clone(),
        Deps {
            bus,
            history,
            queue,
            presence,
        },
    );
    match &config.notify_url {
        Some(url) => {
            let client = herald_proto::client::NotifyClient::new(
                url,
                config.api_keys.first().map(String::as_str),
                config.presence_timeout(),
            )
            .map_err(|e| ConfigError::new("notify_url", e))?;
            routing = routing.with_device_lookup(Arc::new(client));
        }
        None => tracing::info!(
            "no HERALD_NOTIFY_URL: offline users are pushed without asking whether they have devices"
        ),
    }
    let routing = Arc::new(routing);
    let edge_listener = routing.listen_to_edges(shutdown.clone()).await?;
    let stats = routing.publish_stats(&node, shutdown.clone());

    let http = bind(config.http_listen(DEFAULT_HTTP_ADDR)?).await?;
    let grpc = bind(config.grpc_listen(DEFAULT_GRPC_ADDR)?).await?;
    let routes = tonic::service::Routes::new(grpc_service(routing.clone(), keys.clone()));
    let (routes, health) = herald_proto::server::with_standard_services(
        routes,
        &[GRPC_SERVICE_NAME],
        Readiness::new().bus(nats_for_health),
        shutdown.clone(),
    )
    .await
    .map_err(|e| RoutingError::Grpc(e.to_string()))?;
    let app = api_router(routing, keys, config.max_message_bytes)
        .merge(docs_router())
        .merge(herald_proto::http::ops_router())
        .merge(readiness);
    Ok(Service::new("routing", shutdown)
        .limits(service::accept_limits(&config))
        .grace(Duration::from_secs(config.shutdown_grace_secs))
        .http(http, app)
        .grpc(grpc, routes)
        .tasks([edge_listener, stats, health])
        .start()?)
}

/// `GET /readyz`: 200 while NATS is connected, else 503; the body names
/// every stream routing keeps, how it differs from the configuration (left
/// as it is unless `stream_update`), and how often it was found lost and
/// created again.
fn readiness_router(
    nats: NatsBus,
    history: Arc<JetStreamHistory>,
    queue: Arc<JetStreamWorkQueue>,
) -> axum::Router {
    axum::Router::new().route(
        "/readyz",
        axum::routing::get(async move || {
            let connected = nats.is_connected();
            let streams: Vec<_> = history
                .streams()
                .chain(queue.streams())
                .map(|s| {
                    serde_json::json!({
                        "name": s.name(),
                        "drift": s.drift(),
                        "recreated": s.recreated(),
                    })
                })
                .collect();
            let status = if connected {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            };
            (
                status,
                axum::Json(serde_json::json!({
                    "ready": connected,
                    "nats": if connected { "connected" } else { "disconnected" },
                    "streams": streams,
                })),
            )
        }),
    )
}

/// Runs routing until `shutdown`.
pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), RoutingError> {
    Ok(start_service(config, shutdown).await?.stopped().await?)
}
