//! The publish path, measured against baselines taken in the same run:
//!
//! - `memory/*`: standalone adapters. Baseline: one in-memory bus publish
//!   (what a publish costs at the very least); then Herald's whole path
//!   (validate, append to history, encode once, publish live).
//! - `jetstream/*` (needs NATS at `HERALD_TEST_NATS_URL`): baseline: one raw
//!   JetStream publish + ack with async-nats; then Herald's path through
//!   JetStream history (expected-last-sequence append), serial and with 64
//!   publishers on 64 channels at once.
//!
//! Run: `cargo bench -p herald-routing --bench publish`. In `cargo test`
//! (debug) each benchmark runs once, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_core::bus::{Bus, Headers, NatsBus};
use herald_core::config::Config;
use herald_core::history::{JetStreamHistory, Storage};
use herald_core::presence::NoPresence;
use herald_core::subjects::Subjects;
use herald_core::work_queue::MemoryWorkQueue;
use herald_protocol::channel::Channel;
use herald_routing::{Deps, PublishRequest, Routing};
use herald_testkit::{Prefix, Server, nats_url};
use serde_json::value::RawValue;

const DATA: &str =
    r#"{"text":"hello, this is a chat message of ordinary length","user":"alice","n":17}"#;

fn request(channel: &Channel) -> PublishRequest {
    PublishRequest {
        channel: channel.clone(),
        data: RawValue::from_string(DATA.to_owned()).expect("valid JSON"),
        idempotency_key: None,
        notify_offline: Vec::new(),
        notification: None,
    }
}

fn memory(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // standalone's routing, history and bus
    let server = runtime.block_on(Server::start(|_| {}));
    let (bus, routing) = (&server.bus, &server.routing);
    // One live subscriber, as an edge would be.
    let _edge = runtime
        .block_on(bus.subscribe("herald.live.>"))
        .expect("subscribe");
    let channel = Channel::new("chat:bench").expect("channel");
    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline_bus_publish", |b| {
        b.to_async(&runtime).iter(|| async {
            bus.publish(
                "herald.live.x",
                Headers::new(),
                Bytes::from_static(DATA.as_bytes()),
            )
            .await
            .expect("publish")
        })
    });
    group.bench_function("herald_publish", |b| {
        b.to_async(&runtime)
            .iter(|| async { routing.publish(request(&channel)).await.expect("publish") })
    });
    group.finish();
}

fn jetstream(c: &mut Criterion) {
    let url = nats_url();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // async-nats spawns tasks when a JetStream context is made.
    let _in_runtime = runtime.enter();
    let Ok(nats) = runtime.block_on(NatsBus::connect(&url, "bench", Duration::from_secs(3))) else {
        eprintln!("jetstream benchmarks skipped: no NATS at {url}");
        return;
    };
    let prefix = Prefix::new();
    let subjects = Subjects::new(prefix.as_str());
    let config = Arc::new(Config {
        subject_prefix: prefix.to_string(),
        ..Config::default()
    });
    let history = Arc::new(
        runtime
            .block_on(JetStreamHistory::open(
                nats.client().clone(),
                subjects.clone(),
                &config.namespaces,
                Duration::from_secs(120),
                Storage::File,
                config.history_streams(),
            ))
            .expect("history streams"),
    );
    let js = async_nats::jetstream::new(nats.client().clone());
    let raw_subject = format!("{prefix}.hist._.raw");
    let routing = Arc::new(Routing::new(
        config,
        Deps {
            bus: Arc::new(nats.clone()),
            history: history.clone(),
            queue: Arc::new(MemoryWorkQueue::new(1024)),
            presence: Arc::new(NoPresence),
        },
    ));
    let channel = Channel::new("chat:bench").expect("channel");

    let mut group = c.benchmark_group("jetstream");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.bench_function("baseline_raw_publish_ack", |b| {
        b.to_async(&runtime).iter(|| async {
            js.publish(raw_subject.clone(), Bytes::from_static(DATA.as_bytes()))
                .await
                .expect("publish")
                .await
                .expect("ack")
        })
    });
    group.bench_function("herald_publish_serial", |b| {
        b.to_async(&runtime)
            .iter(|| async { routing.publish(request(&channel)).await.expect("publish") })
    });
    const PUBLISHERS: u64 = 64;
    group.throughput(Throughput::Elements(PUBLISHERS));
    let channels: Vec<Channel> = (0..PUBLISHERS)
        .map(|i| Channel::new(&format!("chat:bench{i}")).expect("channel"))
        .collect();
    group.bench_function("herald_publish_64_channels_at_once", |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let routing = routing.clone();
            let channels = channels.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iterations {
                    let all = channels.iter().map(|c| routing.publish(request(c)));
                    for result in futures::future::join_all(all).await {
                        result.expect("publish");
                    }
                }
                started.elapsed()
            }
        })
    });
    group.finish();
    // (the streams go with `prefix`)
}

criterion_group!(benches, memory, jetstream);
criterion_main!(benches);
