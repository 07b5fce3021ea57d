//! A client for Herald's protocol v1 over WebSocket. Replies are matched to
//! commands by `id`; pushes arrive in order on [`Client::next_event`]; server
//! pings are answered automatically unless turned off.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use herald_protocol::{
    ConnectOk, ErrorBody, ErrorReply, PublishOk, Push, SUBPROTOCOL, ServerFrame, StreamPosition,
    SubscribeOk, decode_server_frame,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

/// How long a command waits for its reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pushes buffered before the client stops reading the socket (and the
/// server sees it as slow).
const EVENT_BUFFER: usize = 65536;

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The server answered the command with an error.
    #[error("server error: {0}")]
    Server(ErrorBody),
    #[error("connection closed ({code}: {reason})")]
    /// The connection closed: how.
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The server sent something this client did not expect.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Something the server sent that was not the reply to a pending command.
#[derive(Debug)]
pub enum Event {
    /// A push, pings included.
    Push(Push),
    /// An error reply without an id (e.g. to a malformed frame), or with
    /// an id nobody waits for.
    Error(ErrorReply),
}

/// How the connection ended, once it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code (1006: dropped without a close frame; 1005: the frame
    /// carried none).
    pub code: u16,
    /// The close reason.
    pub reason: String,
}

type Sink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

type Pending = Arc<
    parking_lot::Mutex<
        HashMap<u64, oneshot::Sender<Result<Box<serde_json::value::RawValue>, ErrorBody>>>,
    >,
>;

/// One WebSocket connection speaking protocol v1.
pub struct Client {
    sink: Arc<Mutex<Sink>>,
    /// The task reading the socket (it holds the read half).
    reader: tokio::task::JoinHandle<()>,
    next_id: AtomicU64,
    pending: Pending,
    events: mpsc::Receiver<Event>,
    closed: watch::Receiver<Option<Closed>>,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// How [`Client::open`] connects.
#[derive(Debug, Clone)]
pub struct Options {
    /// Answer server pings (turn off to test dead-peer detection).
    pub auto_pong: bool,
    /// Sent as the `Origin` header when set.
    pub origin: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auto_pong: true,
            origin: None,
        }
    }
}

impl Client {
    /// Opens the WebSocket and sends `connect` with `token`.
    pub async fn connect(url: &str, token: &str) -> Result<(Client, ConnectOk), ClientError> {
        let client = Client::open(url, Options::default()).await?;
        let ok = client.call("connect", json!({ "token": token })).await?;
        Ok((client, ok))
    }

    /// Connects and resumes the personal `#user` channel from `since`: what
    /// was sent to the user meanwhile is in the answer's `personal`.
    pub async fn connect_resuming(
        url: &str,
        token: &str,
        since: &herald_protocol::StreamPosition,
    ) -> Result<(Client, ConnectOk), ClientError> {
        let client = Client::open(url, Options::default()).await?;
        let ok = client
            .call(
                "connect",
                json!({ "token": token, "personal_since": {"offset": since.offset, "epoch": since.epoch} }),
            )
            .await?;
        Ok((client, ok))
    }

    /// Opens the WebSocket without sending anything.
    pub async fn open(url: &str, options: Options) -> Result<Client, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(origin) = &options.origin {
            let value =
                HeaderValue::from_str(origin).map_err(|e| ClientError::Connect(e.to_string()))?;
            request.headers_mut().insert("Origin", value);
        }
        let (ws, response) =
            tokio::time::timeout(DEFAULT_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .map_err(|_| ClientError::Timeout)?
                .map_err(|e| ClientError::Connect(e.to_string()))?;
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (sink, stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let pending: Pending = Arc::default();
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let (closed_tx, closed) = watch::channel(None);
        let reader = tokio::spawn(read_loop(
            stream,
            sink.clone(),
            pending.clone(),
            events_tx,
            closed_tx,
            options.auto_pong,
        ));
        Ok(Client {
            sink,
            reader,
            next_id: AtomicU64::new(1),
            pending,
            events,
            closed,
            protocol,
        })
    }

    /// Sends `{"id":N,"<command>":args}` and waits for the reply.
    pub async fn call<T: DeserializeOwned>(
        &self,
        command: &str,
        args: Value,
    ) -> Result<T, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut frame = serde_json::Map::new();
        frame.insert("id".into(), id.into());
        frame.insert(command.into(), args);
        if let Err(e) = self.send_raw(Value::Object(frame).to_string()).await {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        let answer = tokio::time::timeout(DEFAULT_TIMEOUT, rx).await;
        lock(&self.pending).remove(&id);
        match answer {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(self.closed_error()),
            Ok(Ok(Err(e))) => Err(ClientError::Server(e)),
            Ok(Ok(Ok(body))) => serde_json::from_str(body.get()).map_err(|e| {
                ClientError::Protocol(format!("unexpected reply {}: {e}", body.get()))
            }),
        }
    }

    /// Subscribes to `channel` from now on.
    pub async fn subscribe(&self, channel: &str) -> Result<SubscribeOk, ClientError> {
        self.call("subscribe", json!({ "channel": channel })).await
    }

    /// Subscribes to `channel`, resuming after `since`.
    pub async fn subscribe_since(
        &self,
        channel: &str,
        since: &StreamPosition,
    ) -> Result<SubscribeOk, ClientError> {
        self.call("subscribe", json!({ "channel": channel, "since": since }))
            .await
    }

    /// Leaves `channel`.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        self.call::<Value>("unsubscribe", json!({ "channel": channel }))
            .await
            .map(drop)
    }

    /// Publishes `data` to `channel`; answers its offset. When the server
    /// cannot say whether it was stored (error 111, outcome unknown), it is
    /// sent again with the key the error names, so it is stored once.
    pub async fn publish(&self, channel: &str, data: Value) -> Result<u64, ClientError> {
        self.publish_with_key(channel, data, None).await
    }

    /// [`Client::publish`] with an idempotency key: sent again with the
    /// same key (within the idempotency window), it is stored once.
    pub async fn publish_with_key(
        &self,
        channel: &str,
        data: Value,
        key: Option<&str>,
    ) -> Result<u64, ClientError> {
        let mut key = key.map(str::to_owned);
        let mut attempt = 1;
        loop {
            let mut args = json!({ "channel": channel, "data": data });
            if let Some(key) = &key {
                args["idempotency_key"] = json!(key);
            }
            match self.call::<PublishOk>("publish", args).await {
                Ok(ok) => return Ok(ok.offset),
                Err(ClientError::Server(e))
                    if e.code == herald_protocol::ErrorCode::OutcomeUnknown
                        && e.idempotency_key.is_some()
                        && attempt < 3 =>
                {
                    key = e.idempotency_key;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one text frame as is.
    pub async fn send_raw(&self, text: String) -> Result<(), ClientError> {
        self.sink
            .lock()
            .await
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| self.closed_error())
    }

    /// The next push or unmatched error, waiting at most `timeout`.
    pub async fn next_event_within(&mut self, timeout: Duration) -> Result<Event, ClientError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(None) => Err(self.closed_error()),
            Ok(Some(e)) => Ok(e),
        }
    }

    /// The next push or unmatched error, waiting at most [`DEFAULT_TIMEOUT`].
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        self.next_event_within(DEFAULT_TIMEOUT).await
    }

    /// The next push, skipping pings.
    pub async fn next_push(&mut self) -> Result<Push, ClientError> {
        loop {
            match self.next_event().await? {
                Event::Push(Push::Ping(_)) => continue,
                Event::Push(p) => return Ok(p),
                Event::Error(e) => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected error frame: {e:?}"
                    )));
                }
            }
        }
    }

    /// The next publication, skipping every other push (pings, join, leave,
    /// typing).
    pub async fn next_publication(&mut self) -> Result<herald_protocol::Publication, ClientError> {
        loop {
            if let Push::Pub(p) = self.next_push().await? {
                return Ok(p);
            }
        }
    }

    /// Waits until the server closes the connection, at most `timeout`.
    pub async fn wait_closed(&self, timeout: Duration) -> Result<Closed, ClientError> {
        let mut closed = self.closed.clone();
        let wait = closed.wait_for(Option::is_some);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(c)) => Ok(c.clone().unwrap_or(Closed {
                code: 1006,
                reason: String::new(),
            })),
            Ok(Err(_)) => Err(ClientError::Protocol("reader gone".into())),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    fn closed_error(&self) -> ClientError {
        match &*self.closed.borrow() {
            Some(c) => ClientError::Closed {
                code: c.code,
                reason: c.reason.clone(),
            },
            None => ClientError::Closed {
                code: 1006,
                reason: "connection lost".into(),
            },
        }
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.sink.lock().await.close().await;
    }

    /// Drops the connection without a word (no close frame), as a client
    /// whose network went away. (Dropping the client does the same.)
    pub fn abort(self) {}
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    m.lock()
}

async fn read_loop(
    mut stream: futures::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    sink: Arc<Mutex<Sink>>,
    pending: Pending,
    events: mpsc::Sender<Event>,
    closed: watch::Sender<Option<Closed>>,
    auto_pong: bool,
) {
    let mut end = Closed {
        code: 1006,
        reason: "connection lost".into(),
    };
    while let Some(message) = stream.next().await {
        let text = match message {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(frame)) => {
                if let Some(f) = frame {
                    end = Closed {
                        code: f.code.into(),
                        reason: f.reason.to_string(),
                    };
                } else {
                    end = Closed {
                        code: 1005,
                        reason: String::new(),
                    };
                }
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        let frame = match decode_server_frame(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, frame = %text, "undecodable server frame");
                continue;
            }
        };
        let event = match frame {
            ServerFrame::Ok { id, body } => match lock(&pending).remove(&id) {
                Some(waiter) => {
                    let _ = waiter.send(Ok(body));
                    continue;
                }
                None => continue,
            },
            ServerFrame::Error(reply) => match reply.id.and_then(|id| lock(&pending).remove(&id)) {
                Some(waiter) => {
                    let _ = waiter.send(Err(reply.error));
                    continue;
                }
                None => Event::Error(reply),
            },
            ServerFrame::Push(Push::Ping(p)) => {
                if auto_pong {
                    let _ = sink
                        .lock()
                        .await
                        .send(Message::Text(r#"{"pong":{}}"#.into()))
                        .await;
                }
                Event::Push(Push::Ping(p))
            }
            ServerFrame::Push(p) => Event::Push(p),
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
    let _ = closed.send(Some(end));
    // Wake every waiter: the connection is gone.
    lock(&pending).clear();
}
