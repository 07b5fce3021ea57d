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

use herald_testkit::*;

fn token(env: &Env, user: &str) -> String {
    mint_token(env, user, "load:*", "")
}

/// Publishes `{n, pad}` to `channel`; answers the offset.
async fn publish(api: &Api, channel: &str, n: u64, pad: &str) -> u64 {
    let answer = api.publish(channel, json!({"n": n, "pad": pad})).await;
    answer["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("{answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_with_4001_and_nobody_else_notices() {
    // However slowly a busy machine lets the slow one read its backlog, the
    // edge waits for it to reach the close frame (the default is 30 s).
    let env = Env::new()
        .with("HERALD_CLIENT_QUEUE_BYTES", "262144")
        .with("HERALD_SLOW_CLOSE_TIMEOUT_SECS", "600");
    let herald = Herald::standalone(&env);
    let channel = "load:room";

    // The slow one: a tiny receive buffer, and after subscribing it never
    // reads again (until the end of the test).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(herald.addr).await.unwrap();
    // it also follows a channel with big publications, so its backlog
    // outgrows every buffer between the edge and it
    let mut slow = raw_ws_over(
        stream,
        &herald.ws(),
        &token(&env, "slow"),
        &[channel, "load:bulk"],
    )
    .await
    .unwrap();

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
    let api = herald.api();
    for n in 1..=MESSAGES {
        publish(&api, channel, n, &pad).await;
        if n % 10 == 0 {
            // 200 × 60 KiB = 12 MB for the slow client alone
            publish(&api, "load:bulk", n, &bulk).await;
        }
    }
    // The edge cuts the slow one once its queue and socket buffers are full;
    // as soon as it has, the slow one reads again and must find what was on
    // its way, then 4001. (The edge waits for it only so long.)
    let stats_of = herald.http();
    let slow_reader = tokio::spawn(async move {
        eventually(WAIT, "the slow client cut", || async {
            stats(&stats_of).await["slow_consumers"] == 1
        })
        .await;
        let mut saw_disconnect = false;
        let close = loop {
            match tokio::time::timeout(WAIT, slow.next()).await {
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
    let env = Env::new().with("HERALD_CONNECTION_RATE", "20");
    let herald = Herald::standalone(&env);
    let token = token(&env, "burst");
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
    let results: Vec<_> = within(
        WAIT,
        "every attempt admitted or refused",
        futures::future::join_all(attempts),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
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
    // told different moments, so they do not come back in one wave
    let moments: std::collections::BTreeSet<_> = refused.iter().map(|(_, r)| *r).collect();
    assert!(moments.len() >= 2, "every refusal said {moments:?}");

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
) -> Vec<u64> {
    let (mut client, _) = Client::connect(&edge_a, &token).await.unwrap();
    let sub = client.subscribe(channel).await.unwrap();
    subscribed.fetch_add(1, Ordering::AcqRel);
    let mut position = StreamPosition {
        offset: sub.offset,
        epoch: sub.epoch,
    };
    let mut got = Vec::new();
    loop {
        match client.next_event_within(WAIT).await.unwrap() {
            Event::Push(Push::Pub(p)) => {
                got.push(p.offset);
                position = StreamPosition {
                    offset: p.offset,
                    epoch: p.epoch,
                };
            }
            Event::Push(Push::Disconnect(d)) => {
                assert_eq!((d.code, d.reconnect), (4000, true));
                break;
            }
            _ => {}
        }
    }
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
        if let Event::Push(Push::Pub(p)) = client.next_event_within(WAIT).await.unwrap() {
            got.push(p.offset);
            last = p.offset;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_thousand_clients_to_another_edge_without_loss() {
    const CLIENTS: usize = 1000;
    const CHANNEL: &str = "load:drain";
    let env = Cluster::new()
        .with("HERALD_DRAIN_WINDOW_SECS", "3")
        .with("HERALD_CONNECTION_RATE", "5000")
        // the whole crowd comes from one address, loopback
        .with("HERALD_CONNECTION_RATE_PER_IP", "5000")
        .with("HERALD_MAX_CONNECTIONS_PER_IP", "0")
        .with("HERALD_MAX_CONNECTIONS_PER_USER", "2000");
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
    let publisher = {
        let (api, publishing, published) = (routing.api(), publishing.clone(), published.clone());
        tokio::spawn(async move {
            let mut n = 0;
            let mut last = 0;
            while publishing.load(Ordering::Acquire) {
                n += 1;
                last = publish(&api, CHANNEL, n, "").await;
                published.store(last, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last
        })
    };
    // the whole crowd is subscribed on edge A before the drain begins
    eventually(WAIT, "every client subscribed on edge A", || async {
        let n = subscribed.load(Ordering::Acquire);
        if n == CLIENTS {
            Ok(())
        } else {
            Err(format!("{n} subscribed"))
        }
    })
    .await;
    let status = edge_a
        .terminate(WAIT)
        .expect("edge A exits after its drain window");
    assert!(status.success(), "{status}");

    // every client is told to reconnect (`follow` checks it) and is back on
    // edge B
    eventually(WAIT, "every client back on edge B", || async {
        let n = edge_open_connections(&edge_b).await;
        if n >= CLIENTS {
            Ok(())
        } else {
            Err(format!("{n} connected"))
        }
    })
    .await;
    // publications keep coming after everyone is back, so the clients get
    // live ones on edge B too, not only the replay
    let back_at = published.load(Ordering::Acquire);
    eventually(WAIT, "20 publications after everyone is back", || async {
        published.load(Ordering::Acquire) >= back_at + 20
    })
    .await;
    publishing.store(false, Ordering::Release);
    let final_offset = publisher.await.unwrap();
    until.store(final_offset, Ordering::Release);

    for client in clients {
        let got = client.await.unwrap();
        let first = *got.first().expect("received something");
        let expected: Vec<u64> = (first..=final_offset).collect();
        assert_eq!(got, expected, "a gap or a duplicate across the drain");
    }
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
