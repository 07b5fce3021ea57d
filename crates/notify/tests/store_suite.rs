//! One suite for the `TokenStore` seam, run against SQLite (a fresh file)
//! and PostgreSQL (`HERALD_TEST_DATABASE_URL`, a fresh database per test).

use std::sync::Arc;

use herald_notify::device::{CheckedDevice, Environment, Platform};
use herald_notify::store::{
    DeliveryState, DeviceStatus, PostgresStore, SqliteStore, StoreError, TokenStore,
};
use herald_testkit::{Database, WAIT, eventually};

struct Subject {
    store: Arc<dyn TokenStore>,
    /// Opens the same database again (a restart, another replica).
    url: String,
    /// PostgreSQL's database of the test's own, dropped after the store.
    database: Option<Database>,
}

impl Subject {
    async fn reopen(&self) -> Arc<dyn TokenStore> {
        herald_notify::store::open(&self.url).await.unwrap()
    }

    async fn done(self) {
        drop(self.store);
        drop(self.database);
    }
}

async fn sqlite() -> Subject {
    let path = std::env::temp_dir().join(format!("herald-store-{:016x}.db", rand::random::<u64>()));
    let url = format!("sqlite:{}", path.display());
    Subject {
        store: Arc::new(SqliteStore::connect(&url).await.unwrap()),
        url,
        database: None,
    }
}

async fn postgres() -> Subject {
    let database = Database::create().await;
    Subject {
        store: Arc::new(PostgresStore::connect(&database.url).await.unwrap()),
        url: database.url.clone(),
        database: Some(database),
    }
}

fn apns(user: &str, token_byte: &str) -> CheckedDevice {
    CheckedDevice {
        user: herald_protocol::UserId::parse(user).unwrap(),
        platform: Platform::Apns,
        token: token_byte.repeat(64)[..64].to_owned(),
        p256dh: None,
        auth: None,
        app: "com.example.chat".into(),
        environment: Environment::Production,
        locale: Some("en-US".into()),
    }
}

async fn register_list_unregister(s: Subject) {
    let store = &s.store;
    let phone = store.register(apns("alice", "a"), 10).await.unwrap();
    assert_eq!(phone.user, "alice");
    assert_eq!(phone.platform, Platform::Apns);
    assert_eq!(phone.locale.as_deref(), Some("en-US"));
    let mut web = apns("alice", "b");
    web.platform = Platform::Webpush;
    web.token = "https://push.example/sub/1".into();
    web.p256dh = Some("key".into());
    web.auth = Some("auth".into());
    let browser = store.register(web, 10).await.unwrap();
    let listed = store.list("alice").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&browser));
    assert_eq!(store.get(&phone.id).await.unwrap(), Some(phone.clone()));
    assert!(store.unregister(&phone.id).await.unwrap());
    assert!(!store.unregister(&phone.id).await.unwrap());
    assert_eq!(store.list("alice").await.unwrap(), vec![browser]);
    assert!(store.list("nobody").await.unwrap().is_empty());
    s.done().await;
}

async fn a_known_token_moves_to_its_new_user(s: Subject) {
    let store = &s.store;
    let first = store.register(apns("alice", "c"), 10).await.unwrap();
    let moved = store.register(apns("bob", "c"), 10).await.unwrap();
    assert_eq!(moved.id, first.id, "the same device");
    assert_eq!(moved.user, "bob");
    assert!(store.list("alice").await.unwrap().is_empty());
    assert_eq!(store.list("bob").await.unwrap().len(), 1);
    s.done().await;
}

/// Waits until the millisecond clock (device timestamps) has moved on, so
/// the next registration is seen later than the last.
async fn next_millisecond() {
    let now = herald_core::time::unix_millis();
    eventually(WAIT, "the millisecond clock to move on", || async {
        herald_core::time::unix_millis() != now
    })
    .await;
}

async fn the_per_user_cap_drops_the_least_recently_seen(s: Subject) {
    let store = &s.store;
    let mut ids = Vec::new();
    for byte in ["1", "2", "3", "4"] {
        ids.push(store.register(apns("carol", byte), 3).await.unwrap().id);
        next_millisecond().await;
    }
    let kept: Vec<String> = store
        .list("carol")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(kept.len(), 3);
    assert!(!kept.contains(&ids[0]), "the oldest went");
    s.done().await;
}

async fn dead_tokens_registered_again_later_stay(s: Subject) {
    let store = &s.store;
    let device = store.register(apns("dave", "d"), 10).await.unwrap();
    // APNs says the token died before its last registration: it stays
    assert!(
        !store
            .remove_dead(&device.id, device.updated_ms - 1)
            .await
            .unwrap()
    );
    assert!(store.get(&device.id).await.unwrap().is_some());
    // … and after it: it goes
    assert!(
        store
            .remove_dead(&device.id, device.updated_ms + 1)
            .await
            .unwrap()
    );
    assert!(store.get(&device.id).await.unwrap().is_none());
    s.done().await;
}

/// Any `u64` is a time: FCM and Web Push give none, and a "whenever"
/// far in the future must remove the device, not wrap around and keep it.
async fn dead_since_any_time_is_compared_as_a_time(s: Subject) {
    let store = &s.store;
    let device = store.register(apns("kai", "k"), 10).await.unwrap();
    assert!(store.remove_dead(&device.id, u64::MAX).await.unwrap());
    assert!(store.get(&device.id).await.unwrap().is_none());
    let device = store.register(apns("kai", "k"), 10).await.unwrap();
    assert!(
        store
            .remove_dead(&device.id, i64::MAX as u64 + 1)
            .await
            .unwrap()
    );
    // registered again at or after the moment given: kept
    let device = store.register(apns("kai", "k"), 10).await.unwrap();
    assert!(
        !store
            .remove_dead(&device.id, device.updated_ms)
            .await
            .unwrap()
    );
    assert!(store.get(&device.id).await.unwrap().is_some());
    s.done().await;
}

async fn status_is_recorded_per_device(s: Subject) {
    let store = &s.store;
    let status = |device: &str, state, attempts| DeviceStatus {
        device_id: device.into(),
        platform: "apns".into(),
        state,
        reason: format!("{state:?}"),
        attempts,
        updated_ms: 1,
    };
    store
        .record("n1", &status("d1", DeliveryState::Retrying, 1))
        .await
        .unwrap();
    store
        .record("n1", &status("d2", DeliveryState::Sent, 1))
        .await
        .unwrap();
    store
        .record("n1", &status("d1", DeliveryState::Sent, 2))
        .await
        .unwrap();
    let got = store.status("n1").await.unwrap();
    assert_eq!(
        got,
        vec![
            status("d1", DeliveryState::Sent, 2),
            status("d2", DeliveryState::Sent, 1)
        ]
    );
    assert!(store.status("n2").await.unwrap().is_empty());
    s.done().await;
}

async fn concurrent_registrations_of_one_token_store_one_device(s: Subject) {
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            let user = if i % 2 == 0 { "erin" } else { "frank" };
            // a busy SQLite may ask to retry; that is the contract
            loop {
                match store.register(apns(user, "e"), 10).await {
                    Ok(d) => return d.id,
                    Err(StoreError::Unavailable(_)) => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one device, whoever registered it last");
    let total =
        s.store.list("erin").await.unwrap().len() + s.store.list("frank").await.unwrap().len();
    assert_eq!(total, 1);
    s.done().await;
}

async fn who_has_devices_among_many_users(s: Subject) {
    let store = &s.store;
    store.register(apns("hana", "1"), 10).await.unwrap();
    store.register(apns("hana", "2"), 10).await.unwrap();
    store.register(apns("ivan", "3"), 10).await.unwrap();
    // more users than one query asks about, most without devices
    let mut users: Vec<String> = (0..1200).map(|i| format!("nobody-{i}")).collect();
    users.insert(700, "ivan".into());
    users.push("hana".into());
    let found = store.users_with_devices(&users).await.unwrap();
    let expected: std::collections::HashSet<String> = ["hana".to_owned(), "ivan".to_owned()].into();
    assert_eq!(found, expected);
    assert!(store.users_with_devices(&[]).await.unwrap().is_empty());
    s.done().await;
}

async fn opening_again_keeps_everything(s: Subject) {
    let device = s.store.register(apns("gina", "f"), 10).await.unwrap();
    let again = s.reopen().await;
    assert_eq!(again.get(&device.id).await.unwrap(), Some(device));
    s.done().await;
}

herald_testkit::suite!(
    sqlite_store: sqlite, postgres_store: postgres;
    [
        register_list_unregister,
        a_known_token_moves_to_its_new_user,
        the_per_user_cap_drops_the_least_recently_seen,
        dead_tokens_registered_again_later_stay,
        dead_since_any_time_is_compared_as_a_time,
        status_is_recorded_per_device,
        concurrent_registrations_of_one_token_store_one_device,
        opening_again_keeps_everything,
        who_has_devices_among_many_users,
    ]
);
