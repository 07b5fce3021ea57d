//! One client's session, whatever the transport: who it is, what it is
//! subscribed to, and the dispatch of its commands.

use std::collections::HashSet;
use std::sync::Arc;

use herald_core::auth::Claims;
use herald_core::channel::Channel;
use herald_core::protocol::{
    CloseCode, Command, ErrorBody, ErrorCode, ErrorReply, OkReply, decode_command, encode,
};
use herald_core::shutdown::Shutdown;
use serde::Serialize;

use crate::Edge;
use crate::commands;
use crate::hub::ConnId;
use crate::outbox::Outbox;

/// What the transport does after a command.
pub(crate) enum Outcome {
    /// Send this frame.
    Reply(String),
    /// The client answered a ping.
    Pong,
    /// Send this frame, then close the connection with this code.
    Close { reply: String, code: CloseCode },
}

pub(crate) struct Session {
    pub edge: Arc<Edge>,
    pub conn: ConnId,
    pub client_id: String,
    pub outbox: Outbox,
    pub claims: Option<Claims>,
    pub subscriptions: HashSet<Channel>,
    /// Fires when the server API disconnects this user.
    pub kicked: Shutdown,
}

impl Session {
    pub fn new(edge: Arc<Edge>, outbox: Outbox) -> Self {
        let conn = edge.next_conn_id();
        let client_id = format!("{}-{conn}", edge.node_id);
        Session {
            edge,
            conn,
            client_id,
            outbox,
            claims: None,
            subscriptions: HashSet::new(),
            kicked: Shutdown::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.claims.is_some()
    }

    /// Seconds since the Unix epoch when the current token expires.
    pub fn expires_at(&self) -> Option<i64> {
        self.claims.as_ref().map(|c| c.exp)
    }

    /// The claims of a connected session, or the error for commands sent
    /// before `connect`.
    pub fn claims(&self) -> Result<&Claims, ErrorBody> {
        self.claims
            .as_ref()
            .ok_or_else(|| ErrorBody::new(ErrorCode::Unauthorized, "send `connect` first"))
    }

    /// Decodes and runs one command frame.
    pub async fn handle(&mut self, text: &str) -> Outcome {
        let frame = match decode_command(text) {
            Ok(f) => f,
            Err(e) => {
                crate::stats::client_error(ErrorCode::BadRequest);
                return Outcome::Reply(encode(&e.into_reply()));
            }
        };
        // Only `pong` may come without an id, and it gets no reply.
        let id = frame.id.unwrap_or_default();
        match frame.command {
            Command::Pong => Outcome::Pong,
            Command::Connect(c) => commands::connect::run(self, id, c).await,
            _ if !self.is_connected() => reply::<()>(
                id,
                Err(ErrorBody::new(
                    ErrorCode::Unauthorized,
                    "send `connect` first",
                )),
            ),
            Command::Subscribe(c) => reply(id, commands::subscribe::run(self, c).await),
            Command::Unsubscribe(c) => reply(id, commands::unsubscribe::run(self, c).await),
            Command::Publish(c) => reply(id, commands::publish::run(self, c).await),
            Command::Typing(c) => reply(id, commands::typing::run(self, c).await),
            Command::Refresh(c) => reply(id, commands::refresh::run(self, c)),
            Command::Presence(c) => reply(id, commands::presence::run(self, c).await),
        }
    }

    /// Leaves every channel. Called once when the connection ends.
    pub async fn close(self) {
        if let Some(claims) = &self.claims {
            self.edge.users.remove(&claims.sub, self.conn);
            self.edge.presence_gone(self.conn).await;
        }
        for channel in &self.subscriptions {
            self.edge.hub.unsubscribe(channel, self.conn).await;
        }
    }
}

/// `{"id":…,"ok":…}` or `{"id":…,"error":…}`.
pub(crate) fn reply<T: Serialize>(id: u64, result: Result<T, ErrorBody>) -> Outcome {
    Outcome::Reply(match result {
        Ok(ok) => encode(&OkReply { id, ok }),
        Err(error) => {
            crate::stats::client_error(error.code);
            encode(&ErrorReply {
                id: Some(id),
                error,
            })
        }
    })
}
