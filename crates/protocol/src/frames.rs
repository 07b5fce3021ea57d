//! Client protocol v1: the JSON frames exchanged with clients, byte for byte
//! the shapes of DESIGN.md. Commands are decoded by [`decode_command`];
//! replies and pushes are plain serde structs.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::position::{Epoch, StreamPosition};
use crate::user::UserId;

/// The WebSocket subprotocol of v1.
pub const SUBPROTOCOL: &str = "herald.v1.json";

/// Error codes carried in `{"error":{"code":…}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: the frame, or a command's arguments, are malformed.
    BadRequest,
    /// 101: no valid token — a bad one, or a command before `connect`.
    Unauthorized,
    /// 103: the token does not allow this channel, or the user is outside its
    /// `#` boundary.
    PermissionDenied,
    /// 104: a well-formed channel in a namespace the server does not know
    /// (under `strict_namespaces`).
    UnknownChannel,
    /// 106: over a size or count limit (data size, broadcast channels,
    /// connections per user).
    LimitExceeded,
    /// 107: over the command rate.
    TooManyRequests,
    /// 109: the token's `exp` has passed.
    TokenExpired,
    /// 110: the history after the asked position is no longer kept.
    Unrecoverable,
    /// The request was sent on and not answered in time: it may have
    /// taken effect. Sent again with the error's `idempotency_key`, it
    /// takes effect once.
    OutcomeUnknown,
    /// 500: the server could not do it (a dependency is down or missing);
    /// nothing was done.
    Internal,
}

impl ErrorCode {
    /// The number carried on the wire.
    pub const fn as_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::UnknownChannel => 104,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::TooManyRequests => 107,
            ErrorCode::TokenExpired => 109,
            ErrorCode::Unrecoverable => 110,
            ErrorCode::OutcomeUnknown => 111,
            ErrorCode::Internal => 500,
        }
    }

    /// The code a wire number stands for, or `None` for one v1 does not define.
    pub fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            100 => ErrorCode::BadRequest,
            101 => ErrorCode::Unauthorized,
            103 => ErrorCode::PermissionDenied,
            104 => ErrorCode::UnknownChannel,
            106 => ErrorCode::LimitExceeded,
            107 => ErrorCode::TooManyRequests,
            109 => ErrorCode::TokenExpired,
            110 => ErrorCode::Unrecoverable,
            111 => ErrorCode::OutcomeUnknown,
            500 => ErrorCode::Internal,
            _ => return None,
        })
    }

    /// The HTTP status the server API answers with for this error.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::UnknownChannel => 404,
            ErrorCode::LimitExceeded => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unrecoverable => 410,
            ErrorCode::OutcomeUnknown => 504,
            ErrorCode::Internal => 500,
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(d)?;
        ErrorCode::from_u16(code)
            .ok_or_else(|| de::Error::custom(format!("unknown error code {code}")))
    }
}

/// The body of an error reply: `{"code":100,"message":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {})", code.as_u16())]
pub struct ErrorBody {
    /// What kind of error, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// With [`ErrorCode::OutcomeUnknown`]: the key to send the request
    /// again with, so that it takes effect once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl ErrorBody {
    /// An error body with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            idempotency_key: None,
        }
    }

    /// An outcome unknown: retry with `key`.
    pub fn outcome_unknown(message: impl Into<String>, key: impl Into<String>) -> Self {
        ErrorBody {
            code: ErrorCode::OutcomeUnknown,
            message: message.into(),
            idempotency_key: Some(key.into()),
        }
    }
}

/// WebSocket close codes. 4000–4499: reconnect and resume; 4500–4999: do
/// not reconnect as you are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 4000: the server is stopping or draining; reconnect elsewhere.
    Shutdown,
    /// 4001: the client did not read fast enough (its outbox overflowed, or a
    /// write stalled).
    SlowConsumer,
    /// 4002: the server could not go on with this connection.
    ServerError,
    /// 4003: no pong came back within the pong timeout of a ping.
    NoPong,
    /// 4004: the connection reached the server's age limit
    /// (`max_connection_age_secs`); reconnect, to any server, and resume —
    /// so long-lived connections spread onto servers added since.
    Rebalance,
    /// 4500: the client broke the protocol (an oversized message, too many
    /// refused commands in a row).
    BadProtocol,
    /// 4501: no valid token (a bad one, or no `connect` in time).
    Unauthorized,
    /// 4503: the application removed the user, or the user is over a limit.
    Forbidden,
    /// 4509: the token expired without a `refresh`.
    TokenExpired,
}

impl CloseCode {
    /// The WebSocket close code.
    pub const fn as_u16(self) -> u16 {
        match self {
            CloseCode::Shutdown => 4000,
            CloseCode::SlowConsumer => 4001,
            CloseCode::ServerError => 4002,
            CloseCode::NoPong => 4003,
            CloseCode::Rebalance => 4004,
            CloseCode::BadProtocol => 4500,
            CloseCode::Unauthorized => 4501,
            CloseCode::Forbidden => 4503,
            CloseCode::TokenExpired => 4509,
        }
    }

    /// The close reason sent with the code, and in the `disconnect` push.
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Shutdown => "shutdown",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::ServerError => "server error",
            CloseCode::NoPong => "no pong",
            CloseCode::Rebalance => "connection age limit",
            CloseCode::BadProtocol => "bad protocol",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::TokenExpired => "token expired",
        }
    }

    /// The close a code stands for, or `None` for one v1 does not define.
    pub fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            4000 => CloseCode::Shutdown,
            4001 => CloseCode::SlowConsumer,
            4002 => CloseCode::ServerError,
            4003 => CloseCode::NoPong,
            4004 => CloseCode::Rebalance,
            4500 => CloseCode::BadProtocol,
            4501 => CloseCode::Unauthorized,
            4503 => CloseCode::Forbidden,
            4509 => CloseCode::TokenExpired,
            _ => return None,
        })
    }

    /// Whether a client should reconnect (and resume) after this close.
    pub const fn reconnect(self) -> bool {
        self.as_u16() < 4500
    }

    /// The `{"disconnect":{…}}` push that precedes this close, so transports
    /// without close codes (SSE, long polling) carry the same signal.
    pub fn disconnect_push(self) -> Push {
        Push::Disconnect(Disconnect {
            code: self.as_u16(),
            reason: self.reason().to_owned(),
            reconnect: self.reconnect(),
        })
    }
}

// ---------------------------------------------------------------- commands

/// A decoded client command with its `id`.
#[derive(Debug)]
pub struct ClientFrame {
    /// The command's `id`, echoed in its reply; only `pong` may omit it.
    pub id: Option<u64>,
    /// The command and its arguments.
    pub command: Command,
}

/// A client command, one per frame.
#[derive(Debug)]
pub enum Command {
    /// Authenticate the connection; must come first.
    Connect(ConnectCommand),
    /// Join a channel, optionally resuming from a position.
    Subscribe(SubscribeCommand),
    /// Leave a channel.
    Unsubscribe(ChannelCommand),
    /// Publish to a channel through routing.
    Publish(PublishCommand),
    /// Tell a channel's members the user is typing (never stored).
    Typing(ChannelCommand),
    /// Ask who is in a channel.
    Presence(ChannelCommand),
    /// Replace the connection's token before it expires.
    Refresh(ConnectCommand),
    /// The answer to a ping; the one command that needs no `id`.
    Pong,
}

impl Command {
    /// The command's name as it appears in the frame (`connect`, `subscribe`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Connect(_) => "connect",
            Command::Subscribe(_) => "subscribe",
            Command::Unsubscribe(_) => "unsubscribe",
            Command::Publish(_) => "publish",
            Command::Typing(_) => "typing",
            Command::Presence(_) => "presence",
            Command::Refresh(_) => "refresh",
            Command::Pong => "pong",
        }
    }
}

/// The arguments of `connect` and `refresh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectCommand {
    /// The JWT that names the user and what they may do.
    pub token: String,
    /// Where the client left off in its personal `#user` channel: what was
    /// sent to the user since comes back in the reply (`personal`), so a
    /// reconnect misses nothing sent to the user.
    #[serde(default)]
    pub personal_since: Option<StreamPosition>,
}

/// The arguments of `subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeCommand {
    /// The channel to join.
    pub channel: Channel,
    /// Where the client left off, to be sent what it missed since.
    #[serde(default)]
    pub since: Option<StreamPosition>,
}

/// The arguments of commands that name only a channel (`unsubscribe`,
/// `typing`, `presence`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCommand {
    /// The channel the command is about.
    pub channel: Channel,
}

/// The arguments of `publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishCommand {
    /// The channel to publish to.
    pub channel: Channel,
    /// The publication's JSON, passed on as the client wrote it.
    pub data: Box<RawValue>,
    /// The same key on a retry stores the publication once (within the
    /// idempotency window): what a client sends again after an answer it
    /// did not get, or after error 111 (outcome unknown), which names it.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Why a frame could not be decoded; `id` is kept when it could be read so
/// the error reply can carry it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// The frame's `id`, when it could be read.
    pub id: Option<u64>,
    /// What is wrong, for the client's author.
    pub message: String,
}

impl FrameError {
    /// The 100 (bad request) reply that answers the frame.
    pub fn into_reply(self) -> ErrorReply {
        ErrorReply {
            id: self.id,
            error: ErrorBody::new(ErrorCode::BadRequest, self.message),
        }
    }
}

/// The top level of a command frame before the command is decoded: the id
/// and each other member as raw JSON, so each command's arguments are parsed
/// once, straight into their own type.
struct RawFrame<'a> {
    /// The last `id` that is one (as a JSON reader would read it).
    id: Option<u64>,
    /// What is wrong with the `id`s: not an integer, or given twice.
    bad_id: Option<&'static str>,
    members: Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawFrame<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FrameVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for FrameVisitor<'a> {
            type Value = RawFrame<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut frame = RawFrame {
                    id: None,
                    bad_id: None,
                    members: Vec::with_capacity(1),
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "id" {
                        let raw = map.next_value::<&'de RawValue>()?;
                        match serde_json::from_str::<u64>(raw.get()) {
                            Ok(id) => {
                                if frame.id.replace(id).is_some() {
                                    frame.bad_id = Some("`id` is given twice");
                                }
                            }
                            Err(_) => frame.bad_id = Some("`id` must be a non-negative integer"),
                        }
                    } else {
                        frame
                            .members
                            .push((key, map.next_value::<&'de RawValue>()?));
                    }
                }
                Ok(frame)
            }
        }
        d.deserialize_map(FrameVisitor(std::marker::PhantomData))
    }
}

/// Decodes one client frame. Errors say what is wrong in words a client
/// author can act on, and keep the `id` whenever it could be read.
pub fn decode_command(text: &str) -> Result<ClientFrame, FrameError> {
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| FrameError {
        id: None,
        message: format!("malformed frame: {e}"),
    })?;
    let id = raw.id;
    let fail = |message: String| FrameError { id, message };
    if let Some(why) = raw.bad_id {
        return Err(fail(why.into()));
    }
    let mut members = raw.members.into_iter();
    let (name, args) = match (members.next(), members.next()) {
        (Some(one), None) => one,
        (None, _) => return Err(fail("frame has no command".into())),
        (Some((a, _)), Some((b, _))) => {
            return Err(fail(format!(
                "frame has more than one command (`{a}` and `{b}`)"
            )));
        }
    };
    fn args_of<'a, T: Deserialize<'a>>(
        name: &str,
        args: &'a RawValue,
        id: Option<u64>,
    ) -> Result<T, FrameError> {
        serde_json::from_str(args.get()).map_err(|e| FrameError {
            id,
            message: format!("bad `{name}` arguments: {e}"),
        })
    }
    let command = match name.as_ref() {
        "connect" => Command::Connect(args_of(&name, args, id)?),
        "subscribe" => Command::Subscribe(args_of(&name, args, id)?),
        "unsubscribe" => Command::Unsubscribe(args_of(&name, args, id)?),
        "publish" => Command::Publish(args_of(&name, args, id)?),
        "typing" => Command::Typing(args_of(&name, args, id)?),
        "presence" => Command::Presence(args_of(&name, args, id)?),
        "refresh" => Command::Refresh(args_of(&name, args, id)?),
        "pong" => {
            args_of::<Empty>(&name, args, id)?;
            Command::Pong
        }
        other => return Err(fail(format!("unknown command `{other}`"))),
    };
    if id.is_none() && !matches!(command, Command::Pong) {
        return Err(fail(format!("command `{name}` needs an `id`")));
    }
    Ok(ClientFrame { id, command })
}

// ---------------------------------------------------------------- replies

/// `{"id":N,"ok":{…}}`
#[derive(Debug, Serialize, Deserialize)]
pub struct OkReply<T> {
    /// The `id` of the command answered.
    pub id: u64,
    /// The command's result.
    pub ok: T,
}

/// `{"id":N,"error":{"code":…,"message":"…"}}` (no `id` when the frame had none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The `id` of the command answered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<u64>,
    /// What went wrong.
    pub error: ErrorBody,
}

/// The answer to `connect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectOk {
    /// The connection's id: the edge's node id and a number (`<node>-<n>`).
    pub client: String,
    /// The user the token names.
    pub user: String,
    /// Seconds between the server's pings.
    pub ping_interval: u64,
    /// The personal channel's position and what was missed, when the client
    /// gave `personal_since`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub personal: Option<SubscribeOk>,
}

/// The answer to `subscribe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscribeOk {
    /// Where the subscription starts: live pushes follow this offset.
    pub offset: u64,
    /// The epoch of that offset.
    pub epoch: Epoch,
    /// Present only when the client asked to resume with `since`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recovered: Option<bool>,
    /// What was published after `since`, oldest first, when the client asked
    /// to resume.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub publications: Option<Vec<Publication>>,
}

/// The answer to `publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOk {
    /// The offset the publication was stored at.
    pub offset: u64,
}

/// The answer to `presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceOk {
    /// The users in the channel now.
    pub users: Vec<String>,
}

/// The answer to `refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshOk {
    /// When the new token expires, in seconds since the Unix epoch.
    pub exp: i64,
}

/// `{}` — the answer of commands that return nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EmptyOk {}

// ---------------------------------------------------------------- pushes

/// A stored publication as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// The channel it was published to.
    pub channel: Channel,
    /// Its offset in the channel.
    pub offset: u64,
    /// The epoch of that offset.
    pub epoch: Epoch,
    /// The published JSON, as the publisher sent it.
    pub data: Box<RawValue>,
    /// The user who published it; absent when it came through the server API.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
    /// Milliseconds since the Unix epoch, when routing accepted it.
    pub ts: u64,
}

/// A user in a channel: the body of `join`, `leave` and `typing` pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelUser {
    /// The channel.
    pub channel: Channel,
    /// The user who joined, left or is typing.
    pub user: UserId,
}

/// The body of a `disconnect` push: the close that follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// The close code ([`CloseCode`]).
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether the client should reconnect and resume.
    pub reconnect: bool,
}

/// The server ended a subscription: `{"unsubscribe":{"channel":…,"code":103,"reason":…}}`
/// (a refreshed token no longer allows the channel). The client should not
/// subscribe again with the same token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    /// The channel left.
    pub channel: Channel,
    /// Why, as an error code (103 when the token no longer allows it).
    pub code: ErrorCode,
    /// Why, in words.
    pub reason: String,
}

/// Server → client pushes: `{"pub":{…}}`, `{"ping":{}}`, …
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Push {
    /// A publication on a subscribed channel.
    #[serde(rename = "pub")]
    Pub(Publication),
    /// A user joined a subscribed channel.
    Join(ChannelUser),
    /// A user left a subscribed channel.
    Leave(ChannelUser),
    /// A user is typing in a subscribed channel.
    Typing(ChannelUser),
    /// Asks for a `pong`, to tell the connection is alive.
    Ping(EmptyOk),
    /// The server is about to close the connection.
    Disconnect(Disconnect),
    /// The server ended a subscription.
    Unsubscribe(Unsubscribed),
}

impl Push {
    /// The name of the push kind (`pub`, `join`, …): the SSE `event:` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Push::Pub(_) => "pub",
            Push::Join(_) => "join",
            Push::Leave(_) => "leave",
            Push::Typing(_) => "typing",
            Push::Ping(_) => "ping",
            Push::Disconnect(_) => "disconnect",
            Push::Unsubscribe(_) => "unsubscribe",
        }
    }
}

/// Anything the server sends, as a client decodes it.
#[derive(Debug)]
pub enum ServerFrame {
    /// A command's result: `{"id":N,"ok":{…}}`.
    Ok {
        /// The `id` of the command answered.
        id: u64,
        /// The `ok` member, still raw: its shape depends on the command.
        body: Box<RawValue>,
    },
    /// An error reply (with the command's `id` when it had one).
    Error(ErrorReply),
    /// A push.
    Push(Push),
}

/// Decodes a server frame (the client side of the protocol).
pub fn decode_server_frame(text: &str) -> Result<ServerFrame, serde_json::Error> {
    let raw: RawFrame = serde_json::from_str(text)?;
    let ok = raw.members.iter().find(|(k, _)| k == "ok").map(|(_, v)| *v);
    let error = raw
        .members
        .iter()
        .find(|(k, _)| k == "error")
        .map(|(_, v)| *v);
    match (raw.id, ok, error) {
        (Some(id), Some(body), _) => Ok(ServerFrame::Ok {
            id,
            body: body.to_owned(),
        }),
        (id, None, Some(error)) => Ok(ServerFrame::Error(ErrorReply {
            id,
            error: serde_json::from_str(error.get())?,
        })),
        _ => serde_json::from_str(text).map(ServerFrame::Push),
    }
}

/// Why JSON `data` is refused although it parses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Nested deeper than allowed: the depth reached, and the limit.
    #[error("data is nested {0} levels deep; the limit is {1}")]
    TooDeep(usize, usize),
    /// A `\u` escape that is a lone surrogate, at this byte.
    #[error("data holds an invalid \\u escape (a lone surrogate) at byte {0}")]
    BadEscape(usize),
}

/// Checks JSON that already parsed (a `RawValue`) for what parsers on the
/// receiving end choke on: nesting deeper than `max_depth`, and `\u`
/// escapes that are no Unicode (lone surrogates). One pass, no allocation.
pub fn check_data(json: &str, max_depth: usize) -> Result<(), DataError> {
    let bytes = json.as_bytes();
    let (mut depth, mut i, mut in_string) = (0usize, 0usize, false);
    // a high surrogate seen, waiting for its low half
    let mut high_at: Option<usize> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => {
                    let escape = bytes.get(i + 1).copied();
                    if escape == Some(b'u') {
                        let hex = json
                            .get(i + 2..i + 6)
                            .and_then(|h| u16::from_str_radix(h, 16).ok());
                        let Some(unit) = hex else {
                            return Err(DataError::BadEscape(i));
                        };
                        match (unit, high_at) {
                            (0xD800..=0xDBFF, None) => high_at = Some(i),
                            (0xDC00..=0xDFFF, Some(_)) => high_at = None,
                            (0xD800..=0xDFFF, _) | (_, Some(_)) => {
                                return Err(DataError::BadEscape(high_at.unwrap_or(i)));
                            }
                            _ => {}
                        }
                        i += 6;
                        continue;
                    }
                    if let Some(at) = high_at {
                        return Err(DataError::BadEscape(at));
                    }
                    i += 2;
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
            if let Some(at) = high_at {
                return Err(DataError::BadEscape(at));
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max_depth {
                        return Err(DataError::TooDeep(depth, max_depth));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

/// Serializes a server frame. Our own types always serialize, so a failure
/// here is a bug; it is reported as an internal error frame rather than a
/// panic.
pub fn encode<T: Serialize>(frame: &T) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to serialize a server frame");
        r#"{"error":{"code":500,"message":"internal error"}}"#.to_owned()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_too_deep_or_with_lone_surrogates_is_refused() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check_data(&deep(64), 64), Ok(()));
        assert_eq!(check_data(&deep(65), 64), Err(DataError::TooDeep(65, 64)));
        assert!(check_data(&deep(30_000), 64).is_err());
        // brackets inside strings are text
        assert_eq!(check_data(&format!("\"{}\"", "[".repeat(100)), 64), Ok(()));
        assert_eq!(check_data(r#"{"a":"\"[[["}"#, 2), Ok(()));
        // a surrogate pair is fine, a lone half is not
        assert_eq!(check_data(r#""\ud83d\ude00""#, 8), Ok(()));
        for bad in [
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\ud83d\n""#,
            r#""\ud83d\u0041""#,
        ] {
            assert!(
                matches!(check_data(bad, 8), Err(DataError::BadEscape(_))),
                "{bad}"
            );
        }
        assert_eq!(check_data(r#""é \u00e9 \n""#, 8), Ok(()));
    }

    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON documents, nested a little.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::hash_map(
                    prop_oneof![
                        Just("id".to_owned()),
                        Just("connect".to_owned()),
                        Just("subscribe".to_owned()),
                        Just("publish".to_owned()),
                        Just("channel".to_owned()),
                        Just("since".to_owned()),
                        Just("data".to_owned()),
                        Just("pong".to_owned()),
                        ".{0,8}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_decoder_never_panics_on_any_text(text in ".{0,300}") {
            let _ = decode_command(&text);
            let _ = decode_server_frame(&text);
        }

        #[test]
        fn the_decoder_never_panics_on_any_json(value in json_value()) {
            let text = value.to_string();
            match decode_command(&text) {
                Ok(frame) => prop_assert!(frame.id.is_some() || matches!(frame.command, Command::Pong)),
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
        }
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn decodes_every_documented_command() {
        let f = decode_command(r#"{"id":1,"connect":{"token":"abc"}}"#).unwrap();
        assert_eq!(f.id, Some(1));
        assert!(
            matches!(f.command, Command::Connect(ConnectCommand { ref token, personal_since: None }) if token == "abc")
        );
        let f = decode_command(
            r#"{"id":1,"connect":{"token":"abc","personal_since":{"offset":4,"epoch":"e1"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            f.command,
            Command::Connect(ConnectCommand { personal_since: Some(StreamPosition { offset: 4, ref epoch }), .. }) if epoch == "e1"
        ));

        let f = decode_command(
            r#"{"id":2,"subscribe":{"channel":"chat:room:42","since":{"offset":17,"epoch":"e1"}}}"#,
        )
        .unwrap();
        match f.command {
            Command::Subscribe(s) => {
                assert_eq!(s.channel.as_str(), "chat:room:42");
                assert_eq!(
                    s.since,
                    Some(StreamPosition {
                        offset: 17,
                        epoch: "e1".into()
                    })
                );
            }
            other => panic!("{other:?}"),
        }

        let f = decode_command(r#"{"id":3,"unsubscribe":{"channel":"chat:room:42"}}"#).unwrap();
        assert!(matches!(f.command, Command::Unsubscribe(_)));

        let f = decode_command(
            r#"{"id":4,"publish":{"channel":"chat:room:42","data":{"text":"hi","n":[1,2]}}}"#,
        )
        .unwrap();
        match f.command {
            Command::Publish(p) => assert_eq!(p.data.get(), r#"{"text":"hi","n":[1,2]}"#),
            other => panic!("{other:?}"),
        }

        for (text, name) in [
            (r#"{"id":5,"typing":{"channel":"c"}}"#, "typing"),
            (r#"{"id":6,"presence":{"channel":"c"}}"#, "presence"),
            (r#"{"id":7,"refresh":{"token":"t"}}"#, "refresh"),
            (r#"{"pong":{}}"#, "pong"),
        ] {
            assert_eq!(decode_command(text).unwrap().command.name(), name);
        }
    }

    #[test]
    fn bad_frames_say_why_and_keep_the_id() {
        let e = decode_command("{not json").unwrap_err();
        assert_eq!(e.id, None);
        assert!(e.message.starts_with("malformed frame"), "{}", e.message);

        let e = decode_command("[1,2]").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);

        // a bad or repeated `id` is refused, with the id a JSON reader sees
        // (found by the `command` fuzz target)
        for (text, id) in [
            (r#"{"id":-1,"id":1}"#, Some(1)),
            (
                r#"{"id":null,"id":2,"subscribe":{"channel":"chat:lobby"}}"#,
                Some(2),
            ),
            (r#"{"id":1,"id":2,"pong":{}}"#, Some(2)),
            (r#"{"id":-1,"pong":{}}"#, None),
        ] {
            let e = decode_command(text).unwrap_err();
            assert_eq!(e.id, id, "{text}: {}", e.message);
        }

        let e = decode_command(r#"{"id":9,"launch":{}}"#).unwrap_err();
        assert_eq!(e.id, Some(9));
        assert_eq!(e.message, "unknown command `launch`");

        let e = decode_command(r#"{"id":9}"#).unwrap_err();
        assert_eq!(e.message, "frame has no command");

        let e = decode_command(r#"{"id":9,"connect":{"token":"a"},"pong":{}}"#).unwrap_err();
        assert!(e.message.contains("more than one"), "{}", e.message);

        let e = decode_command(r#"{"id":10,"subscribe":{"channel":"bad name"}}"#).unwrap_err();
        assert_eq!(e.id, Some(10));
        assert!(
            e.message.contains("bad `subscribe` arguments"),
            "{}",
            e.message
        );
        assert!(e.message.contains("' '"), "{}", e.message);

        let e = decode_command(r#"{"subscribe":{"channel":"a"}}"#).unwrap_err();
        assert!(e.message.contains("needs an `id`"), "{}", e.message);

        let e = decode_command(r#"{"id":-1,"pong":{}}"#).unwrap_err();
        assert!(e.message.contains("`id`"), "{}", e.message);

        let e = decode_command(r#"{"id":4,"publish":{"channel":"a"}}"#).unwrap_err();
        assert!(e.message.contains("missing field `data`"), "{}", e.message);

        let reply = e.into_reply();
        assert_eq!(
            encode(&reply),
            r#"{"id":4,"error":{"code":100,"message":"bad `publish` arguments: missing field `data` at line 1 column 15"}}"#
        );
    }

    #[test]
    fn replies_and_pushes_match_the_documented_bytes() {
        assert_eq!(
            encode(&OkReply {
                id: 1,
                ok: ConnectOk {
                    client: "c1".into(),
                    user: "alice".into(),
                    ping_interval: 25,
                    personal: None,
                }
            }),
            r#"{"id":1,"ok":{"client":"c1","user":"alice","ping_interval":25}}"#
        );
        assert_eq!(
            encode(&OkReply {
                id: 3,
                ok: EmptyOk {}
            }),
            r#"{"id":3,"ok":{}}"#
        );
        assert_eq!(
            encode(&OkReply {
                id: 4,
                ok: PublishOk { offset: 22 }
            }),
            r#"{"id":4,"ok":{"offset":22}}"#
        );
        assert_eq!(
            encode(&OkReply {
                id: 2,
                ok: SubscribeOk {
                    offset: 21,
                    epoch: "e1".into(),
                    recovered: Some(true),
                    publications: Some(vec![])
                }
            }),
            r#"{"id":2,"ok":{"offset":21,"epoch":"e1","recovered":true,"publications":[]}}"#
        );
        assert_eq!(
            encode(&OkReply {
                id: 6,
                ok: PresenceOk {
                    users: vec!["alice".into(), "bob".into()]
                }
            }),
            r#"{"id":6,"ok":{"users":["alice","bob"]}}"#
        );
        assert_eq!(
            encode(&OkReply {
                id: 7,
                ok: RefreshOk { exp: 1764303600 }
            }),
            r#"{"id":7,"ok":{"exp":1764303600}}"#
        );
        assert_eq!(
            encode(&ErrorReply {
                id: Some(8),
                error: ErrorBody::new(ErrorCode::PermissionDenied, "no")
            }),
            r#"{"id":8,"error":{"code":103,"message":"no"}}"#
        );
        let publication = Publication {
            channel: Channel::new("chat:room:42").unwrap(),
            offset: 22,
            epoch: "e1".into(),
            data: raw(r#"{"text":"hi"}"#),
            from: Some("alice".into()),
            ts: 1764300000123,
        };
        assert_eq!(
            encode(&Push::Pub(publication)),
            r#"{"pub":{"channel":"chat:room:42","offset":22,"epoch":"e1","data":{"text":"hi"},"from":"alice","ts":1764300000123}}"#
        );
        let bob = ChannelUser {
            channel: Channel::new("c").unwrap(),
            user: UserId::parse("bob").unwrap(),
        };
        assert_eq!(
            encode(&Push::Join(bob.clone())),
            r#"{"join":{"channel":"c","user":"bob"}}"#
        );
        assert_eq!(
            encode(&Push::Leave(bob.clone())),
            r#"{"leave":{"channel":"c","user":"bob"}}"#
        );
        assert_eq!(
            encode(&Push::Typing(bob)),
            r#"{"typing":{"channel":"c","user":"bob"}}"#
        );
        assert_eq!(encode(&Push::Ping(EmptyOk {})), r#"{"ping":{}}"#);
        assert_eq!(
            encode(&CloseCode::Shutdown.disconnect_push()),
            r#"{"disconnect":{"code":4000,"reason":"shutdown","reconnect":true}}"#
        );
    }

    #[test]
    fn close_code_ranges_agree_with_reconnect() {
        for c in [
            CloseCode::Shutdown,
            CloseCode::SlowConsumer,
            CloseCode::ServerError,
            CloseCode::NoPong,
            CloseCode::Rebalance,
        ] {
            assert!(c.reconnect() && (4000..4500).contains(&c.as_u16()));
        }
        for c in [
            CloseCode::BadProtocol,
            CloseCode::Unauthorized,
            CloseCode::Forbidden,
            CloseCode::TokenExpired,
        ] {
            assert!(!c.reconnect() && (4500..5000).contains(&c.as_u16()));
        }
    }

    #[test]
    fn client_side_decodes_server_frames() {
        match decode_server_frame(r#"{"id":1,"ok":{"offset":3}}"#).unwrap() {
            ServerFrame::Ok { id, body } => {
                assert_eq!(id, 1);
                assert_eq!(body.get(), r#"{"offset":3}"#);
            }
            other => panic!("{other:?}"),
        }
        let f = decode_server_frame(r#"{"id":1,"error":{"code":101,"message":"x"}}"#).unwrap();
        assert!(matches!(
            f,
            ServerFrame::Error(ErrorReply {
                id: Some(1),
                error: ErrorBody {
                    code: ErrorCode::Unauthorized,
                    ..
                }
            })
        ));
        let f = decode_server_frame(r#"{"ping":{}}"#).unwrap();
        assert!(matches!(f, ServerFrame::Push(Push::Ping(_))));
        let f = decode_server_frame(
            r#"{"pub":{"channel":"c","offset":1,"epoch":"e","data":[1],"ts":5}}"#,
        )
        .unwrap();
        match f {
            ServerFrame::Push(Push::Pub(p)) => assert_eq!(p.data.get(), "[1]"),
            other => panic!("{other:?}"),
        }
    }
}
