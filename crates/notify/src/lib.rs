//! Notify: when a user is not connected, reach their phone or browser
//! through APNs, FCM or Web Push — coalesced, rate-limited, retried, and
//! with dead tokens cleaned up.

pub mod api;
mod client;
pub mod device;
pub mod endpoint;
pub mod providers;
pub mod stats;
pub mod store;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_core::api_key::ApiKeys;
use herald_core::bus::NatsBus;
use herald_core::config::{Config, ConfigError};
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_core::work_queue::{JetStreamWorkQueue, WorkQueue};
use tokio::task::JoinHandle;

pub use api::{Notify, SendRequest, grpc_service, http_router};
pub use client::NotifyClient;

pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8083";
pub const DEFAULT_GRPC_ADDR: &str = "0.0.0.0:50053";
pub const GRPC_SERVICE_NAME: &str = "herald.notify.v1.Notify";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("bus: {0}")]
    Bus(#[from] herald_core::bus::BusError),
    #[error(transparent)]
    Queue(#[from] herald_core::work_queue::QueueError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Server(String),
}

/// Notify's parts, started: the API operations and the worker's task.
pub struct Started {
    pub notify: Arc<Notify>,
    pub worker: JoinHandle<()>,
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
        notify: Notify::new(store, queue, config.max_devices_per_user, endpoints),
        worker: task,
    })
}

/// Runs notify as its own process: the JetStream work queue in, the push
/// services out, the device API over HTTP and gRPC.
/// What notify needs of its configuration before it connects to anything
/// (`herald check notify`, and the first thing `serve` does): API keys, a
/// database, and push credentials that load.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.api_keys(false)?;
    if config.database_url.is_none() {
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

pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), NotifyError> {
    check(&config)?;
    let keys = ApiKeys::new(config.api_keys(false)?);
    let database_url = config
        .database_url
        .clone()
        .ok_or_else(|| ConfigError::new("database_url", "is required (HERALD_DATABASE_URL)"))?;
    let node = config.node_id_or_generate("notify");
    let nats = NatsBus::connect(&config.nats_url, &node, Duration::from_secs(10)).await?;
    let queue: Arc<dyn WorkQueue> = Arc::new(
        JetStreamWorkQueue::open(
            nats.client().clone(),
            &Subjects::new(&config.subject_prefix),
            Duration::from_secs(config.push_ack_wait_secs),
        )
        .await?,
    );
    let started = start(config.clone(), &database_url, queue, shutdown.clone()).await?;
    let _stats = stats::publish_stats(
        Arc::new(nats),
        &Subjects::new(&config.subject_prefix),
        &node,
        shutdown.clone(),
    );

    let http_addr = config.http_listen(DEFAULT_HTTP_ADDR)?;
    let grpc_addr = config.grpc_listen(DEFAULT_GRPC_ADDR)?;
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|source| NotifyError::Listen {
            addr: http_addr,
            source,
        })?;
    let grpc = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(|source| NotifyError::Listen {
            addr: grpc_addr,
            source,
        })?;
    tracing::info!(
        service = "notify",
        addr = %http.local_addr().map_err(|e| NotifyError::Server(e.to_string()))?,
        grpc = %grpc.local_addr().map_err(|e| NotifyError::Server(e.to_string()))?,
        "listening"
    );
    let routes = tonic::service::Routes::new(grpc_service(started.notify.clone(), keys.clone()));
    let routes = herald_proto::server::with_standard_services(routes, &[GRPC_SERVICE_NAME])
        .await
        .map_err(|e| NotifyError::Server(e.to_string()))?;
    let stop_grpc = shutdown.clone();
    let stop_http = shutdown.clone();
    let app = http_router(started.notify.clone(), keys).merge(herald_proto::http::ops_router());
    let (http_result, grpc_result) = tokio::join!(
        async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move { stop_http.wait().await })
                .await
        },
        herald_proto::server::serve(grpc, routes, async move { stop_grpc.wait().await })
    );
    http_result.map_err(|e| NotifyError::Server(e.to_string()))?;
    grpc_result.map_err(|e| NotifyError::Server(e.to_string()))?;
    let _ = started.worker.await;
    Ok(())
}
