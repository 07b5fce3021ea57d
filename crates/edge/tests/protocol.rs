//! Client protocol v1 over WebSocket, end to end in one process: an edge
//! and routing joined by the in-memory bus (the standalone wiring), driven
//! by the Rust client. What every transport shares is in `connection.rs`.

use std::time::Duration;

use base64::Engine;
use herald_client::{Client, ClientError, Event, Options};
use herald_core::auth::{JwtAlgorithm, TokenSigner, unix_now};
use herald_protocol::{ErrorCode, Push, StreamPosition};
use serde_json::json;

use herald_testkit::{Server, WAIT, eventually, token};

fn alice() -> String {
    token("alice", &["chat:*"], &["chat:*"], 600)
}

async fn connected(server: &Server) -> Client {
    Client::connect(&server.ws, &alice()).await.unwrap().0
}

fn server_error(result: Result<impl std::fmt::Debug, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Server(e)) => (e.code, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_subscribe_publish_receive() {
    let server = Server::start(|_| {}).await;
    let (mut client, ok) = Client::connect(&server.ws, &alice()).await.unwrap();
    assert_eq!(ok.user, "alice");
    assert_eq!(ok.ping_interval, 25);
    assert_eq!(client.protocol.as_deref(), Some("herald.v1.json"));

    let sub = client.subscribe("chat:room:1").await.unwrap();
    assert_eq!(sub.offset, 0);
    assert_eq!(sub.epoch, "", "no history yet, so no epoch yet");
    assert!(sub.recovered.is_none());

    let offset = client
        .publish("chat:room:1", json!({"text": "hello"}))
        .await
        .unwrap();
    assert_eq!(offset, 1);
    {
        let p = client.next_publication().await.unwrap();
        assert_eq!(p.channel.as_str(), "chat:room:1");
        assert_eq!(p.offset, 1);
        assert!(!p.epoch.is_empty());
        assert_eq!(p.from.as_deref(), Some("alice"));
        assert_eq!(p.data.get(), r#"{"text":"hello"}"#);
    }

    // after unsubscribe nothing more arrives from the channel
    client.unsubscribe("chat:room:1").await.unwrap();
    server.api().publish("chat:room:1", json!(2)).await;
    client.subscribe("chat:room:2").await.unwrap();
    server.api().publish("chat:room:2", json!(3)).await;
    {
        let p = client.next_publication().await.unwrap();
        assert_eq!(p.channel.as_str(), "chat:room:2");
    }
}

#[tokio::test]
async fn bad_tokens_get_their_error_then_the_connection_closes() {
    let server = Server::start(|_| {}).await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let claims = json!({"sub": "alice", "exp": unix_now() + 600, "channels": ["*"]});

    let forged = TokenSigner::new(JwtAlgorithm::HS256, b"some-other-secret-0123456789abcdef")
        .unwrap()
        .sign(&claims)
        .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let expired = token("alice", &["*"], &[], -60);

    for (token, code, close) in [
        (forged, ErrorCode::Unauthorized, 4501),
        (alg_none, ErrorCode::Unauthorized, 4501),
        ("not-a-jwt".to_owned(), ErrorCode::Unauthorized, 4501),
        (expired, ErrorCode::TokenExpired, 4509),
    ] {
        let mut client = Client::open(&server.ws, Options::default()).await.unwrap();
        let (got, message) = server_error(
            client
                .call::<serde_json::Value>("connect", json!({"token": token}))
                .await,
        );
        assert_eq!(got, code, "{message}");
        match client.next_event().await {
            Ok(Event::Push(Push::Disconnect(d))) => {
                assert_eq!(d.code, close);
                assert!(!d.reconnect);
            }
            other => panic!("expected a disconnect push, got {other:?}"),
        }
        let closed = client.wait_closed(WAIT).await.unwrap();
        assert_eq!(closed.code, close);
    }
}

#[tokio::test]
async fn bad_frames_get_error_100_and_the_connection_stays_usable() {
    let server = Server::start(|_| {}).await;
    let mut client = connected(&server).await;

    client.send_raw("{this is not json".into()).await.unwrap();
    match client.next_event().await.unwrap() {
        Event::Error(e) => {
            assert_eq!(e.id, None);
            assert_eq!(e.error.code, ErrorCode::BadRequest);
            assert!(e.error.message.contains("malformed"), "{}", e.error.message);
        }
        other => panic!("{other:?}"),
    }

    let (code, message) = server_error(client.call::<serde_json::Value>("launch", json!({})).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert_eq!(message, "unknown command `launch`");

    let (code, message) = server_error(client.subscribe("chat room").await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("character ' '"), "{message}");

    let (code, _) = server_error(client.subscribe(&"x".repeat(300)).await);
    assert_eq!(code, ErrorCode::BadRequest);

    // still usable
    client.subscribe("chat:ok").await.unwrap();
    assert_eq!(client.publish("chat:ok", json!(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn permissions_and_namespaces() {
    let server = Server::start(|c| {
        c.strict_namespaces = true;
        c.namespaces.insert("chat".into(), Default::default());
        c.namespaces.insert(
            "announce".into(),
            herald_core::config::NamespaceConfig {
                allow_publish: false,
                ..Default::default()
            },
        );
    })
    .await;
    let (client, _) = Client::connect(
        &server.ws,
        &token(
            "alice",
            &["chat:*", "news:*", "announce:*"],
            &["chat:mine", "announce:*"],
            600,
        ),
    )
    .await
    .unwrap();
    let (code, _) = server_error(client.subscribe("secret:1").await);
    assert_eq!(code, ErrorCode::PermissionDenied);
    let (code, message) = server_error(client.subscribe("news:1").await);
    assert_eq!(code, ErrorCode::UnknownChannel, "{message}");
    let (code, _) = server_error(client.publish("chat:other", json!(1)).await);
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert_eq!(client.publish("chat:mine", json!(1)).await.unwrap(), 1);
    // a namespace where only the server API publishes: the token's pattern
    // allows it, the namespace does not
    client.subscribe("announce:news").await.unwrap();
    let (code, message) = server_error(client.publish("announce:news", json!(1)).await);
    assert_eq!(code, ErrorCode::PermissionDenied, "{message}");

    // the # boundary: alice may join a DM that lists her, not one that doesn't
    client.subscribe("chat:#alice,bob").await.unwrap();
    let (code, _) = server_error(client.subscribe("chat:#bob,carol").await);
    assert_eq!(code, ErrorCode::PermissionDenied);

    // commands before connect
    let fresh = Client::open(&server.ws, Options::default()).await.unwrap();
    let (code, _) = server_error(fresh.subscribe("chat:1").await);
    assert_eq!(code, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn oversized_data_is_refused_and_nothing_is_stored() {
    let server = Server::start(|c| c.max_message_bytes = 1024).await;
    let client = connected(&server).await;
    client.subscribe("chat:big").await.unwrap();
    let (code, message) = server_error(client.publish("chat:big", json!("x".repeat(2000))).await);
    assert_eq!(code, ErrorCode::LimitExceeded, "{message}");
    assert_eq!(client.publish("chat:big", json!("small")).await.unwrap(), 1);

    // a frame far over the limit closes the connection (it cannot be read)
    let mut big = connected(&server).await;
    big.send_raw(format!(
        "{{\"id\":9,\"publish\":{{\"channel\":\"chat:big\",\"data\":\"{}\"}}}}",
        "y".repeat(100_000)
    ))
    .await
    .unwrap();
    let closed = big.wait_closed(WAIT).await.unwrap();
    assert_eq!(closed.code, 4500);
    let _ = big.next_event_within(Duration::from_millis(10)).await;
    // other clients are unaffected
    assert_eq!(client.publish("chat:big", json!("again")).await.unwrap(), 2);
}

#[tokio::test]
async fn personal_channel_receives_what_is_sent_to_the_user() {
    let server = Server::start(|_| {}).await;
    let mut client = connected(&server).await;
    server.api().publish("#alice", json!({"dm": true})).await;
    {
        let p = client.next_publication().await.unwrap();
        assert_eq!(p.channel.as_str(), "#alice");
        assert_eq!(p.data.get(), r#"{"dm":true}"#);
    }
}

#[tokio::test]
async fn a_reconnect_resumes_the_personal_channel_without_gap_or_repeat() {
    let server = Server::start(|_| {}).await;
    let mut client = connected(&server).await;
    for n in 1..=2 {
        server.api().publish("#alice", json!({"n": n})).await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(client.next_publication().await.unwrap());
    }
    let position = StreamPosition {
        offset: seen[1].offset,
        epoch: seen[1].epoch.clone(),
    };
    client.close().await;
    // sent while alice was away
    for n in 3..=5 {
        server.api().publish("#alice", json!({"n": n})).await;
    }
    let (mut client, ok) = Client::connect_resuming(&server.ws, &alice(), &position)
        .await
        .unwrap();
    let personal = ok.personal.expect("the personal channel resumed");
    assert_eq!(personal.recovered, Some(true));
    let missed: Vec<u64> = personal
        .publications
        .unwrap_or_default()
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(missed, [3, 4, 5]);
    assert_eq!(personal.offset, 5);
    // and live after that, nothing repeated
    server.api().publish("#alice", json!({"n": 6})).await;
    assert_eq!(client.next_publication().await.unwrap().offset, 6);

    // a plain connect says nothing of the personal channel
    let (_, ok) = Client::connect(&server.ws, &alice()).await.unwrap();
    assert!(ok.personal.is_none());
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed_with_4003() {
    let server = Server::start(|c| {
        c.edge.ping_interval_secs = 1;
        c.edge.pong_timeout_secs = 1;
    })
    .await;
    let mut silent = Client::open(
        &server.ws,
        Options {
            auto_pong: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    silent
        .call::<serde_json::Value>("connect", json!({"token": alice()}))
        .await
        .unwrap();
    // a client that answers stays connected meanwhile
    let mut polite = connected(&server).await;

    match silent.next_event().await.unwrap() {
        Event::Push(Push::Ping(_)) => {}
        other => panic!("{other:?}"),
    }
    let closed = silent.wait_closed(WAIT).await.unwrap();
    assert_eq!(closed.code, 4003);

    match polite.next_event().await.unwrap() {
        Event::Push(Push::Ping(_)) => {}
        other => panic!("{other:?}"),
    }
    polite.subscribe("chat:still-here").await.unwrap();
}

#[tokio::test]
async fn no_connect_in_time_closes_with_4501() {
    let server = Server::start(|c| c.edge.connect_timeout_secs = 1).await;
    let idle = Client::open(&server.ws, Options::default()).await.unwrap();
    let closed = idle.wait_closed(WAIT).await.unwrap();
    assert_eq!(closed.code, 4501);
}

#[tokio::test]
async fn token_expiry_closes_with_4509_unless_refreshed() {
    let server = Server::start(|_| {}).await;
    let (expiring, _) = Client::connect(&server.ws, &token("alice", &["chat:*"], &[], 1))
        .await
        .unwrap();
    let (refreshed, _) = Client::connect(&server.ws, &token("alice", &["chat:*"], &[], 1))
        .await
        .unwrap();
    let ok: serde_json::Value = refreshed
        .call(
            "refresh",
            json!({"token": token("alice", &["chat:*"], &[], 600)}),
        )
        .await
        .unwrap();
    assert!(ok["exp"].as_i64().unwrap() > unix_now() + 500);
    let (code, _) = server_error(
        refreshed
            .call::<serde_json::Value>(
                "refresh",
                json!({"token": token("mallory", &["*"], &[], 600)}),
            )
            .await,
    );
    assert_eq!(code, ErrorCode::Unauthorized);

    let closed = expiring.wait_closed(WAIT).await.unwrap();
    assert_eq!(closed.code, 4509);
    refreshed.subscribe("chat:after").await.unwrap();
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let server =
        Server::start(|c| c.edge.allowed_origins = vec!["https://app.example".into()]).await;
    let denied = Client::open(
        &server.ws,
        Options {
            origin: Some("https://evil.example".into()),
            ..Options::default()
        },
    )
    .await;
    match denied {
        Err(ClientError::Connect(e)) => assert!(e.contains("403"), "{e}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    Client::open(
        &server.ws,
        Options {
            origin: Some("https://app.example".into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect() {
    let server = Server::start(|c| c.edge.drain_window_secs = 1).await;
    let mut client = connected(&server).await;
    server.shutdown.trigger();
    match client.next_event().await.unwrap() {
        Event::Push(Push::Disconnect(d)) => {
            assert_eq!(d.code, 4000);
            assert!(d.reconnect);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.wait_closed(WAIT).await.unwrap().code, 4000);
}

#[tokio::test]
async fn commands_over_the_rate_get_107_and_abuse_closes_the_connection() {
    let server = Server::start(|c| {
        c.edge.command_rate = 5;
        c.edge.command_burst = 5;
    })
    .await;
    let mut client = connected(&server).await;
    // connect took one token; four more pass, then 107 with the command's id
    let mut limited = 0;
    for i in 0..10 {
        match client
            .call::<serde_json::Value>("unsubscribe", json!({"channel": format!("chat:{i}")}))
            .await
        {
            Ok(_) => {}
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::TooManyRequests, "{}", e.message);
                limited += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(limited >= 5, "{limited} limited");
    // the connection is still usable once the bucket refills
    eventually(WAIT, "the bucket refilled", || async {
        match client.subscribe("chat:later").await {
            Ok(_) => true,
            Err(ClientError::Server(e)) if e.code == ErrorCode::TooManyRequests => false,
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    // a flood is abuse: the connection is closed
    for i in 0..300 {
        if client
            .send_raw(format!(
                "{{\"id\":{},\"unsubscribe\":{{\"channel\":\"x\"}}}}",
                1000 + i
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = client.wait_closed(WAIT).await.unwrap();
    assert_eq!(closed.code, 4500);
    let _ = client.next_event_within(Duration::from_millis(1)).await;
}

/// A publish waiting on routing (a slow JetStream append, say) holds up
/// nothing else of its connection: deliveries and pings go on meanwhile,
/// the outbox does not fill, the replies come in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_waiting_on_routing_holds_up_no_delivery_and_no_ping() {
    use futures::{SinkExt, StreamExt};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const CLIENT_PUBLISHES: u64 = 30;
    let server = Server::start(|c| {
        c.edge.ping_interval_secs = 1;
        c.edge.pong_timeout_secs = 5;
    })
    .await;
    server.edge_bus.delay_publishes(Duration::from_secs(2));
    let mut request = server.ws.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "herald.v1.json".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut sink, mut stream) = ws.split();
    for frame in [
        json!({"id": 1, "connect": {"token": alice()}}),
        json!({"id": 2, "subscribe": {"channel": "chat:busy"}}),
    ] {
        sink.send(Message::text(frame.to_string())).await.unwrap();
    }
    let mut ready = 0;
    while ready < 2 {
        let frame = stream.next().await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        ready += u64::from(v.get("ok").is_some());
    }

    // A busy channel: about 2,000 publications a second for 4 s.
    let fed = Arc::new(AtomicU64::new(0));
    let fed_all = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (routing, fed, fed_all) = (server.routing.clone(), fed.clone(), fed_all.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            while tokio::time::Instant::now() < until {
                tick.tick().await;
                for _ in 0..2 {
                    routing
                        .publish(herald_routing::PublishRequest {
                            channel: herald_protocol::channel::Channel::new("chat:busy").unwrap(),
                            data: serde_json::value::RawValue::from_string("{\"n\":1}".into())
                                .unwrap(),
                            idempotency_key: None,
                            notify_offline: vec![],
                            notification: None,
                        })
                        .await
                        .unwrap();
                    fed.fetch_add(1, Ordering::Relaxed);
                }
            }
            fed_all.store(true, Ordering::Release);
        })
    };
    // The client publishes all along, and answers pings.
    let outstanding = Arc::new(AtomicU64::new(0));
    let (pong_tx, mut pongs) = tokio::sync::mpsc::unbounded_channel::<()>();
    let writer = {
        let outstanding = outstanding.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut sent = 0;
            loop {
                tokio::select! {
                    _ = tick.tick(), if sent < CLIENT_PUBLISHES => {
                        let frame = json!({"id": 100 + sent, "publish": {"channel": "chat:busy", "data": {"mine": sent}}});
                        outstanding.fetch_add(1, Ordering::AcqRel);
                        sink.send(Message::text(frame.to_string())).await.unwrap();
                        sent += 1;
                    }
                    pong = pongs.recv() => match pong {
                        Some(()) => sink.send(Message::text(r#"{"pong":{}}"#)).await.unwrap(),
                        None => return sink,
                    },
                }
            }
        })
    };

    let (mut received, mut last_offset, mut next_reply) = (0u64, 0u64, 100u64);
    let (mut delivered_while_waiting, mut pinged_while_waiting) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done = fed_all.load(Ordering::Acquire)
            && received == fed.load(Ordering::Relaxed) + CLIENT_PUBLISHES
            && next_reply == 100 + CLIENT_PUBLISHES;
        if done {
            break;
        }
        let frame = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("everything in time")
            .expect("the connection stays open")
            .expect("a frame");
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let waiting = outstanding.load(Ordering::Acquire) > 0;
        if let Some(p) = v.get("pub") {
            let offset = p["offset"].as_u64().unwrap();
            assert_eq!(offset, last_offset + 1, "every delivery, in order");
            last_offset = offset;
            received += 1;
            delivered_while_waiting += u64::from(waiting);
        } else if v.get("ping").is_some() {
            pinged_while_waiting += u64::from(waiting);
            pong_tx.send(()).unwrap();
        } else if let Some(id) = v.get("id").and_then(|id| id.as_u64()) {
            assert!(v.get("ok").is_some(), "{v}");
            assert_eq!(id, next_reply, "replies in order");
            next_reply += 1;
            outstanding.fetch_sub(1, Ordering::AcqRel);
        } else {
            panic!("unexpected {v}");
        }
    }
    feeder.await.unwrap();
    drop(pong_tx);
    drop(writer.await.unwrap());
    assert!(
        delivered_while_waiting > 1000,
        "{delivered_while_waiting} deliveries while a publish waited"
    );
    assert!(pinged_while_waiting >= 1, "no ping while a publish waited");
    assert_eq!(server.edge.census().connections, 1, "still connected");
}

/// Stores `data` in `channel`'s history without its live copy reaching
/// the edge: a publication seen on another edge, still on its way here.
async fn stored_elsewhere(server: &Server, channel: &str, data: &str) -> StreamPosition {
    use herald_core::history::{Appended, History, NewPublication, Retention};
    let channel = herald_protocol::channel::Channel::new(channel).unwrap();
    let stored = server
        .history
        .append(
            &channel,
            NewPublication {
                data: serde_json::value::RawValue::from_string(data.into()).unwrap(),
                from: None,
                // now: history keeps it for its ttl
                ts: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
            },
            Retention {
                size: 100,
                ttl: Duration::from_secs(60),
            },
            None,
        )
        .await
        .unwrap();
    let Appended::New(seen) = stored else {
        panic!("{stored:?}")
    };
    StreamPosition {
        offset: seen.offset,
        epoch: seen.epoch,
    }
}

/// The same when this edge has seen nothing of the channel yet (it knows
/// it as empty, in no epoch): a long-poll client through a proxy lands on
/// another edge on every poll, and its first publication can beat the
/// live copy to this one.
#[tokio::test]
async fn a_client_ahead_of_an_edge_that_has_seen_nothing_of_the_channel_resumes_without_loss() {
    let server = Server::start(|_| {}).await;
    let mut client = connected(&server).await;
    let ok = client.subscribe("chat:first").await.unwrap();
    assert_eq!(ok.offset, 0, "nothing published yet");
    let position = stored_elsewhere(&server, "chat:first", "1").await;
    let (mut resumed, _) = Client::connect(&server.ws, &alice()).await.unwrap();
    let ok = resumed
        .subscribe_since("chat:first", &position)
        .await
        .unwrap();
    assert_eq!(ok.recovered, Some(true), "not a loss: {ok:?}");
    assert_eq!((ok.offset, &ok.epoch), (1, &position.epoch));
    server.api().publish("chat:first", json!(2)).await;
    assert_eq!(client.next_publication().await.unwrap().offset, 1);
    assert_eq!(client.next_publication().await.unwrap().offset, 2);
    assert_eq!(resumed.next_publication().await.unwrap().offset, 2);
}

/// A client that comes from an edge further ahead (it saw a publication
/// this edge has not delivered yet) resumes where it is: nothing is
/// unrecoverable, nothing arrives twice.
#[tokio::test]
async fn a_client_ahead_of_this_edge_resumes_without_loss_or_repeat() {
    use herald_core::history::{Appended, History, NewPublication, Retention};
    let server = Server::start(|_| {}).await;
    let mut client = connected(&server).await;
    let channel = herald_protocol::channel::Channel::new("chat:ahead").unwrap();
    client.subscribe("chat:ahead").await.unwrap();
    server.api().publish("chat:ahead", json!(1)).await;
    assert_eq!(client.next_publication().await.unwrap().offset, 1);
    // offset 2 is stored, and seen elsewhere, but its live copy has not
    // reached this edge
    let stored = server
        .history
        .append(
            &channel,
            NewPublication {
                data: serde_json::value::RawValue::from_string("2".into()).unwrap(),
                from: None,
                ts: 1,
            },
            Retention {
                size: 100,
                ttl: Duration::from_secs(60),
            },
            None,
        )
        .await
        .unwrap();
    let Appended::New(seen_elsewhere) = stored else {
        panic!("{stored:?}")
    };
    let (mut resumed, _) = Client::connect(&server.ws, &alice()).await.unwrap();
    let position = StreamPosition {
        offset: seen_elsewhere.offset,
        epoch: seen_elsewhere.epoch.clone(),
    };
    let ok = resumed
        .subscribe_since("chat:ahead", &position)
        .await
        .unwrap();
    assert_eq!(ok.recovered, Some(true));
    assert_eq!(ok.offset, 2);
    assert!(ok.publications.unwrap_or_default().is_empty());
    // the next publication fills the gap here: 2 reaches the first client,
    // not the one that saw it already
    server.api().publish("chat:ahead", json!(3)).await;
    assert_eq!(client.next_publication().await.unwrap().offset, 2);
    assert_eq!(client.next_publication().await.unwrap().offset, 3);
    assert_eq!(resumed.next_publication().await.unwrap().offset, 3);
}

/// A WebSocket upgrade on a connection that already served a request (a
/// proxy reusing an upstream connection) goes through hyper, not the
/// bare-socket path a fresh connection takes: the protocol is the same.
#[tokio::test]
async fn a_websocket_upgraded_on_a_connection_that_served_a_request_speaks_the_same_protocol() {
    use futures::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = Server::start(|_| {}).await;
    let address = server.http.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // the whole first answer, so the upgrade's 101 is what comes next
    let mut answer = Vec::new();
    let body_len = loop {
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte).await.unwrap();
        answer.push(byte[0]);
        if answer.ends_with(b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer).to_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            break head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .expect("a content length");
        }
    };
    let mut body = vec![0u8; body_len];
    socket.read_exact(&mut body).await.unwrap();

    let mut ws = herald_testkit::raw_ws_over(socket, &server.ws, &alice(), &["chat:reused"])
        .await
        .expect("the upgrade on a used connection");
    server
        .api()
        .publish("chat:reused", json!("over hyper"))
        .await;
    let publication = loop {
        let text = next_frame(&mut ws).await.into_text().unwrap().to_string();
        if text.contains("\"pub\"") {
            break text;
        }
    };
    assert!(publication.contains("over hyper"), "{publication}");
    // a WebSocket ping is answered, a binary frame refused in words
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"x".to_vec().into()))
        .await
        .unwrap();
    let mut ponged = false;
    let refusal = loop {
        match next_frame(&mut ws).await {
            Message::Pong(payload) => ponged = &payload[..] == b"are you there",
            Message::Text(text) if text.contains("\"error\"") => break text.to_string(),
            _ => {}
        }
    };
    assert!(ponged, "the ping's payload comes back in its pong");
    assert!(
        refusal.contains("binary frames are not supported"),
        "{refusal}"
    );
}

/// The next frame of a raw WebSocket, within the test's deadline.
async fn next_frame(
    ws: &mut (
             impl futures::Stream<
        Item = Result<
            tokio_tungstenite::tungstenite::Message,
            tokio_tungstenite::tungstenite::Error,
        >,
    > + Unpin
         ),
) -> tokio_tungstenite::tungstenite::Message {
    use futures::StreamExt;
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("a frame")
}
