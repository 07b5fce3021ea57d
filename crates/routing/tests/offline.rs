//! The offline hand-off: routing asks presence who is connected, delivers
//! live to them, asks the device registry who of the others can be pushed
//! to, and queues push jobs for those on the JetStream work queue (read
//! back here). Presence and the registry are stand-ins behind their seams.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_core::bus::{Bus, MemoryBus};
use herald_core::config::{Config, RoutingConfig};
use herald_core::devices::{DeviceLookup, DeviceLookupError};
use herald_core::history::MemoryHistory;
use herald_core::presence::{PresenceError, PresenceLookup};
use herald_core::subjects::Subjects;
use herald_core::work_queue::{JetStreamWorkQueue, Notification, PushJob};
use herald_protocol::channel::Channel;
use herald_routing::{Deps, NotifyOutcome, PublishRequest, Routing, SendRequest, SendResult};
use herald_testkit::{Prefix, WAIT, nats_bus, take_push_jobs, within};
use serde_json::value::RawValue;

enum FakePresence {
    Online(HashSet<String>),
    Down,
    Slow,
}

#[async_trait]
impl PresenceLookup for FakePresence {
    async fn online(&self, users: &[String]) -> Result<HashSet<String>, PresenceError> {
        match self {
            FakePresence::Online(set) => {
                Ok(users.iter().filter(|u| set.contains(*u)).cloned().collect())
            }
            FakePresence::Down => Err(PresenceError("connection refused".into())),
            FakePresence::Slow => {
                std::future::pending::<()>().await;
                Ok(HashSet::new())
            }
        }
    }
}

/// A device registry: these users have devices; `None`: it does not answer.
struct FakeDevices(Option<HashSet<String>>);

#[async_trait]
impl DeviceLookup for FakeDevices {
    async fn with_devices(&self, users: &[String]) -> Result<HashSet<String>, DeviceLookupError> {
        match &self.0 {
            Some(set) => Ok(users.iter().filter(|u| set.contains(*u)).cloned().collect()),
            None => Err(DeviceLookupError("connection refused".into())),
        }
    }
}

struct Setup {
    routing: Routing,
    client: async_nats::Client,
    stream: String,
    /// The test's streams, deleted when it is dropped.
    _prefix: Prefix,
}

impl Setup {
    async fn new(presence: FakePresence) -> Setup {
        Setup::with_devices(presence, None).await
    }

    async fn with_devices(presence: FakePresence, devices: Option<FakeDevices>) -> Setup {
        let prefix = Prefix::new();
        let config = Arc::new(Config {
            subject_prefix: prefix.to_string(),
            routing: RoutingConfig {
                presence_timeout_ms: 200,
                ..RoutingConfig::default()
            },
            ..Config::default()
        });
        let nats = nats_bus("offline-test").await;
        let queue = JetStreamWorkQueue::open(
            nats.client().clone(),
            &Subjects::new(prefix.as_str()),
            Duration::from_secs(60),
            Default::default(),
        )
        .await
        .unwrap();
        let stream = queue.stream_name().to_owned();
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let mut routing = Routing::new(
            config,
            Deps {
                bus,
                history: Arc::new(MemoryHistory::default()),
                queue: Arc::new(queue),
                presence: Arc::new(presence),
            },
        );
        if let Some(devices) = devices {
            routing = routing.with_device_lookup(Arc::new(devices));
        }
        Setup {
            routing,
            client: nats.client().clone(),
            stream,
            _prefix: prefix,
        }
    }

    /// Every job waiting on the work queue (taken off it).
    async fn queued_jobs(&self) -> Vec<PushJob> {
        take_push_jobs(&self.client, &self.stream).await
    }
}

fn json(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

fn send(user: &str, key: Option<&str>) -> SendRequest {
    SendRequest {
        user: user.into(),
        data: json(r#"{"text":"hi"}"#),
        notification: Some(Notification {
            title: "New message".into(),
            body: "hi".into(),
            collapse_key: Some("chat".into()),
        }),
        idempotency_key: key.map(str::to_owned),
    }
}

/// Publishes to `chat:room` with `notify_offline: users`.
async fn publish_notifying(setup: &Setup, users: &[&str]) -> herald_routing::PublishAnswer {
    setup
        .routing
        .publish(PublishRequest {
            channel: Channel::new("chat:room").unwrap(),
            data: json(r#"{"n":1}"#),
            idempotency_key: None,
            notify_offline: users.iter().map(|u| u.to_string()).collect(),
            notification: None,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn online_users_get_it_live_and_offline_users_get_one_push_job_each() {
    let setup = Setup::new(FakePresence::Online(HashSet::from(["alice".to_owned()]))).await;

    let r = setup
        .routing
        .send_to_user(send("alice", None))
        .await
        .unwrap();
    assert_eq!(r.result, SendResult::Online);
    assert!(
        setup.queued_jobs().await.is_empty(),
        "no push for an online user"
    );

    let r = setup.routing.send_to_user(send("bob", None)).await.unwrap();
    assert_eq!(r.result, SendResult::Pushed);
    let jobs = setup.queued_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].user, "bob");
    assert_eq!(jobs[0].notification.as_ref().unwrap().title, "New message");
    assert_eq!(jobs[0].data.get(), r#"{"text":"hi"}"#);

    let answer = publish_notifying(&setup, &["alice", "bob", "carol"]).await;
    assert_eq!(
        answer.notify,
        Some(NotifyOutcome {
            online: vec!["alice".into()],
            pushed: vec!["bob".into(), "carol".into()],
            unknown: vec![],
            no_devices: vec![],
        })
    );
    let jobs = setup.queued_jobs().await;
    let mut users: Vec<&str> = jobs.iter().map(|j| j.user.as_str()).collect();
    users.sort();
    assert_eq!(users, ["bob", "carol"]);
    assert!(
        jobs.iter()
            .all(|j| j.channel.as_ref().map(Channel::as_str) == Some("chat:room"))
    );
    let ids: HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "each job has its own id");
}

#[tokio::test]
async fn a_retried_send_with_the_same_key_queues_one_job() {
    let setup = Setup::new(FakePresence::Online(HashSet::new())).await;
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(
            setup
                .routing
                .send_to_user(send("dave", Some("msg-9")))
                .await
                .unwrap(),
        );
    }
    assert!(answers.iter().all(|a| a.result == SendResult::Pushed));
    assert_eq!(setup.queued_jobs().await.len(), 1);
}

#[tokio::test]
async fn when_presence_is_down_or_slow_nothing_is_pushed_and_the_answer_says_unknown() {
    for presence in [FakePresence::Down, FakePresence::Slow] {
        let setup = Setup::new(presence).await;
        // bounded by the presence timeout: it answers, even when presence
        // never does
        let r = within(
            WAIT,
            "an answer without presence",
            setup.routing.send_to_user(send("erin", None)),
        )
        .await
        .unwrap();
        assert_eq!(r.result, SendResult::Unknown);
        assert!(setup.queued_jobs().await.is_empty());
    }
}

#[tokio::test]
async fn offline_users_without_devices_are_told_apart_and_get_no_job() {
    let devices = FakeDevices(Some(HashSet::from(["bob".to_owned()])));
    let setup = Setup::with_devices(
        FakePresence::Online(HashSet::from(["alice".to_owned()])),
        Some(devices),
    )
    .await;

    let r = setup.routing.send_to_user(send("gus", None)).await.unwrap();
    assert_eq!(r.result, SendResult::NoDevices);
    assert!(setup.queued_jobs().await.is_empty(), "nothing to push to");
    let r = setup.routing.send_to_user(send("bob", None)).await.unwrap();
    assert_eq!(r.result, SendResult::Pushed);
    assert_eq!(setup.queued_jobs().await.len(), 1);
    let r = setup
        .routing
        .send_to_user(send("alice", None))
        .await
        .unwrap();
    assert_eq!(r.result, SendResult::Online);

    let answer = publish_notifying(&setup, &["alice", "bob", "gus"]).await;
    assert_eq!(
        answer.notify,
        Some(NotifyOutcome {
            online: vec!["alice".into()],
            pushed: vec!["bob".into()],
            unknown: vec![],
            no_devices: vec!["gus".into()],
        })
    );
    let jobs = setup.queued_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].user, "bob");
}

#[tokio::test]
async fn when_the_device_registry_is_down_offline_users_are_still_pushed() {
    let setup = Setup::with_devices(
        FakePresence::Online(HashSet::new()),
        Some(FakeDevices(None)),
    )
    .await;
    let r = setup.routing.send_to_user(send("hal", None)).await.unwrap();
    assert_eq!(r.result, SendResult::Pushed);
    assert_eq!(setup.queued_jobs().await.len(), 1);
}
