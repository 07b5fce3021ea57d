//! The push worker in one process (the standalone wiring): in-memory queue,
//! SQLite devices, the fake APNs — its rate limit and its dead letters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::config::{AppCredentials, Config};
use herald_core::shutdown::Shutdown;
use herald_core::work_queue::{MemoryWorkQueue, Notification, PushJob, WorkQueue};
use herald_fakes::{FakeApns, Reply, keys};
use herald_notify::device::{CheckedDevice, Environment, Platform};
use herald_notify::providers::Providers;
use herald_notify::store::{DeliveryState, SqliteStore, TokenStore};
use herald_notify::worker::Worker;
use serde_json::value::RawValue;

const APP: &str = "com.example.chat";

struct World {
    apns: FakeApns,
    store: Arc<dyn TokenStore>,
    queue: Arc<MemoryWorkQueue>,
    _shutdown: Shutdown,
}

async fn world(tweak: impl FnOnce(&mut Config)) -> World {
    let apns = FakeApns::start("TEAM", "KEY", keys::APNS_PUBLIC, &[APP]).await;
    let p8 = std::env::temp_dir().join(format!("herald-worker-{:x}.p8", rand::random::<u64>()));
    std::fs::write(&p8, keys::APNS_P8).unwrap();
    let mut config = Config {
        apns_url: apns.url(),
        coalesce_window_ms: 200,
        ..Config::default()
    };
    config.apps.insert(
        APP.into(),
        AppCredentials {
            apns_team_id: Some("TEAM".into()),
            apns_key_id: Some("KEY".into()),
            apns_key_file: Some(p8),
            ..AppCredentials::default()
        },
    );
    tweak(&mut config);
    let db = std::env::temp_dir().join(format!("herald-worker-{:x}.db", rand::random::<u64>()));
    let store: Arc<dyn TokenStore> = Arc::new(
        SqliteStore::connect(&format!("sqlite:{}", db.display()))
            .await
            .unwrap(),
    );
    let queue = Arc::new(MemoryWorkQueue::new(1000));
    let shutdown = Shutdown::new();
    Worker::new(
        Arc::new(config.clone()),
        store.clone(),
        Arc::new(Providers::from_config(&config).unwrap()),
        queue.clone(),
    )
    .start(shutdown.clone());
    World {
        apns,
        store,
        queue,
        _shutdown: shutdown,
    }
}

async fn phone(w: &World, user: &str, byte: char) -> String {
    w.store
        .register(
            CheckedDevice {
                user: user.into(),
                platform: Platform::Apns,
                token: byte.to_string().repeat(64),
                p256dh: None,
                auth: None,
                app: APP.into(),
                environment: Environment::Production,
                locale: None,
            },
            10,
        )
        .await
        .unwrap()
        .id
}

fn job(user: &str, collapse: &str) -> PushJob {
    PushJob {
        id: PushJob::new_id(),
        user: user.into(),
        notification: Some(Notification {
            title: "t".into(),
            body: collapse.into(),
            collapse_key: Some(collapse.into()),
        }),
        data: RawValue::from_string("{}".into()).unwrap(),
        channel: None,
        created_ms: 0,
        device_id: None,
        summary: false,
        summarizes: Vec::new(),
    }
}

async fn settled(w: &World, id: &str) -> (DeliveryState, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = w
            .store
            .status(id)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.state.is_final())
        {
            return (s.state, s.reason);
        }
        assert!(Instant::now() < deadline, "job {id} never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_user_gets_at_most_the_hourly_rate() {
    let w = world(|c| c.push_rate_per_hour = 3).await;
    phone(&w, "hana", 'a').await;
    let mut ids = Vec::new();
    for i in 0..5 {
        // distinct collapse keys: no coalescing, five separate alerts
        let j = job("hana", &format!("k{i}"));
        ids.push(j.id.clone());
        w.queue.push(&j).await.unwrap();
    }
    let mut outcomes = Vec::new();
    for id in &ids {
        outcomes.push(settled(&w, id).await);
    }
    let sent = outcomes
        .iter()
        .filter(|(s, _)| *s == DeliveryState::Sent)
        .count();
    let limited = outcomes
        .iter()
        .filter(|(s, r)| *s == DeliveryState::Failed && r.contains("rate limited"))
        .count();
    assert_eq!((sent, limited), (3, 2), "{outcomes:?}");
    assert_eq!(w.apns.delivered().len(), 3);
}

#[tokio::test]
async fn after_the_last_try_a_job_is_dead_lettered_and_says_why() {
    let w = world(|c| c.push_max_attempts = 2).await;
    phone(&w, "ivan", 'b').await;
    w.apns.script(&"b".repeat(64), vec![Reply::ServerError]);
    let j = job("ivan", "k");
    w.queue.push(&j).await.unwrap();
    let (state, reason) = settled(&w, &j.id).await;
    assert_eq!(state, DeliveryState::Failed);
    assert!(reason.contains("gave up after 2 attempts"), "{reason}");
    assert_eq!(w.apns.received().len(), 2, "tried exactly twice");
    let dead = w.queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.id, j.id);
    assert!(dead[0].1.contains("APNs 500"), "{}", dead[0].1);
}
