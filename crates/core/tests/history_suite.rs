//! One behavioural suite for the `History` seam, run against the in-memory
//! ring buffers and JetStream on a real NATS server. Each JetStream test uses
//! its own streams (unique prefix) and deletes them at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald_core::config::NamespaceConfig;
use herald_core::history::{
    Appended, History, JetStreamHistory, MemoryHistory, NewPublication, Recovery, Retention,
    Storage,
};
use herald_core::subjects::Subjects;
use herald_core::time::unix_millis;
use herald_protocol::StreamPosition;
use herald_protocol::channel::Channel;
use herald_testkit::{WAIT, eventually, nats_bus, unique_prefix};
use serde_json::value::RawValue;

/// Opens another instance over the same storage.
type Reopen = Box<dyn Fn() -> futures::future::BoxFuture<'static, Arc<dyn History>> + Send + Sync>;

/// A history under test and how to make another instance over the same
/// storage (a routing restart, or another replica).
struct Subject {
    history: Arc<dyn History>,
    reopen: Option<Reopen>,
    cleanup: Option<Arc<JetStreamHistory>>,
}

impl Subject {
    async fn done(self) {
        if let Some(js) = self.cleanup {
            js.delete_streams().await.expect("delete test streams");
        }
    }
}

fn namespaces() -> BTreeMap<String, NamespaceConfig> {
    BTreeMap::from([
        (
            "small".to_owned(),
            NamespaceConfig {
                history_size: 3,
                ..NamespaceConfig::default()
            },
        ),
        (
            "bulk".to_owned(),
            NamespaceConfig {
                history_size: 5000,
                ..NamespaceConfig::default()
            },
        ),
        (
            "brief".to_owned(),
            NamespaceConfig {
                history_ttl_secs: 1,
                ..NamespaceConfig::default()
            },
        ),
    ])
}

fn retention_for(channel: &Channel) -> Retention {
    let ns = namespaces();
    let config = channel
        .namespace()
        .and_then(|n| ns.get(n).cloned())
        .unwrap_or_default();
    Retention {
        size: config.history_size,
        ttl: Duration::from_secs(config.history_ttl_secs),
    }
}

async fn memory() -> Subject {
    Subject {
        history: Arc::new(MemoryHistory::new(Duration::from_secs(60))),
        reopen: None,
        cleanup: None,
    }
}

async fn open_jetstream(prefix: String) -> Arc<JetStreamHistory> {
    let bus = nats_bus("history-suite").await;
    Arc::new(
        JetStreamHistory::open(
            bus.client().clone(),
            Subjects::new(&prefix),
            &namespaces(),
            Duration::from_secs(60),
            Storage::Memory,
            Default::default(),
        )
        .await
        .expect("open JetStream history")
        // These tests are about what is stored, not deadlines: a burst of
        // thousands of appends to one channel takes longer than the 2 s
        // default gives each caller.
        .with_append_timeout(Duration::from_secs(120)),
    )
}

async fn jetstream() -> Subject {
    let prefix = unique_prefix();
    let history = open_jetstream(prefix.clone()).await;
    Subject {
        history: history.clone(),
        reopen: Some(Box::new(move || {
            let prefix = prefix.clone();
            Box::pin(async move { open_jetstream(prefix).await as Arc<dyn History> })
        })),
        cleanup: Some(history),
    }
}

fn data(n: usize) -> NewPublication {
    NewPublication {
        data: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
        from: Some("tester".into()),
        ts: unix_millis(),
    }
}

async fn append(h: &dyn History, channel: &Channel, n: usize, key: Option<&str>) -> Appended {
    h.append(channel, data(n), retention_for(channel), key)
        .await
        .expect("append")
}

fn offsets(r: &Recovery) -> Vec<u64> {
    match r {
        Recovery::Recovered { publications, .. } => publications.iter().map(|p| p.offset).collect(),
        Recovery::Unrecoverable { .. } => panic!("unexpectedly unrecoverable: {r:?}"),
    }
}

async fn offsets_grow_by_one_and_recovery_follows_retention(s: Subject) {
    let h = &*s.history;
    let c = Channel::new("chat:room:500").unwrap();
    for n in 1..=500 {
        match append(h, &c, n, None).await {
            Appended::New(p) => assert_eq!(p.offset, n as u64),
            other => panic!("{other:?}"),
        }
    }
    let latest = h.position(&c).await.unwrap();
    assert_eq!(latest.offset, 500);
    let at = |offset| StreamPosition {
        offset,
        epoch: latest.epoch.clone(),
    };
    let all = h.read(&c, None, 1000).await.unwrap();
    assert_eq!(offsets(&all), (401..=500).collect::<Vec<_>>());
    if let Recovery::Recovered { publications, .. } = &all {
        assert_eq!(publications[0].data.get(), r#"{"n":401}"#);
        assert_eq!(publications[0].from.as_deref(), Some("tester"));
    }
    assert!(matches!(
        h.read(&c, Some(&at(350)), 1000).await.unwrap(),
        Recovery::Unrecoverable { .. }
    ));
    assert_eq!(
        offsets(&h.read(&c, Some(&at(450)), 1000).await.unwrap()),
        (451..=500).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&h.read(&c, Some(&at(400)), 1000).await.unwrap()),
        (401..=500).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&h.read(&c, Some(&at(450)), 10).await.unwrap()),
        (451..=460).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&h.read(&c, Some(&at(500)), 10).await.unwrap()),
        Vec::<u64>::new()
    );
    for bad in [
        StreamPosition {
            offset: 450,
            epoch: "another-epoch".into(),
        },
        at(501),
    ] {
        assert!(matches!(
            h.read(&c, Some(&bad), 1000).await.unwrap(),
            Recovery::Unrecoverable { .. }
        ));
    }
    s.done().await;
}

async fn an_empty_channel_and_its_first_publication(s: Subject) {
    let h = &*s.history;
    let c = Channel::new("fresh").unwrap();
    let empty = h.position(&c).await.unwrap();
    assert_eq!(
        empty,
        StreamPosition {
            offset: 0,
            epoch: Default::default()
        }
    );
    assert_eq!(
        offsets(&h.read(&c, Some(&empty), 100).await.unwrap()),
        Vec::<u64>::new()
    );
    append(h, &c, 1, None).await;
    append(h, &c, 2, None).await;
    // a client that subscribed before the first publication catches up
    assert_eq!(
        offsets(&h.read(&c, Some(&empty), 100).await.unwrap()),
        vec![1, 2]
    );
    let latest = h.position(&c).await.unwrap();
    assert_eq!(latest.offset, 2);
    assert!(!latest.epoch.is_empty());
    s.done().await;
}

async fn idempotency_keys_store_once(s: Subject) {
    let h = &*s.history;
    let c = Channel::new("orders").unwrap();
    let first = match append(h, &c, 1, Some("order-17")).await {
        Appended::New(p) => p,
        other => panic!("{other:?}"),
    };
    match append(h, &c, 1, Some("order-17")).await {
        Appended::Duplicate(position) => {
            assert_eq!(position.offset, first.offset);
            assert_eq!(position.epoch, first.epoch);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.position(&c).await.unwrap().offset,
        1,
        "nothing new stored"
    );
    // another key, or the same key on another channel, is new
    assert!(matches!(append(h, &c, 2, Some("order-18")).await, Appended::New(p) if p.offset == 2));
    let other = Channel::new("invoices").unwrap();
    assert!(matches!(
        append(h, &other, 1, Some("order-17")).await,
        Appended::New(_)
    ));
    s.done().await;
}

async fn namespaces_have_their_own_limits(s: Subject) {
    let h = &*s.history;
    let small = Channel::new("small:x").unwrap();
    for n in 1..=10 {
        append(h, &small, n, None).await;
    }
    assert_eq!(
        offsets(&h.read(&small, None, 100).await.unwrap()),
        vec![8, 9, 10]
    );

    let brief = Channel::new("brief:x").unwrap();
    append(h, &brief, 1, None).await;
    assert_eq!(offsets(&h.read(&brief, None, 100).await.unwrap()), vec![1]);
    // after its TTL the publication is gone
    eventually(WAIT, "the TTL applied", || async {
        match h.read(&brief, None, 100).await.unwrap() {
            Recovery::Recovered { publications, .. } => publications.is_empty(),
            Recovery::Unrecoverable { .. } => true,
        }
    })
    .await;
    s.done().await;
}

async fn concurrent_appends_never_fork_or_skip(s: Subject) {
    const WRITERS: usize = 3;
    const EACH: usize = 1000;
    let c = Channel::new("bulk:contended").unwrap();
    // For JetStream each writer is its own instance with its own NATS
    // connection: three routing replicas.
    let mut writers: Vec<Arc<dyn History>> = vec![s.history.clone()];
    for _ in 1..WRITERS {
        writers.push(match &s.reopen {
            Some(reopen) => reopen().await,
            None => s.history.clone(),
        });
    }
    let mut tasks = Vec::new();
    for (w, history) in writers.into_iter().enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut inner = Vec::new();
            for i in 0..EACH {
                let history = history.clone();
                let c = c.clone();
                inner.push(tokio::spawn(async move {
                    let retention = Retention {
                        size: 5000,
                        ttl: Duration::from_secs(3600),
                    };
                    match history
                        .append(&c, data(w * EACH + i), retention, None)
                        .await
                        .unwrap()
                    {
                        Appended::New(p) => p.offset,
                        other => panic!("{other:?}"),
                    }
                }));
            }
            let mut got = Vec::new();
            for t in inner {
                got.push(t.await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=(WRITERS * EACH) as u64).collect::<Vec<_>>());
    assert_eq!(
        s.history.position(&c).await.unwrap().offset,
        (WRITERS * EACH) as u64
    );
    s.done().await;
}

async fn a_new_instance_continues_the_offsets(s: Subject) {
    let c = Channel::new("durable").unwrap();
    for n in 1..=3 {
        append(&*s.history, &c, n, None).await;
    }
    let before = s.history.position(&c).await.unwrap();
    match &s.reopen {
        Some(reopen) => {
            let restarted = reopen().await;
            match append(&*restarted, &c, 4, None).await {
                Appended::New(p) => {
                    assert_eq!(p.offset, 4);
                    assert_eq!(p.epoch, before.epoch, "same history, same epoch");
                }
                other => panic!("{other:?}"),
            }
        }
        None => {
            // Memory history is lost with its process: a new one starts over
            // with another epoch, so clients are told they cannot recover.
            let restarted = MemoryHistory::new(Duration::from_secs(60));
            append(&restarted, &c, 1, None).await;
            let after = restarted.position(&c).await.unwrap();
            assert_ne!(after.epoch, before.epoch);
            assert!(matches!(
                restarted.read(&c, Some(&before), 10).await.unwrap(),
                Recovery::Unrecoverable { .. }
            ));
        }
    }
    s.done().await;
}

herald_testkit::suite!(
    memory_history: memory, jetstream_history: jetstream;
    [
        offsets_grow_by_one_and_recovery_follows_retention,
        an_empty_channel_and_its_first_publication,
        idempotency_keys_store_once,
        namespaces_have_their_own_limits,
        concurrent_appends_never_fork_or_skip,
        a_new_instance_continues_the_offsets,
    ]
);
