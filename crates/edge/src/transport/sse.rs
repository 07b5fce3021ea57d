//! Server-Sent Events: `GET /sse?channels=a,b`. One event per push; `id:`
//! is a cursor covering every channel of the stream, so a reconnect with
//! `Last-Event-ID` (or `last_event_id=`) resumes them all. Commands go over
//! `POST /publish`, `/typing`, `/presence`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use herald_proto::service::{ClientSocket, SocketOffer};
use herald_protocol::channel::Channel;
use herald_protocol::{CloseCode, Push, StreamPosition, Unsubscribed, encode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::{Internal, Keepalive, Out, Read, ReplyBody, Transport, WriteError};
use crate::connection::lifecycle::far_future;
use crate::connection::{Connection, driver};
use crate::cursor::{Cursor, StreamCursor};
use crate::http_client::{Denied, authenticate, channels};
use crate::outbox::{Delivery, sse_fields};
use crate::{ClientAddress, Edge};

/// Comment line sent when nothing else is, so proxies keep the stream open
/// and clients notice a dead one.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long browsers wait before reconnecting, ms (the `retry:` field).
const RETRY_MS: u64 = 3000;
/// Chunks buffered between the stream task and the HTTP body.
const BODY_BUFFER: usize = 32;
/// A chunk the client does not take within this is a stalled stream.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub(crate) struct Params {
    channels: String,
    token: Option<String>,
    last_event_id: Option<String>,
}

/// `event: subscribe`, once per channel when the stream opens: where the
/// channel stands and whether what was missed could be replayed.
#[derive(Serialize)]
struct Subscribed<'a> {
    channel: &'a Channel,
    offset: u64,
    epoch: &'a str,
    recovered: bool,
}

pub(crate) async fn stream(
    State(edge): State<Arc<Edge>>,
    client: ClientAddress,
    headers: HeaderMap,
    offer: Option<Extension<SocketOffer>>,
    Query(params): Query<Params>,
) -> Response {
    match open(edge, &client, headers, offer.map(|Extension(o)| o), params) {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn open(
    edge: Arc<Edge>,
    client: &ClientAddress,
    headers: HeaderMap,
    offer: Option<SocketOffer>,
    params: Params,
) -> Result<Response, Denied> {
    let permit = edge.admit(&headers, client)?;
    let claims = authenticate(&edge, &headers, params.token.as_deref())?;
    let requested = channels(&edge, &claims, &params.channels)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(params.last_event_id)
        .filter(|id| !id.is_empty());
    let cursor = match &last_event_id {
        Some(id) => Cursor::decode_any(id, &requested.all)?,
        None => Cursor::default(),
    };
    let dropped = requested.narrowed(&cursor)?;

    let mut conn = Connection::new(
        edge.clone(),
        herald_protocol::presence::Transport::Sse,
        permit,
    );
    conn.register(claims)?;
    let mut first = format!("retry: {RETRY_MS}\n\n");
    for unsubscribed in &dropped {
        first.push_str(&unsubscribe_event(unsubscribed));
    }
    // On a socket of its own (a fresh connection) the stream is written
    // straight to it; behind hyper (a connection that served a request
    // before) through a body channel.
    let (sink, body) = match offer.as_ref().and_then(SocketOffer::take) {
        Some(socket) => (Sink::Waiting(socket), Body::from(first)),
        None => {
            let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
            // A fresh channel has room for the first chunk.
            let _ = tx.try_send(Bytes::from(first));
            let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
            }));
            (Sink::Body(tx), body)
        }
    };
    let transport = SseTransport {
        commands: requested
            .allowed
            .iter()
            .map(|channel| Internal::Subscribe {
                channel: channel.clone(),
                since: cursor.get(channel).cloned(),
            })
            .collect(),
        cursor: StreamCursor::new(&requested.allowed),
        sink,
        ends_at: match edge.config.edge.sse_max_duration_secs {
            0 => None,
            secs => Some(Instant::now() + Duration::from_secs(secs)),
        },
    };
    tokio::spawn(edge.connections.track_future(driver::run(conn, transport)));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-transform"),
            ),
            // nginx and others buffer responses unless told not to
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response())
}

pub(crate) struct SseTransport {
    /// The stream's channels, subscribed when it starts.
    commands: VecDeque<Internal>,
    cursor: StreamCursor,
    sink: Sink,
    /// `sse_max_duration_secs`: the stream ends quietly then, and the
    /// client reconnects (and rebalances) with its `Last-Event-ID`.
    ends_at: Option<Instant>,
}

/// Where a stream's bytes go.
enum Sink {
    /// Its own socket, once the accept path has written the answer's head.
    Waiting(oneshot::Receiver<ClientSocket>),
    Socket(ClientSocket),
    /// The body of an answer hyper writes.
    Body(mpsc::Sender<Bytes>),
}

impl Sink {
    /// The socket, waiting for the head to be written first; `None` when
    /// the stream is a hyper body.
    async fn socket(&mut self) -> Result<Option<&mut ClientSocket>, WriteError> {
        if let Sink::Waiting(handed) = self {
            let socket = handed.await.map_err(|_| WriteError::Gone)?;
            *self = Sink::Socket(socket);
        }
        match self {
            Sink::Socket(socket) => Ok(Some(socket)),
            _ => Ok(None),
        }
    }

    /// Resolves when the client is gone. Cancel-safe.
    async fn gone(&mut self) {
        if let Sink::Body(tx) = self {
            return tx.closed().await;
        }
        if let Ok(Some(socket)) = self.socket().await {
            socket.gone().await
        }
    }
}

impl SseTransport {
    async fn send(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
            if let Sink::Body(tx) = &self.sink {
                return tx.send(chunk).await.map_err(|_| WriteError::Gone);
            }
            match self.sink.socket().await? {
                Some(socket) => socket
                    .write_chunk(&chunk)
                    .await
                    .map_err(|_| WriteError::Gone),
                None => Err(WriteError::Gone),
            }
        })
        .await;
        match sent {
            Ok(result) => result,
            Err(_) => Err(WriteError::Close(CloseCode::SlowConsumer)),
        }
    }

    fn put_delivery(&mut self, delivery: &Delivery, buf: &mut BytesMut) {
        put_event(&mut self.cursor, delivery, buf);
    }

    fn put_id(&self, buf: &mut BytesMut) {
        put_id(&self.cursor, buf);
    }
}

impl Transport for SseTransport {
    async fn read(&mut self) -> Read {
        if let Some(command) = self.commands.pop_front() {
            return Read::Command(command);
        }
        tokio::select! {
            _ = self.sink.gone() => Read::Gone,
            _ = sleep_until(self.ends_at.unwrap_or_else(far_future)), if self.ends_at.is_some() => {
                Read::Close(None)
            }
        }
    }

    async fn write(&mut self, out: &mut Vec<Out>) -> Result<(), WriteError> {
        let mut buf = BytesMut::new();
        for item in out.drain(..) {
            match item {
                Out::Push(delivery) => self.put_delivery(&delivery, &mut buf),
                Out::Unsubscribed(u) => buf.put_slice(unsubscribe_event(&u).as_bytes()),
                Out::Reply(reply) => match reply.body {
                    ReplyBody::Subscribed(channel, ok) => {
                        for publication in ok.publications.iter().flatten() {
                            let delivery = crate::hub::delivery_of_publication(publication);
                            self.put_delivery(&delivery, &mut buf);
                        }
                        self.cursor.set(&channel, ok.offset, &ok.epoch);
                        let subscribed = Subscribed {
                            channel: &channel,
                            offset: ok.offset,
                            epoch: &ok.epoch,
                            recovered: ok.recovered.unwrap_or(true),
                        };
                        buf.put_slice(sse_fields("subscribe", &encode(&subscribed)).as_bytes());
                        self.put_id(&mut buf);
                    }
                    ReplyBody::Error(e) => {
                        tracing::warn!(error = %e.message, "SSE subscribe failed");
                        if !buf.is_empty() {
                            self.send(buf.split().freeze()).await?;
                        }
                        return Err(WriteError::Close(CloseCode::ServerError));
                    }
                    ReplyBody::Ok(_) | ReplyBody::Connected(_) => {}
                },
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.send(buf.freeze()).await
    }

    fn keepalive(&self) -> Option<Keepalive> {
        Some(Keepalive {
            every: PING_EVERY,
            answered: false,
        })
    }

    async fn ping(&mut self) -> Result<(), WriteError> {
        self.send(Bytes::from_static(b": ping\n\n")).await
    }

    async fn close(mut self, code: Option<CloseCode>) {
        if let Some(Push::Disconnect(body)) = code.map(|c| c.disconnect_push()) {
            let event = format!("{}\n", sse_fields("disconnect", &encode(&body)));
            let _ = self.send(Bytes::from(event)).await;
        }
        if let Sink::Socket(socket) = self.sink {
            // the body's end, so that the client sees a whole answer
            let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.finish()).await;
        }
    }
}

/// A push as an SSE event into `buf`; a publication also moves the
/// stream's cursor, whose new value is the event's id. The whole cost of a
/// delivery to one stream (public for the benchmark).
pub fn put_event(cursor: &mut StreamCursor, delivery: &Delivery, buf: &mut BytesMut) {
    buf.put_slice(&delivery.sse_event());
    match &delivery.position {
        Some(StreamPosition { offset, epoch }) => {
            cursor.set(&delivery.channel, *offset, epoch);
            put_id(cursor, buf);
        }
        None => buf.put_u8(b'\n'),
    }
}

fn put_id(cursor: &StreamCursor, buf: &mut BytesMut) {
    buf.put_slice(b"id: ");
    buf.put_slice(cursor.as_str().as_bytes());
    buf.put_slice(b"\n\n");
}

fn unsubscribe_event(unsubscribed: &Unsubscribed) -> String {
    format!("{}\n", sse_fields("unsubscribe", &encode(unsubscribed)))
}
