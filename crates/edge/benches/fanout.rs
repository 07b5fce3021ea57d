//! Fan-out through real WebSocket connections: one channel, 100 subscribers
//! on loopback, 200 publications per iteration. The baseline, measured in
//! the same run, writes one frame per syscall (`write_batch_frames = 1`);
//! the default batches what waits for a connection into one write.
//!
//! Run: `cargo bench -p herald-edge --bench fanout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use herald_core::bus::{Bus, MemoryBus};
use herald_core::route::live_message;
use herald_core::subjects::Subjects;
use herald_protocol::Publication;
use herald_protocol::channel::Channel;
use herald_testkit::{Server, raw_ws, token};
use serde_json::value::RawValue;

const SUBSCRIBERS: usize = 100;
const PER_ITERATION: u64 = 200;

struct Setup {
    bus: MemoryBus,
    subjects: Subjects,
    channel: Channel,
    received: Arc<AtomicU64>,
    next_offset: AtomicU64,
    _server: Server,
}

async fn setup(write_batch_frames: usize) -> Setup {
    let server = Server::start(|c| {
        c.edge.write_batch_frames = write_batch_frames;
        c.edge.client_queue_len = 100_000;
        c.edge.client_queue_bytes = 1 << 30;
        c.edge.connection_rate = 100_000;
        c.edge.max_connections_per_user = 100_000;
    })
    .await;
    let token = token("bench", &["bench:*"], &[], 3600);
    let received = Arc::new(AtomicU64::new(0));
    for _ in 0..SUBSCRIBERS {
        let mut ws = raw_ws(&server.ws, &token, &["bench:fanout"])
            .await
            .expect("connect");
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
        bus: server.bus.clone(),
        subjects: server.subjects.clone(),
        channel: Channel::new("bench:fanout").expect("channel"),
        received,
        next_offset: AtomicU64::new(1),
        _server: server,
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
