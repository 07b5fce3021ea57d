//! The WebSocket transport: `GET /ws`, one JSON object per text frame.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use herald_core::auth::unix_now;
use herald_core::protocol::{
    CloseCode, EmptyOk, ErrorBody, ErrorCode, ErrorReply, Push, SUBPROTOCOL, encode,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::Edge;
use crate::hub::{Frame, Outbox};
use crate::session::{Outcome, Session};

/// A write that takes longer than this means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written before one flush: replies and pushes waiting for a
/// connection leave in one write rather than one syscall each.
const MAX_BATCH: usize = 64;
/// Room for the JSON around `data` in a publish frame.
const FRAME_OVERHEAD: usize = 4096;

pub(crate) async fn upgrade(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if edge.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if !origin_allowed(&edge.config.allowed_origins, &headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let max_message = edge.config.max_message_bytes + FRAME_OVERHEAD;
    ws.protocols([SUBPROTOCOL])
        // Idle connections should cost little: tungstenite's defaults
        // reserve 128 KiB for each of the read and write buffers.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(max_message * 4)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            let tracker = edge.connections.clone();
            tracker.track_future(run(edge, socket))
        })
}

/// Browsers send `Origin`; other clients usually do not, and are allowed.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() || allowed.iter().any(|a| a == "*") {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)),
    }
}

/// Why the loop ended.
enum End {
    /// The peer went away; nothing more to send.
    Gone,
    /// We close with this code, after an optional last frame.
    Close(CloseCode, Option<String>),
}

async fn run(edge: Arc<Edge>, mut socket: WebSocket) {
    let (outbox, mut queued, overflow) = Outbox::new(edge.config.client_queue_len);
    let mut session = Session::new(edge.clone(), outbox);
    let connect_deadline = Instant::now() + Duration::from_secs(edge.config.connect_timeout_secs);
    let ping_every = edge.config.ping_interval();
    let mut next_ping = Instant::now() + ping_every;
    let mut pong_deadline: Option<Instant> = None;

    let end = loop {
        let expiry = session.expires_at().map(instant_of_unix);
        tokio::select! {
            biased;
            _ = edge.shutdown.wait() => break End::Close(CloseCode::Shutdown, None),
            _ = overflow.wait() => break End::Close(CloseCode::SlowConsumer, None),
            _ = session.kicked.wait() => break End::Close(CloseCode::Forbidden, None),
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let reply = encode(&ErrorReply {
                            id: None,
                            error: ErrorBody::new(ErrorCode::BadRequest, "binary frames are not supported; send JSON text"),
                        });
                        if send(&mut socket, reply).await.is_err() {
                            break End::Gone;
                        }
                        continue;
                    }
                    // tungstenite answers WebSocket pings itself
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break End::Gone,
                    Some(Err(e)) => {
                        // Oversized or malformed WebSocket frames end up here.
                        tracing::debug!(error = %e, "websocket read failed");
                        break End::Close(CloseCode::BadProtocol, None);
                    }
                };
                match session.handle(&text).await {
                    Outcome::Reply(reply) => {
                        if send(&mut socket, reply).await.is_err() {
                            break End::Gone;
                        }
                    }
                    Outcome::Pong => pong_deadline = None,
                    Outcome::Close { reply, code } => break End::Close(code, Some(reply)),
                }
            }
            Some(frame) = queued.recv() => {
                if write_batch(&mut socket, frame, &mut queued).await.is_err() {
                    break End::Gone;
                }
            }
            _ = sleep_until(next_ping), if session.is_connected() => {
                next_ping = Instant::now() + ping_every;
                if send(&mut socket, encode(&Push::Ping(EmptyOk {}))).await.is_err() {
                    break End::Gone;
                }
                pong_deadline.get_or_insert(Instant::now() + edge.config.pong_timeout());
            }
            _ = sleep_until(pong_deadline.unwrap_or(connect_deadline)), if pong_deadline.is_some() => {
                break End::Close(CloseCode::NoPong, None);
            }
            _ = sleep_until(connect_deadline), if !session.is_connected() => {
                break End::Close(CloseCode::Unauthorized, None);
            }
            _ = sleep_until(expiry.unwrap_or(connect_deadline)), if expiry.is_some() => {
                break End::Close(CloseCode::TokenExpired, None);
            }
        }
    };

    if let End::Close(code, last) = end {
        close(&mut socket, code, last).await;
    }
    session.close().await;
}

/// Sends the last reply (if any), the `disconnect` push and the close frame,
/// giving up quickly on a peer that does not read.
async fn close(socket: &mut WebSocket, code: CloseCode, last: Option<String>) {
    let goodbye = async {
        if let Some(last) = last {
            socket.feed(Message::Text(last.into())).await?;
        }
        socket
            .feed(Message::Text(encode(&code.disconnect_push()).into()))
            .await?;
        socket
            .send(Message::Close(Some(CloseFrame {
                code: code.as_u16(),
                reason: Utf8Bytes::from_static(code.reason()),
            })))
            .await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    first: Frame,
    queued: &mut mpsc::Receiver<Frame>,
) -> Result<(), ()> {
    let batch = async {
        socket.feed(Message::Text(first)).await?;
        for _ in 1..MAX_BATCH {
            match queued.try_recv() {
                Ok(frame) => socket.feed(Message::Text(frame)).await?,
                Err(_) => break,
            }
        }
        socket.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, batch).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The instant a Unix timestamp (seconds) falls on.
fn instant_of_unix(at: i64) -> Instant {
    let left = at.saturating_sub(unix_now()).max(0) as u64;
    Instant::now() + Duration::from_secs(left)
}
