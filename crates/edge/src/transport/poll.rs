//! Long polling: `GET /poll?channels=a,b&cursor=…&timeout=25` answers
//! `{"messages":[…],"cursor":"…"}` as soon as there is something to say,
//! or `204 No Content` when the timeout passes first.
//!
//! A long-poll client is a session, not a request: the first poll opens a
//! connection like any other (subscribed, registered, present) and its
//! cursor names the session; later polls that present it attach to the
//! same connection, which kept its subscriptions and queued what arrived
//! between polls — no resubscribe, no history read. An answer is kept until
//! the next poll shows it arrived (or is sent again when it did not). The
//! session ends, with every connection's cleanup, when no poll comes for
//! `poll_grace_secs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::auth::Claims;
use herald_protocol::channel::Channel;
use herald_protocol::{
    CloseCode, ErrorBody, ErrorCode, StreamPosition, Unsubscribed, UserId, encode,
};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::{Internal, Keepalive, Out, Read, ReplyBody, Transport, WriteError};
use crate::connection::handle::Handle;
use crate::connection::lifecycle::far_future;
use crate::connection::{Connection, driver};
use crate::cursor::Cursor;
use crate::http_client::{Denied, HttpError, authenticate, channels};
use crate::{ClientAddress, Edge};

const DEFAULT_TIMEOUT_SECS: u64 = 25;
const MAX_TIMEOUT_SECS: u64 = 60;
/// Polls waiting to reach one session (a client polls once at a time).
const MAILBOX: usize = 4;

#[derive(Deserialize)]
pub(crate) struct Params {
    channels: String,
    cursor: Option<String>,
    timeout: Option<u64>,
    token: Option<String>,
}

/// One poll, on its way to its session.
pub(crate) struct PollRequest {
    claims: Claims,
    channels: Vec<Channel>,
    /// Channels of the cursor the token no longer allows (or, for a
    /// request naming a session, the refusal should the session be gone).
    dropped: Result<Vec<Unsubscribed>, HttpError>,
    cursor: Cursor,
    timeout: Duration,
    answer: oneshot::Sender<Response>,
}

/// The long-poll sessions of this edge, by the id their cursors carry.
#[derive(Default)]
pub(crate) struct PollSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

struct Session {
    user: UserId,
    mailbox: mpsc::Sender<PollRequest>,
}

impl PollSessions {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock()
    }

    /// The session `id`, if it is `user`'s.
    fn find(&self, id: &str, user: &str) -> Option<mpsc::Sender<PollRequest>> {
        self.lock()
            .get(id)
            .filter(|s| s.user == user)
            .map(|s| s.mailbox.clone())
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sessions open on this edge.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }
}

pub(crate) async fn poll(
    State(edge): State<Arc<Edge>>,
    client: ClientAddress,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    match request(&edge, &headers, params) {
        Ok((request, answer)) => {
            if let Err(refused) = deliver(&edge, &headers, &client, request) {
                return refused.into_response();
            }
            // Dropped here when the client goes away mid-poll: the session
            // sees it and waits for the next poll.
            answer.await.unwrap_or_else(|_| {
                HttpError(ErrorBody::new(
                    ErrorCode::Internal,
                    "session ended; poll again",
                ))
                .into_response()
            })
        }
        Err(e) => e.into_response(),
    }
}

fn request(
    edge: &Edge,
    headers: &HeaderMap,
    params: Params,
) -> Result<(PollRequest, oneshot::Receiver<Response>), HttpError> {
    let claims = authenticate(edge, headers, params.token.as_deref())?;
    let requested = channels(edge, &claims, &params.channels)?;
    let cursor = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Cursor::decode(text)?,
        None => Cursor::default(),
    };
    // Channels the token does not allow: a live session drops them itself
    // (a refresh, which tells the client once; it may list them a while
    // longer); a new session is told of those its cursor had, and refuses
    // the others (see `deliver`).
    let dropped = match (requested.narrowed(&cursor), &cursor.session) {
        (Err(refused), None) => return Err(refused),
        (dropped, _) => dropped,
    };
    let timeout = Duration::from_secs(
        params
            .timeout
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
            .min(MAX_TIMEOUT_SECS),
    );
    let (answer, answered) = oneshot::channel();
    let request = PollRequest {
        claims,
        channels: requested.allowed,
        dropped,
        cursor,
        timeout,
        answer,
    };
    Ok((request, answered))
}

/// Hands the poll to its session, or opens one.
fn deliver(
    edge: &Arc<Edge>,
    headers: &HeaderMap,
    client: &ClientAddress,
    request: PollRequest,
) -> Result<(), Denied> {
    let mut request = request;
    if let Some(id) = &request.cursor.session
        && let Some(mailbox) = edge.polls.find(id, &request.claims.sub)
    {
        match mailbox.try_send(request) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(ErrorBody::new(
                    ErrorCode::TooManyRequests,
                    "too many polls at once for this session",
                )
                .into());
            }
            // It just ended: open a new one from the cursor's positions.
            Err(mpsc::error::TrySendError::Closed(r)) => request = r,
        }
    }
    // A new session: the request's refusals stand now.
    let dropped = std::mem::replace(&mut request.dropped, Ok(Vec::new()))?;
    request.dropped = Ok(dropped);
    let permit = edge.admit(headers, client)?;
    let mut conn = Connection::new(
        edge.clone(),
        herald_protocol::presence::Transport::Poll,
        permit,
    );
    conn.register(request.claims.clone())?;
    let id = format!("{:016x}{:016x}", rand::random::<u64>(), conn.id.0);
    let (mailbox, inbox) = mpsc::channel(MAILBOX);
    edge.polls.lock().insert(
        id.clone(),
        Session {
            user: request.claims.sub.clone(),
            mailbox: mailbox.clone(),
        },
    );
    let transport = PollTransport::new(edge, id, inbox, conn.handle().clone(), &request);
    // A fresh mailbox has room.
    let _ = mailbox.try_send(request);
    tokio::spawn(edge.connections.track_future(driver::run(conn, transport)));
    Ok(())
}

/// The poll waiting for an answer.
struct Held {
    answer: oneshot::Sender<Response>,
    until: Instant,
}

/// The last answer, until the next poll shows it arrived.
struct Unacked {
    before: Cursor,
    messages: Vec<Bytes>,
    unrecoverable: Vec<Channel>,
}

pub(crate) struct PollTransport {
    edge: Arc<Edge>,
    id: String,
    mailbox: mpsc::Receiver<PollRequest>,
    handle: Handle,
    held: Option<Held>,
    /// Commands the last poll asked for, not yet started…
    commands: VecDeque<Internal>,
    /// …and those started, not yet answered: a poll is answered once the
    /// session has settled what it asked for.
    awaiting: usize,
    /// What the next answer carries: frames, shared with every connection.
    messages: Vec<Bytes>,
    unrecoverable: Vec<Channel>,
    /// Positions including everything in `messages`.
    cursor: Cursor,
    /// Positions as of the last answer.
    answered: Cursor,
    unacked: Option<Unacked>,
    /// The session's channels, as its polls last named them.
    channels: HashSet<Channel>,
    claims: Claims,
    grace: Duration,
    idle_since: Instant,
}

impl PollTransport {
    fn new(
        edge: &Arc<Edge>,
        id: String,
        mailbox: mpsc::Receiver<PollRequest>,
        handle: Handle,
        first: &PollRequest,
    ) -> Self {
        let mut cursor = first.cursor.clone();
        cursor.session = Some(id.clone());
        PollTransport {
            edge: edge.clone(),
            mailbox,
            handle,
            held: None,
            commands: VecDeque::new(),
            awaiting: 0,
            messages: first
                .dropped
                .iter()
                .flatten()
                .map(|u| Bytes::from(Out::unsubscribed_frame(u)))
                .collect(),
            unrecoverable: Vec::new(),
            answered: cursor.clone(),
            cursor,
            unacked: None,
            channels: HashSet::new(),
            claims: first.claims.clone(),
            grace: Duration::from_secs(edge.config.edge.poll_grace_secs),
            idle_since: Instant::now(),
            id,
        }
    }

    /// A poll arrived: it replaces one still held, tells whether the last
    /// answer arrived, and brings the session's channels and token up to
    /// date.
    fn attach(&mut self, request: PollRequest) {
        if let Some(old) = self.held.take() {
            let _ = old.answer.send(StatusCode::NO_CONTENT.into_response());
        }
        let PollRequest {
            claims,
            channels,
            cursor,
            timeout,
            answer,
            // a session's own refresh tells of those
            dropped: _,
        } = request;
        let known = |c: &&Channel| cursor.get(c).is_some();
        let got_last = cursor.agrees(&self.answered, self.channels.iter().filter(known));
        match self.unacked.take() {
            _ if got_last => {}
            Some(lost) if cursor.agrees(&lost.before, self.channels.iter().filter(known)) => {
                // The last answer never arrived: it goes again, first.
                let mut messages = lost.messages;
                messages.append(&mut self.messages);
                self.messages = messages;
                let mut unrecoverable = lost.unrecoverable;
                unrecoverable.append(&mut self.unrecoverable);
                self.unrecoverable = unrecoverable;
                self.answered = lost.before;
            }
            _ => {
                // The client stands elsewhere: those channels start again
                // from where it says.
                let moved: Vec<Channel> = self
                    .channels
                    .iter()
                    .filter(|c| cursor.get(c).is_some() && cursor.get(c) != self.answered.get(c))
                    .cloned()
                    .collect();
                for channel in moved {
                    self.commands
                        .push_back(Internal::Unsubscribe(channel.clone()));
                    self.commands.push_back(Internal::Subscribe {
                        since: cursor.get(&channel).cloned(),
                        channel,
                    });
                }
            }
        }
        if claims.exp != self.claims.exp
            || claims.channels != self.claims.channels
            || claims.publish != self.claims.publish
        {
            self.commands.push_back(Internal::Refresh(claims.clone()));
            self.claims = claims;
        }
        let wanted: HashSet<Channel> = channels.iter().cloned().collect();
        for gone in self.channels.difference(&wanted) {
            self.commands.push_back(Internal::Unsubscribe(gone.clone()));
            self.cursor.remove(gone);
        }
        for channel in channels {
            if !self.channels.contains(&channel) {
                self.commands.push_back(Internal::Subscribe {
                    since: cursor.get(&channel).cloned(),
                    channel,
                });
            }
        }
        self.channels = wanted;
        self.handle.set_idle(false);
        self.held = Some(Held {
            answer,
            until: Instant::now() + timeout,
        });
        if self.settled() && self.has_news() {
            self.answer_now();
        }
    }

    fn settled(&self) -> bool {
        self.commands.is_empty() && self.awaiting == 0
    }

    fn has_news(&self) -> bool {
        !self.messages.is_empty() || !self.unrecoverable.is_empty() || self.cursor != self.answered
    }

    /// Answers the held poll with what there is (204 when nothing).
    fn answer_now(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let response = if self.has_news() {
            let messages = std::mem::take(&mut self.messages);
            let unrecoverable = std::mem::take(&mut self.unrecoverable);
            let response = answer(&messages, &self.cursor, &unrecoverable);
            self.edge.stats.delivered(messages.len() as u64);
            let before = std::mem::replace(&mut self.answered, self.cursor.clone());
            self.unacked = Some(Unacked {
                before,
                messages,
                unrecoverable,
            });
            response
        } else {
            StatusCode::NO_CONTENT.into_response()
        };
        let _ = held.answer.send(response);
        self.detached();
    }

    fn detached(&mut self) {
        self.held = None;
        self.idle_since = Instant::now();
        self.handle.set_idle(true);
    }
}

impl Drop for PollTransport {
    fn drop(&mut self) {
        self.edge.polls.remove(&self.id);
    }
}

impl Transport for PollTransport {
    async fn read(&mut self) -> Read {
        if let Some(command) = self.commands.pop_front() {
            self.awaiting += 1;
            return Read::Command(command);
        }
        let holding = self.held.is_some();
        let settled = self.settled();
        let until = self.held.as_ref().map_or_else(far_future, |h| h.until);
        let grace_ends = self.idle_since + self.grace;
        tokio::select! {
            request = self.mailbox.recv() => match request {
                Some(request) => {
                    self.attach(request);
                    Read::Idle
                }
                None => Read::Gone,
            },
            // The client gave up on its poll (or its socket broke).
            _ = async { if let Some(h) = self.held.as_mut() { h.answer.closed().await } }, if holding => {
                self.detached();
                Read::Idle
            }
            _ = sleep_until(until), if holding && settled => {
                self.answer_now();
                Read::Idle
            }
            _ = sleep_until(grace_ends), if !holding => Read::Gone,
        }
    }

    fn accepts_deliveries(&self) -> bool {
        self.held.is_some()
    }

    async fn write(&mut self, out: &mut Vec<Out>) -> Result<(), WriteError> {
        for item in out.drain(..) {
            match item {
                Out::Push(delivery) => {
                    if let Some(StreamPosition { offset, epoch }) = &delivery.position {
                        self.cursor.set(&delivery.channel, *offset, epoch);
                    }
                    self.messages.push(Bytes::from(delivery.frame.clone()));
                }
                Out::Unsubscribed(u) => {
                    self.cursor.remove(&u.channel);
                    self.channels.remove(&u.channel);
                    self.messages.push(Bytes::from(Out::unsubscribed_frame(&u)));
                }
                Out::Reply(reply) => match reply.body {
                    ReplyBody::Subscribed(channel, ok) => {
                        self.awaiting = self.awaiting.saturating_sub(1);
                        for publication in ok.publications.iter().flatten() {
                            let delivery = crate::hub::delivery_of_publication(publication);
                            self.messages.push(Bytes::from(delivery.frame.clone()));
                        }
                        if ok.recovered == Some(false) {
                            self.unrecoverable.push(channel.clone());
                        }
                        self.cursor.set(&channel, ok.offset, &ok.epoch);
                    }
                    ReplyBody::Error(e) => {
                        tracing::warn!(error = %e.message, "long-poll subscribe failed");
                        if let Some(held) = self.held.take() {
                            let _ = held.answer.send(HttpError(e).into_response());
                        }
                        return Err(WriteError::Gone);
                    }
                    ReplyBody::Ok(_) | ReplyBody::Connected(_) => {
                        self.awaiting = self.awaiting.saturating_sub(1);
                    }
                },
            }
        }
        if self.messages.len() > self.edge.config.edge.client_queue_len {
            return Err(WriteError::Close(CloseCode::SlowConsumer));
        }
        if self.settled() && self.has_news() {
            self.answer_now();
        }
        Ok(())
    }

    fn keepalive(&self) -> Option<Keepalive> {
        None
    }

    async fn ping(&mut self) -> Result<(), WriteError> {
        Ok(())
    }

    /// A held poll carries the `disconnect`; between polls there is nobody
    /// to tell, and the next poll starts a new session from its cursor.
    async fn close(mut self, code: Option<CloseCode>) {
        let (Some(code), Some(held)) = (code, self.held.take()) else {
            return;
        };
        self.messages
            .push(Bytes::from(encode(&code.disconnect_push())));
        let response = answer(&self.messages, &self.cursor, &self.unrecoverable);
        let _ = held.answer.send(response);
    }
}

/// `{"messages":[…],"cursor":"…"}`: the frames as they are, shared.
fn answer(messages: &[Bytes], cursor: &Cursor, unrecoverable: &[Channel]) -> Response {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(messages.len() * 2 + 2);
    chunks.push(Bytes::from_static(b"{\"messages\":["));
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            chunks.push(Bytes::from_static(b","));
        }
        chunks.push(message.clone());
    }
    let mut tail = String::from("],\"cursor\":");
    tail.push_str(&serde_json::to_string(&cursor.encode()).unwrap_or_default());
    if !unrecoverable.is_empty() {
        // channels whose missed publications are no longer kept
        tail.push_str(",\"unrecoverable\":");
        tail.push_str(&serde_json::to_string(unrecoverable).unwrap_or_default());
    }
    tail.push('}');
    chunks.push(Bytes::from(tail));
    let body = Body::from_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
