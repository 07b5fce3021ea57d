//! The WebSocket transport: `GET /ws`, one JSON object per text frame.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use herald_core::auth::unix_now;
use herald_core::protocol::{
    CloseCode, EmptyOk, ErrorBody, ErrorCode, ErrorReply, Push, SUBPROTOCOL, decode_command, encode,
};
use tokio::time::{Instant, sleep_until};

use crate::Edge;
use crate::admission::Permit;
use crate::outbox::{Delivery, Inbox};
use crate::rate::TokenBucket;
use crate::session::{Outcome, Session};

/// A write that takes longer than this means the client stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the last frames and the close frame may take to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// A slow consumer has megabytes in the socket ahead of its close frame:
/// it gets longer to read them (holding only kernel buffers meanwhile).
const SLOW_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Room for the JSON around `data` in a publish frame.
const FRAME_OVERHEAD: usize = 4096;
/// Commands refused in a row (rate limit) before the connection is closed
/// as abusive.
const ABUSE_LIMIT: u32 = 100;

pub(crate) async fn upgrade(
    State(edge): State<Arc<Edge>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let permit = match edge.admit(&headers) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
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
            tracker.track_future(run(edge, socket, permit))
        })
        .into_response()
}

/// Why the loop ended.
enum End {
    /// The peer went away; nothing more to send.
    Gone,
    /// We close with this code, after an optional last frame.
    Close(CloseCode, Option<String>),
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

async fn run(edge: Arc<Edge>, mut socket: WebSocket, _permit: Permit) {
    let (outbox, mut inbox, overflow) = edge.new_outbox();
    let mut session = Session::new(edge.clone(), outbox);
    let mut commands = TokenBucket::new(edge.config.command_rate, edge.config.command_burst);
    let mut refused_in_a_row = 0u32;
    let connect_deadline = Instant::now() + Duration::from_secs(edge.config.connect_timeout_secs);
    let ping_every = edge.config.ping_interval();
    let mut next_ping = Instant::now() + ping_every;
    let mut pong_deadline: Option<Instant> = None;
    let mut drain_at: Option<Instant> = None;

    let end = loop {
        let expiry = session.expires_at().map(instant_of_unix);
        tokio::select! {
            biased;
            _ = edge.shutdown.wait(), if drain_at.is_none() => {
                // Each connection leaves at its own moment of the window.
                drain_at = Some(Instant::now() + edge.drain_delay());
            }
            _ = sleep_until(drain_at.unwrap_or_else(far_future)), if drain_at.is_some() => {
                break End::Close(CloseCode::Shutdown, None);
            }
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
                if !commands.take() {
                    refused_in_a_row += 1;
                    if refused_in_a_row > ABUSE_LIMIT {
                        break End::Close(CloseCode::BadProtocol, None);
                    }
                    if send(&mut socket, too_many_requests(&text, edge.config.command_rate)).await.is_err() {
                        break End::Gone;
                    }
                    continue;
                }
                refused_in_a_row = 0;
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
            Some(first) = inbox.recv() => {
                tokio::select! {
                    biased;
                    // A client that stopped reading is cut even while a
                    // write to it is stuck.
                    _ = overflow.wait() => break End::Close(CloseCode::SlowConsumer, None),
                    written = write_batch(&mut socket, first, &mut inbox, edge.config.write_batch_frames) => match written {
                        Ok(frames) => edge.stats.delivered(frames),
                        // Stuck for WRITE_TIMEOUT: the client is not reading.
                        Err(Stalled::Timeout) => break End::Close(CloseCode::SlowConsumer, None),
                        Err(Stalled::Closed) => break End::Gone,
                    }
                }
            }
            _ = sleep_until(next_ping), if session.is_connected() => {
                next_ping = Instant::now() + ping_every;
                if send(&mut socket, encode(&Push::Ping(EmptyOk {}))).await.is_err() {
                    break End::Gone;
                }
                pong_deadline.get_or_insert(Instant::now() + edge.config.pong_timeout());
            }
            _ = sleep_until(pong_deadline.unwrap_or_else(far_future)), if pong_deadline.is_some() => {
                break End::Close(CloseCode::NoPong, None);
            }
            _ = sleep_until(connect_deadline), if !session.is_connected() => {
                break End::Close(CloseCode::Unauthorized, None);
            }
            _ = sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                break End::Close(CloseCode::TokenExpired, None);
            }
        }
    };

    // Nothing more will be read from the outbox: let the hub forget it first.
    let session_id = session.client_id.clone();
    session.close().await;
    drop(inbox);
    if let End::Close(code, last) = end {
        if code == CloseCode::SlowConsumer {
            edge.stats.slow_consumer();
            tracing::info!(client = %session_id, "slow consumer disconnected");
        }
        close(&mut socket, code, last).await;
    }
}

/// The 107 reply to a command over the rate limit (with its id when the
/// frame has one).
fn too_many_requests(text: &str, rate: u32) -> String {
    let id = decode_command(text).ok().and_then(|f| f.id);
    encode(&ErrorReply {
        id,
        error: ErrorBody::new(
            ErrorCode::TooManyRequests,
            format!("too many commands: at most {rate} per second"),
        ),
    })
}

/// Sends the last reply (if any), the `disconnect` push and the close frame,
/// giving up on a peer that does not read.
async fn close(socket: &mut WebSocket, code: CloseCode, last: Option<String>) {
    let patience = if code == CloseCode::SlowConsumer {
        SLOW_CLOSE_TIMEOUT
    } else {
        CLOSE_TIMEOUT
    };
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
    let _ = tokio::time::timeout(patience, goodbye).await;
    // Complete the closing handshake: read (and drop) what the peer still
    // sends until its Close. Dropping the socket at once would reset the
    // connection and could destroy the close frame before the peer reads it.
    let handshake = async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Why a write did not complete.
enum Stalled {
    Timeout,
    Closed,
}

/// Writes `first` and whatever else is already queued (up to `max`
/// frames), then flushes once: one write rather than one syscall per frame.
/// Answers how many frames went out.
async fn write_batch(
    socket: &mut WebSocket,
    first: Arc<Delivery>,
    queued: &mut Inbox,
    max: usize,
) -> Result<u64, Stalled> {
    let batch = async {
        socket.feed(Message::Text(first.frame.clone())).await?;
        let mut frames = 1;
        while frames < max {
            match queued.try_recv() {
                Some(d) => socket.feed(Message::Text(d.frame.clone())).await?,
                None => break,
            }
            frames += 1;
        }
        socket.flush().await.map(|()| frames as u64)
    };
    match tokio::time::timeout(WRITE_TIMEOUT, batch).await {
        Ok(Ok(frames)) => Ok(frames),
        Ok(Err(_)) => Err(Stalled::Closed),
        Err(_) => Err(Stalled::Timeout),
    }
}

/// The instant a Unix timestamp (seconds) falls on.
fn instant_of_unix(at: i64) -> Instant {
    let left = at.saturating_sub(unix_now()).max(0) as u64;
    Instant::now() + Duration::from_secs(left)
}
