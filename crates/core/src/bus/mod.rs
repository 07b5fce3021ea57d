//! The `Bus` seam: NATS-style publish/subscribe with subject wildcards (`*`
//! one token, `>` the rest), queue groups and request/reply. Two adapters
//! share one behavioural test suite: [`NatsBus`] (distributed) and
//! [`MemoryBus`] (standalone).
//!
//! Delivery is at most once, as in core NATS: a subscriber that falls more
//! than its queue bound behind loses messages rather than slowing the
//! publisher. Callers that need more (history, push jobs) use JetStream.

mod memory;
mod nats;
pub mod subject;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use memory::MemoryBus;
pub use nats::{NatsAuth, NatsBus, NatsOptions, NatsTls};

/// How many messages a subscription buffers before the bus drops new ones
/// for it (the same default as async-nats).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 8192;

/// Why a bus operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Not a subject: empty, with whitespace or an empty token, or with a
    /// wildcard where none may be.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// A request found nobody subscribed to its subject.
    #[error("no responders on {0}")]
    NoResponders(String),
    /// A request got no answer in time.
    #[error("request on {0} timed out")]
    Timeout(String),
    /// The payload is over the bus's limit (1 MiB, NATS's default).
    #[error("message too large for the bus: {0}")]
    TooLarge(String),
    /// The connection to the bus is down or closed.
    #[error("bus connection: {0}")]
    Connection(String),
}

/// Message headers: a short list of name/value pairs (NATS headers on the
/// wire). Names are compared exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// These headers with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets `name`, replacing any earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether no header is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every header as `(name, value)`, in the order first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// A message received from the bus.
#[derive(Debug, Clone)]
pub struct Message {
    /// The subject it was published to.
    pub subject: String,
    /// Where to send the answer when this is a request.
    pub reply: Option<String>,
    /// Its headers.
    pub headers: Headers,
    /// Its body.
    pub payload: Bytes,
}

/// A stream of messages for one subscription. Dropping it unsubscribes: no
/// message is delivered to it, or held for it, afterwards.
pub struct Subscription {
    stream: Pin<Box<dyn Stream<Item = Message> + Send>>,
}

impl Subscription {
    pub(crate) fn new(stream: impl Stream<Item = Message> + Send + 'static) -> Self {
        Subscription {
            stream: Box::pin(stream),
        }
    }

    /// The next message, or `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Message> {
        futures::StreamExt::next(&mut self.stream).await
    }

    /// Unsubscribes now (the same as dropping it; spelled out for readers).
    pub fn unsubscribe(self) {}
}

impl Stream for Subscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// How services talk to each other: NATS in the distributed mode, an
/// in-process bus in standalone; the callers cannot tell them apart.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes to every matching subscriber (one member per queue group).
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError>;

    /// Subscribes to `subject`, which may hold `*` and `>` wildcards.
    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError>;

    /// Subscribes as a member of `group`: each message reaches one member.
    async fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, BusError>;

    /// Sends a request and waits at most `timeout` for the first answer.
    /// Fails at once with [`BusError::NoResponders`] when nobody listens.
    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError>;

    /// Waits until everything published so far has left this process
    /// (for NATS: reached the server).
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether the bus is connected now (readiness follows it); one in
    /// memory always is.
    fn is_connected(&self) -> bool {
        true
    }
}

/// Answers a request: publishes `payload` to the message's reply subject.
/// A message that was not a request is answered by nobody.
pub async fn respond(bus: &dyn Bus, to: &Message, payload: Bytes) -> Result<(), BusError> {
    match &to.reply {
        Some(reply) => bus.publish(reply, Headers::new(), payload).await,
        None => Ok(()),
    }
}
