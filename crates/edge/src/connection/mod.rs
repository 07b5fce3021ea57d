//! One client connection, whatever carries it. It owns everything a client
//! is: its admission permit, its token, the user's registration (and the
//! per-user limit), what presence is told, its subscriptions and their
//! recovery, the personal channel, the command rate limit, token expiry and
//! refresh, the drain — and a cleanup that runs exactly once, in `Drop`,
//! however the connection ends (client gone, socket error, timeout, drain,
//! kick, a long poll abandoned mid-way, a server error).
//!
//! Commands run beside the writer, never in its way: each is started at
//! once (its checks need the connection), its waiting (on routing, on
//! presence) happens in a bounded, ordered pipeline, and its effect on the
//! connection is applied when it leaves the pipeline — in the order the
//! commands came, so replies keep their order while deliveries and pings
//! flow past them. See [`driver::run`] for the loop.

pub(crate) mod driver;
pub(crate) mod handle;
pub(crate) mod lifecycle;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use herald_core::auth::Claims;
use herald_protocol::channel::Channel;
use herald_protocol::{
    CloseCode, Command, ErrorBody, ErrorCode, StreamPosition, UserId, decode_command,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::Edge;
use crate::admission::Permit;
use crate::commands;
use crate::hub::ConnId;
use crate::outbox::{Delivery, Inbox, Outbox};
use crate::rate::TokenBucket;
use crate::transport::{Internal, Out, Reply, ReplyBody};

use lifecycle::Lifecycle;

/// Commands refused in a row (rate limit) before the connection is closed
/// as abusive.
const ABUSE_LIMIT: u32 = 100;

/// A command's waiting, owned (it borrows nothing of the connection).
pub(crate) type Work = BoxFuture<'static, Done>;

/// What a command's waiting came back with, applied to the connection in
/// command order.
pub(crate) enum Done {
    Reply(Reply),
    /// Answer, then close the connection with this code.
    Close {
        reply: Reply,
        code: CloseCode,
    },
    Connected(commands::connect::Connected),
    Subscribed(commands::subscribe::Joined),
    Unsubscribe {
        id: Option<u64>,
        channel: Channel,
    },
    Refreshed {
        id: Option<u64>,
        claims: Claims,
    },
}

/// What the connection made of a frame.
pub(crate) enum Heard {
    Command,
    Pong,
    Close(CloseCode),
}

pub(crate) struct Connection {
    pub edge: Arc<Edge>,
    pub id: ConnId,
    pub client_id: String,
    pub kind: herald_protocol::presence::Transport,
    pub outbox: Outbox,
    inbox: Inbox,
    life: Lifecycle,
    pipeline: FuturesOrdered<Work>,
    pub claims: Option<Arc<Claims>>,
    /// The user this connection is registered as (with presence too).
    registered: Option<UserId>,
    /// `connect` is in flight: nothing else is read until it is done.
    pub connecting: bool,
    pub subscriptions: HashSet<Channel>,
    /// Subscribes in flight. Their deliveries wait in `held` until the
    /// subscribe's answer is out, so a client never sees a channel's live
    /// publications before the reply that says where they start.
    pub pending: HashSet<Channel>,
    /// Unsubscribes in flight: a subscribe behind one is a resubscribe.
    pub leaving: HashSet<Channel>,
    held: VecDeque<Arc<Delivery>>,
    /// Channels resumed ahead of this edge: their deliveries up to here
    /// were seen elsewhere.
    skip: HashMap<Channel, StreamPosition>,
    commands: TokenBucket,
    refused_in_a_row: u32,
    _permit: Permit,
}

impl Connection {
    pub(crate) fn new(
        edge: Arc<Edge>,
        kind: herald_protocol::presence::Transport,
        permit: Permit,
    ) -> Self {
        let (outbox, inbox, overflow) = Outbox::new(
            edge.config.edge.client_queue_len,
            edge.config.edge.client_queue_bytes,
        );
        let id = ConnId(edge.next_conn_id());
        edge.stats.opened(kind);
        let life = Lifecycle::new(
            edge.shutdown.clone(),
            Duration::from_secs(edge.config.edge.drain_window_secs),
            overflow,
            match edge.config.edge.max_connection_age_secs {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
        );
        Connection {
            client_id: format!("{}-{id}", edge.node_id),
            commands: TokenBucket::new(
                edge.config.edge.command_rate,
                edge.config.edge.command_burst,
            ),
            id,
            kind,
            outbox,
            inbox,
            life,
            pipeline: FuturesOrdered::new(),
            claims: None,
            registered: None,
            connecting: false,
            subscriptions: HashSet::new(),
            pending: HashSet::new(),
            leaving: HashSet::new(),
            held: VecDeque::new(),
            skip: HashMap::new(),
            refused_in_a_row: 0,
            _permit: permit,
            edge,
        }
    }

    /// A connection that must `connect` within the configured time.
    pub(crate) fn awaiting_connect(mut self) -> Self {
        let by = Instant::now() + Duration::from_secs(self.edge.config.edge.connect_timeout_secs);
        self.life.connect_by(Some(by));
        self
    }

    pub(crate) fn handle(&self) -> &handle::Handle {
        &self.life.handle
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.claims.is_some() && !self.connecting
    }

    /// The claims of a connected client, or the error for commands sent
    /// before `connect`.
    pub(crate) fn claims(&self) -> Result<&Arc<Claims>, ErrorBody> {
        match &self.claims {
            Some(c) if !self.connecting => Ok(c),
            _ => Err(ErrorBody::new(
                ErrorCode::Unauthorized,
                "send `connect` first",
            )),
        }
    }

    /// Whether the connection takes another command now: not while
    /// `connect` is in flight, and only as many at once as configured.
    pub(crate) fn reading(&self) -> bool {
        !self.connecting && self.pipeline.len() < self.edge.config.edge.max_commands_in_flight
    }

    /// Registers the connection as `claims.sub`'s: the per-user limit (a
    /// long-poll session between polls gives way), presence, the token's
    /// expiry. The personal channel is subscribed by the caller.
    pub(crate) fn register(&mut self, claims: Claims) -> Result<(), ErrorBody> {
        let edge = &self.edge;
        edge.users.add(
            &claims.sub,
            self.id,
            self.life.handle.clone(),
            edge.config.edge.max_connections_per_user,
        )?;
        edge.reporter.connect(self.id, &claims.sub, self.kind);
        self.registered = Some(claims.sub.clone());
        self.life.connect_by(None);
        // the verifier accepts a token up to the leeway after `exp`; the
        // connection lives as long (not: accepted, then closed at once)
        let leeway = i64::try_from(edge.config.edge.jwt_leeway_secs).unwrap_or(i64::MAX);
        self.life.expires_at(claims.exp.saturating_add(leeway));
        self.claims = Some(Arc::new(claims));
        Ok(())
    }

    /// Undoes [`Connection::register`] (a `connect` that failed half-way).
    pub(crate) fn unregister(&mut self) {
        if let Some(user) = self.registered.take() {
            self.edge.users.remove(&user, self.id);
            self.edge.reporter.disconnect(self.id);
        }
        self.claims = None;
    }

    /// Replaces the token (a refresh): same user, new expiry, and the
    /// channels it no longer allows are left, each with an `unsubscribe`
    /// push (code 103) that says why.
    pub(crate) fn replace_claims(&mut self, claims: Claims, out: &mut Vec<Out>) {
        let dropped: Vec<Channel> = self
            .subscriptions
            .iter()
            .filter(|c| !self.is_personal(c) && !claims.may_subscribe(c))
            .cloned()
            .collect();
        for channel in dropped {
            self.leave(&channel);
            out.push(Out::Unsubscribed(herald_protocol::Unsubscribed {
                channel,
                code: ErrorCode::PermissionDenied,
                reason: "the refreshed token does not allow this channel".into(),
            }));
        }
        let leeway = i64::try_from(self.edge.config.edge.jwt_leeway_secs).unwrap_or(i64::MAX);
        self.life.expires_at(claims.exp.saturating_add(leeway));
        self.claims = Some(Arc::new(claims));
    }

    pub(crate) fn is_personal(&self, channel: &Channel) -> bool {
        self.registered
            .as_deref()
            .is_some_and(|user| crate::http_client::is_personal(channel, user))
    }

    /// Leaves a subscribed channel (a no-op for one it is not in).
    pub(crate) fn leave(&mut self, channel: &Channel) {
        self.skip.remove(channel);
        if self.subscriptions.remove(channel) {
            self.edge.hub.unsubscribe(channel, self.id);
            self.edge.reporter.unsubscribe(self.id, channel);
        }
    }

    /// Starts `work`; its result is applied in command order.
    pub(crate) fn start(&mut self, work: Work) {
        self.pipeline.push_back(work);
    }

    /// Answers at once (in order, behind the commands in flight).
    pub(crate) fn answer<T: Serialize>(&mut self, id: Option<u64>, result: Result<T, ErrorBody>) {
        let reply = reply(id, result);
        self.start(Box::pin(std::future::ready(Done::Reply(reply))));
    }

    /// Answers with what `work` comes back with, in order; `work` gets the
    /// edge and the client's claims (connected: the dispatch checked).
    pub(crate) fn answer_later<T, F, Fut>(&mut self, id: u64, work: F)
    where
        T: Serialize,
        F: FnOnce(Arc<Edge>, Arc<Claims>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ErrorBody>> + Send + 'static,
    {
        let claims = match self.claims().cloned() {
            Ok(claims) => claims,
            Err(e) => return self.answer::<()>(Some(id), Err(e)),
        };
        let waiting = work(self.edge.clone(), claims);
        self.start(Box::pin(async move {
            Done::Reply(reply(Some(id), waiting.await))
        }));
    }

    /// A command frame from the client (WebSocket).
    pub(crate) fn command(&mut self, text: &str) -> Heard {
        if !self.commands.take() {
            self.refused_in_a_row += 1;
            if self.refused_in_a_row > ABUSE_LIMIT {
                return Heard::Close(CloseCode::BadProtocol);
            }
            let id = decode_command(text).ok().and_then(|f| f.id);
            let rate = self.edge.config.edge.command_rate;
            self.answer::<()>(id, Err(too_many_commands(rate)));
            return Heard::Command;
        }
        self.refused_in_a_row = 0;
        let frame = match decode_command(text) {
            Ok(f) => f,
            Err(e) => {
                let reply = e.into_reply();
                self.answer::<()>(reply.id, Err(reply.error));
                return Heard::Command;
            }
        };
        // Only `pong` may come without an id, and it gets no reply.
        let id = frame.id.unwrap_or_default();
        match frame.command {
            Command::Pong => return Heard::Pong,
            Command::Connect(c) => commands::connect::start(self, id, c),
            command => match self.claims() {
                Err(e) => self.answer::<()>(Some(id), Err(e)),
                Ok(_) => match command {
                    Command::Subscribe(c) => {
                        commands::subscribe::start(self, Some(id), c.channel, c.since)
                    }
                    Command::Unsubscribe(c) => {
                        commands::unsubscribe::start(self, Some(id), c.channel)
                    }
                    Command::Publish(c) => commands::publish::start(self, id, c),
                    Command::Typing(c) => commands::typing::start(self, id, c),
                    Command::Presence(c) => commands::presence::start(self, id, c),
                    Command::Refresh(c) => commands::refresh::start(self, id, c),
                    Command::Connect(_) | Command::Pong => {}
                },
            },
        }
        Heard::Command
    }

    /// A command the HTTP transports derived from a request.
    pub(crate) fn internal(&mut self, command: Internal) {
        match command {
            Internal::Subscribe { channel, since } => {
                commands::subscribe::start(self, None, channel, since)
            }
            Internal::Unsubscribe(channel) => commands::unsubscribe::start(self, None, channel),
            Internal::Refresh(claims) => {
                self.start(Box::pin(std::future::ready(Done::Refreshed {
                    id: None,
                    claims,
                })))
            }
        }
    }

    /// Applies a command's result, in command order; `Some` code when the
    /// connection must close after what it added to `out`.
    fn finish(&mut self, done: Done, out: &mut Vec<Out>) -> Option<CloseCode> {
        match done {
            Done::Reply(reply) => out.push(Out::Reply(reply)),
            Done::Close { reply, code } => {
                out.push(Out::Reply(reply));
                return Some(code);
            }
            Done::Connected(connected) => commands::connect::finish(self, connected, out),
            Done::Subscribed(joined) => commands::subscribe::finish(self, joined, out),
            Done::Unsubscribe { id, channel } => {
                self.leaving.remove(&channel);
                if self.pending.contains(&channel) {
                    // Subscribed again behind it: the hub keeps this
                    // connection, the new subscription takes over.
                    if self.subscriptions.remove(&channel) {
                        self.edge.reporter.unsubscribe(self.id, &channel);
                    }
                } else {
                    self.leave(&channel);
                }
                out.push(Out::Reply(reply(id, Ok(herald_protocol::EmptyOk {}))));
            }
            Done::Refreshed { id, claims } => {
                let exp = claims.exp;
                self.replace_claims(claims, out);
                out.push(Out::Reply(reply(
                    id,
                    Ok(herald_protocol::RefreshOk { exp }),
                )));
            }
        }
        None
    }

    /// Routes a delivery: to `out`, or held while its channel's subscribe
    /// is still in flight.
    fn take(&mut self, delivery: Arc<Delivery>, out: &mut Vec<Out>) -> Result<(), CloseCode> {
        if !self.skip.is_empty()
            && let Some(until) = self.skip.get(&delivery.channel)
            && let Some(StreamPosition { offset, epoch }) = &delivery.position
        {
            if **epoch == *until.epoch && *offset <= until.offset {
                return Ok(());
            }
            self.skip.remove(&delivery.channel);
        }
        if !self.pending.is_empty() && self.pending.contains(&delivery.channel) {
            if self.held.len() >= self.edge.config.edge.client_queue_len {
                return Err(CloseCode::SlowConsumer);
            }
            self.held.push_back(delivery);
        } else {
            out.push(Out::Push(delivery));
        }
        Ok(())
    }

    /// After a subscribe's answer: what was held for its channel follows
    /// it, or is dropped.
    pub(crate) fn release_held(
        &mut self,
        channel: &Channel,
        out: &mut Vec<Out>,
        release: Release<'_>,
    ) {
        if self.held.is_empty() {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.held.len());
        for delivery in self.held.drain(..) {
            if delivery.channel != *channel {
                kept.push_back(delivery);
                continue;
            }
            let covered =
                match release {
                    Release::All => false,
                    Release::After(from) => delivery.position.as_ref().is_some_and(
                        |StreamPosition { offset, epoch }| {
                            **epoch == *from.epoch && *offset <= from.offset
                        },
                    ),
                    Release::Nothing => true,
                };
            if !covered {
                out.push(Out::Push(delivery));
            }
        }
        self.held = kept;
    }
}

impl Connection {
    /// Drops `channel`'s live deliveries up to `position` (the client saw
    /// them on another edge).
    pub(crate) fn skip_until(&mut self, channel: &Channel, position: StreamPosition) {
        self.skip.insert(channel.clone(), position);
    }
}

/// What of the deliveries held for a channel goes out after its answer.
#[derive(Clone, Copy)]
pub(crate) enum Release<'a> {
    All,
    /// Only what comes after this position: a resubscribe may have held
    /// some the answer already covers.
    After(&'a StreamPosition),
    /// None: the subscribe failed.
    Nothing,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let edge = &self.edge;
        edge.stats.closed(self.kind);
        for channel in self.subscriptions.iter().chain(self.pending.iter()) {
            edge.hub.unsubscribe(channel, self.id);
        }
        if let Some(user) = self.registered.take() {
            edge.users.remove(&user, self.id);
            edge.reporter.disconnect(self.id);
        }
    }
}

/// A command's answer, counted when it is an error.
pub(crate) fn reply<T: Serialize>(id: Option<u64>, result: Result<T, ErrorBody>) -> Reply {
    let body = match result.and_then(|ok| {
        serde_json::to_string(&ok).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))
    }) {
        Ok(json) => ReplyBody::Ok(json),
        Err(error) => ReplyBody::Error(error),
    };
    counted(Reply { id, body })
}

/// Counts the error replies (every transport's, in one place).
pub(crate) fn counted(reply: Reply) -> Reply {
    if let ReplyBody::Error(e) = &reply.body {
        crate::stats::client_error(e.code);
    }
    reply
}

pub(crate) fn too_many_commands(rate: u32) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::TooManyRequests,
        format!("too many commands: at most {rate} per second"),
    )
}
