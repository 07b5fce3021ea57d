//! What NATS does in production, done to the JetStream adapters: streams
//! lost (a server restarted without its data, `nats stream rm`), streams an
//! operator configured otherwise, and a JetStream that stops answering.
//! Nothing here restarts the adapter: it must cope while running.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use herald_core::history::{
    Appended, History, HistoryError, JetStreamHistory, NewPublication, Recovery, Retention, Storage,
};
use herald_core::streams::{OnDrift, StreamSettings};
use herald_core::subjects::Subjects;
use herald_core::work_queue::{JetStreamWorkQueue, PushJob, WorkQueue};
use herald_protocol::channel::Channel;
use herald_testkit::{Prefix, PrivateNats, WAIT, eventually, nats_bus_at, nats_url, within};
use serde_json::value::RawValue;

fn publication(n: u64) -> NewPublication {
    NewPublication {
        data: RawValue::from_string(format!("{{\"n\":{n}}}")).expect("JSON"),
        from: None,
        ts: 0,
    }
}

const RETENTION: Retention = Retention {
    size: 100,
    ttl: Duration::from_secs(600),
};

async fn client(url: &str) -> async_nats::Client {
    nats_bus_at(url, "jetstream-faults").await.client().clone()
}

async fn open_history(
    url: &str,
    prefix: &str,
    settings: StreamSettings,
) -> Result<JetStreamHistory, HistoryError> {
    JetStreamHistory::open(
        client(url).await,
        Subjects::new(prefix),
        &BTreeMap::new(),
        Duration::from_secs(60),
        Storage::Memory,
        settings,
    )
    .await
}

fn appended(result: Result<Appended, HistoryError>) -> herald_protocol::Publication {
    match result {
        Ok(Appended::New(p)) => p,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_lost_history_stream_is_created_again_on_use_and_the_loss_is_told_by_a_new_epoch() {
    let prefix = Prefix::new();
    let history = open_history(&nats_url(), &prefix, StreamSettings::default())
        .await
        .expect("open");
    let channel = Channel::new("room").expect("channel");
    let mut before = None;
    for n in 1..=3 {
        before = Some(appended(
            history
                .append(&channel, publication(n), RETENTION, None)
                .await,
        ));
    }
    let before = before.expect("appended");
    assert_eq!(before.offset, 3);

    // the server loses the stream (as a restart without its data does)
    let js = jetstream::new(client(&nats_url()).await);
    for name in history.stream_names() {
        js.delete_stream(&name).await.expect("delete");
    }

    // reads and appends go on, without reopening anything
    let after = appended(
        history
            .append(&channel, publication(4), RETENTION, None)
            .await,
    );
    assert_eq!(after.offset, 1, "a new stream starts again at 1");
    assert_ne!(
        after.epoch, before.epoch,
        "in a new epoch: the loss is told"
    );
    let since = herald_protocol::StreamPosition::new(before.offset, before.epoch.as_str());
    match history
        .read(&channel, Some(&since), 100)
        .await
        .expect("read")
    {
        Recovery::Unrecoverable { latest } => assert_eq!(latest.epoch, after.epoch),
        other => panic!("a resume from the lost epoch is told it lost: {other:?}"),
    }
    assert_eq!(
        history.streams().map(|s| s.recreated()).sum::<u64>(),
        1,
        "created again once"
    );

    // also when the first thing to find it gone is a read
    for name in history.stream_names() {
        js.delete_stream(&name).await.expect("delete");
    }
    // (rechecks are spaced out; a read right after another may fail)
    let position = eventually(WAIT, "the position readable again", || async {
        history.position(&channel).await
    })
    .await;
    assert_eq!(position.offset, 0, "the new stream is empty");
}

#[tokio::test]
async fn a_stream_with_other_settings_is_reported_and_left_alone_unless_updates_are_asked_for() {
    let prefix = Prefix::new();
    let first = open_history(&nats_url(), &prefix, StreamSettings::default())
        .await
        .expect("open");
    let name = first.stream_names().pop().expect("a stream");
    assert_eq!(first.streams().find_map(|s| s.drift()), None);
    // an operator changes the stream by hand
    let js = jetstream::new(client(&nats_url()).await);
    let mut info = js.get_stream(&name).await.expect("stream");
    let mut config = info.info().await.expect("info").config.clone();
    config.max_messages_per_subject = 7;
    js.update_stream(&config).await.expect("update by hand");

    let reporting = open_history(&nats_url(), &prefix, StreamSettings::default())
        .await
        .expect("open over a changed stream");
    let drift = reporting
        .streams()
        .find_map(|s| s.drift())
        .expect("the difference is reported");
    assert!(drift.contains("max_msgs_per_subject 7"), "{drift}");
    let kept = js.get_stream(&name).await.expect("stream");
    assert_eq!(
        kept.cached_info().config.max_messages_per_subject,
        7,
        "left as the operator set it"
    );

    let updating = open_history(
        &nats_url(),
        &prefix,
        StreamSettings {
            on_drift: OnDrift::Update,
            ..StreamSettings::default()
        },
    )
    .await
    .expect("open and update");
    assert_eq!(updating.streams().find_map(|s| s.drift()), None);
    let updated = js.get_stream(&name).await.expect("stream");
    assert_ne!(updated.cached_info().config.max_messages_per_subject, 7);

    // a replica count this one-node server cannot give is a clear error,
    // and a refusal, not something to ask again for START_WITHIN (60 s)
    let r3 = format!("{prefix}r3");
    let refused = within(
        herald_core::streams::START_WITHIN / 2,
        "the refusal, before the start-up retries would end",
        open_history(
            &nats_url(),
            &r3,
            StreamSettings {
                replicas: 3,
                ..StreamSettings::default()
            },
        ),
    )
    .await;
    assert!(
        matches!(&refused, Err(HistoryError::Unavailable(why)) if why.contains("stream") && !why.contains("timed out")),
        "{:?}",
        refused.err()
    );
}

#[tokio::test]
async fn a_lost_queue_stream_is_created_again_for_push_and_take() {
    let prefix = Prefix::new();
    let queue = JetStreamWorkQueue::open(
        client(&nats_url()).await,
        &Subjects::new(prefix.as_str()),
        Duration::from_secs(30),
        StreamSettings::default(),
    )
    .await
    .expect("open");
    let job = |id: &str| PushJob {
        id: id.to_owned(),
        user: "alice".into(),
        notification: None,
        data: RawValue::from_string("{}".into()).expect("JSON"),
        channel: None,
        created_ms: 0,
        device_id: None,
        summary: false,
        summarizes: Vec::new(),
    };
    queue.push(&job("a")).await.expect("push");
    assert_eq!(queue.backlog().await.expect("backlog"), 1);
    let taken = queue.take(WAIT).await.expect("take").expect("a job");
    assert_eq!(taken.job.id, "a");
    taken.ack().await;
    // an acknowledged job leaves the backlog (the ack is asynchronous)
    eventually(WAIT, "the backlog empty", || async {
        queue.backlog().await.expect("backlog") == 0
    })
    .await;

    let js = jetstream::new(client(&nats_url()).await);
    js.delete_stream(queue.stream_name()).await.expect("delete");

    queue.push(&job("b")).await.expect("push after the loss");
    // the consumer was lost with the stream: take fails until it is made
    // again, then gives the job
    let taken = eventually(WAIT, "the job pushed after the loss taken", || async {
        queue.take(Duration::from_secs(1)).await.ok().flatten()
    })
    .await;
    assert_eq!(taken.job.id, "b");
    taken.ack().await;
}

#[tokio::test]
async fn appends_are_answered_while_jetstream_is_frozen_and_an_unknown_outcome_stores_once_on_retry()
 {
    let nats = PrivateNats::start().await;
    let history = std::sync::Arc::new(
        open_history(&nats.url(), "frozen", StreamSettings::default())
            .await
            .expect("open")
            .with_append_timeout(Duration::from_millis(500)),
    );
    let channel = Channel::new("room").expect("channel");
    appended(
        history
            .append(&channel, publication(0), RETENTION, None)
            .await,
    );

    // JetStream stops answering (the process is frozen: sockets stay open)
    nats.signal("-STOP");
    let calls: Vec<_> = (1..=8u64)
        .map(|n| {
            let history = history.clone();
            let channel = channel.clone();
            let key = format!("k{n}");
            tokio::spawn(async move {
                let result = history
                    .append(&channel, publication(n), RETENTION, Some(&key))
                    .await;
                (key, result)
            })
        })
        .collect();
    // every caller is answered — none is held behind another's dead append
    let answers = within(
        WAIT,
        "every append answered while JetStream is frozen",
        futures::future::join_all(calls),
    )
    .await;
    let mut unknown = Vec::new();
    for answer in answers {
        let (key, result) = answer.expect("task");
        match result {
            Err(HistoryError::OutcomeUnknown {
                key: retry_with, ..
            }) => {
                assert_eq!(retry_with, key, "the caller's own key to retry with");
                unknown.push(key);
            }
            Err(HistoryError::Unavailable(_)) => {} // never sent: nothing stored
            Ok(other) => panic!("stored while frozen? {other:?}"),
        }
    }
    assert!(
        !unknown.is_empty(),
        "the append that was sent is told: outcome unknown"
    );

    nats.signal("-CONT");
    // each unknown one, sent again with its key, is stored exactly once
    for key in &unknown {
        let n: u64 = key[1..].parse().expect("n");
        eventually(WAIT, &format!("{key} stored on retry"), || async {
            history
                .append(&channel, publication(n), RETENTION, Some(key))
                .await
        })
        .await;
    }
    let Recovery::Recovered { publications, .. } =
        history.read(&channel, None, 100).await.expect("read")
    else {
        panic!("readable")
    };
    let mut seen: Vec<u64> = publications
        .iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p.data.get()).expect("JSON")["n"]
                .as_u64()
                .expect("n")
        })
        .collect();
    let offsets: Vec<u64> = publications.iter().map(|p| p.offset).collect();
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "no gap, no fork"
    );
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "nothing stored twice: {seen:?}");
    for key in &unknown {
        let n: u64 = key[1..].parse().expect("n");
        assert!(seen.contains(&n), "{key} stored");
    }
}
