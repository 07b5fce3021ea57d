//! What carries a connection: only framing. A transport reads what the
//! client says (command frames over WebSocket; nothing more on SSE; polls
//! on long polling), writes what the connection sends in the form its wire
//! wants, and closes with a code. Everything else a connection is lives in
//! `crate::connection`, once for all three.

pub(crate) mod poll;
pub mod sse;
pub(crate) mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herald_protocol::channel::Channel;
use herald_protocol::{
    CloseCode, ConnectOk, ErrorBody, ErrorReply, Push, SubscribeOk, Unsubscribed, encode,
};

use crate::outbox::Delivery;

/// What a transport read from its client.
pub(crate) enum Read {
    /// A command frame (WebSocket), as the client sent it.
    Frame(String),
    /// A frame the transport cannot carry as a command (binary data).
    Unsupported(&'static str),
    /// What the HTTP transports ask on their client's behalf: the channels
    /// of the request, a newer token.
    Command(Internal),
    /// Something only the transport cared about (a poll came or went).
    Idle,
    /// The client is gone.
    Gone,
    /// The transport ends the connection: with this code, or quietly.
    Close(Option<CloseCode>),
}

/// Commands the HTTP transports derive from their requests.
pub(crate) enum Internal {
    /// Follow a channel, resuming after `since` when known.
    Subscribe {
        channel: Channel,
        since: Option<herald_protocol::StreamPosition>,
    },
    Unsubscribe(Channel),
    /// A newer token for the same user (a long poll carried it).
    Refresh(herald_core::auth::Claims),
}

/// One item the connection sends, in order.
pub(crate) enum Out {
    /// The answer to a command.
    Reply(Reply),
    /// A push shared by every connection that receives it.
    Push(Arc<Delivery>),
    /// The server ended a subscription (a refresh no longer allows it).
    Unsubscribed(Unsubscribed),
}

/// A command's answer: `id` is `None` for the HTTP transports' own
/// commands, which have no frame to answer.
pub(crate) struct Reply {
    pub id: Option<u64>,
    pub body: ReplyBody,
}

pub(crate) enum ReplyBody {
    /// The `ok` member, already JSON.
    Ok(String),
    Error(ErrorBody),
    Connected(ConnectOk),
    Subscribed(Channel, SubscribeOk),
}

impl Reply {
    /// The reply as a WebSocket frame: `{"id":…,"ok":…}` or `{"id":…,"error":…}`.
    pub(crate) fn frame(&self) -> String {
        let id = self.id.unwrap_or_default();
        match &self.body {
            ReplyBody::Ok(json) => {
                let mut frame = String::with_capacity(json.len() + 32);
                frame.push_str("{\"id\":");
                frame.push_str(itoa::Buffer::new().format(id));
                frame.push_str(",\"ok\":");
                frame.push_str(json);
                frame.push('}');
                frame
            }
            ReplyBody::Error(error) => encode(&ErrorReply {
                id: self.id,
                error: error.clone(),
            }),
            ReplyBody::Connected(ok) => encode(&herald_protocol::OkReply { id, ok }),
            ReplyBody::Subscribed(_, ok) => encode(&herald_protocol::OkReply { id, ok }),
        }
    }
}

impl Out {
    /// The frame of a server-side unsubscribe.
    pub(crate) fn unsubscribed_frame(u: &Unsubscribed) -> String {
        encode(&Push::Unsubscribe(u.clone()))
    }
}

/// How a transport keeps an idle connection alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub every: Duration,
    /// Whether the client must answer (`pong`), or the ping is only traffic.
    pub answered: bool,
}

/// Why a write did not complete.
pub(crate) enum WriteError {
    /// The client is gone or stopped reading.
    Gone,
    /// The transport cannot go on: close with this code.
    Close(CloseCode),
}

/// The framing of one connection.
pub(crate) trait Transport: Send + 'static {
    /// The next thing the client says; pending while it says nothing.
    /// Cancel-safe: the connection selects on it with everything else.
    fn read(&mut self) -> impl Future<Output = Read> + Send;

    /// Whether deliveries may be taken from the outbox now (a long poll
    /// takes them only while one is held; meanwhile they wait, bounded).
    fn accepts_deliveries(&self) -> bool {
        true
    }

    /// Writes `out` in order (draining it) and flushes.
    fn write(&mut self, out: &mut Vec<Out>) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// How often to ping, if at all.
    fn keepalive(&self) -> Option<Keepalive>;

    /// Sends one keep-alive.
    fn ping(&mut self) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Ends the connection: tells the client why (`Some` code) and closes.
    fn close(self, code: Option<CloseCode>) -> impl Future<Output = ()> + Send;
}
