//! Notify: when a user is not connected, reach their phone or browser
//! through APNs, FCM or Web Push — coalesced, rate-limited, retried, and
//! with dead tokens cleaned up.

pub mod api;
pub mod device;
pub mod endpoint;
pub mod providers;
pub mod stats;
pub mod store;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use herald_core::api_key::ApiKeys;
use herald_core::bus::NatsBus;
use herald_core::config::{Config, ConfigError};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_core::work_queue::{JetStreamWorkQueue, WorkQueue};
use herald_proto::service::{self, Readiness, Running, Service, ServiceError, bind};
use tokio::task::JoinHandle;

pub use api::{Notify, SendRequest, grpc_service, http_router};

/// Notify's default HTTP address (device API, `/metrics`).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8083";
/// Its default gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50053";
/// The gRPC service name, for health checks.
pub const GRPC_SERVICE_NAME: &str = "herald.notify.v1.Notify";

/// Why notify could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A setting is wrong, push credentials do not load, or the database
    /// cannot be opened.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// NATS could not be reached.
    #[error("NATS")]
    Bus(#[from] herald_core::bus::BusError),
    /// The push job stream could not be opened.
    #[error(transparent)]
    Queue(#[from] herald_core::work_queue::QueueError),
    /// The device store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A listener could not be bound or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The gRPC reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Grpc(String),
}

/// Notify's parts, started: the API operations and the worker's task.
pub struct Started {
    /// The device and send operations, for the HTTP and gRPC APIs.
    pub notify: Arc<Notify>,
    /// The push worker; it ends on the shutdown signal.
    pub worker: JoinHandle<()>,
    /// The device store (readiness pings it).
    pub store: Arc<dyn store::TokenStore>,
}

/// Opens the device store, loads the credentials and starts the worker on
/// `queue` — the part standalone and the notify process share.
pub async fn start(
    config: Arc<Config>,
    database_url: &str,
    queue: Arc<dyn WorkQueue>,
    shutdown: Shutdown,
) -> Result<Started, NotifyError> {
    let providers = Arc::new(providers::Providers::from_config(&config)?);
    let endpoints = providers.endpoints().clone();
    let store = store::open(database_url)
        .await
        .map_err(|e| ConfigError::new("database_url", e.to_string()))?;
    let worker = worker::Worker::new(config.clone(), store.clone(), providers, queue.clone());
    let task = worker.start(shutdown);
    Ok(Started {
        notify: Notify::new(
            store.clone(),
            queue,
            config.notify.max_devices_per_user,
            endpoints,
        ),
        worker: task,
        store,
    })
}

/// What notify needs of its configuration before it connects to anything
/// (`herald check notify`, and the first thing `serve` does): API keys, a
/// database, and push credentials that load.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.api_keys(false)?;
    if config.notify.database_url.is_none() {
        return Err(ConfigError::new(
            "database_url",
            "is required (HERALD_DATABASE_URL)",
        ));
    }
    providers::Providers::from_config(config)?;
    config.http_listen(DEFAULT_HTTP_ADDR)?;
    config.grpc_listen(DEFAULT_GRPC_ADDR)?;
    Ok(())
}

/// Starts notify as its own process: devices in PostgreSQL, the push
/// worker on the JetStream work queue, the device API over HTTP and gRPC.
pub async fn start_service(
    config: Arc<Config>,
    shutdown: Shutdown,
) -> Result<Running, NotifyError> {
    check(&config)?;
    let keys = ApiKeys::new(config.api_keys(false)?);
    let database_url = config
        .notify
        .database_url
        .clone()
        .ok_or_else(|| ConfigError::new("database_url", "is required (HERALD_DATABASE_URL)"))?;
    let node = config.node_id_or_generate("notify");
    let nats = NatsBus::connect(config.nats(), &node, Duration::from_secs(10)).await?;
    let queue: Arc<dyn WorkQueue> = Arc::new(
        JetStreamWorkQueue::open(
            nats.client().clone(),
            &Subjects::new(&config.subject_prefix),
            Duration::from_secs(config.push_ack_wait_secs),
            config.queue_streams(),
        )
        .await?,
    );
    let started = start(config.clone(), &database_url, queue, shutdown.clone()).await?;
    let nats: Arc<dyn herald_core::bus::Bus> = Arc::new(nats);
    let bus_for_health = nats.clone();
    let stats = stats::publish_stats(
        nats,
        &Subjects::new(&config.subject_prefix),
        &node,
        shutdown.clone(),
    );
    let http = bind(config.http_listen(DEFAULT_HTTP_ADDR)?).await?;
    let grpc = bind(config.grpc_listen(DEFAULT_GRPC_ADDR)?).await?;
    let routes = tonic::service::Routes::new(grpc_service(started.notify.clone(), keys.clone()));
    let store = started.store.clone();
    let readiness = Readiness::new()
        .bus(bus_for_health)
        .check("database", move || {
            let store = store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        });
    let (routes, health) = herald_proto::server::with_standard_services(
        routes,
        &[GRPC_SERVICE_NAME],
        readiness.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| NotifyError::Grpc(e.to_string()))?;
    let app = http_router(started.notify.clone(), keys)
        .merge(herald_proto::http::ops_router())
        .merge(readiness.router());
    Ok(Service::new("notify", shutdown)
        .limits(service::accept_limits(&config))
        .grace(Duration::from_secs(config.shutdown_grace_secs))
        .http(http, app)
        .grpc(grpc, routes)
        .tasks([started.worker, stats, health])
        .start()?)
}

/// Runs notify until `shutdown`.
pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), NotifyError> {
    Ok(start_service(config, shutdown).await?.stopped().await?)
}
