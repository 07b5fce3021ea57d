//! Routing: the single write path. A publication — from the server API or a
//! client through an edge — is validated here, gets its per-channel offset
//! from the history, is stored, and is published live for the edges.

mod api;
mod api_key;
mod edge_requests;
mod publish;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald_core::bus::{Bus, NatsBus};
use herald_core::config::{Config, ConfigError};
use herald_core::history::{History, MemoryHistory};
use herald_core::shutdown::Shutdown;

pub use api::api_router;
pub use api_key::ApiKeys;
pub use publish::{PublishInput, Routing};

/// The server API's default HTTP address in distributed mode.
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8081";

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
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

/// Runs routing as its own process: connects to NATS, answers edges on the
/// bus and serves the HTTP server API until `shutdown`.
pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> Result<(), RoutingError> {
    let keys = ApiKeys::new(config.api_keys(false)?);
    let node = config.node_id_or_generate("routing");
    let bus: Arc<dyn Bus> =
        Arc::new(NatsBus::connect(&config.nats_url, &node, Duration::from_secs(10)).await?);
    // Until the JetStream history lands, one routing replica keeps history
    // in memory; offsets restart with a new epoch when it restarts.
    let history: Arc<dyn History> = Arc::new(MemoryHistory::new());
    let routing = Arc::new(Routing::new(config.clone(), bus, history));
    let listener = routing.listen_to_edges(shutdown.clone()).await?;

    let addr = match config.http_addr {
        Some(a) => a,
        None => DEFAULT_HTTP_ADDR
            .parse()
            .map_err(|_| ConfigError::new("http_addr", "bad built-in default"))?,
    };
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RoutingError::Listen { addr, source })?;
    let local = tcp.local_addr().map_err(RoutingError::Http)?;
    tracing::info!(service = "routing", addr = %local, "listening");
    let app = api_router(routing, keys, config.max_message_bytes);
    let server_shutdown = shutdown.clone();
    axum::serve(tcp, app)
        .with_graceful_shutdown(async move { server_shutdown.wait().await })
        .await
        .map_err(RoutingError::Http)?;
    let _ = listener.await;
    Ok(())
}
