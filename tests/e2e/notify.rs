//! Push notifications end to end: routing, presence, an edge and notify as
//! processes on NATS and PostgreSQL, talking to fake APNs, FCM and Web Push
//! services that check what the real ones check.

use std::collections::HashMap;
use std::time::Duration;

use herald_client::Client;
use herald_fakes::{Reply, keys};
use serde_json::{Value, json};

use herald_testkit::*;

const APP: &str = "com.example.chat";

async fn fakes() -> Fakes {
    Fakes::start(&[APP]).await
}

/// A config file naming the fakes and the app's credentials.
fn config(f: &Fakes, extra: &str) -> std::path::PathBuf {
    temp_file("herald.toml", &f.toml(APP, extra))
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// routing + presence + edge + notify on NATS and PostgreSQL.
struct Stack {
    routing: Herald,
    edge: Herald,
    notify: Herald,
    _presence: Herald,
    _db: Database,
    env: Cluster,
}

/// The stack, jobs redelivered soon after a crash (5 s).
async fn stack(f: &Fakes, extra: &str) -> Stack {
    stack_acking(f, extra, "5").await
}

/// The stack with notify's `extra` settings and the queue's ack wait.
async fn stack_acking(f: &Fakes, extra: &str, ack_wait_secs: &str) -> Stack {
    let db = Database::create().await;
    let config = config(f, extra);
    let mut env = Cluster::new()
        .with("HERALD_PRESENCE_HEARTBEAT_SECS", "1")
        .with("HERALD_CONFIG", config.to_str().unwrap())
        .with("RUST_LOG", "info,herald_notify=debug")
        .with("HERALD_PUSH_ACK_WAIT_SECS", ack_wait_secs);
    let presence = Herald::presence("presence", &env);
    env.set("HERALD_PRESENCE_URL", presence.grpc_url());
    env.set("HERALD_DATABASE_URL", db.url.as_str());
    let notify = Herald::notify("notify", &env);
    // routing asks notify whether offline users have devices
    env.set("HERALD_NOTIFY_URL", notify.grpc_url());
    let routing = Herald::routing("routing", &env);
    let edge = Herald::edge("edge", &env);
    Stack {
        routing,
        edge,
        notify,
        _presence: presence,
        _db: db,
        env,
    }
}

fn apns_token(c: char) -> String {
    c.to_string().repeat(64)
}

async fn register(api: &Api, device: Value) -> String {
    let Answer {
        status,
        body: answer,
        ..
    } = api.post("/api/devices", device).await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

async fn send_to_user(c: &Stack, user: &str, text: &str, collapse: &str) -> String {
    let Answer {
        status,
        body: answer,
        ..
    } = c
        .routing
        .api()
        .post(
            "/api/send",
            json!({"user": user, "data": {"text": text},
               "notification": {"title": "New message", "body": text, "collapse_key": collapse}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["result"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_gets_one_push_per_device_and_an_online_user_none() {
    let f = fakes().await;
    let c = stack(&f, "").await;
    let api = c.notify.api();
    register(
        &api,
        json!({"user": "alice", "platform": "apns", "token": apns_token('a'), "app": APP}),
    )
    .await;
    register(
        &api,
        json!({"user": "alice", "platform": "fcm", "token": "android-alice-1", "app": APP}),
    )
    .await;

    // bob has no device: nothing to push to, and routing says so
    assert_eq!(send_to_user(&c, "bob", "hello?", "z").await, "no_devices");
    assert_eq!(send_to_user(&c, "alice", "first", "a").await, "pushed");
    eventually(WAIT, "one push on each platform", || async {
        (f.apns.delivered().len() == 1 && f.fcm.delivered().len() == 1).then_some(())
    })
    .await;
    let apple = &f.apns.delivered()[0];
    assert_eq!(apple.topic, APP);
    assert_eq!(apple.payload["aps"]["alert"]["body"], "first");
    assert_eq!(apple.payload["herald"]["data"]["text"], "first");
    let google = &f.fcm.delivered()[0].message;
    assert_eq!(google["token"], "android-alice-1");
    assert_eq!(google["notification"]["body"], "first");

    // connected: live delivery, no push
    let token = mint_token(&c.env, "alice", "x:*", "");
    let (mut alice, _) = Client::connect(&c.edge.ws(), &token).await.unwrap();
    eventually(WAIT, "alice online", || async {
        let result = send_to_user(&c, "alice", "while online", "b").await;
        if result == "online" {
            Ok(())
        } else {
            Err(result)
        }
    })
    .await;
    let live = alice.next_publication().await.unwrap();
    assert_eq!(live.channel.as_str(), "#alice");
    alice.close().await;
    // offline again: this one is pushed — and is the only one after the first
    eventually(WAIT, "alice offline", || async {
        send_to_user(&c, "alice", "marker", "c").await == "pushed"
    })
    .await;
    eventually(WAIT, "the marker push", || async {
        f.apns
            .delivered()
            .iter()
            .any(|r| r.payload["aps"]["alert"]["body"] == "marker")
            .then_some(())
    })
    .await;
    let bodies: Vec<String> = f
        .apns
        .delivered()
        .iter()
        .map(|r| {
            r.payload["aps"]["alert"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        !bodies.contains(&"while online".to_owned()),
        "pushed while online: {bodies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_47_becomes_at_most_two_alerts_per_device() {
    let f = fakes().await;
    // A window far longer than the burst takes even on a busy machine: the
    // burst falls in one window however slowly it is sent.
    // (Held jobs must not be redelivered meanwhile: the ack wait is longer.)
    let c = stack_acking(&f, "coalesce_window_ms = 8000", "30").await;
    let api = c.notify.api();
    register(
        &api,
        json!({"user": "bob", "platform": "apns", "token": apns_token('b'), "app": APP}),
    )
    .await;
    register(
        &api,
        json!({"user": "bob", "platform": "fcm", "token": "android-bob-1", "app": APP}),
    )
    .await;
    for i in 1..=47 {
        assert_eq!(
            send_to_user(&c, "bob", &format!("message {i}"), "chat").await,
            "pushed"
        );
    }
    eventually(WAIT, "the summary on both platforms", || async {
        let apple = f
            .apns
            .delivered()
            .iter()
            .any(|r| r.payload["aps"]["alert"]["body"] == "47 new messages");
        let google = f
            .fcm
            .delivered()
            .iter()
            .any(|r| r.message["notification"]["body"] == "47 new messages");
        (apple && google).then_some(())
    })
    .await;
    let apple = f.apns.delivered();
    let google = f.fcm.delivered();
    assert!(
        apple.len() <= 2 && google.len() <= 2,
        "{} APNs, {} FCM",
        apple.len(),
        google.len()
    );
    assert_eq!(
        apple.last().unwrap().payload["aps"]["alert"]["body"],
        "47 new messages"
    );
    assert_eq!(
        apple.last().unwrap().collapse_id.as_deref(),
        Some("chat"),
        "replaces, not stacks"
    );
    assert_eq!(
        google.last().unwrap().message["android"]["collapse_key"],
        "chat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_apns_token_is_removed_and_gone_from_the_next_status() {
    let f = fakes().await;
    let c = stack(&f, "").await;
    let api = c.notify.api();
    let dead = register(
        &api,
        json!({"user": "carol", "platform": "apns", "token": apns_token('c'), "app": APP}),
    )
    .await;
    let alive = register(
        &api,
        json!({"user": "carol", "platform": "fcm", "token": "android-carol", "app": APP}),
    )
    .await;
    let since = herald_core::time::unix_millis() + 1000;
    f.apns.script(
        &apns_token('c'),
        vec![Reply::Unregistered { since_ms: since }],
    );

    let notify_one = |text: &str| {
        api.post(
            "/api/notify",
            json!({"user": "carol", "notification": {"title": "t", "body": text}}),
        )
    };
    let Answer {
        status,
        body: answer,
        ..
    } = notify_one("one").await;
    assert_eq!(status, 202, "{answer}");
    let first = answer["id"].as_str().unwrap().to_owned();
    let statuses = until_status(&api, &first, 2).await;
    assert_eq!(statuses[&dead]["state"], "failed");
    assert!(
        statuses[&dead]["reason"]
            .as_str()
            .unwrap()
            .contains("device removed"),
        "{:?}",
        statuses[&dead]
    );
    assert_eq!(statuses[&alive]["state"], "sent");
    let devices = api.get("/api/devices?user=carol").await.body;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [alive.as_str()],
        "the dead device is gone from the registry"
    );

    let answer = notify_one("two").await.body;
    let second = answer["id"].as_str().unwrap().to_owned();
    let statuses = until_status(&api, &second, 1).await;
    assert!(
        !statuses.contains_key(&dead),
        "the dead device is not tried again"
    );
}

/// Waits until `count` devices are settled for a notification.
async fn until_status(api: &Api, id: &str, count: usize) -> HashMap<String, Value> {
    eventually(
        WAIT,
        &format!("{count} devices settled for {id}"),
        || async {
            let answer = api.get(&format!("/api/notify/{id}")).await.body;
            let devices: HashMap<String, Value> = answer["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    (
                        d["device_id"].as_str().unwrap_or_default().to_owned(),
                        d.clone(),
                    )
                })
                .collect();
            let settled = devices
                .values()
                .filter(|d| d["state"] == "sent" || d["state"] == "failed")
                .count();
            if settled >= count {
                Ok(devices)
            } else {
                Err(answer)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_retried_no_sooner_and_succeeds() {
    let f = fakes().await;
    let c = stack(&f, "").await;
    let api = c.notify.api();
    let device = register(
        &api,
        json!({"user": "dan", "platform": "fcm", "token": "android-dan", "app": APP}),
    )
    .await;
    f.fcm.script(
        "android-dan",
        vec![
            Reply::TooManyRequests {
                retry_after_secs: 2,
            },
            Reply::Accept,
        ],
    );
    let Answer { body: answer, .. } = api
        .post(
            "/api/notify",
            json!({"user": "dan", "notification": {"title": "t", "body": "b"}}),
        )
        .await;
    let id = answer["id"].as_str().unwrap().to_owned();
    let statuses = until_status(&api, &id, 1).await;
    assert_eq!(statuses[&device]["state"], "sent");
    assert_eq!(statuses[&device]["attempts"], 2);
    let tries = f.fcm.received();
    assert_eq!(tries.len(), 2);
    assert_eq!((tries[0].status, tries[1].status), (429, 200));
    let gap = tries[1].at.duration_since(tries[0].at);
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_notify_mid_batch_loses_no_job_and_duplicates_keep_their_apns_id() {
    let f = fakes().await;
    let mut c = stack(&f, "push_concurrency = 4").await;
    let api = c.notify.api();
    const USERS: usize = 40;
    let mut devices = HashMap::new();
    for i in 0..USERS {
        let token = format!("{:064x}", i + 1);
        f.apns
            .script(&token, vec![Reply::Slow(Duration::from_millis(200))]);
        let id = register(
            &api,
            json!({"user": format!("u{i}"), "platform": "apns", "token": token, "app": APP}),
        )
        .await;
        devices.insert(format!("u{i}"), id);
    }
    let mut jobs = Vec::new();
    for i in 0..USERS {
        let Answer { status, body: answer, .. } = api.post("/api/notify", json!({"user": format!("u{i}"), "notification": {"title": "t", "body": format!("to u{i}")}})).await;
        assert_eq!(status, 202);
        jobs.push((
            answer["id"].as_str().unwrap().to_owned(),
            devices[&format!("u{i}")].clone(),
        ));
    }
    eventually(WAIT, "a few deliveries", || async {
        (f.apns.delivered().len() >= 5).then_some(())
    })
    .await;
    c.notify.kill();
    let restarted = Herald::notify("notify-2", &c.env);
    let expected: HashMap<String, String> = jobs
        .iter()
        .map(|(job, device)| (herald_notify_apns_id(job, device), job.clone()))
        .collect();
    eventually(WAIT, "every job delivered", || async {
        let delivered: std::collections::HashSet<String> = f
            .apns
            .delivered()
            .iter()
            .filter_map(|r| r.apns_id.clone())
            .collect();
        expected
            .keys()
            .all(|id| delivered.contains(id))
            .then_some(())
    })
    .await;
    // every request carried the apns-id of one of our jobs: a duplicate is
    // recognisable as such
    for request in f.apns.received() {
        let id = request.apns_id.clone().unwrap_or_default();
        assert!(expected.contains_key(&id), "unknown apns-id {id}");
    }
    drop(restarted);
}

fn herald_notify_apns_id(job: &str, device: &str) -> String {
    herald_notify::providers::apns_id(job, device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_decrypts_to_exactly_what_was_sent() {
    let f = fakes().await;
    let c = stack(&f, "").await;
    let api = c.notify.api();
    let subscription = f.webpush.subscribe();
    let device = register(
        &api,
        json!({"user": "erin", "platform": "webpush", "subscription": subscription, "app": APP}),
    )
    .await;
    let Answer { body: answer, .. } = api.post("/api/notify",
        json!({"user": "erin", "notification": {"title": "Hello", "body": "from Herald", "collapse_key": "greeting"},
               "data": {"url": "/inbox", "n": 3}}),
    )
    .await;
    let id = answer["id"].as_str().unwrap().to_owned();
    let statuses = until_status(&api, &id, 1).await;
    assert_eq!(statuses[&device]["state"], "sent");
    let got = f.webpush.delivered();
    assert_eq!(got.len(), 1);
    let plain: Value = serde_json::from_str(&got[0].plaintext).unwrap();
    assert_eq!(
        plain,
        json!({"id": id, "title": "Hello", "body": "from Herald", "tag": "greeting", "channel": null,
               "data": {"url": "/inbox", "n": 3}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_device_input_gets_a_clear_error_and_nothing_is_stored() {
    let f = fakes().await;
    let c = stack(&f, "").await;
    let api = c.notify.api();
    let bad_key = json!({"endpoint": "https://push.example/x", "keys": {"p256dh": base64_url(&[4u8; 65]), "auth": base64_url(&[1u8; 16])}});
    for (body, why) in [
        (
            json!({"user": "frank", "platform": "pager", "token": "x"}),
            "unknown platform",
        ),
        (
            json!({"user": "frank", "platform": "apns", "token": "not-a-token"}),
            "malformed APNs token",
        ),
        (
            json!({"user": "frank", "platform": "fcm", "token": "bad token with spaces"}),
            "malformed FCM token",
        ),
        (
            json!({"user": "frank", "platform": "webpush", "subscription": bad_key}),
            "a key off the curve",
        ),
        (json!({"user": "frank", "platform": "apns"}), "no token"),
    ] {
        let Answer {
            status,
            body: answer,
            ..
        } = api.post("/api/devices", body).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert_eq!(answer["error"]["code"], 100, "{why}: {answer}");
    }
    let Answer { status, body: answer, .. } = api.post("/api/notify",
        json!({"user": "frank", "notification": {"title": "t", "body": "b"}, "data": {"blob": "x".repeat(5000)}}),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    // a user that is no user id (routing and the edges refuse it too)
    let Answer {
        status,
        body: answer,
        ..
    } = api
        .post("/api/notify", json!({"user": "a,b#c d", "data": {}}))
        .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (400, json!(100)),
        "{answer}"
    );
    let listed = api.get("/api/devices?user=a%2Cb%23c%20d").await;
    assert_eq!(listed.status, 400, "{}", listed.body);
    let devices = api.get("/api/devices?user=frank").await.body;
    assert_eq!(devices["devices"], json!([]));
    // without the API key, nothing
    let response = http_client()
        .post(format!("{}/api/devices", c.notify.http()))
        .json(&json!({"user": "frank", "platform": "fcm", "token": "ok-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_pushes_through_sqlite_and_its_own_queue() {
    let f = fakes().await;
    let config = config(&f, "");
    let env = Env::new().with("HERALD_CONFIG", config.to_str().unwrap());
    let herald = Herald::standalone(&env);
    let api = herald.api();
    register(
        &api,
        json!({"user": "gina", "platform": "apns", "token": apns_token('9'), "app": APP}),
    )
    .await;
    let Answer { status, body: answer, .. } = api.post("/api/send",
        json!({"user": "gina", "data": {"k": 1}, "notification": {"title": "Hi", "body": "standalone"}}),
    )
    .await;
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("pushed")),
        "{answer}"
    );
    eventually(WAIT, "the push", || async { f.apns.delivered().len() == 1 }).await;
    assert_eq!(
        f.apns.delivered()[0].payload["aps"]["alert"]["body"],
        "standalone"
    );
}

/// A throwaway PostgreSQL cluster of the test's own, so it can restart it.
struct OwnPostgres {
    dir: std::path::PathBuf,
    port: u16,
    bin: std::path::PathBuf,
}

fn as_postgres(program: &std::path::Path) -> std::process::Command {
    // PostgreSQL refuses to run as root.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (scripts/services.sh installs them)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = std::env::temp_dir().join(format!("herald-pg-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::process::Command::new("chmod")
            .arg("0777")
            .arg(&dir)
            .status();
        let port = free_port();
        let pg = OwnPostgres { dir, port, bin };
        let ok = as_postgres(&pg.bin.join("initdb"))
            .args([
                "-D",
                pg.data().to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "initdb failed");
        pg.ctl("start");
        pg
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let ok = as_postgres(&self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-w",
                "-m",
                "fast",
                "-o",
                &options,
                action,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl {action} failed");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_registrations_loses_and_doubles_nothing() {
    let f = fakes().await;
    let pg = OwnPostgres::start();
    // (the per-user cap would drop old devices: not what this is about)
    let config = config(&f, "max_devices_per_user = 100000");
    let env = Cluster::new()
        .with("HERALD_CONFIG", config.to_str().unwrap())
        .with("HERALD_DATABASE_URL", pg.url());
    let notify = Herald::notify("notify", &env);
    let api = notify.api();

    // Registrations keep coming until well after PostgreSQL is back.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let retryable = std::sync::Arc::new(AtomicUsize::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let restarting = std::sync::Arc::new(AtomicBool::new(false));
    let during_restart = std::sync::Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for worker in 0..10usize {
        let (api, done, retryable, stop) =
            (api.clone(), done.clone(), retryable.clone(), stop.clone());
        let (restarting, during_restart) = (restarting.clone(), during_restart.clone());
        tasks.push(tokio::spawn(async move {
            let mut registered = Vec::new();
            let mut i = worker;
            while !stop.load(Ordering::Acquire) {
                let token = format!("burst-{i}");
                let body = json!({"user": format!("user{}", i % 20), "platform": "fcm", "token": token, "app": APP});
                eventually(WAIT, "the registration (503s retried)", || async {
                    if restarting.load(Ordering::Acquire) {
                        during_restart.fetch_add(1, Ordering::Relaxed);
                    }
                    let Answer { status, retry_after, body: answer } =
                        api.post("/api/devices", body.clone()).await;
                    match status {
                        201 => true,
                        // the caller is told to try again, and does
                        503 => {
                            assert_eq!(answer["error"]["code"], 500, "{answer}");
                            assert_eq!(retry_after.as_deref(), Some("1"), "{answer}");
                            retryable.fetch_add(1, Ordering::Relaxed);
                            false
                        }
                        other => panic!("registration failed with {other}: {answer}"),
                    }
                })
                .await;
                registered.push(token);
                done.fetch_add(1, Ordering::Relaxed);
                i += 10;
            }
            registered
        }));
    }
    eventually(WAIT, "registrations under way", || async {
        (done.load(Ordering::Relaxed) >= 50).then_some(())
    })
    .await;
    restarting.store(true, Ordering::Release);
    let pg = tokio::task::spawn_blocking(move || {
        pg.ctl("restart");
        pg
    })
    .await
    .unwrap();
    restarting.store(false, Ordering::Release);
    let after_restart = done.load(Ordering::Relaxed);
    eventually(WAIT, "registrations after the restart", || async {
        (done.load(Ordering::Relaxed) >= after_restart + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    let mut expected = Vec::new();
    for t in tasks {
        expected.extend(t.await.unwrap());
    }
    // Requests met the restart: each either waited for the database to come
    // back or was told to retry (503) — never anything else.
    assert!(
        during_restart.load(Ordering::Relaxed) > 0,
        "no registration was under way during the restart"
    );
    eprintln!(
        "{} registrations, {} made during the restart, {} answers of 503 (retried)",
        expected.len(),
        during_restart.load(Ordering::Relaxed),
        retryable.load(Ordering::Relaxed)
    );
    let mut tokens = Vec::new();
    for u in 0..20 {
        let devices = api.get(&format!("/api/devices?user=user{u}")).await.body;
        tokens.extend(
            devices["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["token"].as_str().unwrap().to_owned()),
        );
    }
    tokens.sort();
    let stored = tokens.len();
    tokens.dedup();
    assert_eq!(stored, tokens.len(), "a registration was stored twice");
    expected.sort();
    assert_eq!(
        tokens, expected,
        "every registration that succeeded is there, and only those"
    );
    drop(notify);
    drop(pg);
}

/// The devices of `user` as notify lists them: id → token.
async fn devices_of(api: &Api, user: &str) -> HashMap<String, String> {
    api.get(&format!("/api/devices?user={user}")).await.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_fcm_and_web_push_devices_are_removed_as_apns_ones_are() {
    let f = fakes().await;
    let c = stack(&f, "").await;
    let api = c.notify.api();
    let unregistered = register(
        &api,
        json!({"user": "olga", "platform": "fcm", "token": "android-olga-old", "app": APP}),
    )
    .await;
    f.fcm.script(
        "android-olga-old",
        vec![Reply::Unregistered { since_ms: 0 }],
    );
    let mut expired = Vec::new();
    for reply in [Reply::Unregistered { since_ms: 0 }, Reply::NotFound] {
        let subscription = f.webpush.subscribe();
        f.webpush
            .script(subscription["endpoint"].as_str().unwrap(), vec![reply]);
        expired.push(
            register(
                &api,
                json!({"user": "olga", "platform": "webpush", "subscription": subscription, "app": APP}),
            )
            .await,
        );
    }
    let alive = register(
        &api,
        json!({"user": "olga", "platform": "fcm", "token": "android-olga-new", "app": APP}),
    )
    .await;
    let Answer {
        status,
        body: answer,
        ..
    } = api
        .post(
            "/api/notify",
            json!({"user": "olga", "notification": {"title": "t", "body": "anyone there?"}}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    let statuses = until_status(&api, &id, 4).await;
    for (dead, why) in [
        (&unregistered, "FCM: UNREGISTERED"),
        (&expired[0], "Web Push 410"),
        (&expired[1], "Web Push 404"),
    ] {
        assert_eq!(statuses[dead]["state"], "failed");
        let reason = statuses[dead]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(why) && reason.ends_with("; device removed"),
            "{reason}"
        );
    }
    assert_eq!(statuses[&alive]["state"], "sent");
    let left: Vec<String> = devices_of(&api, "olga").await.into_keys().collect();
    assert_eq!(left, [alive], "only the live device is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_endpoints_must_be_https_and_public_to_register() {
    let f = fakes().await;
    let c = stack(&f, "").await;
    let api = c.notify.api();
    let keys = f.webpush.subscribe()["keys"].clone();
    // (nothing here is ever connected to: registration only looks)
    for (endpoint, why) in [
        ("http://push.example.com/x", "not https"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://127.0.0.1:22/x", "loopback, another port"),
        ("https://localhost/x", "a name for loopback"),
        ("https://[::1]/x", "IPv6 loopback"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "link-local (cloud metadata)",
        ),
        (
            "https://[::ffff:169.254.169.254]/x",
            "IPv4-mapped link-local",
        ),
        ("https://10.0.0.1:8500/v1/kv/", "private 10/8"),
        ("https://172.16.0.1/x", "private 172.16/12"),
        ("https://192.168.1.1/x", "private 192.168/16"),
        ("https://100.64.0.1/x", "shared (CGNAT)"),
        ("https://[fd00::1]/x", "unique local"),
        ("https://[fe80::1]/x", "IPv6 link-local"),
        ("https://224.0.0.1/x", "multicast"),
        ("https://0.0.0.0/x", "unspecified"),
        ("https://2130706433/x", "loopback written as a number"),
        ("https://user:secret@8.8.8.8/x", "credentials"),
    ] {
        let Answer {
            status,
            body: answer,
            ..
        } = api
            .post(
                "/api/devices",
                json!({"user": "pia", "platform": "webpush", "app": APP,
                   "subscription": {"endpoint": endpoint, "keys": keys}}),
            )
            .await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert_eq!(answer["error"]["code"], 100, "{why}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("endpoint"), "{why}: {message}");
    }
    assert!(devices_of(&api, "pia").await.is_empty(), "nothing stored");
    // a public https endpoint is taken (an address literal: no DNS here)
    let id = register(
        &api,
        json!({"user": "pia", "platform": "webpush", "app": APP,
               "subscription": {"endpoint": "https://8.8.8.8/push/abc", "keys": keys}}),
    )
    .await;
    assert!(devices_of(&api, "pia").await.contains_key(&id));
    // and the fake, allowed by webpush_allowed_hosts, still https
    let subscription = f.webpush.subscribe();
    let endpoint = subscription["endpoint"].as_str().unwrap().to_owned();
    register(
        &api,
        json!({"user": "pia", "platform": "webpush", "subscription": subscription, "app": APP}),
    )
    .await;
    let Answer { status, body: answer, .. } = api.post("/api/devices",
        json!({"user": "pia", "platform": "webpush", "app": APP,
               "subscription": {"endpoint": endpoint.replace("https://", "http://"), "keys": keys}}),
    )
    .await;
    assert_eq!(status, 400, "allowed hosts are still https only: {answer}");
}

#[test]
fn the_readmes_app_example_passes_herald_check_notify() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    // the first TOML block that configures an app
    let block = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(b, _)| b))
        .find(|b| b.contains("[apps."))
        .expect("README.md has a ```toml block with an [apps.…] example");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("herald.toml"), block).unwrap();
    // the files it names, where it names them (relative to the working
    // directory, as Herald reads them)
    let fcm_json = serde_json::json!({
        "type": "service_account", "project_id": "example-chat",
        "private_key": keys::FCM_PRIVATE, "client_email": "push@example-chat.iam.gserviceaccount.com",
    })
    .to_string();
    for line in block.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let path = value
            .split('#')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"');
        let contents = match key.trim() {
            "apns_key_file" => keys::APNS_P8.to_owned(),
            "fcm_service_account_file" => fcm_json.clone(),
            _ => continue,
        };
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    let check = |config: &std::path::Path| {
        let mut command = std::process::Command::new(herald_bin());
        command
            .args(["check", "notify", "--config"])
            .arg(config)
            .current_dir(dir.path());
        Env::default()
            .with("HERALD_API_KEYS", API_KEY)
            .with("HERALD_DATABASE_URL", "sqlite:herald.db")
            .apply(&mut command);
        command.output().unwrap()
    };
    let out = check(&dir.path().join("herald.toml"));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "the README's example fails `herald check notify`:\n{block}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and the check does look at it: the unquoted id it warns about fails
    let unquoted = block.replace("[apps.\"com.example.chat\"]", "[apps.com.example.chat]");
    assert_ne!(unquoted, block, "the example uses the quoted id");
    std::fs::write(dir.path().join("unquoted.toml"), unquoted).unwrap();
    assert!(!check(&dir.path().join("unquoted.toml")).status.success());
}

/// Terminates every backend of database `name` but the caller's.
async fn terminate_backends(admin: &sqlx::PgPool, name: &str) -> usize {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(admin)
    .await
    .map(|rows| rows.len())
    .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_connections_answer_503_with_retry_after_and_lose_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let f = fakes().await;
    // a database of this test's own on the shared server: only its
    // connections are killed, other tests are not disturbed
    let db = Database::create().await;
    let admin = sqlx::PgPool::connect(&database_url()).await.unwrap();
    let config = config(&f, "max_devices_per_user = 100000");
    let env = Cluster::new()
        .with("HERALD_CONFIG", config.to_str().unwrap())
        .with("HERALD_DATABASE_URL", db.url.as_str());
    let notify = Herald::notify("notify", &env);
    let api = notify.api();
    let grpc = notify.grpc_url();

    let stop = Arc::new(AtomicBool::new(false));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // half the registrations over HTTP, half over gRPC
    for worker in 0..8usize {
        let (api, grpc, stop, unavailable, done) = (
            api.clone(),
            grpc.clone(),
            stop.clone(),
            unavailable.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let upstream = herald_proto::client::Upstream::new(&grpc, Some(API_KEY), WAIT).unwrap();
            let mut registered = Vec::new();
            let mut i = worker;
            while !stop.load(Ordering::Acquire) {
                let token = format!("kill-{i}");
                let user = format!("user{}", i % 8);
                eventually(WAIT, "the registration (refusals retried)", || async {
                    let refused = if worker % 2 == 0 {
                        let body =
                            json!({"user": user, "platform": "fcm", "token": token, "app": APP});
                        let Answer {
                            status,
                            retry_after,
                            body: answer,
                        } = api.post("/api/devices", body).await;
                        match status {
                            201 => None,
                            503 => {
                                assert_eq!(answer["error"]["code"], 500, "{answer}");
                                assert_eq!(
                                    retry_after.as_deref(),
                                    Some("1"),
                                    "503 without Retry-After: {answer}"
                                );
                                Some(())
                            }
                            other => panic!("HTTP registration answered {other}: {answer}"),
                        }
                    } else {
                        use herald_proto::notify::v1 as pb;
                        let request = upstream.request(pb::RegisterDeviceRequest {
                            device: Some(pb::Device {
                                user: user.clone(),
                                platform: pb::Platform::Fcm as i32,
                                token: token.clone(),
                                app: APP.into(),
                                ..pb::Device::default()
                            }),
                        });
                        match pb::notify_client::NotifyClient::new(upstream.channel())
                            .register_device(request)
                            .await
                        {
                            Ok(_) => None,
                            Err(s) if s.code() == tonic::Code::Unavailable => Some(()),
                            Err(s) => {
                                panic!("gRPC registration answered {:?}: {}", s.code(), s.message())
                            }
                        }
                    };
                    if refused.is_some() {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                    }
                    refused.is_none()
                })
                .await;
                registered.push(token);
                done.fetch_add(1, Ordering::Relaxed);
                i += 8;
            }
            registered
        }));
    }
    eventually(WAIT, "registrations under way", || async {
        (done.load(Ordering::Relaxed) >= 20).then_some(())
    })
    .await;
    // kill the service's connections over and over until callers have been
    // told to retry a few times
    let terminated = AtomicUsize::new(0);
    eventually(WAIT, "callers told to retry 5 times", || async {
        let killed = terminate_backends(&admin, &db.name).await;
        let killed = terminated.fetch_add(killed, Ordering::Relaxed) + killed;
        let told = unavailable.load(Ordering::Relaxed);
        if told >= 5 {
            Ok(())
        } else {
            Err(format!(
                "{killed} connections killed, {told} callers told to retry"
            ))
        }
    })
    .await;
    let terminated = terminated.into_inner();
    let after = done.load(Ordering::Relaxed);
    eventually(WAIT, "registrations after the kills", || async {
        (done.load(Ordering::Relaxed) >= after + 40).then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    let mut expected = Vec::new();
    for t in tasks {
        expected.extend(t.await.unwrap());
    }
    eprintln!(
        "{} registrations, {terminated} connections killed, {} answers 503/UNAVAILABLE (retried)",
        expected.len(),
        unavailable.load(Ordering::Relaxed)
    );
    let mut tokens: Vec<String> = Vec::new();
    for u in 0..8 {
        tokens.extend(devices_of(&api, &format!("user{u}")).await.into_values());
    }
    tokens.sort();
    expected.sort();
    assert_eq!(tokens, expected, "every registration is there, once");
    drop(notify);
}
