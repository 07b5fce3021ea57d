//! The WebSocket transport: `GET /ws`, one JSON object per text frame.
//! The framing is our own ([`frame`]): an idle WebSocket holds no buffers.
//! A fresh connection's upgrade is served on its bare socket (the accept
//! path's [`SocketOffer`]); one on a connection that served a request
//! before goes through hyper's upgrade, with the same framing.

pub(crate) mod frame;
mod handshake;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use herald_proto::service::SocketOffer;
use herald_protocol::{CloseCode, EmptyOk, Push, SUBPROTOCOL, encode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Keepalive, Out, Read, Transport, WriteError};
use crate::admission::Permit;
use crate::connection::{Connection, driver};
use crate::{ClientAddress, Edge};
use frame::{Message, WebSocket, WsError};

/// Room for the JSON around `data` in a publish frame.
const FRAME_OVERHEAD: usize = 4096;

pub(crate) async fn upgrade(
    State(edge): State<Arc<Edge>>,
    client: ClientAddress,
    offer: Option<Extension<SocketOffer>>,
    mut request: Request,
) -> Response {
    let accepted = match handshake::accept(request.method(), request.headers(), SUBPROTOCOL) {
        Ok(answer) => answer,
        Err(rejected) => return rejected.into_response(),
    };
    let permit = match edge.admit(request.headers(), &client) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    // the socket arrives once the 101 is written
    if let Some(socket) = offer.and_then(|Extension(o)| o.take()) {
        let task = async move {
            if let Ok(socket) = socket.await {
                run(edge, permit, socket).await;
            }
        };
        tokio::spawn(task);
    } else if let Some(upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    {
        let task = async move {
            if let Ok(upgraded) = upgrade.await {
                run(edge, permit, TokioIo::new(upgraded)).await;
            }
        };
        tokio::spawn(task);
    } else {
        return (
            axum::http::StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded",
        )
            .into_response();
    }
    accepted
}

/// The connection's task, built here and awaited where the socket arrives:
/// as an `async fn` it kept its locals beside the future they moved into
/// (a 5.3 KB task per idle connection; 2 KB as it is).
fn run<S>(edge: Arc<Edge>, permit: Permit, socket: S) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_message = edge.config.max_message_bytes + FRAME_OVERHEAD;
    let conn = Connection::new(
        edge.clone(),
        herald_protocol::presence::Transport::Ws,
        permit,
    )
    .awaiting_connect();
    let transport = WsTransport {
        socket: WebSocket::new(socket, max_message),
        edge: edge.clone(),
    };
    edge.connections.track_future(driver::run(conn, transport))
}

pub(crate) struct WsTransport<S> {
    socket: WebSocket<S>,
    /// For the timers of the settings (one pointer, not a copy of each).
    edge: Arc<Edge>,
}

impl<S> WsTransport<S> {
    /// A write that takes longer means the client stopped reading.
    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.edge.config.edge.write_timeout_secs)
    }

    /// How long the last frames and the close frame may take to leave.
    fn close_timeout(&self) -> Duration {
        Duration::from_secs(self.edge.config.edge.close_timeout_secs)
    }
}

impl<S> Transport for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn read(&mut self) -> Read {
        match self.socket.recv().await {
            Ok(Message::Text(text)) => Read::Frame(text),
            Ok(Message::Binary) => {
                Read::Unsupported("binary frames are not supported; send JSON text")
            }
            Ok(Message::Close(_)) => {
                // the answering close frame is queued: send it, so the
                // client sees its own code, not 1006
                let patience = self.close_timeout();
                let _ = tokio::time::timeout(patience, self.socket.flush()).await;
                Read::Gone
            }
            Err(WsError::Gone | WsError::Io(_)) => Read::Gone,
            Err(e) => {
                // oversized or malformed WebSocket frames
                tracing::debug!(error = %e, "websocket read failed");
                Read::Close(Some(CloseCode::BadProtocol))
            }
        }
    }

    /// Encodes every frame, then writes them at once: one write rather
    /// than one syscall per frame.
    async fn write(&mut self, out: &mut Vec<Out>) -> Result<(), WriteError> {
        for item in out.drain(..) {
            match item {
                Out::Push(delivery) => self.socket.queue_text(delivery.frame.as_str().as_bytes()),
                Out::Reply(reply) => self.socket.queue_text(reply.frame().as_bytes()),
                Out::Unsubscribed(u) => self
                    .socket
                    .queue_text(Out::unsubscribed_frame(&u).as_bytes()),
            }
        }
        match tokio::time::timeout(self.write_timeout(), self.socket.flush()).await {
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
        self.socket
            .queue_text(encode(&Push::Ping(EmptyOk {})).as_bytes());
        match tokio::time::timeout(self.write_timeout(), self.socket.flush()).await {
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
        socket.queue_text(encode(&code.disconnect_push()).as_bytes());
        socket.queue_close(code.as_u16(), code.reason());
        if !matches!(
            tokio::time::timeout(patience, socket.flush()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        // Complete the closing handshake: read (and drop) what the peer still
        // sends until its Close. Dropping the socket at once would reset the
        // connection and could destroy the close frame before the peer reads it.
        let handshake = async {
            while let Ok(message) = socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(close_timeout, handshake).await;
    }
}
