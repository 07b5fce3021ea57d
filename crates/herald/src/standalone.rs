//! `herald standalone`: every service in one process over the in-memory
//! bus and history — the same code paths as the distributed mode, with the
//! client API and the server API on one HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herald_core::Config;
use herald_core::bus::{Bus, MemoryBus};
use herald_core::history::{History, MemoryHistory};
use herald_core::shutdown::Shutdown;
use herald_edge::Edge;
use herald_routing::{ApiKeys, Routing, api_router};

pub async fn serve(config: Arc<Config>, shutdown: Shutdown) -> anyhow::Result<()> {
    let dev_secret = config.jwt_secret.is_none() && config.jwt_public_key_file.is_none();
    if dev_secret {
        tracing::warn!(
            "no HERALD_JWT_SECRET: using the built-in development secret; anyone can mint tokens. \
             Listening on localhost only unless --http says otherwise"
        );
    }
    if config.api_keys.is_empty() {
        tracing::warn!(
            key = herald_core::config::DEV_API_KEY,
            "no HERALD_API_KEYS: the server API accepts the development key"
        );
    }
    let verifier = config.token_verifier(true)?;
    let keys = ApiKeys::new(config.api_keys(true)?);

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let history: Arc<dyn History> = Arc::new(MemoryHistory::new());
    let routing = Arc::new(Routing::new(config.clone(), bus.clone(), history));
    let listener = routing.listen_to_edges(shutdown.clone()).await?;
    let node = config.node_id_or_generate("standalone");
    let edge = Edge::new(config.clone(), verifier, bus, node, shutdown.clone());
    let app = edge
        .router()
        .merge(api_router(routing, keys, config.max_message_bytes));

    let default_addr: SocketAddr = if dev_secret {
        ([127, 0, 0, 1], 8080).into()
    } else {
        ([0, 0, 0, 0], 8080).into()
    };
    let addr = config.http_addr.unwrap_or(default_addr);
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(service = "standalone", addr = %tcp.local_addr()?, "listening");
    herald_edge::serve_http(tcp, app, shutdown).await?;
    edge.drained(Duration::from_secs(config.shutdown_grace_secs))
        .await;
    let _ = listener.await;
    Ok(())
}
