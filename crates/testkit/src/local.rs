//! An edge and routing in one process, joined by the in-memory bus (the
//! standalone wiring), serving HTTP on a free port — for the tests and
//! benchmarks of the crates. The edge's side of the bus can be slowed and
//! counted: routing answering publishes late, and how many history reads
//! the edge asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_core::bus::{Bus, BusError, Headers, MemoryBus, Message, Subscription};
use herald_core::config::{Config, EdgeConfig};
use herald_core::history::MemoryHistory;
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_core::work_queue::MemoryWorkQueue;
use herald_edge::{Edge, Hub, RoutingClient};
use herald_routing::{ApiKeys, Deps, Routing, api_router};

use crate::{API_KEY, Api, SECRET};

/// A running edge + routing; stopped when dropped.
pub struct Server {
    /// The WebSocket URL (`ws://…/ws`).
    pub ws: String,
    /// The HTTP base URL: the edge's endpoints and the server API.
    pub http: String,
    /// Stops both (triggered on drop too).
    pub shutdown: Shutdown,
    /// The edge.
    pub edge: Arc<Edge>,
    /// Routing.
    pub routing: Arc<Routing>,
    /// Routing's history.
    pub history: Arc<MemoryHistory>,
    /// The bus routing listens on.
    pub bus: MemoryBus,
    /// The edge's side of the bus.
    pub edge_bus: Arc<EdgeBus>,
    /// The subjects of the default prefix.
    pub subjects: Subjects,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Server {
    /// Starts an edge and routing with the test secret and key (tokens of
    /// [`token`](crate::token) are valid, no leeway), `tweak`ed.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config {
            api_keys: vec![API_KEY.into()],
            edge: EdgeConfig {
                jwt_secret: Some(SECRET.into()),
                jwt_leeway_secs: 0,
                ..EdgeConfig::default()
            },
            ..Config::default()
        };
        tweak(&mut config);
        let config = Arc::new(config);
        let shutdown = Shutdown::new();
        let bus = MemoryBus::new();
        let subjects = Subjects::new(&config.subject_prefix);
        let edge_bus = Arc::new(EdgeBus {
            inner: bus.clone(),
            subjects: subjects.clone(),
            publish_delay_ms: AtomicU64::new(0),
            history_requests: AtomicU64::new(0),
        });
        let edge = Edge::new(
            config.clone(),
            config.token_verifier(false).expect("verifier"),
            edge_bus.clone(),
            "test".into(),
            shutdown.clone(),
        );
        edge.start(shutdown.clone()).await.expect("edge");
        let history = Arc::new(MemoryHistory::new(config.idempotency_window()));
        let routing = Arc::new(Routing::new(
            config.clone(),
            Deps {
                bus: Arc::new(bus.clone()),
                history: history.clone(),
                queue: Arc::new(MemoryWorkQueue::new(1000)),
                presence: edge.clone(),
            },
        ));
        routing
            .listen_to_edges(shutdown.clone())
            .await
            .expect("routing");
        let app = edge.router().merge(api_router(
            routing.clone(),
            ApiKeys::new(config.api_keys.clone()),
            config.max_message_bytes,
        ));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let running = edge
            .service("test", shutdown.clone())
            .http(tcp, app)
            .start()
            .expect("serving");
        tokio::spawn(running.stopped());
        Server {
            ws: format!("ws://{addr}/ws"),
            http: format!("http://{addr}"),
            shutdown,
            edge,
            routing,
            history,
            bus,
            edge_bus,
            subjects,
        }
    }

    /// Its server API, called with the test key.
    pub fn api(&self) -> Api {
        Api::new(self.http.clone())
    }

    /// Another hub over the bus, as a second edge would have.
    pub fn hub(&self) -> Hub {
        let bus: Arc<dyn Bus> = Arc::new(self.bus.clone());
        let routing =
            RoutingClient::new(bus.clone(), self.subjects.clone(), Duration::from_secs(5));
        Hub::new(bus, self.subjects.clone(), routing)
    }
}

/// The edge's bus: the shared in-memory bus, with publishes to routing
/// answered late on demand and history reads counted.
pub struct EdgeBus {
    inner: MemoryBus,
    subjects: Subjects,
    publish_delay_ms: AtomicU64,
    history_requests: AtomicU64,
}

impl EdgeBus {
    /// Routing answers the edge's publishes `delay` late from now on.
    pub fn delay_publishes(&self, delay: Duration) {
        self.publish_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// History reads (or position queries) the edge asked routing for.
    pub fn history_requests(&self) -> u64 {
        self.history_requests.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Bus for EdgeBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        self.inner.publish(subject, headers, payload).await
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.inner.subscribe(subject).await
    }

    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError> {
        self.inner.queue_subscribe(subject, group).await
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        if subject == self.subjects.route_history() {
            self.history_requests.fetch_add(1, Ordering::Relaxed);
        }
        let answer = self.inner.request(subject, headers, payload, timeout).await;
        let delay = self.publish_delay_ms.load(Ordering::Relaxed);
        if subject == self.subjects.route_publish() && delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        answer
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.inner.flush().await
    }
}
