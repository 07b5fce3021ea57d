//! `herald standalone`: every service in one process over the in-memory
//! bus and history — the same code paths as the distributed mode, with the
//! client API and the server API on one HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;

use herald_core::Config;
use herald_core::auth::{JwtAlgorithm, TokenSigner};
use herald_core::bus::{Bus, MemoryBus};
use herald_core::config::DEV_JWT_SECRET;
use herald_core::history::MemoryHistory;
use herald_core::shutdown::Shutdown;
use herald_core::work_queue::{MemoryWorkQueue, WorkQueue};
use herald_edge::Edge;
use herald_proto::service;
use herald_routing::{ApiKeys, Deps, Routing, api_router, grpc_service};

/// The SQLite file standalone keeps device registrations in when no
/// database is named, in `data_dir`.
const DEFAULT_DATABASE_FILE: &str = "herald.db";

/// How often expired history is swept out of memory.
const HISTORY_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Push jobs standalone holds before refusing more (notify drains them).
const STANDALONE_QUEUE_CAPACITY: usize = 100_000;

pub(crate) async fn serve(config: Arc<Config>, shutdown: Shutdown) -> anyhow::Result<()> {
    let dev_secret = config.edge.jwt_secret.is_none()
        && config.edge.jwt_public_key_file.is_none()
        && config.edge.jwt_jwks_file.is_none();
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
    let node = config.node_id_or_generate("standalone");
    // The presence service, fed by the edge's reports over the in-memory
    // bus: the same path as across processes.
    let (presence, _, presence_intake) =
        herald_presence::start(&config, bus.clone(), shutdown.clone()).await?;
    let subjects = herald_core::subjects::Subjects::new(&config.subject_prefix);
    let announcer = herald_presence::announce(
        &presence,
        bus.clone(),
        config.clone(),
        &node,
        herald_presence::Leadership::Sole,
        shutdown.clone(),
    );
    let presence_stats = herald_presence::publish_stats(
        presence.clone(),
        bus.clone(),
        &subjects,
        &node,
        shutdown.clone(),
    );
    let edge = Edge::new(
        config.clone(),
        verifier,
        bus.clone(),
        node.clone(),
        shutdown.clone(),
    );
    edge.set_presence_lookup(presence.clone());
    edge.set_admin_keys(keys.clone());
    let background = edge.start(shutdown.clone()).await?;
    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryWorkQueue::new(STANDALONE_QUEUE_CAPACITY));
    let database_url = match &config.notify.database_url {
        Some(url) => url.clone(),
        None => {
            let dir = config
                .notify
                .data_dir
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from("."));
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("data_dir {}: {e}", dir.display()))?;
            let file = std::path::absolute(dir.join(DEFAULT_DATABASE_FILE))?;
            // Said once, so nobody finds a file they did not expect.
            tracing::info!(file = %file.display(), "device registrations are kept in this SQLite file (data_dir / HERALD_DATA_DIR to move it, database_url for another database)");
            format!("sqlite:{}", file.display())
        }
    };
    let notify = herald_notify::start(
        config.clone(),
        &database_url,
        queue.clone(),
        shutdown.clone(),
    )
    .await?;
    let notify_stats =
        herald_notify::stats::publish_stats(bus.clone(), &subjects, &node, shutdown.clone());
    // Standalone keeps history in memory: within a budget, swept.
    let history = Arc::new(
        MemoryHistory::new(config.idempotency_window())
            .with_budget(config.routing.history_memory_bytes),
    );
    let sweeper = history.sweep_every(HISTORY_SWEEP_EVERY, shutdown.clone());
    let routing = Arc::new(
        Routing::new(
            config.clone(),
            Deps {
                bus,
                history: history.clone(),
                queue,
                presence: presence.clone(),
            },
        )
        .with_device_lookup(notify.notify.clone()),
    );
    let listener = routing.listen_to_edges(shutdown.clone()).await?;
    let routing_stats = routing.publish_stats(&node, shutdown.clone());
    let app = edge
        .router()
        .merge(api_router(
            routing.clone(),
            keys.clone(),
            config.max_message_bytes,
        ))
        .merge(herald_notify::http_router(
            notify.notify.clone(),
            keys.clone(),
        ))
        .merge(herald_routing::docs_router())
        .merge(herald_proto::http::ops_router());
    // With the public development secret anyone can mint tokens anyway; the
    // demo chat at `/` gets them from here so it works with no setup.
    let app = if dev_secret {
        let signer = TokenSigner::new(JwtAlgorithm::HS256, DEV_JWT_SECRET.as_bytes())?;
        app.merge(herald_edge::demo_tokens(signer))
    } else {
        app
    };

    let default_addr: SocketAddr = if dev_secret {
        ([127, 0, 0, 1], 8080).into()
    } else {
        ([0, 0, 0, 0], 8080).into()
    };
    let tcp = service::bind(config.http_addr.unwrap_or(default_addr)).await?;
    let grpc = service::bind(
        config
            .grpc_addr
            .unwrap_or((default_addr.ip(), 50051).into()),
    )
    .await?;

    // Every gRPC service on one port.
    let routes = tonic::service::Routes::new(grpc_service(routing, keys.clone()))
        .add_service(herald_presence::grpc_service(presence, keys.clone()))
        .add_service(herald_notify::grpc_service(notify.notify.clone(), keys));
    let store = notify.store.clone();
    let readiness = herald_proto::service::Readiness::new().check("database", move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    });
    let (routes, health) = herald_proto::server::with_standard_services(
        routes,
        &[
            herald_routing::GRPC_SERVICE_NAME,
            herald_presence::GRPC_SERVICE_NAME,
            herald_notify::GRPC_SERVICE_NAME,
        ],
        readiness,
        shutdown.clone(),
    )
    .await?;
    // The edge's lifecycle: its clients drain exactly as `herald edge`'s.
    let running = edge
        .service("standalone", shutdown)
        .http(tcp, app)
        .grpc(grpc, routes)
        .tasks(background)
        .tasks([
            listener,
            presence_intake,
            notify.worker,
            announcer,
            presence_stats,
            notify_stats,
            routing_stats,
            sweeper,
            health,
        ])
        .start()?;
    running.stopped().await?;
    Ok(())
}
