//! Server-Sent Events: `GET /sse?channels=a,b`. One event per push;
//! `id:` is an opaque cursor covering every channel of the stream, so a
//! reconnect with `Last-Event-ID` (or `last_event_id=`) resumes them all.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use herald_core::auth::{Claims, unix_now};
use herald_core::channel::Channel;
use herald_core::presence::Transport;
use herald_core::protocol::{CloseCode, Push, encode};
use herald_core::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::Edge;
use crate::admission::Permit;
use crate::commands::subscribe::join;
use crate::cursor::Cursor;
use crate::http_client::{HttpError, authenticate, channels};
use crate::outbox::{Delivery, sse_fields};

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
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let permit = match edge.admit(&headers) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let claims = match authenticate(&edge, &headers, params.token.as_deref()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let channels = match channels(&edge, &claims, &params.channels) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(params.last_event_id)
        .filter(|id| !id.is_empty());
    let cursor = match last_event_id.as_deref().map(Cursor::decode).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return HttpError(e).into_response(),
    };
    let conn = edge.next_conn_id();
    let kicked = Shutdown::new();
    if let Err(e) = edge.users.add(
        &claims.sub,
        conn,
        kicked.clone(),
        edge.config.max_connections_per_user,
    ) {
        return HttpError(e).into_response();
    }

    edge.reporter.connect(conn, &claims.sub, Transport::Sse);
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    }));
    let task = run(
        edge.clone(),
        Stream {
            conn,
            claims,
            channels,
            cursor,
            kicked,
            tx,
        },
        permit,
    );
    tokio::spawn(edge.connections.track_future(task));
    (
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
        .into_response()
}

struct Stream {
    conn: u64,
    claims: Claims,
    channels: Vec<Channel>,
    cursor: Cursor,
    kicked: Shutdown,
    tx: mpsc::Sender<Bytes>,
}

/// The client went away, or stopped reading.
struct Gone;

impl Stream {
    async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), Gone> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(chunk.into())).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Gone),
        }
    }

    /// A push as an event; publications also move the cursor, whose new
    /// value is the event's id.
    async fn send_delivery(&mut self, delivery: &Delivery) -> Result<(), Gone> {
        self.send(delivery.sse_event()).await?;
        match &delivery.position {
            Some((offset, epoch)) => {
                self.cursor.set(&delivery.channel, *offset, epoch);
                self.send(format!("id: {}\n\n", self.cursor.encode())).await
            }
            None => self.send(Bytes::from_static(b"\n")).await,
        }
    }

    async fn send_disconnect(&self, code: CloseCode) -> Result<(), Gone> {
        let Push::Disconnect(body) = code.disconnect_push() else {
            return Ok(());
        };
        self.send(format!("{}\n", sse_fields("disconnect", &encode(&body))))
            .await
    }
}

async fn run(edge: Arc<Edge>, mut stream: Stream, _permit: Permit) {
    let (outbox, mut inbox, overflow) = edge.new_outbox();
    let mut joined: Vec<Channel> = Vec::new();
    let end = async {
        stream.send(format!("retry: {RETRY_MS}\n\n")).await?;
        for channel in stream.channels.clone() {
            let since = stream.cursor.get(&channel).cloned();
            let ok = match join(&edge, stream.conn, &outbox, &channel, since.as_ref()).await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e.message, "SSE subscribe failed");
                    return Ok(Some(CloseCode::ServerError));
                }
            };
            joined.push(channel.clone());
            if !is_personal(&channel, &stream.claims.sub) {
                edge.presence_joined(stream.conn, &channel).await;
            }
            for publication in ok.publications.iter().flatten() {
                let delivery = crate::hub::delivery_of_publication(publication);
                stream.send_delivery(&delivery).await?;
            }
            stream.cursor.set(&channel, ok.offset, &ok.epoch);
            let subscribed = Subscribed {
                channel: &channel,
                offset: ok.offset,
                epoch: &ok.epoch,
                recovered: ok.recovered.unwrap_or(true),
            };
            let event = sse_fields("subscribe", &encode(&subscribed));
            stream
                .send(format!("{event}id: {}\n\n", stream.cursor.encode()))
                .await?;
        }
        live(&edge, &mut stream, &mut inbox, &overflow).await
    }
    .await;
    if let Ok(Some(code)) = end {
        if code == CloseCode::SlowConsumer {
            edge.stats.slow_consumer();
        }
        let _ = stream.send_disconnect(code).await;
    }
    for channel in &joined {
        edge.hub.unsubscribe(channel, stream.conn).await;
    }
    edge.users.remove(&stream.claims.sub, stream.conn);
    edge.presence_gone(stream.conn).await;
}

/// The user's own `#user` channel, which every stream carries.
pub(crate) fn is_personal(channel: &Channel, user: &str) -> bool {
    Channel::personal(user).is_ok_and(|p| p == *channel)
}

/// Streams live pushes until the client goes, or the server ends the
/// stream (with the `disconnect` code to send, if any).
async fn live(
    edge: &Edge,
    stream: &mut Stream,
    inbox: &mut crate::outbox::Inbox,
    overflow: &Shutdown,
) -> Result<Option<CloseCode>, Gone> {
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    let mut next_ping = Instant::now() + PING_EVERY;
    let mut drain_at: Option<Instant> = None;
    let expires = {
        let left = stream.claims.exp.saturating_sub(unix_now()).max(0) as u64;
        Instant::now() + Duration::from_secs(left)
    };
    let max_duration = match edge.config.sse_max_duration_secs {
        0 => None,
        secs => Some(Instant::now() + Duration::from_secs(secs)),
    };
    loop {
        tokio::select! {
            biased;
            _ = stream.tx.closed() => return Err(Gone),
            _ = edge.shutdown.wait(), if drain_at.is_none() => {
                drain_at = Some(Instant::now() + edge.drain_delay());
            }
            _ = sleep_until(drain_at.unwrap_or_else(far)), if drain_at.is_some() => {
                return Ok(Some(CloseCode::Shutdown));
            }
            _ = overflow.wait() => return Ok(Some(CloseCode::SlowConsumer)),
            _ = stream.kicked.wait() => return Ok(Some(CloseCode::Forbidden)),
            _ = sleep_until(expires) => return Ok(Some(CloseCode::TokenExpired)),
            // The stream ends quietly: the browser reconnects and resumes.
            _ = sleep_until(max_duration.unwrap_or_else(far)), if max_duration.is_some() => return Ok(None),
            delivery = inbox.recv() => {
                let Some(delivery) = delivery else { return Ok(None) };
                tokio::select! {
                    biased;
                    _ = overflow.wait() => return Ok(Some(CloseCode::SlowConsumer)),
                    sent = stream.send_delivery(&delivery) => sent?,
                }
                edge.stats.delivered(1);
                next_ping = Instant::now() + PING_EVERY;
            }
            _ = sleep_until(next_ping) => {
                stream.send(Bytes::from_static(b": ping\n\n")).await?;
                next_ping = Instant::now() + PING_EVERY;
            }
        }
    }
}
