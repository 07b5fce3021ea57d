//! Fan-out through real WebSocket connections: one channel, 100 subscribers
//! on loopback, 200 publications per iteration. The baseline, measured in
//! the same run, writes one frame per syscall (`write_batch_frames = 1`);
//! the default batches what waits for a connection into one write.
//!
//! Run: `cargo bench -p herald-edge --bench fanout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::{SinkExt, StreamExt};
use herald_core::auth::{JwtAlgorithm, TokenSigner};
use herald_core::bus::{Bus, MemoryBus};
use herald_core::config::Config;
use herald_core::history::MemoryHistory;
use herald_core::presence::NoPresence;
use herald_core::route::live_message;
use herald_core::shutdown::Shutdown;
use herald_core::subjects::Subjects;
use herald_core::work_queue::MemoryWorkQueue;
use herald_edge::Edge;
use herald_protocol::channel::Channel;
use herald_protocol::{Publication, UserId};
use herald_routing::{Deps, Routing};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 100;
const PER_ITERATION: u64 = 200;
const SECRET: &str = "fanout-bench-secret-0123456789-abcde";

struct Setup {
    bus: MemoryBus,
    subjects: Subjects,
    channel: Channel,
    received: Arc<AtomicU64>,
    next_offset: AtomicU64,
    _shutdown: Shutdown,
}

async fn setup(write_batch_frames: usize) -> Setup {
    let config = Arc::new(Config {
        jwt_secret: Some(SECRET.into()),
        write_batch_frames,
        client_queue_len: 100_000,
        client_queue_bytes: 1 << 30,
        connection_rate: 100_000,
        max_connections_per_user: 100_000,
        ..Config::default()
    });
    let shutdown = Shutdown::new();
    let bus = MemoryBus::new();
    let shared: Arc<dyn Bus> = Arc::new(bus.clone());
    let edge = Edge::new(
        config.clone(),
        config.token_verifier(false).expect("verifier"),
        shared.clone(),
        "bench".into(),
        shutdown.clone(),
    );
    let routing = Arc::new(Routing::new(
        config.clone(),
        Deps {
            bus: shared,
            history: Arc::new(MemoryHistory::default()),
            queue: Arc::new(MemoryWorkQueue::new(10)),
            presence: Arc::new(NoPresence),
        },
    ));
    routing
        .listen_to_edges(shutdown.clone())
        .await
        .expect("routing");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let running = edge
        .service("bench", shutdown.clone())
        .http(tcp, edge.router())
        .start()
        .expect("serving");
    tokio::spawn(running.stopped());

    let token = TokenSigner::new(JwtAlgorithm::HS256, SECRET.as_bytes())
        .expect("signer")
        .mint(
            &UserId::parse("bench").expect("user"),
            &["bench:*".into()],
            &[],
            Duration::from_secs(3600),
        )
        .expect("token");
    let received = Arc::new(AtomicU64::new(0));
    for _ in 0..SUBSCRIBERS {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("connect");
        ws.send(Message::text(format!(
            r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#
        )))
        .await
        .expect("send");
        ws.send(Message::text(
            r#"{"id":2,"subscribe":{"channel":"bench:fanout"}}"#,
        ))
        .await
        .expect("send");
        for _ in 0..2 {
            ws.next().await.expect("reply").expect("reply");
        }
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    Setup {
        bus,
        subjects: Subjects::new(&config.subject_prefix),
        channel: Channel::new("bench:fanout").expect("channel"),
        received,
        next_offset: AtomicU64::new(1),
        _shutdown: shutdown,
    }
}

impl Setup {
    /// Publishes a round and waits until every subscriber has all of it.
    async fn round(&self) {
        let start = self.received.load(Ordering::Relaxed);
        for _ in 0..PER_ITERATION {
            let offset = self.next_offset.fetch_add(1, Ordering::Relaxed);
            let publication = Publication {
                channel: self.channel.clone(),
                offset,
                epoch: "bench".into(),
                data: RawValue::from_string(
                    r#"{"text":"a chat message of ordinary length, about sixty bytes"}"#.into(),
                )
                .expect("json"),
                from: Some("alice".into()),
                ts: 0,
            };
            let (headers, payload) = live_message(&publication);
            self.bus
                .publish(&self.subjects.live(&self.channel), headers, payload)
                .await
                .expect("publish");
        }
        let want = start + PER_ITERATION * SUBSCRIBERS as u64;
        while self.received.load(Ordering::Relaxed) < want {
            tokio::task::yield_now().await;
        }
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("fanout_100_websockets");
    group.throughput(Throughput::Elements(PER_ITERATION * SUBSCRIBERS as u64));
    group.sample_size(20);
    for (name, batch) in [("baseline_write_per_frame", 1), ("batched_writes", 64)] {
        let setup = runtime.block_on(setup(batch));
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_custom(|iterations| {
                let setup = &setup;
                async move {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        setup.round().await;
                    }
                    started.elapsed()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
