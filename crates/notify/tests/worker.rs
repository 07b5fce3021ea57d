//! The push worker in one process (the standalone wiring): in-memory queue,
//! the device store (SQLite, and PostgreSQL where the behaviour depends on
//! the store), the fakes — rate limit, dead letters, dead devices, and Web
//! Push endpoints checked again at send time.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use herald_core::config::{Config, NotifyConfig};
use herald_core::shutdown::Shutdown;
use herald_core::work_queue::{MemoryWorkQueue, Notification, PushJob, WorkQueue};
use herald_fakes::{FakeApns, FakeFcm, FakeWebPush, Gate, Reply, TestCa};
use herald_notify::api::{Notify, SendRequest};
use herald_notify::device::{CheckedDevice, Environment, NewDevice, Platform, Subscription};
use herald_notify::endpoint::{EndpointPolicy, Lookup};
use herald_notify::providers::Providers;
use herald_notify::store::{DeliveryState, DeviceStatus, PostgresStore, SqliteStore, TokenStore};
use herald_notify::worker::Worker;
use herald_testkit::{Database, WAIT, app_credentials, eventually, fake_apns, fake_fcm, temp_file};
use serde_json::Value;
use serde_json::value::RawValue;

const APP: &str = "com.example.chat";

#[derive(Clone, Copy, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

async fn open_store(db: Db) -> (Arc<dyn TokenStore>, Option<Database>) {
    match db {
        Db::Sqlite => {
            let path =
                std::env::temp_dir().join(format!("herald-worker-{:x}.db", rand::random::<u64>()));
            let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
                .await
                .unwrap();
            (Arc::new(store), None)
        }
        Db::Postgres => {
            let database = Database::create().await;
            let store = PostgresStore::connect(&database.url).await.unwrap();
            (Arc::new(store), Some(database))
        }
    }
}

/// A DNS whose answer the test changes.
#[derive(Default)]
struct TestDns(Mutex<Vec<IpAddr>>);

impl TestDns {
    fn answer(&self, addrs: &[&str]) {
        *self.0.lock().unwrap() = addrs.iter().map(|a| a.parse().unwrap()).collect();
    }
}

impl Lookup for TestDns {
    fn lookup(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
    {
        // only the test's name; anything else is not in this DNS
        let answer = if host == REBIND_HOST {
            Ok(self.0.lock().unwrap().clone())
        } else {
            Err(std::io::Error::other(format!(
                "{host}: not in the test DNS"
            )))
        };
        Box::pin(async move { answer })
    }
}

const REBIND_HOST: &str = "push.rebind.test";

struct World {
    apns: FakeApns,
    fcm: FakeFcm,
    webpush: FakeWebPush,
    store: Arc<dyn TokenStore>,
    queue: Arc<MemoryWorkQueue>,
    notify: Arc<Notify>,
    dns: Arc<TestDns>,
    own_database: Option<Database>,
    _shutdown: Shutdown,
}

async fn world(tweak: impl FnOnce(&mut Config)) -> World {
    world_on(Db::Sqlite, Web::Loopback, tweak).await
}

/// Where the Web Push fake is.
#[derive(Clone, Copy, PartialEq)]
enum Web {
    /// 127.0.0.1, in `webpush_allowed_hosts`.
    Loopback,
    /// Named [`REBIND_HOST`], which only the test's DNS knows; not listed.
    Rebind,
    /// The same, listed.
    RebindAllowed,
}

/// Everything wired as standalone does.
async fn world_on(db: Db, web: Web, tweak: impl FnOnce(&mut Config)) -> World {
    let ca = TestCa::new("herald worker test CA");
    let apns = fake_apns(&[APP]).await;
    let fcm = fake_fcm().await;
    let webpush = if web != Web::Loopback {
        FakeWebPush::start_named(REBIND_HOST, &ca.issue(&[REBIND_HOST])).await
    } else {
        FakeWebPush::start(&ca.issue(&["127.0.0.1"])).await
    };
    let mut config = Config {
        notify: NotifyConfig {
            apns_url: apns.url(),
            fcm_url: fcm.url(),
            coalesce_window_ms: 200,
            provider_ca_file: Some(temp_file("ca.pem", ca.cert_pem())),
            webpush_allowed_hosts: if web == Web::Rebind {
                Vec::new()
            } else {
                vec![webpush.authority()]
            },
            ..NotifyConfig::default()
        },
        ..Config::default()
    };
    config.apps.insert(APP.into(), app_credentials(&fcm));
    tweak(&mut config);
    let dns = Arc::new(TestDns::default());
    let endpoints = EndpointPolicy::from_config(&config)
        .unwrap()
        .with_lookup(dns.clone());
    let (store, own_database) = open_store(db).await;
    let queue = Arc::new(MemoryWorkQueue::new(1000));
    let shutdown = Shutdown::new();
    Worker::new(
        Arc::new(config.clone()),
        store.clone(),
        Arc::new(Providers::with_endpoints(&config, endpoints.clone()).unwrap()),
        queue.clone(),
    )
    .start(shutdown.clone());
    World {
        apns,
        fcm,
        webpush,
        notify: Notify::new(store.clone(), queue.clone(), 10, endpoints),
        store,
        queue,
        dns,
        own_database,
        _shutdown: shutdown,
    }
}

impl World {
    async fn done(self) {
        drop(self.notify);
        drop(self.store);
        drop(self.own_database);
    }

    /// Registers through the API operation (checks included).
    async fn register(&self, user: &str, platform: Platform, token: &str) -> String {
        self.notify
            .register(device(user, platform, token, None))
            .await
            .unwrap()
            .id
    }

    async fn register_browser(&self, user: &str, subscription: &Value) -> String {
        self.notify
            .register(browser(user, subscription))
            .await
            .unwrap()
            .id
    }

    /// Queues an alert for `user`; answers the job id.
    async fn send(&self, user: &str, body: &str) -> String {
        self.notify
            .send(SendRequest {
                user: Some(user.into()),
                device_id: None,
                notification: Some(Notification {
                    title: "t".into(),
                    body: body.into(),
                    collapse_key: Some(body.into()),
                }),
                data: None,
            })
            .await
            .unwrap()
    }

    /// Waits until `count` devices are settled for job `id`.
    async fn settled_all(&self, id: &str, count: usize) -> Vec<DeviceStatus> {
        eventually(
            WAIT,
            &format!("{count} devices settled for job {id}"),
            || async {
                let statuses = self.store.status(id).await.unwrap();
                if statuses.iter().filter(|s| s.state.is_final()).count() >= count {
                    Ok(statuses)
                } else {
                    Err(format!("{statuses:?}"))
                }
            },
        )
        .await
    }

    async fn listed(&self, user: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .store
            .list(user)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        ids.sort();
        ids
    }
}

fn device(user: &str, platform: Platform, token: &str, subscription: Option<&Value>) -> NewDevice {
    NewDevice {
        user: user.into(),
        platform,
        token: subscription.is_none().then(|| token.to_owned()),
        subscription: subscription
            .map(|s| serde_json::from_value::<Subscription>(s.clone()).unwrap()),
        app: Some(APP.into()),
        environment: None,
        locale: None,
    }
}

fn browser(user: &str, subscription: &Value) -> NewDevice {
    device(user, Platform::Webpush, "", Some(subscription))
}

async fn phone(w: &World, user: &str, byte: char) -> String {
    w.store
        .register(
            CheckedDevice {
                user: herald_protocol::UserId::parse(user).unwrap(),
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
    eventually(WAIT, &format!("job {id} settled"), || async {
        w.store
            .status(id)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.state.is_final())
            .map(|s| (s.state, s.reason))
    })
    .await
}

fn reason_of<'a>(statuses: &'a [DeviceStatus], device: &str) -> &'a str {
    statuses
        .iter()
        .find(|s| s.device_id == device)
        .map(|s| s.reason.as_str())
        .unwrap_or_else(|| panic!("no status for {device}: {statuses:?}"))
}

/// Every way a service says a device is gone removes it, as APNs 410 does.
async fn dead_devices_are_removed_on_every_platform(db: Db) {
    let w = world_on(db, Web::Loopback, |_| {}).await;
    let since = herald_core::time::unix_millis() + 60_000;
    let apple = w.register("kim", Platform::Apns, &"a".repeat(64)).await;
    w.apns.script(
        &"a".repeat(64),
        vec![Reply::Unregistered { since_ms: since }],
    );
    let unregistered = w.register("kim", Platform::Fcm, "fcm-unregistered").await;
    w.fcm.script(
        "fcm-unregistered",
        vec![Reply::Unregistered { since_ms: 0 }],
    );
    let not_found = w.register("kim", Platform::Fcm, "fcm-not-found").await;
    w.fcm.script("fcm-not-found", vec![Reply::NotFound]);
    let mut gone_browsers = Vec::new();
    for reply in [Reply::Unregistered { since_ms: 0 }, Reply::NotFound] {
        let subscription = w.webpush.subscribe();
        let id = w.register_browser("kim", &subscription).await;
        w.webpush
            .script(subscription["endpoint"].as_str().unwrap(), vec![reply]);
        gone_browsers.push(id);
    }
    let alive = w.register("kim", Platform::Fcm, "fcm-alive").await;

    let first = w.send("kim", "one").await;
    let statuses = w.settled_all(&first, 6).await;
    for dead in [
        &apple,
        &unregistered,
        &not_found,
        &gone_browsers[0],
        &gone_browsers[1],
    ] {
        let reason = reason_of(&statuses, dead);
        assert!(
            reason.ends_with("; device removed"),
            "{db:?} {dead}: {reason}"
        );
    }
    assert_eq!(reason_of(&statuses, &alive), "sent");
    assert_eq!(
        w.listed("kim").await,
        vec![alive.clone()],
        "{db:?}: only the live one is left"
    );

    let second = w.send("kim", "two").await;
    let statuses = w.settled_all(&second, 1).await;
    assert_eq!(
        statuses.len(),
        1,
        "the dead are not tried again: {statuses:?}"
    );
    w.done().await;
}

/// A gone answer about a registration that was renewed while the push was
/// in flight keeps the device: the renewal is a new, valid registration.
async fn a_device_registered_again_during_the_send_is_kept(db: Db) {
    let w = world_on(db, Web::Loopback, |_| {}).await;
    let fcm_gate = Gate::new();
    let web_gate = Gate::new();
    let android = w.register("lee", Platform::Fcm, "fcm-renewed").await;
    w.fcm.script(
        "fcm-renewed",
        vec![Reply::Held {
            gate: fcm_gate.clone(),
            then: Box::new(Reply::Unregistered { since_ms: 0 }),
        }],
    );
    let subscription = w.webpush.subscribe();
    let web = w.register_browser("lee", &subscription).await;
    w.webpush.script(
        subscription["endpoint"].as_str().unwrap(),
        vec![Reply::Held {
            gate: web_gate.clone(),
            then: Box::new(Reply::Unregistered { since_ms: 0 }),
        }],
    );
    let id = w.send("lee", "renewed").await;
    eventually(WAIT, "the pushes at the fakes", || async {
        fcm_gate.arrived() >= 1 && web_gate.arrived() >= 1
    })
    .await;
    // both apps renew their registrations now, while the answers are held
    w.register("lee", Platform::Fcm, "fcm-renewed").await;
    w.register_browser("lee", &subscription).await;
    fcm_gate.open();
    web_gate.open();
    let statuses = w.settled_all(&id, 2).await;
    for renewed in [&android, &web] {
        let reason = reason_of(&statuses, renewed);
        assert!(
            reason.contains("registered again since"),
            "{db:?}: {reason}"
        );
    }
    let mut both = vec![android, web];
    both.sort();
    assert_eq!(w.listed("lee").await, both, "{db:?}: both kept");
    w.done().await;
}

mod sqlite_store {
    use super::*;

    #[tokio::test]
    async fn dead_devices_are_removed_on_every_platform() {
        super::dead_devices_are_removed_on_every_platform(Db::Sqlite).await
    }

    #[tokio::test]
    async fn a_device_registered_again_during_the_send_is_kept() {
        super::a_device_registered_again_during_the_send_is_kept(Db::Sqlite).await
    }
}

mod postgres_store {
    use super::*;

    #[tokio::test]
    async fn dead_devices_are_removed_on_every_platform() {
        super::dead_devices_are_removed_on_every_platform(Db::Postgres).await
    }

    #[tokio::test]
    async fn a_device_registered_again_during_the_send_is_kept() {
        super::a_device_registered_again_during_the_send_is_kept(Db::Postgres).await
    }
}

#[tokio::test]
async fn a_name_that_later_resolves_inward_is_refused_and_the_job_says_why() {
    let w = world_on(Db::Sqlite, Web::Rebind, |_| {}).await;
    // registered while the name pointed at a public address …
    w.dns.answer(&["8.8.8.8"]);
    let subscription = w.webpush.subscribe();
    assert!(
        subscription["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://push.rebind.test:")
    );
    let device = w.register_browser("mia", &subscription).await;
    // … which now points at this machine
    w.dns.answer(&["127.0.0.1"]);
    let id = w.send("mia", "rebound").await;
    let statuses = w.settled_all(&id, 1).await;
    assert_eq!(statuses[0].state, DeliveryState::Failed);
    assert_eq!(
        statuses[0].reason,
        "Web Push endpoint refused: push.rebind.test resolves to 127.0.0.1, not a public address"
    );
    assert!(
        w.webpush.received().is_empty(),
        "nothing reached the inward address"
    );
    assert_eq!(w.webpush.handshake_failures(), 0, "not even a connection");
    assert_eq!(
        w.listed("mia").await,
        vec![device],
        "kept: DNS may be wrong for a while"
    );
    // registering it now is refused outright
    let refused = w
        .notify
        .register(browser("mia", &w.webpush.subscribe()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), herald_protocol::ErrorCode::BadRequest);
    assert!(
        refused.to_string().contains("resolves to 127.0.0.1"),
        "{refused}"
    );
    w.done().await;

    // the control: the same name and DNS, listed in webpush_allowed_hosts,
    // is delivered — the refusal above is the rule's doing
    let w = world_on(Db::Sqlite, Web::RebindAllowed, |_| {}).await;
    w.dns.answer(&["127.0.0.1"]);
    let subscription = w.webpush.subscribe();
    w.register_browser("mia", &subscription).await;
    let id = w.send("mia", "allowed").await;
    let statuses = w.settled_all(&id, 1).await;
    assert_eq!(statuses[0].reason, "sent");
    assert_eq!(w.webpush.delivered().len(), 1);
    w.done().await;
}

#[tokio::test]
async fn a_user_gets_at_most_the_hourly_rate() {
    let w = world(|c| c.notify.push_rate_per_hour = 3).await;
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
    let w = world(|c| c.notify.push_max_attempts = 2).await;
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
