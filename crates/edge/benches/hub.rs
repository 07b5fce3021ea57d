//! The hub's fan-out: 10,000 subscribers over 1,000 channels (10 each),
//! two publishers each feeding half of the channels at once over the
//! in-memory bus; one iteration is 2,000 publications (20,000 deliveries),
//! timed from the first publish to the last delivery taken.
//!
//! The same file builds against the hub before the sharded one (its API
//! did not change), so the two can be run one after the other:
//! `cargo bench -p herald-edge --bench hub`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use herald_core::bus::{Bus, MemoryBus};
use herald_core::route::live_message;
use herald_core::subjects::Subjects;
use herald_edge::{ConnId, Hub, Outbox};
use herald_protocol::Publication;
use herald_protocol::channel::Channel;
use herald_testkit::Server;
use serde_json::value::RawValue;

const CHANNELS: usize = 1000;
const PER_CHANNEL: usize = 10;
const ROUNDS: u64 = 2;

struct World {
    bus: MemoryBus,
    subjects: Subjects,
    channels: Vec<Channel>,
    received: Arc<AtomicU64>,
    offset: u64,
    _hub: Arc<Hub>,
    _server: Server,
}

async fn world() -> World {
    let server = Server::start(|_| {}).await;
    let hub = Arc::new(server.hub());
    let channels: Vec<Channel> = (0..CHANNELS)
        .map(|i| Channel::new(&format!("bench:{i}")).expect("channel"))
        .collect();
    let received = Arc::new(AtomicU64::new(0));
    let mut conn = 0;
    for channel in &channels {
        for _ in 0..PER_CHANNEL {
            conn += 1;
            let (outbox, mut inbox, _overflow) = Outbox::new(1 << 16, 1 << 30);
            hub.subscribe(channel, ConnId(conn), outbox)
                .await
                .expect("subscribe");
            let received = received.clone();
            tokio::spawn(async move {
                while inbox.recv().await.is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    World {
        bus: server.bus.clone(),
        subjects: server.subjects.clone(),
        channels,
        received,
        offset: 0,
        _hub: hub,
        _server: server,
    }
}

fn publication(channel: &Channel, offset: u64) -> Publication {
    Publication {
        channel: channel.clone(),
        offset,
        epoch: "bench".into(),
        data: RawValue::from_string(r#"{"text":"hello"}"#.into()).expect("json"),
        from: None,
        ts: 1,
    }
}

/// Two publishers, each over its half of the channels, `ROUNDS` each.
async fn fan_out(world: &mut World) -> Duration {
    let start = world.offset;
    world.offset += ROUNDS;
    let expected =
        world.received.load(Ordering::Relaxed) + (CHANNELS * PER_CHANNEL) as u64 * ROUNDS;
    let began = Instant::now();
    let halves: Vec<Vec<Channel>> = world
        .channels
        .chunks(CHANNELS / 2)
        .map(<[Channel]>::to_vec)
        .collect();
    let mut publishers = Vec::new();
    for half in halves {
        let (bus, subjects) = (world.bus.clone(), world.subjects.clone());
        publishers.push(tokio::spawn(async move {
            for round in 1..=ROUNDS {
                for channel in &half {
                    let (headers, payload) = live_message(&publication(channel, start + round));
                    bus.publish(&subjects.live(channel), headers, payload)
                        .await
                        .expect("publish");
                }
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    while world.received.load(Ordering::Relaxed) < expected {
        tokio::task::yield_now().await;
    }
    began.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut world = runtime.block_on(world());
    let mut group = c.benchmark_group("hub");
    group.sample_size(20);
    group.throughput(criterion::Throughput::Elements(
        (CHANNELS * PER_CHANNEL) as u64 * ROUNDS,
    ));
    group.bench_function("fan_out_10k_subscribers_1k_channels_2_publishers", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    total += fan_out(&mut world).await;
                }
                total
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
