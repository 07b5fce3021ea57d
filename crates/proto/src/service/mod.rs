//! How every Herald service runs: [`Service::start`] binds nothing itself
//! but takes the bound listeners and the background tasks, serves, and
//! gives a [`Running`]; on the shutdown signal it drains (the edge: its
//! clients leave over the drain window while it still answers, `/readyz`
//! says 503 and new clients are sent elsewhere), then the listeners close
//! (requests in flight finish), then the background tasks are awaited.
//! Each service alone and `herald standalone` take this one path, so they
//! drain the same way.

pub mod accept;
pub mod descriptors;
mod readiness;
pub mod stream;
mod unread;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use herald_core::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;

pub use accept::{AcceptLimits, client_address, serve_http};
pub use readiness::Readiness;
pub use stream::{ClientSocket, SocketOffer};

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(String),
}

/// The accept limits `config` asks for, with this process's descriptors.
pub fn accept_limits(config: &herald_core::Config) -> AcceptLimits {
    AcceptLimits {
        header_timeout: Duration::from_secs(config.http_header_timeout_secs),
        per_address: config.max_connections_per_ip,
        trusted_proxies: config.trusted_networks().into(),
        descriptors: descriptors::socket_budget(),
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServiceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServiceError::Listen { addr, source })
}

type Drain = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service about to start: what it serves and what runs beside.
pub struct Service {
    name: &'static str,
    shutdown: Shutdown,
    http: Vec<(TcpListener, Router)>,
    grpc: Option<(TcpListener, Routes)>,
    tasks: Vec<JoinHandle<()>>,
    drain: Option<Drain>,
    limits: AcceptLimits,
    stream_paths: &'static [&'static str],
    grace: Duration,
}

impl Service {
    /// A service that stops on `shutdown`; `name` is what its logs say.
    pub fn new(name: &'static str, shutdown: Shutdown) -> Self {
        Service {
            name,
            shutdown,
            http: Vec::new(),
            grpc: None,
            tasks: Vec::new(),
            drain: None,
            limits: AcceptLimits::default(),
            stream_paths: &[],
            grace: Duration::from_secs(10),
        }
    }

    /// Paths whose `GET` is a long-lived stream: served on its own socket,
    /// without hyper ([`stream`]).
    pub fn stream_paths(mut self, paths: &'static [&'static str]) -> Self {
        self.stream_paths = paths;
        self
    }

    /// Serves `router` on `listener` (through the hardened accept path).
    pub fn http(mut self, listener: TcpListener, router: Router) -> Self {
        self.http.push((listener, router));
        self
    }

    /// Serves the gRPC `routes` on `listener` (one gRPC listener a service).
    pub fn grpc(mut self, listener: TcpListener, routes: Routes) -> Self {
        self.grpc = Some((listener, routes));
        self
    }

    /// A background task that ends on the shutdown signal.
    pub fn task(mut self, task: JoinHandle<()>) -> Self {
        self.tasks.push(task);
        self
    }

    /// Background tasks that end on the shutdown signal.
    pub fn tasks(mut self, tasks: impl IntoIterator<Item = JoinHandle<()>>) -> Self {
        self.tasks.extend(tasks);
        self
    }

    /// What to wait for after the signal, listeners still open.
    pub fn drain(mut self, drain: impl Future<Output = ()> + Send + 'static) -> Self {
        self.drain = Some(Box::pin(drain));
        self
    }

    /// The limits of the HTTP accept path ([`accept_limits`] reads them from
    /// the config).
    pub fn limits(mut self, limits: AcceptLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long requests in flight and background tasks get to finish once
    /// the listeners close.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Starts serving; logs `listening` with the addresses.
    pub fn start(self) -> Result<Running, ServiceError> {
        let closed = Shutdown::new();
        let mut servers = Vec::new();
        let mut http_addrs = Vec::new();
        for (listener, router) in self.http {
            let addr = listener.local_addr().map_err(ServiceError::Http)?;
            http_addrs.push(addr);
            let stop = closed.clone();
            let limits = self.limits.clone();
            let stream_paths = self.stream_paths;
            servers.push(tokio::spawn(async move {
                serve_http(listener, router, limits, stream_paths, async move {
                    stop.wait().await
                })
                .await
                .map_err(ServiceError::Http)
            }));
        }
        let mut grpc_addr = None;
        if let Some((listener, routes)) = self.grpc {
            grpc_addr = Some(listener.local_addr().map_err(ServiceError::Http)?);
            let stop = closed.clone();
            servers.push(tokio::spawn(async move {
                crate::server::serve(listener, routes, async move { stop.wait().await })
                    .await
                    .map_err(|e| ServiceError::Grpc(e.to_string()))
            }));
        }
        let addr = http_addrs.first().map(ToString::to_string);
        let grpc = grpc_addr.map(|a| a.to_string());
        tracing::info!(
            service = self.name,
            addr = addr.as_deref().unwrap_or("-"),
            grpc = grpc.as_deref().unwrap_or("-"),
            "listening"
        );
        Ok(Running {
            name: self.name,
            http_addrs,
            grpc_addr,
            shutdown: self.shutdown,
            closed,
            drain: self.drain,
            servers,
            tasks: self.tasks,
            grace: self.grace,
        })
    }
}

/// A service serving; [`Running::stopped`] is its end.
pub struct Running {
    name: &'static str,
    http_addrs: Vec<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    shutdown: Shutdown,
    closed: Shutdown,
    drain: Option<Drain>,
    servers: Vec<JoinHandle<Result<(), ServiceError>>>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Running {
    /// The address of the first HTTP listener, as bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addrs.first().copied()
    }

    /// The address of the gRPC listener, as bound.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Waits for the shutdown signal, drains, closes the listeners, and
    /// waits (each step bounded) for what was still running.
    pub async fn stopped(self) -> Result<(), ServiceError> {
        self.shutdown.wait().await;
        if let Some(drain) = self.drain {
            drain.await;
        }
        self.closed.trigger();
        let mut result = Ok(());
        for server in self.servers {
            match tokio::time::timeout(self.grace, server).await {
                Ok(Ok(Err(e))) => result = Err(e),
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    service = self.name,
                    "requests still open at the end of the grace period"
                ),
            }
        }
        for task in self.tasks {
            if tokio::time::timeout(self.grace, task).await.is_err() {
                tracing::warn!(
                    service = self.name,
                    "a background task did not stop in time"
                );
            }
        }
        result
    }
}
