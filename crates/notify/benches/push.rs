//! Notifications per second through the fake APNs, measured against a
//! baseline taken in the same run: the APNs sender alone (HTTP/2 requests
//! to the fake, 32 at a time) versus the whole pipeline (work queue →
//! worker → device lookup in SQLite → send → status written).
//!
//! Run: `cargo bench -p herald-notify --bench push`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_core::config::{Config, NotifyConfig};
use herald_core::shutdown::Shutdown;
use herald_core::work_queue::{MemoryWorkQueue, Notification, PushJob, WorkQueue};
use herald_notify::device::{CheckedDevice, Device, Environment, Platform};
use herald_notify::providers::{Alert, Providers};
use herald_notify::store::{SqliteStore, TokenStore};
use herald_notify::worker::Worker;
use serde_json::value::RawValue;

const APP: &str = "com.example.bench";
const PER_ROUND: usize = 200;

fn token(i: usize) -> String {
    format!("{:064x}", i + 1)
}

fn push(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (apns, providers, store, devices) = runtime.block_on(async {
        let apns = herald_testkit::fake_apns(&[APP]).await;
        let mut config = Config {
            notify: NotifyConfig {
                apns_url: apns.url(),
                push_rate_per_hour: 1_000_000,
                coalesce_window_ms: 1,
                ..NotifyConfig::default()
            },
            ..Config::default()
        };
        config
            .apps
            .insert(APP.into(), herald_testkit::apns_credentials());
        let providers = Arc::new(Providers::from_config(&config).expect("providers"));
        let db = std::env::temp_dir().join(format!("herald-bench-{:x}.db", rand::random::<u64>()));
        let store: Arc<dyn TokenStore> = Arc::new(
            SqliteStore::connect(&format!("sqlite:{}", db.display()))
                .await
                .expect("store"),
        );
        let mut devices = Vec::new();
        for i in 0..PER_ROUND {
            let device = store
                .register(
                    CheckedDevice {
                        user: herald_protocol::UserId::parse(&format!("user{i}")).expect("user id"),
                        platform: Platform::Apns,
                        token: token(i),
                        p256dh: None,
                        auth: None,
                        app: APP.into(),
                        environment: Environment::Production,
                        locale: None,
                    },
                    10,
                )
                .await
                .expect("register");
            devices.push(device);
        }
        (apns, providers, store, (devices, config))
    });
    let (devices, config) = devices;
    let config = Arc::new(config);

    let mut group = c.benchmark_group("notifications_through_fake_apns");
    group.throughput(Throughput::Elements(PER_ROUND as u64));
    group.sample_size(10);
    group.bench_function("baseline_sender_alone", |b| {
        b.to_async(&runtime).iter_custom(|rounds| {
            let (providers, devices) = (providers.clone(), devices.clone());
            async move {
                let started = Instant::now();
                for round in 0..rounds {
                    let sends = devices.iter().map(|d: &Device| {
                        let providers = providers.clone();
                        let device = d.clone();
                        async move {
                            let alert = Alert {
                                id: format!("b{round}-{}", device.id),
                                title: Some("Hi".into()),
                                body: Some("bench".into()),
                                collapse_key: None,
                                data: serde_json::json!({}),
                                channel: None,
                            };
                            providers.send(&device, &alert).await
                        }
                    });
                    futures::stream::iter(sends)
                        .buffer_unordered(32)
                        .for_each(|_| async {})
                        .await;
                }
                started.elapsed()
            }
        })
    });

    let queue = Arc::new(MemoryWorkQueue::new(100_000));
    let shutdown = Shutdown::new();
    let _worker = {
        let _guard = runtime.enter();
        Worker::new(
            config.clone(),
            store.clone(),
            providers.clone(),
            queue.clone(),
        )
        .start(shutdown.clone())
    };
    group.bench_function("pipeline_queue_worker_store", |b| {
        b.to_async(&runtime).iter_custom(|rounds| {
            let queue = queue.clone();
            let apns = &apns;
            async move {
                let started = Instant::now();
                for round in 0..rounds {
                    let before = apns.delivered_count();
                    for i in 0..PER_ROUND {
                        let job = PushJob {
                            id: PushJob::new_id(),
                            user: format!("user{i}"),
                            notification: Some(Notification {
                                title: "Hi".into(),
                                body: "bench".into(),
                                collapse_key: Some(format!("r{round}")),
                            }),
                            data: RawValue::from_string("{}".into()).expect("json"),
                            channel: None,
                            created_ms: 0,
                            device_id: None,
                            summary: false,
                            summarizes: Vec::new(),
                        };
                        queue.push(&job).await.expect("push");
                    }
                    while apns.delivered_count() < before + PER_ROUND {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                started.elapsed()
            }
        })
    });
    group.finish();
    shutdown.trigger();
}

use futures::StreamExt;

criterion_group!(benches, push);
criterion_main!(benches);
