//! The hub's delivery guarantees, with routing and its history in the same
//! process over the in-memory bus: one bus subscription per channel, the
//! same bytes for every subscriber, strict offset order, gaps filled from
//! history, and join positions that make history + live seamless.

use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, Headers};
use herald_core::history::{Appended, History, NewPublication, Retention};
use herald_core::route::live_message;
use herald_edge::{ConnId, Hub, Inbox, Outbox};
use herald_protocol::channel::Channel;
use herald_protocol::{Publication, Push, ServerFrame, decode_server_frame};
use herald_routing::PublishRequest;
use herald_testkit::{Server, WAIT, eventually, within};
use serde_json::value::RawValue;

/// Routing and its history over the memory bus (an edge beside them, as
/// standalone has), and a hub of the test's own on that bus.
struct World {
    server: Server,
    hub: Hub,
}

impl std::ops::Deref for World {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

async fn world() -> World {
    let server = Server::start(|_| {}).await;
    World {
        hub: server.hub(),
        server,
    }
}

fn data(n: u64) -> Box<RawValue> {
    RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap()
}

async fn publish(w: &World, channel: &Channel, n: u64) -> u64 {
    w.routing
        .publish(PublishRequest {
            channel: channel.clone(),
            data: data(n),
            idempotency_key: None,
            notify_offline: vec![],
            notification: None,
        })
        .await
        .unwrap()
        .offset
}

/// Stores a publication without delivering it live (a lost live message).
async fn store_only(w: &World, channel: &Channel, n: u64) -> Publication {
    let retention = Retention {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    let new = NewPublication {
        data: data(n),
        from: None,
        ts: 1,
    };
    match w
        .history
        .append(channel, new, retention, None)
        .await
        .unwrap()
    {
        Appended::New(p) => p,
        other => panic!("{other:?}"),
    }
}

async fn offsets(inbox: &mut Inbox, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..count {
        let d = within(WAIT, "a delivery", inbox.recv())
            .await
            .expect("open");
        match decode_server_frame(d.frame.as_str()).unwrap() {
            ServerFrame::Push(Push::Pub(p)) => {
                assert_eq!(Some(p.offset), d.position.as_ref().map(|p| p.offset));
                got.push(p.offset)
            }
            other => panic!("{other:?}"),
        }
    }
    got
}

/// Asserts nothing more was delivered: publishes a marker (`n`, the
/// channel's next offset) and checks it is the next delivery.
async fn nothing_more_before(w: &World, inbox: &mut Inbox, channel: &Channel, n: u64) {
    publish(w, channel, n).await;
    assert_eq!(offsets(inbox, 1).await, [n], "unexpected extra delivery");
}

#[tokio::test]
async fn one_bus_subscription_per_channel_and_the_same_bytes_for_everyone() {
    let w = world().await;
    let channel = Channel::new("chat:1").unwrap();
    let before = w.bus.subscription_count();
    let (a, mut inbox_a, _) = Outbox::new(64, 1 << 20);
    let (b, mut inbox_b, _) = Outbox::new(64, 1 << 20);
    w.hub.subscribe(&channel, ConnId(1), a).await.unwrap();
    w.hub.subscribe(&channel, ConnId(2), b).await.unwrap();
    assert_eq!(w.bus.subscription_count(), before + 1);

    publish(&w, &channel, 1).await;
    let da = inbox_a.recv().await.unwrap();
    let db = inbox_b.recv().await.unwrap();
    assert_eq!(
        da.frame.as_str().as_ptr(),
        db.frame.as_str().as_ptr(),
        "encoded once, shared by every subscriber"
    );

    w.hub.unsubscribe(&channel, ConnId(1));
    assert_eq!(w.bus.subscription_count(), before + 1);
    w.hub.unsubscribe(&channel, ConnId(2));
    eventually(WAIT, "the bus subscription released", || async {
        w.bus.subscription_count() == before
    })
    .await;
    assert_eq!(w.hub.channel_count(), 0);
}

#[tokio::test]
async fn out_of_order_live_messages_are_delivered_in_order() {
    let w = world().await;
    let channel = Channel::new("chat:order").unwrap();
    let (outbox, mut inbox, _) = Outbox::new(64, 1 << 20);
    w.hub.subscribe(&channel, ConnId(1), outbox).await.unwrap();
    // Two routing replicas' live messages crossing on the way.
    let first = store_only(&w, &channel, 1).await;
    let second = store_only(&w, &channel, 2).await;
    for p in [&second, &first] {
        let (headers, payload) = live_message(p);
        w.bus
            .publish(&w.subjects.live(&channel), headers, payload)
            .await
            .unwrap();
    }
    assert_eq!(offsets(&mut inbox, 2).await, [1, 2]);
    nothing_more_before(&w, &mut inbox, &channel, 3).await;
}

#[tokio::test]
async fn a_lost_live_message_is_filled_from_history() {
    let w = world().await;
    let channel = Channel::new("chat:gap").unwrap();
    let (outbox, mut inbox, _) = Outbox::new(64, 1 << 20);
    w.hub.subscribe(&channel, ConnId(1), outbox).await.unwrap();
    publish(&w, &channel, 1).await;
    store_only(&w, &channel, 2).await; // its live message never arrives
    store_only(&w, &channel, 3).await;
    publish(&w, &channel, 4).await;
    assert_eq!(offsets(&mut inbox, 4).await, [1, 2, 3, 4]);
    // duplicates (a late live copy of 3) are dropped
    let late = w.history.read(&channel, None, 10).await.unwrap();
    if let herald_core::history::Recovery::Recovered { publications, .. } = late {
        let (headers, payload) = live_message(&publications[2]);
        w.bus
            .publish(&w.subjects.live(&channel), headers, payload)
            .await
            .unwrap();
    }
    nothing_more_before(&w, &mut inbox, &channel, 5).await;
}

#[tokio::test]
async fn a_joiner_learns_the_position_it_joined_at() {
    let w = world().await;
    let channel = Channel::new("chat:join").unwrap();
    let (first, mut first_inbox, _) = Outbox::new(64, 1 << 20);
    let at = w
        .hub
        .subscribe(&channel, ConnId(1), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((at.offset, at.epoch.as_str()), (0, ""));
    for n in 1..=5 {
        publish(&w, &channel, n).await;
    }
    assert_eq!(offsets(&mut first_inbox, 5).await, [1, 2, 3, 4, 5]);

    let (second, mut second_inbox, _) = Outbox::new(64, 1 << 20);
    let joined = w
        .hub
        .subscribe(&channel, ConnId(2), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(joined.offset, 5, "everything up to here comes from history");
    publish(&w, &channel, 6).await;
    assert_eq!(
        offsets(&mut second_inbox, 1).await,
        [6],
        "and only later ones live"
    );
    nothing_more_before(&w, &mut second_inbox, &channel, 7).await;
}

#[tokio::test]
async fn a_full_outbox_signals_overflow_without_blocking_others() {
    let w = world().await;
    let channel = Channel::new("c").unwrap();
    let (slow, _slow_inbox, slow_overflow) = Outbox::new(2, 1 << 20);
    let (fast, mut fast_inbox, fast_overflow) = Outbox::new(64, 1 << 20);
    w.hub.subscribe(&channel, ConnId(1), slow).await.unwrap();
    w.hub.subscribe(&channel, ConnId(2), fast).await.unwrap();
    for n in 1..=10 {
        publish(&w, &channel, n).await;
    }
    assert_eq!(
        offsets(&mut fast_inbox, 10).await,
        (1..=10).collect::<Vec<_>>()
    );
    assert!(slow_overflow.is_triggered());
    assert!(!fast_overflow.is_triggered());
}

#[tokio::test]
async fn ephemeral_events_pass_through_unordered() {
    let w = world().await;
    let channel = Channel::new("chat:typing").unwrap();
    let (outbox, mut inbox, _) = Outbox::new(64, 1 << 20);
    w.hub.subscribe(&channel, ConnId(1), outbox).await.unwrap();
    w.bus
        .publish(
            &w.subjects.live(&channel),
            Headers::new().with("Herald-Kind", "typing"),
            Bytes::from_static(br#"{"typing":{"channel":"chat:typing","user":"bob"}}"#),
        )
        .await
        .unwrap();
    let d = inbox.recv().await.unwrap();
    assert_eq!(d.kind.name(), "typing");
    assert_eq!(d.body(), r#"{"channel":"chat:typing","user":"bob"}"#);
    assert!(d.position.is_none());
}
