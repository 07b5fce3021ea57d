//! The edge under pressure: a client that stops reading, a burst of new
//! connections, and a drain on SIGTERM with a thousand clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use herald_client::{Client, Event};
use herald_protocol::{Push, StreamPosition};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const SECRET: &str = "e2e-edge-limits-secret-0123456789";
const API_KEY: &str = "e2e-edge-limits-key";

fn token(env: &Env, user: &str) -> String {
    mint_token(env, user, "load:*", "")
}

async fn api_publish(http: &reqwest::Client, api: &str, channel: &str, n: u64, pad: &str) -> u64 {
    let answer: serde_json::Value = http
        .post(format!("{api}/api/publish"))
        .bearer_auth(API_KEY)
        .json(&json!({"channel": channel, "data": {"n": n, "pad": pad}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("{answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_with_4001_and_nobody_else_notices() {
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        ("HERALD_CLIENT_QUEUE_BYTES", "262144"),
    ]);
    let herald = Herald::standalone(&env);
    let channel = "load:room";

    // The slow one: a tiny receive buffer, and after subscribing it never
    // reads again (until the end of the test).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(herald.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(herald.ws(), stream)
        .await
        .unwrap();
    slow.send(Message::text(
        json!({"id":1,"connect":{"token": token(&env, "slow")}}).to_string(),
    ))
    .await
    .unwrap();
    slow.send(Message::text(
        json!({"id":2,"subscribe":{"channel": channel}}).to_string(),
    ))
    .await
    .unwrap();
    // it also follows a channel with big publications, so its backlog
    // outgrows every buffer between the edge and it
    slow.send(Message::text(
        json!({"id":3,"subscribe":{"channel": "load:bulk"}}).to_string(),
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        slow.next().await.unwrap().unwrap();
    }

    let mut normal = Vec::new();
    for i in 0..100 {
        let (client, _) = Client::connect(&herald.ws(), &token(&env, &format!("u{i}")))
            .await
            .unwrap();
        client.subscribe(channel).await.unwrap();
        normal.push(client);
    }
    let before = rss(herald.pid());

    const MESSAGES: u64 = 2000;
    let pad = "x".repeat(1024);
    let bulk = "y".repeat(60 * 1024);
    let http = http_client();
    for n in 1..=MESSAGES {
        api_publish(&http, &herald.http(), channel, n, &pad).await;
        if n % 10 == 0 {
            // 200 × 60 KiB = 12 MB for the slow client alone
            api_publish(&http, &herald.http(), "load:bulk", n, &bulk).await;
        }
    }
    // The edge cuts the slow one once its queue and socket buffers are full;
    // as soon as it has, the slow one reads again and must find what was on
    // its way, then 4001. (The edge waits for it only so long.)
    let stats_of = herald.http();
    let slow_reader = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while stats(&stats_of).await["slow_consumers"] != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the slow client was never cut"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut saw_disconnect = false;
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(20), slow.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if text.contains(r#""disconnect":{"code":4001"#) {
                        saw_disconnect = true;
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
                other => panic!("the slow client was not closed properly: {other:?}"),
            }
        };
        (saw_disconnect, close)
    });
    // every normal subscriber receives everything, in order
    let receivers = normal.into_iter().map(|mut client| {
        tokio::spawn(async move {
            for expected in 1..=MESSAGES {
                let p = client.next_publication().await.unwrap();
                assert_eq!(p.offset, expected);
            }
        })
    });
    for r in futures::future::join_all(receivers).await {
        r.unwrap();
    }
    let after = rss(herald.pid());
    // 14 MB went to the slow client's side; the edge holds at most its
    // bounds for it (256 KiB queue + socket buffers), not the backlog.
    assert!(
        after < before + 48 * 1024 * 1024,
        "edge memory grew from {before} to {after} bytes"
    );
    let (saw_disconnect, close) = slow_reader.await.unwrap();
    assert!(saw_disconnect, "no disconnect push before the close");
    assert_eq!(close, Some(4001));
}

#[tokio::test]
async fn a_burst_of_connections_beyond_the_rate_gets_503_quickly() {
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        ("HERALD_CONNECTION_RATE", "20"),
    ]);
    let herald = Herald::standalone(&env);
    let token = token(&env, "burst");
    let started = std::time::Instant::now();
    let attempts = (0..100).map(|_| {
        let url = herald.ws();
        let token = token.clone();
        tokio::spawn(async move {
            match tokio_tungstenite::connect_async(&url).await {
                Ok((ws, _)) => Ok(ws),
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let _ = token;
                    Err((response.status().as_u16(), retry_after))
                }
                Err(e) => panic!("{e}"),
            }
        })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let refused_in = started.elapsed();
    let (admitted, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let admitted: Vec<_> = admitted.into_iter().filter_map(Result::ok).collect();
    let refused: Vec<_> = refused.into_iter().filter_map(Result::err).collect();
    assert!(refused.len() >= 70, "{} refused", refused.len());
    assert!(admitted.len() >= 20, "{} admitted", admitted.len());
    assert!(
        refused
            .iter()
            .all(|(status, retry)| *status == 503 && retry.unwrap_or(0) >= 1)
    );
    assert!(
        refused_in < Duration::from_secs(5),
        "refusals took {refused_in:?}"
    );

    // the admitted ones work
    for mut ws in admitted.into_iter().take(20) {
        ws.send(Message::text(
            json!({"id":1,"connect":{"token": token}}).to_string(),
        ))
        .await
        .unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert!(reply.to_text().unwrap().contains(r#""ok""#), "{reply}");
    }
}

/// One client of the drain test: everything it received, by offset.
async fn follow(
    edge_a: String,
    edge_b: String,
    token: String,
    channel: &'static str,
    subscribed: Arc<AtomicUsize>,
    until: Arc<AtomicU64>,
) -> (Vec<u64>, std::time::Instant) {
    let (mut client, _) = Client::connect(&edge_a, &token).await.unwrap();
    let sub = client.subscribe(channel).await.unwrap();
    subscribed.fetch_add(1, Ordering::AcqRel);
    let mut position = StreamPosition {
        offset: sub.offset,
        epoch: sub.epoch,
    };
    let mut got = Vec::new();
    let told_at = loop {
        match client
            .next_event_within(Duration::from_secs(60))
            .await
            .unwrap()
        {
            Event::Push(Push::Pub(p)) => {
                got.push(p.offset);
                position = StreamPosition {
                    offset: p.offset,
                    epoch: p.epoch,
                };
            }
            Event::Push(Push::Disconnect(d)) => {
                assert_eq!((d.code, d.reconnect), (4000, true));
                break std::time::Instant::now();
            }
            _ => {}
        }
    };
    let (mut client, _) = Client::connect(&edge_b, &token).await.unwrap();
    let resumed = client.subscribe_since(channel, &position).await.unwrap();
    assert_eq!(resumed.recovered, Some(true));
    got.extend(
        resumed
            .publications
            .unwrap_or_default()
            .iter()
            .map(|p| p.offset),
    );
    let mut last = got.last().copied().unwrap_or(position.offset);
    while until.load(Ordering::Acquire) == 0 || last < until.load(Ordering::Acquire) {
        if let Event::Push(Push::Pub(p)) = client
            .next_event_within(Duration::from_secs(60))
            .await
            .unwrap()
        {
            got.push(p.offset);
            last = p.offset;
        }
    }
    (got, told_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_thousand_clients_to_another_edge_without_loss() {
    const CLIENTS: usize = 1000;
    const CHANNEL: &str = "load:drain";
    let prefix = unique_prefix();
    let env = Env::new(&[
        ("HERALD_JWT_SECRET", SECRET),
        ("HERALD_API_KEYS", API_KEY),
        ("HERALD_NATS_URL", &nats_url()),
        ("HERALD_SUBJECT_PREFIX", &prefix),
        ("HERALD_HISTORY_STORAGE", "memory"),
        ("HERALD_DRAIN_WINDOW_SECS", "3"),
        ("HERALD_CONNECTION_RATE", "5000"),
        // the whole crowd comes from one address, loopback
        ("HERALD_CONNECTION_RATE_PER_IP", "5000"),
        ("HERALD_MAX_CONNECTIONS_PER_IP", "0"),
        ("HERALD_MAX_CONNECTIONS_PER_USER", "2000"),
    ]);
    let _cleanup = StreamCleanup(prefix);
    let routing = Herald::routing("routing", &env);
    let mut edge_a = Herald::edge("edge-a", &env);
    let edge_b = Herald::edge("edge-b", &env);
    let token = token(&env, "crowd");

    let until = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(follow(
            edge_a.ws(),
            edge_b.ws(),
            token.clone(),
            CHANNEL,
            subscribed.clone(),
            until.clone(),
        )));
    }
    // a publisher that never pauses
    let publishing = Arc::new(AtomicBool::new(true));
    let published = Arc::new(AtomicU64::new(0));
    let http = http_client();
    let publisher = {
        let (http, api, publishing, published) = (
            http.clone(),
            routing.http(),
            publishing.clone(),
            published.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            let mut last = 0;
            while publishing.load(Ordering::Acquire) {
                n += 1;
                last = api_publish(&http, &api, CHANNEL, n, "").await;
                published.store(last, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last
        })
    };
    // the whole crowd is subscribed on edge A before the drain begins
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while subscribed.load(Ordering::Acquire) < CLIENTS {
        assert!(
            std::time::Instant::now() < deadline,
            "clients did not all subscribe"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sigterm_at = std::time::Instant::now();
    let status = edge_a
        .terminate(Duration::from_secs(20))
        .expect("edge A exits after its drain window");
    assert!(status.success(), "{status}");

    // wait until every client is back on edge B
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while edge_open_connections(&edge_b).await < CLIENTS {
        assert!(
            std::time::Instant::now() < deadline,
            "clients did not all reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // publications keep coming after everyone is back, so the clients get
    // live ones on edge B too, not only the replay
    let back_at = published.load(Ordering::Acquire);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while published.load(Ordering::Acquire) < back_at + 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the publisher stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publishing.store(false, Ordering::Release);
    let final_offset = publisher.await.unwrap();
    until.store(final_offset, Ordering::Release);

    let mut told = Vec::new();
    for client in clients {
        let (got, told_at) = client.await.unwrap();
        let first = *got.first().expect("received something");
        let expected: Vec<u64> = (first..=final_offset).collect();
        assert_eq!(got, expected, "a gap or a duplicate across the drain");
        told.push(told_at.duration_since(sigterm_at));
    }
    told.sort();
    let (earliest, latest) = (told[0], told[told.len() - 1]);
    assert!(
        latest < Duration::from_secs(3) + Duration::from_millis(1500),
        "told to reconnect within the 3 s window, the last after {latest:?}"
    );
    // spread over the window, not all at once
    assert!(
        latest - earliest > Duration::from_secs(1),
        "no spread: {earliest:?}..{latest:?}"
    );
}

/// An edge's `/stats` (`base`: its HTTP URL).
async fn stats(base: &str) -> serde_json::Value {
    match http_client().get(format!("{base}/stats")).send().await {
        Ok(response) => response.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Client connections an edge holds.
async fn edge_open_connections(edge: &Herald) -> usize {
    stats(&edge.http()).await["connections"]
        .as_u64()
        .unwrap_or(0) as usize
}
