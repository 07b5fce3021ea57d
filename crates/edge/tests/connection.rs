//! What a connection is, whatever carries it: the same suite over
//! WebSocket, Server-Sent Events (with the HTTP commands) and long polling.
//! Authentication errors, subscribe and recovery, the per-user limit,
//! presence, token expiry and a narrowing refresh, the drain, and a client
//! that vanishes mid-write, mid-stream or mid-poll — after which everything
//! it held (its slot, its user's count, its subscriptions, what presence
//! was told) is released.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_client::{Client, ClientError, Event};
use herald_core::history::{History, Recovery};
use herald_edge::Census;
use herald_protocol::{
    Disconnect, ErrorBody, ErrorCode, Publication, Push, StreamPosition, Unsubscribed,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use herald_testkit::{API_KEY, Server, WAIT, eventually, http_client, token};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ws,
    Sse,
    Poll,
}

const KINDS: [Kind; 3] = [Kind::Ws, Kind::Sse, Kind::Poll];

/// What a test client sees, whatever the transport.
#[derive(Debug)]
enum Seen {
    Pub(Publication),
    Unsubscribe(Unsubscribed),
    Disconnect(Disconnect),
    /// The transport ended without a word.
    Ended,
}

/// A refused open: the error code the server answered.
#[derive(Debug)]
struct Refused(ErrorCode);

/// Poll timeout of the test clients: longer than any test, so a poll is
/// always held.
const POLL_TIMEOUT_SECS: u64 = 40;

struct TestClient {
    kind: Kind,
    token: Arc<Mutex<String>>,
    http: String,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Recovered publications and pushes of a WebSocket, in order.
    ws: Option<Client>,
    /// The task reading an SSE stream or polling.
    task: Option<JoinHandle<()>>,
    /// The last SSE event id, or the poll cursor.
    cursor: Arc<Mutex<String>>,
    channels: Vec<String>,
}

impl TestClient {
    /// Opens a connection subscribed to `channels` (each resumed after its
    /// position in `since`, when given), ready when this returns.
    async fn open(
        server: &Server,
        kind: Kind,
        token: &str,
        channels: &[&str],
        since: &[(&str, StreamPosition)],
    ) -> Result<TestClient, Refused> {
        let (tx, seen) = mpsc::unbounded_channel();
        let mut client = TestClient {
            kind,
            token: Arc::new(Mutex::new(token.to_owned())),
            http: server.http.clone(),
            seen,
            ws: None,
            task: None,
            cursor: Arc::new(Mutex::new(String::new())),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        };
        match kind {
            Kind::Ws => {
                let (ws, _) = Client::connect(&server.ws, token).await.map_err(refused)?;
                for channel in channels {
                    let position = since.iter().find(|(c, _)| c == channel).map(|(_, p)| p);
                    let ok = match position {
                        Some(p) => ws.subscribe_since(channel, p).await,
                        None => ws.subscribe(channel).await,
                    }
                    .map_err(refused)?;
                    for p in ok.publications.unwrap_or_default() {
                        let _ = tx.send(Seen::Pub(p));
                    }
                }
                client.ws = Some(ws);
            }
            Kind::Sse => {
                let cursor = cursor_of(since);
                client.task = Some(
                    sse_reader(server, token, channels, cursor, tx, client.cursor.clone()).await?,
                );
            }
            Kind::Poll => {
                *client.cursor.lock().unwrap() = cursor_of(since).unwrap_or_default();
                client.task = Some(poller(&client, tx).await?);
            }
        }
        Ok(client)
    }

    async fn next(&mut self) -> Seen {
        if let Ok(seen) = self.seen.try_recv() {
            return seen;
        }
        if let Some(ws) = self.ws.as_mut() {
            loop {
                return match ws.next_event_within(WAIT).await {
                    Ok(Event::Push(Push::Pub(p))) => Seen::Pub(p),
                    Ok(Event::Push(Push::Unsubscribe(u))) => Seen::Unsubscribe(u),
                    Ok(Event::Push(Push::Disconnect(d))) => Seen::Disconnect(d),
                    Ok(_) => continue,
                    Err(ClientError::Timeout) => panic!("nothing seen within {WAIT:?}"),
                    Err(_) => Seen::Ended,
                };
            }
        }
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("something seen in time")
            .unwrap_or(Seen::Ended)
    }

    /// The next publication, skipping nothing else silently.
    async fn next_pub(&mut self) -> Publication {
        match self.next().await {
            Seen::Pub(p) => p,
            other => panic!("{:?}: expected a publication, got {other:?}", self.kind),
        }
    }

    /// Publishes as the client: the WebSocket command, or `POST /publish`.
    async fn publish(&self, channel: &str, data: Value) -> Result<u64, ErrorBody> {
        if let Some(ws) = &self.ws {
            return ws.publish(channel, data).await.map_err(|e| match e {
                ClientError::Server(e) => e,
                other => panic!("{other}"),
            });
        }
        let token = self.token.lock().unwrap().clone();
        let answer = http_client()
            .post(format!("{}/publish", self.http))
            .bearer_auth(token)
            .json(&json!({"channel": channel, "data": data}))
            .send()
            .await
            .expect("POST /publish");
        let ok = answer.status().is_success();
        let body: Value = answer.json().await.expect("a JSON answer");
        if ok {
            Ok(body["offset"].as_u64().expect("an offset"))
        } else {
            Err(serde_json::from_value(body["error"].clone()).expect("an error body"))
        }
    }

    /// A newer token: the `refresh` command; for SSE a new stream resuming
    /// the old one; for long polling the next poll carries it.
    async fn refresh(&mut self, server: &Server, token: &str) {
        *self.token.lock().unwrap() = token.to_owned();
        match self.kind {
            Kind::Ws => {
                let ws = self.ws.as_ref().expect("a WebSocket");
                let _: Value = ws
                    .call("refresh", json!({"token": token}))
                    .await
                    .expect("refreshed");
            }
            Kind::Sse => {
                if let Some(task) = self.task.take() {
                    task.abort();
                }
                let last = self.cursor.lock().unwrap().clone();
                let (tx, seen) = mpsc::unbounded_channel();
                self.seen = seen;
                let channels: Vec<&str> = self.channels.iter().map(String::as_str).collect();
                let task = sse_reader(
                    server,
                    token,
                    &channels,
                    Some(last),
                    tx,
                    self.cursor.clone(),
                )
                .await
                .expect("the stream resumed");
                self.task = Some(task);
            }
            Kind::Poll => {
                // cut the held poll short: the next one carries the token
                let (tx, seen) = mpsc::unbounded_channel();
                if let Some(task) = self.task.take() {
                    task.abort();
                }
                self.seen = seen;
                self.task = Some(poller(self, tx).await.expect("polling goes on"));
            }
        }
    }

    /// Leaves politely: a close frame, the end of the stream, no next poll.
    async fn close(mut self) {
        if let Some(ws) = self.ws.take() {
            ws.close().await;
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn refused(e: ClientError) -> Refused {
    match e {
        ClientError::Server(e) => Refused(e.code),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// A long-poll cursor (also what SSE takes as `last_event_id`).
fn cursor_of(since: &[(&str, StreamPosition)]) -> Option<String> {
    use base64::Engine;
    if since.is_empty() {
        return None;
    }
    let entries: Vec<(&str, &str, u64)> = since
        .iter()
        .map(|(c, p)| (*c, p.epoch.as_str(), p.offset))
        .collect();
    Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&entries).unwrap()),
    )
}

async fn http_refusal(response: reqwest::Response) -> Refused {
    let body: Value = response.json().await.expect("a JSON error");
    Refused(serde_json::from_value(body["error"]["code"].clone()).expect("an error code"))
}

/// Opens an SSE stream; ready once every channel's `subscribe` event came.
async fn sse_reader(
    server: &Server,
    token: &str,
    channels: &[&str],
    last_event_id: Option<String>,
    tx: mpsc::UnboundedSender<Seen>,
    cursor: Arc<Mutex<String>>,
) -> Result<JoinHandle<()>, Refused> {
    let url = reqwest::Url::parse_with_params(
        &format!("{}/sse", server.http),
        &[
            ("channels", channels.join(",")),
            ("token", token.to_owned()),
        ],
    )
    .expect("a URL");
    let mut request = http_client().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.expect("GET /sse");
    if !response.status().is_success() {
        return Err(http_refusal(response).await);
    }
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let expected = channels.len() + 1; // and the personal channel
    let task = tokio::spawn(async move {
        let mut response = response;
        let mut buffer = String::new();
        let mut subscribed = 0;
        let mut ready_tx = Some(ready_tx);
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let (mut kind, mut data, mut id) = ("message", String::new(), None);
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        kind = match v {
                            "pub" => "pub",
                            "subscribe" => "subscribe",
                            "unsubscribe" => "unsubscribe",
                            "disconnect" => "disconnect",
                            _ => "other",
                        };
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    }
                }
                if let Some(id) = id {
                    *cursor.lock().unwrap() = id;
                }
                let seen = match kind {
                    "pub" => Seen::Pub(serde_json::from_str(&data).expect("a publication")),
                    "unsubscribe" => {
                        // a channel the token no longer allows: settled too
                        subscribed += 1;
                        if subscribed == expected
                            && let Some(ready) = ready_tx.take()
                        {
                            let _ = ready.send(());
                        }
                        Seen::Unsubscribe(serde_json::from_str(&data).expect("an unsubscribe"))
                    }
                    "disconnect" => {
                        Seen::Disconnect(serde_json::from_str(&data).expect("a disconnect"))
                    }
                    "subscribe" => {
                        subscribed += 1;
                        if subscribed == expected
                            && let Some(ready) = ready_tx.take()
                        {
                            let _ = ready.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Seen::Ended);
    });
    tokio::time::timeout(WAIT, ready)
        .await
        .expect("every channel subscribed in time")
        .expect("the stream stayed open");
    Ok(task)
}

/// Polls until aborted; ready once the first answer came.
async fn poller(
    client: &TestClient,
    tx: mpsc::UnboundedSender<Seen>,
) -> Result<JoinHandle<()>, Refused> {
    let http = client.http.clone();
    let token = client.token.clone();
    let cursor = client.cursor.clone();
    let channels = client.channels.join(",");
    let poll = move |timeout: u64| {
        let (http, token, cursor, channels) = (
            http.clone(),
            token.clone(),
            cursor.clone(),
            channels.clone(),
        );
        async move {
            let token = token.lock().unwrap().clone();
            let cursor = cursor.lock().unwrap().clone();
            let url = reqwest::Url::parse_with_params(
                &format!("{http}/poll"),
                &[
                    ("channels", channels),
                    ("cursor", cursor),
                    ("timeout", timeout.to_string()),
                ],
            )
            .expect("a URL");
            http_client().get(url).bearer_auth(token).send().await
        }
    };
    let take = {
        let cursor = client.cursor.clone();
        move |answer: Value, tx: &mpsc::UnboundedSender<Seen>| -> bool {
            for message in answer["messages"].as_array().into_iter().flatten() {
                let push: Push = serde_json::from_value(message.clone()).expect("a push");
                let seen = match push {
                    Push::Pub(p) => Seen::Pub(p),
                    Push::Unsubscribe(u) => Seen::Unsubscribe(u),
                    Push::Disconnect(d) => {
                        let _ = tx.send(Seen::Disconnect(d));
                        return false;
                    }
                    _ => continue,
                };
                let _ = tx.send(seen);
            }
            if let Some(c) = answer["cursor"].as_str() {
                *cursor.lock().unwrap() = c.to_owned();
            }
            true
        }
    };
    // The first poll: a new session answers at once with where it stands.
    let first = poll(0).await.expect("GET /poll");
    if !first.status().is_success() {
        return Err(http_refusal(first).await);
    }
    if first.status() == 200 {
        take(first.json().await.expect("an answer"), &tx);
    }
    Ok(tokio::spawn(async move {
        loop {
            let Ok(answer) = poll(POLL_TIMEOUT_SECS).await else {
                let _ = tx.send(Seen::Ended);
                return;
            };
            match answer.status().as_u16() {
                204 => continue,
                200 => {
                    if !take(answer.json().await.expect("an answer"), &tx) {
                        return;
                    }
                }
                status => {
                    eprintln!("poll ended: {status} {:?}", answer.text().await);
                    let _ = tx.send(Seen::Ended);
                    return;
                }
            }
        }
    }))
}

async fn publish(server: &Server, channel: &str, n: u64) -> StreamPosition {
    let answer = server.api().publish(channel, json!({"n": n})).await;
    StreamPosition {
        offset: answer["offset"].as_u64().expect("offset"),
        epoch: answer["epoch"].as_str().expect("epoch").to_owned().into(),
    }
}

fn idle() -> Census {
    Census {
        connections: 0,
        users: 0,
        channels: 0,
        reported: 0,
        poll_sessions: 0,
    }
}

async fn released(server: &Server, kind: Kind) {
    eventually(WAIT, &format!("{kind:?}: everything released"), || async {
        let census = server.edge.census();
        if census == idle() {
            Ok(())
        } else {
            Err(format!("{census:?}"))
        }
    })
    .await;
}

/// The next thing seen is a `disconnect` with `code`.
async fn told_to_leave(client: &mut TestClient, code: u16, reconnect: bool) {
    match client.next().await {
        Seen::Disconnect(d) => {
            assert_eq!(
                (d.code, d.reconnect),
                (code, reconnect),
                "{:?}",
                client.kind
            );
        }
        other => panic!("{:?}: {other:?}", client.kind),
    }
}

fn quick_grace(c: &mut herald_core::config::Config) {
    c.edge.poll_grace_secs = 1;
}

#[tokio::test]
async fn refused_tokens_get_their_code_on_every_transport() {
    let server = Server::start(quick_grace).await;
    let forged = herald_core::auth::TokenSigner::new(
        herald_core::auth::JwtAlgorithm::HS256,
        b"another-secret-0123456789abcdef-0123",
    )
    .unwrap()
    .sign(
        &json!({"sub": "alice", "exp": herald_core::auth::unix_now() + 60, "channels": ["chat:*"]}),
    )
    .unwrap();
    let expired = token("alice", &["chat:*"], &[], -60);
    for kind in KINDS {
        for (token, code) in [
            (&forged, ErrorCode::Unauthorized),
            (&expired, ErrorCode::TokenExpired),
        ] {
            match TestClient::open(&server, kind, token, &["chat:a"], &[]).await {
                Err(Refused(got)) => assert_eq!(got, code, "{kind:?}"),
                Ok(_) => panic!("{kind:?}: a bad token was accepted"),
            }
        }
    }
    released(&server, Kind::Ws).await;
}

#[tokio::test]
async fn subscribe_recovers_what_was_missed_then_goes_live_on_every_transport() {
    let server = Server::start(quick_grace).await;
    let alice = token("alice", &["chat:*"], &["chat:*"], 600);
    for kind in KINDS {
        let channel = format!("chat:{kind:?}");
        let mut positions = Vec::new();
        for n in 1..=5 {
            positions.push(publish(&server, &channel, n).await);
        }
        let since = [(channel.as_str(), positions[1].clone())];
        let mut client = TestClient::open(&server, kind, &alice, &[&channel], &since)
            .await
            .unwrap();
        for expected in 3..=5 {
            assert_eq!(client.next_pub().await.offset, expected, "{kind:?}");
        }
        publish(&server, &channel, 6).await;
        assert_eq!(client.next_pub().await.offset, 6, "{kind:?}: live after");
        // and the client's own publish comes back to it
        let offset = client.publish(&channel, json!("mine")).await.unwrap();
        assert_eq!(client.next_pub().await.offset, offset, "{kind:?}");
        client.close().await;
        released(&server, kind).await;
    }
}

#[tokio::test]
async fn a_resume_from_a_lost_epoch_is_told_and_gets_the_new_epoch_from_its_start_on_every_transport()
 {
    let server = Server::start(quick_grace).await;
    let alice = token("alice", &["chat:*"], &["chat:*"], 600);
    for kind in KINDS {
        let channel = format!("chat:epoch{kind:?}");
        let mut positions = Vec::new();
        for n in 1..=3 {
            positions.push(publish(&server, &channel, n).await);
        }
        // the client was further along in an epoch this history lost
        let lost = StreamPosition::new(7, "lost-epoch");
        assert_ne!(lost.epoch, positions[0].epoch);
        let since = [(channel.as_str(), lost.clone())];
        let mut client = TestClient::open(&server, kind, &alice, &[&channel], &since)
            .await
            .unwrap();
        for expected in 1..=3 {
            let p = client.next_pub().await;
            assert_eq!(
                (p.offset, &p.epoch),
                (expected, &positions[0].epoch),
                "{kind:?}: the new epoch from its first offset"
            );
        }
        publish(&server, &channel, 4).await;
        assert_eq!(client.next_pub().await.offset, 4, "{kind:?}: then live");
        client.close().await;
        released(&server, kind).await;
    }
    // and the client is told it lost what it had
    let (ws, _) = Client::connect(&server.ws, &alice).await.unwrap();
    let ok = ws
        .subscribe_since("chat:epochWs", &StreamPosition::new(7, "lost-epoch"))
        .await
        .unwrap();
    assert_eq!(ok.recovered, Some(false));
    let offsets: Vec<u64> = ok
        .publications
        .unwrap_or_default()
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
}

#[tokio::test]
async fn the_per_user_limit_holds_on_every_transport() {
    let server = Server::start(|c| {
        quick_grace(c);
        c.edge.max_connections_per_user = 2;
    })
    .await;
    let bob = token("bob", &["chat:*"], &[], 600);
    for kind in KINDS {
        let first = TestClient::open(&server, kind, &bob, &["chat:1"], &[])
            .await
            .unwrap();
        let second = TestClient::open(&server, kind, &bob, &["chat:1"], &[])
            .await
            .unwrap();
        match TestClient::open(&server, kind, &bob, &["chat:1"], &[]).await {
            Err(Refused(code)) => assert_eq!(code, ErrorCode::LimitExceeded, "{kind:?}"),
            Ok(_) => panic!("{kind:?}: a third connection was accepted"),
        }
        // another user is not affected
        let carol = token("carol", &["chat:*"], &[], 600);
        let other = TestClient::open(&server, kind, &carol, &["chat:1"], &[])
            .await
            .unwrap();
        // a slot comes back when a connection ends
        first.close().await;
        let third = eventually_open(&server, kind, &bob).await;
        drop((second, other, third));
        released(&server, kind).await;
    }
}

async fn eventually_open(server: &Server, kind: Kind, token: &str) -> TestClient {
    eventually(WAIT, &format!("{kind:?}: a slot back"), || async {
        match TestClient::open(server, kind, token, &["chat:1"], &[]).await {
            Ok(client) => Some(client),
            Err(Refused(ErrorCode::LimitExceeded)) => None,
            Err(e) => panic!("{kind:?}: {e:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn presence_follows_the_connection_on_every_transport() {
    let server = Server::start(quick_grace).await;
    let dave = token("dave", &["room:*"], &[], 600);
    for kind in KINDS {
        let client = TestClient::open(&server, kind, &dave, &["room:1"], &[])
            .await
            .unwrap();
        let census = server.edge.census();
        assert_eq!((census.users, census.reported), (1, 1), "{kind:?}: online");
        client.close().await;
        // offline once it is gone (for long polling: after the grace period)
        released(&server, kind).await;
    }
}

#[tokio::test]
async fn an_expired_token_ends_the_connection_with_4509_on_every_transport() {
    let server = Server::start(quick_grace).await;
    for kind in KINDS {
        let short = token("erin", &["chat:*"], &[], 2);
        let mut client = TestClient::open(&server, kind, &short, &["chat:x"], &[])
            .await
            .unwrap();
        told_to_leave(&mut client, 4509, false).await;
        drop(client);
        released(&server, kind).await;
    }
}

#[tokio::test]
async fn a_token_just_past_its_expiry_within_the_leeway_gets_a_working_connection() {
    // clock skew: accepted, so the connection must work, not close at once
    let server = Server::start(|c| {
        quick_grace(c);
        c.edge.jwt_leeway_secs = 60;
    })
    .await;
    for kind in KINDS {
        let skewed = token("sam", &["chat:*"], &[], -5);
        let mut client = TestClient::open(&server, kind, &skewed, &["chat:skew"], &[])
            .await
            .unwrap_or_else(|_| panic!("{kind:?}: refused"));
        let sent = publish(&server, "chat:skew", 1).await;
        assert_eq!(client.next_pub().await.offset, sent.offset, "{kind:?}");
        client.close().await;
        released(&server, kind).await;
    }
}

#[tokio::test]
async fn a_narrower_token_drops_the_channels_it_no_longer_allows_on_every_transport() {
    let server = Server::start(quick_grace).await;
    for kind in KINDS {
        let broad = token("frank", &["chat:*"], &[], 600);
        let narrow = token("frank", &["chat:keep"], &[], 600);
        let mut client = TestClient::open(&server, kind, &broad, &["chat:keep", "chat:drop"], &[])
            .await
            .unwrap();
        publish(&server, "chat:drop", 1).await;
        assert_eq!(client.next_pub().await.channel.as_str(), "chat:drop");
        client.refresh(&server, &narrow).await;
        let told = loop {
            match client.next().await {
                Seen::Unsubscribe(u) => break u,
                // what was on its way before the refresh
                Seen::Pub(p) if p.channel.as_str() == "chat:drop" => continue,
                other => panic!("{kind:?}: {other:?}"),
            }
        };
        assert_eq!(told.channel.as_str(), "chat:drop", "{kind:?}");
        assert_eq!(told.code, ErrorCode::PermissionDenied, "{kind:?}");
        // the dropped channel is quiet, the other goes on
        publish(&server, "chat:drop", 2).await;
        publish(&server, "chat:keep", 1).await;
        let p = client.next_pub().await;
        assert_eq!(p.channel.as_str(), "chat:keep", "{kind:?}: {p:?}");
        client.close().await;
        released(&server, kind).await;
    }
}

#[tokio::test]
async fn a_draining_edge_tells_every_transport_to_reconnect() {
    for kind in KINDS {
        let server = Server::start(|c| {
            quick_grace(c);
            c.edge.drain_window_secs = 1;
        })
        .await;
        let grace = token("grace", &["chat:*"], &[], 600);
        let mut client = TestClient::open(&server, kind, &grace, &["chat:d"], &[])
            .await
            .unwrap();
        server.shutdown.trigger();
        told_to_leave(&mut client, 4000, true).await;
        drop(client);
        released(&server, kind).await;
    }
}

#[tokio::test]
async fn a_connection_past_the_age_limit_is_asked_to_reconnect_on_every_transport_and_resumes() {
    let server = Server::start(|c| {
        quick_grace(c);
        c.edge.max_connection_age_secs = 1;
    })
    .await;
    for kind in KINDS {
        let old = token("olga", &["chat:*"], &[], 600);
        let before = publish(&server, "chat:age", 1).await;
        let mut client = TestClient::open(&server, kind, &old, &["chat:age"], &[])
            .await
            .unwrap();
        told_to_leave(&mut client, 4004, true).await;
        drop(client);
        released(&server, kind).await;
        // what was published meanwhile comes with the resume
        let missed = publish(&server, "chat:age", 2).await;
        let mut again =
            TestClient::open(&server, kind, &old, &["chat:age"], &[("chat:age", before)])
                .await
                .unwrap();
        assert_eq!(again.next_pub().await.offset, missed.offset, "{kind:?}");
        drop(again);
        released(&server, kind).await;
    }
}

#[tokio::test]
async fn a_client_publish_sent_again_with_its_key_is_stored_once_and_keys_are_per_user() {
    let server = Server::start(quick_grace).await;
    let alice = token("alice", &["chat:*"], &["chat:*"], 600);
    let bob = token("bob", &["chat:*"], &["chat:*"], 600);
    let (ws, _) = Client::connect(&server.ws, &alice).await.unwrap();
    let first = ws
        .publish_with_key("chat:keys", json!({"n": 1}), Some("k1"))
        .await
        .unwrap();
    let again = ws
        .publish_with_key("chat:keys", json!({"n": 1}), Some("k1"))
        .await
        .unwrap();
    assert_eq!(again, first, "the retry answers the first publication");
    // over HTTP (SSE and long-poll clients) too
    let http_again: Value = http_client()
        .post(format!("{}/publish", server.http))
        .bearer_auth(&alice)
        .json(&json!({"channel": "chat:keys", "data": {"n": 1}, "idempotency_key": "k1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(http_again["offset"], first);
    // another user's key of the same name is another publication
    let (other, _) = Client::connect(&server.ws, &bob).await.unwrap();
    let bobs = other
        .publish_with_key("chat:keys", json!({"n": 2}), Some("k1"))
        .await
        .unwrap();
    assert_eq!(bobs, first + 1);
    let Recovery::Recovered { publications, .. } = server
        .history
        .read(
            &herald_protocol::channel::Channel::new("chat:keys").unwrap(),
            None,
            10,
        )
        .await
        .unwrap()
    else {
        panic!("readable")
    };
    assert_eq!(publications.len(), 2, "stored once per user and key");
    // a key that is not one is refused
    let refused = ws
        .publish_with_key("chat:keys", json!({"n": 3}), Some(""))
        .await;
    assert!(matches!(refused, Err(ClientError::Server(e)) if e.code == ErrorCode::BadRequest));
}

#[tokio::test]
async fn a_draining_edge_keeps_answering_health_and_refuses_only_new_clients() {
    // A window long enough that the drain is still going when we look.
    let server = Server::start(|c| c.edge.drain_window_secs = 600).await;
    let grace = token("grace", &["chat:*"], &[], 600);
    let mut staying = TestClient::open(&server, Kind::Ws, &grace, &["chat:stay"], &[])
        .await
        .unwrap();
    server.shutdown.trigger();
    let http = http_client();
    let ready = http
        .get(format!("{}/readyz", server.http))
        .send()
        .await
        .expect("/readyz answers while draining");
    assert_eq!(ready.status(), 503, "not ready: send clients elsewhere");
    let stats: Value = http
        .get(format!("{}/stats", server.http))
        .send()
        .await
        .expect("/stats answers while draining")
        .json()
        .await
        .expect("JSON");
    assert_eq!(stats["draining"], true);
    assert_eq!(
        stats["connections"], 1,
        "the client already here stays for now"
    );
    let refused = http
        .get(format!("{}/sse?channels=chat:stay", server.http))
        .bearer_auth(&grace)
        .send()
        .await
        .expect("a new client gets an answer");
    assert_eq!(refused.status(), 503);
    assert!(
        refused.headers().contains_key("retry-after"),
        "{:?}",
        refused.headers()
    );
    // the client already connected is still served
    publish(&server, "chat:stay", 1).await;
    assert_eq!(staying.next_pub().await.offset, 1);
    staying.close().await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_delivery_releases_everything_on_every_transport() {
    let server = Server::start(quick_grace).await;
    let heidi = token("heidi", &["chat:*"], &[], 600);
    let channels = ["chat:v1", "chat:v2", "chat:v3"];
    for kind in KINDS {
        let mut client = TestClient::open(&server, kind, &heidi, &channels, &[])
            .await
            .unwrap();
        assert_eq!(server.edge.census().channels, channels.len() + 1);
        // deliveries are on their way when the client's socket goes
        let publisher = {
            let http = server.http.clone();
            tokio::spawn(async move {
                let client = http_client();
                for n in 0..200u64 {
                    let _ = client
                        .post(format!("{http}/api/publish"))
                        .bearer_auth(API_KEY)
                        .json(&json!({"channel": "chat:v1", "data": {"n": n, "pad": "x".repeat(2000)}}))
                        .send()
                        .await;
                }
            })
        };
        let _ = client.next_pub().await;
        vanish(&mut client);
        publisher.await.unwrap();
        released(&server, kind).await;
    }
}

/// The socket goes away without a word: no close frame, a poll cut
/// mid-way, a stream dropped.
fn vanish(client: &mut TestClient) {
    if let Some(task) = client.task.take() {
        task.abort();
    }
    if let Some(ws) = client.ws.take() {
        ws.abort();
    }
}

#[tokio::test]
async fn a_long_poll_session_reads_no_history_between_polls_and_gets_exactly_what_it_missed() {
    let server = Server::start(quick_grace).await;
    let ivan = token("ivan", &["chat:*"], &[], 600);
    let poll = |cursor: String| {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/poll", server.http),
            &[
                ("channels", "chat:p"),
                ("cursor", cursor.as_str()),
                ("timeout", "0"),
            ],
        )
        .expect("a URL");
        let ivan = ivan.clone();
        async move {
            http_client()
                .get(url)
                .bearer_auth(ivan)
                .send()
                .await
                .expect("GET /poll")
        }
    };
    let first: Value = poll(String::new()).await.json().await.expect("an answer");
    let cursor = first["cursor"].as_str().expect("a cursor").to_owned();
    let before = server.edge_bus.history_requests();
    for _ in 0..1000 {
        assert_eq!(poll(cursor.clone()).await.status(), 204, "nothing new");
    }
    assert_eq!(
        server.edge_bus.history_requests(),
        before,
        "no history read for polls that missed nothing"
    );
    // missed between polls: exactly those, from the session, not history
    for n in 1..=3 {
        publish(&server, "chat:p", n).await;
    }
    let answer: Value = poll(cursor.clone()).await.json().await.expect("an answer");
    let offsets: Vec<u64> = answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["pub"]["offset"].as_u64().expect("a publication"))
        .collect();
    assert_eq!(offsets, [1, 2, 3]);
    let next = answer["cursor"].as_str().expect("a cursor").to_owned();
    assert_eq!(poll(next).await.status(), 204, "and nothing twice");
    assert_eq!(server.edge_bus.history_requests(), before);
    // an answer that never arrived is sent again to the old cursor
    publish(&server, "chat:p", 4).await;
    let lost: Value = poll(answer["cursor"].as_str().unwrap().to_owned())
        .await
        .json()
        .await
        .expect("an answer");
    let again: Value = poll(answer["cursor"].as_str().unwrap().to_owned())
        .await
        .json()
        .await
        .expect("an answer");
    assert_eq!(lost["messages"], again["messages"]);
    assert_eq!(again["messages"][0]["pub"]["offset"], 4);
}

#[tokio::test]
async fn abandoned_long_polls_never_lock_the_user_out() {
    let server = Server::start(|c| {
        c.edge.poll_grace_secs = 2;
        c.edge.max_connections_per_user = 100;
    })
    .await;
    let judy = token("judy", &["chat:*"], &[], 600);
    // 120 polls, each given up 50 ms in (a flaky mobile network)
    for _ in 0..120 {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/poll", server.http),
            &[("channels", "chat:a"), ("timeout", "30"), ("cursor", "")],
        )
        .unwrap();
        let request = http_client().get(url).bearer_auth(&judy).send();
        let _ = tokio::time::timeout(Duration::from_millis(50), request).await;
    }
    // she polls and connects at once
    for kind in KINDS {
        let client = TestClient::open(&server, kind, &judy, &["chat:a"], &[])
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        client.close().await;
    }
    // and is offline once the grace period is over
    released(&server, Kind::Poll).await;
}

#[tokio::test]
async fn a_user_id_that_names_several_users_is_refused_everywhere() {
    let server = Server::start(quick_grace).await;
    // `#alice,bob` is alice's and bob's conversation: no token may be
    // for the "user" `alice,bob`
    let crafted = token("alice,bob", &["chat:*"], &[], 600);
    for kind in KINDS {
        match TestClient::open(&server, kind, &crafted, &["chat:a"], &[]).await {
            Err(Refused(code)) => assert_eq!(code, ErrorCode::Unauthorized, "{kind:?}"),
            Ok(_) => panic!("{kind:?}: the crafted user connected"),
        }
    }
    for (path, body) in [
        ("/api/send", json!({"user": "alice,bob", "data": 1})),
        ("/api/disconnect", json!({"user": "alice,bob"})),
        ("/api/send", json!({"user": "a b", "data": 1})),
    ] {
        let answer = server.api().post(path, body.clone()).await;
        assert_eq!(answer.status, 400, "{path} {body}");
    }
    released(&server, Kind::Ws).await;
}
