//! One behavioural suite for the `Bus` seam, run against both adapters: the
//! in-memory bus and a real NATS server (`HERALD_TEST_NATS_URL`, default the
//! local one). Every test uses its own subject prefix, so runs can overlap.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError, Headers, MemoryBus, NatsBus, Subscription, respond};
use herald_testkit::{WAIT, eventually, free_port, nats_bus, nats_url, unique_prefix, within};

async fn memory() -> Arc<dyn Bus> {
    Arc::new(MemoryBus::new())
}

async fn nats() -> Arc<dyn Bus> {
    Arc::new(nats_bus("bus-suite").await)
}

/// The next message, failing the test if none arrives in time.
async fn recv(sub: &mut Subscription) -> herald_core::bus::Message {
    within(WAIT, "a message", sub.next())
        .await
        .expect("subscription open")
}

/// Asserts nothing more arrives: publishes a marker on `marker_subject`
/// (which `sub` also receives) and checks the marker is the next message.
async fn assert_next_is_marker(bus: &dyn Bus, sub: &mut Subscription, marker_subject: &str) {
    bus.publish(
        marker_subject,
        Headers::new(),
        Bytes::from_static(b"marker"),
    )
    .await
    .unwrap();
    let m = recv(sub).await;
    assert_eq!(m.payload, "marker", "unexpected message on {}", m.subject);
}

async fn exact_subjects(bus: Arc<dyn Bus>) {
    let p = unique_prefix();
    let mut sub = bus.subscribe(&format!("{p}.a.b")).await.unwrap();
    bus.publish(
        &format!("{p}.a.c"),
        Headers::new(),
        Bytes::from_static(b"no"),
    )
    .await
    .unwrap();
    bus.publish(
        &format!("{p}.a.b.c"),
        Headers::new(),
        Bytes::from_static(b"no"),
    )
    .await
    .unwrap();
    bus.publish(
        &format!("{p}.a.b"),
        Headers::new().with("Herald-Offset", "7"),
        Bytes::from_static(b"yes"),
    )
    .await
    .unwrap();
    let m = recv(&mut sub).await;
    assert_eq!(m.subject, format!("{p}.a.b"));
    assert_eq!(m.payload, "yes");
    assert_eq!(m.headers.get("Herald-Offset"), Some("7"));
    assert_next_is_marker(&*bus, &mut sub, &format!("{p}.a.b")).await;
}

async fn star_wildcard(bus: Arc<dyn Bus>) {
    let p = unique_prefix();
    let mut sub = bus.subscribe(&format!("{p}.*.x")).await.unwrap();
    for s in ["1.x", "1.y", "1.2.x", "2.x", "x"] {
        bus.publish(&format!("{p}.{s}"), Headers::new(), Bytes::from(s))
            .await
            .unwrap();
    }
    assert_eq!(recv(&mut sub).await.payload, "1.x");
    assert_eq!(recv(&mut sub).await.payload, "2.x");
    assert_next_is_marker(&*bus, &mut sub, &format!("{p}.m.x")).await;
}

async fn tail_wildcard(bus: Arc<dyn Bus>) {
    let p = unique_prefix();
    let mut sub = bus.subscribe(&format!("{p}.live.>")).await.unwrap();
    for s in ["live", "live.a", "other.a", "live.a.b.c"] {
        bus.publish(&format!("{p}.{s}"), Headers::new(), Bytes::from(s))
            .await
            .unwrap();
    }
    assert_eq!(recv(&mut sub).await.payload, "live.a");
    assert_eq!(recv(&mut sub).await.payload, "live.a.b.c");
    assert_next_is_marker(&*bus, &mut sub, &format!("{p}.live.m")).await;
}

async fn queue_groups_deliver_each_message_to_one_member(bus: Arc<dyn Bus>) {
    let p = unique_prefix();
    let subject = format!("{p}.jobs");
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(bus.queue_subscribe(&subject, "workers").await.unwrap());
    }
    let mut watcher = bus.subscribe(&subject).await.unwrap();
    const N: usize = 300;
    for i in 0..N {
        bus.publish(&subject, Headers::new(), Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    for _ in 0..N {
        recv(&mut watcher).await;
    }
    bus.flush().await.unwrap();
    let mut seen = HashSet::new();
    let mut per_member = Vec::new();
    within(WAIT, "every message at a member", async {
        while seen.len() < N {
            // each member in turn, briefly: whoever has the next one
            for (i, m) in members.iter_mut().enumerate() {
                if let Ok(Some(msg)) =
                    tokio::time::timeout(Duration::from_millis(20), m.next()).await
                {
                    assert!(seen.insert(msg.payload.clone()), "delivered twice");
                    per_member.push(i);
                }
            }
        }
    })
    .await;
    assert_eq!(seen.len(), N, "every message reaches exactly one member");
    for i in 0..3 {
        assert!(
            per_member.contains(&i),
            "member {i} got nothing: load is not spread"
        );
    }
}

async fn request_reply_with_timeout(bus: Arc<dyn Bus>) {
    let p = unique_prefix();
    let subject = format!("{p}.echo");
    let mut service = bus.queue_subscribe(&subject, "svc").await.unwrap();
    let responder = {
        let bus = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = service.next().await {
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(&m.payload);
                respond(&*bus, &m, Bytes::from(answer)).await.unwrap();
            }
        })
    };
    let answer = bus
        .request(&subject, Headers::new(), Bytes::from_static(b"hi"), WAIT)
        .await
        .unwrap();
    assert_eq!(answer.payload, "echo:hi");

    // nobody listening: a distinct error, not the timeout (so it did not
    // wait for it)
    let err = bus
        .request(&format!("{p}.nobody"), Headers::new(), Bytes::new(), WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::NoResponders(_)), "{err:?}");

    // a listener that never answers: timeout after the time asked for
    let _silent = bus.subscribe(&format!("{p}.silent")).await.unwrap();
    bus.flush().await.unwrap();
    let started = std::time::Instant::now();
    let err = within(
        WAIT,
        "the request to time out",
        bus.request(
            &format!("{p}.silent"),
            Headers::new(),
            Bytes::new(),
            Duration::from_millis(300),
        ),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BusError::Timeout(_)), "{err:?}");
    // not before the time asked for (a lower bound: a busy machine only
    // makes it later)
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "timed out after {took:?}"
    );
    responder.abort();
}

async fn unsubscribe_and_drop_stop_delivery(bus: Arc<dyn Bus>) {
    let p = unique_prefix();
    let subject = format!("{p}.q");
    let a = bus.queue_subscribe(&subject, "g").await.unwrap();
    let mut b = bus.queue_subscribe(&subject, "g").await.unwrap();
    let c = bus.queue_subscribe(&subject, "g").await.unwrap();
    a.unsubscribe();
    drop(c);
    bus.flush().await.unwrap();
    // NATS processes the UNSUB asynchronously; once a request finds only `b`
    // the server has caught up. Wait for that with a deadline.
    let ping = format!("{p}.ping");
    let mut probe = bus.subscribe(&ping).await.unwrap();
    within(WAIT, "every message of a burst at b alone", async {
        for round in 0.. {
            bus.publish(&ping, Headers::new(), Bytes::new())
                .await
                .unwrap();
            recv(&mut probe).await;
            // a and c are gone once every one of a burst lands on b
            const N: usize = 50;
            for i in 0..N {
                bus.publish(
                    &subject,
                    Headers::new(),
                    Bytes::from(format!("{round}.{i}")),
                )
                .await
                .unwrap();
            }
            // (a burst of an earlier round that came late is not counted)
            let mut got = 0;
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), b.next()).await
            {
                got += usize::from(m.payload.starts_with(format!("{round}.").as_bytes()));
            }
            if got == N {
                break;
            }
        }
    })
    .await;

    // with the last subscriber dropped, the subject has no interest at all
    drop(b);
    bus.flush().await.unwrap();
    eventually(WAIT, "no interest once every member is gone", || async {
        match bus
            .request(
                &subject,
                Headers::new(),
                Bytes::new(),
                Duration::from_millis(200),
            )
            .await
        {
            Err(BusError::NoResponders(_)) => Ok(()),
            other => Err(format!("still delivered after drop: {other:?}")),
        }
    })
    .await;
}

async fn invalid_subjects_are_refused(bus: Arc<dyn Bus>) {
    for bad in ["", "a..b", "a b", "a.*"] {
        let err = bus
            .publish(bad, Headers::new(), Bytes::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, BusError::InvalidSubject(_)),
            "{bad:?}: {err:?}"
        );
    }
    assert!(matches!(
        bus.subscribe("a.>.b").await,
        Err(BusError::InvalidSubject(_))
    ));
}

herald_testkit::suite!(
    memory_bus: memory, nats_bus: nats;
    [
        exact_subjects,
        star_wildcard,
        tail_wildcard,
        queue_groups_deliver_each_message_to_one_member,
        request_reply_with_timeout,
        unsubscribe_and_drop_stop_delivery,
        invalid_subjects_are_refused,
    ]
);

#[tokio::test]
async fn a_seed_list_connects_while_its_first_nodes_are_down() {
    // Ports nothing listens on: taken and released, so refused at once.
    let down: Vec<String> = (0..2)
        .map(|_| format!("nats://127.0.0.1:{}", free_port()))
        .collect();
    let seeds = format!("{}, {},{}", down[0], down[1], nats_url());
    let bus = NatsBus::connect(&seeds, "seed-list", Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{seeds}: {e}"));
    let mut sub = bus.subscribe("seeds.test").await.expect("subscribe");
    bus.publish("seeds.test", Headers::new(), Bytes::from_static(b"up"))
        .await
        .expect("publish");
    let got = recv(&mut sub).await;
    assert_eq!(got.payload, Bytes::from_static(b"up"));

    let none = NatsBus::connect(&down.join(","), "seed-list", Duration::from_secs(2)).await;
    assert!(
        matches!(none, Err(BusError::Connection(_))),
        "no seed up: a clear error"
    );
    for bad in ["", " , ", "nats://host:notaport"] {
        let refused = NatsBus::connect(bad, "seed-list", Duration::from_secs(2)).await;
        assert!(matches!(refused, Err(BusError::Connection(_))), "{bad:?}");
    }
}
