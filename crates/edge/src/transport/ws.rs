//! The WebSocket transport: `GET /ws`, one JSON object per text frame.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use herald_protocol::{CloseCode, EmptyOk, Push, SUBPROTOCOL, encode};

use super::{Keepalive, Out, Read, Transport, WriteError};
use crate::connection::{Connection, driver};
use crate::{ClientAddress, Edge};

/// Room for the JSON around `data` in a publish frame.
const FRAME_OVERHEAD: usize = 4096;

pub(crate) async fn upgrade(
    State(edge): State<Arc<Edge>>,
    client: ClientAddress,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let permit = match edge.admit(&headers, &client) {
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
            let conn = Connection::new(
                edge.clone(),
                herald_protocol::presence::Transport::Ws,
                permit,
            )
            .awaiting_connect();
            let transport = WsTransport {
                socket,
                edge: edge.clone(),
            };
            edge.connections.track_future(driver::run(conn, transport))
        })
        .into_response()
}

pub(crate) struct WsTransport {
    socket: WebSocket,
    /// For the timers of the settings (one pointer, not a copy of each).
    edge: Arc<Edge>,
}

impl WsTransport {
    /// A write that takes longer means the client stopped reading.
    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.edge.config.edge.write_timeout_secs)
    }

    /// How long the last frames and the close frame may take to leave.
    fn close_timeout(&self) -> Duration {
        Duration::from_secs(self.edge.config.edge.close_timeout_secs)
    }
}

impl Transport for WsTransport {
    async fn read(&mut self) -> Read {
        loop {
            return match self.socket.recv().await {
                Some(Ok(Message::Text(text))) => Read::Frame(text),
                Some(Ok(Message::Binary(_))) => {
                    Read::Unsupported("binary frames are not supported; send JSON text")
                }
                // tungstenite answers WebSocket pings itself
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued the answering close frame: send it,
                    // so the client sees its own code, not 1006.
                    let patience = self.close_timeout();
                    let _ = tokio::time::timeout(patience, self.socket.flush()).await;
                    Read::Gone
                }
                None => Read::Gone,
                Some(Err(e)) => {
                    // Oversized or malformed WebSocket frames end up here.
                    tracing::debug!(error = %e, "websocket read failed");
                    Read::Close(Some(CloseCode::BadProtocol))
                }
            };
        }
    }

    /// Feeds every frame, then flushes once: one write rather than one
    /// syscall per frame.
    async fn write(&mut self, out: &mut Vec<Out>) -> Result<(), WriteError> {
        let patience = self.write_timeout();
        let socket = &mut self.socket;
        let batch = async {
            for item in out.drain(..) {
                socket.feed(Message::Text(frame(item))).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(patience, batch).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Gone),
            // Stuck for the write timeout: the client is not reading.
            Err(_) => Err(WriteError::Close(CloseCode::SlowConsumer)),
        }
    }

    fn keepalive(&self) -> Option<Keepalive> {
        Some(Keepalive {
            every: self.edge.config.ping_interval(),
            answered: true,
        })
    }

    async fn ping(&mut self) -> Result<(), WriteError> {
        let ping = Message::Text(encode(&Push::Ping(EmptyOk {})).into());
        match tokio::time::timeout(self.write_timeout(), self.socket.send(ping)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteError::Gone),
        }
    }

    /// Sends the `disconnect` push and the close frame, giving up on a
    /// peer that does not read, then waits for the peer's close.
    async fn close(mut self, code: Option<CloseCode>) {
        let Some(code) = code else { return };
        let close_timeout = self.close_timeout();
        // A slow consumer has megabytes in the socket ahead of its close
        // frame: it gets longer to read them (holding only kernel buffers
        // meanwhile).
        let patience = if code == CloseCode::SlowConsumer {
            Duration::from_secs(self.edge.config.edge.slow_close_timeout_secs)
        } else {
            close_timeout
        };
        let socket = &mut self.socket;
        let goodbye = async {
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
        let _ = tokio::time::timeout(close_timeout, handshake).await;
    }
}

/// One item as its text frame: pushes are the shared bytes, as they are.
fn frame(item: Out) -> Utf8Bytes {
    match item {
        Out::Push(delivery) => delivery.frame.clone(),
        Out::Reply(reply) => reply.frame().into(),
        Out::Unsubscribed(u) => Out::unsubscribed_frame(&u).into(),
    }
}
